// Listening endpoints as written in the config: "IPv4:PORT", "[IPv6]:PORT" or "unix:/path".
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "util/result.h"

namespace tlspolicy {

struct Endpoint {
    enum class Kind { Inet, Unix };
    Kind kind = Kind::Inet;
    std::string host;   // numeric IPv4 or IPv6 address (without brackets), for Inet
    uint16_t port = 0;  // 0 = any free port (useful for tests; the bound port is reported)
    std::string path;   // absolute path, for Unix

    // "127.0.0.1:8461", "[::1]:8461", "unix:/run/tlspolicyd/socketmap.sock".
    std::string to_string() const;
    bool operator==(const Endpoint&) const = default;
};

// Parses an endpoint. Host names are refused (a listener must not depend on DNS at start-up);
// unix paths must be absolute and shorter than sockaddr_un allows.
Result<Endpoint> parse_endpoint(std::string_view text);

// The socket address of an endpoint as parse_endpoint() gives it (numeric host, absolute
// path) in `out`; returns its length.
socklen_t endpoint_sockaddr(const Endpoint& ep, sockaddr_storage& out);

// Parses a DNS resolver address: "192.0.2.1", "192.0.2.1:5353", "2001:db8::1" or
// "[2001:db8::1]:5353"; the port defaults to 53.
Result<Endpoint> parse_resolver(std::string_view text);

}  // namespace tlspolicy
