// Freshness: the cache rules of docs/architecture.md section 2 as pure functions of the time,
// and the conversions between a resolution, a cached answer and a row of the SQLite file.
//
// - An answer is fresh until fetched_at + its TTL (the engines computed the TTL: DNS TTLs
//   clamped, negative_ttl or the SOA minimum for not found, MTA-STS TXT and max_age).
// - While refreshes fail it may be served stale: a DANE answer up to stale_ttl past expiry,
//   an MTA-STS answer until its policy's max_age runs out. A not-found answer is never served
//   stale: once it expired, a failing lookup gives TEMP (a stale "not found" would hide a
//   policy the domain may have published since, which is what an attacker blocking DNS wants).
// - TEMP (and an answer that differs between profiles only through an unfinished lookup) is
//   never cached.
// - A used entry is refreshed shortly before it expires; failed refreshes back off.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "cache/store.h"
#include "core/answer.h"
#include "core/config.h"
#include "core/sts_state.h"
#include "sts/domain_engine.h"

namespace tlspolicy {

struct CacheSettings {
    int64_t stale_ttl = 3600;            // [cache] stale_ttl
    std::size_t max_entries = 200000;    // [cache] max_entries
    int64_t lookup_deadline_ms = 15000;  // [server] lookup_deadline_ms
    std::size_t max_refreshes = 16;      // [cache] max_refreshes: background refreshes at once
};
CacheSettings cache_settings(const Config& config);

// A domain's answer in the in-memory index: what the hot path needs (the facts stay in the
// SQLite file).
// Text shared by every cached answer that has it: reasons repeat across domains ("secure MX
// set, usable TLSA on all 2 MX host(s)"), so a million entries hold each distinct text once.
// One pointer wide; a distinct text costs one allocation (count, size and text together) and
// two pointers in the pool. Reads as a std::string_view, valid while this object holds it;
// thread-safe.
class SharedText {
  public:
    SharedText() = default;
    explicit SharedText(std::string_view text);
    SharedText(const SharedText& other) noexcept : node_(other.node_) {
        if (node_) node_->refs.fetch_add(1, std::memory_order_relaxed);
    }
    SharedText(SharedText&& other) noexcept : node_(std::exchange(other.node_, nullptr)) {}
    SharedText& operator=(SharedText other) noexcept {
        std::swap(node_, other.node_);
        return *this;
    }
    SharedText& operator=(std::string_view text) { return *this = SharedText(text); }
    ~SharedText() {
        if (node_) release(node_);
    }
    std::string_view str() const {  // "" when empty
        return node_ ? std::string_view(reinterpret_cast<const char*>(node_ + 1), node_->size)
                     : std::string_view();
    }
    operator std::string_view() const { return str(); }
    bool operator==(std::string_view other) const { return str() == other; }

    // The header of the one allocation; the text follows it.
    struct Node {
        std::atomic<uint32_t> refs{1};
        uint32_t size = 0;
        uint32_t hash = 0;
    };

  private:
    static void release(Node* node);  // drops one reference; the last one unpools and frees
    Node* node_ = nullptr;
};

// How an MTA-STS policy was obtained (StsOutcome::status: "found", "renewed", "cached",
// "not_found", "errored"), in one byte; any other text reads back as "".
class StsStatus {
  public:
    StsStatus() = default;
    StsStatus& operator=(std::string_view status);
    const std::string& str() const;
    operator const std::string&() const { return str(); }
    // The byte itself (0 .. kCodes - 1), for storage narrower than a byte.
    static constexpr uint8_t kCodes = 6;
    uint8_t code() const { return code_; }
    static StsStatus from_code(uint8_t code) {
        StsStatus s;
        s.code_ = code < kCodes ? code : 0;
        return s;
    }

  private:
    uint8_t code_ = 0;
};

struct CachedAnswer {
    Outcome outcome = Outcome::NotFound;  // Found or NotFound
    Source source = Source::None;         // (outcome, source and sts_status share one word)
    StsStatus sts_status;  // "found", "renewed", ... (for the reason of a rendered answer)
    SharedText policy;                    // under the [policy] settings it was rendered for (shared)
    SharedText reason;  // why (sent with not-found tcp_table replies)
    int64_t fetched_at = 0;
    int64_t expires_at = 0;
    int64_t stale_until = 0;
    // Set when DANE said "no DANE" and an MTA-STS policy is in force: the policy decides,
    // and each socketmap profile renders it its own way.
    std::shared_ptr<const StoredStsPolicy> sts;
};

// Until when an answer may be served while refreshes fail (see the header comment).
int64_t stale_until(Outcome outcome, Source source, int64_t expires_at, const StoredStsPolicy* sts,
                    int64_t stale_ttl);

// Whether a resolution may be cached: a definite answer (found / not found) with a TTL, and
// the same for every profile apart from what the MTA-STS policy renders.
bool cacheable(const Resolution& resolution, const Answer& answer);

// The cached answer of a resolution whose [policy]-settings answer is `answer`, at `now`.
CachedAnswer cached_answer(const Resolution& resolution, const Answer& answer, int64_t now,
                           int64_t stale_ttl);

// The answer a cached entry gives under `settings` at `now` (ttl = seconds left, at least 0).
// Equal to DomainEngine::combine() of the resolution it came from.
Answer render(const std::string& domain, const CachedAnswer& cached, const PolicySettings& settings,
              int64_t now);

// The SQLite row of a cached answer, with the MTA-STS policy in force (or null) and the facts.
CacheRow cache_row(const std::string& domain, const CachedAnswer& cached,
                   const StoredStsPolicy* in_force, std::string details);
// The SQLite row of a resolution (details from `answer`).
CacheRow cache_row(const std::string& domain, const Resolution& resolution, const Answer& answer,
                   const CachedAnswer& cached);
// The cached answer stored in a row, re-rendered under `settings`; nullopt when the row is
// unusable (an outcome that is not cached, an MTA-STS body that no longer parses).
// `sts`: the row's policy when the caller parsed it already (sts_policy_from_row), so that
// the cache and the MTA-STS engine share one copy.
std::optional<CachedAnswer> cached_from_row(const std::string& domain, const CacheRow& row,
                                            const PolicySettings& settings,
                                            StsPolicyPtr sts = nullptr);
// The MTA-STS policy a row carries, for the MTA-STS engine's memory; null when none.
StsPolicyPtr sts_policy_from_row(const CacheRow& row);

// When a used entry should be refreshed: before expiry by a lead of a tenth of its lifetime
// (at least 1 s, at most 300 s), and earlier by up to half that lead by `jitter` in [0, 1), so
// that entries stored together do not refresh together. Never before fetched_at.
int64_t refresh_time(int64_t fetched_at, int64_t expires_at, double jitter);

// Seconds to wait after `failures` (>= 1) consecutive failed refreshes: 5, 10, 20, ... 300.
int64_t refresh_backoff(int failures);

}  // namespace tlspolicy
