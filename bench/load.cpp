// load: the load generator of the benchmarks (issue 9) for Postfix's socketmap and tcp_table
// protocols. It keeps N persistent connections, each strictly request -> response (one request
// outstanding per connection, as Postfix's smtp(8) processes use a map), draws the keys from a
// list, checks every reply, and reports requests/s and the latency (request sent -> reply
// complete, CLOCK_MONOTONIC) after a warm-up, with the answers and the errors by kind.
//
//   load --protocol socketmap|tcp_table --connect HOST:PORT|unix:PATH --connections N
//        --duration SECONDS [--warmup SECONDS] [--keys FILE | --key KEY ...] [--map NAME]
//        [--order roundrobin|random] [--seed N] [--threads T] [--timeout SECONDS] [--json]
//
// One thread runs one level-triggered epoll loop over its connections (--threads splits them
// over several loops; the default is one, see usage()). The summary is one line on stdout, or
// with --json one JSON object on stdout and the human line on stderr. Exit status: 0 when at
// least one reply was measured, 1 when none was, 2 on a usage error.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "util/endpoint.h"
#include "util/hexquote.h"
#include "util/netstring.h"

namespace {

using tlspolicy::Endpoint;

enum class Protocol { Socketmap, TcpTable };

constexpr std::size_t kMaxSocketmapReply = 100000;   // Postfix's socketmap_max_reply_size
constexpr std::size_t kMaxTcpTableReply = 4096;      // dict_tcp: reply line with the newline
constexpr uint64_t kReconnectDelayNs = 100'000'000;  // after a failed or broken connection
constexpr uint64_t kMaintenanceNs = 50'000'000;      // reconnects and timeouts checked this often

// The answer kinds, in the order they are reported.
constexpr std::array<std::string_view, 5> kSocketmapKinds = {"OK", "NOTFOUND", "TEMP", "TIMEOUT",
                                                             "PERM"};
constexpr std::array<std::string_view, 3> kTcpTableKinds = {"2xx", "4xx", "5xx"};

uint64_t now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

[[noreturn]] void usage_error(const std::string& message) {
    std::fprintf(stderr, "load: %s (load --help for usage)\n", message.c_str());
    std::exit(2);
}

void usage() {
    std::puts(
        "usage: load --protocol socketmap|tcp_table --connect HOST:PORT|unix:PATH\n"
        "            --connections N --duration SECONDS [--warmup SECONDS]\n"
        "            [--keys FILE | --key KEY ...] [--map NAME] [--order roundrobin|random]\n"
        "            [--seed N] [--threads T] [--timeout SECONDS] [--json]\n"
        "\n"
        "  --protocol     socketmap: request netstring \"NAME KEY\"; tcp_table: \"get KEY\\n\"\n"
        "                 with KEY %XX-encoded as Postfix does (%, white space, non-printable)\n"
        "  --connect      IPv4:PORT, [IPv6]:PORT or unix:/path\n"
        "  --connections  persistent connections, one request outstanding on each\n"
        "  --duration     seconds measured (after the warm-up)\n"
        "  --warmup       seconds of traffic before measuring (default 1)\n"
        "  --keys FILE    one key per line (empty lines and lines starting with # skipped)\n"
        "  --key KEY      a key (repeatable; combines with --keys)\n"
        "  --map NAME     socketmap map name (default postfix)\n"
        "  --order        roundrobin (default) or random (seeded by --seed, default 1)\n"
        "  --threads      epoll loops sharing the connections (default 1: on a 2-core machine\n"
        "                 one core drives the load and the other serves it)\n"
        "  --timeout      seconds to wait for a reply or a connect before counting an error\n"
        "                 and reconnecting (default 10)\n"
        "  --json         one JSON object on stdout (the human line goes to stderr)\n"
        "\n"
        "A framing error, an unexpected reply, a timeout or a connection the server closed is\n"
        "an error: the connection is closed and reopened after 100 ms. After a tcp_table 4xx\n"
        "reply the connection is reopened at once, as Postfix's client does (not an error).\n"
        "Replies and latencies count after the warm-up only, errors over the whole run.\n"
        "Exit status: 0 when at least one reply was measured, 1 when none was, 2 usage.");
}

// ---------------------------------------------------------------------------------------------
// Latency histogram: log-linear like HdrHistogram, 128 linear sub-buckets per power of two
// (relative error under 0.8%), nanoseconds up to 2^64, fixed size (58 KiB).

class Histogram {
  public:
    Histogram() : counts_(kBuckets, 0) {}

    void record(uint64_t v) {
        ++counts_[index(v)];
        ++total_;
        sum_ += static_cast<double>(v);
        max_ = std::max(max_, v);
    }

    void merge(const Histogram& o) {
        for (std::size_t i = 0; i < kBuckets; ++i)
            counts_[i] += o.counts_[i];
        total_ += o.total_;
        sum_ += o.sum_;
        max_ = std::max(max_, o.max_);
    }

    uint64_t total() const { return total_; }
    uint64_t max() const { return max_; }
    double mean() const { return total_ ? sum_ / static_cast<double>(total_) : 0; }

    // The smallest recorded value v such that p% of the values are <= v (within the bucket
    // precision; the bucket's highest value is reported, never above the maximum).
    uint64_t percentile(double p) const {
        if (total_ == 0) return 0;
        auto rank = static_cast<uint64_t>(std::ceil(p / 100.0 * static_cast<double>(total_)));
        rank = std::clamp<uint64_t>(rank, 1, total_);
        uint64_t seen = 0;
        for (std::size_t i = 0; i < kBuckets; ++i) {
            seen += counts_[i];
            if (seen >= rank) return std::min(highest(i), max_);
        }
        return max_;
    }

  private:
    static constexpr int kSubBits = 7;
    static constexpr uint64_t kSub = uint64_t{1} << kSubBits;
    static constexpr std::size_t kBuckets = (64 - kSubBits + 1) * kSub;

    static std::size_t index(uint64_t v) {
        if (v < kSub) return v;
        const int shift = 63 - std::countl_zero(v) - kSubBits;
        return static_cast<std::size_t>(shift + 1) * kSub + ((v >> shift) - kSub);
    }
    static uint64_t highest(std::size_t i) {
        if (i < kSub) return i;
        const auto shift = static_cast<int>(i / kSub) - 1;
        return ((kSub + i % kSub) << shift) + ((uint64_t{1} << shift) - 1);
    }

    std::vector<uint64_t> counts_;
    uint64_t total_ = 0;
    uint64_t max_ = 0;
    double sum_ = 0;
};

// ---------------------------------------------------------------------------------------------

struct Plan {
    Protocol protocol = Protocol::Socketmap;
    Endpoint endpoint;
    std::string endpoint_text;
    sockaddr_storage addr{};
    socklen_t addr_len = 0;
    std::vector<std::string> requests;  // one encoded request per key
    bool random = false;
    uint64_t seed = 1;
    int connections = 0;
    int threads = 1;
    double duration_s = 0;
    double warmup_s = 1;
    uint64_t timeout_ns = 10'000'000'000u;
    bool json = false;
    uint64_t measure_start_ns = 0;  // set just before the workers start
    uint64_t end_ns = 0;
};

struct Stats {
    Histogram latency;
    std::array<uint64_t, 5> answers{};  // by kSocketmapKinds / kTcpTableKinds
    uint64_t warmup_replies = 0;
    uint64_t connects = 0;              // connections established
    uint64_t reconnects_after_4xx = 0;  // tcp_table: Postfix's client disconnects on 4xx
    uint64_t in_flight_at_end = 0;
    std::map<std::string, uint64_t> errors;  // whole run, warm-up included
    std::map<std::string, std::string> error_examples;

    void merge(const Stats& o) {
        latency.merge(o.latency);
        for (std::size_t i = 0; i < answers.size(); ++i)
            answers[i] += o.answers[i];
        warmup_replies += o.warmup_replies;
        connects += o.connects;
        reconnects_after_4xx += o.reconnects_after_4xx;
        in_flight_at_end += o.in_flight_at_end;
        for (const auto& [k, v] : o.errors)
            errors[k] += v;
        for (const auto& [k, v] : o.error_examples)
            error_examples.try_emplace(k, v);
    }
};

// Printable excerpt of a reply for an error report: at most 60 bytes, others as \xXX.
std::string excerpt(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size() && i < 60; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out += static_cast<char>(c);
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02X", c);
            out += buf;
        }
    }
    if (s.size() > 60) out += "...";
    return out;
}

// A reply parsed from the front of a connection's input.
struct Parsed {
    enum class State { NeedMore, Reply, Error } state = State::NeedMore;
    std::size_t kind = 0;     // index into the protocol's kinds, for Reply
    std::string_view error;   // error kind, for Error
    std::string_view detail;  // the offending bytes, for Error
};

// socketmap: one netstring whose payload is "STATUS" or "STATUS data" (Postfix splits at the
// first space); OK needs data (Postfix rejects an empty policy).
Parsed parse_socketmap(std::string_view in) {
    using tlspolicy::NetstringDecode;
    const NetstringDecode d = tlspolicy::netstring_decode(in, kMaxSocketmapReply);
    switch (d.state) {
        case NetstringDecode::State::NeedMore:
            return {};
        case NetstringDecode::State::Malformed:
            return {Parsed::State::Error, 0, "malformed netstring", in};
        case NetstringDecode::State::TooLong:
            return {Parsed::State::Error, 0, "netstring longer than 100000 bytes", in};
        case NetstringDecode::State::Complete:
            break;
    }
    if (d.consumed != in.size())
        return {Parsed::State::Error, 0, "bytes after the reply", in.substr(d.consumed)};
    const std::string_view payload = d.payload;
    const std::string_view status = payload.substr(0, payload.find(' '));
    for (std::size_t i = 0; i < kSocketmapKinds.size(); ++i) {
        if (status != kSocketmapKinds[i]) continue;
        if (i == 0 && payload.size() <= 3)
            return {Parsed::State::Error, 0, "OK without a policy", payload};
        return {Parsed::State::Reply, i, {}, {}};
    }
    return {Parsed::State::Error, 0, "unexpected socketmap status", payload};
}

// tcp_table: "<3 digits><white space><%XX-encoded text>\n", at most 4096 bytes; the first
// digit 2, 4 or 5 (Postfix's dict_tcp treats anything else as malformed).
Parsed parse_tcp_table(std::string_view in) {
    const auto nl = in.find('\n');
    if (nl == std::string_view::npos) {
        if (in.size() >= kMaxTcpTableReply)
            return {Parsed::State::Error, 0, "reply line longer than 4096 bytes", in};
        return {};
    }
    if (nl + 1 > kMaxTcpTableReply)
        return {Parsed::State::Error, 0, "reply line longer than 4096 bytes", in};
    if (nl + 1 != in.size())
        return {Parsed::State::Error, 0, "bytes after the reply", in.substr(nl + 1)};
    const std::string_view line = in.substr(0, nl);
    auto digit = [&](std::size_t i) { return i < line.size() && line[i] >= '0' && line[i] <= '9'; };
    if (!digit(0) || !digit(1) || !digit(2) || line.size() < 4 ||
        !std::strchr(" \t\r\v\f", line[3]))
        return {Parsed::State::Error, 0, "malformed tcp_table reply", line};
    if (!tlspolicy::hex_unquote(line.substr(4)))
        return {Parsed::State::Error, 0, "malformed %XX escape in reply", line};
    switch (line[0]) {
        case '2':
            return {Parsed::State::Reply, 0, {}, {}};
        case '4':
            return {Parsed::State::Reply, 1, {}, {}};
        case '5':
            return {Parsed::State::Reply, 2, {}, {}};
        default:
            return {Parsed::State::Error, 0, "unexpected tcp_table status", line};
    }
}

// ---------------------------------------------------------------------------------------------
// One epoll loop over a share of the connections.

class Worker {
  public:
    Worker(const Plan& plan, int index, int connections)
        : plan_(plan), conns_(static_cast<std::size_t>(connections)) {
        const std::size_t n = plan.requests.size();
        next_key_ = n * static_cast<std::size_t>(index) / static_cast<std::size_t>(plan.threads);
        rng_ = plan.seed + 0x9E3779B97F4A7C15u * static_cast<uint64_t>(index + 1);
        for (auto& c : conns_)
            c.in.reserve(256);
    }

    Stats& stats() { return stats_; }

    void run() {
        epfd_ = epoll_create1(EPOLL_CLOEXEC);
        if (epfd_ < 0) {
            error("epoll_create1: " + std::string(std::strerror(errno)));
            return;
        }
        uint64_t now = now_ns();
        for (auto& c : conns_)
            open(c, now);
        std::vector<epoll_event> events(512);
        uint64_t next_maintenance = now + kMaintenanceNs;
        while (now < plan_.end_ns) {
            if (now >= next_maintenance) {
                maintain(now);
                next_maintenance = now + kMaintenanceNs;
            }
            const uint64_t wake = std::min(plan_.end_ns, next_maintenance);
            const int timeout_ms = static_cast<int>((wake - now + 999'999) / 1'000'000);
            const int n =
                epoll_wait(epfd_, events.data(), static_cast<int>(events.size()), timeout_ms);
            if (n < 0 && errno != EINTR) {
                error("epoll_wait: " + std::string(std::strerror(errno)));
                break;
            }
            for (int i = 0; i < n; ++i) {
                const epoll_event& ev = events[static_cast<std::size_t>(i)];
                handle(conns_[ev.data.u64], ev.events);
            }
            now = now_ns();
        }
        for (auto& c : conns_) {
            if (c.state == Conn::State::Busy) ++stats_.in_flight_at_end;
            if (c.fd >= 0) ::close(c.fd);
        }
        ::close(epfd_);
    }

  private:
    struct Conn {
        enum class State { Down, Connecting, Busy } state = State::Down;
        int fd = -1;
        const std::string* request = nullptr;
        std::size_t sent = 0;      // bytes of *request written
        bool want_out = false;     // EPOLLOUT registered
        std::string in;            // reply bytes read so far
        uint64_t since_ns = 0;     // request sent (Busy), connect started (Connecting)
        uint64_t retry_at_ns = 0;  // reconnect time (Down)
    };

    std::size_t id(const Conn& c) const { return static_cast<std::size_t>(&c - conns_.data()); }

    void error(const std::string& kind, std::string_view detail = {}) {
        ++stats_.errors[kind];
        if (!detail.empty()) stats_.error_examples.try_emplace(kind, excerpt(detail));
    }

    bool ctl(Conn& c, int op, uint32_t events) {
        epoll_event ev{};
        ev.events = events;
        ev.data.u64 = id(c);
        if (epoll_ctl(epfd_, op, c.fd, &ev) == 0) return true;
        fail(c, "epoll_ctl: " + std::string(std::strerror(errno)));
        return false;
    }

    void close_conn(Conn& c) {
        if (c.fd >= 0) ::close(c.fd);  // also leaves the epoll set
        c.fd = -1;
        c.in.clear();
        c.want_out = false;
        c.state = Conn::State::Down;
    }

    // Counts an error, closes the connection and reopens it after a pause.
    void fail(Conn& c, const std::string& kind, std::string_view detail = {}) {
        error(kind, detail);
        close_conn(c);
        c.retry_at_ns = now_ns() + kReconnectDelayNs;
    }

    void open(Conn& c, uint64_t now) {
        c.fd = ::socket(plan_.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c.fd < 0) return fail(c, "socket: " + std::string(std::strerror(errno)));
        if (plan_.addr.ss_family != AF_UNIX) {
            const int one = 1;
            setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        c.since_ns = now;
        if (::connect(c.fd, reinterpret_cast<const sockaddr*>(&plan_.addr), plan_.addr_len) == 0)
            return established(c);
        if (errno != EINPROGRESS) return fail(c, "connect: " + std::string(std::strerror(errno)));
        c.state = Conn::State::Connecting;
        ctl(c, EPOLL_CTL_ADD, EPOLLOUT);
    }

    void established(Conn& c) {
        ++stats_.connects;
        const int op = c.state == Conn::State::Connecting ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        if (!ctl(c, op, EPOLLIN)) return;
        send_next(c, now_ns());
    }

    const std::string& pick() {
        const std::size_t n = plan_.requests.size();
        if (!plan_.random) {
            const std::size_t i = next_key_;
            next_key_ = next_key_ + 1 == n ? 0 : next_key_ + 1;
            return plan_.requests[i];
        }
        // splitmix64
        uint64_t z = (rng_ += 0x9E3779B97F4A7C15u);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
        return plan_.requests[(z ^ (z >> 31)) % n];
    }

    void send_next(Conn& c, uint64_t now) {
        c.state = Conn::State::Busy;
        c.request = &pick();
        c.sent = 0;
        c.since_ns = now;
        flush(c);
    }

    void flush(Conn& c) {
        while (c.sent < c.request->size()) {
            const ssize_t n =
                ::send(c.fd, c.request->data() + c.sent, c.request->size() - c.sent, MSG_NOSIGNAL);
            if (n > 0) {
                c.sent += static_cast<std::size_t>(n);
            } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!c.want_out && ctl(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT)) c.want_out = true;
                return;
            } else if (errno != EINTR) {
                return fail(c, "send: " + std::string(std::strerror(errno)));
            }
        }
        if (c.want_out && ctl(c, EPOLL_CTL_MOD, EPOLLIN)) c.want_out = false;
    }

    void handle(Conn& c, uint32_t events) {
        if (c.state == Conn::State::Connecting) {
            int err = 0;
            socklen_t len = sizeof err;
            if (getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
            if (err != 0) return fail(c, "connect: " + std::string(std::strerror(err)));
            if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) established(c);
            return;
        }
        if (c.state != Conn::State::Busy) return;
        if ((events & EPOLLOUT) && c.sent < c.request->size()) {
            flush(c);
            if (c.state != Conn::State::Busy) return;
        }
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) readable(c);
    }

    // One read per readiness: a reply is small, so it usually completes in one.
    void readable(Conn& c) {
        char buf[65536];
        const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
            return fail(c, "recv: " + std::string(std::strerror(errno)));
        }
        if (n == 0)
            return fail(c,
                        c.in.empty() ? "connection closed by the server before the reply"
                                     : "connection closed by the server within a reply",
                        c.in);
        c.in.append(buf, static_cast<std::size_t>(n));
        const Parsed p =
            plan_.protocol == Protocol::Socketmap ? parse_socketmap(c.in) : parse_tcp_table(c.in);
        if (p.state == Parsed::State::NeedMore) return;
        if (p.state == Parsed::State::Error) return fail(c, std::string(p.error), p.detail);
        if (c.sent < c.request->size()) return fail(c, "reply before the request was sent", c.in);
        const uint64_t now = now_ns();
        if (now >= plan_.measure_start_ns && now < plan_.end_ns) {
            stats_.latency.record(now - c.since_ns);
            ++stats_.answers[p.kind];
        } else {
            ++stats_.warmup_replies;
        }
        c.in.clear();
        if (plan_.protocol == Protocol::TcpTable && p.kind == 1) {
            ++stats_.reconnects_after_4xx;
            close_conn(c);
            return open(c, now);
        }
        send_next(c, now);
    }

    // Reopens connections whose pause is over; fails requests and connects past the timeout.
    void maintain(uint64_t now) {
        for (auto& c : conns_) {
            switch (c.state) {
                case Conn::State::Down:
                    if (now >= c.retry_at_ns) open(c, now);
                    break;
                case Conn::State::Connecting:
                    if (now - c.since_ns > plan_.timeout_ns) fail(c, "connect: timed out");
                    break;
                case Conn::State::Busy:
                    if (now - c.since_ns > plan_.timeout_ns) fail(c, "no reply within the timeout");
                    break;
            }
        }
    }

    const Plan& plan_;
    std::vector<Conn> conns_;
    Stats stats_;
    int epfd_ = -1;
    std::size_t next_key_ = 0;
    uint64_t rng_ = 0;
};

// ---------------------------------------------------------------------------------------------

double parse_seconds(const std::string& opt, const std::string& v, bool allow_zero) {
    char* end = nullptr;
    errno = 0;
    const double d = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || errno != 0 || !std::isfinite(d) || d < 0 ||
        (!allow_zero && d == 0) || d > 86400)
        usage_error(opt + " wants a number of seconds" + (allow_zero ? "" : " above 0") +
                    " (at most 86400), not \"" + v + "\"");
    return d;
}

long parse_count(const std::string& opt, const std::string& v, long min, long max) {
    char* end = nullptr;
    errno = 0;
    const long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || errno != 0 || n < min || n > max)
        usage_error(opt + " wants a whole number from " + std::to_string(min) + " to " +
                    std::to_string(max) + ", not \"" + v + "\"");
    return n;
}

void read_keys(const std::string& path, std::vector<std::string>& keys) {
    std::ifstream f(path);
    if (!f) usage_error("cannot read --keys " + path + ": " + std::strerror(errno));
    std::string line;
    while (std::getline(f, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty() || line[0] == '#') continue;
        keys.push_back(line);
    }
    if (f.bad()) usage_error("error reading --keys " + path);
}

// The soft limit on open files must cover the connections (plus a few descriptors).
void raise_nofile(int connections) {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    const auto need = static_cast<rlim_t>(connections) + 64;
    if (rl.rlim_cur >= need) return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
        usage_error("--connections " + std::to_string(connections) +
                    " needs more open files than the hard limit (" + std::to_string(rl.rlim_max) +
                    ")");
    rl.rlim_cur = need;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        usage_error(std::string("cannot raise the open-file limit: ") + std::strerror(errno));
}

Plan parse_args(int argc, char** argv) {
    Plan plan;
    std::string protocol;
    std::string connect;
    std::string map_name;
    std::string order = "roundrobin";
    std::vector<std::string> keys;
    bool have_connections = false;
    bool have_duration = false;
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
            if (i + 1 >= argc) usage_error(arg + " needs a value");
            return argv[++i];
        };
        if (arg == "--help" || arg == "-h") {
            usage();
            std::exit(0);
        } else if (arg == "--json") {
            plan.json = true;
        } else if (arg == "--protocol") {
            protocol = next();
        } else if (arg == "--connect") {
            connect = next();
        } else if (arg == "--connections") {
            plan.connections = static_cast<int>(parse_count(arg, next(), 1, 100000));
            have_connections = true;
        } else if (arg == "--duration") {
            plan.duration_s = parse_seconds(arg, next(), false);
            have_duration = true;
        } else if (arg == "--warmup") {
            plan.warmup_s = parse_seconds(arg, next(), true);
        } else if (arg == "--keys") {
            read_keys(next(), keys);
        } else if (arg == "--key") {
            keys.push_back(next());
        } else if (arg == "--map") {
            map_name = next();
        } else if (arg == "--order") {
            order = next();
        } else if (arg == "--seed") {
            plan.seed = static_cast<uint64_t>(parse_count(arg, next(), 0, 0x7fffffffffffffff));
        } else if (arg == "--threads") {
            plan.threads = static_cast<int>(parse_count(arg, next(), 1, 64));
        } else if (arg == "--timeout") {
            plan.timeout_ns =
                static_cast<uint64_t>(parse_seconds(arg, next(), false) * 1'000'000'000.0);
        } else {
            usage_error("unknown argument \"" + arg + "\"");
        }
    }
    if (protocol == "socketmap")
        plan.protocol = Protocol::Socketmap;
    else if (protocol == "tcp_table")
        plan.protocol = Protocol::TcpTable;
    else if (protocol.empty())
        usage_error("--protocol is required (socketmap or tcp_table)");
    else
        usage_error("--protocol must be socketmap or tcp_table, not \"" + protocol + "\"");
    if (connect.empty()) usage_error("--connect HOST:PORT is required");
    auto ep = tlspolicy::parse_endpoint(connect);
    if (!ep) usage_error("--connect " + connect + ": " + ep.error().message);
    if (ep->kind == Endpoint::Kind::Inet && ep->port == 0)
        usage_error("--connect " + connect + ": port 0");
    plan.endpoint = *ep;
    plan.endpoint_text = connect;
    plan.addr_len = tlspolicy::endpoint_sockaddr(plan.endpoint, plan.addr);
    if (!have_connections) usage_error("--connections N is required");
    if (!have_duration) usage_error("--duration SECONDS is required");
    if (plan.threads > plan.connections) usage_error("--threads exceeds --connections");
    if (order == "random")
        plan.random = true;
    else if (order != "roundrobin")
        usage_error("--order must be roundrobin or random, not \"" + order + "\"");
    if (keys.empty()) usage_error("no keys: give --keys FILE or --key KEY");
    if (plan.protocol == Protocol::TcpTable && !map_name.empty())
        usage_error("--map is for socketmap only (tcp_table has no map name)");
    if (map_name.empty()) map_name = "postfix";
    if (map_name.find_first_of(" :") != std::string::npos)
        usage_error("--map NAME must not contain a space or ':'");
    for (const auto& key : keys) {
        std::string req;
        if (plan.protocol == Protocol::Socketmap)
            tlspolicy::netstring_append(req, map_name + " " + key);
        else
            req = "get " + tlspolicy::hex_quote(key, true) + "\n";
        plan.requests.push_back(std::move(req));
    }
    return plan;
}

std::string json_string(std::string_view s) {
    std::string out = "\"";
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += ch;
        } else if (c < 0x20 || c >= 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += ch;
        }
    }
    return out + "\"";
}

std::string fixed(double v, int decimals) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    return buf;
}

double us(uint64_t ns) {
    return static_cast<double>(ns) / 1000.0;
}

void report(const Plan& plan, const Stats& s) {
    const bool sm = plan.protocol == Protocol::Socketmap;
    const std::size_t nkinds = sm ? kSocketmapKinds.size() : kTcpTableKinds.size();
    auto kind_name = [&](std::size_t i) { return sm ? kSocketmapKinds[i] : kTcpTableKinds[i]; };
    const uint64_t replies = s.latency.total();
    const double rate = static_cast<double>(replies) / plan.duration_s;
    uint64_t errors = 0;
    for (const auto& [k, v] : s.errors)
        errors += v;
    struct Pct {
        const char* human;
        const char* json;
        double p;
    };
    const Pct pcts[] = {
        {"p50", "p50", 50}, {"p90", "p90", 90}, {"p99", "p99", 99}, {"p99.9", "p99_9", 99.9}};

    std::string line =
        std::string("load: ") + (sm ? "socketmap " : "tcp_table ") + plan.endpoint_text + ", " +
        std::to_string(plan.connections) + " connections, " + std::to_string(plan.threads) +
        (plan.threads == 1 ? " thread, " : " threads, ") + fixed(plan.duration_s, 1) + " s after " +
        fixed(plan.warmup_s, 1) + " s warm-up: " + fixed(rate, 0) + " req/s (" +
        std::to_string(replies) + " replies); latency us";
    for (const auto& p : pcts)
        line += std::string(" ") + p.human + " " + fixed(us(s.latency.percentile(p.p)), 1);
    line += " max " + fixed(us(s.latency.max()), 1) + "; answers";
    for (std::size_t i = 0; i < nkinds; ++i)
        line += " " + std::string(kind_name(i)) + "=" + std::to_string(s.answers[i]);
    line += "; errors " + std::to_string(errors);
    if (errors) {
        line += " (";
        bool first = true;
        for (const auto& [k, v] : s.errors) {
            line += (first ? "" : ", ") + k + " x" + std::to_string(v);
            if (auto e = s.error_examples.find(k); e != s.error_examples.end())
                line += " e.g. \"" + e->second + "\"";
            first = false;
        }
        line += ")";
    }
    if (s.reconnects_after_4xx)
        line += "; reconnects after 4xx " + std::to_string(s.reconnects_after_4xx);
    std::fprintf(plan.json ? stderr : stdout, "%s\n", line.c_str());

    if (!plan.json) return;
    std::string j = "{\"protocol\":";
    j += json_string(sm ? "socketmap" : "tcp_table");
    j += ",\"connect\":" + json_string(plan.endpoint_text);
    j += ",\"connections\":" + std::to_string(plan.connections);
    j += ",\"threads\":" + std::to_string(plan.threads);
    j += ",\"keys\":" + std::to_string(plan.requests.size());
    j += ",\"order\":" + json_string(plan.random ? "random" : "roundrobin");
    j += ",\"warmup_s\":" + fixed(plan.warmup_s, 3);
    j += ",\"duration_s\":" + fixed(plan.duration_s, 3);
    j += ",\"requests\":" + std::to_string(replies);
    j += ",\"requests_per_s\":" + fixed(rate, 1);
    j += ",\"latency_us\":{";
    for (const auto& p : pcts)
        j += std::string("\"") + p.json + "\":" + fixed(us(s.latency.percentile(p.p)), 1) + ",";
    j += "\"max\":" + fixed(us(s.latency.max()), 1) +
         ",\"mean\":" + fixed(s.latency.mean() / 1000.0, 1) + "}";
    j += ",\"answers\":{";
    for (std::size_t i = 0; i < nkinds; ++i)
        j += (i ? "," : "") + json_string(kind_name(i)) + ":" + std::to_string(s.answers[i]);
    j += "},\"errors\":" + std::to_string(errors) + ",\"error_kinds\":{";
    bool first = true;
    for (const auto& [k, v] : s.errors) {
        j += (first ? "" : ",") + json_string(k) + ":" + std::to_string(v);
        first = false;
    }
    j += "},\"error_examples\":{";
    first = true;
    for (const auto& [k, v] : s.error_examples) {
        j += (first ? "" : ",") + json_string(k) + ":" + json_string(v);
        first = false;
    }
    j += "},\"warmup_replies\":" + std::to_string(s.warmup_replies);
    j += ",\"connects\":" + std::to_string(s.connects);
    j += ",\"reconnects_after_4xx\":" + std::to_string(s.reconnects_after_4xx);
    j += ",\"in_flight_at_end\":" + std::to_string(s.in_flight_at_end) + "}";
    std::printf("%s\n", j.c_str());
}

}  // namespace

int main(int argc, char** argv) {
    Plan plan = parse_args(argc, argv);
    raise_nofile(plan.connections);

    std::vector<Worker> workers;
    workers.reserve(static_cast<std::size_t>(plan.threads));
    for (int t = 0; t < plan.threads; ++t)
        workers.emplace_back(
            plan, t,
            plan.connections / plan.threads + (t < plan.connections % plan.threads ? 1 : 0));
    const uint64_t start = now_ns();
    plan.measure_start_ns = start + static_cast<uint64_t>(plan.warmup_s * 1e9);
    plan.end_ns = plan.measure_start_ns + static_cast<uint64_t>(plan.duration_s * 1e9);
    if (plan.threads == 1) {
        workers[0].run();
    } else {
        std::vector<std::thread> threads;
        for (auto& w : workers)
            threads.emplace_back([&w] { w.run(); });
        for (auto& t : threads)
            t.join();
    }

    Stats total;
    for (auto& w : workers)
        total.merge(w.stats());
    report(plan, total);
    return total.latency.total() > 0 ? 0 : 1;
}
