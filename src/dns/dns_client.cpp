#include "dns/dns_client.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <getdns/getdns.h>
#include <getdns/getdns_extra.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <unordered_set>

#include "server/metrics.h"
#include "util/endpoint.h"
#include "util/event.h"

namespace tlspolicy {

namespace {

struct ContextFree {
    void operator()(getdns_context* c) const { getdns_context_destroy(c); }
};
struct DictFree {
    void operator()(getdns_dict* d) const { getdns_dict_destroy(d); }
};
struct ListFree {
    void operator()(getdns_list* l) const { getdns_list_destroy(l); }
};
struct FileClose {
    void operator()(FILE* f) const { std::fclose(f); }
};
using DictPtr = std::unique_ptr<getdns_dict, DictFree>;
using ListPtr = std::unique_ptr<getdns_list, ListFree>;

// getdns's event loop on our libevent base. getdns's own libevent extension does the same but
// leaves its TCP sockets with Nagle's algorithm on: a query written while the previous one is
// unacknowledged then waits for the server's delayed ACK, in practice for the previous
// answer, which serialises the pipelined queries of one connection (bench/cold-prefetch.sh:
// A and AAAA of one name 20 ms apart at 20 ms per answer; 120 instead of 182 domains/s).
// Every socket getdns asks to write on gets TCP_NODELAY first (on a UDP socket the call fails
// and changes nothing). Its events run at kDnsPriority on a base made by new_event_base().
class GetdnsLoop {
  public:
    // Installs a new loop on `ctx`; getdns owns it from then on and frees it with cleanup.
    static getdns_return_t install(getdns_context* ctx, event_base* base) {
        auto* loop = new GetdnsLoop(base);
        const getdns_return_t rc = getdns_context_set_eventloop(ctx, &loop->loop_);
        if (rc != GETDNS_RETURN_GOOD) delete loop;
        return rc;
    }

  private:
    explicit GetdnsLoop(event_base* base) : base_(base) { loop_.vmt = &kVmt; }
    static GetdnsLoop* self(getdns_eventloop* loop) {
        static_assert(offsetof(GetdnsLoop, loop_) == 0);
        return reinterpret_cast<GetdnsLoop*>(loop);
    }

    static void cleanup(getdns_eventloop* loop) { delete self(loop); }

    static getdns_return_t schedule(getdns_eventloop* loop, int fd, uint64_t timeout,
                                    getdns_eventloop_event* el) {
        if (el->write_cb && fd >= 0) {
            const int one = 1;
            (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        const short what = static_cast<short>((el->read_cb ? EV_READ | EV_PERSIST : 0) |
                                              (el->write_cb ? EV_WRITE | EV_PERSIST : 0) |
                                              (el->timeout_cb ? EV_TIMEOUT : 0));
        event_base* base = self(loop)->base_;
        event* ev = event_new(base, fd, what, &GetdnsLoop::fire, el);
        if (!ev) return GETDNS_RETURN_MEMORY_ERROR;
        if (event_base_get_npriorities(base) > kDnsPriority + 1)
            event_priority_set(ev, kDnsPriority);
        const timeval tv{static_cast<time_t>(timeout / 1000),
                         static_cast<suseconds_t>((timeout % 1000) * 1000)};
        if (event_add(ev, el->timeout_cb ? &tv : nullptr) != 0) {
            event_free(ev);
            return GETDNS_RETURN_GENERIC_ERROR;
        }
        el->ev = ev;
        return GETDNS_RETURN_GOOD;
    }

    static getdns_return_t clear(getdns_eventloop*, getdns_eventloop_event* el) {
        auto* ev = static_cast<event*>(el->ev);
        if (!ev) return GETDNS_RETURN_GOOD;
        if (event_del(ev) != 0) return GETDNS_RETURN_GENERIC_ERROR;
        event_free(ev);
        el->ev = nullptr;
        return GETDNS_RETURN_GOOD;
    }

    // One callback per wake-up, read before write before timeout, as getdns expects.
    static void fire(evutil_socket_t, short bits, void* arg) {
        auto* el = static_cast<getdns_eventloop_event*>(arg);
        if ((bits & EV_READ) && el->read_cb)
            el->read_cb(el->userarg);
        else if ((bits & EV_WRITE) && el->write_cb)
            el->write_cb(el->userarg);
        else if ((bits & EV_TIMEOUT) && el->timeout_cb)
            el->timeout_cb(el->userarg);
    }

    // getdns's synchronous calls run the loop themselves; the daemon never makes them.
    static void run(getdns_eventloop* loop) { event_base_dispatch(self(loop)->base_); }
    static void run_once(getdns_eventloop* loop, int blocking) {
        event_base_loop(self(loop)->base_, EVLOOP_ONCE | (blocking ? 0 : EVLOOP_NONBLOCK));
    }

    static inline getdns_eventloop_vmt kVmt = {&GetdnsLoop::cleanup, &GetdnsLoop::schedule,
                                               &GetdnsLoop::clear, &GetdnsLoop::run,
                                               &GetdnsLoop::run_once};
    getdns_eventloop loop_{};  // first: getdns hands its address back
    event_base* base_;
};

// How long a resolver that timed out or refused is passed over before it is tried first again.
constexpr int64_t kResolverPenaltyMs = 30000;
// Rounds over the resolver list for a query that is not answered.
constexpr std::size_t kAttempts = 2;
// How long an idle TCP connection to a resolver is kept open for the next queries.
constexpr uint64_t kTcpIdleMs = 10000;
// How long the next attempt of a lookup waits: getdns 1.6.0 takes down a TCP connection whose
// last query timed out in callbacks of its own, and a query handed to it before they ran fails
// at once ("resolver error") instead of going out on a new connection.
constexpr int kRetryDelayMs = 5;
// Resource records read from one reply; a longer answer is an error, not work without bound.
constexpr std::size_t kMaxAnswerRecords = 512;

int64_t now_ms() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

std::string errstr(getdns_return_t r) {
    const char* s = getdns_get_errorstr_by_id(static_cast<uint16_t>(r));
    return s ? s : "getdns error " + std::to_string(r);
}

// Canonical form of a wire-format name: lower case, no trailing dot ("" for the root).
std::string name_of(const getdns_bindata* wire) {
    char* fqdn = nullptr;
    if (!wire || getdns_convert_dns_name_to_fqdn(wire, &fqdn) != GETDNS_RETURN_GOOD || !fqdn)
        return {};
    std::string s(fqdn);
    std::free(fqdn);
    if (!s.empty() && s.back() == '.') s.pop_back();
    for (char& c : s)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return s;
}

uint32_t get_int(const getdns_dict* d, const char* key, uint32_t fallback = 0) {
    uint32_t v = 0;
    return getdns_dict_get_int(d, key, &v) == GETDNS_RETURN_GOOD ? v : fallback;
}

const getdns_bindata* get_bin(const getdns_dict* d, const char* key) {
    getdns_bindata* b = nullptr;
    return getdns_dict_get_bindata(d, key, &b) == GETDNS_RETURN_GOOD ? b : nullptr;
}

struct Rr {
    std::string owner;
    uint32_t type = 0, ttl = 0;
    getdns_dict* rr = nullptr;  // borrowed from the response
};

std::vector<Rr> section(getdns_dict* reply, const char* name, bool& too_long) {
    std::vector<Rr> out;
    getdns_list* list = nullptr;
    if (getdns_dict_get_list(reply, name, &list) != GETDNS_RETURN_GOOD) return out;
    size_t n = 0;
    getdns_list_get_length(list, &n);
    if (n > kMaxAnswerRecords) {
        too_long = true;
        n = kMaxAnswerRecords;
    }
    for (size_t i = 0; i < n; ++i) {
        getdns_dict* rr = nullptr;
        if (getdns_list_get_dict(list, i, &rr) != GETDNS_RETURN_GOOD) continue;
        out.push_back({name_of(get_bin(rr, "name")), get_int(rr, "type"), get_int(rr, "ttl"), rr});
    }
    return out;
}

Dnssec dnssec_of(uint32_t status) {
    switch (status) {
        case GETDNS_DNSSEC_SECURE:
            return Dnssec::Secure;
        case GETDNS_DNSSEC_INSECURE:
            return Dnssec::Insecure;
        case GETDNS_DNSSEC_BOGUS:
            return Dnssec::Bogus;
        default:
            return Dnssec::Indeterminate;
    }
}

void lower(int64_t& ttl, int64_t v) {
    if (ttl < 0 || v < ttl) ttl = v;
}

std::string address_text(const getdns_bindata* b) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (b && b->size == 4 && inet_ntop(AF_INET, b->data, buf, sizeof buf)) return buf;
    if (b && b->size == 16 && inet_ntop(AF_INET6, b->data, buf, sizeof buf)) return buf;
    return {};
}

}  // namespace

DnsLookup parse_getdns_response(const std::string& name, uint16_t type, getdns_dict* response) {
    DnsLookup l;
    l.name = name;
    l.type = type;
    const uint32_t status = get_int(response, "status");
    getdns_list* replies = nullptr;
    size_t n = 0;
    if (getdns_dict_get_list(response, "replies_tree", &replies) == GETDNS_RETURN_GOOD)
        getdns_list_get_length(replies, &n);
    getdns_dict* reply = nullptr;
    if (n == 0 || getdns_list_get_dict(replies, 0, &reply) != GETDNS_RETURN_GOOD) {
        l.result = status == GETDNS_RESPSTATUS_ALL_TIMEOUT ? DnsResult::Timeout : DnsResult::Error;
        l.reason = status == GETDNS_RESPSTATUS_ALL_TIMEOUT
                       ? "no answer"
                       : "no reply (getdns status " + std::to_string(status) + ")";
        return l;
    }
    // Always the reply's own status: an AD bit from the resolver is never looked at, and a
    // reply without a status was not validated.
    l.dnssec = dnssec_of(get_int(reply, "dnssec_status", GETDNS_DNSSEC_INDETERMINATE));
    const uint32_t rcode = get_int(reply, "/header/rcode", 2);
    switch (rcode) {
        case GETDNS_RCODE_NOERROR:
        case GETDNS_RCODE_NXDOMAIN:
            break;
        case GETDNS_RCODE_SERVFAIL:
            l.result = DnsResult::ServFail;
            l.reason = "SERVFAIL";
            return l;
        case GETDNS_RCODE_REFUSED:
            l.result = DnsResult::Refused;
            l.reason = "REFUSED";
            return l;
        default:
            l.result = DnsResult::Error;
            l.reason = "rcode " + std::to_string(rcode);
            return l;
    }
    bool too_long = false;
    const std::vector<Rr> answer = section(reply, "answer", too_long);
    if (too_long) {
        l.result = DnsResult::Error;
        l.reason = "more than " + std::to_string(kMaxAnswerRecords) + " answer records";
        return l;
    }

    // Follow the CNAME chain from the name asked for (the resolver sends the whole chain).
    std::string current = name;
    std::unordered_set<std::string> seen{name};
    while (type != kTypeCname) {
        auto it = std::find_if(answer.begin(), answer.end(), [&](const Rr& r) {
            return r.type == kTypeCname && r.owner == current;
        });
        if (it == answer.end()) break;
        const std::string target = name_of(get_bin(it->rr, "/rdata/cname"));
        if (l.cnames.size() >= kMaxCnameLinks) {
            l.result = DnsResult::CnameTooLong;
            l.reason = "more than " + std::to_string(kMaxCnameLinks) + " CNAME links";
            return l;
        }
        if (target.empty() || !seen.insert(target).second) {
            l.result = DnsResult::CnameLoop;
            l.reason = "CNAME loop at " + current;
            return l;
        }
        l.cnames.push_back(target);
        lower(l.ttl, it->ttl);
        current = target;
    }

    int64_t data_ttl = -1;
    for (const Rr& r : answer) {
        if (r.type != type || r.owner != current) continue;
        lower(data_ttl, r.ttl);
        switch (type) {
            case kTypeMx:
                l.mx.push_back({static_cast<uint16_t>(get_int(r.rr, "/rdata/preference")),
                                name_of(get_bin(r.rr, "/rdata/exchange"))});
                break;
            case kTypeA:
                l.addresses.push_back(address_text(get_bin(r.rr, "/rdata/ipv4_address")));
                break;
            case kTypeAaaa:
                l.addresses.push_back(address_text(get_bin(r.rr, "/rdata/ipv6_address")));
                break;
            case kTypeTlsa: {
                TlsaRecord t;
                t.usage = static_cast<uint8_t>(get_int(r.rr, "/rdata/certificate_usage"));
                t.selector = static_cast<uint8_t>(get_int(r.rr, "/rdata/selector"));
                t.mtype = static_cast<uint8_t>(get_int(r.rr, "/rdata/matching_type"));
                if (const auto* b = get_bin(r.rr, "/rdata/certificate_association_data"))
                    t.data.assign(reinterpret_cast<const char*>(b->data), b->size);
                judge_tlsa(t);
                l.tlsa.push_back(std::move(t));
                break;
            }
            case kTypeTxt: {
                // RFC 8461 §3.1 (and RFC 7208 §3.3): the strings of one record are joined
                // without spaces.
                std::string text;
                getdns_list* strings = nullptr;
                size_t count = 0;
                if (getdns_dict_get_list(r.rr, "/rdata/txt_strings", &strings) ==
                        GETDNS_RETURN_GOOD &&
                    getdns_list_get_length(strings, &count) == GETDNS_RETURN_GOOD) {
                    for (size_t i = 0; i < count; ++i) {
                        getdns_bindata* b = nullptr;
                        if (getdns_list_get_bindata(strings, i, &b) == GETDNS_RETURN_GOOD && b)
                            text.append(reinterpret_cast<const char*>(b->data), b->size);
                    }
                }
                l.txt.push_back(std::move(text));
                break;
            }
            default:
                break;
        }
    }
    if (l.tlsa.size() > kMaxTlsaRecords) {
        l.tlsa.clear();
        l.result = DnsResult::Error;
        l.reason = "more than " + std::to_string(kMaxTlsaRecords) + " TLSA records";
        return l;
    }
    if (data_ttl >= 0) {
        l.result = DnsResult::Data;
        lower(l.ttl, data_ttl);
        return l;
    }
    l.result = rcode == GETDNS_RCODE_NXDOMAIN ? DnsResult::NxDomain : DnsResult::NoData;
    // A denial lives for min(SOA TTL, SOA minimum) (RFC 2308 §5).
    for (const Rr& r : section(reply, "authority", too_long)) {
        if (r.type != 6) continue;
        lower(l.ttl, std::min<int64_t>(r.ttl, get_int(r.rr, "/rdata/minimum")));
        break;
    }
    return l;
}

struct DnsClient::Upstream {
    std::unique_ptr<getdns_context, ContextFree> ctx;
    std::string label;  // "127.0.0.1:53"; "" for recursion
    int64_t passed_over_until = 0;
};

struct DnsClient::Pending {
    DnsClient* client = nullptr;
    QueryId id = 0;
    std::string name;
    uint16_t type = 0;
    Callback cb;
    std::size_t upstream = 0;  // index of the resolver asked now
    std::size_t tried = 0;     // resolvers asked so far
    bool sent = false;
    bool submitting = false;
    std::optional<DnsLookup> early;  // a reply delivered before getdns_general returned
    bool resolver_error = false;     // getdns reported an error, not the DNS
    bool abandoned = false;          // cancelled while sent: the reply is dropped
    EventPtr retry;                  // set while waiting for the loop to send the next attempt
    bool parked = false;             // outlives its client: every callback is ignored
};

struct DnsClient::Internal {
    static void on_reply(getdns_context*, getdns_callback_type_t kind, getdns_dict* response,
                         void* userarg, getdns_transaction_t) {
        DictPtr owned(response);
        if (kind == GETDNS_CALLBACK_CANCEL) return;  // cancel() already forgot the lookup
        auto* p = static_cast<Pending*>(userarg);
        if (p->parked) return;  // its client is gone (see ~DnsClient)
        DnsLookup l;
        if (kind == GETDNS_CALLBACK_COMPLETE && response) {
            l = parse_getdns_response(p->name, p->type, response);
        } else {
            l.name = p->name;
            l.type = p->type;
            l.result = kind == GETDNS_CALLBACK_TIMEOUT ? DnsResult::Timeout : DnsResult::Error;
            l.reason = kind == GETDNS_CALLBACK_TIMEOUT
                           ? "no answer within " + std::to_string(p->client->timeout_ms_) + " ms"
                           : "resolver error";
        }
        p->resolver_error = kind == GETDNS_CALLBACK_ERROR;
        l.resolver = p->client->upstreams_[p->upstream]->label;
        if (p->submitting) {
            p->early = std::move(l);
            return;
        }
        p->sent = false;
        p->client->handle(p, std::move(l));
    }
};

Result<std::unique_ptr<DnsClient>> DnsClient::create(event_base* base, const DnsSettings& s) {
    std::unique_ptr<DnsClient> c(new DnsClient());
    c->base_ = base;
    c->timeout_ms_ = s.timeout_ms;
    c->max_queries_ = static_cast<std::size_t>(std::max<int64_t>(1, s.max_queries));

    ListPtr anchors;
    {
        std::unique_ptr<FILE, FileClose> f(std::fopen(s.trust_anchor_file.c_str(), "r"));
        if (!f) return make_error("cannot read DNSSEC trust anchors " + s.trust_anchor_file);
        getdns_list* raw = nullptr;
        if (getdns_fp2rr_list(f.get(), &raw, nullptr, 3600) != GETDNS_RETURN_GOOD || !raw)
            return make_error("cannot parse DNSSEC trust anchors " + s.trust_anchor_file);
        anchors.reset(raw);
        size_t n = 0;
        getdns_list_get_length(raw, &n);
        if (n == 0) return make_error("no DNSSEC trust anchors in " + s.trust_anchor_file);
    }

    getdns_dict* ext = getdns_dict_create();
    if (!ext) return make_error("out of memory");
    c->extensions_ = ext;
    getdns_dict_set_int(ext, "dnssec_return_status", GETDNS_EXTENSION_TRUE);
    // Without it getdns drops bogus replies and a bogus answer would look like "no data".
    getdns_dict_set_int(ext, "dnssec_return_all_statuses", GETDNS_EXTENSION_TRUE);

    std::vector<std::string> targets = s.resolvers;
    if (targets.empty()) targets.emplace_back();  // one recursing context
    for (const auto& r : targets) {
        getdns_context* raw = nullptr;
        if (auto rc = getdns_context_create(&raw, 0); rc != GETDNS_RETURN_GOOD)
            return make_error("getdns: " + errstr(rc));
        auto up = std::make_unique<Upstream>();
        up->ctx.reset(raw);
        getdns_context* ctx = raw;
        auto check = [&](getdns_return_t rc, const char* what) -> Status {
            if (rc == GETDNS_RETURN_GOOD) return {};
            return make_error(std::string("getdns ") + what + ": " + errstr(rc));
        };
        if (auto st = check(GetdnsLoop::install(ctx, base), "event base"); !st) return st.error();
        if (auto st =
                check(getdns_context_set_dnssec_trust_anchors(ctx, anchors.get()), "trust anchors");
            !st)
            return st.error();
        if (auto st = check(getdns_context_set_timeout(ctx, static_cast<uint64_t>(s.timeout_ms)),
                            "timeout");
            !st)
            return st.error();
        if (r.empty()) {
            if (auto st =
                    check(getdns_context_set_resolution_type(ctx, GETDNS_RESOLUTION_RECURSING),
                          "recursion");
                !st)
                return st.error();
        } else {
            auto ep = parse_resolver(r);
            if (!ep) return ep.error();
            in6_addr a6{};
            in_addr a4{};
            const bool v6 = inet_pton(AF_INET6, ep->host.c_str(), &a6) == 1;
            if (!v6 && inet_pton(AF_INET, ep->host.c_str(), &a4) != 1)
                return make_error("bad resolver address " + r);
            DictPtr server(getdns_dict_create());
            getdns_bindata type{
                4, reinterpret_cast<uint8_t*>(const_cast<char*>(v6 ? "IPv6" : "IPv4"))};
            getdns_bindata addr{v6 ? 16u : 4u, v6 ? reinterpret_cast<uint8_t*>(&a6)
                                                  : reinterpret_cast<uint8_t*>(&a4)};
            getdns_dict_set_bindata(server.get(), "address_type", &type);
            getdns_dict_set_bindata(server.get(), "address_data", &addr);
            getdns_dict_set_int(server.get(), "port", ep->port);
            ListPtr list(getdns_list_create());
            getdns_list_set_dict(list.get(), 0, server.get());
            if (auto st = check(getdns_context_set_resolution_type(ctx, GETDNS_RESOLUTION_STUB),
                                "stub mode");
                !st)
                return st.error();
            if (auto st = check(getdns_context_set_upstream_recursive_servers(ctx, list.get()),
                                "resolver");
                !st)
                return st.error();
            // DNS over TCP only, one connection per resolver kept open and pipelined. getdns
            // 1.6.0's fallback from a truncated UDP answer to TCP closes descriptors twice
            // under load, and the second close can hit a descriptor that is by then a client's
            // connection, another DNS socket or a SQLite file (docs/soak.md). Its EDNS buffer
            // size cannot be raised either, so answers over 1,432 bytes always take that path.
            getdns_transport_list_t tcp_only[] = {GETDNS_TRANSPORT_TCP};
            if (auto st =
                    check(getdns_context_set_dns_transport_list(ctx, 1, tcp_only), "transport");
                !st)
                return st.error();
            if (auto st = check(getdns_context_set_idle_timeout(ctx, kTcpIdleMs), "idle timeout");
                !st)
                return st.error();
            up->label = ep->to_string();
        }
        c->upstreams_.push_back(std::move(up));
    }
    return c;
}

namespace {
// Recursing contexts of destroyed clients, with the requests their callbacks may still point
// to. Never freed (and reachable, so leak checkers stay quiet).
std::vector<void*>& graveyard() {
    static auto* g = new std::vector<void*>();
    return *g;
}
}  // namespace

DnsClient::~DnsClient() {
    const bool recursing = upstreams_.size() == 1 && upstreams_[0]->label.empty();
    if (recursing) {
        // getdns 1.6 crashes destroying a recursing context while libunbound still has work
        // out (it calls back into requests getdns already freed), and getdns's own DNSSEC
        // chain queries may be out even when none of ours is. Recursing contexts are
        // parked instead: at exit, or once per reload that changes [dns].
        for (auto& [id, p] : pending_) {
            p->parked = true;
            p->retry.reset();
            graveyard().push_back(p.release());
        }
        graveyard().push_back(upstreams_[0]->ctx.release());
    }
    // getdns_context_destroy() ends what is still outstanding (callbacks of kind CANCEL,
    // ignored); only then may the Pending records the callbacks point to go away.
    upstreams_.clear();
    pending_.clear();
    if (extensions_) getdns_dict_destroy(extensions_);
}

DnsClient::QueryId DnsClient::query(const std::string& name, uint16_t type, Callback cb) {
    auto p = std::make_unique<Pending>();
    p->client = this;
    p->id = next_id_++;
    p->name = name;
    p->type = type;
    p->cb = std::move(cb);
    Pending* raw = p.get();
    pending_.emplace(raw->id, std::move(p));
    if (active_ < max_queries_)
        start(raw);
    else
        waiting_.push_back(raw->id);
    return raw->id;
}

void DnsClient::cancel(QueryId id) {
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    Pending* p = it->second.get();
    if (p->retry) {  // between two attempts: holds a slot, nothing outstanding in getdns
        pending_.erase(it);
        --active_;
        return pump();
    }
    if (p->sent) {
        // Not getdns_cancel_callback(): in recursing mode getdns 1.6 leaves libunbound a
        // pointer to the cancelled request and crashes when the context is destroyed. The
        // query is left to finish or time out; its reply is dropped, and it keeps its slot
        // until then (it is still using the resolver).
        p->cb = nullptr;
        p->abandoned = true;
        return;
    }
    waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), id), waiting_.end());
    pending_.erase(it);
}

void DnsClient::start(Pending* p) {
    // The first resolver in order that is not being passed over after a failure.
    const int64_t now = now_ms();
    p->upstream = 0;
    for (std::size_t i = 0; i < upstreams_.size(); ++i)
        if (upstreams_[i]->passed_over_until <= now) {
            p->upstream = i;
            break;
        }
    ++active_;
    send(p);
}

void DnsClient::resend(evutil_socket_t, short, void* arg) {
    auto* p = static_cast<Pending*>(arg);
    p->retry.reset();
    p->client->send(p);
}

void DnsClient::send(Pending* p) {
    ++p->tried;
    p->early.reset();
    p->submitting = true;
    getdns_transaction_t tx = 0;
    const auto rc = getdns_general(upstreams_[p->upstream]->ctx.get(), p->name.c_str(), p->type,
                                   extensions_, p, &tx, &Internal::on_reply);
    p->submitting = false;
    if (rc != GETDNS_RETURN_GOOD) {
        DnsLookup l;
        l.name = p->name;
        l.type = p->type;
        l.result = DnsResult::Error;
        l.reason = errstr(rc);
        return handle(p, std::move(l));
    }
    if (p->early) {
        DnsLookup l = std::move(*p->early);
        p->early.reset();
        return handle(p, std::move(l));
    }
    p->sent = true;
}

namespace {

// tlspolicyd_dns_errors_total{kind}: lookups that ended in a failure (after every retry).
void count_dns_error(const DnsLookup& l) {
    static const auto series = [](const char* kind) {
        return &metrics::global().counter(
            "tlspolicyd_dns_errors_total",
            "DNS lookups that failed (after every resolver and retry) or were bogus",
            {{"kind", kind}});
    };
    static metrics::Counter* const kinds[] = {series("timeout"), series("servfail"),
                                              series("refused"), series("bogus"), series("other")};
    if (l.dnssec == Dnssec::Bogus) return kinds[3]->inc();
    switch (l.result) {
        case DnsResult::Data:
        case DnsResult::NoData:
        case DnsResult::NxDomain:
            return;
        case DnsResult::Timeout:
            return kinds[0]->inc();
        case DnsResult::ServFail:
            return kinds[1]->inc();
        case DnsResult::Refused:
            return kinds[2]->inc();
        case DnsResult::CnameLoop:
        case DnsResult::CnameTooLong:
        case DnsResult::Error:
            return kinds[4]->inc();
    }
}

}  // namespace

void DnsClient::handle(Pending* p, DnsLookup lookup) {
    p->sent = false;
    if (p->abandoned) {
        pending_.erase(p->id);
        --active_;
        return pump();
    }
    // A resolver that does not answer, fails or refuses is passed over for a while and the
    // next one is asked. Unanswered and failed queries get a second round (a query may simply
    // have been lost, or met a connection being taken down), like resolv.conf's "attempts:2";
    // the per-domain deadline bounds the total. The next attempt waits kRetryDelayMs (above).
    const bool timed_out = lookup.result == DnsResult::Timeout;
    const bool errored = lookup.result == DnsResult::Error && p->resolver_error;
    if (timed_out || errored || lookup.result == DnsResult::Refused) {
        const std::size_t n = upstreams_.size();
        if (n > 1) upstreams_[p->upstream]->passed_over_until = now_ms() + kResolverPenaltyMs;
        if (p->tried < (timed_out || errored ? kAttempts * n : n)) {
            p->upstream = (p->upstream + 1) % n;
            p->retry.reset(evtimer_new(base_, &DnsClient::resend, p));
            const timeval delay{0, kRetryDelayMs * 1000};
            if (p->retry && evtimer_add(p->retry.get(), &delay) == 0) return;
            p->retry.reset();
            lookup.reason += " (the next attempt could not be scheduled)";
        }
    }
    if ((timed_out || errored) && p->tried > 1)
        lookup.reason += ", " + std::to_string(p->tried) + " attempts";
    count_dns_error(lookup);
    Callback cb = std::move(p->cb);
    pending_.erase(p->id);
    --active_;
    pump();
    cb(std::move(lookup));
}

void DnsClient::pump() {
    while (active_ < max_queries_ && !waiting_.empty()) {
        const QueryId id = waiting_.front();
        waiting_.pop_front();
        auto it = pending_.find(id);
        if (it != pending_.end()) start(it->second.get());
    }
}

}  // namespace tlspolicy
