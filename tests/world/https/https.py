"""HTTPS piece of the test world: the MTA-STS policy hosts mta-sts.<domain>.

Every scenario row with an `sts = {...}` fragment gets one policy host:
  server "nginx"   -> one nginx virtual host (SNI) on world.NGINX_ADDR:<https port>
  server "hostile" -> an entry of hostile.py (scripted, SNI) on world.HOSTILE_ADDR:<https port>
Files (all under WORLD/https): nginx.conf, vhosts/ROW.conf, www/ROW/policy (the served body),
hostile.json, logs/, tmp/, nginx.pid.  Certificates are made by w.pki as "https-ROW-CERTKIND".

Module contract (called by world.py): generate(w), start(w), wait_ready(w, deadline), env(w),
check(w, row[, sts]); for `flip`: write_policy(w, row, sts).  Standard library only.
"""
import concurrent.futures
import json
import os
import pwd
import grp
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def _world_module():
    """world.py itself when it is the running script (so that our WorldError is the one its
    main() catches), else the importable module."""
    main = sys.modules.get("__main__")
    if os.path.basename(getattr(main, "__file__", None) or "") == "world.py":
        return main
    import world as mod
    return mod


world = _world_module()

PATH = "/.well-known/mta-sts.txt"
DEFAULTS = {"server": "nginx", "cert": "web", "status": 200, "content_type": "text/plain",
            "transfer": "length"}
CERT_KINDS = ("web", "rogue", "wrong-name", "expired")
TRANSFERS = ("length", "chunked", "close")
BEHAVIOURS = ("slow-body", "header-flood")
WRONG_NAME = "mta-sts.wrong.test"
# A string no served body contains: sub_filter with it changes nothing but makes nginx drop
# Content-Length (so HTTP/1.1 responses go out chunked, or close-delimited without chunking).
NEVER = "@@tlspolicyd-world-never-matches@@"
X509_V_FLAG_NO_CHECK_TIME = 0x200000
# OpenSSL verify codes that mean "intended failure" per cert kind
WANT_ERROR = {
    "rogue": {2: "unable to get issuer certificate", 19: "self-signed certificate in chain",
              20: "unable to get local issuer certificate"},
    "wrong-name": {62: "hostname mismatch"},
    "expired": {10: "certificate has expired"},
}
IO_TIMEOUT = 3.0       # per socket operation in checks
SLOW_WINDOW = 2.0      # seconds the slow checks watch a hostile server

_procs = {}            # label -> Popen (start() / wait_ready() in the same process)
_slow = {}             # _slow_key() -> Future of a slow (hostile) check
_slow_started = set()  # keys submitted once (a second check of the row runs synchronously)
_slow_lock = threading.Lock()  # check() may be called from several threads
_pool = None


# ---- the fragment ---------------------------------------------------------------------------

def fragment(sts):
    """The sts fragment with defaults filled in (after = {sts = ...} has none), validated."""
    s = dict(DEFAULTS)
    s.update(sts)
    if s["server"] not in ("nginx", "hostile"):
        raise world.WorldError("sts server %r: nginx or hostile" % s["server"])
    if s["cert"] not in CERT_KINDS:
        raise world.WorldError("sts cert %r: one of %s" % (s["cert"], ", ".join(CERT_KINDS)))
    if s["transfer"] not in TRANSFERS:
        raise world.WorldError("sts transfer %r: one of %s" % (s["transfer"],
                                                             ", ".join(TRANSFERS)))
    if "body" in s and "body_size" in s:
        raise world.WorldError("sts: body and body_size exclude each other")
    if "behaviour" in s and (s["server"] != "hostile" or s["behaviour"] not in BEHAVIOURS):
        raise world.WorldError("sts behaviour %r: hostile server only, one of %s"
                               % (s["behaviour"], ", ".join(BEHAVIOURS)))
    st = s["status"]
    if not isinstance(st, int) or not 200 <= st <= 599:
        raise world.WorldError("sts status %r: 200..599" % st)
    if 300 <= st < 400 and "location" not in s:
        raise world.WorldError("sts status %d needs location" % st)
    return s


def _row_fragment(row, sts):
    try:
        return fragment(sts)
    except world.WorldError as e:
        raise world.WorldError("scenario %s: %s" % (row["name"], e)) from None


def padding(n):
    """N bytes of printable padding text (lines of 64 bytes)."""
    line = b"padding-text 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKL\n"
    return (line * (n // len(line) + 1))[:n]


def body_bytes(s):
    if "body_size" in s:
        return padding(int(s["body_size"]))
    return s.get("body", "").encode("utf-8")


def host(row):
    return "mta-sts." + row["domain"].lower()


def cert_name(row, s):
    return "https-%s-%s" % (row["name"], s["cert"])


def ensure_cert(w, row, s):
    name = cert_name(row, s)
    if not (os.path.exists(w.pki.chain(name)) and os.path.exists(w.pki.key(name))):
        kind = s["cert"]
        names = [WRONG_NAME] if kind == "wrong-name" else [host(row)]
        issuer = "rogue-ca" if kind == "rogue" else "web-ca"
        w.pki.issue(name, names, issuer, expired=(kind == "expired"))
    return w.pki.chain(name), w.pki.key(name)


def sts_rows(w):
    return [r for r in w.table["scenario"] if "sts" in r]


# ---- generation -----------------------------------------------------------------------------

def _q(v):
    """An nginx quoted string."""
    return '"%s"' % str(v).replace("\\", "\\\\").replace('"', '\\"')


def nginx_conf(w):
    d = w.path("https")
    user = ""
    if os.geteuid() == 0:  # workers must read the world dir whatever its mode (mkdtemp: 0700)
        user = "user %s %s;\n" % (pwd.getpwuid(0).pw_name, grp.getgrgid(0).gr_name)
    return """# nginx for the test world's MTA-STS policy hosts (generated by tests/world/https)
# run: nginx -p {d}/ -c {d}/nginx.conf -e {d}/logs/error.log -g 'daemon off;'
{user}worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log notice;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/logs/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    types {{ }}
    default_type text/plain;
    server_tokens off;
    etag off;
    if_modified_since off;
    keepalive_timeout 5s;
    ssl_protocols TLSv1.2 TLSv1.3;
    # unknown SNI (or none): the handshake is refused
    server {{
        listen {addr}:{port} ssl default_server;
        ssl_reject_handshake on;
    }}
    include {d}/vhosts/*.conf;
}}
""".format(d=d, user=user, addr=world.NGINX_ADDR, port=w.ports["https"])


def vhost_conf(w, row, s, chain, key):
    d = w.path("https")
    root = os.path.join(d, "www", row["name"])
    lines = ["# scenario %s: sts = %s" % (row["name"], json.dumps(
                {k: v for k, v in s.items() if k != "body"}, sort_keys=True)),
             "server {",
             "    listen %s:%d ssl;" % (world.NGINX_ADDR, w.ports["https"]),
             "    server_name %s;" % host(row),
             "    ssl_certificate %s;" % chain,
             "    ssl_certificate_key %s;" % key,
             "    default_type %s;" % _q(s["content_type"]),
             "    access_log %s/logs/access.log;" % d]
    if s["transfer"] in ("chunked", "close"):
        # unknown length: HTTP/1.1 gets chunked; with chunking off, nginx ends by closing
        lines += ["    sub_filter_types *;",
                  "    sub_filter %s %s;" % (_q(NEVER), _q(NEVER))]
    if s["transfer"] == "close":
        lines.append("    chunked_transfer_encoding off;")
    st = s["status"]
    lines.append("    location = %s {" % PATH)
    if st == 200:
        lines.append("        alias %s/policy;" % root)
    else:
        # return sets the status (and Location for 3xx); error_page then serves our body
        # with that status instead of nginx's built-in page.
        lines.append("        return %d%s;" % (st, " " + _q(s["location"])
                                                 if 300 <= st < 400 else ""))
    lines.append("    }")
    if st != 200:
        lines += ["    error_page %d /_world_policy_body;" % st,
                  "    location = /_world_policy_body {",
                  "        internal;",
                  "        alias %s/policy;" % root,
                  "    }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _write_if_changed(path, data):
    """Atomic write; True when the content changed."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except FileNotFoundError:
        pass
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return True


def _hostile_entry(w, row, s, chain, key):
    e = {"row": row["name"], "chain": chain, "key": key, "status": s["status"],
         "content_type": s["content_type"], "transfer": s["transfer"],
         "behaviour": s.get("behaviour", "normal"),
         "body": body_bytes(s).decode("latin-1")}
    if "location" in s:
        e["location"] = s["location"]
    return e


def _hostile_conf(w):
    try:
        with open(w.path("https", "hostile.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"addr": world.HOSTILE_ADDR, "port": w.ports["https"], "hosts": {}}


def _running(w, label):
    """PID of the live server LABEL of this world (from WORLD/pids), or None."""
    try:
        with open(w.path("pids")) as f:
            entries = [l.split() for l in f if l.strip()]
    except FileNotFoundError:
        return None
    for e in entries:
        if len(e) >= 3 and e[2] == label:
            try:
                exe = os.path.basename(os.readlink("/proc/%s/exe" % e[0]))
            except OSError:
                continue
            if exe == e[1]:
                return int(e[0])
    return None


def _children(pid):
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d))
    return kids


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _reloads(w):
    """Lines 'reloaded' / 'reload of ... failed' in hostile.py's log."""
    try:
        with open(w.path("https", "logs", "hostile.log"), "rb") as f:
            return sum(1 for l in f if b" hostile: reload" in l)
    except FileNotFoundError:
        return 0


def write_policy(w, row, sts):
    """(Re)write what ROW's policy host serves according to fragment STS.  The body file is
    replaced atomically (live at once: nginx reads it per request).  When the server side
    changes too (status, type, transfer, certificate, server), the vhost / hostile.json is
    rewritten and a running nginx / hostile.py is sent SIGHUP; then this waits (5 s at most)
    until the running server serves the new fragment.  Returns the filled-in fragment."""
    s = _row_fragment(row, sts)
    chain, key = ensure_cert(w, row, s)
    root = w.path("https", "www", row["name"])
    os.makedirs(root, exist_ok=True)
    _write_if_changed(os.path.join(root, "policy"), body_bytes(s))
    vhost = w.path("https", "vhosts", row["name"] + ".conf")
    hconf = _hostile_conf(w)
    hosts = hconf["hosts"]
    if s["server"] == "nginx":
        reload_nginx = _write_if_changed(vhost, vhost_conf(w, row, s, chain, key))
        reload_hostile = hosts.pop(host(row), None) is not None
    else:
        reload_nginx = os.path.exists(vhost)
        if reload_nginx:
            os.unlink(vhost)
        entry = _hostile_entry(w, row, s, chain, key)
        reload_hostile = hosts.get(host(row)) != entry
        hosts[host(row)] = entry
    if reload_hostile:
        _write_if_changed(w.path("https", "hostile.json"), json.dumps(hconf, indent=1))
    changed = False
    deadline = time.time() + 5
    nginx_pid = _running(w, "nginx") if reload_nginx else None
    if nginx_pid:
        r = _nginx_test(w)
        if r.returncode != 0:
            raise world.WorldError("https %s: new nginx configuration rejected:\n%s"
                                   % (row["name"], r.stderr))
        old = _children(nginx_pid)
        os.kill(nginx_pid, signal.SIGHUP)
        # Until the old workers are gone they still accept connections with the old
        # configuration, so one good answer would prove nothing: wait for them first.
        while any(_alive(p) for p in old):
            if time.time() > deadline:
                raise world.WorldError("https %s: nginx workers %s did not exit after SIGHUP "
                                       "(see %s)" % (row["name"], old,
                                                     w.path("https", "logs", "error.log")))
            time.sleep(0.02)
        changed = True
    hostile_pid = _running(w, "hostile") if reload_hostile else None
    if hostile_pid:
        # one process: once it has logged the reload, every new connection sees it
        before = _reloads(w)
        os.kill(hostile_pid, signal.SIGHUP)
        while _reloads(w) <= before:
            if time.time() > deadline:
                raise world.WorldError("https %s: hostile.py did not reload (see %s)"
                                       % (row["name"], w.path("https", "logs", "hostile.log")))
            time.sleep(0.02)
        changed = True
    elif reload_hostile and s["server"] == "hostile" and _running(w, "nginx"):
        raise world.WorldError("https %s: hostile.py is not running in this world (it starts "
                               "only when a row has server = \"hostile\")" % row["name"])
    if changed and s.get("behaviour") is None:
        while True:
            res = _check_now(w, row, s)
            if all(ok for ok, _ in res):
                break
            if time.time() > deadline:
                raise world.WorldError("https %s: server did not take the new policy: %s"
                                       % (row["name"], "; ".join(m for _, m in res)))
            time.sleep(0.1)
    return s


def generate(w):
    d = w.path("https")
    for sub in ("vhosts", "www", "logs", "tmp"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    for old in os.listdir(os.path.join(d, "vhosts")):
        os.unlink(os.path.join(d, "vhosts", old))
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(nginx_conf(w))
    hconf = {"addr": world.HOSTILE_ADDR, "port": w.ports["https"], "hosts": {}}
    seen = {}
    for row in sts_rows(w):
        dom = row["domain"].lower()
        if dom in seen:
            raise world.WorldError("scenarios %s and %s: two sts fragments for %s"
                                   % (seen[dom], row["name"], dom))
        seen[dom] = row["name"]
        s = _row_fragment(row, row["sts"])
        chain, key = ensure_cert(w, row, s)
        root = os.path.join(d, "www", row["name"])
        os.makedirs(root, exist_ok=True)
        _write_if_changed(os.path.join(root, "policy"), body_bytes(s))
        if s["server"] == "nginx":
            _write_if_changed(os.path.join(d, "vhosts", row["name"] + ".conf"),
                              vhost_conf(w, row, s, chain, key))
        else:
            hconf["hosts"][host(row)] = _hostile_entry(w, row, s, chain, key)
    with open(os.path.join(d, "hostile.json"), "w") as f:
        json.dump(hconf, f, indent=1)
    r = _nginx_test(w)
    if r.returncode != 0:
        raise world.WorldError("nginx -t failed for %s/nginx.conf:\n%s" % (d, r.stderr))


def _nginx_argv(w, *extra):
    d = w.path("https")
    return ["nginx", "-p", d + "/", "-c", os.path.join(d, "nginx.conf"),
            "-e", os.path.join(d, "logs", "error.log")] + list(extra)


def _nginx_test(w):
    return subprocess.run(_nginx_argv(w, "-t", "-q"), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _servers(w):
    """{label: (addr, a SNI name it serves)} for the servers this world needs."""
    out = {}
    for row in sts_rows(w):
        s = fragment(row["sts"])
        label = "nginx" if s["server"] == "nginx" else "hostile"
        out.setdefault(label, (world.sts_addr(s), host(row)))
    return out


# ---- running --------------------------------------------------------------------------------

def start(w):
    need = _servers(w)
    d = w.path("https")
    if "nginx" in need:
        _procs["nginx"] = w.spawn("nginx", _nginx_argv(w, "-g", "daemon off;"),
                                  os.path.join(d, "logs", "nginx.stdout.log"))
    if "hostile" in need:
        _procs["hostile"] = w.spawn("hostile", ["/usr/bin/python3", "-u",
                                                os.path.join(HERE, "hostile.py"),
                                                os.path.join(d, "hostile.json")],
                                    os.path.join(d, "logs", "hostile.log"))


def _handshake(addr, port, sni, timeout=1.0):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((addr, port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni):
            pass


def wait_ready(w, deadline):
    d = w.path("https")
    logs = {"nginx": "%s/logs/error.log, %s/logs/nginx.stdout.log" % (d, d),
            "hostile": "%s/logs/hostile.log" % d}
    for label, (addr, sni) in _servers(w).items():
        last = None
        while True:
            p = _procs.get(label)
            if p is not None and p.poll() is not None:
                raise world.WorldError("https: %s exited with status %s before accepting TLS "
                                       "(logs: %s)" % (label, p.returncode, logs[label]))
            try:
                _handshake(addr, w.ports["https"], sni)
                break
            except (OSError, ssl.SSLError) as e:
                last = e
            if time.time() > deadline:
                raise world.WorldError("https: %s does not accept TLS on %s:%d (SNI %s): %s "
                                       "(logs: %s)" % (label, addr, w.ports["https"], sni, last,
                                                       logs[label]))
            time.sleep(0.05)


def env(w):
    return {"NGINX_ADDR": world.NGINX_ADDR, "HOSTILE_ADDR": world.HOSTILE_ADDR,
            "ROGUE_CA": w.pki.cert("rogue-ca"), "HTTPS_DIR": w.path("https")}


# ---- checking -------------------------------------------------------------------------------

class Response:
    def __init__(self):
        self.status = None
        self.headers = []      # [(lower name, value)]
        self.body = b""
        self.transfer = None   # "length" | "chunked" | "close"
        self.peercert = None

    def header(self, name):
        for k, v in self.headers:
            if k == name:
                return v
        return None


def _context(cafile, check_hostname=True, no_time=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if no_time:
        ctx.verify_flags = ctx.verify_flags | X509_V_FLAG_NO_CHECK_TIME
    return ctx


def _connect(addr, port, sni, ctx):
    raw = socket.create_connection((addr, port), timeout=IO_TIMEOUT)
    try:
        tls = ctx.wrap_socket(raw, server_hostname=sni)
    except BaseException:
        raw.close()
        raise
    return tls


def _request(tls, sni, port):
    tls.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: tlspolicyd-world-check\r\n"
                 "Accept: */*\r\nConnection: close\r\n\r\n" % (PATH, sni, port)).encode())


def _read_head(tls, buf, limit=65536):
    while b"\r\n\r\n" not in buf:
        if len(buf) > limit:
            raise ValueError("no end of headers within %d bytes" % limit)
        chunk = tls.recv(16384)
        if not chunk:
            raise ValueError("connection closed inside headers (%d bytes)" % len(buf))
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def _parse_head(head, resp):
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError("bad status line %r" % lines[0])
    resp.status = int(parts[1])
    for l in lines[1:]:
        k, _, v = l.partition(":")
        resp.headers.append((k.strip().lower(), v.strip()))


def _fetch(addr, port, sni, ctx, limit=1 << 20):
    """Full GET; parses the framing strictly.  Returns Response."""
    resp = Response()
    with _connect(addr, port, sni, ctx) as tls:
        resp.peercert = tls.getpeercert()
        _request(tls, sni, port)
        head, rest = _read_head(tls, b"")
        _parse_head(head, resp)
        te = resp.header("transfer-encoding")
        cl = resp.header("content-length")
        buf = bytearray(rest)

        def more():
            chunk = tls.recv(65536)
            if not chunk:
                return False
            buf.extend(chunk)
            if len(buf) > limit + 65536:
                raise ValueError("body over %d bytes" % limit)
            return True

        if te is not None:
            if te.lower() != "chunked":
                raise ValueError("Transfer-Encoding %r" % te)
            resp.transfer = "chunked"
            body = bytearray()
            pos = 0
            while True:
                while b"\r\n" not in buf[pos:]:
                    if not more():
                        raise ValueError("EOF inside chunk size")
                eol = buf.index(b"\r\n", pos)
                size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
                pos = eol + 2
                while len(buf) < pos + size + 2:
                    if not more():
                        raise ValueError("EOF inside chunk")
                if size == 0:
                    break  # (no trailers from our servers)
                body += buf[pos:pos + size]
                if buf[pos + size:pos + size + 2] != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
                pos += size + 2
            resp.body = bytes(body)
        elif cl is not None:
            resp.transfer = "length"
            n = int(cl)
            while len(buf) < n:
                if not more():
                    raise ValueError("EOF after %d of %d body bytes" % (len(buf), n))
            resp.body = bytes(buf[:n])
        else:
            resp.transfer = "close"
            while more():
                pass
            resp.body = bytes(buf)
    return resp


def _describe(resp):
    s = "status %d %s %d bytes %s" % (resp.status, resp.header("content-type"),
                                      len(resp.body), resp.transfer)
    if resp.header("location"):
        s += " Location %s" % resp.header("location")
    return s


def _check_content(name, resp, s):
    """[(ok, msg)]: the response is what fragment S says."""
    want_body = body_bytes(s)
    bad = []
    if resp.status != s["status"]:
        bad.append("status, want %d" % s["status"])
    if resp.header("content-type") != s["content_type"]:
        bad.append("Content-Type, want %s" % s["content_type"])
    if resp.transfer != s["transfer"]:
        bad.append("transfer, want %s" % s["transfer"])
    if len(resp.body) != len(want_body):
        bad.append("body size, want %d" % len(want_body))
    elif resp.body != want_body:
        bad.append("body differs from the table")
    if 300 <= s["status"] < 400 and resp.header("location") != s.get("location"):
        bad.append("Location, want %s" % s.get("location"))
    msg = "https %s: %s" % (name, _describe(resp))
    if bad:
        msg += " -- wrong " + "; ".join(bad)
    return [(not bad, msg)]


def _cert_checks(w, row, s, addr, port):
    """For cert rogue / wrong-name / expired: strict verification fails for the intended
    reason, and passes with just that check relaxed.  Returns ([(ok, msg)], relaxed ctx)."""
    kind = s["cert"]
    sni = host(row)
    web = w.pki.cert("web-ca")
    out = []
    try:
        with _connect(addr, port, sni, _context(web)):
            pass
        out.append((False, "https %s: cert %s: verification against web-ca passed, want it "
                    "to fail (%s)" % (row["name"], kind, " / ".join(WANT_ERROR[kind].values()))))
    except ssl.SSLCertVerificationError as e:
        ok = e.verify_code in WANT_ERROR[kind]
        out.append((ok, "https %s: cert %s: web-ca verification fails: %s (%d)%s"
                    % (row["name"], kind, e.verify_message, e.verify_code,
                       "" if ok else " -- want " + " / ".join(WANT_ERROR[kind].values()))))
    except (OSError, ssl.SSLError) as e:
        out.append((False, "https %s: cert %s: strict handshake: %s" % (row["name"], kind, e)))
    if kind == "rogue":
        relaxed, what = _context(w.pki.cert("rogue-ca")), "verifies against rogue-ca"
    elif kind == "wrong-name":
        relaxed, what = _context(web, check_hostname=False), "verifies without name check"
    else:
        relaxed, what = _context(web, no_time=True), "verifies ignoring validity dates"
    try:
        with _connect(addr, port, sni, relaxed) as tls:
            cert = tls.getpeercert()
        names = [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]
        detail = "names %s, notAfter %s" % (",".join(names), cert.get("notAfter"))
        ok = True
        if kind == "wrong-name" and (sni in names or WRONG_NAME not in names):
            ok, detail = False, detail + " -- want only %s" % WRONG_NAME
        if kind == "expired":
            na = ssl.cert_time_to_seconds(cert["notAfter"])
            if na >= time.time():
                ok, detail = False, detail + " -- want a past notAfter"
        elif kind != "wrong-name" and sni not in names:
            ok, detail = False, detail + " -- want %s" % sni
        out.append((ok, "https %s: cert %s: %s (%s)" % (row["name"], kind, what, detail)))
    except (OSError, ssl.SSLError) as e:
        out.append((False, "https %s: cert %s: relaxed handshake (%s) fails: %s"
                    % (row["name"], kind, what, e)))
    return out, relaxed


def _read_window(tls, got, t0, bufsize, limit=None, stop=None):
    """Append what TLS sends to GOT until SLOW_WINDOW seconds after T0, EOF, LIMIT bytes, or
    STOP(got) is true; returns GOT.  A read timeout only ends the window."""
    while limit is None or len(got) < limit:
        left = SLOW_WINDOW - (time.monotonic() - t0)
        if left <= 0:
            break
        tls.settimeout(left)
        try:
            chunk = tls.recv(bufsize)
        except (socket.timeout, TimeoutError):
            break
        if not chunk:
            break
        got += chunk
        if stop is not None and stop(got):
            break
    return got


def _slow_body(w, row, s, addr, port, ctx):
    sni = host(row)
    name = row["name"]
    want = body_bytes(s)
    t0 = time.monotonic()
    try:
        with _connect(addr, port, sni, ctx) as tls:
            _request(tls, sni, port)
            head, rest = _read_head(tls, b"")
            resp = Response()
            _parse_head(head, resp)
            got = _read_window(tls, bytearray(rest), t0, 4096)
    except (OSError, ssl.SSLError, ValueError) as e:
        return [(False, "https %s: slow-body: %s" % (name, e))]
    secs = time.monotonic() - t0
    bad = []
    if resp.status != s["status"]:
        bad.append("status, want %d" % s["status"])
    if resp.header("content-type") != s["content_type"]:
        bad.append("Content-Type, want %s" % s["content_type"])
    if resp.header("content-length") != str(len(want)):
        bad.append("Content-Length, want %d" % len(want))
    if not 1 <= len(got) < 5:
        bad.append("want 1..4 body bytes in %.0f s" % SLOW_WINDOW)
    elif bytes(got) != want[:len(got)]:
        bad.append("body bytes differ from the table")
    msg = ("https %s: slow-body: status %d %s Content-Length %s, %d body bytes in %.1f s"
           % (name, resp.status, resp.header("content-type"), resp.header("content-length"),
              len(got), secs))
    if bad:
        msg += " -- wrong " + "; ".join(bad)
    return [(not bad, msg)]


def _header_flood(w, row, s, addr, port, ctx):
    sni = host(row)
    name = row["name"]
    t0 = time.monotonic()
    got = bytearray()
    try:
        with _connect(addr, port, sni, ctx) as tls:
            _request(tls, sni, port)
            got = _read_window(tls, got, t0, 16384, limit=1 << 20,
                               stop=lambda b: b"\r\n\r\n" in b or b"\n\n" in b)
    except (OSError, ssl.SSLError) as e:
        return [(False, "https %s: header-flood: %s" % (name, e))]
    secs = time.monotonic() - t0
    bad = []
    first = bytes(got.split(b"\r\n", 1)[0])
    if not first.startswith(b"HTTP/1.1 "):
        bad.append("status line %r" % first[:40])
    if b"\r\n\r\n" in got or b"\n\n" in got:
        bad.append("headers ended")
    if len(got) <= 4096:
        bad.append("want more than 4096 header bytes")
    msg = "https %s: header-flood: %d header bytes, %d lines, no end in %.1f s" % (
        name, len(got), got.count(b"\r\n"), secs)
    if bad:
        msg += " -- wrong " + "; ".join(bad)
    return [(not bad, msg)]


def _check_now(w, row, s):
    """All checks of one row against fragment S (filled), synchronously."""
    addr, port, sni = world.sts_addr(s), w.ports["https"], host(row)
    out = []
    if s["cert"] == "web":
        ctx = _context(w.pki.cert("web-ca"))
    else:
        cert_res, ctx = _cert_checks(w, row, s, addr, port)
        out += cert_res
    behaviour = s.get("behaviour")
    if behaviour == "slow-body":
        return out + _slow_body(w, row, s, addr, port, ctx)
    if behaviour == "header-flood":
        return out + _header_flood(w, row, s, addr, port, ctx)
    try:
        resp = _fetch(addr, port, sni, ctx)
    except ssl.SSLCertVerificationError as e:
        return out + [(False, "https %s: certificate: %s" % (row["name"], e.verify_message))]
    except (OSError, ssl.SSLError, ValueError) as e:
        return out + [(False, "https %s: GET https://%s:%d%s via %s: %s"
                       % (row["name"], sni, port, PATH, addr, e))]
    return out + _check_content(row["name"], resp, s)


def _slow_key(w, row, s):
    return (w.out, row["name"], json.dumps(s, sort_keys=True))


def _start_slow(w):
    """Start the slow (hostile-behaviour) checks of every row at once, in threads.
    Caller holds _slow_lock."""
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(max_workers=8,
                                                      thread_name_prefix="https-check")
    for r in sts_rows(w):
        try:
            s = fragment(r["sts"])
        except world.WorldError:
            continue  # reported by that row's own check
        key = _slow_key(w, r, s)
        if s.get("behaviour") and key not in _slow_started:
            _slow_started.add(key)
            _slow[key] = _pool.submit(_check_now, w, r, s)


def check(w, row, sts=None):
    """World check of ROW: [(ok, message)]; [] for rows without sts.  STS overrides the
    fragment checked (e.g. row["after"]["sts"] after a flip).  The slow checks (hostile
    behaviours, 2 s each) of all rows start together on the first call that needs one."""
    if sts is None:
        if "sts" not in row:
            return []
        sts = row["sts"]
    try:
        s = fragment(sts)
    except world.WorldError as e:
        return [(False, "https %s: %s" % (row["name"], e))]
    if "https" not in w.ports:
        return [(False, "https %s: no HTTPS_PORT in world.env" % row["name"])]
    if s.get("behaviour"):
        with _slow_lock:
            _start_slow(w)
            fut = _slow.pop(_slow_key(w, row, s), None)  # None: a changed fragment, or again
        if fut is not None:
            return fut.result()
    return _check_now(w, row, s)
