// Table-driven tests for the certificate checks of `tlspolicy probe` (src/probe/verify.h):
// DANE-EE, DANE-TA, PKIX and describe_certificate, on chains generated here with GnuTLS.
#include "probe/verify.h"

#include <doctest/doctest.h>

#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include "gnutls_raii.h"
#include "got_want.h"

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

using namespace tlspolicy;

namespace {

using testutil::got_want;
using testutil::printable_ascii;

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

// ---------------------------------------------------------------------------------------------
// GnuTLS RAII

using testutil::AbsPrivkeyPtr;
using testutil::CrtPtr;
using testutil::Datum;
using testutil::PrivkeyPtr;
using testutil::PubkeyPtr;

// An ECDSA P-256 key, shared by the certificates that use it.
using Key = std::shared_ptr<std::remove_pointer_t<gnutls_x509_privkey_t>>;

Key make_key() {
    gnutls_x509_privkey_t raw = nullptr;
    REQUIRE(gnutls_x509_privkey_init(&raw) == GNUTLS_E_SUCCESS);
    Key key(raw, gnutls_x509_privkey_deinit);
    REQUIRE(gnutls_x509_privkey_generate(raw, GNUTLS_PK_ECDSA,
                                         GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1),
                                         0) == GNUTLS_E_SUCCESS);
    return key;
}

// The DER SubjectPublicKeyInfo of a private key, by the private key route (never through a
// certificate, unlike the module).
std::string spki_of_key(const Key& key) {
    gnutls_privkey_t raw_priv = nullptr;
    REQUIRE(gnutls_privkey_init(&raw_priv) == GNUTLS_E_SUCCESS);
    AbsPrivkeyPtr priv(raw_priv);
    REQUIRE(gnutls_privkey_import_x509(raw_priv, key.get(), 0) == GNUTLS_E_SUCCESS);
    gnutls_pubkey_t raw_pub = nullptr;
    REQUIRE(gnutls_pubkey_init(&raw_pub) == GNUTLS_E_SUCCESS);
    PubkeyPtr pub(raw_pub);
    REQUIRE(gnutls_pubkey_import_privkey(raw_pub, raw_priv, 0, 0) == GNUTLS_E_SUCCESS);
    Datum der;
    REQUIRE(gnutls_pubkey_export2(raw_pub, GNUTLS_X509_FMT_DER, &der.d) == GNUTLS_E_SUCCESS);
    return der.str();
}

CrtPtr import_der(const std::string& der) {
    gnutls_x509_crt_t raw = nullptr;
    REQUIRE(gnutls_x509_crt_init(&raw) == GNUTLS_E_SUCCESS);
    CrtPtr crt(raw);
    const gnutls_datum_t d{reinterpret_cast<unsigned char*>(const_cast<char*>(der.data())),
                           static_cast<unsigned>(der.size())};
    REQUIRE(gnutls_x509_crt_import(raw, &d, GNUTLS_X509_FMT_DER) == GNUTLS_E_SUCCESS);
    return crt;
}

std::string pem_of(const std::string& der) {
    CrtPtr crt = import_der(der);
    Datum pem;
    REQUIRE(gnutls_x509_crt_export2(crt.get(), GNUTLS_X509_FMT_PEM, &pem.d) == GNUTLS_E_SUCCESS);
    return pem.str();
}

// ---------------------------------------------------------------------------------------------
// Certificates

const int64_t kNow = static_cast<int64_t>(std::time(nullptr));
constexpr int64_t kDay = 86400;

struct Spec {
    std::string dn;                // "CN=..."
    std::vector<std::string> dns;  // subjectAltName dNSName entries
    bool ca = false;               // basicConstraints CA, keyCertSign
    int64_t not_before = kNow - kDay, not_after = kNow + 30 * kDay;
    std::vector<std::string> eku;  // extended key usage OIDs (none: no extension)

    Spec dates(int64_t from, int64_t until) const {
        Spec s = *this;
        s.not_before = from;
        s.not_after = until;
        return s;
    }
    Spec purposes(std::vector<std::string> oids) const {
        Spec s = *this;
        s.eku = std::move(oids);
        return s;
    }
};
Spec leaf_spec(const std::string& cn, std::vector<std::string> dns) {
    Spec s;
    s.dn = "CN=" + cn;
    s.dns = std::move(dns);
    return s;
}
Spec ca_spec(const std::string& dn) {
    Spec s;
    s.dn = dn;
    s.ca = true;
    return s;
}

struct Cert {
    std::string der;
    Key key;  // the certificate's own key
};

unsigned next_serial = 1;

// Issues `spec` for `key`, signed by `issuer` (its DN becomes the issuer name) with
// `signer` (normally the issuer's key; another one forges a broken signature). Self-signed
// when issuer is null.
Cert issue(const Spec& spec, const Key& key, const Cert* issuer = nullptr,
           const Key& signer = nullptr) {
    gnutls_x509_crt_t raw = nullptr;
    REQUIRE(gnutls_x509_crt_init(&raw) == GNUTLS_E_SUCCESS);
    CrtPtr crt(raw);
    const unsigned serial = next_serial++;
    const unsigned char serial_bytes[] = {0x01, static_cast<unsigned char>(serial >> 8),
                                          static_cast<unsigned char>(serial)};
    REQUIRE(gnutls_x509_crt_set_version(raw, 3) == GNUTLS_E_SUCCESS);
    REQUIRE(gnutls_x509_crt_set_serial(raw, serial_bytes, sizeof serial_bytes) == GNUTLS_E_SUCCESS);
    REQUIRE(gnutls_x509_crt_set_activation_time(raw, static_cast<time_t>(spec.not_before)) ==
            GNUTLS_E_SUCCESS);
    REQUIRE(gnutls_x509_crt_set_expiration_time(raw, static_cast<time_t>(spec.not_after)) ==
            GNUTLS_E_SUCCESS);
    const char* err = nullptr;
    REQUIRE(gnutls_x509_crt_set_dn(raw, spec.dn.c_str(), &err) == GNUTLS_E_SUCCESS);
    for (const std::string& name : spec.dns)
        REQUIRE(gnutls_x509_crt_set_subject_alt_name(raw, GNUTLS_SAN_DNSNAME, name.data(),
                                                     static_cast<unsigned>(name.size()),
                                                     GNUTLS_FSAN_APPEND) == GNUTLS_E_SUCCESS);
    REQUIRE(gnutls_x509_crt_set_basic_constraints(raw, spec.ca ? 1 : 0, -1) == GNUTLS_E_SUCCESS);
    REQUIRE(gnutls_x509_crt_set_key_usage(
                raw, spec.ca ? GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN |
                                   GNUTLS_KEY_DIGITAL_SIGNATURE
                             : GNUTLS_KEY_DIGITAL_SIGNATURE) == GNUTLS_E_SUCCESS);
    for (const std::string& oid : spec.eku)
        REQUIRE(gnutls_x509_crt_set_key_purpose_oid(raw, oid.c_str(), 0) == GNUTLS_E_SUCCESS);
    REQUIRE(gnutls_x509_crt_set_key(raw, key.get()) == GNUTLS_E_SUCCESS);
    if (issuer == nullptr) {
        REQUIRE(gnutls_x509_crt_sign2(raw, raw, key.get(), GNUTLS_DIG_SHA256, 0) ==
                GNUTLS_E_SUCCESS);
    } else {
        CrtPtr issuer_crt = import_der(issuer->der);
        const Key& by = signer ? signer : issuer->key;
        REQUIRE(gnutls_x509_crt_sign2(raw, issuer_crt.get(), by.get(), GNUTLS_DIG_SHA256, 0) ==
                GNUTLS_E_SUCCESS);
    }
    Datum der;
    REQUIRE(gnutls_x509_crt_export2(raw, GNUTLS_X509_FMT_DER, &der.d) == GNUTLS_E_SUCCESS);
    return {der.str(), key};
}

// ---------------------------------------------------------------------------------------------
// An independent SubjectPublicKeyInfo: read from the certificate DER by hand
// (Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version, serialNumber, signature,
// issuer, validity, subject, subjectPublicKeyInfo, ... }, ... }).

struct Tlv {
    std::size_t start = 0, body = 0, end = 0;  // offsets: tag, contents, one past the end
    unsigned char tag = 0;
};

Tlv read_tlv(const std::string& der, std::size_t at) {
    REQUIRE(at + 2 <= der.size());
    Tlv t;
    t.start = at;
    t.tag = static_cast<unsigned char>(der[at]);
    std::size_t len = static_cast<unsigned char>(der[at + 1]);
    std::size_t pos = at + 2;
    if (len & 0x80) {
        const std::size_t n = len & 0x7f;
        REQUIRE(n >= 1);
        REQUIRE(n <= 3);
        len = 0;
        for (std::size_t i = 0; i < n; ++i) {
            REQUIRE(pos < der.size());
            len = (len << 8) | static_cast<unsigned char>(der[pos++]);
        }
    }
    t.body = pos;
    t.end = pos + len;
    REQUIRE(t.end <= der.size());
    return t;
}

std::string spki_by_hand(const std::string& cert_der) {
    const Tlv cert = read_tlv(cert_der, 0);
    REQUIRE(cert.tag == 0x30);
    const Tlv tbs = read_tlv(cert_der, cert.body);
    REQUIRE(tbs.tag == 0x30);
    std::size_t at = tbs.body;
    Tlv field = read_tlv(cert_der, at);
    if (field.tag == 0xa0) field = read_tlv(cert_der, field.end);  // skip [0] version
    // serialNumber, signature, issuer, validity, subject
    for (int i = 0; i < 5; ++i)
        field = read_tlv(cert_der, field.end);
    REQUIRE(field.tag == 0x30);
    return cert_der.substr(field.start, field.end - field.start);
}

// Digests: one shot, and piecewise through the incremental API (another code path).
std::string digest(gnutls_digest_algorithm_t alg, const std::string& data) {
    unsigned char out[64];
    REQUIRE(gnutls_hash_get_len(alg) <= sizeof out);
    REQUIRE(gnutls_hash_fast(alg, data.data(), data.size(), out) == GNUTLS_E_SUCCESS);
    return std::string(reinterpret_cast<const char*>(out), gnutls_hash_get_len(alg));
}

std::string digest_piecewise(gnutls_digest_algorithm_t alg, const std::string& data) {
    gnutls_hash_hd_t h = nullptr;
    REQUIRE(gnutls_hash_init(&h, alg) == GNUTLS_E_SUCCESS);
    for (std::size_t i = 0; i < data.size(); i += 7) {
        const std::size_t n = std::min<std::size_t>(7, data.size() - i);
        REQUIRE(gnutls_hash(h, data.data() + i, n) == GNUTLS_E_SUCCESS);
    }
    unsigned char out[64];
    gnutls_hash_deinit(h, out);
    return std::string(reinterpret_cast<const char*>(out), gnutls_hash_get_len(alg));
}

TlsaRecord tlsa(uint8_t usage, uint8_t selector, uint8_t mtype, std::string data,
                bool usable = true) {
    TlsaRecord r;
    r.usage = usage;
    r.selector = selector;
    r.mtype = mtype;
    r.data = std::move(data);
    r.usable = usable;
    if (!usable) r.why = "marked unusable by the test";
    return r;
}

// The association data of a certificate for a selector and matching type, computed here.
std::string assoc(const Cert& c, uint8_t selector, uint8_t mtype) {
    const std::string selected = selector == 0 ? c.der : spki_of_key(c.key);
    if (mtype == 0) return selected;
    return digest(mtype == 1 ? GNUTLS_DIG_SHA256 : GNUTLS_DIG_SHA512, selected);
}

TlsaRecord rec(uint8_t usage, uint8_t selector, uint8_t mtype, const Cert& c, bool usable = true) {
    return tlsa(usage, selector, mtype, assoc(c, selector, mtype), usable);
}

// ---------------------------------------------------------------------------------------------
// The test PKI

const std::string kMx = "mx.example.test";

struct Pki {
    Key root_key = make_key(), fake_root_key = make_key(), int_key = make_key(),
        leaf_key = make_key(), other_key = make_key(), other_ca_key = make_key();
    Cert root = issue(ca_spec("CN=Test Root CA"), root_key);
    // The root's key and name, long expired: a DANE-TA anchor all the same.
    Cert root_expired =
        issue(ca_spec("CN=Test Root CA").dates(kNow - 400 * kDay, kNow - 30 * kDay), root_key);
    // Another key under the root's name.
    Cert fake_root = issue(ca_spec("CN=Test Root CA"), fake_root_key);
    Cert other_ca = issue(ca_spec("CN=Other CA"), other_ca_key);

    Cert leaf = issue(leaf_spec(kMx, {kMx}), leaf_key, &root);
    Cert leaf_expired =
        issue(leaf_spec(kMx, {kMx}).dates(kNow - 60 * kDay, kNow - kDay), leaf_key, &root);
    Cert leaf_future =
        issue(leaf_spec(kMx, {kMx}).dates(kNow + kDay, kNow + 9 * kDay), leaf_key, &root);
    Cert leaf_elsewhere =
        issue(leaf_spec("mail.elsewhere.example", {"mail.elsewhere.example"}), other_key, &root);
    Cert leaf_wildcard = issue(leaf_spec("*.example.test", {"*.example.test"}), leaf_key, &root);
    // RFC 7672 §3.2.3: "*" only as a whole label; a partial wildcard matches nothing.
    Cert leaf_partial_wildcard =
        issue(leaf_spec("*x.example.test", {"*x.example.test"}), leaf_key, &root);
    // No DNS-IDs: the CN is the name.
    Cert leaf_cn_only = issue(leaf_spec(kMx, {}), leaf_key, &root);
    // Names the root as its issuer, signed by another key.
    Cert leaf_forged = issue(leaf_spec(kMx, {kMx}), leaf_key, &fake_root);
    Cert leaf_self = issue(leaf_spec(kMx, {kMx}), leaf_key);
    Cert leaf_client_eku =
        issue(leaf_spec(kMx, {kMx}).purposes({GNUTLS_KP_TLS_WWW_CLIENT}), leaf_key, &root);
    Cert leaf_server_eku =
        issue(leaf_spec(kMx, {kMx}).purposes({GNUTLS_KP_TLS_WWW_SERVER, GNUTLS_KP_TLS_WWW_CLIENT}),
              leaf_key, &root);
    Cert leaf_of_other_ca = issue(leaf_spec(kMx, {kMx}), leaf_key, &other_ca);

    Cert intermediate = issue(ca_spec("CN=Test Intermediate"), int_key, &root);
    // The intermediate's name and key, signed by the fake root key: the root never signed it.
    Cert intermediate_forged =
        issue(ca_spec("CN=Test Intermediate"), int_key, &root, fake_root_key);
    Cert intermediate_expired =
        issue(ca_spec("CN=Test Intermediate").dates(kNow - 60 * kDay, kNow - kDay), int_key, &root);
    Cert leaf_via_int = issue(leaf_spec(kMx, {kMx}), leaf_key, &intermediate);
};

// ---------------------------------------------------------------------------------------------
// verify_dane / verify_pkix rows

struct CheckRow {
    std::string name;
    std::vector<std::string> chain;
    std::vector<TlsaRecord> records;  // DANE rows
    std::vector<std::string> names;   // DANE-TA reference names
    bool ok;
    std::vector<std::string> how;     // parts of `how` when ok
    std::vector<std::string> reason;  // parts of `reason` when not ok
};

CheckRow pass(std::string name, std::vector<std::string> chain, std::vector<TlsaRecord> records,
              std::vector<std::string> names, std::vector<std::string> how) {
    return {std::move(name),
            std::move(chain),
            std::move(records),
            std::move(names),
            true,
            std::move(how),
            {}};
}
CheckRow fail(std::string name, std::vector<std::string> chain, std::vector<TlsaRecord> records,
              std::vector<std::string> names, std::vector<std::string> reason = {}) {
    return {std::move(name),  std::move(chain), std::move(records), std::move(names), false, {},
            std::move(reason)};
}

struct PkixRow {
    CheckRow check;
    std::string ca_file, hostname;
};
PkixRow pkix_pass(std::string name, std::vector<std::string> chain, std::string ca_file,
                  std::string hostname, std::vector<std::string> how) {
    return {pass(std::move(name), std::move(chain), {}, {}, std::move(how)), std::move(ca_file),
            std::move(hostname)};
}
PkixRow pkix_fail(std::string name, std::vector<std::string> chain, std::string ca_file,
                  std::string hostname, std::vector<std::string> reason = {}) {
    return {fail(std::move(name), std::move(chain), {}, {}, std::move(reason)), std::move(ca_file),
            std::move(hostname)};
}

void check_result(const CertCheck& got, const CheckRow& row) {
    CHECK_MESSAGE(got.ok == row.ok, (got_want("ok", got.ok, row.ok) + " (how \"" + got.how +
                                     "\", reason \"" + got.reason + "\")"));
    if (row.ok) {
        CHECK_MESSAGE(got.reason.empty(), got_want("reason", got.reason, std::string()));
        for (const std::string& part : row.how)
            CHECK_MESSAGE(contains(got.how, part), got_want("how", got.how, "..." + part + "..."));
        CHECK(printable_ascii(got.how));
    } else {
        CHECK_MESSAGE(!got.reason.empty(), "reason: got empty, want a sentence");
        for (const std::string& part : row.reason)
            CHECK_MESSAGE(contains(got.reason, part),
                          got_want("reason", got.reason, "..." + part + "..."));
        CHECK_MESSAGE(printable_ascii(got.reason), got_want("reason printable", false, true));
        CHECK_MESSAGE(got.how.empty(), got_want("how", got.how, std::string()));
    }
}

std::vector<CheckRow> dane_ee_rows(const Pki& p) {
    const std::vector<std::string> chain = {p.leaf.der, p.root.der};
    const std::vector<std::string> mx = {kMx};
    const std::string sha256_leaf_spki = assoc(p.leaf, 1, 1);
    return {
        pass("3 1 1 on the leaf", chain, {rec(3, 1, 1, p.leaf)}, mx, {"DANE-EE 3 1 1", "depth 0"}),
        pass("3 0 1 on the leaf", chain, {rec(3, 0, 1, p.leaf)}, mx, {"DANE-EE 3 0 1", "depth 0"}),
        pass("3 1 2 on the leaf", chain, {rec(3, 1, 2, p.leaf)}, mx, {"DANE-EE 3 1 2", "depth 0"}),
        pass("3 0 2 on the leaf", chain, {rec(3, 0, 2, p.leaf)}, mx, {"DANE-EE 3 0 2"}),
        pass("3 1 0 full SPKI", chain, {rec(3, 1, 0, p.leaf)}, mx, {"DANE-EE 3 1 0", "depth 0"}),
        pass("3 0 0 full certificate", chain, {rec(3, 0, 0, p.leaf)}, mx, {"DANE-EE 3 0 0"}),
        pass("3 1 1 on the leaf alone, no issuer sent", {p.leaf.der}, {rec(3, 1, 1, p.leaf)}, mx,
             {"DANE-EE 3 1 1"}),
        fail("mismatching digest", chain, {rec(3, 1, 1, p.leaf_elsewhere)}, mx,
             {"no TLSA record matches"}),
        fail("digest of the certificate under selector 1", chain,
             {tlsa(3, 1, 1, assoc(p.leaf, 0, 1))}, mx, {"no TLSA record matches"}),
        fail("digest of the SPKI under selector 0", chain, {tlsa(3, 0, 1, sha256_leaf_spki)}, mx,
             {"no TLSA record matches"}),
        fail("sha256 data under matching type 2", chain, {tlsa(3, 1, 2, sha256_leaf_spki)}, mx),
        fail("3 1 1 on the issuer, not the leaf", chain, {rec(3, 1, 1, p.root)}, mx),
        pass("one of several records matches", chain,
             {rec(3, 1, 1, p.leaf_elsewhere), rec(3, 0, 2, p.root), rec(3, 1, 2, p.leaf)}, mx,
             {"DANE-EE 3 1 2"}),
        pass("expired leaf: dates ignored", {p.leaf_expired.der, p.root.der},
             {rec(3, 1, 1, p.leaf_expired)}, mx, {"DANE-EE 3 1 1"}),
        pass("leaf not yet valid: dates ignored", {p.leaf_future.der},
             {rec(3, 0, 1, p.leaf_future)}, mx, {"DANE-EE 3 0 1"}),
        pass("leaf for another name: names ignored", {p.leaf_elsewhere.der, p.root.der},
             {rec(3, 1, 1, p.leaf_elsewhere)}, mx, {"DANE-EE 3 1 1"}),
        pass("no reference names at all", chain, {rec(3, 1, 1, p.leaf)}, {}, {"DANE-EE"}),
        pass("self-signed leaf", {p.leaf_self.der}, {rec(3, 0, 1, p.leaf_self)}, mx,
             {"DANE-EE 3 0 1"}),
        pass("leaf with a forged signature: chain ignored", {p.leaf_forged.der, p.root.der},
             {rec(3, 1, 1, p.leaf_forged)}, mx, {"DANE-EE 3 1 1"}),
        fail("matching record marked unusable, alone", chain, {rec(3, 1, 1, p.leaf, false)}, mx,
             {"no TLSA record matches"}),
        pass("matching record marked unusable, a usable one matches", chain,
             {rec(3, 1, 1, p.leaf, false), rec(3, 0, 1, p.leaf)}, mx, {"DANE-EE 3 0 1"}),
        fail("sha256 digest cut to 31 bytes", chain,
             {tlsa(3, 1, 1, sha256_leaf_spki.substr(0, 31))}, mx),
        fail("sha256 digest with a byte more", chain,
             {tlsa(3, 1, 1, sha256_leaf_spki + std::string(1, '\0'))}, mx),
        fail("sha512 digest cut to 32 bytes under mtype 2", chain,
             {tlsa(3, 1, 2, assoc(p.leaf, 1, 2).substr(0, 32))}, mx),
        fail("full SPKI with a byte more", chain,
             {tlsa(3, 1, 0, assoc(p.leaf, 1, 0) + std::string(1, '\0'))}, mx),
        fail("empty data", chain, {tlsa(3, 1, 1, "")}, mx),
        fail("unknown matching type 3 with sha256 data", chain, {tlsa(3, 1, 3, sha256_leaf_spki)},
             mx),
        fail("unknown selector 2 with the SPKI digest", chain, {tlsa(3, 2, 1, sha256_leaf_spki)},
             mx),
        fail("usage 1 (PKIX-EE) is not DANE-EE", chain, {rec(1, 1, 1, p.leaf)}, mx),
        fail("usage 0 (PKIX-TA) is not DANE-TA", chain, {rec(0, 1, 1, p.root)}, mx),
        fail("no records", chain, {}, mx, {"no TLSA record matches"}),
    };
}

std::vector<CheckRow> dane_ta_rows(const Pki& p) {
    const std::vector<std::string> chain = {p.leaf.der, p.root.der};
    const std::vector<std::string> mx = {kMx};
    const std::string garbage = "\x30\x82\x01\x00 this is not DER";
    return {
        pass("2 0 1 on the root at depth 1", chain, {rec(2, 0, 1, p.root)}, mx,
             {"DANE-TA 2 0 1", "depth 1", kMx}),
        pass("2 1 1 on the root at depth 1", chain, {rec(2, 1, 1, p.root)}, mx,
             {"DANE-TA 2 1 1", "depth 1", kMx}),
        pass("2 0 0 full root certificate", chain, {rec(2, 0, 0, p.root)}, mx,
             {"DANE-TA 2 0 0", "depth 1"}),
        pass("2 1 0 full SPKI of the root", chain, {rec(2, 1, 0, p.root)}, mx,
             {"DANE-TA 2 1 0", "depth 1"}),
        pass("second reference name matches", chain, {rec(2, 1, 1, p.root)},
             {"wrong.example.test", kMx}, {"depth 1", "name " + kMx}),
        pass("reference name in another case", chain, {rec(2, 1, 1, p.root)}, {"MX.Example.TEST"},
             {"depth 1"}),
        fail("wrong reference name only", chain, {rec(2, 1, 1, p.root)},
             {"wrong.example.test", "other.example.test"},
             {"depth 1", "wrong.example.test", "other.example.test"}),
        fail("no reference names", chain, {rec(2, 1, 1, p.root)}, {}, {"depth 1"}),
        fail("parent domain is not the host", chain, {rec(2, 1, 1, p.root)}, {"example.test"},
             {"example.test"}),
        pass("wildcard leaf, one label", {p.leaf_wildcard.der, p.root.der}, {rec(2, 1, 1, p.root)},
             {kMx}, {"depth 1"}),
        fail("wildcard leaf, two labels", {p.leaf_wildcard.der, p.root.der}, {rec(2, 1, 1, p.root)},
             {"a.b.example.test"}, {"a.b.example.test"}),
        fail("wildcard leaf, the bare parent", {p.leaf_wildcard.der, p.root.der},
             {rec(2, 1, 1, p.root)}, {"example.test"}),
        fail("partial wildcard leaf", {p.leaf_partial_wildcard.der, p.root.der},
             {rec(2, 1, 1, p.root)}, {kMx}, {"is not for"}),
        pass("leaf without DNS-IDs, CN matches", {p.leaf_cn_only.der, p.root.der},
             {rec(2, 1, 1, p.root)}, {kMx}, {"depth 1"}),
        pass("TA at depth 2 above an intermediate",
             {p.leaf_via_int.der, p.intermediate.der, p.root.der}, {rec(2, 1, 1, p.root)}, mx,
             {"DANE-TA 2 1 1", "depth 2"}),
        pass("TA record on the intermediate at depth 1",
             {p.leaf_via_int.der, p.intermediate.der, p.root.der}, {rec(2, 0, 1, p.intermediate)},
             mx, {"DANE-TA 2 0 1", "depth 1"}),
        fail("broken chain: intermediate not signed by the TA key",
             {p.leaf_via_int.der, p.intermediate_forged.der, p.root.der}, {rec(2, 1, 1, p.root)},
             mx, {"depth 2", "does not verify"}),
        fail("broken chain: leaf not signed by the TA key", {p.leaf_forged.der, p.root.der},
             {rec(2, 1, 1, p.root)}, mx, {"depth 1"}),
        fail("broken chain: forged intermediate, record on the forger's cert only",
             {p.leaf_via_int.der, p.intermediate_forged.der, p.root.der},
             {rec(2, 1, 1, p.fake_root)}, mx),
        fail("TA sent but the leaf's issuer is missing", {p.leaf_via_int.der, p.root.der},
             {rec(2, 1, 1, p.root)}, mx, {"depth 1"}),
        pass("expired TA certificate, valid leaf", {p.leaf.der, p.root_expired.der},
             {rec(2, 0, 1, p.root_expired)}, mx, {"DANE-TA 2 0 1", "depth 1"}),
        pass("expired TA certificate at depth 2",
             {p.leaf_via_int.der, p.intermediate.der, p.root_expired.der},
             {rec(2, 1, 1, p.root_expired)}, mx, {"depth 2"}),
        fail("expired leaf under DANE-TA", {p.leaf_expired.der, p.root.der}, {rec(2, 1, 1, p.root)},
             mx, {"depth 1", "expired"}),
        fail("leaf not yet valid under DANE-TA", {p.leaf_future.der, p.root.der},
             {rec(2, 1, 1, p.root)}, mx),
        fail("expired intermediate under a TA at depth 2",
             {p.leaf_via_int.der, p.intermediate_expired.der, p.root.der}, {rec(2, 1, 1, p.root)},
             mx, {"depth 2", "expired"}),
        pass("expired intermediate named by the TA record: its dates ignored",
             {p.leaf_via_int.der, p.intermediate_expired.der, p.root.der},
             {rec(2, 0, 1, p.intermediate_expired)}, mx, {"DANE-TA 2 0 1", "depth 1"}),
        fail("TA record matching only the leaf", chain, {rec(2, 0, 1, p.leaf)}, mx,
             {"no TLSA record matches"}),
        fail("TA record 2 1 1 matching only the leaf's key", chain, {rec(2, 1, 1, p.leaf)}, mx),
        fail("self-signed leaf alone with a TA record on it", {p.leaf_self.der},
             {rec(2, 0, 1, p.leaf_self)}, mx),
        fail("TA record marked unusable", chain, {rec(2, 1, 1, p.root, false)}, mx,
             {"no TLSA record matches"}),
        fail("TA record of another CA", chain, {rec(2, 1, 1, p.other_ca)}, mx),
        fail("TA sent is another CA's, leaf from the root", {p.leaf.der, p.other_ca.der},
             {rec(2, 1, 1, p.other_ca)}, mx, {"depth 1"}),
        fail("TA with the root's name and another key", {p.leaf.der, p.fake_root.der},
             {rec(2, 1, 1, p.fake_root)}, mx, {"depth 1"}),
        pass("EE record fails, TA record succeeds", chain,
             {rec(3, 1, 1, p.leaf_elsewhere), rec(2, 1, 1, p.root)}, mx, {"DANE-TA 2 1 1"}),
        fail("empty chain", {}, {rec(2, 1, 1, p.root)}, mx, {"no certificate"}),
        fail("empty chain, EE record", {}, {tlsa(3, 0, 0, "")}, mx, {"no certificate"}),
        fail("unparsable leaf", {garbage, p.root.der}, {rec(2, 1, 1, p.root)}, mx,
             {"depth 0", "cannot be parsed"}),
        fail("unparsable leaf that a 3 0 0 record names byte for byte", {garbage},
             {tlsa(3, 0, 0, garbage)}, mx, {"cannot be parsed"}),
        fail("unparsable certificate at depth 1", {p.leaf.der, garbage}, {rec(2, 1, 1, p.root)}, mx,
             {"depth 1", "cannot be parsed"}),
        fail("empty DER string", {std::string()}, {rec(3, 1, 1, p.leaf)}, mx, {"cannot be parsed"}),
        fail("truncated leaf DER", {p.leaf.der.substr(0, p.leaf.der.size() / 2)},
             {rec(3, 0, 1, p.leaf)}, mx, {"cannot be parsed"}),
    };
}

// A mkdtemp directory with the PEM CA files verify_pkix reads; removed at the end.
struct CaDir {
    std::string dir;
    std::vector<std::string> files;
    CaDir() {
        const char* tmp = std::getenv("TMPDIR");
        std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/probe-verify-XXXXXX";
        REQUIRE(mkdtemp(templ.data()) != nullptr);
        dir = templ;
    }
    CaDir(const CaDir&) = delete;
    CaDir& operator=(const CaDir&) = delete;
    ~CaDir() {
        for (const std::string& f : files)
            std::remove(f.c_str());
        rmdir(dir.c_str());
    }
    std::string write(const std::string& name, const std::string& text) {
        const std::string path = dir + "/" + name;
        std::FILE* f = std::fopen(path.c_str(), "wb");
        REQUIRE(f != nullptr);
        files.push_back(path);
        REQUIRE(std::fwrite(text.data(), 1, text.size(), f) == text.size());
        REQUIRE(std::fclose(f) == 0);
        return path;
    }
};

}  // namespace

// =============================================================================================

TEST_CASE("verify tlsa_matches: data computed independently, all selectors and types") {
    Pki p;
    const Cert& c = p.leaf;
    // The SPKI two ways: from the private key, and cut from the certificate DER by hand.
    const std::string spki = spki_of_key(c.key);
    const std::string spki_cut = spki_by_hand(c.der);
    CHECK_MESSAGE(spki == spki_cut, got_want("SPKI from the key equals the SPKI cut from the DER",
                                             spki == spki_cut, true));
    // Digests two ways: one shot and piecewise.
    CHECK(digest(GNUTLS_DIG_SHA256, spki_cut) == digest_piecewise(GNUTLS_DIG_SHA256, spki_cut));
    CHECK(digest(GNUTLS_DIG_SHA512, c.der) == digest_piecewise(GNUTLS_DIG_SHA512, c.der));

    struct Row {
        std::string name;
        TlsaRecord record;
        bool want;
    };
    const std::vector<Row> rows = {
        {"x 0 0 full certificate", tlsa(3, 0, 0, c.der), true},
        {"x 1 0 SPKI cut by hand", tlsa(3, 1, 0, spki_cut), true},
        {"x 0 1 piecewise sha256 of the certificate",
         tlsa(3, 0, 1, digest_piecewise(GNUTLS_DIG_SHA256, c.der)), true},
        {"x 1 1 piecewise sha256 of the hand-cut SPKI",
         tlsa(3, 1, 1, digest_piecewise(GNUTLS_DIG_SHA256, spki_cut)), true},
        {"x 0 2 piecewise sha512 of the certificate",
         tlsa(3, 0, 2, digest_piecewise(GNUTLS_DIG_SHA512, c.der)), true},
        {"x 1 2 piecewise sha512 of the hand-cut SPKI",
         tlsa(2, 1, 2, digest_piecewise(GNUTLS_DIG_SHA512, spki_cut)), true},
        {"usable flag is not tlsa_matches' business", tlsa(3, 1, 0, spki_cut, false), true},
        {"x 1 0 the certificate instead of the SPKI", tlsa(3, 1, 0, c.der), false},
        {"x 0 0 the SPKI instead of the certificate", tlsa(3, 0, 0, spki_cut), false},
        {"x 1 1 sha512 data", tlsa(3, 1, 1, digest(GNUTLS_DIG_SHA512, spki_cut)), false},
        {"x 1 2 sha256 data", tlsa(3, 1, 2, digest(GNUTLS_DIG_SHA256, spki_cut)), false},
        {"x 1 1 sha256 of another key", tlsa(3, 1, 1, assoc(p.leaf_elsewhere, 1, 1)), false},
        {"x 0 1 sha256 of the SPKI", tlsa(3, 0, 1, digest(GNUTLS_DIG_SHA256, spki_cut)), false},
        {"x 1 1 one flipped bit",
         tlsa(3, 1, 1,
              [&] {
                  std::string d = digest(GNUTLS_DIG_SHA256, spki_cut);
                  d[31] = static_cast<char>(d[31] ^ 1);
                  return d;
              }()),
         false},
        {"x 1 1 31 bytes", tlsa(3, 1, 1, digest(GNUTLS_DIG_SHA256, spki_cut).substr(0, 31)), false},
        {"x 1 1 empty", tlsa(3, 1, 1, ""), false},
        {"x 1 0 empty", tlsa(3, 1, 0, ""), false},
        {"x 0 0 empty", tlsa(3, 0, 0, ""), false},
        {"x 1 3 sha256 data", tlsa(3, 1, 3, digest(GNUTLS_DIG_SHA256, spki_cut)), false},
        {"x 1 255 sha512 data", tlsa(3, 1, 255, digest(GNUTLS_DIG_SHA512, spki_cut)), false},
        {"x 2 1 sha256 of the SPKI", tlsa(3, 2, 1, digest(GNUTLS_DIG_SHA256, spki_cut)), false},
        {"x 2 0 the certificate", tlsa(3, 2, 0, c.der), false},
    };
    std::set<std::string> names;
    for (const Row& row : rows) {
        CAPTURE(row.name);
        CHECK_MESSAGE(names.insert(row.name).second, "duplicate row name");
        CHECK_EQ_GW("tlsa_matches", tlsa_matches(row.record, c.der), row.want);
    }
    // Unparsable DER: selector 1 never matches, whatever the data.
    CHECK_EQ_GW("x 1 0 on garbage", tlsa_matches(tlsa(3, 1, 0, "garbage"), "garbage"), false);
    CHECK_EQ_GW("x 1 1 on \"\"", tlsa_matches(tlsa(3, 1, 1, digest(GNUTLS_DIG_SHA256, "")), ""),
                false);
    CHECK_EQ_GW("x 0 1 on \"\"", tlsa_matches(tlsa(3, 0, 1, digest(GNUTLS_DIG_SHA256, "")), ""),
                false);
}

TEST_CASE("verify tlsa_matches: full data, SHA-256 and SHA-512 agree, only on the diagonal") {
    // For every certificate and selector, the full data (matching type 0), its SHA-256 (1) and
    // its SHA-512 (2) match that certificate and no other: the three are cross-checked
    // against each other, nothing is hard-coded.
    Pki p;
    const std::vector<std::pair<std::string, const Cert*>> certs = {
        {"leaf", &p.leaf},
        {"root", &p.root},
        {"intermediate", &p.intermediate},
        {"other CA", &p.other_ca},
        {"leaf elsewhere", &p.leaf_elsewhere},
    };
    for (uint8_t selector : {uint8_t{0}, uint8_t{1}}) {
        for (const auto& [data_name, data_cert] : certs) {
            const std::string full = selector == 0 ? data_cert->der : spki_by_hand(data_cert->der);
            const TlsaRecord by_type[3] = {
                tlsa(3, selector, 0, full),
                tlsa(3, selector, 1, digest_piecewise(GNUTLS_DIG_SHA256, full)),
                tlsa(3, selector, 2, digest_piecewise(GNUTLS_DIG_SHA512, full)),
            };
            CHECK_EQ_GW("sha256 size", by_type[1].data.size(), std::size_t{32});
            CHECK_EQ_GW("sha512 size", by_type[2].data.size(), std::size_t{64});
            for (const auto& [cert_name, cert] : certs) {
                CAPTURE(int(selector));
                CAPTURE(data_name);
                CAPTURE(cert_name);
                const bool want = data_cert == cert;
                CHECK_EQ_GW("mtype 0", tlsa_matches(by_type[0], cert->der), want);
                CHECK_EQ_GW("mtype 1", tlsa_matches(by_type[1], cert->der), want);
                CHECK_EQ_GW("mtype 2", tlsa_matches(by_type[2], cert->der), want);
            }
        }
    }
    // Same key, other certificate: selector 1 matches, selector 0 does not.
    CHECK_EQ_GW("x 1 1 of the leaf on the expired leaf (same key)",
                tlsa_matches(rec(3, 1, 1, p.leaf), p.leaf_expired.der), true);
    CHECK_EQ_GW("x 0 1 of the leaf on the expired leaf",
                tlsa_matches(rec(3, 0, 1, p.leaf), p.leaf_expired.der), false);
}

TEST_CASE("verify_dane: DANE-EE rows") {
    Pki p;
    const auto rows = dane_ee_rows(p);
    std::set<std::string> names;
    for (const CheckRow& row : rows) {
        CAPTURE(row.name);
        CHECK_MESSAGE(names.insert(row.name).second, "duplicate row name");
        check_result(verify_dane(row.chain, row.records, row.names), row);
    }
}

TEST_CASE("verify_dane: DANE-TA rows") {
    Pki p;
    const auto rows = dane_ta_rows(p);
    std::set<std::string> names;
    for (const CheckRow& row : rows) {
        CAPTURE(row.name);
        CHECK_MESSAGE(names.insert(row.name).second, "duplicate row name");
        check_result(verify_dane(row.chain, row.records, row.names), row);
    }
}

TEST_CASE("verify_dane: a chain longer than kMaxProbeChain is cut, not rejected") {
    Pki p;
    std::vector<std::string> chain = {p.leaf.der, p.root.der};
    while (chain.size() < kMaxProbeChain + 4)
        chain.push_back(p.other_ca.der);
    chain.back() = "not DER beyond the cut";  // never parsed
    const CertCheck got = verify_dane(chain, {rec(2, 1, 1, p.root)}, {kMx});
    CHECK_MESSAGE(got.ok, (got_want("ok", got.ok, true) + " (reason \"" + got.reason + "\")"));
}

TEST_CASE("verify_pkix: rows") {
    Pki p;
    CaDir dir;
    const std::string ca_file = dir.write("root.pem", pem_of(p.root.der));
    const std::string both_file =
        dir.write("both.pem", pem_of(p.other_ca.der) + pem_of(p.root.der));
    const std::string other_file = dir.write("other.pem", pem_of(p.other_ca.der));
    const std::string empty_file = dir.write("empty.pem", "");
    const std::string text_file = dir.write("text.pem", "no certificates here\n");
    const std::string missing_file = dir.dir + "/missing.pem";

    const std::vector<std::string> chain = {p.leaf.der, p.root.der};
    const std::vector<PkixRow> rows = {
        pkix_pass("valid chain, right name", chain, ca_file, kMx, {"PKIX", kMx}),
        pkix_pass("leaf alone, CA in the file", {p.leaf.der}, ca_file, kMx, {"PKIX"}),
        pkix_pass("file with two CAs", chain, both_file, kMx, {"PKIX"}),
        pkix_pass("name in another case", chain, ca_file, "MX.EXAMPLE.test", {"PKIX"}),
        pkix_pass("via an intermediate", {p.leaf_via_int.der, p.intermediate.der}, ca_file, kMx,
                  {"PKIX"}),
        pkix_fail("wrong name", chain, ca_file, "wrong.example.test", {"name"}),
        pkix_fail("empty name", chain, ca_file, ""),
        pkix_pass("wildcard leaf, one label", {p.leaf_wildcard.der}, ca_file, kMx, {"PKIX"}),
        pkix_fail("wildcard leaf, two labels", {p.leaf_wildcard.der}, ca_file, "a.b.example.test"),
        pkix_fail("expired leaf", {p.leaf_expired.der, p.root.der}, ca_file, kMx, {"expired"}),
        pkix_fail("leaf not yet valid", {p.leaf_future.der, p.root.der}, ca_file, kMx,
                  {"not yet valid"}),
        pkix_fail("expired intermediate", {p.leaf_via_int.der, p.intermediate_expired.der}, ca_file,
                  kMx),
        pkix_fail("forged intermediate", {p.leaf_via_int.der, p.intermediate_forged.der}, ca_file,
                  kMx, {"signature"}),
        pkix_fail("leaf signed by another key under the root's name", {p.leaf_forged.der}, ca_file,
                  kMx),
        pkix_fail("intermediate missing", {p.leaf_via_int.der}, ca_file, kMx),
        pkix_fail("unknown CA: the file holds another one", chain, other_file, kMx, {"issuer"}),
        pkix_fail("leaf of the other CA, file holds the root",
                  {p.leaf_of_other_ca.der, p.other_ca.der}, ca_file, kMx),
        pkix_fail("server sends the root's look-alike", {p.leaf_forged.der, p.fake_root.der},
                  ca_file, kMx),
        pkix_fail("EKU clientAuth only", {p.leaf_client_eku.der, p.root.der}, ca_file, kMx,
                  {"purpose"}),
        pkix_pass("EKU serverAuth and clientAuth", {p.leaf_server_eku.der, p.root.der}, ca_file,
                  kMx, {"PKIX"}),
        pkix_pass("no EKU", chain, ca_file, kMx, {"PKIX"}),
        pkix_fail("CA file missing", chain, missing_file, kMx, {missing_file}),
        pkix_fail("CA file empty", chain, empty_file, kMx, {empty_file}),
        pkix_fail("CA file without certificates", chain, text_file, kMx, {text_file}),
        pkix_fail("empty chain", {}, ca_file, kMx, {"no certificate"}),
        pkix_fail("unparsable leaf", {"\x30\x03\x02\x01\x05"}, ca_file, kMx,
                  {"depth 0", "cannot be parsed"}),
        pkix_fail("unparsable intermediate", {p.leaf.der, "junk"}, ca_file, kMx,
                  {"depth 1", "cannot be parsed"}),
        // The generated root is in no system store: whatever the store holds, not trusted.
        pkix_fail("system store", chain, "", kMx),
    };
    std::set<std::string> names;
    for (const PkixRow& row : rows) {
        CAPTURE(row.check.name);
        CHECK_MESSAGE(names.insert(row.check.name).second, "duplicate row name");
        check_result(verify_pkix(row.check.chain, row.ca_file, row.hostname), row.check);
    }
}

TEST_CASE("verify describe_certificate: what the certificate says, exactly as generated") {
    const Key ca_key = make_key(), key = make_key();
    const Cert ca = issue(
        ca_spec("CN=Describe CA,O=Example Org,C=DE").dates(1'700'000'000, 2'000'000'000), ca_key);
    Spec leaf_s =
        leaf_spec("mx.example.test", {"mx.example.test", "mx2.example.test", "*.example.test"});
    const Cert leaf = issue(leaf_s.dates(1'710'000'000, 1'720'000'000), key, &ca);
    Spec bare_s;
    bare_s.dn = "CN=bare,OU=Unit";
    const Cert bare = issue(bare_s.dates(1'600'000'000, 1'600'086'400), key);

    struct Row {
        std::string name;
        std::string der;
        std::string subject, issuer;
        std::vector<std::string> dns;
        int64_t not_before, not_after;
    };
    const std::vector<Row> rows = {
        {"leaf with three names",
         leaf.der,
         "CN=mx.example.test",
         "CN=Describe CA,O=Example Org,C=DE",
         {"mx.example.test", "mx2.example.test", "*.example.test"},
         1'710'000'000,
         1'720'000'000},
        {"self-signed CA",
         ca.der,
         "CN=Describe CA,O=Example Org,C=DE",
         "CN=Describe CA,O=Example Org,C=DE",
         {},
         1'700'000'000,
         2'000'000'000},
        {"no SAN",
         bare.der,
         "CN=bare,OU=Unit",
         "CN=bare,OU=Unit",
         {},
         1'600'000'000,
         1'600'086'400},
    };
    for (const Row& row : rows) {
        CAPTURE(row.name);
        const CertSummary s = describe_certificate(row.der);
        CHECK_EQ_GW("error", s.error, std::string());
        CHECK_EQ_GW("subject", s.subject, row.subject);
        CHECK_EQ_GW("issuer", s.issuer, row.issuer);
        CHECK_EQ_GW("dns_names", s.dns_names, row.dns);
        CHECK_EQ_GW("not_before", s.not_before, row.not_before);
        CHECK_EQ_GW("not_after", s.not_after, row.not_after);
    }

    const std::vector<std::pair<std::string, std::string>> garbage = {
        {"empty", ""},
        {"text", "not a certificate"},
        {"a SEQUENCE header only", "\x30\x82\x02\x00"},
        {"truncated", leaf.der.substr(0, leaf.der.size() - 10)},
        {"PEM instead of DER", pem_of(leaf.der)},
    };
    for (const auto& [name, der] : garbage) {
        CAPTURE(name);
        const CertSummary s = describe_certificate(der);
        CHECK_MESSAGE(!s.error.empty(), "error: got empty, want a sentence");
        CHECK(printable_ascii(s.error));
        CHECK_EQ_GW("subject", s.subject, std::string());
        CHECK_EQ_GW("dns_names", s.dns_names, std::vector<std::string>{});
    }
}

TEST_CASE("verify describe_certificate: other SAN kinds are skipped, names after them kept") {
    const Key key = make_key();
    gnutls_x509_crt_t raw = nullptr;
    REQUIRE(gnutls_x509_crt_init(&raw) == GNUTLS_E_SUCCESS);
    CrtPtr crt(raw);
    const unsigned char serial[] = {0x42};
    REQUIRE(gnutls_x509_crt_set_version(raw, 3) == GNUTLS_E_SUCCESS);
    REQUIRE(gnutls_x509_crt_set_serial(raw, serial, sizeof serial) == GNUTLS_E_SUCCESS);
    REQUIRE(gnutls_x509_crt_set_activation_time(raw, 1'700'000'000) == GNUTLS_E_SUCCESS);
    REQUIRE(gnutls_x509_crt_set_expiration_time(raw, 1'800'000'000) == GNUTLS_E_SUCCESS);
    REQUIRE(gnutls_x509_crt_set_dn(raw, "CN=mixed", nullptr) == GNUTLS_E_SUCCESS);
    const std::string email = "postmaster@example.test", dns1 = "a.example.test",
                      uri = "https://example.test/", dns2 = "b.example.test";
    const unsigned char ip[4] = {192, 0, 2, 25};
    REQUIRE(gnutls_x509_crt_set_subject_alt_name(raw, GNUTLS_SAN_RFC822NAME, email.data(),
                                                 email.size(), GNUTLS_FSAN_APPEND) == 0);
    REQUIRE(gnutls_x509_crt_set_subject_alt_name(raw, GNUTLS_SAN_DNSNAME, dns1.data(), dns1.size(),
                                                 GNUTLS_FSAN_APPEND) == 0);
    REQUIRE(gnutls_x509_crt_set_subject_alt_name(raw, GNUTLS_SAN_IPADDRESS, ip, sizeof ip,
                                                 GNUTLS_FSAN_APPEND) == 0);
    REQUIRE(gnutls_x509_crt_set_subject_alt_name(raw, GNUTLS_SAN_URI, uri.data(), uri.size(),
                                                 GNUTLS_FSAN_APPEND) == 0);
    REQUIRE(gnutls_x509_crt_set_subject_alt_name(raw, GNUTLS_SAN_DNSNAME, dns2.data(), dns2.size(),
                                                 GNUTLS_FSAN_APPEND) == 0);
    REQUIRE(gnutls_x509_crt_set_key(raw, key.get()) == GNUTLS_E_SUCCESS);
    REQUIRE(gnutls_x509_crt_sign2(raw, raw, key.get(), GNUTLS_DIG_SHA256, 0) == GNUTLS_E_SUCCESS);
    Datum der;
    REQUIRE(gnutls_x509_crt_export2(raw, GNUTLS_X509_FMT_DER, &der.d) == GNUTLS_E_SUCCESS);

    const CertSummary s = describe_certificate(der.str());
    CHECK_EQ_GW("error", s.error, std::string());
    CHECK_EQ_GW("subject", s.subject, std::string("CN=mixed"));
    CHECK_EQ_GW("dns_names", s.dns_names, (std::vector<std::string>{dns1, dns2}));
}

TEST_CASE("verify describe_certificate: a long SAN name does not hide the names after it") {
    // 63-byte labels: four of them make a 255-byte name, five a 319-byte one.
    const std::string label(63, 'a');
    const std::string name255 = label + "." + label + "." + label + "." + label;
    const std::string name319 = name255 + "." + label;
    REQUIRE(name255.size() == 255);
    const Key key = make_key();
    Spec spec = leaf_spec("long", {name255, name319, kMx});
    const Cert c = issue(spec, key);
    const CertSummary s = describe_certificate(c.der);
    CHECK_EQ_GW("error", s.error, std::string());
    REQUIRE(!s.dns_names.empty());
    CHECK_EQ_GW("first name", s.dns_names.front(), name255);
    // The 319-byte name may be shown cut or left out; the names after it must be there.
    CHECK_EQ_GW("last name", s.dns_names.back(), kMx);
    CHECK_MESSAGE(s.dns_names.size() >= 2,
                  got_want("names", s.dns_names, std::vector<std::string>{name255, "...", kMx}));
}

TEST_CASE("verify_dane: a TA record on the leaf never counts, even when the leaf is sent again") {
    // RFC 7672 §3.1.2 / OpenSSL as Postfix uses it: DANE-TA matches only issuers of the leaf
    // (depth >= 1 of the built chain); a copy of the leaf further up is not its issuer.
    Pki p;
    const std::vector<std::string> mx = {kMx};
    const std::vector<CheckRow> rows = {
        fail("leaf sent twice, 2 0 1 on the leaf", {p.leaf.der, p.leaf.der}, {rec(2, 0, 1, p.leaf)},
             mx),
        fail("leaf sent twice, 2 1 1 on the leaf", {p.leaf.der, p.leaf.der}, {rec(2, 1, 1, p.leaf)},
             mx),
        fail("leaf, root, leaf again, 2 0 1 on the leaf", {p.leaf.der, p.root.der, p.leaf.der},
             {rec(2, 0, 1, p.leaf)}, mx),
        fail("self-signed leaf sent twice, 2 0 1 on it", {p.leaf_self.der, p.leaf_self.der},
             {rec(2, 0, 1, p.leaf_self)}, mx),
    };
    for (const CheckRow& row : rows) {
        CAPTURE(row.name);
        check_result(verify_dane(row.chain, row.records, row.names), row);
    }
}
