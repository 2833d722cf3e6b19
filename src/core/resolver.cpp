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

void PolicyResolver::resolve(std::string_view raw_key, std::string_view profile,
                             AnswerCallback done) const {
    const Key key = normalize_key(raw_key);
    if (key.kind == KeyKind::Invalid) return done(Answer::not_found("invalid name: " + key.reason));

    // Overrides are the operator's word and apply to every kind of key, like a Postfix table.
    const auto& overrides = config_->overrides;
    if (auto it = overrides.find(key.name); it != overrides.end())
        return done(Answer::found(it->second, Source::Override, "static override"));

    switch (key.kind) {
        case KeyKind::Domain:
            break;
        // RFC 8461 §3.4: a parent's policy never applies to a subdomain; Postfix's walk up
        // the tree must not find one either.
        case KeyKind::ParentProbe:
            return done(Answer::not_found("parent-domain probe"));
        case KeyKind::NextHop:
            return done(Answer::not_found("explicit next hop"));
        case KeyKind::IpLiteral:
            return done(Answer::not_found("IP literal"));
        case KeyKind::Invalid:
            break;
    }
    if (!engine_) return done(Answer::not_found("no policy engine configured"));
    engine_->lookup(key.name, config_->profile(profile), [done = std::move(done)](Answer a) {
        // Postfix defers on an empty policy anyway; make it an explicit failure.
        if (a.outcome == Outcome::Found && a.policy.empty()) a = Answer::temp("empty policy");
        done(std::move(a));
    });
}

}  // namespace tlspolicy
