// The scenario table (tests/scenarios/scenarios.toml) read from C++ the way engine tests will
// read it: every row is complete, every expected policy is one Postfix accepts, and every key
// normalises to the row's domain.
#include <doctest/doctest.h>
#include <toml++/toml.h>

#include <set>
#include <string>

#include "core/policy_grammar.h"
#include "util/domain.h"

namespace {

const toml::table& table() {
    static const toml::table t = toml::parse_file(SOURCE_ROOT "/tests/scenarios/scenarios.toml");
    return t;
}

std::string str(const toml::table& row, const char* key) {
    return row[key].value_or(std::string{});
}

}  // namespace

TEST_CASE("scenarios: every row is complete, and names are unique") {
    const auto* rows = table()["scenario"].as_array();
    REQUIRE(rows != nullptr);
    CHECK(rows->size() >= 60);
    std::set<std::string> names;
    for (const auto& node : *rows) {
        const auto& row = *node.as_table();
        const auto name = str(row, "name");
        CAPTURE(name);
        CHECK(!name.empty());
        CHECK(names.insert(name).second);
        CHECK(!str(row, "domain").empty());
        CHECK(!str(row, "reason").empty());
        CHECK(!str(row, "answer").empty());
    }
}

TEST_CASE("scenarios: every expected policy is valid Postfix policy syntax") {
    int found = 0;
    for (const auto& node : *table()["scenario"].as_array()) {
        const auto& row = *node.as_table();
        for (const char* field : {"answer", "answer_after"}) {
            const auto answer = str(row, field);
            if (answer.empty()) continue;
            CAPTURE(str(row, "name"));
            CAPTURE(answer);
            if (answer == "NOTFOUND" || answer == "TEMP") continue;
            REQUIRE(answer.rfind("OK ", 0) == 0);
            const auto status = tlspolicy::validate_policy(answer.substr(3));
            const std::string why = status.ok() ? "" : status.error().message;
            CAPTURE(why);
            CHECK(status.ok());
            ++found;
        }
    }
    CHECK(found >= 20);
}

TEST_CASE("scenarios: every key normalises to the row's domain") {
    for (const auto& node : *table()["scenario"].as_array()) {
        const auto& row = *node.as_table();
        const auto domain = str(row, "domain");
        const auto key = row["key"].value_or(domain);
        CAPTURE(key);
        const auto k = tlspolicy::normalize_key(key);
        CHECK(tlspolicy::key_kind_name(k.kind) == "domain");
        CHECK(k.name == domain);
    }
}

TEST_CASE("scenarios: decided_by names a half of the decision table that can give the answer") {
    int dane = 0, sts = 0;
    for (const auto& node : *table()["scenario"].as_array()) {
        const auto& row = *node.as_table();
        const auto by = row["decided_by"].value_or(std::string("dane"));
        const auto answer = str(row, "answer");
        CAPTURE(str(row, "name"));
        CAPTURE(by);
        CHECK((by == "dane" || by == "mta-sts" || by == "both"));
        // MTA-STS never yields a DANE level; a "both" row ends in TEMP (architecture.md §1).
        if (by == "mta-sts") CHECK(answer.rfind("OK dane", 0) != 0);
        if (by == "both") CHECK(answer == "TEMP");
        // A domain that publishes an MTA-STS policy is "dane" only where DANE wins or failed.
        if (by == "dane" && row.contains("sts"))
            CHECK((answer.rfind("OK dane", 0) == 0 || answer == "TEMP"));
        (by == "dane" ? dane : sts)++;
    }
    CHECK(dane >= 30);
    CHECK(sts >= 25);
}
