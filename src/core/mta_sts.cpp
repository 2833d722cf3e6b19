// MTA-STS parsing and policy rendering, RFC 8461 §3.1, §3.2, §4.1. The ABNF is followed
// literally where it is unambiguous (case-sensitive %s strings, the id and extension
// syntax, 1-10 digit max_age); the few places where it is silent or where real records differ
// are marked "Decision:" below. Reasons count and name fields but never quote the input: TXT
// records and policy bodies come from whoever controls the domain and end up in our logs.
#include "core/mta_sts.h"

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tlspolicy {
namespace {

bool is_alpha(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_digit(char c) {
    return c >= '0' && c <= '9';
}
bool is_alnum(char c) {
    return is_alpha(c) || is_digit(c);
}
bool is_wsp(char c) {
    return c == ' ' || c == '\t';
}
char ascii_lower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}
std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        c = ascii_lower(c);
    return out;
}
bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
    }
    return true;
}

std::string_view trim_wsp_right(std::string_view s) {
    while (!s.empty() && is_wsp(s.back()))
        s.remove_suffix(1);
    return s;
}

// sts-ext-name and sts-policy-ext-name: (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".").
bool valid_field_name(std::string_view name) {
    if (name.empty() || name.size() > 32 || !is_alnum(name.front())) return false;
    for (char c : name) {
        if (!is_alnum(c) && c != '_' && c != '-' && c != '.') return false;
    }
    return true;
}

// sts-ext-value: 1*(%x21-3A / %x3C / %x3E-7E), i.e. visible ASCII except ";" and "=".
bool valid_ext_value(std::string_view value) {
    if (value.empty()) return false;
    for (char c : value) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x21 || u > 0x7e || c == ';' || c == '=') return false;
    }
    return true;
}

// sts-id: 1*32(ALPHA / DIGIT).
bool valid_id(std::string_view id) {
    if (id.empty() || id.size() > kMaxStsIdLength) return false;
    for (char c : id) {
        if (!is_alnum(c)) return false;
    }
    return true;
}

constexpr std::string_view kStsVersion = "v=STSv1";

// The §3.1 discard rule: records that do not begin with "v=STSv1;" are discarded. Blanks
// before the ";" are allowed (the field delimiter is *WSP ";" *WSP); "v=STSv10", "v=STSv1x"
// and a bare "v=STSv1" are other records.
bool is_sts_record(std::string_view record) {
    if (!record.starts_with(kStsVersion)) return false;
    std::size_t i = kStsVersion.size();
    while (i < record.size() && is_wsp(record[i]))
        ++i;
    return i < record.size() && record[i] == ';';
}

StsTxt txt_error(std::string code, std::string reason) {
    StsTxt out;
    out.code = std::move(code);
    out.reason = std::move(reason);
    return out;
}

std::string field_label(std::size_t index) {
    return "field " + std::to_string(index);
}

// One record already known to start with v=STSv1. Fields are judged left to right and the
// first problem decides the code; a missing id is only known at the end.
StsTxt parse_one_sts_record(std::string_view record) {
    std::string_view rest = record.substr(kStsVersion.size());
    std::string id;
    std::size_t ids = 0;
    std::size_t field = 1;  // v=STSv1 is field 1
    for (;;) {
        while (!rest.empty() && is_wsp(rest.front()))
            rest.remove_prefix(1);
        // Decision: WSP after the last field or after the trailing ";" is accepted, although
        // the ABNF ends in [";"] without WSP: rejecting it would protect nothing.
        if (rest.empty()) break;
        if (rest.front() != ';') {
            return txt_error("invalid_sts_record",
                             "fields must be separated by ';' (after " + field_label(field) + ")");
        }
        rest.remove_prefix(1);
        while (!rest.empty() && is_wsp(rest.front()))
            rest.remove_prefix(1);
        if (rest.empty()) break;  // trailing ";"
        ++field;
        std::size_t end = 0;
        while (end < rest.size() && rest[end] != ';' && !is_wsp(rest[end]))
            ++end;
        const std::string_view token = rest.substr(0, end);
        rest.remove_prefix(end);
        if (token.empty()) return txt_error("invalid_sts_record", field_label(field) + " is empty");
        const std::size_t eq = token.find('=');
        if (eq == std::string_view::npos) {
            return txt_error("invalid_sts_record", field_label(field) + " is not name=value");
        }
        const std::string_view name = token.substr(0, eq);
        const std::string_view value = token.substr(eq + 1);
        if (name == "id" && ids++ == 0) {  // %s"id=": "ID=..." is an extension field
            // RFC 8461 §3.2 (last paragraph): of repeated fields only the first is used; a
            // later "id" is judged like any extension field below.
            if (!valid_id(value)) {
                return txt_error("invalid_sts_id", "id must be 1-32 letters or digits");
            }
            id.assign(value);
            continue;
        }
        if (!valid_field_name(name)) {
            return txt_error("invalid_sts_record",
                             field_label(field) +
                                 " has an invalid name (letter or digit, then "
                                 "up to 31 letters, digits, '_', '-', '.')");
        }
        if (!valid_ext_value(value)) {
            return txt_error("invalid_sts_record", field_label(field) +
                                                       " has an empty value or one with characters "
                                                       "outside visible ASCII or with ';' or '='");
        }
    }
    if (ids == 0) return txt_error("invalid_sts_id", "id missing");
    StsTxt out;
    out.found = true;
    out.id = std::move(id);
    return out;
}

StsPolicyError policy_error(std::string code, std::string reason) {
    return StsPolicyError{std::move(code), std::move(reason)};
}

std::string hex_byte(unsigned char b) {
    static constexpr char kHex[] = "0123456789abcdef";
    return std::string("0x") + kHex[b >> 4] + kHex[b & 0x0f];
}

// A name of LDH labels (1-63 each, no hyphen at either end), at most 253 characters, no
// empty label or trailing dot, and not all-numeric labels (an IPv4 address, which RFC 8461
// does not allow as an mx pattern).
bool valid_sts_name(std::string_view name) {
    if (name.empty() || name.size() > 253) return false;
    bool all_numeric = true;
    std::size_t start = 0;
    for (;;) {
        const std::size_t dot = name.find('.', start);
        const std::string_view label =
            name.substr(start, dot == std::string_view::npos ? dot : dot - start);
        if (label.empty() || label.size() > 63) return false;
        if (label.front() == '-' || label.back() == '-') return false;
        for (char c : label) {
            if (!is_alnum(c) && c != '-') return false;
            if (!is_digit(c)) all_numeric = false;
        }
        if (dot == std::string_view::npos) break;
        start = dot + 1;
    }
    return !all_numeric;
}

// A policy line can ride inside "{ policy_string = ... }" when it has no braces, only
// printable ASCII (TAB allowed, rendered as a space) and something besides blanks: Postfix
// normalises the whitespace and would see an empty value otherwise.
bool carriable_line(std::string_view line) {
    bool visible = false;
    for (char c : line) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '{' || c == '}') return false;
        if (c == '\t') continue;
        if (u < 0x20 || u > 0x7e) return false;
        if (c != ' ') visible = true;
    }
    return visible;
}

}  // namespace

std::string_view sts_mode_name(StsMode mode) {
    switch (mode) {
        case StsMode::Enforce:
            return "enforce";
        case StsMode::Testing:
            return "testing";
        case StsMode::None:
            return "none";
    }
    return "none";
}

StsTxt parse_sts_txt(const std::vector<std::string>& records) {
    // Every record is judged (the resolver bounds an answer to 512 records): an STS record
    // among many others is still the one STS record.
    const std::string* sts = nullptr;
    std::size_t count = 0;
    for (const std::string& record : records) {
        if (!is_sts_record(record)) continue;
        ++count;
        sts = &record;
    }
    if (count == 0) {
        return txt_error("no_sts_record", "no v=STSv1 record among " +
                                              std::to_string(records.size()) + " TXT records");
    }
    if (count > 1) {
        return txt_error("multi_sts_records", std::to_string(count) + " v=STSv1 records");
    }
    return parse_one_sts_record(*sts);
}

std::vector<std::string_view> sts_policy_lines(std::string_view body) {
    std::vector<std::string_view> lines;
    std::size_t start = 0;
    while (start <= body.size()) {
        const std::size_t lf = body.find('\n', start);
        std::string_view line =
            body.substr(start, lf == std::string_view::npos ? std::string_view::npos : lf - start);
        start = lf == std::string_view::npos ? body.size() + 1 : lf + 1;
        if (line.ends_with('\r')) line.remove_suffix(1);
        // Decision: a line of blanks only is a blank line, like an empty one.
        if (trim_wsp_right(line).empty()) continue;
        lines.push_back(line);
    }
    return lines;
}

StsParse parse_sts_policy(std::string_view body) {
    StsParse out;
    if (body.size() > kMaxStsBody) {
        out.error = policy_error("invalid_sts_body",
                                 "body longer than " + std::to_string(kMaxStsBody) + " bytes");
        return out;
    }
    for (std::size_t i = 0; i < body.size(); ++i) {
        const auto u = static_cast<unsigned char>(body[i]);
        // Bytes >= 0x80 are allowed: extension values may be UTF-8 and are ignored anyway.
        if ((u < 0x20 && u != '\t' && u != '\r' && u != '\n') || u == 0x7f) {
            out.error = policy_error("invalid_sts_body", "control byte " + hex_byte(u) +
                                                             " at offset " + std::to_string(i));
            return out;
        }
    }

    StsPolicy& policy = out.policy;
    std::optional<std::string_view> version, mode, max_age;  // the first value wins

    for (const std::string_view line : sts_policy_lines(body)) {
        const std::size_t colon = line.find(':');
        if (colon == std::string_view::npos) continue;
        // Only the four known keys matter and they are compared exactly, so a key that is not
        // a valid field name (" mode", "Mode", "") simply falls through as unknown.
        const std::string_view key = line.substr(0, colon);
        std::string_view value = line.substr(colon + 1);
        while (!value.empty() && is_wsp(value.front()))
            value.remove_prefix(1);
        value = trim_wsp_right(value);

        if (key == "version") {
            if (!version) version = value;
        } else if (key == "mode") {
            if (!mode) mode = value;
        } else if (key == "max_age") {
            if (!max_age) max_age = value;
        } else if (key == "mx") {
            policy.mx.emplace_back(value);
        }
    }

    if (!version) {
        out.error = policy_error("invalid_sts_version", "version missing");
        return out;
    }
    if (*version != "STSv1") {
        out.error = policy_error("invalid_sts_version", "version is not STSv1");
        return out;
    }

    if (!mode) {
        out.error = policy_error("invalid_sts_mode", "mode missing");
        return out;
    }
    if (*mode == "enforce") {
        policy.mode = StsMode::Enforce;
    } else if (*mode == "testing") {
        policy.mode = StsMode::Testing;
    } else if (*mode == "none") {
        policy.mode = StsMode::None;
    } else {
        out.error = policy_error("invalid_sts_mode", "mode is not enforce, testing or none");
        return out;
    }

    if (!max_age) {
        out.error = policy_error("invalid_sts_max_age", "max_age missing");
        return out;
    }
    if (max_age->empty() || max_age->size() > 10) {
        out.error = policy_error("invalid_sts_max_age", "max_age must be 1-10 digits");
        return out;
    }
    int64_t seconds = 0;  // 10 digits fit easily in int64_t
    for (char c : *max_age) {
        if (!is_digit(c)) {
            out.error = policy_error("invalid_sts_max_age", "max_age must be 1-10 digits");
            return out;
        }
        seconds = seconds * 10 + (c - '0');
    }
    policy.max_age = seconds > kMaxStsMaxAge ? kMaxStsMaxAge : seconds;

    for (std::size_t i = 0; i < policy.mx.size(); ++i) {
        if (!valid_sts_mx_pattern(policy.mx[i])) {
            out.error = policy_error("invalid_sts_mx", "mx line " + std::to_string(i + 1) +
                                                           " is not a host name or \"*.\" "
                                                           "host name pattern");
            return out;
        }
    }
    if (policy.mx.empty() && policy.mode != StsMode::None) {
        out.error =
            policy_error("invalid_sts_mx", "mode " + std::string(sts_mode_name(policy.mode)) +
                                               " needs at least one mx line");
        return out;
    }

    out.ok = true;
    return out;
}

bool valid_sts_mx_pattern(std::string_view pattern) {
    if (pattern.starts_with("*.")) pattern.remove_prefix(2);
    return valid_sts_name(pattern);
}

bool sts_mx_matches(std::string_view pattern, std::string_view host) {
    if (!valid_sts_mx_pattern(pattern)) return false;
    if (host.ends_with('.')) host.remove_suffix(1);
    if (host.empty()) return false;
    if (!pattern.starts_with("*.")) return iequals(pattern, host);
    const std::string_view suffix = pattern.substr(1);  // ".example.com"
    if (host.size() <= suffix.size()) return false;
    if (!iequals(host.substr(host.size() - suffix.size()), suffix)) return false;
    const std::string_view label = host.substr(0, host.size() - suffix.size());
    return !label.empty() && label.find('.') == std::string_view::npos;
}

std::string sts_match_list(const std::vector<std::string>& patterns) {
    std::vector<std::string> seen;
    std::string out;
    for (const std::string& pattern : patterns) {
        // Not in the header: an invalid pattern (only possible in a hand-built policy) is
        // left out, because its bytes would otherwise land in the Postfix policy unchecked.
        if (!valid_sts_mx_pattern(pattern)) continue;
        std::string element = lower(pattern);
        if (element.starts_with("*.")) element.erase(0, 1);
        bool duplicate = false;
        for (const std::string& s : seen) {
            if (s == element) duplicate = true;
        }
        if (duplicate) continue;
        if (!out.empty()) out += ':';
        out += element;
        seen.push_back(std::move(element));
    }
    return out;
}

std::string sts_enforce_policy(const std::string& domain, const StsPolicy& policy,
                               std::string_view body, const PolicySettings& settings) {
    std::string out = settings.sts_level == StsLevel::Secure ? "secure" : "verify";
    // An empty list only comes from a hand-built policy without valid patterns; "match="
    // with no value would make Postfix defer, so the level's default match is left in place.
    if (const std::string match = sts_match_list(policy.mx); !match.empty()) {
        out += " match=" + match;
    }
    if (settings.servername) out += " servername=hostname";
    if (!settings.tlsrpt) return out;
    out += " policy_type=sts policy_domain=" + domain;
    for (const std::string& mx : policy.mx) {
        if (valid_sts_mx_pattern(mx)) out += " mx_host_pattern=" + mx;
    }
    for (const std::string_view line : sts_policy_lines(body)) {
        if (!carriable_line(line)) continue;
        std::string text(line);
        for (char& c : text) {
            if (c == '\t') c = ' ';
        }
        out += " { policy_string = " + text + " }";
    }
    return out;
}

StsVerdict sts_verdict(const StsPolicy& policy, const PolicySettings& settings) {
    switch (policy.mode) {
        case StsMode::Enforce:
            return StsVerdict::Enforce;
        case StsMode::Testing:
            switch (settings.testing_mode) {
                case TestingMode::Ignore:
                    return StsVerdict::NotFound;
                case TestingMode::Encrypt:
                    return StsVerdict::Encrypt;
                case TestingMode::Enforce:
                    return StsVerdict::Enforce;
            }
            return StsVerdict::NotFound;
        case StsMode::None:
            return StsVerdict::NotFound;
    }
    return StsVerdict::NotFound;
}

std::vector<StsMxCheck> check_sts_mx(const StsPolicy& policy,
                                     const std::vector<std::string>& hosts) {
    std::vector<StsMxCheck> out;
    out.reserve(hosts.size());
    for (const std::string& host : hosts) {
        StsMxCheck check;
        check.host = host;
        for (const std::string& pattern : policy.mx) {
            if (sts_mx_matches(pattern, host)) {
                check.matches = true;
                check.pattern = pattern;
                break;
            }
        }
        out.push_back(std::move(check));
    }
    return out;
}

}  // namespace tlspolicy
