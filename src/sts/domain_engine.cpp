#include "sts/domain_engine.h"

#include <algorithm>
#include <chrono>
#include <ctime>

#include "util/json.h"
#include "util/log.h"

namespace tlspolicy {

namespace {

std::vector<std::string> mx_host_names(const DaneFacts& facts) {
    std::vector<std::string> hosts;
    for (const auto& h : facts.hosts)
        hosts.push_back(h.name);
    return hosts;
}

std::string mx_check_json(const std::vector<StsMxCheck>& checks) {
    std::string out = "[";
    for (std::size_t i = 0; i < checks.size(); ++i) {
        if (i) out += ',';
        out += "{\"host\":";
        json_append_string(out, checks[i].host);
        out += ",\"matches\":";
        out += checks[i].matches ? "true" : "false";
        if (checks[i].matches) {
            out += ",\"pattern\":";
            json_append_string(out, checks[i].pattern);
        }
        out += '}';
    }
    out += ']';
    return out;
}

}  // namespace

Answer DomainEngine::combine(const DaneFacts& facts, const DaneDecision& dane, const StsReport& sts,
                             const PolicySettings& settings, int64_t now) {
    Answer answer = DaneEngine::answer_for(facts, dane);
    const std::string dane_json = std::move(answer.details);
    const StoredStsPolicy* policy = sts.outcome.policy ? &*sts.outcome.policy : nullptr;
    const StsVerdict verdict =
        policy ? sts_verdict(policy->policy, settings) : StsVerdict::NotFound;
    const bool sts_applies = verdict != StsVerdict::NotFound;
    std::vector<StsMxCheck> checks;
    if (policy) checks = check_sts_mx(policy->policy, mx_host_names(facts));

    // How long what MTA-STS said holds: until the TXT record is due again, and never past the
    // policy's expiry.
    int64_t sts_ttl = std::max<int64_t>(sts.txt_valid_until - now, 0);
    if (policy) sts_ttl = std::min(sts_ttl, std::max<int64_t>(policy->expires_at - now, 0));

    std::string decided_by = "dane";
    switch (dane.verdict) {
        case DaneVerdict::NoDane: {
            decided_by = "mta-sts";
            const std::string sts_why =
                sts.outcome.reason.empty() ? sts.outcome.status : sts.outcome.reason;
            if (policy) {
                answer = sts_decision(facts.domain, *policy, sts.outcome.status, settings);
            } else {
                answer = Answer::not_found("no DANE (" + dane.reason +
                                           "); no MTA-STS policy: " + sts_why);
            }
            answer.ttl = std::min(dane.ttl, sts_ttl);
            break;
        }
        case DaneVerdict::Dane:
            if (dane.unfinished && sts_applies) {
                // `dane` would let hosts without TLSA fall to opportunistic TLS, weaker than
                // the MTA-STS policy the domain also publishes: defer instead.
                decided_by = "both";
                answer = Answer::temp(
                    "TLSA lookup unfinished on a secure MX set and an MTA-STS policy exists");
                answer.ttl = 0;
            }
            break;
        default:
            break;
    }

    std::string details = "{\"dane\":" + dane_json + ",\"mta_sts\":" + sts_report_json(sts);
    details += ",\"decided_by\":";
    json_append_string(details, decided_by);
    if (policy) {
        details += ",\"mx_check\":" + mx_check_json(checks);
        details += ",\"sts_verdict\":";
        json_append_string(details, verdict == StsVerdict::Enforce   ? "enforce"
                                    : verdict == StsVerdict::Encrypt ? "encrypt"
                                                                     : "not-applied");
    }
    details += '}';
    answer.details = std::move(details);
    return answer;
}

Answer DomainEngine::sts_decision(const std::string& domain, const StoredStsPolicy& policy,
                                  const std::string& status, const PolicySettings& settings) {
    switch (sts_verdict(policy.policy, settings)) {
        case StsVerdict::Enforce:
            return Answer::found(sts_enforce_policy(domain, policy.policy, policy.body, settings),
                                 Source::MtaSts,
                                 "MTA-STS mode " + std::string(sts_mode_name(policy.policy.mode)) +
                                     ", policy id " + policy.id + " (" + status + ")");
        case StsVerdict::Encrypt:
            return Answer::found(
                "encrypt", Source::MtaSts,
                "MTA-STS mode testing with testing_mode = encrypt, policy id " + policy.id);
        case StsVerdict::NotFound:
            break;
    }
    return Answer::not_found("no DANE; MTA-STS mode " +
                             std::string(sts_mode_name(policy.policy.mode)) +
                             " is not applied (testing_mode = ignore)");
}

std::string DomainEngine::refused_mx(const DaneFacts& facts, const StsReport& sts) {
    if (!sts.outcome.policy || sts.outcome.policy->policy.mode == StsMode::None) return {};
    std::string refused;
    for (const auto& c : check_sts_mx(sts.outcome.policy->policy, mx_host_names(facts))) {
        if (c.matches) continue;
        if (!refused.empty()) refused += ", ";
        refused += c.host;
    }
    return refused;
}

Result<std::unique_ptr<DomainEngine>> DomainEngine::create(event_base* base, const Config& config,
                                                           StsEngine::Clock clock,
                                                           uint16_t smtp_port) {
    auto dns = DnsClient::create(base, dns_settings(config));
    if (!dns) return dns.error();
    auto fetcher = HttpsFetcher::create(base, fetch_settings(config));
    if (!fetcher) return fetcher.error();
    std::unique_ptr<DomainEngine> e(new DomainEngine());
    e->base_ = base;
    e->clock_ =
        clock ? clock : StsEngine::Clock([] { return static_cast<int64_t>(std::time(nullptr)); });
    e->dns_config_ = config.dns;
    e->sts_config_ = config.mta_sts;
    std::shared_ptr<DnsClient> shared_dns(std::move(*dns));
    DaneLimits limits = dane_limits(config);
    limits.smtp_port = smtp_port;
    e->dane_ = std::make_unique<DaneEngine>(base, shared_dns, limits);
    e->sts_ = std::make_unique<StsEngine>(base, shared_dns,
                                          std::shared_ptr<HttpsFetcher>(std::move(*fetcher)),
                                          sts_settings(config), e->clock_);
    return e;
}

Result<DomainEngine::Reconfig> DomainEngine::prepare(const Config& next) const {
    Reconfig r;
    if (!(next.dns == dns_config_)) {
        auto d = DnsClient::create(base_, dns_settings(next));
        if (!d) return d.error();
        r.dns = std::move(*d);
    }
    if (!(next.mta_sts == sts_config_)) {
        auto f = HttpsFetcher::create(base_, fetch_settings(next));
        if (!f) return f.error();
        r.fetcher = std::move(*f);
    }
    r.dns_config = next.dns;
    r.sts_config = next.mta_sts;
    r.dane_limits = dane_limits(next);
    r.sts_settings = sts_settings(next);
    return r;
}

void DomainEngine::apply(Reconfig next) {
    dane_->reconfigure(next.dns, next.dane_limits);
    sts_->reconfigure(next.dns, std::move(next.fetcher), next.sts_settings);
    dns_config_ = std::move(next.dns_config);
    sts_config_ = std::move(next.sts_config);
}

void DomainEngine::log_computed(const std::string& domain, const Answer& a, int64_t duration_ms,
                                log::Level level) {
    if (!log::enabled(level)) return;
    std::string answer;
    switch (a.outcome) {
        case Outcome::Found:
            answer = a.policy;
            break;
        case Outcome::NotFound:
            answer = "not found";
            break;
        case Outcome::Temp:
        case Outcome::Timeout:
            answer = "temporary failure";
            break;
        case Outcome::Perm:
            answer = "error";
            break;
    }
    const std::string shown = log::sanitize(domain);
    const std::string reason = log::sanitize(a.reason, 400);
    const std::string ms = std::to_string(duration_ms);
    const std::string_view source = source_name(a.source);
    log::write(level,
               shown + ": " + answer + " (" + std::string(source) + ") in " + ms + " ms: " + reason,
               {{"domain", shown},
                {"answer", answer},
                {"source", source},
                {"duration_ms", ms, true},
                {"reason", reason}});
}

namespace {
// Failures an attacker on the path could cause, where the answer stays as strong as the
// domain published (or defers) instead of falling back to opportunistic TLS: the operator
// should know, because mail may be delayed and someone may be interfering.
void warn_downgrades_prevented(const Resolution& r) {
    const std::string domain = log::sanitize(r.facts.domain);
    if (r.dane.verdict == DaneVerdict::Temp && r.facts.mx.dnssec == Dnssec::Bogus)
        log::warning(domain + ": downgrade prevented: the MX records fail DNSSEC validation (" +
                     log::sanitize(r.dane.reason) +
                     "); mail is deferred (TEMP) instead of going out without DANE");
    const StsOutcome& sts = r.sts.outcome;
    if (sts.status == "errored" && sts.policy)
        log::warning(domain + ": downgrade prevented: MTA-STS policy id " +
                     log::sanitize(sts.policy->id) + " (mode " +
                     std::string(sts_mode_name(sts.policy->policy.mode)) +
                     ") stays in force although the new one could not be fetched (" +
                     log::sanitize(sts.reason) + ")");
}

int64_t elapsed_ms(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 t0)
        .count();
}
}  // namespace

Answer Resolution::answer(const PolicySettings& settings) const {
    return DomainEngine::combine(facts, dane, sts, settings, now);
}

void DomainEngine::resolve(const std::string& domain, ResolutionCallback cb) {
    // Both halves run at once; the resolution is complete when both have finished.
    struct Join {
        std::shared_ptr<Resolution> r = std::make_shared<Resolution>();
        int pending = 2;
        ResolutionCallback done;
        StsEngine::Clock clock;
    };
    auto join = std::make_shared<Join>();
    join->done = std::move(cb);
    join->clock = clock_;
    auto finish = [join] {
        if (--join->pending) return;
        Resolution& r = *join->r;
        r.now = join->clock();
        warn_downgrades_prevented(r);
        if (const std::string refused = refused_mx(r.facts, r.sts);
            !refused.empty() && r.sts.fetched)
            log::warning(r.facts.domain + ": MX host(s) " + log::sanitize(refused) +
                         " match no mx pattern of MTA-STS policy id " + r.sts.outcome.policy->id +
                         ": Postfix will not deliver there while the policy is enforced");
        join->done(std::move(join->r));
    };
    dane_->gather(domain, [join, finish](const DaneFacts& f, const DaneDecision& d) {
        join->r->facts = f;
        join->r->dane = d;
        finish();
    });
    sts_->gather(domain, [join, finish](const StsReport& r) {
        join->r->sts = r;
        finish();
    });
}

void DomainEngine::lookup(const std::string& domain, const PolicySettings& settings,
                          AnswerCallback done) {
    const auto t0 = std::chrono::steady_clock::now();
    resolve(domain, [settings, t0, done = std::move(done)](std::shared_ptr<const Resolution> r) {
        Answer a = r->answer(settings);
        // Used by `tlspolicy query`: its output already says this; the daemon logs in the cache.
        log_computed(r->facts.domain, a, elapsed_ms(t0), log::Level::Debug);
        done(std::move(a));
    });
}

}  // namespace tlspolicy
