// ceiling: the throughput ceiling of this machine for the benchmarks (issue 9). A minimal
// single-threaded, non-blocking, level-triggered epoll server that answers every request at
// once with a fixed reply and does nothing else: tcp_table answers every "\n"-terminated line
// with "200 dane-only\n", socketmap every complete netstring with the netstring "OK dane-only".
// Pipelined requests, partial reads and partial writes are handled; a framing error (a
// malformed netstring, a netstring over 100000 bytes, a line over 4096 bytes) answers what came
// before, then closes; so does a client that half-closes.
//
//   ceiling --protocol socketmap|tcp_table --listen HOST:PORT|unix:PATH [--reply TEXT]
//
// Prints "ceiling: listening on ADDRESS" on stdout once bound (port 0 picks a free port).
// SIGINT or SIGTERM stops it; it then prints the requests answered and connections accepted.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "util/endpoint.h"
#include "util/netstring.h"

namespace {

using tlspolicy::Endpoint;

constexpr std::size_t kMaxNetstring = 100000;  // payload bytes
constexpr std::size_t kMaxLine = 4096;         // tcp_table request line with the newline
constexpr std::size_t kMaxOutput = 1 << 20;    // stop reading while this much is unsent

[[noreturn]] void die(const std::string& message) {
    std::fprintf(stderr, "ceiling: %s\n", message.c_str());
    std::exit(2);
}

std::string errno_text(const std::string& what) {
    return what + ": " + std::strerror(errno);
}

struct Conn {
    int fd = -1;
    std::string in;   // an incomplete request
    std::string out;  // replies not yet written, from out_off
    std::size_t out_off = 0;
    bool reading = true;  // false after EOF or a framing error: flush, then close
    uint32_t events = 0;  // registered with epoll
};

class Server {
  public:
    Server(bool socketmap, const std::string& reply_text) : socketmap_(socketmap) {
        if (socketmap)
            tlspolicy::netstring_append(reply_, "OK " + reply_text);
        else
            reply_ = "200 " + reply_text + "\n";
    }

    void listen_on(const Endpoint& ep) {
        sockaddr_storage addr{};
        socklen_t len = tlspolicy::endpoint_sockaddr(ep, addr);
        listen_fd_ = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (listen_fd_ < 0) die(errno_text("socket"));
        tcp_ = ep.kind == Endpoint::Kind::Inet;
        if (tcp_) {
            const int one = 1;
            setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        } else {
            struct stat st {};
            if (::lstat(ep.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode))
                ::unlink(ep.path.c_str());
            unix_path_ = ep.path;
        }
        if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0)
            die(errno_text("bind " + ep.to_string()));
        if (::listen(listen_fd_, 4096) != 0) die(errno_text("listen"));
        Endpoint bound = ep;
        if (tcp_) {
            len = sizeof addr;
            getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
            bound.port =
                ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                                 : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
        }
        std::printf("ceiling: listening on %s (%s)\n", bound.to_string().c_str(),
                    socketmap_ ? "socketmap" : "tcp_table");
        std::fflush(stdout);
    }

    void run() {
        epfd_ = epoll_create1(EPOLL_CLOEXEC);
        if (epfd_ < 0) die(errno_text("epoll_create1"));
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        sigprocmask(SIG_BLOCK, &mask, nullptr);
        signal_fd_ = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
        if (signal_fd_ < 0) die(errno_text("signalfd"));
        add(signal_fd_, EPOLLIN);
        add(listen_fd_, EPOLLIN);

        std::vector<epoll_event> events(1024);
        for (;;) {
            const int n = epoll_wait(epfd_, events.data(), static_cast<int>(events.size()), -1);
            if (n < 0) {
                if (errno == EINTR) continue;
                die(errno_text("epoll_wait"));
            }
            for (int i = 0; i < n; ++i) {
                const int fd = events[static_cast<std::size_t>(i)].data.fd;
                const uint32_t ev = events[static_cast<std::size_t>(i)].events;
                if (fd == signal_fd_) return finish();
                if (fd == listen_fd_)
                    accept_all();
                else if (static_cast<std::size_t>(fd) < conns_.size() && conns_[fd])
                    handle(*conns_[fd], ev);
            }
        }
    }

  private:
    void add(int fd, uint32_t events) {
        epoll_event ev{};
        ev.events = events;
        ev.data.fd = fd;
        if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) die(errno_text("epoll_ctl"));
    }

    void finish() {
        std::fprintf(stderr, "ceiling: stopped; %llu requests answered on %llu connections\n",
                     static_cast<unsigned long long>(requests_),
                     static_cast<unsigned long long>(accepted_));
        if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
    }

    void accept_all() {
        for (int i = 0; i < 256; ++i) {
            const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EMFILE || errno == ENFILE) {
                    // Out of descriptors: stop accepting until a connection closes (level-
                    // triggered epoll would otherwise report the listener again at once).
                    std::fprintf(stderr, "ceiling: accept: %s; pausing\n", std::strerror(errno));
                    epoll_ctl(epfd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
                    accept_paused_ = true;
                }
                return;  // EAGAIN, or a connection that failed before we took it
            }
            ++accepted_;
            if (tcp_) {
                const int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            }
            if (static_cast<std::size_t>(fd) >= conns_.size())
                conns_.resize(static_cast<std::size_t>(fd) + 1);
            conns_[fd] = std::make_unique<Conn>();
            conns_[fd]->fd = fd;
            conns_[fd]->events = EPOLLIN;
            add(fd, EPOLLIN);
        }
    }

    void close_conn(Conn& c) {
        const int fd = c.fd;
        ::close(fd);  // also leaves the epoll set
        conns_[fd].reset();
        if (accept_paused_) {
            add(listen_fd_, EPOLLIN);
            accept_paused_ = false;
        }
    }

    void handle(Conn& c, uint32_t ev) {
        if ((ev & EPOLLOUT) && !flush(c)) return close_conn(c);
        if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
            if (c.reading) {
                if (!read_some(c) || !flush(c)) return close_conn(c);
            } else if (ev & (EPOLLHUP | EPOLLERR)) {
                return close_conn(c);
            }
        }
        if (!c.reading && c.out_off == c.out.size()) return close_conn(c);
        update(c);
    }

    // One read; answers every complete request in it. False on a read error.
    bool read_some(Conn& c) {
        char buf[65536];
        const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        if (n == 0) {
            c.reading = false;  // half-close: answer what came, then close
            return true;
        }
        std::string_view data(buf, static_cast<std::size_t>(n));
        if (!c.in.empty()) {
            c.in.append(data);
            data = c.in;
        }
        const std::size_t used = socketmap_ ? answer_netstrings(c, data) : answer_lines(c, data);
        if (!c.reading)
            c.in.clear();
        else if (c.in.empty())
            c.in.assign(data.substr(used));
        else
            c.in.erase(0, used);
        return true;
    }

    // Both return the bytes consumed; a framing error stops reading.
    std::size_t answer_netstrings(Conn& c, std::string_view data) {
        using State = tlspolicy::NetstringDecode::State;
        std::size_t pos = 0;
        for (;;) {
            const auto d = tlspolicy::netstring_decode(data.substr(pos), kMaxNetstring);
            if (d.state == State::NeedMore) return pos;
            if (d.state != State::Complete) {
                c.reading = false;
                return pos;
            }
            c.out += reply_;
            ++requests_;
            pos += d.consumed;
        }
    }

    std::size_t answer_lines(Conn& c, std::string_view data) {
        std::size_t pos = 0;
        for (;;) {
            const auto nl = data.find('\n', pos);
            if (nl == std::string_view::npos) {
                if (data.size() - pos >= kMaxLine) c.reading = false;
                return pos;
            }
            if (nl + 1 - pos > kMaxLine) {
                c.reading = false;
                return pos;
            }
            c.out += reply_;
            ++requests_;
            pos = nl + 1;
        }
    }

    // Writes what it can. False on a write error.
    bool flush(Conn& c) {
        while (c.out_off < c.out.size()) {
            const ssize_t n =
                ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
            if (n > 0)
                c.out_off += static_cast<std::size_t>(n);
            else if (errno == EAGAIN || errno == EWOULDBLOCK)
                return true;
            else if (errno != EINTR)
                return false;
        }
        c.out.clear();
        c.out_off = 0;
        return true;
    }

    // Reads while the output is not backed up; waits for writability while output is pending.
    void update(Conn& c) {
        const std::size_t pending = c.out.size() - c.out_off;
        uint32_t want = 0;
        if (c.reading && pending < kMaxOutput) want |= EPOLLIN;
        if (pending > 0) want |= EPOLLOUT;
        if (want == c.events) return;
        epoll_event ev{};
        ev.events = want;
        ev.data.fd = c.fd;
        if (epoll_ctl(epfd_, EPOLL_CTL_MOD, c.fd, &ev) != 0) return close_conn(c);
        c.events = want;
    }

    bool socketmap_;
    bool tcp_ = false;
    std::string reply_;
    std::string unix_path_;
    int listen_fd_ = -1;
    int signal_fd_ = -1;
    int epfd_ = -1;
    bool accept_paused_ = false;
    std::vector<std::unique_ptr<Conn>> conns_;  // by descriptor
    uint64_t requests_ = 0;
    uint64_t accepted_ = 0;
};

void usage() {
    std::puts(
        "usage: ceiling --protocol socketmap|tcp_table --listen HOST:PORT|unix:PATH\n"
        "               [--reply TEXT]\n"
        "\n"
        "Answers every tcp_table line with \"200 TEXT\\n\" or every socketmap netstring with\n"
        "the netstring \"OK TEXT\" (TEXT defaults to dane-only), at once: the ceiling of this\n"
        "machine for a policy server. Single-threaded epoll. SIGINT/SIGTERM stop it.");
}

}  // namespace

int main(int argc, char** argv) {
    std::string protocol;
    std::string listen;
    std::string reply = "dane-only";
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        std::string value;
        bool inline_value = false;
        if (const auto eq = arg.find('='); arg.starts_with("--") && eq != std::string::npos) {
            value = arg.substr(eq + 1);
            arg.resize(eq);
            inline_value = true;
        }
        auto next = [&]() -> std::string {
            if (inline_value) return value;
            if (i + 1 >= argc) die(arg + " needs a value (ceiling --help for usage)");
            return argv[++i];
        };
        if (arg == "--help" || arg == "-h") {
            usage();
            return 0;
        } else if (arg == "--protocol") {
            protocol = next();
        } else if (arg == "--listen") {
            listen = next();
        } else if (arg == "--reply") {
            reply = next();
        } else {
            die("unknown argument \"" + arg + "\" (ceiling --help for usage)");
        }
    }
    if (protocol != "socketmap" && protocol != "tcp_table")
        die("--protocol socketmap|tcp_table is required (ceiling --help for usage)");
    if (listen.empty()) die("--listen HOST:PORT is required (ceiling --help for usage)");
    if (reply.empty() || reply.find_first_of("\n%") != std::string::npos)
        die("--reply must be non-empty, without a newline or '%'");
    auto ep = tlspolicy::parse_endpoint(listen);
    if (!ep) die("--listen " + listen + ": " + ep.error().message);

    // As many connections as the hard limit on open files allows.
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    Server server(protocol == "socketmap", reply);
    server.listen_on(*ep);
    server.run();
    return 0;
}
