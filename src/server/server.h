// The protocol server: listeners and client sessions for socketmap and tcp_table on one
// libevent loop. Sessions are persistent, read requests ahead (pipelining) and answer them in
// order; limits bound every input, the connection count applies back-pressure.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <event2/event.h>

#include "core/config.h"
#include "core/resolver.h"
#include "server/listener.h"
#include "util/event.h"

namespace tlspolicy {

// Longest socketmap request payload ("NAME KEY"), as Postfix's socketmap_max_query_size.
inline constexpr std::size_t kMaxSocketmapRequest = 10000;
// Longest tcp_table request line, newline included (tcp_table(5)).
inline constexpr std::size_t kMaxTcpTableLine = 4096;
// A client that does not read its answers for this long is disconnected.
inline constexpr int kWriteTimeoutSeconds = 60;

class Session;

class Server {
  public:
    Server(event_base* base, const PolicyResolver& resolver);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // Makes the listeners those of `config`: binds new ones first (on any failure nothing
    // changes and the error is returned), then closes the ones no longer configured.
    // Limits take effect for new connections.
    Status apply(const Config& config);

    // "socketmap 127.0.0.1:8461" per listener, in config order, with the real ports.
    std::vector<std::string> bound_addresses() const;

    // Stops accepting, lets sessions finish the requests they have read, and calls
    // `on_drained` once no session is left or `timeout_seconds` have passed.
    void drain(int timeout_seconds, std::function<void()> on_drained);

    std::size_t session_count() const { return sessions_.size(); }

  private:
    friend class Session;
    struct Listener;

    static void on_accept(evconnlistener*, evutil_socket_t fd, sockaddr* sa, int len, void* arg);
    void accept_session(Listener& listener, evutil_socket_t fd, const sockaddr* sa, int len);
    void session_closed(Session* session);
    void update_accepting();
    void finish_drain();
    void sweep_idle();  // closes the sessions idle for server.idle_timeout

    event_base* base_;
    const PolicyResolver& resolver_;
    Config::Server limits_;
    std::vector<std::unique_ptr<Listener>> listeners_;
    std::unordered_map<Session*, std::shared_ptr<Session>> sessions_;
    bool accepting_ = true;
    bool draining_ = false;
    std::function<void()> on_drained_;
    EventPtr drain_timer_;
    EventPtr idle_sweep_;  // every kIdleSweepMs: an idle session closes within that of its time
    static constexpr int kIdleSweepMs = 250;
};

}  // namespace tlspolicy
