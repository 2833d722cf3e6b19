// PolicyResolver: the one entry point from a raw key to an Answer. It normalises the key,
// answers keys that need no lookup, applies static overrides, and hands recipient domains to
// the policy engine (sts/domain_engine.h: the DANE and MTA-STS engines together).
#pragma once

#include <memory>
#include <optional>
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

    // The answer when it is known without waiting (a fresh cache entry), counted as lookup()
    // would count it; nullopt: call lookup(). Text the engine has to build goes into
    // `storage`; the view is valid until the engine or `storage` changes. Default: nullopt.
    virtual std::optional<AnswerView> lookup_now(const std::string& domain,
                                                 const PolicySettings& settings, Answer& storage) {
        (void)domain, (void)settings, (void)storage;
        return std::nullopt;
    }
};

// What a server session keeps between its lookups so that answering one allocates nothing.
struct LookupScratch {
    Key key;
    Answer answer;
};

class PolicyResolver {
  public:
    // `engine` may be null (overrides only). Neither pointer is owned.
    PolicyResolver(std::shared_ptr<const Config> config, PolicyEngine* engine);

    // Looks up a raw key for socketmap map NAME `profile` ("" for tcp_table and the CLI).
    // Calls done exactly once, possibly before returning.
    void resolve(std::string_view raw_key, std::string_view profile, AnswerCallback done) const;

    // The answer when it is known without waiting (an invalid or special key, an override, an
    // engine's lookup_now()); nullopt: call resolve(). The hot path of the server: no copy of
    // the answer's text, no callback. The view is valid until the configuration, the engine
    // or `storage` changes.
    std::optional<AnswerView> resolve_now(std::string_view raw_key, std::string_view profile,
                                          LookupScratch& scratch) const;

    // Swaps in a new configuration (SIGHUP); lookups already running keep the old one.
    void set_config(std::shared_ptr<const Config> config) { config_ = std::move(config); }
    const std::shared_ptr<const Config>& config() const { return config_; }

  private:
    // The answer for a key that needs no engine; nullopt for a domain the engine must decide.
    std::optional<AnswerView> without_engine(const Key& key, Answer& storage) const;

    std::shared_ptr<const Config> config_;
    PolicyEngine* engine_;
};

}  // namespace tlspolicy
