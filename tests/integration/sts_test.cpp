// The MTA-STS engine against the test world: every MTA-STS and "both" row of the scenario
// table through `tlspolicy query --json` and through the daemon asked by Postfix's postmap,
// the reasons behind refusals, TLSRPT attributes, an id change picked up at the next TXT
// check, and a known enforce policy kept while its web server fails. Needs $WORLD.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

using harness::Daemon;
using harness::TempDir;

namespace {

using harness::contains;
using harness::json_outcome;
using harness::lines;

using Row = harness::Scenario;

// The rows the MTA-STS half decides ("mta-sts") or takes part in ("both").
std::vector<Row> sts_rows() {
    std::vector<Row> out;
    for (auto& r : harness::scenarios())
        if (r.decided_by != "dane") out.push_back(std::move(r));
    return out;
}

// The daemon's configuration for the world with a row's overrides applied.
std::string world_config(const std::map<std::string, std::string>& over,
                         const std::string& extra = "") {
    std::map<std::string, std::map<std::string, std::string>> sections = {
        {"mta_sts",
         {{"ca_file", "\"" + harness::world_env("WEB_CA") + "\""},
          {"https_port", harness::world_env("HTTPS_PORT")},
          {"allow_private_addresses", "true"},
          {"connect_timeout_ms", "2000"},
          {"timeout_ms", "3000"}}},
        {"policy", {{"sts_level", "\"verify\""}, {"testing_mode", "\"ignore\""}}},
    };
    for (const auto& [k, v] : over) {
        const auto dot = k.find('.');
        sections[k.substr(0, dot)][k.substr(dot + 1)] = v;
    }
    std::string text = harness::world_dns();
    for (const auto& [section, keys] : sections) {
        text += "[" + section + "]\n";
        for (const auto& [k, v] : keys)
            text += k + " = " + v + "\n";
    }
    return text + extra;
}

// Rows grouped by their configuration overrides (one query / daemon per group).
std::map<std::map<std::string, std::string>, std::vector<Row>> by_config() {
    std::map<std::map<std::string, std::string>, std::vector<Row>> groups;
    for (const auto& r : sts_rows())
        groups[r.config].push_back(r);
    return groups;
}

// What the JSON must say for rows whose answer is "no policy" for a specific reason.
const std::map<std::string, std::vector<std::string>>& why() {
    static const std::map<std::string, std::vector<std::string>> w = {
        {"sts-no-txt", {"\"code\":\"no_sts_record\""}},
        {"sts-two-txt", {"\"code\":\"multi_sts_records\""}},
        {"sts-txt-no-id", {"\"code\":\"invalid_sts_id\""}},
        {"sts-enforce-no-mx", {"\"code\":\"invalid_sts_mx\""}},
        {"sts-ip-literal-mx", {"\"code\":\"invalid_sts_mx\""}},
        {"sts-wrong-version", {"\"code\":\"invalid_sts_version\""}},
        {"sts-http-404", {"\"code\":\"http_status_404\""}},
        // A redirect is never followed: the 301 itself is the failure.
        {"sts-http-301", {"\"code\":\"http_status_301\"", "\"http_status\":301"}},
        {"sts-text-html", {"\"code\":\"invalid_content_type\""}},
        {"sts-big-length", {"\"code\":\"body_too_large\""}},
        {"sts-big-chunked", {"\"code\":\"body_too_large\""}},
        {"sts-big-close", {"\"code\":\"body_too_large\""}},
        {"sts-slow-body", {"\"code\":\"timeout\""}},
        {"sts-unknown-ca", {"\"code\":\"certificate_error\""}},
        {"sts-wrong-name", {"\"code\":\"certificate_error\""}},
        {"sts-expired-cert", {"\"code\":\"certificate_error\""}},
        {"sts-private-address",
         {"\"code\":\"private_address\"", "\"refused_addresses\":[\"127.0.0.1\"]"}},
        {"sts-none", {"has mode none", "\"status\":\"found\""}},
        {"sts-testing", {"\"mode\":\"testing\"", "\"sts_verdict\":\"not-applied\""}},
        {"sts-mx-outside-policy", {"{\"host\":\"other.sts-mismatch.test\",\"matches\":false}"}},
        {"dane-tlsa-fail-sts-enforce", {"\"decided_by\":\"both\"", "\"unfinished\":true"}},
    };
    return w;
}

// Flips scenario rows of the world (tests/world/world.py flip) and flips them back at the end.
class Flip {
  public:
    explicit Flip(std::vector<std::string> names) : names_(std::move(names)) { flip("after"); }
    ~Flip() {
        try {
            flip("before");
        } catch (...) {
        }
    }

  private:
    void flip(const std::string& state) {
        for (const auto& n : names_) {
            const auto r = harness::run(
                {"/usr/bin/python3", harness::env_path("SOURCE_ROOT") + "/tests/world/world.py",
                 "flip", std::getenv("WORLD"), n, state},
                "", 30000);
            INFO("flip " << n << " " << state << ": " << r.out << r.err);
            REQUIRE(r.exit_code == 0);
        }
    }
    std::vector<std::string> names_;
};

}  // namespace

TEST_CASE("mta-sts: every MTA-STS and both row through tlspolicy query --json") {
    TempDir dir;
    int checked = 0;
    for (const auto& [config, rows] : by_config()) {
        dir.write("q.toml", world_config(config));
        std::vector<std::string> args = {"-c", dir.file("q.toml"), "query", "--json"};
        for (const auto& r : rows)
            args.push_back(r.key);
        const auto res = harness::tlspolicy(args);
        const auto out = lines(res.out);
        REQUIRE(out.size() == rows.size());
        for (std::size_t i = 0; i < rows.size(); ++i) {
            const Row& r = rows[i];
            const std::string& got = out[i];
            CAPTURE(r.name);
            CAPTURE(got);
            CHECK(contains(got, json_outcome(r.answer)));
            // Both halves are always shown.
            CHECK(contains(got, "\"dane\":{"));
            CHECK(contains(got, "\"mta_sts\":{"));
            if (r.answer.rfind("OK ", 0) == 0) CHECK(contains(got, "\"source\":\"mta-sts\""));
            if (r.decided_by == "mta-sts") CHECK(contains(got, "\"decided_by\":\"mta-sts\""));
            if (auto it = why().find(r.name); it != why().end())
                for (const auto& part : it->second)
                    CHECK(contains(got, part));
            if (r.name == "sts-slow-body") {
                // Cut off at the 3000 ms fetch timeout, not at the end of the drip.
                const auto at = got.find("\"elapsed_ms\":");
                REQUIRE(at != std::string::npos);
                const long ms = std::atol(got.c_str() + at + 13);
                CHECK(ms >= 2900);
                CHECK(ms < 4500);
            }
            ++checked;
        }
    }
    CHECK(checked >= 30);
}

TEST_CASE("mta-sts: every MTA-STS and both row through the daemon, asked by postmap -q") {
    int checked = 0;
    for (const auto& [config, rows] : by_config()) {
        TempDir dir;
        Daemon d(dir, std::string(harness::kLoopbackListeners) + world_config(config));
        const std::vector<std::string> maps = {
            "socketmap:inet:" + d.address("socketmap") + ":postfix",
            "tcp:" + d.address("tcp_table")};
        for (const auto& r : rows) {
            for (const auto& map : maps) {
                CAPTURE(r.name);
                CAPTURE(map);
                const auto res = harness::postmap(dir, r.key, map);
                CHECK(harness::postmap_mismatch(res, r.answer, map) == "");
                ++checked;
            }
        }
        // The one MX host outside its domain's policy is named in a warning.
        if (config.empty())
            CHECK(contains(d.log(),
                           "sts-mismatch.test: MX host(s) other.sts-mismatch.test match no mx "
                           "pattern of MTA-STS policy id mm1"));
    }
    CHECK(checked >= 60);
}

TEST_CASE("mta-sts: TLSRPT attributes for a profile, never for DANE answers; servername off") {
    TempDir dir;
    const std::string profiles =
        "[policy.profiles.tlsrpt]\ntlsrpt = true\n[policy.profiles.old]\nservername = false\n";
    Daemon d(dir, std::string(harness::kLoopbackListeners) + world_config({}, profiles));
    const std::string base = "socketmap:inet:" + d.address("socketmap") + ":";
    auto res = harness::postmap(dir, "sts-wild.test", base + "tlsrpt");
    CHECK(res.exit_code == 0);
    CHECK(res.out ==
          "verify match=.sts-wild.test:mx.backup-provider.test servername=hostname "
          "policy_type=sts policy_domain=sts-wild.test mx_host_pattern=*.sts-wild.test "
          "mx_host_pattern=mx.backup-provider.test { policy_string = version: STSv1 } "
          "{ policy_string = mode: enforce } { policy_string = mx: *.sts-wild.test } "
          "{ policy_string = mx: mx.backup-provider.test } { policy_string = max_age: 604800 }\n");
    // The default map name stays plain for Postfix <= 3.9.
    res = harness::postmap(dir, "sts-wild.test", base + "postfix");
    CHECK(res.out == "verify match=.sts-wild.test:mx.backup-provider.test servername=hostname\n");
    res = harness::postmap(dir, "sts-wild.test", base + "old");
    CHECK(res.out == "verify match=.sts-wild.test:mx.backup-provider.test\n");
    // DANE wins on both.test, and a DANE answer never carries TLSRPT attributes.
    res = harness::postmap(dir, "both.test", base + "tlsrpt");
    CHECK(res.out == "dane-only\n");
}

TEST_CASE(
    "mta-sts: an id change is fetched at the next TXT check; a known policy outlives a failing "
    "server") {
    TempDir dir;
    // min_ttl 0: the TXT records' own TTL (1 s) decides when they are checked again.
    Daemon d(dir, std::string(harness::kLoopbackListeners) +
                      world_config({{"cache.min_ttl", "0"}}, "[log]\nlevel = \"debug\"\n"));
    const std::string map = "socketmap:inet:" + d.address("socketmap") + ":postfix";
    std::map<std::string, Row> rows;
    for (const auto& r : sts_rows())
        rows[r.name] = r;
    const Row& change = rows.at("sts-id-change");
    const Row& keep = rows.at("sts-keep-on-failure");
    REQUIRE(harness::postmap(dir, change.key, map).out == change.answer.substr(3) + "\n");
    REQUIRE(harness::postmap(dir, keep.key, map).out == keep.answer.substr(3) + "\n");

    Flip flip({change.name, keep.name});
    // The TXT TTL is 1 s: ask until the daemon has looked again (bounded; each ask is a real
    // lookup, and the new id can only be seen once the old TXT record expired).
    std::string got;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < until) {
        got = harness::postmap(dir, change.key, map).out;
        if (got == change.answer_after.substr(3) + "\n") break;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    CHECK(got == change.answer_after.substr(3) + "\n");

    // sts-keep: its id changed too and the policy host now answers 503; the daemon tries the
    // new id, fails, and keeps the enforce policy it knows (RFC 8461 5.1).
    std::string log;
    const auto until2 = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < until2) {
        CHECK(harness::postmap(dir, keep.key, map).out == keep.answer_after.substr(3) + "\n");
        log = d.log();
        if (contains(log, "sts-keep.test: " + keep.answer_after.substr(3) + " (mta-sts) in ") &&
            contains(log, "MTA-STS mode enforce, policy id k1 (errored)"))
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    CHECK(contains(log, "policy id k1 (errored)"));
    CHECK(contains(log,
                   "sts-keep.test: downgrade prevented: MTA-STS policy id k1 (mode enforce) "
                   "stays in force although the new one could not be fetched"));
    // A fresh lookup that never knew the policy finds none: the failure is real.
    dir.write("q.toml", world_config({}));
    const auto fresh = harness::tlspolicy({"-c", dir.file("q.toml"), "query", "--json", keep.key});
    CAPTURE(fresh.out);
    CHECK(fresh.exit_code == 1);
    CHECK(contains(fresh.out, "\"code\":\"http_status_503\""));
}
