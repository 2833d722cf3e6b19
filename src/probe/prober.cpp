#include "probe/prober.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <ctime>

#include "cache/store.h"
#include "cli/cache_first.h"
#include "core/mta_sts.h"
#include "core/resolver.h"
#include "sts/domain_engine.h"
#include "util/address.h"
#include "util/domain.h"
#include "util/json.h"
#include "util/log.h"

namespace tlspolicy {

// ---- targets ----

ProbeTarget parse_probe_target(const std::string& text) {
    ProbeTarget t;
    t.text = log::sanitize(text, 300);
    std::string s = text;
    if (s.empty()) {
        t.error = "empty target";
        return t;
    }
    if (s.front() != '[') {
        // An email address: its domain (the last "@" ends a quoted local part too).
        const auto at = s.rfind('@');
        if (at != std::string::npos) s = s.substr(at + 1);
        const Key key = normalize_key(s);
        if (key.kind == KeyKind::Domain) {
            t.kind = ProbeTarget::Kind::Domain;
            t.name = key.name;
        } else if (key.kind == KeyKind::IpLiteral && at == std::string::npos) {
            t.error = "an IP address must be written [ADDRESS]";
        } else {
            t.error = key.reason.empty() ? "not a domain" : key.reason;
        }
        return t;
    }
    // "[host]" or "[host]:port"
    const auto close = s.find(']');
    if (close == std::string::npos) {
        t.error = "missing ]";
        return t;
    }
    std::string inner = s.substr(1, close - 1);
    const std::string rest = s.substr(close + 1);
    if (!rest.empty()) {
        if (rest.size() < 2 || rest[0] != ':' || rest.size() > 6 ||
            !std::all_of(rest.begin() + 1, rest.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
            rest[1] == '0') {
            t.error = "bad port";
            return t;
        }
        const long port = std::stol(rest.substr(1));
        if (port < 1 || port > 65535) {
            t.error = "bad port";
            return t;
        }
        t.port = static_cast<uint16_t>(port);
    }
    if (inner.size() > 5 && (inner.compare(0, 5, "IPv6:") == 0 || inner.compare(0, 5, "ipv6:") == 0))
        inner = inner.substr(5);
    if (inner.find(':') != std::string::npos ||
        std::all_of(inner.begin(), inner.end(),
                    [](char c) { return (c >= '0' && c <= '9') || c == '.'; })) {
        // An address literal: accepted only when it really is one.
        unsigned char buf[sizeof(in6_addr)];
        if (inet_pton(AF_INET, inner.c_str(), buf) != 1 &&
            inet_pton(AF_INET6, inner.c_str(), buf) != 1) {
            t.error = "not an IP address";
            return t;
        }
        t.kind = ProbeTarget::Kind::Address;
        t.name = inner;
        return t;
    }
    auto host = canonical_domain(inner);
    if (!host) {
        t.error = host.error().message;
        return t;
    }
    t.kind = ProbeTarget::Kind::Host;
    t.name = *host;
    return t;
}

// ---- what each host must show ----

const char* need_name(Need n) {
    switch (n) {
        case Need::Dane: return "dane";
        case Need::Pkix: return "pkix";
        case Need::Encrypt: return "encrypt";
        case Need::Opportunistic: return "opportunistic";
        case Need::Refuse: return "refuse";
    }
    return "?";
}

HostNeed host_need(const Answer& policy, const DaneFacts&, const HostFacts& host,
                   const StoredStsPolicy* sts) {
    HostNeed n;
    n.sni = host.name;
    if (policy.outcome != Outcome::Found) {
        n.why = "no policy: Postfix's own TLS level applies";
        return n;
    }
    const std::string word = policy.policy.substr(0, policy.policy.find(' '));
    const HostDane kind = classify_host(host);
    auto dane = [&](const std::string& why) {
        n.need = Need::Dane;
        n.why = why;
        n.tlsa = host.tlsa.back().tlsa;
        n.names = host.reference_names;
        n.sni = host.base_domain;
    };
    const std::string kind_name(host_dane_name(kind));
    if (word == "dane-only") {
        if (kind == HostDane::Usable) {
            dane("dane-only: usable TLSA records at " + host.tlsa.back().name);
        } else {
            n.need = Need::Refuse;
            n.why = "dane-only: no usable TLSA records for this host (" + kind_name +
                    "): Postfix defers it";
        }
    } else if (word == "dane") {
        if (kind == HostDane::Usable) {
            dane("dane: usable TLSA records at " + host.tlsa.back().name);
        } else if (kind == HostDane::Unusable) {
            n.need = Need::Encrypt;
            n.why = "dane: TLSA records, none usable: TLS mandatory, not authenticated";
        } else if (kind == HostDane::TlsaError) {
            n.need = Need::Refuse;
            n.why = "dane: TLSA lookup error: Postfix defers this host";
        } else {
            n.why = "dane: no DANE for this host (" + kind_name + "): opportunistic TLS";
        }
    } else if (word == "encrypt") {
        n.need = Need::Encrypt;
        n.why = "encrypt: TLS mandatory, not authenticated";
    } else if (word == "verify" || word == "secure") {
        if (policy.source == Source::MtaSts && sts) {
            const auto& mx = sts->policy.mx;
            const bool listed = std::any_of(mx.begin(), mx.end(), [&](const std::string& p) {
                return sts_mx_matches(p, host.name);
            });
            if (!listed) {
                n.need = Need::Refuse;
                std::string patterns;
                for (const auto& p : mx) patterns += (patterns.empty() ? "" : ", ") + p;
                n.why = "MTA-STS: the MX host matches no policy pattern (" + patterns + ")";
                return n;
            }
            n.need = Need::Pkix;
            n.why = "MTA-STS " + std::string(sts_mode_name(sts->policy.mode)) +
                    ": PKIX certificate for the MX host name";
        } else {
            n.need = Need::Pkix;
            n.why = word + ": PKIX certificate, checked for the MX host name";
        }
    } else {
        n.why = word + ": nothing to verify";
    }
    return n;
}

// ---- judging ----

const char* addr_status_name(AddrStatus s) {
    switch (s) {
        case AddrStatus::Verified: return "verified";
        case AddrStatus::Encrypted: return "encrypted";
        case AddrStatus::Plaintext: return "plaintext";
        case AddrStatus::Failed: return "failed";
        case AddrStatus::Unreachable: return "unreachable";
    }
    return "?";
}

Judgement judge_probe(const HostNeed& need, const std::string& host, const SmtpProbeResult& p,
                      const std::string& ca_file) {
    const std::string where =
        p.error.empty() ? "" : std::string(probe_stage_name(p.stage)) + ": " + p.error;
    if (!p.connected) return {AddrStatus::Unreachable, where};
    if (!p.tls) {
        // No SMTP conversation at all: Postfix moves on whatever the policy.
        if (p.stage == ProbeStage::Banner || p.stage == ProbeStage::Ehlo || p.banner.empty())
            return {AddrStatus::Unreachable, where};
        if (need.need == Need::Opportunistic)
            return {AddrStatus::Plaintext,
                    where + "; Postfix would deliver in cleartext (" + need.why + ")"};
        if (need.need == Need::Refuse) return {AddrStatus::Failed, need.why};
        return {AddrStatus::Failed, where + "; the policy requires TLS (" + need.why + ")"};
    }
    if (p.stage == ProbeStage::TlsEhlo || p.stage == ProbeStage::Banner)
        return {AddrStatus::Failed, where};
    switch (need.need) {
        case Need::Refuse:
            return {AddrStatus::Failed, need.why};
        case Need::Dane: {
            const CertCheck c = verify_dane(p.chain, need.tlsa, need.names);
            if (c.ok) return {AddrStatus::Verified, c.how};
            return {AddrStatus::Failed, "DANE: " + c.reason};
        }
        case Need::Pkix: {
            const CertCheck c = verify_pkix(p.chain, ca_file, host);
            if (c.ok) return {AddrStatus::Verified, c.how};
            return {AddrStatus::Failed, "PKIX: " + c.reason};
        }
        case Need::Encrypt:
            return {AddrStatus::Encrypted, "not authenticated, as the policy allows (" + need.why + ")"};
        case Need::Opportunistic:
            return {AddrStatus::Encrypted, "not authenticated (" + need.why + ")"};
    }
    return {AddrStatus::Failed, "?"};
}

// ---- verdict ----

const char* verdict_name(VerdictKind v) {
    switch (v) {
        case VerdictKind::Deliver: return "deliver";
        case VerdictKind::Downgrade: return "downgrade";
        case VerdictKind::Defer: return "defer";
        case VerdictKind::NoServers: return "no-servers";
        case VerdictKind::PolicyTemp: return "policy-temp";
    }
    return "?";
}

namespace {

std::string endpoint_text(const std::string& address, uint16_t port) {
    const bool v6 = address.find(':') != std::string::npos;
    return (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
}

}  // namespace

void conclude(TargetReport& r) {
    const Outcome o = r.policy.outcome;
    if (o != Outcome::Found && o != Outcome::NotFound) {
        r.verdict = VerdictKind::PolicyTemp;
        r.verdict_reason = "the policy lookup failed (" + r.policy.reason + "): Postfix defers the mail";
        r.exit_code = 75;
        return;
    }
    if (r.addresses.empty()) {
        r.verdict = VerdictKind::NoServers;
        r.verdict_reason = "no mail server to connect to";
        if (!r.notes.empty()) r.verdict_reason += " (" + r.notes.front().host + ": " + r.notes.front().note + ")";
        else if (!r.policy.reason.empty()) r.verdict_reason += " (" + r.policy.reason + ")";
        r.exit_code = 2;
        return;
    }
    std::size_t reached = 0, bad = 0;
    for (const auto& a : r.addresses) {
        if (!a.probe.banner.empty()) ++reached;  // an SMTP server answered there
        if (a.judgement.status == AddrStatus::Failed || a.judgement.status == AddrStatus::Unreachable)
            ++bad;
    }
    r.exit_code = reached == 0 ? 2 : bad > 0 ? 1 : 0;
    std::size_t skipped = 0;
    for (const auto& a : r.addresses) {
        const AddrStatus s = a.judgement.status;
        if (s == AddrStatus::Failed || s == AddrStatus::Unreachable) {
            ++skipped;
            continue;
        }
        const std::string to = a.host + " [" + a.address + "]" +
                               (skipped ? " after " + std::to_string(skipped) + " address" +
                                              (skipped > 1 ? "es" : "") + " failed"
                                        : "");
        if (s == AddrStatus::Verified) {
            r.verdict = VerdictKind::Deliver;
            r.verdict_reason = "Postfix would deliver to " + to + " over verified TLS (" +
                               a.judgement.detail + ")";
        } else if (s == AddrStatus::Encrypted && a.need.need == Need::Encrypt) {
            r.verdict = VerdictKind::Deliver;
            r.verdict_reason = "Postfix would deliver to " + to +
                               " over TLS without authentication, as the policy asks";
        } else if (s == AddrStatus::Encrypted) {
            r.verdict = VerdictKind::Downgrade;
            r.verdict_reason = "Postfix would deliver to " + to +
                               " over unauthenticated TLS: an attacker on the path could "
                               "intercept it";
        } else {
            r.verdict = VerdictKind::Downgrade;
            r.verdict_reason = "Postfix would deliver to " + to +
                               " in cleartext: an attacker on the path could read it";
        }
        return;
    }
    r.verdict = VerdictKind::Defer;
    r.verdict_reason = "no server meets the policy: Postfix would defer the mail";
}

// ---- reports ----

namespace {

std::string policy_text(const TargetReport& r) {
    const Answer& p = r.policy;
    std::string s;
    switch (p.outcome) {
        case Outcome::Found: s = p.policy; break;
        case Outcome::NotFound: s = "not found"; break;
        default: s = "temporary failure"; break;
    }
    s += " (" + std::string(source_name(p.source)) + (r.policy_cached ? ", cached" : "") + ")";
    if (!p.reason.empty()) s += ": " + p.reason;
    return s;
}

}  // namespace

std::string report_text(const TargetReport& r) {
    std::string out = r.target.text + ": policy " + policy_text(r) + "\n";
    for (const auto& n : r.notes) out += "  " + n.host + ": " + n.note + "\n";
    for (const auto& a : r.addresses) {
        out += "  " + a.host + " " + endpoint_text(a.address, a.port) + " ";
        out += a.probe.tls ? a.probe.tls_version : a.probe.connected ? "no-TLS" : "-";
        out += " " + std::string(addr_status_name(a.judgement.status));
        if (!a.judgement.detail.empty()) out += ": " + a.judgement.detail;
        out += "\n";
        if (a.leaf) {
            const CertSummary& c = *a.leaf;
            if (!c.error.empty()) {
                out += "    certificate: " + c.error + "\n";
            } else {
                out += "    certificate: subject " + c.subject + "; issuer " + c.issuer +
                       "; valid " + iso_time(c.not_before) + " to " + iso_time(c.not_after);
                if (!c.dns_names.empty()) {
                    out += "; names";
                    for (const auto& d : c.dns_names) out += " " + d;
                }
                out += "\n";
            }
            out += "    cipher: " + a.probe.cipher + "\n";
        }
    }
    out += "verdict: " + std::string(verdict_name(r.verdict)) + ": " + r.verdict_reason + "\n";
    return out;
}

std::string report_json(const TargetReport& r) {
    std::string o = "{\"target\":" + json_string(r.target.text);
    o += ",\"domain\":" + json_string(r.target.name);
    o += ",\"policy\":{\"outcome\":" + json_string(outcome_name(r.policy.outcome));
    o += ",\"policy\":" +
         (r.policy.outcome == Outcome::Found ? json_string(r.policy.policy) : std::string("null"));
    o += ",\"source\":" + json_string(source_name(r.policy.source));
    o += ",\"cached\":" + std::string(r.policy_cached ? "true" : "false");
    o += ",\"reason\":" + json_string(r.policy.reason) + "}";
    o += ",\"hosts_without_addresses\":[";
    for (std::size_t i = 0; i < r.notes.size(); ++i) {
        o += (i ? "," : "") + std::string("{\"host\":") + json_string(r.notes[i].host) +
             ",\"note\":" + json_string(r.notes[i].note) + "}";
    }
    o += "],\"addresses\":[";
    for (std::size_t i = 0; i < r.addresses.size(); ++i) {
        const AddressReport& a = r.addresses[i];
        if (i) o += ",";
        o += "{\"host\":" + json_string(a.host) + ",\"address\":" + json_string(a.address) +
             ",\"port\":" + std::to_string(a.port);
        o += ",\"need\":" + json_string(need_name(a.need.need)) + ",\"why\":" + json_string(a.need.why);
        o += ",\"sni\":" + json_string(a.need.sni);
        o += ",\"connected\":" + std::string(a.probe.connected ? "true" : "false");
        o += ",\"banner\":" + json_string(a.probe.banner);
        o += ",\"starttls\":" + std::string(a.probe.starttls_offered ? "true" : "false");
        o += ",\"tls\":" + std::string(a.probe.tls ? "true" : "false");
        o += ",\"tls_version\":" + json_string(a.probe.tls_version);
        o += ",\"cipher\":" + json_string(a.probe.cipher);
        o += ",\"stage\":" + json_string(probe_stage_name(a.probe.stage));
        o += ",\"error\":" + json_string(a.probe.error);
        o += ",\"elapsed_ms\":" + std::to_string(a.probe.elapsed_ms);
        if (a.leaf && a.leaf->error.empty()) {
            o += ",\"certificate\":{\"subject\":" + json_string(a.leaf->subject) +
                 ",\"issuer\":" + json_string(a.leaf->issuer) +
                 ",\"not_before\":" + json_string(iso_time(a.leaf->not_before)) +
                 ",\"not_after\":" + json_string(iso_time(a.leaf->not_after)) + ",\"names\":";
            json_append_strings(o, a.leaf->dns_names);
            o += ",\"chain_length\":" + std::to_string(a.probe.chain.size()) + "}";
        }
        o += ",\"result\":" + json_string(addr_status_name(a.judgement.status));
        o += ",\"detail\":" + json_string(a.judgement.detail) + "}";
    }
    o += "],\"verdict\":" + json_string(verdict_name(r.verdict));
    o += ",\"verdict_reason\":" + json_string(r.verdict_reason);
    o += ",\"exit_code\":" + std::to_string(r.exit_code) + "}";
    return o;
}

// ---- running ----

struct Prober::Run : std::enable_shared_from_this<Run> {
    event_base* base = nullptr;
    const Config* config = nullptr;
    DomainEngine* engine = nullptr;        // the policy (TLSA at _25._tcp, as the daemon)
    DomainEngine* facts_engine = nullptr;  // the hosts (TLSA at the port probed)
    CacheStore* store = nullptr;
    ProbeOptions options;
    Callback done;
    TargetReport report;
    uint16_t port = 25;
    std::shared_ptr<const Resolution> resolution;
    DaneFacts host_facts;  // Host targets, or the facts at another port
    std::vector<std::unique_ptr<SmtpProbe>> probes;
    std::size_t next = 0, running = 0, finished = 0;
    bool cancelled = false;
    bool no_sni = false;
    bool capped = false;  // kMaxProbeAddresses reached

    const PolicySettings& settings() const { return config->policy; }

    void start(const ProbeTarget& target) {
        report.target = target;
        port = target.port ? target.port : options.port;
        auto self = shared_from_this();
        PolicyResolver resolver(std::shared_ptr<const Config>(config, [](const Config*) {}), nullptr);
        if (target.kind == ProbeTarget::Kind::Domain) {
            // The answer Postfix would get: an override, a fresh row of the cache file, or the
            // engines' (which also give the facts needed to judge every host).
            CacheFirst cache_first(store, *engine);
            std::optional<Answer> cached = cache_first.cached(target.name, settings());
            engine->resolve(target.name, [self, cached](std::shared_ptr<const Resolution> res) {
                if (self->cancelled) return;
                self->resolution = res;
                Answer a;
                PolicyResolver overrides(
                    std::shared_ptr<const Config>(self->config, [](const Config*) {}), nullptr);
                bool overridden = false;
                overrides.resolve(self->report.target.name, "", [&](Answer o) {
                    if (o.source == Source::Override) {
                        a = std::move(o);
                        overridden = true;
                    }
                });
                if (!overridden) {
                    if (cached) {
                        a = *cached;
                        self->report.policy_cached = true;
                    } else {
                        a = res->answer(self->settings());
                    }
                }
                self->report.policy = std::move(a);
                const StoredStsPolicy* sts =
                    res->sts.outcome.policy ? res->sts.outcome.policy.get() : nullptr;
                if (self->facts_engine == self->engine) return self->with_facts(res->facts, sts);
                // Another port: the policy is the port-25 one Postfix gets, but the hosts are
                // judged by the TLSA records of the port probed (RFC 7672 §2.2.3).
                self->facts_engine->dane_engine().gather(
                    self->report.target.name, [self, sts](const DaneFacts& f, const DaneDecision&) {
                        if (self->cancelled) return;
                        self->host_facts = f;
                        self->with_facts(self->host_facts, sts);
                    });
            });
            return;
        }
        const std::string key = "[" + target.name + "]" +
                                (target.port ? ":" + std::to_string(target.port) : "");
        resolver.resolve(key, "", [&](Answer a) { report.policy = std::move(a); });
        if (target.kind == ProbeTarget::Kind::Address) {
            DaneFacts facts;
            HostFacts h;
            h.name = target.name;
            h.addresses_done = true;
            (target.name.find(':') != std::string::npos ? h.aaaa : h.a).addresses = {target.name};
            facts.hosts.push_back(h);
            host_facts = facts;
            no_sni = true;  // RFC 6066 §3: a literal address is not a server name
            return with_facts(host_facts, nullptr);
        }
        facts_engine->dane_engine().gather_host(target.name,
                                          [self](const DaneFacts& f, const DaneDecision&) {
                                              if (self->cancelled) return;
                                              self->host_facts = f;
                                              self->with_facts(self->host_facts, nullptr);
                                          });
    }

    void with_facts(const DaneFacts& facts, const StoredStsPolicy* sts) {
        const Outcome o = report.policy.outcome;
        if (o != Outcome::Found && o != Outcome::NotFound) return finish();
        // A `[host]` next-hop has no policy of its own: judge it as Postfix's `dane` level does.
        Answer judged_as = report.policy;
        if (report.target.kind == ProbeTarget::Kind::Host && o == Outcome::NotFound)
            judged_as = Answer::found("dane", Source::None, "");
        for (const HostFacts& h : facts.hosts) {
            std::vector<std::string> addrs;
            if (options.ipv4) addrs.insert(addrs.end(), h.a.addresses.begin(), h.a.addresses.end());
            if (options.ipv6)
                addrs.insert(addrs.end(), h.aaaa.addresses.begin(), h.aaaa.addresses.end());
            if (addrs.empty()) {
                std::string note;
                if (h.a.failed() && report.target.kind != ProbeTarget::Kind::Address)
                    note = "address lookup failed: " + h.a.reason;
                else if (h.aaaa.failed() && report.target.kind != ProbeTarget::Kind::Address)
                    note = "address lookup failed: " + h.aaaa.reason;
                else
                    note = !options.ipv4 ? "no IPv6 address"
                           : !options.ipv6 ? "no IPv4 address"
                                           : "no address";
                report.notes.push_back({h.name, note});
                continue;
            }
            HostNeed need = host_need(judged_as, facts, h, sts);
            if (report.target.kind == ProbeTarget::Kind::Host && o == Outcome::NotFound)
                need.why = "no policy for a next-hop; judged as Postfix's dane level: " + need.why;
            for (const std::string& addr : addrs) {
                if (report.addresses.size() >= kMaxProbeAddresses) {
                    if (!capped)
                        report.notes.push_back(
                            {h.name, "address " + addr + " and any after it not probed (at most " +
                                         std::to_string(kMaxProbeAddresses) + " addresses)"});
                    capped = true;
                    break;
                }
                AddressReport a;
                a.host = h.name;
                a.address = addr;
                a.port = port;
                a.need = need;
                const std::string_view special = special_address_kind(addr);
                if (!special.empty() && !config->mta_sts.allow_private_addresses) {
                    // Not a conversation: the same guard as the MTA-STS fetcher's.
                    a.probe.error = "not probed: " + std::string(special) +
                                    " address (mta_sts.allow_private_addresses = false)";
                    a.judgement = {AddrStatus::Unreachable, a.probe.error};
                }
                report.addresses.push_back(std::move(a));
            }
        }
        probes.resize(report.addresses.size());
        pump();
    }

    bool skipped(const AddressReport& a) const {
        return !a.probe.connected && a.probe.error.rfind("not probed: ", 0) == 0;
    }

    void pump() {
        while (running < std::max<std::size_t>(1, options.parallel) && next < report.addresses.size()) {
            const std::size_t i = next++;
            AddressReport& a = report.addresses[i];
            if (skipped(a)) {
                ++finished;
                continue;
            }
            SmtpProbeSettings s;
            s.address = a.address;
            s.port = a.port;
            s.sni = no_sni ? "" : a.need.sni;
            s.helo = options.helo;
            s.tls_on_connect = options.tls_on_connect;
            s.connect_timeout_ms = options.connect_timeout_ms;
            s.read_timeout_ms = options.read_timeout_ms;
            ++running;
            // The probes live as long as this run, so `this` outlives their callbacks.
            probes[i] = SmtpProbe::start(base, s,
                                         [this, i](const SmtpProbeResult& res) { probed(i, res); });
        }
        if (finished == report.addresses.size()) finish();
    }

    void probed(std::size_t i, const SmtpProbeResult& res) {
        if (cancelled) return;
        AddressReport& a = report.addresses[i];
        a.probe = res;
        if (!res.chain.empty()) a.leaf = describe_certificate(res.chain.front());
        a.judgement = judge_probe(a.need, a.host, res, config->mta_sts.ca_file);
        --running;
        ++finished;
        pump();
    }

    bool reported = false;
    void finish() {
        if (reported) return;
        reported = true;
        conclude(report);
        auto cb = std::move(done);
        cb(std::move(report));
    }
};

Prober::Prober(event_base* base, const Config& config, DomainEngine& engine,
               DomainEngine& facts_engine, CacheStore* store, ProbeOptions options)
    : base_(base),
      config_(config),
      engine_(engine),
      facts_engine_(facts_engine),
      store_(store),
      options_(std::move(options)) {}

Prober::~Prober() {
    if (current_) current_->cancelled = true;
}

void Prober::run(const ProbeTarget& target, Callback cb) {
    auto r = std::make_shared<Run>();
    r->base = base_;
    r->config = &config_;
    r->engine = &engine_;
    r->facts_engine = &facts_engine_;
    r->store = store_;
    r->options = options_;
    r->done = std::move(cb);
    current_ = r;
    r->start(target);
}

}  // namespace tlspolicy
