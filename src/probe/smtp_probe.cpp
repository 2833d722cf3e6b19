#include "probe/smtp_probe.h"

#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>

#include "util/event.h"
#include "util/fd.h"
#include "util/log.h"

namespace tlspolicy {

const char* probe_stage_name(ProbeStage s) {
    switch (s) {
        case ProbeStage::Connect: return "connect";
        case ProbeStage::Banner: return "banner";
        case ProbeStage::Ehlo: return "EHLO";
        case ProbeStage::StartTls: return "STARTTLS";
        case ProbeStage::Handshake: return "TLS handshake";
        case ProbeStage::TlsEhlo: return "EHLO after TLS";
        case ProbeStage::Quit: return "QUIT";
        case ProbeStage::Done: return "done";
    }
    return "?";
}

namespace {

struct SessionFree {
    void operator()(gnutls_session_int* s) const { gnutls_deinit(s); }
};
struct CredFree {
    void operator()(gnutls_certificate_credentials_st* c) const {
        gnutls_certificate_free_credentials(c);
    }
};

int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

struct Reply {
    int code = 0;
    std::vector<std::string> lines;  // text after "ddd-" / "ddd "
};

}  // namespace

struct SmtpProbe::Impl {
    enum class Io { Read, Write };

    event_base* base = nullptr;
    SmtpProbeSettings settings;
    Callback done;
    SmtpProbeResult result;
    int64_t started = 0;
    UniqueFd fd;
    EventPtr read_ev, write_ev, timer;
    std::unique_ptr<gnutls_session_int, SessionFree> session;
    std::unique_ptr<gnutls_certificate_credentials_st, CredFree> cred;
    std::string in, out;
    bool sending = false;      // out is being written; then a reply is read
    bool handshaking = false;  // gnutls_handshake in progress
    bool quitting = false;     // QUIT sent after a failure: finish with `failure` then
    std::string failure;
    ProbeStage failed_stage = ProbeStage::Connect;
    bool finished = false;

    ~Impl() {
        read_ev.reset();
        write_ev.reset();
        timer.reset();
    }

    static void on_io(evutil_socket_t, short what, void* arg) {
        auto* self = static_cast<Impl*>(arg);
        if (what & EV_TIMEOUT) return;
        self->advance();
    }
    static void on_timer(evutil_socket_t, short, void* arg) {
        auto* self = static_cast<Impl*>(arg);
        if (self->pending_later) return self->finish();
        const bool connecting = self->result.stage == ProbeStage::Connect;
        self->fail(std::string(connecting ? "connect" : "no reply") + " within " +
                       std::to_string(connecting ? self->settings.connect_timeout_ms
                                                 : self->settings.read_timeout_ms) +
                       " ms (timeout)",
                   false);
    }

    void arm_timer(int64_t ms) {
        const timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
        evtimer_add(timer.get(), &tv);
    }

    void wait(Io io) { event_add(io == Io::Read ? read_ev.get() : write_ev.get(), nullptr); }

    // Ends the probe with `why` ("" = success). The callback may destroy us: nothing after it.
    void finish() {
        if (finished) return;
        finished = true;
        // The events do not exist yet when start() failed before the socket was made.
        if (read_ev) event_del(read_ev.get());
        if (write_ev) event_del(write_ev.get());
        if (timer) evtimer_del(timer.get());
        if (session && result.tls) gnutls_bye(session.get(), GNUTLS_SHUT_WR);  // best effort
        session.reset();
        fd.reset();
        result.elapsed_ms = now_ms() - started;
        if (!failure.empty()) {
            result.stage = failed_stage;
            result.error = failure;
        } else {
            result.stage = ProbeStage::Done;
        }
        Callback cb = std::move(done);
        const SmtpProbeResult r = result;
        cb(r);
    }

    // A failure at the current stage. `polite`: the connection still speaks SMTP, so QUIT
    // is sent first (its reply is not judged).
    void fail(const std::string& why, bool polite) {
        if (finished) return;
        if (failure.empty()) {
            failure = log::sanitize(why, 300);
            failed_stage = result.stage;
        }
        if (polite && !quitting && fd) {
            quitting = true;
            result.stage = ProbeStage::Quit;
            return send_command("QUIT");
        }
        finish();
    }

    void start() {
        started = now_ms();
        timer.reset(evtimer_new(base, on_timer, this));
        sockaddr_storage ss{};
        socklen_t len = 0;
        int family = AF_INET;
        auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
        auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
        if (inet_pton(AF_INET, settings.address.c_str(), &v4->sin_addr) == 1) {
            v4->sin_family = AF_INET;
            v4->sin_port = htons(settings.port);
            len = sizeof *v4;
        } else if (inet_pton(AF_INET6, settings.address.c_str(), &v6->sin6_addr) == 1) {
            family = AF_INET6;
            v6->sin6_family = AF_INET6;
            v6->sin6_port = htons(settings.port);
            len = sizeof *v6;
        } else {
            return later("not an IP address");
        }
        fd.reset(socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        if (!fd) return later(std::string("socket: ") + std::strerror(errno));
        read_ev.reset(event_new(base, fd.get(), EV_READ, on_io, this));
        write_ev.reset(event_new(base, fd.get(), EV_WRITE, on_io, this));
        if (connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS)
            return later(std::strerror(errno));
        arm_timer(settings.connect_timeout_ms);
        wait(Io::Write);
    }

    // A failure found before start() returns is reported from the loop, as promised.
    void later(const std::string& why) {
        failure = why;
        failed_stage = ProbeStage::Connect;
        pending_later = true;
        arm_timer(0);
    }
    bool pending_later = false;

    void advance() {
        if (finished) return;
        if (pending_later) return finish();
        if (result.stage == ProbeStage::Connect) return connected();
        if (handshaking) return handshake();
        if (sending) return flush();
        read_reply();
    }

    void connected() {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        if (err != 0) return fail(std::strerror(err), false);
        result.connected = true;
        if (settings.tls_on_connect) return begin_handshake();
        result.stage = ProbeStage::Banner;
        arm_timer(settings.read_timeout_ms);
        wait(Io::Read);
    }

    // ---- plaintext or TLS bytes ----

    // Appends what can be read now. 1: got bytes, 0: would block, -1: EOF or error (failed).
    int read_some() {
        char buf[4096];
        if (result.tls) {
            const ssize_t n = gnutls_record_recv(session.get(), buf, sizeof buf);
            if (n > 0) {
                in.append(buf, static_cast<std::size_t>(n));
                return 1;
            }
            if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) return 0;
            fail(n == 0 ? "connection closed by the server"
                        : std::string("TLS read: ") + gnutls_strerror(static_cast<int>(n)),
                 false);
            return -1;
        }
        const ssize_t n = recv(fd.get(), buf, sizeof buf, 0);
        if (n > 0) {
            in.append(buf, static_cast<std::size_t>(n));
            return 1;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
        fail(n == 0 ? "connection closed by the server" : std::string(std::strerror(errno)), false);
        return -1;
    }

    void send_command(const std::string& line) {
        out = line + "\r\n";
        sending = true;
        arm_timer(settings.read_timeout_ms);
        flush();
    }

    void flush() {
        while (!out.empty()) {
            ssize_t n;
            if (result.tls) {
                n = gnutls_record_send(session.get(), out.data(), out.size());
                if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) return wait(Io::Write);
                if (n < 0) return fail(std::string("TLS write: ") + gnutls_strerror(static_cast<int>(n)), false);
            } else {
                n = send(fd.get(), out.data(), out.size(), MSG_NOSIGNAL);
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                    return wait(Io::Write);
                if (n < 0) return fail(std::strerror(errno), false);
            }
            out.erase(0, static_cast<std::size_t>(n));
        }
        sending = false;
        read_reply();
    }

    // A complete reply at the front of `in` (removed), nullopt when more is needed; sets
    // `bad` when the server breaks the limits or the syntax.
    std::optional<Reply> take_reply(std::string& bad) {
        Reply r;
        std::size_t pos = 0;
        for (;;) {
            const std::size_t nl = in.find('\n', pos);
            if (nl == std::string::npos) {
                if (in.size() - pos > kMaxSmtpLine) bad = "reply line too long";
                return std::nullopt;
            }
            if (nl - pos > kMaxSmtpLine) {
                bad = "reply line too long";
                return std::nullopt;
            }
            std::string line = in.substr(pos, nl - pos);
            if (!line.empty() && line.back() == '\r') line.pop_back();
            pos = nl + 1;
            if (line.size() < 3 || !std::isdigit(static_cast<unsigned char>(line[0])) ||
                !std::isdigit(static_cast<unsigned char>(line[1])) ||
                !std::isdigit(static_cast<unsigned char>(line[2])) ||
                (line.size() > 3 && line[3] != ' ' && line[3] != '-')) {
                bad = "not an SMTP reply: " + line.substr(0, 80);  // fail() sanitizes
                return std::nullopt;
            }
            const int code = std::stoi(line.substr(0, 3));
            if (r.lines.empty()) r.code = code;
            else if (code != r.code) {
                bad = "reply codes differ within one reply";
                return std::nullopt;
            }
            r.lines.push_back(line.size() > 4 ? line.substr(4) : "");
            if (r.lines.size() > kMaxSmtpReplyLines) {
                bad = "reply has too many lines";
                return std::nullopt;
            }
            if (line.size() == 3 || line[3] == ' ') break;
        }
        in.erase(0, pos);
        return r;
    }

    void read_reply() {
        for (;;) {
            std::string bad;
            if (auto r = take_reply(bad)) return on_reply(*r);
            if (!bad.empty()) return fail(bad, false);
            const int got = read_some();
            if (got < 0) return;
            if (got == 0) {
                if (result.tls && gnutls_record_get_direction(session.get()) == 1)
                    return wait(Io::Write);
                return wait(Io::Read);
            }
        }
    }

    static std::string first_line(const Reply& r) {
        return std::to_string(r.code) + " " + (r.lines.empty() ? "" : r.lines[0]);
    }

    void on_reply(const Reply& r) {
        evtimer_del(timer.get());
        switch (result.stage) {
            case ProbeStage::Banner:
                result.banner = log::sanitize(first_line(r), 200);
                if (r.code != 220) return fail("greeting was " + first_line(r), true);
                result.stage = settings.tls_on_connect ? ProbeStage::TlsEhlo : ProbeStage::Ehlo;
                return send_command("EHLO " + settings.helo);
            case ProbeStage::Ehlo:
                if (r.code != 250) return fail("EHLO refused: " + first_line(r), true);
                for (std::size_t i = 1; i < r.lines.size(); ++i) {
                    std::string word = r.lines[i].substr(0, r.lines[i].find(' '));
                    for (char& c : word) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
                    if (word == "STARTTLS") result.starttls_offered = true;
                }
                result.stage = ProbeStage::StartTls;
                if (!result.starttls_offered) return fail("STARTTLS not offered", true);
                return send_command("STARTTLS");
            case ProbeStage::StartTls:
                if (r.code != 220) return fail("STARTTLS refused: " + first_line(r), true);
                if (!in.empty())
                    return fail("the server sent data after its STARTTLS reply (injection?)",
                                false);
                return begin_handshake();
            case ProbeStage::TlsEhlo:
                if (r.code != 250) return fail("EHLO refused after TLS: " + first_line(r), true);
                result.stage = ProbeStage::Quit;
                return send_command("QUIT");
            case ProbeStage::Quit:
                return finish();  // any reply ends a polite goodbye
            default:
                return fail("unexpected reply", false);
        }
    }

    // ---- TLS ----

    void begin_handshake() {
        result.stage = ProbeStage::Handshake;
        gnutls_certificate_credentials_t c = nullptr;
        if (gnutls_certificate_allocate_credentials(&c) != 0)
            return fail("cannot allocate TLS credentials", false);
        cred.reset(c);
        gnutls_session_t s = nullptr;
        // GNUTLS_NO_SIGNAL: a server that drops the connection must not kill `tlspolicy` with
        // SIGPIPE (the CLI does not ignore it; the plaintext path uses MSG_NOSIGNAL).
        if (gnutls_init(&s, GNUTLS_CLIENT | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL) != 0)
            return fail("cannot create a TLS session", false);
        session.reset(s);
        // No verification during the handshake: the chain is judged afterwards
        // (probe/verify.h), so that a failed check can still be reported in full.
        if (gnutls_set_default_priority(s) != 0 ||
            gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, c) != 0)
            return fail("cannot set up the TLS session", false);
        if (!settings.sni.empty())
            gnutls_server_name_set(s, GNUTLS_NAME_DNS, settings.sni.data(), settings.sni.size());
        gnutls_transport_set_int(s, fd.get());
        handshaking = true;
        arm_timer(settings.read_timeout_ms);
        handshake();
    }

    void handshake() {
        const int rc = gnutls_handshake(session.get());
        if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED)
            return wait(gnutls_record_get_direction(session.get()) == 1 ? Io::Write : Io::Read);
        handshaking = false;
        if (rc < 0) return fail(std::string("TLS handshake failed: ") + gnutls_strerror(rc), false);
        evtimer_del(timer.get());
        result.tls = true;
        if (const char* v = gnutls_protocol_get_name(gnutls_protocol_get_version(session.get())))
            result.tls_version = v;
        if (char* desc = gnutls_session_get_desc(session.get())) {
            result.cipher = log::sanitize(desc, 200);
            gnutls_free(desc);
        }
        unsigned n = 0;
        const gnutls_datum_t* peers = gnutls_certificate_get_peers(session.get(), &n);
        for (unsigned i = 0; peers && i < n && i < 16; ++i)
            result.chain.emplace_back(reinterpret_cast<const char*>(peers[i].data), peers[i].size);
        if (settings.tls_on_connect) {
            result.stage = ProbeStage::Banner;
            arm_timer(settings.read_timeout_ms);
            return read_reply();
        }
        result.stage = ProbeStage::TlsEhlo;
        send_command("EHLO " + settings.helo);
    }
};

SmtpProbe::SmtpProbe(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SmtpProbe::~SmtpProbe() = default;

std::unique_ptr<SmtpProbe> SmtpProbe::start(event_base* base, SmtpProbeSettings settings,
                                            Callback done) {
    auto impl = std::make_unique<Impl>();
    impl->base = base;
    impl->settings = std::move(settings);
    impl->done = std::move(done);
    Impl* raw = impl.get();
    std::unique_ptr<SmtpProbe> probe(new SmtpProbe(std::move(impl)));
    raw->start();
    return probe;
}

}  // namespace tlspolicy
