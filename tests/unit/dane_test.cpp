// Table-driven tests for the DANE half of the decision table (src/core/dane.h,
// architecture.md §1 "decision table" and §2 "Freshness"). Facts are built by hand: no sockets,
// no DNS, no sleeps. Real DER data for TLSA matching type 0 is generated with GnuTLS.
#include "core/dane.h"

#include <doctest/doctest.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include "gnutls_raii.h"
#include "got_want.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

using namespace tlspolicy;
using namespace std::string_literals;  // "..."s keeps embedded NUL bytes

namespace {

using testutil::got_want;
using testutil::printable_ascii;

// ---------------------------------------------------------------------------------------------
// "got X, want Y" messages

std::string s(DaneVerdict v) {
    return std::string(dane_verdict_name(v));
}
std::string s(HostDane h) {
    return std::string(host_dane_name(h));
}

// ---------------------------------------------------------------------------------------------
// DnsLookup builders

constexpr int64_t kTtl = 3600;
const std::string kDomain = "example.com";

DnsLookup lookup(const std::string& name, uint16_t type, DnsResult result, Dnssec dnssec,
                 int64_t ttl, std::string reason = "") {
    DnsLookup l;
    l.name = name;
    l.type = type;
    l.result = result;
    l.dnssec = dnssec;
    l.ttl = ttl;
    l.reason = std::move(reason);
    if (result == DnsResult::Data && type == kTypeA) l.addresses = {"192.0.2.25"};
    if (result == DnsResult::Data && type == kTypeAaaa) l.addresses = {"2001:db8::25"};
    return l;
}

DnsLookup secure_data(const std::string& name, uint16_t type, int64_t ttl = kTtl) {
    return lookup(name, type, DnsResult::Data, Dnssec::Secure, ttl);
}
DnsLookup insecure_data(const std::string& name, uint16_t type, int64_t ttl = kTtl) {
    return lookup(name, type, DnsResult::Data, Dnssec::Insecure, ttl);
}
DnsLookup secure_nodata(const std::string& name, uint16_t type, int64_t ttl = kTtl) {
    return lookup(name, type, DnsResult::NoData, Dnssec::Secure, ttl);
}
DnsLookup insecure_nodata(const std::string& name, uint16_t type, int64_t ttl = kTtl) {
    return lookup(name, type, DnsResult::NoData, Dnssec::Insecure, ttl);
}
DnsLookup secure_nxdomain(const std::string& name, uint16_t type, int64_t ttl = kTtl) {
    return lookup(name, type, DnsResult::NxDomain, Dnssec::Secure, ttl);
}
DnsLookup insecure_nxdomain(const std::string& name, uint16_t type, int64_t ttl = kTtl) {
    return lookup(name, type, DnsResult::NxDomain, Dnssec::Insecure, ttl);
}
// Failures carry a TTL on purpose: it must never reach the verdict's lifetime.
DnsLookup bogus(const std::string& name, uint16_t type, int64_t ttl = 7) {
    return lookup(name, type, DnsResult::Data, Dnssec::Bogus, ttl, "signature expired");
}
DnsLookup bogus_nxdomain(const std::string& name, uint16_t type, int64_t ttl = 7) {
    return lookup(name, type, DnsResult::NxDomain, Dnssec::Bogus, ttl, "bad NSEC3 proof");
}
DnsLookup indeterminate(const std::string& name, uint16_t type, int64_t ttl = 7) {
    return lookup(name, type, DnsResult::Data, Dnssec::Indeterminate, ttl);
}
DnsLookup servfail(const std::string& name, uint16_t type, int64_t ttl = 7) {
    return lookup(name, type, DnsResult::ServFail, Dnssec::Indeterminate, ttl, "SERVFAIL");
}
DnsLookup refused(const std::string& name, uint16_t type) {
    return lookup(name, type, DnsResult::Refused, Dnssec::Indeterminate, -1, "REFUSED");
}
DnsLookup timeout(const std::string& name, uint16_t type) {
    return lookup(name, type, DnsResult::Timeout, Dnssec::Indeterminate, -1,
                  "per-domain deadline reached");
}
DnsLookup dns_error(const std::string& name, uint16_t type) {
    return lookup(name, type, DnsResult::Error, Dnssec::Indeterminate, -1, "bad reply");
}
DnsLookup cname_loop(const std::string& name, uint16_t type) {
    DnsLookup l = lookup(name, type, DnsResult::CnameLoop, Dnssec::Secure, 7, "loop");
    l.cnames = {"a." + name, name};
    return l;
}
DnsLookup cname_too_long(const std::string& name, uint16_t type) {
    DnsLookup l = lookup(name, type, DnsResult::CnameTooLong, Dnssec::Secure, 7, "too long");
    for (std::size_t i = 0; i <= kMaxCnameLinks; ++i)
        l.cnames.push_back("c" + std::to_string(i) + "." + name);
    return l;
}

// Every way a lookup can fail, for the exhaustive checks.
using FailFn = DnsLookup (*)(const std::string&, uint16_t);
struct Failure {
    const char* name;
    FailFn make;
};
const std::vector<Failure>& failures() {
    static const std::vector<Failure> all = {
        {"bogus", [](const std::string& n, uint16_t t) { return bogus(n, t); }},
        {"bogus-nxdomain", [](const std::string& n, uint16_t t) { return bogus_nxdomain(n, t); }},
        {"indeterminate", [](const std::string& n, uint16_t t) { return indeterminate(n, t); }},
        {"servfail", [](const std::string& n, uint16_t t) { return servfail(n, t); }},
        {"refused", refused},
        {"timeout", timeout},
        {"error", dns_error},
        {"cname-loop", cname_loop},
        {"cname-too-long", cname_too_long},
    };
    return all;
}

// ---------------------------------------------------------------------------------------------
// TLSA records and RRsets

TlsaRecord record(uint8_t usage, uint8_t selector, uint8_t mtype, std::string data) {
    TlsaRecord r;
    r.usage = usage;
    r.selector = selector;
    r.mtype = mtype;
    r.data = std::move(data);
    judge_tlsa(r);
    return r;
}
TlsaRecord usable_record() {
    return record(3, 1, 1, std::string(32, '\xab'));  // DANE-EE SPKI SHA2-256
}
TlsaRecord unusable_record() {
    return record(1, 1, 1, std::string(32, '\xab'));  // PKIX-EE: not for SMTP
}

std::string tlsa_name(const std::string& base) {
    return "_25._tcp." + base;
}
DnsLookup tlsa_rrset(const std::string& base, std::vector<TlsaRecord> records,
                     Dnssec dnssec = Dnssec::Secure, int64_t ttl = kTtl) {
    DnsLookup l = lookup(tlsa_name(base), kTypeTlsa, DnsResult::Data, dnssec, ttl);
    l.tlsa = std::move(records);
    return l;
}

// ---------------------------------------------------------------------------------------------
// HostFacts builders

HostFacts host_with(const std::string& name, DnsLookup a, DnsLookup aaaa,
                    std::vector<DnsLookup> tlsa = {}) {
    HostFacts h;
    h.name = name;
    h.preference = 10;
    h.a = std::move(a);
    h.aaaa = std::move(aaaa);
    h.addresses_done = true;
    h.tlsa = std::move(tlsa);
    if (!h.tlsa.empty() && h.tlsa.back().secure() && h.tlsa.back().result == DnsResult::Data) {
        const std::string& found = h.tlsa.back().name;
        h.base_domain = found.substr(tlsa_name("").size());
    }
    return h;
}

// Secure A data and secure AAAA denial: the addresses Postfix may use are DNSSEC-validated.
HostFacts secure_host(const std::string& name, std::vector<DnsLookup> tlsa, int64_t ttl = kTtl) {
    return host_with(name, secure_data(name, kTypeA, ttl), secure_nodata(name, kTypeAaaa, ttl),
                     std::move(tlsa));
}
HostFacts usable_host(const std::string& name, int64_t ttl = kTtl) {
    return secure_host(name, {tlsa_rrset(name, {usable_record()}, Dnssec::Secure, ttl)}, ttl);
}
HostFacts unusable_host(const std::string& name, int64_t ttl = kTtl) {
    return secure_host(name, {tlsa_rrset(name, {unusable_record()}, Dnssec::Secure, ttl)}, ttl);
}
// Secure addresses, TLSA securely denied.
HostFacts no_tlsa_host(const std::string& name, int64_t ttl = kTtl) {
    return secure_host(name, {secure_nxdomain(tlsa_name(name), kTypeTlsa, ttl)}, ttl);
}
// Secure addresses, but the TLSA RRset itself is in an unsigned zone.
HostFacts insecure_tlsa_host(const std::string& name) {
    return secure_host(name, {tlsa_rrset(name, {usable_record()}, Dnssec::Insecure)});
}
HostFacts tlsa_failed_host(const std::string& name, DnsLookup failed) {
    return secure_host(name, {std::move(failed)});
}
// Insecure addresses: TLSA is never consulted.
HostFacts insecure_host(const std::string& name, int64_t ttl = kTtl) {
    return host_with(name, insecure_data(name, kTypeA, ttl), insecure_nodata(name, kTypeAaaa, ttl));
}
// Securely no address at all: cannot receive mail.
HostFacts no_address_host(const std::string& name, int64_t ttl = kTtl) {
    return host_with(name, secure_nodata(name, kTypeA, ttl), secure_nodata(name, kTypeAaaa, ttl));
}
HostFacts a_failed_host(const std::string& name, DnsLookup failed_a) {
    return host_with(name, std::move(failed_a), secure_nodata(name, kTypeAaaa));
}
HostFacts aaaa_failed_host(const std::string& name, DnsLookup failed_aaaa) {
    return host_with(name, secure_data(name, kTypeA), std::move(failed_aaaa));
}
// The deadline came before both address lookups were answered; A never even started.
HostFacts addresses_unfinished_host(const std::string& name) {
    HostFacts h;
    h.name = name;
    h.preference = 10;
    h.aaaa = timeout(name, kTypeAaaa);
    h.addresses_done = false;
    return h;
}
// Secure addresses, yet no TLSA lookup recorded: it never finished.
HostFacts tlsa_missing_host(const std::string& name) {
    return secure_host(name, {});
}

// ---------------------------------------------------------------------------------------------
// DaneFacts builders

DaneFacts facts_with(DnsLookup mx, std::vector<HostFacts> hosts) {
    DaneFacts f;
    f.domain = kDomain;
    f.mx = std::move(mx);
    if (f.mx.result == DnsResult::Data) {
        for (const auto& h : hosts)
            f.mx.mx.push_back({h.preference, h.name});
    }
    f.mx_hosts = hosts.size();
    f.hosts = std::move(hosts);
    return f;
}
DaneFacts secure_mx(std::vector<HostFacts> hosts, int64_t ttl = kTtl) {
    return facts_with(secure_data(kDomain, kTypeMx, ttl), std::move(hosts));
}
DaneFacts insecure_mx(std::vector<HostFacts> hosts, int64_t ttl = kTtl) {
    return facts_with(insecure_data(kDomain, kTypeMx, ttl), std::move(hosts));
}
// The MX lookup failed: the hosts are what a stale/partial gathering might still hold.
DaneFacts failed_mx(DnsLookup mx) {
    return facts_with(std::move(mx), {usable_host("mx1.example.com")});
}
DaneFacts nxdomain_mx(Dnssec dnssec, int64_t ttl) {
    return facts_with(lookup(kDomain, kTypeMx, DnsResult::NxDomain, dnssec, ttl), {});
}
DaneFacts null_mx(Dnssec dnssec, int64_t ttl) {
    DaneFacts f = facts_with(lookup(kDomain, kTypeMx, DnsResult::Data, dnssec, ttl), {});
    f.mx.mx = {{0, ""}};
    f.null_mx = true;
    return f;
}
// No MX records: the domain is its own (only) host.
DaneFacts implicit_mx(Dnssec dnssec, HostFacts host) {
    host.preference = 0;
    DaneFacts f = facts_with(lookup(kDomain, kTypeMx, DnsResult::NoData, dnssec, kTtl), {});
    f.implicit_mx = true;
    f.mx_hosts = 1;
    f.hosts = {std::move(host)};
    return f;
}
// More MX hosts than examined.
DaneFacts capped(DaneFacts f, std::size_t mx_hosts) {
    f.mx_hosts = mx_hosts;
    return f;
}
std::vector<HostFacts> hosts_of(std::size_t n, HostFacts (*make)(const std::string&, int64_t)) {
    std::vector<HostFacts> out;
    for (std::size_t i = 0; i < n; ++i)
        out.push_back(make("mx" + std::to_string(i + 1) + ".example.com", kTtl));
    return out;
}

// A host with its own TTL per lookup (A, AAAA, TLSA), for the freshness rows.
HostFacts usable_host_ttls(const std::string& name, int64_t a, int64_t aaaa, int64_t tlsa) {
    return host_with(name, secure_data(name, kTypeA, a), secure_nodata(name, kTypeAaaa, aaaa),
                     {tlsa_rrset(name, {usable_record()}, Dnssec::Secure, tlsa)});
}
// A host reached through a CNAME: TLSA tried at the expanded name first, then at the name.
HostFacts cname_host(const std::string& name, const std::string& target,
                     std::vector<DnsLookup> tlsa) {
    HostFacts h = secure_host(name, std::move(tlsa));
    h.a.cnames = {target};
    h.aaaa.cnames = {target};
    return h;
}

bool has_bogus(const DaneFacts& f) {
    auto bad = [](const DnsLookup& l) { return l.dnssec == Dnssec::Bogus; };
    if (bad(f.mx)) return true;
    for (const auto& h : f.hosts) {
        if (bad(h.a) || bad(h.aaaa)) return true;
        for (const auto& t : h.tlsa)
            if (bad(t)) return true;
    }
    return false;
}

// ---------------------------------------------------------------------------------------------
// decide_dane rows

constexpr auto DaneOnly = DaneVerdict::DaneOnly;
constexpr auto Dane = DaneVerdict::Dane;
constexpr auto Encrypt = DaneVerdict::Encrypt;
constexpr auto NoDane = DaneVerdict::NoDane;
constexpr auto NotFound = DaneVerdict::NotFound;
constexpr auto Temp = DaneVerdict::Temp;

struct DecideRow {
    std::string name;
    DaneFacts facts;
    DaneVerdict verdict;
    std::string rule;
    bool unfinished;
    int64_t ttl;
    TtlBounds bounds{};
};

const std::string mx1 = "mx1.example.com", mx2 = "mx2.example.com", mx3 = "mx3.example.com";

std::vector<DecideRow> decide_rows() {
    std::vector<DecideRow> rows = {
        // --- the MX lookup failed: TEMP, never cached, whatever the hosts say
        {"mx bogus", failed_mx(bogus(kDomain, kTypeMx)), Temp, "mx-lookup-failed", false, 0},
        {"mx bogus NXDOMAIN is not a denial", failed_mx(bogus_nxdomain(kDomain, kTypeMx)), Temp,
         "mx-lookup-failed", false, 0},
        {"mx indeterminate", failed_mx(indeterminate(kDomain, kTypeMx)), Temp, "mx-lookup-failed",
         false, 0},
        {"mx servfail", failed_mx(servfail(kDomain, kTypeMx)), Temp, "mx-lookup-failed", false,
         0},
        {"mx refused", failed_mx(refused(kDomain, kTypeMx)), Temp, "mx-lookup-failed", false, 0},
        {"mx timeout", failed_mx(timeout(kDomain, kTypeMx)), Temp, "mx-lookup-failed", false, 0},
        {"mx error", failed_mx(dns_error(kDomain, kTypeMx)), Temp, "mx-lookup-failed", false, 0},
        {"mx CNAME loop", failed_mx(cname_loop(kDomain, kTypeMx)), Temp, "mx-lookup-failed",
         false, 0},
        {"mx CNAME chain too long", failed_mx(cname_too_long(kDomain, kTypeMx)), Temp,
         "mx-lookup-failed", false, 0},
        {"bogus null MX is not a null MX",
         null_mx(Dnssec::Bogus, kTtl), Temp, "mx-lookup-failed", false, 0},

        // --- the domain receives no mail: not found, cached
        {"secure NXDOMAIN", nxdomain_mx(Dnssec::Secure, 600), NotFound, "nxdomain", false, 600},
        {"insecure NXDOMAIN", nxdomain_mx(Dnssec::Insecure, 600), NotFound, "nxdomain", false,
         600},
        {"NXDOMAIN without a known ttl uses negative_ttl", nxdomain_mx(Dnssec::Secure, -1),
         NotFound, "nxdomain", false, 1800},
        {"NXDOMAIN ttl 5 raised to min_ttl", nxdomain_mx(Dnssec::Insecure, 5), NotFound,
         "nxdomain", false, 180},
        {"NXDOMAIN huge ttl cut to max_ttl", nxdomain_mx(Dnssec::Secure, 10'000'000), NotFound,
         "nxdomain", false, 86400},
        {"NXDOMAIN negative_ttl below min_ttl is clamped", nxdomain_mx(Dnssec::Secure, -1),
         NotFound, "nxdomain", false, 60, TtlBounds{60, 86400, 30}},
        {"NXDOMAIN negative_ttl above max_ttl is clamped", nxdomain_mx(Dnssec::Secure, -1),
         NotFound, "nxdomain", false, 900, TtlBounds{60, 900, 7200}},
        {"secure null MX", null_mx(Dnssec::Secure, kTtl), NotFound, "null-mx", false, kTtl},
        {"insecure null MX", null_mx(Dnssec::Insecure, kTtl), NotFound, "null-mx", false, kTtl},
        {"null MX without a known ttl uses negative_ttl", null_mx(Dnssec::Secure, -1), NotFound,
         "null-mx", false, 1800},

        // --- secure MX set: dane-only / encrypt / dane / no-dane
        {"secure MX, one usable host", secure_mx({usable_host(mx1)}), DaneOnly, "all-usable",
         false, kTtl},
        {"secure MX, three usable hosts", secure_mx(hosts_of(3, usable_host)), DaneOnly,
         "all-usable", false, kTtl},
        {"secure MX, 16 usable hosts of 16", secure_mx(hosts_of(16, usable_host)), DaneOnly,
         "all-usable", false, kTtl},
        {"secure MX, 17 hosts, 16 examined, all usable",
         capped(secure_mx(hosts_of(16, usable_host)), 17), Dane, "too-many-mx", false, kTtl},
        {"secure MX, 17 hosts, 16 examined, all unusable",
         capped(secure_mx(hosts_of(16, unusable_host)), 17), Dane, "too-many-mx", false, kTtl},
        {"secure MX, 17 hosts, 16 examined, one without TLSA", [] {
             DaneFacts f = capped(secure_mx(hosts_of(16, usable_host)), 17);
             f.hosts[7] = no_tlsa_host(f.hosts[7].name);
             return f;
         }(),
         Dane, "partial", false, kTtl},
        {"secure MX, 17 hosts, 16 examined, one TLSA timeout", [] {
             DaneFacts f = capped(secure_mx(hosts_of(16, usable_host)), 17);
             f.hosts[3] = tlsa_failed_host(f.hosts[3].name,
                                           timeout(tlsa_name(f.hosts[3].name), kTypeTlsa));
             return f;
         }(),
         Dane, "tlsa-unfinished", true, kTtl},
        {"secure MX, all unusable", secure_mx({unusable_host(mx1), unusable_host(mx2)}), Encrypt,
         "all-unusable", false, kTtl},
        {"secure MX, unusable + no address", secure_mx({unusable_host(mx1), no_address_host(mx2)}),
         Encrypt, "all-unusable", false, kTtl},
        {"secure MX, usable + unusable", secure_mx({usable_host(mx1), unusable_host(mx2)}), Dane,
         "partial", false, kTtl},
        {"secure MX, usable + no TLSA", secure_mx({usable_host(mx1), no_tlsa_host(mx2)}), Dane,
         "partial", false, kTtl},
        {"secure MX, usable + insecure TLSA RRset",
         secure_mx({usable_host(mx1), insecure_tlsa_host(mx2)}), Dane, "partial", false, kTtl},
        {"secure MX, usable + insecure addresses",
         secure_mx({usable_host(mx1), insecure_host(mx2)}), Dane, "partial", false, kTtl},
        {"secure MX, unusable + no TLSA", secure_mx({unusable_host(mx1), no_tlsa_host(mx2)}), Dane,
         "partial", false, kTtl},
        {"secure MX, TLSA bogus on one host",
         secure_mx({usable_host(mx1), tlsa_failed_host(mx2, bogus(tlsa_name(mx2), kTypeTlsa))}),
         Dane, "tlsa-unfinished", true, kTtl},
        {"secure MX, TLSA servfail on one host",
         secure_mx({usable_host(mx1), tlsa_failed_host(mx2, servfail(tlsa_name(mx2), kTypeTlsa))}),
         Dane, "tlsa-unfinished", true, kTtl},
        {"secure MX, TLSA timeout on one host",
         secure_mx({usable_host(mx1), tlsa_failed_host(mx2, timeout(tlsa_name(mx2), kTypeTlsa))}),
         Dane, "tlsa-unfinished", true, kTtl},
        {"secure MX, TLSA indeterminate on one host",
         secure_mx({tlsa_failed_host(mx1, indeterminate(tlsa_name(mx1), kTypeTlsa)),
                    usable_host(mx2)}),
         Dane, "tlsa-unfinished", true, kTtl},
        {"secure MX, TLSA lookup never recorded",
         secure_mx({usable_host(mx1), tlsa_missing_host(mx2)}),
         Dane, "tlsa-unfinished", true, kTtl},
        {"secure MX, A bogus on one host",
         secure_mx({usable_host(mx1), a_failed_host(mx2, bogus(mx2, kTypeA))}), Dane,
         "tlsa-unfinished", true, kTtl},
        {"secure MX, AAAA timeout on one host",
         secure_mx({usable_host(mx1), aaaa_failed_host(mx2, timeout(mx2, kTypeAaaa))}), Dane,
         "tlsa-unfinished", true, kTtl},
        {"secure MX, address lookups cut by the deadline",
         secure_mx({usable_host(mx1), addresses_unfinished_host(mx2)}), Dane, "tlsa-unfinished",
         true, kTtl},
        {"secure MX, only host has a bogus A",
         secure_mx({a_failed_host(mx1, bogus(mx1, kTypeA))}), Dane, "tlsa-unfinished", true, kTtl},
        {"secure MX, insecure hosts + one TLSA bogus",
         secure_mx({insecure_host(mx1), tlsa_failed_host(mx2, bogus(tlsa_name(mx2), kTypeTlsa))}),
         Dane, "tlsa-unfinished", true, kTtl},
        {"secure MX, no TLSA + one A servfail",
         secure_mx({no_tlsa_host(mx1), a_failed_host(mx2, servfail(mx2, kTypeA))}), Dane,
         "tlsa-unfinished", true, kTtl},
        {"secure MX, unusable + TLSA error is unfinished, not encrypt",
         secure_mx({unusable_host(mx1), tlsa_failed_host(mx2, timeout(tlsa_name(mx2), kTypeTlsa))}),
         Dane, "tlsa-unfinished", true, kTtl},
        {"secure MX, usable + secure no-address host",
         secure_mx({usable_host(mx1), no_address_host(mx2)}),
         DaneOnly, "all-usable", false, kTtl},
        {"secure MX, usable + host securely NXDOMAIN", [] {
             HostFacts gone = host_with(mx2, secure_nxdomain(mx2, kTypeA),
                                        secure_nxdomain(mx2, kTypeAaaa));
             return secure_mx({usable_host(mx1), std::move(gone)});
         }(),
         DaneOnly, "all-usable", false, kTtl},
        {"secure MX, all hosts insecure addresses",
         secure_mx({insecure_host(mx1), insecure_host(mx2)}),
         NoDane, "no-tlsa", false, kTtl},
        {"secure MX, no TLSA anywhere", secure_mx({no_tlsa_host(mx1), no_tlsa_host(mx2)}), NoDane,
         "no-tlsa", false, kTtl},
        {"secure MX, no TLSA + insecure + insecure TLSA",
         secure_mx({no_tlsa_host(mx1), insecure_host(mx2), insecure_tlsa_host(mx3)}), NoDane,
         "no-tlsa", false, kTtl},
        {"secure MX, TLSA secure NODATA",
         secure_mx({secure_host(mx1, {secure_nodata(tlsa_name(mx1), kTypeTlsa)})}),
         NoDane, "no-tlsa", false, kTtl},
        {"secure MX, no host has an address",
         secure_mx({no_address_host(mx1), no_address_host(mx2)}),
         NoDane, "no-host-address", false, kTtl},
        {"secure MX, no hosts at all", secure_mx({}), NoDane, "no-host-address", false, kTtl},

        // --- TLSA base domain candidates: the decision follows the last lookup
        {"secure MX, CNAME host, insecure at target, usable at name",
         secure_mx({cname_host(mx1, "real.example.net",
                               {insecure_nodata(tlsa_name("real.example.net"), kTypeTlsa),
                                tlsa_rrset(mx1, {usable_record()})})}),
         DaneOnly, "all-usable", false, kTtl},
        {"secure MX, CNAME host, usable at target",
         secure_mx({cname_host(mx1, "real.example.net",
                               {tlsa_rrset("real.example.net", {usable_record()})})}),
         DaneOnly, "all-usable", false, kTtl},
        {"secure MX, CNAME host, denied at target, bogus at name",
         secure_mx({cname_host(mx1, "real.example.net",
                               {secure_nxdomain(tlsa_name("real.example.net"), kTypeTlsa),
                                bogus(tlsa_name(mx1), kTypeTlsa)})}),
         Dane, "tlsa-unfinished", true, kTtl},
        {"secure MX, one usable record among unusable ones", secure_mx({secure_host(
             mx1, {tlsa_rrset(mx1, {unusable_record(), usable_record(), unusable_record()})})}),
         DaneOnly, "all-usable", false, kTtl},
        {"secure MX, secure TLSA RRset of unusable records only",
         secure_mx({secure_host(
             mx1, {tlsa_rrset(mx1, {unusable_record(), record(3, 1, 9, "x")})})}),
         Encrypt, "all-unusable", false, kTtl},

        // --- insecure MX set: smart MX or no DANE; lookup errors ignored by design
        {"insecure MX, usable host (smart MX)", insecure_mx({usable_host(mx1)}), Dane, "smart-mx",
         false, kTtl},
        {"insecure MX, unusable host (smart MX)", insecure_mx({unusable_host(mx1)}), Dane,
         "smart-mx", false, kTtl},
        {"insecure MX, usable + insecure host", insecure_mx({insecure_host(mx1), usable_host(mx2)}),
         Dane, "smart-mx", false, kTtl},
        {"insecure MX, usable + TLSA timeout is not unfinished",
         insecure_mx({usable_host(mx1), tlsa_failed_host(mx2, timeout(tlsa_name(mx2), kTypeTlsa))}),
         Dane, "smart-mx", false, kTtl},
        {"insecure MX, TLSA errors only",
         insecure_mx({tlsa_failed_host(mx1, bogus(tlsa_name(mx1), kTypeTlsa)),
                      tlsa_failed_host(mx2, servfail(tlsa_name(mx2), kTypeTlsa))}),
         NoDane, "insecure-mx", false, kTtl},
        {"insecure MX, address errors only",
         insecure_mx({a_failed_host(mx1, bogus(mx1, kTypeA)), addresses_unfinished_host(mx2)}),
         NoDane, "insecure-mx", false, kTtl},
        {"insecure MX, insecure hosts", insecure_mx({insecure_host(mx1), insecure_host(mx2)}),
         NoDane, "insecure-mx", false, kTtl},
        {"insecure MX, no TLSA", insecure_mx({no_tlsa_host(mx1)}), NoDane, "insecure-mx", false,
         kTtl},
        {"insecure MX, no address", insecure_mx({no_address_host(mx1)}), NoDane, "insecure-mx",
         false, kTtl},

        // --- implicit MX (no MX records: the domain is its own host)
        {"secure implicit MX, usable TLSA", implicit_mx(Dnssec::Secure, usable_host(kDomain)),
         DaneOnly, "all-usable", false, kTtl},
        {"secure implicit MX, unusable TLSA", implicit_mx(Dnssec::Secure, unusable_host(kDomain)),
         Encrypt, "all-unusable", false, kTtl},
        {"secure implicit MX, insecure address",
         implicit_mx(Dnssec::Secure, insecure_host(kDomain)),
         NoDane, "no-tlsa", false, kTtl},
        {"secure implicit MX, TLSA timeout",
         implicit_mx(Dnssec::Secure,
                     tlsa_failed_host(kDomain, timeout(tlsa_name(kDomain), kTypeTlsa))),
         Dane, "tlsa-unfinished", true, kTtl},
        {"secure implicit MX, no address", implicit_mx(Dnssec::Secure, no_address_host(kDomain)),
         NoDane, "no-host-address", false, kTtl},
        {"insecure implicit MX, usable TLSA (smart MX)",
         implicit_mx(Dnssec::Insecure, usable_host(kDomain)), Dane, "smart-mx", false, kTtl},
        {"insecure implicit MX, insecure address",
         implicit_mx(Dnssec::Insecure, insecure_host(kDomain)), NoDane, "insecure-mx", false,
         kTtl},

        // --- freshness (§2): min over MX, A/AAAA, TLSA that were answered, clamped
        {"ttl: A is the smallest",
         secure_mx({usable_host_ttls(mx1, 300, 600, 1200)}, 3600), DaneOnly, "all-usable", false,
         300},
        {"ttl: AAAA denial is the smallest",
         secure_mx({usable_host_ttls(mx1, 900, 250, 1200)}, 3600), DaneOnly, "all-usable", false,
         250},
        {"ttl: TLSA is the smallest",
         secure_mx({usable_host_ttls(mx1, 900, 600, 240)}, 3600), DaneOnly, "all-usable", false,
         240},
        {"ttl: MX is the smallest", secure_mx({usable_host_ttls(mx1, 900, 600, 1200)}, 200),
         DaneOnly, "all-usable", false, 200},
        {"ttl: the smallest over every host",
         secure_mx({usable_host_ttls(mx1, 900, 900, 900), usable_host_ttls(mx2, 900, 400, 900)}),
         DaneOnly, "all-usable", false, 400},
        {"ttl: a CNAME-candidate TLSA denial counts",
         secure_mx({cname_host(mx1, "real.example.net",
                               {insecure_nodata(tlsa_name("real.example.net"), kTypeTlsa, 500),
                                tlsa_rrset(mx1, {usable_record()})})}),
         DaneOnly, "all-usable", false, 500},
        {"ttl: insecure host lookups count", secure_mx({usable_host(mx1), insecure_host(mx2, 700)}),
         Dane, "partial", false, 700},
        {"ttl: no-address host lookups count",
         secure_mx({usable_host(mx1), no_address_host(mx2, 800)}), DaneOnly, "all-usable", false,
         800},
        {"ttl: failed lookups do not count (bogus TLSA ttl 7)",
         secure_mx({usable_host(mx1), tlsa_failed_host(mx2, bogus(tlsa_name(mx2), kTypeTlsa, 7))}),
         Dane, "tlsa-unfinished", true, kTtl},
        {"ttl: failed A lookups do not count (servfail ttl 7)",
         secure_mx({usable_host(mx1), a_failed_host(mx2, servfail(mx2, kTypeA, 7))}), Dane,
         "tlsa-unfinished", true, kTtl},
        {"ttl: unknown ttls are skipped", [] {
             DaneFacts f = secure_mx({usable_host_ttls(mx1, -1, 900, -1)}, -1);
             return f;
         }(),
         DaneOnly, "all-usable", false, 900},
        {"ttl: nothing known gives min_ttl", secure_mx({usable_host_ttls(mx1, -1, -1, -1)}, -1),
         DaneOnly, "all-usable", false, 180},
        {"ttl: 5 raised to min_ttl", secure_mx({usable_host_ttls(mx1, 5, 900, 900)}), DaneOnly,
         "all-usable", false, 180},
        {"ttl: 0 raised to min_ttl", secure_mx({usable_host_ttls(mx1, 900, 900, 0)}), DaneOnly,
         "all-usable", false, 180},
        {"ttl: huge cut to max_ttl",
         secure_mx({usable_host_ttls(mx1, 10'000'000, 10'000'000, 10'000'000)}, 10'000'000),
         DaneOnly, "all-usable", false, 86400},
        {"ttl: custom bounds cut to max_ttl", secure_mx({usable_host(mx1)}), DaneOnly,
         "all-usable", false, 120, TtlBounds{60, 120, 30}},
        {"ttl: custom bounds raise to min_ttl", secure_mx({usable_host_ttls(mx1, 10, 900, 900)}),
         DaneOnly, "all-usable", false, 60, TtlBounds{60, 120, 30}},
        {"ttl: max_ttl below min_ttl: min_ttl wins", secure_mx({usable_host(mx1)}), DaneOnly,
         "all-usable", false, 600, TtlBounds{600, 100, 30}},
        {"ttl: encrypt", secure_mx({unusable_host(mx1, 450), unusable_host(mx2)}), Encrypt,
         "all-unusable", false, 450},
        {"ttl: no-dane (denied TLSA)", secure_mx({no_tlsa_host(mx1, 650)}), NoDane, "no-tlsa",
         false, 650},
        {"ttl: smart MX uses the insecure MX ttl", insecure_mx({usable_host(mx1)}, 900), Dane,
         "smart-mx", false, 900},
        {"ttl: insecure MX, small", insecure_mx({insecure_host(mx1)}, 5), NoDane, "insecure-mx",
         false, 180},
        {"ttl: TEMP is 0 even with a ttl on the failed MX lookup",
         failed_mx(servfail(kDomain, kTypeMx, 3600)), Temp, "mx-lookup-failed", false, 0},
    };
    return rows;
}

void check_decision(const DaneDecision& d, const DecideRow& row) {
    CHECK_MESSAGE(d.verdict == row.verdict, got_want("verdict", s(d.verdict), s(row.verdict)));
    CHECK_MESSAGE(d.rule == row.rule, got_want("rule", d.rule, row.rule));
    CHECK_MESSAGE(d.unfinished == row.unfinished,
                  got_want("unfinished", d.unfinished, row.unfinished));
    CHECK_MESSAGE(d.ttl == row.ttl, got_want("ttl", d.ttl, row.ttl));
    CHECK_MESSAGE(!d.reason.empty(), "reason: got empty, want a sentence");
    CHECK_MESSAGE(printable_ascii(d.reason), got_want("reason printable", false, true));
}

// ---------------------------------------------------------------------------------------------
// GnuTLS: a real self-signed certificate and its SubjectPublicKeyInfo, DER

using testutil::CrtPtr;
using testutil::Datum;
using testutil::PrivkeyPtr;
using testutil::PubkeyPtr;

struct Der {
    std::string certificate;  // X.509 certificate (selector 0)
    std::string spki;         // SubjectPublicKeyInfo (selector 1)
};

Der make_der() {
    Der out;
    gnutls_x509_privkey_t raw_key = nullptr;
    REQUIRE(gnutls_x509_privkey_init(&raw_key) == GNUTLS_E_SUCCESS);
    PrivkeyPtr key(raw_key);
    REQUIRE(gnutls_x509_privkey_generate(key.get(), GNUTLS_PK_ECDSA,
                                         GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1),
                                         0) == GNUTLS_E_SUCCESS);

    gnutls_x509_crt_t raw_crt = nullptr;
    REQUIRE(gnutls_x509_crt_init(&raw_crt) == GNUTLS_E_SUCCESS);
    CrtPtr crt(raw_crt);
    const unsigned char serial[] = {0x01, 0x23};
    const std::string cn = "mx1.example.com";
    REQUIRE(gnutls_x509_crt_set_version(crt.get(), 3) == GNUTLS_E_SUCCESS);
    REQUIRE(gnutls_x509_crt_set_serial(crt.get(), serial, sizeof serial) == GNUTLS_E_SUCCESS);
    REQUIRE(gnutls_x509_crt_set_activation_time(crt.get(), 1'700'000'000) == GNUTLS_E_SUCCESS);
    REQUIRE(gnutls_x509_crt_set_expiration_time(crt.get(), 1'900'000'000) == GNUTLS_E_SUCCESS);
    REQUIRE(gnutls_x509_crt_set_dn_by_oid(crt.get(), GNUTLS_OID_X520_COMMON_NAME, 0, cn.data(),
                                          cn.size()) == GNUTLS_E_SUCCESS);
    REQUIRE(gnutls_x509_crt_set_key(crt.get(), key.get()) == GNUTLS_E_SUCCESS);
    REQUIRE(gnutls_x509_crt_sign2(crt.get(), crt.get(), key.get(), GNUTLS_DIG_SHA256, 0) ==
            GNUTLS_E_SUCCESS);
    {
        Datum der;
        REQUIRE(gnutls_x509_crt_export2(crt.get(), GNUTLS_X509_FMT_DER, &der.d) ==
                GNUTLS_E_SUCCESS);
        out.certificate = der.str();
    }

    gnutls_pubkey_t raw_pub = nullptr;
    REQUIRE(gnutls_pubkey_init(&raw_pub) == GNUTLS_E_SUCCESS);
    PubkeyPtr pub(raw_pub);
    REQUIRE(gnutls_pubkey_import_x509(pub.get(), crt.get(), 0) == GNUTLS_E_SUCCESS);
    {
        Datum der;
        REQUIRE(gnutls_pubkey_export2(pub.get(), GNUTLS_X509_FMT_DER, &der.d) == GNUTLS_E_SUCCESS);
        out.spki = der.str();
    }
    REQUIRE(!out.certificate.empty());
    REQUIRE(!out.spki.empty());
    return out;
}

struct TlsaRow {
    std::string name;
    uint8_t usage, selector, mtype;
    std::string data;
    bool usable;
    std::string why;  // a part of the reason for unusable records
};

std::vector<TlsaRow> tlsa_rows(const Der& der) {
    const std::string sha256(32, '\x5a'), sha512(64, '\xa5');
    const std::string garbage = "\x30\x03\x02\x01\x05 not DER at all";
    return {
        // certificate usage
        {"usage 0 (PKIX-TA)", 0, 0, 1, sha256, false, "PKIX-TA"},
        {"usage 1 (PKIX-EE)", 1, 1, 1, sha256, false, "PKIX-EE"},
        {"usage 2 (DANE-TA)", 2, 0, 1, sha256, true, ""},
        {"usage 3 (DANE-EE)", 3, 1, 1, sha256, true, ""},
        {"usage 4", 4, 1, 1, sha256, false, "unknown certificate usage 4"},
        {"usage 255", 255, 1, 1, sha256, false, "unknown certificate usage 255"},
        // selector
        {"selector 2", 3, 2, 1, sha256, false, "unknown selector 2"},
        {"selector 255", 2, 255, 1, sha256, false, "unknown selector 255"},
        // matching type 1: SHA2-256
        {"mtype 1, 32 bytes", 3, 1, 1, sha256, true, ""},
        {"mtype 1, 31 bytes", 3, 1, 1, std::string(31, '\x5a'), false, "31 bytes, want 32"},
        {"mtype 1, 33 bytes", 3, 0, 1, std::string(33, '\x5a'), false, "33 bytes, want 32"},
        {"mtype 1, empty", 2, 1, 1, "", false, "0 bytes, want 32"},
        {"mtype 1, 64 bytes", 3, 1, 1, sha512, false, "64 bytes, want 32"},
        // matching type 2: SHA2-512
        {"mtype 2, 64 bytes", 3, 1, 2, sha512, true, ""},
        {"mtype 2, 64 bytes, DANE-TA cert", 2, 0, 2, sha512, true, ""},
        {"mtype 2, 32 bytes", 3, 1, 2, sha256, false, "SHA2-512 digest of 32 bytes, want 64"},
        {"mtype 2, 63 bytes", 3, 1, 2, std::string(63, '\xa5'), false, "63 bytes, want 64"},
        // unknown matching types
        {"mtype 9", 3, 1, 9, sha256, false, "unknown matching type 9"},
        {"mtype 255", 3, 1, 255, sha512, false, "unknown matching type 255"},
        // matching type 0: full data must parse
        {"mtype 0, selector 0, garbage", 3, 0, 0, garbage, false, "not a DER certificate"},
        {"mtype 0, selector 1, garbage", 3, 1, 0, garbage, false, "not a DER public key"},
        {"mtype 0, selector 0, empty", 2, 0, 0, "", false, "not a DER certificate"},
        {"mtype 0, selector 1, empty", 3, 1, 0, "", false, "not a DER public key"},
        {"mtype 0, selector 0, real certificate", 3, 0, 0, der.certificate, true, ""},
        {"mtype 0, selector 0, real certificate, DANE-TA", 2, 0, 0, der.certificate, true, ""},
        {"mtype 0, selector 1, real SPKI", 3, 1, 0, der.spki, true, ""},
        {"mtype 0, selector 0, truncated certificate", 3, 0, 0,
         der.certificate.substr(0, der.certificate.size() / 2), false, "not a DER certificate"},
        {"mtype 0, selector 1, truncated SPKI", 3, 1, 0, der.spki.substr(0, der.spki.size() - 5),
         false, "not a DER public key"},
        {"mtype 0, selector 0, an SPKI is not a certificate", 3, 0, 0, der.spki, false,
         "not a DER certificate"},
        {"mtype 0, selector 1, a certificate is not an SPKI", 3, 1, 0, der.certificate, false,
         "not a DER public key"},
        // usage is judged before selector and matching type
        {"usage 1 with a real certificate", 1, 0, 0, der.certificate, false, "PKIX-EE"},
    };
}

// ---------------------------------------------------------------------------------------------
// A minimal JSON syntax checker for dane_facts_json (structure only).

struct JsonCheck {
    const std::string& t;
    std::size_t i = 0;

    void ws() {
        while (i < t.size() && (t[i] == ' ' || t[i] == '\n' || t[i] == '\t' || t[i] == '\r'))
            ++i;
    }
    bool lit(const char* w) {
        const std::string word(w);
        if (t.compare(i, word.size(), word) != 0) return false;
        i += word.size();
        return true;
    }
    bool string() {
        if (i >= t.size() || t[i] != '"') return false;
        for (++i; i < t.size(); ++i) {
            const auto c = static_cast<unsigned char>(t[i]);
            if (c == '"') {
                ++i;
                return true;
            }
            if (c < 0x20) return false;
            if (c == '\\') {
                if (++i >= t.size()) return false;
                const char e = t[i];
                if (e == 'u') {
                    for (int k = 0; k < 4; ++k)
                        if (++i >= t.size() || !std::isxdigit(static_cast<unsigned char>(t[i])))
                            return false;
                } else if (std::string("\"\\/bfnrt").find(e) == std::string::npos) {
                    return false;
                }
            }
        }
        return false;
    }
    bool number() {
        const std::size_t start = i;
        if (i < t.size() && t[i] == '-') ++i;
        while (i < t.size() && std::isdigit(static_cast<unsigned char>(t[i])))
            ++i;
        return i > start && std::isdigit(static_cast<unsigned char>(t[i - 1]));
    }
    bool value(int depth = 0) {
        if (depth > 32) return false;
        ws();
        if (i >= t.size()) return false;
        bool ok = false;
        if (t[i] == '{') {
            ++i;
            ws();
            if (i < t.size() && t[i] == '}') {
                ++i;
                return true;
            }
            for (;;) {
                ws();
                if (!string()) return false;
                ws();
                if (i >= t.size() || t[i++] != ':') return false;
                if (!value(depth + 1)) return false;
                ws();
                if (i < t.size() && t[i] == ',') {
                    ++i;
                    continue;
                }
                if (i < t.size() && t[i] == '}') {
                    ++i;
                    return true;
                }
                return false;
            }
        } else if (t[i] == '[') {
            ++i;
            ws();
            if (i < t.size() && t[i] == ']') {
                ++i;
                return true;
            }
            for (;;) {
                if (!value(depth + 1)) return false;
                ws();
                if (i < t.size() && t[i] == ',') {
                    ++i;
                    continue;
                }
                if (i < t.size() && t[i] == ']') {
                    ++i;
                    return true;
                }
                return false;
            }
        } else if (t[i] == '"') {
            ok = string();
        } else if (t[i] == 't') {
            ok = lit("true");
        } else if (t[i] == 'f') {
            ok = lit("false");
        } else if (t[i] == 'n') {
            ok = lit("null");
        } else {
            ok = number();
        }
        return ok;
    }
    bool document() {
        if (!value()) return false;
        ws();
        return i == t.size();
    }
};

bool valid_json(const std::string& text) {
    JsonCheck c{text};
    return c.document();
}

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

}  // namespace

// =============================================================================================

TEST_CASE("decide_dane: decision table rows") {
    const auto rows = decide_rows();
    CHECK(rows.size() >= 80);
    std::set<std::string> names;
    for (const DecideRow& row : rows) {
        CAPTURE(row.name);
        CHECK_MESSAGE(names.insert(row.name).second, "duplicate row name");
        const DaneDecision d = decide_dane(row.facts, row.bounds);
        check_decision(d, row);
    }
}

TEST_CASE("decide_dane: invariants over every row") {
    for (const DecideRow& row : decide_rows()) {
        CAPTURE(row.name);
        const DaneDecision d = decide_dane(row.facts, row.bounds);
        // TEMP is never cached; everything else lives within the bounds.
        if (d.verdict == DaneVerdict::Temp) {
            CHECK_MESSAGE(d.ttl == 0, got_want("temp ttl", d.ttl, int64_t{0}));
        } else {
            const int64_t hi = std::max(row.bounds.min_ttl, row.bounds.max_ttl);
            CHECK_MESSAGE(d.ttl >= row.bounds.min_ttl,
                          got_want("ttl >= min_ttl", d.ttl >= row.bounds.min_ttl, true));
            CHECK_MESSAGE(d.ttl <= hi, got_want("ttl <= max_ttl", d.ttl <= hi, true));
        }
        // unfinished only ever qualifies `dane` on a secure MX set.
        if (d.unfinished) {
            CHECK_MESSAGE(d.verdict == DaneVerdict::Dane,
                          got_want("unfinished verdict", s(d.verdict), s(DaneVerdict::Dane)));
            CHECK(row.facts.mx.secure());
        }
        // A failed MX lookup is always TEMP, and TEMP only comes from one.
        CHECK_MESSAGE(
            (d.verdict == DaneVerdict::Temp) == row.facts.mx.failed(),
            got_want("temp iff mx failed", d.verdict == DaneVerdict::Temp, row.facts.mx.failed()));
        // Security property (§1: nothing is downgraded by a failure): a bogus lookup on a
        // secure MX set, or in the MX lookup itself, never ends in no-dane or not-found.
        // On an insecure MX set bogus host lookups are ignored by design (RFC 7672 2.2.1).
        if (has_bogus(row.facts) && (row.facts.mx.secure() || row.facts.mx.failed())) {
            CHECK_MESSAGE(
                d.verdict != DaneVerdict::NoDane,
                got_want("bogus never no-dane", s(d.verdict), std::string("not no-dane")));
            CHECK_MESSAGE(
                d.verdict != DaneVerdict::NotFound,
                got_want("bogus never not-found", s(d.verdict), std::string("not not-found")));
        }
    }
}

TEST_CASE("decide_dane: every failing host lookup on a secure MX set is unfinished dane") {
    // Two usable hosts; one lookup of one host fails in every possible way. On a secure MX
    // set that must be `dane` + unfinished (never no-dane, never dane-only); on an insecure
    // MX set the other host still makes it smart MX, and nothing is unfinished.
    int checked = 0;
    for (const Failure& fail : failures()) {
        for (int which = 0; which < 3; ++which) {
            for (int slot = 0; slot < 2; ++slot) {
                for (const bool secure : {true, false}) {
                    std::vector<HostFacts> hosts = {usable_host(mx1), usable_host(mx2)};
                    HostFacts& h = hosts[slot];
                    const char* what = which == 0 ? "A" : which == 1 ? "AAAA" : "TLSA";
                    if (which == 0) {
                        h = a_failed_host(h.name, fail.make(h.name, kTypeA));
                    } else if (which == 1) {
                        h = aaaa_failed_host(h.name, fail.make(h.name, kTypeAaaa));
                    } else {
                        h = tlsa_failed_host(h.name, fail.make(tlsa_name(h.name), kTypeTlsa));
                    }
                    const DaneFacts f =
                        secure ? secure_mx(std::move(hosts)) : insecure_mx(std::move(hosts));
                    const std::string name = std::string(secure ? "secure" : "insecure") + " MX, " +
                                             what + " " + fail.name + " on host " +
                                             std::to_string(slot + 1);
                    CAPTURE(name);
                    const DaneDecision d = decide_dane(f, TtlBounds{});
                    const DecideRow want{
                        name,   f,   DaneVerdict::Dane, secure ? "tlsa-unfinished" : "smart-mx",
                        secure, kTtl};
                    check_decision(d, want);
                    ++checked;
                }
            }
        }
    }
    CHECK(checked == static_cast<int>(failures().size()) * 3 * 2 * 2);
}

TEST_CASE("decide_dane: every failing MX lookup is TEMP, whatever the hosts") {
    for (const Failure& fail : failures()) {
        for (const bool null : {false, true}) {
            CAPTURE(fail.name);
            CAPTURE(null);
            DaneFacts f = failed_mx(fail.make(kDomain, kTypeMx));
            f.null_mx = null;
            const DaneDecision d = decide_dane(f, TtlBounds{});
            check_decision(
                d, DecideRow{fail.name, f, DaneVerdict::Temp, "mx-lookup-failed", false, 0});
            CHECK_MESSAGE(contains(d.reason, kDomain),
                          got_want("reason names the domain", d.reason, std::string(kDomain)));
        }
    }
}

TEST_CASE("dane classify_host: host facts -> HostDane") {
    struct Row {
        std::string name;
        HostFacts host;
        HostDane want;
    };
    const std::vector<Row> rows = {
        {"usable", usable_host(mx1), HostDane::Usable},
        {"unusable", unusable_host(mx1), HostDane::Unusable},
        {"no TLSA (secure NXDOMAIN)", no_tlsa_host(mx1), HostDane::NoTlsa},
        {"no TLSA (secure NODATA)", secure_host(mx1, {secure_nodata(tlsa_name(mx1), kTypeTlsa)}),
         HostDane::NoTlsa},
        {"insecure TLSA RRset", insecure_tlsa_host(mx1), HostDane::NoTlsa},
        {"TLSA insecure NXDOMAIN", secure_host(mx1, {insecure_nxdomain(tlsa_name(mx1), kTypeTlsa)}),
         HostDane::NoTlsa},
        {"TLSA bogus", tlsa_failed_host(mx1, bogus(tlsa_name(mx1), kTypeTlsa)),
         HostDane::TlsaError},
        {"TLSA timeout", tlsa_failed_host(mx1, timeout(tlsa_name(mx1), kTypeTlsa)),
         HostDane::TlsaError},
        {"TLSA never recorded", tlsa_missing_host(mx1), HostDane::TlsaError},
        {"insecure addresses", insecure_host(mx1), HostDane::Insecure},
        {"secure A, insecure AAAA",
         host_with(mx1, secure_data(mx1, kTypeA), insecure_nodata(mx1, kTypeAaaa)),
         HostDane::Insecure},
        {"insecure A, secure AAAA",
         host_with(mx1, insecure_data(mx1, kTypeA), secure_data(mx1, kTypeAaaa)),
         HostDane::Insecure},
        {"secure AAAA only, usable",
         host_with(mx1, secure_nodata(mx1, kTypeA), secure_data(mx1, kTypeAaaa),
                   {tlsa_rrset(mx1, {usable_record()})}),
         HostDane::Usable},
        {"secure no address", no_address_host(mx1), HostDane::NoAddress},
        {"A bogus", a_failed_host(mx1, bogus(mx1, kTypeA)), HostDane::AddressError},
        {"AAAA servfail", aaaa_failed_host(mx1, servfail(mx1, kTypeAaaa)), HostDane::AddressError},
        {"A CNAME loop", a_failed_host(mx1, cname_loop(mx1, kTypeA)), HostDane::AddressError},
        {"addresses not done", addresses_unfinished_host(mx1), HostDane::AddressError},
        {"CNAME: insecure at target, usable at name",
         cname_host(mx1, "real.example.net",
                    {insecure_nodata(tlsa_name("real.example.net"), kTypeTlsa),
                     tlsa_rrset(mx1, {usable_record()})}),
         HostDane::Usable},
        {"CNAME: denied at target, timeout at name",
         cname_host(mx1, "real.example.net",
                    {secure_nxdomain(tlsa_name("real.example.net"), kTypeTlsa),
                     timeout(tlsa_name(mx1), kTypeTlsa)}),
         HostDane::TlsaError},
        {"CNAME: denied at both",
         cname_host(mx1, "real.example.net",
                    {secure_nxdomain(tlsa_name("real.example.net"), kTypeTlsa),
                     secure_nxdomain(tlsa_name(mx1), kTypeTlsa)}),
         HostDane::NoTlsa},
    };
    for (const Row& row : rows) {
        CAPTURE(row.name);
        const HostDane got = classify_host(row.host);
        CHECK_MESSAGE(got == row.want, got_want("class", s(got), s(row.want)));
    }
}

TEST_CASE("dane judge_tlsa: usage, selector, matching type, data") {
    const Der der = make_der();
    const auto rows = tlsa_rows(der);
    for (const TlsaRow& row : rows) {
        CAPTURE(row.name);
        TlsaRecord r;
        r.usage = row.usage;
        r.selector = row.selector;
        r.mtype = row.mtype;
        r.data = row.data;
        // Stale state from an earlier judgement must not survive.
        r.usable = !row.usable;
        r.why = "stale";
        judge_tlsa(r);
        CHECK_MESSAGE(r.usable == row.usable, got_want("usable", r.usable, row.usable));
        if (row.usable) {
            CHECK_MESSAGE(r.why.empty(), got_want("why", r.why, std::string()));
        } else {
            CHECK_MESSAGE(contains(r.why, row.why),
                          got_want("why", r.why, "..." + row.why + "..."));
            CHECK(printable_ascii(r.why));
        }
        // The record's own fields are left alone.
        CHECK(r.data == row.data);
        CHECK(r.usage == row.usage);
    }
}

TEST_CASE("dane tlsa_base_candidates: CNAME-expanded name first, then the name") {
    struct Row {
        std::string name;
        HostFacts host;
        std::vector<std::string> want;
    };
    auto with_a_cnames = [](std::vector<std::string> cnames) {
        HostFacts h = secure_host(mx1, {});
        h.a.cnames = std::move(cnames);
        return h;
    };
    const std::vector<Row> rows = {
        {"no CNAME", secure_host(mx1, {}), {mx1}},
        {"A via CNAME", with_a_cnames({"real.example"}), {"real.example", mx1}},
        {"A via a CNAME chain",
         with_a_cnames({"hop.example", "real.example"}),
         {"real.example", mx1}},
        {"A and AAAA via the same CNAME",
         cname_host(mx1, "real.example", {}),
         {"real.example", mx1}},
        {"AAAA only, via CNAME",
         [] {
             HostFacts h = host_with(mx1, secure_nodata(mx1, kTypeA), secure_data(mx1, kTypeAaaa));
             h.aaaa.cnames = {"v6.example"};
             return h;
         }(),
         {"v6.example", mx1}},
        {"AAAA only, no CNAME",
         host_with(mx1, secure_nodata(mx1, kTypeA), secure_data(mx1, kTypeAaaa)),
         {mx1}},
    };
    for (const Row& row : rows) {
        CAPTURE(row.name);
        const auto got = tlsa_base_candidates(row.host);
        CHECK_MESSAGE(got == row.want, got_want("candidates", got, row.want));
    }
}

TEST_CASE("dane reference_names: base domain, plus the domain names on a secure MX set") {
    struct Row {
        std::string name;
        DaneFacts facts;
        std::string base_domain;
        std::vector<std::string> want;
    };
    auto with_cnames = [](DaneFacts f, std::vector<std::string> cnames) {
        f.mx.cnames = std::move(cnames);
        return f;
    };
    const std::vector<Row> rows = {
        {"secure MX",
         secure_mx({usable_host(mx1)}),
         "mx1.example.net",
         {"mx1.example.net", kDomain}},
        {"secure MX, domain via CNAME",
         with_cnames(secure_mx({usable_host(mx1)}), {"mail.example.org"}),
         "mx1.example.net",
         {"mx1.example.net", kDomain, "mail.example.org"}},
        {"secure MX, CNAME chain: the end of it",
         with_cnames(secure_mx({usable_host(mx1)}), {"hop.example.org", "mail.example.org"}),
         "mx1.example.net",
         {"mx1.example.net", kDomain, "mail.example.org"}},
        {"secure implicit MX: no duplicates",
         implicit_mx(Dnssec::Secure, usable_host(kDomain)),
         kDomain,
         {kDomain}},
        {"secure MX, base domain is the CNAME target",
         with_cnames(secure_mx({usable_host(mx1)}), {"mail.example.org"}),
         "mail.example.org",
         {"mail.example.org", kDomain}},
        {"insecure MX", insecure_mx({usable_host(mx1)}), "mx1.example.net", {"mx1.example.net"}},
        {"insecure MX, domain via CNAME",
         with_cnames(insecure_mx({usable_host(mx1)}), {"mail.example.org"}),
         "mx1.example.net",
         {"mx1.example.net"}},
        {"insecure implicit MX",
         implicit_mx(Dnssec::Insecure, usable_host(kDomain)),
         kDomain,
         {kDomain}},
    };
    for (const Row& row : rows) {
        CAPTURE(row.name);
        HostFacts host = row.facts.hosts.front();
        host.base_domain = row.base_domain;
        const auto got = reference_names(row.facts, host);
        CHECK_MESSAGE(got == row.want, got_want("reference names", got, row.want));
    }
}

TEST_CASE("dane_facts_json: verdict, facts and hosts in one JSON object") {
    DaneFacts f = secure_mx({usable_host(mx1), no_address_host(mx2)});
    f.hosts[0].reference_names = reference_names(f, f.hosts[0]);
    const DaneDecision d = decide_dane(f, TtlBounds{});
    REQUIRE(d.verdict == DaneVerdict::DaneOnly);
    const std::string json = dane_facts_json(f, d);
    CAPTURE(json);
    REQUIRE(!json.empty());
    CHECK(json.front() == '{');
    CHECK(json.back() == '}');
    CHECK(valid_json(json));
    CHECK(printable_ascii(json));
    std::string ab_hex;  // usable_record(): 32 bytes of 0xab
    for (int i = 0; i < 32; ++i)
        ab_hex += "ab";
    for (const std::string& want : {
             std::string("\"verdict\":\"dane-only\""),
             std::string("\"rule\":\"all-usable\""),
             std::string("\"ttl\":3600"),
             std::string("\"unfinished\":false"),
             std::string("\"domain\":\"example.com\""),
             std::string("\"name\":\"mx1.example.com\""),
             std::string("\"name\":\"mx2.example.com\""),
             std::string("\"dane\":\"usable-tlsa\""),
             std::string("\"dane\":\"no-address\""),
             std::string("\"tlsa_base_domain\":\"mx1.example.com\""),
             "\"rdata\":\"3 1 1 " + ab_hex + "\"",
             std::string("\"usable\":true"),
             std::string("\"type\":\"TLSA\""),
             std::string("\"type\":\"MX\""),
             std::string("\"mx\":[{\"preference\":10,\"host\":\"mx1.example.com\"}"),
         }) {
        CHECK_MESSAGE(contains(json, want), ("contains " + want + ": got false, want true"));
    }
}

TEST_CASE("dane_facts_json: unfinished, null MX, untouched lookups") {
    SUBCASE("unfinished dane") {
        const DaneFacts f = secure_mx(
            {usable_host(mx1), tlsa_failed_host(mx2, timeout(tlsa_name(mx2), kTypeTlsa))});
        const std::string json = dane_facts_json(f, decide_dane(f, TtlBounds{}));
        CAPTURE(json);
        CHECK(valid_json(json));
        CHECK(contains(json, "\"verdict\":\"dane\""));
        CHECK(contains(json, "\"rule\":\"tlsa-unfinished\""));
        CHECK(contains(json, "\"unfinished\":true"));
        CHECK(contains(json, "\"dane\":\"tlsa-error\""));
        CHECK(contains(json, "\"result\":\"timeout\""));
        CHECK(contains(json, "\"ttl\":null"));
    }
    SUBCASE("null MX") {
        const DaneFacts f = null_mx(Dnssec::Secure, 600);
        const std::string json = dane_facts_json(f, decide_dane(f, TtlBounds{}));
        CAPTURE(json);
        CHECK(valid_json(json));
        CHECK(contains(json, "\"verdict\":\"not-found\""));
        CHECK(contains(json, "\"null_mx\":true"));
        CHECK(contains(json, "\"host\":\".\""));
        CHECK(contains(json, "\"hosts\":[]"));
    }
    SUBCASE("a lookup the deadline never started is left out") {
        const DaneFacts f = secure_mx({addresses_unfinished_host(mx1)});
        const std::string json = dane_facts_json(f, decide_dane(f, TtlBounds{}));
        CAPTURE(json);
        CHECK(valid_json(json));
        CHECK(contains(json, "\"dane\":\"address-error\""));
        CHECK(contains(json, "\"type\":\"AAAA\""));
        CHECK(!contains(json, "\"type\":\"A\""));
    }
    SUBCASE("TEMP") {
        const DaneFacts f = failed_mx(servfail(kDomain, kTypeMx));
        const std::string json = dane_facts_json(f, decide_dane(f, TtlBounds{}));
        CAPTURE(json);
        CHECK(valid_json(json));
        CHECK(contains(json, "\"verdict\":\"temp\""));
        CHECK(contains(json, "\"ttl\":0,"));
        CHECK(contains(json, "\"reason\":\"SERVFAIL\""));
    }
}

TEST_CASE("dane_facts_json: hostile names and reasons are escaped") {
    const std::string evil_host = "mx\"1\x01\n\x7f\\.example\xff.com";
    const std::string evil_reason = "bad\0reply\x1b[31m\""s;
    DaneFacts f = secure_mx({usable_host(evil_host), tlsa_failed_host(mx2, [&] {
                                 DnsLookup l = timeout(tlsa_name(mx2), kTypeTlsa);
                                 l.reason = evil_reason;
                                 l.resolver = "127.0.0.1:53\r\n";
                                 return l;
                             }())});
    f.domain = "exa\tmple\".com";
    f.hosts[0].reference_names = {"ref\x02name"};
    const DaneDecision d = decide_dane(f, TtlBounds{});
    const std::string json = dane_facts_json(f, d);
    CAPTURE(json);
    CHECK(json.front() == '{');
    CHECK(json.back() == '}');
    // No raw control (or non-ASCII) byte anywhere, and the structure survives.
    for (std::size_t i = 0; i < json.size(); ++i) {
        const auto c = static_cast<unsigned char>(json[i]);
        CAPTURE(i);
        CHECK_MESSAGE((c >= 0x20 && c < 0x7f), got_want("byte", static_cast<int>(c), 0x20));
    }
    CHECK(valid_json(json));
    CHECK(contains(json, "\"name\":\"mx\\\"1\\u0001\\n\\u007f\\\\.example\\u00ff.com\""));
    CHECK(contains(json, "\"domain\":\"exa\\tmple\\\".com\""));
    CHECK(contains(json, "bad\\u0000reply\\u001b[31m\\\""));
    CHECK(contains(json, "\"resolver\":\"127.0.0.1:53\\r\\n\""));
    CHECK(contains(json, "\"ref\\u0002name\""));
    CHECK(!contains(json, evil_host));
}
