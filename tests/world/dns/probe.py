#!/usr/bin/python3
"""Readiness probe: send a UDP query (". SOA", EDNS DO=1) to each server until it answers.

Usage: probe.py [--wait SECONDS] HOST@PORT...
A server counts as ready once it answers NOERROR; when more than one server is listed, the
last one (the validating resolver) must also set the AD bit.  Exits 0 when all are ready, 1 on timeout.

Or:    probe.py --query NAME TYPE HOST@PORT
Sends one query (RD=1, DO=1, CD=0) and prints "rcode=N ad=0|1 answers=N", exit 0;
exit 1 if no answer within 2 s.  TYPE is a name (A, MX, TLSA, SOA, NS, DS, DNSKEY, TXT, AAAA)
or a number.
Standard library only.
"""
import os
import socket
import struct
import sys
import time


TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28, "DS": 43,
         "DNSKEY": 48, "TLSA": 52}


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\x00"


def query(host, port, timeout, name=".", qtype=6):
    qid = int.from_bytes(os.urandom(2), "big")
    # header: id, flags RD, 1 question, 0, 0, 1 additional (OPT)
    msg = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 1)
    msg += encode_name(name) + struct.pack(">HH", qtype, 1)
    msg += b"\x00" + struct.pack(">HHIH", 41, 1232, 0x00008000, 0)  # OPT, DO=1
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(msg, (host, port))
        while True:
            data, _ = s.recvfrom(4096)
            if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == qid:
                flags = struct.unpack(">H", data[2:4])[0]
                ancount = struct.unpack(">H", data[6:8])[0]
                return flags & 0x000F, bool(flags & 0x0020), ancount  # rcode, AD, answers
    except OSError:
        return None
    finally:
        s.close()


def main():
    args = sys.argv[1:]
    if args[:1] == ["--query"] and len(args) == 4:
        qtype = TYPES.get(args[2].upper()) or int(args[2])
        h, p = args[3].split("@")
        r = query(h, int(p), 2.0, args[1], qtype)
        if r is None:
            print("no answer")
            return 1
        print("rcode=%d ad=%d answers=%d" % (r[0], int(r[1]), r[2]))
        return 0
    wait = 10.0
    if args[:1] == ["--wait"]:
        wait = float(args[1])
        args = args[2:]
    servers = []
    for a in args:
        h, p = a.split("@")
        servers.append((h, int(p)))
    deadline = time.monotonic() + wait
    pending = list(servers)
    while pending and time.monotonic() < deadline:
        for (h, p) in list(pending):
            r = query(h, p, 0.3)
            if r is None or r[0] != 0:
                continue
            if len(servers) > 1 and (h, p) == servers[-1] and not r[1]:
                continue  # resolver answered but did not validate (yet)
            pending.remove((h, p))
        if pending:
            time.sleep(0.05)
    for (h, p) in pending:
        print("probe: %s@%d not ready after %.1f s" % (h, p, wait))
    return 1 if pending else 0


if __name__ == "__main__":
    sys.exit(main())
