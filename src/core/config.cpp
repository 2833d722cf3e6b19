#include "core/config.h"

#include "util/log.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <type_traits>
#include <variant>

#include <toml++/toml.h>

#include "core/policy_grammar.h"
#include "util/address.h"
#include "util/domain.h"

namespace tlspolicy {

std::string_view protocol_name(Protocol p) {
    return p == Protocol::Socketmap ? "socketmap" : "tcp_table";
}

const PolicySettings& Config::profile(std::string_view name) const {
    auto it = profiles.find(name);
    return it == profiles.end() ? policy : it->second;
}

namespace {

// ---------------------------------------------------------------------------------------
// The key table. Each key has a type, a default (applied by default_config()), a range or a
// set of choices, a doc line, and a setter that stores a checked value into its target.

enum class Type { Bool, Int, String, Enum, StringList };
using Value = std::variant<bool, int64_t, std::string, std::vector<std::string>>;

template <class Target>
struct KeySpec {
    std::string_view name;
    Type type;
    Value def;  // std::monostate-free: a key without default uses an empty string/list
    int64_t min = 0;
    int64_t max = 0;
    std::vector<std::string_view> choices;
    std::string_view doc;
    Status (*set)(Target&, const Value&);
    bool required = false;  // only for [[listen]] entries
};

const std::string& str(const Value& v) {
    return std::get<std::string>(v);
}

// Setter for a key that needs no check beyond its type and range: stores the value into
// (config.*Section).*Field.
template <auto Section, auto Field>
Status set_field(Config& c, const Value& v) {
    auto& field = (c.*Section).*Field;
    field = std::get<std::remove_cvref_t<decltype(field)>>(v);
    return {};
}

// The same for a field directly in Target.
template <class Target, auto Field>
Status set_member(Target& t, const Value& v) {
    auto& field = t.*Field;
    field = std::get<std::remove_cvref_t<decltype(field)>>(v);
    return {};
}

// systemd's StateDirectory= sets STATE_DIRECTORY; `make run` uses it for a local directory.
std::string default_cache_path() {
    if (const char* dir = std::getenv("STATE_DIRECTORY"); dir && *dir) {
        std::string first(dir);
        first = first.substr(0, first.find(':'));
        return first + "/cache.sqlite";
    }
    return "/var/lib/tlspolicyd/cache.sqlite";
}

Status check_resolver(const std::string& r) {
    if (auto parsed = parse_resolver(r); !parsed) return parsed.error();
    return {};
}

const std::vector<std::pair<std::string_view, std::vector<KeySpec<Config>>>>& section_table() {
    static const std::vector<std::pair<std::string_view, std::vector<KeySpec<Config>>>> t = {
        {"server",
         {
             {"max_connections",
              Type::Int,
              int64_t{1000},
              1,
              100000,
              {},
              "Concurrent client connections; beyond it new connections wait in the kernel's "
              "listen queue (back-pressure) instead of being refused.",
              &set_field<&Config::server, &Config::Server::max_connections>},
             {"idle_timeout",
              Type::Int,
              int64_t{300},
              1,
              86400,
              {},
              "Seconds a connection may stay idle before it is closed. Postfix's socketmap "
              "client closes idle connections after 10 s itself; its tcp_table client never "
              "does and pays a 1 s pause when the server closed first, so keep this long. A "
              "request must also arrive whole within this time of its first bytes.",
              &set_field<&Config::server, &Config::Server::idle_timeout>},
             {"max_pipelined",
              Type::Int,
              int64_t{64},
              1,
              10000,
              {},
              "Requests read ahead per connection while earlier answers are pending; beyond "
              "it the connection is not read until answers have been written.",
              &set_field<&Config::server, &Config::Server::max_pipelined>},
             {"drain_timeout",
              Type::Int,
              int64_t{10},
              0,
              600,
              {},
              "Seconds SIGTERM waits for requests in progress before the daemon exits.",
              &set_field<&Config::server, &Config::Server::drain_timeout>},
             {"lookup_deadline_ms",
              Type::Int,
              int64_t{15000},
              100,
              600000,
              {},
              "Longest a client waits for an answer that is not cached; past it, a stale "
              "answer where the cache rules allow one, else a temporary failure (the lookup "
              "goes on and fills the cache).",
              &set_field<&Config::server, &Config::Server::lookup_deadline_ms>},
         }},
        {"log",
         {
             {"level",
              Type::Enum,
              std::string("info"),
              0,
              0,
              {"error", "warning", "info", "debug"},
              "Most verbose level written to stderr (journald under systemd).",
              [](Config& c, const Value& v) -> Status {
                  log::parse_level(str(v), c.log.level);
                  return {};
              }},
             {"format",
              Type::Enum,
              std::string("text"),
              0,
              0,
              {"text", "json"},
              "\"text\": one readable line per event; \"json\": one JSON object per line "
              "(time, level, msg, and domain, answer, source, duration_ms, reason for answers).",
              [](Config& c, const Value& v) -> Status {
                  c.log.format = str(v) == "json" ? log::Format::Json : log::Format::Text;
                  return {};
              }},
             {"syslog",
              Type::Bool,
              false,
              0,
              0,
              {},
              "Also send every line to syslog (facility mail, ident tlspolicyd).",
              &set_field<&Config::log, &Config::Log::syslog>},
         }},
        {"metrics",
         {
             {"address",
              Type::String,
              std::string(),
              0,
              0,
              {},
              "Prometheus metrics over HTTP (GET /metrics) on IPv4:PORT, [IPv6]:PORT or "
              "unix:/path. Empty: no metrics listener.",
              [](Config& c, const Value& v) -> Status {
                  c.metrics.endpoint.reset();
                  if (str(v).empty()) return {};
                  auto ep = parse_endpoint(str(v));
                  if (!ep) return ep.error();
                  c.metrics.endpoint = *ep;
                  return {};
              }},
         }},
        {"control",
         {
             {"address",
              Type::String,
              std::string(),
              0,
              0,
              {},
              "Control socket for `tlspolicy cache purge|export` against the running daemon: "
              "unix:/path or a loopback IPv4:PORT / [::1]:PORT. Empty: control.sock in the "
              "directory of cache.path; \"off\": none.",
              [](Config& c, const Value& v) -> Status {
                  c.control.address = str(v);
                  if (str(v).empty() || str(v) == "off") return {};
                  auto ep = parse_endpoint(str(v));
                  if (!ep) return ep.error();
                  if (ep->kind == Endpoint::Kind::Inet &&
                      special_address_kind(ep->host) != "loopback")
                      return make_error(
                          "the control socket must be unix:/path or a loopback "
                          "address (127.0.0.0/8, [::1]): it accepts commands");
                  return {};
              }},
         }},
        {"dns",
         {
             {"resolvers",
              Type::StringList,
              std::vector<std::string>{},
              0,
              0,
              {},
              "Upstream resolvers for stub mode, tried in order and asked over TCP (IP, IP:PORT, "
              "[IPv6]:PORT). "
              "Empty: full recursion from the root. DNSSEC is validated by tlspolicyd itself "
              "either way.",
              [](Config& c, const Value& v) -> Status {
                  for (const auto& r : std::get<std::vector<std::string>>(v))
                      if (auto s = check_resolver(r); !s) return s;
                  c.dns.resolvers = std::get<std::vector<std::string>>(v);
                  return {};
              }},
             {"trust_anchor_file",
              Type::String,
              std::string("/usr/share/dns/root.key"),
              0,
              0,
              {},
              "DNSSEC trust anchors (DS or DNSKEY records in zone-file format).",
              &set_field<&Config::dns, &Config::Dns::trust_anchor_file>},
             {"timeout_ms",
              Type::Int,
              int64_t{5000},
              100,
              60000,
              {},
              "Timeout of one DNS query at one resolver, in milliseconds; on a timeout the "
              "next resolver of the list is tried.",
              &set_field<&Config::dns, &Config::Dns::timeout_ms>},
             {"deadline_ms",
              Type::Int,
              int64_t{15000},
              100,
              90000,
              {},
              "Time one domain's lookups (MX, addresses, TLSA) may take in all, in "
              "milliseconds; past it the answer is decided from what is known (TEMP when the MX "
              "set is unknown). Keep it below Postfix's 100 s socketmap timeout.",
              &set_field<&Config::dns, &Config::Dns::deadline_ms>},
             {"max_queries",
              Type::Int,
              int64_t{256},
              1,
              100000,
              {},
              "DNS queries in flight at once; further queries wait their turn.",
              &set_field<&Config::dns, &Config::Dns::max_queries>},
         }},
        {"mta_sts",
         {
             {"ca_file",
              Type::String,
              std::string(),
              0,
              0,
              {},
              "PEM file of CAs for MTA-STS policy hosts; empty: the system trust store.",
              &set_field<&Config::mta_sts, &Config::MtaSts::ca_file>},
             {"https_port",
              Type::Int,
              int64_t{443},
              1,
              65535,
              {},
              "Port of MTA-STS policy hosts. Only test worlds change it.",
              &set_field<&Config::mta_sts, &Config::MtaSts::https_port>},
             {"allow_private_addresses",
              Type::Bool,
              false,
              0,
              0,
              {},
              "Allow policy hosts on loopback, private and other special addresses (a recipient "
              "domain could otherwise aim the fetcher at internal services).",
              &set_field<&Config::mta_sts, &Config::MtaSts::allow_private_addresses>},
             {"connect_timeout_ms",
              Type::Int,
              int64_t{10000},
              100,
              60000,
              {},
              "Time to connect to a policy host and finish the TLS handshake, in milliseconds.",
              &set_field<&Config::mta_sts, &Config::MtaSts::connect_timeout_ms>},
             {"timeout_ms",
              Type::Int,
              int64_t{30000},
              100,
              60000,
              {},
              "Time one policy fetch may take in all (connect, TLS, headers, body), in "
              "milliseconds. RFC 8461 suggests at most a minute.",
              &set_field<&Config::mta_sts, &Config::MtaSts::timeout_ms>},
             {"proxy",
              Type::String,
              std::string(),
              0,
              0,
              {},
              "HTTP(S) proxy for policy fetches, as libcurl takes it (\"http://host:port\"); "
              "empty: connect directly (proxy environment variables are ignored).",
              &set_field<&Config::mta_sts, &Config::MtaSts::proxy>},
         }},
        {"cache",
         {
             {"path",
              Type::String,
              std::string(),
              0,
              0,
              {},
              "SQLite cache file, shared with `tlspolicy`. Default: $STATE_DIRECTORY/"
              "cache.sqlite when systemd sets STATE_DIRECTORY, else "
              "/var/lib/tlspolicyd/cache.sqlite.",
              [](Config& c, const Value& v) -> Status {
                  c.cache.path = str(v).empty() ? default_cache_path() : str(v);
                  return {};
              }},
             {"min_ttl",
              Type::Int,
              int64_t{180},
              0,
              31557600,
              {},
              "Shortest lifetime, in seconds, of a DNS-derived answer.",
              &set_field<&Config::cache, &Config::Cache::min_ttl>},
             {"max_ttl",
              Type::Int,
              int64_t{86400},
              1,
              31557600,
              {},
              "Longest lifetime, in seconds, of a DNS-derived answer.",
              &set_field<&Config::cache, &Config::Cache::max_ttl>},
             {"negative_ttl",
              Type::Int,
              int64_t{1800},
              0,
              31557600,
              {},
              "Lifetime, in seconds, of a not-found answer without an SOA minimum.",
              &set_field<&Config::cache, &Config::Cache::negative_ttl>},
             {"stale_ttl",
              Type::Int,
              int64_t{3600},
              0,
              31557600,
              {},
              "Seconds a DANE answer may be served past its expiry while refreshes fail.",
              &set_field<&Config::cache, &Config::Cache::stale_ttl>},
             {"max_entries",
              Type::Int,
              int64_t{200000},
              1,
              10000000,
              {},
              "Most domains kept in memory (and loaded at start); past it, not-found entries "
              "are evicted first, then the least recently used.",
              &set_field<&Config::cache, &Config::Cache::max_entries>},
             {"max_refreshes",
              Type::Int,
              int64_t{16},
              1,
              1000,
              {},
              "Background refreshes of used entries running at once.",
              &set_field<&Config::cache, &Config::Cache::max_refreshes>},
         }},
    };
    return t;
}

const std::vector<KeySpec<PolicySettings>>& policy_table() {
    static const std::vector<KeySpec<PolicySettings>> t = {
        {"sts_level",
         Type::Enum,
         std::string("verify"),
         0,
         0,
         {"verify", "secure"},
         "Postfix level for MTA-STS enforce policies.",
         [](PolicySettings& p, const Value& v) -> Status {
             p.sts_level = str(v) == "secure" ? StsLevel::Secure : StsLevel::Verify;
             return {};
         }},
        {"testing_mode",
         Type::Enum,
         std::string("ignore"),
         0,
         0,
         {"ignore", "encrypt", "enforce"},
         "Answer for MTA-STS mode testing: ignore (not found), encrypt, or enforce.",
         [](PolicySettings& p, const Value& v) -> Status {
             p.testing_mode = str(v) == "encrypt"   ? TestingMode::Encrypt
                              : str(v) == "enforce" ? TestingMode::Enforce
                                                    : TestingMode::Ignore;
             return {};
         }},
        {"tlsrpt",
         Type::Bool,
         false,
         0,
         0,
         {},
         "Append Postfix >= 3.10 TLSRPT attributes (Postfix <= 3.9 rejects them and defers).",
         &set_member<PolicySettings, &PolicySettings::tlsrpt>},
        {"servername",
         Type::Bool,
         true,
         0,
         0,
         {},
         "Add servername=hostname (SNI) to MTA-STS answers; switch off for Postfix < 3.4, which "
         "does not know the attribute.",
         &set_member<PolicySettings, &PolicySettings::servername>},
    };
    return t;
}

Result<unsigned> parse_mode(const std::string& s) {
    if (s.empty() || s.size() > 4) return make_error("mode must be octal, e.g. \"0660\"");
    unsigned m = 0;
    for (char c : s) {
        if (c < '0' || c > '7') return make_error("mode must be octal, e.g. \"0660\"");
        m = m * 8 + static_cast<unsigned>(c - '0');
    }
    if (m > 0777) return make_error("mode must be at most 0777");
    return m;
}

const std::vector<KeySpec<ListenConfig>>& listen_table() {
    static const std::vector<KeySpec<ListenConfig>> t = {
        {"protocol",
         Type::Enum,
         std::string("socketmap"),
         0,
         0,
         {"socketmap", "tcp_table"},
         "Protocol spoken on this listener.",
         [](ListenConfig& l, const Value& v) -> Status {
             l.protocol = str(v) == "tcp_table" ? Protocol::TcpTable : Protocol::Socketmap;
             return {};
         },
         true},
        {"address",
         Type::String,
         std::string(),
         0,
         0,
         {},
         "IPv4:PORT, [IPv6]:PORT or unix:/path. Port 0 picks a free port (reported at start).",
         [](ListenConfig& l, const Value& v) -> Status {
             auto ep = parse_endpoint(str(v));
             if (!ep) return ep.error();
             l.endpoint = *ep;
             return {};
         },
         true},
        {"mode",
         Type::String,
         std::string(),
         0,
         0,
         {},
         "Unix sockets: permission bits as an octal string, e.g. \"0660\".",
         [](ListenConfig& l, const Value& v) -> Status {
             if (str(v).empty()) return {};
             auto m = parse_mode(str(v));
             if (!m) return m.error();
             l.mode = *m;
             return {};
         }},
        {"owner",
         Type::String,
         std::string(),
         0,
         0,
         {},
         "Unix sockets: owning user (the daemon must run as root to set it).",
         &set_member<ListenConfig, &ListenConfig::owner>},
        {"group",
         Type::String,
         std::string(),
         0,
         0,
         {},
         "Unix sockets: owning group (the daemon must run as root to set it).",
         &set_member<ListenConfig, &ListenConfig::group>},
    };
    return t;
}

std::vector<ListenConfig> default_listeners() {
    ListenConfig sm;
    sm.protocol = Protocol::Socketmap;
    sm.endpoint = *parse_endpoint("127.0.0.1:8461");
    ListenConfig tt;
    tt.protocol = Protocol::TcpTable;
    tt.endpoint = *parse_endpoint("127.0.0.1:8462");
    return {sm, tt};
}

// ---------------------------------------------------------------------------------------
// Reading TOML nodes.

template <class Target>
std::string describe_type(const KeySpec<Target>& s) {
    switch (s.type) {
        case Type::Bool:
            return "bool";
        case Type::Int:
            return "integer";
        case Type::String:
            return "string";
        case Type::StringList:
            return "list of strings";
        case Type::Enum: {
            std::string out = "one of ";
            for (std::size_t i = 0; i < s.choices.size(); ++i) {
                if (i) out += '|';
                out += s.choices[i];
            }
            return out;
        }
    }
    return "";
}

std::string toml_literal(const Value& v) {
    std::ostringstream o;
    if (auto b = std::get_if<bool>(&v))
        o << (*b ? "true" : "false");
    else if (auto i = std::get_if<int64_t>(&v))
        o << *i;
    else if (auto s = std::get_if<std::string>(&v))
        o << '"' << *s << '"';
    else {
        o << '[';
        const auto& list = std::get<std::vector<std::string>>(v);
        for (std::size_t k = 0; k < list.size(); ++k)
            o << (k ? ", " : "") << '"' << list[k] << '"';
        o << ']';
    }
    return o.str();
}

class Reader {
  public:
    explicit Reader(std::string_view source) : source_(source) {}

    Error at(const toml::source_region& where, const std::string& msg) const {
        return make_error(source_ + ":" + std::to_string(where.begin.line) + ":" +
                          std::to_string(where.begin.column) + ": " + msg);
    }

    // Reads `node` as the type of `spec` and checks its range; `full` is the dotted key name.
    template <class Target>
    Result<Value> read(const toml::node& node, const KeySpec<Target>& spec,
                       const std::string& full) const {
        const auto& where = node.source();
        auto wrong = [&] { return at(where, "\"" + full + "\" must be a " + describe_type(spec)); };
        switch (spec.type) {
            case Type::Bool:
                if (!node.is_boolean()) return wrong();
                return Value(node.as_boolean()->get());
            case Type::Int: {
                if (!node.is_integer()) return wrong();
                const int64_t v = node.as_integer()->get();
                if (v < spec.min || v > spec.max)
                    return at(where, "\"" + full + "\" is " + std::to_string(v) +
                                         ", out of range " + std::to_string(spec.min) + ".." +
                                         std::to_string(spec.max));
                return Value(v);
            }
            case Type::String:
                if (!node.is_string()) return wrong();
                return Value(std::string(node.as_string()->get()));
            case Type::Enum: {
                if (!node.is_string()) return wrong();
                std::string v(node.as_string()->get());
                for (auto c : spec.choices)
                    if (v == c) return Value(v);
                return at(where, "\"" + full + "\" must be " + describe_type(spec) + ", not \"" +
                                     log::sanitize(v, 40) + "\"");
            }
            case Type::StringList: {
                const auto* arr = node.as_array();
                if (!arr) return wrong();
                std::vector<std::string> out;
                for (const auto& el : *arr) {
                    if (!el.is_string())
                        return at(el.source(), "\"" + full + "\" must be a list of strings");
                    out.emplace_back(el.as_string()->get());
                }
                return Value(std::move(out));
            }
        }
        return wrong();
    }

    // Applies every key of `table` to `target` using `specs`; `prefix` is "dns." etc.
    template <class Target>
    Status apply_table(const toml::table& table, const std::vector<KeySpec<Target>>& specs,
                       const std::string& prefix, Target& target,
                       std::set<std::string_view>* seen = nullptr,
                       std::string_view skip = {}) const {
        for (auto&& [key, node] : table) {
            if (!skip.empty() && key.str() == skip) continue;
            const KeySpec<Target>* spec = nullptr;
            for (const auto& s : specs)
                if (s.name == key.str()) spec = &s;
            const std::string full = prefix + std::string(key.str());
            if (!spec) return at(key.source(), "unknown key \"" + log::sanitize(full, 80) + "\"");
            auto v = read(node, *spec, full);
            if (!v) return v.error();
            if (auto s = spec->set(target, *v); !s)
                return at(node.source(), "\"" + full + "\": " + s.error().message);
            if (seen) seen->insert(spec->name);
        }
        return {};
    }

  private:
    std::string source_;
};

template <class Target>
void apply_defaults(const std::vector<KeySpec<Target>>& specs, Target& target) {
    for (const auto& s : specs)
        (void)s.set(target, s.def);
}

Status parse_profile_name(std::string_view name) {
    if (name.empty() || name.size() > 64)
        return make_error("profile name must be 1..64 characters");
    for (char c : name) {
        const auto u = static_cast<unsigned char>(c);
        // Postfix splits the map reference at the last ':', and the request at the first space.
        if (u <= 0x20 || u >= 0x7f || c == ':')
            return make_error("profile name may not contain ':', spaces or control characters");
    }
    return {};
}

// The control endpoint: as written, or control.sock beside the cache file.
Status resolve_control(Config& cfg) {
    cfg.control.endpoint.reset();
    if (cfg.control.address == "off") return {};
    std::string text = cfg.control.address;
    if (text.empty()) {
        std::error_code ec;
        const auto cache = std::filesystem::absolute(cfg.cache.path, ec);
        if (ec) return make_error("cannot place the control socket beside " + cfg.cache.path);
        text = "unix:" + (cache.parent_path() / "control.sock").string();
    }
    auto ep = parse_endpoint(text);
    if (!ep) return make_error("control.address: " + ep.error().message);
    cfg.control.endpoint = *ep;
    return {};
}

Result<Config> build(const toml::table& root, const Reader& r) {
    Config cfg = default_config();
    const toml::node* overrides = nullptr;
    for (auto&& [key, node] : root) {
        const std::string name(key.str());
        if (name == "listen") {
            const auto* arr = node.as_array();
            if (!arr || !arr->is_array_of_tables())
                return r.at(node.source(), "\"listen\" must be written as [[listen]] tables");
            cfg.listen.clear();
            for (const auto& el : *arr) {
                const auto& t = *el.as_table();
                ListenConfig l;
                std::set<std::string_view> seen;
                if (auto s = r.apply_table(t, listen_table(), "listen.", l, &seen); !s)
                    return s.error();
                for (const auto& spec : listen_table())
                    if (spec.required && !seen.count(spec.name))
                        return r.at(t.source(),
                                    "[[listen]] needs \"" + std::string(spec.name) + "\"");
                const bool unix_socket = l.endpoint.kind == Endpoint::Kind::Unix;
                if (!unix_socket && (l.mode || !l.owner.empty() || !l.group.empty()))
                    return r.at(t.source(),
                                "\"mode\", \"owner\" and \"group\" apply to unix: addresses only");
                // Port 0 ("any free port") may appear more than once; nothing else may.
                const bool any_port = !unix_socket && l.endpoint.port == 0;
                for (const auto& other : cfg.listen)
                    if (other.endpoint == l.endpoint && !any_port)
                        return r.at(t.source(),
                                    "address " + log::sanitize(l.endpoint.to_string()) +
                                        " is listed twice");
                cfg.listen.push_back(std::move(l));
            }
            if (cfg.listen.empty()) return r.at(node.source(), "at least one [[listen]] is needed");
            continue;
        }
        if (name == "overrides") {
            overrides = &node;  // validated last, with the final [policy] tlsrpt setting
            continue;
        }
        if (name == "policy") {
            const auto* t = node.as_table();
            if (!t) return r.at(node.source(), "\"policy\" must be a table");
            if (auto s =
                    r.apply_table(*t, policy_table(), "policy.", cfg.policy, nullptr, "profiles");
                !s)
                return s.error();
            if (const auto* profiles = t->get("profiles")) {
                const auto* pt = profiles->as_table();
                if (!pt)
                    return r.at(profiles->source(),
                                "\"policy.profiles\" must be a table of tables");
                for (auto&& [pname, pnode] : *pt) {
                    if (auto s = parse_profile_name(pname.str()); !s)
                        return r.at(pname.source(), s.error().message);
                    const auto* body = pnode.as_table();
                    if (!body)
                        return r.at(pnode.source(), "[policy.profiles." +
                                                        log::sanitize(pname.str(), 64) +
                                                        "] must be a table");
                    PolicySettings p = cfg.policy;  // a profile starts from [policy]
                    const std::string prefix = "policy.profiles." + std::string(pname.str()) + ".";
                    if (auto s = r.apply_table(*body, policy_table(), prefix, p); !s)
                        return s.error();
                    cfg.profiles.emplace(std::string(pname.str()), p);
                }
            }
            continue;
        }
        const std::vector<KeySpec<Config>>* specs = nullptr;
        for (const auto& [section, list] : section_table())
            if (section == name) specs = &list;
        if (!specs)
            return r.at(key.source(), "unknown section \"" + log::sanitize(name, 80) + "\"");
        const auto* t = node.as_table();
        if (!t) return r.at(node.source(), "\"" + name + "\" must be a table ([" + name + "])");
        if (auto s = r.apply_table(*t, *specs, name + ".", cfg); !s) return s.error();
    }

    if (cfg.cache.min_ttl > cfg.cache.max_ttl)
        return make_error(
            r.at(root.source(), "cache.min_ttl is larger than cache.max_ttl").message);
    if (auto s = resolve_control(cfg); !s)
        return make_error(r.at(root.source(), s.error().message).message);

    if (overrides) {
        const auto* t = overrides->as_table();
        if (!t) return r.at(overrides->source(), "\"overrides\" must be a table");
        PolicyGrammarOptions opts;
        opts.tlsrpt = cfg.policy.tlsrpt;
        for (auto&& [dom, val] : *t) {
            const std::string shown = log::sanitize(dom.str(), 80);
            if (val.is_table())
                return r.at(dom.source(), "override \"" + shown +
                                              "\" is a table: quote domain names, as in "
                                              "\"example.org\" = \"dane-only\"");
            if (!val.is_string())
                return r.at(val.source(), "override for \"" + shown + "\" must be a string");
            const Key k = normalize_key(dom.str());
            if (k.kind == KeyKind::Invalid)
                return r.at(dom.source(), "override key \"" + shown +
                                              "\" is not a domain or next hop: " + k.reason);
            const std::string policy(val.as_string()->get());
            if (policy.size() > kMaxPolicyLength)
                return r.at(val.source(), "override for \"" + shown + "\" is longer than " +
                                              std::to_string(kMaxPolicyLength) + " bytes");
            if (auto s = validate_policy(policy, opts); !s)
                return r.at(val.source(),
                            "override for \"" + shown +
                                "\" is not a valid Postfix policy: " + s.error().message);
            if (!cfg.overrides.emplace(k.name, policy).second)
                return r.at(dom.source(), "override \"" + shown +
                                              "\" duplicates another key (keys are compared "
                                              "case-folded, in A-label form)");
        }
    }
    return cfg;
}

}  // namespace

std::vector<KeyInfo> config_keys() {
    std::vector<KeyInfo> out;
    auto add = [&](const std::string& prefix, const auto& specs) {
        for (const auto& s : specs) {
            KeyInfo k;
            k.name = prefix + std::string(s.name);
            k.type = describe_type(s);
            k.default_value = toml_literal(s.def);
            if (s.type == Type::Int) k.range = std::to_string(s.min) + ".." + std::to_string(s.max);
            k.doc = std::string(s.doc);
            out.push_back(std::move(k));
        }
    };
    add("listen.", listen_table());
    for (const auto& [section, specs] : section_table())
        add(std::string(section) + ".", specs);
    add("policy.", policy_table());
    add("policy.profiles.NAME.", policy_table());
    out.push_back({"overrides.DOMAIN", "string", "", "",
                   "A static policy for DOMAIN (or .parent, or [next-hop]:port), sent verbatim; "
                   "validated against Postfix's policy grammar at load."});
    return out;
}

Config default_config() {
    Config cfg;
    cfg.source = "built-in defaults";
    cfg.listen = default_listeners();
    for (const auto& [section, specs] : section_table())
        apply_defaults(specs, cfg);
    apply_defaults(policy_table(), cfg.policy);
    (void)resolve_control(cfg);
    return cfg;
}

Result<Config> parse_config(std::string_view text, std::string_view source_name) {
    Reader r(source_name);
    toml::table root;
    try {
        root = toml::parse(text, std::string(source_name));
    } catch (const toml::parse_error& e) {
        // toml++ quotes the offending bytes as they are: never pass them on raw.
        return r.at(e.source(), log::sanitize(e.description()));
    }
    auto cfg = build(root, r);
    if (cfg) cfg->source = std::string(source_name);
    return cfg;
}

Result<Config> load_config(const std::string& path) {
    if (path.empty()) return default_config();
    std::ifstream in(path, std::ios::binary);
    if (!in) return make_error(path + ": cannot read: " + std::strerror(errno));
    std::ostringstream ss;
    ss << in.rdbuf();
    constexpr std::size_t kMaxConfigSize = 4 << 20;  // a config file is never this large
    if (ss.str().size() > kMaxConfigSize) return make_error(path + ": larger than 4 MiB");
    return parse_config(ss.str(), path);
}

}  // namespace tlspolicy
