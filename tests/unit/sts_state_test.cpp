// MTA-STS freshness (core/sts_state.h) with an injected clock, and the decision table's
// combination of the DANE and MTA-STS halves (DomainEngine::combine), without sockets.
#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

#include "cache/freshness.h"
#include "core/sts_state.h"
#include "resolution_fixture.h"
#include "sts/domain_engine.h"

using namespace tlspolicy;
using namespace tlspolicy::testutil;

namespace {

DnsLookup txt(std::vector<std::string> records, int64_t ttl = 60) {
    DnsLookup l;
    l.name = "_mta-sts.example.com";
    l.type = kTypeTxt;
    l.result = DnsResult::Data;
    l.dnssec = Dnssec::Insecure;
    l.ttl = ttl;
    l.txt = std::move(records);
    return l;
}

DnsLookup txt_denied(DnsResult r) {
    DnsLookup l = txt({});
    l.result = r;
    if (r != DnsResult::NxDomain && r != DnsResult::NoData) {
        l.dnssec = Dnssec::Indeterminate;
        l.reason = std::string(dns_result_name(r));
    }
    return l;
}

const std::string kEnforce = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 1000\n";
const std::string kEnforce2 =
    "version: STSv1\nmode: enforce\nmx: mx.example.com\nmx: *.example.net\nmax_age: 1000\n";

// One step of a freshness story: at time `at`, either a TXT lookup result or a fetch result
// arrives (or nothing: only the next step is asked), and what must hold afterwards.
struct Step {
    int64_t at;
    enum { Txt, Fetch, Known } kind;
    std::optional<DnsLookup> lookup;  // Txt
    bool fetch_ok = false;            // Fetch
    std::string body, code;           // Fetch
    // expectations
    bool want_fetch = false;     // Txt: sts_apply_txt asks for a fetch
    std::string want_status;     // outcome status ("" when a fetch is asked for)
    std::string want_code;       // outcome code
    std::string want_policy_id;  // "" = no policy in force
    StsStep want_next;           // sts_next_step at the same time, afterwards
};

void play(const char* story, const std::vector<Step>& steps) {
    StsState s;
    CHECK(sts_next_step(s, 0) == StsStep::CheckTxt);
    int i = 0;
    for (const Step& st : steps) {
        INFO(std::string(story) << " step " << i++ << " at " << st.at);
        StsOutcome out;
        if (st.kind == Step::Txt) {
            const bool fetch = sts_apply_txt(s, *st.lookup, st.lookup->ttl, st.at, out);
            CHECK(fetch == st.want_fetch);
            if (fetch) continue;
        } else if (st.kind == Step::Fetch) {
            out = sts_apply_fetch(s, st.fetch_ok, st.body, st.code, st.code + " reason", st.at);
        } else {
            out = sts_known(s, st.at);
        }
        CHECK(out.status == st.want_status);
        CHECK(out.code == st.want_code);
        CHECK((out.policy ? out.policy->id : std::string()) == st.want_policy_id);
        CHECK(static_cast<int>(sts_next_step(s, st.at)) == static_cast<int>(st.want_next));
    }
}

// `rest` after the story's common start: TXT id=a at 0, its enforce policy fetched at 0.
std::vector<Step> with_policy_a(std::vector<Step> rest) {
    std::vector<Step> steps = {
        {0, Step::Txt, txt({"v=STSv1; id=a"}), false, "", "", true, "", "", "", StsStep::UseKnown},
        {0, Step::Fetch, {}, true, kEnforce, "", false, "found", "", "a", StsStep::UseKnown},
    };
    steps.insert(steps.end(), rest.begin(), rest.end());
    return steps;
}

}  // namespace

TEST_CASE("sts_state: first fetch, TXT TTL, renewal on an unchanged id") {
    play("renewal",
         {
             {0, Step::Txt, txt({"v=STSv1; id=a"}), false, "", "", true, "", "", "",
              StsStep::UseKnown},
             {1, Step::Fetch, {}, true, kEnforce, "", false, "found", "", "a", StsStep::UseKnown},
             {30, Step::Known, {}, false, "", "", false, "cached", "", "a", StsStep::UseKnown},
             // The TXT verdict is 60 s old: look again.
             {61, Step::Known, {}, false, "", "", false, "cached", "", "a", StsStep::CheckTxt},
             {900, Step::Txt, txt({"v=STSv1; id=a"}), false, "", "", false, "renewed", "", "a",
              StsStep::UseKnown},
             // Renewed at 900 for another max_age (1000): alive at 1500, past the first expiry.
             {1500, Step::Txt, txt({"v=STSv1; id=a"}), false, "", "", false, "renewed", "", "a",
              StsStep::UseKnown},
         });
}

TEST_CASE(
    "sts_state: a changed id is fetched; a failed fetch keeps the old policy and waits 5 minutes") {
    play(
        "id change",
        with_policy_a({
            {100, Step::Txt, txt({"v=STSv1; id=b"}), false, "", "", true, "", "", "",
             StsStep::UseKnown},
            {100,
             Step::Fetch,
             {},
             false,
             "",
             "http_status_503",
             false,
             "errored",
             "http_status_503",
             "a",
             StsStep::UseKnown},
            // TXT again after its TTL, still id b, within 5 minutes of the failure: no fetch.
            {200, Step::Txt, txt({"v=STSv1; id=b"}, 500), false, "", "", false, "errored",
             "http_status_503", "a", StsStep::UseKnown},
            // 5 minutes after the failure the fetch is due while the TXT verdict is fresh.
            {400,
             Step::Known,
             {},
             false,
             "",
             "",
             false,
             "errored",
             "http_status_503",
             "a",
             StsStep::Fetch},
            {400, Step::Fetch, {}, true, kEnforce2, "", false, "found", "", "b", StsStep::UseKnown},
        }));
}

TEST_CASE(
    "sts_state: a vanished or broken TXT record and DNS failures never erase a policy before "
    "max_age") {
    play("txt gone", with_policy_a({
                         {100, Step::Txt, txt_denied(DnsResult::NxDomain), false, "", "", false,
                          "not_found", "no_sts_record", "a", StsStep::UseKnown},
                         {200, Step::Txt, txt({"v=STSv1; id=a", "v=STSv1; id=b"}), false, "", "",
                          false, "not_found", "multi_sts_records", "a", StsStep::UseKnown},
                         // Failures are not remembered: the next lookup asks again.
                         {300, Step::Txt, txt_denied(DnsResult::ServFail), false, "", "", false,
                          "not_found", "dns_servfail", "a", StsStep::CheckTxt},
                         {400, Step::Txt, txt_denied(DnsResult::Timeout), false, "", "", false,
                          "not_found", "dns_timeout", "a", StsStep::CheckTxt},
                         // Past max_age (fetched at 0, 1000 s) the policy is gone.
                         {1000, Step::Txt, txt_denied(DnsResult::NxDomain), false, "", "", false,
                          "not_found", "no_sts_record", "", StsStep::UseKnown},
                     }));
}

TEST_CASE("sts_state: mode none removes the policy at once; an invalid policy is a failed fetch") {
    play("mode none", with_policy_a({
                          {100, Step::Txt, txt({"v=STSv1; id=n"}), false, "", "", true, "", "", "",
                           StsStep::UseKnown},
                          {100,
                           Step::Fetch,
                           {},
                           true,
                           "version: STSv1\nmode: none\nmax_age: 1000\n",
                           "",
                           false,
                           "found",
                           "",
                           "",
                           StsStep::UseKnown},
                          // The same id again: still none, not fetched again.
                          {170, Step::Txt, txt({"v=STSv1; id=n"}), false, "", "", false, "renewed",
                           "", "", StsStep::UseKnown},
                          {200, Step::Txt, txt({"v=STSv1; id=bad"}), false, "", "", true, "", "",
                           "", StsStep::UseKnown},
                          {200,
                           Step::Fetch,
                           {},
                           true,
                           "version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n",
                           "",
                           false,
                           "errored",
                           "invalid_sts_version",
                           "",
                           StsStep::UseKnown},
                      }));
}

TEST_CASE(
    "sts_state: an expired policy with an unchanged id is fetched again while the TXT verdict is "
    "fresh") {
    play("expiry",
         {
             {0, Step::Txt, txt({"v=STSv1; id=a"}, 5000), false, "", "", true, "", "", "",
              StsStep::UseKnown},
             {0, Step::Fetch, {}, true, kEnforce, "", false, "found", "", "a", StsStep::UseKnown},
             {999, Step::Known, {}, false, "", "", false, "cached", "", "a", StsStep::UseKnown},
             {1000,
              Step::Known,
              {},
              false,
              "",
              "",
              false,
              "errored",
              "not_fetched",
              "",
              StsStep::Fetch},
         });
}

TEST_CASE("sts_state: a fetched policy ends a mode none verdict; that id is fetched again") {
    const std::string none = "version: STSv1\nmode: none\nmax_age: 1000\n";
    play("none then enforce",
         with_policy_a({
             {100, Step::Txt, txt({"v=STSv1; id=n"}), false, "", "", true, "", "", "",
              StsStep::UseKnown},
             {100, Step::Fetch, {}, true, none, "", false, "found", "", "", StsStep::UseKnown},
             {200, Step::Txt, txt({"v=STSv1; id=a"}), false, "", "", true, "", "", "",
              StsStep::UseKnown},
             {200, Step::Fetch, {}, true, kEnforce, "", false, "found", "", "a", StsStep::UseKnown},
             {300, Step::Txt, txt({"v=STSv1; id=n"}), false, "", "", true, "", "", "",
              StsStep::UseKnown},
         }));
}

TEST_CASE("sts_state: the rarely set facts read as unset until set and once cleared") {
    StsState s;
    auto unset = [](const StsState& st) {
        return st.txt_code().empty() && st.none_id().empty() && st.none_until() == 0 &&
               st.none_max_age() == 0 && st.failed_id().empty() && st.retry_after() == 0 &&
               st.failed_code().empty() && st.failed_reason().empty();
    };
    CHECK(unset(s));
    s.set_txt_code("");
    CHECK(unset(s));
    s.set_txt_code("no_sts_record");
    s.set_none("n", 100, 50);
    s.set_failed("f", 300, "http_status_503", "HTTP 503");
    s.set_txt_code("");
    CHECK(s.txt_code().empty());
    s.renew_none(200);
    CHECK(s.none_id() == "n");
    CHECK(s.none_until() == 200);
    CHECK(s.none_max_age() == 50);
    StsState moved = std::move(s);
    CHECK(moved.failed_id() == "f");
    CHECK(moved.retry_after() == 300);
    CHECK(moved.failed_code() == "http_status_503");
    CHECK(moved.failed_reason() == "HTTP 503");
    moved.clear_none();
    CHECK(moved.none_id().empty());
    CHECK(moved.none_until() == 0);
    CHECK(moved.failed_id() == "f");
    moved.clear_failed();
    CHECK(unset(moved));
    moved.clear_failed();
    moved.clear_none();
    CHECK(unset(moved));
}

// ---- the combination ------------------------------------------------------------------------

TEST_CASE("sts_state: DANE first, MTA-STS only for no DANE, TEMP for an unfinished TLSA lookup") {
    const std::string enforce =
        "version: STSv1\nmode: enforce\nmx: mx.example.com\nmx: *.example.net\nmax_age: 86400\n";
    const std::string testing =
        "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400\n";
    PolicySettings plain;
    PolicySettings as_encrypt;
    as_encrypt.testing_mode = TestingMode::Encrypt;
    PolicySettings as_enforce;
    as_enforce.testing_mode = TestingMode::Enforce;
    as_enforce.sts_level = StsLevel::Secure;
    struct Row {
        const char* name;
        DaneDecision dane;
        std::optional<std::string> sts;
        PolicySettings settings;
        Outcome want;
        std::string want_policy;
        Source want_source;
    };
    const std::string verify = "verify match=mx.example.com:.example.net servername=hostname";
    const std::vector<Row> rows = {
        {"dane-only wins over enforce", dane(DaneVerdict::DaneOnly), enforce, plain, Outcome::Found,
         "dane-only", Source::Dane},
        {"dane wins over enforce", dane(DaneVerdict::Dane), enforce, plain, Outcome::Found, "dane",
         Source::Dane},
        {"encrypt (unusable TLSA) wins", dane(DaneVerdict::Encrypt), enforce, plain, Outcome::Found,
         "encrypt", Source::Dane},
        {"MX lookup failure is never replaced", dane(DaneVerdict::Temp), enforce, plain,
         Outcome::Temp, "", Source::None},
        {"NXDOMAIN / null MX stay not found", dane(DaneVerdict::NotFound), enforce, plain,
         Outcome::NotFound, "", Source::None},
        {"no DANE + enforce", dane(DaneVerdict::NoDane), enforce, plain, Outcome::Found, verify,
         Source::MtaSts},
        {"no DANE + no policy", dane(DaneVerdict::NoDane), std::nullopt, plain, Outcome::NotFound,
         "", Source::None},
        {"no DANE + testing, ignore", dane(DaneVerdict::NoDane), testing, plain, Outcome::NotFound,
         "", Source::None},
        {"no DANE + testing, encrypt", dane(DaneVerdict::NoDane), testing, as_encrypt,
         Outcome::Found, "encrypt", Source::MtaSts},
        {"no DANE + testing, enforce, secure", dane(DaneVerdict::NoDane), testing, as_enforce,
         Outcome::Found, "secure match=mx.example.com servername=hostname", Source::MtaSts},
        {"unfinished TLSA + enforce: TEMP", dane(DaneVerdict::Dane, true), enforce, plain,
         Outcome::Temp, "", Source::None},
        {"unfinished TLSA + testing ignored: dane", dane(DaneVerdict::Dane, true), testing, plain,
         Outcome::Found, "dane", Source::Dane},
        {"unfinished TLSA + testing as encrypt: TEMP", dane(DaneVerdict::Dane, true), testing,
         as_encrypt, Outcome::Temp, "", Source::None},
        {"unfinished TLSA + no policy: dane", dane(DaneVerdict::Dane, true), std::nullopt, plain,
         Outcome::Found, "dane", Source::Dane},
    };
    const int64_t now = 1'000'000;
    for (const auto& r : rows) {
        INFO(r.name);
        const Answer a = DomainEngine::combine(facts_with({"mx.example.com", "mx2.example.org"}),
                                               r.dane, sts_with(r.sts, now), r.settings, now);
        CHECK(outcome_name(a.outcome) == outcome_name(r.want));
        CHECK(a.policy == r.want_policy);
        CHECK(source_name(a.source) == source_name(r.want_source));
        if (a.outcome == Outcome::Temp) CHECK(a.ttl == 0);

        // What the cache keeps of the row renders, under every profile, what combine() gives
        // (directly and through a row of the SQLite file), as long as it may be cached.
        Resolution res{facts_with({"mx.example.com", "mx2.example.org"}), r.dane,
                       sts_with(r.sts, now), now};
        const Answer def = res.answer(plain);
        if (cacheable(res, def)) {
            const CachedAnswer c = cached_answer(res, def, now, 3600);
            const auto back =
                cached_from_row("example.com", cache_row("example.com", res, def, c), plain);
            REQUIRE(back.has_value());
            PolicySettings tlsrpt;
            tlsrpt.tlsrpt = true;
            for (const PolicySettings& s : {plain, as_encrypt, as_enforce, tlsrpt}) {
                const Answer want = res.answer(s);
                for (const CachedAnswer* cached : {&c, &*back}) {
                    const Answer got = render("example.com", *cached, s, now + 10);
                    CHECK(outcome_name(got.outcome) == outcome_name(want.outcome));
                    CHECK(got.policy == want.policy);
                    CHECK(source_name(got.source) == source_name(want.source));
                    CHECK(got.ttl == want.ttl - 10);
                }
            }
        } else {
            // Only TEMP and the unfinished-TLSA rows (their answer depends on the profile).
            CHECK((def.outcome == Outcome::Temp || r.dane.unfinished));
        }
        // The details always carry both halves.
        CHECK(a.details.find("\"dane\":{") != std::string::npos);
        CHECK(a.details.find("\"mta_sts\":{") != std::string::npos);
        if (r.sts) {
            // mx2.example.org matches no pattern: shown, and named by refused_mx().
            CHECK(a.details.find("{\"host\":\"mx2.example.org\",\"matches\":false}") !=
                  std::string::npos);
            CHECK(a.details.find("{\"host\":\"mx.example.com\",\"matches\":true,\"pattern\":\"mx."
                                 "example.com\"}") != std::string::npos);
        }
    }
}

TEST_CASE("sts_state: the TTL of an MTA-STS answer never outlives the TXT verdict or the policy") {
    const int64_t now = 5000;
    const std::string enforce = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 100\n";
    StsReport r = sts_with(enforce, now);  // TXT fresh for 300 s, policy for 100 s
    DaneDecision d = dane(DaneVerdict::NoDane);
    d.ttl = 3600;
    Answer a = DomainEngine::combine(facts_with({"mx.example.com"}), d, r, PolicySettings{}, now);
    CHECK(a.outcome == Outcome::Found);
    CHECK(a.ttl == 100);
    r.txt_valid_until = now + 40;
    a = DomainEngine::combine(facts_with({"mx.example.com"}), d, r, PolicySettings{}, now);
    CHECK(a.ttl == 40);
    d.ttl = 20;  // the MX records expire first
    a = DomainEngine::combine(facts_with({"mx.example.com"}), d, r, PolicySettings{}, now);
    CHECK(a.ttl == 20);
    CHECK(DomainEngine::refused_mx(facts_with({"mx.example.com", "other.example"}), r) ==
          "other.example");
    CHECK(DomainEngine::refused_mx(facts_with({"mx.example.com"}), r).empty());
}
