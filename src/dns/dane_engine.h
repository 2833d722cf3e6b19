// DaneEngine: the DANE half of the decision table from real DNS (RFC 7672 §2.2). For one
// recipient domain it looks up the MX set (CNAMEs of the domain followed), then A and AAAA
// of every examined host in parallel, then TLSA at each host's base domain candidates when
// its addresses are secure, all under one per-domain deadline; decide_dane() turns the
// facts into the answer. Concurrent lookups of one domain share one resolution.
#pragma once

#include <event2/event.h>

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/config.h"
#include "core/dane.h"
#include "core/resolver.h"
#include "dns/dns_client.h"

namespace tlspolicy {

struct DaneLimits {
    int64_t deadline_ms = 15000;
    TtlBounds ttl;
    uint16_t smtp_port = 25;  // TLSA records are looked up at _<smtp_port>._tcp.<base>
};
DaneLimits dane_limits(const Config& config);
DnsSettings dns_settings(const Config& config);

class DaneEngine : public PolicyEngine {
  public:
    using FactsCallback = std::function<void(const DaneFacts&, const DaneDecision&)>;

    DaneEngine(event_base* base, std::shared_ptr<DnsClient> dns, DaneLimits limits);
    ~DaneEngine() override;

    // PolicyEngine: the DANE answer (dane-only, dane, encrypt, TEMP, or not found for "no
    // DANE" and for domains that receive no mail); details carry the facts as JSON.
    void lookup(const std::string& domain, const PolicySettings& settings,
                AnswerCallback done) override;

    // The facts and the decision for `domain`; cb is called exactly once, from the loop or
    // before returning.
    void gather(const std::string& domain, FactsCallback cb);

    // The facts for one host reached without an MX lookup (a `[host]` next-hop): its
    // addresses and TLSA records, as the only host of an implicit, insecure MX set (so the
    // host name is its only reference name). The decision in the callback is for that shape.
    void gather_host(const std::string& host, FactsCallback cb);

    // Reload: new lookups use the new resolver and limits; running ones finish on the old.
    void reconfigure(std::shared_ptr<DnsClient> dns, DaneLimits limits);

    std::size_t in_progress() const { return flights_.size(); }

    // The Answer for a decision (exposed for tests).
    static Answer answer_for(const DaneFacts& facts, const DaneDecision& decision);

  private:
    struct Gather;
    void start(const std::string& key, const std::string& name, bool host_only, FactsCallback cb);
    void finished(const std::string& key, const DaneFacts& facts);

    event_base* base_;
    std::shared_ptr<DnsClient> dns_;
    DaneLimits limits_;
    std::unordered_map<std::string, std::shared_ptr<Gather>> flights_;
    std::unordered_map<std::string, std::vector<FactsCallback>> waiters_;
};

}  // namespace tlspolicy
