// HttpsFetcher: MTA-STS policy fetches (RFC 8461 §3.3) with libcurl (Debian's GnuTLS build)
// driven by the daemon's libevent loop through curl's multi-socket interface: no blocking call
// and no thread on the request path. The caller resolves the policy host through tlspolicyd's
// own resolver and passes the addresses; the connection is pinned to them (at most the first
// 16; curl tries the other address family 200 ms after the first), so curl never resolves the
// policy host. Through a proxy only the first address is used, and the proxy's own name is
// resolved by curl: configure a proxy by IP address. HTTPS only, PKIX validation with SNI and a
// name check for the host, TLS 1.2 or newer, no redirects, no proxies unless configured, no HTTP
// caches, only status 200 with media type text/plain; body and headers bounded while reading;
// connect and total timeouts.
#pragma once

#include <event2/event.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/mta_sts.h"
#include "util/result.h"

namespace tlspolicy {

struct FetchSettings {
    std::string ca_file;                 // PEM CA bundle; "" = the system trust store
    uint16_t port = 443;                 // [mta_sts] https_port (test worlds only)
    int64_t connect_timeout_ms = 10000;  // TCP connect + TLS handshake
    int64_t timeout_ms = 30000;          // the whole fetch, from fetch(): waiting counts
    std::string proxy;  // "" = connect directly; proxy environment variables ignored
    std::size_t max_body = kMaxStsBody;
    std::size_t max_header_bytes = 16 * 1024;  // all response header lines together
    std::size_t max_parallel = 64;             // fetches at once; the rest wait in order
};

struct FetchRequest {
    std::string host;                    // "mta-sts.example.com": URL host, SNI, name check
    std::vector<std::string> addresses;  // numeric IPv4/IPv6 addresses to connect to, in order
    std::string path = "/.well-known/mta-sts.txt";
};

struct FetchResult {
    bool ok = false;  // status 200, media type text/plain, body within max_body
    // When !ok, one of: "http_status_<code>" (any status but 200, 3xx included: never
    // followed), "invalid_content_type", "body_too_large", "headers_too_large", "timeout",
    // "connect_failed", "tls_error" (handshake, protocol version), "certificate_error" (chain,
    // name or validity), "no_address", "fetch_error" (anything else: a host name or path that
    // is not plain, a non-numeric address, an unreadable CA file, ...).
    std::string code;
    std::string reason;        // short and printable; never echoes what the server sent
    long status = 0;           // HTTP status, 0 when none was received
    std::string content_type;  // as received (sanitised), "" when none
    std::string body;          // when ok
    std::string address;       // the address the connection went to, "" when none
    int64_t elapsed_ms = 0;
};

class HttpsFetcher {
  public:
    using Callback = std::function<void(FetchResult)>;
    using FetchId = uint64_t;

    // Fails with a clear message when libcurl cannot be set up (or lacks HTTPS).
    static Result<std::unique_ptr<HttpsFetcher>> create(event_base* base, FetchSettings s);
    ~HttpsFetcher();  // aborts every fetch; their callbacks are not called

    // Starts a GET of https://<host>:<port><path>; cb is called exactly once, always from the
    // event loop (never before fetch() returns), unless the fetch is cancelled first.
    FetchId fetch(FetchRequest request, Callback cb);
    // Aborts a fetch; its callback is not called. Unknown or finished ids are ignored.
    void cancel(FetchId id);

    std::size_t in_flight() const;  // running, waiting, and finished but not yet called back

    HttpsFetcher(const HttpsFetcher&) = delete;
    HttpsFetcher& operator=(const HttpsFetcher&) = delete;

  private:
    struct Impl;
    explicit HttpsFetcher(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace tlspolicy
