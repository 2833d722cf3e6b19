// The DANE engine against the test world: every row of the scenario table through
// `tlspolicy query --json` and through the daemon queried by Postfix's postmap, resolver
// fail-over, the per-domain deadline, and shared resolutions. Needs $WORLD (make test).
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dns/dane_engine.h"
#include "harness.h"
#include "util/event.h"

using harness::Daemon;
using harness::TempDir;

namespace {

using harness::contains;
using harness::json_outcome;
using harness::lines;

using Row = harness::Scenario;

// A DnsClient on `base` that asks the world's resolver front, `timeout_ms` per query.
std::unique_ptr<tlspolicy::DnsClient> world_dns_client(event_base* base, int64_t timeout_ms) {
    tlspolicy::DnsSettings settings;
    settings.resolvers = {"127.0.0.1:" + harness::world_env("RESOLVER_PORT")};
    settings.trust_anchor_file = harness::world_env("ANCHOR");
    settings.timeout_ms = timeout_ms;
    auto client = tlspolicy::DnsClient::create(base, settings);
    REQUIRE(client.ok());
    return std::move(*client);
}

std::vector<Row> rows() {
    return harness::scenarios();
}

}  // namespace

TEST_CASE("dane: every scenario row through tlspolicy query --json, all keys at once") {
    const auto table = rows();
    REQUIRE(table.size() >= 60);
    std::vector<std::string> args = {"-c", harness::world_env("CONFIG"), "query", "--json"};
    for (const auto& r : table)
        args.push_back(r.key);
    const auto res = harness::tlspolicy(args);
    const auto out = lines(res.out);
    REQUIRE(out.size() == table.size());
    int dane_rows = 0;
    for (std::size_t i = 0; i < table.size(); ++i) {
        const Row& r = table[i];
        const std::string& got = out[i];
        CAPTURE(r.name);
        CAPTURE(got);
        // Every computed answer explains itself: the deciding rule and the MX lookup.
        CHECK(contains(got, "\"rule\":"));
        CHECK(contains(got, "\"mx_lookup\":{"));
        if (r.decided_by == "dane") {
            ++dane_rows;
            CHECK(contains(got, json_outcome(r.answer)));
        } else if (r.decided_by == "mta-sts") {
            // The DANE half hands these to MTA-STS: "no DANE".
            CHECK(contains(got, "\"verdict\":\"no-dane\""));
        } else {
            // "both": the DANE half says `dane` with an unfinished TLSA lookup, and the
            // MTA-STS policy turns that into TEMP (tests/integration/sts_test.cpp).
            CHECK(contains(got, "\"verdict\":\"dane\""));
            CHECK(contains(got, "\"unfinished\":true"));
            CHECK(contains(got, json_outcome(r.answer)));
        }
        // RFC 7672 / architecture.md principle 4: bogus never falls through to "no policy".
        if (r.bogus) CHECK_FALSE(contains(got, "\"verdict\":\"no-dane\""));
    }
    CHECK(dane_rows >= 35);
    CHECK(res.exit_code == 75);  // the worst of all keys: some rows are TEMP
}

TEST_CASE("dane: every DANE row through the daemon, asked by Postfix's postmap -q") {
    TempDir dir;
    Daemon d(dir, std::string(harness::kLoopbackListeners) + harness::world_dns());
    const std::vector<std::string> maps = {"socketmap:inet:" + d.address("socketmap") + ":postfix",
                                           "tcp:" + d.address("tcp_table")};
    int checked = 0;
    for (const auto& r : rows()) {
        if (r.decided_by != "dane") continue;
        for (const auto& map : maps) {
            CAPTURE(r.name);
            CAPTURE(map);
            const auto res = harness::postmap(dir, r.key, map);
            CHECK(harness::postmap_mismatch(res, r.answer, map) == "");
            ++checked;
        }
    }
    CHECK(checked >= 70);
}

TEST_CASE("dane: a dead or closed first resolver fails over to the next one") {
    TempDir dir;
    const std::string front = "127.0.0.1:" + harness::world_env("RESOLVER_PORT");
    const std::string dead = "127.0.0.1:" + harness::world_env("BLACKHOLE_PORT");
    struct Case {
        std::string name, resolvers;
    };
    const std::vector<Case> cases = {
        {"never answers", "\"" + dead + "\", \"" + front + "\""},
        {"two dead ones first", "\"" + dead + "\", \"127.0.0.1:1\", \"" + front + "\""},
    };
    for (const auto& c : cases) {
        CAPTURE(c.name);
        dir.write("fo.toml", "[dns]\nresolvers = [" + c.resolvers + "]\ntrust_anchor_file = \"" +
                                 harness::world_env("ANCHOR") + "\"\ntimeout_ms = 300\n");
        const auto res =
            harness::tlspolicy({"-c", dir.file("fo.toml"), "query", "--json", "dane-ee.test"});
        CAPTURE(res.out);
        CHECK(res.exit_code == 0);
        CHECK(contains(res.out, "\"policy\":\"dane-only\""));
        // The answers came from the live resolver, not from a guess.
        CHECK(contains(res.out, "\"resolver\":\"" + front + "\""));
        CHECK_FALSE(contains(res.out, "\"resolver\":\"" + dead + "\""));
    }
}

TEST_CASE("dane: the per-domain deadline ends lookups that are still running") {
    TempDir dir;
    dir.write("dl.toml", "[dns]\nresolvers = [\"127.0.0.1:" + harness::world_env("RESOLVER_PORT") +
                             "\"]\ntrust_anchor_file = \"" + harness::world_env("ANCHOR") +
                             "\"\ntimeout_ms = 1000\ndeadline_ms = 1500\n");
    // The MX lookup never finishes (1000 ms per attempt, two attempts): TEMP at the deadline.
    auto res =
        harness::tlspolicy({"-c", dir.file("dl.toml"), "query", "--json", "mx-timeout.test"});
    CAPTURE(res.out);
    CHECK(res.exit_code == 75);
    CHECK(contains(res.out, "\"deadline_reached\":true"));
    CHECK(contains(res.out, "per-domain deadline reached"));
    // The TLSA lookup never finishes: the secure MX set stays known, so `dane`, never not found.
    res = harness::tlspolicy({"-c", dir.file("dl.toml"), "query", "--json", "tlsa-timeout.test"});
    CHECK(res.exit_code == 0);
    CHECK(contains(res.out, "\"policy\":\"dane\""));
    CHECK(contains(res.out, "\"deadline_reached\":true"));
}

TEST_CASE("dane: concurrent lookups of one domain share one resolution") {
    tlspolicy::EventBasePtr base(event_base_new());
    std::shared_ptr<tlspolicy::DnsClient> dns = world_dns_client(base.get(), 1000);
    tlspolicy::DaneEngine engine(base.get(), dns, tlspolicy::DaneLimits{});

    std::vector<std::string> verdicts;
    auto collect = [&](const tlspolicy::DaneFacts&, const tlspolicy::DaneDecision& d) {
        verdicts.emplace_back(tlspolicy::dane_verdict_name(d.verdict));
    };
    for (int i = 0; i < 5; ++i)
        engine.gather("dane-two.test", collect);
    CHECK(engine.in_progress() == 1);
    event_base_dispatch(base.get());
    CHECK(verdicts == std::vector<std::string>(5, "dane-only"));
    // One resolution: MX, then A, AAAA and TLSA for each of the two hosts.
    CHECK(dns->lookups_started() == 7);
    // Finished resolutions are not shared (no cache yet): a later lookup asks again.
    engine.gather("dane-two.test", collect);
    event_base_dispatch(base.get());
    CHECK(verdicts.size() == 6);
    CHECK(dns->lookups_started() == 14);
}

TEST_CASE("dns: the connections to the resolver send at once (Nagle off)") {
    // With Nagle's algorithm on, a query written while the previous one is unacknowledged
    // waits for the resolver's delayed ACK, in practice for the previous answer: pipelined
    // queries go out one round trip apart (docs/benchmarks.md, cold path). getdns does not
    // set TCP_NODELAY itself; our event loop for it does.
    tlspolicy::EventBasePtr base(event_base_new());
    const auto dns = world_dns_client(base.get(), 5000);
    const int port = std::stoi(harness::world_env("RESOLVER_PORT"));
    std::vector<int> nodelay;  // TCP_NODELAY of each of this process's sockets to the resolver
    std::optional<tlspolicy::DnsLookup> got;
    dns->query("dane-ee.test", tlspolicy::kTypeMx, [&](tlspolicy::DnsLookup l) {
        got = std::move(l);
        // The connection stays open after an answer (idle timeout): look at it now.
        for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
            const int fd = std::stoi(e.path().filename().string());
            sockaddr_in peer{};
            socklen_t len = sizeof peer;
            int type = 0;
            socklen_t tlen = sizeof type;
            if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) != 0 || type != SOCK_STREAM)
                continue;
            if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0 ||
                peer.sin_family != AF_INET || ntohs(peer.sin_port) != port)
                continue;
            int on = -1;
            socklen_t olen = sizeof on;
            REQUIRE(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &olen) == 0);
            nodelay.push_back(on);
        }
        event_base_loopbreak(base.get());
    });
    event_base_dispatch(base.get());
    REQUIRE(got);
    CHECK(got->result == tlspolicy::DnsResult::Data);
    REQUIRE_FALSE(nodelay.empty());  // the lookup went over TCP to the resolver
    for (int on : nodelay)
        CHECK(on != 0);
}

TEST_CASE("dns: answers are read before other work in a busy loop") {
    // A loop that always has work: 50 events that are always ready (a pipe never drained),
    // each taking 2 ms, so one pass over them takes 100 ms. getdns reads one message per
    // wake-up from the resolver's TCP connection; if each read waited for a whole pass, the
    // answers of a lookup (and of its validation chain) would take seconds to come in and
    // the query would time out (500 ms here). DNS events run at a higher priority on a base
    // made by new_event_base().
    tlspolicy::EventBasePtr base(tlspolicy::new_event_base());
    REQUIRE(base);
    const auto dns = world_dns_client(base.get(), 500);
    const std::vector<std::string> names = {"dane-ee.test", "dane-two.test", "dane-ta-spki.test"};
    std::size_t warm = 0;  // asked once on an idle loop first: a cold validation may be slow
    for (const auto& n : names)
        dns->query(n, tlspolicy::kTypeMx, [&](tlspolicy::DnsLookup) {
            if (++warm == names.size()) event_base_loopbreak(base.get());
        });
    event_base_dispatch(base.get());
    REQUIRE(warm == names.size());

    int fds[2];
    REQUIRE(pipe(fds) == 0);
    REQUIRE(write(fds[1], "x", 1) == 1);
    auto busy = [](evutil_socket_t, short, void*) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2);
        while (std::chrono::steady_clock::now() < until) {
        }
    };
    std::vector<tlspolicy::EventPtr> load;
    for (int i = 0; i < 50; ++i) {
        load.emplace_back(event_new(base.get(), fds[0], EV_READ | EV_PERSIST, busy, nullptr));
        event_add(load.back().get(), nullptr);
    }
    std::vector<tlspolicy::DnsLookup> got;
    for (const auto& n : names)
        dns->query(n, tlspolicy::kTypeMx, [&](tlspolicy::DnsLookup l) {
            got.push_back(std::move(l));
            if (got.size() == names.size()) event_base_loopbreak(base.get());
        });
    event_base_dispatch(base.get());
    load.clear();
    close(fds[0]);
    close(fds[1]);
    REQUIRE(got.size() == names.size());
    for (const auto& l : got) {
        CAPTURE(l.name);
        CAPTURE(l.reason);
        CHECK(l.result == tlspolicy::DnsResult::Data);
        CHECK(l.dnssec == tlspolicy::Dnssec::Secure);
    }
}

TEST_CASE("dns: a query that times out does not fail the other queries sent beside it") {
    // One name whose queries are never answered (the front drops them), and a steady stream
    // of lookups of answered names while it times out twice: every one of those must come
    // back with its data. (getdns 1.6.0 over TCP marks the resolver failed after one timeout
    // and fails everything sent to it for a while: docs/soak.md.)
    tlspolicy::EventBasePtr base(event_base_new());
    const auto dns = world_dns_client(base.get(), 500);
    auto& client = *dns;
    const std::vector<std::string> names = {"dane-ee.test", "dane-two.test", "dane-ta-spki.test"};
    // Each answered name once first, so that only the dropped one can be slow below (a
    // resolver that has just started may take longer than 500 ms for a cold validation).
    std::size_t warm = 0;
    for (const auto& n : names)
        client.query(n, tlspolicy::kTypeMx, [&](tlspolicy::DnsLookup) { ++warm; });
    event_base_dispatch(base.get());
    REQUIRE(warm == names.size());

    std::optional<tlspolicy::DnsLookup> dropped;
    client.query("mx-timeout.test", tlspolicy::kTypeMx,
                 [&](tlspolicy::DnsLookup l) { dropped = std::move(l); });
    std::vector<tlspolicy::DnsLookup> others;
    std::size_t started = 0;
    // A new lookup every 20 ms until the dropped one has ended, so that some are always
    // outstanding when its attempts time out.
    struct Ticker {
        std::function<void()> fn;
        static void cb(evutil_socket_t, short, void* arg) { static_cast<Ticker*>(arg)->fn(); }
    } ticker;
    tlspolicy::EventPtr tick(evtimer_new(base.get(), &Ticker::cb, &ticker));
    ticker.fn = [&] {
        if (dropped) return;
        client.query(names[started % names.size()], tlspolicy::kTypeMx,
                     [&](tlspolicy::DnsLookup l) { others.push_back(std::move(l)); });
        ++started;
        timeval tv{0, 20000};
        evtimer_add(tick.get(), &tv);
    };
    ticker.fn();
    event_base_dispatch(base.get());

    REQUIRE(dropped);
    CHECK(dropped->result == tlspolicy::DnsResult::Timeout);
    CHECK(contains(dropped->reason, "2 attempts"));
    CHECK(started >= 40);  // the stream ran through both attempts (2 × 500 ms)
    CHECK(others.size() == started);
    for (const auto& l : others) {
        CAPTURE(l.name);
        CAPTURE(l.reason);
        CHECK(l.result == tlspolicy::DnsResult::Data);
        CHECK(l.dnssec == tlspolicy::Dnssec::Secure);
        CHECK_FALSE(l.mx.empty());
    }
}
