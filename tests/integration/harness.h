// Integration-test harness: runs tlspolicyd and real clients (Postfix postmap, Exim) as
// child processes and talks to the daemon over real sockets. Readiness and reloads are
// observed through the daemon's sd_notify messages, never by sleeping. Every process a test
// starts is stopped by a destructor, and dies with the test binary (PR_SET_PDEATHSIG).
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace harness {

// A directory removed (recursively) at destruction.
class TempDir {
  public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::string& path() const { return path_; }
    std::string file(const std::string& name) const { return path_ + "/" + name; }
    void write(const std::string& name, const std::string& content) const;

  private:
    std::string path_;
};

struct RunResult {
    int exit_code = -1;  // 128+N for death by signal N, -1 if it had to be killed
    std::string out;
    std::string err;
};

// Runs a program to completion (killed after timeout_ms), feeding `input` on stdin.
RunResult run(const std::vector<std::string>& argv, const std::string& input = "",
              int timeout_ms = 20000);

// Path of a binary given by an environment variable (set by meson), e.g. TLSPOLICYD.
std::string env_path(const char* name, const char* fallback = nullptr);

// The hermetic test world that scripts/run-tests.sh started (tests/world; its directory is
// $WORLD). Throws with a clear message when WORLD is not set.
// A value of WORLD/world.env, e.g. world_env("RESOLVER_PORT").
std::string world_env(const std::string& key);
// The [dns] section that points the daemon at the world's resolver and trust anchor, with
// short timeouts. Tests whose keys reach the DNS engine append it to their config.
std::string world_dns();
// One [[scenario]] row of tests/scenarios/scenarios.toml (the world's $SCENARIOS), as the
// integration tests use it.
struct Scenario {
    std::string name, key, answer, answer_after, decided_by;  // key: `key`, else `domain`
    std::map<std::string, std::string> config;  // overrides: dotted key -> TOML literal
    bool bogus = false;                         // some DNS check of the row expects a bogus answer
    std::string domain;                         // the row's `domain`
    std::map<std::string, std::string> smtp;    // MX host -> posttls-finger verdict (world check)
    std::map<std::string, std::string> smtp_sts;  // the same at Postfix's verify level
};
std::vector<Scenario> scenarios();
// The world's SMTP endpoints: host name (first certificate name) -> mode ("starttls",
// "no-starttls", "silent", "tls-on-connect").
std::map<std::string, std::string> smtp_modes();

// Runs `tlspolicy ARGS...` (the binary from $TLSPOLICY), killed after 60 s.
RunResult tlspolicy(const std::vector<std::string>& args);
// The lines of `text` (without their newlines).
std::vector<std::string> lines(const std::string& text);
bool contains(const std::string& text, const std::string& part);
// What `tlspolicy query --json` prints for a scenario answer ("OK <policy>", "NOTFOUND",
// "TEMP"): the "outcome" (and "policy") members.
std::string json_outcome(const std::string& answer);

// "" when postmap's result `res` for `map` is what Postfix shows for a scenario answer: "OK
// <policy>" exit 0 and the policy; "NOTFOUND" exit 1 with nothing on stdout or stderr (a real
// not-found, not an error); "TEMP" a failure in dict_sockmap / dict_tcp wording (Postfix
// defers). Otherwise what differs.
std::string postmap_mismatch(const RunResult& res, const std::string& answer,
                             const std::string& map);

// An [mta_sts] section for the world's policy hosts: its web CA, HTTPS port, private
// addresses allowed (they are all on loopback), short timeouts.
std::string world_sts();

// tlspolicyd with a config file, started and stopped by this object.
class Daemon {
  public:
    // Writes `config` to dir/tlspolicyd.toml and starts the daemon; waits for READY=1.
    // Throws std::runtime_error (failing the test) if it does not become ready in 10 s.
    // `wrapper` is put before the daemon's command line (e.g. a socket activator that execs it).
    Daemon(const TempDir& dir, const std::string& config,
           const std::vector<std::string>& wrapper = {});
    ~Daemon();
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;

    // "127.0.0.1:PORT" of the n-th listener of that protocol, from the READY status line.
    std::string address(const std::string& protocol, int n = 0) const;
    int port(const std::string& protocol, int n = 0) const;

    // Rewrites the config file, sends SIGHUP and waits for the READY=1 that ends the reload.
    // Returns the STATUS text of that message.
    std::string reload(const std::string& config);

    // SIGTERM, then waits for the exit; returns the exit code (or 128+signal).
    int stop();
    bool running() const { return pid_ > 0; }

    // Everything the daemon wrote to stderr so far.
    std::string log() const;
    const std::string& status() const { return status_; }

    // The daemon's process id (-1 once it was stopped or killed).
    pid_t pid() const { return pid_; }
    // SIGKILL (a crash, as far as the daemon can tell), then reaps it; returns the exit code
    // (137). The destructor then has nothing left to stop.
    int kill_hard();

  private:
    std::optional<std::string> wait_notify(const std::string& needle, int timeout_ms);

    const TempDir& dir_;
    pid_t pid_ = -1;
    int pid_fd_ = -1;
    int notify_fd_ = -1;
    std::string status_;
};

// A raw client connection (TCP "host:port" or "unix:/path").
class Client {
  public:
    explicit Client(const std::string& address);
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    void send(const std::string& bytes);
    void shutdown_write();
    // Reads until `n` bytes have arrived in total, EOF, or the timeout; returns all received.
    std::string read_bytes(std::size_t n, int timeout_ms = 5000);
    // Reads until `terminator` has been received `count` times, EOF, or the timeout; returns
    // everything up to and including the last terminator (the rest stays buffered).
    std::string read_until(const std::string& terminator, int count = 1, int timeout_ms = 5000);
    // Reads until EOF (true) or the timeout (false); received data is appended to `out`.
    bool wait_eof(int timeout_ms, std::string* out = nullptr);

    // Sends as much of `bytes` as the peer takes within `timeout_ms`, never throwing: stops
    // at the first error (the peer closed or reset) or when the socket stays full. Returns
    // the number of bytes sent; `error` (if given) gets the errno that stopped it (0: none).
    std::size_t send_some(const std::string& bytes, int timeout_ms, int* error = nullptr);
    // True once a read saw EOF or a connection error (reset).
    bool closed() const { return eof_; }
    int fd() const { return fd_; }

  private:
    int fd_ = -1;
    std::string buffered_;
    bool eof_ = false;
    bool fill(int timeout_ms);
};

// Config text for the usual pair of listeners: socketmap, then tcp_table, both on
// 127.0.0.1 with a kernel-chosen port (Daemon::address() tells which).
inline constexpr const char* kLoopbackListeners = R"(
[[listen]]
protocol = "socketmap"
address = "127.0.0.1:0"
[[listen]]
protocol = "tcp_table"
address = "127.0.0.1:0"
)";

// Socketmap request/reply helpers.
std::string netstring(const std::string& payload);

// The daemon's answer to `key` over its first tcp_table listener: "OK <policy>", "NOTFOUND"
// or "TEMP" ("BAD <line>" for anything else).
std::string ask(const Daemon& d, const std::string& key);
// The answer of the scenario row for `domain` without config changes ("OK …", "NOTFOUND", …).
std::string scenario_answer(const std::string& domain);
// Runs sqlite3 FILE SQL; a failure fails the test.
std::string sqlite(const std::string& file, const std::string& sql);

// Runs Postfix's postmap -q KEY MAP with a private config directory; returns the result.
RunResult postmap(const TempDir& dir, const std::string& key, const std::string& map);

// Runs Exim's string expansion (exim -be) with a private config; returns the result.
RunResult exim_expand(const TempDir& dir, const std::string& expression);

// ---- fault injection (tests/integration/faults_test.cpp) ------------------------------

// The same as world_env() / world_dns() / world_sts(), for the world in directory `dir`
// (a PrivateWorld) instead of $WORLD.
std::string world_env_in(const std::string& dir, const std::string& key);
std::string world_dns_in(const std::string& dir);
std::string world_sts_in(const std::string& dir);

// A test world of its own (tests/world/world.py start in a fresh directory), for tests that
// kill or change world servers: the shared world ($WORLD) is never disturbed. Started by the
// constructor (about 2-3 s; throws with world.py's output if it fails), stopped by the
// destructor with tests/world/stop-world.sh, which signals exactly the PIDs listed in its
// pids file (pieces restarted here are added to that file). The directory is removed.
class PrivateWorld {
  public:
    PrivateWorld();
    ~PrivateWorld();
    PrivateWorld(const PrivateWorld&) = delete;
    PrivateWorld& operator=(const PrivateWorld&) = delete;

    const std::string& dir() const { return dir_.path(); }
    std::string env(const std::string& key) const { return world_env_in(dir(), key); }
    std::string dns() const { return world_dns_in(dir()); }
    std::string sts() const { return world_sts_in(dir()); }

    // The live process of server LABEL (a label of the pids file: "unbound", "nsd", "nginx",
    // "failservers", "hostile", "smtpd"), or -1.
    pid_t pid(const std::string& label) const;
    // SIGKILL to server LABEL and to its child processes (nginx's workers), by PID; returns
    // once all of them have exited. Remembers its command line for restart(). Throws if
    // LABEL is not running.
    void kill(const std::string& label);
    // Starts server LABEL again with the command line it had when kill() killed it, and
    // records it in the pids file. Returns once it runs (the caller waits for its port).
    void restart(const std::string& label);
    // Starts server LABEL again if kill() killed it and it is not running (a case that failed
    // before its own restart() leaves the world whole for the next one).
    void ensure(const std::string& label) {
        if (killed_.count(label) && pid(label) == -1) restart(label);
    }
    // `world.py flip DIR NAME STATE` (the row's `after` state, or back): the result.
    RunResult flip(const std::string& name, const std::string& state = "after");

  private:
    struct Killed {
        std::vector<std::string> argv;
        std::string exe;  // absolute path of the executable
        std::string cwd;
    };
    TempDir dir_;
    bool started_ = false;
    std::map<std::string, Killed> killed_;
    std::vector<pid_t> children_;  // restarted pieces (our children): reaped at the end
};

// True once a TCP connection to 127.0.0.1:PORT succeeds within timeout_ms (a restarted
// server listens again).
bool wait_port(int port, int timeout_ms);
// VmRSS of process `pid` in KiB (from /proc/PID/status), -1 if it cannot be read.
long vm_rss_kb(pid_t pid);

}  // namespace harness
