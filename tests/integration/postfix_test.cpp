// The real Postfix client (postmap -q) against tlspolicyd, over socketmap and tcp_table.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "harness.h"

using harness::Daemon;
using harness::TempDir;

namespace {

std::string config(const std::string& sock) {
    return std::string(harness::kLoopbackListeners) + R"(
[[listen]]
protocol = "socketmap"
address = "unix:)" +
           sock + "\"\n" + harness::world_dns() + R"(
[overrides]
"dane.example" = "dane-only"
"sts.example" = "secure match=.sts.example:mx.sts.example servername=hostname"
"xn--bcher-kva.example" = "encrypt protocols=>=TLSv1.2"
".parent.example" = "verify match=.parent.example"
"[relay.example]:587" = "encrypt"
)";
}

}  // namespace

TEST_CASE("postmap -q: key → policy over socketmap (inet, unix) and tcp_table") {
    TempDir dir;
    const std::string sock = dir.file("sm.sock");
    Daemon d(dir, config(sock));
    const std::vector<std::string> maps = {
        "socketmap:inet:" + d.address("socketmap") + ":postfix",
        "socketmap:unix:" + sock + ":postfix",
        "tcp:" + d.address("tcp_table"),
    };
    struct Row {
        std::string key;
        std::string want;  // stdout without the newline; "" = not found
    };
    const std::vector<Row> rows = {
        {"dane.example", "dane-only"},
        {"DANE.Example.", "dane-only"},
        {"sts.example", "secure match=.sts.example:mx.sts.example servername=hostname"},
        {"bücher.example", "encrypt protocols=>=TLSv1.2"},
        {"BÜCHER.example", "encrypt protocols=>=TLSv1.2"},
        {"xn--bcher-kva.example", "encrypt protocols=>=TLSv1.2"},
        {".parent.example", "verify match=.parent.example"},
        {"[relay.example]:587", "encrypt"},
        {"nothing.example", ""},
        {".dane.example", ""},   // parent-domain probe: never a policy
        {"[dane.example]", ""},  // explicit next hop without an override
        {"[192.0.2.1]", ""},
        {"192.0.2.1", ""},
        {"not a domain", ""},
    };
    for (const auto& map : maps) {
        for (const auto& r : rows) {
            CAPTURE(map);
            CAPTURE(r.key);
            const auto res = harness::postmap(dir, r.key, map);
            if (r.want.empty()) {
                CHECK(res.exit_code == 1);
                CHECK(res.out.empty());
                // postmap exits 1 for errors too: a real not-found prints no warning.
                CHECK(res.err.find("warning") == std::string::npos);
                CHECK(res.err.find("fatal") == std::string::npos);
            } else {
                CHECK(res.exit_code == 0);
                CHECK(res.out == r.want + "\n");
                CHECK(res.err.empty());
            }
        }
    }
}

TEST_CASE("postmap -q: the socketmap NAME selects a profile, unknown names use [policy]") {
    // The answer shape for profiles only matters once the engines exist; here we pin that any
    // NAME is accepted and answered the same way for overrides.
    TempDir dir;
    Daemon d(dir,
             config(dir.file("sm.sock")) + "[policy.profiles.strict]\nsts_level = \"secure\"\n");
    for (std::string name : {"postfix", "strict", "whatever"}) {
        CAPTURE(name);
        const auto res = harness::postmap(dir, "dane.example",
                                          "socketmap:inet:" + d.address("socketmap") + ":" + name);
        CHECK(res.exit_code == 0);
        CHECK(res.out == "dane-only\n");
    }
}

TEST_CASE("postmap -q: a daemon that is down is an error, not a silent not-found") {
    TempDir dir;
    std::string addr;
    {
        Daemon d(dir, config(dir.file("sm.sock")));
        addr = d.address("socketmap");
    }
    // (socketmap fails at once; Postfix's tcp client retries ten times, a second apart.)
    const auto res = harness::postmap(dir, "dane.example", "socketmap:inet:" + addr + ":postfix");
    CHECK(res.exit_code != 0);
    CHECK(res.out.empty());
    CHECK_FALSE(res.err.empty());
}
