// Config: the key table, defaults, and every kind of error with its file:line:col.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/config.h"

using namespace tlspolicy;

TEST_CASE("default_config: the built-in defaults") {
    const Config c = default_config();
    REQUIRE(c.listen.size() == 2);
    CHECK(c.listen[0].protocol == Protocol::Socketmap);
    CHECK(c.listen[0].endpoint.to_string() == "127.0.0.1:8461");
    CHECK(c.listen[1].protocol == Protocol::TcpTable);
    CHECK(c.listen[1].endpoint.to_string() == "127.0.0.1:8462");
    CHECK(c.server.max_connections == 1000);
    CHECK(c.server.idle_timeout == 300);
    CHECK(c.dns.resolvers.empty());
    CHECK(c.dns.timeout_ms == 5000);
    CHECK(c.dns.trust_anchor_file == "/usr/share/dns/root.key");
    CHECK(c.mta_sts.https_port == 443);
    CHECK_FALSE(c.mta_sts.allow_private_addresses);
    CHECK(c.policy.sts_level == StsLevel::Verify);
    CHECK(c.policy.testing_mode == TestingMode::Ignore);
    CHECK_FALSE(c.policy.tlsrpt);
    CHECK(c.cache.min_ttl == 180);
    CHECK(c.cache.max_ttl == 86400);
    CHECK(c.cache.negative_ttl == 1800);
    CHECK(c.cache.stale_ttl == 3600);
    CHECK(c.overrides.empty());
    CHECK(c.log.level == log::Level::Info);
}

TEST_CASE("parse_config: an empty file gives the defaults") {
    auto c = parse_config("", "empty.toml");
    REQUIRE(c.ok());
    CHECK(c->listen == default_config().listen);
    CHECK(c->source == "empty.toml");
}

TEST_CASE("parse_config: valid files, got values, want table") {
    auto c = parse_config(R"(
[[listen]]
protocol = "tcp_table"
address = "[::1]:9000"

[[listen]]
protocol = "socketmap"
address = "unix:/run/tlspolicyd/sm.sock"
mode = "0660"
group = "postfix"

[server]
max_connections = 5
idle_timeout = 10

[dns]
resolvers = ["127.0.0.1", "127.0.0.1:5353", "::1", "[::1]:5353"]
timeout_ms = 2000

[policy]
sts_level = "secure"
testing_mode = "encrypt"

[policy.profiles.strict]
testing_mode = "enforce"

[policy.profiles.tlsrpt]
tlsrpt = true

[overrides]
"Example.ORG." = "dane-only"
"bücher.example" = "encrypt protocols=>=TLSv1.2"
".example.net" = "secure match=.example.net"
"[relay.example.com]:587" = "verify match=hostname"
)",
                          "t.toml");
    REQUIRE_MESSAGE(c.ok(), (c.ok() ? "" : c.error().message));
    REQUIRE(c->listen.size() == 2);
    CHECK(c->listen[0].protocol == Protocol::TcpTable);
    CHECK(c->listen[0].endpoint.to_string() == "[::1]:9000");
    CHECK(c->listen[1].endpoint.path == "/run/tlspolicyd/sm.sock");
    CHECK(c->listen[1].mode == 0660u);
    CHECK(c->listen[1].group == "postfix");
    CHECK(c->server.max_connections == 5);
    CHECK(c->server.idle_timeout == 10);
    CHECK(c->server.max_pipelined == 64);  // untouched keys keep their defaults
    CHECK(c->dns.resolvers.size() == 4);
    CHECK(c->policy.sts_level == StsLevel::Secure);
    // Profiles start from [policy] and change only what they set.
    CHECK(c->profile("strict").sts_level == StsLevel::Secure);
    CHECK(c->profile("strict").testing_mode == TestingMode::Enforce);
    CHECK(c->profile("tlsrpt").tlsrpt);
    CHECK(c->profile("tlsrpt").testing_mode == TestingMode::Encrypt);
    CHECK(c->profile("unknown-name") == c->policy);
    // Override keys are stored normalised.
    CHECK(c->overrides.at("example.org") == "dane-only");
    CHECK(c->overrides.at("xn--bcher-kva.example") == "encrypt protocols=>=TLSv1.2");
    CHECK(c->overrides.at(".example.net") == "secure match=.example.net");
    CHECK(c->overrides.count("[relay.example.com]:587") == 1);
}

TEST_CASE("parse_config: operations keys (log output, metrics, control socket)") {
    struct Row {
        std::string toml;
        std::string want_control;  // "" = none
        std::string want_metrics;  // "" = none
    };
    const std::vector<Row> rows = {
        {"[cache]\npath = \"/var/lib/x/cache.sqlite\"\n", "unix:/var/lib/x/control.sock", ""},
        {"[cache]\npath = \"/c.sqlite\"\n", "unix:/control.sock", ""},
        {"[control]\naddress = \"off\"\n", "", ""},
        {"[control]\naddress = \"127.0.0.2:7000\"\n", "127.0.0.2:7000", ""},
        {"[control]\naddress = \"[::1]:7000\"\n", "[::1]:7000", ""},
        {"[control]\naddress = \"unix:/run/t/c.sock\"\n[metrics]\naddress = \"[::]:9461\"\n",
         "unix:/run/t/c.sock", "[::]:9461"},
        // The control default follows cache.path wherever the keys stand.
        {"[control]\naddress = \"\"\n[cache]\npath = \"/srv/c.sqlite\"\n", "unix:/srv/control.sock",
         ""},
    };
    for (const auto& r : rows) {
        CAPTURE(r.toml);
        auto c = parse_config(r.toml, "t.toml");
        REQUIRE_MESSAGE(c, c.error().message);
        CHECK((c->control.endpoint ? c->control.endpoint->to_string() : "") == r.want_control);
        CHECK((c->metrics.endpoint ? c->metrics.endpoint->to_string() : "") == r.want_metrics);
    }
    auto j = parse_config("[log]\nformat = \"json\"\nsyslog = true\n", "t.toml");
    REQUIRE(j);
    CHECK(j->log.format == log::Format::Json);
    CHECK(j->log.syslog);
    CHECK(default_config().log.format == log::Format::Text);
    CHECK(!default_config().metrics.endpoint);
}

TEST_CASE("parse_config: errors name file:line:col and the problem") {
    struct Row {
        std::string toml;
        std::string want;  // substring of the message
    };
    const std::vector<Row> rows = {
        // TOML syntax
        {"[dns\n", "t.toml:1:"},
        {"a = \n", "t.toml:1:"},
        // unknown sections and keys
        {"[dsn]\ntimeout_ms = 1\n", "t.toml:1:2: unknown section \"dsn\""},
        {"[dns]\ntimeout = 5\n", "t.toml:2:1: unknown key \"dns.timeout\""},
        {"[policy]\nlevel = \"verify\"\n", "t.toml:2:1: unknown key \"policy.level\""},
        {"[[listen]]\nprotocol = \"socketmap\"\naddress = \"127.0.0.1:1\"\nport = 1\n",
         "t.toml:4:1: unknown key \"listen.port\""},
        {"[policy.profiles.x]\nfoo = 1\n", "t.toml:2:1: unknown key \"policy.profiles.x.foo\""},
        // wrong types
        {"[dns]\ntimeout_ms = \"5000\"\n", "t.toml:2:14: \"dns.timeout_ms\" must be a integer"},
        {"[mta_sts]\nallow_private_addresses = 1\n",
         "t.toml:2:27: \"mta_sts.allow_private_addresses\" must be a bool"},
        {"[dns]\nresolvers = \"127.0.0.1\"\n", "\"dns.resolvers\" must be a list of strings"},
        {"[dns]\nresolvers = [1]\n", "t.toml:2:14: \"dns.resolvers\" must be a list of strings"},
        {"dns = 5\n", "t.toml:1:7: \"dns\" must be a table"},
        {"[[dns]]\n", "\"dns\" must be a table"},
        // out of range / not a choice
        {"[dns]\ntimeout_ms = 99\n",
         "t.toml:2:14: \"dns.timeout_ms\" is 99, out of range 100..60000"},
        {"[server]\nmax_connections = 0\n", "out of range 1..100000"},
        {"[mta_sts]\nhttps_port = 70000\n", "out of range 1..65535"},
        // operations
        {"[log]\nformat = \"xml\"\n", "\"log.format\""},
        {"[metrics]\naddress = \"localhost:9000\"\n", "t.toml:2:11: \"metrics.address\""},
        {"[control]\naddress = \"192.0.2.1:9000\"\n", "must be unix:/path or a loopback address"},
        {"[control]\naddress = \"[2001:db8::1]:9000\"\n", "must be unix:/path or a loopback"},
        {"[control]\naddress = \"unix:relative.sock\"\n", "\"control.address\""},
        {"[policy]\nsts_level = \"strict\"\n",
         "t.toml:2:13: \"policy.sts_level\" must be one of verify|secure, not \"strict\""},
        {"[log]\nlevel = \"trace\"\n", "\"log.level\" must be one of error|warning|info|debug"},
        {"[cache]\nmin_ttl = 500\nmax_ttl = 100\n", "cache.min_ttl is larger than cache.max_ttl"},
        // semantic errors
        {"[dns]\nresolvers = [\"dns.example\"]\n",
         "t.toml:2:13: \"dns.resolvers\": resolver must be"},
        {"[[listen]]\nprotocol = \"socketmap\"\n", "t.toml:1:1: [[listen]] needs \"address\""},
        {"[[listen]]\naddress = \"127.0.0.1:1\"\n", "[[listen]] needs \"protocol\""},
        {"[[listen]]\nprotocol = \"smtp\"\naddress = \"127.0.0.1:1\"\n",
         "must be one of socketmap|tcp_table"},
        {"[[listen]]\nprotocol = \"socketmap\"\naddress = \"localhost:1\"\n",
         "t.toml:3:11: \"listen.address\": not a numeric IPv4 address"},
        {"[[listen]]\nprotocol = \"socketmap\"\naddress = \"127.0.0.1:1\"\nmode = \"0660\"\n",
         "apply to unix: addresses only"},
        {"[[listen]]\nprotocol = \"socketmap\"\naddress = \"unix:/tmp/x\"\nmode = \"660x\"\n",
         "mode must be octal"},
        {"[[listen]]\nprotocol = \"socketmap\"\naddress = \"127.0.0.1:1\"\n[[listen]]\nprotocol = "
         "\"tcp_table\"\naddress = \"127.0.0.1:1\"\n",
         "t.toml:4:1: address 127.0.0.1:1 is listed twice"},
        {"[[listen]]\nprotocol = \"socketmap\"\naddress = "
         "\"unix:/run/a.sock\"\n[[listen]]\nprotocol = \"tcp_table\"\naddress = "
         "\"unix:/run/a.sock\"\n",
         "address unix:/run/a.sock is listed twice"},
        {"listen = []\n", "\"listen\" must be written as [[listen]] tables"},
        {"[policy.profiles]\n\"a:b\" = { tlsrpt = true }\n", "profile name may not contain ':'"},
        // overrides
        {"[overrides]\n\"example.org\" = \"strict\"\n",
         "t.toml:2:17: override for \"example.org\" is not a valid Postfix policy"},
        {"[overrides]\n\"example.org\" = \"encrypt match=example.org\"\n",
         "override for \"example.org\" is not a valid Postfix policy"},
        {"[overrides]\n\"example.org\" = \"\"\n", "not a valid Postfix policy"},
        {"[overrides]\n\"exa mple.org\" = \"encrypt\"\n",
         "t.toml:2:1: override key \"exa mple.org\" is not a domain or next hop"},
        {"[overrides]\nexample.org = \"encrypt\"\n", "quote domain names"},
        {"[overrides]\n\"example.org\" = 1\n", "override for \"example.org\" must be a string"},
        {"[overrides]\n\"example.org\" = \"encrypt\"\n\"EXAMPLE.org.\" = \"dane\"\n",
         "duplicates another key"},
        {"[overrides]\n\"example.org\" = \"encrypt " + std::string(1000, 'x') + "\"\n",
         "longer than 1000 bytes"},
        // TLSRPT attributes need [policy] tlsrpt = true (Postfix <= 3.9 would defer on them)
        {"[overrides]\n\"example.org\" = \"secure policy_type=sts policy_domain=example.org\"\n",
         "not a valid Postfix policy"},
        // Bytes of the file are never echoed raw (found by fuzz-config): toml++'s own message
        // quotes the character it stopped at, a unix path may hold control characters.
        {"a = t\x1b[2J\n", "\\x1b"},
        {"[[listen]]\nprotocol = \"socketmap\"\naddress = \"unix:/a\\u001b[2J\"\n"
         "[[listen]]\nprotocol = \"socketmap\"\naddress = \"unix:/a\\u001b[2J\"\n",
         "address unix:/a\\x1b[2J is listed twice"},
    };
    for (const auto& r : rows) {
        CAPTURE(r.toml);
        auto c = parse_config(r.toml, "t.toml");
        REQUIRE_FALSE(c.ok());
        CHECK_MESSAGE(c.error().message.find(r.want) != std::string::npos, c.error().message);
        for (const unsigned char ch : c.error().message)
            CHECK_MESSAGE((ch >= 0x20 && ch < 0x7f), c.error().message);
    }
}

TEST_CASE("parse_config: TLSRPT attributes are accepted once tlsrpt is declared") {
    auto c = parse_config(
        "[policy]\ntlsrpt = true\n[overrides]\n\"example.org\" = \"secure match=mx.example.org "
        "policy_type=sts policy_domain=example.org mx_host_pattern=mx.example.org\"\n",
        "t.toml");
    REQUIRE_MESSAGE(c.ok(), (c.ok() ? "" : c.error().message));
}

TEST_CASE("load_config: unreadable file names the path") {
    auto c = load_config("/nonexistent/tlspolicyd.toml");
    REQUIRE_FALSE(c.ok());
    CHECK(c.error().message.find("/nonexistent/tlspolicyd.toml: cannot read") == 0);
}

TEST_CASE("conf/tlspolicyd.toml loads and documents every key of the table") {
    const std::string path = std::string(SOURCE_ROOT) + "/conf/tlspolicyd.toml";
    auto c = load_config(path);
    REQUIRE_MESSAGE(c.ok(), (c.ok() ? "" : c.error().message));
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    for (const auto& k : config_keys()) {
        // "dns.timeout_ms" is documented as "timeout_ms" under [dns] (possibly commented out).
        std::string leaf = k.name.substr(k.name.rfind('.') + 1);
        if (leaf == "DOMAIN") leaf = "[overrides]";  // a placeholder, not a key
        CAPTURE(k.name);
        CHECK(text.find(leaf) != std::string::npos);
        CHECK_FALSE(k.doc.empty());
    }
}
