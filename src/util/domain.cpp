// Domain names and lookup keys: see domain.h for the contract.
#include "util/domain.h"

#include <arpa/inet.h>
#include <idn2.h>

#include <array>
#include <cstring>
#include <memory>

namespace tlspolicy {
namespace {

// Longest raw name or key we look at. Postfix may send up to 10000 bytes; anything past a
// few hundred cannot become a valid name, and the bound keeps libidn2's work small.
constexpr std::size_t kMaxRawLength = 1024;
// Longest port or service name after the ':' of a next hop.
constexpr std::size_t kMaxServiceLength = 32;

// IDNA2008 lookup with the UTS #46 non-transitional mapping (what browsers and current
// resolvers do: "faß.de" stays "xn--fa-hia.de", it does not become "fass.de"). NFC_INPUT
// normalises composed/decomposed input to one form; ALABEL_ROUNDTRIP (the default since
// libidn2 2.2, spelled out here) decodes and re-checks A-labels. Deliberately *not*
// IDN2_USE_STD3_ASCII_RULES: libidn2 2.3.3 silently drops STD3-disallowed ASCII with it
// ("a_b" becomes "ab", "ex ample" becomes "example"), changing the name instead of
// rejecting it. We reject non-LDH ASCII ourselves before and after the call instead.
// IDN2_ALLOW_UNASSIGNED is a no-op in libidn2; unassigned code points are always refused.
constexpr int kIdnFlags = IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL | IDN2_ALABEL_ROUNDTRIP;

struct IdnFree {
    void operator()(char* p) const noexcept { idn2_free(p); }
};
using IdnString = std::unique_ptr<char, IdnFree>;

constexpr bool is_alpha(unsigned char c) {
    return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}
constexpr bool is_digit(unsigned char c) {
    return c >= '0' && c <= '9';
}
constexpr bool is_ldh(unsigned char c) {
    return is_alpha(c) || is_digit(c) || c == '-';
}
constexpr bool is_hex(unsigned char c) {
    return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}
// ASCII only, never the locale: a Turkish locale must not turn "I" into a dotless i.
constexpr char to_lower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c | 0x20) : c;
}

void append_lower(std::string& out, std::string_view s) {
    const std::size_t at = out.size();
    out.resize(at + s.size());
    for (std::size_t i = 0; i < s.size(); ++i)
        out[at + i] = to_lower(s[i]);
}

bool starts_with_ci(std::string_view s, std::string_view prefix) {
    if (s.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        if (to_lower(s[i]) != prefix[i]) return false;
    }
    return true;
}

// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF.
bool valid_utf8(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const auto* end = p + s.size();
    while (p < end) {
        unsigned char c = *p;
        if (c < 0x80) {
            ++p;
            continue;
        }
        std::size_t len = 0;
        unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            return false;
        }
        if (static_cast<std::size_t>(end - p) < len) return false;
        if (p[1] < lo || p[1] > hi) return false;
        for (std::size_t i = 2; i < len; ++i) {
            if (p[i] < 0x80 || p[i] > 0xBF) return false;
        }
        p += len;
    }
    return true;
}

// Length of the label separator at s[i], or 0. UTS #46 treats the ideographic, fullwidth and
// halfwidth full stops (U+3002, U+FF0E, U+FF61) like '.'; splitting on them here means
// libidn2 only ever sees single labels.
std::size_t separator_length(std::string_view s, std::size_t i, bool non_ascii) {
    if (s[i] == '.') return 1;
    if (!non_ascii || i + 3 > s.size()) return 0;
    const auto b0 = static_cast<unsigned char>(s[i]);
    const auto b1 = static_cast<unsigned char>(s[i + 1]);
    const auto b2 = static_cast<unsigned char>(s[i + 2]);
    if (b0 == 0xE3 && b1 == 0x80 && b2 == 0x82) return 3;  // U+3002
    if (b0 == 0xEF && b1 == 0xBC && b2 == 0x8E) return 3;  // U+FF0E
    if (b0 == 0xEF && b1 == 0xBD && b2 == 0xA1) return 3;  // U+FF61
    return 0;
}

const char* idn_reason(int rc) {
    switch (rc) {
        case IDN2_DISALLOWED:
        case IDN2_UNASSIGNED:
            return "disallowed code point";
        case IDN2_TOO_BIG_LABEL:
        case IDN2_TOO_BIG_DOMAIN:
            return "label too long";
        case IDN2_PUNYCODE_BAD_INPUT:
        case IDN2_PUNYCODE_BIG_OUTPUT:
        case IDN2_PUNYCODE_OVERFLOW:
        case IDN2_ALABEL_ROUNDTRIP_FAILED:
        case IDN2_INVALID_NONTRANSITIONAL:
            return "invalid A-label";
        default:
            return "invalid internationalized label";
    }
}

// Runs one label (NUL-free, at most kMaxRawLength bytes) through libidn2.
IdnString idna_lookup(std::string_view label, int& rc) {
    std::array<char, kMaxRawLength + 1> buf;
    std::memcpy(buf.data(), label.data(), label.size());
    buf[label.size()] = '\0';
    char* out = nullptr;
    rc = idn2_to_ascii_8z(buf.data(), &out, kIdnFlags);
    return IdnString(out);
}

// Checks a lowercase ASCII label: 1..63 LDH characters, no hyphen at either end.
const char* check_ldh_label(std::string_view label) {
    if (label.empty()) return "empty label";
    if (label.size() > kMaxLabelLength) return "label too long";
    for (char c : label) {
        if (!is_ldh(static_cast<unsigned char>(c)) || (c >= 'A' && c <= 'Z')) {
            return "invalid character";
        }
    }
    if (label.front() == '-' || label.back() == '-') return "label starts or ends with a hyphen";
    return nullptr;
}

// Appends one label of the input in canonical form to out; returns an error or nullptr.
const char* append_label(std::string_view label, std::string& out) {
    bool ascii = true;
    for (char c : label)
        ascii = ascii && static_cast<unsigned char>(c) < 0x80;

    if (ascii) {
        // The common case: no libidn2, no allocation beyond out.
        if (label.size() > kMaxLabelLength) return "label too long";
        const std::size_t first = out.size();
        append_lower(out, label);
        const std::string_view lowered(out.data() + first, label.size());
        if (const char* err = check_ldh_label(lowered)) return err;
        if (!lowered.starts_with("xn--")) return nullptr;
        // An A-label must decode to a valid U-label and encode back to itself, else
        // "xn--garbage" would reach DNS and the cache as if it were a real IDN.
        int rc = IDN2_OK;
        IdnString a = idna_lookup(lowered, rc);
        if (rc != IDN2_OK) return idn_reason(rc);
        if (!a || lowered != a.get()) return "invalid A-label";
        return nullptr;
    }

    // A U-label (possibly with ASCII in any case). libidn2 maps, normalises, checks the
    // IDNA2008 rules (disallowed code points, CONTEXTJ/O, bidi) and encodes.
    int rc = IDN2_OK;
    IdnString a = idna_lookup(label, rc);
    if (rc != IDN2_OK) return idn_reason(rc);
    if (!a) return "invalid internationalized label";
    const std::string_view alabel(a.get());
    // The mapping can produce ASCII we do not allow (fullwidth '_' becomes '_'), or even a
    // '.', so the result gets the same LDH check as ASCII input.
    if (const char* err = check_ldh_label(alabel)) return err;
    out.append(alabel);
    return nullptr;
}

// Each byte of a plain ASCII name: its lowercase form for LDH characters and '.', else 0.
constexpr std::array<char, 256> kPlainByte = [] {
    std::array<char, 256> t{};
    for (int c = 0; c < 256; ++c) {
        const auto u = static_cast<unsigned char>(c);
        if (is_ldh(u) || u == '.') t[u] = to_lower(static_cast<char>(u));
    }
    return t;
}();

// A label of a plain ASCII name, already lowercase, is one the general path keeps as it is.
bool plain_label(const char* p, std::size_t len) {
    return len > 0 && len <= kMaxLabelLength && p[0] != '-' && p[len - 1] != '-' &&
           !(len >= 4 && p[0] == 'x' && p[1] == 'n' && p[2] == '-' && p[3] == '-');
}

// The common case in one pass: ASCII LDH labels, none of them an A-label. Appends what the
// general path below would and returns true; or returns false with `out` unchanged, and the
// general path decides (and names the error).
bool append_plain_ascii(std::string_view name, std::string& out) {
    std::size_t n = name.size();
    if (n > 0 && name[n - 1] == '.') --n;  // one trailing dot is dropped
    if (n == 0 || n > kMaxDomainLength) return false;
    const std::size_t start = out.size();
    out.resize(start + n);
    char* w = out.data() + start;
    std::size_t label = 0, labels = 0;  // where the current label starts; labels ended
    bool ok = true;
    for (std::size_t i = 0; i < n; ++i) {
        const char c = kPlainByte[static_cast<unsigned char>(name[i])];
        w[i] = c;
        if (c == '.') {
            ok = ok && plain_label(w + label, i - label);
            label = i + 1;
            ++labels;
        } else if (c == 0) {
            ok = false;
            break;
        }
    }
    if (ok && labels >= 1 && plain_label(w + label, n - label)) {
        // A top-level label of digits only is an address or garbage, not a name.
        for (std::size_t i = label; i < n; ++i)
            if (!is_digit(static_cast<unsigned char>(w[i]))) return true;
    }
    out.resize(start);
    return false;
}

// Appends the canonical form of name to out (which may already hold a prefix). Returns a
// static error message (never derived from the input) or nullptr on success.
const char* append_canonical(std::string_view name, std::string& out, bool fast = true) {
    if (fast && append_plain_ascii(name, out)) return nullptr;
    if (name.empty()) return "empty name";
    if (name.size() > kMaxRawLength) return "name too long";
    bool non_ascii = false;
    for (char ch : name) {
        const auto c = static_cast<unsigned char>(ch);
        if (c >= 0x80) {
            non_ascii = true;
        } else if (!is_ldh(c) && c != '.') {
            // Controls, NUL, spaces, '_', ':' ... are never part of a host name, and a NUL
            // would silently truncate the name inside libidn2.
            return "invalid character";
        }
    }
    // ASCII names keep their length, so the bound can be checked before any work.
    if (!non_ascii && name.size() > kMaxDomainLength + 1) return "name too long";
    if (non_ascii && !valid_utf8(name)) return "invalid UTF-8";

    const std::size_t start = out.size();
    std::size_t labels = 0;
    std::size_t last_label = start;
    std::size_t pos = 0;
    for (;;) {
        std::size_t end = pos;
        std::size_t sep = 0;
        while (end < name.size() && (sep = separator_length(name, end, non_ascii)) == 0)
            ++end;
        const std::string_view label = name.substr(pos, end - pos);
        if (label.empty()) {
            // One trailing dot (the root) is allowed and dropped; any other empty label
            // ("a..b", ".a", "a.b..") is an error.
            if (end == name.size() && labels > 0) break;
            return "empty label";
        }
        if (labels > 0) out.push_back('.');
        last_label = out.size();
        if (const char* err = append_label(label, out)) return err;
        ++labels;
        if (out.size() - start > kMaxDomainLength) return "name too long";
        if (end == name.size()) break;
        pos = end + sep;
    }
    if (labels < 2) return "single-label name";
    // A numeric top-level label means an IP address or garbage, never a DNS name
    // ("192.0.2.300" must not be looked up as a domain).
    bool numeric = true;
    for (std::size_t i = last_label; i < out.size(); ++i) {
        numeric = numeric && is_digit(static_cast<unsigned char>(out[i]));
    }
    if (numeric) return "numeric top-level label";
    return nullptr;
}

// inet_pton on a string_view. The character check comes first so that an embedded NUL
// ("192.0.2.1\0junk") cannot make inet_pton see only a prefix.
bool is_ipv4(std::string_view s) {
    char buf[INET_ADDRSTRLEN];
    if (s.empty() || s.size() >= sizeof buf) return false;
    for (char c : s) {
        if (!is_digit(static_cast<unsigned char>(c)) && c != '.') return false;
    }
    std::memcpy(buf, s.data(), s.size());
    buf[s.size()] = '\0';
    unsigned char addr[sizeof(in_addr)];
    return inet_pton(AF_INET, buf, addr) == 1;
}

bool is_ipv6(std::string_view s) {
    char buf[INET6_ADDRSTRLEN];
    if (s.empty() || s.size() >= sizeof buf) return false;
    for (char c : s) {
        if (!is_hex(static_cast<unsigned char>(c)) && c != ':' && c != '.') return false;
    }
    std::memcpy(buf, s.data(), s.size());
    buf[s.size()] = '\0';
    unsigned char addr[sizeof(in6_addr)];
    return inet_pton(AF_INET6, buf, addr) == 1;
}

// A decimal port 1..65535 without leading zeros (one spelling per port), or a service name
// such as "smtp" or "submission": letters, digits and '-', with at least one letter.
bool valid_port(std::string_view p) {
    if (p.empty() || p.size() > kMaxServiceLength) return false;
    bool all_digits = true;
    bool any_alpha = false;
    for (char ch : p) {
        const auto c = static_cast<unsigned char>(ch);
        if (!is_ldh(c)) return false;
        all_digits = all_digits && is_digit(c);
        any_alpha = any_alpha || is_alpha(c);
    }
    if (all_digits) {
        if (p.size() > 5 || p.front() == '0') return false;
        unsigned value = 0;
        for (char c : p)
            value = value * 10 + static_cast<unsigned>(c - '0');
        return value <= 65535;
    }
    return any_alpha;
}

Key invalid(std::string reason) {
    Key key;
    key.kind = KeyKind::Invalid;
    key.reason = std::move(reason);
    return key;
}

Key invalid(const char* what, const char* detail) {
    std::string reason(what);
    reason += ": ";
    reason += detail;
    return invalid(std::move(reason));
}

Key ip_literal(std::string_view raw) {
    Key key;
    key.kind = KeyKind::IpLiteral;
    key.name.reserve(raw.size());
    append_lower(key.name, raw);
    return key;
}

// "[host]" or "[host]:port".
Key classify_bracketed(std::string_view raw) {
    const std::size_t close = raw.find(']');
    if (close == std::string_view::npos) return invalid("unterminated bracket");
    const std::string_view host = raw.substr(1, close - 1);
    const std::string_view rest = raw.substr(close + 1);
    std::string_view port;
    if (!rest.empty()) {
        if (rest.front() != ':') return invalid("junk after bracket");
        port = rest.substr(1);
        if (!valid_port(port)) return invalid("bad port");
    }
    if (host.empty()) return invalid("empty next-hop host");
    // RFC 5321 address literals: "[192.0.2.1]" and "[IPv6:2001:db8::1]". Postfix also takes
    // a bare IPv6 address between brackets.
    if (starts_with_ci(host, "ipv6:")) {
        if (!is_ipv6(host.substr(5))) return invalid("bad IPv6 literal");
        return ip_literal(raw);
    }
    if (is_ipv4(host) || is_ipv6(host)) return ip_literal(raw);

    Key key;
    key.name.reserve(raw.size());
    key.name.push_back('[');
    if (const char* err = append_canonical(host, key.name)) {
        return invalid("bad next-hop host", err);
    }
    key.name.push_back(']');
    if (!rest.empty()) {
        key.name.push_back(':');
        append_lower(key.name, port);
    }
    key.kind = KeyKind::NextHop;
    return key;
}

// "host:port" without brackets.
Key classify_host_port(std::string_view raw, std::size_t colon) {
    const std::string_view host = raw.substr(0, colon);
    const std::string_view port = raw.substr(colon + 1);
    if (port.find(':') != std::string_view::npos) return invalid("bad address or next hop");
    if (!valid_port(port)) return invalid("bad port");
    if (is_ipv4(host)) return ip_literal(raw);

    Key key;
    key.name.reserve(raw.size());
    if (const char* err = append_canonical(host, key.name)) {
        return invalid("bad next-hop host", err);
    }
    key.name.push_back(':');
    append_lower(key.name, port);
    key.kind = KeyKind::NextHop;
    return key;
}

}  // namespace

Result<std::string> canonical_domain(std::string_view name) {
    std::string out;
    out.reserve(name.size() < kMaxDomainLength ? name.size() : kMaxDomainLength);
    if (const char* err = append_canonical(name, out)) return make_error(err);
    return out;
}

namespace detail {
Result<std::string> canonical_domain_general(std::string_view name) {
    std::string out;
    if (const char* err = append_canonical(name, out, false)) return make_error(err);
    return out;
}
}  // namespace detail

void normalize_key_into(std::string_view raw, Key& key) {
    if (raw.empty()) return void(key = invalid("empty key"));
    if (raw.size() > kMaxRawLength) return void(key = invalid("key too long"));

    const bool parent = raw.front() == '.';
    if (!parent) {
        if (raw.front() == '[') return void(key = classify_bracketed(raw));
        // An IPv6 address has a colon: most keys (domains) skip inet_pton.
        const std::size_t colon = raw.find(':');
        if (is_ipv4(raw) || (colon != std::string_view::npos && is_ipv6(raw)))
            return void(key = ip_literal(raw));
        if (colon != std::string_view::npos) return void(key = classify_host_port(raw, colon));
    }
    // A domain or a parent probe: written into key's own strings.
    key.name.clear();
    key.reason.clear();
    if (parent) {
        key.name.push_back('.');
        raw.remove_prefix(1);
    }
    if (const char* err = append_canonical(raw, key.name))
        return void(key = parent ? invalid("bad parent probe", err) : invalid(err));
    key.kind = parent ? KeyKind::ParentProbe : KeyKind::Domain;
}

Key normalize_key(std::string_view raw) {
    Key key;
    normalize_key_into(raw, key);
    return key;
}

std::string_view key_kind_name(KeyKind kind) {
    switch (kind) {
        case KeyKind::Domain:
            return "domain";
        case KeyKind::ParentProbe:
            return "parent-probe";
        case KeyKind::NextHop:
            return "next-hop";
        case KeyKind::IpLiteral:
            return "ip-literal";
        case KeyKind::Invalid:
            return "invalid";
    }
    return "invalid";
}

}  // namespace tlspolicy
