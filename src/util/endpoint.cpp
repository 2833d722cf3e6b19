#include "util/endpoint.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <charconv>

namespace tlspolicy {
namespace {

constexpr std::string_view kUsage = "expected IPv4:PORT, [IPv6]:PORT or unix:/path";

Result<uint16_t> parse_port(std::string_view s) {
    unsigned value = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (s.empty() || ec != std::errc() || p != s.data() + s.size() || value > 65535)
        return make_error("port must be a number from 0 to 65535");
    return static_cast<uint16_t>(value);
}

}  // namespace

std::string Endpoint::to_string() const {
    if (kind == Kind::Unix) return "unix:" + path;
    if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
    return host + ":" + std::to_string(port);
}

Result<Endpoint> parse_endpoint(std::string_view text) {
    Endpoint ep;
    if (text.starts_with("unix:")) {
        ep.kind = Endpoint::Kind::Unix;
        ep.path = std::string(text.substr(5));
        if (ep.path.empty() || ep.path[0] != '/')
            return make_error("unix socket path must be absolute");
        if (ep.path.size() >= sizeof(sockaddr_un{}.sun_path))
            return make_error("unix socket path is too long");
        if (ep.path.find('\0') != std::string::npos)
            return make_error("unix socket path contains a NUL byte");
        return ep;
    }
    std::string_view host;
    std::string_view port;
    if (text.starts_with("[")) {
        const auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
            return make_error(std::string(kUsage));
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
        in6_addr a6{};
        if (!inet_pton(AF_INET6, std::string(host).c_str(), &a6))
            return make_error("not a numeric IPv6 address; " + std::string(kUsage));
    } else {
        const auto colon = text.rfind(':');
        if (colon == std::string_view::npos) return make_error(std::string(kUsage));
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        in_addr a4{};
        if (!inet_pton(AF_INET, std::string(host).c_str(), &a4))
            return make_error("not a numeric IPv4 address; " + std::string(kUsage));
    }
    auto p = parse_port(port);
    if (!p) return p.error();
    ep.host = std::string(host);
    ep.port = *p;
    return ep;
}

Result<Endpoint> parse_resolver(std::string_view text) {
    std::string ep(text);
    if (text.find(':') == std::string_view::npos)
        ep += ":53";
    else if (!text.empty() && text.front() != '[' && text.find(':') != text.rfind(':'))
        ep = "[" + ep + "]:53";
    auto parsed = parse_endpoint(ep);
    if (!parsed || parsed->kind != Endpoint::Kind::Inet)
        return make_error("resolver must be IP, IP:PORT, IPv6 or [IPv6]:PORT");
    if (parsed->port == 0) return make_error("resolver port must not be 0");
    return parsed;
}

socklen_t endpoint_sockaddr(const Endpoint& ep, sockaddr_storage& out) {
    out = {};
    if (ep.kind == Endpoint::Kind::Unix) {
        auto* a = reinterpret_cast<sockaddr_un*>(&out);
        a->sun_family = AF_UNIX;
        ep.path.copy(a->sun_path, sizeof a->sun_path - 1);
        return sizeof *a;
    }
    if (ep.host.find(':') != std::string::npos) {
        auto* a = reinterpret_cast<sockaddr_in6*>(&out);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(ep.port);
        inet_pton(AF_INET6, ep.host.c_str(), &a->sin6_addr);
        return sizeof *a;
    }
    auto* a = reinterpret_cast<sockaddr_in*>(&out);
    a->sin_family = AF_INET;
    a->sin_port = htons(ep.port);
    inet_pton(AF_INET, ep.host.c_str(), &a->sin_addr);
    return sizeof *a;
}

}  // namespace tlspolicy
