// Table-driven tests for validate_policy(): each row is a policy string, whether TLSRPT
// attributes are enabled, the expected verdict, and a substring of the expected error.
#include "core/policy_grammar.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

namespace {

using tlspolicy::PolicyGrammarOptions;
using tlspolicy::validate_policy;

struct Row {
    std::string policy;
    bool tlsrpt;
    bool ok;
    std::string error;  // substring of the error message when !ok
};

// Digests used by the fingerprint rows.
const std::string kSha256 =
    "3B:6E:0A:2D:91:5C:44:7F:08:AA:13:C9:5E:72:D0:1B:8F:66:49:E3:27:B4:0C:95:DA:51:7E:83:"
    "2F:C6:19:A0";
const std::string kSha256Plain = "3b6e0a2d915c447f08aa13c95e72d01b8f6649e327b40c95da517e832fc619a0";
const std::string kSha1 = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01";
const std::string kMd5 = "0123456789abcdef0123456789ABCDEF";
// 31 bytes: a sha256 digest with its last byte cut off.
const std::string kSha256Short = kSha256.substr(0, kSha256.size() - 3);

const char* const kNotAllowed = "is not allowed with level";
const char* const kEmptyValue = "has an empty value";
const char* const kTwice = "is specified more than once";
const char* const kBadValue = "has an invalid value";
const char* const kNeedsTlsrpt = "needs Postfix >= 3.10";
const char* const kNeedsType = "requires a policy_type attribute";

std::vector<Row> rows() {
    return {
        // --- Levels: every name from tls_level_table, case-insensitively. ---
        {"none", false, true, ""},
        {"may", false, true, ""},
        {"encrypt", false, true, ""},
        {"fingerprint", false, true, ""},  // match may come from main.cf, as in Postfix
        {"dane", false, true, ""},
        {"dane-only", false, true, ""},
        {"verify", false, true, ""},
        {"secure", false, true, ""},
        {"SECURE", false, true, ""},
        {"Dane-Only", false, true, ""},
        {"foo", false, false, "unknown TLS level \"foo\""},
        {"must", false, false, "unknown TLS level \"must\""},  // smtp_tls_per_site only
        {"MUST_NOPEERMATCH", false, false, "unknown TLS level"},
        {"half-dane", false, false, "unknown TLS level"},  // internal level, not in the table
        {"dane_only", false, false, "unknown TLS level"},
        {"{ secure }", false, false, "unknown TLS level"},
        {"", false, false, "invalid empty TLS policy"},
        {"   ", false, false, "invalid empty TLS policy"},
        {" , ,\t\r\n", false, false, "invalid empty TLS policy"},

        // --- none: Postfix ignores attributes with a warning; we refuse them. ---
        {"none ciphers=high", false, false, "level \"none\" takes no attributes"},
        {"none match=nexthop", false, false, "level \"none\" takes no attributes"},
        {"none,", false, true, ""},  // a trailing separator is not an attribute

        // --- Separators: whitespace and/or commas, including line breaks. ---
        {"secure,match=nexthop,servername=hostname", false, true, ""},
        {" , secure , match=nexthop ,, ", false, true, ""},
        {"encrypt\tprotocols=>=TLSv1.2\r\nciphers=high", false, true, ""},

        // --- ciphers: one grade name, once, not empty. ---
        {"may ciphers=high", false, true, ""},
        {"encrypt ciphers=medium", false, true, ""},
        {"encrypt ciphers=low", false, true, ""},
        {"encrypt ciphers=export", false, true, ""},
        {"encrypt ciphers=null", false, true, ""},
        {"encrypt CIPHERS=HIGH", false, true, ""},
        {"dane-only ciphers=high", false, true, ""},
        {"secure ciphers=high match=nexthop", false, true, ""},
        {"encrypt ciphers=invalid", false, false, kBadValue},  // in Postfix's table, but NONE
        {"encrypt ciphers=ALL:!aNULL", false, false, kBadValue},
        {"encrypt ciphers=", false, false, "attribute \"ciphers\" has an empty value"},
        {"encrypt ciphers=high ciphers=medium", false, false,
         "attribute \"ciphers\" is specified more than once"},

        // --- protocols: ':'-separated names, !names, >= / <= bounds. ---
        {"encrypt protocols=>=TLSv1.2", false, true, ""},
        {"encrypt protocols=>=tlsv1.2:<=TLSv1.3", false, true, ""},
        {"encrypt protocols=!SSLv2:!SSLv3", false, true, ""},
        {"encrypt protocols=TLSv1.2:TLSv1.3", false, true, ""},
        {"encrypt protocols=>=0x0303", false, true, ""},
        {"encrypt protocols=<=None", false, true, ""},
        {"encrypt protocols=TLSv1.4", false, false, "unknown protocol name"},
        {"encrypt protocols=>=TLSv9", false, false, "unknown TLS version"},
        {"encrypt protocols=>=", false, false, "unknown TLS version"},
        {"encrypt protocols=>=0x12345", false, false, "unknown TLS version"},
        {"encrypt protocols=!SSLv2::!SSLv3", false, false, "empty element"},
        {"encrypt { protocols = !SSLv2, !SSLv3 }", false, false, "unknown protocol name"},
        {"encrypt protocols=", false, false, "attribute \"protocols\" has an empty value"},
        {"encrypt protocols=>=TLSv1.2 protocols=>=TLSv1.3", false, false,
         "attribute \"protocols\" is specified more than once"},

        // --- exclude: ':'-separated cipher names without modifiers. ---
        {"encrypt exclude=aNULL:3DES:DES-CBC3-SHA", false, true, ""},
        {"encrypt exclude=!aNULL", false, false, "must not start with"},
        {"encrypt exclude=RC4::MD5", false, false, "empty element"},
        {"encrypt exclude=", false, false, "attribute \"exclude\" has an empty value"},
        {"encrypt exclude=RC4 exclude=MD5", false, false,
         "attribute \"exclude\" is specified more than once"},

        // --- servername: valid_hostname(), once. ---
        {"secure servername=hostname", false, true, ""},
        {"verify servername=nexthop", false, true, ""},
        {"may servername=mx.example.com", false, true, ""},
        {"may servername=mx_1.example.com", false, true, ""},  // Postfix allows '_'
        {"dane servername=hostname", false, true, ""},
        {"may servername=" + std::string(63, 'a') + ".example", false, true, ""},
        {"may servername=" + std::string(64, 'a') + ".example", false, false, kBadValue},
        {"may servername=-bad.example", false, false, kBadValue},
        {"may servername=bad-.example", false, false, kBadValue},
        {"may servername=example.com.", false, false, kBadValue},
        {"may servername=a..example", false, false, kBadValue},
        {"may servername=192.0.2.1", false, false, kBadValue},  // all-numeric
        {"may servername=", false, false, "attribute \"servername\" has an empty value"},
        {"may servername=a.example servername=b.example", false, false,
         "attribute \"servername\" is specified more than once"},

        // --- match on verify/secure: names, .names, strategies; repeatable. ---
        {"secure match=.example.net:mx.example.com servername=hostname", false, true, ""},
        {"verify match=hostname", false, true, ""},
        {"secure match=nexthop:dot-nexthop", false, true, ""},
        {"secure match=NextHop", false, true, ""},
        {"secure match=hostname match=.example.com", false, true, ""},
        {"secure match=*.example.com", false, false, "'*' wildcards are not supported"},
        {"secure match=a.example::b.example", false, false, "empty element"},
        {"secure match=mx.example.com:", false, false, "empty element"},
        {"secure match=..example.com", false, false, "neither a DNS name nor a match"},
        {"secure match=mx.example.com/24", false, false, "neither a DNS name nor a match"},
        {"secure match=", false, false, "attribute \"match\" has an empty value"},
        {"verify match=a b", false, false, "missing '=' after attribute name \"b\""},
        {"may match=nexthop", false, false,
         "attribute \"match\" is not allowed with level \"may\""},
        {"encrypt match=nexthop", false, false, "not allowed with level \"encrypt\""},
        {"dane match=nexthop", false, false, "not allowed with level \"dane\""},
        {"dane-only match=nexthop", false, false, "not allowed with level \"dane-only\""},

        // --- match on fingerprint: '|'-separated colon-hex digests; repeatable. ---
        {"fingerprint match=" + kSha256, false, true, ""},
        {"fingerprint match=" + kSha256Plain, false, true, ""},
        {"fingerprint match=" + kSha1 + "|" + kMd5, false, true, ""},
        {"fingerprint match=" + kSha256 + " match=" + kSha1, false, true, ""},
        {"fingerprint match=" + kSha256Short, false, false, "digest length"},
        {"fingerprint match=AB:CD:EF", false, false, "digest length"},
        {"fingerprint match=" + kSha256 + ":", false, false, "not colon-separated hex"},
        {"fingerprint match=" + kSha1.substr(0, 2) + "::" + kSha1.substr(3), false, false,
         "not colon-separated hex"},
        {"fingerprint match=ZZ" + kSha256.substr(2), false, false, "not colon-separated hex"},
        {"fingerprint match=" + kSha256 + "||" + kSha1, false, false, "empty element"},
        {"fingerprint match=nexthop", false, false, "not colon-separated hex"},
        {"fingerprint match=" + std::string(194, 'a'), false, false, "not colon-separated hex"},
        {"fingerprint match=", false, false, kEmptyValue},

        // --- tafile: PKIX levels only, absolute path, repeatable. ---
        {"secure tafile=/etc/postfix/ta.pem", false, true, ""},
        {"verify tafile=/etc/a.pem tafile=/etc/b.pem", false, true, ""},
        {"dane tafile=/etc/ta.pem", false, false, "\"tafile\" is not allowed with level \"dane\""},
        {"dane-only tafile=/etc/ta.pem", false, false, "not allowed with level \"dane-only\""},
        {"fingerprint tafile=/etc/ta.pem", false, false, "not allowed with level \"fingerprint\""},
        {"encrypt tafile=/etc/ta.pem", false, false, kNotAllowed},
        {"may tafile=/etc/ta.pem", false, false, kNotAllowed},
        {"secure tafile=ta.pem", false, false, "must be an absolute path"},
        {"secure tafile=", false, false, "attribute \"tafile\" has an empty value"},

        // --- connection_reuse / enable_rpk: yes|no, last one wins. ---
        {"may connection_reuse=yes", false, true, ""},
        {"secure connection_reuse=NO", false, true, ""},
        {"may connection_reuse=yes connection_reuse=no", false, true, ""},
        {"may connection_reuse=maybe", false, false, "expected yes or no"},
        {"may connection_reuse=", false, false, kEmptyValue},
        {"fingerprint enable_rpk=yes match=" + kSha256, false, true, ""},
        {"may enable_rpk=no enable_rpk=yes", false, true, ""},
        {"secure enable_rpk=yes", false, true, ""},  // accepted, ignored by Postfix there
        {"encrypt enable_rpk=true", false, false, "expected yes or no"},
        {"encrypt enable_rpk=", false, false, kEmptyValue},

        // --- Unknown or malformed attributes. ---
        {"secure foo=bar", false, false, "unknown TLS policy attribute \"foo\""},
        {"secure sni=mx.example.com", false, false, "unknown TLS policy attribute \"sni\""},
        {"secure =nexthop", false, false, "missing attribute name"},
        {"secure nexthop", false, false, "missing '=' after attribute name \"nexthop\""},

        // --- Brace groups: one token, whitespace normalised, must balance. ---
        {"secure {match=nexthop}", false, true, ""},
        {"secure { match = nexthop }", false, true, ""},
        {"secure {\n\tmatch\n=\r\nnexthop\n}", false, true, ""},
        {"secure { ciphers = high }, { servername = hostname }", false, true, ""},
        {"secure { ciphers = }", false, false, "attribute \"ciphers\" has an empty value"},
        {"secure { match = nexthop", false, false, "unbalanced '{'"},
        {"secure match=nexthop}", false, false, "unbalanced '}'"},
        {"secure } match=nexthop", false, false, "unbalanced '}'"},
        {"secure { match = nexthop }x", false, false, "text after '}'"},
        {"secure {match=nexthop}{servername=hostname}", false, false, "text after '}'"},
        {"secure match={nexthop}", false, false, "must start a \"{ name = value }\" group"},
        {"secure { }", false, false, "missing attribute name"},
        {"secure { match nexthop }", false, false, "missing '=' after attribute name"},
        {"secure { match = {nested} }", false, false, kBadValue},

        // --- TLSRPT attributes are refused unless options.tlsrpt (Postfix <= 3.9). ---
        {"secure policy_type=sts", false, false, "attribute \"policy_type\" needs Postfix >= 3.10"},
        {"secure policy_domain=example.com", false, false, kNeedsTlsrpt},
        {"secure mx_host_pattern=*.example.com", false, false, kNeedsTlsrpt},
        {"secure { policy_string = mode: enforce }", false, false,
         "attribute \"policy_string\" needs Postfix >= 3.10"},
        {"secure policy_failure=sts-policy-invalid", false, false, kNeedsTlsrpt},
        {"secure policy_ttl=86400", false, false, kNeedsTlsrpt},

        // --- TLSRPT with options.tlsrpt: everything else needs policy_type. ---
        {"secure match=.example.net servername=hostname policy_type=sts "
         "policy_domain=example.net mx_host_pattern=*.example.net "
         "mx_host_pattern=mx1.example.net { policy_string = version: STSv1 } "
         "{ policy_string = mode: enforce } { policy_string = mx: *.example.net } "
         "{ policy_string = max_age: 86400 }",
         true, true, ""},
        {"secure policy_domain=example.com policy_type=sts", true, true, ""},  // order-free
        {"may policy_type=no-policy-found policy_domain=example.com", true, true, ""},
        {"secure policy_type=STS", true, true, ""},
        {"secure policy_type=sts {\n policy_string =\n  mode:   enforce \n}", true, true, ""},
        {"secure match=nexthop policy_domain=example.com", true, false,
         "attribute \"policy_domain\" requires a policy_type attribute"},
        {"secure { policy_string = mode: enforce }", true, false,
         "attribute \"policy_string\" requires a policy_type attribute"},
        {"secure mx_host_pattern=mx.example.com", true, false, kNeedsType},
        {"secure policy_failure=sts-policy-invalid", true, false, kNeedsType},
        {"secure policy_ttl=300", true, false, kNeedsType},
        {"secure policy_type=tlsa", true, false, "expected sts or no-policy-found"},
        {"secure policy_type=", true, false, kEmptyValue},
        {"secure policy_type=sts policy_type=sts", true, false,
         "attribute \"policy_type\" is specified more than once"},
        {"secure policy_type=sts policy_domain=bad..example", true, false, kBadValue},
        {"secure policy_type=sts policy_domain=a.example policy_domain=b.example", true, false,
         kTwice},
        {"secure policy_type=sts policy_failure=sts-policy-fetch-error", true, true, ""},
        {"secure policy_type=sts policy_failure=sts-webpki-invalid", true, true, ""},
        {"secure policy_type=sts policy_failure=validation-failure", true, true, ""},
        {"secure policy_type=sts policy_failure=certificate-expired", true, false,
         "not a TLSRPT policy failure code"},
        {"secure policy_type=sts policy_failure=sts-policy-invalid "
         "policy_failure=sts-policy-invalid",
         true, false, "attribute \"policy_failure\" is specified more than once"},
        {"secure policy_type=sts policy_ttl=86400", true, true, ""},
        {"secure policy_type=sts policy_ttl=2147483647", true, true, ""},
        {"secure policy_type=sts policy_ttl=2147483648", true, false, "number too large"},
        {"secure policy_type=sts policy_ttl=-1", true, false, "not a decimal number"},
        {"secure policy_type=sts policy_ttl=1h", true, false, "not a decimal number"},
        {"secure policy_type=sts policy_ttl=1 policy_ttl=2", true, false, kTwice},
        {"secure policy_type=sts mx_host_pattern=*example.net", true, false, kBadValue},
        {"secure policy_type=sts mx_host_pattern=mx.*.example.net", true, false, kBadValue},
        {"secure policy_type=sts { policy_string = }", true, false,
         "attribute \"policy_string\" has an empty value"},
        {"secure policy_type=sts policy_string={mode: enforce}", true, false,
         "must start a \"{ name = value }\" group"},
        {"none policy_type=sts", true, false, "level \"none\" takes no attributes"},

        // --- Bytes that never belong in a policy. ---
        {std::string("secure\x01"), false, false, "control or non-ASCII byte"},
        {"secure match=ex\xc3\xa4mple.com", false, false, "control or non-ASCII byte"},
        {std::string("secure\0match=nexthop", 20), false, false, "control or non-ASCII byte"},

        // --- Typical real-world policies. ---
        {"dane-only", false, true, ""},
        {"encrypt protocols=>=TLSv1.2 ciphers=high", false, true, ""},
        {"fingerprint match=" + kSha256 + "|" + kSha1, false, true, ""},
        {"secure match=nexthop:dot-nexthop ciphers=high protocols=!SSLv2:!SSLv3:!TLSv1:!TLSv1.1 "
         "tafile=/etc/postfix/ca.pem",
         false, true, ""},
        {"verify match=hostname:.example.org servername=hostname connection_reuse=yes", false, true,
         ""},
    };
}

}  // namespace

TEST_CASE("validate_policy: grammar table") {
    for (const Row& row : rows()) {
        CAPTURE(row.policy);
        CAPTURE(row.tlsrpt);
        PolicyGrammarOptions options;
        options.tlsrpt = row.tlsrpt;
        const tlspolicy::Status status = validate_policy(row.policy, options);
        CHECK(status.ok() == row.ok);
        if (!row.ok && !status.ok()) {
            CAPTURE(status.error().message);
            CHECK(status.error().message.find(row.error) != std::string::npos);
        }
    }
}

TEST_CASE("validate_policy: default options refuse TLSRPT attributes") {
    CHECK_FALSE(validate_policy("secure policy_type=sts").ok());
    CHECK(validate_policy("secure match=nexthop").ok());
}

TEST_CASE("validate_policy: error messages never echo values and cap quoted text") {
    SUBCASE("value is not echoed") {
        const std::string hostile = "SECRET" + std::string(200, 'x');
        for (const std::string& policy :
             {"may servername=-" + hostile, "secure match=*" + hostile,
              "encrypt ciphers=" + hostile, "fingerprint match=" + hostile}) {
            CAPTURE(policy);
            const auto status = validate_policy(policy);
            REQUIRE_FALSE(status.ok());
            CHECK(status.error().message.find("SECRET") == std::string::npos);
        }
    }
    SUBCASE("long level and attribute names are truncated to 32 characters") {
        const std::string level(100, 'L');
        auto status = validate_policy(level);
        REQUIRE_FALSE(status.ok());
        CHECK(status.error().message.find("\"" + std::string(32, 'L') + "...\"") !=
              std::string::npos);
        CHECK(status.error().message.find(std::string(33, 'L')) == std::string::npos);

        status = validate_policy("secure " + std::string(100, 'a') + "=1");
        REQUIRE_FALSE(status.ok());
        CHECK(status.error().message.find(std::string(33, 'a')) == std::string::npos);
    }
    SUBCASE("quote characters in user text are replaced") {
        const auto status = validate_policy("se\"cure");
        REQUIRE_FALSE(status.ok());
        CHECK(status.error().message == "unknown TLS level \"se?cure\"");
    }
}
