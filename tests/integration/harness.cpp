#include "harness.h"

#include <doctest/doctest.h>
#include <toml++/toml.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "util/hexquote.h"

namespace harness {
namespace {

int64_t now_ms() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

int remaining(int64_t deadline) {
    const int64_t left = deadline - now_ms();
    return left > 0 ? static_cast<int>(left) : 0;
}

[[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error(what + (errno ? std::string(": ") + std::strerror(errno) : ""));
}

// Forks and execs argv with stdin/stdout/stderr connected to the given fds; the child dies
// with the parent.
pid_t spawn(const std::vector<std::string>& argv, int in_fd, int out_fd, int err_fd,
            const std::vector<std::string>& env_add = {}) {
    std::vector<char*> args;
    for (const auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) fail("fork");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        dup2(in_fd, 0);
        dup2(out_fd, 1);
        dup2(err_fd, 2);
        for (const auto& e : env_add)
            putenv(const_cast<char*>(e.c_str()));
        execv(args[0], args.data());
        _exit(127);
    }
    return pid;
}

int decode_status(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

// A pollable handle that becomes readable when the process exits (Linux >= 5.3).
int pid_fd(pid_t pid) {
    return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
}

// Waits for pid up to timeout_ms; kills it (SIGKILL) if it does not exit. Returns its code.
int wait_or_kill(pid_t pid, int timeout_ms) {
    const int pfd = pid_fd(pid);
    if (pfd >= 0) {
        pollfd p{pfd, POLLIN, 0};
        poll(&p, 1, timeout_ms);
        close(pfd);
    }
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return decode_status(status);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

}  // namespace

// ---------------------------------------------------------------------------------------

TempDir::TempDir() {
    char tmpl[] = "/tmp/tlspolicyd-test-XXXXXX";
    if (!mkdtemp(tmpl)) fail("mkdtemp");
    path_ = tmpl;
    chmod(path_.c_str(), 0755);  // Exim and Postfix may drop privileges and must read it
}

TempDir::~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

void TempDir::write(const std::string& name, const std::string& content) const {
    std::ofstream out(file(name), std::ios::binary | std::ios::trunc);
    out << content;
    if (!out) fail("write " + file(name));
}

RunResult run(const std::vector<std::string>& argv, const std::string& input, int timeout_ms) {
    int in_pipe[2], out_pipe[2], err_pipe[2];
    if (pipe2(in_pipe, O_CLOEXEC) || pipe2(out_pipe, O_CLOEXEC) || pipe2(err_pipe, O_CLOEXEC))
        fail("pipe");
    const pid_t pid = spawn(argv, in_pipe[0], out_pipe[1], err_pipe[1]);
    close(in_pipe[0]);
    close(out_pipe[1]);
    close(err_pipe[1]);
    // Small inputs only: written at once, then EOF.
    if (!input.empty()) [[maybe_unused]]
        auto n = ::write(in_pipe[1], input.data(), input.size());
    close(in_pipe[1]);
    RunResult r;
    const int64_t deadline = now_ms() + timeout_ms;
    pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
    int open_fds = 2;
    while (open_fds > 0 && remaining(deadline) > 0) {
        if (poll(fds, 2, remaining(deadline)) <= 0) continue;
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
            char buf[4096];
            const ssize_t n = read(fds[i].fd, buf, sizeof buf);
            if (n <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                --open_fds;
            } else {
                (i == 0 ? r.out : r.err).append(buf, static_cast<std::size_t>(n));
            }
        }
    }
    for (auto& f : fds)
        if (f.fd >= 0) close(f.fd);
    r.exit_code = wait_or_kill(pid, remaining(deadline));
    return r;
}

std::string env_path(const char* name, const char* fallback) {
    if (const char* v = std::getenv(name); v && *v) return v;
    if (fallback) return fallback;
    throw std::runtime_error(std::string("environment variable ") + name + " is not set");
}

std::string world_env(const std::string& key) {
    const char* world = std::getenv("WORLD");
    if (!world || !*world)
        throw std::runtime_error(
            "WORLD is not set: these tests need the test world; run them with `make test` or "
            "scripts/run-tests.sh, which start it");
    std::ifstream in(std::string(world) + "/world.env");
    if (!in) throw std::runtime_error(std::string("cannot read ") + world + "/world.env");
    std::string line;
    while (std::getline(in, line))
        if (line.compare(0, key.size() + 1, key + "=") == 0) return line.substr(key.size() + 1);
    throw std::runtime_error("world.env has no " + key);
}

namespace {

std::string toml_literal(const toml::node& n) {
    if (const auto* s = n.as_string()) return "\"" + s->get() + "\"";
    if (const auto* b = n.as_boolean()) return b->get() ? "true" : "false";
    if (const auto* i = n.as_integer()) return std::to_string(i->get());
    return "";
}

}  // namespace

std::vector<Scenario> scenarios() {
    const auto t = toml::parse_file(world_env("SCENARIOS"));
    std::vector<Scenario> out;
    for (const auto& node : *t["scenario"].as_array()) {
        const auto& r = *node.as_table();
        Scenario row;
        row.name = r["name"].value_or(std::string());
        row.key = r["key"].value_or(r["domain"].value_or(std::string()));
        row.answer = r["answer"].value_or(std::string());
        row.answer_after = r["answer_after"].value_or(std::string());
        row.decided_by = r["decided_by"].value_or(std::string("dane"));
        if (const auto* c = r["config"].as_table())
            for (const auto& [k, v] : *c)
                row.config[std::string(k.str())] = toml_literal(v);
        if (const auto* dns = r["dns"].as_array())
            for (const auto& check : *dns)
                if (check.value_or(std::string()).find(" bogus") != std::string::npos)
                    row.bogus = true;
        row.domain = r["domain"].value_or(std::string());
        if (const auto* smtp = r["smtp"].as_table())
            for (const auto& [host, verdict] : *smtp)
                row.smtp[std::string(host.str())] = verdict.value_or(std::string());
        if (const auto* smtp = r["smtp_sts"].as_table())
            for (const auto& [host, verdict] : *smtp)
                row.smtp_sts[std::string(host.str())] = verdict.value_or(std::string());
        out.push_back(row);
    }
    return out;
}

std::map<std::string, std::string> smtp_modes() {
    const auto t = toml::parse_file(world_env("SCENARIOS"));
    std::map<std::string, std::string> out;
    for (const auto& node : *t["smtp"].as_array()) {
        const auto& r = *node.as_table();
        if (const auto* names = r["names"].as_array(); names && !names->empty())
            out[names->front().value_or(std::string())] =
                r["mode"].value_or(std::string("starttls"));
    }
    return out;
}

RunResult tlspolicy(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {env_path("TLSPOLICY")};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, "", 60000);
}

std::vector<std::string> lines(const std::string& text) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start < text.size()) {
        const auto end = text.find('\n', start);
        out.push_back(text.substr(start, end - start));
        if (end == std::string::npos) break;
        start = end + 1;
    }
    return out;
}

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

std::string json_outcome(const std::string& answer) {
    if (answer == "NOTFOUND") return "\"outcome\":\"not-found\",\"policy\":null";
    if (answer == "TEMP") return "\"outcome\":\"temp\"";
    return "\"outcome\":\"found\",\"policy\":\"" + answer.substr(3) + "\"";
}

std::string postmap_mismatch(const RunResult& res, const std::string& answer,
                             const std::string& map) {
    const std::string got = "exit " + std::to_string(res.exit_code) + ", stdout \"" + res.out +
                            "\", stderr \"" + res.err + "\"";
    if (answer.rfind("OK ", 0) == 0) {
        if (res.exit_code == 0 && res.out == answer.substr(3) + "\n") return "";
    } else if (answer == "NOTFOUND") {
        if (res.exit_code == 1 && res.out.empty() && res.err.empty()) return "";
    } else {
        const char* wording = map.starts_with("tcp:") ? "query error" : "temporary error";
        if (res.exit_code != 0 && res.out.empty() && contains(res.err, wording)) return "";
    }
    return "got " + got + ", want " + answer;
}

std::string world_sts() {
    return "[mta_sts]\nca_file = \"" + world_env("WEB_CA") +
           "\"\nhttps_port = " + world_env("HTTPS_PORT") +
           "\nallow_private_addresses = true\nconnect_timeout_ms = 2000\ntimeout_ms = 3000\n";
}

std::string world_dns() {
    return "[dns]\nresolvers = [\"127.0.0.1:" + world_env("RESOLVER_PORT") +
           "\"]\ntrust_anchor_file = \"" + world_env("ANCHOR") +
           "\"\ntimeout_ms = 1000\ndeadline_ms = 5000\n";
}

// ---------------------------------------------------------------------------------------

Daemon::Daemon(const TempDir& dir, const std::string& config,
               const std::vector<std::string>& wrapper)
    : dir_(dir) {
    dir.write("tlspolicyd.toml", config);
    const std::string notify_path = dir.file("notify.sock");
    notify_fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, notify_path.c_str(), sizeof sa.sun_path - 1);
    unlink(notify_path.c_str());
    if (bind(notify_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) fail("bind notify");
    const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    const int log_fd =
        open(dir.file("daemon.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    std::vector<std::string> argv = wrapper;
    for (const auto& a : {env_path("TLSPOLICYD"), std::string("-c"), dir.file("tlspolicyd.toml")})
        argv.push_back(a);
    pid_ = spawn(argv, null_fd, log_fd, log_fd,
                 {"NOTIFY_SOCKET=" + notify_path, "STATE_DIRECTORY=" + dir.path(),
                  // Sanitizer builds: any report ends the process with a non-zero code.
                  "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1",
                  "ASAN_OPTIONS=abort_on_error=0:detect_leaks=1"});
    close(null_fd);
    close(log_fd);
    pid_fd_ = pid_fd(pid_);
    auto ready = wait_notify("READY=1", 10000);
    if (!ready) {
        const std::string log_text = log();
        stop();
        close(notify_fd_);
        if (pid_fd_ >= 0) close(pid_fd_);
        throw std::runtime_error("tlspolicyd did not become ready; log:\n" + log_text);
    }
}

Daemon::~Daemon() {
    if (pid_ > 0) {
        const int code = stop();
        // A daemon that does not exit cleanly (crash, sanitizer report, hang) fails the test.
        if (code != 0) FAIL_CHECK("tlspolicyd exited with " << code << "; log:\n" << log());
    }
    if (notify_fd_ >= 0) close(notify_fd_);
    if (pid_fd_ >= 0) close(pid_fd_);
}

std::optional<std::string> Daemon::wait_notify(const std::string& needle, int timeout_ms) {
    const int64_t deadline = now_ms() + timeout_ms;
    while (true) {
        // Also wake up when the daemon exits, so a failed start is seen at once.
        pollfd p[2] = {{notify_fd_, POLLIN, 0}, {pid_fd_, POLLIN, 0}};
        if (poll(p, 2, remaining(deadline)) <= 0) return std::nullopt;
        if (!(p[0].revents & POLLIN)) return std::nullopt;  // exited without the message
        char buf[4096];
        const ssize_t n = recv(notify_fd_, buf, sizeof buf - 1, 0);
        if (n <= 0) continue;
        const std::string msg(buf, static_cast<std::size_t>(n));
        if (const auto s = msg.find("STATUS="); s != std::string::npos) {
            const auto e = msg.find('\n', s);
            status_ = msg.substr(s + 7, e == std::string::npos ? std::string::npos : e - s - 7);
        }
        if (msg.find(needle) != std::string::npos) return msg;
    }
}

std::string Daemon::address(const std::string& protocol, int n) const {
    // STATUS=serving socketmap 127.0.0.1:40001, tcp_table 127.0.0.1:40002[; ...]
    std::size_t pos = 0;
    const std::string key = protocol + " ";
    for (int i = 0;; ++i) {
        pos = status_.find(key, pos);
        if (pos == std::string::npos)
            throw std::runtime_error("no " + protocol + " listener in status: " + status_);
        pos += key.size();
        if (i == n) break;
    }
    const auto end = status_.find_first_of(",;", pos);
    return status_.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
}

int Daemon::port(const std::string& protocol, int n) const {
    const std::string a = address(protocol, n);
    return std::stoi(a.substr(a.rfind(':') + 1));
}

std::string Daemon::reload(const std::string& config) {
    dir_.write("tlspolicyd.toml", config);
    kill(pid_, SIGHUP);
    if (!wait_notify("RELOADING=1", 10000)) throw std::runtime_error("no RELOADING=1 after SIGHUP");
    if (!wait_notify("READY=1", 10000)) throw std::runtime_error("no READY=1 after reload");
    return status_;
}

int Daemon::stop() {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    const int code = wait_or_kill(pid_, 15000);
    pid_ = -1;
    return code;
}

std::string Daemon::log() const {
    std::ifstream in(dir_.file("daemon.log"));
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// ---------------------------------------------------------------------------------------

Client::Client(const std::string& address) {
    if (address.rfind("unix:", 0) == 0) {
        fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        std::strncpy(sa.sun_path, address.c_str() + 5, sizeof sa.sun_path - 1);
        if (connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
            fail("connect " + address);
        return;
    }
    const auto colon = address.rfind(':');
    std::string host = address.substr(0, colon);
    const int port = std::stoi(address.substr(colon + 1));
    if (host.front() == '[') {
        host = host.substr(1, host.size() - 2);
        fd_ = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in6 sa{};
        sa.sin6_family = AF_INET6;
        sa.sin6_port = htons(static_cast<uint16_t>(port));
        inet_pton(AF_INET6, host.c_str(), &sa.sin6_addr);
        if (connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
            fail("connect " + address);
        return;
    }
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, host.c_str(), &sa.sin_addr);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) fail("connect " + address);
}

Client::~Client() {
    if (fd_ >= 0) close(fd_);
}

void Client::send(const std::string& bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
        if (n <= 0) fail("send");
        done += static_cast<std::size_t>(n);
    }
}

void Client::shutdown_write() {
    shutdown(fd_, SHUT_WR);
}

bool Client::fill(int timeout_ms) {
    if (eof_) return false;
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return false;
    char buf[65536];
    const ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) {
        eof_ = true;
        return false;
    }
    buffered_.append(buf, static_cast<std::size_t>(n));
    return true;
}

std::string Client::read_bytes(std::size_t n, int timeout_ms) {
    const int64_t deadline = now_ms() + timeout_ms;
    while (buffered_.size() < n && !eof_ && remaining(deadline) > 0)
        fill(remaining(deadline));
    std::string out = buffered_.substr(0, n);
    buffered_.erase(0, out.size());
    return out;
}

std::string Client::read_until(const std::string& terminator, int count, int timeout_ms) {
    const int64_t deadline = now_ms() + timeout_ms;
    while (true) {
        std::size_t pos = 0;
        int found = 0;
        for (std::size_t p;
             found < count && (p = buffered_.find(terminator, pos)) != std::string::npos;) {
            ++found;
            pos = p + terminator.size();
        }
        if (found == count) {
            std::string out = buffered_.substr(0, pos);
            buffered_.erase(0, pos);
            return out;
        }
        if (eof_ || remaining(deadline) == 0) break;
        fill(remaining(deadline));
    }
    std::string out = std::move(buffered_);
    buffered_.clear();
    return out;
}

bool Client::wait_eof(int timeout_ms, std::string* out) {
    const int64_t deadline = now_ms() + timeout_ms;
    while (!eof_ && remaining(deadline) > 0)
        fill(remaining(deadline));
    if (out) *out += buffered_;
    buffered_.clear();
    return eof_;
}

std::string netstring(const std::string& payload) {
    return std::to_string(payload.size()) + ":" + payload + ",";
}

RunResult postmap(const TempDir& dir, const std::string& key, const std::string& map) {
    const std::string conf = dir.file("postfix");
    std::filesystem::create_directories(conf);
    // postmap needs a main.cf; an empty one means Postfix's built-in defaults.
    if (!std::filesystem::exists(conf + "/main.cf")) std::ofstream(conf + "/main.cf").flush();
    return run({"/usr/sbin/postmap", "-c", conf, "-q", key, map});
}

std::string ask(const Daemon& d, const std::string& key) {
    Client c(d.address("tcp_table"));
    c.send("get " + key + "\n");
    const std::string line = c.read_until("\n", 1, 10000);
    if (line.rfind("200 ", 0) == 0) {
        auto policy = tlspolicy::hex_unquote(line.substr(4, line.size() - 5));
        return policy ? "OK " + *policy : "BAD " + line;
    }
    if (line.rfind("500 ", 0) == 0) return "NOTFOUND";
    if (line.rfind("400 ", 0) == 0) return "TEMP";
    return "BAD " + line;
}

std::string scenario_answer(const std::string& domain) {
    for (const auto& s : scenarios())
        if (s.key == domain && s.config.empty()) return s.answer;
    throw std::runtime_error("no scenario row for " + domain);
}

std::string sqlite(const std::string& file, const std::string& sql) {
    const RunResult r = run({"/usr/bin/sqlite3", file, sql});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    return r.out;
}

RunResult exim_expand(const TempDir& dir, const std::string& expression) {
    const std::string exim = env_path("EXIM", "/var/cache/tlspolicyd-test/exim/usr/sbin/exim4");
    const std::string conf = dir.file("exim.conf");
    if (!std::filesystem::exists(conf)) {
        std::ofstream(conf) << "# minimal: only string expansion is used\n"
                            << "spool_directory = " << dir.path() << "/exim-spool\n"
                            << "log_file_path = " << dir.path() << "/exim-%s.log\n";
    }
    return run({exim, "-C", conf, "-be", expression});
}

}  // namespace harness

// ---- fault injection ------------------------------------------------------------------

namespace harness {

int Daemon::kill_hard() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return decode_status(status);
}

std::size_t Client::send_some(const std::string& bytes, int timeout_ms, int* error) {
    const int64_t deadline = now_ms() + timeout_ms;
    std::size_t done = 0;
    if (error) *error = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            done += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            pollfd p{fd_, POLLOUT, 0};
            if (remaining(deadline) == 0 || poll(&p, 1, remaining(deadline)) <= 0) break;
            continue;
        }
        if (error) *error = n < 0 ? errno : EPIPE;
        break;
    }
    return done;
}

std::string world_env_in(const std::string& dir, const std::string& key) {
    std::ifstream in(dir + "/world.env");
    if (!in) throw std::runtime_error("cannot read " + dir + "/world.env");
    std::string line;
    while (std::getline(in, line))
        if (line.compare(0, key.size() + 1, key + "=") == 0) return line.substr(key.size() + 1);
    throw std::runtime_error(dir + "/world.env has no " + key);
}

std::string world_dns_in(const std::string& dir) {
    return "[dns]\nresolvers = [\"127.0.0.1:" + world_env_in(dir, "RESOLVER_PORT") +
           "\"]\ntrust_anchor_file = \"" + world_env_in(dir, "ANCHOR") +
           "\"\ntimeout_ms = 1000\ndeadline_ms = 5000\n";
}

std::string world_sts_in(const std::string& dir) {
    return "[mta_sts]\nca_file = \"" + world_env_in(dir, "WEB_CA") +
           "\"\nhttps_port = " + world_env_in(dir, "HTTPS_PORT") +
           "\nallow_private_addresses = true\nconnect_timeout_ms = 2000\ntimeout_ms = 3000\n";
}

namespace {

std::string world_script(const std::string& name) {
    return env_path("SOURCE_ROOT") + "/tests/world/" + name;
}

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string exe_of(pid_t pid) {
    std::error_code ec;
    const auto target =
        std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec);
    return ec ? std::string() : target.string();
}

std::string basename_of(const std::string& path) {
    const auto slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The state letter of /proc/PID/stat ('Z' zombie), or 0 when there is no such process.
char proc_state(pid_t pid) {
    const std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
    const auto paren = stat.rfind(')');
    if (paren == std::string::npos || paren + 2 >= stat.size()) return 0;
    return stat[paren + 2];
}

pid_t parent_of(pid_t pid) {
    const std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
    const auto paren = stat.rfind(')');
    if (paren == std::string::npos) return -1;
    std::istringstream rest(stat.substr(paren + 2));
    char state = 0;
    long ppid = -1;
    rest >> state >> ppid;
    return static_cast<pid_t>(ppid);
}

bool alive(pid_t pid) {
    const char st = proc_state(pid);
    return st != 0 && st != 'Z';
}

}  // namespace

PrivateWorld::PrivateWorld() {
    const RunResult r =
        run({"/usr/bin/python3", world_script("world.py"), "start", dir_.path()}, "", 60000);
    started_ = true;  // whatever happened, stop what may have started
    if (r.exit_code != 0) {
        run({world_script("stop-world.sh"), dir_.path()});
        started_ = false;
        throw std::runtime_error("private test world did not start (exit " +
                                 std::to_string(r.exit_code) + "):\n" + r.out + r.err);
    }
}

PrivateWorld::~PrivateWorld() {
    if (started_) run({world_script("stop-world.sh"), dir_.path()});
    for (const pid_t p : children_) {
        int status = 0;
        if (waitpid(p, &status, WNOHANG) == 0) {  // stop-world.sh missed it: never leave it
            if (alive(p) && exe_of(p) != "") ::kill(p, SIGKILL);
            waitpid(p, &status, 0);
        }
    }
}

pid_t PrivateWorld::pid(const std::string& label) const {
    std::istringstream in(read_text(dir_.file("pids")));
    std::string line;
    pid_t found = -1;
    while (std::getline(in, line)) {
        std::istringstream f(line);
        long p = 0;
        std::string exe, lab;
        if (!(f >> p >> exe >> lab) || lab != label) continue;
        const auto pid = static_cast<pid_t>(p);
        if (alive(pid) && basename_of(exe_of(pid)) == exe) found = pid;  // the latest entry
    }
    return found;
}

void PrivateWorld::kill(const std::string& label) {
    const pid_t main = pid(label);
    if (main <= 0) throw std::runtime_error("private world: " + label + " is not running");
    Killed k;
    k.exe = exe_of(main);
    std::error_code ec;
    k.cwd = std::filesystem::read_symlink("/proc/" + std::to_string(main) + "/cwd", ec).string();
    std::string cmdline = read_text("/proc/" + std::to_string(main) + "/cmdline");
    if (label == "nginx") {
        // nginx rewrites its command line ("nginx: master process ..."): its arguments come
        // from the world's own code (tests/world/https/https.py).
        const RunResult r = run(
            {"/usr/bin/python3", "-c",
             "import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/https']; import world; "
             "import https; w = world.World(sys.argv[2]); w.load_env(); "
             "sys.stdout.write('\\0'.join(https._nginx_argv(w, '-g', 'daemon off;')))",
             env_path("SOURCE_ROOT") + "/tests/world", dir_.path()});
        if (r.exit_code != 0 || r.out.empty())
            throw std::runtime_error("private world: nginx's command line: " + r.err);
        cmdline = r.out;
    }
    for (std::size_t start = 0; start < cmdline.size();) {
        const auto end = cmdline.find('\0', start);
        k.argv.push_back(cmdline.substr(start, end - start));
        if (end == std::string::npos) break;
        start = end + 1;
    }
    // Its children with the same program (nginx's workers), then itself.
    std::vector<pid_t> victims;
    if (DIR* proc = opendir("/proc")) {
        while (const dirent* e = readdir(proc)) {
            const std::string name = e->d_name;
            if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos)
                continue;
            const auto p = static_cast<pid_t>(std::stol(name));
            if (parent_of(p) == main && exe_of(p) == k.exe) victims.push_back(p);
        }
        closedir(proc);
    }
    victims.push_back(main);
    std::vector<int> fds;
    for (const pid_t p : victims)
        fds.push_back(pid_fd(p));
    // world.py starts every piece in a session of its own: its process group holds exactly the
    // piece and its children, and one signal reaches all of them at once (no child forked in
    // between escapes). A piece restarted here shares our group: signalled one by one.
    if (getpgid(main) == main)
        ::kill(-main, SIGKILL);
    for (const pid_t p : victims)
        ::kill(p, SIGKILL);
    const int64_t deadline = now_ms() + 10000;
    for (std::size_t i = 0; i < victims.size(); ++i) {
        if (fds[i] >= 0) {
            pollfd p{fds[i], POLLIN, 0};
            poll(&p, 1, remaining(deadline));
            close(fds[i]);
        }
        while (alive(victims[i]) && remaining(deadline) > 0)
            poll(nullptr, 0, 10);
        if (alive(victims[i]))
            throw std::runtime_error("private world: " + label + " (" +
                                     std::to_string(victims[i]) + ") survived SIGKILL");
    }
    // Our own restarted pieces are our children: reap them now.
    for (const pid_t p : victims) {
        int status = 0;
        waitpid(p, &status, WNOHANG);
    }
    killed_[label] = std::move(k);
}

void PrivateWorld::restart(const std::string& label) {
    const auto it = killed_.find(label);
    if (it == killed_.end()) throw std::runtime_error("private world: " + label + " was not killed");
    const Killed& k = it->second;
    std::vector<std::string> argv = k.argv;
    argv[0] = k.exe;  // spawn() does not search PATH
    const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    const int log_fd = open(dir_.file(label + ".restart.log").c_str(),
                            O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    // The working directory the world gave it (relative paths in its arguments).
    char old_cwd[4096];
    const bool have_cwd = getcwd(old_cwd, sizeof old_cwd) != nullptr;
    if (!k.cwd.empty() && chdir(k.cwd.c_str()) != 0) fail("chdir " + k.cwd);
    const pid_t p = spawn(argv, null_fd, log_fd, log_fd);
    if (have_cwd && chdir(old_cwd) != 0) fail("chdir back");
    close(null_fd);
    close(log_fd);
    children_.push_back(p);
    // Recorded once it runs the program (after exec), so stop-world.sh's check holds.
    const int64_t deadline = now_ms() + 5000;
    while (exe_of(p) != k.exe && remaining(deadline) > 0)
        poll(nullptr, 0, 5);
    if (exe_of(p) != k.exe)
        throw std::runtime_error("private world: " + label + " did not start again");
    std::ofstream(dir_.file("pids"), std::ios::app)
        << p << " " << basename_of(k.exe) << " " << label << "\n";
    killed_.erase(it);
}

RunResult PrivateWorld::flip(const std::string& name, const std::string& state) {
    return run({"/usr/bin/python3", world_script("world.py"), "flip", dir_.path(), name, state},
               "", 30000);
}

bool wait_port(int port, int timeout_ms) {
    const int64_t deadline = now_ms() + timeout_ms;
    while (true) {
        const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(static_cast<uint16_t>(port));
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
        close(fd);
        if (ok) return true;
        if (remaining(deadline) == 0) return false;
        poll(nullptr, 0, 20);
    }
}

long vm_rss_kb(pid_t pid) {
    std::istringstream in(read_text("/proc/" + std::to_string(pid) + "/status"));
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    return -1;
}

}  // namespace harness
