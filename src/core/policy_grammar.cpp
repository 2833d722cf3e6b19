// Validator for smtp_tls_policy_maps values. The rules mirror Postfix's own parser:
//   - tokenising, levels and attributes: src/smtp/smtp_tls_policy.c, tls_policy_lookup_one()
//   - level names: src/tls/tls_level.c (tls_level_table), looked up case-insensitively
//   - brace groups: src/util/mystrtok.c (mystrtokq) + src/util/extpar.c (EXTPAR_FLAG_STRIP |
//     EXTPAR_FLAG_NORMAL_WS) + src/util/split_nameval.c
//   - hostnames: src/util/valid_hostname.c; fingerprints: tls_dane_add_fpt_digests() in
//     src/tls/tls_dane.c with hex_decode_opt(HEX_DECODE_FLAG_ALLOW_COLON)
//   - cipher grades / protocols: tls_cipher_grade_table and tls_proto_mask_lims() in
//     src/tls/tls_misc.c; TLSRPT names: src/tls/tlsrpt_wrapper.c
// Where Postfix only warns (attributes on "none", malformed fingerprints that it skips) we
// reject, because a static override that Postfix half-ignores is a configuration mistake.
#include "core/policy_grammar.h"

#include <array>
#include <climits>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tlspolicy {
namespace {

// Postfix CHARS_COMMA_SP: tokens are separated by runs of these.
constexpr std::string_view kSeparators = ", \t\r\n";
constexpr std::size_t kMaxQuoted = 32;

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}
bool is_separator(char c) {
    return kSeparators.find(c) != std::string_view::npos;
}
bool is_digit(char c) {
    return c >= '0' && c <= '9';
}
bool is_alpha(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_hex(char c) {
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

char ascii_lower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// Postfix compares level, attribute and keyword names with strcasecmp().
bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
    }
    return true;
}

// Quotes user-supplied text for an error message: printable ASCII only (anything else, and
// the quote character itself, becomes '?'), at most kMaxQuoted characters. Why: the text may
// come from a config file we are rejecting, and must not inject bytes into logs.
std::string quoted(std::string_view s) {
    std::string out = "\"";
    for (std::size_t i = 0; i < s.size() && i < kMaxQuoted; ++i) {
        const char c = s[i];
        out += (c > ' ' && c < 0x7f && c != '"' && c != '\\') ? c : '?';
    }
    if (s.size() > kMaxQuoted) out += "...";
    out += '"';
    return out;
}

// Splits on `sep`, keeping empty elements so that callers can reject them.
std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> out;
    std::size_t start = 0;
    for (;;) {
        const std::size_t pos = s.find(sep, start);
        out.push_back(s.substr(start, pos == std::string_view::npos ? pos : pos - start));
        if (pos == std::string_view::npos) return out;
        start = pos + 1;
    }
}

// valid_hostname(): letters, digits, '_', '-', '.'; labels 1..63 chars that neither start nor
// end with '-'; no empty labels or trailing dot; at most 255 chars; not all-numeric.
bool valid_hostname(std::string_view name) {
    if (name.empty() || name.size() > 255) return false;
    std::size_t label_len = 0;
    bool non_numeric = false;
    for (std::size_t i = 0; i < name.size(); ++i) {
        const char c = name[i];
        const bool last = i + 1 == name.size();
        if (is_alpha(c) || is_digit(c) || c == '_') {
            if (++label_len > 63) return false;
            if (!is_digit(c)) non_numeric = true;
        } else if (c == '.') {
            if (label_len == 0 || last) return false;
            label_len = 0;
        } else if (c == '-') {
            if (++label_len == 1 || last || name[i + 1] == '.') return false;
        } else {
            return false;
        }
    }
    return non_numeric;
}

enum class Level : std::uint8_t {
    kNone,
    kMay,
    kEncrypt,
    kFingerprint,
    kDane,
    kDaneOnly,
    kVerify,
    kSecure
};

struct LevelName {
    std::string_view name;
    Level level;
};

// tls_level_table in tls_level.c. Legacy smtp_tls_per_site words (MUST, MUST_NOPEERMATCH)
// are not accepted by smtp_tls_policy_maps, nor is the internal "half-dane" level.
constexpr std::array<LevelName, 8> kLevels{{
    {"none", Level::kNone},
    {"may", Level::kMay},
    {"encrypt", Level::kEncrypt},
    {"fingerprint", Level::kFingerprint},
    {"dane", Level::kDane},
    {"dane-only", Level::kDaneOnly},
    {"verify", Level::kVerify},
    {"secure", Level::kSecure},
}};

std::string_view level_name(Level level) {
    for (const auto& l : kLevels) {
        if (l.level == level) return l.name;
    }
    return "unknown";
}

constexpr unsigned bit(Level l) {
    return 1u << static_cast<unsigned>(l);
}
constexpr unsigned kTlsLevels = bit(Level::kMay) | bit(Level::kEncrypt) | bit(Level::kFingerprint) |
                                bit(Level::kDane) | bit(Level::kDaneOnly) | bit(Level::kVerify) |
                                bit(Level::kSecure);
// match= : the default branch of the switch in tls_policy_lookup_one() rejects other levels.
constexpr unsigned kMatchLevels =
    bit(Level::kFingerprint) | bit(Level::kVerify) | bit(Level::kSecure);
// tafile= : TLS_MUST_PKIX(level), i.e. level >= verify.
constexpr unsigned kPkixLevels = bit(Level::kVerify) | bit(Level::kSecure);

// A value check returns an empty string when the value is fine, else a short reason that
// never contains the value itself.
using Check = std::string (*)(std::string_view value, Level level);

std::string check_grade(std::string_view v, Level) {
    // tls_cipher_grade_table; "invalid" is in the table but maps to TLS_CIPHER_NONE.
    for (std::string_view g : {"export", "low", "medium", "high", "null"}) {
        if (iequals(v, g)) return {};
    }
    return "expected export, low, medium, high or null";
}

bool valid_tls_version(std::string_view v) {
    for (std::string_view n : {"None", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}) {
        if (iequals(v, n)) return true;
    }
    // parse_tls_version() also takes a hex protocol number (strtoul base 16, so "0x" is
    // allowed). TLS versions are 16-bit, so more than 4 digits is a typo.
    if (v.size() > 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) v.remove_prefix(2);
    if (v.empty() || v.size() > 4) return false;
    for (char c : v) {
        if (!is_hex(c)) return false;
    }
    return true;
}

std::string check_protocols(std::string_view v, Level) {
    // tls_proto_mask_lims() splits on commas/whitespace/colons; inside a policy table only ':'
    // is usable (TLS_README), so we accept only ':' and reject empty elements.
    for (std::string_view p : split(v, ':')) {
        if (p.empty()) return "empty element in ':'-separated list";
        if (p.starts_with(">=") || p.starts_with("<=")) {
            if (!valid_tls_version(p.substr(2))) return "unknown TLS version after >= or <=";
            continue;
        }
        if (p.starts_with('!')) p.remove_prefix(1);
        bool known = false;
        for (std::string_view n : {"SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}) {
            known = known || iequals(p, n);
        }
        if (!known) return "unknown protocol name";
    }
    return {};
}

std::string check_exclude(std::string_view v, Level) {
    // tls_set_ciphers(): each ':'-separated exclusion becomes ":!name"; a leading modifier
    // ('!', '+', '-', '@') makes the handshake setup fail.
    for (std::string_view c : split(v, ':')) {
        if (c.empty()) return "empty element in ':'-separated list";
        if (c.front() == '!' || c.front() == '+' || c.front() == '-' || c.front() == '@') {
            return "cipher exclusions must not start with '!', '+', '-' or '@'";
        }
        for (char ch : c) {
            if (!is_alpha(ch) && !is_digit(ch) && ch != '-' && ch != '_' && ch != '.' &&
                ch != '+') {
                return "not an OpenSSL cipher name";
            }
        }
    }
    return {};
}

std::string check_hostname(std::string_view v, Level) {
    // servername= and policy_domain= both go through valid_hostname(). For servername the
    // keywords "hostname" and "nexthop" are syntactically hostnames already.
    return valid_hostname(v) ? std::string{} : "not a valid DNS hostname";
}

// hex_decode_opt() with HEX_DECODE_FLAG_ALLOW_COLON: hex pairs, optionally separated by
// single colons (no leading/trailing colon). Returns the decoded byte count.
std::optional<std::size_t> hex_digest_bytes(std::string_view s) {
    if (s.size() > 3 * 64) return std::nullopt;  // tls_dane_add_fpt_digests: 3*EVP_MAX_MD_SIZE
    std::size_t i = 0;
    std::size_t bytes = 0;
    while (i < s.size()) {
        if (s.size() - i < 2 || !is_hex(s[i]) || !is_hex(s[i + 1])) return std::nullopt;
        i += 2;
        ++bytes;
        if (i < s.size() && s[i] == ':' && s.size() - i > 2) ++i;
    }
    return bytes;
}

std::string check_match(std::string_view v, Level level) {
    if (level == Level::kFingerprint) {
        // Fingerprint level: '|'-separated digests. Postfix skips a malformed digest with a
        // warning; we reject it, since a typo silently removes a pin. We also require a
        // standard digest size (md5..sha512), because a truncated digest can never match.
        for (std::string_view d : split(v, '|')) {
            if (d.empty()) return "empty element in '|'-separated digest list";
            const auto bytes = hex_digest_bytes(d);
            if (!bytes) return "digest is not colon-separated hex";
            if (*bytes != 16 && *bytes != 20 && *bytes != 28 && *bytes != 32 && *bytes != 48 &&
                *bytes != 64) {
                return "digest length is not that of md5, sha1 or a sha2 digest";
            }
        }
        return {};
    }
    // verify/secure: argv_split(val, ":"); each element is a strategy keyword or a name,
    // ".name" meaning any subdomain.
    for (std::string_view m : split(v, ':')) {
        if (m.empty()) return "empty element in ':'-separated list";
        if (iequals(m, "hostname") || iequals(m, "nexthop") || iequals(m, "dot-nexthop")) {
            continue;
        }
        if (m.starts_with('*')) {
            // The classic mistake of pasting an MTA-STS "mx:" pattern; Postfix would treat it
            // as a literal name that no certificate matches.
            return "'*' wildcards are not supported, use \".domain\" for subdomains";
        }
        if (m.starts_with('.')) m.remove_prefix(1);
        if (!valid_hostname(m)) return "element is neither a DNS name nor a match strategy";
    }
    return {};
}

std::string check_tafile(std::string_view v, Level) {
    // Postfix opens the file relative to smtp(8)'s working directory (the queue directory,
    // possibly chrooted), so a relative path almost never means what the operator intended.
    if (!v.starts_with('/')) return "must be an absolute path";
    return {};
}

std::string check_yes_no(std::string_view v, Level) {
    return (iequals(v, "yes") || iequals(v, "no")) ? std::string{} : "expected yes or no";
}

std::string check_policy_type(std::string_view v, Level) {
    // tlsrpt_policy_type_mapping: "tlsa" is not accepted, DANE data is built in.
    return (iequals(v, "sts") || iequals(v, "no-policy-found")) ? std::string{}
                                                                : "expected sts or no-policy-found";
}

std::string check_policy_failure(std::string_view v, Level) {
    for (std::string_view f : {"sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
                               "validation-failure"}) {
        if (iequals(v, f)) return {};
    }
    return "not a TLSRPT policy failure code Postfix accepts";
}

std::string check_mx_host_pattern(std::string_view v, Level) {
    // Postfix stores the pattern verbatim; with smtp_tls_enforce_sts_mx_patterns a malformed
    // one just never matches, so we insist on RFC 8461 "name" or "*.name".
    if (v.starts_with("*.")) v.remove_prefix(2);
    return valid_hostname(v) ? std::string{} : "not a hostname or \"*.\" hostname pattern";
}

std::string check_policy_ttl(std::string_view v, Level) {
    // alldig() + sane_strtol(), and the result must fit the int ext_policy_ttl field.
    long long n = 0;
    for (char c : v) {
        if (!is_digit(c)) return "not a decimal number";
        n = n * 10 + (c - '0');
        if (n > INT_MAX) return "number too large";
    }
    return {};
}

std::string check_any(std::string_view, Level) {
    return {};
}

enum class Count : std::uint8_t {
    kOnce,      // "is specified multiple times" is an error in Postfix
    kRepeat,    // values accumulate (match, tafile, mx_host_pattern, policy_string)
    kLastWins,  // Postfix silently keeps the last value (connection_reuse, enable_rpk)
};

struct AttributeSpec {
    std::string_view name;
    Count count;
    unsigned levels;
    bool tlsrpt;  // Postfix >= 3.10 only
    Check check;
};

// The if-chain of tls_policy_lookup_one(). Attributes Postfix accepts at any TLS level
// (e.g. enable_rpk, which it "ultimately ignores at some security levels") keep kTlsLevels.
constexpr std::array<AttributeSpec, 14> kAttributes{{
    {"ciphers", Count::kOnce, kTlsLevels, false, check_grade},
    {"protocols", Count::kOnce, kTlsLevels, false, check_protocols},
    {"exclude", Count::kOnce, kTlsLevels, false, check_exclude},
    {"servername", Count::kOnce, kTlsLevels, false, check_hostname},
    {"match", Count::kRepeat, kMatchLevels, false, check_match},
    {"tafile", Count::kRepeat, kPkixLevels, false, check_tafile},
    {"connection_reuse", Count::kLastWins, kTlsLevels, false, check_yes_no},
    {"enable_rpk", Count::kLastWins, kTlsLevels, false, check_yes_no},
    {"policy_type", Count::kOnce, kTlsLevels, true, check_policy_type},
    {"policy_domain", Count::kOnce, kTlsLevels, true, check_hostname},
    {"mx_host_pattern", Count::kRepeat, kTlsLevels, true, check_mx_host_pattern},
    {"policy_string", Count::kRepeat, kTlsLevels, true, check_any},
    {"policy_failure", Count::kOnce, kTlsLevels, true, check_policy_failure},
    {"policy_ttl", Count::kOnce, kTlsLevels, true, check_policy_ttl},
}};
// policy_type, followed by the TLSRPT attributes that are only valid together with it.
constexpr std::size_t kPolicyTypeIndex = 8;
static_assert(kAttributes[kPolicyTypeIndex].name == "policy_type");

// Next token the way mystrtokq(CHARS_COMMA_SP, "{}") finds it: skip separators, then stop
// at a separator outside braces. Unlike Postfix, a '}' without a matching '{' is an error
// (Postfix would keep it as a literal character of the value).
Result<std::optional<std::string_view>> next_token(std::string_view& rest) {
    std::size_t start = 0;
    while (start < rest.size() && is_separator(rest[start]))
        ++start;
    if (start == rest.size()) {
        rest = {};
        return std::optional<std::string_view>{};
    }
    int depth = 0;
    std::size_t end = start;
    for (; end < rest.size(); ++end) {
        const char c = rest[end];
        if (c == '{') {
            ++depth;
        } else if (c == '}') {
            if (depth == 0) return make_error("unbalanced '}' in TLS policy");
            --depth;
        } else if (depth == 0 && is_separator(c)) {
            break;
        }
    }
    if (depth != 0) return make_error("unbalanced '{' in TLS policy");
    const std::string_view token = rest.substr(start, end - start);
    rest.remove_prefix(end);
    return std::optional<std::string_view>{token};
}

struct Attribute {
    std::string name;
    std::string value;
};

// A "{ name = value }" token: extpar() with EXTPAR_FLAG_STRIP | EXTPAR_FLAG_NORMAL_WS strips
// the braces and the whitespace just inside them and collapses whitespace runs (line breaks
// included) to one space; split_nameval() then trims around '='. A plain token goes straight
// to split_nameval(); we additionally refuse braces inside it (e.g. "policy_string={a b}"),
// which Postfix would keep verbatim as part of the value.
Result<Attribute> split_attribute(std::string_view token) {
    std::string text;
    if (token.front() == '{') {
        // The tokenizer guarantees balance; find the brace that closes the first one.
        int depth = 0;
        std::size_t close = 0;
        for (std::size_t i = 0; i < token.size(); ++i) {
            if (token[i] == '{') ++depth;
            if (token[i] == '}' && --depth == 0) {
                close = i;
                break;
            }
        }
        if (close + 1 != token.size()) return make_error("text after '}' in TLS policy");
        for (char c : token.substr(1, close - 1)) {
            if (is_space(c)) {
                if (!text.empty() && text.back() != ' ') text += ' ';
            } else {
                text += c;
            }
        }
        if (!text.empty() && text.back() == ' ') text.pop_back();
    } else {
        if (token.find_first_of("{}") != std::string_view::npos) {
            return make_error("'{' must start a \"{ name = value }\" group in TLS policy");
        }
        text.assign(token);
    }
    const std::size_t eq = text.find('=');
    std::string_view name = std::string_view(text).substr(0, eq);
    while (!name.empty() && name.back() == ' ')
        name.remove_suffix(1);
    if (name.empty()) return make_error("missing attribute name before '=' in TLS policy");
    if (eq == std::string::npos || name.find(' ') != std::string_view::npos) {
        return make_error("missing '=' after attribute name " + quoted(name));
    }
    std::string_view value = std::string_view(text).substr(eq + 1);
    while (!value.empty() && value.front() == ' ')
        value.remove_prefix(1);
    return Attribute{std::string(name), std::string(value)};
}

}  // namespace

Status validate_policy(std::string_view policy, const PolicyGrammarOptions& options) {
    // Control characters and non-ASCII bytes are never meaningful in a policy; rejecting
    // them up front also keeps every later quoted() fragment trivially safe.
    for (char c : policy) {
        const auto u = static_cast<unsigned char>(c);
        if ((u < 0x20 && !is_space(c)) || u >= 0x7f) {
            return make_error("TLS policy contains a control or non-ASCII byte");
        }
    }

    std::string_view rest = policy;
    auto first = next_token(rest);
    if (!first.ok()) return first.error();
    if (!first.value()) return make_error("invalid empty TLS policy");

    const std::string_view level_token = **first;
    std::optional<Level> level;
    for (const auto& l : kLevels) {
        if (iequals(level_token, l.name)) level = l.level;
    }
    if (!level) return make_error("unknown TLS level " + quoted(level_token));

    std::array<unsigned, kAttributes.size()> seen{};
    for (;;) {
        auto token = next_token(rest);
        if (!token.ok()) return token.error();
        if (!token.value()) break;

        // Postfix ignores attributes after "none" with a warning. For a static override that
        // is a config error: the operator wrote settings that will silently do nothing (and
        // most likely meant a TLS level), so we refuse rather than disable TLS quietly.
        if (*level == Level::kNone) {
            return make_error("level \"none\" takes no attributes (Postfix would ignore them)");
        }

        auto attr = split_attribute(**token);
        if (!attr.ok()) return attr.error();

        std::size_t index = kAttributes.size();
        for (std::size_t i = 0; i < kAttributes.size(); ++i) {
            if (iequals(attr->name, kAttributes[i].name)) index = i;
        }
        if (index == kAttributes.size()) {
            return make_error("unknown TLS policy attribute " + quoted(attr->name));
        }
        const AttributeSpec& spec = kAttributes[index];
        const std::string name = "attribute \"" + std::string(spec.name) + "\"";

        if (spec.tlsrpt && !options.tlsrpt) {
            // Postfix <= 3.9 reports "invalid attribute name" and defers the mail.
            return make_error(name + " needs Postfix >= 3.10 and [policy] tlsrpt = true");
        }
        if ((spec.levels & bit(*level)) == 0) {
            return make_error(name + " is not allowed with level \"" +
                              std::string(level_name(*level)) + "\"");
        }
        if (attr->value.empty()) return make_error(name + " has an empty value");
        if (spec.count == Count::kOnce && seen[index] > 0) {
            return make_error(name + " is specified more than once");
        }
        ++seen[index];
        if (const std::string why = spec.check(attr->value, *level); !why.empty()) {
            return make_error(name + " has an invalid value: " + why);
        }
    }

    // The closing check of tls_policy_lookup_one(): TLSRPT data without policy_type is
    // "built-in policy has unexpected attribute ...".
    if (seen[kPolicyTypeIndex] == 0) {
        for (std::size_t i = kPolicyTypeIndex + 1; i < kAttributes.size(); ++i) {
            if (seen[i] > 0) {
                return make_error("attribute \"" + std::string(kAttributes[i].name) +
                                  "\" requires a policy_type attribute");
            }
        }
    }
    return {};
}

}  // namespace tlspolicy
