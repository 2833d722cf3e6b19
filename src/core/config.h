// Configuration: one declarative table of keys (type, default, range, doc) read from TOML
// with toml++. Validated completely at load, then immutable: a reload builds a new Config
// and swaps the shared pointer. Errors name "file:line:col".
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "util/endpoint.h"
#include "util/log.h"
#include "util/result.h"

namespace tlspolicy {

enum class Protocol { Socketmap, TcpTable };
std::string_view protocol_name(Protocol protocol);  // "socketmap" | "tcp_table"

enum class StsLevel { Verify, Secure };
enum class TestingMode { Ignore, Encrypt, Enforce };

// Longest policy string an override may have: keeps every reply far below the tcp_table line
// limit (4096 bytes after %XX coding) and Postfix's socketmap reply limit.
inline constexpr std::size_t kMaxPolicyLength = 1000;

// How answers are shaped; [policy], and per socketmap NAME [policy.profiles.NAME].
struct PolicySettings {
    StsLevel sts_level = StsLevel::Verify;
    TestingMode testing_mode = TestingMode::Ignore;
    bool tlsrpt = false;
    bool servername = true;  // servername=hostname on MTA-STS answers (Postfix >= 3.4)
    bool operator==(const PolicySettings&) const = default;
};

struct ListenConfig {
    Protocol protocol = Protocol::Socketmap;
    Endpoint endpoint;
    std::optional<unsigned> mode;  // unix sockets: permission bits, e.g. 0660
    std::string owner;             // unix sockets: user name (needs root)
    std::string group;             // unix sockets: group name (needs root)
    bool operator==(const ListenConfig&) const = default;
};

struct Config {
    std::string source;  // the file it came from, or "built-in defaults"

    std::vector<ListenConfig> listen;
    struct Server {
        int64_t max_connections = 0;
        int64_t idle_timeout = 0;        // seconds
        int64_t max_pipelined = 0;       // requests read ahead per connection
        int64_t drain_timeout = 0;       // seconds
        int64_t lookup_deadline_ms = 0;  // longest wait for an uncached answer
    } server;
    struct Log {
        log::Level level = log::Level::Info;
        log::Format format = log::Format::Text;
        bool syslog = false;
    } log;
    struct Metrics {
        std::optional<Endpoint> endpoint;  // nullopt = no metrics listener
    } metrics;
    struct Control {
        std::string address;               // as written ("" = beside the cache file, "off")
        std::optional<Endpoint> endpoint;  // resolved; nullopt = no control socket
    } control;
    struct Dns {
        std::vector<std::string> resolvers;
        std::string trust_anchor_file;
        int64_t timeout_ms = 0;   // one query at one resolver
        int64_t deadline_ms = 0;  // all lookups of one domain
        int64_t max_queries = 0;  // in flight at once
        bool operator==(const Dns&) const = default;
    } dns;
    struct MtaSts {
        std::string ca_file;
        int64_t https_port = 0;
        bool allow_private_addresses = false;
        int64_t connect_timeout_ms = 0;
        int64_t timeout_ms = 0;  // one whole fetch
        std::string proxy;       // "" = direct
        bool operator==(const MtaSts&) const = default;
    } mta_sts;
    PolicySettings policy;
    std::map<std::string, PolicySettings, std::less<>> profiles;
    // Normalised key (see util/domain.h) -> policy string, validated against Postfix's grammar.
    std::unordered_map<std::string, std::string> overrides;
    struct Cache {
        std::string path;
        int64_t min_ttl = 0, max_ttl = 0, negative_ttl = 0, stale_ttl = 0;
        int64_t max_entries = 0, max_refreshes = 0;
    } cache;

    // The settings for a socketmap map NAME: its profile, or [policy] for unknown names.
    const PolicySettings& profile(std::string_view name) const;
};

// One documented key of the table, for `tlspolicy check-config --keys`, docs and tests.
struct KeyInfo {
    std::string name;  // dotted: "dns.timeout_ms", "listen.address", "policy.profiles.NAME.tlsrpt"
    std::string type;  // "bool", "integer", "string", "one of a|b", "list of strings", "table"
    std::string default_value;  // in TOML syntax, or "" when there is none
    std::string range;          // "1..100000" for integers, else ""
    std::string doc;
};
std::vector<KeyInfo> config_keys();

// The built-in defaults (what runs when no file is given).
Config default_config();

// Parses TOML text; `source_name` is used in error messages ("name:line:col: ...").
Result<Config> parse_config(std::string_view toml_text, std::string_view source_name);

// Reads and parses a file; an empty path gives default_config().
Result<Config> load_config(const std::string& path);

}  // namespace tlspolicy
