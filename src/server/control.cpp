#include "server/control.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include <event2/buffer.h>

#include "util/fd.h"
#include "util/log.h"

namespace tlspolicy {
namespace {

constexpr int kControlTimeoutSeconds = 10;

// One connection: reads a line, writes the reply, closes once it is written.
struct Connection {
    BuffereventPtr bev;
    ControlServer::Handler* handler = nullptr;
    std::weak_ptr<bool> alive;
    bool replied = false;

    static void on_read(bufferevent* bev, void* arg) {
        auto* c = static_cast<Connection*>(arg);
        if (c->replied) return;
        evbuffer* in = bufferevent_get_input(bev);
        std::size_t len = 0;
        char* line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
        if (!line) {
            if (evbuffer_get_length(in) > kMaxControlLine) c->reply("error line too long\n");
            return;
        }
        std::string command(line, len);
        std::free(line);
        if (!command.empty() && command.back() == '\r') command.pop_back();
        if (command.size() > kMaxControlLine) {
            c->reply("error line too long\n");
            return;
        }
        if (c->alive.expired()) return c->close();
        c->reply((*c->handler)(command));
    }
    void reply(const std::string& text) {
        replied = true;
        bufferevent_disable(bev.get(), EV_READ);
        bufferevent_write(bev.get(), text.data(), text.size());
    }
    static void on_write(bufferevent* bev, void* arg) {
        auto* c = static_cast<Connection*>(arg);
        if (c->replied && evbuffer_get_length(bufferevent_get_output(bev)) == 0) c->close();
    }
    static void on_event(bufferevent*, short, void* arg) {
        static_cast<Connection*>(arg)->close();  // EOF, error or timeout
    }
    void close() { delete this; }
};

}  // namespace

Result<std::unique_ptr<ControlServer>> ControlServer::start(event_base* base,
                                                            const Endpoint& endpoint,
                                                            Handler handler) {
    std::unique_ptr<ControlServer> s(new ControlServer());
    s->base_ = base;
    s->endpoint_ = endpoint;
    s->handler_ = std::move(handler);
    ListenConfig lc;
    lc.endpoint = endpoint;
    if (endpoint.kind == Endpoint::Kind::Unix) lc.mode = 0660;
    auto bound = bind_listener(lc);
    if (!bound)
        return make_error("cannot open the control socket " + endpoint.to_string() + ": " +
                          bound.error().message);
    s->socket_ = std::move(*bound);
    s->listener_.reset(evconnlistener_new(base, on_accept, s.get(), LEV_OPT_CLOSE_ON_EXEC, -1,
                                          s->socket_.fd.get()));
    if (!s->listener_) {
        remove_unix_socket(s->socket_);
        return make_error("cannot serve the control socket " + endpoint.to_string());
    }
    return s;
}

ControlServer::~ControlServer() {
    listener_.reset();  // LEV_OPT_CLOSE_ON_FREE is not set: socket_.fd closes the socket
    remove_unix_socket(socket_);
    // Connections still open find `alive_` expired and close without calling the handler.
}

void ControlServer::on_accept(evconnlistener*, evutil_socket_t fd, sockaddr*, int, void* arg) {
    auto* self = static_cast<ControlServer*>(arg);
    auto* c = new Connection();
    c->bev.reset(bufferevent_socket_new(self->base_, fd, BEV_OPT_CLOSE_ON_FREE));
    if (!c->bev) {
        evutil_closesocket(fd);
        delete c;
        return;
    }
    c->handler = &self->handler_;
    c->alive = self->alive_;
    bufferevent_setcb(c->bev.get(), Connection::on_read, Connection::on_write, Connection::on_event,
                      c);
    const timeval tv{kControlTimeoutSeconds, 0};
    bufferevent_set_timeouts(c->bev.get(), &tv, &tv);
    bufferevent_setwatermark(c->bev.get(), EV_READ, 0, kMaxControlLine + 2);
    bufferevent_enable(c->bev.get(), EV_READ | EV_WRITE);
}

Result<std::string> control_request(const Endpoint& ep, std::string_view command, bool* absent,
                                    int timeout_ms) {
    if (absent) *absent = false;
    sockaddr_storage ss{};
    const socklen_t len = endpoint_sockaddr(ep, ss);
    const std::string where = "the daemon's control socket " + ep.to_string();
    UniqueFd fd(socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return make_error(std::string("socket: ") + std::strerror(errno));
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        const int err = errno;
        if (absent) *absent = err == ENOENT || err == ECONNREFUSED;
        return make_error("cannot reach " + where + ": " + std::strerror(err));
    }
    std::string line(command);
    line += '\n';
    for (std::size_t off = 0; off < line.size();) {
        const ssize_t n = send(fd.get(), line.data() + off, line.size() - off, MSG_NOSIGNAL);
        if (n <= 0) return make_error("cannot write to " + where + ": " + std::strerror(errno));
        off += static_cast<std::size_t>(n);
    }
    std::string reply;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                              deadline - std::chrono::steady_clock::now())
                              .count();
        pollfd p{fd.get(), POLLIN, 0};
        if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0)
            return make_error("no reply from " + where + " within " +
                              std::to_string(timeout_ms / 1000) + " s");
        char buf[4096];
        const ssize_t n = recv(fd.get(), buf, sizeof buf, 0);
        if (n < 0) return make_error("cannot read from " + where + ": " + std::strerror(errno));
        if (n == 0) break;
        if (reply.size() + static_cast<std::size_t>(n) > (1u << 20))
            return make_error("the reply from " + where + " is too long");
        reply.append(buf, static_cast<std::size_t>(n));
    }
    if (reply.rfind("error ", 0) == 0)
        return make_error(where + ": " + log::sanitize(reply.substr(6, reply.find('\n') - 6)));
    return reply;
}

}  // namespace tlspolicy
