// The control socket: administrative commands for the running daemon from `tlspolicy cache
// purge|export` (docs/operations.md). Only a unix socket (mode 0660) or a loopback address
// (the config refuses anything else). One command line per connection, one reply, then the
// daemon closes it; lines are limited to kMaxControlLine bytes, connections to 10 s.
#pragma once

#include <event2/event.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "server/listener.h"
#include "util/endpoint.h"
#include "util/event.h"
#include "util/result.h"

namespace tlspolicy {

inline constexpr std::size_t kMaxControlLine = 1024;

class ControlServer {
  public:
    // Gets a command line (without its newline) and returns the whole reply.
    using Handler = std::function<std::string(std::string_view command)>;

    // Binds `endpoint` and serves it on `base` until destroyed.
    static Result<std::unique_ptr<ControlServer>> start(event_base* base, const Endpoint& endpoint,
                                                        Handler handler);
    ~ControlServer();
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

    const Endpoint& endpoint() const { return endpoint_; }
    const std::string& address() const { return socket_.address; }

  private:
    ControlServer() = default;
    static void on_accept(evconnlistener*, evutil_socket_t fd, sockaddr*, int, void* arg);

    event_base* base_ = nullptr;
    Endpoint endpoint_;
    BoundSocket socket_;
    ListenerPtr listener_;
    Handler handler_;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// Client side (`tlspolicy`): sends `command` and returns the reply. Errors say whether the
// daemon is simply not there (`*absent` true: no socket file, connection refused).
Result<std::string> control_request(const Endpoint& endpoint, std::string_view command,
                                    bool* absent, int timeout_ms = 30000);

}  // namespace tlspolicy
