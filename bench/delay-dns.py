#!/usr/bin/env python3
"""A delaying DNS server for bench/cold-prefetch.sh (issue 9, cold path). Stdlib only.

Answers, over UDP and TCP on one loopback address and port, a synthetic zone, each answer
after a fixed delay (the queries wait side by side, not in a queue):

    .  (signed; --root-zone: a zone file from dnssec-signzone -O full)
                              SOA, NS ns.bench., DNSKEY, NSEC, their RRSIGs; the insecure
                              delegation bench. NS ns.bench. without DS, so "DS bench." gets
                              a signed NSEC denial: everything under bench. is provably
                              insecure below the root's trust anchor
    bench.  (unsigned)        SOA, NS ns.bench.;  ns.bench. A 127.0.0.1
    dN.bench.                 MX 10 mx.dN.bench.
    mx.dN.bench.              A 127.0.0.1
    anything else in bench.   NXDOMAIN (so _mta-sts.dN.bench. TXT and the TLSA names)
    other names               NXDOMAIN from the root (unsigned: nothing asks for them)

Existing names answer NODATA (NOERROR, SOA in the authority section) for other types; the
root's answers carry their RRSIGs when the query has the DO bit. Why the signed root: getdns
validates in stub mode by itself, and a name under no trust anchor comes back
"indeterminate" (not "insecure"), which tlspolicyd rightly treats as a failed lookup.

Every query is counted by type and by the shape of its name (dN -> d*); the most queries
waiting at once is kept, and per domain dN the time from its first query to its last answer; SIGTERM or SIGINT writes them as JSON to --stats and exits.

    delay-dns.py --port PORT --root-zone FILE --delay-ms MS --stats FILE [--listen ADDR]
                 [--log FILE]
"""
import argparse
import asyncio
import base64
import calendar
import collections
import json
import re
import signal
import socket
import struct
import sys
import time

TYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 15: "MX", 16: "TXT", 28: "AAAA", 43: "DS",
         46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 50: "NSEC3", 51: "NSEC3PARAM", 52: "TLSA",
         255: "ANY"}
TYPE_NUM = {v: k for k, v in TYPES.items()}
TTL = 3600
NEG_TTL = 300
A, NS, SOA, MX, DS, RRSIG, NSEC, DNSKEY = 1, 2, 6, 15, 43, 46, 47, 48

T0 = time.monotonic()
LOG = []                            # --log: one open file, every query with its time
counts = collections.Counter()      # (type, shape) -> queries
by_transport = collections.Counter()
in_flight = {"now": 0, "max": 0}    # queries received and not yet answered
spans = {}                          # "dN" -> [first query received, last answer sent]
DN = re.compile(r"(?:^|\.)(d[0-9]+)\.bench$")


def hold():
    in_flight["now"] += 1
    in_flight["max"] = max(in_flight["max"], in_flight["now"])


def later(delay, send, qname, *args):
    """Send after the delay; the query counts as in flight until then."""
    hold()
    m = DN.search(qname)
    if m:
        spans.setdefault(m.group(1), [time.monotonic(), 0.0])

    def fire():
        in_flight["now"] -= 1
        if m:
            spans[m.group(1)][1] = time.monotonic()
        send(*args)
    asyncio.get_running_loop().call_later(delay, fire)


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            b = label.encode("ascii")
            out += bytes([len(b)]) + b
    return out + b"\0"


def parse_question(msg):
    """(qname lower-case without the final dot, qtype, qclass, end offset) or None."""
    pos, labels = 12, []
    while True:
        if pos >= len(msg):
            return None
        n = msg[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0:
            return None  # no compression in questions
        labels.append(msg[pos + 1:pos + 1 + n].decode("ascii", "replace").lower())
        pos += 1 + n
    if pos + 4 > len(msg):
        return None
    qtype, qclass = struct.unpack("!HH", msg[pos:pos + 4])
    return ".".join(labels), qtype, qclass, pos + 4


def rr(owner, rtype, rdata, ttl=TTL):
    """One resource record; owner is a wire name (or a compression pointer)."""
    return owner + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


# ---- the signed root: records read from dnssec-signzone -O full (one record per line) ------

def type_num(t):
    return TYPE_NUM[t] if t in TYPE_NUM else int(t[4:])  # "TYPE65534"


def sig_time(t):
    return calendar.timegm(time.strptime(t, "%Y%m%d%H%M%S")) if len(t) == 14 else int(t)


def rdata_wire(rtype, f):
    if rtype == A:
        return bytes(int(x) for x in f[0].split("."))
    if rtype == NS:
        return encode_name(f[0])
    if rtype == SOA:
        return encode_name(f[0]) + encode_name(f[1]) + struct.pack("!IIIII", *map(int, f[2:7]))
    if rtype == DNSKEY:
        return struct.pack("!HBB", int(f[0]), int(f[1]), int(f[2])) + \
            base64.b64decode("".join(f[3:]))
    if rtype == DS:
        return struct.pack("!HBB", int(f[0]), int(f[1]), int(f[2])) + bytes.fromhex("".join(f[3:]))
    if rtype == RRSIG:
        return struct.pack("!HBBIIIH", type_num(f[0]), int(f[1]), int(f[2]), int(f[3]),
                           sig_time(f[4]), sig_time(f[5]), int(f[6])) + \
            encode_name(f[7]) + base64.b64decode("".join(f[8:]))
    if rtype == NSEC:
        windows = collections.defaultdict(bytearray)
        for t in f[1:]:
            n = type_num(t)
            bm = windows[n >> 8]
            low = n & 0xFF
            while len(bm) <= low // 8:
                bm.append(0)
            bm[low // 8] |= 0x80 >> (low % 8)
        return encode_name(f[0]) + b"".join(struct.pack("!BB", w, len(bm)) + bytes(bm)
                                            for w, bm in sorted(windows.items()))
    raise ValueError("type %s not supported in the root zone" % rtype)


def load_root(path):
    """{(owner, type): [wire RR]} and {(owner, covered type): [wire RRSIG]} of the root."""
    records, sigs = collections.defaultdict(list), collections.defaultdict(list)
    for line in open(path):
        line = line.split(";", 1)[0].strip()
        if not line or line.startswith("$"):
            continue
        f = line.split()
        owner, ttl, cls, t = f[0].lower().rstrip("."), int(f[1]), f[2], f[3]
        if cls != "IN":
            raise ValueError("not class IN: " + line)
        rtype = type_num(t)
        wire = rr(encode_name(owner), rtype, rdata_wire(rtype, f[4:]), ttl)
        if rtype == RRSIG:
            sigs[(owner, type_num(f[4]))].append(wire)
        else:
            records[(owner, rtype)].append(wire)
    return records, sigs


# ---- answers -----------------------------------------------------------------------------

def soa(zone):
    rdata = encode_name("ns.bench") + encode_name("hostmaster.bench") + \
        struct.pack("!IIIII", 1, 3600, 600, 86400, NEG_TTL)
    return rr(encode_name(zone), SOA, rdata, NEG_TTL)


DOMAIN = re.compile(r"^d[0-9]+\.bench$")
MXHOST = re.compile(r"^mx\.d[0-9]+\.bench$")


def shape(qname):
    return re.sub(r"(^|\.)d[0-9]+\.bench$", r"\1d*.bench", qname) + "."


class Zone:
    def __init__(self, root_records, root_sigs):
        self.rec, self.sig = root_records, root_sigs

    def signed(self, owner, rtype, dnssec):
        """The root's RRset with its RRSIGs (when the query asked for DNSSEC)."""
        out = list(self.rec.get((owner, rtype), []))
        if dnssec and out:
            out += self.sig.get((owner, rtype), [])
        return out

    def answer(self, qname, qtype, dnssec):
        """(rcode, answer RRs, authority RRs)."""
        ptr = b"\xc0\x0c"  # the question's name
        if qname == "" or (qname == "bench" and qtype == DS):
            # The root zone (and the parent side of the bench. delegation).
            found = self.signed(qname, qtype, dnssec)
            if found:
                return 0, found, []
            return 0, [], self.signed("", SOA, dnssec) + self.signed(qname, NSEC, dnssec)
        if qname == "bench":
            if qtype == SOA:
                return 0, [soa("bench")], []
            if qtype == NS:
                return 0, [rr(ptr, NS, encode_name("ns.bench"))], []
            return 0, [], [soa("bench")]
        if qname == "ns.bench":
            if qtype == A:
                return 0, [rr(ptr, A, bytes([127, 0, 0, 1]))], []
            return 0, [], [soa("bench")]
        if DOMAIN.match(qname):
            if qtype == MX:
                return 0, [rr(ptr, MX, struct.pack("!H", 10) + encode_name("mx." + qname))], []
            return 0, [], [soa("bench")]
        if MXHOST.match(qname):
            if qtype == A:
                return 0, [rr(ptr, A, bytes([127, 0, 0, 1]))], []
            return 0, [], [soa("bench")]
        if qname.endswith(".bench"):
            return 3, [], [soa("bench")]
        return 3, [], self.signed("", SOA, dnssec)

    def reply(self, msg):
        """(the reply to one query message, its qname), or None to drop it."""
        if len(msg) < 12:
            return None
        qid, flags, qd, _an, _ns, ar = struct.unpack("!HHHHHH", msg[:12])
        if flags & 0x8000 or qd != 1:
            return None
        q = parse_question(msg)
        if q is None:
            return None
        qname, qtype, qclass, end = q
        counts[(TYPES.get(qtype, str(qtype)), shape(qname))] += 1
        for f in LOG:
            f.write("%9.1f ms  %-6s %s.\n" % ((time.monotonic() - T0) * 1000,
                                              TYPES.get(qtype, str(qtype)), qname))
        # EDNS: answer with an OPT record when the query had one (DO bit echoed).
        opt, dnssec = [], False
        rest = msg[end:]
        if ar and len(rest) >= 11 and rest[0] == 0 and struct.unpack("!H", rest[1:3])[0] == 41:
            dnssec = bool(struct.unpack("!I", rest[5:9])[0] & 0x8000)
            opt.append(b"\0" + struct.pack("!HHIH", 41, 1232, 0x8000 if dnssec else 0, 0))
        if qclass != 1:
            rcode, answers, authority = 5, [], []  # REFUSED
        else:
            rcode, answers, authority = self.answer(qname, qtype, dnssec)
        # QR, AA, RA; RD and CD echoed.
        rflags = 0x8000 | 0x0400 | 0x0080 | (flags & 0x0100) | (flags & 0x0010) | rcode
        header = struct.pack("!HHHHHH", qid, rflags, 1, len(answers), len(authority), len(opt))
        # At most ~600 bytes (the signed DNSKEY set): never truncated.
        return header + msg[12:end] + b"".join(answers) + b"".join(authority) + b"".join(opt), qname


class Udp(asyncio.DatagramProtocol):
    def __init__(self, zone, delay):
        self.zone, self.delay = zone, delay
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        by_transport["udp"] += 1
        r = self.zone.reply(data)
        if r is not None:
            later(self.delay, self.transport.sendto, r[1], r[0], addr)


async def tcp_client(reader, writer, zone, delay):
    def send(reply):
        if not writer.is_closing():
            writer.write(struct.pack("!H", len(reply)) + reply)
    try:
        while True:
            head = await reader.readexactly(2)
            msg = await reader.readexactly(struct.unpack("!H", head)[0])
            by_transport["tcp"] += 1
            r = zone.reply(msg)
            if r is not None:
                later(delay, send, r[1], r[0])
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    await asyncio.sleep(delay)  # replies still due
    writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--root-zone", required=True)
    ap.add_argument("--delay-ms", type=float, default=20)
    ap.add_argument("--stats", required=True)
    ap.add_argument("--log", help="write every query (time since start, type, name) here")
    a = ap.parse_args()
    if a.log:
        LOG.append(open(a.log, "w", buffering=1))
    zone = Zone(*load_root(a.root_zone))
    delay = a.delay_ms / 1000.0
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: Udp(zone, delay),
                                                       local_addr=(a.listen, a.port))
    # Hundreds of queries arrive at once when prefetch starts (or a burst of answers lets
    # hundreds of validation queries go): a default 208 KiB receive buffer overflows (the
    # kernel drops them: RcvbufErrors in /proc/net/snmp) and prefetch sees timeouts that are
    # this server's, not the daemon's. 16 MiB (SO_RCVBUFFORCE as root, else up to rmem_max).
    sock = transport.get_extra_info("socket")
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    server = await asyncio.start_server(lambda r, w: tcp_client(r, w, zone, delay),
                                        a.listen, a.port)
    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    print("delay-dns: listening on %s:%d, %g ms per answer, UDP receive buffer %d KiB" % (
        a.listen, a.port, a.delay_ms, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 1024),
        flush=True)
    await stop.wait()
    transport.close()
    server.close()
    span_ms = sorted((b - f) * 1000 for f, b in spans.values() if b)
    pick = lambda q: round(span_ms[min(len(span_ms) - 1, int(q * len(span_ms)))], 1) \
        if span_ms else None
    out = {"delay_ms": a.delay_ms, "transport": dict(by_transport),
           "max_in_flight": in_flight["max"],
           # per domain: first query about dN received -> last answer about dN sent
           "domain_span_ms": {"domains": len(span_ms), "p50": pick(0.5), "p90": pick(0.9),
                              "max": pick(1.0)},
           "queries": [{"type": t, "name": n, "count": c}
                       for (t, n), c in sorted(counts.items(), key=lambda x: (-x[1], x[0]))]}
    with open(a.stats, "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
