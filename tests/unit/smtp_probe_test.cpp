// SmtpProbe (src/probe/smtp_probe.h) against a scripted fake SMTP server: a listening socket
// on 127.0.0.1 (port 0) served on the same libevent loop as the probe. Each case scripts what
// the server says (greeting, replies to EHLO / STARTTLS / QUIT, closing, switching to TLS or
// to recording raw bytes) and checks the probe's result (stage, error, flags) and every line
// the client sent. The TLS cases use a GnuTLS server side with a self-signed certificate made
// here. Nothing waits on time except the module's own timeouts (set to 200 ms where a case
// needs one to expire); the loop runs until the callback came and the server saw the end of
// the connection, under a 5 s watchdog.
#include "probe/smtp_probe.h"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "got_want.h"
#include "util/event.h"
#include "util/fd.h"

using namespace tlspolicy;

namespace tlspolicy {
// For got_want() messages (found by argument-dependent lookup).
inline std::string shown(ProbeStage s) {
    return probe_stage_name(s);
}
}  // namespace tlspolicy

namespace {

using testutil::printable_ascii;

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

using Lines = std::vector<std::string>;

// ---------------------------------------------------------------------------------------------
// The server's TLS identity: an ECDSA P-256 key and a self-signed certificate, made once.

struct Identity {
    gnutls_certificate_credentials_t cred = nullptr;
    std::string der;
    Identity() {
        gnutls_x509_privkey_t key = nullptr;
        gnutls_x509_crt_t crt = nullptr;
        REQUIRE(gnutls_x509_privkey_init(&key) == GNUTLS_E_SUCCESS);
        REQUIRE(gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
                                             GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1),
                                             0) == GNUTLS_E_SUCCESS);
        REQUIRE(gnutls_x509_crt_init(&crt) == GNUTLS_E_SUCCESS);
        const unsigned char serial[] = {0x01, 0x23};
        const time_t now = time(nullptr);
        REQUIRE(gnutls_x509_crt_set_version(crt, 3) == GNUTLS_E_SUCCESS);
        REQUIRE(gnutls_x509_crt_set_serial(crt, serial, sizeof serial) == GNUTLS_E_SUCCESS);
        REQUIRE(gnutls_x509_crt_set_activation_time(crt, now - 86400) == GNUTLS_E_SUCCESS);
        REQUIRE(gnutls_x509_crt_set_expiration_time(crt, now + 30 * 86400) == GNUTLS_E_SUCCESS);
        const char* err = nullptr;
        REQUIRE(gnutls_x509_crt_set_dn(crt, "CN=mx.test", &err) == GNUTLS_E_SUCCESS);
        REQUIRE(gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, "mx.test", 7,
                                                     GNUTLS_FSAN_APPEND) == GNUTLS_E_SUCCESS);
        REQUIRE(gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE) ==
                GNUTLS_E_SUCCESS);
        REQUIRE(gnutls_x509_crt_set_key(crt, key) == GNUTLS_E_SUCCESS);
        REQUIRE(gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0) == GNUTLS_E_SUCCESS);
        gnutls_datum_t d{nullptr, 0};
        REQUIRE(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, &d) == GNUTLS_E_SUCCESS);
        der.assign(reinterpret_cast<const char*>(d.data), d.size);
        gnutls_free(d.data);
        REQUIRE(gnutls_certificate_allocate_credentials(&cred) == GNUTLS_E_SUCCESS);
        REQUIRE(gnutls_certificate_set_x509_key(cred, &crt, 1, key) == GNUTLS_E_SUCCESS);
        gnutls_x509_crt_deinit(crt);
        gnutls_x509_privkey_deinit(key);
    }
    ~Identity() { gnutls_certificate_free_credentials(cred); }
    Identity(const Identity&) = delete;
    Identity& operator=(const Identity&) = delete;
};

const Identity& identity() {
    static const Identity id;
    return id;
}

// ---------------------------------------------------------------------------------------------
// The scripted fake server.

// What the server does once a reply (or the greeting) is written.
enum class Then {
    Nothing,
    Close,     // close the connection
    StartTls,  // the server side of a TLS handshake on the same socket
    Raw,       // stop answering; record every byte received in `raw`
};

struct Script {
    bool tls_on_connect = false;                     // handshake first, then the greeting over TLS
    std::string greeting = "220 mx.test ESMTP\r\n";  // "" = silent
    Then after_greeting = Then::Nothing;
    std::string ehlo = "250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n";
    std::string starttls = "220 2.0.0 ready\r\n";
    Then after_starttls = Then::StartTls;
    std::string tls_ehlo = "250-mx.test\r\n250 8BITMIME\r\n";
    std::string quit = "221 2.0.0 bye\r\n";
    bool close_after_handshake = false;  // close as soon as the server's handshake completes
    // Called when the connection is accepted, for each line received (after it is recorded,
    // before it is answered) and for raw bytes. They may destroy the probe.
    std::function<void()> on_accept;
    std::function<void(const std::string&)> on_line;
    std::function<void()> on_raw;
    std::string raw_reply;  // sent once, when the first raw bytes arrive
};

class FakeSmtp {
  public:
    // What the test looks at.
    Lines lines;              // every line the client sent, without CRLF; "[tls] " when over TLS
    std::string raw;          // bytes received in Raw mode (and plaintext left over at STARTTLS)
    int accepted = 0;         // connections accepted
    bool closed = false;      // the accepted connection is over
    bool client_eof = false;  // ... because the client closed it
    bool handshake_done = false;
    std::string handshake_error;
    std::string sni;  // the server_name the client sent

    // Listens on 127.0.0.1 (or ::1 when `v6`), port 0.
    FakeSmtp(event_base* base, Script script, bool v6 = false)
        : base_(base), script_(std::move(script)) {
        listen_fd_.reset(
            socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        REQUIRE(listen_fd_);
        sockaddr_storage ss{};
        socklen_t len = 0;
        if (v6) {
            auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
            sin6->sin6_family = AF_INET6;
            sin6->sin6_addr = in6addr_loopback;
            len = sizeof *sin6;
        } else {
            auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
            sin->sin_family = AF_INET;
            sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            len = sizeof *sin;
        }
        REQUIRE(bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
        REQUIRE(listen(listen_fd_.get(), 8) == 0);
        REQUIRE(getsockname(listen_fd_.get(), reinterpret_cast<sockaddr*>(&ss), &len) == 0);
        port_ = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                         : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
        accept_ev_.reset(
            event_new(base_, listen_fd_.get(), EV_READ | EV_PERSIST, on_accept_cb, this));
        event_add(accept_ev_.get(), nullptr);
    }
    ~FakeSmtp() { close_conn(); }
    FakeSmtp(const FakeSmtp&) = delete;
    FakeSmtp& operator=(const FakeSmtp&) = delete;

    uint16_t port() const { return port_; }

  private:
    enum class Mode { Lines, Handshake, Raw };

    event_base* base_;
    Script script_;
    UniqueFd listen_fd_, conn_;
    EventPtr accept_ev_, read_ev_, write_ev_;
    gnutls_session_t tls_ = nullptr;
    bool tls_up_ = false;
    Mode mode_ = Mode::Lines;
    std::string in_, out_;
    bool close_after_flush_ = false;
    uint16_t port_ = 0;

    static void on_accept_cb(evutil_socket_t, short, void* arg) {
        static_cast<FakeSmtp*>(arg)->accept_one();
    }
    static void on_read_cb(evutil_socket_t, short, void* arg) {
        auto* self = static_cast<FakeSmtp*>(arg);
        if (self->mode_ == Mode::Handshake) return self->handshake();
        self->read_all();
    }
    static void on_write_cb(evutil_socket_t, short, void* arg) {
        auto* self = static_cast<FakeSmtp*>(arg);
        if (self->mode_ == Mode::Handshake) return self->handshake();
        self->flush();
    }

    void accept_one() {
        const int fd = accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        ++accepted;
        if (conn_ || closed) {  // one conversation per server
            ::close(fd);
            return;
        }
        conn_.reset(fd);
        read_ev_.reset(event_new(base_, fd, EV_READ | EV_PERSIST, on_read_cb, this));
        write_ev_.reset(event_new(base_, fd, EV_WRITE, on_write_cb, this));
        event_add(read_ev_.get(), nullptr);
        if (script_.on_accept) script_.on_accept();
        if (script_.tls_on_connect) return start_tls();
        send(script_.greeting, script_.after_greeting);
    }

    void close_conn() {
        if (!conn_) return;
        if (tls_) gnutls_deinit(tls_);
        tls_ = nullptr;
        read_ev_.reset();
        write_ev_.reset();
        conn_.reset();
        closed = true;
    }

    // Writes `bytes` (plaintext: queued; TLS: at once), then does `then`.
    void send(const std::string& bytes, Then then) {
        if (!conn_) return;
        if (tls_up_) {
            std::size_t off = 0;
            while (off < bytes.size()) {
                const ssize_t n = gnutls_record_send(tls_, bytes.data() + off, bytes.size() - off);
                if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) continue;
                if (n < 0) break;  // the client is gone; the read side sees it
                off += static_cast<std::size_t>(n);
            }
        } else {
            out_ += bytes;
            flush();
            if (!conn_) return;
        }
        switch (then) {
            case Then::Nothing:
                break;
            case Then::Close:
                if (out_.empty())
                    close_conn();
                else
                    close_after_flush_ = true;
                break;
            case Then::StartTls:
                REQUIRE(out_.empty());
                start_tls();
                break;
            case Then::Raw:
                mode_ = Mode::Raw;
                raw += in_;  // anything the client sent after its command
                in_.clear();
                break;
        }
    }

    void flush() {
        while (!out_.empty()) {
            const ssize_t n = ::send(conn_.get(), out_.data(), out_.size(), MSG_NOSIGNAL);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
                event_add(write_ev_.get(), nullptr);
                return;
            }
            if (n < 0) {  // the client is gone: drop the rest
                out_.clear();
                break;
            }
            out_.erase(0, static_cast<std::size_t>(n));
        }
        if (close_after_flush_) close_conn();
    }

    void start_tls() {
        REQUIRE(gnutls_init(&tls_, GNUTLS_SERVER | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL) ==
                GNUTLS_E_SUCCESS);
        REQUIRE(gnutls_set_default_priority(tls_) == GNUTLS_E_SUCCESS);
        REQUIRE(gnutls_credentials_set(tls_, GNUTLS_CRD_CERTIFICATE, identity().cred) ==
                GNUTLS_E_SUCCESS);
        gnutls_certificate_server_set_request(tls_, GNUTLS_CERT_IGNORE);
        gnutls_transport_set_int(tls_, conn_.get());
        raw += in_;  // plaintext the client sent after STARTTLS (it must not)
        in_.clear();
        mode_ = Mode::Handshake;
        handshake();
    }

    void handshake() {
        const int rc = gnutls_handshake(tls_);
        if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) {
            if (gnutls_record_get_direction(tls_) == 1) event_add(write_ev_.get(), nullptr);
            return;
        }
        if (rc < 0) {
            handshake_error = gnutls_strerror(rc);
            return close_conn();
        }
        handshake_done = true;
        tls_up_ = true;
        mode_ = Mode::Lines;
        char name[256];
        std::size_t len = sizeof name;
        unsigned type = 0;
        if (gnutls_server_name_get(tls_, name, &len, &type, 0) == GNUTLS_E_SUCCESS &&
            type == GNUTLS_NAME_DNS)
            sni.assign(name, strnlen(name, len));
        if (script_.close_after_handshake) return close_conn();
        if (script_.tls_on_connect) send(script_.greeting, script_.after_greeting);
        if (conn_) read_all();  // records that arrived with the last handshake message
    }

    // Reads until the socket (and GnuTLS) has nothing more; handles each complete line.
    void read_all() {
        while (conn_) {
            char buf[8192];
            ssize_t n;
            if (tls_up_) {
                n = gnutls_record_recv(tls_, buf, sizeof buf);
                if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) return;
            } else {
                n = recv(conn_.get(), buf, sizeof buf, 0);
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
            }
            if (n <= 0) {  // EOF, reset, or a TLS error: the client is gone
                client_eof = true;
                return close_conn();
            }
            if (mode_ == Mode::Raw) {
                raw.append(buf, static_cast<std::size_t>(n));
                if (!script_.raw_reply.empty())
                    send(std::exchange(script_.raw_reply, ""), Then::Nothing);
                if (script_.on_raw) script_.on_raw();
                continue;
            }
            in_.append(buf, static_cast<std::size_t>(n));
            handle_lines();
        }
    }

    void handle_lines() {
        for (;;) {
            if (!conn_ || mode_ != Mode::Lines) return;
            const std::size_t nl = in_.find('\n');
            if (nl == std::string::npos) return;
            std::string line = in_.substr(0, nl);
            in_.erase(0, nl + 1);
            if (!line.empty() && line.back() == '\r') line.pop_back();
            lines.push_back((tls_up_ ? "[tls] " : "") + line);
            if (script_.on_line) script_.on_line(lines.back());
            answer(line);
        }
    }

    void answer(const std::string& line) {
        std::string verb = line.substr(0, line.find(' '));
        for (char& c : verb)
            c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        if (verb == "EHLO" || verb == "HELO")
            return send(tls_up_ ? script_.tls_ehlo : script_.ehlo, Then::Nothing);
        if (verb == "STARTTLS") return send(script_.starttls, script_.after_starttls);
        if (verb == "QUIT") return send(script_.quit, Then::Close);
        send("500 5.5.2 unknown command\r\n", Then::Nothing);
    }
};

// ---------------------------------------------------------------------------------------------
// Running the loop

// Runs the loop until `until()` holds; a 5 s watchdog ends a stuck case (a safety net only).
void run_until(event_base* base, const std::function<bool()>& until) {
    bool expired = false;
    EventPtr watchdog(evtimer_new(
        base, [](evutil_socket_t, short, void* arg) { *static_cast<bool*>(arg) = true; },
        &expired));
    const timeval tv{5, 0};
    evtimer_add(watchdog.get(), &tv);
    while (!until() && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    REQUIRE_MESSAGE(!expired, "the loop did not reach the expected state within 5 s");
    // Whatever is ready now still runs (a second callback would show here).
    event_base_loop(base, EVLOOP_NONBLOCK);
}

int events_added(event_base* base) {
    return event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED);
}

SmtpProbeSettings settings_for(uint16_t port) {
    SmtpProbeSettings s;
    s.address = "127.0.0.1";
    s.port = port;
    s.sni = "mx.test";
    s.helo = "probe.test";
    s.connect_timeout_ms = 3000;
    s.read_timeout_ms = 3000;
    return s;
}

// One conversation with a scripted server, and what both sides saw.
struct Outcome {
    SmtpProbeResult r;
    int calls = 0;
    bool called_before_start_returned = false;
    Lines lines;
    std::string raw;
    int accepted = 0;
    bool client_eof = false;
    bool handshake_done = false;
    std::string handshake_error;
    std::string sni;
    int probe_events_after = -1;  // events the probe still had added after its callback
};

Outcome converse(Script script, const std::function<void(SmtpProbeSettings&)>& tweak = {},
                 bool v6 = false) {
    EventBasePtr base(event_base_new());
    REQUIRE(base);
    auto server = std::make_unique<FakeSmtp>(base.get(), std::move(script), v6);
    SmtpProbeSettings s = settings_for(server->port());
    if (v6) s.address = "::1";
    if (tweak) tweak(s);
    Outcome o;
    bool returned = false;
    auto probe = SmtpProbe::start(base.get(), s, [&](const SmtpProbeResult& r) {
        if (!returned) o.called_before_start_returned = true;
        ++o.calls;
        o.r = r;
    });
    returned = true;
    REQUIRE(probe);
    run_until(base.get(), [&] { return o.calls > 0 && server->closed; });
    o.lines = server->lines;
    o.raw = server->raw;
    o.accepted = server->accepted;
    o.client_eof = server->client_eof;
    o.handshake_done = server->handshake_done;
    o.handshake_error = server->handshake_error;
    o.sni = server->sni;
    server.reset();
    o.probe_events_after = events_added(base.get());  // the probe object is still alive
    probe.reset();
    return o;
}

// Checks shared by every case that reached the server.
void check_common(const Outcome& o) {
    CHECK_EQ_GW("callbacks", o.calls, 1);
    CHECK_FALSE(o.called_before_start_returned);
    CHECK_EQ_GW("connections accepted", o.accepted, 1);
    CHECK_EQ_GW("events left by the finished probe", o.probe_events_after, 0);
    CHECK(printable_ascii(o.r.error));
    CHECK(printable_ascii(o.r.banner));
}

std::string repeat_lines(const std::string& prefix, std::size_t n) {
    std::string out;
    for (std::size_t i = 0; i < n; ++i)
        out += prefix + "line " + std::to_string(i) + "\r\n";
    return out;
}

// ---------------------------------------------------------------------------------------------
// Plaintext conversations

TEST_CASE("smtp_probe: multi-line banner, no STARTTLS in the EHLO reply") {
    Script sc;
    sc.greeting = "220-mx.test ESMTP first\r\n220-second\r\n220 third\r\n";
    sc.ehlo = "250-mx.test hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n";
    const Outcome o = converse(sc);
    check_common(o);
    CHECK(o.r.connected);
    CHECK_EQ_GW("stage", o.r.stage, ProbeStage::StartTls);
    CHECK_EQ_GW("error", o.r.error, std::string("STARTTLS not offered"));
    CHECK_EQ_GW("starttls_offered", o.r.starttls_offered, false);
    CHECK_EQ_GW("tls", o.r.tls, false);
    // The first line of the greeting, rendered "code text".
    CHECK_EQ_GW("banner", o.r.banner, std::string("220 mx.test ESMTP first"));
    CHECK_EQ_GW("client lines", o.lines, (Lines{"EHLO probe.test", "QUIT"}));
    CHECK(o.raw.empty());
    CHECK(o.r.chain.empty());
    CHECK(o.r.tls_version.empty());
}

TEST_CASE("smtp_probe: STARTTLS keyword recognition in the EHLO reply") {
    struct Row {
        const char* name;
        std::string ehlo;
        bool offered;
    };
    const Row rows[] = {
        {"lower case, continuation line", "250-mx.test\r\n250-starttls\r\n250 SIZE 1\r\n", true},
        {"mixed case, last line", "250-mx.test\r\n250-SIZE 1\r\n250 StartTLS\r\n", true},
        {"with a parameter", "250-mx.test\r\n250 STARTTLS x\r\n", true},
        {"LF only line ends", "250-mx.test\n250 STARTTLS\n", true},
        {"a longer keyword", "250-mx.test\r\n250 STARTTLSX\r\n", false},
        {"a prefixed keyword", "250-mx.test\r\n250 XSTARTTLS\r\n", false},
        {"only in the greeting line's text", "250 mx.test STARTTLS\r\n", false},
    };
    for (const Row& row : rows) {
        const std::string name = row.name;
        CAPTURE(name);
        Script sc;
        sc.ehlo = row.ehlo;
        sc.starttls = "454 4.7.0 TLS not available\r\n";
        sc.after_starttls = Then::Nothing;
        const Outcome o = converse(sc);
        check_common(o);
        CHECK_EQ_GW("starttls_offered", o.r.starttls_offered, row.offered);
        CHECK_EQ_GW("stage", o.r.stage, ProbeStage::StartTls);
        if (row.offered) {
            CHECK_EQ_GW("error", o.r.error,
                        std::string("STARTTLS refused: 454 4.7.0 TLS not available"));
            CHECK_EQ_GW("client lines", o.lines, (Lines{"EHLO probe.test", "STARTTLS", "QUIT"}));
        } else {
            CHECK_EQ_GW("error", o.r.error, std::string("STARTTLS not offered"));
            CHECK_EQ_GW("client lines", o.lines, (Lines{"EHLO probe.test", "QUIT"}));
        }
    }
}

TEST_CASE("smtp_probe: STARTTLS refused with 454: QUIT, then nothing else") {
    Script sc;
    sc.starttls = "454 4.7.0 TLS not available due to local problem\r\n";
    sc.after_starttls = Then::Nothing;
    const Outcome o = converse(sc);
    check_common(o);
    CHECK(o.r.connected);
    CHECK(o.r.starttls_offered);
    CHECK_FALSE(o.r.tls);
    CHECK_EQ_GW("stage", o.r.stage, ProbeStage::StartTls);
    CHECK(contains(o.r.error, "STARTTLS refused"));
    CHECK(contains(o.r.error, "454"));
    CHECK_EQ_GW("client lines", o.lines, (Lines{"EHLO probe.test", "STARTTLS", "QUIT"}));
    CHECK_FALSE(o.handshake_done);
}

TEST_CASE("smtp_probe: the polite QUIT does not change the first failure") {
    SUBCASE("the server never answers QUIT (read timeout 200 ms)") {
        Script sc;
        sc.starttls = "454 4.7.0 later\r\n";
        sc.after_starttls = Then::Nothing;
        sc.quit = "";
        const Outcome o = converse(sc, [](SmtpProbeSettings& s) { s.read_timeout_ms = 200; });
        check_common(o);
        CHECK_EQ_GW("stage", o.r.stage, ProbeStage::StartTls);
        CHECK_EQ_GW("error", o.r.error, std::string("STARTTLS refused: 454 4.7.0 later"));
        CHECK_EQ_GW("client lines", o.lines, (Lines{"EHLO probe.test", "STARTTLS", "QUIT"}));
    }
    SUBCASE("the server answers QUIT with garbage") {
        Script sc;
        sc.greeting = "554 5.7.1 no service\r\n";
        sc.quit = "bye!\r\n";
        const Outcome o = converse(sc);
        check_common(o);
        CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Banner);
        CHECK_EQ_GW("error", o.r.error, std::string("greeting was 554 5.7.1 no service"));
    }
}

TEST_CASE("smtp_probe: bytes after the 220 to STARTTLS end the probe (injection)") {
    SUBCASE("in the same write") {
        Script sc;
        sc.starttls = "220 ready\r\n250 injected\r\n";
        sc.after_starttls = Then::Raw;  // record whatever the client sends next (nothing)
        const Outcome o = converse(sc);
        check_common(o);
        CHECK(o.r.connected);
        CHECK(o.r.starttls_offered);
        CHECK_FALSE(o.r.tls);
        CHECK_EQ_GW("stage", o.r.stage, ProbeStage::StartTls);
        CHECK(contains(o.r.error, "injection"));
        CHECK_EQ_GW("client lines", o.lines, (Lines{"EHLO probe.test", "STARTTLS"}));
        CHECK_EQ_GW("bytes after STARTTLS (a ClientHello or QUIT)", o.raw, std::string());
        CHECK(o.client_eof);
        CHECK(o.r.chain.empty());
    }
    SUBCASE("an incomplete extra line") {
        Script sc;
        sc.starttls = "220 ready\r\n2";
        sc.after_starttls = Then::Raw;
        const Outcome o = converse(sc);
        check_common(o);
        CHECK_EQ_GW("stage", o.r.stage, ProbeStage::StartTls);
        CHECK(contains(o.r.error, "injection"));
        CHECK_EQ_GW("bytes after STARTTLS", o.raw, std::string());
    }
}

TEST_CASE("smtp_probe: greeting 554: QUIT sent, stage banner") {
    Script sc;
    sc.greeting = "554-mx.test no SMTP service here\r\n554 go away\r\n";
    const Outcome o = converse(sc);
    check_common(o);
    CHECK(o.r.connected);
    CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Banner);
    CHECK_EQ_GW("error", o.r.error, std::string("greeting was 554 mx.test no SMTP service here"));
    CHECK_EQ_GW("banner", o.r.banner, std::string("554 mx.test no SMTP service here"));
    CHECK_EQ_GW("client lines", o.lines, (Lines{"QUIT"}));
    CHECK_FALSE(o.r.starttls_offered);
}

TEST_CASE("smtp_probe: EHLO refused: QUIT sent, stage EHLO") {
    Script sc;
    sc.ehlo = "550 5.7.1 not you\r\n";
    const Outcome o = converse(sc);
    check_common(o);
    CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Ehlo);
    CHECK_EQ_GW("error", o.r.error, std::string("EHLO refused: 550 5.7.1 not you"));
    CHECK_EQ_GW("client lines", o.lines, (Lines{"EHLO probe.test", "QUIT"}));
}

TEST_CASE("smtp_probe: a banner line longer than kMaxSmtpLine") {
    SUBCASE("just over the limit, never terminated: judged at once") {
        Script sc;
        sc.greeting = "220 " + std::string(kMaxSmtpLine, 'a');  // kMaxSmtpLine + 4, no LF
        const Outcome o = converse(sc);
        check_common(o);
        CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Banner);
        CHECK_EQ_GW("error", o.r.error, std::string("reply line too long"));
        // Not a timeout: the probe did not wait for a newline that never comes.
        CHECK(o.r.elapsed_ms < 3000);
        CHECK_EQ_GW("client lines", o.lines, Lines{});
    }
    SUBCASE("a 1 MiB flood without a newline") {
        Script sc;
        sc.greeting = "220 " + std::string(1 << 20, 'b');
        const Outcome o = converse(sc);
        check_common(o);
        CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Banner);
        CHECK_EQ_GW("error", o.r.error, std::string("reply line too long"));
        CHECK_EQ_GW("client lines", o.lines, Lines{});
    }
    SUBCASE("a terminated line of kMaxSmtpLine + 1 bytes of text") {
        Script sc;
        sc.greeting = "220 " + std::string(kMaxSmtpLine - 3, 'c') + "\r\n";
        const Outcome o = converse(sc);
        check_common(o);
        CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Banner);
        CHECK_EQ_GW("error", o.r.error, std::string("reply line too long"));
    }
    SUBCASE("a line of kMaxSmtpLine bytes with its CRLF is accepted") {
        Script sc;
        sc.greeting = "220 " + std::string(kMaxSmtpLine - 6, 'd') + "\r\n";
        sc.ehlo = "250 mx.test\r\n";
        const Outcome o = converse(sc);
        check_common(o);
        CHECK_EQ_GW("stage", o.r.stage, ProbeStage::StartTls);
        CHECK_EQ_GW("error", o.r.error, std::string("STARTTLS not offered"));
        CHECK(o.r.banner.size() <= 203);  // sanitized and bounded
    }
}

TEST_CASE("smtp_probe: lines per reply") {
    SUBCASE("kMaxSmtpReplyLines lines are accepted") {
        Script sc;
        sc.greeting = repeat_lines("220-", kMaxSmtpReplyLines - 1) + "220 last\r\n";
        sc.ehlo = "250 mx.test\r\n";
        const Outcome o = converse(sc);
        check_common(o);
        CHECK_EQ_GW("stage", o.r.stage, ProbeStage::StartTls);
        CHECK_EQ_GW("error", o.r.error, std::string("STARTTLS not offered"));
        CHECK_EQ_GW("banner", o.r.banner, std::string("220 line 0"));
    }
    SUBCASE("more than kMaxSmtpReplyLines continuation lines") {
        Script sc;
        sc.greeting = repeat_lines("220-", kMaxSmtpReplyLines + 1) + "220 last\r\n";
        const Outcome o = converse(sc);
        check_common(o);
        CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Banner);
        CHECK_EQ_GW("error", o.r.error, std::string("reply has too many lines"));
        CHECK_EQ_GW("client lines", o.lines, Lines{});
    }
    SUBCASE("an EHLO reply with too many lines") {
        Script sc;
        sc.ehlo = repeat_lines("250-", 200) + "250 STARTTLS\r\n";
        const Outcome o = converse(sc);
        check_common(o);
        CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Ehlo);
        CHECK_EQ_GW("error", o.r.error, std::string("reply has too many lines"));
        CHECK_EQ_GW("client lines", o.lines, Lines{"EHLO probe.test"});
    }
}

TEST_CASE("smtp_probe: malformed replies") {
    struct Row {
        const char* name;
        std::string greeting;
        std::string error;
    };
    const Row rows[] = {
        {"not a reply", "hello\r\n", "not an SMTP reply: hello"},
        {"two digits", "22 x\r\n", "not an SMTP reply: 22 x"},
        {"bad separator", "220_x\r\n", "not an SMTP reply: 220_x"},
        {"empty line", "\r\n", "not an SMTP reply: "},
        {"codes differ", "220-mx.test\r\n250 ok\r\n", "reply codes differ within one reply"},
        {"control bytes", "\x1b[31mred\r\n", "not an SMTP reply: \\x1b[31mred"},
    };
    for (const Row& row : rows) {
        const std::string name = row.name;
        CAPTURE(name);
        Script sc;
        sc.greeting = row.greeting;
        const Outcome o = converse(sc);
        check_common(o);
        CHECK(o.r.connected);
        CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Banner);
        CHECK_EQ_GW("error", o.r.error, row.error);
        // Not SMTP: no QUIT.
        CHECK_EQ_GW("client lines", o.lines, Lines{});
        CHECK(o.client_eof);
    }
}

TEST_CASE("smtp_probe: a banner with control bytes is sanitized") {
    Script sc;
    sc.greeting = std::string("220 mx\x1b[2J\x7f\xff ESMTP\r\n");
    sc.ehlo = "250 mx.test\r\n";
    const Outcome o = converse(sc);
    check_common(o);
    CHECK(contains(o.r.banner, "220 mx"));
    CHECK(printable_ascii(o.r.banner));
}

TEST_CASE("smtp_probe: a silent server: read timeout at the banner, one callback") {
    Script sc;
    sc.greeting = "";
    const Outcome o = converse(sc, [](SmtpProbeSettings& s) { s.read_timeout_ms = 200; });
    check_common(o);
    CHECK(o.r.connected);
    CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Banner);
    CHECK(contains(o.r.error, "timeout"));
    CHECK(contains(o.r.error, "200"));
    CHECK(o.r.elapsed_ms >= 150);
    CHECK(o.r.banner.empty());
    CHECK_EQ_GW("client lines", o.lines, Lines{});
    CHECK(o.client_eof);
}

TEST_CASE("smtp_probe: the server closes") {
    SUBCASE("right after the banner") {
        Script sc;
        sc.after_greeting = Then::Close;
        const Outcome o = converse(sc);
        check_common(o);
        CHECK(o.r.connected);
        CHECK_EQ_GW("banner", o.r.banner, std::string("220 mx.test ESMTP"));
        CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Ehlo);
        CHECK_EQ_GW("error", o.r.error, std::string("connection closed by the server"));
    }
    SUBCASE("in the middle of a multi-line reply") {
        Script sc;
        sc.greeting = "220-mx.test\r\n220-more";
        sc.after_greeting = Then::Close;
        const Outcome o = converse(sc);
        check_common(o);
        CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Banner);
        CHECK_EQ_GW("error", o.r.error, std::string("connection closed by the server"));
        CHECK(o.r.banner.empty());
    }
    SUBCASE("instead of answering STARTTLS") {
        Script sc;
        sc.starttls = "";
        sc.after_starttls = Then::Close;
        const Outcome o = converse(sc);
        check_common(o);
        CHECK_EQ_GW("stage", o.r.stage, ProbeStage::StartTls);
        CHECK_EQ_GW("error", o.r.error, std::string("connection closed by the server"));
        CHECK_FALSE(o.r.tls);
    }
}

// ---------------------------------------------------------------------------------------------
// No server

TEST_CASE("smtp_probe: connection refused") {
    uint16_t port = 0;
    {
        UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        REQUIRE(fd);
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(bind(fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0);
        socklen_t len = sizeof sin;
        REQUIRE(getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sin), &len) == 0);
        port = ntohs(sin.sin_port);
    }  // closed: nothing listens on `port`
    EventBasePtr base(event_base_new());
    int calls = 0;
    bool returned = false, early = false;
    SmtpProbeResult res;
    auto probe = SmtpProbe::start(base.get(), settings_for(port), [&](const SmtpProbeResult& r) {
        early = !returned;
        ++calls;
        res = r;
    });
    returned = true;
    run_until(base.get(), [&] { return calls > 0; });
    CHECK_EQ_GW("callbacks", calls, 1);
    CHECK_FALSE(early);
    CHECK_FALSE(res.connected);
    CHECK_EQ_GW("stage", res.stage, ProbeStage::Connect);
    CHECK(contains(res.error, "refused"));
    CHECK_EQ_GW("events left", events_added(base.get()), 0);
}

TEST_CASE("smtp_probe: connect timeout (a listener whose accept queue is full)") {
    // backlog 0 holds one connection that is never accepted; Linux then drops further SYNs,
    // so the probe's connect stays pending until its 200 ms timeout.
    UniqueFd listener(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(listener);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(listener.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0);
    REQUIRE(listen(listener.get(), 0) == 0);
    socklen_t len = sizeof sin;
    REQUIRE(getsockname(listener.get(), reinterpret_cast<sockaddr*>(&sin), &len) == 0);
    UniqueFd filler(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(connect(filler.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0);

    EventBasePtr base(event_base_new());
    int calls = 0;
    SmtpProbeResult res;
    SmtpProbeSettings s = settings_for(ntohs(sin.sin_port));
    s.connect_timeout_ms = 200;
    auto probe = SmtpProbe::start(base.get(), s, [&](const SmtpProbeResult& r) {
        ++calls;
        res = r;
    });
    run_until(base.get(), [&] { return calls > 0; });
    CHECK_EQ_GW("callbacks", calls, 1);
    CHECK_FALSE(res.connected);
    CHECK_EQ_GW("stage", res.stage, ProbeStage::Connect);
    CHECK_EQ_GW("error", res.error, std::string("connect within 200 ms (timeout)"));
    CHECK(res.elapsed_ms >= 150);
    CHECK_EQ_GW("events left", events_added(base.get()), 0);
}

TEST_CASE("smtp_probe: IPv6 loopback") {
    {
        UniqueFd probe6(socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        sin6.sin6_addr = in6addr_loopback;
        if (!probe6 || bind(probe6.get(), reinterpret_cast<sockaddr*>(&sin6), sizeof sin6) != 0) {
            MESSAGE("no IPv6 loopback here: case skipped");
            return;
        }
    }
    const Outcome o = converse({}, {}, true);
    check_common(o);
    CHECK(o.r.connected);
    CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Done);
    CHECK(o.r.tls);
    CHECK_EQ_GW("client lines", o.lines,
                (Lines{"EHLO probe.test", "STARTTLS", "[tls] EHLO probe.test", "[tls] QUIT"}));
}

TEST_CASE("smtp_probe: an address that is not an IP address") {
    for (const char* address : {"not-an-ip", "", "127.0.0.1 ", "mx.example.org"}) {
        const std::string shown_address = address;
        CAPTURE(shown_address);
        EventBasePtr base(event_base_new());
        int calls = 0;
        bool returned = false, returned_when_called = false;
        SmtpProbeResult res;
        SmtpProbeSettings s = settings_for(25);
        s.address = address;
        auto probe = SmtpProbe::start(base.get(), s, [&](const SmtpProbeResult& r) {
            returned_when_called = returned;
            ++calls;
            res = r;
        });
        returned = true;
        CHECK_EQ_GW("callbacks before the loop ran", calls, 0);
        run_until(base.get(), [&] { return calls > 0; });
        CHECK_EQ_GW("callbacks", calls, 1);
        CHECK(returned_when_called);
        CHECK_FALSE(res.connected);
        CHECK_EQ_GW("stage", res.stage, ProbeStage::Connect);
        CHECK_EQ_GW("error", res.error, std::string("not an IP address"));
        CHECK_EQ_GW("events left", events_added(base.get()), 0);
    }
}

TEST_CASE("smtp_probe: destroyed before the loop runs: no callback") {
    EventBasePtr base(event_base_new());
    int calls = 0;
    SmtpProbeSettings s = settings_for(25);
    s.address = "not-an-ip";
    auto probe = SmtpProbe::start(base.get(), s, [&](const SmtpProbeResult&) { ++calls; });
    probe.reset();
    CHECK_EQ_GW("events left", events_added(base.get()), 0);
    event_base_loop(base.get(), EVLOOP_NONBLOCK);
    CHECK_EQ_GW("callbacks", calls, 0);
}

// ---------------------------------------------------------------------------------------------
// Destroying a probe that has not finished

// Starts a probe against `sc`, lets `when` (given a function that destroys the probe) hook
// into the script, and runs until the server saw the client close.
void destroy_midway(Script sc, const std::function<void(Script&, std::function<void()>)>& when,
                    const std::function<void(SmtpProbeSettings&)>& tweak = {}) {
    EventBasePtr base(event_base_new());
    std::unique_ptr<SmtpProbe> probe;
    int calls = 0;
    bool destroyed = false;
    when(sc, [&] {
        if (!probe) return;
        probe.reset();
        destroyed = true;
    });
    FakeSmtp server(base.get(), std::move(sc));
    SmtpProbeSettings s = settings_for(server.port());
    if (tweak) tweak(s);
    probe = SmtpProbe::start(base.get(), s, [&](const SmtpProbeResult&) { ++calls; });
    run_until(base.get(), [&] { return destroyed && server.closed; });
    CHECK_EQ_GW("callbacks", calls, 0);
    CHECK(server.client_eof);  // the probe's socket was closed
}

TEST_CASE("smtp_probe: destroyed before it finishes: no callback, socket closed") {
    SUBCASE("from a timer while waiting for the banner of a silent server") {
        EventBasePtr base(event_base_new());
        Script sc;
        sc.greeting = "";
        std::unique_ptr<SmtpProbe> probe;
        EventPtr timer;
        int calls = 0;
        sc.on_accept = [&] {
            // A zero timer: the probe is freed from the loop, not from the server's code.
            timer.reset(evtimer_new(
                base.get(),
                [](evutil_socket_t, short, void* arg) {
                    static_cast<std::unique_ptr<SmtpProbe>*>(arg)->reset();
                },
                &probe));
            const timeval zero{0, 0};
            evtimer_add(timer.get(), &zero);
        };
        FakeSmtp server(base.get(), std::move(sc));
        SmtpProbeSettings s = settings_for(server.port());
        s.read_timeout_ms = 200;
        probe = SmtpProbe::start(base.get(), s, [&](const SmtpProbeResult&) { ++calls; });
        run_until(base.get(), [&] { return !probe && server.closed; });
        CHECK_EQ_GW("callbacks", calls, 0);
        CHECK(server.client_eof);
        timer.reset();
        // Only the server's listener is left: the probe's 200 ms timer went with it.
        CHECK_EQ_GW("events left", events_added(base.get()), 1);
    }
    SUBCASE("when the server receives EHLO") {
        destroy_midway({}, [](Script& sc, std::function<void()> destroy) {
            sc.on_line = [destroy](const std::string& line) {
                if (line.rfind("EHLO", 0) == 0) destroy();
            };
        });
    }
    SUBCASE("in the middle of the TLS handshake") {
        destroy_midway({}, [](Script& sc, std::function<void()> destroy) {
            sc.after_starttls = Then::Raw;  // the ClientHello arrives and is never answered
            sc.on_raw = destroy;
        });
    }
    SUBCASE("after the handshake, when the server receives EHLO over TLS") {
        destroy_midway({}, [](Script& sc, std::function<void()> destroy) {
            sc.on_line = [destroy](const std::string& line) {
                if (line.rfind("[tls] EHLO", 0) == 0) destroy();
            };
        });
    }
}

TEST_CASE("smtp_probe: the callback may destroy the probe") {
    EventBasePtr base(event_base_new());
    Script sc;
    sc.starttls = "454 4.7.0 no\r\n";
    sc.after_starttls = Then::Nothing;
    FakeSmtp server(base.get(), std::move(sc));
    std::unique_ptr<SmtpProbe> probe;
    int calls = 0;
    SmtpProbeResult res;
    probe =
        SmtpProbe::start(base.get(), settings_for(server.port()), [&](const SmtpProbeResult& r) {
            ++calls;
            res = r;
            probe.reset();
        });
    run_until(base.get(), [&] { return calls > 0 && server.closed; });
    CHECK_EQ_GW("callbacks", calls, 1);
    CHECK_FALSE(probe);
    CHECK_EQ_GW("error", res.error, std::string("STARTTLS refused: 454 4.7.0 no"));
}

// ---------------------------------------------------------------------------------------------
// TLS

TEST_CASE("smtp_probe: a full STARTTLS conversation") {
    const Outcome o = converse({});
    check_common(o);
    CHECK(o.r.connected);
    CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Done);
    CHECK_EQ_GW("error", o.r.error, std::string());
    CHECK_EQ_GW("banner", o.r.banner, std::string("220 mx.test ESMTP"));
    CHECK(o.r.starttls_offered);
    CHECK(o.r.tls);
    CHECK_FALSE(o.r.tls_version.empty());
    CHECK(contains(o.r.tls_version, "TLS"));
    CHECK_FALSE(o.r.cipher.empty());
    REQUIRE(o.r.chain.size() == 1);
    CHECK(o.r.chain[0] == identity().der);
    CHECK(o.handshake_done);
    CHECK_EQ_GW("SNI", o.sni, std::string("mx.test"));
    CHECK_EQ_GW("client lines", o.lines,
                (Lines{"EHLO probe.test", "STARTTLS", "[tls] EHLO probe.test", "[tls] QUIT"}));
    CHECK_EQ_GW("plaintext after STARTTLS", o.raw, std::string());
    CHECK(o.r.elapsed_ms >= 0);
}

TEST_CASE("smtp_probe: STARTTLS without SNI") {
    const Outcome o = converse({}, [](SmtpProbeSettings& s) { s.sni = ""; });
    check_common(o);
    CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Done);
    CHECK(o.r.tls);
    CHECK_EQ_GW("SNI", o.sni, std::string());
}

TEST_CASE("smtp_probe: TLS on connect") {
    Script sc;
    sc.tls_on_connect = true;
    sc.greeting = "220-mx.test ESMTP over TLS\r\n220 ok\r\n";
    sc.tls_ehlo = "250-mx.test\r\n250 SIZE 1000\r\n";
    const Outcome o = converse(sc, [](SmtpProbeSettings& s) {
        s.tls_on_connect = true;
        s.sni = "smtps.test";
    });
    check_common(o);
    CHECK(o.r.connected);
    CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Done);
    CHECK_EQ_GW("error", o.r.error, std::string());
    CHECK(o.r.tls);
    CHECK_FALSE(o.r.tls_version.empty());
    CHECK_FALSE(o.r.starttls_offered);
    CHECK_EQ_GW("banner", o.r.banner, std::string("220 mx.test ESMTP over TLS"));
    REQUIRE(o.r.chain.size() == 1);
    CHECK(o.r.chain[0] == identity().der);
    CHECK_EQ_GW("SNI", o.sni, std::string("smtps.test"));
    CHECK_EQ_GW("client lines", o.lines, (Lines{"[tls] EHLO probe.test", "[tls] QUIT"}));
}

TEST_CASE("smtp_probe: TLS on connect, greeting 554 over TLS") {
    Script sc;
    sc.tls_on_connect = true;
    sc.greeting = "554 5.3.2 busy\r\n";
    const Outcome o = converse(sc, [](SmtpProbeSettings& s) { s.tls_on_connect = true; });
    check_common(o);
    CHECK(o.r.tls);
    CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Banner);
    CHECK_EQ_GW("error", o.r.error, std::string("greeting was 554 5.3.2 busy"));
    CHECK_EQ_GW("client lines", o.lines, (Lines{"[tls] QUIT"}));
}

TEST_CASE("smtp_probe: EHLO refused after TLS: QUIT over TLS") {
    Script sc;
    sc.tls_ehlo = "554 5.7.0 nope\r\n";
    const Outcome o = converse(sc);
    check_common(o);
    CHECK(o.r.tls);
    CHECK_EQ_GW("stage", o.r.stage, ProbeStage::TlsEhlo);
    CHECK_EQ_GW("error", o.r.error, std::string("EHLO refused after TLS: 554 5.7.0 nope"));
    REQUIRE(o.r.chain.size() == 1);
    CHECK_EQ_GW("client lines", o.lines,
                (Lines{"EHLO probe.test", "STARTTLS", "[tls] EHLO probe.test", "[tls] QUIT"}));
}

TEST_CASE("smtp_probe: the TLS handshake fails") {
    SUBCASE("the server closes instead of answering the ClientHello") {
        Script sc;
        sc.after_starttls = Then::Close;
        const Outcome o = converse(sc);
        check_common(o);
        CHECK_FALSE(o.r.tls);
        CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Handshake);
        CHECK(o.r.error.rfind("TLS handshake failed", 0) == 0);
        CHECK_EQ_GW("client lines", o.lines, (Lines{"EHLO probe.test", "STARTTLS"}));
        CHECK(o.r.chain.empty());
    }
    SUBCASE("the server answers the ClientHello with SMTP") {
        Script sc;
        sc.after_starttls = Then::Raw;
        sc.raw_reply = "500 5.5.1 what?\r\n";  // plain text where a ServerHello belongs
        const Outcome o = converse(sc);
        check_common(o);
        CHECK_FALSE(o.r.tls);
        CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Handshake);
        CHECK(o.r.error.rfind("TLS handshake failed", 0) == 0);
        CHECK_EQ_GW("client lines", o.lines, (Lines{"EHLO probe.test", "STARTTLS"}));
    }
    SUBCASE("the server never answers the ClientHello (read timeout 200 ms)") {
        Script sc;
        sc.after_starttls = Then::Raw;
        const Outcome o = converse(sc, [](SmtpProbeSettings& s) { s.read_timeout_ms = 200; });
        check_common(o);
        CHECK_FALSE(o.r.tls);
        CHECK_EQ_GW("stage", o.r.stage, ProbeStage::Handshake);
        CHECK(contains(o.r.error, "timeout"));
        CHECK_FALSE(o.raw.empty());  // the ClientHello
        CHECK_EQ_GW("client lines", o.lines, (Lines{"EHLO probe.test", "STARTTLS"}));
    }
}

// Counts SIGPIPE while a case runs (the default action would end the test binary).
volatile sig_atomic_t sigpipes = 0;

TEST_CASE("smtp_probe: the server resets the connection after the handshake: no SIGPIPE") {
    struct sigaction count {
    }, old{};
    count.sa_handler = [](int) { sigpipes = sigpipes + 1; };
    sigemptyset(&count.sa_mask);
    REQUIRE(sigaction(SIGPIPE, &count, &old) == 0);
    sigpipes = 0;
    Script sc;
    sc.close_after_handshake = true;
    const Outcome o = converse(sc);
    REQUIRE(sigaction(SIGPIPE, &old, nullptr) == 0);
    check_common(o);
    CHECK(o.r.tls);
    CHECK_EQ_GW("stage", o.r.stage, ProbeStage::TlsEhlo);
    CHECK(o.r.error.rfind("TLS read", 0) == 0);
    // Writing to a reset socket must not raise SIGPIPE (the plaintext path uses
    // MSG_NOSIGNAL; a process that does not ignore SIGPIPE would die here).
    CHECK_EQ_GW("SIGPIPE raised", static_cast<int>(sigpipes), 0);
}

}  // namespace
