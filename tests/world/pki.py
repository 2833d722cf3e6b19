"""Throwaway certificate authorities and certificates for the test world (certtool, ECDSA P-256).

Pki(dir) creates, on first use, the CAs in CAS and then any certificate asked for by issue().
Every file lives under dir:  NAME.key  NAME.pem (certificate)  NAME.chain.pem (certificate,
then its issuing CA, for servers to present).  digest() gives the hex values TLSA records use.
Standard library plus the certtool command-line tool; no network.
"""
import hashlib
import os
import re
import ssl
import subprocess

# name -> common name.  dane-ca issues SMTP certificates (DANE-TA records point at it); web-ca
# is the "browser-like" root the daemon trusts for MTA-STS (mta_sts.ca_file); rogue-ca is
# trusted by nobody.
CAS = {
    "dane-ca": "tlspolicyd test DANE TA",
    "web-ca": "tlspolicyd test web PKI root",
    "rogue-ca": "tlspolicyd test rogue CA",
}


def _run(argv):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError("pki: %s failed (%d): %s" % (" ".join(argv), r.returncode, r.stderr))
    return r.stdout


def _pem_blocks(text):
    return re.findall(r"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----\n?", text, re.S)


class Pki:
    def __init__(self, directory):
        self.dir = os.path.abspath(directory)
        os.makedirs(self.dir, exist_ok=True)
        self._serial = 1
        self._digests = {}
        for name, cn in CAS.items():
            if not os.path.exists(self.cert(name)):
                self._make_ca(name, cn)

    # ---- paths -------------------------------------------------------------------------------
    def key(self, name):
        return os.path.join(self.dir, name + ".key")

    def cert(self, name):
        return os.path.join(self.dir, name + ".pem")

    def chain(self, name):
        """Leaf followed by its issuing CA (a self-signed or CA certificate: just itself)."""
        return os.path.join(self.dir, name + ".chain.pem")

    # ---- making ------------------------------------------------------------------------------
    def _template(self, name, lines):
        path = os.path.join(self.dir, name + ".tmpl")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def _newkey(self, name):
        _run(["certtool", "--generate-privkey", "--key-type", "ecdsa", "--outfile",
              self.key(name)])

    def _make_ca(self, name, cn):
        self._newkey(name)
        tmpl = self._template(name, ['cn = "%s"' % cn, "ca", "cert_signing_key",
                                     "crl_signing_key", "expiration_days = 3650",
                                     "serial = %d" % self._next_serial()])
        _run(["certtool", "--generate-self-signed", "--load-privkey", self.key(name),
              "--template", tmpl, "--outfile", self.cert(name)])
        with open(self.cert(name)) as f, open(self.chain(name), "w") as g:
            g.write(f.read())

    def _next_serial(self):
        self._serial += 1
        return self._serial + os.getpid() % 1000 * 1000

    def issue(self, name, names, issuer, expired=False):
        """Make certificate NAME for DNS names NAMES, signed by CA ISSUER (or "self").
        expired: valid only in January 2020.  Returns the certificate path."""
        if not names:
            raise ValueError("pki: certificate %s needs at least one name" % name)
        if issuer != "self" and issuer not in CAS:
            raise ValueError("pki: certificate %s: unknown issuer %r" % (name, issuer))
        self._newkey(name)
        lines = ['cn = "%s"' % names[0]] + ['dns_name = "%s"' % n for n in names]
        lines += ["tls_www_server", "signing_key", "encryption_key",
                  "serial = %d" % self._next_serial()]
        if expired:
            lines += ['activation_date = "2020-01-01 00:00:00 UTC"',
                      'expiration_date = "2020-02-01 00:00:00 UTC"']
        else:
            lines += ["expiration_days = 365"]
        tmpl = self._template(name, lines)
        if issuer == "self":
            _run(["certtool", "--generate-self-signed", "--load-privkey", self.key(name),
                  "--template", tmpl, "--outfile", self.cert(name)])
            ca_pem = ""
        else:
            _run(["certtool", "--generate-certificate", "--load-privkey", self.key(name),
                  "--load-ca-certificate", self.cert(issuer), "--load-ca-privkey",
                  self.key(issuer), "--template", tmpl, "--outfile", self.cert(name)])
            with open(self.cert(issuer)) as f:
                ca_pem = "".join(_pem_blocks(f.read()))
        with open(self.cert(name)) as f:
            leaf = "".join(_pem_blocks(f.read()))
        with open(self.chain(name), "w") as g:
            g.write(leaf + ca_pem)
        return self.cert(name)

    # ---- digests for TLSA --------------------------------------------------------------------
    def der(self, name):
        with open(self.cert(name)) as f:
            return ssl.PEM_cert_to_DER_cert(_pem_blocks(f.read())[0])

    def spki(self, name):
        """The DER SubjectPublicKeyInfo: the 7th element of TBSCertificate (with the explicit
        [0] version, which every certificate made here has).  Parsed here rather than by
        `openssl x509 -pubkey`, whose start-up cost, once per TLSA macro, was most of the
        zone generation time."""
        der = self.der(name)
        i, _ = _tlv(der, 0, 0x30, inside=True)         # Certificate
        i, _ = _tlv(der, i, 0x30, inside=True)         # TBSCertificate
        for tag in (0xA0, 0x02, 0x30, 0x30, 0x30, 0x30):  # version serial sigalg issuer
            i, _ = _tlv(der, i, tag)                   # validity subject
        end, start = _tlv(der, i, 0x30)
        return der[start:end]

    def digest(self, kind, name):
        """kind: sha256-spki | sha256-cert | sha512-spki | sha512-cert -> lowercase hex."""
        key = (kind, name, os.path.getmtime(self.cert(name)))
        if key not in self._digests:
            algo, what = kind.split("-", 1)
            data = self.spki(name) if what == "spki" else self.der(name)
            self._digests[key] = hashlib.new(algo, data).hexdigest()
        return self._digests[key]


def _tlv(der, i, tag, inside=False):
    """DER element at I with TAG: (index after it, or of its content if INSIDE; its start)."""
    if der[i] != tag:
        raise ValueError("pki: DER tag %#x at %d, expected %#x" % (der[i], i, tag))
    n, j = der[i + 1], i + 2
    if n & 0x80:
        k = n & 0x7F
        n, j = int.from_bytes(der[j:j + k], "big"), j + k
    return (j if inside else j + n), i
