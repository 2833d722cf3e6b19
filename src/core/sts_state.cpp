#include "core/sts_state.h"

#include <algorithm>

namespace tlspolicy {

namespace {

const std::string kUnset;

}  // namespace

const StoredStsPolicy* StsState::live(int64_t now) const {
    return policy && now < policy->expires_at ? policy.get() : nullptr;
}

const std::string& StsState::txt_code() const {
    return rare_ ? rare_->txt_code : kUnset;
}
const std::string& StsState::none_id() const {
    return rare_ ? rare_->none_id : kUnset;
}
int64_t StsState::none_until() const {
    return rare_ ? rare_->none_until : 0;
}
int64_t StsState::none_max_age() const {
    return rare_ ? rare_->none_max_age : 0;
}
const std::string& StsState::failed_id() const {
    return rare_ ? rare_->failed_id : kUnset;
}
int64_t StsState::retry_after() const {
    return rare_ ? rare_->retry_after : 0;
}
const std::string& StsState::failed_code() const {
    return rare_ ? rare_->failed_code : kUnset;
}
const std::string& StsState::failed_reason() const {
    return rare_ ? rare_->failed_reason : kUnset;
}

StsState::Rare& StsState::rare() {
    if (!rare_) rare_ = std::make_unique<Rare>();
    return *rare_;
}

void StsState::shrink() {
    if (rare_ && rare_->txt_code.empty() && rare_->none_id.empty() && rare_->none_until == 0 &&
        rare_->none_max_age == 0 && rare_->failed_id.empty() && rare_->retry_after == 0 &&
        rare_->failed_code.empty() && rare_->failed_reason.empty())
        rare_.reset();
}

void StsState::set_txt_code(std::string code) {
    if (code.empty() && !rare_) return;
    rare().txt_code = std::move(code);
    shrink();
}

void StsState::set_none(std::string id, int64_t until, int64_t max_age) {
    Rare& r = rare();
    r.none_id = std::move(id);
    r.none_until = until;
    r.none_max_age = max_age;
    shrink();
}

void StsState::renew_none(int64_t until) {
    rare().none_until = until;
    shrink();
}

void StsState::clear_none() {
    if (rare_) set_none({}, 0, 0);
}

void StsState::set_failed(std::string id, int64_t until, std::string code, std::string reason) {
    Rare& r = rare();
    r.failed_id = std::move(id);
    r.retry_after = until;
    r.failed_code = std::move(code);
    r.failed_reason = std::move(reason);
    shrink();
}

void StsState::clear_failed() {
    if (rare_) set_failed({}, 0, {}, {});
}

namespace {

bool fetch_allowed(const StsState& s, int64_t now) {
    return !(s.failed_id() == s.txt_id && now < s.retry_after());
}

// The TXT verdict names an id for which no live policy is stored.
bool fetch_due(const StsState& s, int64_t now) {
    if (!s.txt_found) return false;
    if (s.txt_id == s.none_id() && now < s.none_until()) return false;  // known: mode none
    const StoredStsPolicy* p = s.live(now);
    return !p || p->id != s.txt_id;
}

StsOutcome with_live(const StsState& s, int64_t now, StsOutcome out) {
    if (s.live(now)) out.policy = s.policy;
    return out;
}

std::string seconds(int64_t n) {
    return std::to_string(n) + " s";
}

}  // namespace

StsStep sts_next_step(const StsState& s, int64_t now) {
    if (now >= s.txt_valid_until) return StsStep::CheckTxt;
    if (fetch_due(s, now) && fetch_allowed(s, now)) return StsStep::Fetch;
    return StsStep::UseKnown;
}

StsOutcome sts_known(const StsState& s, int64_t now) {
    StsOutcome out;
    if (s.txt_valid_until == 0) {
        out.status = "not_found";
        out.code = "not_checked";
        out.reason = "the _mta-sts record was not looked up in time";
    } else if (fetch_due(s, now)) {
        out.status = "errored";
        const bool failed = s.failed_id() == s.txt_id;
        out.code = failed && !s.failed_code().empty() ? s.failed_code() : "not_fetched";
        out.reason = failed && !s.failed_reason().empty()
                         ? s.failed_reason() + " (next try in " +
                               seconds(std::max<int64_t>(0, s.retry_after() - now)) + ")"
                         : "the policy was not fetched in time";
    } else if (!s.txt_found) {
        out.status = "not_found";
        out.code = s.txt_code();
        out.reason = "no MTA-STS record (" + s.txt_code() + ")";
    } else {
        out.status = "cached";
        out.reason = "policy id " + s.txt_id + " checked less than its TXT TTL ago";
    }
    return with_live(s, now, std::move(out));
}

bool sts_apply_txt(StsState& s, const DnsLookup& l, int64_t txt_ttl, int64_t now, StsOutcome& out) {
    out = {};
    if (l.failed()) {
        // A failed lookup is "no policy available" (RFC 8461 §3.3): the stored policy stays
        // in force until its max_age, and the next lookup asks again (failures are not cached).
        out.status = "not_found";
        out.code = "dns_" + std::string(dns_result_name(l.result));
        out.reason = "_mta-sts TXT lookup failed: " + (l.reason.empty() ? out.code : l.reason);
        out = with_live(s, now, std::move(out));
        return false;
    }
    std::vector<std::string> records;
    if (l.result == DnsResult::Data) records = l.txt;
    const StsTxt txt = parse_sts_txt(records);
    s.txt_valid_until = now + std::max<int64_t>(txt_ttl, 1);
    s.txt_found = txt.found;
    s.txt_id = txt.found ? txt.id : std::string();
    s.set_txt_code(txt.found ? std::string() : txt.code);
    if (!txt.found) {
        // Not a signal to purge a stored policy (RFC 8461 §3.3 / §5.1).
        out.status = "not_found";
        out.code = txt.code;
        out.reason = "no usable _mta-sts record: " + txt.reason;
        out = with_live(s, now, std::move(out));
        return false;
    }
    if (s.policy && s.policy->id == txt.id && now < s.policy->expires_at) {
        // The domain says its policy is unchanged: it holds for another max_age (a new copy:
        // the old one may be in use elsewhere, unchanged).
        auto renewed = std::make_shared<StoredStsPolicy>(*s.policy);
        renewed->expires_at = now + renewed->policy.max_age;
        s.policy = std::move(renewed);
        out.status = "renewed";
        out.reason = "policy id " + txt.id + " unchanged";
        out.policy = s.policy;
        return false;
    }
    if (txt.id == s.none_id() && now < s.none_until()) {
        s.renew_none(now + s.none_max_age());
        out.status = "renewed";
        out.reason = "policy id " + txt.id + " (mode none) unchanged";
        return false;
    }
    if (!fetch_allowed(s, now)) {
        out = sts_known(s, now);
        return false;
    }
    return true;
}

StsOutcome sts_apply_fetch(StsState& s, bool ok, const std::string& body, const std::string& code,
                           const std::string& reason, int64_t now) {
    StsOutcome out;
    std::string fail_code = code, fail_reason = reason;
    if (ok) {
        StsParse parsed = parse_sts_policy(body);
        if (parsed.ok) {
            s.clear_failed();
            out.status = "found";
            if (parsed.policy.mode == StsMode::None) {
                // An authoritative "no policy" (RFC 8461 §5): the stored policy goes at once,
                // and this id is not fetched again while its max_age lasts.
                s.policy.reset();
                s.set_none(s.txt_id, now + parsed.policy.max_age, parsed.policy.max_age);
                out.reason = "policy id " + s.txt_id + " has mode none";
                return out;
            }
            // A policy ends a mode none verdict (none_until and none_max_age count only with
            // none_id, and a found TXT id is never empty).
            s.clear_none();
            auto p = std::make_shared<StoredStsPolicy>();
            p->id = s.txt_id;
            p->policy = std::move(parsed.policy);
            p->body = body;
            p->fetched_at = now;
            p->expires_at = now + p->policy.max_age;
            s.policy = std::move(p);
            out.reason = "policy id " + s.txt_id + " fetched";
            out.policy = s.policy;
            return out;
        }
        fail_code = parsed.error.code;
        fail_reason = "invalid policy: " + parsed.error.reason;
    }
    s.set_failed(s.txt_id, now + kStsFetchRetrySeconds, fail_code, fail_reason);
    out.status = "errored";
    out.code = fail_code;
    out.reason = fail_reason;
    return with_live(s, now, std::move(out));
}

}  // namespace tlspolicy
