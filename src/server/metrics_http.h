// The metrics endpoint: a small evhttp server on the daemon's event loop. GET or HEAD /metrics
// answers the registry in Prometheus text format 0.0.4; other paths get 404, other methods
// 405. Hostile clients are bounded by kMaxHeaderBytes, kMaxBodyBytes and kTimeoutSeconds.
#pragma once

#include <event2/http.h>

#include <memory>
#include <string>

#include "server/listener.h"
#include "server/metrics.h"
#include "util/endpoint.h"
#include "util/result.h"

namespace tlspolicy {

// Limits of one metrics connection: request line plus headers, request body, idle seconds.
inline constexpr long kMetricsMaxHeaderBytes = 8 * 1024;
inline constexpr long kMetricsMaxBodyBytes = 0;
inline constexpr int kMetricsTimeoutSeconds = 10;
// Open connections at once; enforced only where evhttp can (libevent >= 2.2).
inline constexpr int kMetricsMaxConnections = 64;
// Mode of a unix metrics socket: the daemon's user and group may scrape.
inline constexpr unsigned kMetricsUnixMode = 0660;

inline constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

struct EvhttpFree {
    void operator()(evhttp* h) const { evhttp_free(h); }
};
using EvhttpPtr = std::unique_ptr<evhttp, EvhttpFree>;

class MetricsHttp {
  public:
    // Listens on `endpoint` (IPv4/IPv6 host:port, port 0 = any, or unix:/path) and serves
    // `registry`, which must outlive the server, on `base`'s loop.
    static Result<std::unique_ptr<MetricsHttp>> start(event_base* base, const Endpoint& endpoint,
                                                      const metrics::Registry& registry);

    // Closes the listener and open connections; removes the unix socket file if still ours.
    ~MetricsHttp();
    MetricsHttp(const MetricsHttp&) = delete;
    MetricsHttp& operator=(const MetricsHttp&) = delete;

    // The address as bound ("127.0.0.1:43121" when port 0 was asked, "unix:/path").
    std::string bound_address() const { return socket_.address; }

  private:
    explicit MetricsHttp(const metrics::Registry& registry) : registry_(registry) {}
    static void handle(evhttp_request* req, void* self);

    const metrics::Registry& registry_;
    BoundSocket socket_;  // fd owned by http_ once bound; kept for address and unix cleanup
    EvhttpPtr http_;
};

}  // namespace tlspolicy
