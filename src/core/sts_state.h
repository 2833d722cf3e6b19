// StsState: what tlspolicyd knows of one domain's MTA-STS policy, and the freshness rules of
// RFC 8461 §3.3 and §5.1 (docs/architecture.md section 2) as pure functions of the time:
// the `_mta-sts` TXT record is re-checked at its TTL; the body is re-fetched only when the id
// changes (or the policy expired); an unchanged id renews the policy for another max_age; a
// failed refresh or a vanished TXT record never erases a policy before its max_age; a fetched
// `mode: none` removes it; a failed fetch is not retried for the same id within 5 minutes.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "core/dane.h"
#include "core/mta_sts.h"

namespace tlspolicy {

struct StoredStsPolicy {
    std::string id;
    StsPolicy policy;
    std::string body;
    int64_t fetched_at = 0;  // unix seconds of the fetch
    int64_t expires_at = 0;  // unix seconds; renewed on an unchanged id
};

// A stored policy is never changed once made (a renewal makes a new one), so the MTA-STS
// engine, the cache and every answer in flight share one copy.
using StsPolicyPtr = std::shared_ptr<const StoredStsPolicy>;

struct StsState {
    StsPolicyPtr policy;          // only ever a policy whose mode is not none
    int64_t txt_valid_until = 0;  // the last TXT verdict holds until then (0: never checked)
    bool txt_found = false;       // that verdict: one valid record (txt_id)...
    std::string txt_id;
    std::string txt_code;    // ...or why not (parse_sts_txt code, or the DNS failure)
    std::string none_id;     // an id whose policy was fetched with mode none...
    int64_t none_until = 0;  // ...and until when that holds (its max_age)
    int64_t none_max_age = 0;
    std::string failed_id;    // the id whose fetch failed last
    int64_t retry_after = 0;  // no fetch for failed_id before then
    std::string failed_code;  // and why it failed
    std::string failed_reason;

    // The policy in force at `now`: stored and not expired.
    const StoredStsPolicy* live(int64_t now) const;
};

// What a lookup must do next.
enum class StsStep {
    UseKnown,  // the last TXT verdict is still fresh and no fetch is due: answer from state
    CheckTxt,  // look up the TXT record
    Fetch,     // the TXT verdict is fresh, its id has no live policy and may be fetched now
};
StsStep sts_next_step(const StsState& state, int64_t now);

// How a lookup ended, in mailauth's terms, and the policy in force afterwards.
struct StsOutcome {
    // "found" (a policy was fetched), "renewed" (the TXT id is the stored policy's),
    // "cached" (answered from state without DNS), "not_found" (no policy available),
    // "errored" (TXT said there is a policy but it could not be fetched or parsed).
    std::string status;
    std::string code;     // for not_found / errored: why
    std::string reason;   // short, printable
    StsPolicyPtr policy;  // the policy in force, when one is
};

// The outcome at `now` without new facts (after StsStep::UseKnown, or a deadline).
StsOutcome sts_known(const StsState& state, int64_t now);

// Applies a TXT lookup. `txt_ttl` is the lookup's TTL clamped by the caller. Returns true when
// the policy must be fetched now (then call sts_apply_fetch); else `out` is the outcome.
bool sts_apply_txt(StsState& state, const DnsLookup& lookup, int64_t txt_ttl, int64_t now,
                   StsOutcome& out);

// Applies the result of a fetch of the policy for state.txt_id: `ok` with the body, or the
// failure code and reason (fetch or parse). Returns the outcome.
StsOutcome sts_apply_fetch(StsState& state, bool ok, const std::string& body,
                           const std::string& code, const std::string& reason, int64_t now);

}  // namespace tlspolicy
