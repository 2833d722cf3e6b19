// fuzz-sts-policy: parse_sts_policy(), valid_sts_mx_pattern(), sts_mx_matches(),
// sts_match_list(), check_sts_mx() and sts_enforce_policy() (core/mta_sts.h). The input is a
// policy body as fetched from https://mta-sts.<domain>/.well-known/mta-sts.txt.
//
// Invariants:
//   - an accepted body has a mode, a max_age in 0..kMaxStsMaxAge, at least one mx line unless
//     the mode is none, mx patterns that all pass valid_sts_mx_pattern(), and lines without
//     LF; bodies over kMaxStsBody are refused;
//   - a refusal has one of the documented codes and a short printable reason that never
//     echoes the body;
//   - the accepted policy re-encoded as a canonical body parses to the same mode, max_age and
//     mx; a body without CR parses the same with CRLF line ends;
//   - mx matching follows RFC 8461 §4.1 on hosts made from each pattern (exact and
//     case-insensitive, "*." = exactly one more label, trailing dot ignored) and never
//     matches with an invalid pattern; the match list is lower-case without duplicates;
//   - every policy we would send Postfix for the body (verify/secure, with and without
//     servername and TLSRPT attributes) passes validate_policy(): no MTA-STS answer can make
//     Postfix defer with "invalid TLS policy".
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/mta_sts.h"
#include "core/policy_grammar.h"
#include "fuzz_common.h"

using namespace tlspolicy;

namespace {

bool same_parse(const StsParse& a, const StsParse& b) {
    if (a.ok != b.ok) return false;
    if (!a.ok) return a.error.code == b.error.code;
    return a.policy.mode == b.policy.mode && a.policy.max_age == b.policy.max_age &&
           a.policy.mx == b.policy.mx;
}

void check_error(std::string_view body, const StsPolicyError& e) {
    FUZZ_CHECK(e.code == "invalid_sts_version" || e.code == "invalid_sts_mode" ||
               e.code == "invalid_sts_max_age" || e.code == "invalid_sts_mx" ||
               e.code == "invalid_sts_body");
    FUZZ_CHECK(!e.reason.empty() && e.reason.size() <= 200);
    FUZZ_CHECK(fuzz::printable_ascii(e.reason));
    FUZZ_CHECK(!fuzz::echoes(e.reason, body, 12));
}

// RFC 8461 §4.1 on hosts derived from a valid pattern.
void check_matching(const std::string& p) {
    FUZZ_CHECK(valid_sts_mx_pattern(p));
    if (p.starts_with("*.")) {
        const std::string suffix = p.substr(1);  // ".example.com"
        const std::string base = p.substr(2);
        FUZZ_CHECK(sts_mx_matches(p, "mx" + suffix));
        FUZZ_CHECK(sts_mx_matches(p, fuzz::upper("mx" + suffix)));
        FUZZ_CHECK(sts_mx_matches(p, "mx" + suffix + "."));
        FUZZ_CHECK(!sts_mx_matches(p, base));
        FUZZ_CHECK(!sts_mx_matches(p, "a.b" + suffix));
        FUZZ_CHECK(!sts_mx_matches(p, suffix));
    } else {
        FUZZ_CHECK(sts_mx_matches(p, p));
        FUZZ_CHECK(sts_mx_matches(p, fuzz::upper(p)));
        FUZZ_CHECK(sts_mx_matches(p, p + "."));
        FUZZ_CHECK(!sts_mx_matches(p, "a." + p));
        FUZZ_CHECK(!sts_mx_matches(p, p + ".x"));
    }
}

void check_rendering(const StsPolicy& policy, std::string_view body) {
    const std::string list = sts_match_list(policy.mx);
    FUZZ_CHECK(list == fuzz::lower(list));
    std::vector<std::string> seen;
    for (const std::string& e : fuzz::split(list, ':', SIZE_MAX)) {
        if (list.empty()) break;
        FUZZ_CHECK(!e.empty());
        for (const std::string& s : seen)
            FUZZ_CHECK(s != e);
        seen.push_back(e);
    }
    FUZZ_CHECK(seen.size() <= policy.mx.size());

    for (bool tlsrpt : {false, true}) {
        for (StsLevel level : {StsLevel::Verify, StsLevel::Secure}) {
            PolicySettings settings;
            settings.sts_level = level;
            settings.tlsrpt = tlsrpt;
            settings.servername = !tlsrpt;
            const std::string out = sts_enforce_policy("example.com", policy, body, settings);
            PolicyGrammarOptions opts;
            opts.tlsrpt = tlsrpt;
            const Status s = validate_policy(out, opts);
            if (!s.ok()) std::fprintf(stderr, "rejected: %s\n", s.error().message.c_str());
            FUZZ_CHECK(s.ok());
        }
    }
}

std::string canonical_body(const StsPolicy& p) {
    std::string body = "version: STSv1\nmode: ";
    body += sts_mode_name(p.mode);
    body += "\nmax_age: " + std::to_string(p.max_age) + "\n";
    for (const std::string& mx : p.mx)
        body += "mx: " + mx + "\n";
    return body;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
    const std::string_view body = fuzz::as_text(data, size);
    const StsParse r = parse_sts_policy(body);

    if (!r.ok) {
        check_error(body, r.error);
    } else {
        const StsPolicy& p = r.policy;
        FUZZ_CHECK(body.size() <= kMaxStsBody);
        FUZZ_CHECK(p.max_age >= 0 && p.max_age <= kMaxStsMaxAge);
        FUZZ_CHECK(p.mode == StsMode::None || !p.mx.empty());
        for (const std::string& mx : p.mx)
            check_matching(mx);
        const auto lines = sts_policy_lines(body);
        for (const std::string_view line : lines) {
            FUZZ_CHECK(!line.empty());
            // LF and the CR of a CRLF end are gone; another CR stays ("x\r\r\n" is the
            // line "x\r", see tests/diff/known-differences.toml).
            FUZZ_CHECK(line.find('\n') == std::string_view::npos);
        }
        FUZZ_CHECK(lines.size() >= 3);  // version, mode, max_age at least

        const StsParse again = parse_sts_policy(canonical_body(p));
        FUZZ_CHECK(again.ok);
        FUZZ_CHECK(again.policy.mode == p.mode && again.policy.max_age == p.max_age &&
                   again.policy.mx == p.mx);

        if (p.mode != StsMode::None) check_rendering(p, body);
        const auto checks = check_sts_mx(p, p.mx);
        FUZZ_CHECK(checks.size() == p.mx.size());
        for (const StsMxCheck& c : checks) {
            // A wildcard pattern used as a host is not a host name; anything else matches
            // itself at the latest.
            if (!c.host.starts_with("*.")) FUZZ_CHECK(c.matches);
            if (c.matches) FUZZ_CHECK(sts_mx_matches(c.pattern, c.host));
        }
    }

    // LF -> CRLF changes nothing for a body without CR (when it still fits).
    if (body.find('\r') == std::string_view::npos && 2 * body.size() <= kMaxStsBody) {
        std::string crlf;
        for (char c : body) {
            if (c == '\n') crlf += '\r';
            crlf += c;
        }
        FUZZ_CHECK(same_parse(parse_sts_policy(crlf), r));
        FUZZ_CHECK(sts_policy_lines(crlf) == sts_policy_lines(body));
    }

    // The body's lines as MX hosts and patterns: matching never accepts an invalid pattern.
    for (const std::string& line : fuzz::split(body, '\n', 8)) {
        if (sts_mx_matches(line, "mx.example.com") || sts_mx_matches(line, line))
            FUZZ_CHECK(valid_sts_mx_pattern(line));
        if (valid_sts_mx_pattern(line)) check_matching(line);
    }
    return 0;
}
