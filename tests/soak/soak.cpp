// soak: the soak-test driver (issue 9; docs/soak.md). It keeps C connections open to a running
// tlspolicyd (a share on its socketmap listener, the rest on its tcp_table listener), each
// strictly request -> response, until N requests have been answered, and checks every reply
// exactly. The traffic is a mix of
//   cached       keys of the table file (`key<TAB>answer`, answer "OK <policy>", "NOTFOUND" or
//                "TEMP"; soak.sh writes it from tests/scenarios/scenarios.toml), some of them
//                in other legal encodings (tcp_table: CRLF, every byte %xx in lower case)
//   uncached     a new name under --uncached-suffix for every request (the world answers
//                secure NXDOMAIN: NOTFOUND after real DNS work; they fill the cache, whose
//                evictions are then part of the run)
//   invalid-key  keys the daemon answers "not found" without a lookup: parent-domain probes,
//                IP literals, next hops, bad names, a key of 9000 bytes
//   bad-request  requests answered PERM (socketmap) / 400 (tcp_table) on a connection that
//                goes on: an empty netstring, no "NAME KEY", put, unknown commands, bad %XX
//   framing      framing errors after which the daemon closes the connection (socketmap: bad
//                or too long netstrings, also right after a good request, which is answered
//                first; tcp_table: a request line of 4096 bytes); then the driver reconnects
// and samples the daemon's resident memory (VmRSS of --pid) once a second.
//
//   soak --socketmap HOST:PORT --tcp-table HOST:PORT --table FILE [--pid PID]
//        [--connections C] [--requests N] [--warmup N] [options, see usage()]
//
// Exit status: 0 when every reply was right, no connection failed, the daemon stayed up and
// its memory stayed flat after the warm-up (docs/soak.md: the threshold); 1 otherwise; 2 on a
// usage error.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
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
#include <vector>

#include "util/endpoint.h"
#include "util/hexquote.h"
#include "util/netstring.h"

namespace {

using tlspolicy::Endpoint;

enum class Proto { Socketmap, TcpTable };
enum class Category { Cached, Uncached, InvalidKey, BadRequest, Framing };
constexpr std::array<const char*, 5> kCategoryNames = {"cached", "uncached", "invalid-key",
                                                       "bad-request", "framing"};

constexpr std::size_t kMaxSocketmapReply = 100000;  // Postfix's socketmap_max_reply_size
constexpr std::size_t kMaxTcpTableReply = 4096;     // dict_tcp: a reply line with its newline
constexpr std::size_t kMaxReason = 103;             // 100 characters, then "..." when cut
constexpr std::size_t kMaxPrintedWrong = 10;

uint64_t now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

double seconds(uint64_t ns) {
    return static_cast<double>(ns) / 1e9;
}

[[noreturn]] void usage_error(const std::string& message) {
    std::fprintf(stderr, "soak: %s (soak --help for usage)\n", message.c_str());
    std::exit(2);
}

void usage() {
    std::puts(
        "usage: soak --socketmap HOST:PORT --tcp-table HOST:PORT --table FILE [--pid PID]\n"
        "            [--connections C] [--requests N] [--warmup N] [--socketmap-share PCT]\n"
        "            [--uncached PCT] [--invalid PCT] [--bad PCT] [--framing PCT]\n"
        "            [--uncached-in-flight N] [--uncached-suffix DOMAIN] [--map NAME] [--seed N]\n"
        "            [--timeout SECONDS]\n"
        "            [--rss-limit-mib MIB] [--rss-limit-percent PCT] [--no-rss-check]\n"
        "            [--rss-log FILE] [--progress SECONDS]\n"
        "\n"
        "  --socketmap, --tcp-table  the daemon's listeners (IPv4:PORT, [IPv6]:PORT, unix:/path)\n"
        "  --table FILE      lines KEY<TAB>ANSWER, ANSWER \"OK <policy>\", \"NOTFOUND\" or "
        "\"TEMP\"\n"
        "  --pid PID         the daemon: VmRSS sampled every second, its exit is a failure\n"
        "  --connections C   persistent connections, one request outstanding on each (1000)\n"
        "  --requests N      requests answered before the run ends (200000)\n"
        "  --warmup N        requests before the memory baseline is taken (N/4)\n"
        "  --socketmap-share PCT  connections speaking socketmap, the rest tcp_table (50)\n"
        "  --uncached PCT    requests for a new name under --uncached-suffix (5)\n"
        "  --invalid PCT     keys answered not found without a lookup (1)\n"
        "  --bad PCT         malformed requests answered PERM / 400 (1)\n"
        "  --framing PCT     framing errors: the daemon closes, the driver reconnects (0.2)\n"
        "  --uncached-in-flight N  at most N uncached names outstanding; when that many are,\n"
        "                    a cached key goes instead (32: the world's DNS relay stays in its\n"
        "                    capacity, docs/soak.md)\n"
        "  --uncached-suffix names u<N>.<run>.SUFFIX must be answered NOTFOUND\n"
        "                    (nxdomain-soak.test: the test world's secure NXDOMAIN)\n"
        "  --map NAME        socketmap map name (postfix)\n"
        "  --seed N          traffic mix (1)\n"
        "  --timeout S       longest wait for a reply, a close or a connect (30)\n"
        "  --rss-limit-mib, --rss-limit-percent  the run fails when VmRSS at the end exceeds\n"
        "                    VmRSS at the end of the warm-up by more than both (8 MiB, 10%)\n"
        "  --no-rss-check    report memory, do not judge it (sanitizer builds)\n"
        "  --rss-log FILE    every sample: seconds, requests answered, VmRSS KiB\n"
        "  --progress S      a progress line every S seconds (10; 0: none)\n"
        "\n"
        "Exit status: 0 pass, 1 fail (a wrong reply, a failed connection, the daemon gone, memory\n"
        "growth), 2 usage.");
}

std::string excerpt(std::string_view s, std::size_t max = 80) {
    std::string out;
    for (std::size_t i = 0; i < s.size() && i < max; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out += static_cast<char>(c);
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02X", c);
            out += buf;
        }
    }
    if (s.size() > max) out += "...(" + std::to_string(s.size()) + " bytes)";
    return out;
}

// ---------------------------------------------------------------------------------------------
// What a reply must be.

struct Want {
    enum class Kind { Found, NotFound, Temp, Perm } kind = Kind::NotFound;
    std::string policy;  // Found

    std::string describe(Proto p) const {
        switch (kind) {
            case Kind::Found:
                return p == Proto::Socketmap ? "OK " + policy : "200 " + policy;
            case Kind::NotFound:
                return p == Proto::Socketmap ? "NOTFOUND " : "500 <reason>";
            case Kind::Temp:
                return p == Proto::Socketmap ? "TEMP <reason>" : "400 <reason>";
            case Kind::Perm:
                return p == Proto::Socketmap ? "PERM <reason>" : "400 <reason>";
        }
        return "?";
    }
};

Want parse_answer(const std::string& answer, const std::string& where) {
    if (answer == "NOTFOUND") return {Want::Kind::NotFound, {}};
    if (answer == "TEMP") return {Want::Kind::Temp, {}};
    if (answer.rfind("OK ", 0) == 0 && answer.size() > 3)
        return {Want::Kind::Found, answer.substr(3)};
    usage_error(where + ": answer \"" + answer + "\" is not OK <policy>, NOTFOUND or TEMP");
}

// A reason as the protocol allows it: printable ASCII, not empty, at most 100 characters
// (then "...").
bool reason_ok(std::string_view r) {
    if (r.empty() || r.size() > kMaxReason) return false;
    return std::all_of(r.begin(), r.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

struct Check {
    enum class State { NeedMore, Right, Wrong } state = State::NeedMore;
    std::size_t consumed = 0;
    std::string why;  // Wrong
};

Check check_socketmap(std::string_view in, const Want& want) {
    const auto d = tlspolicy::netstring_decode(in, kMaxSocketmapReply);
    using S = tlspolicy::NetstringDecode::State;
    if (d.state == S::NeedMore) return {};
    if (d.state != S::Complete) return {Check::State::Wrong, 0, "reply is not a netstring"};
    const std::string_view p = d.payload;
    bool ok = false;
    switch (want.kind) {
        case Want::Kind::Found:
            ok = p.size() == want.policy.size() + 3 && p.starts_with("OK ") &&
                 p.substr(3) == want.policy;
            break;
        case Want::Kind::NotFound:
            ok = p == "NOTFOUND ";
            break;
        case Want::Kind::Temp:
            ok = p.starts_with("TEMP ") && reason_ok(p.substr(5));
            break;
        case Want::Kind::Perm:
            ok = p.starts_with("PERM ") && reason_ok(p.substr(5));
            break;
    }
    if (!ok) return {Check::State::Wrong, d.consumed, "got \"" + excerpt(p, 200) + "\""};
    return {Check::State::Right, d.consumed, {}};
}

Check check_tcp_table(std::string_view in, const Want& want) {
    const auto nl = in.find('\n');
    if (nl == std::string_view::npos) {
        if (in.size() >= kMaxTcpTableReply)
            return {Check::State::Wrong, 0, "reply line longer than 4096 bytes"};
        return {};
    }
    if (nl + 1 > kMaxTcpTableReply)
        return {Check::State::Wrong, 0, "reply line longer than 4096 bytes"};
    const std::string_view line = in.substr(0, nl);
    const std::size_t consumed = nl + 1;
    auto wrong = [&] {
        return Check{Check::State::Wrong, consumed, "got \"" + excerpt(line, 200) + "\""};
    };
    if (line.size() < 4 || line[3] != ' ') return wrong();
    const auto text = tlspolicy::hex_unquote(line.substr(4));
    if (!text) return wrong();
    const std::string_view code = line.substr(0, 3);
    bool ok = false;
    switch (want.kind) {
        case Want::Kind::Found:
            ok = code == "200" && *text == want.policy;
            break;
        case Want::Kind::NotFound:
            ok = code == "500" && reason_ok(*text);
            break;
        case Want::Kind::Temp:
        case Want::Kind::Perm:
            ok = code == "400" && reason_ok(*text);
            break;
    }
    if (!ok) return wrong();
    return {Check::State::Right, consumed, {}};
}

// ---------------------------------------------------------------------------------------------
// Requests.

struct Row {
    std::string key;
    Want want;
};

// One request: the bytes, the replies it must get in order, and whether the daemon must then
// close the connection.
struct Request {
    std::string bytes;
    std::vector<Want> replies;
    bool close_after = false;
    Category category = Category::Cached;
    std::string label;  // what it is, for reports
};

std::string lower_hex_all(std::string_view key) {
    std::string out;
    for (const char c : key) {
        char buf[4];
        std::snprintf(buf, sizeof buf, "%%%02x", static_cast<unsigned char>(c));
        out += buf;
    }
    return out;
}

struct Mix {
    double uncached = 5, invalid = 1, bad = 1, framing = 0.2;  // percent
};

class Traffic {
  public:
    Traffic(std::vector<Row> rows, std::string map, std::string uncached_suffix, uint64_t seed,
            Mix mix)
        : rows_(std::move(rows)),
          map_(std::move(map)),
          suffix_(std::move(uncached_suffix)),
          rng_(seed * 0x9E3779B97F4A7C15u + 1),
          mix_(mix) {
        run_ = "s" + std::to_string(seed) + "-" + std::to_string(getpid());
        // Keys answered "not found" without any lookup (docs/protocols.md, Keys).
        const std::string long_name = [] {
            std::string s;
            for (int i = 0; i < 5; ++i)
                s += std::string(60, static_cast<char>('a' + i)) + ".";
            return s + "test";  // 309 bytes: longer than 253
        }();
        invalid_keys_ = {".dane-ee.test",
                         ".test",
                         ".x",
                         "[192.0.2.1]",
                         "192.0.2.1",
                         "[IPv6:2001:db8::1]",
                         "[mx.dane-ee.test]",
                         "[mx.dane-ee.test]:25",
                         "dane-ee.test:25",
                         "localhost",
                         "xn--zz.test",
                         std::string(64, 'a') + ".test",
                         long_name,
                         "exa mple.test",
                         "bad_name!.test",
                         std::string("x\x01y.test"),
                         std::string("\xff\xfe.test"),
                         ""};
    }

    // The next request; `uncached_ok` false when the uncached names in flight are at their
    // limit (a cached key is sent instead).
    const Request& next(Proto p, bool uncached_ok) {
        const double r = uniform() * 100;
        double edge = mix_.framing;
        if (r < edge) return framing(p);
        if (r < (edge += mix_.bad)) return bad(p);
        if (r < (edge += mix_.invalid)) return invalid(p);
        if (r < (edge += mix_.uncached) && uncached_ok) return uncached(p);
        return cached(p);
    }

  private:
    uint64_t next_u64() {  // splitmix64
        uint64_t z = (rng_ += 0x9E3779B97F4A7C15u);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
        return z ^ (z >> 31);
    }
    double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
    std::size_t below(std::size_t n) { return static_cast<std::size_t>(next_u64() % n); }

    std::string sm(std::string_view key) const {
        std::string out;
        tlspolicy::netstring_append(out, map_ + " " + std::string(key));
        return out;
    }
    static std::string tt(std::string_view key) {
        return "get " + tlspolicy::hex_quote(key, true) + "\n";
    }

    Request& fresh(Category c, std::string label) {
        req_ = Request{};
        req_.category = c;
        req_.label = std::move(label);
        return req_;
    }

    const Request& cached(Proto p) {
        const Row& row = rows_[below(rows_.size())];
        Request& r = fresh(Category::Cached, row.key);
        r.replies = {row.want};
        if (p == Proto::Socketmap) {
            r.bytes = sm(row.key);
        } else {
            const std::size_t form = below(10);
            if (form == 0) {
                r.bytes = "get " + tlspolicy::hex_quote(row.key, true) + "\r\n";
                r.label += " (CRLF)";
            } else if (form == 1) {
                r.bytes = "get " + lower_hex_all(row.key) + "\n";
                r.label += " (every byte %xx)";
            } else {
                r.bytes = tt(row.key);
            }
        }
        return r;
    }

    const Request& uncached(Proto p) {
        const std::string key = "u" + std::to_string(++uncached_seq_) + "." + run_ + "." + suffix_;
        Request& r = fresh(Category::Uncached, key);
        r.replies = {{Want::Kind::NotFound, {}}};
        r.bytes = p == Proto::Socketmap ? sm(key) : tt(key);
        return r;
    }

    const Request& invalid(Proto p) {
        // One more: a key as long as the protocol allows (socketmap 10000 bytes of "NAME KEY",
        // tcp_table 4096 bytes of request line).
        static const std::string long_sm(9000, 'k'), long_tt(4000, 'k');
        const std::size_t i = below(invalid_keys_.size() + 1);
        const std::string& key = i < invalid_keys_.size() ? invalid_keys_[i]
                                 : p == Proto::Socketmap  ? long_sm
                                                          : long_tt;
        Request& r = fresh(Category::InvalidKey, excerpt(key, 40));
        r.replies = {{Want::Kind::NotFound, {}}};
        r.bytes = p == Proto::Socketmap ? sm(key) : tt(key);
        return r;
    }

    const Request& bad(Proto p) {
        Request& r = fresh(Category::BadRequest, "");
        r.replies = {{Want::Kind::Perm, {}}};
        if (p == Proto::Socketmap) {
            static const std::array<std::string, 4> payloads = {"", "postfix", " dane-ee.test",
                                                                "nospace"};
            const std::string& payload = payloads[below(payloads.size())];
            tlspolicy::netstring_append(r.bytes, payload);
        } else {
            static const std::array<std::string, 6> lines = {"put dane-ee.test dane-only\n",
                                                             "foo\n",
                                                             "\n",
                                                             "get %zz.test\n",
                                                             "get dane-ee.tes%7\n",
                                                             "GETX dane-ee.test\r\n"};
            r.bytes = lines[below(lines.size())];
        }
        r.label = excerpt(r.bytes, 40);
        return r;
    }

    const Request& framing(Proto p) {
        Request& r = fresh(Category::Framing, "");
        r.close_after = true;
        if (p == Proto::TcpTable) {
            // 4096 bytes without a newline: longer than 4096 with it. Exactly what the daemon
            // reads before it gives up, so that nothing unread turns its close into a reset.
            r.bytes = "get " + std::string(4092, 'a');
            r.replies = {{Want::Kind::Perm, {}}};
            r.label = "get + 4092 bytes, no newline";
            return r;
        }
        static const std::array<std::string, 6> garbage = {
            "10001:", "99999999999999999999:", "05:hello,", "5:helloX", "abc,", ":,"};
        const std::size_t pick = below(garbage.size() + 1);
        if (pick < garbage.size()) {
            r.bytes = garbage[pick];
            r.label = excerpt(r.bytes, 40);
            return r;
        }
        // A good request and a bad netstring in one write: the first is answered, then close.
        const Row& row = rows_[below(rows_.size())];
        r.bytes = sm(row.key) + "x,";
        r.replies = {row.want};
        r.label = row.key + " then \"x,\"";
        return r;
    }

    std::vector<Row> rows_;
    std::string map_;
    std::string suffix_;
    std::string run_;
    uint64_t rng_;
    Mix mix_;
    uint64_t uncached_seq_ = 0;
    std::vector<std::string> invalid_keys_;
    Request req_;
};

// ---------------------------------------------------------------------------------------------

struct Options {
    Endpoint socketmap, tcp_table;
    std::string table;
    pid_t pid = 0;
    int connections = 1000;
    uint64_t requests = 200000;
    uint64_t warmup = 0;  // 0: requests / 4
    double socketmap_share = 50;
    Mix mix;
    std::string uncached_suffix = "nxdomain-soak.test";
    int uncached_in_flight = 32;
    std::string map = "postfix";
    uint64_t seed = 1;
    uint64_t timeout_ns = 30'000'000'000u;
    double rss_limit_mib = 8;
    double rss_limit_percent = 10;
    bool rss_check = true;
    std::string rss_log;
    double progress_s = 10;
};

struct Wrong {
    int conn;
    Proto proto;
    std::string category, request, got, want;
};

// Resident memory of a process in KiB; -1 when it is gone (or a zombie).
long rss_kib(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    if (!f) return -1;
    std::string line;
    long rss = -1;
    bool zombie = false;
    while (std::getline(f, line)) {
        if (line.rfind("State:", 0) == 0)
            zombie = line.find('Z') != std::string::npos || line.find('X') != std::string::npos;
        else if (line.rfind("VmRSS:", 0) == 0)
            rss = std::strtol(line.c_str() + 6, nullptr, 10);
    }
    return zombie ? -1 : rss;
}

class Soak {
  public:
    Soak(const Options& o, Traffic& traffic) : o_(o), traffic_(traffic) {
        endpoint_addr(o.socketmap, sm_addr_, sm_len_);
        endpoint_addr(o.tcp_table, tt_addr_, tt_len_);
        conns_.resize(static_cast<std::size_t>(o.connections));
        const auto n_sm =
            static_cast<std::size_t>(std::llround(o.connections * o.socketmap_share / 100.0));
        for (std::size_t i = 0; i < conns_.size(); ++i)
            conns_[i].proto = i < n_sm ? Proto::Socketmap : Proto::TcpTable;
        warmup_ = o.warmup ? o.warmup : o.requests / 4;
    }

    int run();

  private:
    struct Conn {
        enum class State { Down, Connecting, Busy, AwaitClose } state = State::Down;
        Proto proto = Proto::Socketmap;
        int fd = -1;
        Request req;
        std::size_t sent = 0;
        std::size_t replies_seen = 0;
        bool want_out = false;
        bool uncached = false;  // counted in uncached_in_flight_
        std::string in;
        uint64_t since_ns = 0;
    };

    static void endpoint_addr(const Endpoint& ep, sockaddr_storage& addr, socklen_t& len) {
        len = tlspolicy::endpoint_sockaddr(ep, addr);
    }

    std::size_t id(const Conn& c) const { return static_cast<std::size_t>(&c - conns_.data()); }

    void error(const std::string& kind, Conn& c, std::string_view detail = {}) {
        ++errors_[kind];
        if (!error_examples_.count(kind))
            error_examples_[kind] = "connection " + std::to_string(id(c)) + " (" +
                                    (c.proto == Proto::Socketmap ? "socketmap" : "tcp_table") +
                                    "), request " + excerpt(c.req.label, 80) +
                                    (detail.empty() ? "" : ": " + excerpt(detail, 120));
    }

    void wrong(Conn& c, const std::string& got, const std::string& want) {
        ++wrong_;
        if (wrongs_.size() < kMaxPrintedWrong)
            wrongs_.push_back({static_cast<int>(id(c)), c.proto,
                               kCategoryNames[static_cast<std::size_t>(c.req.category)],
                               excerpt(c.req.bytes, 120), got, want});
    }

    bool ctl(Conn& c, int op, uint32_t events) {
        epoll_event ev{};
        ev.events = events;
        ev.data.u64 = id(c);
        if (epoll_ctl(epfd_, op, c.fd, &ev) == 0) return true;
        error("epoll_ctl: " + std::string(std::strerror(errno)), c);
        close_conn(c);
        return false;
    }

    void close_conn(Conn& c) {
        if (c.fd >= 0) ::close(c.fd);
        c.fd = -1;
        c.in.clear();
        c.want_out = false;
        c.state = Conn::State::Down;
    }

    // The request in progress failed (counted by the caller): it is not retried; the
    // connection is reopened.
    void drop(Conn& c) {
        fail_request(c);
        close_conn(c);
        open(c);
    }

    void open(Conn& c) {
        if (stop_) return;
        const auto& addr = c.proto == Proto::Socketmap ? sm_addr_ : tt_addr_;
        const socklen_t len = c.proto == Proto::Socketmap ? sm_len_ : tt_len_;
        c.fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c.fd < 0) {
            error("socket: " + std::string(std::strerror(errno)), c);
            stop_ = true;
            return;
        }
        if (addr.ss_family != AF_UNIX) {
            const int one = 1;
            setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        c.since_ns = now_ns();
        if (::connect(c.fd, reinterpret_cast<const sockaddr*>(&addr), len) == 0) {
            if (!ctl(c, EPOLL_CTL_ADD, EPOLLIN)) return;
            return established(c, false);
        }
        if (errno != EINPROGRESS) {
            error("connect: " + std::string(std::strerror(errno)), c);
            close_conn(c);
            c.since_ns = now_ns();  // retried by maintain() after a second
            return;
        }
        c.state = Conn::State::Connecting;
        ctl(c, EPOLL_CTL_ADD, EPOLLOUT);
    }

    // `registered_out`: the socket waits for EPOLLOUT (a connect in progress) and is switched
    // to EPOLLIN.
    void established(Conn& c, bool registered_out) {
        ++connects_;
        if (registered_out && !ctl(c, EPOLL_CTL_MOD, EPOLLIN)) return;
        c.want_out = false;
        send_next(c);
    }

    void send_next(Conn& c) {
        if (issued_ >= o_.requests || stop_) {
            c.state = Conn::State::Busy;  // idle; nothing more to send
            c.req = Request{};
            c.sent = 0;
            c.replies_seen = 0;
            done_conn(c);
            return;
        }
        ++issued_;
        c.req = traffic_.next(c.proto, uncached_in_flight_ < o_.uncached_in_flight);
        if (c.req.category == Category::Uncached) {
            c.uncached = true;
            ++uncached_in_flight_;
        }
        ++by_category_[static_cast<std::size_t>(c.req.category)];
        c.sent = 0;
        c.replies_seen = 0;
        c.since_ns = now_ns();
        c.state = c.req.replies.empty() ? Conn::State::AwaitClose : Conn::State::Busy;
        flush(c);
    }

    // A connection with nothing more to do: closed (by us, after the run).
    void done_conn(Conn& c) {
        close_conn(c);
        c.state = Conn::State::Down;
        c.since_ns = UINT64_MAX;  // never reopened
        ++idle_conns_;
    }

    void flush(Conn& c) {
        while (c.sent < c.req.bytes.size()) {
            const ssize_t n = ::send(c.fd, c.req.bytes.data() + c.sent, c.req.bytes.size() - c.sent,
                                     MSG_NOSIGNAL);
            if (n > 0) {
                c.sent += static_cast<std::size_t>(n);
            } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                if (!c.want_out && ctl(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT)) c.want_out = true;
                return;
            } else if (n < 0 && errno != EINTR) {
                if (c.state == Conn::State::AwaitClose && (errno == EPIPE || errno == ECONNRESET))
                    return;  // the daemon already closed: read the EOF
                error("send: " + std::string(std::strerror(errno)), c);
                return drop(c);
            }
        }
        if (c.want_out && ctl(c, EPOLL_CTL_MOD, EPOLLIN)) c.want_out = false;
    }

    void handle(Conn& c, uint32_t events) {
        if (c.state == Conn::State::Connecting) {
            int err = 0;
            socklen_t len = sizeof err;
            if (getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
            if (err != 0) {
                error("connect: " + std::string(std::strerror(err)), c);
                close_conn(c);
                c.since_ns = now_ns();
                return;
            }
            if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) established(c, true);
            return;
        }
        if (c.fd < 0) return;
        if ((events & EPOLLOUT) && c.sent < c.req.bytes.size()) {
            flush(c);
            if (c.fd < 0) return;
        }
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) readable(c);
    }

    // The request in progress ended (answered or failed).
    void release(Conn& c) {
        if (c.uncached) --uncached_in_flight_;
        c.uncached = false;
    }

    void fail_request(Conn& c) {
        ++failed_requests_;
        release(c);
    }

    void complete(Conn& c) {
        release(c);
        const uint64_t t = now_ns();
        max_latency_ns_ = std::max(max_latency_ns_, t - c.since_ns);
        ++completed_;
        if (completed_ == warmup_) end_warmup(t);
    }

    void readable(Conn& c) {
        char buf[65536];
        const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
            if (c.state == Conn::State::AwaitClose && errno == ECONNRESET && c.in.empty()) {
                ++resets_on_close_;
                return closed_as_expected(c);
            }
            error("recv: " + std::string(std::strerror(errno)), c, c.in);
            return drop(c);
        }
        if (n == 0) {
            if (c.state == Conn::State::AwaitClose && c.in.empty()) return closed_as_expected(c);
            if (c.state == Conn::State::AwaitClose) {
                wrong(c, "bytes after the replies, then close: \"" + excerpt(c.in) + "\"",
                      "the connection closed");
                fail_request(c);
                close_conn(c);
                return open(c);
            }
            error(c.in.empty() ? "connection closed by the daemon before the reply"
                               : "connection closed by the daemon within a reply",
                  c, c.in);
            return drop(c);
        }
        c.in.append(buf, static_cast<std::size_t>(n));
        while (c.state == Conn::State::Busy && !c.in.empty()) {
            const Want& want = c.req.replies[c.replies_seen];
            const Check ch = c.proto == Proto::Socketmap ? check_socketmap(c.in, want)
                                                         : check_tcp_table(c.in, want);
            if (ch.state == Check::State::NeedMore) return;
            if (ch.state == Check::State::Wrong) {
                wrong(c, ch.why, want.describe(c.proto));
                // The stream cannot be trusted any more: start again on a new connection.
                fail_request(c);
                close_conn(c);
                return open(c);
            }
            ++reply_kinds_[c.proto == Proto::Socketmap ? 0 : 1]
                          [static_cast<std::size_t>(want.kind)];
            c.in.erase(0, ch.consumed);
            if (++c.replies_seen < c.req.replies.size()) continue;
            if (c.req.close_after) {
                c.state = Conn::State::AwaitClose;
                break;
            }
            if (!c.in.empty()) {
                wrong(c, "bytes after the reply: \"" + excerpt(c.in) + "\"", "one reply");
                fail_request(c);
                close_conn(c);
                return open(c);
            }
            complete(c);
            return send_next(c);
        }
        if (c.state == Conn::State::AwaitClose && !c.in.empty()) {
            wrong(c, "bytes where the daemon should have closed: \"" + excerpt(c.in) + "\"",
                  "the connection closed");
            fail_request(c);
            close_conn(c);
            return open(c);
        }
    }

    void closed_as_expected(Conn& c) {
        complete(c);
        ++reconnects_;
        close_conn(c);
        open(c);
    }

    void maintain(uint64_t now) {
        for (auto& c : conns_) {
            switch (c.state) {
                case Conn::State::Down:
                    // A connect that failed: again after a second.
                    if (c.since_ns != UINT64_MAX && now - c.since_ns > 1'000'000'000u) open(c);
                    break;
                case Conn::State::Connecting:
                    if (now - c.since_ns > o_.timeout_ns) {
                        error("connect: no answer within the timeout", c);
                        close_conn(c);
                        c.since_ns = now;
                    }
                    break;
                case Conn::State::Busy:
                    if (now - c.since_ns > o_.timeout_ns) {
                        error("no reply within the timeout", c, c.in);
                        drop(c);
                    }
                    break;
                case Conn::State::AwaitClose:
                    if (now - c.since_ns > o_.timeout_ns) {
                        error("daemon did not close after a framing error", c, c.in);
                        drop(c);
                    }
                    break;
            }
        }
    }

    void sample(uint64_t now) {
        if (o_.pid <= 0) return;
        const long rss = rss_kib(o_.pid);
        if (rss < 0) {
            daemon_gone_ = true;
            stop_ = true;
            return;
        }
        if (rss_start_ < 0) rss_start_ = rss;
        rss_last_ = rss;
        if (warm_) rss_max_after_ = std::max(rss_max_after_, rss);
        rss_max_ = std::max(rss_max_, rss);
        if (rss_log_)
            std::fprintf(rss_log_, "%.1f %llu %ld\n", seconds(now - start_ns_),
                         static_cast<unsigned long long>(completed_), rss);
    }

    void end_warmup(uint64_t now) {
        warm_ = true;
        warm_ns_ = now;
        if (o_.pid > 0) {
            const long rss = rss_kib(o_.pid);
            if (rss >= 0) rss_warm_ = rss_max_after_ = rss;
        }
        std::printf("warm-up done: %llu requests in %.1f s, VmRSS %.1f MiB\n",
                    static_cast<unsigned long long>(completed_), seconds(now - start_ns_),
                    rss_warm_ / 1024.0);
        std::fflush(stdout);
    }

    void progress(uint64_t now) {
        const double t = seconds(now - start_ns_);
        std::printf(
            "  %6.1f s  %9llu requests  %7.0f req/s  VmRSS %6.1f MiB  wrong %llu  "
            "errors %llu\n",
            t, static_cast<unsigned long long>(completed_),
            static_cast<double>(completed_ - progress_done_) /
                std::max(1e-9, seconds(now - progress_ns_)),
            rss_last_ / 1024.0, static_cast<unsigned long long>(wrong_),
            static_cast<unsigned long long>(error_count()));
        std::fflush(stdout);
        progress_done_ = completed_;
        progress_ns_ = now;
    }

    uint64_t error_count() const {
        uint64_t n = 0;
        for (const auto& [k, v] : errors_)
            n += v;
        return n;
    }

    bool finished() const {
        return idle_conns_ == conns_.size() ||
               (stop_ && std::none_of(conns_.begin(), conns_.end(),
                                      [](const Conn& c) { return c.fd >= 0; }));
    }

    int report(uint64_t end);

    const Options& o_;
    Traffic& traffic_;
    sockaddr_storage sm_addr_{}, tt_addr_{};
    socklen_t sm_len_ = 0, tt_len_ = 0;
    std::vector<Conn> conns_;
    int epfd_ = -1;
    uint64_t warmup_ = 0;
    uint64_t issued_ = 0, completed_ = 0, failed_requests_ = 0;
    int uncached_in_flight_ = 0;
    uint64_t wrong_ = 0, connects_ = 0, reconnects_ = 0, resets_on_close_ = 0;
    std::size_t idle_conns_ = 0;
    std::array<uint64_t, 5> by_category_{};
    uint64_t reply_kinds_[2][4] = {};
    std::map<std::string, uint64_t> errors_;
    std::map<std::string, std::string> error_examples_;
    std::vector<Wrong> wrongs_;
    uint64_t max_latency_ns_ = 0;
    bool stop_ = false, daemon_gone_ = false, warm_ = false;
    uint64_t start_ns_ = 0, warm_ns_ = 0, progress_ns_ = 0, progress_done_ = 0;
    long rss_start_ = -1, rss_warm_ = -1, rss_last_ = -1, rss_max_ = -1, rss_max_after_ = -1;
    FILE* rss_log_ = nullptr;
};

int Soak::run() {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) usage_error(std::string("epoll_create1: ") + std::strerror(errno));
    if (!o_.rss_log.empty()) {
        rss_log_ = std::fopen(o_.rss_log.c_str(), "w");
        if (!rss_log_) usage_error("cannot write --rss-log " + o_.rss_log);
        std::fprintf(rss_log_, "# seconds requests vmrss_kib\n");
    }
    start_ns_ = progress_ns_ = now_ns();
    sample(start_ns_);
    std::printf(
        "soak: %d connections (%zu socketmap, %zu tcp_table), %llu requests, warm-up %llu\n",
        o_.connections,
        static_cast<std::size_t>(
            std::count_if(conns_.begin(), conns_.end(),
                          [](const Conn& c) { return c.proto == Proto::Socketmap; })),
        static_cast<std::size_t>(
            std::count_if(conns_.begin(), conns_.end(),
                          [](const Conn& c) { return c.proto == Proto::TcpTable; })),
        static_cast<unsigned long long>(o_.requests), static_cast<unsigned long long>(warmup_));
    std::fflush(stdout);
    for (auto& c : conns_)
        open(c);
    std::vector<epoll_event> events(1024);
    uint64_t next_maintenance = start_ns_ + 100'000'000u;
    uint64_t next_sample = start_ns_ + 1'000'000'000u;
    const uint64_t progress_every = static_cast<uint64_t>(o_.progress_s * 1e9);
    uint64_t next_progress = progress_every ? start_ns_ + progress_every : UINT64_MAX;
    while (!finished()) {
        uint64_t now = now_ns();
        const uint64_t wake = std::min(next_maintenance, next_sample);
        const int timeout_ms =
            wake > now ? static_cast<int>((wake - now + 999'999) / 1'000'000) : 0;
        const int n = epoll_wait(epfd_, events.data(), static_cast<int>(events.size()), timeout_ms);
        if (n < 0 && errno != EINTR)
            usage_error(std::string("epoll_wait: ") + std::strerror(errno));
        for (int i = 0; i < n; ++i)
            handle(conns_[events[static_cast<std::size_t>(i)].data.u64],
                   events[static_cast<std::size_t>(i)].events);
        now = now_ns();
        if (now >= next_maintenance) {
            maintain(now);
            next_maintenance = now + 100'000'000u;
        }
        if (now >= next_sample) {
            sample(now);
            next_sample += 1'000'000'000u;
            if (next_sample < now) next_sample = now + 1'000'000'000u;
        }
        if (now >= next_progress) {
            progress(now);
            next_progress += progress_every;
        }
        if (stop_) {
            // The daemon is gone (or no socket could be made): give up on what is in flight.
            for (auto& c : conns_)
                if (c.fd >= 0) close_conn(c);
        }
    }
    const uint64_t end = now_ns();
    // The final sample, before our connections close (as at the end of the warm-up).
    if (!daemon_gone_) sample(end);
    for (auto& c : conns_)
        close_conn(c);
    ::close(epfd_);
    if (rss_log_) std::fclose(rss_log_);
    return report(end);
}

int Soak::report(uint64_t end) {
    const double total_s = seconds(end - start_ns_);
    std::printf("requests: %llu answered in %.1f s (%.0f req/s)",
                static_cast<unsigned long long>(completed_), total_s,
                static_cast<double>(completed_) / std::max(total_s, 1e-9));
    if (warm_ && completed_ > warmup_)
        std::printf(
            "; after the warm-up %llu in %.1f s (%.0f req/s)",
            static_cast<unsigned long long>(completed_ - warmup_), seconds(end - warm_ns_),
            static_cast<double>(completed_ - warmup_) / std::max(seconds(end - warm_ns_), 1e-9));
    std::printf("\n");
    std::printf("sent by kind:");
    for (std::size_t i = 0; i < by_category_.size(); ++i)
        std::printf(" %s %llu", kCategoryNames[i],
                    static_cast<unsigned long long>(by_category_[i]));
    std::printf("\n");
    std::printf(
        "replies: socketmap OK %llu, NOTFOUND %llu, TEMP %llu, PERM %llu; tcp_table "
        "200 %llu, 500 %llu, 400 %llu (temp) + %llu (bad request)\n",
        static_cast<unsigned long long>(reply_kinds_[0][0]),
        static_cast<unsigned long long>(reply_kinds_[0][1]),
        static_cast<unsigned long long>(reply_kinds_[0][2]),
        static_cast<unsigned long long>(reply_kinds_[0][3]),
        static_cast<unsigned long long>(reply_kinds_[1][0]),
        static_cast<unsigned long long>(reply_kinds_[1][1]),
        static_cast<unsigned long long>(reply_kinds_[1][2]),
        static_cast<unsigned long long>(reply_kinds_[1][3]));
    std::printf(
        "connections: %llu connects, %llu reconnects after framing errors (%llu of them "
        "reset instead of closed), slowest reply %.2f s\n",
        static_cast<unsigned long long>(connects_), static_cast<unsigned long long>(reconnects_),
        static_cast<unsigned long long>(resets_on_close_), seconds(max_latency_ns_));
    std::printf("wrong answers: %llu\n", static_cast<unsigned long long>(wrong_));
    for (const auto& w : wrongs_)
        std::printf("  WRONG connection %d (%s, %s): sent \"%s\"\n        %s\n        want %s\n",
                    w.conn, w.proto == Proto::Socketmap ? "socketmap" : "tcp_table",
                    w.category.c_str(), w.request.c_str(), w.got.c_str(), w.want.c_str());
    if (errors_.empty()) {
        std::printf("errors: none\n");
    } else {
        std::printf("errors: %llu\n", static_cast<unsigned long long>(error_count()));
        for (const auto& [k, v] : errors_)
            std::printf("  %s: %llu (first: %s)\n", k.c_str(), static_cast<unsigned long long>(v),
                        error_examples_[k].c_str());
    }

    std::vector<std::string> failures;
    if (wrong_) failures.push_back(std::to_string(wrong_) + " wrong answer(s)");
    if (!errors_.empty())
        failures.push_back(std::to_string(error_count()) + " connection error(s)");
    if (daemon_gone_) failures.push_back("the daemon (pid " + std::to_string(o_.pid) + ") exited");
    if (!daemon_gone_ && completed_ + failed_requests_ < o_.requests)
        failures.push_back("only " + std::to_string(completed_) + " of " +
                           std::to_string(o_.requests) + " requests answered");
    if (o_.pid > 0) {
        auto mib = [](long kib) { return kib / 1024.0; };
        auto shown = [&](long kib) {
            char buf[32];
            if (kib < 0) return std::string("-");
            std::snprintf(buf, sizeof buf, "%.1f MiB", mib(kib));
            return std::string(buf);
        };
        std::printf("memory (VmRSS): start %s, end of warm-up %s, end %s, max after warm-up %s",
                    shown(rss_start_).c_str(), shown(rss_warm_).c_str(), shown(rss_last_).c_str(),
                    shown(rss_max_after_).c_str());
        if (rss_warm_ > 0 && !daemon_gone_) {
            const long growth = rss_last_ - rss_warm_;
            const double pct = 100.0 * static_cast<double>(growth) / static_cast<double>(rss_warm_);
            const double limit_kib =
                std::max(o_.rss_limit_mib * 1024.0, o_.rss_limit_percent / 100.0 * rss_warm_);
            std::printf(
                "; growth after warm-up %+.1f MiB (%+.1f%%), limit +%.1f MiB (the larger "
                "of %.0f MiB and %.0f%%)%s\n",
                mib(growth), pct, limit_kib / 1024.0, o_.rss_limit_mib, o_.rss_limit_percent,
                o_.rss_check ? "" : ", not checked");
            if (o_.rss_check && static_cast<double>(growth) > limit_kib)
                failures.push_back("resident memory grew by " + std::to_string(growth / 1024) +
                                   " MiB after the warm-up");
        } else {
            std::printf("\n");
            if (o_.rss_check && !daemon_gone_)
                failures.push_back("no memory baseline (the warm-up never ended)");
        }
    }
    if (failures.empty()) {
        std::printf("verdict: PASS (%llu requests, 0 wrong answers, 0 errors, daemon up%s)\n",
                    static_cast<unsigned long long>(completed_),
                    o_.pid > 0 ? (o_.rss_check ? ", memory flat" : ", memory not judged") : "");
        return 0;
    }
    std::string all;
    for (const auto& f : failures)
        all += (all.empty() ? "" : "; ") + f;
    std::printf("verdict: FAIL (%s)\n", all.c_str());
    return 1;
}

// ---------------------------------------------------------------------------------------------

std::vector<Row> read_table(const std::string& path) {
    std::ifstream f(path);
    if (!f) usage_error("cannot read --table " + path);
    std::vector<Row> rows;
    std::string line;
    int n = 0;
    while (std::getline(f, line)) {
        ++n;
        if (line.empty() || line[0] == '#') continue;
        const auto tab = line.find('\t');
        if (tab == std::string::npos) usage_error(path + ":" + std::to_string(n) + ": no TAB");
        rows.push_back({line.substr(0, tab),
                        parse_answer(line.substr(tab + 1), path + ":" + std::to_string(n))});
    }
    if (rows.empty()) usage_error(path + " has no rows");
    return rows;
}

double parse_number(const std::string& opt, const std::string& v, double min, double max) {
    char* end = nullptr;
    errno = 0;
    const double d = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || errno != 0 || !std::isfinite(d) || d < min || d > max)
        usage_error(opt + " wants a number from " + std::to_string(min) + " to " +
                    std::to_string(max) + ", not \"" + v + "\"");
    return d;
}

uint64_t parse_count(const std::string& opt, const std::string& v, uint64_t min, uint64_t max) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
    if (v.empty() || v[0] == '-' || *end != '\0' || errno != 0 || n < min || n > max)
        usage_error(opt + " wants a whole number from " + std::to_string(min) + " to " +
                    std::to_string(max) + ", not \"" + v + "\"");
    return n;
}

Endpoint parse_ep(const std::string& opt, const std::string& v) {
    auto ep = tlspolicy::parse_endpoint(v);
    if (!ep) usage_error(opt + ": " + ep.error().message);
    if (ep->kind == Endpoint::Kind::Inet && ep->port == 0) usage_error(opt + ": port 0");
    return *ep;
}

// 1000 connections need more than the usual 1024 open files: raise the soft limit to the
// hard limit (no privileges needed).
void raise_nofile(int connections) {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            usage_error(std::string("cannot raise the open-file limit: ") + std::strerror(errno));
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < static_cast<rlim_t>(connections) + 32)
        usage_error("--connections " + std::to_string(connections) +
                    " needs more open files than the hard limit (" + std::to_string(rl.rlim_max) +
                    ")");
}

Options parse_args(int argc, char** argv) {
    Options o;
    bool have_sm = false, have_tt = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            usage();
            std::exit(0);
        }
        if (a == "--no-rss-check") {
            o.rss_check = false;
            continue;
        }
        if (i + 1 >= argc) usage_error(a + " needs a value");
        const std::string v = argv[++i];
        if (a == "--socketmap") {
            o.socketmap = parse_ep(a, v);
            have_sm = true;
        } else if (a == "--tcp-table") {
            o.tcp_table = parse_ep(a, v);
            have_tt = true;
        } else if (a == "--table") {
            o.table = v;
        } else if (a == "--pid") {
            o.pid = static_cast<pid_t>(parse_count(a, v, 1, 1u << 30));
        } else if (a == "--connections") {
            o.connections = static_cast<int>(parse_count(a, v, 1, 100000));
        } else if (a == "--requests") {
            o.requests = parse_count(a, v, 1, 1'000'000'000'000u);
        } else if (a == "--warmup") {
            o.warmup = parse_count(a, v, 1, 1'000'000'000'000u);
        } else if (a == "--socketmap-share") {
            o.socketmap_share = parse_number(a, v, 0, 100);
        } else if (a == "--uncached") {
            o.mix.uncached = parse_number(a, v, 0, 100);
        } else if (a == "--invalid") {
            o.mix.invalid = parse_number(a, v, 0, 100);
        } else if (a == "--bad") {
            o.mix.bad = parse_number(a, v, 0, 100);
        } else if (a == "--framing") {
            o.mix.framing = parse_number(a, v, 0, 100);
        } else if (a == "--uncached-in-flight") {
            o.uncached_in_flight = static_cast<int>(parse_count(a, v, 0, 100000));
        } else if (a == "--uncached-suffix") {
            o.uncached_suffix = v;
        } else if (a == "--map") {
            if (v.empty() || v.find(' ') != std::string::npos) usage_error("--map: one word");
            o.map = v;
        } else if (a == "--seed") {
            o.seed = parse_count(a, v, 0, UINT64_MAX);
        } else if (a == "--timeout") {
            o.timeout_ns = static_cast<uint64_t>(parse_number(a, v, 0.1, 3600) * 1e9);
        } else if (a == "--rss-limit-mib") {
            o.rss_limit_mib = parse_number(a, v, 0, 1e6);
        } else if (a == "--rss-limit-percent") {
            o.rss_limit_percent = parse_number(a, v, 0, 1e6);
        } else if (a == "--rss-log") {
            o.rss_log = v;
        } else if (a == "--progress") {
            o.progress_s = parse_number(a, v, 0, 3600);
        } else {
            usage_error("unknown option " + a);
        }
    }
    if (o.socketmap_share > 0 && !have_sm) usage_error("--socketmap is required");
    if (o.socketmap_share < 100 && !have_tt) usage_error("--tcp-table is required");
    if (o.table.empty()) usage_error("--table is required");
    if (o.mix.uncached + o.mix.invalid + o.mix.bad + o.mix.framing > 100)
        usage_error("--uncached + --invalid + --bad + --framing exceed 100%");
    if (o.warmup >= o.requests) usage_error("--warmup must be below --requests");
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile(o.connections);
    Traffic traffic(read_table(o.table), o.map, o.uncached_suffix, o.seed, o.mix);
    Soak soak(o, traffic);
    return soak.run();
}
