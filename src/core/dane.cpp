#include "core/dane.h"

#include <gnutls/abstract.h>
#include <gnutls/x509.h>

#include <algorithm>
#include <memory>

#include "util/json.h"

namespace tlspolicy {

namespace {

struct CrtFree {
    void operator()(gnutls_x509_crt_int* c) const { gnutls_x509_crt_deinit(c); }
};
struct PubkeyFree {
    void operator()(gnutls_pubkey_st* k) const { gnutls_pubkey_deinit(k); }
};

gnutls_datum_t datum(const std::string& s) {
    return {reinterpret_cast<unsigned char*>(const_cast<char*>(s.data())),
            static_cast<unsigned>(s.size())};
}

bool parses_as_certificate(const std::string& der) {
    gnutls_x509_crt_t raw = nullptr;
    if (gnutls_x509_crt_init(&raw) < 0) return false;
    std::unique_ptr<gnutls_x509_crt_int, CrtFree> crt(raw);
    const gnutls_datum_t d = datum(der);
    return gnutls_x509_crt_import(crt.get(), &d, GNUTLS_X509_FMT_DER) >= 0;
}

bool parses_as_public_key(const std::string& der) {
    gnutls_pubkey_t raw = nullptr;
    if (gnutls_pubkey_init(&raw) < 0) return false;
    std::unique_ptr<gnutls_pubkey_st, PubkeyFree> key(raw);
    const gnutls_datum_t d = datum(der);
    return gnutls_pubkey_import(key.get(), &d, GNUTLS_X509_FMT_DER) >= 0;
}

// "bogus", "servfail", "timeout (deadline)": what made a lookup fail, for reasons.
std::string failure_text(const DnsLookup& l) {
    std::string s = l.result == DnsResult::Data || l.result == DnsResult::NoData ||
                            l.result == DnsResult::NxDomain
                        ? std::string(dnssec_name(l.dnssec))
                        : std::string(dns_result_name(l.result));
    if (!l.reason.empty()) s += " (" + l.reason + ")";
    return s;
}

void lower_ttl(int64_t& ttl, const DnsLookup& l) {
    if (l.answered() && l.ttl >= 0 && (ttl < 0 || l.ttl < ttl)) ttl = l.ttl;
}

}  // namespace

bool DnsLookup::answered() const {
    const bool answer =
        result == DnsResult::Data || result == DnsResult::NoData || result == DnsResult::NxDomain;
    return answer && (dnssec == Dnssec::Secure || dnssec == Dnssec::Insecure);
}

std::string_view dnssec_name(Dnssec d) {
    switch (d) {
        case Dnssec::Secure:
            return "secure";
        case Dnssec::Insecure:
            return "insecure";
        case Dnssec::Bogus:
            return "bogus";
        case Dnssec::Indeterminate:
            return "indeterminate";
    }
    return "indeterminate";
}

std::string_view dns_result_name(DnsResult r) {
    switch (r) {
        case DnsResult::Data:
            return "data";
        case DnsResult::NoData:
            return "nodata";
        case DnsResult::NxDomain:
            return "nxdomain";
        case DnsResult::ServFail:
            return "servfail";
        case DnsResult::Refused:
            return "refused";
        case DnsResult::Timeout:
            return "timeout";
        case DnsResult::CnameLoop:
            return "cname-loop";
        case DnsResult::CnameTooLong:
            return "cname-chain-too-long";
        case DnsResult::Error:
            return "error";
    }
    return "error";
}

std::string_view rrtype_name(uint16_t type) {
    switch (type) {
        case kTypeA:
            return "A";
        case kTypeCname:
            return "CNAME";
        case kTypeMx:
            return "MX";
        case kTypeAaaa:
            return "AAAA";
        case kTypeTlsa:
            return "TLSA";
        case 6:
            return "SOA";
        case 16:
            return "TXT";
    }
    return "TYPE?";
}

std::string_view host_dane_name(HostDane h) {
    switch (h) {
        case HostDane::NoAddress:
            return "no-address";
        case HostDane::AddressError:
            return "address-error";
        case HostDane::Insecure:
            return "insecure-address";
        case HostDane::NoTlsa:
            return "no-tlsa";
        case HostDane::TlsaError:
            return "tlsa-error";
        case HostDane::Unusable:
            return "unusable-tlsa";
        case HostDane::Usable:
            return "usable-tlsa";
    }
    return "address-error";
}

std::string_view dane_verdict_name(DaneVerdict v) {
    switch (v) {
        case DaneVerdict::DaneOnly:
            return "dane-only";
        case DaneVerdict::Dane:
            return "dane";
        case DaneVerdict::Encrypt:
            return "encrypt";
        case DaneVerdict::NoDane:
            return "no-dane";
        case DaneVerdict::NotFound:
            return "not-found";
        case DaneVerdict::Temp:
            return "temp";
    }
    return "temp";
}

void judge_tlsa(TlsaRecord& r) {
    r.usable = false;
    r.why.clear();
    if (r.usage == 0 || r.usage == 1) {
        r.why = r.usage == 0 ? "PKIX-TA (usage 0) is not used for SMTP (RFC 7672 3.1.3)"
                             : "PKIX-EE (usage 1) is not used for SMTP (RFC 7672 3.1.3)";
        return;
    }
    if (r.usage != 2 && r.usage != 3) {
        r.why = "unknown certificate usage " + std::to_string(r.usage);
        return;
    }
    if (r.selector > 1) {
        r.why = "unknown selector " + std::to_string(r.selector);
        return;
    }
    switch (r.mtype) {
        case 0:
            if (r.selector == 0 ? !parses_as_certificate(r.data) : !parses_as_public_key(r.data)) {
                r.why = r.selector == 0 ? "full data is not a DER certificate"
                                        : "full data is not a DER public key";
                return;
            }
            break;
        case 1:
        case 2: {
            const std::size_t want = r.mtype == 1 ? 32 : 64;
            if (r.data.size() != want) {
                r.why = std::string(r.mtype == 1 ? "SHA2-256" : "SHA2-512") + " digest of " +
                        std::to_string(r.data.size()) + " bytes, want " + std::to_string(want);
                return;
            }
            break;
        }
        default:
            r.why = "unknown matching type " + std::to_string(r.mtype);
            return;
    }
    r.usable = true;
}

std::vector<std::string> tlsa_base_candidates(const HostFacts& host) {
    // Only called for hosts whose address lookups were secure, so the whole CNAME expansion
    // was secure; A and AAAA follow the same chain (A first when both have one).
    const DnsLookup& with_data = host.a.result == DnsResult::Data ? host.a : host.aaaa;
    std::vector<std::string> out;
    if (with_data.final_name() != host.name) out.push_back(with_data.final_name());
    out.push_back(host.name);
    return out;
}

std::vector<std::string> reference_names(const DaneFacts& facts, const HostFacts& host) {
    std::vector<std::string> names;
    auto add = [&](const std::string& n) {
        if (!n.empty() && std::find(names.begin(), names.end(), n) == names.end())
            names.push_back(n);
    };
    add(host.base_domain);
    if (facts.mx.secure()) {
        add(facts.domain);
        add(facts.mx.final_name());
    }
    return names;
}

HostDane classify_host(const HostFacts& h) {
    if (!h.addresses_done || h.a.failed() || h.aaaa.failed()) return HostDane::AddressError;
    if (h.a.result != DnsResult::Data && h.aaaa.result != DnsResult::Data)
        return HostDane::NoAddress;
    if (!h.a.secure() || !h.aaaa.secure()) return HostDane::Insecure;
    // Secure addresses always lead to a TLSA lookup; none recorded means it never finished.
    if (h.tlsa.empty()) return HostDane::TlsaError;
    const DnsLookup& last = h.tlsa.back();
    if (last.failed()) return HostDane::TlsaError;
    if (last.secure() && last.result == DnsResult::Data) {
        const bool usable = std::any_of(last.tlsa.begin(), last.tlsa.end(),
                                        [](const TlsaRecord& r) { return r.usable; });
        return usable ? HostDane::Usable : HostDane::Unusable;
    }
    return HostDane::NoTlsa;
}

DaneDecision decide_dane(const DaneFacts& f, const TtlBounds& b) {
    auto clamp = [&](int64_t ttl, int64_t fallback) {
        return std::clamp(ttl < 0 ? fallback : ttl, b.min_ttl, std::max(b.min_ttl, b.max_ttl));
    };
    auto make = [](DaneVerdict v, std::string rule, std::string reason, int64_t ttl) {
        return DaneDecision{v, std::move(rule), std::move(reason), ttl, false};
    };

    // The MX set itself: without it no server can be chosen (RFC 7672 2.1: delay delivery).
    if (f.mx.failed())
        return make(DaneVerdict::Temp, "mx-lookup-failed",
                    "MX lookup for " + f.domain + " failed: " + failure_text(f.mx), 0);
    if (f.mx.result == DnsResult::NxDomain)
        return make(
            DaneVerdict::NotFound, "nxdomain",
            std::string(dnssec_name(f.mx.dnssec)) + " NXDOMAIN: " + f.domain + " does not exist",
            clamp(f.mx.ttl, b.negative_ttl));
    if (f.null_mx)
        return make(DaneVerdict::NotFound, "null-mx",
                    "null MX (RFC 7505): " + f.domain + " accepts no mail",
                    clamp(f.mx.ttl, b.negative_ttl));

    int64_t ttl = -1;
    lower_ttl(ttl, f.mx);
    std::size_t usable = 0, unusable = 0, errors = 0, no_address = 0, plain = 0;
    std::string first_error, first_plain;
    for (const auto& h : f.hosts) {
        lower_ttl(ttl, h.a);
        lower_ttl(ttl, h.aaaa);
        for (const auto& t : h.tlsa)
            lower_ttl(ttl, t);
        switch (classify_host(h)) {
            case HostDane::Usable:
                ++usable;
                break;
            case HostDane::Unusable:
                ++unusable;
                break;
            case HostDane::AddressError:
            case HostDane::TlsaError:
                if (errors++ == 0) first_error = h.name;
                break;
            case HostDane::NoAddress:
                ++no_address;
                break;
            case HostDane::Insecure:
            case HostDane::NoTlsa:
                if (plain++ == 0) first_plain = h.name;
                break;
        }
    }
    const int64_t life = clamp(ttl, b.min_ttl);
    const std::size_t counted = f.hosts.size() - no_address;
    const bool capped = f.mx_hosts > f.hosts.size();
    const std::string of_hosts = std::to_string(counted) + " MX host(s)";

    if (!f.mx.secure()) {
        // RFC 7672 2.2.1: an insecure MX set gives no DANE guarantee; a secure TLSA RRset of
        // a host is still worth `dane` (smart MX, Postfix's smtp_tls_dane_insecure_mx_policy).
        // Lookup errors here are not worth a deferral: an attacker who could cause them could
        // as well rewrite the insecure MX set.
        if (usable + unusable > 0)
            return make(DaneVerdict::Dane, "smart-mx",
                        "insecure MX set, but " + std::to_string(usable + unusable) +
                            " MX host(s) have a secure TLSA RRset",
                        life);
        return make(DaneVerdict::NoDane, "insecure-mx",
                    std::string(f.implicit_mx ? "insecure implicit MX" : "insecure MX set") +
                        " and no secure TLSA RRset",
                    life);
    }
    if (counted == 0)
        return make(DaneVerdict::NoDane, "no-host-address",
                    "secure MX set, but no MX host has an address", life);
    if (usable == counted && !capped)
        return make(DaneVerdict::DaneOnly, "all-usable",
                    "secure MX set, usable TLSA on all " + of_hosts, life);
    if (unusable == counted && !capped)
        return make(DaneVerdict::Encrypt, "all-unusable",
                    "secure MX set, secure TLSA RRsets without a usable record on all " + of_hosts,
                    life);
    if (usable + unusable + errors > 0) {
        DaneDecision d;
        if (errors > 0) {
            d = make(DaneVerdict::Dane, "tlsa-unfinished",
                     "secure MX set, DANE lookups for " + std::to_string(errors) +
                         " MX host(s) failed (first: " + first_error + "); Postfix defers those",
                     life);
            d.unfinished = true;
        } else if (capped && plain == 0) {
            d = make(DaneVerdict::Dane, "too-many-mx",
                     "secure MX set with " + std::to_string(f.mx_hosts) +
                         " hosts; only the first " + std::to_string(f.hosts.size()) +
                         " were examined, so not dane-only",
                     life);
        } else {
            std::string why = "secure MX set; of " + of_hosts + ": " + std::to_string(usable) +
                              " with usable TLSA, " + std::to_string(unusable) +
                              " with only unusable TLSA, " + std::to_string(plain) + " without";
            if (!first_plain.empty()) why += " (first without: " + first_plain + ")";
            d = make(DaneVerdict::Dane, "partial", why, life);
        }
        return d;
    }
    return make(DaneVerdict::NoDane, "no-tlsa", "secure MX set, no MX host has a secure TLSA RRset",
                life);
}

namespace {

void json_key(std::string& out, std::string_view key) {
    json_append_string(out, key);
    out += ':';
}

std::string hex(const std::string& bytes) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (unsigned char c : bytes) {
        out += digits[c >> 4];
        out += digits[c & 15];
    }
    return out;
}

void json_lookup(std::string& out, const DnsLookup& l) {
    out += '{';
    json_key(out, "name");
    json_append_string(out, l.name);
    out += ',';
    json_key(out, "type");
    json_append_string(out, rrtype_name(l.type));
    out += ',';
    json_key(out, "result");
    json_append_string(out, dns_result_name(l.result));
    out += ',';
    json_key(out, "dnssec");
    json_append_string(out, dnssec_name(l.dnssec));
    out += ',';
    json_key(out, "ttl");
    out += l.ttl >= 0 ? std::to_string(l.ttl) : "null";
    if (!l.cnames.empty()) {
        out += ',';
        json_key(out, "cnames");
        json_append_strings(out, l.cnames);
    }
    if (!l.reason.empty()) {
        out += ',';
        json_key(out, "reason");
        json_append_string(out, l.reason);
    }
    if (!l.resolver.empty()) {
        out += ',';
        json_key(out, "resolver");
        json_append_string(out, l.resolver);
    }
    if (l.type == kTypeMx && l.result == DnsResult::Data) {
        out += ',';
        json_key(out, "mx");
        out += '[';
        for (std::size_t i = 0; i < l.mx.size(); ++i) {
            if (i) out += ',';
            out += "{\"preference\":" + std::to_string(l.mx[i].preference) + ",\"host\":";
            json_append_string(out, l.mx[i].host.empty() ? "." : l.mx[i].host);
            out += '}';
        }
        out += ']';
    }
    if (!l.addresses.empty()) {
        out += ',';
        json_key(out, "addresses");
        json_append_strings(out, l.addresses);
    }
    if (!l.tlsa.empty()) {
        out += ',';
        json_key(out, "records");
        out += '[';
        for (std::size_t i = 0; i < l.tlsa.size(); ++i) {
            const auto& r = l.tlsa[i];
            if (i) out += ',';
            out += '{';
            json_key(out, "rdata");
            json_append_string(out, std::to_string(r.usage) + " " + std::to_string(r.selector) +
                                        " " + std::to_string(r.mtype) + " " + hex(r.data));
            out += ",\"usable\":";
            out += r.usable ? "true" : "false";
            if (!r.why.empty()) {
                out += ',';
                json_key(out, "why");
                json_append_string(out, r.why);
            }
            out += '}';
        }
        out += ']';
    }
    if (!l.txt.empty()) {
        out += ',';
        json_key(out, "txt");
        json_append_strings(out, l.txt);
    }
    out += '}';
}

}  // namespace

std::string dns_lookup_json(const DnsLookup& l) {
    std::string out;
    json_lookup(out, l);
    return out;
}

std::string dane_facts_json(const DaneFacts& f, const DaneDecision& d) {
    std::string out = "{";
    json_key(out, "verdict");
    json_append_string(out, dane_verdict_name(d.verdict));
    out += ',';
    json_key(out, "rule");
    json_append_string(out, d.rule);
    out += ',';
    json_key(out, "reason");
    json_append_string(out, d.reason);
    out += ",\"ttl\":" + std::to_string(d.ttl);
    out += ",\"unfinished\":";
    out += d.unfinished ? "true" : "false";
    out += ',';
    json_key(out, "domain");
    json_append_string(out, f.domain);
    out += ',';
    json_key(out, "mx_lookup");
    json_lookup(out, f.mx);
    out += ",\"implicit_mx\":";
    out += f.implicit_mx ? "true" : "false";
    out += ",\"null_mx\":";
    out += f.null_mx ? "true" : "false";
    out += ",\"mx_hosts\":" + std::to_string(f.mx_hosts);
    out += ",\"deadline_reached\":";
    out += f.deadline_reached ? "true" : "false";
    out += ",\"hosts\":[";
    for (std::size_t i = 0; i < f.hosts.size(); ++i) {
        const auto& h = f.hosts[i];
        if (i) out += ',';
        out += '{';
        json_key(out, "name");
        json_append_string(out, h.name);
        out += ",\"preference\":" + std::to_string(h.preference) + ",";
        json_key(out, "dane");
        json_append_string(out, host_dane_name(classify_host(h)));
        out += ',';
        json_key(out, "lookups");
        out += '[';
        bool first = true;
        for (const DnsLookup* l : {&h.a, &h.aaaa}) {
            if (l->type == 0) continue;  // never started (deadline)
            if (!first) out += ',';
            first = false;
            json_lookup(out, *l);
        }
        for (const auto& t : h.tlsa) {
            if (!first) out += ',';
            first = false;
            json_lookup(out, t);
        }
        out += ']';
        if (!h.base_domain.empty()) {
            out += ',';
            json_key(out, "tlsa_base_domain");
            json_append_string(out, h.base_domain);
            out += ',';
            json_key(out, "reference_names");
            json_append_strings(out, h.reference_names);
        }
        out += '}';
    }
    out += "]}";
    return out;
}

}  // namespace tlspolicy
