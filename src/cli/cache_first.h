// CacheFirst: the policy engine of the command-line tool (`query`, `probe`). A row of the
// cache file that is still fresh answers, with the reason and details stored with it, as the
// daemon would; otherwise the engines look the domain up, knowing the MTA-STS policy the row
// holds (RFC 8461 §5.1 caching). The cache file is only read.
#pragma once

#include <optional>
#include <string>
#include <unordered_set>

#include "cache/store.h"
#include "core/resolver.h"
#include "sts/domain_engine.h"

namespace tlspolicy {

class CacheFirst : public PolicyEngine {
  public:
    // `store` may be null (no cache file, or `--fresh`).
    CacheFirst(CacheStore* store, DomainEngine& engine) : store_(store), engine_(engine) {}

    void lookup(const std::string& domain, const PolicySettings& settings,
                AnswerCallback done) override;

    // The fresh answer of the cache file for `domain` under `settings`, if there is one;
    // otherwise the row's MTA-STS policy (if any) is handed to the engine and nullopt returned.
    std::optional<Answer> cached(const std::string& domain, const PolicySettings& settings);

    bool answered_from_cache(const std::string& domain) const {
        return from_cache_.count(domain) > 0;
    }

  private:
    CacheStore* store_;
    DomainEngine& engine_;
    std::unordered_set<std::string> from_cache_;
};

}  // namespace tlspolicy
