// PolicyResolver: key classes, overrides, and the engine hand-off.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "core/resolver.h"

using namespace tlspolicy;

namespace {

// An engine that records what it was asked and answers with a fixed answer.
class FakeEngine : public PolicyEngine {
  public:
    std::vector<std::string> asked;
    Answer answer = Answer::found("dane-only", Source::Dane);
    void lookup(const std::string& domain, const PolicySettings&, AnswerCallback done) override {
        asked.push_back(domain);
        done(answer);
    }
};

Answer resolve(const PolicyResolver& r, const std::string& key, const std::string& profile = "") {
    Answer got = Answer::temp("callback not called");
    int calls = 0;
    r.resolve(key, profile, [&](Answer a) {
        got = std::move(a);
        ++calls;
    });
    CHECK(calls == 1);
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
