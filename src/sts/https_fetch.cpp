#include "sts/https_fetch.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <mutex>
#include <string_view>
#include <unordered_map>

#include "server/metrics.h"
#include "util/event.h"

namespace tlspolicy {

namespace {

// tlspolicyd_https_errors_total{kind}: failed MTA-STS policy fetches, by FetchResult::code.
void count_fetch_error(const std::string& code) {
    static const auto series = [](const char* kind) {
        return &metrics::global().counter("tlspolicyd_https_errors_total",
                                          "MTA-STS policy fetches that failed", {{"kind", kind}});
    };
    static metrics::Counter* const connect = series("connect");
    static metrics::Counter* const tls = series("tls");
    static metrics::Counter* const certificate = series("certificate");
    static metrics::Counter* const status = series("http_status");
    static metrics::Counter* const timeout = series("timeout");
    static metrics::Counter* const too_large = series("too_large");
    static metrics::Counter* const other = series("other");
    metrics::Counter* c = other;
    if (code == "connect_failed" || code == "no_address")
        c = connect;
    else if (code == "tls_error")
        c = tls;
    else if (code == "certificate_error")
        c = certificate;
    else if (code.rfind("http_status_", 0) == 0 || code == "invalid_content_type")
        c = status;
    else if (code == "timeout")
        c = timeout;
    else if (code == "body_too_large" || code == "headers_too_large")
        c = too_large;
    c->inc();
}

struct EasyFree {
    void operator()(CURL* e) const { curl_easy_cleanup(e); }
};
struct MultiFree {
    void operator()(CURLM* m) const { curl_multi_cleanup(m); }
};
struct SlistFree {
    void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using EasyPtr = std::unique_ptr<CURL, EasyFree>;
using MultiPtr = std::unique_ptr<CURLM, MultiFree>;
using SlistPtr = std::unique_ptr<curl_slist, SlistFree>;

// Addresses of one request handed to curl; the caller orders them by preference and more are
// not tried within one fetch's time anyway.
constexpr std::size_t kMaxAddresses = 16;
// Longest request path accepted (RFC 8461 uses one fixed path; this bounds what a caller may
// put into the request line).
constexpr std::size_t kMaxPathLength = 1024;
// Longest DNS name (RFC 1035 §2.3.4, text form without the trailing dot).
constexpr std::size_t kMaxHostLength = 253;
// Characters of the received Content-Type kept for the result (sanitised).
constexpr std::size_t kMaxContentTypeText = 128;
// Characters of GnuTLS's own handshake error text kept in a reason.
constexpr std::size_t kMaxLibraryText = 100;
// Oldest libcurl with CURLOPT_PROTOCOLS_STR (7.85.0).
constexpr unsigned kMinCurlVersion = 0x075500;

int64_t now_ms() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

char lower_ascii(char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (lower_ascii(a[i]) != lower_ascii(b[i])) return false;
    return true;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
    return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

std::string_view trim(std::string_view s) {
    auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    while (!s.empty() && ws(s.front()))
        s.remove_prefix(1);
    while (!s.empty() && ws(s.back()))
        s.remove_suffix(1);
    return s;
}

// Printable ASCII only, bounded: safe to log and to put into JSON.
std::string printable(std::string_view s, std::size_t max) {
    std::string out;
    for (char c : s.substr(0, max))
        out += c >= 0x20 && c <= 0x7e ? c : '?';
    return out;
}

// RFC 8461 §3.3: the media type, parameters ignored, compared case-insensitively.
bool is_text_plain(std::string_view content_type) {
    return iequals(trim(content_type.substr(0, content_type.find(';'))), "text/plain");
}

// A DNS name in LDH form whose last label starts with a letter: never something curl would
// take as an IPv4 number ("127.1", "0x7f.1", "2130706433") and connect to without the pin.
bool valid_host(std::string_view h) {
    if (h.empty() || h.size() > kMaxHostLength) return false;
    std::size_t label = 0;
    for (char c : h) {
        if (c == '.') {
            if (label == 0) return false;
            label = 0;
            continue;
        }
        const bool ldh = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
        if (!ldh || ++label > 63) return false;
    }
    if (label == 0) return false;
    const char first = h[h.rfind('.') == std::string_view::npos ? 0 : h.rfind('.') + 1];
    return first >= 'a' && first <= 'z';
}

bool valid_path(std::string_view p) {
    if (p.empty() || p.front() != '/' || p.size() > kMaxPathLength) return false;
    return std::all_of(p.begin(), p.end(), [](char c) { return c > 0x20 && c < 0x7f && c != '#'; });
}

struct Address {
    int family = 0;
    std::array<unsigned char, 16> bytes{};
    std::string text;  // as given; bracketed for IPv6 in curl's host:port lists
};

bool parse_address(const std::string& text, Address& a) {
    if (text.find('\0') != std::string::npos) return false;
    if (inet_pton(AF_INET, text.c_str(), a.bytes.data()) == 1) {
        a.family = AF_INET;
        a.text = text;
        return true;
    }
    if (inet_pton(AF_INET6, text.c_str(), a.bytes.data()) == 1) {
        a.family = AF_INET6;
        a.text = "[" + text + "]";
        return true;
    }
    return false;
}

}  // namespace

struct HttpsFetcher::Impl {
    struct Fetch {
        Impl* impl = nullptr;
        FetchId id = 0;
        FetchRequest request;
        Callback cb;
        int64_t queued_ms = 0;  // when fetch() was called: the timeout covers the wait too
        std::vector<Address> addresses;
        // Owned C handles; the easy handle is declared last so it is cleaned up before the
        // lists it points at.
        SlistPtr resolve;
        SlistPtr connect_to;
        EasyPtr easy;
        bool started = false;  // added to the multi handle
        char errbuf[CURL_ERROR_SIZE] = {};
        std::size_t header_bytes = 0;
        std::string content_type;
        bool content_type_repeated = false;
        std::string body;
        // Set where a callback ends the transfer on purpose (curl then reports a write error).
        std::string fail_code;
        std::string fail_reason;

        void fail(std::string code, std::string reason) {
            if (!fail_code.empty()) return;
            fail_code = std::move(code);
            fail_reason = std::move(reason);
        }
    };

    struct Ready {
        FetchId id = 0;
        Callback cb;
        FetchResult result;
    };

    event_base* base = nullptr;
    FetchSettings s;
    MultiPtr multi;
    EventPtr timer;       // curl's single timeout
    EventPtr deliver_ev;  // zero-timeout event that hands results to callbacks
    std::unordered_map<curl_socket_t, EventPtr> sockets;
    std::unordered_map<FetchId, std::unique_ptr<Fetch>> fetches;  // waiting and running
    std::deque<FetchId> waiting;
    std::size_t running = 0;
    std::deque<Ready> ready;  // finished, callback not yet called
    FetchId next_id = 1;
    // Expires with the Impl: lets a delivery loop notice that a callback destroyed the fetcher.
    std::shared_ptr<char> alive = std::make_shared<char>();

    ~Impl() {
        ready.clear();
        for (auto& [id, f] : fetches)
            if (f->started) curl_multi_remove_handle(multi.get(), f->easy.get());
        fetches.clear();
        multi.reset();  // may still report sockets it drops: `sockets` and `timer` are alive
        sockets.clear();
        timer.reset();
        deliver_ev.reset();
    }

    // ---- curl callbacks (never call back into user code from here)

    static int on_socket(CURL*, curl_socket_t fd, int what, void* userp, void*) {
        auto* self = static_cast<Impl*>(userp);
        if (what == CURL_POLL_REMOVE) {
            self->sockets.erase(fd);
            return 0;
        }
        short flags = EV_PERSIST;
        if (what & CURL_POLL_IN) flags |= EV_READ;
        if (what & CURL_POLL_OUT) flags |= EV_WRITE;
        EventPtr& slot = self->sockets[fd];
        if (slot && event_get_events(slot.get()) == flags) return 0;
        slot.reset(event_new(self->base, fd, flags, &Impl::on_socket_event, self));
        if (!slot || event_add(slot.get(), nullptr) != 0) {
            self->sockets.erase(fd);
            return -1;  // curl fails the transfers on this multi handle
        }
        return 0;
    }

    static int on_timer_change(CURLM*, long timeout_ms, void* userp) {
        auto* self = static_cast<Impl*>(userp);
        if (timeout_ms < 0) {
            evtimer_del(self->timer.get());
            return 0;
        }
        timeval tv{static_cast<time_t>(timeout_ms / 1000),
                   static_cast<suseconds_t>((timeout_ms % 1000) * 1000)};
        return evtimer_add(self->timer.get(), &tv) == 0 ? 0 : -1;
    }

    static size_t on_header(char* data, size_t size, size_t n, void* userp) {
        auto* f = static_cast<Fetch*>(userp);
        const std::size_t len = size * n;
        const FetchSettings& s = f->impl->s;
        f->header_bytes += len;
        if (f->header_bytes > s.max_header_bytes) {
            f->fail("headers_too_large",
                    "response headers over " + std::to_string(s.max_header_bytes) + " bytes");
            return 0;
        }
        const std::string_view line(data, len);
        if (istarts_with(line, "HTTP/")) {  // a new response (after an interim 1xx)
            f->content_type.clear();
            f->content_type_repeated = false;
        } else if (istarts_with(line, "content-type:")) {
            if (!f->content_type.empty()) f->content_type_repeated = true;
            f->content_type = printable(trim(line.substr(13)), kMaxContentTypeText);
        } else if (trim(line).empty()) {
            // End of a header block: judge status and media type before reading any body.
            long code = 0;
            curl_easy_getinfo(f->easy.get(), CURLINFO_RESPONSE_CODE, &code);
            if (code >= 100 && code < 200) return len;  // interim: the real one follows
            if (code != 200) {
                f->fail("http_status_" + std::to_string(code),
                        "HTTP status " + std::to_string(code) + ", want 200");
                return 0;
            }
            if (f->content_type_repeated || !is_text_plain(f->content_type)) {
                f->fail("invalid_content_type", "media type is not text/plain");
                return 0;
            }
        }
        return len;
    }

    static size_t on_body(char* data, size_t size, size_t n, void* userp) {
        auto* f = static_cast<Fetch*>(userp);
        const std::size_t len = size * n;
        const std::size_t max = f->impl->s.max_body;
        if (len > max - f->body.size()) {
            f->fail("body_too_large", "body over " + std::to_string(max) + " bytes");
            return 0;
        }
        f->body.append(data, len);
        return len;
    }

    // Defence in depth for the pin: a socket only ever goes to an address of the request.
    static curl_socket_t on_open_socket(void* userp, curlsocktype purpose, curl_sockaddr* a) {
        auto* f = static_cast<Fetch*>(userp);
        bool allowed = false;
        if (purpose == CURLSOCKTYPE_IPCXN) {
            for (const Address& ad : f->addresses) {
                if (ad.family != a->family) continue;
                if (a->family == AF_INET &&
                    std::memcmp(&reinterpret_cast<const sockaddr_in*>(&a->addr)->sin_addr,
                                ad.bytes.data(), 4) == 0)
                    allowed = true;
                if (a->family == AF_INET6 &&
                    std::memcmp(&reinterpret_cast<const sockaddr_in6*>(&a->addr)->sin6_addr,
                                ad.bytes.data(), 16) == 0)
                    allowed = true;
            }
        }
        if (!allowed) {
            f->fail("fetch_error", "connection to an address not in the request refused");
            return CURL_SOCKET_BAD;
        }
        return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    }

    // ---- libevent callbacks

    static void on_socket_event(evutil_socket_t fd, short what, void* arg) {
        auto* self = static_cast<Impl*>(arg);
        int flags = 0;
        if (what & EV_READ) flags |= CURL_CSELECT_IN;
        if (what & EV_WRITE) flags |= CURL_CSELECT_OUT;
        int still_running = 0;
        curl_multi_socket_action(self->multi.get(), fd, flags, &still_running);
        self->collect();
    }

    static void on_timer(evutil_socket_t, short, void* arg) {
        auto* self = static_cast<Impl*>(arg);
        int still_running = 0;
        curl_multi_socket_action(self->multi.get(), CURL_SOCKET_TIMEOUT, 0, &still_running);
        self->collect();
    }

    // Callbacks run here only, one at a time; each may fetch, cancel or destroy the fetcher.
    static void on_deliver(evutil_socket_t, short, void* arg) {
        auto* self = static_cast<Impl*>(arg);
        const std::weak_ptr<char> alive = self->alive;
        while (!self->ready.empty()) {
            Ready r = std::move(self->ready.front());
            self->ready.pop_front();
            if (!r.result.ok) count_fetch_error(r.result.code);
            if (r.cb) r.cb(std::move(r.result));
            if (alive.expired()) return;
        }
    }

    // ---- bookkeeping

    void schedule_delivery() {
        const timeval zero{0, 0};
        evtimer_add(deliver_ev.get(), &zero);
    }

    void complete(FetchId id, FetchResult result) {
        auto it = fetches.find(id);
        if (it == fetches.end()) return;
        Fetch* f = it->second.get();
        result.elapsed_ms = now_ms() - f->queued_ms;
        if (f->started) {
            curl_multi_remove_handle(multi.get(), f->easy.get());
            --running;
        }
        ready.push_back({id, std::move(f->cb), std::move(result)});
        fetches.erase(it);
        schedule_delivery();
    }

    void collect() {
        int left = 0;
        while (CURLMsg* m = curl_multi_info_read(multi.get(), &left)) {
            if (m->msg != CURLMSG_DONE) continue;
            const CURLcode rc = m->data.result;  // m is gone once the handle is removed
            char* priv = nullptr;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
            auto* f = reinterpret_cast<Fetch*>(priv);
            FetchResult r = judge(*f, rc);
            complete(f->id, std::move(r));
        }
        pump();
    }

    void pump() {
        while (running < std::max<std::size_t>(1, s.max_parallel) && !waiting.empty()) {
            const FetchId id = waiting.front();
            waiting.pop_front();
            if (auto it = fetches.find(id); it != fetches.end()) start(*it->second);
        }
    }

    void start(Fetch& f) {
        const int64_t remaining = s.timeout_ms - (now_ms() - f.queued_ms);
        if (remaining <= 0) {
            FetchResult r;
            r.code = "timeout";
            r.reason = "timed out waiting for a free fetch slot";
            return complete(f.id, std::move(r));
        }
        if (auto err = setup(f, remaining); !err.empty()) {
            FetchResult r;
            r.code = "fetch_error";
            r.reason = err;
            return complete(f.id, std::move(r));
        }
        if (curl_multi_add_handle(multi.get(), f.easy.get()) != CURLM_OK) {
            FetchResult r;
            r.code = "fetch_error";
            r.reason = "libcurl refused the transfer";
            return complete(f.id, std::move(r));
        }
        f.started = true;
        ++running;
    }

    // The easy handle of one fetch; "" when set up, else why not.
    std::string setup(Fetch& f, int64_t remaining_ms) {
        f.easy.reset(curl_easy_init());
        CURL* e = f.easy.get();
        if (!e) return "libcurl: out of memory";
        const std::string port = std::to_string(s.port);
        const std::string& host = f.request.host;
        std::string list = host + ":" + port + ":";
        for (std::size_t i = 0; i < f.addresses.size(); ++i)
            list += (i ? "," : "") + f.addresses[i].text;
        const std::string url = "https://" + host + ":" + port + f.request.path;
        const std::string agent = std::string("tlspolicyd/") + TLSPOLICY_VERSION;

        bool ok = true;
        auto set = [&](CURLoption opt, auto value) {
            if (curl_easy_setopt(e, opt, value) != CURLE_OK) ok = false;
        };
        set(CURLOPT_PRIVATE, static_cast<void*>(&f));
        set(CURLOPT_ERRORBUFFER, f.errbuf);
        set(CURLOPT_URL, url.c_str());
        set(CURLOPT_PROTOCOLS_STR, "https");
        set(CURLOPT_REDIR_PROTOCOLS_STR, "https");
        set(CURLOPT_FOLLOWLOCATION, 0L);
        set(CURLOPT_MAXREDIRS, 0L);
        if (s.proxy.empty()) {
            // "" overrides the proxy environment variables. The multi handle's DNS cache is
            // shared by all transfers: libcurl (7.88 Curl_loadhostpairs) discards an older
            // entry for the same host:port when this one is loaded, so the addresses are
            // always this request's.
            set(CURLOPT_PROXY, "");
            f.resolve.reset(curl_slist_append(nullptr, list.c_str()));
            if (!f.resolve) return "libcurl: out of memory";
            set(CURLOPT_RESOLVE, f.resolve.get());
            set(CURLOPT_OPENSOCKETFUNCTION, &Impl::on_open_socket);
            set(CURLOPT_OPENSOCKETDATA, static_cast<void*>(&f));
        } else {
            // Through a proxy the tunnel goes to the first address, never to the name: the
            // proxy would resolve it on its own and bypass the caller's address checks.
            set(CURLOPT_PROXY, s.proxy.c_str());
            set(CURLOPT_NOPROXY, "");  // no exceptions from the no_proxy variable
            set(CURLOPT_HTTPPROXYTUNNEL, 1L);
            set(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
            const std::string to = host + ":" + port + ":" + f.addresses[0].text + ":" + port;
            f.connect_to.reset(curl_slist_append(nullptr, to.c_str()));
            if (!f.connect_to) return "libcurl: out of memory";
            set(CURLOPT_CONNECT_TO, f.connect_to.get());
        }
        set(CURLOPT_SSL_VERIFYPEER, 1L);
        set(CURLOPT_SSL_VERIFYHOST, 2L);
        if (!s.ca_file.empty()) {
            // Only this bundle: Debian's GnuTLS libcurl otherwise also trusts /etc/ssl/certs
            // (its default CURLOPT_CAPATH; it has no default CAINFO).
            set(CURLOPT_CAINFO, s.ca_file.c_str());
            set(CURLOPT_CAPATH, static_cast<const char*>(nullptr));
        }
        set(CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2));
        set(CURLOPT_SSL_SESSIONID_CACHE, 0L);
        set(CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
        set(CURLOPT_NOSIGNAL, 1L);
        set(CURLOPT_FORBID_REUSE, 1L);
        set(CURLOPT_FRESH_CONNECT, 1L);
        set(CURLOPT_CONNECTTIMEOUT_MS,
            static_cast<long>(std::min(s.connect_timeout_ms, remaining_ms)));
        set(CURLOPT_TIMEOUT_MS, static_cast<long>(remaining_ms));
        // No Accept-Encoding is sent and nothing is decoded: max_body bounds the raw bytes.
        set(CURLOPT_HTTP_CONTENT_DECODING, 0L);
        set(CURLOPT_USERAGENT, agent.c_str());
        set(CURLOPT_HEADERFUNCTION, &Impl::on_header);
        set(CURLOPT_HEADERDATA, static_cast<void*>(&f));
        set(CURLOPT_WRITEFUNCTION, &Impl::on_body);
        set(CURLOPT_WRITEDATA, static_cast<void*>(&f));
        set(CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(s.max_body));
        if (!ok) return "libcurl rejected an option";
        return {};
    }

    FetchResult judge(Fetch& f, CURLcode rc) {
        FetchResult r;
        CURL* e = f.easy.get();
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r.status);
        r.content_type = f.content_type;
        if (s.proxy.empty()) {
            char* ip = nullptr;
            if (curl_easy_getinfo(e, CURLINFO_PRIMARY_IP, &ip) == CURLE_OK && ip)
                r.address = printable(ip, INET6_ADDRSTRLEN);
        } else if (r.status != 0) {
            r.address = f.request.addresses[0];  // what the proxy was told to connect to
        }
        auto failed = [&](std::string code, std::string reason) {
            r.code = std::move(code);
            r.reason = std::move(reason);
            return std::move(r);
        };
        if (rc == CURLE_OK) {
            if (r.status != 200)
                return failed("http_status_" + std::to_string(r.status),
                              "HTTP status " + std::to_string(r.status) + ", want 200");
            if (f.content_type_repeated || !is_text_plain(f.content_type))
                return failed("invalid_content_type", "media type is not text/plain");
            if (f.body.size() > s.max_body)  // on_body already stops short of this
                return failed("body_too_large",
                              "body over " + std::to_string(s.max_body) + " bytes");
            r.ok = true;
            r.body = std::move(f.body);
            return r;
        }
        if (!f.fail_code.empty()) return failed(f.fail_code, f.fail_reason);
        const std::string_view errbuf(f.errbuf);
        switch (rc) {
            case CURLE_OPERATION_TIMEDOUT: {
                curl_off_t tls_done = 0;
                curl_easy_getinfo(e, CURLINFO_APPCONNECT_TIME_T, &tls_done);
                return failed("timeout", tls_done == 0
                                             ? "timed out before the TLS handshake completed"
                                             : "timed out before the response was complete");
            }
            case CURLE_COULDNT_CONNECT:
                return failed("connect_failed", "could not connect to any address");
            case CURLE_PEER_FAILED_VERIFICATION:
            case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
            case CURLE_SSL_ISSUER_ERROR:
            case CURLE_SSL_INVALIDCERTSTATUS:
                // curl's text for a name mismatch quotes the certificate's subject: only
                // classified, never copied.
                if (errbuf.find("does not match") != std::string_view::npos)
                    return failed("certificate_error", "certificate does not match the host name");
                if (errbuf.find("expire") != std::string_view::npos)
                    return failed("certificate_error", "certificate expired");
                return failed("certificate_error",
                              "certificate verification failed (untrusted issuer, expired or "
                              "not yet valid)");
            case CURLE_SSL_CACERT_BADFILE:
                return failed("fetch_error", "cannot load the CA certificates");
            case CURLE_SSL_CONNECT_ERROR:
            case CURLE_SSL_CIPHER:
            case CURLE_SSL_CERTPROBLEM:
            case CURLE_SSL_ENGINE_NOTFOUND:
            case CURLE_SSL_ENGINE_SETFAILED:
            case CURLE_SSL_ENGINE_INITFAILED:
            case CURLE_SSL_SHUTDOWN_FAILED:
            case CURLE_SSL_CRL_BADFILE:
            case CURLE_SSL_CLIENTCERT:
            case CURLE_USE_SSL_FAILED: {
                // GnuTLS's own wording (gnutls_strerror), not the server's bytes.
                constexpr std::string_view prefix = "gnutls_handshake() failed: ";
                if (errbuf.starts_with(prefix))
                    return failed("tls_error",
                                  "TLS handshake failed: " +
                                      printable(errbuf.substr(prefix.size()), kMaxLibraryText));
                return failed("tls_error", "TLS handshake failed");
            }
            case CURLE_FILESIZE_EXCEEDED:
                // The Content-Length is judged while the headers are read, before the status.
                if (r.status >= 200 && r.status != 200)
                    return failed("http_status_" + std::to_string(r.status),
                                  "HTTP status " + std::to_string(r.status) + ", want 200");
                return failed("body_too_large",
                              "announced body over " + std::to_string(s.max_body) + " bytes");
            case CURLE_GOT_NOTHING:
                return failed("fetch_error", "connection closed without a response");
            case CURLE_PARTIAL_FILE:
                return failed("fetch_error", "connection closed before the body was complete");
            case CURLE_WEIRD_SERVER_REPLY:
            case CURLE_UNSUPPORTED_PROTOCOL:
            case CURLE_BAD_CONTENT_ENCODING:
                return failed("fetch_error", "malformed HTTP response");
            default:
                // curl's fixed text for the code: never anything the server sent.
                return failed("fetch_error", std::string("libcurl: ") + curl_easy_strerror(rc));
        }
    }
};

Result<std::unique_ptr<HttpsFetcher>> HttpsFetcher::create(event_base* base, FetchSettings s) {
    static std::once_flag once;
    static CURLcode init_rc = CURLE_OK;
    std::call_once(once, [] { init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); });
    if (init_rc != CURLE_OK)
        return make_error(std::string("libcurl: ") + curl_easy_strerror(init_rc));
    const curl_version_info_data* v = curl_version_info(CURLVERSION_NOW);
    if (!v || v->version_num < kMinCurlVersion)
        return make_error("libcurl 7.85.0 or newer is required");
    bool https = false;
    for (const char* const* p = v->protocols; p && *p; ++p)
        if (std::string_view(*p) == "https") https = true;
    if (!https || !(v->features & CURL_VERSION_SSL))
        return make_error("libcurl has no HTTPS support");
    if (!base) return make_error("no event base");
    if (s.port == 0) return make_error("HTTPS port 0");
    if (s.connect_timeout_ms <= 0 || s.timeout_ms <= 0)
        return make_error("fetch timeouts must be positive");
    if (s.max_body == 0 || s.max_header_bytes == 0 || s.max_parallel == 0)
        return make_error("fetch limits must be positive");
    if (!s.ca_file.empty() && access(s.ca_file.c_str(), R_OK) != 0)
        return make_error("cannot read CA file " + s.ca_file);

    auto impl = std::make_unique<Impl>();
    impl->base = base;
    impl->s = std::move(s);
    impl->multi.reset(curl_multi_init());
    impl->timer.reset(evtimer_new(base, &Impl::on_timer, impl.get()));
    impl->deliver_ev.reset(evtimer_new(base, &Impl::on_deliver, impl.get()));
    if (!impl->multi || !impl->timer || !impl->deliver_ev) return make_error("out of memory");
    CURLM* m = impl->multi.get();
    if (curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, &Impl::on_socket) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_SOCKETDATA, static_cast<void*>(impl.get())) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, &Impl::on_timer_change) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_TIMERDATA, static_cast<void*>(impl.get())) != CURLM_OK)
        return make_error("libcurl: cannot set up the multi handle");
    return std::unique_ptr<HttpsFetcher>(new HttpsFetcher(std::move(impl)));
}

HttpsFetcher::HttpsFetcher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpsFetcher::~HttpsFetcher() = default;

HttpsFetcher::FetchId HttpsFetcher::fetch(FetchRequest request, Callback cb) {
    Impl& im = *impl_;
    auto f = std::make_unique<Impl::Fetch>();
    f->impl = &im;
    f->id = im.next_id++;
    f->cb = std::move(cb);
    f->queued_ms = now_ms();
    // Names are compared case-insensitively everywhere (SNI, certificate, curl's DNS cache);
    // one trailing dot is the same name.
    std::string host = request.host;
    std::transform(host.begin(), host.end(), host.begin(), lower_ascii);
    if (!host.empty() && host.back() == '.') host.pop_back();
    request.host = host;
    f->request = std::move(request);
    const FetchId id = f->id;

    std::string code, reason;
    if (!valid_host(f->request.host)) {
        code = "fetch_error";
        reason = "invalid host name";
    } else if (!valid_path(f->request.path)) {
        code = "fetch_error";
        reason = "invalid path";
    } else if (f->request.addresses.empty()) {
        code = "no_address";
        reason = "no address to connect to";
    } else {
        for (const std::string& text : f->request.addresses) {
            if (f->addresses.size() == kMaxAddresses) break;
            Address a;
            if (!parse_address(text, a)) {
                code = "fetch_error";
                reason = "not a numeric IP address in the request";
                break;
            }
            f->addresses.push_back(std::move(a));
        }
    }
    im.fetches.emplace(id, std::move(f));
    if (!code.empty()) {
        FetchResult r;
        r.code = code;
        r.reason = reason;
        im.complete(id, std::move(r));  // delivered from the loop, like every result
        return id;
    }
    im.waiting.push_back(id);
    im.pump();
    return id;
}

void HttpsFetcher::cancel(FetchId id) {
    Impl& im = *impl_;
    if (auto it = im.fetches.find(id); it != im.fetches.end()) {
        if (it->second->started) {
            curl_multi_remove_handle(im.multi.get(), it->second->easy.get());
            --im.running;
        } else {
            im.waiting.erase(std::remove(im.waiting.begin(), im.waiting.end(), id),
                             im.waiting.end());
        }
        im.fetches.erase(it);
        im.pump();
        return;
    }
    im.ready.erase(std::remove_if(im.ready.begin(), im.ready.end(),
                                  [id](const Impl::Ready& r) { return r.id == id; }),
                   im.ready.end());
}

std::size_t HttpsFetcher::in_flight() const {
    return impl_->fetches.size() + impl_->ready.size();
}

}  // namespace tlspolicy
