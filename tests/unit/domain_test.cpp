// Table-driven tests for canonical_domain / normalize_key (src/util/domain.h).
// Expected A-labels were cross-checked against Python's independent punycode codec.
#include "util/domain.h"

#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <vector>

using namespace std::string_literals;  // "..."s keeps embedded NUL bytes
using tlspolicy::canonical_domain;
using tlspolicy::Key;
using tlspolicy::KeyKind;
using tlspolicy::normalize_key;

namespace {

constexpr KeyKind D = KeyKind::Domain;
constexpr KeyKind P = KeyKind::ParentProbe;
constexpr KeyKind N = KeyKind::NextHop;
constexpr KeyKind IP = KeyKind::IpLiteral;
constexpr KeyKind X = KeyKind::Invalid;

struct Row {
    std::string raw;
    KeyKind kind;
    std::string name;  // empty for Invalid
};

std::string rep(char c, std::size_t n) {
    return std::string(n, c);
}
std::string rep(std::string_view s, std::size_t n) {
    std::string out;
    for (std::size_t i = 0; i < n; ++i)
        out += s;
    return out;
}

const std::string L63a = rep('a', 63);
const std::string L63b = rep('b', 63);
const std::string L63c = rep('c', 63);
// Three 63-character labels and their dots: 192 characters, 61 left for the last label.
const std::string P192 = L63a + "." + L63b + "." + L63c + ".";

std::vector<Row> rows() {
    return {
        // --- plain domains: case folding, trailing dot
        {"example.com", D, "example.com"},
        {"Example.COM.", D, "example.com"},
        {"MAIL.Sub.Example.ORG", D, "mail.sub.example.org"},
        {"a-b.example", D, "a-b.example"},
        {"123.example", D, "123.example"},
        {"example.a1", D, "example.a1"},
        // Reserved-LDH labels exist in real DNS (CDNs); pure ASCII ones are accepted.
        {"ab--cd.example", D, "ab--cd.example"},
        // ...and stay accepted next to a U-label (libidn2 on the whole name would refuse).
        {"ab--cd.bücher.example", D, "ab--cd.xn--bcher-kva.example"},

        // --- structure errors
        {"", X, ""},
        {".", X, ""},
        {"com", X, ""},
        {"com.", X, ""},
        {"example.com..", X, ""},
        {"a..b.example", X, ""},
        {"-a.example", X, ""},
        {"a-.example", X, ""},
        {"example.-com", X, ""},
        {"example.123", X, ""},
        {"192.0.2.300", X, ""},
        {"192.0.2", X, ""},
        {"01.2.3.4", X, ""},

        // --- characters
        {"a_b.example", X, ""},
        {"_mta-sts.example.com", X, ""},
        {"exa mple.com", X, ""},
        {" example.com", X, ""},
        {"example.com ", X, ""},
        {"example.com\n", X, ""},
        {"example.com\r\n", X, ""},
        {"exa\tmple.com", X, ""},
        {"example.com/", X, ""},
        {"exa\x7fmple.com", X, ""},
        {"example.com\0.evil.test"s, X, ""},
        {"\0example.com"s, X, ""},
        {"bücher.example\0.evil"s, X, ""},
        {"bü\0cher.example"s, X, ""},  // libidn2 alone would stop at the NUL: "bü"
        {"[bü\0cher.example]"s, X, ""},

        // --- label length: 63 ok, 64 not
        {L63a + ".example", D, L63a + ".example"},
        {rep('A', 63) + ".example", D, L63a + ".example"},
        {rep('a', 64) + ".example", X, ""},
        {"example." + rep('z', 64), X, ""},
        // --- name length: 253 ok (also with the trailing dot), 254 not
        {P192 + rep('d', 61), D, P192 + rep('d', 61)},
        {P192 + rep('d', 61) + ".", D, P192 + rep('d', 61)},
        {P192 + rep('d', 62), X, ""},
        {P192 + rep('d', 62) + ".", X, ""},
        // The limit applies to the A-label form: 247 raw bytes become exactly 253...
        {P192 + "ü" + rep('a', 53), D, P192 + "xn--" + rep('a', 53) + "-lqf"},
        // ...and 248 raw bytes become 254.
        {P192 + "ü" + rep('a', 54), X, ""},
        {rep("a.", 512), X, ""},
        {rep('a', 1025), X, ""},
        {rep("ü", 512), X, ""},

        // --- IDNA2008 / UTS #46 non-transitional
        {"Bücher.example", D, "xn--bcher-kva.example"},
        {"BÜCHER.EXAMPLE.", D, "xn--bcher-kva.example"},
        {"Bu\u0308cher.example", D, "xn--bcher-kva.example"},  // NFD: u + COMBINING DIAERESIS
        {"ÉXAMPLE.org", D, "xn--xample-9ua.org"},
        {"пример.РФ", D, "xn--e1afmkfd.xn--p1ai"},
        {"例え.jp", D, "xn--r8jz45g.jp"},
        {"faß.de", D, "xn--fa-hia.de"},            // transitional processing would give "fass.de"
        {"ｅｘａｍｐｌｅ.com", D, "example.com"},  // fullwidth letters map to ASCII
        {"bücher。example", D, "xn--bcher-kva.example"},   // U+3002 is a label separator
        {"bücher.example。", D, "xn--bcher-kva.example"},  // ...also as the trailing dot
        {"bücher．example", D, "xn--bcher-kva.example"},   // U+FF0E
        {"bücher.example..", X, ""},
        {"bücher。。example", X, ""},
        {"😀.example", X, ""},             // emoji: disallowed in IDNA2008
        {"a\u200db.example", X, ""},      // ZWJ outside its CONTEXTJ rule
        {"bücher\u202e.example", X, ""},  // RIGHT-TO-LEFT OVERRIDE
        {"a\uff3fb.example", X, ""},      // fullwidth '_' maps to non-LDH '_'
        {"a\u2488example.com", X, ""},    // U+2488 maps to "1.", which would add a label
        {"-bücher.example", X, ""},
        {"bücher-.example", X, ""},
        {"bü" + rep('a', 62) + ".example", X, ""},  // U-label whose A-label is > 63

        // --- existing A-labels
        {"xn--bcher-kva.example", D, "xn--bcher-kva.example"},
        {"XN--BCHER-KVA.Example", D, "xn--bcher-kva.example"},
        {"xn--fa-hia.de", D, "xn--fa-hia.de"},
        {"xn--zca.de", D, "xn--zca.de"},  // "ß" alone
        {"xn--abc.example", X, ""},
        {"xn--a.example", X, ""},
        {"xn--.example", X, ""},
        {"xn--a-.example", X, ""},
        {"xn--xn--a.example", X, ""},
        {"xn--ls8h.la", X, ""},  // decodes to an emoji
        {"xn--wca.de", X, ""},   // decodes to uppercase "Ü", not a valid U-label
        {"xn--ysa.de", X, ""},   // decodes to a lone combining mark

        // --- invalid UTF-8
        {"B\xfc"
         "cher.example",
         X, ""},  // Latin-1
        {"\xff.example", X, ""},
        {"\x80.example", X, ""},
        {"b\xc3.example", X, ""},             // truncated sequence
        {"\xc0\xae.example", X, ""},          // overlong '.'
        {"\xed\xa0\x80.example", X, ""},      // UTF-16 surrogate
        {"\xf4\x90\x80\x80.example", X, ""},  // above U+10FFFF
        {"b\xc3\xbc\xbc"
         "cher.example",
         X, ""},  // stray continuation byte

        // --- parent-domain probes
        {".Example.COM", P, ".example.com"},
        {".sub.example.com.", P, ".sub.example.com"},
        {".bücher.example", P, ".xn--bcher-kva.example"},
        {".com", X, ""},  // single label: the end of Postfix's walk, nothing to look up
        {"..example.com", X, ""},
        {".a_b.example", X, ""},
        {".", X, ""},
        {"..", X, ""},

        // --- bracketed next hops
        {"[Mail.Example.COM]", N, "[mail.example.com]"},
        {"[mail.example.com.]", N, "[mail.example.com]"},
        {"[mail.example.com]:587", N, "[mail.example.com]:587"},
        {"[mail.example.com]:25", N, "[mail.example.com]:25"},
        {"[mail.example.com]:1", N, "[mail.example.com]:1"},
        {"[mail.example.com]:65535", N, "[mail.example.com]:65535"},
        {"[mail.example.com]:SMTP", N, "[mail.example.com]:smtp"},
        {"[mail.example.com]:submission", N, "[mail.example.com]:submission"},
        {"[Bücher.example]:25", N, "[xn--bcher-kva.example]:25"},
        {"[mail.example.com]:", X, ""},
        {"[mail.example.com]:0", X, ""},
        {"[mail.example.com]:0587", X, ""},
        {"[mail.example.com]:65536", X, ""},
        {"[mail.example.com]:100000", X, ""},
        {"[mail.example.com]:smtp_x", X, ""},
        {"[mail.example.com]:--", X, ""},
        {"[mail.example.com]:" + rep('s', 33), X, ""},
        {"[mail.example.com]587", X, ""},
        {"[mail.example.com]]", X, ""},
        {"[mail.example.com", X, ""},
        {"[]", X, ""},
        {"[]:25", X, ""},
        {"[mail]", X, ""},
        {"[a_b.example]", X, ""},
        {"[mail.example.com\0]"s, X, ""},

        // --- host:port without brackets
        {"mail.example.com:587", N, "mail.example.com:587"},
        {"Mail.Example.COM.:Submission", N, "mail.example.com:submission"},
        {"bücher.example:25", N, "xn--bcher-kva.example:25"},
        {"mail.example.com:", X, ""},
        {":25", X, ""},
        {"mail.example.com:25:25", X, ""},
        {"mail.example.com:99999", X, ""},
        {"mail:25", X, ""},

        // --- IP literals
        {"192.0.2.1", IP, "192.0.2.1"},
        {"[192.0.2.1]", IP, "[192.0.2.1]"},
        {"[192.0.2.1]:25", IP, "[192.0.2.1]:25"},
        {"192.0.2.1:25", IP, "192.0.2.1:25"},
        {"[192.0.2.1]:0", X, ""},
        {"2001:DB8::1", IP, "2001:db8::1"},
        {"::1", IP, "::1"},
        {"::ffff:192.0.2.1", IP, "::ffff:192.0.2.1"},
        {"[IPv6:2001:DB8::1]", IP, "[ipv6:2001:db8::1]"},
        {"[ipv6:2001:db8::1]:587", IP, "[ipv6:2001:db8::1]:587"},
        {"[2001:db8::1]", IP, "[2001:db8::1]"},
        {"[IPv6:192.0.2.1]", X, ""},
        {"[IPv6:]", X, ""},
        {"[IPv6:2001:db8::g]", X, ""},
        {"[IPv6:2001:db8::1", X, ""},
        {"[192.0.2.256]", X, ""},
        {"2001:db8::1%eth0", X, ""},
        {"2001:db8:::1", X, ""},
        {"192.0.2.1\0"s, X, ""},
        {"192.0.2.1\0.example"s, X, ""},
        {"::1\0"s, X, ""},
    };
}

std::string show(std::string_view s) {
    std::string out;
    for (unsigned char c : s) {
        if (c >= 0x20 && c < 0x7f) {
            out.push_back(static_cast<char>(c));
        } else {
            static constexpr char hex[] = "0123456789abcdef";
            out += "\\x";
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 15]);
        }
    }
    return out;
}

bool printable_ascii(std::string_view s) {
    for (unsigned char c : s) {
        if (c < 0x20 || c >= 0x7f) return false;
    }
    return true;
}

}  // namespace

TEST_CASE("normalize_key: table") {
    for (const Row& row : rows()) {
        CAPTURE(show(row.raw));
        const Key key = normalize_key(row.raw);
        CHECK(tlspolicy::key_kind_name(key.kind) == tlspolicy::key_kind_name(row.kind));
        CHECK(key.name == row.name);
        if (key.kind == KeyKind::Invalid) {
            CHECK(key.name.empty());
            CHECK(!key.reason.empty());
            CHECK(printable_ascii(key.reason));
            // Reasons are logged and sent on the wire: they must never carry the input.
            if (row.raw.size() >= 5) CHECK(key.reason.find(row.raw) == std::string::npos);
        } else {
            CHECK(key.reason.empty());
        }
    }
}

TEST_CASE("normalize_key_into: one Key reused over the table gives what normalize_key gives") {
    Key reused;
    // Twice through, so that every row follows rows of other kinds.
    for (int pass = 0; pass < 2; ++pass) {
        for (const Row& row : rows()) {
            CAPTURE(show(row.raw));
            const Key fresh = normalize_key(row.raw);
            normalize_key_into(row.raw, reused);
            CHECK(reused.kind == fresh.kind);
            CHECK(reused.name == fresh.name);
            CHECK(reused.reason == fresh.reason);
        }
    }
}

TEST_CASE("normalize_key: a normalised name normalises to itself") {
    for (const Row& row : rows()) {
        if (row.kind == KeyKind::Invalid) continue;
        CAPTURE(show(row.raw));
        const Key again = normalize_key(row.name);
        CHECK(again.kind == row.kind);
        CHECK(again.name == row.name);
    }
}

TEST_CASE("canonical_domain agrees with normalize_key on domains") {
    for (const Row& row : rows()) {
        CAPTURE(show(row.raw));
        const auto result = canonical_domain(row.raw);
        if (row.kind == KeyKind::Domain) {
            REQUIRE(result.ok());
            CHECK(*result == row.name);
        } else if (row.kind == KeyKind::Invalid && !row.raw.empty() && row.raw[0] != '.' &&
                   row.raw[0] != '[' && row.raw.find(':') == std::string::npos) {
            // Invalid as a key without being a probe, next hop or literal: invalid as a name.
            REQUIRE(!result.ok());
            CHECK(!result.error().message.empty());
            if (row.raw.size() >= 5) {
                CHECK(result.error().message.find(row.raw) == std::string::npos);
            }
        }
    }
}

TEST_CASE("canonical_domain: the one-pass ASCII path agrees with the general one") {
    // Every row of the table, then names built from the characters and shapes where the
    // fast path must decline or decide: case, digits, hyphens at label ends, "xn--", empty
    // labels, trailing dots, labels of 63/64 bytes, names of 253/254 bytes.
    std::vector<std::string> names;
    for (const Row& row : rows())
        names.push_back(row.raw);
    const std::string parts[] = {"a", "Z", "0", "9", "-", ".", "xn--", "XN--", "_", "\xc3\xa9"};
    for (const auto& a : parts)
        for (const auto& b : parts)
            for (const auto& c : parts)
                for (const auto& d : parts)
                    names.push_back(a + b + c + d);
    const std::string l63(63, 'a'), l64(64, 'b');
    for (const std::string& tail : std::vector<std::string>{"", ".", ".."}) {
        names.push_back(l63 + ".example" + tail);
        names.push_back(l64 + ".example" + tail);
        names.push_back("x." + l63 + "-" + tail);
        names.push_back(l63 + "." + l63 + "." + l63 + "." + std::string(61, 'c') + tail);  // 253
        names.push_back(l63 + "." + l63 + "." + l63 + "." + std::string(62, 'c') + tail);  // 254
        names.push_back("mail.example.123" + tail);
        names.push_back("mail.123.example" + tail);
        names.push_back("xn--bcher-kva.Example" + tail);
        names.push_back("a.xn--" + tail);
    }
    std::size_t accepted = 0;
    for (const std::string& name : names) {
        CAPTURE(show(name));
        const auto fast = canonical_domain(name);
        const auto general = tlspolicy::detail::canonical_domain_general(name);
        REQUIRE(fast.ok() == general.ok());
        if (fast.ok()) {
            CHECK(*fast == *general);
            ++accepted;
        } else {
            CHECK(fast.error().message == general.error().message);
        }
    }
    CHECK(accepted > 100);  // both paths were exercised on valid names too
}

TEST_CASE("canonical_domain refuses every other kind of key") {
    for (std::string_view raw :
         {".example.com", "[mail.example.com]", "mail.example.com:25", "192.0.2.1", "::1"}) {
        CAPTURE(raw);
        CHECK(!canonical_domain(raw).ok());
    }
}

TEST_CASE("a string_view is read to its length, not to a NUL") {
    const std::string buf = "example.com.evil";
    CHECK(*canonical_domain(std::string_view(buf).substr(0, 11)) == "example.com");
    const Key key = normalize_key(std::string_view(buf.data(), 11));
    CHECK(key.kind == KeyKind::Domain);
    CHECK(key.name == "example.com");
}

TEST_CASE("key_kind_name") {
    CHECK(tlspolicy::key_kind_name(KeyKind::Domain) == "domain");
    CHECK(tlspolicy::key_kind_name(KeyKind::ParentProbe) == "parent-probe");
    CHECK(tlspolicy::key_kind_name(KeyKind::NextHop) == "next-hop");
    CHECK(tlspolicy::key_kind_name(KeyKind::IpLiteral) == "ip-literal");
    CHECK(tlspolicy::key_kind_name(KeyKind::Invalid) == "invalid");
}
