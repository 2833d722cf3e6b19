// fuzz-config: parse_config() (core/config.h), the TOML configuration loader, on arbitrary
// text. parse_config() is the in-memory entry point; load_config() only reads the file
// first. toml++ is the distribution's library, as in tlspolicyd (see fuzz/meson.build);
// config.dict and the seed corpus give the fuzzer the TOML syntax and the key table.
//
// Invariants:
//   - no exception leaves parse_config(): errors are values;
//   - an error names "fuzz.toml:" first and contains no control byte;
//   - an accepted configuration is internally valid: at least one listener, mode/owner/group
//     only on unix sockets, every integer key inside the range config_keys() documents,
//     cache.min_ttl <= cache.max_ttl, profile names as documented, and every override stored
//     under its normalised key with a policy that validate_policy() accepts (with the final
//     [policy] tlsrpt) and that is at most kMaxPolicyLength bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <string_view>

#include "core/config.h"
#include "core/policy_grammar.h"
#include "fuzz_common.h"
#include "util/domain.h"

using namespace tlspolicy;

namespace {

constexpr std::string_view kSource = "fuzz.toml";

// The integer keys and where parse_config() stores them; their ranges come from
// config_keys(), the same table the documentation is generated from.
const std::map<std::string, std::function<int64_t(const Config&)>>& int_fields() {
    static const std::map<std::string, std::function<int64_t(const Config&)>> m = {
        {"server.max_connections", [](const Config& c) { return c.server.max_connections; }},
        {"server.idle_timeout", [](const Config& c) { return c.server.idle_timeout; }},
        {"server.max_pipelined", [](const Config& c) { return c.server.max_pipelined; }},
        {"server.drain_timeout", [](const Config& c) { return c.server.drain_timeout; }},
        {"server.lookup_deadline_ms", [](const Config& c) { return c.server.lookup_deadline_ms; }},
        {"dns.timeout_ms", [](const Config& c) { return c.dns.timeout_ms; }},
        {"dns.deadline_ms", [](const Config& c) { return c.dns.deadline_ms; }},
        {"dns.max_queries", [](const Config& c) { return c.dns.max_queries; }},
        {"mta_sts.https_port", [](const Config& c) { return c.mta_sts.https_port; }},
        {"mta_sts.connect_timeout_ms",
         [](const Config& c) { return c.mta_sts.connect_timeout_ms; }},
        {"mta_sts.timeout_ms", [](const Config& c) { return c.mta_sts.timeout_ms; }},
        {"cache.min_ttl", [](const Config& c) { return c.cache.min_ttl; }},
        {"cache.max_ttl", [](const Config& c) { return c.cache.max_ttl; }},
        {"cache.negative_ttl", [](const Config& c) { return c.cache.negative_ttl; }},
        {"cache.stale_ttl", [](const Config& c) { return c.cache.stale_ttl; }},
        {"cache.max_entries", [](const Config& c) { return c.cache.max_entries; }},
        {"cache.max_refreshes", [](const Config& c) { return c.cache.max_refreshes; }},
    };
    return m;
}

struct Range {
    int64_t min, max;
};

// "1..100000" -> {1, 100000}, for every integer key of config_keys().
const std::map<std::string, Range>& ranges() {
    static const std::map<std::string, Range> m = [] {
        std::map<std::string, Range> out;
        for (const KeyInfo& k : config_keys()) {
            if (k.type != "integer") continue;
            const std::size_t dots = k.range.find("..");
            FUZZ_CHECK(dots != std::string::npos);
            out[k.name] = {std::strtoll(k.range.substr(0, dots).c_str(), nullptr, 10),
                           std::strtoll(k.range.substr(dots + 2).c_str(), nullptr, 10)};
        }
        // Every documented integer key is checked here, and nothing else.
        FUZZ_CHECK(out.size() == int_fields().size());
        for (const auto& [name, range] : out)
            FUZZ_CHECK(int_fields().count(name) == 1);
        return out;
    }();
    return m;
}

void check_profile_name(std::string_view name) {
    FUZZ_CHECK(!name.empty() && name.size() <= 64);
    for (char c : name) {
        const auto u = static_cast<unsigned char>(c);
        FUZZ_CHECK(u > 0x20 && u < 0x7f && c != ':');
    }
}

void check_config(const Config& c) {
    FUZZ_CHECK(c.source == kSource);
    FUZZ_CHECK(!c.listen.empty());
    for (const ListenConfig& l : c.listen) {
        if (l.endpoint.kind == Endpoint::Kind::Inet) {
            FUZZ_CHECK(!l.mode && l.owner.empty() && l.group.empty());
            FUZZ_CHECK(!l.endpoint.host.empty());
        } else {
            FUZZ_CHECK(!l.endpoint.path.empty() && l.endpoint.path.front() == '/');
        }
        if (l.mode) FUZZ_CHECK(*l.mode <= 0777);
    }
    for (const auto& [name, range] : ranges()) {
        const int64_t v = int_fields().at(name)(c);
        FUZZ_CHECK(v >= range.min && v <= range.max);
    }
    FUZZ_CHECK(c.cache.min_ttl <= c.cache.max_ttl);
    FUZZ_CHECK(!c.cache.path.empty());
    for (const auto& [name, settings] : c.profiles)
        check_profile_name(name);

    PolicyGrammarOptions opts;
    opts.tlsrpt = c.policy.tlsrpt;
    for (const auto& [key, policy] : c.overrides) {
        const Key k = normalize_key(key);
        FUZZ_CHECK(k.kind != KeyKind::Invalid);
        FUZZ_CHECK(k.name == key);
        FUZZ_CHECK(policy.size() <= kMaxPolicyLength);
        FUZZ_CHECK(validate_policy(policy, opts).ok());
    }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    // The default cache path follows STATE_DIRECTORY; keep runs independent of the caller.
    unsetenv("STATE_DIRECTORY");
    (void)ranges();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
    const std::string_view text = fuzz::as_text(data, size);
    try {
        const Result<Config> r = parse_config(text, kSource);
        if (r.ok()) {
            check_config(*r);
        } else {
            const std::string& m = r.error().message;
            FUZZ_CHECK(m.starts_with(std::string(kSource) + ":"));
            if (!fuzz::no_controls(m)) std::fprintf(stderr, "message: %s\n", m.c_str());
            FUZZ_CHECK(fuzz::no_controls(m));
        }
    } catch (...) {
        fuzz::fail("an exception left parse_config()", __FILE__, __LINE__);
    }
    return 0;
}
