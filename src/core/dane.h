// DANE facts and the DANE half of the decision table (architecture.md §1, RFC 7672).
// Pure logic: the DNS engine (src/dns) gathers DaneFacts; decide_dane() turns them into a
// verdict with a reason and a lifetime. Tests build facts by hand, without sockets.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tlspolicy {

// RFC 7672 §2.1: the four DNSSEC states a validating resolver reports.
enum class Dnssec { Secure, Insecure, Bogus, Indeterminate };

// What became of one DNS lookup (after following CNAMEs).
enum class DnsResult {
    Data,          // records of the asked type at the final name
    NoData,        // the name exists, no records of that type
    NxDomain,      // the name does not exist
    ServFail,      // the resolver answered SERVFAIL
    Refused,       // the resolver refused (every resolver tried)
    Timeout,       // no answer within the query timeout or the per-domain deadline
    CnameLoop,     // a CNAME chain that comes back to a name already seen
    CnameTooLong,  // more than kMaxCnameLinks CNAME links
    Error,         // any other failure (bad reply, resolver error)
};

inline constexpr std::size_t kMaxCnameLinks = 10;   // architecture.md §1
inline constexpr std::size_t kMaxMxHosts = 16;      // hosts examined, in preference order
inline constexpr std::size_t kMaxTlsaRecords = 64;  // per RRset; more is a lookup error
inline constexpr uint16_t kTypeA = 1, kTypeCname = 5, kTypeMx = 15, kTypeTxt = 16, kTypeAaaa = 28,
                          kTypeTlsa = 52;

struct MxRecord {
    uint16_t preference = 0;
    std::string host;  // lower case, no trailing dot; "" for the null MX target "."
};

struct TlsaRecord {
    uint8_t usage = 0, selector = 0, mtype = 0;
    std::string data;  // raw association data
    bool usable = false;
    std::string why;  // for unusable records: the reason
};

// One DNS lookup and what it established. `ttl` is the smallest TTL of the records used
// (CNAMEs, data, or min(SOA TTL, SOA minimum) for a denial); -1 when unknown.
struct DnsLookup {
    std::string name;  // the name asked for (lower case, no trailing dot)
    uint16_t type = 0;
    DnsResult result = DnsResult::Error;
    Dnssec dnssec = Dnssec::Indeterminate;
    int64_t ttl = -1;
    std::vector<std::string> cnames;  // CNAME targets followed, in order
    std::string reason;               // for failures: what went wrong
    std::string resolver;             // which upstream answered ("" in recursing mode)
    std::vector<MxRecord> mx;
    std::vector<std::string> addresses;  // A/AAAA, presentation form
    std::vector<TlsaRecord> tlsa;
    std::vector<std::string> txt;  // TXT records, each with its strings joined without spaces

    // The name the CNAME chain ended at (the name itself without CNAMEs).
    const std::string& final_name() const { return cnames.empty() ? name : cnames.back(); }
    // An answer (data or denial) with a secure or insecure status; everything else failed.
    bool answered() const;
    bool secure() const { return answered() && dnssec == Dnssec::Secure; }
    bool failed() const { return !answered(); }
};

// One MX host and what was learned about it, RFC 7672 §2.2.
struct HostFacts {
    std::string name;  // the MX exchange (or the domain itself for an implicit MX)
    uint16_t preference = 0;
    DnsLookup a, aaaa;
    bool addresses_done = false;
    std::vector<DnsLookup> tlsa;  // one per TLSA base domain candidate tried, in order
    std::string base_domain;      // the candidate whose TLSA RRset decided ("" if none)
    std::vector<std::string> reference_names;  // names a DANE-TA certificate may match
};

// How one host stands for DANE.
enum class HostDane {
    NoAddress,     // has no A/AAAA records: cannot receive mail, does not count (an
                   // insecure denial too: dropping a host can only make the answer stricter)
    AddressError,  // its address lookup failed
    Insecure,      // its addresses are insecure: TLSA not consulted
    NoTlsa,        // no secure TLSA RRset at any base domain candidate
    TlsaError,     // the TLSA lookup failed: Postfix defers this host
    Unusable,      // secure TLSA RRset without a usable record: TLS mandatory
    Usable,        // secure TLSA RRset with a usable record: authenticated TLS
};
HostDane classify_host(const HostFacts& host);
std::string_view host_dane_name(HostDane h);  // "no-address", "usable", ...

struct DaneFacts {
    std::string domain;
    DnsLookup mx;                  // the MX lookup, CNAMEs of the domain included
    bool implicit_mx = false;      // no MX records: the domain is its own host
    bool null_mx = false;          // RFC 7505
    std::size_t mx_hosts = 0;      // distinct hosts in the MX set (before the cap)
    std::vector<HostFacts> hosts;  // the examined ones, in preference order
    bool deadline_reached = false;
};

enum class DaneVerdict {
    DaneOnly,  // OK dane-only
    Dane,      // OK dane
    Encrypt,   // OK encrypt
    NoDane,    // no DANE: MTA-STS decides
    NotFound,  // the domain receives no mail (NXDOMAIN, null MX): not found, final
    Temp,      // the MX set cannot be determined: TEMP
};
std::string_view dane_verdict_name(DaneVerdict v);  // "dane-only", "no-dane", ...

struct TtlBounds {
    int64_t min_ttl = 180, max_ttl = 86400, negative_ttl = 1800;
};

struct DaneDecision {
    DaneVerdict verdict = DaneVerdict::Temp;
    std::string rule;    // short identifier of the table row that decided
    std::string reason;  // one printable sentence for logs and TEMP replies
    int64_t ttl = 0;     // seconds the verdict may be cached (0 for Temp)
    // Some TLSA or address lookup on a secure MX set could not be finished: `dane` only
    // because of it; with an MTA-STS enforce policy the combined answer is TEMP.
    bool unfinished = false;
};

// The DANE rows of the decision table, exactly.
DaneDecision decide_dane(const DaneFacts& facts, const TtlBounds& bounds);

// TLSA usability (RFC 7672 §3, RFC 6698): sets `usable` and `why`.
void judge_tlsa(TlsaRecord& record);

// The TLSA base domain candidates of a host with secure addresses (RFC 7672 §2.2.2): the
// CNAME-expanded name when it differs, then the name itself.
std::vector<std::string> tlsa_base_candidates(const HostFacts& host);

// The reference identifiers for DANE-TA (RFC 7672 §3.2.2) once base_domain is known.
std::vector<std::string> reference_names(const DaneFacts& facts, const HostFacts& host);

std::string_view dnssec_name(Dnssec d);         // "secure", "insecure", "bogus", "indeterminate"
std::string_view dns_result_name(DnsResult r);  // "data", "nodata", "nxdomain", "servfail", ...
std::string_view rrtype_name(uint16_t type);    // "MX", "TLSA", ...

// One lookup as a JSON object (name, type, result, dnssec, ttl, records...).
std::string dns_lookup_json(const DnsLookup& lookup);

// The facts and the decision as one JSON object (for `query --json` and the cache).
std::string dane_facts_json(const DaneFacts& facts, const DaneDecision& decision);

}  // namespace tlspolicy
