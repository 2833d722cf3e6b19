#include "probe/verify.h"

#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <memory>

#include "util/log.h"

namespace tlspolicy {

namespace {

struct CrtFree {
    void operator()(gnutls_x509_crt_int* c) const { gnutls_x509_crt_deinit(c); }
};
using CrtPtr = std::unique_ptr<gnutls_x509_crt_int, CrtFree>;

struct PubkeyFree {
    void operator()(gnutls_pubkey_st* k) const { gnutls_pubkey_deinit(k); }
};
using PubkeyPtr = std::unique_ptr<gnutls_pubkey_st, PubkeyFree>;

struct TrustListFree {
    // deinit with all = 1: the list owns the CAs added to it.
    void operator()(gnutls_x509_trust_list_st* l) const { gnutls_x509_trust_list_deinit(l, 1); }
};
using TrustListPtr = std::unique_ptr<gnutls_x509_trust_list_st, TrustListFree>;

// A gnutls_datum_t freed with gnutls_free.
struct Datum {
    gnutls_datum_t d{nullptr, 0};
    ~Datum() { gnutls_free(d.data); }
    std::string str() const { return std::string(reinterpret_cast<const char*>(d.data), d.size); }
};

gnutls_datum_t datum_of(const std::string& s) {
    return {reinterpret_cast<unsigned char*>(const_cast<char*>(s.data())),
            static_cast<unsigned>(s.size())};
}

CrtPtr parse(const std::string& der) {
    gnutls_x509_crt_t c = nullptr;
    if (gnutls_x509_crt_init(&c) != 0) return nullptr;
    CrtPtr owned(c);
    const gnutls_datum_t d = datum_of(der);
    if (gnutls_x509_crt_import(c, &d, GNUTLS_X509_FMT_DER) != 0) return nullptr;
    return owned;
}

// The DER SubjectPublicKeyInfo of a certificate ("" when it cannot be had).
std::string spki_of(const std::string& der) {
    CrtPtr crt = parse(der);
    gnutls_pubkey_t k = nullptr;
    if (!crt || gnutls_pubkey_init(&k) != 0) return {};
    PubkeyPtr key(k);
    if (gnutls_pubkey_import_x509(k, crt.get(), 0) != 0) return {};
    Datum out;
    if (gnutls_pubkey_export2(k, GNUTLS_X509_FMT_DER, &out.d) != 0) return {};
    return out.str();
}

std::string status_text(unsigned status) {
    Datum out;
    if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out.d, 0) != 0)
        return "certificate not trusted";
    std::string text = out.str();
    // GnuTLS says "The certificate is NOT trusted. The certificate chain uses expired
    // certificate. ": keep it, minus the blanks at the end.
    while (!text.empty() && (text.back() == ' ' || text.back() == '.')) text.pop_back();
    return log::sanitize(text, 200);
}

// Parses a whole chain (at most kMaxProbeChain certificates); "" or why not.
std::string parse_chain(const std::vector<std::string>& chain, std::vector<CrtPtr>& crts) {
    if (chain.empty()) return "the server sent no certificate";
    const std::size_t n = std::min(chain.size(), kMaxProbeChain);
    for (std::size_t i = 0; i < n; ++i) {
        CrtPtr c = parse(chain[i]);
        if (!c) return "certificate at depth " + std::to_string(i) + " cannot be parsed";
        crts.push_back(std::move(c));
    }
    return {};
}

std::string usage_name(const TlsaRecord& r) {
    return std::string(r.usage == 2 ? "DANE-TA " : "DANE-EE ") + std::to_string(r.usage) + " " +
           std::to_string(r.selector) + " " + std::to_string(r.mtype);
}

}  // namespace

bool dane_name_matches(const std::string& der, const std::string& name) {
    auto lower = [](std::string x) {
        for (char& c : x)
            if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        return x;
    };
    const std::string want = lower(name);
    const CertSummary c = describe_certificate(der);
    if (!c.error.empty()) return false;
    std::vector<std::string> ids = c.dns_names;
    if (ids.empty()) {  // RFC 7672 §3.2.3: the CN only when there are no DNS-IDs
        CrtPtr crt = parse(der);
        char cn[256];
        size_t size = sizeof cn;
        if (crt && gnutls_x509_crt_get_dn_by_oid(crt.get(), GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn,
                                                 &size) == 0)
            ids.emplace_back(cn, size);
    }
    for (const std::string& raw : ids) {
        const std::string id = lower(raw);
        if (id == want) return true;
        // "*" only as the whole left-most label, standing for exactly one label.
        if (id.size() > 2 && id.compare(0, 2, "*.") == 0) {
            const auto dot = want.find('.');
            if (dot != std::string::npos && dot > 0 && want.substr(dot) == id.substr(1))
                return true;
        }
    }
    return false;
}

CertSummary describe_certificate(const std::string& der) {
    CertSummary s;
    CrtPtr crt = parse(der);
    if (!crt) {
        s.error = "certificate cannot be parsed";
        return s;
    }
    Datum dn;
    if (gnutls_x509_crt_get_dn3(crt.get(), &dn.d, 0) == 0) s.subject = log::sanitize(dn.str());
    Datum idn;
    if (gnutls_x509_crt_get_issuer_dn3(crt.get(), &idn.d, 0) == 0)
        s.issuer = log::sanitize(idn.str());
    s.not_before = gnutls_x509_crt_get_activation_time(crt.get());
    s.not_after = gnutls_x509_crt_get_expiration_time(crt.get());
    for (unsigned i = 0; i < 64; ++i) {
        char name[256];
        size_t size = sizeof name;
        unsigned critical = 0;
        const int type = gnutls_x509_crt_get_subject_alt_name(crt.get(), i, name, &size, &critical);
        if (type == GNUTLS_E_SHORT_MEMORY_BUFFER) continue;  // no DNS name is that long
        if (type < 0) break;  // GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE ends the list
        if (type == GNUTLS_SAN_DNSNAME) s.dns_names.push_back(log::sanitize({name, size}, 255));
    }
    return s;
}

bool tlsa_matches(const TlsaRecord& r, const std::string& der) {
    const std::string selected = r.selector == 0 ? der : r.selector == 1 ? spki_of(der) : "";
    if (selected.empty()) return false;
    if (r.mtype == 0) return selected == r.data;
    const gnutls_digest_algorithm_t alg = r.mtype == 1   ? GNUTLS_DIG_SHA256
                                          : r.mtype == 2 ? GNUTLS_DIG_SHA512
                                                         : GNUTLS_DIG_UNKNOWN;
    if (alg == GNUTLS_DIG_UNKNOWN) return false;
    unsigned char digest[64];
    const std::size_t len = gnutls_hash_get_len(alg);
    if (len > sizeof digest || r.data.size() != len) return false;
    if (gnutls_hash_fast(alg, selected.data(), selected.size(), digest) != 0) return false;
    return std::string(reinterpret_cast<const char*>(digest), len) == r.data;
}

CertCheck verify_dane(const std::vector<std::string>& chain, const std::vector<TlsaRecord>& records,
                      const std::vector<std::string>& names) {
    CertCheck out;
    std::vector<CrtPtr> crts;
    if (std::string why = parse_chain(chain, crts); !why.empty()) {
        out.reason = why;
        return out;
    }
    // DANE-EE: the leaf alone; names and dates do not matter (RFC 7672 §3.1.1).
    for (const TlsaRecord& r : records) {
        if (!r.usable || r.usage != 3) continue;
        if (tlsa_matches(r, chain[0])) {
            out.ok = true;
            out.how = usage_name(r) + " at depth 0";
            return out;
        }
    }
    // DANE-TA: a certificate above the leaf that matches, then the chain up to it, then a name.
    std::string ta_failure;
    for (std::size_t depth = 1; depth < crts.size(); ++depth) {
        const TlsaRecord* match = nullptr;
        for (const TlsaRecord& r : records) {
            if (r.usable && r.usage == 2 && tlsa_matches(r, chain[depth])) {
                match = &r;
                break;
            }
        }
        if (!match) continue;
        // A copy of a certificate below it is no trust anchor (GnuTLS would trust the copy).
        bool repeated = false;
        for (std::size_t i = 0; i < depth; ++i) repeated = repeated || chain[i] == chain[depth];
        if (repeated) continue;
        gnutls_x509_trust_list_t raw = nullptr;
        if (gnutls_x509_trust_list_init(&raw, 0) != 0) {
            out.reason = "cannot create a trust list";
            return out;
        }
        TrustListPtr list(raw);
        CrtPtr anchor = parse(chain[depth]);
        gnutls_x509_crt_t ca = anchor.get();
        if (!anchor || gnutls_x509_trust_list_add_cas(raw, &ca, 1, 0) != 1) {
            out.reason = "cannot use the trust anchor";
            return out;
        }
        anchor.release();  // owned by the list now
        std::vector<gnutls_x509_crt_t> path;
        for (std::size_t i = 0; i < depth; ++i) path.push_back(crts[i].get());
        unsigned status = 0;
        // RFC 7671 §5.2.2: the trust anchor's own dates do not count; the rest of the chain's do.
        const int rc = gnutls_x509_trust_list_verify_crt2(
            raw, path.data(), static_cast<unsigned>(path.size()), nullptr, 0,
            GNUTLS_VERIFY_DISABLE_TRUSTED_TIME_CHECKS, &status, nullptr);
        if (rc != 0 || status != 0) {
            ta_failure = usage_name(*match) + " matches at depth " + std::to_string(depth) +
                         " but the chain does not verify: " +
                         (rc != 0 ? std::string(gnutls_strerror(rc)) : status_text(status));
            continue;
        }
        for (const std::string& name : names) {
            if (dane_name_matches(chain[0], name)) {
                out.ok = true;
                out.how = usage_name(*match) + " at depth " + std::to_string(depth) + ", name " +
                          name;
                return out;
            }
        }
        std::string list_text;
        for (const std::string& n : names) list_text += (list_text.empty() ? "" : ", ") + n;
        ta_failure = usage_name(*match) + " matches at depth " + std::to_string(depth) +
                     " but the certificate is not for " +
                     (names.empty() ? std::string("any reference name") : list_text);
    }
    out.reason = !ta_failure.empty() ? ta_failure : "no TLSA record matches the certificate chain";
    return out;
}

CertCheck verify_pkix(const std::vector<std::string>& chain, const std::string& ca_file,
                      const std::string& hostname) {
    CertCheck out;
    std::vector<CrtPtr> crts;
    if (std::string why = parse_chain(chain, crts); !why.empty()) {
        out.reason = why;
        return out;
    }
    gnutls_x509_trust_list_t raw = nullptr;
    if (gnutls_x509_trust_list_init(&raw, 0) != 0) {
        out.reason = "cannot create a trust list";
        return out;
    }
    TrustListPtr list(raw);
    const int added = ca_file.empty()
                          ? gnutls_x509_trust_list_add_system_trust(raw, 0, 0)
                          : gnutls_x509_trust_list_add_trust_file(raw, ca_file.c_str(), nullptr,
                                                                  GNUTLS_X509_FMT_PEM, 0, 0);
    if (added <= 0) {
        out.reason = ca_file.empty() ? "no CA certificates in the system trust store"
                                     : "no CA certificates in " + log::sanitize(ca_file);
        return out;
    }
    std::vector<gnutls_x509_crt_t> path;
    for (const auto& c : crts) path.push_back(c.get());
    gnutls_typed_vdata_st data[2] = {};
    data[0].type = GNUTLS_DT_DNS_HOSTNAME;
    data[0].data = reinterpret_cast<unsigned char*>(const_cast<char*>(hostname.c_str()));
    data[1].type = GNUTLS_DT_KEY_PURPOSE_OID;
    data[1].data = reinterpret_cast<unsigned char*>(const_cast<char*>(GNUTLS_KP_TLS_WWW_SERVER));
    unsigned status = 0;
    const int rc = gnutls_x509_trust_list_verify_crt2(
        raw, path.data(), static_cast<unsigned>(path.size()), data, 2, 0, &status, nullptr);
    if (rc != 0) {
        out.reason = std::string("verification failed: ") + gnutls_strerror(rc);
        return out;
    }
    if (status != 0) {
        out.reason = status_text(status);
        return out;
    }
    out.ok = true;
    out.how = "PKIX, name " + hostname;
    return out;
}

}  // namespace tlspolicy
