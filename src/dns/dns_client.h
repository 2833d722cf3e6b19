// DnsClient: asynchronous DNS lookups with tlspolicyd's own DNSSEC validation (getdns on the
// daemon's libevent loop). Stub mode sends every query over TCP (one pipelined connection
// per resolver) to the configured resolvers in order, failing over on timeout, REFUSED or
// network errors; with no resolvers getdns recurses
// from the root itself. Every lookup ends in one DnsLookup (see core/dane.h): the CNAME
// chain followed, the records, the DNSSEC status getdns computed (never the AD bit) and the
// rcode. At most `max_queries` lookups run at once; the rest wait in order.
#pragma once

#include <event2/event.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/dane.h"
#include "util/result.h"

struct getdns_context;
struct getdns_dict;

namespace tlspolicy {

struct DnsSettings {
    std::vector<std::string> resolvers;  // as in [dns] resolvers; empty: full recursion
    std::string trust_anchor_file;
    int64_t timeout_ms = 5000;
    int64_t max_queries = 256;
};

class DnsClient {
  public:
    using Callback = std::function<void(DnsLookup)>;
    using QueryId = uint64_t;

    // Fails with a clear message when the trust anchors cannot be read or getdns refuses
    // the settings.
    static Result<std::unique_ptr<DnsClient>> create(event_base* base, const DnsSettings& s);
    ~DnsClient();  // cancels every lookup; their callbacks are not called

    // Starts a lookup of `type` at `name` (lower case, no trailing dot); cb is called exactly
    // once from the event loop, unless the lookup is cancelled first.
    QueryId query(const std::string& name, uint16_t type, Callback cb);
    // Cancels a lookup; its callback is not called. Unknown or finished ids are ignored.
    void cancel(QueryId id);

    std::size_t in_flight() const { return active_; }
    uint64_t lookups_started() const { return next_id_ - 1; }  // query() calls so far
    std::size_t waiting() const { return waiting_.size(); }

    DnsClient(const DnsClient&) = delete;
    DnsClient& operator=(const DnsClient&) = delete;

  private:
    struct Upstream;
    struct Pending;
    DnsClient() = default;

    void start(Pending* p);
    void send(Pending* p);
    static void resend(evutil_socket_t, short, void* arg);  // the next attempt of a lookup
    void handle(Pending* p, DnsLookup lookup);
    void pump();
    struct Internal;  // the getdns callback
    friend struct Internal;

    event_base* base_ = nullptr;
    std::vector<std::unique_ptr<Upstream>> upstreams_;
    getdns_dict* extensions_ = nullptr;
    int64_t timeout_ms_ = 5000;
    std::size_t max_queries_ = 256;
    QueryId next_id_ = 1;
    std::unordered_map<QueryId, std::unique_ptr<Pending>> pending_;
    std::deque<QueryId> waiting_;
    std::size_t active_ = 0;
};

// Turns one getdns response into a DnsLookup for `name`/`type` (exposed for tests):
// follows the CNAME chain from `name` with loop detection and the kMaxCnameLinks limit,
// reads the rcode and the reply's dnssec_status.
DnsLookup parse_getdns_response(const std::string& name, uint16_t type, getdns_dict* response);

}  // namespace tlspolicy
