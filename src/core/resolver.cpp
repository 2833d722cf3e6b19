#include "core/resolver.h"

namespace tlspolicy {

std::string_view outcome_name(Outcome o) {
    switch (o) {
        case Outcome::Found:
            return "found";
        case Outcome::NotFound:
            return "not-found";
        case Outcome::Temp:
            return "temp";
        case Outcome::Timeout:
            return "timeout";
        case Outcome::Perm:
            return "perm";
    }
    return "temp";
}

std::string_view source_name(Source s) {
    switch (s) {
        case Source::None:
            return "none";
        case Source::Override:
            return "override";
        case Source::Dane:
            return "dane";
        case Source::MtaSts:
            return "mta-sts";
    }
    return "none";
}

PolicyResolver::PolicyResolver(std::shared_ptr<const Config> config, PolicyEngine* engine)
    : config_(std::move(config)), engine_(engine) {}

std::optional<AnswerView> PolicyResolver::without_engine(const Key& key, Answer& storage) const {
    if (key.kind == KeyKind::Invalid) {
        storage = Answer::not_found("invalid name: " + key.reason);
        return AnswerView(storage);
    }
    // Overrides are the operator's word and apply to every kind of key, like a Postfix table.
    const auto& overrides = config_->overrides;
    if (auto it = overrides.find(key.name); it != overrides.end())
        return AnswerView(Outcome::Found, it->second, "static override", Source::Override);

    switch (key.kind) {
        case KeyKind::Domain:
        case KeyKind::Invalid:
            break;
        // RFC 8461 §3.4: a parent's policy never applies to a subdomain; Postfix's walk up
        // the tree must not find one either.
        case KeyKind::ParentProbe:
            return AnswerView(Outcome::NotFound, {}, "parent-domain probe", Source::None);
        case KeyKind::NextHop:
            return AnswerView(Outcome::NotFound, {}, "explicit next hop", Source::None);
        case KeyKind::IpLiteral:
            return AnswerView(Outcome::NotFound, {}, "IP literal", Source::None);
    }
    if (!engine_)
        return AnswerView(Outcome::NotFound, {}, "no policy engine configured", Source::None);
    return std::nullopt;
}

namespace {

// Postfix defers on an empty policy anyway; make it an explicit failure.
constexpr std::string_view kEmptyPolicy = "empty policy";

}  // namespace

void PolicyResolver::resolve(std::string_view raw_key, std::string_view profile,
                             AnswerCallback done) const {
    const Key key = normalize_key(raw_key);
    Answer storage;
    if (const auto now = without_engine(key, storage)) return done(now->owned());
    engine_->lookup(key.name, config_->profile(profile), [done = std::move(done)](Answer a) {
        if (a.outcome == Outcome::Found && a.policy.empty())
            a = Answer::temp(std::string(kEmptyPolicy));
        done(std::move(a));
    });
}

std::optional<AnswerView> PolicyResolver::resolve_now(std::string_view raw_key,
                                                      std::string_view profile,
                                                      LookupScratch& scratch) const {
    normalize_key_into(raw_key, scratch.key);
    auto now = without_engine(scratch.key, scratch.answer);
    if (!now)
        now = engine_->lookup_now(scratch.key.name, config_->profile(profile), scratch.answer);
    if (now && now->outcome == Outcome::Found && now->policy.empty())
        return AnswerView(Outcome::Temp, {}, kEmptyPolicy, Source::None);
    return now;
}

}  // namespace tlspolicy
