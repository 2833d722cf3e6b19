// PolicyResolver: the one entry point from a raw key to an Answer. It normalises the key,
// answers keys that need no lookup, applies static overrides, and hands recipient domains to
// the policy engine (sts/domain_engine.h: the DANE and MTA-STS engines together).
#pragma once

#include <memory>
#include <string_view>

#include "core/answer.h"
#include "core/config.h"
#include "util/domain.h"

namespace tlspolicy {

// A source of policies for recipient domains. Engines implement it.
class PolicyEngine {
  public:
    virtual ~PolicyEngine() = default;
    // Looks up `domain` (a KeyKind::Domain name) under `settings`; calls done exactly once,
    // possibly before returning.
    virtual void lookup(const std::string& domain, const PolicySettings& settings,
                        AnswerCallback done) = 0;
};

class PolicyResolver {
  public:
    // `engine` may be null (overrides only). Neither pointer is owned.
    PolicyResolver(std::shared_ptr<const Config> config, PolicyEngine* engine);

    // Looks up a raw key for socketmap map NAME `profile` ("" for tcp_table and the CLI).
    // Calls done exactly once, possibly before returning.
    void resolve(std::string_view raw_key, std::string_view profile, AnswerCallback done) const;

    // Swaps in a new configuration (SIGHUP); lookups already running keep the old one.
    void set_config(std::shared_ptr<const Config> config) { config_ = std::move(config); }
    const std::shared_ptr<const Config>& config() const { return config_; }

  private:
    std::shared_ptr<const Config> config_;
    PolicyEngine* engine_;
};

}  // namespace tlspolicy
