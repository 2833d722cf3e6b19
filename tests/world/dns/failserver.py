#!/usr/bin/python3
"""Broken DNS servers for the test world, on 127.0.0.1 (UDP and TCP each):

  --blackhole PORT   reads every query and never answers (TCP: accepts, reads, stays silent)
  --servfail PORT    answers every query with SERVFAIL (header and question echoed, RA set)
  --front PORT --upstream PORT --drop FILE
                     a relay in front of the validating resolver (127.0.0.1@upstream): every
                     query is passed through, except queries for names at or below a zone listed
                     in FILE (one name per line), which are never answered.

Zones delegated (insecurely) to the first two give a resolver a timeout or a SERVFAIL.  Why the
front: behind unbound, a dead authoritative server turns into fast SERVFAILs after a few
timeouts (unbound's infrastructure cache marks it down, and it caches the SERVFAIL for about
5 s), so a client of unbound cannot be made to time out reliably.  Clients that must see a
resolver timeout ask the front.  Runs until SIGTERM.  Standard library only.
"""
import argparse
import asyncio
import signal
import socket
import struct

MAX_HELD = 256  # open blackhole TCP connections kept at once; older ones are closed
MAX_INFLIGHT = 512  # relayed queries in flight at once; more are dropped
UPSTREAM_TIMEOUT = 10.0
RECV_BUFFER = 8 << 20  # bytes of the front's UDP receive buffer


def qname(msg):
    """Lower-case question name of a DNS message, or None if it has none / is malformed."""
    if len(msg) < 12 or struct.unpack("!H", msg[4:6])[0] == 0:
        return None
    labels, i = [], 12
    while i < len(msg) and msg[i] != 0:
        n = msg[i]
        if n & 0xC0 or i + 1 + n > len(msg):
            return None
        labels.append(msg[i + 1:i + 1 + n].decode("ascii", "replace").lower())
        i += n + 1
    return ".".join(labels) + "."


def dropped(name, zones):
    return name is not None and any(name == z or name.endswith("." + z) for z in zones)


def servfail(query):
    if len(query) < 12:
        return None
    qid, flags = struct.unpack("!HH", query[:4])
    flags = 0x8000 | (flags & 0x7900) | 0x0080 | 2  # QR, opcode+RD kept, RA, rcode SERVFAIL
    qd = struct.unpack("!H", query[4:6])[0]
    # echo the question section only (everything up to the end of the first question)
    i = 12
    if qd:
        while i < len(query) and query[i] != 0:
            i += query[i] + 1
        i += 5
    if i > len(query):
        return None
    return struct.pack("!HHHHHH", qid, flags, min(qd, 1), 0, 0, 0) + query[12:i]


class Udp(asyncio.DatagramProtocol):
    def __init__(self, answer):
        self.answer = answer

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if self.answer:
            reply = servfail(data)
            if reply:
                self.transport.sendto(reply, addr)


async def tcp_handler(reader, writer, answer, held):
    held.append(writer)
    while len(held) > MAX_HELD:
        held.pop(0).close()
    try:
        while True:
            head = await reader.readexactly(2)
            data = await reader.readexactly(struct.unpack("!H", head)[0])
            if answer:
                reply = servfail(data)
                if reply:
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        if writer in held:
            held.remove(writer)
        writer.close()


class OneShot(asyncio.DatagramProtocol):
    def __init__(self, fut):
        self.fut = fut

    def datagram_received(self, data, addr):
        if not self.fut.done():
            self.fut.set_result(data)


async def udp_exchange(data, upstream):
    """The resolver's UDP answer to one query, or None when it does not come in time."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    tr, _ = await loop.create_datagram_endpoint(lambda: OneShot(fut),
                                                remote_addr=("127.0.0.1", upstream))
    try:
        tr.sendto(data)
        return await asyncio.wait_for(fut, UPSTREAM_TIMEOUT)
    except asyncio.TimeoutError:
        return None
    finally:
        tr.close()


class Front(asyncio.DatagramProtocol):
    def __init__(self, upstream, zones, sem):
        self.upstream, self.zones, self.sem = upstream, zones, sem

    def connection_made(self, transport):
        self.transport = transport
        # A client that starts a few hundred validated lookups at once sends a burst larger
        # than the default receive buffer; the kernel would drop the excess silently and the
        # client would see timeouts that are the relay's fault. Root may exceed rmem_max.
        sock = transport.get_extra_info("socket")
        for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, RECV_BUFFER)
                break
            except OSError:
                continue

    def datagram_received(self, data, addr):
        if dropped(qname(data), self.zones) or self.sem.locked():
            return
        asyncio.get_running_loop().create_task(self.relay(data, addr))

    async def relay(self, data, addr):
        async with self.sem:
            reply = await udp_exchange(data, self.upstream)
            if reply is not None:
                self.transport.sendto(reply, addr)


async def front_tcp(reader, writer, upstream, zones, sem):
    lock = asyncio.Lock()
    tasks = set()

    async def relay(msg):
        # Asked of the resolver over UDP, and again over TCP only when that answer is
        # truncated: a client that sends everything over TCP (tlspolicyd does) would otherwise
        # cost the resolver one TCP connection per query, and unbound's TCP slots run out
        # under load (queries wait, clients time out: the relay's fault, not theirs).
        async with sem:
            try:
                reply = await udp_exchange(msg, upstream)
                if reply is None:
                    return
                if len(reply) < 3 or reply[2] & 0x02:  # TC
                    ur, uw = await asyncio.open_connection("127.0.0.1", upstream)
                    uw.write(struct.pack("!H", len(msg)) + msg)
                    head = await asyncio.wait_for(ur.readexactly(2), UPSTREAM_TIMEOUT)
                    reply = await ur.readexactly(struct.unpack("!H", head)[0])
                    uw.close()
                async with lock:
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                pass

    try:
        while True:
            head = await asyncio.wait_for(reader.readexactly(2), 60)
            msg = await reader.readexactly(struct.unpack("!H", head)[0])
            if not dropped(qname(msg), zones) and not sem.locked():
                t = asyncio.get_running_loop().create_task(relay(msg))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        for t in tasks:
            t.cancel()
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--blackhole", type=int, required=True)
    ap.add_argument("--servfail", type=int, required=True)
    ap.add_argument("--front", type=int)
    ap.add_argument("--upstream", type=int)
    ap.add_argument("--drop")
    a = ap.parse_args()
    loop = asyncio.get_running_loop()
    held = []
    for port, answer in ((a.blackhole, False), (a.servfail, True)):
        await loop.create_datagram_endpoint(lambda answer=answer: Udp(answer),
                                            local_addr=("127.0.0.1", port))
        await asyncio.start_server(lambda r, w, answer=answer: tcp_handler(r, w, answer, held),
                                   "127.0.0.1", port)
    if a.front:
        with open(a.drop) as f:
            zones = [l.strip().lower() for l in f if l.strip()]
        sem = asyncio.Semaphore(MAX_INFLIGHT)
        await loop.create_datagram_endpoint(lambda: Front(a.upstream, zones, sem),
                                            local_addr=("127.0.0.1", a.front))
        await asyncio.start_server(lambda r, w: front_tcp(r, w, a.upstream, zones, sem),
                                   "127.0.0.1", a.front)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("failserver: blackhole 127.0.0.1@%d, servfail 127.0.0.1@%d" % (a.blackhole,
                                                                        a.servfail), flush=True)
    await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
