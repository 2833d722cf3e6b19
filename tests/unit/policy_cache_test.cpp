// The policy cache (cache/policy_cache.h) with a fake resolver and an injected clock: expiry,
// negative TTL, stale windows per source, single-flight with a deadline, refresh-ahead and its
// back-off, eviction order, re-rendering on reload, and a restart and a purge through the file.
#include <doctest/doctest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <list>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cache/policy_cache.h"
#include "resolution_fixture.h"
#include "temp_dir.h"

using namespace tlspolicy;
using namespace tlspolicy::testutil;
using ::testutil::TempDir;

namespace {

// Resolutions complete when the test says so.
struct FakeResolver : DomainResolver {
    std::map<std::string, std::vector<ResolutionCallback>> pending;
    std::map<std::string, int> calls;
    std::vector<std::string> forgotten, remembered;
    void resolve(const std::string& domain, ResolutionCallback cb) override {
        ++calls[domain];
        pending[domain].push_back(std::move(cb));
    }
    void remember_sts(const std::string& domain, StsPolicyPtr) override {
        remembered.push_back(domain);
    }
    void forget(const std::string& domain) override { forgotten.push_back(domain); }
    void complete(const std::string& domain, std::shared_ptr<Resolution> r) {
        REQUIRE(pending.count(domain));
        auto cbs = std::move(pending[domain]);
        pending.erase(domain);
        r->facts.domain = domain;
        for (auto& cb : cbs)
            cb(r);
    }
};

// A resolution whose DANE half says `v` with `ttl`, and an MTA-STS half with `body` (or none).
std::shared_ptr<Resolution> resolution(DaneVerdict v, int64_t ttl, int64_t now,
                                       std::optional<std::string> body = std::nullopt) {
    auto r = std::make_shared<Resolution>();
    r->facts = facts_with({"mx.example.com"});
    r->dane = dane(v);
    r->dane.ttl = ttl;
    r->sts = sts_with(body, now);
    r->sts.txt_valid_until = now + 100000;
    r->now = now;
    return r;
}

const std::string kEnforce = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 1000\n";
const std::string kTesting = "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 1000\n";

struct Fixture {
    int64_t now = 1'000'000;
    FakeResolver resolver;
    EventBasePtr base{event_base_new()};
    Config config = default_config();
    std::unique_ptr<PolicyCache> cache;
    std::vector<Answer> answers;

    Fixture() {
        config.cache.stale_ttl = 300;
        config.server.lookup_deadline_ms = 60000;
    }
    void start(bool use_file = false) {
        cache = std::make_unique<PolicyCache>(
            base.get(), resolver, config, [this] { return now; }, use_file);
    }
    // Looks `domain` up; the answer lands in `answers` when it comes.
    void ask(const std::string& domain, const PolicySettings& settings = {}) {
        cache->lookup(domain, settings, [this](Answer a) { answers.push_back(std::move(a)); });
    }
    // A miss of `domain` that `r` resolves: the answer is stored and given to the client.
    void resolve(const std::string& domain, std::shared_ptr<Resolution> r) {
        ask(domain);
        resolver.complete(domain, std::move(r));
    }
    // Runs the loop until `n` answers have arrived (or 10 s passed).
    void wait_answers(std::size_t n) {
        EventPtr guard(evtimer_new(
            base.get(),
            [](evutil_socket_t, short, void* b) {
                event_base_loopbreak(static_cast<event_base*>(b));
            },
            base.get()));
        const timeval ten{10, 0};
        evtimer_add(guard.get(), &ten);
        while (answers.size() < n && event_base_loop(base.get(), EVLOOP_ONCE) == 0) {
            if (!evtimer_pending(guard.get(), nullptr)) break;
        }
    }
};

std::string shown(const Answer& a) {
    return std::string(outcome_name(a.outcome)) + (a.policy.empty() ? "" : " " + a.policy);
}

}  // namespace

TEST_CASE("policy cache: an answer is served from memory until it expires") {
    Fixture f;
    f.start();
    f.ask("a.example");
    CHECK(f.answers.empty());
    f.resolver.complete("a.example", resolution(DaneVerdict::DaneOnly, 100, f.now));
    REQUIRE(f.answers.size() == 1);
    CHECK(shown(f.answers[0]) == "found dane-only");
    f.now += 99;
    f.ask("a.example");
    REQUIRE(f.answers.size() == 2);
    CHECK(shown(f.answers[1]) == "found dane-only");
    CHECK(f.answers[1].reason == f.answers[0].reason);
    CHECK(f.answers[1].ttl == 1);
    CHECK(f.resolver.calls["a.example"] == 1);
    f.now += 1;  // expired
    f.ask("a.example");
    CHECK(f.resolver.calls["a.example"] == 2);
    CHECK(f.answers.size() == 2);
    CHECK(f.cache->stats().hits == 1);
    CHECK(f.cache->stats().misses == 2);
}

TEST_CASE("policy cache: not found is cached for its negative TTL, TEMP never") {
    Fixture f;
    f.start();
    f.resolve("nf.example", resolution(DaneVerdict::NotFound, 30, f.now));
    f.now += 29;
    f.ask("nf.example");
    REQUIRE(f.answers.size() == 2);
    CHECK(shown(f.answers[1]) == "not-found");
    CHECK(f.resolver.calls["nf.example"] == 1);
    f.now += 1;
    f.ask("nf.example");
    CHECK(f.resolver.calls["nf.example"] == 2);

    f.resolve("t.example", resolution(DaneVerdict::Temp, 0, f.now));
    f.ask("t.example");
    CHECK(f.resolver.calls["t.example"] == 2);
    CHECK(f.cache->size() == 1);  // nf.example only (its refresh still pending)
}

TEST_CASE("policy cache: concurrent misses share one resolution, each profile its answer") {
    Fixture f;
    f.start();
    PolicySettings tlsrpt;
    tlsrpt.tlsrpt = true;
    PolicySettings as_enforce;
    as_enforce.testing_mode = TestingMode::Enforce;
    f.ask("s.example");
    f.ask("s.example", tlsrpt);
    f.ask("s.example", as_enforce);
    CHECK(f.resolver.calls["s.example"] == 1);
    f.resolver.complete("s.example", resolution(DaneVerdict::NoDane, 600, f.now, kTesting));
    REQUIRE(f.answers.size() == 3);
    CHECK(shown(f.answers[0]) == "not-found");  // testing_mode = ignore
    CHECK(shown(f.answers[1]) == "not-found");
    CHECK(shown(f.answers[2]) == "found verify match=mx.example.com servername=hostname");
    // From memory, the same per profile.
    f.ask("s.example", as_enforce);
    f.ask("s.example");
    REQUIRE(f.answers.size() == 5);
    CHECK(shown(f.answers[3]) == shown(f.answers[2]));
    CHECK(shown(f.answers[4]) == "not-found");
    CHECK(f.resolver.calls["s.example"] == 1);
}

TEST_CASE("policy cache: stale answers per source while resolutions fail") {
    struct Row {
        const char* name;
        DaneVerdict verdict;
        std::optional<std::string> sts;
        int64_t stale_for;  // seconds past expiry (100) it is still served
    };
    const std::vector<Row> rows = {
        {"DANE: stale_ttl (300)", DaneVerdict::DaneOnly, std::nullopt, 300},
        {"MTA-STS: until max_age (1000 after the fetch)", DaneVerdict::NoDane, kEnforce, 900},
        {"not found: never", DaneVerdict::NotFound, std::nullopt, 0},
    };
    for (const auto& r : rows) {
        INFO(std::string(r.name));
        Fixture f;
        f.start();
        const int64_t t0 = f.now;
        f.resolve("d.example", resolution(r.verdict, 100, t0, r.sts));
        const std::string fresh = shown(f.answers.at(0));
        // Just inside the window, then at its end: a failing resolution gives the stale
        // answer, then TEMP.
        std::vector<int64_t> times = {t0 + 100 + r.stale_for};
        if (r.stale_for > 0) times.insert(times.begin(), t0 + 100 + r.stale_for - 1);
        for (const int64_t at : times) {
            f.now = at;
            const bool inside = at < t0 + 100 + r.stale_for;
            f.ask("d.example");
            REQUIRE(f.resolver.pending.count("d.example"));
            f.resolver.complete("d.example", resolution(DaneVerdict::Temp, 0, at, r.sts));
            const Answer& got = f.answers.back();
            if (inside) {
                CHECK(shown(got) == fresh);
                CHECK(got.reason.find("stale") != std::string::npos);
            } else {
                CHECK(shown(got) == "temp");
            }
        }
    }
}

TEST_CASE("policy cache: while failing, stale answers come without a new resolution") {
    Fixture f;
    f.start();
    f.resolve("d.example", resolution(DaneVerdict::DaneOnly, 100, f.now));
    f.now += 150;
    f.resolve("d.example", resolution(DaneVerdict::Temp, 0, f.now));
    CHECK(f.resolver.calls["d.example"] == 2);
    f.now += 4;  // back-off after one failure: 5 s
    f.ask("d.example");
    CHECK(f.resolver.calls["d.example"] == 2);
    CHECK(shown(f.answers.back()) == "found dane-only");
    f.now += 1;
    f.ask("d.example");
    CHECK(f.resolver.calls["d.example"] == 3);
}

TEST_CASE("policy cache: lookup_now gives at once what lookup gives at once, and nothing else") {
    Fixture f;
    f.start();
    Answer storage;
    // Missing: nothing, and no resolution started.
    CHECK_FALSE(f.cache->lookup_now("a.example", {}, storage));
    CHECK(f.resolver.calls["a.example"] == 0);
    f.resolve("a.example", resolution(DaneVerdict::DaneOnly, 100, f.now));
    f.resolve("s.example", resolution(DaneVerdict::NoDane, 600, f.now, kTesting));
    f.now += 50;
    PolicySettings encrypt_testing;
    encrypt_testing.testing_mode = TestingMode::Encrypt;
    struct Row {
        const char* domain;
        PolicySettings settings;
        const char* want;
    };
    const std::vector<Row> rows = {
        {"a.example", {}, "found dane-only"},             // fresh: a view of the entry
        {"s.example", {}, "not-found"},                   // MTA-STS testing, default settings
        {"s.example", encrypt_testing, "found encrypt"},  // re-rendered into storage
    };
    for (const auto& row : rows) {
        CAPTURE(row.domain);
        CAPTURE(row.want);
        const uint64_t hits = f.cache->stats().hits;
        f.ask(row.domain, row.settings);
        const Answer waited = f.answers.back();
        CHECK(shown(waited) == row.want);
        const auto now = f.cache->lookup_now(row.domain, row.settings, storage);
        REQUIRE(now);
        CHECK(now->outcome == waited.outcome);
        CHECK(now->policy == waited.policy);
        CHECK(now->reason == waited.reason);
        CHECK(now->source == waited.source);
        CHECK(now->ttl == waited.ttl);
        CHECK(f.cache->stats().hits == hits + 2);  // a hit either way
    }
    CHECK(f.resolver.calls["a.example"] == 1);
    CHECK(f.resolver.calls["s.example"] == 1);

    // Expired: nothing at once, and lookup_now starts no resolution (lookup does).
    f.now += 50;
    CHECK_FALSE(f.cache->lookup_now("a.example", {}, storage));
    CHECK(f.resolver.calls["a.example"] == 1);
    f.ask("a.example");
    CHECK(f.resolver.calls["a.example"] == 2);
    f.resolver.complete("a.example", resolution(DaneVerdict::Temp, 0, f.now));
    // Failing: the stale answer at once, built into storage, until the retry is due.
    f.now += 4;
    const auto stale = f.cache->lookup_now("a.example", {}, storage);
    REQUIRE(stale);
    CHECK(stale->outcome == Outcome::Found);
    CHECK(stale->policy == "dane-only");
    CHECK(stale->reason.find("stale") != std::string_view::npos);
    CHECK(stale->reason.data() == storage.reason.data());
    f.now += 1;
    CHECK_FALSE(f.cache->lookup_now("a.example", {}, storage));
    CHECK(f.resolver.calls["a.example"] == 2);
}

TEST_CASE("policy cache: a client waits at most lookup_deadline_ms") {
    Fixture f;
    f.config.server.lookup_deadline_ms = 50;
    f.start();
    // No answer ever: TEMP at the deadline.
    f.ask("slow.example");
    f.wait_answers(1);
    REQUIRE(f.answers.size() == 1);
    CHECK(shown(f.answers[0]) == "temp");
    CHECK(f.answers[0].reason.find("lookup_deadline_ms 50") != std::string::npos);
    // The resolution goes on and fills the cache; the client is not called twice.
    f.resolver.complete("slow.example", resolution(DaneVerdict::DaneOnly, 100, f.now));
    CHECK(f.answers.size() == 1);
    f.ask("slow.example");
    CHECK(shown(f.answers.back()) == "found dane-only");
    // Expired, slow again: the stale answer at the deadline.
    f.now += 120;
    f.ask("slow.example");
    f.wait_answers(3);
    REQUIRE(f.answers.size() == 3);
    CHECK(shown(f.answers[2]) == "found dane-only");
    CHECK(f.answers[2].reason.find("stale") != std::string::npos);
    CHECK(f.cache->stats().deadline == 2);
}

TEST_CASE("policy cache: used entries are refreshed ahead of expiry, failures back off") {
    Fixture f;
    f.start();
    const int64_t t0 = f.now;
    f.resolve("used.example", resolution(DaneVerdict::DaneOnly, 1000, t0));
    f.resolve("unused.example", resolution(DaneVerdict::DaneOnly, 1000, t0));
    f.now = t0 + 1;
    f.ask("used.example");  // used since stored
    // Lead 100 s, jitter up to 50 s: due between t0 + 850 and t0 + 900.
    f.now = t0 + 849;
    f.cache->tick();
    CHECK(f.resolver.calls["used.example"] == 1);
    f.now = t0 + 900;
    f.cache->tick();
    CHECK(f.resolver.calls["used.example"] == 2);
    CHECK(f.cache->refreshing() == 1);
    f.ask("used.example");  // still fresh: served while the refresh runs
    CHECK(f.resolver.calls["used.example"] == 2);
    CHECK(f.cache->stats().hits == 2);
    // The refresh fails: kept, retried after 5 s, then 10 s.
    f.resolver.complete("used.example", resolution(DaneVerdict::Temp, 0, f.now));
    CHECK(f.cache->refreshing() == 0);
    CHECK(f.cache->stats().refresh_failures == 1);
    f.now += 4;
    f.cache->tick();
    CHECK(f.resolver.calls["used.example"] == 2);
    f.now += 1;
    f.cache->tick();
    CHECK(f.resolver.calls["used.example"] == 3);
    f.resolver.complete("used.example", resolution(DaneVerdict::Temp, 0, f.now));
    f.now += 9;
    f.cache->tick();
    CHECK(f.resolver.calls["used.example"] == 3);
    f.now += 1;
    f.cache->tick();
    CHECK(f.resolver.calls["used.example"] == 4);
    f.resolver.complete("used.example", resolution(DaneVerdict::Dane, 1000, f.now));
    f.ask("used.example");
    CHECK(shown(f.answers.back()) == "found dane");
    CHECK(f.resolver.calls["used.example"] == 4);
    // Never used: never refreshed, it just expires.
    f.now = t0 + 999;
    f.cache->tick();
    CHECK(f.resolver.calls["unused.example"] == 1);
}

TEST_CASE("policy cache: refreshes run at most max_refreshes at once") {
    Fixture f;
    f.config.cache.max_refreshes = 2;
    f.start();
    const std::vector<std::string> names = {"r1.example", "r2.example", "r3.example"};
    for (const auto& n : names) {
        f.ask(n);
        f.resolver.complete(n, resolution(DaneVerdict::DaneOnly, 100, f.now));
        f.ask(n);
    }
    f.now += 99;
    f.cache->tick();
    CHECK(f.cache->refreshing() == 2);
    CHECK(f.resolver.pending.size() == 2);
    for (const auto& n : names)
        if (f.resolver.pending.count(n)) {
            f.resolver.complete(n, resolution(DaneVerdict::DaneOnly, 100, f.now));
            break;
        }
    f.cache->tick();
    CHECK(f.cache->refreshing() == 2);
    CHECK(f.cache->stats().refreshes == 3);
}

TEST_CASE("policy cache: eviction takes not-found entries first, then the least recently used") {
    Fixture f;
    f.config.cache.max_entries = 3;
    f.start();
    auto store = [&](const std::string& d, DaneVerdict v) {
        f.resolve(d, resolution(v, 1000, f.now));
    };
    store("nf.example", DaneVerdict::NotFound);
    store("f1.example", DaneVerdict::DaneOnly);
    store("f2.example", DaneVerdict::DaneOnly);
    f.ask("nf.example");  // recently used, but not found
    store("f3.example", DaneVerdict::DaneOnly);
    CHECK(f.cache->size() == 3);
    CHECK(f.cache->stats().evictions == 1);
    const auto calls = f.resolver.calls;
    auto cached = [&](const std::string& d) {
        const int before = f.resolver.calls[d];
        f.ask(d);
        const bool hit = f.resolver.calls[d] == before;
        if (!hit) f.resolver.complete(d, resolution(DaneVerdict::DaneOnly, 1000, f.now));
        return hit;
    };
    CHECK(cached("f1.example"));  // f1 is now the most recently used; f2 the least
    store("f4.example", DaneVerdict::DaneOnly);
    CHECK(cached("f1.example"));
    CHECK(cached("f3.example"));
    CHECK(cached("f4.example"));
    CHECK_FALSE(cached("f2.example"));  // evicted (and stored again by this lookup)
    CHECK_FALSE(cached("nf.example"));
    (void)calls;
}

TEST_CASE("policy cache: a reload re-renders MTA-STS answers under the new [policy]") {
    Fixture f;
    f.start();
    f.resolve("s.example", resolution(DaneVerdict::NoDane, 600, f.now, kTesting));
    CHECK(shown(f.answers.back()) == "not-found");
    Config next = f.config;
    next.policy.testing_mode = TestingMode::Encrypt;
    f.cache->set_config(next);
    f.ask("s.example", next.policy);
    CHECK(shown(f.answers.back()) == "found encrypt");
    CHECK(f.resolver.calls["s.example"] == 1);
}

TEST_CASE("policy cache: a restart starts warm from the file; purges by others are applied") {
    const TempDir tmp;
    const std::string dir = tmp.path();
    {
        Fixture f;
        f.config.cache.path = dir + "/cache.sqlite";
        f.start(true);
        REQUIRE(f.cache->file_open());
        f.resolve("a.example", resolution(DaneVerdict::DaneOnly, 1000, f.now));
        f.resolve("s.example", resolution(DaneVerdict::NoDane, 1000, f.now, kEnforce));
        f.ask("a.example");
        f.cache->flush();
    }
    Fixture g;
    g.config.cache.path = dir + "/cache.sqlite";
    g.start(true);
    CHECK(g.cache->stats().loaded == 2);
    g.ask("a.example");
    g.ask("s.example");
    REQUIRE(g.answers.size() == 2);
    CHECK(shown(g.answers[0]) == "found dane-only");
    CHECK(shown(g.answers[1]) == "found verify match=mx.example.com servername=hostname");
    CHECK(g.resolver.calls.empty());
    // The MTA-STS policy went back to the engine's memory.
    CHECK(g.resolver.remembered == std::vector<std::string>{"s.example"});
    {
        auto other = CacheStore::open(dir + "/cache.sqlite", "another process");
        REQUIRE(other.ok());
        REQUIRE((*other)->purge("s.example").ok());
    }
    g.cache->tick();
    CHECK(g.resolver.forgotten == std::vector<std::string>{"s.example"});
    g.ask("s.example");
    CHECK(g.resolver.calls["s.example"] == 1);
    CHECK(g.cache->size() == 1);
    g.cache.reset();
}

TEST_CASE(
    "policy cache: damage only the integrity probe finds is caught at start: no row is used") {
    const TempDir tmp;
    const std::string path = tmp.path() + "/cache.sqlite";
    {
        Fixture f;
        f.config.cache.path = path;
        f.start(true);
        f.resolve("a.example", resolution(DaneVerdict::DaneOnly, 1000, f.now));
        f.resolve("s.example", resolution(DaneVerdict::NoDane, 1000, f.now, kEnforce));
        f.cache->flush();
    }
    // The last connection folded the WAL into the file. Damage the domain index, which
    // loading does not read: the start's load runs beside the probe, not after it.
    REQUIRE_FALSE(std::filesystem::exists(path + "-wal"));
    int64_t root = 0;
    {
        sqlite3* raw = nullptr;
        REQUIRE(sqlite3_open(path.c_str(), &raw) == SQLITE_OK);
        SqlitePtr db(raw);
        sqlite3_stmt* st = nullptr;
        REQUIRE(sqlite3_prepare_v2(db.get(),
                                   "SELECT rootpage FROM sqlite_schema WHERE type = 'index' AND "
                                   "tbl_name = 'entries' AND sql IS NULL",
                                   -1, &st, nullptr) == SQLITE_OK);
        REQUIRE(sqlite3_step(st) == SQLITE_ROW);
        root = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    REQUIRE(root > 1);
    {
        std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
        file.seekp((root - 1) * 4096);
        const std::string garbage(4096, static_cast<char>(0xA5));
        file.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
        REQUIRE(file.good());
    }
    {
        // The rows themselves still read: a load without the probe would have used them.
        auto ro = CacheStore::open_readonly(path);
        REQUIRE(ro.ok());
        auto rows = (*ro)->load(100);
        REQUIRE(rows.ok());
        CHECK(rows->size() == 2);
    }
    Fixture g;
    g.config.cache.path = path;
    g.start(true);
    CHECK(g.cache->stats().loaded == 0);
    CHECK(g.cache->size() == 0);
    CHECK(g.resolver.remembered.empty());
    CHECK(g.cache->file_open());
    std::size_t moved = 0;
    for (const auto& name : tmp.names())
        if (name.rfind("cache.sqlite.corrupt-", 0) == 0) ++moved;
    CHECK(moved == 1);
    g.ask("a.example");
    CHECK(g.resolver.calls["a.example"] == 1);
}

TEST_CASE(
    "policy cache: a resolution gets the entry's MTA-STS policy; uncacheable answers back off") {
    Fixture f;
    f.start();
    f.resolve("s.example", resolution(DaneVerdict::NoDane, 100, f.now, kEnforce));
    CHECK(f.resolver.remembered.empty());
    f.now += 100;  // expired; the policy (max_age 1000) is still in force
    f.ask("s.example");
    // The engine is reminded of the policy before it looks again, so a failed fetch there
    // cannot turn the domain into "not found".
    CHECK(f.resolver.remembered == std::vector<std::string>{"s.example"});
    // An answer without a lifetime (TTL 0) is passed on but cannot renew the entry: back-off.
    auto r = resolution(DaneVerdict::NoDane, 0, f.now, kEnforce);
    f.resolver.complete("s.example", r);
    CHECK(shown(f.answers.back()) == "found verify match=mx.example.com servername=hostname");
    f.now += 4;
    f.ask("s.example");  // within the 5 s back-off: the stale entry, no new resolution
    CHECK(f.resolver.calls["s.example"] == 2);
    CHECK(f.answers.back().reason.find("stale") != std::string::npos);
}

TEST_CASE("policy cache: a locked file keeps answers in memory and is written once it is free") {
    const TempDir tmp;
    const std::string dir = tmp.path();
    const std::string path = dir + "/cache.sqlite";
    Fixture f;
    f.config.cache.path = path;
    f.start(true);
    REQUIRE(f.cache->file_open());
    // Another process holds the write lock (past the 2 s busy timeout).
    sqlite3* raw = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &raw) == SQLITE_OK);
    SqlitePtr other(raw);
    REQUIRE(sqlite3_exec(other.get(), "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) == SQLITE_OK);
    f.resolve("a.example", resolution(DaneVerdict::DaneOnly, 1000, f.now));
    f.cache->flush();  // the attempt failed: busy
    {
        auto during = CacheStore::open_readonly(path);  // WAL: readers are not blocked
        REQUIRE(during.ok());
        auto none = (*during)->get("a.example");
        REQUIRE(none.ok());
        CHECK_FALSE(none->has_value());
    }
    f.ask("a.example");
    CHECK(shown(f.answers.back()) == "found dane-only");  // from memory
    CHECK(f.resolver.calls["a.example"] == 1);
    REQUIRE(sqlite3_exec(other.get(), "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK);
    f.cache->flush();  // retried now
    auto reader = CacheStore::open_readonly(path);
    REQUIRE(reader.ok());
    auto row = (*reader)->get("a.example");
    REQUIRE(row.ok());
    REQUIRE(row->has_value());
    CHECK((*row)->policy == "dane-only");
    f.cache.reset();
}

TEST_CASE("policy cache: a huge write by another process is read in batches, all of it") {
    const TempDir tmp;
    const std::string dir = tmp.path();
    const std::size_t n = 3 * kSyncBatchRows + 17;  // several batches, the last one partial
    {
        Fixture reader;
        reader.config.cache.path = dir + "/cache.sqlite";
        reader.config.cache.max_entries = 100000;
        reader.start(true);
        REQUIRE(reader.cache->file_open());
        reader.cache->tick();  // the file as it was: nothing yet
        {
            // Rows as a cache writes them (into a scratch file first), then written to the
            // shared file in one transaction by "another process" (another writer id).
            Fixture writer;
            writer.config.cache.path = dir + "/scratch.sqlite";
            writer.config.cache.max_entries = 100000;
            writer.start(true);
            for (std::size_t i = 0; i < n; ++i)
                writer.resolve("d" + std::to_string(i) + ".example",
                               resolution(DaneVerdict::DaneOnly, 1000, writer.now));
            writer.cache->flush();
            auto scratch = CacheStore::open(dir + "/scratch.sqlite", "copier");
            REQUIRE(scratch.ok());
            auto rows = (*scratch)->changes_since(0);
            REQUIRE(rows.ok());
            REQUIRE(rows->rows.size() == n);
            auto other = CacheStore::open(dir + "/cache.sqlite", "another process");
            REQUIRE(other.ok());
            REQUIRE((*other)->write(rows->rows).ok());
        }
        for (int ticks = 0; reader.cache->stats().synced_rows < n && ticks < 100; ++ticks)
            reader.cache->tick();
        CHECK(reader.cache->stats().synced_rows == n);
        CHECK(reader.cache->size() == n);
        reader.ask("d0.example");
        reader.ask("d" + std::to_string(n - 1) + ".example");
        REQUIRE(reader.answers.size() == 2);
        CHECK(shown(reader.answers[0]) == "found dane-only");
        CHECK(shown(reader.answers[1]) == "found dane-only");
        CHECK(reader.resolver.calls.empty());
        reader.cache->tick();  // nothing more to read
        CHECK(reader.cache->stats().synced_rows == n);
    }
}

TEST_CASE("policy cache: eviction follows the rule (not found first, then LRU) over many lookups") {
    // Random lookups against a model of the rule: two lists, most recently used in front; a
    // miss makes room by dropping the back of the not-found list (else of the found list),
    // then stores the domain in front of its list.
    struct Case {
        const char* name;
        int max_entries;
        int domains;
        int lookups;
    };
    const Case cases[] = {{"tiny", 3, 8, 600}, {"small", 10, 40, 3000}, {"most fit", 50, 60, 3000}};
    for (const Case& c : cases) {
        INFO(std::string(c.name));
        Fixture f;
        f.config.cache.max_entries = c.max_entries;
        f.start();
        std::list<std::string> found, not_found;
        uint64_t evictions = 0;
        std::mt19937 rng(3);
        for (int i = 0; i < c.lookups; ++i) {
            const int n = static_cast<int>(rng() % static_cast<unsigned>(c.domains));
            const std::string d = "m" + std::to_string(n) + ".example";
            const bool nf = n % 3 == 0;
            auto& list = nf ? not_found : found;
            const auto it = std::find(list.begin(), list.end(), d);
            const int before = f.resolver.calls[d];
            f.ask(d);
            if (it != list.end()) {
                REQUIRE(f.resolver.calls[d] == before);  // a hit
                list.splice(list.begin(), list, it);
            } else {
                REQUIRE(f.resolver.calls[d] == before + 1);
                f.resolver.complete(
                    d,
                    resolution(nf ? DaneVerdict::NotFound : DaneVerdict::DaneOnly, 100000, f.now));
                // Room is made among the others: the new entry is never the one to go.
                while (found.size() + not_found.size() + 1 >
                       static_cast<std::size_t>(c.max_entries)) {
                    (!not_found.empty() ? not_found : found).pop_back();
                    ++evictions;
                }
                list.push_front(d);
            }
            REQUIRE(f.cache->size() == found.size() + not_found.size());
        }
        CHECK_EQ(f.cache->stats().evictions, evictions);
        for (const auto* list : {&found, &not_found})
            for (const auto& d : *list) {
                const int before = f.resolver.calls[d];
                f.ask(d);
                CHECK_MESSAGE(f.resolver.calls[d] == before, d << " should be cached");
            }
    }
}

namespace {

// A row as a cache writes it, fresh at `now`, last used at `last_used`.
CacheRow stored_row(const std::string& domain, bool found, int64_t now, int64_t last_used) {
    CacheRow r;
    r.domain = domain;
    r.outcome = found ? Outcome::Found : Outcome::NotFound;
    r.policy = found ? "dane-only" : "";
    r.source = found ? Source::Dane : Source::None;
    r.reason = "test reason";
    r.fetched_at = now - 10;
    r.expires_at = now + 1000;
    r.stale_until = now + 2000;
    r.details = "{}";
    r.last_used = last_used;
    return r;
}

}  // namespace

TEST_CASE("policy cache: a restart keeps the file's use order; of equal ones the older row goes") {
    // Written in this (rowid) order; b and d were last used at the same time.
    const std::vector<std::pair<std::string, int64_t>> rows = {
        {"a.example", 50}, {"b.example", 10}, {"c.example", 30},
        {"d.example", 10}, {"e.example", 40}, {"f.example", 60}};  // f: not found
    // After k new domains, the k first of: f (not found), b, d (the later row), c.
    const std::vector<std::string> gone_order = {"f.example", "b.example", "d.example",
                                                 "c.example"};
    for (std::size_t k = 0; k <= gone_order.size(); ++k) {
        INFO("new domains: " << k);
        const TempDir tmp;
        const std::string dir = tmp.path();
        Fixture g;
        {
            auto store = CacheStore::open(dir + "/cache.sqlite", "another process");
            REQUIRE(store.ok());
            std::vector<CacheRow> written;
            for (const auto& [d, used] : rows)
                written.push_back(stored_row(d, d != "f.example", g.now, g.now - 100 + used));
            REQUIRE((*store)->write(written).ok());
        }
        g.config.cache.path = dir + "/cache.sqlite";
        g.config.cache.max_entries = 6;
        g.start(true);
        REQUIRE(g.cache->stats().loaded == 6);
        for (std::size_t i = 0; i < k; ++i)
            g.resolve("new" + std::to_string(i) + ".example",
                      resolution(DaneVerdict::DaneOnly, 1000, g.now));
        CHECK(g.cache->stats().evictions == k);
        for (const auto& [d, used] : rows) {
            const bool want_gone =
                std::find(gone_order.begin(), gone_order.begin() + static_cast<long>(k), d) !=
                gone_order.begin() + static_cast<long>(k);
            g.ask(d);
            CHECK_MESSAGE((g.resolver.calls[d] == 1) == want_gone,
                          d << (want_gone ? " should be evicted" : " should be cached"));
        }
        g.cache.reset();
    }
}

TEST_CASE("policy cache: hits of an evicted entry are not counted for the next one in its slot") {
    const TempDir tmp;
    const std::string dir = tmp.path();
    const std::string path = dir + "/cache.sqlite";
    const std::string long_name = std::string(240, 'x') + ".example.com";  // 252 characters
    {
        Fixture f;
        f.config.cache.path = path;
        f.config.cache.max_entries = 1;
        f.start(true);
        REQUIRE(f.cache->file_open());
        f.resolve("a.example", resolution(DaneVerdict::DaneOnly, 1000, f.now));
        f.cache->flush();    // the row (the writer queues at most max_entries rows)
        f.ask("a.example");  // one hit, not written yet
        f.resolve(long_name, resolution(DaneVerdict::DaneOnly, 1000, f.now));  // evicts a
        f.cache->flush();
        CHECK(f.cache->size() == 1);
        f.ask(long_name);
        f.ask(long_name);
        CHECK(f.resolver.calls[long_name] == 1);
        f.cache->flush();
    }
    auto reader = CacheStore::open_readonly(path);
    REQUIRE(reader.ok());
    auto a = (*reader)->get("a.example");
    auto l = (*reader)->get(long_name);
    REQUIRE(a.ok());
    REQUIRE(l.ok());
    REQUIRE(a->has_value());
    REQUIRE(l->has_value());
    CHECK((*a)->hits == 0);
    CHECK((*l)->hits == 2);
    // The long name comes back from the file and answers from memory.
    Fixture g;
    g.config.cache.path = path;
    g.start(true);
    CHECK(g.cache->stats().loaded == 2);
    g.ask(long_name);
    REQUIRE(g.answers.size() == 1);
    CHECK(shown(g.answers[0]) == "found dane-only");
    CHECK(g.resolver.calls.empty());
    g.cache.reset();
}

TEST_CASE("policy cache: purge of one domain and of all; the cache works on afterwards") {
    Fixture f;
    f.start();
    const std::vector<std::string> names = {"p1.example", "p2.example", "p3.example"};
    for (const auto& n : names)
        f.resolve(n, resolution(DaneVerdict::DaneOnly, 1000, f.now));
    f.resolve("s.example", resolution(DaneVerdict::NoDane, 1000, f.now, kEnforce));
    CHECK(f.cache->purge("p2.example") == 1);
    CHECK(f.cache->purge("p2.example") == 0);
    CHECK(f.cache->size() == 3);
    CHECK(f.cache->purge("") == 3);
    CHECK(f.cache->size() == 0);
    std::vector<std::string> forgotten = f.resolver.forgotten;
    std::sort(forgotten.begin(), forgotten.end());
    CHECK(forgotten == std::vector<std::string>{"p1.example", "p2.example", "p2.example",
                                                "p3.example", "s.example"});
    // Stored again from scratch, MTA-STS included, and answered from memory.
    f.resolve("s.example", resolution(DaneVerdict::NoDane, 1000, f.now, kEnforce));
    f.resolve("p1.example", resolution(DaneVerdict::DaneOnly, 1000, f.now));
    f.ask("s.example");
    f.ask("p1.example");
    CHECK(shown(f.answers.back()) == "found dane-only");
    CHECK(shown(f.answers[f.answers.size() - 2]) ==
          "found verify match=mx.example.com servername=hostname");
    CHECK(f.resolver.calls["s.example"] == 2);
    CHECK(f.resolver.calls["p1.example"] == 2);
    f.cache->tick();  // refresh queue items of purged entries are dropped, not resolved
    CHECK(f.resolver.pending.empty());
}
