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
Status validate_policy(std::string_view policy, const PolicyGrammarOptions& options = {});

}  // namespace tlspolicy
