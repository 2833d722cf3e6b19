// DomainEngine: the whole decision table of docs/architecture.md section 1 for recipient
// domains. It owns the resolver, the HTTPS fetcher, the DANE engine and the MTA-STS engine,
// runs both halves of one lookup in parallel, and combines them (RFC 8461 §2): DANE is decided
// first; an MTA-STS policy applies only when DANE says "no DANE", and never replaces a DANE
// answer or a DANE lookup failure.
#pragma once

#include <event2/event.h>

#include <functional>
#include <memory>
#include <string>

#include "core/config.h"
#include "core/resolver.h"
#include "dns/dane_engine.h"
#include "sts/sts_engine.h"
#include "util/result.h"

namespace tlspolicy {

// Everything one resolution of a domain found: both halves, for every profile.
struct Resolution {
    DaneFacts facts;
    DaneDecision dane;
    StsReport sts;
    int64_t now = 0;  // unix seconds when it was combined
    // The answer under `settings` (DomainEngine::combine).
    Answer answer(const PolicySettings& settings) const;
};

// What the policy cache needs of the engines: DomainEngine, or a fake in tests.
class DomainResolver {
  public:
    using ResolutionCallback = std::function<void(std::shared_ptr<const Resolution>)>;
    virtual ~DomainResolver() = default;
    // Resolves `domain`; cb is called exactly once, from the loop or before returning.
    virtual void resolve(const std::string& domain, ResolutionCallback cb) = 0;
    // The MTA-STS memory: see StsEngine::remember / forget.
    virtual void remember_sts(const std::string& domain, StsPolicyPtr policy) = 0;
    virtual void forget(const std::string& domain) = 0;
};

class DomainEngine : public PolicyEngine, public DomainResolver {
  public:
    // Fails with a clear message when the resolver (trust anchors) or libcurl cannot be set up.
    // `smtp_port` names the TLSA records looked up (_<port>._tcp; `tlspolicy probe --port`).
    static Result<std::unique_ptr<DomainEngine>> create(event_base* base, const Config& config,
                                                        StsEngine::Clock clock = {},
                                                        uint16_t smtp_port = 25);

    // The DANE half alone (`tlspolicy probe` of a `[host]` next-hop).
    DaneEngine& dane_engine() { return *dane_; }

    // PolicyEngine: the answer for a recipient domain; details hold {"dane":…,"mta_sts":…}.
    void lookup(const std::string& domain, const PolicySettings& settings,
                AnswerCallback done) override;

    // DomainResolver: both halves in parallel. Logs a warning when a freshly fetched
    // MTA-STS policy refuses an MX host.
    void resolve(const std::string& domain, ResolutionCallback cb) override;
    void remember_sts(const std::string& domain, StsPolicyPtr policy) override {
        sts_->remember(domain, std::move(policy));
    }
    void forget(const std::string& domain) override { sts_->forget(domain); }

    // Reload in two steps, so a reload that fails elsewhere changes nothing: prepare() builds
    // a new resolver when [dns] changed and a new fetcher when [mta_sts] changed (or says why
    // it cannot); apply() swaps them in. Running lookups finish on the old ones; MTA-STS
    // policies already known are kept.
    struct Reconfig {
        std::shared_ptr<DnsClient> dns;         // null: unchanged
        std::shared_ptr<HttpsFetcher> fetcher;  // null: unchanged
        Config::Dns dns_config;
        Config::MtaSts sts_config;
        DaneLimits dane_limits;
        StsSettings sts_settings;
    };
    Result<Reconfig> prepare(const Config& next) const;
    void apply(Reconfig next);

    std::size_t in_progress() const { return dane_->in_progress() + sts_->in_progress(); }

    // The decision table's combination of the two halves at unix time `now` (exposed for
    // tests): the answer, its TTL and the JSON details, including each MX host checked
    // against the MTA-STS patterns.
    static Answer combine(const DaneFacts& facts, const DaneDecision& dane, const StsReport& sts,
                          const PolicySettings& settings, int64_t now);

    // The rows of the table where DANE said "no DANE" and an MTA-STS policy is in force:
    // enforce, encrypt (testing_mode = encrypt) or not found, under `settings`. `status` is
    // how the policy was obtained ("found", "renewed", ...), for the reason.
    static Answer sts_decision(const std::string& domain, const StoredStsPolicy& policy,
                               const std::string& status, const PolicySettings& settings);

    // The line for a computed (not cached) answer, at `level`:
    // "<domain>: <policy | not found | temporary failure | error> (<source>) in <N> ms: <reason>",
    // with the same values as fields of a JSON line.
    static void log_computed(const std::string& domain, const Answer& answer, int64_t duration_ms,
                             log::Level level = log::Level::Info);

    // The MX hosts of `facts` that an MTA-STS policy in force would refuse ("" when none).
    static std::string refused_mx(const DaneFacts& facts, const StsReport& sts);

  private:
    DomainEngine() = default;
    event_base* base_ = nullptr;
    StsEngine::Clock clock_;
    Config::Dns dns_config_;
    Config::MtaSts sts_config_;
    std::unique_ptr<DaneEngine> dane_;
    std::unique_ptr<StsEngine> sts_;
};

}  // namespace tlspolicy
