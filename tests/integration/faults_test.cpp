// Fault injection (issue 9): the resolver and the MTA-STS web server killed mid-run, the cache
// file deleted or made read-only mid-run, `kill -9` of the daemon during a burst of cache
// writes, slowloris clients, and absurd netstring lengths / endless tcp_table lines. Each case
// checks that the daemon keeps answering, and answers exactly what the decision table
// (docs/architecture.md section 1) and the scenario table say, never a downgrade.
//
// Cases that kill world servers use one PrivateWorld (a world of their own, started once on
// first use and stopped at exit): the shared world ($WORLD) is never disturbed. No sleep is
// used as synchronisation: the cases wait for replies, log lines, EOF, or a file's content,
// each with a deadline.
#include <doctest/doctest.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

using namespace harness;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

double unix_now() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// Listeners, then the given sections.
std::string daemon_config(const std::string& dns, const std::string& sts,
                          const std::string& rest) {
    return std::string(kLoopbackListeners) + dns + sts + rest;
}

std::string cache_section(const std::string& path, const std::string& extra = "") {
    return "[cache]\npath = \"" + path + "\"\n" + extra;
}

std::size_t count(const std::string& text, const std::string& part) {
    std::size_t n = 0;
    for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1))
        ++n;
    return n;
}

// Polls `done` until it is true or `ms` passed; returns its last value.
template <typename F>
bool wait_for(int ms, F done) {
    const auto end = Clock::now() + std::chrono::milliseconds(ms);
    while (true) {
        if (done()) return true;
        if (Clock::now() >= end) return false;
        poll(nullptr, 0, 20);
    }
}

// The one private world of this file: started on first use, stopped at exit. Whatever an
// earlier case killed and did not restart (it failed half-way) runs again.
PrivateWorld& private_world() {
    static std::unique_ptr<PrivateWorld> world = std::make_unique<PrivateWorld>();
    for (const char* label : {"unbound", "nginx"})
        world->ensure(label);
    REQUIRE(wait_port(std::stoi(world->env("UNBOUND_PORT")), 5000));
    REQUIRE(wait_port(std::stoi(world->env("HTTPS_PORT")), 5000));
    return *world;
}

// [dns] for the private world's validating unbound itself (not the world's front relay): the
// resolver the daemon uses is then one process, and killing it is killing the resolver.
std::string unbound_dns(const PrivateWorld& w) {
    return "[dns]\nresolvers = [\"127.0.0.1:" + w.env("UNBOUND_PORT") +
           "\"]\ntrust_anchor_file = \"" + w.env("ANCHOR") +
           "\"\ntimeout_ms = 500\ndeadline_ms = 2000\n";
}

// The socketmap reply to "postfix KEY" on a persistent connection.
std::string socketmap_ask(Client& c, const std::string& key) {
    c.send(netstring("postfix " + key));
    return c.read_until(",", 1, 10000);
}

// The tcp_table reply line to "get KEY" on a persistent connection, as ask() reports it.
std::string tcp_answer(const std::string& line) {
    if (line.rfind("200 ", 0) == 0) return "OK " + line.substr(4, line.size() - 5);
    if (line.rfind("500 ", 0) == 0) return "NOTFOUND";
    if (line.rfind("400 ", 0) == 0) return "TEMP";
    return "BAD " + line;
}

// "domain|policy-or-dash|source" rows of the cache file, or "" when it cannot be read.
std::string file_rows(const std::string& path, const std::string& where = "") {
    const RunResult r = run({"/usr/bin/sqlite3", path,
                             "select domain, coalesce(policy, '-'), source from policies " +
                                 where + " order by domain"});
    return r.exit_code == 0 ? r.out : "";
}

// What the `policies` view shows for an answer: "policy-or-dash|source".
std::string row_for(const std::string& answer, const std::string& source) {
    return (answer.rfind("OK ", 0) == 0 ? answer.substr(3) : "-") + "|" + source;
}

// True when the daemon closed client `c` (EOF or reset), without waiting; what it sent is
// appended to `out`.
bool peer_closed(Client& c, std::string* out = nullptr) {
    pollfd p{c.fd(), POLLIN, 0};
    if (poll(&p, 1, 0) <= 0) return false;
    return c.wait_eof(50, out);
}

// Runs chattr; true when it worked.
bool chattr(const std::string& flag, const std::vector<std::string>& files) {
    std::vector<std::string> argv = {"/usr/bin/chattr", flag};
    argv.insert(argv.end(), files.begin(), files.end());
    return run(argv).exit_code == 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// 1. The resolver killed mid-run.
//
// The daemon asks the private world's validating unbound directly (its dns.resolvers), so
// killing unbound kills the daemon's resolver. Wanted: what was cached is served exactly
// (DANE and MTA-STS answers also past their expiry, stale, as section 2 allows; a not-found
// answer never stale, so TEMP after it expired); an uncached domain gets TEMP (a not-found
// would be a downgrade) within the DNS deadline; once unbound runs again (restarted by the
// harness with its own command line: world.py cannot restart one piece), new lookups succeed.
TEST_CASE("faults: the resolver killed mid-run: cached answers stay, new domains TEMP, recovery") {
    PrivateWorld& w = private_world();
    const int unbound_port = std::stoi(w.env("UNBOUND_PORT"));
    const std::string dns = unbound_dns(w);
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    // Every DNS-derived answer lives 3 s, DANE answers up to 60 s more while refreshes fail.
    Daemon d(dir, daemon_config(dns, w.sts(),
                                cache_section(path, "min_ttl = 3\nmax_ttl = 3\nstale_ttl = 60\n")));

    const std::vector<std::string> kept = {"dane-ee.test", "dane-mixed.test", "sts-enforce.test"};
    const std::vector<std::string> negative = {"insecure.test", "nxdomain.test"};
    std::map<std::string, std::string> want;
    for (const auto& dom : kept)
        want[dom] = scenario_answer(dom);
    for (const auto& dom : negative)
        want[dom] = scenario_answer(dom);
    for (const auto& [dom, answer] : want)
        REQUIRE(ask(d, dom) == answer);
    Client sm(d.address("socketmap"));
    REQUIRE(socketmap_ask(sm, "dane-ee.test") == netstring("OK dane-only"));

    // The answers' expiry, from the file (whole seconds).
    double expiry = 0;
    REQUIRE(wait_for(5000, [&] {
        const RunResult r = run({"/usr/bin/sqlite3", path,
                                 "select count(*), max(expires_at) from entries where domain in "
                                 "('dane-ee.test', 'dane-mixed.test', 'sts-enforce.test')"});
        if (r.exit_code != 0 || r.out.rfind("3|", 0) != 0) return false;
        expiry = std::stod(r.out.substr(2));
        return true;
    }));

    w.kill("unbound");
    REQUIRE(w.pid("unbound") == -1);
    const auto killed = Clock::now();

    // Right after the kill, within the answers' lifetimes: all exactly as before.
    for (const auto& [dom, answer] : want)
        CHECK_MESSAGE(ask(d, dom) == answer, dom);
    CHECK(socketmap_ask(sm, "dane-ee.test") == netstring("OK dane-only"));

    // Uncached domains, asked at once: TEMP (DANE and MTA-STS rows alike, and a name that does
    // not exist), within the DNS deadline (2 s) plus a second of slack; over socketmap a TEMP
    // reply, never NOTFOUND.
    {
        const std::vector<std::string> uncached = {"dane-two.test", "sts-wild.test",
                                                   "never-seen.test", "dane-ta-cert.test"};
        std::vector<std::unique_ptr<Client>> clients;
        const auto t0 = Clock::now();
        for (const auto& dom : uncached) {
            clients.push_back(std::make_unique<Client>(d.address("tcp_table")));
            clients.back()->send("get " + dom + "\n");
        }
        sm.send(netstring("postfix dane-unusable.test"));
        for (std::size_t i = 0; i < uncached.size(); ++i) {
            CAPTURE(uncached[i]);
            CHECK(tcp_answer(clients[i]->read_until("\n", 1, 10000)) == "TEMP");
            CHECK(seconds_since(t0) < 3.0);
        }
        const std::string reply = sm.read_until(",", 1, 10000);
        CHECK_MESSAGE(reply.find(":TEMP ") != std::string::npos, reply);
        CHECK(seconds_since(t0) < 3.0);
        MESSAGE("uncached lookups with the resolver dead: TEMP after ", seconds_since(t0), " s");
    }

    // Through their expiry, the DANE and MTA-STS answers are served stale, exactly: asked over
    // and over until 1 s after it, then once more.
    int rounds = 0;
    do {
        for (const auto& dom : kept)
            if (const std::string a = ask(d, dom); a != want[dom])
                FAIL_CHECK(dom << ": got " << a << " at " << unix_now() << ", expiry " << expiry);
        ++rounds;
    } while (unix_now() < expiry + 1.0 || rounds < 2);
    // A not-found answer is never served stale: once expired, TEMP (never a silent NOTFOUND).
    {
        std::vector<std::unique_ptr<Client>> clients;
        for (const auto& dom : negative) {
            clients.push_back(std::make_unique<Client>(d.address("tcp_table")));
            clients.back()->send("get " + dom + "\n");
        }
        for (std::size_t i = 0; i < negative.size(); ++i)
            CHECK_MESSAGE(tcp_answer(clients[i]->read_until("\n", 1, 10000)) == "TEMP",
                          negative[i]);
    }
    MESSAGE(rounds, " rounds of stale answers; TEMP for the expired not-found answers after ",
            seconds_since(killed), " s since the kill");

    // unbound again (a cold cache): new lookups succeed once it answers; the daemon's resolver
    // client may hold back a failed upstream for a while, so asked until it works (10 s).
    w.restart("unbound");
    REQUIRE(wait_port(unbound_port, 5000));
    const auto restarted = Clock::now();
    std::string got;
    CHECK_MESSAGE(wait_for(10000, [&] { return (got = ask(d, "dane-two.test")) != "TEMP"; }),
                  "no answer but TEMP for 10 s after unbound was restarted");
    MESSAGE("unbound restarted: the first answer after ", seconds_since(restarted), " s");
    CHECK(got == scenario_answer("dane-two.test"));
    CHECK(ask(d, "sts-wild.test") == scenario_answer("sts-wild.test"));
    CHECK(ask(d, "dane-ta-spki.test") == scenario_answer("dane-ta-spki.test"));
    for (const auto& [dom, answer] : want)
        CHECK_MESSAGE(ask(d, dom) == answer, dom);
    CHECK(d.stop() == 0);
}

// ---------------------------------------------------------------------------------------
// 2. The MTA-STS web server (the private world's nginx) killed mid-run.
//
// Every answer lives 1 s (min_ttl = max_ttl = 1), so the TXT records are checked again each
// second. sts-enforce.test keeps its TXT id: the stored policy is renewed without a fetch.
// sts-keep.test changes its id (world.py flip): the new policy cannot be fetched (nginx is
// dead), and the policy fetched before stays in force until its max_age (RFC 8461 section
// 5.1). A domain never seen before cannot be fetched: not found (docs/mta-sts.md, "Why a
// failure gives not found here": trust on first use; the scenario row sts-keep-on-failure
// says "a fresh lookup finds none").
TEST_CASE("faults: the MTA-STS web server killed mid-run: known policies stay, new ones none") {
    PrivateWorld& w = private_world();
    const int https_port = std::stoi(w.env("HTTPS_PORT"));
    TempDir dir;
    Daemon d(dir, daemon_config(unbound_dns(w), w.sts(),
                                cache_section(dir.file("cache.sqlite"),
                                              "min_ttl = 1\nmax_ttl = 1\n")));
    const std::string keep = scenario_answer("sts-keep.test");
    const std::string enforce = scenario_answer("sts-enforce.test");
    REQUIRE(keep == "OK verify match=mx.sts-keep.test servername=hostname");
    REQUIRE(ask(d, "sts-keep.test") == keep);
    REQUIRE(ask(d, "sts-enforce.test") == enforce);
    REQUIRE(contains(d.log(), "sts-keep.test: verify match=mx.sts-keep.test servername=hostname "
                              "(mta-sts) in "));

    w.kill("nginx");
    REQUIRE(w.pid("nginx") == -1);
    CHECK_FALSE(wait_port(https_port, 0));  // nothing listens: connections are refused
    const RunResult flip = w.flip("sts-keep-on-failure", "after");
    REQUIRE_MESSAGE(flip.exit_code == 0, flip.out, flip.err);

    // Asked until the daemon has tried the new id and kept the old policy (its warning) and
    // has renewed sts-enforce.test since the kill (a log line per computed answer); every
    // answer meanwhile is the known policy.
    const std::string kept_warning =
        "warning: sts-keep.test: downgrade prevented: MTA-STS policy id k1 (mode enforce) stays "
        "in force although the new one could not be fetched (could not connect to any address";
    const std::size_t renewed_before = count(d.log(), "policy id 20261101T000000 (renewed)");
    std::vector<std::string> wrong;
    const bool refreshed = wait_for(15000, [&] {
        for (const auto& [dom, answer] :
             std::vector<std::pair<std::string, std::string>>{{"sts-keep.test", keep},
                                                              {"sts-enforce.test", enforce}})
            if (const std::string a = ask(d, dom); a != answer) wrong.push_back(dom + ": " + a);
        const std::string log = d.log();
        return contains(log, kept_warning) &&
               count(log, "policy id 20261101T000000 (renewed)") > renewed_before;
    });
    CHECK_MESSAGE(refreshed, "no refresh seen since the kill; log:\n", d.log());
    CHECK_MESSAGE(wrong.empty(), wrong.size(), " wrong answer(s), first: ",
                  wrong.empty() ? "" : wrong.front());
    CHECK(ask(d, "sts-keep.test") == keep);
    CHECK(ask(d, "sts-enforce.test") == enforce);

    // The answer computed after the failed fetch is the old policy, marked as such.
    CHECK(contains(d.log(), "info: sts-keep.test: " + keep.substr(3) +
                                " (mta-sts) in "));
    CHECK(contains(d.log(), "MTA-STS mode enforce, policy id k1 (errored)"));

    // Never seen before, policy host unreachable: not found (the table's "no policy").
    CHECK(ask(d, "sts-wild.test") == "NOTFOUND");
    CHECK(ask(d, "sts-signed.test") == "NOTFOUND");
    // ... because the policy could not be fetched (the daemon's reason says so).
    CHECK(contains(d.log(), "info: sts-wild.test: not found (none) in "));
    CHECK(contains(d.log(), "no MTA-STS policy: could not connect to any address"));
    CHECK(count(d.log(), "no MTA-STS policy: could not connect to any address") == 2);
    CHECK(d.stop() == 0);

    // Leave the world as it was for the other cases.
    CHECK(w.flip("sts-keep-on-failure", "before").exit_code == 0);
    w.restart("nginx");
    CHECK(wait_port(https_port, 5000));
}

// ---------------------------------------------------------------------------------------
// 3a. The cache file deleted mid-run (cache.sqlite, -wal and -shm removed, as an operator's
// `rm` or a tmp cleaner would). Answers must go on, from memory and for new domains; the
// daemon must say so and write its answers to a file at the configured path again, since
// `tlspolicy prefetch`, `cache purge` and the next start all use that path.
TEST_CASE("faults: the cache file deleted mid-run") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    Daemon d(dir, daemon_config(world_dns(), world_sts(), cache_section(path)));
    REQUIRE(ask(d, "dane-ee.test") == "OK dane-only");
    REQUIRE(ask(d, "insecure.test") == "NOTFOUND");
    REQUIRE(wait_for(5000, [&] {
        return file_rows(path) == "dane-ee.test|dane-only|dane\ninsecure.test|-|none\n";
    }));

    for (const char* suffix : {"", "-wal", "-shm"})
        std::filesystem::remove(path + suffix);

    CHECK(ask(d, "dane-ee.test") == "OK dane-only");  // from memory
    CHECK(ask(d, "insecure.test") == "NOTFOUND");
    CHECK(ask(d, "dane-two.test") == scenario_answer("dane-two.test"));  // new
    CHECK(ask(d, "sts-enforce.test") == scenario_answer("sts-enforce.test"));
    CHECK(ask(d, "nxdomain.test") == "NOTFOUND");
    CHECK(kill(d.pid(), 0) == 0);

    // The daemon notices within a tick that the path no longer names its file, says so, and
    // writes everything it holds to a new file there (the checks below; it once went on
    // writing to the unlinked inode, silently).
    const std::string new_rows =
        "dane-two.test|dane-only|dane\nnxdomain.test|-|none\n"
        "sts-enforce.test|verify match=mx.sts-enforce.test servername=hostname|mta-sts\n";
    const std::string where =
        "where domain in ('dane-two.test', 'nxdomain.test', 'sts-enforce.test')";
    std::string rows;
    CHECK_MESSAGE(wait_for(5000, [&] { return (rows = file_rows(path, where)) == new_rows; }),
                  "5 s after the cache file was deleted, the file at ", path, " holds:\n", rows,
                  "want:\n", new_rows, "daemon log:\n", d.log());
    CHECK_MESSAGE(contains(d.log(), "warning: cache " + path),
                  "no warning about the deleted cache file; log:\n", d.log());
    CHECK(ask(d, "dane-ee.test") == "OK dane-only");
    CHECK(d.stop() == 0);
}

// ---------------------------------------------------------------------------------------
// 3b. The cache file made read-only mid-run. chmod 0444 cannot do it: SQLite writes through
// descriptors opened before, and permissions are checked only at open (and root ignores
// them). What fails the writes of a running process is the immutable attribute (chattr +i,
// ext4: writes through open descriptors get EPERM): set on cache.sqlite and its -wal (not on
// the -shm, which SQLite maps into memory: a write fault there is SIGBUS, not an I/O error).
// Needs root (CAP_LINUX_IMMUTABLE) and a file system with the attribute; else skipped.
TEST_CASE("faults: the cache file made read-only mid-run") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    {
        dir.write("probe", "x");
        if (geteuid() != 0 || !chattr("+i", {dir.file("probe")})) {
            MESSAGE("skipped: chattr +i does not work here (needs root and ext4-like file "
                    "system); chmod 0444 would not stop writes through open descriptors");
            return;
        }
        chattr("-i", {dir.file("probe")});
    }
    Daemon d(dir, daemon_config(world_dns(), world_sts(), cache_section(path)));
    REQUIRE(ask(d, "dane-ee.test") == "OK dane-only");
    REQUIRE(wait_for(5000, [&] { return file_rows(path) == "dane-ee.test|dane-only|dane\n"; }));

    const std::vector<std::string> files = {path, path + "-wal"};
    struct Undo {  // the attribute goes whatever happens (TempDir must remove the files)
        std::vector<std::string> files;
        bool on = true;
        void off() {
            if (on) chattr("-i", files);
            on = false;
        }
        ~Undo() { off(); }
    } undo{files};
    REQUIRE(chattr("+i", files));

    CHECK(ask(d, "dane-ee.test") == "OK dane-only");  // from memory
    CHECK(ask(d, "dane-two.test") == scenario_answer("dane-two.test"));  // new
    CHECK(ask(d, "nxdomain.test") == "NOTFOUND");
    // The writer's next batch fails: one warning, and the daemon goes on.
    CHECK_MESSAGE(wait_for(5000, [&] { return contains(d.log(), "serving from memory, retrying"); }),
                  d.log());
    CHECK(count(d.log(), "serving from memory, retrying") == 1);
    CHECK(contains(d.log(), "warning: cache " + path));
    CHECK(ask(d, "sts-enforce.test") == scenario_answer("sts-enforce.test"));
    CHECK(ask(d, "dane-two.test") == scenario_answer("dane-two.test"));
    CHECK(kill(d.pid(), 0) == 0);
    CHECK(file_rows(path) == "dane-ee.test|dane-only|dane\n");  // nothing written meanwhile

    // Writable again: the kept rows are written at the next retry (back-off 1, 2, 4 ... 30 s).
    undo.off();
    const std::string want_rows =
        "dane-ee.test|dane-only|dane\ndane-two.test|dane-only|dane\nnxdomain.test|-|none\n"
        "sts-enforce.test|verify match=mx.sts-enforce.test servername=hostname|mta-sts\n";
    std::string rows;
    CHECK_MESSAGE(wait_for(35000, [&] { return (rows = file_rows(path)) == want_rows; }),
                  "rows:\n", rows, "log:\n", d.log());
    CHECK(wait_for(5000, [&] { return contains(d.log(), "info: cache " + path + ": writing again"); }));
    CHECK(sqlite(path, "PRAGMA integrity_check") == "ok\n");
    CHECK(d.stop() == 0);
}

// ---------------------------------------------------------------------------------------
// 4. kill -9 during a burst of cache writes.
//
// The writer thread (src/cache/policy_cache.cpp, CacheWriter) gathers queued rows for 200 ms
// and writes them in one transaction (WAL, synchronous=NORMAL: a committed transaction
// survives the death of the process). So a kill loses at most the unflushed batch: the rows
// queued since the writer last took its batch (200 ms of answers plus the time of the
// transaction in progress), and what is in the file is a prefix of the queue: if an answer is
// there, every answer computed before it is there too. Checked, as far as a client can see:
// - the file passes PRAGMA integrity_check and a new daemon starts on it and answers from it;
// - every row is a domain we asked, with the answer the scenario table gives;
// - prefix: every answer received before the request of any stored domain was sent is stored;
// - at most the last batch: every answer received more than 2 s (200 ms of gathering plus a
//   transaction on a loaded machine, with room) before the kill is stored.
TEST_CASE("faults: kill -9 during a burst of cache writes loses at most the unflushed batch") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    Daemon d(dir, daemon_config(world_dns(), world_sts(), cache_section(path)));

    // Quick domains: scenario rows answered in milliseconds, then names that do not exist
    // (secure NXDOMAIN from the signed test. zone: not found, cached).
    std::vector<std::pair<std::string, std::string>> domains;  // domain, expected answer
    std::map<std::string, std::string> source;  // what the file's `source` column must say
    const std::set<std::string> quick = {
        "dane-ee.test",     "dane-ta-cert.test", "dane-ta-spki.test", "dane-two.test",
        "dane-mixed.test",  "dane-unusable.test", "insecure.test",    "signed-notlsa.test",
        "nullmx.test",      "nxdomain.test",      "sts-enforce.test", "sts-wild.test",
        "implicit-mx.test", "insecaddr.test",     "a-only.test"};
    for (const auto& row : scenarios())
        if (row.config.empty() && quick.count(row.key) && !source.count(row.key)) {
            domains.emplace_back(row.key, row.answer);
            source[row.key] = row.answer == "NOTFOUND"      ? "none"
                              : row.decided_by == "mta-sts" ? "mta-sts"
                                                            : "dane";
        }
    REQUIRE(domains.size() == quick.size());
    for (int i = 0; i < 20000; ++i) {
        domains.emplace_back("burst-" + std::to_string(i) + ".nxdomain.test", "NOTFOUND");
        source[domains.back().first] = "none";
    }

    struct Asked {
        double sent = 0, received = -1;  // seconds since the burst started; -1: no answer
        std::string answer;
    };
    std::map<std::string, Asked> asked;
    constexpr int kClients = 4;
    std::vector<std::unique_ptr<Client>> clients;
    for (int i = 0; i < kClients; ++i)
        clients.push_back(std::make_unique<Client>(d.address("tcp_table")));
    const auto t0 = Clock::now();
    const double kill_at = 3.0;  // seconds into the burst
    std::size_t next = 0;
    double killed_at = 0;
    while (next + kClients <= domains.size()) {
        for (int i = 0; i < kClients; ++i) {
            asked[domains[next + i].first].sent = seconds_since(t0);
            clients[i]->send("get " + domains[next + i].first + "\n");
        }
        if (seconds_since(t0) >= kill_at) {  // requests in flight: their rows may be queued
            killed_at = seconds_since(t0);
            CHECK(d.kill_hard() == 128 + SIGKILL);
            break;
        }
        for (int i = 0; i < kClients; ++i) {
            Asked& a = asked[domains[next + i].first];
            a.answer = tcp_answer(clients[i]->read_until("\n", 1, 10000));
            a.received = seconds_since(t0);
            CHECK_MESSAGE(a.answer == domains[next + i].second, domains[next + i].first);
        }
        next += kClients;
    }
    REQUIRE(killed_at > 0);
    const std::size_t answered = next;
    REQUIRE(answered > 200);

    CHECK(sqlite(path, "PRAGMA integrity_check") == "ok\n");
    std::map<std::string, std::string> stored;  // domain -> "policy|source"
    for (const auto& line : lines(sqlite(path, "select domain, coalesce(policy, '-'), source "
                                               "from policies"))) {
        const auto bar = line.find('|');
        stored[line.substr(0, bar)] = line.substr(bar + 1);
    }
    std::map<std::string, std::string> expected(domains.begin(), domains.end());
    double last_sent = -1;  // the latest request whose answer is stored
    for (const auto& [dom, row] : stored) {
        CAPTURE(dom);
        REQUIRE(asked.count(dom) == 1);  // nothing we did not ask
        CHECK(row == row_for(expected[dom], source[dom]));
        last_sent = std::max(last_sent, asked[dom].sent);
    }
    std::size_t lost = 0;
    double oldest_lost = killed_at;  // when the oldest lost answer was received
    for (const auto& [dom, a] : asked) {
        if (a.received < 0 || stored.count(dom)) continue;
        ++lost;
        oldest_lost = std::min(oldest_lost, a.received);
        CHECK_MESSAGE(a.received >= last_sent, dom, " is missing, but was answered at ",
                      a.received, " s, before a stored domain was asked (", last_sent, " s)");
    }
    MESSAGE("kill -9 at ", killed_at, " s into the burst: ", answered, " answered, ",
            stored.size(), " rows stored, ", lost, " answered but lost (the oldest answered ",
            killed_at - oldest_lost, " s before the kill)");
    CHECK(killed_at - oldest_lost < 2.0);

    // A new daemon on the same file, with DNS failing (the world's SERVFAIL resolver): it
    // starts (the dead daemon's control socket is replaced) and answers the stored rows from
    // the file, exactly; a lost one is TEMP.
    TempDir dir2;
    const std::string failing_dns = "[dns]\nresolvers = [\"127.0.0.1:" +
                                    world_env("SERVFAIL_PORT") + "\"]\ntrust_anchor_file = \"" +
                                    world_env("ANCHOR") + "\"\ntimeout_ms = 500\ndeadline_ms = 1000\n";
    Daemon d2(dir2, daemon_config(failing_dns, world_sts(), cache_section(path)));
    CHECK(contains(d2.log(), std::to_string(stored.size()) + " answer(s) loaded"));
    int checked = 0;
    for (const auto& [dom, row] : stored) {
        if (checked++ % 50 != 0 && dom.rfind("burst-", 0) == 0) continue;  // a sample
        CHECK_MESSAGE(ask(d2, dom) == expected[dom], dom);
    }
    for (const auto& [dom, a] : asked)
        if (!stored.count(dom) && a.received >= 0) {
            CHECK_MESSAGE(ask(d2, dom) == "TEMP", dom);
            break;
        }
    CHECK(d2.stop() == 0);
}

// ---------------------------------------------------------------------------------------
// 5. Slowloris: 200 connections that send nothing, or an unfinished request and then
// nothing, while normal clients go on asking. server.idle_timeout (docs/protocols.md,
// "Connections"; 1 s here, its minimum) closes every slow one; the normal clients (a
// persistent socketmap connection, which is never idle, and a new tcp_table connection per
// question), asking from a thread of their own all along, get every answer right and each
// within 1 s.
TEST_CASE("faults: slowloris clients are closed by the idle timeout; others are answered") {
    TempDir dir;
    Daemon d(dir, daemon_config(world_dns(), world_sts(),
                                cache_section(dir.file("cache.sqlite")) +
                                    "[server]\nidle_timeout = 1\n"));
    // Expected answers first: the scenario table is not read while the clock runs.
    const std::vector<std::string> keys = {"dane-ee.test", "insecure.test", "sts-enforce.test",
                                           "dane-two.test", "nxdomain.test"};
    std::map<std::string, std::string> want;
    for (const auto& key : keys)
        want[key] = scenario_answer(key);

    struct Normal {
        std::size_t asks = 0;
        double slowest = 0;
        std::vector<std::string> wrong;
    } normal;
    std::atomic<bool> stop{false};
    Client persistent(d.address("socketmap"));
    REQUIRE(socketmap_ask(persistent, "dane-ee.test") == netstring("OK dane-only"));
    std::thread asker([&] {
        while (!stop) {
            const std::string& key = keys[normal.asks % keys.size()];
            const std::string& w = want.at(key);
            const auto q = Clock::now();
            std::string got;
            try {
                if (normal.asks % 5 == 4) {
                    got = ask(d, key);
                    if (got == w) got = "ok";
                } else {
                    got = socketmap_ask(persistent, key);
                    if (got == netstring(w == "NOTFOUND" ? "NOTFOUND " : w)) got = "ok";
                }
            } catch (const std::exception& e) {
                got = e.what();
            }
            normal.slowest = std::max(normal.slowest, seconds_since(q));
            if (got != "ok") normal.wrong.push_back(key + ": " + got);
            ++normal.asks;
            poll(nullptr, 0, 5);  // the pace of the normal clients (not synchronisation)
        }
    });
    struct Joiner {  // the thread ends whatever happens below
        std::atomic<bool>& stop;
        std::thread& t;
        ~Joiner() {
            stop = true;
            if (t.joinable()) t.join();
        }
    } joiner{stop, asker};

    const auto t0 = Clock::now();
    std::vector<std::unique_ptr<Client>> slow;
    for (int i = 0; i < 200; ++i) {
        const bool tcp = i % 4 == 3;
        slow.push_back(std::make_unique<Client>(d.address(tcp ? "tcp_table" : "socketmap")));
        if (i % 4 == 1) slow.back()->send("1");                  // a length digit
        if (i % 4 == 2) slow.back()->send("20:postfix dane-e");  // half a payload
        if (i % 4 == 3) slow.back()->send("get dane-ee.te");     // no newline
    }
    const double connected = seconds_since(t0);
    std::vector<double> eof_at(slow.size(), -1);
    std::size_t closed = 0;
    std::vector<std::string> junk;
    while (closed < slow.size() && seconds_since(t0) < connected + 4.0) {
        std::vector<pollfd> fds;
        std::vector<std::size_t> which;
        for (std::size_t i = 0; i < slow.size(); ++i)
            if (eof_at[i] < 0) {
                fds.push_back({slow[i]->fd(), POLLIN, 0});
                which.push_back(i);
            }
        if (poll(fds.data(), fds.size(), 100) <= 0) continue;
        for (std::size_t k = 0; k < fds.size(); ++k) {
            if (!fds[k].revents) continue;
            std::string got;
            if (slow[which[k]]->wait_eof(100, &got)) {
                eof_at[which[k]] = seconds_since(t0);
                ++closed;
            }
            if (!got.empty()) junk.push_back(got);
        }
    }
    stop = true;
    asker.join();
    double last_eof = 0, first_eof = 1e9;
    for (const double t : eof_at)
        if (t >= 0) {
            last_eof = std::max(last_eof, t);
            first_eof = std::min(first_eof, t);
        }
    MESSAGE(closed, " of ", slow.size(), " slow connections closed between ", first_eof,
            " and ", last_eof, " s (all connected after ", connected, " s); ", normal.asks,
            " answers to the normal clients meanwhile, the slowest in ", normal.slowest, " s");
    CHECK(closed == slow.size());
    CHECK(junk.empty());  // the slow ones get nothing, not even an error
    CHECK(last_eof < connected + 3.0);  // idle_timeout (1 s) plus slack
    CHECK(normal.asks > 10);
    CHECK_MESSAGE(normal.wrong.empty(), normal.wrong.size(), " wrong, the first: ",
                  normal.wrong.empty() ? "" : normal.wrong.front());
    CHECK(normal.slowest < 1.0);
    // The persistent normal client was never idle: still served.
    CHECK(socketmap_ask(persistent, "dane-ee.test") == netstring("OK dane-only"));
    CHECK(d.stop() == 0);
}

// 5b. Slowloris that drips: each connection sends one more byte of an unfinished request
// every 200 ms, with idle_timeout = 1 s.
//
// Every byte restarts the idle timer, so the daemon also bounds the time one request may take
// to arrive (idle_timeout from its first bytes); before that, server.max_connections drippers
// took every slot and Postfix's lookups hung. Here: all closed within 3 s.
TEST_CASE("faults: slowloris clients that drip bytes are cut off") {
    TempDir dir;
    Daemon d(dir, daemon_config(world_dns(), world_sts(),
                                cache_section(dir.file("cache.sqlite")) +
                                    "[server]\nidle_timeout = 1\n"));
    std::vector<std::unique_ptr<Client>> drip;
    std::vector<std::string> script;
    for (int i = 0; i < 20; ++i) {
        const bool tcp = i % 2 == 1;
        drip.push_back(std::make_unique<Client>(d.address(tcp ? "tcp_table" : "socketmap")));
        script.push_back(tcp ? "get " + std::string(4000, 'a')
                             : "9999:postfix " + std::string(9000, 'a'));
    }
    const auto t0 = Clock::now();
    std::size_t pos = 0, open = drip.size();
    std::vector<bool> closed(drip.size(), false);
    while (open > 0 && seconds_since(t0) < 3.0) {
        for (std::size_t i = 0; i < drip.size(); ++i) {
            if (closed[i]) continue;
            if (peer_closed(*drip[i]) || drip[i]->send_some(script[i].substr(pos, 1), 100) == 0) {
                closed[i] = true;
                --open;
            }
        }
        ++pos;
        poll(nullptr, 0, 200);  // the drip rate itself (not synchronisation)
    }
    CHECK_MESSAGE(open == 0, open, " of ", drip.size(),
                  " dripping connections still open after 3 s (idle_timeout 1 s), ", pos,
                  " bytes sent each");
    CHECK(ask(d, "dane-ee.test") == "OK dane-only");
    CHECK(d.stop() == 0);
}

// ---------------------------------------------------------------------------------------
// 6. Absurd lengths. socketmap (docs/protocols.md section 1, src/server/server.cpp): a length
// over 10000 closes that connection without a reply, after answering the requests before it,
// with a warning; the length is checked digit by digit, so 2147483648 and a 20-digit number
// (more than 64 bits) are refused before anything is allocated. tcp_table: a line over 4096
// bytes gets "400 request line longer than 4096 bytes" and the connection is closed; the
// daemon stops reading, so megabytes sent after it are never buffered. Memory (VmRSS) stays
// put, other clients are answered.
TEST_CASE("faults: a 2 GB netstring length and an endless tcp_table line") {
    TempDir dir;
    Daemon d(dir, daemon_config(world_dns(), world_sts(), cache_section(dir.file("cache.sqlite"))));
    Client normal(d.address("tcp_table"));
    auto normal_ask = [&](const std::string& key) {
        normal.send("get " + key + "\n");
        return tcp_answer(normal.read_until("\n", 1, 10000));
    };
    REQUIRE(normal_ask("dane-ee.test") == "OK dane-only");
    REQUIRE(ask(d, "insecure.test") == "NOTFOUND");
    const long rss_before = vm_rss_kb(d.pid());
    REQUIRE(rss_before > 0);

    {  // A request first, then the 2 GB length: the request is answered, then EOF.
        Client c(d.address("socketmap"));
        c.send(netstring("postfix dane-ee.test") + "2147483648:");
        std::string got;
        CHECK(c.wait_eof(5000, &got));
        CHECK(got == netstring("OK dane-only"));
    }
    {  // More than 64 bits of digits.
        Client c(d.address("socketmap"));
        c.send("99999999999999999999:");
        std::string got;
        CHECK(c.wait_eof(5000, &got));
        CHECK(got == "");
    }
    {  // The 2 GB length, then 8 MB of payload as fast as the daemon takes it.
        Client c(d.address("socketmap"));
        c.send("2147483648:");
        int err = 0;
        const std::size_t sent = c.send_some(std::string(8 << 20, 'x'), 3000, &err);
        std::string got;
        CHECK(c.wait_eof(5000, &got));
        CHECK(got == "");
        MESSAGE("socketmap: 2 GB length, then ", sent, " payload bytes taken before ",
                std::string(err ? std::strerror(err) : "the socket stayed full"));
    }
    {  // tcp_table: 16 MB without a newline.
        Client c(d.address("tcp_table"));
        int err = 0;
        const std::size_t sent = c.send_some("get " + std::string(16 << 20, 'a'), 3000, &err);
        std::string got;
        CHECK(c.wait_eof(5000, &got));
        CHECK(got == "400 request line longer than 4096 bytes\n");
        MESSAGE("tcp_table: ", sent, " bytes of one line taken before ",
                std::string(err ? std::strerror(err) : "the socket stayed full"));
    }
    const long rss_after = vm_rss_kb(d.pid());
    MESSAGE("VmRSS ", rss_before, " kB before, ", rss_after, " kB after");
    CHECK(rss_after - rss_before < 2048);

    // Other clients: the one connected all along, and new ones.
    CHECK(normal_ask("dane-ee.test") == "OK dane-only");
    CHECK(normal_ask("dane-two.test") == scenario_answer("dane-two.test"));
    CHECK(ask(d, "insecure.test") == "NOTFOUND");
    Client sm(d.address("socketmap"));
    CHECK(socketmap_ask(sm, "dane-ee.test") == netstring("OK dane-only"));
    const std::string log = d.log();
    CHECK(count(log, "(socketmap): request larger than 10000 bytes") == 3);
    CHECK(count(log, "(tcp_table): request line longer than 4096 bytes") == 1);
    CHECK(d.stop() == 0);
}
