#include "server/listener.h"

#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tlspolicy {
namespace {

constexpr int kBacklog = 1024;

std::string errno_text(const std::string& what, int err) {
    return what + ": " + std::strerror(err);
}

// A unix socket file left by a dead process is replaced; a live one (someone accepts on it)
// or anything that is not a socket is an error, so we never steal or delete foreign files.
Status clear_stale_unix_socket(const std::string& path) {
    struct stat st {};
    if (lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return {};
        return make_error(errno_text(path, errno));
    }
    if (!S_ISSOCK(st.st_mode)) return make_error(path + ": exists and is not a socket");
    UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!probe) return make_error(errno_text("socket", errno));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
    if (connect(probe.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0)
        return make_error(path + ": in use by another running process");
    if (errno != ECONNREFUSED) return make_error(errno_text(path, errno));
    if (unlink(path.c_str()) != 0) return make_error(errno_text("removing stale " + path, errno));
    return {};
}

// A socket passed by the service manager, described by the address it is bound to.
struct Inherited {
    UniqueFd fd;
    Endpoint endpoint;
    bool used = false;
};
std::vector<Inherited>& inherited() {
    static std::vector<Inherited> sockets;
    return sockets;
}

// The address `fd` is bound to, in the config's terms.
Result<Endpoint> endpoint_of(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
        return make_error(errno_text("getsockname", errno));
    Endpoint ep;
    char text[INET6_ADDRSTRLEN] = {};
    if (ss.ss_family == AF_INET) {
        const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
        inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
        ep.host = text;
        ep.port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
        inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
        ep.host = text;
        ep.port = ntohs(a->sin6_port);
    } else if (ss.ss_family == AF_UNIX) {
        const auto* a = reinterpret_cast<const sockaddr_un*>(&ss);
        ep.kind = Endpoint::Kind::Unix;
        ep.path.assign(a->sun_path, strnlen(a->sun_path, sizeof a->sun_path));
    } else {
        return make_error("an address family other than IPv4, IPv6 or unix");
    }
    return ep;
}

// The configured endpoint in the form endpoint_of() gives (canonical IPv6 text).
Endpoint canonical(Endpoint ep) {
    if (ep.kind != Endpoint::Kind::Inet || ep.host.find(':') == std::string::npos) return ep;
    in6_addr a{};
    char text[INET6_ADDRSTRLEN] = {};
    if (inet_pton(AF_INET6, ep.host.c_str(), &a) == 1 && inet_ntop(AF_INET6, &a, text, sizeof text))
        ep.host = text;
    return ep;
}

}  // namespace

Status adopt_inherited_sockets(int first, int n) {
    for (int fd = first; fd < first + n; ++fd) {
        int listening = 0, type = 0;
        socklen_t len = sizeof listening;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening)
            return make_error("inherited file descriptor " + std::to_string(fd) +
                              " is not a listening socket");
        len = sizeof type;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
            return make_error("inherited file descriptor " + std::to_string(fd) +
                              " is not a stream socket");
        auto ep = endpoint_of(fd);
        if (!ep)
            return make_error("inherited file descriptor " + std::to_string(fd) + ": " +
                              ep.error().message);
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        inherited().push_back({UniqueFd(fd), *ep, false});
    }
    return {};
}

std::vector<std::string> unused_inherited_sockets() {
    std::vector<std::string> out;
    for (const auto& s : inherited())
        if (!s.used) out.push_back(s.endpoint.to_string());
    return out;
}

Status apply_unix_attributes(const ListenConfig& config) {
    const std::string& path = config.endpoint.path;
    if (config.mode && chmod(path.c_str(), *config.mode) != 0)
        return make_error(errno_text("chmod " + path, errno));
    if (config.owner.empty() && config.group.empty()) return {};
    uid_t uid = static_cast<uid_t>(-1);
    gid_t gid = static_cast<gid_t>(-1);
    if (!config.owner.empty()) {
        const passwd* pw = getpwnam(config.owner.c_str());
        if (!pw) return make_error("unknown user \"" + config.owner + "\" for " + path);
        uid = pw->pw_uid;
    }
    if (!config.group.empty()) {
        const group* gr = getgrnam(config.group.c_str());
        if (!gr) return make_error("unknown group \"" + config.group + "\" for " + path);
        gid = gr->gr_gid;
    }
    if (chown(path.c_str(), uid, gid) != 0)
        return make_error(errno_text("chown " + path + " (owner and group need root)", errno));
    return {};
}

Result<BoundSocket> bind_listener(const ListenConfig& config) {
    const Endpoint& ep = config.endpoint;
    BoundSocket out;
    for (auto& s : inherited()) {
        if (!(s.endpoint == canonical(ep))) continue;
        // A duplicate, so that closing this listener (a reload that drops it) keeps the
        // inherited socket for a later reload that brings it back.
        out.fd.reset(fcntl(s.fd.get(), F_DUPFD_CLOEXEC, 3));
        if (!out.fd) return make_error(errno_text("dup of the inherited " + ep.to_string(), errno));
        const int flags = fcntl(out.fd.get(), F_GETFL);
        fcntl(out.fd.get(), F_SETFL, flags | O_NONBLOCK);
        s.used = true;
        out.address = ep.to_string();
        return out;
    }
    if (ep.kind == Endpoint::Kind::Unix) {
        if (auto s = clear_stale_unix_socket(ep.path); !s) return s.error();
        out.fd.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        if (!out.fd) return make_error(errno_text("socket", errno));
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        std::memcpy(sa.sun_path, ep.path.c_str(), ep.path.size() + 1);
        // Created private, then opened up to the configured mode: no window in which the
        // socket is reachable with looser permissions than asked for.
        const mode_t old = umask(0177);
        const int rc = bind(out.fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa);
        const int err = errno;
        umask(old);
        if (rc != 0) return make_error(errno_text("bind " + ep.path, err));
        struct stat st {};
        if (stat(ep.path.c_str(), &st) == 0) out.unix_inode = st.st_ino;
        out.unix_path = ep.path;
        ListenConfig effective = config;
        if (!effective.mode) effective.mode = kDefaultUnixMode;
        if (auto s = apply_unix_attributes(effective); !s) {
            remove_unix_socket(out);
            return s.error();
        }
        if (listen(out.fd.get(), kBacklog) != 0) {
            remove_unix_socket(out);
            return make_error(errno_text("listen " + ep.path, errno));
        }
        out.address = ep.to_string();
        return out;
    }

    sockaddr_storage ss{};
    const socklen_t len = endpoint_sockaddr(ep, ss);
    const bool v6 = ss.ss_family == AF_INET6;
    out.fd.reset(socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!out.fd) return make_error(errno_text("socket", errno));
    const int one = 1;
    setsockopt(out.fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (v6) setsockopt(out.fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(out.fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0)
        return make_error(errno_text("bind " + ep.to_string(), errno));
    if (listen(out.fd.get(), kBacklog) != 0)
        return make_error(errno_text("listen " + ep.to_string(), errno));
    sockaddr_storage got{};
    socklen_t got_len = sizeof got;
    getsockname(out.fd.get(), reinterpret_cast<sockaddr*>(&got), &got_len);
    Endpoint actual = ep;
    actual.port = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&got)->sin6_port
                           : reinterpret_cast<sockaddr_in*>(&got)->sin_port);
    out.address = actual.to_string();
    return out;
}

void remove_unix_socket(const BoundSocket& socket) {
    if (socket.unix_path.empty()) return;
    struct stat st {};
    // Only our own file: a successor daemon may already have replaced it.
    if (lstat(socket.unix_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) &&
        st.st_ino == socket.unix_inode)
        unlink(socket.unix_path.c_str());
}

}  // namespace tlspolicy
