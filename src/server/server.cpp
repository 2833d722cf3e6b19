#include "server/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <deque>
#include <memory>

#include <event2/buffer.h>

#include "server/metrics.h"
#include "server/wire.h"
#include "util/hexquote.h"
#include "util/log.h"
#include "util/netstring.h"

namespace tlspolicy {

struct Server::Listener {
    Server* server = nullptr;
    ListenConfig config;
    BoundSocket socket;
    ListenerPtr ev;
};

namespace {

// Milliseconds of a clock that never jumps, at the kernel's tick resolution (cheap: vDSO).
int64_t monotonic_ms() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

std::string peer_name(const sockaddr* sa, int len) {
    char buf[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET && len >= static_cast<int>(sizeof(sockaddr_in))) {
        const auto* a = reinterpret_cast<const sockaddr_in*>(sa);
        inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
        return std::string(buf) + ":" + std::to_string(ntohs(a->sin_port));
    }
    if (sa->sa_family == AF_INET6 && len >= static_cast<int>(sizeof(sockaddr_in6))) {
        const auto* a = reinterpret_cast<const sockaddr_in6*>(sa);
        inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
        return "[" + std::string(buf) + "]:" + std::to_string(ntohs(a->sin6_port));
    }
    return "unix";
}

}  // namespace

// One client connection. Requests are read ahead up to max_pipelined and answered strictly in
// the order they arrived, whatever order their lookups complete in.
// tlspolicyd_lookups_total{protocol,answer} and the latency histogram: series looked up
// once, so that counting an answer is a few comparisons and an atomic add.
class LookupMetrics {
  public:
    static LookupMetrics& get() {
        static LookupMetrics m;
        return m;
    }
    void count(Protocol protocol, AnswerView a) {
        const auto p = static_cast<std::size_t>(protocol == Protocol::TcpTable);
        std::size_t kind = kOther;
        switch (a.outcome) {
            case Outcome::Found: {
                const std::string_view word = a.policy.substr(0, a.policy.find(' '));
                for (std::size_t i = 0; i < kLevels.size(); ++i)
                    if (word == kLevels[i]) kind = i;
                break;
            }
            case Outcome::NotFound:
                kind = kNotFound;
                break;
            case Outcome::Temp:
            case Outcome::Timeout:
                kind = kTemp;
                break;
            case Outcome::Perm:
                kind = kError;
                break;
        }
        counters_[p][kind]->inc();
    }
    void observe(std::chrono::steady_clock::time_point since) {
        latency_.observe(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count());
    }
    // An answer known at once takes microseconds, far inside the first bucket (100 us): it is
    // counted there as 0 s without reading the clock twice per request.
    void observe_immediate() { latency_.observe(0.0); }

  private:
    // The Postfix security levels a policy can start with, then the other answers.
    static constexpr std::array<std::string_view, 8> kLevels = {
        "dane-only", "dane", "verify", "secure", "encrypt", "may", "none", "fingerprint"};
    static constexpr std::size_t kNotFound = 8, kTemp = 9, kError = 10, kOther = 11;

    LookupMetrics()
        : latency_(metrics::global().histogram(
              "tlspolicyd_lookup_duration_seconds",
              "Time from a request read to its answer, cached or computed",
              metrics::kLatencyBuckets)) {
        const char* names[] = {"dane-only", "dane", "verify", "secure",
                               "encrypt",   "may",  "none",   "fingerprint",
                               "notfound",  "temp", "error",  "other"};
        for (std::size_t p = 0; p < 2; ++p)
            for (std::size_t k = 0; k < 12; ++k)
                counters_[p][k] = &metrics::global().counter(
                    "tlspolicyd_lookups_total", "Requests answered, by protocol and answer",
                    {{"protocol", p ? "tcp_table" : "socketmap"}, {"answer", names[k]}});
    }
    metrics::Histogram& latency_;
    metrics::Counter* counters_[2][12] = {};
};

// A session's unprocessed input: [begin, end) of one buffer that grows only for a request
// longer than what was read so far (at most a request's limit plus a read), never per request.
class InputBuffer {
  public:
    std::string_view view() const { return {data_.get() + begin_, end_ - begin_}; }
    std::size_t size() const { return end_ - begin_; }
    void consume(std::size_t n) {
        begin_ += n;
        if (begin_ == end_) begin_ = end_ = 0;
    }
    void clear() { begin_ = end_ = 0; }
    // Room for at least `n` more bytes at the end (moving what is left to the front first).
    std::pair<char*, std::size_t> space(std::size_t n) {
        if (cap_ - end_ < n && begin_ > 0) {
            std::memmove(data_.get(), data_.get() + begin_, end_ - begin_);
            end_ -= begin_;
            begin_ = 0;
        }
        if (cap_ - end_ < n) {
            const std::size_t cap = std::max(end_ + n, cap_ * 2);
            auto fresh = std::make_unique_for_overwrite<char[]>(cap);
            if (end_) std::memcpy(fresh.get(), data_.get(), end_);
            data_ = std::move(fresh);
            cap_ = cap;
        }
        return {data_.get() + end_, cap_ - end_};
    }
    void commit(std::size_t n) { end_ += n; }

  private:
    std::unique_ptr<char[]> data_;
    std::size_t begin_ = 0, end_ = 0, cap_ = 0;
};

class Session : public std::enable_shared_from_this<Session> {
  public:
    Session(Server& server, Protocol protocol, BuffereventPtr bev, std::string peer)
        : server_(server), protocol_(protocol), bev_(std::move(bev)), peer_(std::move(peer)) {}

    // Reading is our own event and buffer, not the bufferevent's: its reads ask the kernel how
    // much is readable (ioctl FIONREAD) before every readv, one system call per request more
    // than needed, and its buffer allocates and frees a chain per request
    // (docs/benchmarks.md). The bufferevent still does the writing and its timeout.
    void start(const Config::Server& limits) {
        max_pipelined_ = static_cast<std::size_t>(limits.max_pipelined);
        idle_ = {static_cast<time_t>(limits.idle_timeout), 0};
        const timeval write_timeout{kWriteTimeoutSeconds, 0};
        bufferevent_setcb(bev_.get(), nullptr, &Session::on_write, &Session::on_event, this);
        bufferevent_set_timeouts(bev_.get(), nullptr, &write_timeout);
        bufferevent_enable(bev_.get(), EV_WRITE);
        read_ev_.reset(event_new(bufferevent_get_base(bev_.get()), bufferevent_getfd(bev_.get()),
                                 EV_READ | EV_PERSIST, &Session::on_readable, this));
        update_reading();
    }

    // Stop reading; close once the requests already read have been answered.
    void drain() {
        draining_ = true;
        set_reading(false);
        maybe_finish();
    }

    // The drain timeout passed: close even with requests in progress.
    void force_close() { close(); }

    // The server is being destroyed: drop the connection without calling back.
    void abandon() {
        closed_ = true;
        pending_.clear();
        read_ev_.reset();
        partial_timer_.reset();
        bev_.reset();
    }

  private:
    struct Slot {
        bool ready = false;
        std::string reply;
    };

    static void on_readable(evutil_socket_t fd, short, void* arg) {
        auto self = static_cast<Session*>(arg)->shared_from_this();
        self->last_read_ms_ = monotonic_ms();
        // One recv per wake-up: a request usually arrives whole, and the event fires again
        // (level-triggered) when more is waiting.
        const auto [at, room] = self->in_.space(kReadChunk);
        const ssize_t n = recv(fd, at, std::min(room, kReadChunk), 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
            log::debug("closing " + self->peer_ + ": " + std::strerror(errno));
            return self->close();
        }
        self->in_.commit(static_cast<std::size_t>(n));
        if (n == 0) {
            // The client half-closed (Exim ${readsocket}) or closed: answer what it sent,
            // then close.
            self->read_eof_ = true;
        }
        self->process_input();
        self->maybe_finish();
    }

  public:
    // Idle: reading (so not held back by a full pipeline or output), nothing pending or
    // waiting to be written, and nothing read for idle_timeout. The server sweeps its sessions
    // a few times a second: a timeout on the read event would be re-armed at every request.
    bool idle_at(int64_t now_ms) const {
        return !closed_ && reading_ && pending_.empty() && idle_.tv_sec > 0 &&
               now_ms - last_read_ms_ >= int64_t{idle_.tv_sec} * 1000 &&
               evbuffer_get_length(bufferevent_get_output(bev_.get())) == 0;
    }
    void idle_timeout() {
        log::debug("closing " + peer_ + ": idle timeout");
        close();
    }

  private:
    static void on_write(bufferevent*, void* arg) {
        auto self = static_cast<Session*>(arg)->shared_from_this();
        // Output drained: requests held back by a full output buffer can go on.
        self->process_input();
        self->maybe_finish();
    }

    // The bufferevent only writes: a write timeout or a write error.
    static void on_event(bufferevent*, short what, void* arg) {
        auto self = static_cast<Session*>(arg)->shared_from_this();
        if (what & BEV_EVENT_TIMEOUT) log::debug("closing " + self->peer_ + ": write timeout");
        self->close();
    }

    // Parses and dispatches every complete request the input buffer holds, within limits.
    void process_input() {
        if (closed_ || in_process_) return;
        in_process_ = true;
        bool incomplete = false;
        while (!closed_ && !protocol_error_ && !draining_ && pending_.size() < max_pipelined_) {
            if (in_.size() == 0) break;
            // Answers known at once collect in write_batch_ and go out in one send; a client
            // that does not read them stops being read (on_write goes on when it does).
            if (write_batch_.size() >= kBatchBytes) {
                flush();
                if (closed_ || !output_room()) break;
            }
            const bool ok = protocol_ == Protocol::Socketmap ? next_socketmap() : next_tcp_table();
            if (!ok) {
                incomplete = !closed_ && !protocol_error_;
                break;
            }
        }
        in_process_ = false;
        flush();
        watch_partial_request(incomplete);
        update_reading();
    }

    // A request must arrive whole within idle_timeout of its first bytes: a client that
    // drips bytes would otherwise restart the idle clock forever and hold a connection slot
    // (found by the fault tests). Armed only while part of a request waits in the buffer.
    void watch_partial_request(bool incomplete) {
        if (closed_ || !bev_) return;
        if (!incomplete || read_eof_) {
            if (partial_armed_) {
                evtimer_del(partial_timer_.get());
                partial_armed_ = false;
            }
            return;
        }
        if (partial_armed_ || idle_.tv_sec <= 0) return;
        if (!partial_timer_)
            partial_timer_.reset(
                evtimer_new(bufferevent_get_base(bev_.get()), &Session::on_partial_timeout, this));
        evtimer_add(partial_timer_.get(), &idle_);
        partial_armed_ = true;
    }

    static void on_partial_timeout(evutil_socket_t, short, void* arg) {
        auto self = static_cast<Session*>(arg)->shared_from_this();
        self->partial_armed_ = false;
        log::debug("closing " + self->peer_ + ": request not complete within " +
                   std::to_string(self->idle_.tv_sec) + " s");
        self->close();
    }

    // Returns false when no complete request is available (or the stream is unusable).
    bool next_socketmap() {
        constexpr std::size_t kMaxFrame = kMaxSocketmapRequest + 8;  // "10000:" + payload + ","
        const std::string_view input = in_.view();
        const std::size_t avail = input.size();
        const NetstringDecode d =
            netstring_decode(input.substr(0, std::min(avail, kMaxFrame)), kMaxSocketmapRequest);
        using State = NetstringDecode::State;
        if (d.state == State::NeedMore) {
            if (read_eof_ && avail > 0) log::debug(peer_ + ": incomplete request at end of input");
            return false;
        }
        if (d.state != State::Complete) {
            protocol_failure(d.state == State::TooLong ? "request larger than 10000 bytes"
                                                       : "malformed netstring");
            return false;
        }
        WireRequest& req = req_;
        parse_socketmap_request_into(d.payload, req);
        in_.consume(d.consumed);
        if (req.ok) {
            dispatch(req.key, req.name);
            return true;
        }
        const Answer bad = Answer::perm(req.error);
        LookupMetrics::get().count(protocol_, bad);
        answer_now(bad);
        return true;
    }

    bool next_tcp_table() {
        const std::string_view input = in_.view();
        const std::size_t avail = input.size();
        const std::size_t eol = input.find('\n');
        std::size_t line_len;  // without the newline
        std::size_t consume;
        if (eol == std::string_view::npos) {
            if (avail >= kMaxTcpTableLine) {
                protocol_failure("request line longer than 4096 bytes");
                return false;
            }
            if (!read_eof_) return false;
            // A client that half-closes right after "get KEY" without a newline (easy to
            // write in Exim) still gets its answer.
            line_len = consume = avail;
        } else {
            line_len = eol;
            consume = line_len + 1;
            if (consume > kMaxTcpTableLine) {
                protocol_failure("request line longer than 4096 bytes");
                return false;
            }
        }
        WireRequest& req = req_;
        parse_tcp_table_request_into(input.substr(0, line_len), req);
        in_.consume(consume);
        if (!req.ok) {
            const Answer bad = Answer::perm(req.error);
            LookupMetrics::get().count(protocol_, bad);
            answer_now(bad);
            return true;
        }
        dispatch(req.key, "");
        return true;
    }

    void dispatch(const std::string& key, const std::string& profile) {
        // Most answers are known at once (cached, overrides, special keys): no callback, no
        // allocation, no copy of the answer's text; the reply is written from the view.
        if (const auto now = server_.resolver_.resolve_now(key, profile, scratch_)) {
            LookupMetrics::get().count(protocol_, *now);
            LookupMetrics::get().observe_immediate();
            return answer_now(*now);
        }
        const auto t0 = std::chrono::steady_clock::now();
        std::weak_ptr<Session> weak = shared_from_this();
        const Protocol protocol = protocol_;
        Slot* target = &pending_.emplace_back();  // deque references stay valid until popped
        server_.resolver_.resolve(key, profile, [weak, target, protocol, t0](Answer answer) {
            LookupMetrics::get().count(protocol, answer);
            LookupMetrics::get().observe(t0);
            auto self = weak.lock();
            if (!self || self->closed_) return;  // the client went away meanwhile
            target->reply =
                protocol == Protocol::Socketmap ? socketmap_reply(answer) : tcp_table_reply(answer);
            target->ready = true;
            self->flush();
            // A synchronous answer arrives while process_input() is still on the stack: it
            // goes on reading there, so no recursion per request.
            if (!self->in_process_) self->process_input();
            self->maybe_finish();
        });
    }

    // The reply to the request just read, known at once: behind the replies still pending.
    void answer_now(AnswerView answer) {
        if (!pending_.empty()) {
            Slot& slot = pending_.emplace_back();
            slot.ready = true;
            slot.reply = protocol_ == Protocol::Socketmap ? socketmap_reply(answer)
                                                          : tcp_table_reply(answer);
            return;
        }
        if (protocol_ == Protocol::Socketmap) {
            socketmap_reply_into(reply_, answer);
            netstring_append(write_batch_, reply_);
        } else {
            tcp_table_reply_append(write_batch_, answer);
        }
    }

    // Writes the answers that are ready, in request order: what write_batch_ holds, then the
    // ready slots at the front of pending_.
    void flush() {
        std::string& batch = write_batch_;  // kept: its capacity is reused
        if (closed_) return batch.clear();
        while (!pending_.empty() && pending_.front().ready) {
            Slot& s = pending_.front();
            if (protocol_ == Protocol::Socketmap)
                netstring_append(batch, s.reply);
            else
                batch += s.reply;
            pending_.pop_front();
        }
        if (batch.empty()) return;
        evbuffer* out = bufferevent_get_output(bev_.get());
        std::size_t sent = 0;
        // Nothing queued: straight to the socket. Going through the bufferevent costs two
        // epoll_ctl calls per answer (write interest added, then removed), which dominated
        // the daemon's CPU time under load (docs/benchmarks.md). Whatever the socket does not
        // take, and every error, is left to the bufferevent as before.
        if (evbuffer_get_length(out) == 0) {
            const ssize_t n = send(bufferevent_getfd(bev_.get()), batch.data(), batch.size(),
                                   MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) sent = static_cast<std::size_t>(n);
        }
        if (sent < batch.size()) evbuffer_add(out, batch.data() + sent, batch.size() - sent);
        batch.clear();
        if (batch.capacity() > 4 * kBatchBytes) batch.shrink_to_fit();  // after a huge reply
    }

    bool output_room() const {
        return evbuffer_get_length(bufferevent_get_output(bev_.get())) < kMaxUnreadOutput;
    }

    // Reads only while there is room for more requests and the client is reading our answers.
    void update_reading() {
        if (closed_) return;
        const bool room = pending_.size() < max_pipelined_ && output_room();
        set_reading(room && !read_eof_ && !protocol_error_ && !draining_);
    }

    // The read event with the idle timeout, added or removed only on a change (each is an
    // epoll_ctl). While reading is off (a full pipeline), the idle clock does not run.
    void set_reading(bool on) {
        if (on == reading_ || !read_ev_) return;
        reading_ = on;
        if (on) {
            last_read_ms_ = monotonic_ms();  // the idle clock starts again
            event_add(read_ev_.get(), nullptr);
        } else
            event_del(read_ev_.get());
    }

    // A framing error cannot be recovered from: answer what came before, then close.
    void protocol_failure(const char* what) {
        log::warning("closing " + peer_ + " (" + std::string(protocol_name(protocol_)) +
                     "): " + what);
        protocol_error_ = true;
        in_.clear();
        if (protocol_ == Protocol::TcpTable) answer_now(Answer::perm(what));
        flush();
    }

    void maybe_finish() {
        if (closed_) return;
        const bool ending = read_eof_ || protocol_error_ || draining_;
        if (ending && pending_.empty() && write_batch_.empty() &&
            evbuffer_get_length(bufferevent_get_output(bev_.get())) == 0)
            close();
    }

    void close() {
        if (closed_) return;
        closed_ = true;
        pending_.clear();
        read_ev_.reset();
        partial_timer_.reset();
        bev_.reset();
        server_.session_closed(this);
    }

    Server& server_;
    Protocol protocol_;
    static constexpr std::size_t kReadChunk = 4096;
    BuffereventPtr bev_;
    EventPtr read_ev_;        // freed before bev_, which owns the socket
    EventPtr partial_timer_;  // see watch_partial_request
    bool reading_ = false;
    bool partial_armed_ = false;
    std::string peer_;
    std::deque<Slot> pending_;
    std::string write_batch_;  // replies not yet sent, in request order
    std::string reply_;        // a socketmap reply before framing (capacity reused)
    // The request being read and its lookup's scratch: capacity reused, nothing allocated
    // per request once a session is warm.
    InputBuffer in_;
    WireRequest req_;
    LookupScratch scratch_;
    int64_t last_read_ms_ = 0;  // monotonic_ms() of the last read, or when reading resumed
    static constexpr std::size_t kBatchBytes = 64 * 1024;
    static constexpr std::size_t kMaxUnreadOutput = 256 * 1024;
    std::size_t max_pipelined_ = 64;
    timeval idle_{};
    bool read_eof_ = false;
    bool in_process_ = false;
    bool protocol_error_ = false;
    bool draining_ = false;
    bool closed_ = false;
};

Server::Server(event_base* base, const PolicyResolver& resolver)
    : base_(base), resolver_(resolver) {
    idle_sweep_.reset(event_new(
        base_, -1, EV_PERSIST,
        [](evutil_socket_t, short, void* arg) { static_cast<Server*>(arg)->sweep_idle(); }, this));
    const timeval every{0, kIdleSweepMs * 1000};
    event_add(idle_sweep_.get(), &every);
}

void Server::sweep_idle() {
    const int64_t now = monotonic_ms();
    std::vector<std::shared_ptr<Session>> idle;
    for (auto& [ptr, session] : sessions_)
        if (ptr->idle_at(now)) idle.push_back(session);
    for (auto& session : idle)
        session->idle_timeout();  // closing changes sessions_: not while iterating it
}

Server::~Server() {
    // Sessions first (they point at us), then listeners with their socket files.
    for (auto& [ptr, session] : sessions_)
        session->abandon();
    sessions_.clear();
    for (auto& l : listeners_)
        remove_unix_socket(l->socket);
}

Status Server::apply(const Config& config) {
    // Bind what is new before touching anything, so that a failing reload changes nothing.
    std::vector<bool> claimed(listeners_.size(), false);
    std::vector<int> keep(config.listen.size(), -1);
    std::vector<std::unique_ptr<Listener>> fresh(config.listen.size());
    for (std::size_t i = 0; i < config.listen.size(); ++i) {
        const ListenConfig& lc = config.listen[i];
        for (std::size_t j = 0; j < listeners_.size(); ++j) {
            if (!claimed[j] && listeners_[j]->config.endpoint == lc.endpoint) {
                claimed[j] = true;
                keep[i] = static_cast<int>(j);
                break;
            }
        }
        if (keep[i] >= 0) continue;
        auto bound = bind_listener(lc);
        if (!bound) {
            for (auto& f : fresh)
                if (f) remove_unix_socket(f->socket);
            return make_error(std::string(protocol_name(lc.protocol)) + " " +
                              bound.error().message);
        }
        fresh[i] = std::make_unique<Listener>();
        fresh[i]->server = this;
        fresh[i]->config = lc;
        fresh[i]->socket = std::move(*bound);
    }

    // Commit.
    limits_ = config.server;
    std::vector<std::unique_ptr<Listener>> next;
    for (std::size_t i = 0; i < config.listen.size(); ++i) {
        if (fresh[i]) {
            next.push_back(std::move(fresh[i]));
            continue;
        }
        auto& kept = listeners_[static_cast<std::size_t>(keep[i])];
        const ListenConfig& lc = config.listen[i];
        if (lc.endpoint.kind == Endpoint::Kind::Unix &&
            (kept->config.mode != lc.mode || kept->config.owner != lc.owner ||
             kept->config.group != lc.group)) {
            ListenConfig effective = lc;
            if (!effective.mode) effective.mode = kDefaultUnixMode;
            if (auto s = apply_unix_attributes(effective); !s) log::warning(s.error().message);
        }
        kept->config = lc;  // a protocol change applies to new connections
        next.push_back(std::move(kept));
    }
    for (auto& old : listeners_) {
        if (!old) continue;
        log::info("closing listener " + old->socket.address);
        remove_unix_socket(old->socket);
    }
    listeners_ = std::move(next);
    for (auto& l : listeners_) {
        if (l->ev) continue;
        const int fd = l->socket.fd.get();
        l->ev.reset(evconnlistener_new(base_, &Server::on_accept, l.get(),
                                       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd));
        if (!l->ev) return make_error("cannot watch listener " + l->socket.address);
        l->socket.fd.release();  // owned by the evconnlistener from now on
        log::info("listening on " + std::string(protocol_name(l->config.protocol)) + " " +
                  l->socket.address);
    }
    accepting_ = true;
    update_accepting();
    return {};
}

std::vector<std::string> Server::bound_addresses() const {
    std::vector<std::string> out;
    for (const auto& l : listeners_)
        out.push_back(std::string(protocol_name(l->config.protocol)) + " " + l->socket.address);
    return out;
}

void Server::on_accept(evconnlistener*, evutil_socket_t fd, sockaddr* sa, int len, void* arg) {
    auto* l = static_cast<Listener*>(arg);
    l->server->accept_session(*l, fd, sa, len);
}

void Server::accept_session(Listener& l, evutil_socket_t fd, const sockaddr* sa, int len) {
    if (draining_) {
        ::close(fd);
        return;
    }
    if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
        // Replies go out at once, whatever is still unacknowledged (see docs/benchmarks.md).
        const int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    BuffereventPtr bev(bufferevent_socket_new(base_, fd, BEV_OPT_CLOSE_ON_FREE));
    if (!bev) {
        ::close(fd);
        log::error("out of memory accepting a connection");
        return;
    }
    auto session =
        std::make_shared<Session>(*this, l.config.protocol, std::move(bev), peer_name(sa, len));
    Session* raw = session.get();
    sessions_.emplace(raw, std::move(session));
    raw->start(limits_);
    update_accepting();
}

void Server::session_closed(Session* session) {
    // Every path into a Session holds a shared_ptr to it while it runs, so dropping ours here
    // cannot destroy it under its own feet.
    sessions_.erase(session);
    update_accepting();
    if (draining_ && sessions_.empty()) finish_drain();
}

void Server::update_accepting() {
    // At the cap, stop accepting: new clients wait in the kernel's listen queue
    // (back-pressure) instead of being refused.
    const bool want =
        !draining_ && sessions_.size() < static_cast<std::size_t>(limits_.max_connections);
    if (want == accepting_) return;
    accepting_ = want;
    for (auto& l : listeners_) {
        if (!l->ev) continue;
        if (want)
            evconnlistener_enable(l->ev.get());
        else
            evconnlistener_disable(l->ev.get());
    }
    if (!want && !draining_)
        log::warning("connection limit reached (" + std::to_string(limits_.max_connections) +
                     "): new connections wait until one closes");
}

void Server::drain(int timeout_seconds, std::function<void()> on_drained) {
    draining_ = true;
    on_drained_ = std::move(on_drained);
    // Listening sockets go first, so that a successor can bind at once.
    for (auto& l : listeners_)
        remove_unix_socket(l->socket);
    listeners_.clear();
    if (sessions_.empty()) return finish_drain();
    std::vector<std::shared_ptr<Session>> all;
    for (auto& [ptr, s] : sessions_)
        all.push_back(s);
    for (auto& s : all)
        s->drain();
    if (sessions_.empty()) return;  // finish_drain ran from session_closed
    drain_timer_.reset(evtimer_new(
        base_,
        [](evutil_socket_t, short, void* arg) {
            auto* self = static_cast<Server*>(arg);
            log::warning("drain timeout: closing " + std::to_string(self->sessions_.size()) +
                         " connection(s) with requests in progress");
            std::vector<std::shared_ptr<Session>> rest;
            for (auto& [ptr, s] : self->sessions_)
                rest.push_back(s);
            for (auto& s : rest)
                s->force_close();
        },
        this));
    const timeval tv{timeout_seconds, 0};
    evtimer_add(drain_timer_.get(), &tv);
}

void Server::finish_drain() {
    drain_timer_.reset();
    if (on_drained_) {
        auto cb = std::move(on_drained_);
        on_drained_ = nullptr;
        cb();
    }
}

}  // namespace tlspolicy
