// `tlspolicy probe`: connect to a target's mail servers and judge them against the policy
// tlspolicyd computes for it. The pure parts (what a target is, what each host must show,
// how a conversation is judged, the final verdict) are separate functions, tested by tables;
// Prober runs them over real DNS (the engines) and SMTP (probe/smtp_probe.h).
#pragma once

#include <event2/event.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/answer.h"
#include "core/config.h"
#include "core/dane.h"
#include "core/sts_state.h"
#include "probe/smtp_probe.h"
#include "probe/verify.h"

namespace tlspolicy {

class DomainEngine;
class CacheStore;

// ---- targets ----

struct ProbeTarget {
    enum class Kind { Domain, Host, Address, Invalid };
    Kind kind = Kind::Invalid;
    std::string text;   // as given (sanitized)
    std::string name;   // Domain: the normalised recipient domain; Host: the host (A-labels);
                        // Address: the IP address
    uint16_t port = 0;  // from "[host]:port" (0: the default port)
    std::string error;  // for Invalid
};
// A domain ("Example.org", U-labels too), an email address (its domain), "[host]",
// "[host]:port", "[192.0.2.1]", "[IPv6:2001:db8::1]:587".
ProbeTarget parse_probe_target(const std::string& text);

// ---- what each host must show ----

enum class Need {
    Dane,           // DANE-verified TLS (usable TLSA records)
    Pkix,           // PKIX-verified TLS for the MX host name (MTA-STS, verify, secure)
    Encrypt,        // TLS, not authenticated
    Opportunistic,  // nothing required: TLS if offered, else cleartext
    Refuse,         // the policy makes Postfix skip this host whatever it offers
};
const char* need_name(Need n);  // "dane", "pkix", "encrypt", "opportunistic", "refuse"

struct HostNeed {
    Need need = Need::Opportunistic;
    std::string why;                  // short: which rule of the policy asks for it
    std::vector<TlsaRecord> tlsa;     // Dane: the records of the base domain
    std::vector<std::string> names;   // Dane: the reference names
    std::string sni;                  // the TLS server name to send
};

// What `policy` (the answer Postfix would get) asks of `host`. `sts` is the MTA-STS policy in
// force when the answer came from one; `facts` the DANE facts of the domain.
HostNeed host_need(const Answer& policy, const DaneFacts& facts, const HostFacts& host,
                   const StoredStsPolicy* sts);

// ---- judging one conversation ----

enum class AddrStatus {
    Verified,     // TLS and the required authentication
    Encrypted,    // TLS without authentication, and the policy asks no more
    Plaintext,    // no TLS, and the policy allows it (opportunistic)
    Failed,       // the server does not meet the policy: Postfix skips this address
    Unreachable,  // no SMTP conversation (refused, timeout, no greeting, not allowed)
};
const char* addr_status_name(AddrStatus s);  // "verified", "encrypted", ...

struct Judgement {
    AddrStatus status = AddrStatus::Failed;
    std::string detail;  // how it verified, or why not
};
Judgement judge_probe(const HostNeed& need, const std::string& host, const SmtpProbeResult& probe,
                      const std::string& ca_file);

// ---- reports ----

inline constexpr std::size_t kMaxProbeAddresses = 64;  // conversations per target

struct AddressReport {
    std::string host, address;
    uint16_t port = 25;
    HostNeed need;
    SmtpProbeResult probe;
    std::optional<CertSummary> leaf;
    Judgement judgement;
};

struct HostNote {  // a host without an address to try, and why
    std::string host;
    std::string note;
};

enum class VerdictKind { Deliver, Downgrade, Defer, NoServers, PolicyTemp };
const char* verdict_name(VerdictKind v);  // "deliver", "downgrade", "defer", ...

struct TargetReport {
    ProbeTarget target;
    Answer policy;
    bool policy_cached = false;  // a fresh row of the cache file gave the policy
    std::vector<AddressReport> addresses;  // in the order Postfix would try them
    std::vector<HostNote> notes;
    VerdictKind verdict = VerdictKind::Defer;
    std::string verdict_reason;
    // 0 all passed, 1 some failed, 2 no SMTP greeting from any address, 75 policy TEMP
    int exit_code = 0;
};

// Sets verdict, verdict_reason and exit_code from the rest of the report.
void conclude(TargetReport& report);

std::string report_text(const TargetReport& report);  // lines for people
std::string report_json(const TargetReport& report);  // one JSON object, one line

// ---- running it ----

struct ProbeOptions {
    uint16_t port = 25;
    bool tls_on_connect = false;
    bool ipv4 = true, ipv6 = true;
    std::size_t parallel = 8;  // conversations at once
    int64_t connect_timeout_ms = 10000;
    int64_t read_timeout_ms = 30000;
    std::string helo = "localhost";
};

class Prober {
  public:
    using Callback = std::function<void(TargetReport)>;
    // `engine` computes the policy as the daemon does (TLSA at _25._tcp); `facts_engine`
    // (the same one for port 25) gives the hosts' facts with TLSA at the port probed. `store`
    // (may be null) is the cache file, read only.
    Prober(event_base* base, const Config& config, DomainEngine& engine,
           DomainEngine& facts_engine, CacheStore* store, ProbeOptions options);
    ~Prober();
    // Probes one target (one at a time per Prober); cb is called once, possibly before run()
    // returns (a target with nothing to connect to).
    void run(const ProbeTarget& target, Callback cb);

  private:
    struct Run;
    event_base* base_;
    const Config& config_;
    DomainEngine& engine_;
    DomainEngine& facts_engine_;
    CacheStore* store_;
    ProbeOptions options_;
    std::shared_ptr<Run> current_;
};

}  // namespace tlspolicy
