// Certificate checks of `tlspolicy probe`, on the DER chain a server sent (leaf first), with
// GnuTLS primitives and no sockets:
//  - DANE (RFC 7672 §3, RFC 7671): DANE-EE(3) matches the leaf certificate or public key and
//    ignores names and dates; DANE-TA(2) needs a certificate of the chain (depth ≥ 1) that
//    matches, a valid chain from the leaf up to it (its own dates ignored), and a leaf name
//    among the reference names. libgnutls-dane is not used for DANE-TA: it accepts a chain
//    whose intermediate the trust anchor never signed and checks no names.
//  - PKIX (RFC 8461 §4.2): a chain to the configured CA file or the system store, valid now,
//    for the MX host name.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dane.h"

namespace tlspolicy {

inline constexpr std::size_t kMaxProbeChain = 16;  // certificates examined per chain

// What a certificate says, for people (never judged).
struct CertSummary {
    std::string subject, issuer;  // RFC 4514 form, sanitized
    std::vector<std::string> dns_names;
    int64_t not_before = 0, not_after = 0;  // unix seconds
    std::string error;                      // when the DER could not be parsed
};
CertSummary describe_certificate(const std::string& der);

struct CertCheck {
    bool ok = false;
    std::string how;     // when ok: e.g. "DANE-EE 3 1 1 at depth 0", "PKIX"
    std::string reason;  // when not ok: short and printable
};

// DANE against `records` (only the usable ones count). `names`: the reference names for
// DANE-TA. Dates are checked against the clock.
CertCheck verify_dane(const std::vector<std::string>& chain, const std::vector<TlsaRecord>& records,
                      const std::vector<std::string>& names);

// PKIX to the CAs of `ca_file` ("" = the system trust store) for `hostname`, now, for a TLS
// server (extended key usage, when the certificate has one).
CertCheck verify_pkix(const std::vector<std::string>& chain, const std::string& ca_file,
                      const std::string& hostname);

// RFC 7672 §3.2.3: is the certificate for `name`? DNS-IDs (the CN only when there are none),
// case-insensitive, "*" only as the whole left-most label for exactly one label.
bool dane_name_matches(const std::string& der, const std::string& name);

// Does the TLSA record's association data match `der` (selector and matching type applied)?
bool tlsa_matches(const TlsaRecord& record, const std::string& der);

}  // namespace tlspolicy
