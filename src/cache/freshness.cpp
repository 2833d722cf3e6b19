#include "cache/freshness.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <unordered_map>

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

// The texts in use, by content. An entry leaves when its last holder does (the deleter);
// never destroyed, so SharedText objects alive at exit are safe.
struct TextPool {
    std::mutex mu;
    std::unordered_map<std::string_view, std::weak_ptr<const std::string>> texts;
};
TextPool& text_pool() {
    static auto* pool = new TextPool;
    return *pool;
}

}  // namespace

SharedText::SharedText(std::string_view text) {
    if (text.empty()) return;
    TextPool& pool = text_pool();
    std::lock_guard<std::mutex> g(pool.mu);
    if (auto it = pool.texts.find(text); it != pool.texts.end()) {
        if ((text_ = it->second.lock())) return;
        pool.texts.erase(it);  // its last holder is on the way out
    }
    const auto* owned = new std::string(text);
    text_ = std::shared_ptr<const std::string>(owned, [](const std::string* s) {
        TextPool& p = text_pool();
        {
            std::lock_guard<std::mutex> lock(p.mu);
            // Only this text's own slot: a new holder may have replaced it meanwhile.
            if (auto it = p.texts.find(*s); it != p.texts.end() && it->first.data() == s->data())
                p.texts.erase(it);
        }
        delete s;
    });
    pool.texts.emplace(*owned, text_);
}

namespace {
const std::string kStsStatuses[] = {"", "found", "renewed", "cached", "not_found", "errored"};
}

StsStatus& StsStatus::operator=(std::string_view status) {
    code_ = 0;
    for (uint8_t i = 1; i < std::size(kStsStatuses); ++i)
        if (kStsStatuses[i] == status) code_ = i;
    return *this;
}

const std::string& StsStatus::str() const {
    return kStsStatuses[code_];
}

const std::string& SharedText::str() const {
    static const std::string empty;
    return text_ ? *text_ : empty;
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
