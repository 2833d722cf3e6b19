// SmtpProbe: one SMTP conversation with one address, on the libevent loop, without sending
// mail: connect, read the banner, EHLO, STARTTLS (or TLS at once for TLS-on-connect), a
// GnuTLS handshake with SNI, EHLO again, QUIT. It records what the server offered (TLS
// version, cipher, the certificate chain as DER) and never judges it: see probe/verify.h.
// Every step has a timeout; replies are bounded (line length, lines per reply); bytes a
// server sends after its STARTTLS reply and before the handshake end the probe (they could
// be an attacker's injection, CVE-2011-0411).
#pragma once

#include <event2/event.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tlspolicy {

inline constexpr std::size_t kMaxSmtpLine = 4096;     // bytes per reply line
inline constexpr std::size_t kMaxSmtpReplyLines = 64;  // lines per reply

struct SmtpProbeSettings {
    std::string address;  // IPv4 or IPv6, presentation form
    uint16_t port = 25;
    std::string sni;       // the name sent in the TLS server_name extension ("" = none)
    std::string helo = "localhost";
    bool tls_on_connect = false;
    int64_t connect_timeout_ms = 10000;
    int64_t read_timeout_ms = 30000;  // per reply and for the handshake
};

// Where a probe stopped.
enum class ProbeStage { Connect, Banner, Ehlo, StartTls, Handshake, TlsEhlo, Quit, Done };
const char* probe_stage_name(ProbeStage s);  // "connect", "banner", ...

struct SmtpProbeResult {
    bool connected = false;
    ProbeStage stage = ProbeStage::Connect;  // Done when the whole dialogue completed
    std::string error;                       // why it stopped before Done ("" when done)
    std::string banner;                      // the first line of the greeting, sanitized
    bool starttls_offered = false;
    bool tls = false;  // the handshake completed
    std::string tls_version, cipher;
    std::vector<std::string> chain;  // DER, leaf first, as sent
    int64_t elapsed_ms = 0;
};

class SmtpProbe {
  public:
    using Callback = std::function<void(const SmtpProbeResult&)>;
    // Starts at once; `done` is called exactly once, from the loop (never before start()
    // returns). Destroying the probe earlier abandons it without a call.
    static std::unique_ptr<SmtpProbe> start(event_base* base, SmtpProbeSettings settings,
                                            Callback done);
    ~SmtpProbe();
    SmtpProbe(const SmtpProbe&) = delete;
    SmtpProbe& operator=(const SmtpProbe&) = delete;

  private:
    struct Impl;
    explicit SmtpProbe(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace tlspolicy
