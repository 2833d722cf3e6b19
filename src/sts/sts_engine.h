// StsEngine: the MTA-STS half of the decision table (RFC 8461). For one recipient domain it
// looks up `_mta-sts.<domain>` TXT through the shared DnsClient, and when a policy must be
// fetched, the addresses of `mta-sts.<domain>` through it too (special addresses refused
// unless allowed), then fetches the policy with the HttpsFetcher pinned to those addresses.
// What it learns is kept per domain (StsState, core/sts_state.h) with RFC 8461 freshness;
// concurrent lookups of one domain share one resolution; one deadline bounds each.
#pragma once

#include <event2/event.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/config.h"
#include "core/sts_state.h"
#include "dns/dns_client.h"
#include "sts/https_fetch.h"

namespace tlspolicy {

inline constexpr std::size_t kMaxStsStates = 100000;  // domains remembered in memory

struct StsSettings {
    TtlBounds ttl;                         // clamps the TXT TTL
    bool allow_private_addresses = false;  // [mta_sts] allow_private_addresses
    int64_t deadline_ms = 45000;           // one domain's TXT + address lookups + fetch
};
StsSettings sts_settings(const Config& config);
FetchSettings fetch_settings(const Config& config);

// Everything one lookup saw (for the answer, the JSON details and the logs).
struct StsReport {
    std::string domain;
    StsOutcome outcome;
    bool txt_looked_up = false;
    DnsLookup txt;
    bool fetched = false;  // a fetch was attempted
    std::string fetch_host;
    std::vector<std::string> fetch_addresses;  // after the special-address guard
    std::vector<std::string> refused_addresses;
    FetchResult fetch;  // body dropped
    bool deadline_reached = false;
    int64_t txt_valid_until = 0;  // unix seconds
};

// The report as one JSON object.
std::string sts_report_json(const StsReport& report);

class StsEngine {
  public:
    using Clock = std::function<int64_t()>;  // unix seconds
    using ReportCallback = std::function<void(const StsReport&)>;

    StsEngine(event_base* base, std::shared_ptr<DnsClient> dns,
              std::shared_ptr<HttpsFetcher> fetcher, StsSettings settings, Clock clock = {});
    ~StsEngine();  // abandons running lookups without calling back

    // Looks up `domain` (a normalised recipient domain); cb is called exactly once, from the
    // loop or before returning.
    void gather(const std::string& domain, ReportCallback cb);

    // Reload: new lookups use the new resolver, fetcher and settings (null: keep the old);
    // running ones finish on the old. What is known of each domain is kept.
    void reconfigure(std::shared_ptr<DnsClient> dns, std::shared_ptr<HttpsFetcher> fetcher,
                     StsSettings settings);

    // Seeds what is known of `domain` with a policy from the shared cache (a restart, or
    // another process's fetch): kept when the domain has no live policy or an older one.
    void remember(const std::string& domain, StsPolicyPtr policy);
    // Forgets everything known of `domain` (`tlspolicy cache purge`).
    void forget(const std::string& domain) { states_.erase(domain); }

    std::size_t in_progress() const { return flights_.size(); }
    std::size_t known_domains() const { return states_.size(); }

  private:
    struct Flight;
    void finished(const std::string& domain, StsReport report);
    StsState& state(const std::string& domain);

    event_base* base_;
    std::shared_ptr<DnsClient> dns_;
    std::shared_ptr<HttpsFetcher> fetcher_;
    StsSettings settings_;
    Clock clock_;
    std::unordered_map<std::string, StsState> states_;
    std::unordered_map<std::string, std::shared_ptr<Flight>> flights_;
    std::unordered_map<std::string, std::vector<ReportCallback>> waiters_;
};

}  // namespace tlspolicy
