// RAII owners for libevent handles.
#pragma once

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include <memory>

namespace tlspolicy {

struct EventBaseFree {
    void operator()(event_base* b) const { event_base_free(b); }
};
struct EventFree {
    void operator()(event* e) const { event_free(e); }
};
struct BuffereventFree {
    void operator()(bufferevent* b) const { bufferevent_free(b); }
};
struct ListenerFree {
    void operator()(evconnlistener* l) const { evconnlistener_free(l); }
};

using EventBasePtr = std::unique_ptr<event_base, EventBaseFree>;
using EventPtr = std::unique_ptr<event, EventFree>;
using BuffereventPtr = std::unique_ptr<bufferevent, BuffereventFree>;
using ListenerPtr = std::unique_ptr<evconnlistener, ListenerFree>;

// The event loop of the daemon and the CLI, with two priorities: DNS I/O (dns/dns_client.cpp)
// at kDnsPriority runs before anything else that is ready, everything else at the default (1).
// getdns reads one message per wake-up from the resolver's TCP connection, so in a loop busy
// with a thousand clients its answers would come in one per iteration and queries time out
// while their answers wait in the socket (docs/soak.md). Null when libevent fails.
inline constexpr int kDnsPriority = 0;
inline event_base* new_event_base() {
    event_base* b = event_base_new();
    if (b && event_base_priority_init(b, 2) != 0) {
        event_base_free(b);
        return nullptr;
    }
    return b;
}

}  // namespace tlspolicy
