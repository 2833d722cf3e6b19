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

}  // namespace tlspolicy
