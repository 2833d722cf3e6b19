// The tlspolicy command: check-config and query, their output and exit codes.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "harness.h"

using harness::TempDir;

namespace {

harness::RunResult cli(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {harness::env_path("TLSPOLICY")};
    argv.insert(argv.end(), args.begin(), args.end());
    return harness::run(argv);
}

}  // namespace

TEST_CASE("check-config: valid, invalid and missing files") {
    TempDir dir;
    dir.write("good.toml", "[overrides]\n\"example.org\" = \"dane-only\"\n");
    dir.write("bad.toml", "[dns]\ntimeout_ms = 1\n");
    dir.write("badpolicy.toml", "[overrides]\n\"example.org\" = \"encrypt match=x\"\n");
    struct Row {
        std::vector<std::string> args;
        int code;
        std::string out_has;
        std::string err_has;
    };
    const std::vector<Row> rows = {
        {{"check-config"}, 0, "built-in defaults: ok", ""},
        {{"check-config", "-c", dir.file("good.toml")}, 0, "ok (2 listener(s), 1 override(s)", ""},
        {{"-c", dir.file("good.toml"), "check-config"}, 0, "ok", ""},
        {{"check-config", "-c", dir.file("bad.toml")},
         78,
         "",
         dir.file("bad.toml") + ":2:14: \"dns.timeout_ms\" is 1, out of range"},
        {{"check-config", "-c", dir.file("badpolicy.toml")},
         78,
         "",
         "badpolicy.toml:2:17: override for \"example.org\" is not a valid Postfix policy"},
        {{"check-config", "-c", dir.file("missing.toml")}, 78, "", "cannot read"},
        {{"check-config", "--keys"}, 0, "dns.timeout_ms (integer, 100..60000) = 5000", ""},
        {{"frobnicate"}, 64, "", "unknown command"},
        {{}, 64, "", "usage"},
    };
    for (const auto& r : rows) {
        CAPTURE(r.args.empty() ? std::string("(none)") : r.args.back());
        const auto res = cli(r.args);
        CHECK(res.exit_code == r.code);
        CHECK(res.out.find(r.out_has) != std::string::npos);
        CHECK_MESSAGE(res.err.find(r.err_has) != std::string::npos, res.err);
    }
}

TEST_CASE("query: output and exit codes") {
    TempDir dir;
    dir.write("c.toml", harness::world_dns() +
                            "[overrides]\n\"dane.example\" = \"dane-only\"\n"
                            "\"xn--bcher-kva.example\" = \"encrypt\"\n");
    const std::string c = dir.file("c.toml");
    struct Row {
        std::vector<std::string> args;
        int code;
        std::string out;
    };
    const std::vector<Row> rows = {
        {{"-c", c, "query", "dane.example"}, 0, "dane-only\n"},
        {{"-c", c, "query", "Bücher.Example."}, 0, "encrypt\n"},
        {{"-c", c, "query", "nothing.example"}, 1, ""},
        {{"-c", c, "query", ".dane.example"}, 1, ""},
        {{"-c", c, "query", "dane.example", "nothing.example"},
         1,
         "dane.example\tdane-only\nnothing.example\t\n"},
        {{"-c", c, "query", "--json", "bücher.example"},
         0,
         "{\"key\":\"b\\u00c3\\u00bccher.example\",\"normalized\":\"xn--bcher-kva.example\","
         "\"kind\":\"domain\",\"outcome\":\"found\",\"policy\":\"encrypt\",\"source\":\"override\","
         "\"reason\":\"static override\",\"ttl\":0}\n"},
        {{"-c", c, "query", "--json", ".x.example"},
         1,
         "{\"key\":\".x.example\",\"normalized\":\".x.example\",\"kind\":\"parent-probe\","
         "\"outcome\":\"not-found\",\"policy\":null,\"source\":\"none\","
         "\"reason\":\"parent-domain probe\",\"ttl\":0}\n"},
        {{"query"}, 64, ""},
    };
    for (const auto& r : rows) {
        CAPTURE(r.args.back());
        const auto res = cli(r.args);
        CHECK(res.exit_code == r.code);
        CHECK(res.out == r.out);
    }
}
