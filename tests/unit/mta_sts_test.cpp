// Table-driven tests for the MTA-STS parsers and renderers (src/core/mta_sts.h, RFC 8461 §3.1,
// §3.2, §4.1; the MTA-STS half of the decision table in architecture.md §1). Every policy string
// a test produces is also run through validate_policy() to show that Postfix would accept it.
#include "core/mta_sts.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/policy_grammar.h"
#include "got_want.h"

using namespace tlspolicy;

// shown() for this file's enums, where testutil::got_want() finds them.
namespace tlspolicy {
std::string shown(StsMode v) {
    return std::string(sts_mode_name(v));
}
std::string shown(StsVerdict v) {
    switch (v) {
        case StsVerdict::Enforce:
            return "Enforce";
        case StsVerdict::Encrypt:
            return "Encrypt";
        case StsVerdict::NotFound:
            return "NotFound";
    }
    return "?";
}
}  // namespace tlspolicy
using namespace std::string_literals;  // "..."s keeps embedded NUL bytes

namespace {

using testutil::got_want;
using testutil::printable_ascii;
using testutil::shown;

// Joins policy lines with `eol` after each one.
std::string body(const std::vector<std::string>& lines, const std::string& eol = "\n") {
    std::string out;
    for (const std::string& line : lines)
        out += line + eol;
    return out;
}

const std::string kVersion = "version: STSv1";
const std::string kEnforce = "mode: enforce";
const std::string kMx = "mx: mail.example.com";
const std::string kAge = "max_age: 86400";

// The rendered policy, checked against Postfix's grammar on the way.
std::string render(const std::string& domain, const StsPolicy& policy, std::string_view body,
                   const PolicySettings& settings) {
    const std::string out = sts_enforce_policy(domain, policy, body, settings);
    PolicyGrammarOptions options;
    options.tlsrpt = settings.tlsrpt;
    const Status status = validate_policy(out, options);
    INFO("policy: ", out);
    INFO("grammar: ", status.ok() ? std::string("ok") : status.error().message);
    CHECK(status.ok());
    return out;
}

std::vector<PolicySettings> all_settings() {
    std::vector<PolicySettings> out;
    for (StsLevel level : {StsLevel::Verify, StsLevel::Secure}) {
        for (bool tlsrpt : {false, true}) {
            for (bool servername : {false, true}) {
                PolicySettings s;
                s.sts_level = level;
                s.tlsrpt = tlsrpt;
                s.servername = servername;
                out.push_back(s);
            }
        }
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// TXT records, §3.1

struct TxtRow {
    std::string name;
    std::vector<std::string> records;
    std::string code;  // "" = found
    std::string id;    // when found
};

std::vector<TxtRow> txt_rows() {
    const std::string id32(32, 'a');
    const std::string id33(33, 'a');
    return {
        // --- Accepted forms ---
        {"minimal", {"v=STSv1; id=20160831085700Z;"}, "", "20160831085700Z"},
        {"no trailing ;", {"v=STSv1; id=abc"}, "", "abc"},
        {"no blanks", {"v=STSv1;id=abc;"}, "", "abc"},
        {"multi-string record joined without spaces",
         {"v=STSv1; id=2016"
          "0831"},
         "",
         "20160831"},
        {"WSP around ;", {"v=STSv1 ;\tid=abc\t; x=y"}, "", "abc"},
        {"tabs and spaces before ;", {"v=STSv1 \t ; id=abc"}, "", "abc"},
        {"trailing WSP after final ;", {"v=STSv1; id=abc; "}, "", "abc"},
        {"extension fields ignored", {"v=STSv1; ext=val; id=abc; a.b-c_d=!\"#:<>~"}, "", "abc"},
        {"extension name of 32 chars",
         {"v=STSv1; id=abc; " + std::string(32, 'x') + "=1"},
         "",
         "abc"},
        {"extension named ID is not the id", {"v=STSv1; ID=zz; id=abc"}, "", "abc"},
        {"id of 32 chars", {"v=STSv1; id=" + id32}, "", id32},
        {"id of 1 char", {"v=STSv1; id=Z"}, "", "Z"},
        {"unrelated records mixed in",
         {"v=spf1 -all", "v=STSv10; id=ignored", "v=stsv1; id=ignored", "google-site=x",
          "v=STSv1; id=abc", ""},
         "",
         "abc"},
        {"exactly 32 records",
         [] {
             std::vector<std::string> r(31, "unrelated");
             r.push_back("v=STSv1; id=last");
             return r;
         }(),
         "", "last"},

        // --- no_sts_record ---
        {"no records", {}, "no_sts_record", ""},
        {"only unrelated", {"v=spf1 -all", "hello"}, "no_sts_record", ""},
        {"v=STSv10 discarded", {"v=STSv10; id=abc"}, "no_sts_record", ""},
        {"lowercase v=stsv1 discarded", {"v=stsv1; id=abc"}, "no_sts_record", ""},
        {"V=STSv1 discarded", {"V=STSv1; id=abc"}, "no_sts_record", ""},
        {"leading blank discarded", {" v=STSv1; id=abc"}, "no_sts_record", ""},
        {"v=STSv1x discarded", {"v=STSv1x; id=abc"}, "no_sts_record", ""},
        {"v=STSv1, discarded", {"v=STSv1,id=abc"}, "no_sts_record", ""},

        // --- multi_sts_records ---
        {"two valid", {"v=STSv1; id=a", "v=STSv1; id=b"}, "multi_sts_records", ""},
        {"two identical", {"v=STSv1; id=a", "v=STSv1; id=a"}, "multi_sts_records", ""},
        {"one valid, one without ; discarded", {"v=STSv1; id=a", "v=STSv1 broken"}, "", "a"},
        {"bare v=STSv1 discarded", {"v=STSv1", "v=STSv1; id=a"}, "", "a"},
        {"two valid, one with blanks before ;",
         {"v=STSv1 ; id=a", "v=STSv1; id=b"},
         "multi_sts_records",
         ""},
        {"one STS record after 40 others",
         [] {
             std::vector<std::string> r(40, "unrelated");
             r.push_back("v=STSv1; id=last");
             return r;
         }(),
         "", "last"},

        // --- invalid_sts_record ---
        {"no ; after version: discarded", {"v=STSv1 id=abc"}, "no_sts_record", ""},
        {"empty field", {"v=STSv1;; id=abc"}, "invalid_sts_record", ""},
        {"field without =", {"v=STSv1; id=abc; flag"}, "invalid_sts_record", ""},
        {"empty extension value", {"v=STSv1; id=abc; x="}, "invalid_sts_record", ""},
        {"extension value with =", {"v=STSv1; id=abc; x=a=b"}, "invalid_sts_record", ""},
        {"extension value non-ASCII", {"v=STSv1; id=abc; x=\xc3\xa9"}, "invalid_sts_record", ""},
        {"extension value control", {"v=STSv1; id=abc; x=a\x01"}, "invalid_sts_record", ""},
        {"extension name starts with _", {"v=STSv1; id=abc; _x=1"}, "invalid_sts_record", ""},
        {"extension name of 33 chars",
         {"v=STSv1; id=abc; " + std::string(33, 'x') + "=1"},
         "invalid_sts_record",
         ""},
        {"empty extension name", {"v=STSv1; id=abc; =1"}, "invalid_sts_record", ""},
        {"two fields without ;", {"v=STSv1; id=abc x=y"}, "invalid_sts_record", ""},

        // --- invalid_sts_id ---
        {"bare v=STSv1: discarded", {"v=STSv1"}, "no_sts_record", ""},
        {"v=STSv1;", {"v=STSv1;"}, "invalid_sts_id", ""},
        {"id missing", {"v=STSv1; x=y;"}, "invalid_sts_id", ""},
        {"id of 33 chars", {"v=STSv1; id=" + id33}, "invalid_sts_id", ""},
        {"empty id", {"v=STSv1; id=;"}, "invalid_sts_id", ""},
        {"non-alnum id", {"v=STSv1; id=2016-08-31"}, "invalid_sts_id", ""},
        {"id with underscore", {"v=STSv1; id=a_b"}, "invalid_sts_id", ""},
        {"id with =", {"v=STSv1; id=a=b"}, "invalid_sts_id", ""},
        {"repeated id: the first is used", {"v=STSv1; id=abc; id=abc"}, "", "abc"},
        {"repeated id, different: the first is used", {"v=STSv1; id=abc; id=def"}, "", "abc"},
        {"repeated id, the second malformed: an extension field",
         {"v=STSv1; id=abc; id=-x"},
         "",
         "abc"},
        {"repeated id, the second not a field value",
         {"v=STSv1; id=abc; id="},
         "invalid_sts_record",
         ""},
    };
}

}  // namespace

TEST_CASE("mta_sts: parse_sts_txt table") {
    for (const TxtRow& row : txt_rows()) {
        CAPTURE(row.name);
        const StsTxt got = parse_sts_txt(row.records);
        const bool want_found = row.code.empty();
        CHECK_EQ_GW("found", got.found, want_found);
        CHECK_EQ_GW("code", got.code, row.code);
        CHECK_EQ_GW("id", got.id, row.id);
        if (want_found) {
            CHECK_EQ_GW("reason", got.reason, std::string());
        } else {
            INFO("reason: ", got.reason);
            CHECK(!got.reason.empty());
            CHECK(printable_ascii(got.reason));
        }
    }
}

TEST_CASE("mta_sts: parse_sts_txt reasons") {
    struct Row {
        std::vector<std::string> records;
        std::string reason;
    };
    const std::vector<Row> rows = {
        {{"v=STSv1; id=a", "v=STSv1; id=b"}, "2 v=STSv1 records"},
        {{"x", "y", "z"}, "no v=STSv1 record among 3 TXT records"},
        {{"v=STSv1; id=a-b"}, "id must be 1-32 letters or digits"},
        {{"v=STSv1"}, "no v=STSv1 record among 1 TXT records"},
        {{"v=STSv1; x=y"}, "id missing"},
        {{"v=STSv1; id=a; flag"}, "field 3 is not name=value"},
        {{"v=STSv1; id=a;; x=y"}, "field 3 is empty"},
    };
    for (const Row& row : rows) {
        CAPTURE(shown(row.records));
        CHECK_EQ_GW("reason", parse_sts_txt(row.records).reason, row.reason);
    }
}

TEST_CASE("mta_sts: TXT reasons never echo the record") {
    const std::string secret = "SECRET";
    const std::vector<std::vector<std::string>> rows = {
        {"v=STSv1; id=" + secret + "-1"},
        {"v=STSv1; id=" + secret + std::string(40, 'x')},
        {"v=STSv1; id=a; " + secret + "=\x01"},
        {"v=STSv1; id=a; _" + secret + "=1"},
        {"v=STSv1; id=a " + secret},
        {"v=STSv1; id=a; " + secret},
        {"v=STSv1; " + secret + "=1"},
        {"v=STSv1; id=a", "v=STSv1; id=" + secret},
        {secret},
    };
    for (const auto& records : rows) {
        CAPTURE(shown(records));
        const StsTxt got = parse_sts_txt(records);
        REQUIRE_FALSE(got.found);
        INFO("reason: ", got.reason);
        CHECK(got.reason.find(secret) == std::string::npos);
        CHECK(printable_ascii(got.reason));
    }
}

// ---------------------------------------------------------------------------------------------
// Policy bodies, §3.2

namespace {

struct PolicyRow {
    std::string name;
    std::string body;
    std::string code;  // "" = ok
    StsMode mode = StsMode::Enforce;
    int64_t max_age = 86400;
    std::vector<std::string> mx = {"mail.example.com"};
};

std::vector<std::string> numbered_mx(std::size_t n) {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < n; ++i)
        out.push_back("mx" + std::to_string(i) + ".example.com");
    return out;
}

std::string numbered_mx_body(std::size_t n) {
    std::vector<std::string> lines = {kVersion, kEnforce, kAge};
    for (const std::string& mx : numbered_mx(n))
        lines.push_back("mx: " + mx);
    return body(lines);
}

// A valid body padded with an unknown key to exactly `size` bytes.
std::string padded_body(std::size_t size) {
    std::string b = body({kVersion, kEnforce, kMx, kAge});
    const std::string prefix = "pad: ";
    b += prefix;
    b += std::string(size - b.size(), 'p');
    return b;
}

const StsMode E = StsMode::Enforce;
const StsMode T = StsMode::Testing;
const StsMode N = StsMode::None;

std::vector<PolicyRow> policy_rows() {
    const std::string mx64 = numbered_mx_body(64);
    return {
        // --- Accepted forms ---
        {"LF", body({kVersion, kEnforce, kMx, kAge}), ""},
        {"CRLF", body({kVersion, kEnforce, kMx, kAge}, "\r\n"), ""},
        {"mixed CRLF and LF", kVersion + "\r\n" + kEnforce + "\n" + kMx + "\r\n" + kAge + "\n", ""},
        {"no final newline", kVersion + "\n" + kEnforce + "\n" + kMx + "\n" + kAge, ""},
        {"no final newline after CRLF lines",
         kVersion + "\r\n" + kEnforce + "\r\n" + kMx + "\r\n" + kAge, ""},
        {"fields in any order", body({kAge, kMx, kEnforce, kVersion}), ""},
        {"no blank after colon",
         body({"version:STSv1", "mode:enforce", "mx:mail.example.com", "max_age:86400"}), ""},
        {"blanks after colon and trailing",
         body({"version: \t STSv1 \t", "mode:\tenforce ", "mx:  mail.example.com\t",
               "max_age: 86400  "}),
         ""},
        {"blank lines skipped", "\n\r\n" + body({kVersion, "", kEnforce, "  \t", kMx, kAge, ""}),
         ""},
        {"unknown keys ignored", body({kVersion, "foo: bar", kEnforce, "x-y.z_1: 2", kMx, kAge}),
         ""},
        {"Mode is an unknown key", body({kVersion, "Mode: none", kEnforce, kMx, kAge}), ""},
        {"lines without colon ignored", body({kVersion, "just text", kEnforce, kMx, kAge}), ""},
        {"invalid keys ignored",
         body({kVersion, " mode: none", "_mode: none", ": x", kEnforce, kMx, kAge}), ""},
        {"non-ASCII in an unknown value",
         body({kVersion, "note: caf\xc3\xa9", kEnforce, kMx, kAge}), ""},
        {"repeated mode: first wins", body({kVersion, "mode: testing", kEnforce, kMx, kAge}), "",
         T},
        {"repeated version: first wins", body({kVersion, "version: STSv2", kEnforce, kMx, kAge}),
         ""},
        {"repeated max_age: first wins", body({kVersion, kEnforce, kMx, "max_age: 60", kAge}), "",
         E, 60},
        {"max_age 0", body({kVersion, kEnforce, kMx, "max_age: 0"}), "", E, 0},
        {"max_age leading zeros", body({kVersion, kEnforce, kMx, "max_age: 0000000060"}), "", E,
         60},
        {"max_age at the cap", body({kVersion, kEnforce, kMx, "max_age: 31557600"}), "", E,
         31557600},
        {"max_age one above the cap", body({kVersion, kEnforce, kMx, "max_age: 31557601"}), "", E,
         kMaxStsMaxAge},
        {"max_age 9999999999 capped", body({kVersion, kEnforce, kMx, "max_age: 9999999999"}), "", E,
         kMaxStsMaxAge},
        {"mode none without mx", body({kVersion, "mode: none", kAge}), "", N, 86400, {}},
        {"mode none with mx", body({kVersion, "mode: none", kMx, kAge}), "", N},
        {"mode testing", body({kVersion, "mode: testing", kMx, kAge}), "", T},
        {"mx kept verbatim, duplicates kept",
         body({kVersion, kEnforce, "mx: Mail.Example.COM", "mx: *.example.net",
               "mx: mail.example.com", "mx: mail.example.com", kAge}),
         "",
         E,
         86400,
         {"Mail.Example.COM", "*.example.net", "mail.example.com", "mail.example.com"}},
        {"single-label mx",
         body({kVersion, kEnforce, "mx: localhost", kAge}),
         "",
         E,
         86400,
         {"localhost"}},
        {"A-label mx",
         body({kVersion, kEnforce, "mx: xn--bcher-kva.example", kAge}),
         "",
         E,
         86400,
         {"xn--bcher-kva.example"}},
        {"64 mx lines", mx64, "", E, 86400, numbered_mx(64)},
        {"300 mx lines: no limit but the body's", numbered_mx_body(300), "", E, 86400,
         numbered_mx(300)},
        {"body of exactly kMaxStsBody bytes", padded_body(kMaxStsBody), ""},

        // --- invalid_sts_version ---
        {"empty body", "", "invalid_sts_version"},
        {"version missing", body({kEnforce, kMx, kAge}), "invalid_sts_version"},
        {"version STSv2", body({"version: STSv2", kEnforce, kMx, kAge}), "invalid_sts_version"},
        {"version stsv1", body({"version: stsv1", kEnforce, kMx, kAge}), "invalid_sts_version"},
        {"Version is unknown key", body({"Version: STSv1", kEnforce, kMx, kAge}),
         "invalid_sts_version"},
        {"version empty", body({"version:", kEnforce, kMx, kAge}), "invalid_sts_version"},
        {"version with suffix", body({"version: STSv1 x", kEnforce, kMx, kAge}),
         "invalid_sts_version"},
        {"repeated version, bad first", body({"version: STSv2", kVersion, kEnforce, kMx, kAge}),
         "invalid_sts_version"},
        {"only garbage", "hello world\n", "invalid_sts_version"},

        // --- invalid_sts_mode ---
        {"mode missing", body({kVersion, kMx, kAge}), "invalid_sts_mode"},
        {"mode Enforce", body({kVersion, "mode: Enforce", kMx, kAge}), "invalid_sts_mode"},
        {"mode enforced", body({kVersion, "mode: enforced", kMx, kAge}), "invalid_sts_mode"},
        {"mode empty", body({kVersion, "mode:", kMx, kAge}), "invalid_sts_mode"},
        {"only Mode (unknown key)", body({kVersion, "Mode: enforce", kMx, kAge}),
         "invalid_sts_mode"},
        {"repeated mode, bad first", body({kVersion, "mode: strict", kEnforce, kMx, kAge}),
         "invalid_sts_mode"},

        // --- invalid_sts_max_age ---
        {"max_age missing", body({kVersion, kEnforce, kMx}), "invalid_sts_max_age"},
        {"max_age empty", body({kVersion, kEnforce, kMx, "max_age:"}), "invalid_sts_max_age"},
        {"max_age blanks only", body({kVersion, kEnforce, kMx, "max_age:  \t"}),
         "invalid_sts_max_age"},
        {"max_age -1", body({kVersion, kEnforce, kMx, "max_age: -1"}), "invalid_sts_max_age"},
        {"max_age +5", body({kVersion, kEnforce, kMx, "max_age: +5"}), "invalid_sts_max_age"},
        {"max_age 1e5", body({kVersion, kEnforce, kMx, "max_age: 1e5"}), "invalid_sts_max_age"},
        {"max_age 86 400", body({kVersion, kEnforce, kMx, "max_age: 86 400"}),
         "invalid_sts_max_age"},
        {"max_age 11 digits", body({kVersion, kEnforce, kMx, "max_age: 12345678901"}),
         "invalid_sts_max_age"},
        {"max_age 11 digits, leading zero", body({kVersion, kEnforce, kMx, "max_age: 00000000001"}),
         "invalid_sts_max_age"},
        {"Max_age is an unknown key", body({kVersion, kEnforce, kMx, "Max_age: 60"}),
         "invalid_sts_max_age"},
        {"repeated max_age, bad first", body({kVersion, kEnforce, kMx, "max_age: x", kAge}),
         "invalid_sts_max_age"},

        // --- invalid_sts_mx ---
        {"enforce without mx", body({kVersion, kEnforce, kAge}), "invalid_sts_mx"},
        {"testing without mx", body({kVersion, "mode: testing", kAge}), "invalid_sts_mx"},
        {"MX is an unknown key", body({kVersion, kEnforce, "MX: mail.example.com", kAge}),
         "invalid_sts_mx"},
        {"IPv4 literal", body({kVersion, kEnforce, "mx: 192.0.2.1", kAge}), "invalid_sts_mx"},
        {"bracketed IPv4", body({kVersion, kEnforce, "mx: [192.0.2.1]", kAge}), "invalid_sts_mx"},
        {"IPv6 literal", body({kVersion, kEnforce, "mx: 2001:db8::1", kAge}), "invalid_sts_mx"},
        {"*. alone", body({kVersion, kEnforce, "mx: *.", kAge}), "invalid_sts_mx"},
        {"* alone", body({kVersion, kEnforce, "mx: *", kAge}), "invalid_sts_mx"},
        {"inner wildcard", body({kVersion, kEnforce, "mx: a.*.b", kAge}), "invalid_sts_mx"},
        {"wildcard without dot", body({kVersion, kEnforce, "mx: *example.com", kAge}),
         "invalid_sts_mx"},
        {"trailing dot", body({kVersion, kEnforce, "mx: mail.example.com.", kAge}),
         "invalid_sts_mx"},
        {"empty label", body({kVersion, kEnforce, "mx: mail..example.com", kAge}),
         "invalid_sts_mx"},
        {"empty mx", body({kVersion, kEnforce, "mx:", kAge}), "invalid_sts_mx"},
        {"underscore", body({kVersion, kEnforce, "mx: mail_1.example.com", kAge}),
         "invalid_sts_mx"},
        {"non-ASCII", body({kVersion, kEnforce, "mx: m\xc3\xa4il.example.com", kAge}),
         "invalid_sts_mx"},
        {"blank inside", body({kVersion, kEnforce, "mx: mail.example.com extra", kAge}),
         "invalid_sts_mx"},
        {"one bad among good", body({kVersion, kEnforce, kMx, "mx: 10.0.0.1", kAge}),
         "invalid_sts_mx"},
        {"mode none with a bad mx", body({kVersion, "mode: none", "mx: *.", kAge}),
         "invalid_sts_mx"},

        // --- invalid_sts_body ---
        {"NUL byte", kVersion + "\n" + kEnforce + "\n" + kMx + "\n" + kAge + "\n\0"s,
         "invalid_sts_body"},
        {"NUL inside a value", body({kVersion, kEnforce, "mx: mail\0.example.com"s, kAge}),
         "invalid_sts_body"},
        {"ESC", body({kVersion, kEnforce, kMx, kAge, "x: \x1b[0m"}), "invalid_sts_body"},
        {"vertical tab", body({kVersion, kEnforce, kMx, kAge, "x:\v1"}), "invalid_sts_body"},
        {"DEL", body({kVersion, kEnforce, kMx, kAge, "x: \x7f"}), "invalid_sts_body"},
        {"oversize body", padded_body(kMaxStsBody + 1), "invalid_sts_body"},
    };
}

}  // namespace

TEST_CASE("mta_sts: parse_sts_policy table") {
    for (const PolicyRow& row : policy_rows()) {
        CAPTURE(row.name);
        const StsParse got = parse_sts_policy(row.body);
        const bool want_ok = row.code.empty();
        CHECK_EQ_GW("ok", got.ok, want_ok);
        if (want_ok && got.ok) {
            CHECK_EQ_GW("mode", got.policy.mode, row.mode);
            CHECK_EQ_GW("max_age", got.policy.max_age, row.max_age);
            CHECK_EQ_GW("mx", got.policy.mx, row.mx);
            CHECK_EQ_GW("error.code", got.error.code, std::string());
        } else if (!want_ok && !got.ok) {
            CHECK_EQ_GW("code", got.error.code, row.code);
            INFO("reason: ", got.error.reason);
            CHECK(!got.error.reason.empty());
            CHECK(printable_ascii(got.error.reason));
        }
    }
}

TEST_CASE("mta_sts: parse_sts_policy lines keep every non-empty line in order") {
    struct Row {
        std::string body;
        std::vector<std::string> lines;
    };
    const std::vector<Row> rows = {
        {"version: STSv1\r\nmode: testing\r\nmx: a.example\r\nmax_age: 60\r\n",
         {"version: STSv1", "mode: testing", "mx: a.example", "max_age: 60"}},
        {"\nversion: STSv1\n\nfoo: bar\n  \nmode:\tnone \nMode: x\nno colon\nmax_age: 1",
         {"version: STSv1", "foo: bar", "mode:\tnone ", "Mode: x", "no colon", "max_age: 1"}},
        {"version: STSv1\nmode: none\nmax_age: 1\nmode: enforce\r\r\n",
         {"version: STSv1", "mode: none", "max_age: 1", "mode: enforce\r"}},
    };
    for (const Row& row : rows) {
        CAPTURE(row.body);
        const StsParse got = parse_sts_policy(row.body);
        REQUIRE(got.ok);
        const auto lines = sts_policy_lines(row.body);
        CHECK_EQ_GW("lines", std::vector<std::string>(lines.begin(), lines.end()), row.lines);
    }
}

TEST_CASE("mta_sts: policy reasons never echo the body") {
    const std::string secret = "SECRET";
    const std::vector<std::string> bodies = {
        body({"version: " + secret, kEnforce, kMx, kAge}),
        body({kVersion, "mode: " + secret, kMx, kAge}),
        body({kVersion, kEnforce, kMx, "max_age: " + secret}),
        body({kVersion, kEnforce, "mx: [" + secret + "]", kAge}),
        body({kVersion, kEnforce, kMx, kAge, secret + "\x01"}),
    };
    for (const std::string& b : bodies) {
        CAPTURE(b);
        const StsParse got = parse_sts_policy(b);
        REQUIRE_FALSE(got.ok);
        INFO("reason: ", got.error.reason);
        CHECK(got.error.reason.find(secret) == std::string::npos);
        CHECK(printable_ascii(got.error.reason));
    }
    const StsParse nul = parse_sts_policy("version: STSv1\n\0"s);
    CHECK_EQ_GW("reason", nul.error.reason, std::string("control byte 0x00 at offset 15"));
}

TEST_CASE("mta_sts: every accepted policy renders to a string Postfix accepts") {
    for (const PolicyRow& row : policy_rows()) {
        if (!row.code.empty() || row.mode == StsMode::None) continue;
        CAPTURE(row.name);
        const StsParse got = parse_sts_policy(row.body);
        REQUIRE(got.ok);
        for (const PolicySettings& settings : all_settings()) {
            CAPTURE(settings.tlsrpt);
            CAPTURE(settings.servername);
            const std::string out = render("example.com", got.policy, row.body, settings);
            const std::string level = settings.sts_level == StsLevel::Secure ? "secure" : "verify";
            CHECK(out.starts_with(level + " match="));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MX patterns, §4.1

TEST_CASE("mta_sts: valid_sts_mx_pattern table") {
    struct Row {
        std::string pattern;
        bool want;
    };
    const std::string label63(63, 'a');
    const std::string label64(64, 'a');
    // 253 characters: 3 labels of 63, 1 of 61, joined by dots.
    const std::string name253 =
        label63 + "." + label63 + "." + label63 + "." + std::string(61, 'b');
    const std::vector<Row> rows = {
        {"mail.example.com", true},
        {"*.example.com", true},
        {"MAIL.Example.Com", true},
        {"*.EXAMPLE.com", true},
        {"localhost", true},
        {"*.com", true},
        {"a-b.example.com", true},
        {"xn--bcher-kva.example", true},
        {"1.2.3.com", true},
        {"123abc", true},
        {"0-0.example", true},
        {label63 + ".example.com", true},
        {name253, true},
        {"*." + name253, true},
        {"", false},
        {"*", false},
        {"*.", false},
        {"*.*.example.com", false},
        {"a.*.b", false},
        {"*example.com", false},
        {"**.example.com", false},
        {".example.com", false},
        {"mail.example.com.", false},
        {"mail..example.com", false},
        {"-mail.example.com", false},
        {"mail-.example.com", false},
        {"mail.example-", false},
        {"mail_1.example.com", false},
        {"mail example.com", false},
        {"m\xc3\xa4il.example.com", false},
        {"192.0.2.1", false},
        {"*.192.0.2", false},
        {"123", false},
        {"[192.0.2.1]", false},
        {"2001:db8::1", false},
        {"mail.example.com:25", false},
        {label64 + ".example.com", false},
        {name253 + "b", false},
    };
    for (const Row& row : rows) {
        CAPTURE(row.pattern);
        CHECK_EQ_GW("valid", valid_sts_mx_pattern(row.pattern), row.want);
    }
}

TEST_CASE("mta_sts: sts_mx_matches table (validateMx)") {
    struct Row {
        std::string pattern;
        std::string host;
        bool want;
    };
    const std::vector<Row> rows = {
        {"mail.example.com", "mail.example.com", true},
        {"mail.example.com", "MAIL.EXAMPLE.COM", true},
        {"Mail.Example.Com", "mail.example.com", true},
        {"mail.example.com", "mail.example.com.", true},
        {"mail.example.com", "mail.example.com..", false},
        {"mail.example.com", "mail.example.net", false},
        {"mail.example.com", "xmail.example.com", false},
        {"mail.example.com", "a.mail.example.com", false},
        {"mail.example.com", "example.com", false},
        {"mail.example.com", "", false},
        {"mail.example.com", ".", false},
        {"*.example.com", "mail.example.com", true},
        {"*.example.com", "MAIL.Example.COM.", true},
        {"*.EXAMPLE.COM", "mx1.example.com", true},
        {"*.example.com", "example.com", false},
        {"*.example.com", ".example.com", false},
        {"*.example.com", "a.b.example.com", false},
        {"*.example.com", "mailexample.com", false},
        {"*.example.com", "mail.example.com.evil", false},
        {"*.example.com", "mail.example.net", false},
        {"*.example.com", "", false},
        // A pattern that is not valid never matches, not even itself.
        {"*example.com", "mailexample.com", false},
        {"*example.com", "*example.com", false},
        {"a.*.b", "a.x.b", false},
        {"192.0.2.1", "192.0.2.1", false},
        {"mail.example.com.", "mail.example.com", false},
        {"", "", false},
    };
    for (const Row& row : rows) {
        CAPTURE(row.pattern);
        CAPTURE(row.host);
        CHECK_EQ_GW("matches", sts_mx_matches(row.pattern, row.host), row.want);
    }
}

TEST_CASE("mta_sts: check_sts_mx returns the first matching pattern per host") {
    StsPolicy policy;
    policy.mode = StsMode::Enforce;
    policy.mx = {"mx1.example.com", "*.example.com", "*.backup.example.net", "MX1.example.com"};
    const std::vector<std::string> hosts = {"mx1.example.com.",     "MX2.example.com",
                                            "b.backup.example.net", "a.b.backup.example.net",
                                            "example.com",          "mx.example.org"};
    struct Want {
        bool matches;
        std::string pattern;
    };
    const std::vector<Want> want = {{true, "mx1.example.com"},
                                    {true, "*.example.com"},
                                    {true, "*.backup.example.net"},
                                    {false, ""},
                                    {false, ""},
                                    {false, ""}};
    const std::vector<StsMxCheck> got = check_sts_mx(policy, hosts);
    REQUIRE(got.size() == hosts.size());
    for (std::size_t i = 0; i < hosts.size(); ++i) {
        CAPTURE(hosts[i]);
        CHECK_EQ_GW("host", got[i].host, hosts[i]);
        CHECK_EQ_GW("matches", got[i].matches, want[i].matches);
        CHECK_EQ_GW("pattern", got[i].pattern, want[i].pattern);
    }
    CHECK(check_sts_mx(policy, {}).empty());
    StsPolicy none;
    const auto unmatched = check_sts_mx(none, {"mx1.example.com"});
    REQUIRE(unmatched.size() == 1);
    CHECK_FALSE(unmatched[0].matches);
}

TEST_CASE("mta_sts: sts_match_list conversion and dedupe") {
    struct Row {
        std::vector<std::string> patterns;
        std::string want;
    };
    const std::vector<Row> rows = {
        {{"mail.example.com"}, "mail.example.com"},
        {{"*.example.com"}, ".example.com"},
        {{"mx1.example.com", "*.example.net"}, "mx1.example.com:.example.net"},
        {{"MX1.Example.COM", "*.EXAMPLE.net"}, "mx1.example.com:.example.net"},
        {{"b.example", "a.example", "c.example"}, "b.example:a.example:c.example"},
        {{"mx.example", "MX.EXAMPLE", "mx.example"}, "mx.example"},
        {{"*.example.com", "*.Example.Com", "mail.example.com"}, ".example.com:mail.example.com"},
        {{"a.example", "*.a.example", "a.example"}, "a.example:.a.example"},
        {{}, ""},
        // Hand-built policies only: invalid patterns never reach Postfix.
        {{"*.", "mx.example", "a b", "[192.0.2.1]"}, "mx.example"},
    };
    for (const Row& row : rows) {
        CAPTURE(shown(row.patterns));
        CHECK_EQ_GW("match list", sts_match_list(row.patterns), row.want);
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering for Postfix

namespace {

const std::string kRealisticBody =
    "version: STSv1\r\n"
    "mode: enforce\r\n"
    "mx: mx1.example.com\r\n"
    "mx: *.Example.NET\r\n"
    "mx: mx1.example.com\r\n"
    "max_age: 604800\r\n"
    "comment: {braces} cannot ride\r\n"
    "note:\ttab\r\n"
    "utf8: caf\xc3\xa9\r\n";

}  // namespace

TEST_CASE("mta_sts: sts_enforce_policy renders TLSRPT attributes") {
    const StsParse parsed = parse_sts_policy(kRealisticBody);
    REQUIRE(parsed.ok);
    struct Row {
        std::string name;
        PolicySettings settings;
        std::string want;
    };
    PolicySettings tlsrpt;
    tlsrpt.tlsrpt = true;
    PolicySettings secure_tlsrpt_nosni = tlsrpt;
    secure_tlsrpt_nosni.sts_level = StsLevel::Secure;
    secure_tlsrpt_nosni.servername = false;
    PolicySettings plain;
    PolicySettings no_sni;
    no_sni.servername = false;
    PolicySettings secure;
    secure.sts_level = StsLevel::Secure;
    const std::string tail =
        " policy_type=sts policy_domain=example.com"
        " mx_host_pattern=mx1.example.com mx_host_pattern=*.Example.NET"
        " mx_host_pattern=mx1.example.com"
        " { policy_string = version: STSv1 } { policy_string = mode: enforce }"
        " { policy_string = mx: mx1.example.com } { policy_string = mx: *.Example.NET }"
        " { policy_string = mx: mx1.example.com } { policy_string = max_age: 604800 }"
        " { policy_string = note: tab }";
    const std::vector<Row> rows = {
        {"tlsrpt, verify, servername", tlsrpt,
         "verify match=mx1.example.com:.example.net servername=hostname" + tail},
        {"tlsrpt, secure, no servername", secure_tlsrpt_nosni,
         "secure match=mx1.example.com:.example.net" + tail},
        {"defaults", plain, "verify match=mx1.example.com:.example.net servername=hostname"},
        {"servername off", no_sni, "verify match=mx1.example.com:.example.net"},
        {"secure level", secure, "secure match=mx1.example.com:.example.net servername=hostname"},
    };
    for (const Row& row : rows) {
        CAPTURE(row.name);
        CHECK_EQ_GW("policy", render("example.com", parsed.policy, kRealisticBody, row.settings),
                    row.want);
    }
}

TEST_CASE("mta_sts: sts_enforce_policy on hand-built policies stays valid for Postfix") {
    PolicySettings tlsrpt;
    tlsrpt.tlsrpt = true;
    struct Row {
        std::string name;
        StsPolicy policy;
        std::string body;  // what the policy was "parsed" from: its lines
        std::string want;
    };
    auto policy = [](std::vector<std::string> mx) {
        StsPolicy p;
        p.mode = StsMode::Enforce;
        p.max_age = 60;
        p.mx = std::move(mx);
        return p;
    };
    const std::vector<Row> rows = {
        {"lines that cannot ride are skipped", policy({"mx.example"}),
         body({"a: {b", "c: d}", "e: \x01", "f: \xff", " \t ", "", "g: h=i, j"}),
         "verify match=mx.example servername=hostname policy_type=sts policy_domain=example.com "
         "mx_host_pattern=mx.example { policy_string = g: h=i, j }"},
        {"invalid patterns are left out", policy({"mx.example", "evil servername=x", "*."}), "",
         "verify match=mx.example servername=hostname policy_type=sts policy_domain=example.com "
         "mx_host_pattern=mx.example"},
        {"no valid pattern: no match attribute", policy({}), "",
         "verify servername=hostname policy_type=sts policy_domain=example.com"},
    };
    for (const Row& row : rows) {
        CAPTURE(row.name);
        CHECK_EQ_GW("policy", render("example.com", row.policy, row.body, tlsrpt), row.want);
    }
}

TEST_CASE("mta_sts: sts_verdict table") {
    struct Row {
        StsMode mode;
        TestingMode testing;
        StsVerdict want;
    };
    const std::vector<Row> rows = {
        {StsMode::Enforce, TestingMode::Ignore, StsVerdict::Enforce},
        {StsMode::Enforce, TestingMode::Encrypt, StsVerdict::Enforce},
        {StsMode::Enforce, TestingMode::Enforce, StsVerdict::Enforce},
        {StsMode::Testing, TestingMode::Ignore, StsVerdict::NotFound},
        {StsMode::Testing, TestingMode::Encrypt, StsVerdict::Encrypt},
        {StsMode::Testing, TestingMode::Enforce, StsVerdict::Enforce},
        {StsMode::None, TestingMode::Ignore, StsVerdict::NotFound},
        {StsMode::None, TestingMode::Encrypt, StsVerdict::NotFound},
        {StsMode::None, TestingMode::Enforce, StsVerdict::NotFound},
    };
    for (const Row& row : rows) {
        CAPTURE(shown(row.mode));
        CAPTURE(static_cast<int>(row.testing));
        StsPolicy policy;
        policy.mode = row.mode;
        PolicySettings settings;
        settings.testing_mode = row.testing;
        CHECK_EQ_GW("verdict", sts_verdict(policy, settings), row.want);
    }
}

TEST_CASE("mta_sts: sts_mode_name") {
    CHECK_EQ_GW("name", std::string(sts_mode_name(StsMode::Enforce)), std::string("enforce"));
    CHECK_EQ_GW("name", std::string(sts_mode_name(StsMode::Testing)), std::string("testing"));
    CHECK_EQ_GW("name", std::string(sts_mode_name(StsMode::None)), std::string("none"));
}
