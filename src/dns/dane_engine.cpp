#include "dns/dane_engine.h"

#include <algorithm>
#include <map>

#include "util/event.h"
#include "util/log.h"

namespace tlspolicy {

DaneLimits dane_limits(const Config& c) {
    DaneLimits l;
    l.deadline_ms = c.dns.deadline_ms;
    l.ttl.min_ttl = c.cache.min_ttl;
    l.ttl.max_ttl = c.cache.max_ttl;
    l.ttl.negative_ttl = c.cache.negative_ttl;
    return l;
}

DnsSettings dns_settings(const Config& c) {
    DnsSettings s;
    s.resolvers = c.dns.resolvers;
    s.trust_anchor_file = c.dns.trust_anchor_file;
    s.timeout_ms = c.dns.timeout_ms;
    s.max_queries = c.dns.max_queries;
    return s;
}

// One domain's resolution: a small state machine driven by DNS replies and the deadline.
struct DaneEngine::Gather : std::enable_shared_from_this<Gather> {
    using Step = std::function<void(DnsLookup)>;
    struct Active {
        std::string name;
        uint16_t type;
        Step step;
    };

    DaneEngine* engine = nullptr;
    std::shared_ptr<DnsClient> dns;
    std::string key;  // the flight's key: the domain, or "[host]" for gather_host
    uint16_t smtp_port = 25;
    DaneFacts facts;
    EventPtr deadline;
    std::map<DnsClient::QueryId, Active> active;
    std::vector<int> address_replies;  // per host: A/AAAA replies received
    bool done = false;

    void start(event_base* base, int64_t deadline_ms, bool host_only) {
        auto self = shared_from_this();
        deadline.reset(evtimer_new(
            base, [](evutil_socket_t, short, void* arg) { static_cast<Gather*>(arg)->expire(); },
            this));
        const timeval tv{static_cast<time_t>(deadline_ms / 1000),
                         static_cast<suseconds_t>((deadline_ms % 1000) * 1000)};
        evtimer_add(deadline.get(), &tv);
        if (host_only) {
            // No MX lookup: the host stands alone, like an implicit MX of an insecure set.
            facts.implicit_mx = true;
            facts.mx.name = facts.domain;
            facts.mx.type = kTypeMx;
            facts.mx.result = DnsResult::NoData;
            facts.mx.dnssec = Dnssec::Insecure;
            add_hosts({{0, facts.domain}});
        } else {
            ask(facts.domain, kTypeMx, [this](DnsLookup l) { on_mx(std::move(l)); });
        }
        maybe_finish();
    }

    void ask(const std::string& name, uint16_t type, Step step) {
        if (facts.deadline_reached) return;  // nothing new once the deadline passed
        auto self = shared_from_this();
        // The reply may arrive before query() returns (getdns refusing the name at once).
        auto id = std::make_shared<DnsClient::QueryId>(0);
        auto answered = std::make_shared<bool>(false);
        const DnsClient::QueryId qid =
            dns->query(name, type, [self, id, answered, step](DnsLookup l) {
                *answered = true;
                self->active.erase(*id);
                step(std::move(l));
                self->maybe_finish();
            });
        *id = qid;
        if (!*answered) active.emplace(qid, Active{name, type, std::move(step)});
    }

    // The per-domain deadline: every lookup still running ends as a timeout, and the
    // decision is made from what is known.
    void expire() {
        if (done) return;
        auto self = shared_from_this();
        facts.deadline_reached = true;
        auto running = std::move(active);
        active.clear();
        for (auto& [qid, a] : running) {
            dns->cancel(qid);
            DnsLookup l;
            l.name = a.name;
            l.type = a.type;
            l.result = DnsResult::Timeout;
            l.reason = "per-domain deadline reached";
            a.step(std::move(l));
        }
        maybe_finish();
    }

    void on_mx(DnsLookup l) {
        facts.mx = std::move(l);
        const DnsLookup& mx = facts.mx;
        if (mx.failed() || mx.result == DnsResult::NxDomain) return;
        std::vector<MxRecord> hosts;
        if (mx.result == DnsResult::NoData) {
            // RFC 5321 5.1: no MX records, the domain itself is the only host.
            facts.implicit_mx = true;
            hosts.push_back({0, facts.domain});
        } else {
            hosts = mx.mx;
            std::stable_sort(hosts.begin(), hosts.end(), [](const MxRecord& x, const MxRecord& y) {
                return x.preference != y.preference ? x.preference < y.preference : x.host < y.host;
            });
            // Null MX targets ("."): a domain with only those accepts no mail (RFC 7505);
            // mixed with real hosts, they are not hosts.
            std::vector<MxRecord> real;
            for (const auto& h : hosts) {
                if (h.host.empty()) continue;
                if (std::none_of(real.begin(), real.end(),
                                 [&](const MxRecord& r) { return r.host == h.host; }))
                    real.push_back(h);
            }
            if (real.empty()) {
                facts.null_mx = true;
                return;
            }
            hosts = std::move(real);
        }
        add_hosts(std::move(hosts));
    }

    void add_hosts(std::vector<MxRecord> hosts) {
        facts.mx_hosts = hosts.size();
        if (hosts.size() > kMaxMxHosts) hosts.resize(kMaxMxHosts);
        facts.hosts.resize(hosts.size());
        address_replies.assign(hosts.size(), 0);
        for (std::size_t i = 0; i < hosts.size(); ++i) {
            facts.hosts[i].name = hosts[i].host;
            facts.hosts[i].preference = hosts[i].preference;
        }
        for (std::size_t i = 0; i < hosts.size(); ++i) {
            ask(hosts[i].host, kTypeA, [this, i](DnsLookup a) {
                facts.hosts[i].a = std::move(a);
                on_address(i);
            });
            ask(hosts[i].host, kTypeAaaa, [this, i](DnsLookup a) {
                facts.hosts[i].aaaa = std::move(a);
                on_address(i);
            });
        }
    }

    void on_address(std::size_t i) {
        if (++address_replies[i] < 2) return;
        HostFacts& h = facts.hosts[i];
        h.addresses_done = true;
        // RFC 7672 2.2.2: TLSA only for hosts whose addresses are secure.
        const bool has_address = h.a.result == DnsResult::Data || h.aaaa.result == DnsResult::Data;
        if (has_address && h.a.secure() && h.aaaa.secure()) next_tlsa(i, 0);
    }

    void next_tlsa(std::size_t i, std::size_t k) {
        const auto candidates = tlsa_base_candidates(facts.hosts[i]);
        if (k >= candidates.size()) return;
        const std::string base = candidates[k];
        ask("_" + std::to_string(smtp_port) + "._tcp." + base, kTypeTlsa, [this, i, k, base](DnsLookup t) {
            HostFacts& h = facts.hosts[i];
            const bool found = t.secure() && t.result == DnsResult::Data;
            const bool failed = t.failed();
            h.tlsa.push_back(std::move(t));
            if (failed) return;  // a TLSA lookup error: Postfix defers this host
            if (found) {
                h.base_domain = base;
                h.reference_names = reference_names(facts, h);
                return;
            }
            next_tlsa(i, k + 1);  // insecure or denied: the next candidate
        });
    }

    void maybe_finish() {
        if (done || !active.empty()) return;
        done = true;
        deadline.reset();
        auto self = shared_from_this();  // the engine drops its reference in finished()
        engine->finished(key, facts);
    }
};

DaneEngine::DaneEngine(event_base* base, std::shared_ptr<DnsClient> dns, DaneLimits limits)
    : base_(base), dns_(std::move(dns)), limits_(limits) {}

DaneEngine::~DaneEngine() {
    // Lookups still running are abandoned without their callbacks (the loop is ending).
    for (auto& [domain, g] : flights_) {
        g->done = true;
        for (auto& [qid, a] : g->active)
            g->dns->cancel(qid);
        g->active.clear();
        g->deadline.reset();
    }
}

void DaneEngine::gather(const std::string& domain, FactsCallback cb) {
    start(domain, domain, false, std::move(cb));
}

void DaneEngine::gather_host(const std::string& host, FactsCallback cb) {
    start("[" + host + "]", host, true, std::move(cb));
}

void DaneEngine::start(const std::string& key, const std::string& name, bool host_only,
                       FactsCallback cb) {
    waiters_[key].push_back(std::move(cb));
    if (flights_.count(key)) return;  // joins the resolution already running
    auto g = std::make_shared<Gather>();
    g->engine = this;
    g->dns = dns_;
    g->key = key;
    g->smtp_port = limits_.smtp_port;
    g->facts.domain = name;
    flights_.emplace(key, g);
    g->start(base_, limits_.deadline_ms, host_only);
}

void DaneEngine::finished(const std::string& key, const DaneFacts& facts) {
    const DaneDecision decision = decide_dane(facts, limits_.ttl);
    auto waiting = std::move(waiters_[key]);
    waiters_.erase(key);
    auto keep = flights_[key];  // facts live in the flight until every waiter has run
    flights_.erase(key);
    for (auto& cb : waiting)
        cb(facts, decision);
}

Answer DaneEngine::answer_for(const DaneFacts& facts, const DaneDecision& d) {
    Answer a;
    switch (d.verdict) {
        case DaneVerdict::DaneOnly:
            a = Answer::found("dane-only", Source::Dane, d.reason);
            break;
        case DaneVerdict::Dane:
            a = Answer::found("dane", Source::Dane, d.reason);
            break;
        case DaneVerdict::Encrypt:
            a = Answer::found("encrypt", Source::Dane, d.reason);
            break;
        case DaneVerdict::NoDane:
            a = Answer::not_found("no DANE: " + d.reason);
            break;
        case DaneVerdict::NotFound:
            a = Answer::not_found(d.reason);
            break;
        case DaneVerdict::Temp:
            a = Answer::temp(d.reason);
            break;
    }
    a.ttl = d.ttl;
    a.details = dane_facts_json(facts, d);
    return a;
}

void DaneEngine::lookup(const std::string& domain, const PolicySettings&, AnswerCallback done) {
    gather(domain, [done = std::move(done)](const DaneFacts& f, const DaneDecision& d) {
        Answer a = answer_for(f, d);
        if (log::enabled(log::Level::Debug))
            log::debug(f.domain + ": " + std::string(dane_verdict_name(d.verdict)) + " (" + d.rule +
                       "): " + d.reason);
        done(std::move(a));
    });
}

void DaneEngine::reconfigure(std::shared_ptr<DnsClient> dns, DaneLimits limits) {
    if (dns) dns_ = std::move(dns);
    limits.smtp_port = limits_.smtp_port;  // not a configuration key: fixed at creation
    limits_ = limits;
}

}  // namespace tlspolicy
