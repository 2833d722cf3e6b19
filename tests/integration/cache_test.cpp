// The policy cache against the test world: a restart starts warm from the file, a prefetch by
// `tlspolicy` and a purge while the daemon runs reach the daemon, a corrupt file is replaced,
// and with DNS failing cached answers live exactly as long as the freshness rules allow.
//
// "DNS failing" is the world's SERVFAIL resolver: a daemon pointed at it can only answer from
// its cache, which proves where an answer came from.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "harness.h"
#include "util/hexquote.h"

using namespace harness;

namespace {

// [dns] with the world's trust anchor and a resolver that answers SERVFAIL to everything.
std::string failing_dns() {
    return "[dns]\nresolvers = [\"127.0.0.1:" + world_env("SERVFAIL_PORT") +
           "\"]\ntrust_anchor_file = \"" + world_env("ANCHOR") +
           "\"\ntimeout_ms = 1000\ndeadline_ms = 2000\n";
}

// [cache] at `path` with the given extra keys.
std::string cache_section(const std::string& path, const std::string& extra = "") {
    return "[cache]\npath = \"" + path + "\"\n" + extra;
}

// A config for the daemon: listeners, the DNS section, the world's MTA-STS hosts, the rest.
std::string daemon_config(const std::string& dns, const std::string& rest) {
    return std::string(kLoopbackListeners) + dns + world_sts() + rest;
}

// Asks until the answer is `want` (true) or `ms` passed (false): for changes another process
// makes, which the daemon applies within a second.
bool eventually(const Daemon& d, const std::string& key, const std::string& want, int ms) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < end)
        if (ask(d, key) == want) return true;
    return false;
}

}  // namespace

TEST_CASE("cache: a restart starts warm from the file, without DNS") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    const std::vector<std::string> domains = {"dane-ee.test", "sts-enforce.test", "insecure.test"};
    {
        Daemon d(dir, daemon_config(world_dns(), cache_section(path)));
        for (const auto& dom : domains)
            CHECK(ask(d, dom) == scenario_answer(dom));
        CHECK(d.stop() == 0);
    }
    // Every answer is in the file, readable with sqlite3.
    const std::string table =
        sqlite(path, "select domain, coalesce(policy, '-'), source from policies order by domain");
    CHECK(table ==
          "dane-ee.test|dane-only|dane\ninsecure.test|-|none\n"
          "sts-enforce.test|verify match=mx.sts-enforce.test servername=hostname|mta-sts\n");
    // ISO 8601 UTC times.
    const std::string times = sqlite(path, "select fetched_at, expires_at from policies limit 1");
    CHECK(times.size() == std::string("2026-01-01T00:00:00Z|2026-01-01T00:00:00Z\n").size());
    CHECK(times.find('T') == 10);
    CHECK(times[19] == 'Z');

    TempDir dir2;
    Daemon d(dir2, daemon_config(failing_dns(), cache_section(path)));
    for (const auto& dom : domains)
        CHECK(ask(d, dom) == scenario_answer(dom));
    CHECK(ask(d, "dane-two.test") == "TEMP");  // not cached: DNS fails
    CHECK(contains(d.log(), "3 answer(s) loaded"));
}

TEST_CASE("cache: a prefetch and a purge by tlspolicy reach the running daemon") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    Daemon d(dir, daemon_config(failing_dns(), cache_section(path)));
    CHECK(ask(d, "dane-ee.test") == "TEMP");
    CHECK(ask(d, "sts-enforce.test") == "TEMP");

    // Without the control socket: the purge below goes through the file, as from another
    // machine's view of it (operations_test covers purges through the daemon).
    dir.write("prefetch.toml",
              world_dns() + world_sts() + cache_section(path) + "[control]\naddress = \"off\"\n");
    dir.write("domains.txt",
              "# recipients\ndane-ee.test\nsomeone@sts-enforce.test\n\nDANE-EE.test.\n[1.2.3.4]\n");
    const RunResult p =
        harness::tlspolicy({"-c", dir.file("prefetch.toml"), "prefetch", dir.file("domains.txt")});
    CHECK_MESSAGE(p.exit_code == 0, p.err);
    CHECK(contains(p.out, "prefetched 2 domain(s)"));
    CHECK(contains(p.out, "1 dane-only"));
    CHECK(contains(p.out, "1 verify"));
    CHECK(contains(p.out, "2 stored, 1 skipped"));

    CHECK(eventually(d, "dane-ee.test", scenario_answer("dane-ee.test"), 5000));
    CHECK(eventually(d, "sts-enforce.test", scenario_answer("sts-enforce.test"), 5000));

    const RunResult purge =
        harness::tlspolicy({"-c", dir.file("prefetch.toml"), "cache", "purge", "dane-ee.test"});
    CHECK(purge.exit_code == 0);
    CHECK(contains(purge.out, "purged 1 row(s) for dane-ee.test"));
    CHECK(eventually(d, "dane-ee.test", "TEMP", 5000));
    CHECK(ask(d, "sts-enforce.test") == scenario_answer("sts-enforce.test"));

    const RunResult show =
        harness::tlspolicy({"-c", dir.file("prefetch.toml"), "cache", "show", "sts-enforce.test"});
    CHECK(show.exit_code == 0);
    CHECK(contains(show.out, "\"sts_id\":\"20261101T000000\""));
    CHECK(harness::tlspolicy({"-c", dir.file("prefetch.toml"), "cache", "show", "dane-ee.test"})
              .exit_code == 1);
    // `query` shows the cached answer, and with --fresh looks again.
    const RunResult q = harness::tlspolicy(
        {"-c", dir.file("prefetch.toml"), "query", "--json", "sts-enforce.test"});
    CHECK(contains(q.out, "\"cached\":true"));
    const RunResult qf = harness::tlspolicy(
        {"-c", dir.file("prefetch.toml"), "query", "--json", "--fresh", "sts-enforce.test"});
    CHECK_FALSE(contains(qf.out, "\"cached\""));
    CHECK(contains(qf.out, "\"policy\":\"verify match=mx.sts-enforce.test servername=hostname\""));
}

TEST_CASE("cache: a corrupt file is moved aside and replaced; the daemon answers") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    dir.write("cache.sqlite", std::string(8192, 'x') + "this is not an SQLite database");
    {
        Daemon d(dir, daemon_config(world_dns(), cache_section(path)));
        CHECK(ask(d, "dane-ee.test") == "OK dane-only");
        CHECK(contains(d.log(), "was corrupt"));
        CHECK(d.stop() == 0);
    }
    std::vector<std::string> aside;
    for (const auto& e : std::filesystem::directory_iterator(dir.path()))
        if (e.path().filename().string().rfind("cache.sqlite.corrupt-", 0) == 0)
            aside.push_back(e.path().string());
    REQUIRE(aside.size() == 1);
    std::ifstream in(aside[0]);
    std::string kept((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(contains(kept, "this is not an SQLite database"));
    CHECK(sqlite(path, "select domain, policy from policies") == "dane-ee.test|dane-only\n");

    // A cache file that cannot be created (its directory is missing) never stops answers.
    TempDir dir2;
    Daemon d(dir2, daemon_config(world_dns(), cache_section(dir2.file("missing/cache.sqlite"))));
    CHECK(ask(d, "dane-ee.test") == "OK dane-only");
    CHECK(ask(d, "dane-ee.test") == "OK dane-only");
    CHECK(contains(d.log(), "answering from memory only"));
}

TEST_CASE("cache: with DNS failing, answers live exactly as long as the rules allow") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    // Short lives: every DNS-derived answer 3 s, DANE answers 3 s more while refreshes fail.
    const std::string cache = cache_section(path, "min_ttl = 3\nmax_ttl = 3\nstale_ttl = 3\n");
    const std::string server = "[server]\nlookup_deadline_ms = 3000\n";
    Daemon d(dir, daemon_config(world_dns(), cache + server));
    CHECK(ask(d, "dane-ee.test") == "OK dane-only");
    CHECK(ask(d, "sts-enforce.test") == scenario_answer("sts-enforce.test"));
    CHECK(ask(d, "insecure.test") == "NOTFOUND");
    // DNS stops (for this daemon): a reload points it at the SERVFAIL resolver.
    d.reload(daemon_config(failing_dns(), cache + server));

    struct Seen {
        double at;  // seconds since the epoch
        std::string answer;
    };
    std::map<std::string, std::vector<Seen>> seen;
    const auto now = [] {
        return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    };
    const double end = now() + 8;
    while (now() < end) {
        for (const std::string dom : {"dane-ee.test", "sts-enforce.test", "insecure.test"}) {
            const double before = now();
            const std::string a = ask(d, dom);
            seen[dom].push_back({before, a});
        }
    }
    // The times the daemon stored, from the file (whole seconds).
    auto stored = [&](const std::string& dom, const std::string& column) {
        return std::stod(
            sqlite(path, "select " + column + " from entries where domain = '" + dom + "'"));
    };
    d.stop();
    const double dane_expires = stored("dane-ee.test", "expires_at");
    const double dane_stale = stored("dane-ee.test", "stale_until");
    const double nf_expires = stored("insecure.test", "expires_at");
    CHECK(dane_stale == dane_expires + 3);
    // dane-ee.test: dane-only until stale_until, TEMP after (1 s slack for whole seconds).
    for (const auto& s : seen["dane-ee.test"]) {
        INFO(s.at, " ", s.answer);
        if (s.at < dane_stale - 1) CHECK(s.answer == "OK dane-only");
        if (s.at >= dane_stale + 1) CHECK(s.answer == "TEMP");
    }
    CHECK(seen["dane-ee.test"].front().answer == "OK dane-only");
    CHECK(seen["dane-ee.test"].back().answer == "TEMP");
    // Served stale past its expiry, while the refreshes failed.
    bool stale_seen = false;
    for (const auto& s : seen["dane-ee.test"])
        stale_seen |=
            s.at > dane_expires + 1 && s.at < dane_stale - 1 && s.answer == "OK dane-only";
    CHECK(stale_seen);
    // insecure.test: not found until it expires, then TEMP at once (never stale).
    for (const auto& s : seen["insecure.test"]) {
        INFO(s.at, " ", s.answer);
        if (s.at < nf_expires - 1) CHECK(s.answer == "NOTFOUND");
        if (s.at >= nf_expires + 1) CHECK(s.answer == "TEMP");
    }
    // sts-enforce.test: the MTA-STS policy holds until its max_age (a day), so it stays.
    for (const auto& s : seen["sts-enforce.test"])
        CHECK(s.answer == scenario_answer("sts-enforce.test"));
}

TEST_CASE("cache: a used answer is refreshed in the background before it expires") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    // Lifetime 20 s: the refresh is due 2 s before expiry (a tenth; the jitter rounds to 0).
    Daemon d(dir, daemon_config(world_dns(), cache_section(path, "min_ttl = 20\nmax_ttl = 20\n")));
    CHECK(ask(d, "dane-ee.test") == "OK dane-only");
    CHECK(ask(d, "dane-ee.test") == "OK dane-only");  // used since stored
    auto column = [&](const std::string& c) {
        const std::string v =
            sqlite(path, "select " + c + " from entries where domain = 'dane-ee.test'");
        return v.empty() ? int64_t{0} : std::stoll(v);
    };
    // The row appears within the writer's batch window; then its fetched_at moves on once.
    int64_t first = 0;
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (first == 0 && std::chrono::steady_clock::now() < end)
        first = column("fetched_at");
    REQUIRE(first > 0);
    const int64_t first_expiry = column("expires_at");
    int64_t refreshed = first;
    while (refreshed == first && std::chrono::steady_clock::now() < end) {
        refreshed = column("fetched_at");
        CHECK(ask(d, "dane-ee.test") == "OK dane-only");  // never a miss meanwhile
    }
    CHECK(refreshed > first);
    CHECK(refreshed < first_expiry);  // before it expired
    CHECK(column("expires_at") == refreshed + 20);
}
