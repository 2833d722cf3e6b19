// Address classification for outbound connections to hosts a remote party names (MTA-STS
// policy hosts, probed MX hosts): a recipient domain must not be able to aim tlspolicyd at
// loopback, private or otherwise special networks.
#pragma once

#include <string_view>

namespace tlspolicy {

// "" for a global unicast address; else why it is special: "loopback", "private",
// "link-local", "unspecified", "multicast", "broadcast", "reserved", "shared" (100.64/10),
// "documentation", "benchmarking", "unique-local" (fc00::/7), "site-local", "discard-only",
// "reserved" (also everything outside 2000::/3 not listed), or "invalid" when `address` is not
// a numeric IPv4/IPv6 address. IPv6 forms that carry an IPv4 address (::ffff:0:0/96,
// 64:ff9b::/96, 6to4, Teredo) are "" when the IPv4 address inside is global, else
// "ipv4-mapped" / "nat64" / "6to4" / "teredo". Follows the IANA special-purpose registries.
std::string_view special_address_kind(std::string_view address);

}  // namespace tlspolicy
