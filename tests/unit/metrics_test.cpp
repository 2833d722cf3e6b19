// Metrics: registry, text format 0.0.4 rendering, and the HTTP endpoint on a real socket.
#include <doctest/doctest.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "got_want.h"
#include "server/metrics.h"
#include "server/metrics_http.h"
#include "util/event.h"

using namespace tlspolicy;
using namespace tlspolicy::metrics;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

TEST_SUITE_BEGIN("metrics");

TEST_CASE("metrics format_value: got text, want Prometheus number") {
    struct Row {
        double in;
        std::string want;
    };
    const std::vector<Row> rows = {
        {0, "0"},
        {1, "1"},
        {-3, "-3"},
        {1e6, "1000000"},
        {9007199254740991.0, "9007199254740991"},
        {0.25, "0.25"},
        {0.1, "0.1"},
        {0.0001, "0.0001"},
        {0.00025, "0.00025"},
        {2.5, "2.5"},
        {3.4375, "3.4375"},
        {123456.789, "123456.789"},
        {1e-5, "1e-05"},
        {1.5e-7, "1.5e-07"},
        {1e20, "1e+20"},
        {-2.5e18, "-2.5e+18"},
        {kInf, "+Inf"},
        {-kInf, "-Inf"},
        {kNaN, "NaN"},
    };
    for (const auto& r : rows)
        CHECK_EQ_GW(("format_value(" + std::to_string(r.in) + ")").c_str(), format_value(r.in),
                    r.want);
}

TEST_CASE("metrics escape_label_value: got escaped, want text format escaping") {
    struct Row {
        std::string in;
        std::string want;
    };
    const std::vector<Row> rows = {
        {"plain", "plain"},
        {"", ""},
        {R"(a\b)", R"(a\\b)"},
        {R"(say "hi")", R"(say \"hi\")"},
        {"two\nlines", R"(two\nlines)"},
        {"tab\there", "tab\there"},            // only \ " and newline are escaped
        {"\xc3\xbcnicode", "\xc3\xbcnicode"},  // UTF-8 passes through
    };
    for (const auto& r : rows)
        CHECK_EQ_GW("escape_label_value", escape_label_value(r.in), r.want);
}

TEST_CASE("metrics render: counters with labels, grouped by family in registration order") {
    Registry r;
    const Labels dane = {{"protocol", "socketmap"}, {"answer", "dane-only"}};
    r.counter("t_lookups_total", "Lookups answered.", dane).inc(3);
    r.counter("t_plain_total", "No labels.");
    r.counter("t_lookups_total", "Lookups answered.",
              {{"protocol", "tcp_table"}, {"answer", "notfound"}})
        .inc();
    r.counter("t_lookups_total", "Lookups answered.", dane).inc(2);
    r.counter("t_escape_total", "Help with \\ and\nnewline, \"quotes\" kept.",
              {{"reason", "a \"b\"\\c\nd"}})
        .inc(18446744073709551615ull);
    const std::string want =
        "# HELP t_lookups_total Lookups answered.\n"
        "# TYPE t_lookups_total counter\n"
        "t_lookups_total{protocol=\"socketmap\",answer=\"dane-only\"} 5\n"
        "t_lookups_total{protocol=\"tcp_table\",answer=\"notfound\"} 1\n"
        "# HELP t_plain_total No labels.\n"
        "# TYPE t_plain_total counter\n"
        "t_plain_total 0\n"
        "# HELP t_escape_total Help with \\\\ and\\nnewline, \"quotes\" kept.\n"
        "# TYPE t_escape_total counter\n"
        "t_escape_total{reason=\"a \\\"b\\\"\\\\c\\nd\"} 18446744073709551615\n";
    CHECK_EQ_GW("render", r.render(), want);
}

TEST_CASE("metrics render: gauges") {
    Registry r;
    Gauge& conns = r.gauge("t_connections", "Open connections.");
    conns.inc();
    conns.inc();
    conns.dec();
    r.gauge("t_ratio", "A ratio.").set(0.25);
    r.gauge("t_big", "Big.").set(1e20);
    r.gauge("t_neg", "Negative.").set(-3);
    r.gauge("t_build_info", "Build.", {{"version", "0.1.0"}}).set(1);
    r.gauge("t_start_time_seconds", "Start.").set(1700000000);
    const std::string want =
        "# HELP t_connections Open connections.\n"
        "# TYPE t_connections gauge\n"
        "t_connections 1\n"
        "# HELP t_ratio A ratio.\n"
        "# TYPE t_ratio gauge\n"
        "t_ratio 0.25\n"
        "# HELP t_big Big.\n"
        "# TYPE t_big gauge\n"
        "t_big 1e+20\n"
        "# HELP t_neg Negative.\n"
        "# TYPE t_neg gauge\n"
        "t_neg -3\n"
        "# HELP t_build_info Build.\n"
        "# TYPE t_build_info gauge\n"
        "t_build_info{version=\"0.1.0\"} 1\n"
        "# HELP t_start_time_seconds Start.\n"
        "# TYPE t_start_time_seconds gauge\n"
        "t_start_time_seconds 1700000000\n";
    CHECK_EQ_GW("render", r.render(), want);
}

TEST_CASE("metrics render: callbacks are sampled at render time and stop with their handle") {
    Registry r;
    int entries = 7;
    CallbackHandle h = r.gauge_callback("t_cache_entries", "Entries.", [&] { return entries; });
    const std::string with7 =
        "# HELP t_cache_entries Entries.\n# TYPE t_cache_entries gauge\nt_cache_entries 7\n";
    CHECK_EQ_GW("render", r.render(), with7);
    entries = 8;
    CHECK_EQ_GW("render after change", r.render(),
                std::string("# HELP t_cache_entries Entries.\n# TYPE t_cache_entries gauge\n"
                            "t_cache_entries 8\n"));
    h.reset();
    CHECK_EQ_GW("render after reset (family without series is left out)", r.render(),
                std::string());

    // Same name and labels again: the newer callback replaces the older one.
    int calls_a = 0;
    CallbackHandle a = r.gauge_callback("t_cache_entries", "Entries.", [&] {
        ++calls_a;
        return 1.0;
    });
    CallbackHandle b = r.gauge_callback("t_cache_entries", "Entries.", [] { return 2.0; });
    const std::string with2 =
        "# HELP t_cache_entries Entries.\n# TYPE t_cache_entries gauge\nt_cache_entries 2\n";
    CHECK_EQ_GW("render after replace", r.render(), with2);
    CHECK_EQ_GW("calls of the replaced callback", calls_a, 0);
    a.reset();  // the replaced handle does not remove its successor
    CHECK_EQ_GW("render after resetting the replaced handle", r.render(), with2);

    // Move assignment stops the callback the handle held before.
    b = r.gauge_callback("t_other", "Other.", [] { return 0.5; }, {{"kind", "x"}});
    CHECK_EQ_GW(
        "render after move assignment", r.render(),
        std::string("# HELP t_other Other.\n# TYPE t_other gauge\nt_other{kind=\"x\"} 0.5\n"));
}

TEST_CASE("metrics callback handle may outlive its registry") {
    CallbackHandle h;
    {
        Registry r;
        h = r.gauge_callback("t_x", "X.", [] { return 1.0; });
    }
    h.reset();  // no use of the destroyed registry (ASan would tell)
    CHECK(true);
}

TEST_CASE("metrics render: histogram is cumulative with le last, _sum and _count") {
    Registry r;
    const double bounds[] = {0.125, 0.5, 1};
    Histogram& h =
        r.histogram("t_duration_seconds", "Duration.", bounds, {{"protocol", "socketmap"}});
    for (double v : {0.0625, 0.125, 0.25, 1.0, 2.0})
        h.observe(v);
    const std::string want =
        "# HELP t_duration_seconds Duration.\n"
        "# TYPE t_duration_seconds histogram\n"
        "t_duration_seconds_bucket{protocol=\"socketmap\",le=\"0.125\"} 2\n"
        "t_duration_seconds_bucket{protocol=\"socketmap\",le=\"0.5\"} 3\n"
        "t_duration_seconds_bucket{protocol=\"socketmap\",le=\"1\"} 4\n"
        "t_duration_seconds_bucket{protocol=\"socketmap\",le=\"+Inf\"} 5\n"
        "t_duration_seconds_sum{protocol=\"socketmap\"} 3.4375\n"
        "t_duration_seconds_count{protocol=\"socketmap\"} 5\n";
    CHECK_EQ_GW("render", r.render(), want);

    Registry empty;
    const double with_inf[] = {1, kInf};  // a trailing +Inf is implicit, not doubled
    empty.histogram("t_h", "H.", with_inf);
    CHECK_EQ_GW("render of an empty histogram", empty.render(),
                std::string("# HELP t_h H.\n# TYPE t_h histogram\n"
                            "t_h_bucket{le=\"1\"} 0\nt_h_bucket{le=\"+Inf\"} 0\n"
                            "t_h_sum 0\nt_h_count 0\n"));
}

TEST_CASE("metrics histogram bucket edges: got first bucket, want le semantics") {
    const double bounds[] = {0.125, 0.5, 1};
    struct Row {
        double v;
        std::size_t bucket;  // 3 = +Inf
    };
    const std::vector<Row> rows = {
        {-1, 0}, {0, 0},         {0.125, 0}, {0.12500001, 1}, {0.5, 1},  {0.5000001, 2},
        {1, 2},  {1.0000001, 3}, {1e9, 3},   {kInf, 3},       {kNaN, 3},
    };
    for (const auto& r : rows) {
        Histogram h(bounds);
        h.observe(r.v);
        std::size_t first = 4;
        for (std::size_t i = 0; i <= 3; ++i)
            if (h.cumulative(i) == 1) {
                first = i;
                break;
            }
        CHECK_EQ_GW(("bucket of " + std::to_string(r.v)).c_str(), first, r.bucket);
        CHECK_EQ_GW("count", h.count(), uint64_t{1});
    }
}

TEST_CASE("metrics kLatencyBuckets render the contract's le values") {
    Registry r;
    r.histogram("tlspolicyd_lookup_duration_seconds", "Lookup duration.", kLatencyBuckets);
    const std::string out = r.render();
    std::vector<std::string> got;
    for (std::size_t p = 0; (p = out.find("le=\"", p)) != std::string::npos;) {
        p += 4;
        got.push_back(out.substr(p, out.find('"', p) - p));
    }
    const std::vector<std::string> want = {
        "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
        "0.1",    "0.25",    "0.5",    "1",     "2.5",    "5",     "10",   "+Inf"};
    CHECK_EQ_GW("le values", got, want);
}

TEST_CASE("metrics registry: same name and labels return the same object") {
    Registry r;
    Counter& c = r.counter("t_c_total", "C.", {{"a", "1"}, {"b", "2"}});
    CHECK(&c == &r.counter("t_c_total", "C.", {{"a", "1"}, {"b", "2"}}));
    CHECK(&c == &r.counter("t_c_total", "C.", {{"b", "2"}, {"a", "1"}}));  // order-insensitive
    CHECK(&c != &r.counter("t_c_total", "C.", {{"a", "1"}, {"b", "3"}}));
    CHECK(&c != &r.counter("t_c_total", "C."));
    Gauge& g = r.gauge("t_g", "G.");
    CHECK(&g == &r.gauge("t_g", "G."));
    Histogram& h = r.histogram("t_h", "H.", kLatencyBuckets);
    CHECK(&h == &r.histogram("t_h", "H.", kLatencyBuckets));
    // References stay valid while many more series are added.
    for (int i = 0; i < 1000; ++i)
        r.counter("t_c_total", "C.", {{"a", std::to_string(i)}});
    c.inc(4);
    CHECK_EQ_GW("value through the old reference",
                r.counter("t_c_total", "C.", {{"a", "1"}, {"b", "2"}}).value(), uint64_t{4});
    CHECK(&global() == &global());
}

TEST_CASE("metrics counter and gauge increments from 4 threads add up") {
    Registry r;
    Counter& c = r.counter("t_threads_total", "T.");
    Gauge& g = r.gauge("t_threads", "T.");
    constexpr int kThreads = 4;
    constexpr int kPerThread = 100000;
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
        threads.emplace_back([&] {
            for (int i = 0; i < kPerThread; ++i) {
                c.inc();
                g.inc();
            }
            for (int i = 0; i < kPerThread / 2; ++i)
                g.dec();
        });
    for (auto& t : threads)
        t.join();
    CHECK_EQ_GW("counter", c.value(), uint64_t{kThreads * kPerThread});
    CHECK_EQ_GW("gauge", g.value(), double{kThreads * kPerThread / 2});
}

// ---- HTTP -------------------------------------------------------------------------------

namespace {

// One request on a fresh connection, driven on `base` (the server's loop) until the server
// closes or resets it; a 5 s timer guards against a hang. No sleeps, no threads.
struct Exchange {
    std::string raw;     // everything the server sent
    bool reset = false;  // ended by an error (e.g. ECONNRESET) rather than EOF
    bool timed_out = false;
};

Exchange http_exchange(event_base* base, const std::string& address, const std::string& request) {
    Exchange ex;
    sockaddr_storage ss{};
    int len = sizeof ss;
    if (address.starts_with("unix:")) {
        auto* sun = reinterpret_cast<sockaddr_un*>(&ss);
        sun->sun_family = AF_UNIX;
        std::strncpy(sun->sun_path, address.c_str() + 5, sizeof sun->sun_path - 1);
        len = sizeof *sun;
    } else {
        REQUIRE(evutil_parse_sockaddr_port(address.c_str(), reinterpret_cast<sockaddr*>(&ss),
                                           &len) == 0);
    }
    BuffereventPtr bev(bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE));
    REQUIRE(bev);
    struct Ctx {
        Exchange* ex;
        event_base* base;
    } ctx{&ex, base};
    auto drain = [](bufferevent* b, void* arg) {
        auto* c = static_cast<Ctx*>(arg);
        evbuffer* in = bufferevent_get_input(b);
        const std::size_t n = evbuffer_get_length(in);
        const auto* p = reinterpret_cast<const char*>(evbuffer_pullup(in, -1));
        c->ex->raw.append(p ? p : "", n);
        evbuffer_drain(in, n);
    };
    bufferevent_data_cb read_cb = drain;
    bufferevent_event_cb event_cb = [](bufferevent* b, short what, void* arg) {
        if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))) return;
        auto* c = static_cast<Ctx*>(arg);
        evbuffer* in = bufferevent_get_input(b);
        const std::size_t n = evbuffer_get_length(in);
        const auto* p = reinterpret_cast<const char*>(evbuffer_pullup(in, -1));
        c->ex->raw.append(p ? p : "", n);
        c->ex->reset = (what & BEV_EVENT_ERROR) != 0;
        event_base_loopbreak(c->base);
    };
    bufferevent_setcb(bev.get(), read_cb, nullptr, event_cb, &ctx);
    bufferevent_enable(bev.get(), EV_READ | EV_WRITE);
    REQUIRE(bufferevent_write(bev.get(), request.data(), request.size()) == 0);
    REQUIRE(bufferevent_socket_connect(bev.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
    EventPtr timer(evtimer_new(
        base,
        [](evutil_socket_t, short, void* arg) {
            auto* c = static_cast<Ctx*>(arg);
            c->ex->timed_out = true;
            event_base_loopbreak(c->base);
        },
        &ctx));
    const timeval five{5, 0};
    evtimer_add(timer.get(), &five);
    event_base_dispatch(base);
    return ex;
}

struct Response {
    std::string status;  // "200", "404", … or "" when there was no status line
    std::string content_type;
    std::string content_length;
    std::string allow;
    std::string body;  // Content-Length bytes when given, else all that follows the head
    std::string rest;  // what follows the body (the next pipelined response)
};

Response parse(const std::string& raw) {
    Response r;
    const auto head_end = raw.find("\r\n\r\n");
    if (!raw.starts_with("HTTP/1.") || head_end == std::string::npos) return r;
    r.status = raw.substr(9, 3);
    std::size_t p = raw.find("\r\n") + 2;
    while (p < head_end) {
        const auto eol = raw.find("\r\n", p);
        const std::string line = raw.substr(p, eol - p);
        const auto colon = line.find(": ");
        if (colon != std::string::npos) {
            const std::string name = line.substr(0, colon);
            const std::string value = line.substr(colon + 2);
            if (strcasecmp(name.c_str(), "Content-Type") == 0) r.content_type = value;
            if (strcasecmp(name.c_str(), "Content-Length") == 0) r.content_length = value;
            if (strcasecmp(name.c_str(), "Allow") == 0) r.allow = value;
        }
        p = eol + 2;
    }
    const std::size_t n =
        r.content_length.empty() ? std::string::npos : std::stoul(r.content_length);
    r.body = raw.substr(head_end + 4, n);
    r.rest = raw.substr(head_end + 4 + r.body.size());
    return r;
}

Registry& sample_registry(Registry& r) {
    r.counter("tlspolicyd_lookups_total", "Answers.",
              {{"protocol", "socketmap"}, {"answer", "dane"}})
        .inc(3);
    r.gauge("tlspolicyd_connections", "Open client connections.").set(2);
    r.histogram("tlspolicyd_lookup_duration_seconds", "Lookup duration.", kLatencyBuckets)
        .observe(0.003);
    return r;
}

}  // namespace

TEST_CASE("metrics http: got status and body, want the contract's answers") {
    EventBasePtr base(event_base_new());
    REQUIRE(base);
    Registry registry;
    sample_registry(registry);
    auto ep = parse_endpoint("127.0.0.1:0");
    REQUIRE(ep);
    auto server = MetricsHttp::start(base.get(), *ep, registry);
    REQUIRE_MESSAGE(server, (server ? "" : server.error().message));
    const std::string addr = (*server)->bound_address();
    CHECK(addr.starts_with("127.0.0.1:"));
    CHECK(addr != "127.0.0.1:0");

    const std::string rendered = registry.render();
    const std::string length = std::to_string(rendered.size());
    const std::string big_header = "X-Big: " + std::string(16 * 1024, 'a') + "\r\n";
    struct Row {
        std::string name;
        std::string request;
        std::string status;  // "" = anything but a 200: rejected or closed
        std::string body;    // checked for 200 answers
    };
    const std::vector<Row> rows = {
        {"GET", "GET /metrics HTTP/1.0\r\n\r\n", "200", rendered},
        {"GET with query", "GET /metrics?x=1 HTTP/1.0\r\n\r\n", "200", rendered},
        {"GET HTTP/1.1 close", "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
         "200", rendered},
        {"HEAD", "HEAD /metrics HTTP/1.0\r\n\r\n", "200", ""},
        {"root", "GET / HTTP/1.0\r\n\r\n", "404", ""},
        {"trailing slash", "GET /metrics/ HTTP/1.0\r\n\r\n", "404", ""},
        {"other path", "GET /metricsx HTTP/1.0\r\n\r\n", "404", ""},
        {"POST", "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n", "405", ""},
        {"DELETE", "DELETE /metrics HTTP/1.0\r\n\r\n", "405", ""},
        {"PUT", "PUT /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n", "405", ""},
        {"body too large",
         "POST /metrics HTTP/1.0\r\nContent-Length: 100\r\n\r\n" + std::string(100, 'b'), "413",
         ""},
        // evhttp answers methods it does not know before our handler sees them.
        {"unknown method", "FOO /metrics HTTP/1.0\r\n\r\n", "501", ""},
        {"oversized header", "GET /metrics HTTP/1.0\r\n" + big_header + "\r\n", "", ""},
        {"garbage", "\x01\x02 not http\r\n\r\n", "", ""},
    };
    for (const auto& row : rows) {
        CAPTURE(row.name);
        const Exchange ex = http_exchange(base.get(), addr, row.request);
        CHECK_FALSE(ex.timed_out);
        const Response r = parse(ex.raw);
        if (row.status.empty()) {
            CHECK_MESSAGE(r.status != "200", "got 200, want a rejection");
            continue;
        }
        CHECK_EQ_GW("status", r.status, row.status);
        CHECK_EQ_GW("bytes after the response", r.rest, std::string());
        if (row.status == "200") {
            CHECK_EQ_GW("content type", r.content_type,
                        std::string("text/plain; version=0.0.4; charset=utf-8"));
            CHECK_EQ_GW("body", r.body, row.body);
            CHECK_EQ_GW("content length", r.content_length, length);
        }
        if (row.status == "405") CHECK_EQ_GW("allow", r.allow, std::string("GET, HEAD"));
    }

    // Keep-alive as Prometheus scrapes: two pipelined requests on one connection.
    const Response first = parse(http_exchange(base.get(), addr,
                                               "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                                               "GET /metrics HTTP/1.1\r\nHost: x\r\n"
                                               "Connection: close\r\n\r\n")
                                     .raw);
    CHECK_EQ_GW("first keep-alive status", first.status, std::string("200"));
    CHECK_EQ_GW("first keep-alive body", first.body, rendered);
    const Response second = parse(first.rest);
    CHECK_EQ_GW("second keep-alive status", second.status, std::string("200"));
    CHECK_EQ_GW("second keep-alive body", second.body, rendered);

    // Still serving after the hostile requests.
    const Response after =
        parse(http_exchange(base.get(), addr, "GET /metrics HTTP/1.0\r\n\r\n").raw);
    CHECK_EQ_GW("status after hostile requests", after.status, std::string("200"));
}

TEST_CASE("metrics http: the body follows the registry between scrapes") {
    EventBasePtr base(event_base_new());
    Registry registry;
    Counter& c = registry.counter("t_total", "T.");
    auto server = MetricsHttp::start(base.get(), *parse_endpoint("127.0.0.1:0"), registry);
    REQUIRE(server);
    const std::string addr = (*server)->bound_address();
    c.inc();
    CHECK_EQ_GW("body",
                parse(http_exchange(base.get(), addr, "GET /metrics HTTP/1.0\r\n\r\n").raw).body,
                std::string("# HELP t_total T.\n# TYPE t_total counter\nt_total 1\n"));
    c.inc();
    CHECK_EQ_GW("body",
                parse(http_exchange(base.get(), addr, "GET /metrics HTTP/1.0\r\n\r\n").raw).body,
                std::string("# HELP t_total T.\n# TYPE t_total counter\nt_total 2\n"));
}

TEST_CASE("metrics http: unix socket is served, mode 0660, removed on destruction") {
    char dir_template[] = "/tmp/metrics_test.XXXXXX";
    const char* dir = mkdtemp(dir_template);
    REQUIRE(dir);
    const std::string path = std::string(dir) + "/metrics.sock";
    EventBasePtr base(event_base_new());
    Registry registry;
    sample_registry(registry);
    {
        auto server = MetricsHttp::start(base.get(), *parse_endpoint("unix:" + path), registry);
        REQUIRE_MESSAGE(server, (server ? "" : server.error().message));
        CHECK_EQ_GW("bound address", (*server)->bound_address(), "unix:" + path);
        struct stat st {};
        REQUIRE(stat(path.c_str(), &st) == 0);
        CHECK_EQ_GW("mode", static_cast<unsigned>(st.st_mode & 0777), 0660u);
        const Response r =
            parse(http_exchange(base.get(), "unix:" + path, "GET /metrics HTTP/1.0\r\n\r\n").raw);
        CHECK_EQ_GW("status", r.status, std::string("200"));
        CHECK_EQ_GW("body", r.body, registry.render());

        // A second server on the same live socket is refused, and leaves the file alone.
        auto second = MetricsHttp::start(base.get(), *parse_endpoint("unix:" + path), registry);
        REQUIRE_FALSE(second);
        CHECK(
            second.error().message.starts_with("cannot listen for metrics on unix:" + path + ": "));
        CHECK(access(path.c_str(), F_OK) == 0);
    }
    CHECK_MESSAGE(access(path.c_str(), F_OK) != 0, "socket file still there after destruction");
    rmdir(dir);
}

TEST_CASE("metrics http: a port in use is an error with a clear message") {
    EventBasePtr base(event_base_new());
    Registry registry;
    auto first = MetricsHttp::start(base.get(), *parse_endpoint("127.0.0.1:0"), registry);
    REQUIRE(first);
    const std::string addr = (*first)->bound_address();
    auto second = MetricsHttp::start(base.get(), *parse_endpoint(addr), registry);
    REQUIRE_FALSE(second);
    const std::string want_prefix = "cannot listen for metrics on " + addr + ": ";
    INFO("got " << second.error().message << ", want prefix " << want_prefix);
    CHECK(second.error().message.starts_with(want_prefix));
}

TEST_SUITE_END();
