// HttpsFetcher (src/sts/https_fetch.h) against the test world's MTA-STS policy hosts: nginx on
// 127.0.0.1 and the scripted hostile server on 127.0.0.2 (tests/world/https/README.md). Every
// test runs the fetcher on its own event_base and runs that loop until the callbacks it waits
// for have fired, with a safety timeout; nothing waits by sleeping. Needs $WORLD (make test).
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "harness.h"
#include "sts/https_fetch.h"
#include "util/event.h"

using tlspolicy::EventBasePtr;
using tlspolicy::EventPtr;
using tlspolicy::FetchRequest;
using tlspolicy::FetchResult;
using tlspolicy::FetchSettings;
using tlspolicy::HttpsFetcher;

namespace {

constexpr int kSafetyMs = 30000;  // no test here should come near it

int64_t now_ms() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// An event_base of the test's own, run until a condition holds or a deadline passes.
struct Loop {
    EventBasePtr base{event_base_new()};

    // True when done() became true; false when the safety timeout ended the wait first.
    bool run_until(const std::function<bool()>& done, int timeout_ms = kSafetyMs) {
        bool expired = false;
        EventPtr safety(evtimer_new(
            base.get(), [](evutil_socket_t, short, void* p) { *static_cast<bool*>(p) = true; },
            &expired));
        const timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        evtimer_add(safety.get(), &tv);
        while (!done() && !expired)
            event_base_loop(base.get(), EVLOOP_ONCE);
        return done();
    }
    // Runs the loop for a fixed window: for checking that nothing happens in it.
    void run_for(int ms) {
        run_until([] { return false; }, ms);
    }
};

FetchSettings world_settings() {
    FetchSettings s;
    s.ca_file = harness::world_env("WEB_CA");
    s.port = static_cast<uint16_t>(std::stoi(harness::world_env("HTTPS_PORT")));
    s.connect_timeout_ms = 5000;
    s.timeout_ms = 15000;
    return s;
}

std::unique_ptr<HttpsFetcher> make_fetcher(Loop& loop, const FetchSettings& s) {
    auto f = HttpsFetcher::create(loop.base.get(), s);
    REQUIRE_MESSAGE(f.ok(), (f.ok() ? "" : f.error().message));
    return std::move(*f);
}

FetchRequest request(const std::string& domain,
                     std::vector<std::string> addresses = {"127.0.0.1"}) {
    FetchRequest r;
    r.host = "mta-sts." + domain;
    r.addresses = std::move(addresses);
    return r;
}

// The policy body a scenario row serves ("" when the row has none).
std::string row_body(const std::string& domain) {
    const auto t = toml::parse_file(harness::world_env("SCENARIOS"));
    for (const auto& node : *t["scenario"].as_array()) {
        const auto& r = *node.as_table();
        if (r["domain"].value_or(std::string()) != domain) continue;
        if (const auto* sts = r["sts"].as_table()) return (*sts)["body"].value_or(std::string());
    }
    return {};
}

// One fetch, run to its callback; also checks that the callback came from the loop.
FetchResult fetch_one(const FetchSettings& s, const FetchRequest& req) {
    Loop loop;
    auto fetcher = make_fetcher(loop, s);
    std::optional<FetchResult> got;
    bool returned = false;
    fetcher->fetch(req, [&](FetchResult r) {
        CHECK_MESSAGE(returned, "callback before fetch() returned");
        got = std::move(r);
    });
    returned = true;
    REQUIRE(loop.run_until([&] { return got.has_value(); }));
    CHECK(fetcher->in_flight() == 0);
    return std::move(*got);
}

// A TCP port on 127.0.0.1 that nothing listens on (bound by the kernel, then closed).
uint16_t closed_port() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

}  // namespace

TEST_CASE("fetch: every kind of policy host gives its result") {
    const std::string rogue_ca = harness::world_env("ROGUE_CA");
    struct Case {
        std::string name, domain;
        std::vector<std::string> addresses;
        std::string code;  // "" = ok
        long status;
        std::string content_type;  // as received; "-" = not checked
        std::string ca_file = "";  // "" = the world's web CA
    };
    const std::vector<Case> cases = {
        {"CRLF policy", "sts-enforce.test", {"127.0.0.1"}, "", 200, "text/plain"},
        {"LF policy", "sts-wild.test", {"127.0.0.1"}, "", 200, "text/plain"},
        {"404 (its body is never read)",
         "sts-404.test",
         {"127.0.0.1"},
         "http_status_404",
         404,
         "text/html"},
        {"301 is not followed", "sts-301.test", {"127.0.0.1"}, "http_status_301", 301, "-"},
        {"text/html", "sts-html.test", {"127.0.0.1"}, "invalid_content_type", 200, "text/html"},
        {"Content-Length over 64 KiB",
         "sts-big-cl.test",
         {"127.0.0.1"},
         "body_too_large",
         200,
         "-"},
        {"chunked body over 64 KiB",
         "sts-big-chunked.test",
         {"127.0.0.1"},
         "body_too_large",
         200,
         "text/plain"},
        {"body until EOF over 64 KiB",
         "sts-big-close.test",
         {"127.0.0.1"},
         "body_too_large",
         200,
         "text/plain"},
        {"certificate from an unknown CA",
         "sts-rogue.test",
         {"127.0.0.1"},
         "certificate_error",
         0,
         ""},
        {"expired certificate", "sts-expired.test", {"127.0.0.1"}, "certificate_error", 0, ""},
        {"certificate for another name",
         "sts-wrongname.test",
         {"127.0.0.1"},
         "certificate_error",
         0,
         ""},
        // The CA setting is what decides: the rogue row passes with the rogue CA.
        {"rogue row trusted with ROGUE_CA",
         "sts-rogue.test",
         {"127.0.0.1"},
         "",
         200,
         "text/plain",
         rogue_ca},
        // ...and the web CA's rows fail with it: the bundle replaces the trust store.
        {"web row with ROGUE_CA",
         "sts-enforce.test",
         {"127.0.0.1"},
         "certificate_error",
         0,
         "",
         rogue_ca},
        // nginx refuses an unknown SNI name (unrecognized_name alert).
        {"unknown host name", "no-such-row.test", {"127.0.0.1"}, "tls_error", 0, ""},
        // Addresses are tried in order: nothing listens on 127.0.0.9 or [::1] at the port.
        {"second address after a refused one",
         "sts-enforce.test",
         {"127.0.0.9", "127.0.0.1"},
         "",
         200,
         "text/plain"},
        {"IPv6 address first", "sts-enforce.test", {"::1", "127.0.0.1"}, "", 200, "text/plain"},
        {"refused", "sts-enforce.test", {"127.0.0.9"}, "connect_failed", 0, ""},
        {"no address", "sts-enforce.test", {}, "no_address", 0, ""},
        {"not a numeric address", "sts-enforce.test", {"localhost"}, "fetch_error", 0, ""},
        {"address with a zone", "sts-enforce.test", {"fe80::1%lo"}, "fetch_error", 0, ""},
    };
    for (const Case& c : cases) {
        CAPTURE(c.name);
        FetchSettings s = world_settings();
        if (!c.ca_file.empty()) s.ca_file = c.ca_file;
        const FetchResult r = fetch_one(s, request(c.domain, c.addresses));
        INFO("got code=", r.code, " reason=", r.reason, " status=", r.status,
             " type=", r.content_type, " address=", r.address);
        CHECK(r.ok == c.code.empty());
        CHECK(r.code == c.code);
        CHECK(r.status == c.status);
        if (c.content_type != "-") CHECK(r.content_type == c.content_type);
        if (r.ok) {
            CHECK(r.body == row_body(c.domain));
            CHECK(r.reason.empty());
            CHECK(r.address == "127.0.0.1");
        } else {
            CHECK(r.body.empty());
            CHECK_FALSE(r.reason.empty());
        }
        if (c.status != 0) CHECK(r.address == "127.0.0.1");
        // Reasons are short and printable; the server's bytes (like the certificate's name
        // "mta-sts.wrong.test") never show up in them.
        CHECK(r.reason.size() <= 160);
        for (char ch : r.reason)
            CHECK((ch >= 0x20 && ch <= 0x7e));
        CHECK(r.reason.find("wrong.test") == std::string::npos);
        CHECK(r.elapsed_ms >= 0);
        CHECK(r.elapsed_ms < 10000);
    }
}

TEST_CASE("fetch: a closed port is connect_failed") {
    FetchSettings s = world_settings();
    s.port = closed_port();
    const FetchResult r = fetch_one(s, request("sts-enforce.test"));
    CHECK(r.code == "connect_failed");
    CHECK(r.status == 0);
}

TEST_CASE("fetch: invalid host names and paths are refused without a connection") {
    const std::vector<std::string> hosts = {
        "",         "1.2.3.4",    "127.1",        "0x7f.1", "a..b.test",          "host name.test",
        "a.test/x", "a.test:443", "xn--a.test\n", ".",      std::string(300, 'a')};
    for (const auto& h : hosts) {
        CAPTURE(h);
        FetchRequest req = request("sts-enforce.test");
        req.host = h;
        const FetchResult r = fetch_one(world_settings(), req);
        CHECK(r.code == "fetch_error");
        CHECK(r.address.empty());
    }
    // Case and one trailing dot do not matter.
    FetchRequest req = request("sts-enforce.test");
    req.host = "MTA-STS.Sts-Enforce.TEST.";
    CHECK(fetch_one(world_settings(), req).ok);
    for (const std::string path : {"", "relative", "/a b", "/x#frag", "/\x01"}) {
        CAPTURE(path);
        req = request("sts-enforce.test");
        req.path = path;
        CHECK(fetch_one(world_settings(), req).code == "fetch_error");
    }
}

TEST_CASE("fetch: a previous pinned address for the same host:port is replaced") {
    // One fetcher, so one libcurl DNS cache: each fetch must use its own addresses.
    Loop loop;
    auto fetcher = make_fetcher(loop, world_settings());
    const std::vector<std::pair<std::string, std::string>> steps = {
        {"127.0.0.1", ""}, {"127.0.0.9", "connect_failed"},
        {"127.0.0.1", ""}, {"127.0.0.2", "tls_error"},  // hostile.py does not know this name
        {"127.0.0.1", ""},
    };
    for (const auto& [addr, code] : steps) {
        CAPTURE(addr);
        std::optional<FetchResult> got;
        fetcher->fetch(request("sts-enforce.test", {addr}), [&](FetchResult r) { got = r; });
        REQUIRE(loop.run_until([&] { return got.has_value(); }));
        CHECK(got->code == code);
        if (code.empty()) CHECK(got->address == addr);
    }
}

TEST_CASE("fetch: the system trust store is used when no CA file is set") {
    // Debian's GnuTLS libcurl trusts /etc/ssl/certs by default; the world's web CA is not in
    // it. A certificate error (not a CA loading error) shows the store loaded and was used.
    FetchSettings s = world_settings();
    s.ca_file.clear();
    const FetchResult r = fetch_one(s, request("sts-enforce.test"));
    CHECK(r.code == "certificate_error");
}

TEST_CASE("fetch: an unreadable CA file fails at create()") {
    Loop loop;
    FetchSettings s = world_settings();
    s.ca_file = "/nonexistent/ca.pem";
    auto f = HttpsFetcher::create(loop.base.get(), s);
    REQUIRE_FALSE(f.ok());
    CHECK(f.error().message.find("/nonexistent/ca.pem") != std::string::npos);
}

TEST_CASE("fetch: a body trickling in at 1 byte/s ends at the timeout") {
    FetchSettings s = world_settings();
    s.timeout_ms = 2000;
    const FetchResult r = fetch_one(s, request("sts-slow.test", {"127.0.0.2"}));
    CAPTURE(r.reason);
    CHECK(r.code == "timeout");
    CHECK(r.status == 200);
    CHECK(r.address == "127.0.0.2");
    CHECK(r.body.empty());
    CHECK(r.elapsed_ms >= 2000);
    CHECK(r.elapsed_ms <= 3500);
}

TEST_CASE("fetch: endless header lines end at the header limit, long before the timeout") {
    // hostile.py sends a 66-byte header line about every 10 ms and never ends the block: the
    // default 16 KiB limit is passed after about 250 lines (~3 s), so with a 15 s timeout the
    // result is headers_too_large. With a timeout below ~3 s it would be "timeout" instead.
    FetchSettings s = world_settings();
    const int64_t t0 = now_ms();
    const FetchResult r = fetch_one(s, request("sts-headers.test", {"127.0.0.2"}));
    CAPTURE(r.reason);
    CHECK(r.code == "headers_too_large");
    CHECK(r.elapsed_ms < s.timeout_ms);
    CHECK(now_ms() - t0 < s.timeout_ms);
    MESSAGE("header flood stopped after ", r.elapsed_ms, " ms");
    // A smaller limit stops it sooner.
    s.max_header_bytes = 1024;
    const FetchResult small = fetch_one(s, request("sts-headers.test", {"127.0.0.2"}));
    CHECK(small.code == "headers_too_large");
    CHECK(small.elapsed_ms < r.elapsed_ms);
}

TEST_CASE("fetch: a smaller max_body is enforced for every transfer mode") {
    FetchSettings s = world_settings();
    const std::string body = row_body("sts-enforce.test");
    REQUIRE(body.size() > 10);
    s.max_body = body.size();
    CHECK(fetch_one(s, request("sts-enforce.test")).ok);  // exactly at the limit
    s.max_body = body.size() - 1;
    CHECK(fetch_one(s, request("sts-enforce.test")).code == "body_too_large");
}

TEST_CASE("fetch: 50 fetches with max_parallel = 4 all succeed") {
    Loop loop;
    FetchSettings s = world_settings();
    s.max_parallel = 4;
    auto fetcher = make_fetcher(loop, s);
    const std::vector<std::string> domains = {"sts-enforce.test", "sts-wild.test",
                                              "sts-testing.test", "sts-none.test",
                                              "sts-signed.test"};
    std::map<std::string, std::string> bodies;
    for (const auto& d : domains)
        bodies[d] = row_body(d);
    constexpr int kFetches = 50;
    int done = 0, ok = 0;
    bool returned = false;
    const int64_t t0 = now_ms();
    for (int i = 0; i < kFetches; ++i) {
        const std::string d = domains[i % domains.size()];
        fetcher->fetch(request(d), [&, d](FetchResult r) {
            CHECK(returned);
            ++done;
            CAPTURE(r.reason);
            if (r.ok && r.body == bodies[d]) ++ok;
        });
    }
    returned = true;
    CHECK(fetcher->in_flight() == kFetches);
    REQUIRE(loop.run_until([&] { return done == kFetches; }));
    CHECK(ok == kFetches);
    CHECK(fetcher->in_flight() == 0);
    MESSAGE(kFetches, " fetches in ", now_ms() - t0, " ms");
}

TEST_CASE("fetch: fetches beyond max_parallel wait, and the wait counts against the timeout") {
    // Four slow fetches hold the four slots until their 1.5 s timeout; the four queued behind
    // them have used up their time by then and end without a connection.
    Loop loop;
    FetchSettings s = world_settings();
    s.max_parallel = 4;
    s.timeout_ms = 1500;
    auto fetcher = make_fetcher(loop, s);
    std::vector<FetchResult> results;
    for (int i = 0; i < 8; ++i)
        fetcher->fetch(request("sts-slow.test", {"127.0.0.2"}),
                       [&](FetchResult r) { results.push_back(std::move(r)); });
    REQUIRE(loop.run_until([&] { return results.size() == 8; }));
    int connected = 0, queued = 0;
    for (const auto& r : results) {
        CAPTURE(r.reason);
        CHECK(r.code == "timeout");
        CHECK(r.elapsed_ms >= 1500);
        CHECK(r.elapsed_ms < 3000);
        if (r.address == "127.0.0.2") ++connected;
        if (r.address.empty() && r.status == 0) ++queued;
    }
    CHECK(connected == 4);
    CHECK(queued == 4);
}

TEST_CASE("fetch: cancel() suppresses the callback, wherever the fetch is") {
    Loop loop;
    FetchSettings s = world_settings();
    s.max_parallel = 2;
    auto fetcher = make_fetcher(loop, s);
    std::vector<std::string> calls;
    auto note = [&](const std::string& name) {
        return [&calls, name](FetchResult r) { calls.push_back(name + ":" + r.code); };
    };
    const auto a = fetcher->fetch(request("sts-enforce.test"), note("a"));
    const auto b = fetcher->fetch(request("sts-slow.test", {"127.0.0.2"}), note("b"));  // running
    const auto c = fetcher->fetch(request("sts-enforce.test"), note("c"));              // queued
    const auto d = fetcher->fetch(request("sts-enforce.test"), note("d"));
    const auto e = fetcher->fetch(request("sts-enforce.test", {}), note("e"));  // result ready
    CHECK(fetcher->in_flight() == 5);
    fetcher->cancel(b);
    fetcher->cancel(c);
    fetcher->cancel(e);
    fetcher->cancel(e);       // twice: ignored
    fetcher->cancel(999999);  // unknown: ignored
    CHECK(fetcher->in_flight() == 2);
    REQUIRE(loop.run_until([&] { return calls.size() == 2; }));
    std::sort(calls.begin(), calls.end());
    CHECK(calls == std::vector<std::string>{"a:", "d:"});
    fetcher->cancel(a);  // finished: ignored
    (void)d;
    loop.run_for(200);
    CHECK(calls.size() == 2);
    CHECK(fetcher->in_flight() == 0);
}

TEST_CASE("fetch: callbacks may fetch, cancel other fetches and destroy the fetcher") {
    Loop loop;
    auto fetcher = make_fetcher(loop, world_settings());
    std::vector<std::string> calls;
    HttpsFetcher::FetchId slow = 0, ready_b = 0;
    // Two results become ready in the same loop pass: the first callback cancels the second,
    // whose result is already waiting for delivery.
    fetcher->fetch(request("x.test", {}), [&](FetchResult r) {
        calls.push_back("a:" + r.code);
        fetcher->cancel(ready_b);
        // A fetch started from a callback runs like any other; its own callback cancels the
        // slow fetch and then destroys the fetcher from inside its callback.
        fetcher->fetch(request("sts-enforce.test"), [&](FetchResult r2) {
            calls.push_back("c:" + std::string(r2.ok ? "ok" : r2.code));
            fetcher->cancel(slow);
            fetcher->fetch(request("sts-enforce.test"), [&](FetchResult) { calls.push_back("d"); });
            fetcher.reset();
        });
    });
    ready_b = fetcher->fetch(request("y.test", {}), [&](FetchResult) { calls.push_back("b"); });
    slow = fetcher->fetch(request("sts-slow.test", {"127.0.0.2"}),
                          [&](FetchResult) { calls.push_back("slow"); });
    REQUIRE(loop.run_until([&] { return !fetcher; }));
    loop.run_for(300);
    CHECK(calls == std::vector<std::string>{"a:no_address", "c:ok"});
    // Everything the fetcher put on the loop went with it.
    CHECK(event_base_get_num_events(loop.base.get(), EVENT_BASE_COUNT_ADDED) == 0);
}

TEST_CASE("fetch: destroying the fetcher with fetches running calls nothing") {
    Loop loop;
    FetchSettings s = world_settings();
    s.max_parallel = 3;
    auto fetcher = make_fetcher(loop, s);
    int calls = 0;
    for (int i = 0; i < 3; ++i)
        fetcher->fetch(request("sts-slow.test", {"127.0.0.2"}), [&](FetchResult) { ++calls; });
    fetcher->fetch(request("sts-enforce.test"), [&](FetchResult) { ++calls; });      // queued
    fetcher->fetch(request("sts-enforce.test", {}), [&](FetchResult) { ++calls; });  // ready
    // Let the slow transfers connect and start reading (an observation window, not a wait for
    // something in particular: any state they are in must be torn down cleanly).
    loop.run_for(300);
    CHECK(calls == 1);  // only the no_address result was delivered
    fetcher.reset();
    CHECK(event_base_get_num_events(loop.base.get(), EVENT_BASE_COUNT_ADDED) == 0);
    loop.run_for(300);
    CHECK(calls == 1);
}
