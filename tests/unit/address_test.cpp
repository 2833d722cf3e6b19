// Table-driven tests for special_address_kind (src/util/address.h): every block of the IANA
// IPv4 and IPv6 special-purpose registries at its edges, the prefixes that embed an IPv4
// address, and text that is not a numeric address.
#include "util/address.h"

#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <vector>

using namespace std::string_literals;  // "..."s keeps embedded NUL bytes
using tlspolicy::special_address_kind;

namespace {

struct Row {
    std::string address;
    std::string kind;  // "" = global
};

std::vector<Row> rows() {
    return {
        // --- IPv4: global
        {"1.1.1.1", ""},
        {"8.8.8.8", ""},
        {"93.184.216.34", ""},
        {"1.0.0.0", ""},
        {"223.255.255.255", ""},
        {"192.0.1.255", ""},    // just past 192.0.0/24
        {"192.31.196.1", ""},   // AS112: the registry says globally reachable
        {"192.52.193.1", ""},   // AMT: globally reachable
        {"192.175.48.1", ""},   // direct delegation AS112: globally reachable
        {"192.88.98.255", ""},  // just before 192.88.99/24
        {"192.88.100.0", ""},
        {"198.17.255.255", ""},  // just before 198.18/15
        {"198.20.0.0", ""},      // just past it
        {"198.51.99.255", ""},
        {"203.0.112.255", ""},
        {"203.0.114.0", ""},
        {"11.0.0.0", ""},
        {"9.255.255.255", ""},
        {"100.63.255.255", ""},
        {"100.128.0.0", ""},
        {"126.255.255.255", ""},
        {"128.0.0.0", ""},
        {"169.253.255.255", ""},
        {"169.255.0.0", ""},
        {"172.15.255.255", ""},
        {"172.32.0.0", ""},
        {"192.167.255.255", ""},
        {"192.169.0.0", ""},
        // --- IPv4: special
        {"0.0.0.0", "unspecified"},
        {"0.0.0.1", "reserved"},
        {"0.255.255.255", "reserved"},
        {"10.0.0.0", "private"},
        {"10.255.255.255", "private"},
        {"100.64.0.0", "shared"},
        {"100.127.255.255", "shared"},
        {"127.0.0.1", "loopback"},
        {"127.255.255.254", "loopback"},
        {"169.254.0.1", "link-local"},
        {"169.254.169.254", "link-local"},  // cloud metadata
        {"172.16.0.0", "private"},
        {"172.31.255.255", "private"},
        {"192.0.0.0", "reserved"},
        {"192.0.0.9", "reserved"},
        {"192.0.0.255", "reserved"},
        {"192.0.2.0", "documentation"},
        {"192.0.2.255", "documentation"},
        {"192.88.99.1", "reserved"},
        {"192.168.0.1", "private"},
        {"192.168.255.255", "private"},
        {"198.18.0.0", "benchmarking"},
        {"198.19.255.255", "benchmarking"},
        {"198.51.100.7", "documentation"},
        {"203.0.113.200", "documentation"},
        {"224.0.0.1", "multicast"},
        {"239.255.255.255", "multicast"},
        {"240.0.0.0", "reserved"},
        {"254.255.255.255", "reserved"},
        {"255.255.255.254", "reserved"},
        {"255.255.255.255", "broadcast"},
        // --- IPv6: global
        {"2001:4860:4860::8888", ""},
        {"2606:4700:4700::1111", ""},
        {"2a00:1450:4001:82a::200e", ""},
        {"2000::", ""},
        {"3ffe:ffff::1", ""},  // before 3fff::/20
        {"3fff:1000::", ""},   // just past 3fff::/20
        {"2001:200::1", ""},   // just past 2001::/23
        {"2001:db7:ffff::1", ""},
        {"2001:db9::1", ""},
        {"2003::1", ""},
        {"2620:4f:8000::1", ""},  // direct delegation AS112: globally reachable
        {"2001:4860:4860:0:0:0:0:8888", ""},
        {"2001:4860:4860:0000:0000:0000:0000:8888", ""},
        {"2A00:1450:4001:82A::200E", ""},  // upper case hex
        // --- IPv6: special
        {"::", "unspecified"},
        {"0:0:0:0:0:0:0:0", "unspecified"},
        {"::1", "loopback"},
        {"0:0:0:0:0:0:0:1", "loopback"},
        {"::2", "reserved"},           // ::/8 is not global unicast
        {"::1.2.3.4", "reserved"},     // IPv4-compatible (deprecated)
        {"::ffff:0:0:1", "reserved"},  // ::/8, not ::ffff:0:0/96
        {"4000::1", "reserved"},       // outside 2000::/3
        {"1::", "reserved"},
        {"e000::1", "reserved"},
        {"5f00::1", "reserved"},  // SRv6 SIDs (RFC 9602)
        {"100::", "discard-only"},
        {"100::ffff:ffff:ffff:ffff", "discard-only"},
        {"100:0:0:1::", "reserved"},  // just past 100::/64
        {"2001:2::", "benchmarking"},
        {"2001:2:0:ffff::1", "benchmarking"},
        {"2001:2:1::1", "reserved"},  // past 2001:2::/48, still in 2001::/23
        {"2001:db8::", "documentation"},
        {"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "documentation"},
        {"3fff::", "documentation"},
        {"3fff:fff:ffff::1", "documentation"},
        {"2001:1::1", "reserved"},         // PCP anycast: IETF protocol assignments
        {"2001:3::1", "reserved"},         // AMT
        {"2001:10::1", "reserved"},        // ORCHID (deprecated)
        {"2001:20::1", "reserved"},        // ORCHIDv2
        {"2001:1ff:ffff::1", "reserved"},  // last of 2001::/23
        {"fc00::1", "unique-local"},
        {"fd12:3456:789a::1", "unique-local"},
        {"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "unique-local"},
        {"fbff:ffff::1", "reserved"},
        {"fe80::1", "link-local"},
        {"febf:ffff::1", "link-local"},
        {"fec0::1", "site-local"},
        {"feff:ffff::1", "site-local"},
        {"ff02::1", "multicast"},
        {"ff0e::101", "multicast"},
        {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "multicast"},
        // --- prefixes that embed an IPv4 address: judged by it, named after the prefix
        {"::ffff:8.8.8.8", ""},
        {"::ffff:808:808", ""},
        {"::ffff:127.0.0.1", "ipv4-mapped"},
        {"::ffff:7f00:1", "ipv4-mapped"},
        {"::ffff:10.1.2.3", "ipv4-mapped"},
        {"::ffff:169.254.169.254", "ipv4-mapped"},
        {"::ffff:0.0.0.0", "ipv4-mapped"},
        {"::FFFF:192.168.1.1", "ipv4-mapped"},
        {"64:ff9b::8.8.8.8", ""},
        {"64:ff9b::192.0.2.33", "nat64"},
        {"64:ff9b::10.0.0.1", "nat64"},
        {"64:ff9b::7f00:1", "nat64"},
        {"64:ff9b:0:0:0:1::", "reserved"},  // 64:ff9b::/96 ends; not 64:ff9b:1::/48 either
        {"64:ff9b:1::1", "nat64"},          // local-use prefix: never global
        {"64:ff9b:1:ffff::8.8.8.8", "nat64"},
        {"2002:808:808::1", ""},        // 6to4 of 8.8.8.8
        {"2002:7f00:1::1", "6to4"},     // 6to4 of 127.0.0.1
        {"2002:c0a8:101::1", "6to4"},   // 192.168.1.1
        {"2002:a00:1::1", "6to4"},      // 10.0.0.1
        {"2002::1", "6to4"},            // 0.0.0.0
        {"2002:ffff:ffff::1", "6to4"},  // 255.255.255.255
        // Teredo: server 65.54.227.120, client 8.8.8.8 (stored inverted: f7f7:f7f7).
        {"2001:0:4136:e378:8000:63bf:f7f7:f7f7", ""},
        // Client 192.0.2.45 (RFC 4380's example, inverted 3fff:fdd2).
        {"2001:0:4136:e378:8000:63bf:3fff:fdd2", "teredo"},
        // Client 127.0.0.1 (inverted 80ff:fffe).
        {"2001:0:4136:e378:8000:63bf:80ff:fffe", "teredo"},
        // Server 10.0.0.1, client 8.8.8.8.
        {"2001:0:a00:1::f7f7:f7f7", "teredo"},
        // Client 0.0.0.0 (ffff:ffff) and server 0.0.0.0.
        {"2001::ffff:ffff", "teredo"},
        // --- not a numeric address
        {"", "invalid"},
        {"localhost", "invalid"},
        {"example.com", "invalid"},
        {"1.2.3", "invalid"},
        {"1.2.3.4.5", "invalid"},
        {"1.2.3.256", "invalid"},
        {"01.2.3.4", "invalid"},  // no octal forms
        {"0x7f.0.0.1", "invalid"},
        {"2130706433", "invalid"},  // 127.0.0.1 as one number
        {"127.1", "invalid"},
        {" 1.2.3.4", "invalid"},
        {"1.2.3.4 ", "invalid"},
        {"1.2.3.4\n", "invalid"},
        {"1.2.3.4/32", "invalid"},
        {"1.2.3.4:25", "invalid"},
        {"1.2.3.4\0garbage"s, "invalid"},
        {"\0"s, "invalid"},
        {"::1%lo", "invalid"},
        {"fe80::1%eth0", "invalid"},
        {"[::1]", "invalid"},
        {"[::1]:443", "invalid"},
        {":::1", "invalid"},
        {"1::2::3", "invalid"},
        {"12345::1", "invalid"},
        {"1:2:3:4:5:6:7:8:9", "invalid"},
        {"::ffff:1.2.3", "invalid"},
        {"::1/128", "invalid"},
        {"g::1", "invalid"},
        {std::string(100, '1'), "invalid"},
        {"0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:1", "invalid"},
    };
}

}  // namespace

TEST_CASE("address: special_address_kind follows the IANA special-purpose registries") {
    int n = 0;
    for (const Row& r : rows()) {
        CAPTURE(r.address);
        const std::string got(special_address_kind(r.address));
        INFO("got \"", got, "\", want \"", r.kind, "\"");
        CHECK(got == r.kind);
        ++n;
    }
    CHECK(n >= 150);
}

TEST_CASE("address: every IPv4-special block is special inside an IPv4-mapped IPv6 address") {
    // The mapped form is judged by the IPv4 address, so it never opens a way around the IPv4
    // rules: each special IPv4 row has its ::ffff: twin.
    for (const Row& r : rows()) {
        if (r.kind == "invalid" || r.address.find(':') != std::string::npos) continue;
        CAPTURE(r.address);
        const std::string got(special_address_kind("::ffff:" + r.address));
        CHECK(got == (r.kind.empty() ? "" : "ipv4-mapped"));
    }
}
