// The protocol server over real sockets: framing, pipelining, limits, unix sockets, signals.
#include <doctest/doctest.h>

#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "harness.h"

using harness::Client;
using harness::Daemon;
using harness::netstring;
using harness::TempDir;

namespace {

const std::string kListen = harness::kLoopbackListeners;

const std::string kOverrides = R"(
[overrides]
"dane.example" = "dane-only"
"sts.example" = "secure match=.sts.example servername=hostname"
"xn--bcher-kva.example" = "encrypt"
)";

// Keys that reach the DNS engine are looked up in the test world (nothing.example: NXDOMAIN).
std::string config(const std::string& extra = "") {
    return kListen + extra + harness::world_dns() + kOverrides;
}

const std::string kNxReply = "500 secure NXDOMAIN: nothing.example does not exist\n";

}  // namespace

TEST_CASE("socketmap: pipelined requests are answered in order on one connection") {
    TempDir dir;
    Daemon d(dir, config());
    Client c(d.address("socketmap"));
    c.send(netstring("postfix dane.example") + netstring("postfix nothing.example") +
           netstring("postfix STS.example.") + netstring("postfix .dane.example"));
    const std::string got = c.read_until(",", 4);
    CHECK(got == netstring("OK dane-only") + netstring("NOTFOUND ") +
                     netstring("OK secure match=.sts.example servername=hostname") +
                     netstring("NOTFOUND "));
    // The connection stays open for more.
    c.send(netstring("any-name bücher.example"));
    CHECK(c.read_until(",") == netstring("OK encrypt"));
}

TEST_CASE("socketmap and tcp_table: thousands of requests in one write, all answered in order") {
    TempDir dir;
    Daemon d(dir, config());
    constexpr int kRequests = 20000;
    std::string sm_batch, sm_want, tt_batch, tt_want;
    for (int i = 0; i < kRequests; ++i) {
        const bool hit = i % 3 == 0;
        // Misses are parent-domain probes: answered without DNS, so this measures the server.
        const std::string key = hit ? "dane.example" : ".n" + std::to_string(i) + ".example";
        sm_batch += netstring("postfix " + key);
        sm_want += netstring(hit ? "OK dane-only" : "NOTFOUND ");
        tt_batch += "get " + key + "\n";
        tt_want += hit ? "200 dane-only\n" : "500 parent-domain probe\n";
    }
    Client sm(d.address("socketmap"));
    sm.send(sm_batch);
    CHECK(sm.read_bytes(sm_want.size(), 20000) == sm_want);
    Client tt(d.address("tcp_table"));
    tt.send(tt_batch);
    CHECK(tt.read_bytes(tt_want.size(), 20000) == tt_want);
}

TEST_CASE("TCP clients' sockets have Nagle's algorithm off (TCP_NODELAY)") {
    // A reply written while an earlier one is unacknowledged would otherwise wait for the
    // client's delayed ACK (up to 40 ms on Linux). The daemon's own sockets are read here
    // through pidfd_getfd.
    TempDir dir;
    Daemon d(dir, config());
    Client sm(d.address("socketmap"));
    Client tt(d.address("tcp_table"));
    sm.send(netstring("postfix dane.example"));
    CHECK(sm.read_until(",") == netstring("OK dane-only"));
    tt.send("get dane.example\n");
    CHECK(tt.read_until("\n") == "200 dane-only\n");

    const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, d.pid(), 0));
    REQUIRE(pidfd >= 0);
    const std::vector<int> ports = {d.port("socketmap"), d.port("tcp_table")};
    std::vector<int> served_ports, nodelay;
    for (const auto& entry :
         std::filesystem::directory_iterator("/proc/" + std::to_string(d.pid()) + "/fd")) {
        const int target = std::atoi(entry.path().filename().c_str());
        const int fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, target, 0));
        if (fd < 0) continue;
        int listening = 0, protocol = 0;
        socklen_t len = sizeof(int);
        sockaddr_in local{};
        socklen_t alen = sizeof local;
        const bool tcp = getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) == 0 &&
                         protocol == IPPROTO_TCP &&
                         getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 &&
                         !listening &&
                         getsockname(fd, reinterpret_cast<sockaddr*>(&local), &alen) == 0 &&
                         local.sin_family == AF_INET;
        if (tcp && std::find(ports.begin(), ports.end(), ntohs(local.sin_port)) != ports.end()) {
            int on = 0;
            REQUIRE(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &len) == 0);
            served_ports.push_back(ntohs(local.sin_port));
            nodelay.push_back(on);
        }
        ::close(fd);
    }
    ::close(pidfd);
    std::sort(served_ports.begin(), served_ports.end());
    std::vector<int> want_ports = ports;
    std::sort(want_ports.begin(), want_ports.end());
    CHECK(served_ports == want_ports);  // one accepted socket per client
    CHECK(nodelay == std::vector<int>(ports.size(), 1));
}

TEST_CASE("IPv6 listeners") {
    TempDir dir;
    Daemon d(dir,
             "[[listen]]\nprotocol = \"socketmap\"\naddress = \"[::1]:0\"\n"
             "[[listen]]\nprotocol = \"tcp_table\"\naddress = \"[::1]:0\"\n" +
                 kOverrides);
    CHECK(d.address("socketmap").starts_with("[::1]:"));
    Client sm(d.address("socketmap"));
    sm.send(netstring("postfix dane.example"));
    CHECK(sm.read_until(",") == netstring("OK dane-only"));
    Client tt(d.address("tcp_table"));
    tt.send("get dane.example\n");
    CHECK(tt.read_until("\n") == "200 dane-only\n");
    const auto res = harness::postmap(dir, "dane.example",
                                      "socketmap:inet:" + d.address("socketmap") + ":postfix");
    CHECK(res.out == "dane-only\n");
}

TEST_CASE("socketmap: a request split across many writes is reassembled") {
    TempDir dir;
    Daemon d(dir, config());
    Client c(d.address("socketmap"));
    const std::string req = netstring("postfix dane.example");
    for (char ch : req)
        c.send(std::string(1, ch));
    CHECK(c.read_until(",") == netstring("OK dane-only"));
}

TEST_CASE("socketmap: bad input closes that connection only, after earlier answers") {
    TempDir dir;
    Daemon d(dir, config());
    struct Row {
        std::string name;
        std::string bytes;
    };
    const std::vector<Row> rows = {
        {"not a netstring", "hello world\n"},
        {"missing comma", "5:helloX"},
        {"leading zero", "05:hello,"},
        {"oversized length", "10001:"},
        {"huge length", "99999999999999999999:"},
    };
    for (const auto& r : rows) {
        CAPTURE(r.name);
        Client bystander(d.address("socketmap"));
        Client bad(d.address("socketmap"));
        bad.send(netstring("postfix dane.example") + r.bytes);
        std::string received;
        CHECK(bad.wait_eof(5000, &received));
        CHECK(received == netstring("OK dane-only"));
        bystander.send(netstring("postfix dane.example"));
        CHECK(bystander.read_until(",") == netstring("OK dane-only"));
    }
    CHECK(d.log().find("malformed netstring") != std::string::npos);
    CHECK(d.log().find("request larger than 10000 bytes") != std::string::npos);
}

TEST_CASE("socketmap: a request of exactly 10000 bytes is served, keys too long are not found") {
    TempDir dir;
    Daemon d(dir, config());
    Client c(d.address("socketmap"));
    const std::string key(10000 - std::strlen("postfix "), 'a');
    c.send(netstring("postfix " + key));
    CHECK(c.read_until(",") == netstring("NOTFOUND "));
}

TEST_CASE("socketmap: a request without NAME KEY gets PERM and the connection goes on") {
    TempDir dir;
    Daemon d(dir, config());
    Client c(d.address("socketmap"));
    c.send(netstring("nospace") + netstring(" leading-space") + netstring("postfix dane.example"));
    const std::string got = c.read_until(",", 3);
    CHECK(got.find("PERM malformed request") != std::string::npos);
    CHECK(got.ends_with(netstring("OK dane-only")));
}

TEST_CASE("tcp_table: requests, %XX keys, errors and persistence") {
    TempDir dir;
    Daemon d(dir, config());
    Client c(d.address("tcp_table"));
    struct Row {
        std::string request;
        std::string reply;
    };
    const std::vector<Row> rows = {
        {"get dane.example\n", "200 dane-only\n"},
        {"get DANE.EXAMPLE.\n", "200 dane-only\n"},
        {"get sts.example\r\n", "200 secure match=.sts.example servername=hostname\n"},
        {"get b%C3%BCcher.example\n", "200 encrypt\n"},
        {"get nothing.example\n", kNxReply},
        {"get .dane.example\n", "500 parent-domain probe\n"},
        {"get [dane.example]:25\n", "500 explicit next hop\n"},
        {"get 192.0.2.1\n", "500 IP literal\n"},
        {"get bad%zzkey\n", "400 malformed hex escape in key\n"},
        {"put a b\n", "400 put is not supported\n"},
        {"hello\n", "400 unknown request: expected get KEY\n"},
        {"get dane.example\n", "200 dane-only\n"},  // still usable after 400s
    };
    for (const auto& r : rows) {
        CAPTURE(r.request);
        c.send(r.request);
        CHECK(c.read_until("\n") == r.reply);
    }
    // Pipelined.
    c.send("get dane.example\nget nothing.example\nget sts.example\n");
    CHECK(c.read_until("\n", 3) ==
          "200 dane-only\n" + kNxReply + "200 secure match=.sts.example servername=hostname\n");
}

TEST_CASE("tcp_table: a line over 4096 bytes gets 400 and the connection is closed") {
    TempDir dir;
    Daemon d(dir, config());
    Client bad(d.address("tcp_table"));
    bad.send("get " + std::string(5000, 'a'));
    std::string received;
    CHECK(bad.wait_eof(5000, &received));
    CHECK(received == "400 request line longer than 4096 bytes\n");
    Client ok(d.address("tcp_table"));
    ok.send("get dane.example\n");
    CHECK(ok.read_until("\n") == "200 dane-only\n");
}

TEST_CASE("tcp_table: a client that half-closes gets its answers, then the close") {
    TempDir dir;
    Daemon d(dir, config());
    for (std::string req : {"get dane.example\n", "get dane.example"}) {  // with and without \n
        CAPTURE(req);
        Client c(d.address("tcp_table"));
        c.send(req);
        c.shutdown_write();
        std::string received;
        CHECK(c.wait_eof(5000, &received));
        CHECK(received == "200 dane-only\n");
    }
}

TEST_CASE("idle connections are closed after server.idle_timeout") {
    TempDir dir;
    Daemon d(dir, config("[server]\nidle_timeout = 1\n"));
    Client c(d.address("socketmap"));
    Client busy(d.address("socketmap"));
    c.send(netstring("postfix dane.example"));
    CHECK(c.read_until(",") == netstring("OK dane-only"));
    const auto answered = std::chrono::steady_clock::now();
    // Another client asks every 300 ms meanwhile: never idle, never closed.
    bool closed = false;
    std::string rest;
    while (!closed && std::chrono::steady_clock::now() - answered < std::chrono::seconds(5)) {
        busy.send(netstring("postfix dane.example"));
        REQUIRE(busy.read_until(",") == netstring("OK dane-only"));
        closed = c.wait_eof(300, &rest);
    }
    const double after =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - answered).count();
    CHECK(closed);
    CHECK(rest.empty());
    CHECK(after >= 0.95);  // not before idle_timeout (1 s)...
    CHECK(after < 2.5);    // ...and soon after it
    busy.send(netstring("postfix dane.example"));
    CHECK(busy.read_until(",") == netstring("OK dane-only"));
}

TEST_CASE("max_connections applies back-pressure: the extra client waits, then is served") {
    TempDir dir;
    Daemon d(dir, config("[server]\nmax_connections = 2\n"));
    auto a = std::make_unique<Client>(d.address("socketmap"));
    Client b(d.address("socketmap"));
    a->send(netstring("postfix dane.example"));
    b.send(netstring("postfix dane.example"));
    CHECK(a->read_until(",") == netstring("OK dane-only"));
    CHECK(b.read_until(",") == netstring("OK dane-only"));
    Client waiting(d.address("socketmap"));  // accepted by the kernel, not by the daemon
    waiting.send(netstring("postfix dane.example"));
    CHECK(waiting.read_until(",", 1, 300).empty());  // not served while at the cap
    a.reset();                                       // one slot frees up
    CHECK(waiting.read_until(",") == netstring("OK dane-only"));
}

TEST_CASE("unix socket: mode applied, stale file replaced, removed at exit") {
    TempDir dir;
    const std::string path = dir.file("policy.sock");
    // A stale socket file, as a crashed daemon leaves it.
    {
        const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
        REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
        close(fd);
    }
    REQUIRE(std::filesystem::exists(path));
    const std::string cfg = "[[listen]]\nprotocol = \"socketmap\"\naddress = \"unix:" + path +
                            "\"\nmode = \"0660\"\n" + kOverrides;
    auto d = std::make_unique<Daemon>(dir, cfg);
    struct stat st {};
    REQUIRE(stat(path.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK((st.st_mode & 0777) == 0660);
    Client c("unix:" + path);
    c.send(netstring("postfix dane.example"));
    CHECK(c.read_until(",") == netstring("OK dane-only"));

    // A second daemon must not steal the live socket.
    TempDir dir2;
    CHECK_THROWS_WITH_AS(Daemon(dir2, cfg), doctest::Contains("in use by another running process"),
                         std::runtime_error);

    CHECK(d->stop() == 0);
    CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("unix socket: a path that is not a socket is never replaced") {
    TempDir dir;
    const std::string path = dir.file("not-a-socket");
    dir.write("not-a-socket", "precious");
    const std::string cfg =
        "[[listen]]\nprotocol = \"socketmap\"\naddress = \"unix:" + path + "\"\n";
    CHECK_THROWS_WITH_AS(Daemon(dir, cfg), doctest::Contains("exists and is not a socket"),
                         std::runtime_error);
    CHECK(std::filesystem::is_regular_file(path));
}

TEST_CASE("SIGHUP: a good config takes effect, a bad one is refused and the old one stays") {
    TempDir dir;
    Daemon d(dir, config());
    Client c(d.address("socketmap"));
    c.send(netstring("postfix new.example"));
    CHECK(c.read_until(",") == netstring("NOTFOUND "));

    // Good: a new override and a third listener.
    const std::string good = config() + "\"new.example\" = \"encrypt\"\n" +
                             "[[listen]]\nprotocol = \"tcp_table\"\naddress = \"127.0.0.1:0\"\n";
    // [[listen]] after [overrides] is still a top-level array of tables in TOML.
    const std::string status = d.reload(good);
    CHECK(status.find("reloaded") != std::string::npos);
    c.send(netstring("postfix new.example"));  // same connection, new config
    CHECK(c.read_until(",") == netstring("OK encrypt"));
    Client third(d.address("tcp_table", 1));
    third.send("get new.example\n");
    CHECK(third.read_until("\n") == "200 encrypt\n");

    // Bad: an invalid override. Nothing changes.
    const std::string bad = config() + "\"new.example\" = \"encrypt\"\n\"x.example\" = \"bogus\"\n";
    const std::string status2 = d.reload(bad);
    CHECK(status2.find("reload failed") != std::string::npos);
    CHECK(d.log().find("tlspolicyd.toml:") != std::string::npos);
    c.send(netstring("postfix new.example"));
    CHECK(c.read_until(",") == netstring("OK encrypt"));
    c.send(netstring("postfix dane.example"));
    CHECK(c.read_until(",") == netstring("OK dane-only"));
}

TEST_CASE("SIGHUP: a config whose new listener cannot bind changes nothing") {
    TempDir dir;
    Daemon d(dir, config());
    // Occupy a port, then ask for it.
    TempDir other_dir;
    Daemon other(other_dir, "[[listen]]\nprotocol = \"tcp_table\"\naddress = \"127.0.0.1:0\"\n");
    const std::string taken = other.address("tcp_table");
    const std::string bad = config() + "\"new.example\" = \"encrypt\"\n[[listen]]\nprotocol = " +
                            "\"tcp_table\"\naddress = \"" + taken + "\"\n";
    CHECK(d.reload(bad).find("reload failed") != std::string::npos);
    Client c(d.address("socketmap"));
    c.send(netstring("postfix new.example"));
    CHECK(c.read_until(",") == netstring("NOTFOUND "));
}

TEST_CASE("SIGTERM: connections are drained and the daemon exits 0") {
    TempDir dir;
    Daemon d(dir, config());
    Client c(d.address("socketmap"));
    c.send(netstring("postfix dane.example"));
    CHECK(c.read_until(",") == netstring("OK dane-only"));
    CHECK(d.stop() == 0);
    CHECK(c.wait_eof(5000));
    CHECK(d.log().find("draining") != std::string::npos);
}
