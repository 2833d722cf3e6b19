// Running tlspolicyd as a service: socket activation (sockets passed the way systemd passes
// them), the control socket behind `tlspolicy cache purge|export`, and the log line per
// computed answer in text and JSON.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "harness.h"

using namespace harness;

namespace {

std::string activator() {
    return env_path("SOURCE_ROOT") + "/tests/integration/socket-activate.py";
}

std::size_t count(const std::string& text, const std::string& part) {
    std::size_t n = 0;
    for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1))
        ++n;
    return n;
}

std::string world_daemon_config(const std::string& dir, const std::string& rest = "") {
    return std::string(kLoopbackListeners) + world_dns() + world_sts() + "[cache]\npath = \"" +
           dir + "/cache.sqlite\"\n" + rest;
}

}  // namespace

TEST_CASE("socket activation: passed sockets serve their configured protocols") {
    TempDir dir;
    const std::string sm = dir.file("sm.sock");
    const std::string config = R"(
[[listen]]
protocol = "socketmap"
address = "unix:)" + sm + R"("
[[listen]]
protocol = "tcp_table"
address = "127.0.0.1:@PORT1@"
[overrides]
"activated.example" = "dane-only"
)";
    Daemon d(dir, config,
             {"/usr/bin/python3", activator(), "--config", dir.file("tlspolicyd.toml"), sm,
              "127.0.0.1:0", "--"});
    CHECK(contains(d.status(), "socketmap unix:" + sm));
    const std::string tt = d.address("tcp_table");
    CHECK(tt.rfind("127.0.0.1:", 0) == 0);
    CHECK(tt != "127.0.0.1:0");
    CHECK(postmap(dir, "activated.example", "tcp:" + tt).out == "dane-only\n");
    CHECK(postmap(dir, "activated.example", "socketmap:unix:" + sm + ":postfix").out ==
          "dane-only\n");
    // A reload keeps the passed sockets (nothing is bound again).
    d.reload(config);
    CHECK(postmap(dir, "activated.example", "tcp:" + tt).out == "dane-only\n");
    CHECK(d.stop() == 0);
    // The socket file belongs to the service manager: the daemon leaves it.
    struct stat st {};
    CHECK(lstat(sm.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
}

TEST_CASE("socket activation: a passed socket no [[listen]] names stops the start (exit 78)") {
    TempDir dir;
    dir.write("c.toml", std::string(kLoopbackListeners));
    const RunResult r = run({"/usr/bin/python3", activator(), dir.file("extra.sock"), "--",
                             env_path("TLSPOLICYD"), "-c", dir.file("c.toml")});
    CHECK(r.exit_code == 78);
    CHECK(
        contains(r.err, "unix:" + dir.file("extra.sock") +
                            " was passed by the service manager but no [[listen]] entry names it"));
}

TEST_CASE("control socket: cache purge and export act on the running daemon at once") {
    TempDir dir;
    const std::string file = dir.file("cache.sqlite");
    const std::string control = dir.file("control.sock");
    Daemon d(dir,
             world_daemon_config(dir.path(), "[control]\naddress = \"unix:" + control + "\"\n"));
    const std::string want = scenario_answer("dane-ee.test");
    REQUIRE(ask(d, "dane-ee.test") == want);
    // export asks the daemon to write what it holds first: the row is there at once.
    const RunResult exported = tlspolicy({"-c", dir.file("tlspolicyd.toml"), "cache", "export"});
    CHECK(exported.exit_code == 0);
    CHECK(contains(exported.out, "{\"domain\":\"dane-ee.test\""));
    struct stat st {};
    REQUIRE(stat(control.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0660);

    const RunResult purged =
        tlspolicy({"-c", dir.file("tlspolicyd.toml"), "cache", "purge", "DANE-EE.test"});
    CHECK(purged.exit_code == 0);
    CHECK(purged.out ==
          "purged dane-ee.test: 1 cached answer(s) dropped by the running daemon, the cache file "
          "purged too\n");
    // Gone from the file when the command returns, and from memory: the next question is a
    // miss that computes the answer again (a second log line).
    CHECK(sqlite(file, "SELECT count(*) FROM entries WHERE domain = 'dane-ee.test'") == "0\n");
    CHECK(count(d.log(), "dane-ee.test: ") == 1);
    CHECK(ask(d, "dane-ee.test") == want);
    CHECK(count(d.log(), "dane-ee.test: ") == 2);
    CHECK(contains(d.log(), "control: purged dane-ee.test (1 cached answer(s))"));

    // Unknown commands and junk get an error line, not a crash.
    Client c("unix:" + control);
    c.send("reboot\n");
    CHECK(c.read_until("\n") == "error unknown command: use purge [DOMAIN], export or stats\n");
    Client junk("unix:" + control);
    junk.send(std::string(5000, 'x'));
    CHECK(junk.read_until("\n") == "error line too long\n");
    CHECK(d.stop() == 0);
    CHECK(lstat(control.c_str(), &st) != 0);  // removed at exit

    // Without a daemon the file is purged directly.
    const RunResult offline =
        tlspolicy({"-c", dir.file("tlspolicyd.toml"), "cache", "purge", "dane-ee.test"});
    CHECK(offline.exit_code == 0);
    CHECK(offline.out == "purged 1 row(s) for dane-ee.test\n");
}

TEST_CASE("log: one line per computed answer, none for cached ones; text and JSON") {
    for (const std::string format : {"text", "json"}) {
        CAPTURE(format);
        TempDir dir;
        Daemon d(dir, world_daemon_config(dir.path(), "[log]\nformat = \"" + format + "\"\n"));
        const std::string want = scenario_answer("dane-ee.test");
        REQUIRE(want.rfind("OK ", 0) == 0);
        const std::string policy = want.substr(3);
        for (int i = 0; i < 3; ++i)
            CHECK(ask(d, "dane-ee.test") == want);
        CHECK(ask(d, "insecure.test") == scenario_answer("insecure.test"));
        // A forged (DNSSEC-bogus) MX set defers, and the operator is told why.
        CHECK(ask(d, "bogus.test") == "TEMP");
        const std::string log = d.log();
        CHECK(count(log,
                    "bogus.test: downgrade prevented: the MX records fail DNSSEC "
                    "validation") == 1);
        if (format == "text") {
            CHECK(count(log, "info: dane-ee.test: " + policy + " (dane) in ") == 1);
            CHECK(count(log, "info: insecure.test: not found (none) in ") == 1);
        } else {
            CHECK(count(log, "\"msg\":\"dane-ee.test: " + policy + " (dane) in ") == 1);
            CHECK(count(log, "\"domain\":\"dane-ee.test\",\"answer\":\"" + policy +
                                 "\",\"source\":\"dane\",\"duration_ms\":") == 1);
            CHECK(count(log, "\"domain\":\"insecure.test\",\"answer\":\"not found\"") == 1);
            // Every line is one JSON object.
            for (const auto& line : lines(log)) {
                CAPTURE(line);
                CHECK(line.rfind("{\"time\":\"", 0) == 0);
                CHECK(line.back() == '}');
            }
        }
    }
}

namespace {

// The samples of a Prometheus text exposition: "name{labels}" -> value. Fails the test on a
// line that is not a comment, a blank or "series value", and on a series without # TYPE.
std::map<std::string, double> parse_exposition(const std::string& text) {
    std::map<std::string, double> samples;
    std::set<std::string> typed;
    for (const auto& line : lines(text)) {
        CAPTURE(line);
        if (line.empty()) continue;
        if (line.rfind("# TYPE ", 0) == 0) {
            typed.insert(line.substr(7, line.find(' ', 7) - 7));
            continue;
        }
        if (line.rfind("# HELP ", 0) == 0) continue;
        const auto space = line.rfind(' ');
        REQUIRE(space != std::string::npos);
        const std::string series = line.substr(0, space);
        std::string family = series.substr(0, series.find('{'));
        for (const char* suffix : {"_bucket", "_sum", "_count"})
            if (!typed.count(family) && family.size() > std::strlen(suffix) &&
                family.compare(family.size() - std::strlen(suffix), std::string::npos, suffix) == 0)
                family.resize(family.size() - std::strlen(suffix));
        CHECK(typed.count(family) == 1);
        char* end = nullptr;
        const std::string value = line.substr(space + 1);
        const double v = std::strtod(value.c_str(), &end);
        CHECK(*end == '\0');
        CHECK(samples.emplace(series, v).second);  // each series once
    }
    return samples;
}

}  // namespace

TEST_CASE("metrics: the Prometheus endpoint counts lookups, cache results and latency") {
    TempDir dir;
    Daemon d(dir, world_daemon_config(dir.path(), "[metrics]\naddress = \"127.0.0.1:0\"\n"));
    const std::string log = d.log();
    const auto at = log.find("metrics on http://");
    REQUIRE(at != std::string::npos);
    const std::string address = log.substr(at + 18, log.find("/metrics", at) - at - 18);

    const std::string want = scenario_answer("dane-ee.test");
    REQUIRE(want.rfind("OK ", 0) == 0);
    const std::string kind = want.substr(3, want.find(' ', 3) - 3);
    for (int i = 0; i < 3; ++i)
        REQUIRE(ask(d, "dane-ee.test") == want);
    REQUIRE(ask(d, "insecure.test") == "NOTFOUND");
    Client bad(d.address("tcp_table"));
    bad.send("put x y\n");
    REQUIRE(bad.read_until("\n") == "400 put is not supported\n");

    Client c(address);
    c.send("GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
    std::string response;
    REQUIRE(c.wait_eof(5000, &response));
    const auto body_at = response.find("\r\n\r\n");
    REQUIRE(body_at != std::string::npos);
    const std::string head = response.substr(0, body_at);
    CHECK(head.rfind("HTTP/1.0 200", 0) == 0);
    CHECK(contains(head, "Content-Type: text/plain; version=0.0.4; charset=utf-8"));
    auto m = parse_exposition(response.substr(body_at + 4));
    CHECK(m["tlspolicyd_lookups_total{protocol=\"tcp_table\",answer=\"" + kind + "\"}"] == 3);
    CHECK(m["tlspolicyd_lookups_total{protocol=\"tcp_table\",answer=\"notfound\"}"] == 1);
    CHECK(m["tlspolicyd_lookups_total{protocol=\"tcp_table\",answer=\"error\"}"] == 1);
    CHECK(m["tlspolicyd_lookups_total{protocol=\"socketmap\",answer=\"" + kind + "\"}"] == 0);
    CHECK(m["tlspolicyd_cache_lookups_total{result=\"miss\"}"] == 2);
    CHECK(m["tlspolicyd_cache_lookups_total{result=\"hit\"}"] == 2);
    CHECK(m["tlspolicyd_cache_entries"] == 2);
    CHECK(m["tlspolicyd_resolutions_in_flight"] == 0);
    // The histogram counts the four answered lookups; the cached ones are the fast ones.
    CHECK(m["tlspolicyd_lookup_duration_seconds_count"] == 4);
    CHECK(m["tlspolicyd_lookup_duration_seconds_bucket{le=\"+Inf\"}"] == 4);
    CHECK(m["tlspolicyd_lookup_duration_seconds_bucket{le=\"0.001\"}"] >= 2);
    CHECK(m["tlspolicyd_lookup_duration_seconds_sum"] > 0);
    CHECK(m["tlspolicyd_connections"] >= 1);  // `bad` is still open
    CHECK(m.count("tlspolicyd_build_info{version=\"0.1.0\"}") == 1);
    CHECK(m["tlspolicyd_start_time_seconds"] > 1.7e9);

    Client other(address);
    other.send("GET /other HTTP/1.0\r\n\r\n");
    std::string not_found;
    REQUIRE(other.wait_eof(5000, &not_found));
    CHECK(not_found.rfind("HTTP/1.0 404", 0) == 0);
}
