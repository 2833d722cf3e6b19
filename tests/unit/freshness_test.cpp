// The cache's freshness rules (cache/freshness.h) as pure functions of the time. The
// equivalence of cached and computed answers is checked with the combination table in
// sts_state_test.cpp.
#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "cache/freshness.h"
#include "resolution_fixture.h"

using namespace tlspolicy;
using namespace tlspolicy::testutil;

TEST_CASE("freshness: stale windows per source") {
    StoredStsPolicy sts;
    sts.expires_at = 5000;
    struct Row {
        const char* name;
        Outcome outcome;
        Source source;
        const StoredStsPolicy* policy;
        int64_t want;
    };
    // expires_at 1000, stale_ttl 300
    const std::vector<Row> rows = {
        {"DANE answer: stale_ttl past expiry", Outcome::Found, Source::Dane, nullptr, 1300},
        {"DANE answer with a policy beside it: still stale_ttl", Outcome::Found, Source::Dane, &sts,
         1300},
        {"MTA-STS answer: until the policy's max_age", Outcome::Found, Source::MtaSts, &sts, 5000},
        {"MTA-STS answer whose policy ends first: its own expiry", Outcome::Found, Source::MtaSts,
         nullptr, 1000},
        {"not found: never stale", Outcome::NotFound, Source::None, nullptr, 1000},
        {"not found with a testing policy: never stale", Outcome::NotFound, Source::None, &sts,
         1000},
    };
    for (const auto& r : rows) {
        INFO(r.name);
        CHECK(stale_until(r.outcome, r.source, 1000, r.policy, 300) == r.want);
    }
}

TEST_CASE("freshness: what may be cached") {
    const int64_t now = 1000;
    struct Row {
        const char* name;
        DaneDecision dane;
        Outcome outcome;
        int64_t ttl;
        Source source;
        bool want;
    };
    const std::vector<Row> rows = {
        {"a DANE answer", dane(DaneVerdict::DaneOnly), Outcome::Found, 600, Source::Dane, true},
        {"not found", dane(DaneVerdict::NoDane), Outcome::NotFound, 600, Source::None, true},
        {"TEMP", dane(DaneVerdict::Temp), Outcome::Temp, 0, Source::None, false},
        {"timeout", dane(DaneVerdict::Temp), Outcome::Timeout, 0, Source::None, false},
        {"TTL 0 (min_ttl 0)", dane(DaneVerdict::DaneOnly), Outcome::Found, 0, Source::Dane, false},
        {"unfinished TLSA lookup", dane(DaneVerdict::Dane, true), Outcome::Found, 600, Source::Dane,
         false},
        {"an override", dane(DaneVerdict::NoDane), Outcome::Found, 600, Source::Override, false},
    };
    for (const auto& r : rows) {
        INFO(r.name);
        Resolution res{facts_with({"mx.example.com"}), r.dane, sts_with(std::nullopt, now), now};
        Answer a;
        a.outcome = r.outcome;
        a.policy = r.outcome == Outcome::Found ? "dane-only" : "";
        a.ttl = r.ttl;
        a.source = r.source;
        CHECK(cacheable(res, a) == r.want);
    }
}

TEST_CASE("freshness: refresh-ahead time, with jitter, before expiry") {
    struct Row {
        int64_t fetched, expires;
        double jitter;
        int64_t want;
    };
    const std::vector<Row> rows = {
        {0, 1000, 0.0, 900},      // lead 100
        {0, 1000, 0.5, 875},      // minus up to lead/2
        {0, 1000, 0.9999, 851},   // never earlier than expiry - 1.5 lead
        {0, 180, 0.0, 162},       // min_ttl: lead 18
        {0, 86400, 0.0, 86100},   // lead capped at 300
        {0, 86400, 0.99, 85952},  // 300 + 148
        {100, 105, 0.0, 104},     // at least 1 s before
        {100, 101, 0.9, 100},     // never before it was fetched
        {100, 100, 0.0, 100},
    };
    for (const auto& r : rows) {
        INFO(r.fetched, " ", r.expires, " ", r.jitter);
        CHECK(refresh_time(r.fetched, r.expires, r.jitter) == r.want);
    }
}

TEST_CASE("freshness: failed refreshes back off") {
    const std::vector<std::pair<int, int64_t>> rows = {{0, 5},   {1, 5},     {2, 10},  {3, 20},
                                                       {4, 40},  {5, 80},    {6, 160}, {7, 300},
                                                       {8, 300}, {1000, 300}};
    for (const auto& [failures, want] : rows) {
        INFO(failures);
        CHECK(refresh_backoff(failures) == want);
    }
}

TEST_CASE("freshness: rows that cannot be used are refused") {
    const int64_t now = 1000;
    const std::string enforce = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 900\n";
    Resolution res{facts_with({"mx.example.com"}), dane(DaneVerdict::NoDane),
                   sts_with(enforce, now), now};
    const Answer a = res.answer(PolicySettings{});
    const CachedAnswer c = cached_answer(res, a, now, 3600);
    CacheRow row = cache_row("example.com", res, a, c);
    CHECK(row.sts_decides);
    CHECK(row.sts_id == "id1");
    CHECK(row.sts_max_age == 900);
    CHECK(row.stale_until == now + 900);  // the policy's max_age
    REQUIRE(cached_from_row("example.com", row, PolicySettings{}).has_value());
    REQUIRE(sts_policy_from_row(row) != nullptr);

    CacheRow temp = row;
    temp.outcome = Outcome::Temp;
    CHECK_FALSE(cached_from_row("example.com", temp, PolicySettings{}).has_value());
    CacheRow broken = row;
    broken.sts_body = "version: STSv1\nmode: enforce\n";  // no mx: no longer parses
    CHECK_FALSE(cached_from_row("example.com", broken, PolicySettings{}).has_value());
    CHECK(sts_policy_from_row(broken) == nullptr);
    CacheRow empty = row;
    empty.sts_decides = false;
    empty.policy.clear();
    CHECK_FALSE(cached_from_row("example.com", empty, PolicySettings{}).has_value());
}

TEST_CASE("SharedText: equal texts share one copy, which goes with its last holder") {
    const std::string text = "secure MX set, usable TLSA on all 2 MX host(s)";
    SharedText a(text);
    SharedText b(std::string("secure MX set, usable TLSA on all 2 MX host(s)"));
    CHECK(a.str() == text);
    CHECK(a.str().data() == b.str().data());  // one copy
    SharedText c("another reason");
    CHECK(c.str().data() != a.str().data());
    CHECK(SharedText().str().empty());
    CHECK(SharedText("").str().empty());
    {
        SharedText d = a;  // copies share too
        CHECK(d.str().data() == a.str().data());
    }
    a = "changed";
    CHECK(a == "changed");
    CHECK(b == text);  // the other holder keeps it
    b = SharedText();
    SharedText again(text);  // interned afresh after the last holder went
    CHECK(again == text);

    // Many threads interning and dropping the same few texts.
    std::vector<std::thread> threads;
    std::atomic<int> wrong{0};
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&wrong, t] {
            for (int i = 0; i < 20000; ++i) {
                const std::string want = "reason " + std::to_string((i + t) % 7);
                SharedText s(want);
                if (s.str() != want) ++wrong;
            }
        });
    for (auto& th : threads)
        th.join();
    CHECK(wrong == 0);
}

TEST_CASE("freshness: StsStatus keeps every status the MTA-STS state gives, in one byte") {
    static_assert(sizeof(StsStatus) == 1);
    for (const char* s : {"found", "renewed", "cached", "not_found", "errored", ""}) {
        StsStatus st;
        st = s;
        CHECK(st.str() == s);
    }
    StsStatus other;
    other = "something new";
    CHECK(other.str().empty());
}
