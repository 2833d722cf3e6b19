// Listening sockets for the configured endpoints: TCP on IPv4/IPv6, and unix sockets with
// mode and owner, replacing a stale socket file safely (never a live one, never a non-socket).
#pragma once

#include <string>
#include <vector>

#include "core/config.h"
#include "util/fd.h"
#include "util/result.h"

namespace tlspolicy {

// Mode of a unix socket when the config sets none: any local user may ask (the answers are
// public DNS data); restrict it with mode/owner/group.
inline constexpr unsigned kDefaultUnixMode = 0666;

struct BoundSocket {
    UniqueFd fd;
    std::string address;  // as bound, with the real port when the config said 0
    // For unix sockets: the file we created, so that only it is removed at close (never an
    // inherited socket's file: the service manager owns it).
    std::string unix_path;
    unsigned long unix_inode = 0;
};

// Creates, binds and listens; the fd is non-blocking and close-on-exec. An inherited socket
// (see adopt_inherited_sockets) with the same address is used instead of a new one.
Result<BoundSocket> bind_listener(const ListenConfig& config);

// Socket activation: takes listening sockets passed by a service manager (fds first..first+n-1)
// for bind_listener to use. Each must be a listening stream socket (TCP or unix); an error
// names the first that is not.
Status adopt_inherited_sockets(int first, int n);

// Addresses of inherited sockets that no bind_listener call has used ("" entries: none).
std::vector<std::string> unused_inherited_sockets();

// Applies mode/owner/group of `config` to an existing unix socket file.
Status apply_unix_attributes(const ListenConfig& config);

// Removes the unix socket file of `socket` if it is still the one we created.
void remove_unix_socket(const BoundSocket& socket);

}  // namespace tlspolicy
