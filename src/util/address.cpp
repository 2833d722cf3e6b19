#include "util/address.h"

#include <arpa/inet.h>

#include <array>
#include <cstdint>
#include <string>

namespace tlspolicy {

namespace {

// Longest text form of an IPv6 address ("ffff:...:255.255.255.255" is 45 characters); anything
// longer is not an address and is refused before it is copied.
constexpr std::size_t kMaxAddressText = 64;

struct V4Range {
    uint32_t network;
    int prefix;
    std::string_view kind;
};

constexpr uint32_t v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    return static_cast<uint32_t>(a) << 24 | static_cast<uint32_t>(b) << 16 |
           static_cast<uint32_t>(c) << 8 | d;
}

// IANA IPv4 Special-Purpose Address Registry, most specific first. Blocks the registry marks
// globally reachable (192.0.0.9/32, 192.31.196/24, 192.52.193/24, 192.175.48/24) are left out:
// they are ordinary destinations. 192.0.0/24 is reserved as a whole on purpose.
constexpr std::array<V4Range, 17> kV4Special = {{
    {v4(0, 0, 0, 0), 32, "unspecified"},
    {v4(255, 255, 255, 255), 32, "broadcast"},
    {v4(0, 0, 0, 0), 8, "reserved"},  // "this network"
    {v4(10, 0, 0, 0), 8, "private"},
    {v4(100, 64, 0, 0), 10, "shared"},
    {v4(127, 0, 0, 0), 8, "loopback"},
    {v4(169, 254, 0, 0), 16, "link-local"},
    {v4(172, 16, 0, 0), 12, "private"},
    {v4(192, 0, 0, 0), 24, "reserved"},  // IETF protocol assignments
    {v4(192, 0, 2, 0), 24, "documentation"},
    {v4(192, 88, 99, 0), 24, "reserved"},  // deprecated 6to4 relay anycast (RFC 7526)
    {v4(192, 168, 0, 0), 16, "private"},
    {v4(198, 18, 0, 0), 15, "benchmarking"},
    {v4(198, 51, 100, 0), 24, "documentation"},
    {v4(203, 0, 113, 0), 24, "documentation"},
    {v4(224, 0, 0, 0), 4, "multicast"},
    {v4(240, 0, 0, 0), 4, "reserved"},
}};

std::string_view v4_kind(uint32_t a) {
    for (const V4Range& r : kV4Special) {
        const uint32_t mask = r.prefix == 0 ? 0 : ~uint32_t{0} << (32 - r.prefix);
        if ((a & mask) == r.network) return r.kind;
    }
    return {};
}

using V6 = std::array<uint8_t, 16>;

bool v6_in(const V6& a, const V6& net, int prefix) {
    for (int i = 0; i < 16 && prefix > 0; ++i, prefix -= 8) {
        const uint8_t mask = prefix >= 8 ? 0xff : static_cast<uint8_t>(0xff << (8 - prefix));
        if ((a[i] & mask) != (net[i] & mask)) return false;
    }
    return true;
}

uint32_t v4_at(const V6& a, int offset) {
    return v4(a[offset], a[offset + 1], a[offset + 2], a[offset + 3]);
}

constexpr V6 kMapped = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0};    // ::ffff:0:0/96
constexpr V6 kNat64 = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};  // 64:ff9b::/96
constexpr V6 kNat64Local = {0, 0x64, 0xff, 0x9b, 0, 1};                           // 64:ff9b:1::/48
constexpr V6 kDiscard = {0x01, 0x00};                                             // 100::/64
constexpr V6 kTeredo = {0x20, 0x01, 0, 0};                                        // 2001::/32
constexpr V6 kBenchmark = {0x20, 0x01, 0, 0x02, 0, 0};                            // 2001:2::/48
constexpr V6 kDoc = {0x20, 0x01, 0x0d, 0xb8};                                     // 2001:db8::/32
constexpr V6 kIetf = {0x20, 0x01, 0};                                             // 2001::/23
constexpr V6 k6to4 = {0x20, 0x02};                                                // 2002::/16
constexpr V6 kDoc2 = {0x3f, 0xff, 0};                                             // 3fff::/20
constexpr V6 kUniqueLocal = {0xfc};                                               // fc00::/7
constexpr V6 kLinkLocal = {0xfe, 0x80};                                           // fe80::/10
constexpr V6 kSiteLocal = {0xfe, 0xc0};                                           // fec0::/10
constexpr V6 kMulticast = {0xff};                                                 // ff00::/8
constexpr V6 kGlobalUnicast = {0x20};                                             // 2000::/3

// IANA IPv6 Special-Purpose Address Registry plus the IPv6 Address Space registry: outside
// 2000::/3 nothing is global unicast. Prefixes that carry an IPv4 address are judged by that
// address: they reach it (mapped on a dual-stack socket, translated, or relayed), so they are
// special exactly when it is, and then named after the prefix.
std::string_view v6_kind(const V6& a) {
    const V6 zero{};
    if (a == zero) return "unspecified";
    V6 one{};
    one[15] = 1;
    if (a == one) return "loopback";
    if (v6_in(a, kMapped, 96)) return v4_kind(v4_at(a, 12)).empty() ? "" : "ipv4-mapped";
    if (v6_in(a, kNat64, 96)) return v4_kind(v4_at(a, 12)).empty() ? "" : "nat64";
    if (v6_in(a, kNat64Local, 48)) return "nat64";  // local-use prefix (RFC 8215): not global
    if (v6_in(a, kDiscard, 64)) return "discard-only";
    if (v6_in(a, kTeredo, 32)) {
        // Server IPv4 in bits 32..63, client IPv4 inverted in the last 32 bits (RFC 4380).
        const bool special = !v4_kind(v4_at(a, 4)).empty() || !v4_kind(~v4_at(a, 12)).empty();
        return special ? "teredo" : "";
    }
    if (v6_in(a, kBenchmark, 48)) return "benchmarking";
    if (v6_in(a, kDoc, 32)) return "documentation";
    if (v6_in(a, kIetf, 23)) return "reserved";
    if (v6_in(a, k6to4, 16)) return v4_kind(v4_at(a, 2)).empty() ? "" : "6to4";
    if (v6_in(a, kDoc2, 20)) return "documentation";
    if (v6_in(a, kUniqueLocal, 7)) return "unique-local";
    if (v6_in(a, kLinkLocal, 10)) return "link-local";
    if (v6_in(a, kSiteLocal, 10)) return "site-local";
    if (v6_in(a, kMulticast, 8)) return "multicast";
    if (!v6_in(a, kGlobalUnicast, 3)) return "reserved";
    return {};
}

}  // namespace

std::string_view special_address_kind(std::string_view address) {
    // inet_pton reads a C string: a NUL inside the view would cut it short.
    if (address.empty() || address.size() > kMaxAddressText ||
        address.find('\0') != std::string_view::npos)
        return "invalid";
    const std::string text(address);
    in_addr a4{};
    if (inet_pton(AF_INET, text.c_str(), &a4) == 1) return v4_kind(ntohl(a4.s_addr));
    V6 a6{};
    if (inet_pton(AF_INET6, text.c_str(), a6.data()) == 1) return v6_kind(a6);
    return "invalid";
}

}  // namespace tlspolicy
