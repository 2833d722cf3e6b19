#!/usr/bin/python3
"""SMTP endpoints for the test world: one process, one listening socket per endpoint.

Usage: smtpd.py CONFIG.json

CONFIG (written by smtp.py generate()) is
  {"port": P, "idle_timeout": S,
   "endpoints": [{"name", "addr", "hostname", "chain", "key", "mode"}]}
Every endpoint listens on addr:P (an IPv4 address, or an IPv6 one such as ::1) and presents its
own certificate chain (leaf + issuing CA) in TLS.  The SMTP dialogue is deliberately minimal:

  220 greeting; EHLO (advertises STARTTLS before TLS), HELO, STARTTLS, NOOP, RSET, QUIT;
  502 for every other command.  After STARTTLS the client must EHLO/HELO again.

mode (default "starttls", the dialogue above):
  no-starttls     EHLO lists no STARTTLS; STARTTLS gets "502 5.5.1 STARTTLS not available"
  silent          accepts the connection and never sends a byte; reads and discards until the
                  client closes or IDLE_TIMEOUT seconds pass without data, then closes
  tls-on-connect  TLS handshake right after accept (port 465 style), then the dialogue above
                  inside TLS; EHLO lists no STARTTLS, STARTTLS gets 503

Limits: a command line longer than MAX_LINE bytes ends the session (500), as does IDLE_TIMEOUT
seconds without a complete line (421) or a TLS handshake that does not finish in time.  Data
pipelined behind STARTTLS (plaintext the client sent before the handshake) is discarded.
At most MAX_CONN sessions at once (421 beyond that).  SIGTERM/SIGINT: close the listeners and
the open sessions, exit 0.  One log line per event on stdout.  Standard library only.
"""
import json
import os
import selectors
import signal
import socket
import ssl
import sys
import threading
import time

MODES = ("starttls", "no-starttls", "silent", "tls-on-connect")
MAX_LINE = 1000          # RFC 5321 4.5.3.1.4: command line, CRLF included, is at most 512;
                         # we allow a little more and refuse beyond
MAX_CONN = 64
BANNER = "ESMTP tlspolicyd test world"


def log(msg):
    sys.stdout.write("%s smtpd: %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stdout.flush()


class Session:
    def __init__(self, sock, peer, ep, ctx, idle):
        self.sock = sock
        self.peer = ("[%s]:%d" if ":" in peer[0] else "%s:%d") % peer[:2]
        self.ep = ep
        self.ctx = ctx
        self.idle = idle
        self.buf = b""
        self.tls = False
        self.helo = None
        self.sni = None

    def tag(self):
        return "%s %s<-%s" % (self.ep["name"], self.ep["addr"], self.peer)

    def send(self, line):
        self.sock.sendall(line.encode("ascii") + b"\r\n")

    def reply(self, code, lines):
        """Multi-line reply: every line but the last uses code-."""
        out = ["%d-%s" % (code, l) for l in lines[:-1]] + ["%d %s" % (code, lines[-1])]
        self.sock.sendall("".join(l + "\r\n" for l in out).encode("ascii"))

    def readline(self):
        """One line without its line end, or None at EOF.  Raises ValueError if too long,
        socket.timeout after self.idle seconds without a complete line."""
        deadline = time.monotonic() + self.idle
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                if i + 1 > MAX_LINE:
                    raise ValueError("line too long")
                line, self.buf = self.buf[:i], self.buf[i + 1:]
                return line.rstrip(b"\r").decode("ascii", "replace")
            if len(self.buf) >= MAX_LINE:
                raise ValueError("line too long")
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("idle")
            self.sock.settimeout(left)
            data = self.sock.recv(4096)
            if not data:
                return None
            self.buf += data

    def starttls(self):
        self.send("220 2.0.0 Ready to start TLS")
        if self.buf:
            log("%s: discarding %d bytes pipelined after STARTTLS" % (self.tag(), len(self.buf)))
            self.buf = b""
        self.handshake()

    def handshake(self):
        self.sock.settimeout(self.idle)
        self.sock = self.ctx.wrap_socket(self.sock, server_side=True)
        self.tls = True
        self.helo = None
        self.sni = getattr(self.sock, "world_sni", None)
        log("%s: TLS %s %s sni=%s" % (self.tag(), self.sock.version(), self.sock.cipher()[0],
                                      self.sni))

    def silent(self):
        """Never send a byte: discard what the client sends until it closes or goes idle."""
        got = 0
        while True:
            self.sock.settimeout(self.idle)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                log("%s: silent, idle timeout after %d bytes, closing" % (self.tag(), got))
                return
            if not data:
                log("%s: silent, EOF after %d bytes" % (self.tag(), got))
                return
            got += len(data)

    def run(self):
        host = self.ep["hostname"]
        mode = self.ep.get("mode", "starttls")
        if mode == "silent":
            return self.silent()
        if mode == "tls-on-connect":
            self.handshake()
        offer_tls = mode == "starttls"
        self.send("220 %s %s" % (host, BANNER))
        while True:
            line = self.readline()
            if line is None:
                log("%s: EOF" % self.tag())
                return
            verb, _, arg = line.strip().partition(" ")
            verb, arg = verb.upper(), arg.strip()
            if verb == "EHLO":
                if not arg:
                    self.send("501 5.5.4 Syntax: EHLO hostname")
                    continue
                self.helo = arg
                self.reply(250, [host] + (["STARTTLS"] if offer_tls and not self.tls else [])
                           + ["8BITMIME"])
            elif verb == "HELO":
                if not arg:
                    self.send("501 5.5.4 Syntax: HELO hostname")
                    continue
                self.helo = arg
                self.send("250 %s" % host)
            elif verb == "STARTTLS":
                if self.tls:
                    self.send("503 5.5.1 TLS already active")
                elif not offer_tls:
                    self.send("502 5.5.1 STARTTLS not available")
                elif arg:
                    self.send("501 5.5.4 Syntax: STARTTLS")
                else:
                    self.starttls()
            elif verb == "NOOP":
                self.send("250 2.0.0 OK")
            elif verb == "RSET":
                self.send("250 2.0.0 OK")
            elif verb == "QUIT":
                self.send("221 2.0.0 Bye")
                log("%s: QUIT (tls=%s)" % (self.tag(), self.tls))
                return
            else:
                self.send("502 5.5.2 Command not implemented")


class Server:
    def __init__(self, conf):
        self.port = int(conf["port"])
        self.idle = float(conf.get("idle_timeout", 30))
        self.endpoints = conf["endpoints"]
        self.sel = selectors.DefaultSelector()
        self.active = set()
        self.lock = threading.Lock()
        self.stopping = False

    @staticmethod
    def context(ep):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(ep["chain"], ep["key"])

        def sni(sslsock, name, _ctx):
            try:
                sslsock.world_sni = name
            except AttributeError:
                pass
        ctx.sni_callback = sni
        return ctx

    def listen(self):
        for ep in self.endpoints:
            if ep.get("mode", "starttls") not in MODES:
                raise SystemExit("smtpd: endpoint %s: unknown mode %r" % (ep["name"], ep["mode"]))
            ctx = self.context(ep)
            family = socket.AF_INET6 if ":" in ep["addr"] else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((ep["addr"], self.port))
            s.listen(16)
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, (ep, ctx))
            log("listening %s %s port %d (%s, %s)" % (ep["name"], ep["addr"], self.port,
                                                     ep["hostname"], ep.get("mode", "starttls")))

    def serve_one(self, sess):
        try:
            sess.run()
        except ValueError:
            log("%s: line too long, closing" % sess.tag())
            self._try(sess.send, "500 5.5.2 Line too long")
            self._linger(sess.sock)
        except socket.timeout:
            log("%s: idle timeout, closing" % sess.tag())
            if sess.tls or sess.ep.get("mode") != "tls-on-connect":  # no plaintext in its place
                self._try(sess.send, "421 4.4.2 Idle timeout, closing connection")
            self._linger(sess.sock)
        except ssl.SSLError as e:
            log("%s: TLS error: %s" % (sess.tag(), e))
        except OSError as e:
            if not self.stopping:
                log("%s: %s" % (sess.tag(), e))
        finally:
            self._try(sess.sock.close)
            with self.lock:
                self.active.discard(sess)

    @staticmethod
    def _linger(sock):
        """Half-close and drain briefly, so that unread client data does not turn our close
        into a reset that destroys the final reply before the client reads it."""
        try:
            if isinstance(sock, ssl.SSLSocket):
                return
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(1.0)
            got = 0
            while got < 1 << 20:
                data = sock.recv(65536)
                if not data:
                    break
                got += len(data)
        except OSError:
            pass

    @staticmethod
    def _try(fn, *args):
        try:
            fn(*args)
        except (OSError, ValueError):
            pass

    def run(self):
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        signal.set_wakeup_fd(wfd)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        self.sel.register(rfd, selectors.EVENT_READ, None)
        self.listen()
        log("ready: %d endpoints on port %d" % (len(self.endpoints), self.port))
        while True:
            for key, _ in self.sel.select():
                if key.data is None:
                    self.stop()
                    return
                ep, ctx = key.data
                try:
                    conn, peer = key.fileobj.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                conn.setblocking(True)
                sess = Session(conn, peer, ep, ctx, self.idle)
                with self.lock:
                    full = len(self.active) >= MAX_CONN
                    if not full:
                        self.active.add(sess)
                if full:
                    self._try(conn.sendall, b"421 4.3.2 Too many connections\r\n")
                    conn.close()
                    continue
                threading.Thread(target=self.serve_one, args=(sess,), daemon=True).start()

    def stop(self):
        self.stopping = True
        for key in list(self.sel.get_map().values()):
            if key.data is not None:
                key.fileobj.close()
        with self.lock:
            sessions = list(self.active)
        for sess in sessions:  # wakes their threads; they are daemon threads in any case
            self._try(sess.sock.shutdown, socket.SHUT_RDWR)
        log("signal: stopped (%d open sessions shut down)" % len(sessions))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        conf = json.load(f)
    Server(conf).run()


if __name__ == "__main__":
    main()
