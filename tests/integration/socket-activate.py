#!/usr/bin/env python3
"""Starts a program the way systemd's socket activation does, without waiting for a
connection: binds and listens on each ADDRESS (host:port, [v6]:port or a unix socket path),
passes them as file descriptors 3, 4, ... with LISTEN_FDS and LISTEN_PID, and execs the
program in this process (so LISTEN_PID is its pid). A TCP address with port 0 gets a free
port; "@PORTn@" in the file given with --config is replaced by the port of the n-th address.

  socket-activate.py [--config FILE] ADDRESS... -- PROGRAM ARGS...
"""
import fcntl
import os
import socket
import sys


def bind(address):
    if address.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.exists(address):
            os.unlink(address)
        s.bind(address)
    elif address.startswith("["):
        host, port = address[1:].split("]:")
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, int(port)))
    else:
        host, port = address.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
    s.listen(128)
    return s


def main():
    sep = sys.argv.index("--")
    addresses, program = sys.argv[1:sep], sys.argv[sep + 1:]
    config = None
    if addresses[:1] == ["--config"]:
        config, addresses = addresses[1], addresses[2:]
    sockets = [bind(a) for a in addresses]
    if config:
        with open(config) as f:
            text = f.read()
        for i, s in enumerate(sockets):
            if s.family != socket.AF_UNIX:
                text = text.replace("@PORT%d@" % i, str(s.getsockname()[1]))
        with open(config, "w") as f:
            f.write(text)
    # Out of the way first, so that moving one into place cannot close another.
    high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 100) for s in sockets]
    for i, fd in enumerate(high):
        os.dup2(fd, 3 + i, inheritable=True)
        os.close(fd)
    env = dict(os.environ, LISTEN_FDS=str(len(sockets)), LISTEN_PID=str(os.getpid()))
    os.execve(program[0], program, env)


main()
