// Listening sockets for the configured endpoints: TCP on IPv4/IPv6, and unix sockets with
// mode and owner, replacing a stale socket file safely (never a live one, never a non-socket).
#pragma once

#include <string>

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
    // For unix sockets: the file we created, so that only it is removed at close.
    std::string unix_path;
    unsigned long unix_inode = 0;
};

// Creates, binds and listens; the fd is non-blocking and close-on-exec.
Result<BoundSocket> bind_listener(const ListenConfig& config);

// Applies mode/owner/group of `config` to an existing unix socket file.
Status apply_unix_attributes(const ListenConfig& config);

// Removes the unix socket file of `socket` if it is still the one we created.
void remove_unix_socket(const BoundSocket& socket);

}  // namespace tlspolicy
