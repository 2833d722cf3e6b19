#!/usr/bin/python3
"""Scripted hostile HTTPS server for the test world's MTA-STS checks.

usage: hostile.py CONFIG.json      (written by tests/world/https/https.py)

CONFIG: {"addr": "127.0.0.2", "port": P, "hosts": {"mta-sts.D": {"chain", "key", "status",
"content_type", "transfer", "behaviour", "body", ["location"]}}}.  The certificate is chosen by
SNI; an unknown or missing SNI gets an unrecognized_name alert.  After reading the request
headers it answers per behaviour:
  slow-body     valid headers (Content-Length unless transfer says otherwise), then the body one
                byte per second (the first byte at once)
  header-flood  "HTTP/1.1 200 OK", then one header line about every 10 ms, never an empty line
  normal        the whole response at once
Bounded: at most MAX_CLIENTS connections (more are dropped), request headers at most 16 KiB
within 10 s, a small write buffer (a client that does not read stalls its own connection, no
buffering), every connection closed after MAX_LIFETIME s.  SIGHUP re-reads CONFIG; SIGTERM or
SIGINT closes everything and exits 0.  Standard library only.
"""
import asyncio
import gc
import http
import json
import signal
import ssl
import sys
import time

MAX_CLIENTS = 256
REQUEST_LIMIT = 16384
REQUEST_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 10.0
MAX_LIFETIME = 300.0
FLOOD_INTERVAL = 0.01
WRITE_HIGH_WATER = 16384
# asyncio's TLS transport gives every connection a 256 KiB read buffer (3.11: class attribute
# SSLProtocol.max_size); our requests are tiny, so 16 KiB bounds memory per client far better.
if hasattr(asyncio, "sslproto") and hasattr(asyncio.sslproto.SSLProtocol, "max_size"):
    asyncio.sslproto.SSLProtocol.max_size = 16384


def log(msg):
    sys.stdout.write("%s hostile: %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stdout.flush()


class Hosts:
    """SNI name -> (SSLContext, entry); reloadable."""

    def __init__(self, path):
        self.path = path
        self.conf = None
        self.ctxs = {}
        self.load()

    def load(self):
        with open(self.path) as f:
            conf = json.load(f)
        ctxs = {}
        for name, e in conf["hosts"].items():
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(e["chain"], e["key"])
            ctxs[name.lower().rstrip(".")] = (ctx, e)
        self.conf, self.ctxs = conf, ctxs

    def sni(self, sslobj, server_name, _ctx):
        hit = self.ctxs.get((server_name or "").lower().rstrip("."))
        if hit is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sslobj.context = hit[0]
        sslobj.world_entry = hit[1]  # read back by the connection handler
        return None


class Server:
    def __init__(self, hosts):
        self.hosts = hosts
        self.tasks = set()
        self.finished = 0  # connections ended since the last garbage collection

    def base_context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        first = next(iter(self.hosts.conf["hosts"].values()), None)
        if first:
            ctx.load_cert_chain(first["chain"], first["key"])
        ctx.sni_callback = self.hosts.sni
        return ctx

    async def handle(self, reader, writer):
        task = asyncio.current_task()
        if len(self.tasks) >= MAX_CLIENTS:
            writer.transport.abort()
            return
        self.tasks.add(task)
        graceful = False
        try:
            writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
            graceful = await asyncio.wait_for(self.serve(reader, writer), MAX_LIFETIME)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            self.tasks.discard(task)
            self.finished += 1
            if graceful:
                writer.close()
                try:
                    await asyncio.wait_for(writer.wait_closed(), 2)
                except BaseException:
                    writer.transport.abort()
            else:
                writer.transport.abort()

    async def serve(self, reader, writer):
        """Returns True when the response is complete (close gracefully)."""
        sslobj = writer.get_extra_info("ssl_object")
        e = getattr(sslobj, "world_entry", None)
        if e is None:
            return False
        req = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
        line = req.split(b"\r\n", 1)[0].decode("latin-1")
        peer = writer.get_extra_info("peername")
        log("%s:%s %s %r -> %s" % (peer[0], peer[1], e["row"], line, e["behaviour"]))
        if e["behaviour"] == "header-flood":
            writer.write(b"HTTP/1.1 200 OK\r\n")
            i = 0
            while True:
                i += 1
                writer.write(b"X-Flood-%08d: %s\r\n" % (i, b"f" * 48))
                await writer.drain()
                await asyncio.sleep(FLOOD_INTERVAL)
        status = int(e["status"])
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Status"
        body = e["body"].encode("latin-1")
        head = ["HTTP/1.1 %d %s" % (status, phrase), "Server: hostile",
                "Content-Type: %s" % e["content_type"], "Connection: close"]
        if "location" in e:
            head.append("Location: %s" % e["location"])
        chunked = e["transfer"] == "chunked"
        if e["transfer"] == "length":
            head.append("Content-Length: %d" % len(body))
        elif chunked:
            head.append("Transfer-Encoding: chunked")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))

        def frame(piece):
            return b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece

        if e["behaviour"] == "slow-body":
            for i in range(len(body)):
                if i:
                    await asyncio.sleep(1)
                writer.write(frame(body[i:i + 1]))
                await writer.drain()
        elif body:
            writer.write(frame(body))
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def janitor(self):
        """A closed TLS connection leaves reference cycles (transport, protocol, SSL object and
        their buffers) that the cyclic collector, counting objects rather than bytes, would
        keep for a long time: collect once a second after connections ended."""
        while True:
            await asyncio.sleep(1)
            if self.finished:
                self.finished = 0
                gc.collect()


async def main(path):
    hosts = Hosts(path)
    srv = Server(hosts)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _l, c: log("asyncio: %s %s" % (c.get("message"),
                                                                      c.get("exception", ""))))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reload():
        try:
            hosts.load()
            log("reloaded %s: %d hosts" % (path, len(hosts.ctxs)))
        except Exception as e:  # keep serving the old configuration
            log("reload of %s failed: %s" % (path, e))

    loop.add_signal_handler(signal.SIGHUP, reload)
    server = await asyncio.start_server(srv.handle, hosts.conf["addr"], int(hosts.conf["port"]),
                                        ssl=srv.base_context(), limit=REQUEST_LIMIT,
                                        ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
                                        reuse_address=True)
    janitor = asyncio.create_task(srv.janitor())
    log("listening on %s:%s for %s" % (hosts.conf["addr"], hosts.conf["port"],
                                       ", ".join(sorted(hosts.ctxs))))
    await stop.wait()
    server.close()
    for t in list(srv.tasks):
        t.cancel()
    await asyncio.gather(*srv.tasks, return_exceptions=True)
    janitor.cancel()
    await server.wait_closed()
    log("stopped")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1]))
