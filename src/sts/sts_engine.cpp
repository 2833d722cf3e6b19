#include "sts/sts_engine.h"

#include <algorithm>
#include <ctime>
#include <map>

#include "util/address.h"
#include "util/event.h"
#include "util/json.h"
#include "util/log.h"

namespace tlspolicy {

StsSettings sts_settings(const Config& c) {
    StsSettings s;
    s.ttl.min_ttl = c.cache.min_ttl;
    s.ttl.max_ttl = c.cache.max_ttl;
    s.ttl.negative_ttl = c.cache.negative_ttl;
    s.allow_private_addresses = c.mta_sts.allow_private_addresses;
    // The DNS part gets the same budget as the DANE lookups, the fetch its own timeout.
    s.deadline_ms = c.dns.deadline_ms + c.mta_sts.timeout_ms;
    return s;
}

FetchSettings fetch_settings(const Config& c) {
    FetchSettings s;
    s.ca_file = c.mta_sts.ca_file;
    s.port = static_cast<uint16_t>(c.mta_sts.https_port);
    s.connect_timeout_ms = c.mta_sts.connect_timeout_ms;
    s.timeout_ms = c.mta_sts.timeout_ms;
    s.proxy = c.mta_sts.proxy;
    return s;
}

namespace {

int64_t system_now() {
    return static_cast<int64_t>(std::time(nullptr));
}

int64_t clamp_ttl(int64_t ttl, const TtlBounds& b) {
    if (ttl < 0) return b.min_ttl;
    return std::clamp<int64_t>(ttl, b.min_ttl, std::max(b.min_ttl, b.max_ttl));
}

void key(std::string& out, std::string_view k) {
    json_append_string(out, k);
    out += ':';
}

void string_member(std::string& out, std::string_view k, std::string_view v) {
    out += ',';
    key(out, k);
    json_append_string(out, v);
}

}  // namespace

std::string sts_report_json(const StsReport& r) {
    std::string out = "{";
    key(out, "status");
    json_append_string(out, r.outcome.status);
    if (!r.outcome.code.empty()) string_member(out, "code", r.outcome.code);
    string_member(out, "reason", r.outcome.reason);
    if (r.txt_looked_up) {
        out += ',';
        key(out, "txt");
        out += dns_lookup_json(r.txt);
    }
    if (r.fetched) {
        out += ',';
        key(out, "fetch");
        out += '{';
        key(out, "host");
        json_append_string(out, r.fetch_host);
        out += ',';
        key(out, "addresses");
        json_append_strings(out, r.fetch_addresses);
        if (!r.refused_addresses.empty()) {
            out += ',';
            key(out, "refused_addresses");
            json_append_strings(out, r.refused_addresses);
        }
        out += ",\"ok\":";
        out += r.fetch.ok ? "true" : "false";
        if (!r.fetch.code.empty()) string_member(out, "code", r.fetch.code);
        if (!r.fetch.reason.empty()) string_member(out, "reason", r.fetch.reason);
        if (r.fetch.status) out += ",\"http_status\":" + std::to_string(r.fetch.status);
        if (!r.fetch.content_type.empty()) string_member(out, "content_type", r.fetch.content_type);
        if (!r.fetch.address.empty()) string_member(out, "address", r.fetch.address);
        out += ",\"elapsed_ms\":" + std::to_string(r.fetch.elapsed_ms);
        out += '}';
    }
    if (r.outcome.policy) {
        const StoredStsPolicy& p = *r.outcome.policy;
        out += ',';
        key(out, "policy");
        out += '{';
        key(out, "id");
        json_append_string(out, p.id);
        string_member(out, "mode", sts_mode_name(p.policy.mode));
        out += ",\"max_age\":" + std::to_string(p.policy.max_age);
        out += ',';
        key(out, "mx");
        json_append_strings(out, p.policy.mx);
        out += ",\"fetched_at\":" + std::to_string(p.fetched_at);
        out += ",\"expires_at\":" + std::to_string(p.expires_at);
        out += '}';
    }
    if (r.deadline_reached) out += ",\"deadline_reached\":true";
    out += '}';
    return out;
}

// One domain's MTA-STS lookup: TXT, then (when due) A+AAAA of the policy host and the fetch.
struct StsEngine::Flight : std::enable_shared_from_this<Flight> {
    StsEngine* engine = nullptr;
    std::shared_ptr<DnsClient> dns;
    std::shared_ptr<HttpsFetcher> fetcher;
    StsSettings settings;
    StsReport report;
    EventPtr deadline;
    std::map<DnsClient::QueryId, bool> queries;  // running
    bool fetching = false;
    HttpsFetcher::FetchId fetch_id = 0;
    DnsLookup a, aaaa;
    int address_replies = 0;
    bool done = false;

    int64_t now() const { return engine->clock_(); }
    StsState& state() { return engine->state(report.domain); }

    void start(event_base* base) {
        auto self = shared_from_this();
        deadline.reset(evtimer_new(
            base, [](evutil_socket_t, short, void* arg) { static_cast<Flight*>(arg)->expire(); },
            this));
        const timeval tv{static_cast<time_t>(settings.deadline_ms / 1000),
                         static_cast<suseconds_t>((settings.deadline_ms % 1000) * 1000)};
        evtimer_add(deadline.get(), &tv);
        switch (sts_next_step(state(), now())) {
            case StsStep::UseKnown:
                finish(sts_known(state(), now()));
                return;
            case StsStep::CheckTxt:
                ask("_mta-sts." + report.domain, kTypeTxt,
                    [this](DnsLookup l) { on_txt(std::move(l)); });
                return;
            case StsStep::Fetch:
                resolve_host();
                return;
        }
    }

    void ask(const std::string& name, uint16_t type, std::function<void(DnsLookup)> step) {
        auto self = shared_from_this();
        auto id = std::make_shared<DnsClient::QueryId>(0);
        auto answered = std::make_shared<bool>(false);
        const DnsClient::QueryId qid =
            dns->query(name, type, [self, id, answered, step](DnsLookup l) {
                *answered = true;
                self->queries.erase(*id);
                if (!self->done) step(std::move(l));
            });
        *id = qid;
        if (!*answered) queries.emplace(qid, true);
    }

    void on_txt(DnsLookup l) {
        report.txt_looked_up = true;
        report.txt = l;
        StsOutcome out;
        const int64_t ttl = clamp_ttl(l.ttl, settings.ttl);
        if (sts_apply_txt(state(), l, ttl, now(), out))
            resolve_host();
        else
            finish(std::move(out));
    }

    void resolve_host() {
        report.fetch_host = "mta-sts." + report.domain;
        ask(report.fetch_host, kTypeA, [this](DnsLookup l) {
            a = std::move(l);
            on_address();
        });
        if (done) return;
        ask(report.fetch_host, kTypeAaaa, [this](DnsLookup l) {
            aaaa = std::move(l);
            on_address();
        });
    }

    void on_address() {
        if (++address_replies < 2) return;
        report.fetched = true;
        std::vector<std::string> candidates;
        for (const DnsLookup* l : {&a, &aaaa})
            if (l->result == DnsResult::Data)
                candidates.insert(candidates.end(), l->addresses.begin(), l->addresses.end());
        if (candidates.empty()) {
            const DnsLookup& bad = a.failed() ? a : aaaa;
            const bool failed = a.failed() || aaaa.failed();
            report.fetch.code =
                failed ? "dns_" + std::string(dns_result_name(bad.result)) : "no_address";
            report.fetch.reason = failed ? report.fetch_host + " lookup failed: " + bad.reason
                                         : report.fetch_host + " has no address";
            fetched(false, {}, report.fetch.code, report.fetch.reason);
            return;
        }
        std::string refused_kind;
        for (const auto& addr : candidates) {
            const std::string_view kind = special_address_kind(addr);
            if (kind.empty() || settings.allow_private_addresses) {
                report.fetch_addresses.push_back(addr);
            } else {
                report.refused_addresses.push_back(addr);
                if (refused_kind.empty()) refused_kind = kind;
            }
        }
        if (report.fetch_addresses.empty()) {
            // A recipient domain must not aim the fetcher at internal services.
            report.fetch.code = "private_address";
            report.fetch.reason = report.fetch_host + " has only special addresses (" +
                                  refused_kind + "); allow_private_addresses is off";
            fetched(false, {}, report.fetch.code, report.fetch.reason);
            return;
        }
        auto self = shared_from_this();
        fetching = true;
        fetch_id =
            fetcher->fetch({report.fetch_host, report.fetch_addresses, "/.well-known/mta-sts.txt"},
                           [self](FetchResult r) {
                               self->fetching = false;
                               if (self->done) return;
                               std::string body = std::move(r.body);
                               self->report.fetch = std::move(r);
                               self->fetched(self->report.fetch.ok, body, self->report.fetch.code,
                                             self->report.fetch.reason);
                           });
    }

    void fetched(bool ok, const std::string& body, const std::string& code,
                 const std::string& reason) {
        finish(sts_apply_fetch(state(), ok, body, code, reason, now()));
    }

    // The deadline: running lookups and the fetch are abandoned; what is known decides.
    void expire() {
        if (done) return;
        report.deadline_reached = true;
        StsOutcome out = sts_known(state(), now());
        if (out.code == "not_checked" || out.code == "not_fetched") {
            out.code = "timeout";
            out.reason = "MTA-STS lookup deadline reached";
        }
        finish(std::move(out));
    }

    void abandon() {
        done = true;
        for (auto& [qid, unused] : queries)
            dns->cancel(qid);
        queries.clear();
        if (fetching) fetcher->cancel(fetch_id);
        fetching = false;
        deadline.reset();
    }

    void finish(StsOutcome out) {
        if (done) return;
        auto self = shared_from_this();
        abandon();
        report.outcome = std::move(out);
        report.txt_valid_until = state().txt_valid_until;
        const std::string domain = report.domain;  // the report is moved below
        engine->finished(domain, std::move(report));
    }
};

StsEngine::StsEngine(event_base* base, std::shared_ptr<DnsClient> dns,
                     std::shared_ptr<HttpsFetcher> fetcher, StsSettings settings, Clock clock)
    : base_(base),
      dns_(std::move(dns)),
      fetcher_(std::move(fetcher)),
      settings_(settings),
      clock_(clock ? std::move(clock) : Clock(system_now)) {}

StsEngine::~StsEngine() {
    for (auto& [domain, f] : flights_)
        f->abandon();
}

StsState& StsEngine::state(const std::string& domain) {
    auto it = states_.find(domain);
    if (it != states_.end()) return it->second;
    if (states_.size() >= kMaxStsStates) {
        // Bounded memory: forget domains without a policy in force first, then any other
        // (never one with a lookup running).
        const int64_t now = clock_();
        std::size_t dropped = 0;
        for (auto i = states_.begin(); i != states_.end() && dropped < kMaxStsStates / 10;) {
            if (!i->second.live(now) && !flights_.count(i->first)) {
                i = states_.erase(i);
                ++dropped;
            } else {
                ++i;
            }
        }
        for (auto i = states_.begin(); i != states_.end() && states_.size() >= kMaxStsStates;) {
            if (!flights_.count(i->first))
                i = states_.erase(i);
            else
                ++i;
        }
    }
    return states_[domain];
}

void StsEngine::remember(const std::string& domain, StsPolicyPtr policy) {
    if (!policy || policy->policy.mode == StsMode::None || policy->expires_at <= clock_()) return;
    StsState& s = state(domain);
    if (s.policy && s.policy->fetched_at >= policy->fetched_at) return;
    if (!s.none_id().empty() && s.none_until() > clock_()) return;  // mode none learned since
    s.policy = std::move(policy);
}

void StsEngine::gather(const std::string& domain, ReportCallback cb) {
    waiters_[domain].push_back(std::move(cb));
    if (flights_.count(domain)) return;  // joins the lookup already running
    auto f = std::make_shared<Flight>();
    f->engine = this;
    f->dns = dns_;
    f->fetcher = fetcher_;
    f->settings = settings_;
    f->report.domain = domain;
    flights_.emplace(domain, f);
    f->start(base_);
}

void StsEngine::finished(const std::string& domain, StsReport report) {
    auto waiting = std::move(waiters_[domain]);
    waiters_.erase(domain);
    auto keep = flights_[domain];
    flights_.erase(domain);
    for (auto& cb : waiting)
        cb(report);
}

void StsEngine::reconfigure(std::shared_ptr<DnsClient> dns, std::shared_ptr<HttpsFetcher> fetcher,
                            StsSettings settings) {
    if (dns) dns_ = std::move(dns);
    if (fetcher) fetcher_ = std::move(fetcher);
    settings_ = settings;
}

}  // namespace tlspolicy
