// fuzz-policy-grammar: validate_policy() (core/policy_grammar.h), the check of static
// overrides against Postfix's smtp_tls_policy_maps grammar, with and without the TLSRPT
// attributes.
//
// Invariants:
//   - an accepted policy has no control byte other than the separators TAB, CR and LF and no
//     byte >= 0x7f, balanced braces, and starts (after separators) with a TLS level name;
//     "none" carries nothing after it;
//   - whatever is accepted without TLSRPT is accepted with it; separators added at either end
//     and the level in another letter case do not change acceptance;
//   - error messages are printable ASCII, bounded, and quote at most 32 bytes of the input
//     (no 36-byte run of the input appears: 32 quoted bytes and a "..." could match 35).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/policy_grammar.h"
#include "fuzz_common.h"

using namespace tlspolicy;

namespace {

constexpr std::string_view kSeparators = ", \t\r\n";
constexpr std::string_view kLevels[] = {"none", "may",       "encrypt", "fingerprint",
                                        "dane", "dane-only", "verify",  "secure"};

bool is_separator(char c) {
    return kSeparators.find(c) != std::string_view::npos;
}

void check_error(std::string_view policy, const Status& s) {
    const std::string& m = s.error().message;
    FUZZ_CHECK(!m.empty() && m.size() <= 200);
    FUZZ_CHECK(fuzz::printable_ascii(m));
    FUZZ_CHECK(!fuzz::echoes(m, policy, 36));
}

void check_accepted(std::string_view policy, const PolicyGrammarOptions& opts) {
    int depth = 0;
    for (char c : policy) {
        const auto u = static_cast<unsigned char>(c);
        FUZZ_CHECK(u >= 0x20 || c == '\t' || c == '\r' || c == '\n');
        FUZZ_CHECK(u < 0x7f);
        if (c == '{') ++depth;
        if (c == '}') --depth;
        FUZZ_CHECK(depth >= 0);
    }
    FUZZ_CHECK(depth == 0);

    std::size_t start = 0;
    while (start < policy.size() && is_separator(policy[start]))
        ++start;
    std::size_t end = start;
    while (end < policy.size() && !is_separator(policy[end]))
        ++end;
    const std::string level = fuzz::lower(policy.substr(start, end - start));
    bool known = false;
    for (std::string_view l : kLevels)
        known = known || level == l;
    FUZZ_CHECK(known);
    if (level == "none") {
        for (char c : policy.substr(end))
            FUZZ_CHECK(is_separator(c));
    }

    const std::string p(policy);
    FUZZ_CHECK(validate_policy(p + ",", opts).ok());
    FUZZ_CHECK(validate_policy(" ,\t" + p, opts).ok());
    std::string recased = p;
    for (std::size_t i = start; i < end; ++i)
        recased[i] = fuzz::ascii_upper(recased[i]);
    FUZZ_CHECK(validate_policy(recased, opts).ok());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
    const std::string_view policy = fuzz::as_text(data, size);

    PolicyGrammarOptions plain;
    PolicyGrammarOptions tlsrpt;
    tlsrpt.tlsrpt = true;
    const Status a = validate_policy(policy, plain);
    const Status b = validate_policy(policy, tlsrpt);

    if (a.ok()) FUZZ_CHECK(b.ok());
    if (a.ok()) check_accepted(policy, plain);
    if (b.ok()) check_accepted(policy, tlsrpt);
    if (!a.ok()) check_error(policy, a);
    if (!b.ok()) check_error(policy, b);
    return 0;
}
