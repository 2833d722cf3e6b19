// MTA-STS (RFC 8461) without sockets: the `_mta-sts` TXT record (§3.1), the policy body
// (§3.2), MX pattern matching (§4.1) and what a policy means for Postfix (the decision table
// of docs/architecture.md; Postfix attributes in docs/protocols.md). Every rejection has a
// code in the vocabulary of the mailauth library where one exists (multi_sts_records,
// invalid_sts_version, invalid_sts_mode, invalid_sts_max_age, invalid_sts_mx), so logs,
// `query --json` and the differential test speak one language.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.h"

namespace tlspolicy {

inline constexpr std::size_t kMaxStsBody = 64 * 1024;  // bytes, RFC 8461 §3.3
inline constexpr int64_t kMaxStsMaxAge = 31557600;     // seconds; larger values are capped
inline constexpr std::size_t kMaxStsIdLength = 32;     // RFC 8461 §3.1
inline constexpr int64_t kStsFetchRetrySeconds = 300;  // §3.3: no retry sooner per policy id

enum class StsMode { Enforce, Testing, None };
std::string_view sts_mode_name(StsMode mode);  // "enforce" | "testing" | "none"

// The discovery record, RFC 8461 §3.1.
struct StsTxt {
    bool found = false;  // exactly one valid v=STSv1 record remained
    std::string id;      // its id (1–32 letters and digits), when found
    // When not found: "no_sts_record" (no record starts with v=STSv1), "multi_sts_records",
    // "invalid_sts_record" (syntax), "invalid_sts_id" (id missing, repeated or malformed).
    std::string code;
    std::string reason;  // short and printable; never echoes the record
};

// Judges the TXT records at _mta-sts.<domain>, each given with its character-strings already
// joined without spaces. Records that do not start with "v=STSv1" *WSP ";" are discarded; exactly
// one must remain and parse (fields `name=value` separated by *WSP ";" *WSP, trailing ";" allowed,
// extension fields ignored, `id` required; of repeated `id` fields the first is used). Blanks after
// the last field are tolerated.
StsTxt parse_sts_txt(const std::vector<std::string>& records);

struct StsPolicy {
    StsMode mode = StsMode::None;
    int64_t max_age = 0;          // seconds, capped at kMaxStsMaxAge
    std::vector<std::string> mx;  // mx patterns verbatim, in policy order, duplicates kept
    // The lines themselves are not kept: sts_policy_lines() of the body gives them (a stored
    // policy keeps its body; 100,000 cached policies would hold every line twice).
};

struct StsPolicyError {
    // "invalid_sts_version", "invalid_sts_mode", "invalid_sts_max_age", "invalid_sts_mx",
    // "invalid_sts_body" (not text: NUL or other control bytes, or over kMaxStsBody).
    std::string code;
    std::string reason;  // short and printable; never echoes the body
};

struct StsParse {
    bool ok = false;
    StsPolicy policy;      // when ok
    StsPolicyError error;  // when not ok
};

// Parses a policy body, RFC 8461 §3.2: lines end in LF or CRLF; `key: value` (the key
// case-sensitive, ":" then optional blanks; trailing blanks dropped); the first value wins for
// repeated keys except `mx`; unknown keys and lines without ":" are ignored. `version` must be
// exactly "STSv1"; `mode` enforce | testing | none; `max_age` 1–10 digits (capped); `mx`
// patterns required unless the mode is none, each a valid name or "*." + name in A-label form
// (not an IP literal). Any invalid mx pattern rejects the policy. A lone CR at the very end
// is tolerated like a line end.
StsParse parse_sts_policy(std::string_view body);

// The lines of a policy body as parse_sts_policy() reads them: split at LF, the CR of a CRLF
// dropped, blank lines (empty or only blanks) left out, in order. Views into `body`.
std::vector<std::string_view> sts_policy_lines(std::string_view body);

// True when `pattern` is a valid mx pattern: a host name of letters, digits and hyphens
// (labels 1–63, name ≤ 253, not all-numeric like an IPv4 address), optionally prefixed "*.".
bool valid_sts_mx_pattern(std::string_view pattern);

// RFC 8461 §4.1: does the MX host `host` match `pattern`? Case-insensitive, a trailing dot
// on the host ignored; "*.example.com" matches exactly one extra label (mail.example.com,
// not example.com, not a.b.example.com).
bool sts_mx_matches(std::string_view pattern, std::string_view host);

// The Postfix `match=` value: patterns lower-cased, "*.x" turned into ".x", duplicates dropped,
// policy order kept, joined with ":".
std::string sts_match_list(const std::vector<std::string>& patterns);

// The Postfix policy for an applied policy (enforce, or testing under testing_mode enforce):
// "<verify|secure> match=<sts_match_list> [servername=hostname]", then, when settings.tlsrpt,
// " policy_type=sts policy_domain=<domain>", one " mx_host_pattern=<p>" per mx line verbatim
// and one " { policy_string = <line> }" per line of `body` (sts_policy_lines: the body `policy`
// was parsed from). Lines that cannot be carried inside braces ("{", "}" or bytes outside
// printable ASCII) are left out of policy_string.
std::string sts_enforce_policy(const std::string& domain, const StsPolicy& policy,
                               std::string_view body, const PolicySettings& settings);

// What the MTA-STS half of the decision table answers for a usable policy under `settings`.
enum class StsVerdict {
    Enforce,   // apply: sts_enforce_policy()
    Encrypt,   // mode testing with testing_mode = encrypt: "encrypt"
    NotFound,  // mode none, or testing with testing_mode = ignore
};
StsVerdict sts_verdict(const StsPolicy& policy, const PolicySettings& settings);

// One MX host checked against a policy's patterns (mailauth's validateMx, RFC-exact).
struct StsMxCheck {
    std::string host;
    bool matches = false;
    std::string pattern;  // the first pattern it matched, when it matches
};
// Checks each MX host in `hosts` (preference order) against `policy.mx`.
std::vector<StsMxCheck> check_sts_mx(const StsPolicy& policy,
                                     const std::vector<std::string>& hosts);

}  // namespace tlspolicy
