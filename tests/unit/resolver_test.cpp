// PolicyResolver: key classes, overrides, and the engine hand-off.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "core/resolver.h"

using namespace tlspolicy;

namespace {

// An engine that records what it was asked and answers with a fixed answer; with
// `immediate`, lookup_now() answers too (as a cache hit does).
class FakeEngine : public PolicyEngine {
  public:
    std::vector<std::string> asked;
    std::vector<std::string> asked_now;
    Answer answer = Answer::found("dane-only", Source::Dane);
    bool immediate = false;
    void lookup(const std::string& domain, const PolicySettings&, AnswerCallback done) override {
        asked.push_back(domain);
        done(answer);
    }
    std::optional<AnswerView> lookup_now(const std::string& domain, const PolicySettings&,
                                         Answer&) override {
        asked_now.push_back(domain);
        if (!immediate) return std::nullopt;
        return AnswerView(answer);
    }
};

// One scratch for every resolve_now() of the tests, as a server session reuses its own.
LookupScratch& scratch() {
    static LookupScratch s;
    return s;
}

// resolve()'s answer; resolve_now(), asked the same, must agree whenever it answers.
Answer resolve(const PolicyResolver& r, const std::string& key, const std::string& profile = "") {
    Answer got = Answer::temp("callback not called");
    int calls = 0;
    r.resolve(key, profile, [&](Answer a) {
        got = std::move(a);
        ++calls;
    });
    CHECK(calls == 1);
    if (const auto now = r.resolve_now(key, profile, scratch())) {
        CHECK(now->outcome == got.outcome);
        CHECK(now->policy == got.policy);
        CHECK(now->reason == got.reason);
        CHECK(now->source == got.source);
    }
    return got;
}

std::shared_ptr<const Config> config_with_overrides() {
    auto c = parse_config(
        "[overrides]\n"
        "\"override.example\" = \"encrypt\"\n"
        "\"xn--bcher-kva.example\" = \"dane-only\"\n"
        "\".parent.example\" = \"secure match=.parent.example\"\n"
        "\"[relay.example]:587\" = \"verify match=hostname\"\n",
        "t.toml");
    REQUIRE(c.ok());
    return std::make_shared<const Config>(std::move(*c));
}

}  // namespace

TEST_CASE("resolve: domain, key → answer, and whether the engine was asked") {
    FakeEngine engine;
    PolicyResolver r(config_with_overrides(), &engine);
    struct Row {
        std::string key;
        Outcome outcome;
        std::string policy;
        Source source;
        bool engine_asked;
    };
    const std::vector<Row> rows = {
        {"override.example", Outcome::Found, "encrypt", Source::Override, false},
        {"OVERRIDE.Example.", Outcome::Found, "encrypt", Source::Override, false},
        {"Bücher.example", Outcome::Found, "dane-only", Source::Override, false},
        {".parent.example", Outcome::Found, "secure match=.parent.example", Source::Override,
         false},
        {"[relay.example]:587", Outcome::Found, "verify match=hostname", Source::Override, false},
        {"[RELAY.example]:587", Outcome::Found, "verify match=hostname", Source::Override, false},
        {"other.example", Outcome::Found, "dane-only", Source::Dane, true},
        {".other.example", Outcome::NotFound, "", Source::None, false},
        {"[other.example]", Outcome::NotFound, "", Source::None, false},
        {"[other.example]:25", Outcome::NotFound, "", Source::None, false},
        {"192.0.2.1", Outcome::NotFound, "", Source::None, false},
        {"[192.0.2.1]", Outcome::NotFound, "", Source::None, false},
        {"2001:db8::1", Outcome::NotFound, "", Source::None, false},
        {"", Outcome::NotFound, "", Source::None, false},
        {"bad name.example", Outcome::NotFound, "", Source::None, false},
        {std::string(300, 'a') + ".example", Outcome::NotFound, "", Source::None, false},
    };
    for (const auto& row : rows) {
        CAPTURE(row.key);
        engine.asked.clear();
        const Answer a = resolve(r, row.key);
        CHECK(a.outcome == row.outcome);
        CHECK(a.policy == row.policy);
        CHECK(a.source == row.source);
        CHECK(engine.asked.empty() == !row.engine_asked);
        if (row.engine_asked) CHECK(engine.asked.at(0) == "other.example");
        if (a.outcome == Outcome::NotFound) CHECK_FALSE(a.reason.empty());
    }
}

TEST_CASE("resolve_now: at once unless the engine must be waited for") {
    FakeEngine engine;
    PolicyResolver r(config_with_overrides(), &engine);
    struct Row {
        std::string key;
        bool immediate_engine;
        bool answered;  // resolve_now() answers
        bool engine_asked_now;
    };
    const std::vector<Row> rows = {
        {"override.example", false, true, false},  // overrides need no engine
        {".other.example", false, true, false},    // nor do probes, next hops, literals
        {"[other.example]:25", false, true, false},
        {"192.0.2.1", false, true, false},
        {"bad name.example", false, true, false},
        {"other.example", false, false, true},  // the engine has to be waited for
        {"Other.Example.", true, true, true},   // the engine knows at once (a cache hit)
    };
    for (const auto& row : rows) {
        CAPTURE(row.key);
        engine.immediate = row.immediate_engine;
        engine.asked.clear();
        engine.asked_now.clear();
        const auto now = r.resolve_now(row.key, "", scratch());
        CHECK(now.has_value() == row.answered);
        CHECK(engine.asked.empty());  // never the waiting lookup
        CHECK(engine.asked_now.empty() == !row.engine_asked_now);
        if (row.engine_asked_now) CHECK(engine.asked_now.at(0) == "other.example");
        resolve(r, row.key);  // agrees with resolve()
    }
    // An empty policy known at once is TEMP too.
    engine.immediate = true;
    engine.answer = Answer::found("", Source::Dane);
    const auto empty = r.resolve_now("other.example", "", scratch());
    REQUIRE(empty);
    CHECK(empty->outcome == Outcome::Temp);
}

TEST_CASE("resolve: engine failures pass through unchanged (never turned into not found)") {
    FakeEngine engine;
    PolicyResolver r(std::make_shared<const Config>(default_config()), &engine);
    engine.answer = Answer::temp("MX lookup SERVFAIL");
    CHECK(resolve(r, "example.org").outcome == Outcome::Temp);
    engine.answer = Answer::timeout("deadline");
    CHECK(resolve(r, "example.org").outcome == Outcome::Timeout);
    // An empty policy would make Postfix defer with "invalid empty policy": say so instead.
    engine.answer = Answer::found("", Source::Dane);
    CHECK(resolve(r, "example.org").outcome == Outcome::Temp);
}

TEST_CASE("resolve: without an engine, domains are not found") {
    PolicyResolver r(std::make_shared<const Config>(default_config()), nullptr);
    const Answer a = resolve(r, "example.org");
    CHECK(a.outcome == Outcome::NotFound);
}

TEST_CASE("set_config: a reload changes the answers") {
    PolicyResolver r(std::make_shared<const Config>(default_config()), nullptr);
    CHECK(resolve(r, "override.example").outcome == Outcome::NotFound);
    r.set_config(config_with_overrides());
    CHECK(resolve(r, "override.example").policy == "encrypt");
}
