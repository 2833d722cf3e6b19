#include "cache/freshness.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <vector>

namespace tlspolicy {

CacheSettings cache_settings(const Config& c) {
    CacheSettings s;
    s.stale_ttl = c.cache.stale_ttl;
    s.max_entries = static_cast<std::size_t>(c.cache.max_entries);
    s.max_refreshes = static_cast<std::size_t>(c.cache.max_refreshes);
    s.lookup_deadline_ms = c.server.lookup_deadline_ms;
    return s;
}

int64_t stale_until(Outcome outcome, Source source, int64_t expires_at, const StoredStsPolicy* sts,
                    int64_t stale_ttl) {
    if (outcome != Outcome::Found) return expires_at;
    if (source == Source::Dane) return expires_at + stale_ttl;
    // RFC 8461 §5.1: a policy stays in force until its max_age, whatever refreshes say.
    if (sts) return std::max(expires_at, sts->expires_at);
    return expires_at;
}

namespace {

using TextNode = SharedText::Node;

std::string_view text_of(const TextNode* n) {
    return {reinterpret_cast<const char*>(n + 1), n->size};
}

// The texts in use, by content: an open-addressing set of nodes (linear probing, at most half
// full, backward-shift deletion). A node leaves when its last holder drops it; the pool is
// never destroyed, so SharedText objects alive at exit are safe.
class TextPool {
  public:
    std::mutex mu;

    // The node holding `text` (hash `h`), or null.
    TextNode* find(std::string_view text, uint32_t h) const {
        if (slots_.empty()) return nullptr;
        for (std::size_t i = h & mask(); slots_[i]; i = (i + 1) & mask())
            if (slots_[i]->hash == h && text_of(slots_[i]) == text) return slots_[i];
        return nullptr;
    }
    // Adds `n`, whose text is not in the pool.
    void add(TextNode* n) {
        if ((count_ + 1) * 2 > slots_.size()) grow();
        std::size_t i = n->hash & mask();
        while (slots_[i])
            i = (i + 1) & mask();
        slots_[i] = n;
        ++count_;
    }
    // Removes `n` itself (not another node with the same text); false when it is not there.
    bool remove(const TextNode* n) {
        if (slots_.empty()) return false;
        std::size_t i = n->hash & mask();
        while (slots_[i] != n) {
            if (!slots_[i]) return false;
            i = (i + 1) & mask();
        }
        for (std::size_t j = (i + 1) & mask(); slots_[j]; j = (j + 1) & mask()) {
            const std::size_t k = slots_[j]->hash & mask();
            if (((j - k) & mask()) < ((j - i) & mask())) continue;  // home in (i, j]
            slots_[i] = slots_[j];
            i = j;
        }
        slots_[i] = nullptr;
        --count_;
        return true;
    }

  private:
    std::size_t mask() const { return slots_.size() - 1; }
    void grow() {
        std::vector<TextNode*> old(std::max<std::size_t>(64, slots_.size() * 2), nullptr);
        old.swap(slots_);
        count_ = 0;
        for (TextNode* n : old)
            if (n) add(n);
    }
    std::vector<TextNode*> slots_;  // size a power of two
    std::size_t count_ = 0;
};
TextPool& text_pool() {
    static auto* pool = new TextPool;
    return *pool;
}

uint32_t text_hash(std::string_view text) {
    const uint64_t h = std::hash<std::string_view>{}(text);
    return static_cast<uint32_t>(h ^ (h >> 32));
}

}  // namespace

SharedText::SharedText(std::string_view text) {
    if (text.empty()) return;
    if (text.size() > UINT32_MAX) throw std::length_error("SharedText: text too long");
    const uint32_t h = text_hash(text);
    TextPool& pool = text_pool();
    std::lock_guard<std::mutex> g(pool.mu);
    if (Node* n = pool.find(text, h)) {
        // A node whose count reached 0 is on its way out (its last holder waits for the lock
        // to unpool it): never revive it, put a new one in its place.
        for (uint32_t r = n->refs.load(std::memory_order_relaxed); r != 0;) {
            if (n->refs.compare_exchange_weak(r, r + 1, std::memory_order_relaxed)) {
                node_ = n;
                return;
            }
        }
        pool.remove(n);
    }
    void* mem = ::operator new(sizeof(Node) + text.size());
    node_ = new (mem) Node;
    node_->size = static_cast<uint32_t>(text.size());
    node_->hash = h;
    std::memcpy(static_cast<char*>(mem) + sizeof(Node), text.data(), text.size());
    pool.add(node_);
}

void SharedText::release(Node* node) {
    if (node->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    TextPool& pool = text_pool();
    {
        std::lock_guard<std::mutex> g(pool.mu);
        pool.remove(node);  // only this node: a new one may have replaced it meanwhile
    }
    node->~Node();
    ::operator delete(node);
}

namespace {
const std::string kStsStatuses[] = {"", "found", "renewed", "cached", "not_found", "errored"};
static_assert(std::size(kStsStatuses) == StsStatus::kCodes);
}  // namespace

StsStatus& StsStatus::operator=(std::string_view status) {
    code_ = 0;
    for (uint8_t i = 1; i < std::size(kStsStatuses); ++i)
        if (kStsStatuses[i] == status) code_ = i;
    return *this;
}

const std::string& StsStatus::str() const {
    return kStsStatuses[code_];
}

bool cacheable(const Resolution& r, const Answer& a) {
    if (a.outcome != Outcome::Found && a.outcome != Outcome::NotFound) return false;
    // An unfinished TLSA lookup gives `dane` or TEMP depending on the profile's testing_mode:
    // answer it fresh each time until the lookup can be finished.
    if (r.dane.unfinished) return false;
    return a.ttl > 0 && a.source != Source::Override;
}

CachedAnswer cached_answer(const Resolution& r, const Answer& a, int64_t now, int64_t stale_ttl) {
    CachedAnswer c;
    c.outcome = a.outcome;
    c.policy = a.outcome == Outcome::Found ? a.policy : std::string();
    c.source = a.source;
    c.reason = a.reason;
    c.fetched_at = now;
    c.expires_at = now + std::max<int64_t>(a.ttl, 0);
    if (r.dane.verdict == DaneVerdict::NoDane && r.sts.outcome.policy) {
        c.sts = r.sts.outcome.policy;  // shared with the MTA-STS engine
        c.sts_status = r.sts.outcome.status;
    }
    c.stale_until = stale_until(c.outcome, c.source, c.expires_at, c.sts.get(), stale_ttl);
    return c;
}

Answer render(const std::string& domain, const CachedAnswer& c, const PolicySettings& settings,
              int64_t now) {
    Answer a;
    if (c.sts) {
        a = DomainEngine::sts_decision(domain, *c.sts, c.sts_status, settings);
    } else {
        a.outcome = c.outcome;
        a.policy = c.policy;
        a.source = c.source;
        a.reason = c.reason;
    }
    a.ttl = std::max<int64_t>(c.expires_at - now, 0);
    return a;
}

CacheRow cache_row(const std::string& domain, const CachedAnswer& c,
                   const StoredStsPolicy* in_force, std::string details) {
    CacheRow row;
    row.domain = domain;
    row.outcome = c.outcome;
    row.policy = c.policy;
    row.source = c.source;
    row.reason = c.reason;
    row.fetched_at = c.fetched_at;
    row.expires_at = c.expires_at;
    row.stale_until = c.stale_until;
    row.sts_decides = c.sts != nullptr;
    if (in_force) {
        row.sts_id = in_force->id;
        row.sts_body = in_force->body;
        row.sts_max_age = in_force->policy.max_age;
        row.sts_fetched_at = in_force->fetched_at;
        row.sts_expires_at = in_force->expires_at;
    }
    row.details = details.empty() ? "{}" : std::move(details);
    return row;
}

CacheRow cache_row(const std::string& domain, const Resolution& r, const Answer& a,
                   const CachedAnswer& c) {
    // The policy in force is kept even when DANE decides, so that a restart or another
    // process does not forget it (RFC 8461 §5.1).
    const auto& p = r.sts.outcome.policy;
    return cache_row(domain, c, p ? &*p : nullptr, a.details);
}

StsPolicyPtr sts_policy_from_row(const CacheRow& row) {
    if (row.sts_id.empty()) return nullptr;
    StsParse parsed = parse_sts_policy(row.sts_body);
    if (!parsed.ok || parsed.policy.mode == StsMode::None) return nullptr;
    auto p = std::make_shared<StoredStsPolicy>();
    p->id = row.sts_id;
    p->policy = std::move(parsed.policy);
    p->body = row.sts_body;
    p->fetched_at = row.sts_fetched_at;
    p->expires_at = row.sts_expires_at;
    return p;
}

std::optional<CachedAnswer> cached_from_row(const std::string& domain, const CacheRow& row,
                                            const PolicySettings& settings, StsPolicyPtr sts) {
    if (row.outcome != Outcome::Found && row.outcome != Outcome::NotFound) return std::nullopt;
    if (row.outcome == Outcome::Found && row.policy.empty() && !row.sts_decides)
        return std::nullopt;
    CachedAnswer c;
    c.outcome = row.outcome;
    c.policy = row.policy;
    c.source = row.source;
    c.reason = row.reason;
    c.fetched_at = row.fetched_at;
    c.expires_at = row.expires_at;
    c.stale_until = row.stale_until;
    if (row.sts_decides) {
        c.sts = sts ? std::move(sts) : sts_policy_from_row(row);
        if (!c.sts) return std::nullopt;  // a body that no longer parses: look it up again
        c.sts_status = "cached";
        // Rendered under this process's settings, which may differ from the writer's.
        Answer a = DomainEngine::sts_decision(domain, *c.sts, c.sts_status, settings);
        c.outcome = a.outcome;
        c.policy = a.outcome == Outcome::Found ? a.policy : std::string();
        c.source = a.source;
        c.reason = a.reason;
        // MTA-STS answers are stale-served by their policy's max_age, never by stale_ttl.
        c.stale_until = stale_until(c.outcome, c.source, c.expires_at, c.sts.get(), 0);
    }
    return c;
}

int64_t refresh_time(int64_t fetched_at, int64_t expires_at, double jitter) {
    const int64_t life = std::max<int64_t>(expires_at - fetched_at, 0);
    const int64_t lead = std::clamp<int64_t>(life / 10, 1, 300);
    const double j = std::clamp(jitter, 0.0, 0.999999);
    const int64_t early = static_cast<int64_t>(std::floor(j * static_cast<double>(lead) / 2.0));
    return std::max(fetched_at, expires_at - lead - early);
}

int64_t refresh_backoff(int failures) {
    if (failures < 1) failures = 1;
    if (failures > 7) return 300;
    return std::min<int64_t>(int64_t{5} << (failures - 1), 300);
}

}  // namespace tlspolicy
