#include "server/metrics_http.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>

#include <cstring>

namespace tlspolicy {
namespace {

// Every method evhttp parses: the ones not allowed would otherwise get evhttp's 501, and the
// contract says 405 for them.
constexpr ev_uint16_t kAllMethods = EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                    EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH;

// Content-Length is always set here: evhttp 2.1 omits it on HTTP/1.0 and on closing
// connections, and sends the body even for HEAD, so HEAD gets the length and no body.
void reply(evhttp_request* req, int code, const char* reason, const std::string& body) {
    evkeyvalq* headers = evhttp_request_get_output_headers(req);
    evhttp_add_header(headers, "Content-Type",
                      code == HTTP_OK ? kMetricsContentType : "text/plain; charset=utf-8");
    evhttp_add_header(headers, "Content-Length", std::to_string(body.size()).c_str());
    evhttp_add_header(headers, "Cache-Control", "no-store");
    evbuffer* buf = evbuffer_new();
    if (!buf) {
        evhttp_send_error(req, HTTP_INTERNAL, nullptr);
        return;
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
        evbuffer_add(buf, body.data(), body.size());
    evhttp_send_reply(req, code, reason, buf);
    evbuffer_free(buf);
}

}  // namespace

void MetricsHttp::handle(evhttp_request* req, void* self) {
    const auto* server = static_cast<const MetricsHttp*>(self);
    const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
    const char* path = uri ? evhttp_uri_get_path(uri) : nullptr;
    if (!path || std::strcmp(path, "/metrics") != 0) {
        reply(req, HTTP_NOTFOUND, "Not Found", "not found; metrics are at /metrics\n");
        return;
    }
    const evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply(req, HTTP_BADMETHOD, "Method Not Allowed", "only GET and HEAD\n");
        return;
    }
    reply(req, HTTP_OK, "OK", server->registry_.render());
}

Result<std::unique_ptr<MetricsHttp>> MetricsHttp::start(event_base* base, const Endpoint& endpoint,
                                                        const metrics::Registry& registry) {
    const std::string where = "cannot listen for metrics on " + endpoint.to_string() + ": ";
    std::unique_ptr<MetricsHttp> server(new MetricsHttp(registry));
    server->http_.reset(evhttp_new(base));
    if (!server->http_) return make_error(where + "evhttp_new failed");
    evhttp* http = server->http_.get();
    evhttp_set_max_headers_size(http, kMetricsMaxHeaderBytes);
    evhttp_set_max_body_size(http, kMetricsMaxBodyBytes);
    evhttp_set_timeout(http, kMetricsTimeoutSeconds);
    evhttp_set_allowed_methods(http, kAllMethods);
#if LIBEVENT_VERSION_NUMBER >= 0x02020000
    evhttp_set_max_connections(http, kMetricsMaxConnections);
#endif
    evhttp_set_gencb(http, &MetricsHttp::handle, server.get());

    ListenConfig config;
    config.endpoint = endpoint;
    config.mode = kMetricsUnixMode;
    auto bound = bind_listener(config);
    if (!bound) return make_error(where + bound.error().message);
    server->socket_ = std::move(*bound);
    if (!evhttp_accept_socket_with_handle(http, server->socket_.fd.get()))
        return make_error(where + "evhttp cannot accept on the socket");
    server->socket_.fd.release();  // evhttp closes it
    return server;
}

MetricsHttp::~MetricsHttp() {
    http_.reset();
    remove_unix_socket(socket_);
}

}  // namespace tlspolicy
