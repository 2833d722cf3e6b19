// Domain names and lookup keys: case folding, trailing dot, IDNA2008 (libidn2), and
// the classification of the keys Postfix sends to smtp_tls_policy_maps.
#pragma once

#include <string>
#include <string_view>

#include "util/result.h"

namespace tlspolicy {

// Longest domain name we accept in presentation form, without the trailing dot (RFC 1035).
inline constexpr std::size_t kMaxDomainLength = 253;
// Longest label (RFC 1035).
inline constexpr std::size_t kMaxLabelLength = 63;

// Converts a domain name given with U-labels or A-labels, in any case, with or without one
// trailing dot, to its canonical lookup form: lowercase A-labels (IDNA2008, UTS #46
// non-transitional mapping), no trailing dot, every label 1..63 LDH characters not starting
// or ending with '-', at least two labels, at most 253 characters, and a top-level label that
// is not all digits. Existing "xn--" labels must decode to a valid U-label. Input longer than
// 1024 bytes, invalid UTF-8, control bytes, spaces and other non-LDH ASCII are rejected
// before any IDNA work. Anything else is an Error whose message never echoes the input.
Result<std::string> canonical_domain(std::string_view name);
namespace detail {
// canonical_domain() without its one-pass path for plain ASCII names, for the tests that
// check that both give the same result (value or error message).
Result<std::string> canonical_domain_general(std::string_view name);
}  // namespace detail

// What a key sent by Postfix (or Exim, or the CLI) is, and what Key::name then holds.
enum class KeyKind {
    Domain,       // "Example.COM." -> "example.com": the canonical_domain() form
    ParentProbe,  // ".Example.com" -> ".example.com": "." + canonical form of the rest (so
                  // Postfix's last probe ".com", a single label, is Invalid)
    NextHop,      // "[Mail.Example.com.]:587" -> "[mail.example.com]:587", "mx.example:SMTP"
                  // -> "mx.example:smtp": host canonicalised, brackets kept, port kept
                  // (decimal 1..65535 without leading zeros, or a service name, lowercased)
    IpLiteral,    // "192.0.2.1", "192.0.2.1:25", "2001:DB8::1", "[192.0.2.1]:25",
                  // "[IPv6:2001:db8::1]": the whole key ASCII-lowercased, address not rewritten
    Invalid,      // anything else (empty, bad characters, too long, bad IDN, bad port, ...):
                  // name is empty
};

// A normalised key. For Invalid, reason says why in a few words (never echoing the input).
struct Key {
    KeyKind kind = KeyKind::Invalid;
    std::string name;
    std::string reason;
};

// Classifies and normalises one raw key. Never throws; every input yields a Key.
Key normalize_key(std::string_view raw);
// The same into `key`, reusing its strings' capacity (the server's hot path).
void normalize_key_into(std::string_view raw, Key& key);

// Short lowercase name of a kind, for logs and JSON ("domain", "parent-probe", ...).
std::string_view key_kind_name(KeyKind kind);

}  // namespace tlspolicy
