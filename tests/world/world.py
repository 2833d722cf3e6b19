#!/usr/bin/python3
"""The hermetic test world: generated from tests/scenarios/scenarios.toml, run on loopback.

Usage:
  world.py start WORLD [--table FILE]   generate everything into WORLD, start the servers,
                                        wait until they answer, write WORLD/world.env, print it
  world.py flip WORLD NAME [after|before]
                                        switch scenario NAME to its `after` state (or back): zone
                                        re-signed with the same keys, nsd reloaded, policy
                                        rewritten; returns once nsd serves the new zone
Stop with tests/world/stop-world.sh WORLD (signals only the PIDs listed in WORLD/pids).

Pieces: DNS (this file + dns/: nsd authoritative for a fake signed root, validating unbound,
never-answering and SERVFAIL servers), PKI (pki.py), HTTPS (https/), SMTP (smtp/).  Each piece
module offers generate(w), start(w), wait_ready(w, deadline), env(w) and check(w, row).
Standard library only (Debian's /usr/bin/python3).
"""
import concurrent.futures
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pki as pkimod  # noqa: E402

DEFAULT_TABLE = os.path.join(os.path.dirname(HERE), "scenarios", "scenarios.toml")
TTL = 300
ALG = "ECDSAP256SHA256"
SIGN_MODES = ("ok", "none", "expired", "badds", "blackhole", "servfail")
NGINX_ADDR = "127.0.0.1"
HOSTILE_ADDR = "127.0.0.2"
# posttls-finger reads /etc/resolv.conf, which cannot name a port: the world's unbound also
# listens on port 53 of one address from this range (the first free one), and only a private
# mount namespace points a resolv.conf at it.
RESOLV_ADDRS = ["127.0.0.%d" % i for i in range(153, 200)]
MACRO = re.compile(r"\{(sha256|sha512)-(spki|cert):([A-Za-z0-9_.-]+)\}")


class WorldError(Exception):
    pass


# ---- the table ---------------------------------------------------------------------------------

def load_table(path=DEFAULT_TABLE):
    """Parse and validate the scenario table; returns the dict with defaults filled in."""
    with open(path, "rb") as f:
        t = tomllib.load(f)
    t.setdefault("scenario", [])
    t.setdefault("zone", [])
    t.setdefault("smtp", [])
    seen = set()
    for row in t["scenario"]:
        for k in ("name", "domain", "answer", "reason"):
            if k not in row:
                raise WorldError("scenario %r: missing %s" % (row.get("name", "?"), k))
        if row["name"] in seen:
            raise WorldError("scenario %s: duplicate name" % row["name"])
        seen.add(row["name"])
        if not re.fullmatch(r"OK .+|NOTFOUND|TEMP", row["answer"]):
            raise WorldError("scenario %s: answer must be 'OK <policy>', NOTFOUND or TEMP"
                             % row["name"])
        row.setdefault("key", row["domain"])
        if ("records" in row or "repeat" in row) and "sign" not in row:
            raise WorldError("scenario %s: records need sign (the row's own zone)" % row["name"])
        if "sign" in row and row["sign"] not in SIGN_MODES:
            raise WorldError("scenario %s: unknown sign %r" % (row["name"], row["sign"]))
        if "sts" in row:
            s = row["sts"]
            s.setdefault("server", "nginx")
            s.setdefault("cert", "web")
            s.setdefault("status", 200)
            s.setdefault("content_type", "text/plain")
            s.setdefault("transfer", "length")
        if "after" in row and "answer_after" not in row:
            raise WorldError("scenario %s: after needs answer_after" % row["name"])
    for z in t["zone"]:
        if not z["name"].endswith("."):
            raise WorldError("zone %s: name must end with a dot" % z["name"])
        if z.get("sign") not in SIGN_MODES:
            raise WorldError("zone %s: unknown sign %r" % (z["name"], z.get("sign")))
    return t


def sts_addr(sts):
    return HOSTILE_ADDR if sts["server"] == "hostile" else NGINX_ADDR


# ---- the world ---------------------------------------------------------------------------------

class World:
    """One world directory.  Attributes: out, table, ports (dict), pki."""

    def __init__(self, out, table_path=DEFAULT_TABLE):
        self.out = os.path.abspath(out)
        self.table_path = os.path.abspath(table_path)
        self.table = load_table(self.table_path)
        self.ports = {}
        self.pki = None
        self.resolv_addr = None

    def path(self, *parts):
        return os.path.join(self.out, *parts)

    def spawn(self, label, argv, log):
        """Start a server detached from our terminal (own session); record it in WORLD/pids
        as 'PID EXE LABEL', EXE being the basename stop-world.sh checks before signalling."""
        with open(log, "ab") as lf:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        # Popen returns after a successful exec, so /proc/PID/exe is the program now.
        exe = os.path.basename(os.readlink("/proc/%d/exe" % p.pid))
        with open(self.path("pids"), "a") as f:
            f.write("%d %s %s\n" % (p.pid, exe, label))
        return p

    def load_env(self):
        env = {}
        with open(self.path("world.env")) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    env[k] = v
        self.ports = {k[:-5].lower(): int(v) for k, v in env.items() if k.endswith("_PORT")}
        self.pki = pkimod.Pki(self.path("pki"))
        self.resolv_addr = env.get("RESOLV_ADDR")
        return env


def _family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def free_port(addrs):
    """A port >= 10000 free for TCP and UDP on every address in ADDRS (IPv4 or IPv6; checked,
    not reserved)."""
    for _ in range(200):
        t = socket.socket(_family(addrs[0]), socket.SOCK_STREAM)
        t.bind((addrs[0], 0))
        port = t.getsockname()[1]
        t.close()
        if port < 10000:
            continue
        ok = True
        for a in addrs:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                s = socket.socket(_family(a), kind)
                try:
                    s.bind((a, port))
                except OSError:
                    ok = False
                finally:
                    s.close()
        if ok:
            return port
    raise WorldError("no free port on %s" % ", ".join(addrs))


def free_53():
    """The first address of RESOLV_ADDRS where port 53 is free for TCP and UDP."""
    for a in RESOLV_ADDRS:
        ok = True
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET, kind)
            try:
                s.bind((a, 53))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return a
    raise WorldError("port 53 is taken on every address of 127.0.0.153-199")


# ---- DNS: zones --------------------------------------------------------------------------------

def _run(cmd, cwd, netns):
    if netns:
        cmd = ["unshare", "-n"] + cmd
    r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise WorldError("%s failed (%d)\n%s%s" % (" ".join(cmd), r.returncode, r.stdout,
                                                   r.stderr))
    return r.stdout


def fname(zone):
    return "root" if zone == "." else zone.rstrip(".")


def absolute(owner, origin):
    if owner == "@":
        return origin
    if owner.endswith("."):
        return owner.lower()
    return (owner + "." + (origin if origin != "." else "")).lower()


def in_zone(name, zone):
    return zone == "." or name == zone or name.endswith("." + zone)


def zone_plan(w):
    """Returns ordered [(zone, sign, [records])] with parents before children."""
    zones = {".": ("ok", []), "test.": ("ok", [])}
    for row in w.table["scenario"]:
        if "sign" not in row:
            continue
        name = row["domain"].lower() + "."
        if name in zones:
            raise WorldError("zone %s defined twice" % name)
        recs = list(row.get("records", []))
        rep = row.get("repeat")
        if rep:
            for i in range(1, rep["count"] + 1):
                recs += [r.replace("{i}", str(i)) for r in rep["records"]]
        zones[name] = (row["sign"], recs)
    for z in w.table["zone"]:
        name = z["name"].lower()
        if name in zones:
            raise WorldError("zone %s defined twice" % name)
        zones[name] = (z["sign"], list(z.get("records", [])))
    order = sorted(zones, key=lambda n: (0 if n == "." else n.count("."), n))
    return [(n, zones[n][0], zones[n][1]) for n in order]


def parent_zone(zone, names):
    """Closest enclosing zone of ZONE among NAMES."""
    if zone == ".":
        return None
    rest = zone.split(".", 1)[1] or "."
    while rest not in names:
        rest = rest.split(".", 1)[1] or "."
    return rest


def expand(w, line):
    def digest(m):
        return w.pki.digest("%s-%s" % (m.group(1), m.group(2)), m.group(3))
    return MACRO.sub(digest, line)


def zone_records(w, zone, records, names):
    """Expand macros, make owners absolute, add _<smtp port>._tcp twins and mta-sts A records."""
    out = []
    smtp = w.ports["smtp"]
    for line in records:
        line = expand(w, line)
        owner, rest = line.split(None, 1)
        own = absolute(owner, zone)
        if not in_zone(own, zone):
            raise WorldError("zone %s: record owner %s is outside the zone" % (zone, own))
        if own != zone and parent_zone(own, names) != zone:
            raise WorldError("zone %s: record owner %s lies in child zone %s" % (
                zone, own, parent_zone(own, names)))
        out.append("%s %s" % (own, rest))
        if own.startswith("_25._tcp."):
            out.append("_%d%s %s" % (smtp, own[3:], rest))
    for row in w.table["scenario"]:
        if "sts" not in row:
            continue
        host = "mta-sts." + row["domain"].lower() + "."
        if parent_zone(host, names) == zone:  # the closest enclosing zone holds its address
            out.append("%s A %s" % (host, sts_addr(row["sts"])))
    return out


def write_zone(w, z, sign, recs, names, info, serial, netns):
    """Write zone Z (records RECS plus SOA, NS, delegations with DS) to WORLD/zones, signed per
    SIGN with the keys in WORLD/keys; returns the served file's path."""
    apex = z if z != "." else ""
    lines = ["$ORIGIN %s" % z, "$TTL %d" % TTL,
             "@ SOA ns.%s hostmaster.%s %d 3600 600 86400 %d" % (apex, apex, serial, TTL),
             "@ NS ns.%s" % apex, "ns.%s A 127.0.0.1" % apex]
    for c in sorted(names):
        if c != z and parent_zone(c, names) == z:
            lines += ["%s NS ns.%s" % (c, c), "ns.%s A 127.0.0.1" % c]
            if "ds" in info.get(c, {}):
                lines.append(info[c]["ds"].strip())
    lines += zone_records(w, z, recs, names)
    src = w.path("zwork", fname(z) + ".zone")
    with open(src, "w") as f:
        f.write("\n".join(lines) + "\n")
    dst = w.path("zones", fname(z) + ".zone")
    tmp = dst + ".new"
    if sign == "none":
        shutil.copy(src, tmp)
    else:
        cmd = ["dnssec-signzone", "-q", "-S", "-K", w.path("keys"), "-o", z, "-f", tmp, "-a",
               "-O", "text"]
        if sign == "expired":
            cmd += ["-s", "20200101000000", "-e", "20200201000000", "-P"]
        _run(cmd + [src], w.path("zwork"), netns)
    os.replace(tmp, dst)  # nsd never reads a half-written zone
    return dst


def gen_zones(w):
    netns = subprocess.run(["unshare", "-n", "true"], stderr=subprocess.DEVNULL).returncode == 0
    zdir, kdir, wdir = w.path("zones"), w.path("keys"), w.path("zwork")
    for d in (zdir, kdir, wdir):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    plan = zone_plan(w)
    names = {z for z, _, _ in plan}
    info = {z: {"sign": s, "records": r} for z, s, r in plan}

    def keygen(directory, zone, ksk):
        cmd = ["dnssec-keygen", "-q", "-K", directory, "-a", ALG, "-n", "ZONE", "-L", str(TTL)]
        return _run(cmd + (["-f", "KSK"] if ksk else []) + [zone], directory, netns).strip()

    def make_keys(z):
        sign = info[z]["sign"]
        info[z]["ksk"] = keygen(kdir, z, True)
        info[z]["zsk"] = keygen(kdir, z, False)
        keyfile = os.path.join(kdir, info[z]["ksk"] + ".key")
        if sign == "badds":  # the parent publishes the DS of a key the zone never shows
            stray = os.path.join(wdir, "stray-" + fname(z))
            os.makedirs(stray)
            keyfile = os.path.join(stray, keygen(stray, z, True) + ".key")
        info[z]["ds"] = _run(["dnssec-dsfromkey", "-2", keyfile], wdir, netns)
        # kept for flip(), which re-signs one zone with the same keys
        with open(os.path.join(kdir, fname(z) + ".ds"), "w") as f:
            f.write(info[z]["ds"])

    # Keys first (a parent's zone holds its children's DS); signing zones is independent.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 2)) as pool:
        list(pool.map(make_keys, [z for z, s, _ in plan if s in ("ok", "expired", "badds")]))
        todo = [(z, s, r) for z, s, r in plan if s not in ("blackhole", "servfail")]
        paths = list(pool.map(lambda p: write_zone(w, p[0], p[1], p[2], names, info, 1, netns),
                              todo))
    served = [(z, path) for (z, _, _), path in zip(todo, paths)]

    with open(w.path("anchor.ds"), "w") as f:
        f.write(info["."]["ds"])
    with open(os.path.join(kdir, info["."]["ksk"] + ".key")) as f, \
            open(w.path("anchor.key"), "w") as g:
        g.write("".join(l for l in f if not l.startswith(";")))
    with open(w.path("zones.list"), "w") as f:
        for z, path in served:
            f.write("%s %s\n" % (z, path))
    with open(w.path("stubs.list"), "w") as f:  # zone -> which server unbound asks
        for z, sign, _ in plan:
            f.write("%s %s\n" % (z, sign if sign in ("blackhole", "servfail") else "nsd"))
    return len(served), netns


# ---- DNS: servers ------------------------------------------------------------------------------

def gen_dns_configs(w):
    os.makedirs(w.path("nsd"), exist_ok=True)
    os.makedirs(w.path("unbound"), exist_ok=True)
    p = w.ports
    with open(w.path("nsd", "nsd.conf"), "w") as f:
        f.write("""server:
    ip-address: 127.0.0.1@{port}
    port: {port}
    do-ip6: no
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{out}/zones"
    database: ""
    zonelistfile: "{out}/nsd/zone.list"
    xfrdfile: "{out}/nsd/xfrd.state"
    xfrdir: "{out}/nsd"
    pidfile: "{out}/nsd/nsd.pid"
    logfile: "{out}/nsd/nsd.log"
    verbosity: 1
    hide-version: yes
    minimal-responses: yes
    refuse-any: yes
remote-control:
    control-enable: no
""".format(port=p["nsd"], out=w.out))
        with open(w.path("zones.list")) as zl:
            for line in zl:
                z, path = line.split()
                f.write('zone:\n    name: "%s"\n    zonefile: "%s"\n' % (z, path))
    stub_port = {"nsd": p["nsd"], "blackhole": p["blackhole"], "servfail": p["servfail"]}
    with open(w.path("unbound", "unbound.conf"), "w") as f:
        f.write("""server:
    interface: 127.0.0.1@{port}
    interface: {resolv}@53
    outgoing-interface: 127.0.0.1
    do-ip6: no
    chroot: ""
    username: ""
    directory: "{out}/unbound"
    pidfile: "{out}/unbound/unbound.pid"
    use-syslog: no
    logfile: "{out}/unbound/unbound.log"
    verbosity: 1
    val-log-level: 2
    num-threads: 1
    # DNSSEC answers over 1232 bytes (the 10-link CNAME chain) come truncated and are asked
    # again over TCP; unbound's default of 10 TCP slots made those time out when many
    # lookups run at once.
    incoming-num-tcp: 256
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    local-zone: "test." nodefault
    trust-anchor-file: "{out}/anchor.ds"
    module-config: "validator iterator"
    qname-minimisation: no
    cache-max-ttl: 30
    cache-max-negative-ttl: 30
    infra-host-ttl: 5
remote-control:
    control-enable: no
""".format(port=p["unbound"], resolv=w.resolv_addr, out=w.out))
        # One stub per zone, so unbound never follows a referral to glue on port 53.
        with open(w.path("stubs.list")) as sl:
            for line in sl:
                z, server = line.split()
                f.write('stub-zone:\n    name: "%s"\n    stub-addr: 127.0.0.1@%d\n'
                        '    stub-prime: no\n' % (z, stub_port[server]))
    _run(["nsd-checkconf", w.path("nsd", "nsd.conf")], w.out, False)
    _run(["unbound-checkconf", w.path("unbound", "unbound.conf")], w.out, False)


def start_dns(w):
    with open(w.path("stubs.list")) as sl, open(w.path("timeout-zones.list"), "w") as f:
        for line in sl:
            z, server = line.split()
            if server == "blackhole":
                f.write(z + "\n")
    w.spawn("failservers", ["/usr/bin/python3", os.path.join(HERE, "dns", "failserver.py"),
                            "--blackhole", str(w.ports["blackhole"]),
                            "--servfail", str(w.ports["servfail"]),
                            "--front", str(w.ports["resolver"]),
                            "--upstream", str(w.ports["unbound"]),
                            "--drop", w.path("timeout-zones.list")],
            w.path("failserver.log"))
    w.spawn("nsd", ["nsd", "-d", "-c", w.path("nsd", "nsd.conf")], w.path("nsd", "stdout.log"))
    w.spawn("unbound", ["unbound", "-d", "-c", w.path("unbound", "unbound.conf")],
            w.path("unbound", "stdout.log"))


def wait_dns(w, deadline):
    left = max(1, int(deadline - time.time()))
    r = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "dns", "probe.py"), "--wait",
                        str(left), "127.0.0.1@%d" % w.ports["nsd"],
                        "127.0.0.1@%d" % w.ports["unbound"], "127.0.0.1@%d" % w.ports["resolver"]],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise WorldError("DNS not ready: %s (logs in %s/nsd, %s/unbound)" % (r.stdout.strip(),
                                                                            w.out, w.out))


# ---- the daemon's configuration for this world ------------------------------------------------

def daemon_config(w):
    return """# tlspolicyd configuration for the test world in {out} (generated)
[dns]
resolvers = ["127.0.0.1:{resolver}"]
trust_anchor_file = "{out}/anchor.ds"
# Short, so that rows behind the never-answering server end quickly, and deterministic:
# that server never answers, whatever the timeout. Not shorter: the scenario sweeps ask
# for every row at once, and on a loaded 2-core machine a 1 s attempt timed out on the
# 1449-byte answer that has to go over TCP (ten.cname-dom.test).
timeout_ms = 2000
deadline_ms = 5000

[mta_sts]
ca_file = "{ca}"
https_port = {https}
allow_private_addresses = true
# Short, so that the slow-drip policy server is cut off quickly.
connect_timeout_ms = 2000
timeout_ms = 3000

[policy]
sts_level = "verify"
testing_mode = "ignore"
""".format(out=w.out, resolver=w.ports["resolver"], https=w.ports["https"],
           ca=w.pki.cert("web-ca"))


# ---- orchestration -----------------------------------------------------------------------------

def pieces():
    """The piece modules present (WORLD_PIECES=https,smtp|none limits them, for debugging)."""
    import importlib
    mods = []
    only = os.environ.get("WORLD_PIECES")
    for name in ("https", "smtp"):
        if only is not None and name not in only.split(","):
            continue
        if os.path.exists(os.path.join(HERE, name, name + ".py")):
            sys.path.insert(0, os.path.join(HERE, name))
            mods.append(importlib.import_module(name))
    return mods


def stop(w):
    subprocess.run([os.path.join(HERE, "stop-world.sh"), w.out])


def start(w):
    t0 = time.time()
    os.makedirs(w.out, exist_ok=True)
    if os.path.exists(w.path("pids")) and os.path.getsize(w.path("pids")) > 0:
        raise WorldError("%s/pids exists: run stop-world.sh first" % w.out)
    smtp_addrs = [s["addr"] for s in w.table["smtp"]] or ["127.0.0.1"]
    w.ports = {"smtp": free_port(smtp_addrs), "https": free_port([NGINX_ADDR, HOSTILE_ADDR])}
    for k in ("nsd", "unbound", "blackhole", "servfail", "resolver"):
        w.ports[k] = free_port(["127.0.0.1"])
    w.resolv_addr = free_53()
    w.pki = pkimod.Pki(w.path("pki"))
    for s in w.table["smtp"]:
        w.pki.issue(s["name"], s["names"], s["issuer"], s.get("expired", False))
    nzones, netns = gen_zones(w)
    gen_dns_configs(w)
    mods = pieces()
    for m in mods:
        m.generate(w)
    with open(w.path("tlspolicyd.toml"), "w") as f:
        f.write(daemon_config(w))
    t1 = time.time()
    try:
        start_dns(w)
        for m in mods:
            m.start(w)
        deadline = time.time() + 15
        wait_dns(w, deadline)
        for m in mods:
            m.wait_ready(w, deadline)
    except BaseException:
        stop(w)
        raise
    env = {"WORLD": w.out, "SCENARIOS": w.table_path,
           "NSD": "127.0.0.1@%d" % w.ports["nsd"], "UNBOUND": "127.0.0.1@%d" % w.ports["unbound"],
           "RESOLVER": "127.0.0.1@%d" % w.ports["resolver"],
           "ANCHOR": w.path("anchor.ds"), "ANCHOR_KEY": w.path("anchor.key"),
           "WEB_CA": w.pki.cert("web-ca"), "DANE_CA": w.pki.cert("dane-ca"),
           "RESOLV_ADDR": w.resolv_addr, "CONFIG": w.path("tlspolicyd.toml")}
    for k, v in sorted(w.ports.items()):
        env[k.upper() + "_PORT"] = str(v)
    for m in mods:
        env.update(m.env(w))
    with open(w.path("world.env"), "w") as f:
        for k, v in env.items():
            f.write("%s=%s\n" % (k, v))
    sys.stderr.write("world: %d scenarios, %d zones (netns isolation: %s), generated in %.2f s, "
                     "ready in %.2f s\n" % (len(w.table["scenario"]), nzones,
                                            "yes" if netns else "no", t1 - t0, time.time() - t0))
    for k, v in env.items():
        print("%s=%s" % (k, v))


def soa_serial(port, zone):
    """SOA serial of ZONE as 127.0.0.1@PORT serves it (UDP, one try), or None."""
    import struct
    q = struct.pack("!HHHHHH", 0x5157, 0, 1, 0, 0, 0)
    for label in zone.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack("!HH", 6, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(0.5)
        u.sendto(q, ("127.0.0.1", port))
        try:
            r = u.recv(4096)
        except OSError:
            return None
    if len(r) < 12 or struct.unpack("!H", r[6:8])[0] < 1:
        return None
    i = len(q)  # the answer's owner is a pointer (2 bytes) or the full name
    i += 2 if r[i] & 0xC0 else len(q) - 12 - 4
    rdata = r[i + 10:]
    j = 0
    for _ in range(2):  # MNAME, RNAME
        while rdata[j] and not rdata[j] & 0xC0:
            j += rdata[j] + 1
        j += 2 if rdata[j] & 0xC0 else 1
    return struct.unpack("!I", rdata[j:j + 4])[0]


def flip(w, name, state="after"):
    """Switch scenario NAME to what it publishes `after` (or `before`, as generated)."""
    rows = [r for r in w.table["scenario"] if r["name"] == name]
    if not rows or "after" not in rows[0] or "sign" not in rows[0]:
        raise WorldError("flip: no scenario %r with `after` and its own zone" % name)
    row = rows[0]
    src = row["after"] if state == "after" else row
    zone = row["domain"].lower() + "."
    names = {z for z, _, _ in zone_plan(w)}
    info = {}
    for c in names:
        ds = w.path("keys", fname(c) + ".ds")
        if os.path.exists(ds):
            with open(ds) as f:
                info[c] = {"ds": f.read()}
    netns = subprocess.run(["unshare", "-n", "true"], stderr=subprocess.DEVNULL).returncode == 0
    serial = int(time.time() * 10) % 2**31
    write_zone(w, zone, row["sign"], src.get("records", []), names, info, serial, netns)
    with open(w.path("nsd", "nsd.pid")) as f:
        os.kill(int(f.read().split()[0]), signal.SIGHUP)
    deadline = time.time() + 10
    while soa_serial(w.ports["nsd"], zone) != serial:
        if time.time() > deadline:
            raise WorldError("flip: nsd did not load serial %d of %s" % (serial, zone))
        time.sleep(0.05)
    if "sts" in src:
        mods = {m.__name__: m for m in pieces()}
        if "https" in mods:
            sts = dict(src["sts"])
            for k, v in (("server", "nginx"), ("cert", "web"), ("status", 200),
                         ("content_type", "text/plain"), ("transfer", "length")):
                sts.setdefault(k, v)
            mods["https"].write_policy(w, row, sts)
    print("flip: %s is now %s (zone serial %d)" % (name, state, serial))


def main(argv):
    if len(argv) >= 3 and argv[1] == "start":
        table = DEFAULT_TABLE
        if len(argv) == 5 and argv[3] == "--table":
            table = argv[4]
        start(World(argv[2], table))
    elif len(argv) in (4, 5) and argv[1] == "flip":
        w = World(argv[2])
        w.load_env()
        flip(w, argv[3], argv[4] if len(argv) == 5 else "after")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    sys.modules["world"] = sys.modules["__main__"]  # piece modules `import world`: same module
    try:
        main(sys.argv)
    except WorldError as e:
        sys.exit("world: %s" % e)
