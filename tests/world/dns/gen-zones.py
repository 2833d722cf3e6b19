#!/usr/bin/python3
"""Generate a DNSSEC-signed fake DNS tree ('.' -> 'test.' -> children) for the test world.

Usage: gen-zones.py OUTDIR

Writes into OUTDIR:
  zones/<zone>.zone          zone files served by nsd (signed or not, see ZONES)
  keys/                      dnssec-keygen key files
  anchor.ds                  DS of the fake root KSK, zone-file format (getdns -f, unbound)
  anchor.key                 DNSKEY of the fake root KSK, zone-file format
  zones.list                 "<zone> <zonefile>" per line, for the nsd/unbound configs

Standard library only.  Signing tools never resolve names: dnssec-signzone is run with no
network checks, and (when possible) inside `unshare -n` so no packet can leave at all.
"""
import os
import shutil
import subprocess
import sys

TTL = 300
ALG = "ECDSAP256SHA256"
# 64 hex digits, DANE-EE SPKI SHA-256 (placeholder; the SMTP half will put the real one here).
TLSA_HEX = "8cb0fc6c527506a053f4f14c8464bebbd6dede2738d11468dd953d7d6a3021f1"

# ---------------------------------------------------------------------------------------------
# Scenario table.  One entry per zone.  "sign" is one of:
#   "ok"       signed, DS in parent                      -> SECURE
#   "none"     unsigned, no DS in parent                  -> INSECURE
#   "expired"  signed with RRSIGs valid only in Jan 2020, DS in parent -> BOGUS
#   "badds"    signed, but the parent's DS matches no key of the zone   -> BOGUS
# Parents must appear before their children.  Records are zone-file lines relative to the
# zone origin; NS/SOA/DNSKEY/DS/glue are added by the generator.
# ---------------------------------------------------------------------------------------------
ZONES = [
    (".", "ok", []),
    ("test.", "ok", []),
    # Secure domain with DANE: signed MX, A, TLSA.
    ("secure.test.", "ok", [
        "@ MX 10 mx.secure.test.",
        "mx A 127.0.0.1",
        "_25._tcp.mx TLSA 3 1 1 " + TLSA_HEX,
    ]),
    # Insecure (unsigned, no DS) delegation.
    ("insecure.test.", "none", [
        "@ MX 10 mx.insecure.test.",
        "mx A 127.0.0.1",
        "_25._tcp.mx TLSA 3 1 1 " + TLSA_HEX,
    ]),
    # Bogus: expired signatures.
    ("bogus.test.", "expired", [
        "@ MX 10 mx.bogus.test.",
        "mx A 127.0.0.1",
        "_25._tcp.mx TLSA 3 1 1 " + TLSA_HEX,
    ]),
    # Bogus: DS in parent matches no key.
    ("badds.test.", "badds", [
        "@ MX 10 mx.badds.test.",
        "mx A 127.0.0.1",
    ]),
    # Null MX (RFC 7505), signed.
    ("nullmx.test.", "ok", [
        "@ MX 0 .",
    ]),
    # Secure MX set whose host lives in the insecure zone.
    ("smartmx.test.", "ok", [
        "@ MX 10 mx.insecure.test.",
    ]),
]


def run(cmd, cwd, netns):
    if netns:
        cmd = ["unshare", "-n"] + cmd
    r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.stderr.write("gen-zones: %s failed (%d)\n%s%s" % (" ".join(cmd), r.returncode,
                                                               r.stdout, r.stderr))
        sys.exit(1)
    return r.stdout


def fname(zone):
    return "root" if zone == "." else zone.rstrip(".")


def parent_of(zone):
    if zone == ".":
        return None
    rest = zone.split(".", 1)[1]
    return rest if rest else "."


def keygen(keydir, zone, ksk, netns):
    cmd = ["dnssec-keygen", "-q", "-K", keydir, "-a", ALG, "-n", "ZONE", "-L", str(TTL)]
    if ksk:
        cmd += ["-f", "KSK"]
    return run(cmd + [zone], keydir, netns).strip()  # key base name, e.g. Ktest.+013+12345


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen-zones.py OUTDIR")
    out = os.path.abspath(sys.argv[1])
    netns = subprocess.run(["unshare", "-n", "true"], stderr=subprocess.DEVNULL).returncode == 0
    zdir, kdir, wdir = (os.path.join(out, d) for d in ("zones", "keys", "work"))
    for d in (zdir, kdir, wdir):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)

    names = [z[0] for z in ZONES]
    children = {z: [c for c in names if parent_of(c) == z] for z in names}
    info = {z: {"sign": s, "records": r} for z, s, r in ZONES}

    # Keys first (a parent needs its children's DS).
    for z in names:
        if info[z]["sign"] == "none":
            continue
        info[z]["ksk"] = keygen(kdir, z, True, netns)
        info[z]["zsk"] = keygen(kdir, z, False, netns)
        if info[z]["sign"] == "badds":
            # A key that is never published: the parent gets its DS.
            stray = os.path.join(wdir, "stray-" + fname(z))
            os.makedirs(stray)
            k = keygen(stray, z, True, netns)
            info[z]["ds"] = run(["dnssec-dsfromkey", "-2", os.path.join(stray, k + ".key")],
                                wdir, netns)
        else:
            info[z]["ds"] = run(["dnssec-dsfromkey", "-2",
                                 os.path.join(kdir, info[z]["ksk"] + ".key")], wdir, netns)

    serial = "1"
    for z in names:
        lines = ["$ORIGIN %s" % z, "$TTL %d" % TTL,
                 "@ SOA ns.%s hostmaster.%s %s 3600 600 86400 %d" % (
                     z if z != "." else "", z if z != "." else "", serial, TTL)]
        nsname = "ns." + (z if z != "." else "")
        lines += ["@ NS %s" % nsname, "%s A 127.0.0.1" % nsname]
        for c in children[z]:
            cns = "ns." + c
            lines += ["%s NS %s" % (c, cns), "%s A 127.0.0.1" % cns]
            if info[c]["sign"] != "none":
                lines += [info[c]["ds"].strip()]
        lines += info[z]["records"]
        src = os.path.join(wdir, fname(z) + ".zone")
        with open(src, "w") as f:
            f.write("\n".join(lines) + "\n")
        dst = os.path.join(zdir, fname(z) + ".zone")
        mode = info[z]["sign"]
        if mode == "none":
            shutil.copy(src, dst)
            continue
        cmd = ["dnssec-signzone", "-q", "-S", "-K", kdir, "-o", z, "-f", dst,
               "-a", "-O", "text"]
        if mode == "expired":
            cmd += ["-s", "20200101000000", "-e", "20200201000000", "-P"]
        run(cmd + [src], wdir, netns)

    ksk = os.path.join(kdir, info["."]["ksk"] + ".key")
    with open(os.path.join(out, "anchor.ds"), "w") as f:
        f.write(info["."]["ds"])
    with open(ksk) as f, open(os.path.join(out, "anchor.key"), "w") as g:
        g.write("".join(l for l in f if not l.startswith(";")))
    with open(os.path.join(out, "zones.list"), "w") as f:
        for z in names:
            f.write("%s %s\n" % (z, os.path.join(zdir, fname(z) + ".zone")))
    print("gen-zones: %d zones in %s (netns isolation: %s)" % (len(names), zdir,
                                                                 "yes" if netns else "no"))


if __name__ == "__main__":
    main()
