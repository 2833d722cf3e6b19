// The grammar of a Postfix smtp_tls_policy_maps value ("LEVEL attr=value ..."), checked the
// way Postfix's smtp_tls_policy.c parses it, so that no value we send makes Postfix defer
// mail with "invalid TLS policy". Used to validate static overrides at config load.
#pragma once

#include <string_view>

#include "util/result.h"

namespace tlspolicy {

struct PolicyGrammarOptions {
    // Allow the Postfix >= 3.10 TLSRPT attributes (policy_type, policy_domain,
    // mx_host_pattern, { policy_string = ... }, policy_failure, policy_ttl). Postfix <= 3.9
    // rejects them, so they are refused unless the operator declared [policy] tlsrpt = true.
    bool tlsrpt = false;
};

// Ok when Postfix would accept `policy` as a policy table value: a known level, only the
// attributes Postfix allows for that level, well-formed values, single-instance attributes
// at most once, match= only on fingerprint/verify/secure. Otherwise an Error that names the
// offending level or attribute (the message may quote the attribute name, never a whole value).
//
// Grammar (Postfix smtp_tls_policy.c, tls_policy_lookup_one()): tokens separated by runs of
// whitespace and/or commas; "{ name = value }" is one token whose inner whitespace is
// normalised. Levels (case-insensitive): none may encrypt fingerprint dane dane-only verify
// secure. Deliberately stricter than Postfix where Postfix merely warns or would silently
// misbehave, because these are static overrides an operator can fix at load time:
//   - any attribute after "none" is an error (Postfix ignores it with a warning);
//   - every empty value is an error (Postfix allows e.g. "protocols=");
//   - stray or unbalanced braces, braces inside a name=value token, control/non-ASCII bytes;
//   - malformed or odd-sized fingerprint digests (Postfix skips them with a warning);
//   - verify/secure match elements must be strategies or DNS names ("*." is refused);
//   - protocols/exclude/match lists may not contain empty elements; tafile must be absolute;
//   - mx_host_pattern must be "name" or "*.name".
// Error messages quote at most 32 printable-ASCII bytes of user text, never a whole value.
Status validate_policy(std::string_view policy, const PolicyGrammarOptions& options = {});

}  // namespace tlspolicy
