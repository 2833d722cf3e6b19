#!/usr/bin/python3
"""Check a running test world against the scenario table, row by row.

Usage: check-world.py WORLD [NAME...]     (WORLD as started by world.py; NAMEs limit the rows)
Prints "ok   ..." / "FAIL ..." per check and "world-check: N passed, M failed"; exit 1 on failure.

DNS: every "NAME TYPE STATUS" of a row's `dns` list is asked three times: with getdns (stub
mode, CD=1, validating itself against the fake root's anchor) through the resolver the daemon is
configured with (the front relay before unbound, see dns/failserver.py); with a plain query to
unbound (its own validation: AD bit, SERVFAIL for bogus; a timeout may show as SERVFAIL); and
with getdns straight at nsd (same DNSSEC status from the authoritative server alone).
HTTPS and SMTP rows are checked by the https/ and smtp/ piece modules.
"""
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import world  # noqa: E402

TIMEOUT_MS = 2000
TYPES = {"A": 1, "CNAME": 5, "MX": 15, "TXT": 16, "AAAA": 28, "TLSA": 52}
DNSSEC = {400: "secure", 401: "bogus", 402: "indeterminate", 403: "insecure"}


def getdns_json(text):
    """getdns_query -j output as JSON.  getdns prints binary data that looks printable as a
    string with DNS presentation escapes (\\DDD decimal, \\X for specials such as \\)), which
    JSON does not allow: replies_full (never used here) is dropped, the rest is re-escaped."""
    a, b = text.find('"replies_full":'), text.find(',"replies_tree":')
    if 0 <= a < b:
        text = text[:a] + text[b + 1:]

    def fix(m):
        e = m.group(2)
        if e.isdigit():
            return m.group(1) + "\\u%04x" % int(e)
        return m.group(1) + ("\\" + e if e in '"\\/bfnrtu' else e)
    return json.loads(re.sub(r'(?<!\\)((?:\\\\)*)\\(\d{3}|[^\d])', fix, text))


def getdns_view(env, name, qtype, server="RESOLVER"):
    """(status words, detail) as getdns sees NAME/QTYPE through the daemon's resolver (or
    straight at another server of world.env, e.g. NSD)."""
    argv = ["getdns_query", "-s", "@" + env[server], "-f", env["ANCHOR"], "-t",
            str(TIMEOUT_MS), "+dnssec_return_status", "+dnssec_return_all_statuses", "-j",
            name, qtype]
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=TIMEOUT_MS / 1000 + 5)
    except subprocess.TimeoutExpired:
        return "getdns-hang", "getdns_query did not return"
    try:
        d = getdns_json(r.stdout)
    except ValueError:
        return "unparsable", (r.stdout + r.stderr)[:200]
    if d.get("status") == 902 or not d.get("replies_tree"):
        return "timeout", "status %s" % d.get("status")
    rep = d["replies_tree"][0]
    rcode = rep["header"]["rcode"]
    if rcode == 2:
        return "servfail", "rcode 2"
    words = DNSSEC.get(rep.get("dnssec_status"), "status-%s" % rep.get("dnssec_status"))
    n = sum(1 for rr in rep.get("answer", []) if rr.get("type") == TYPES[qtype])
    if rcode == 3:
        words += " nxdomain"
    elif rcode == 0 and n == 0:
        words += " nodata"
    elif rcode != 0:
        words += " rcode-%d" % rcode
    links = sum(1 for rr in rep.get("answer", []) if rr.get("type") == 5)
    if links:
        words += " cname=%d" % links
    return words, "rcode %d, %d %s" % (rcode, n, qtype)


def unbound_view(env, name, qtype):
    """probe.py output: 'rcode=N ad=N answers=N', or 'timeout'."""
    r = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "dns", "probe.py"), "--query",
                        name, qtype, env["UNBOUND"]], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=10)
    return r.stdout.strip() if r.returncode == 0 else "timeout"


def unbound_agrees(want, got):
    """Does unbound's own validation fit the status the row wants?"""
    status = want.split()[0]
    m = re.match(r"rcode=(\d+) ad=(\d)", got)
    if status in ("timeout", "servfail"):
        return got == "timeout" or (m is not None and m.group(1) == "2")
    if m is None:
        return False
    rcode, ad = int(m.group(1)), int(m.group(2))
    if status == "bogus":
        return rcode == 2
    want_rcode = 3 if want.endswith("nxdomain") else 0
    return rcode == want_rcode and ad == (1 if status == "secure" else 0)


def dns_check(env, row, line, failure_zones):
    name, qtype, want = line.split(None, 2)
    got, detail = getdns_view(env, name, qtype)
    ub = unbound_view(env, name, qtype)
    if "cname=" not in want:  # CNAME links are compared only where the row counts them
        got = re.sub(r" cname=\d+", "", got)
    ok = got == want and unbound_agrees(re.sub(r" cname=\d+", "", want), ub)
    # The authoritative server alone (getdns builds and validates the chain itself): same
    # DNSSEC status.  Not for resolver outcomes (servfail, timeout: a CNAME loop is data to
    # nsd) nor for names nsd only refers elsewhere (failure delegations).
    auth = "-"
    fqdn = name.lower().rstrip(".") + "."
    if want.split()[0] in ("secure", "insecure", "bogus") and \
            not any(fqdn == z or fqdn.endswith("." + z) for z in failure_zones):
        auth = getdns_view(env, name, qtype, "NSD")[0]
        ok = ok and auth.split()[0] == want.split()[0]
    return ok, "dns %s: %s %s: getdns %s (%s), unbound %s, nsd alone %s; want %s" % (
        row["name"], name, qtype, got, detail, ub, auth, want)


def txt_of(env, name):
    r = subprocess.run(["getdns_query", "-s", "@" + env["RESOLVER"], "-j", name, "TXT"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
    try:
        rep = getdns_json(r.stdout)["replies_tree"][0]
    except (ValueError, KeyError, IndexError):
        return []
    return sorted(b"".join(bytes(x) if isinstance(x, list) else x.encode()
                           for x in rr["rdata"]["txt_strings"]).decode()
                  for rr in rep.get("answer", []) if rr.get("type") == 16)


def wanted_txt(w, row, records):
    """TXT strings the row's `_mta-sts` records publish (concatenated, quotes removed)."""
    out = []
    for line in records:
        if line.startswith("_mta-sts") and " TXT " in line:
            out.append("".join(re.findall(r'"([^"]*)"', line)))
    return sorted(out)


def flip_check(w, env, row, mods):
    """Rows with `after`: flip the world there and back; each time the resolver must show the
    new _mta-sts TXT within 5 s (TTL 1) and the policy server the new policy."""
    results = []
    name = "_mta-sts." + row["domain"] + "."
    for state, src in (("after", row["after"]), ("before", row)):
        r = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "world.py"), "flip", w.out,
                            row["name"], state], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        want = wanted_txt(w, row, src.get("records", []))
        deadline = time.time() + 5
        got = txt_of(env, name)
        while got != want and time.time() < deadline:
            time.sleep(0.1)
            got = txt_of(env, name)
        results.append((r.returncode == 0 and got == want,
                        "flip %s %s: TXT %s, want %s %s" % (row["name"], state, got, want,
                                                            r.stdout.strip())))
        if "sts" in src:
            shown = dict(row, sts=dict(row["sts"], **src["sts"]))
            for m in mods:
                results += [(ok, "flip %s %s: %s" % (row["name"], state, msg))
                            for ok, msg in m.check(w, shown)]
    return results


def sts_host_check(env, row):
    """The daemon finds the row's policy server through DNS: mta-sts.<domain> must resolve to
    the address that server listens on (with the DNSSEC status of the row's zone)."""
    host = "mta-sts." + row["domain"]
    r = subprocess.run(["getdns_query", "-s", "@" + env["RESOLVER"], "-f", env["ANCHOR"],
                        "+dnssec_return_status", "+dnssec_return_all_statuses", "-j", host, "A"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
    try:
        rep = getdns_json(r.stdout)["replies_tree"][0]
        got = (DNSSEC.get(rep.get("dnssec_status")),
               sorted(rr["rdata"]["ipv4_address"] for rr in rep["answer"] if rr["type"] == 1))
    except (ValueError, KeyError, IndexError):
        got = None
    status = {"ok": "secure", "none": "insecure"}.get(row.get("sign", "none"), "bogus")
    want = (status, [world.sts_addr(row["sts"])])
    return got == want, "dns %s: %s A %s, want %s" % (row["name"], host, got, want)


def coverage(rows):
    """Every row is checked against the world, itself or through a row for the same domain."""
    checked = {r["domain"] for r in rows if r.get("dns") or r.get("smtp") or r.get("sts")}
    return [(r["domain"] in checked, "table %s: has a world check" % r["name"]) for r in rows]


def zone_addresses(w):
    """Every address record the world serves is on loopback (nothing can leave the machine)."""
    bad = []
    for f in sorted(os.listdir(w.path("zones"))):
        with open(w.path("zones", f)) as z:
            for line in z:
                m = re.search(r"\sIN\s+(A|AAAA)\s+(\S+)", line)
                if m and not (m.group(2).startswith("127.") or m.group(2) == "::1"):
                    bad.append("%s: %s" % (f, line.strip()))
    return [(not bad, "zones: every A/AAAA record is on loopback%s" % (
        "" if not bad else ": " + "; ".join(bad[:3])))]


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    w = world.World(argv[1])
    env = w.load_env()
    rows = w.table["scenario"]
    if len(argv) > 2:
        rows = [r for r in rows if r["name"] in argv[2:]]
        if not rows:
            sys.exit("check-world: no such scenario")
    mods = world.pieces()
    with open(w.path("stubs.list")) as f:
        failure_zones = [z for z, server in (l.split() for l in f) if server != "nsd"]
    results = zone_addresses(w) + coverage(rows) if len(argv) == 2 else []
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        futs = []
        for row in rows:
            for line in row.get("dns", []):
                futs.append(pool.submit(dns_check, env, row, line, failure_zones))
            if "sts" in row:
                futs.append(pool.submit(sts_host_check, env, row))
            for m in mods:
                futs.append(pool.submit(m.check, w, row))
        for f in futs:
            r = f.result()
            results += r if isinstance(r, list) else [r]
    for row in rows:  # these change the world, so one at a time, after the rest
        if "after" in row:
            results += flip_check(w, env, row, mods)
    npass = sum(1 for ok, _ in results if ok)
    for ok, msg in sorted(results, key=lambda r: r[0], reverse=True):  # failures last
        print("%s %s" % ("ok  " if ok else "FAIL", msg))
    print("world-check: %d passed, %d failed" % (npass, len(results) - npass))
    return 0 if npass == len(results) and results else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
