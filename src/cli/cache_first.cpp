#include "cli/cache_first.h"

#include <ctime>

#include "cache/freshness.h"

namespace tlspolicy {

std::optional<Answer> CacheFirst::cached(const std::string& domain,
                                         const PolicySettings& settings) {
    if (!store_) return std::nullopt;
    auto row = store_->get(domain);
    if (!row || !*row) return std::nullopt;
    const CacheRow& r = **row;
    const auto now = static_cast<int64_t>(std::time(nullptr));
    if (r.expires_at > now) {
        if (auto c = cached_from_row(domain, r, settings)) {
            Answer a = render(domain, *c, settings, now);
            a.details = r.details;
            from_cache_.insert(domain);
            return a;
        }
    }
    if (auto p = sts_policy_from_row(r)) engine_.remember_sts(domain, std::move(p));
    return std::nullopt;
}

void CacheFirst::lookup(const std::string& domain, const PolicySettings& settings,
                        AnswerCallback done) {
    if (auto a = cached(domain, settings)) return done(std::move(*a));
    engine_.lookup(domain, settings, std::move(done));
}

}  // namespace tlspolicy
