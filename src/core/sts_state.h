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

// Kept per domain by the MTA-STS engine (up to kMaxStsStates), so the common case is small:
// the rarely set facts (a failed TXT verdict's code, a mode none id, a failed fetch) live in a
// block allocated only while one of them is set. Unset, they read as "" and 0. Move-only.
struct StsState {
    StsPolicyPtr policy;          // only ever a policy whose mode is not none
    int64_t txt_valid_until = 0;  // the last TXT verdict holds until then (0: never checked)
    bool txt_found = false;       // that verdict: one valid record (txt_id)...
    std::string txt_id;

    const std::string& txt_code() const;  // ...or why not (parse_sts_txt code, or DNS failure)
    void set_txt_code(std::string code);  // "" clears

    // An id whose policy was fetched with mode none, until when that holds, and its max_age.
    const std::string& none_id() const;
    int64_t none_until() const;
    int64_t none_max_age() const;
    void set_none(std::string id, int64_t until, int64_t max_age);
    void renew_none(int64_t until);  // none_until only
    void clear_none();

    // The id whose fetch failed last, no fetch for it before retry_after, and why it failed.
    const std::string& failed_id() const;
    int64_t retry_after() const;
    const std::string& failed_code() const;
    const std::string& failed_reason() const;
    void set_failed(std::string id, int64_t until, std::string code, std::string reason);
    void clear_failed();

    // The policy in force at `now`: stored and not expired.
    const StoredStsPolicy* live(int64_t now) const;

  private:
    struct Rare {
        std::string txt_code;
        std::string none_id;
        int64_t none_until = 0;
        int64_t none_max_age = 0;
        std::string failed_id;
        int64_t retry_after = 0;
        std::string failed_code;
        std::string failed_reason;
    };
    Rare& rare();   // allocates the block when absent
    void shrink();  // frees the block when nothing in it is set
    std::unique_ptr<Rare> rare_;
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
