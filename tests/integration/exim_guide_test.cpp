// docs/exim.md against a running tlspolicyd and the real Exim: the guide's macro block (between
// `# BEGIN tlspolicyd` and `# END tlspolicyd`) is taken from the document as it is, pointed at
// the daemon's tcp_table listener, and every macro is expanded with `exim -be` for one domain of
// each answer kind. `exim -be` has no delivery, so `${domain}` and `${host}` (the only
// variables the block may use) are replaced by the row's domain and MX host name.
#include <doctest/doctest.h>

#include <cstddef>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"

using harness::Daemon;
using harness::TempDir;

namespace {

// The macros the guide's transport and router use, in the order of Row::want.
const std::vector<std::string> kMacros = {
    "TLSPOLICY_LEVEL",        "TLSPOLICY_DEFER",       "TLSPOLICY_REQUIRE_DANE",
    "TLSPOLICY_TRY_DANE",     "TLSPOLICY_REQUIRE_TLS", "TLSPOLICY_AVOID_TLS",
    "TLSPOLICY_VERIFY_HOSTS", "TLSPOLICY_SNI",         "TLSPOLICY_REFUSE",
};

struct Row {
    std::string domain;  // what ${domain} becomes
    std::string host;    // what ${host} becomes: the MX host being connected to
    // Expected expansions, one per kMacros entry. A value ending in '*' is a prefix (for
    // reasons the daemon words).
    std::vector<std::string> want;
};

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE_MESSAGE(in, "cannot read " << path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// The text between the marker lines (markers included), or "" when they are missing.
std::string guide_block(const std::string& doc) {
    const auto begin = doc.find("# BEGIN tlspolicyd\n");
    const auto end = doc.find("# END tlspolicyd\n");
    if (begin == std::string::npos || end == std::string::npos || end < begin) return "";
    return doc.substr(begin, end + std::string("# END tlspolicyd\n").size() - begin);
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
    for (std::size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size())
        s.replace(pos, from.size(), to);
    return s;
}

// Expands every macro of kMacros with the block pointed at `socket`, for one domain and host.
harness::RunResult expand(const TempDir& dir, const std::string& block, const std::string& socket,
                          const Row& row) {
    std::string text = replace_all(block, "inet:127.0.0.1:8462", socket);
    text = replace_all(text, "${domain}", row.domain);
    text = replace_all(text, "${host}", row.host);
    const std::string conf = dir.file("exim-guide.conf");
    std::ofstream(conf) << "spool_directory = " << dir.path() << "/exim-spool\n"
                        << "log_file_path = " << dir.path() << "/exim-%s.log\n"
                        << text;
    std::vector<std::string> argv = {
        harness::env_path("EXIM", "/var/cache/tlspolicyd-test/exim/usr/sbin/exim4"), "-C", conf,
        "-be"};
    argv.insert(argv.end(), kMacros.begin(), kMacros.end());
    return harness::run(argv);
}

// Every ```exim code block of the document, in order.
std::vector<std::string> exim_blocks(const std::string& doc) {
    std::vector<std::string> out;
    const std::string open = "```exim\n";
    for (std::size_t pos = 0; (pos = doc.find(open, pos)) != std::string::npos;) {
        pos += open.size();
        const auto end = doc.find("```", pos);
        if (end == std::string::npos) break;
        out.push_back(doc.substr(pos, end - pos));
        pos = end + 3;
    }
    return out;
}

bool matches(const std::string& got, const std::string& want) {
    if (!want.empty() && want.back() == '*')
        return got.rfind(want.substr(0, want.size() - 1), 0) == 0;
    return got == want;
}

}  // namespace

TEST_CASE("docs/exim.md: the macro block gives every answer kind its transport options") {
    const std::string doc = read_file(harness::env_path("SOURCE_ROOT") + "/docs/exim.md");
    const std::string block = guide_block(doc);
    REQUIRE_MESSAGE(!block.empty(),
                    "docs/exim.md has no `# BEGIN tlspolicyd` ... "
                    "`# END tlspolicyd` block");
    // The substitutions below must reach every use of the listener and of the variables.
    CHECK(harness::contains(block, "inet:127.0.0.1:8462"));
    CHECK_FALSE(harness::contains(replace_all(block, "${domain}", ""), "$domain"));
    CHECK_FALSE(harness::contains(replace_all(block, "${host}", ""), "$host"));
    for (const auto& m : kMacros)
        CHECK_MESSAGE(harness::contains(block, "\n" + m + " = "), m << " is not defined");

    TempDir dir;
    Daemon d(dir, R"(
[[listen]]
protocol = "tcp_table"
address = "127.0.0.1:0"
)" + harness::world_dns() +
                      R"(
[overrides]
"dane-only.example" = "dane-only"
"dane.example" = "dane"
"verify.example" = "verify match=.example.org servername=hostname"
"secure.example" = "secure match=mx.example.net:.example.org"
"nexthop.example" = "secure match=nexthop:dot-nexthop"
"encrypt.example" = "encrypt"
"sni.example" = "encrypt servername=smtp.example.net"
"may.example" = "may"
"none.example" = "none"
"fp.example" = "fingerprint match=3E:28:49:58:23:C8:1C:D3:1C:B4:03:52:1C:B8:43:F8:AB:62:7E:EE:A8:A3:D6:B3:0E:8A:A6:F2:5C:EE:A5:5D"
)");
    const std::string socket = "inet:" + d.address("tcp_table");
    const std::string fingerprint_reason =
        "tlspolicyd: fingerprint policies are not supported by this Exim configuration";

    // LEVEL, DEFER, REQUIRE_DANE, TRY_DANE, REQUIRE_TLS, AVOID_TLS, VERIFY_HOSTS, SNI, REFUSE
    const std::vector<Row> rows = {
        {"dane-only.example", "mx.example.org", {"dane-only", "", "*", "*", "*", "", "", "", ""}},
        {"dane.example", "mx.example.org", {"dane", "", "", "*", "", "", "", "", ""}},
        {"verify.example",
         "mx.example.org",
         {"verify", "", "", "*", "*", "", "*", "mx.example.org", ""}},
        // `.example.org` is MTA-STS's `*.example.org`: exactly one more label.
        {"verify.example",
         "a.b.example.org",
         {"verify", "", "", "*", "*", "", "*", "a.b.example.org",
          "tlspolicyd: a.b.example.org matches no name of the policy for verify.example"}},
        {"verify.example",
         "example.org",
         {"verify", "", "", "*", "*", "", "*", "example.org",
          "tlspolicyd: example.org matches no name of the policy for verify.example"}},
        {"secure.example", "MX.Example.NET", {"secure", "", "", "*", "*", "", "*", "", ""}},
        {"secure.example", "mx2.example.org", {"secure", "", "", "*", "*", "", "*", "", ""}},
        {"secure.example",
         "mx.attacker.test",
         {"secure", "", "", "*", "*", "", "*", "",
          "tlspolicyd: mx.attacker.test matches no name of the policy for secure.example"}},
        {"nexthop.example", "nexthop.example", {"secure", "", "", "*", "*", "", "*", "", ""}},
        {"nexthop.example", "a.b.nexthop.example", {"secure", "", "", "*", "*", "", "*", "", ""}},
        {"nexthop.example",
         "mx.nexthop.example.net",
         {"secure", "", "", "*", "*", "", "*", "",
          "tlspolicyd: mx.nexthop.example.net matches no name of the policy for "
          "nexthop.example"}},
        {"encrypt.example", "mx.example.org", {"encrypt", "", "", "*", "*", "", "", "", ""}},
        {"sni.example",
         "mx.example.org",
         {"encrypt", "", "", "*", "*", "", "", "smtp.example.net", ""}},
        {"may.example", "mx.example.org", {"may", "", "", "", "", "", "", "", ""}},
        {"none.example", "mx.example.org", {"none", "", "", "", "", "*", "", "", ""}},
        {"fp.example",
         "mx.example.org",
         {"fingerprint", fingerprint_reason, "", "*", "", "", "", "", fingerprint_reason}},
        // Real lookups in the test world: a secure NXDOMAIN is not found (Exim's defaults),
        // a bogus MX set is a temporary failure (the mail waits).
        {"nxdomain.test", "mx.example.org", {"notfound", "", "", "*", "", "", "", "", ""}},
        {"bogus.test",
         "mx.bogus.test",
         {"temp", "tlspolicyd: MX lookup for bogus.test failed*", "", "*", "", "", "", "",
          "tlspolicyd: MX lookup for bogus.test failed*"}},
    };

    auto check = [&](const Row& row, const std::string& via) {
        CAPTURE(row.domain);
        CAPTURE(row.host);
        CAPTURE(via);
        REQUIRE(row.want.size() == kMacros.size());
        const auto res = expand(dir, block, via, row);
        REQUIRE_MESSAGE(res.exit_code == 0, "exim -be failed: " << res.err);
        const auto got = harness::lines(res.out);
        REQUIRE_MESSAGE(got.size() == kMacros.size(), "exim -be printed:\n" << res.out);
        for (std::size_t i = 0; i < kMacros.size(); ++i)
            CHECK_MESSAGE(matches(got[i], row.want[i]), kMacros[i] << ": got \"" << got[i]
                                                                   << "\", want \"" << row.want[i]
                                                                   << "\"");
    };
    for (const auto& row : rows)
        check(row, socket);

    // No daemon to ask (nothing listens on the socket): the mail waits.
    check({"dane-only.example",
           "mx.example.org",
           {"temp", "tlspolicyd: no answer", "", "*", "", "", "", "", "tlspolicyd: no answer"}},
          dir.file("no-such.sock"));
}

TEST_CASE("docs/exim.md: the whole configuration of the guide is accepted by Exim") {
    const std::string doc = read_file(harness::env_path("SOURCE_ROOT") + "/docs/exim.md");
    // The main-section blocks (the macros, dns_dnssec_ok), then the routers, then the smtp
    // transport, as the guide tells to place them.
    std::string main_part, routers, transports;
    for (const auto& b : exim_blocks(doc)) {
        if (harness::contains(b, "driver = smtp"))
            transports += b + "\n";
        else if (harness::contains(b, "driver = "))
            routers += b + "\n";
        else
            main_part += b + "\n";
    }
    REQUIRE_MESSAGE(!routers.empty(), "docs/exim.md shows no router");
    REQUIRE_MESSAGE(!transports.empty(), "docs/exim.md shows no smtp transport");
    TempDir dir;
    const std::string conf = dir.file("exim-full.conf");
    std::ofstream(conf) << "spool_directory = " << dir.path() << "/exim-spool\n"
                        << "log_file_path = " << dir.path() << "/exim-%s.log\n"
                        << "domainlist local_domains = localhost\n"
                        << main_part << "begin routers\n"
                        << routers << "begin transports\n"
                        << transports;
    const std::string exim =
        harness::env_path("EXIM", "/var/cache/tlspolicyd-test/exim/usr/sbin/exim4");
    const auto check = harness::run({exim, "-C", conf, "-bV"});
    CHECK_MESSAGE(check.exit_code == 0, "exim -bV: " << check.out << check.err);
    // The transport's options as Exim read them: the macros are in place.
    const auto shown = harness::run({exim, "-C", conf, "-bP", "transport", "remote_smtp"});
    CHECK(shown.exit_code == 0);
    CHECK(harness::contains(shown.out, "hosts_require_dane = ${if eq{${if match{"));
    CHECK(harness::contains(shown.out, "\nno_multi_domain\n"));
    CHECK(harness::contains(shown.out, "event_action = ${if eq{$event_name}{tcp:connect}"));
}
