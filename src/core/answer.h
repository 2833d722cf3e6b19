// Answer: the result of one policy lookup, the type every policy source returns
// (overrides today; the DANE and MTA-STS engines plug in behind the same interface).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

namespace tlspolicy {

enum class Outcome : uint8_t {
    Found,     // policy holds a Postfix policy string
    NotFound,  // no policy: Postfix falls back to its global level
    Temp,      // temporary failure: Postfix defers the mail
    Timeout,   // the lookup ran out of time: Postfix defers the mail
    Perm,      // a configuration problem on our side: Postfix defers the mail
};

// Where an answer came from; shown in logs, JSON and (later) the cache.
enum class Source : uint8_t { None, Override, Dane, MtaSts };

struct Answer {
    Outcome outcome = Outcome::NotFound;
    std::string policy;  // for Found: the policy string sent to Postfix
    std::string reason;  // why (for every outcome): short, printable, never raw input
    Source source = Source::None;
    int64_t ttl = 0;      // seconds the answer may be cached (engines; 0 = not cacheable)
    std::string details;  // the facts behind it as one JSON object, or "" (engines)

    static Answer found(std::string policy, Source source, std::string reason = {}) {
        return {Outcome::Found, std::move(policy), std::move(reason), source, 0, {}};
    }
    static Answer not_found(std::string reason, Source source = Source::None) {
        return {Outcome::NotFound, {}, std::move(reason), source, 0, {}};
    }
    static Answer temp(std::string reason) {
        return {Outcome::Temp, {}, std::move(reason), {}, 0, {}};
    }
    static Answer timeout(std::string reason) {
        return {Outcome::Timeout, {}, std::move(reason), {}, 0, {}};
    }
    static Answer perm(std::string reason) {
        return {Outcome::Perm, {}, std::move(reason), {}, 0, {}};
    }
};

// An answer known at once, without copying its text: a view of an Answer or of text the
// source keeps (a cache entry, the configuration). Valid only until the source changes, so it
// is used at once (the server builds its reply from it) and never stored.
struct AnswerView {
    Outcome outcome = Outcome::NotFound;
    std::string_view policy;
    std::string_view reason;
    Source source = Source::None;
    int64_t ttl = 0;

    AnswerView() = default;
    AnswerView(Outcome o, std::string_view p, std::string_view r, Source s, int64_t t = 0)
        : outcome(o), policy(p), reason(r), source(s), ttl(t) {}
    AnswerView(const Answer& a)  // NOLINT(google-explicit-constructor): a view of any Answer
        : AnswerView(a.outcome, a.policy, a.reason, a.source, a.ttl) {}
    Answer owned() const {  // without details (views never carry them)
        return {outcome, std::string(policy), std::string(reason), source, ttl, {}};
    }
};

// Called exactly once with the answer; may be called before lookup() returns.
using AnswerCallback = std::function<void(Answer)>;

std::string_view outcome_name(Outcome outcome);  // "found", "not-found", "temp", ...
std::string_view source_name(Source source);     // "none", "override", "dane", "mta-sts"

}  // namespace tlspolicy
