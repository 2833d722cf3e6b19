// `tlspolicy probe`'s pure parts (src/probe/prober.h), table-driven: what a target is, what a
// policy asks of each host, how one conversation is judged, and the final verdict.
#include "probe/prober.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "got_want.h"

using namespace tlspolicy;

namespace {

std::string s(ProbeTarget::Kind k) {
    switch (k) {
        case ProbeTarget::Kind::Domain: return "domain";
        case ProbeTarget::Kind::Host: return "host";
        case ProbeTarget::Kind::Address: return "address";
        case ProbeTarget::Kind::Invalid: return "invalid";
    }
    return "?";
}

DnsLookup secure_data(const std::string& name, uint16_t type) {
    DnsLookup l;
    l.name = name;
    l.type = type;
    l.result = DnsResult::Data;
    l.dnssec = Dnssec::Secure;
    if (type == kTypeA) l.addresses = {"192.0.2.25"};
    return l;
}

DnsLookup with(DnsLookup l, DnsResult r, Dnssec d) {
    l.result = r;
    l.dnssec = d;
    l.addresses.clear();
    return l;
}

// A host as the DNS engine leaves it: "usable" (secure TLSA with a 3 1 1), "unusable" (secure
// TLSA, only a 1 1 1), "no-tlsa" (secure denial), "tlsa-error" (SERVFAIL), "insecure"
// (insecure addresses, no TLSA lookup).
HostFacts host(const std::string& name, const std::string& how) {
    HostFacts h;
    h.name = name;
    h.addresses_done = true;
    h.a = secure_data(name, kTypeA);
    h.aaaa = with(secure_data(name, kTypeAaaa), DnsResult::NoData, Dnssec::Secure);
    if (how == "insecure") {
        h.a.dnssec = Dnssec::Insecure;
        h.aaaa.dnssec = Dnssec::Insecure;
        return h;
    }
    DnsLookup t = secure_data("_25._tcp." + name, kTypeTlsa);
    TlsaRecord r;
    r.usage = how == "unusable" ? 1 : 3;
    r.selector = 1;
    r.mtype = 1;
    r.data = std::string(32, 'x');
    judge_tlsa(r);
    if (how == "usable" || how == "unusable") t.tlsa = {r};
    if (how == "no-tlsa") t = with(t, DnsResult::NxDomain, Dnssec::Secure);
    if (how == "tlsa-error") t = with(t, DnsResult::ServFail, Dnssec::Indeterminate);
    h.tlsa = {t};
    if (how == "usable" || how == "unusable") {
        h.base_domain = name;
        h.reference_names = {name, "example.org"};
    }
    return h;
}

StoredStsPolicy sts_policy(std::vector<std::string> mx) {
    StoredStsPolicy p;
    p.id = "1";
    p.policy.mode = StsMode::Enforce;
    p.policy.max_age = 86400;
    p.policy.mx = std::move(mx);
    return p;
}

SmtpProbeResult conversation(const std::string& how) {
    SmtpProbeResult r;
    if (how == "refused") {
        r.stage = ProbeStage::Connect;
        r.error = "Connection refused";
        return r;
    }
    r.connected = true;
    if (how == "silent") {
        r.stage = ProbeStage::Banner;
        r.error = "no reply within 2000 ms (timeout)";
        return r;
    }
    r.banner = "220 mx ESMTP";
    if (how == "no-starttls") {
        r.stage = ProbeStage::StartTls;
        r.error = "STARTTLS not offered";
        return r;
    }
    r.starttls_offered = true;
    if (how == "handshake-failed") {
        r.stage = ProbeStage::Handshake;
        r.error = "TLS handshake failed: Error in the pull function.";
        return r;
    }
    r.tls = true;
    r.tls_version = "TLS1.3";
    r.stage = ProbeStage::Done;  // "tls": a whole conversation, no certificate kept
    return r;
}

}  // namespace

TEST_CASE("probe: targets") {
    struct Row {
        const char* text;
        ProbeTarget::Kind kind;
        const char* name;
        uint16_t port;
    };
    const Row rows[] = {
        {"example.org", ProbeTarget::Kind::Domain, "example.org", 0},
        {"Example.ORG.", ProbeTarget::Kind::Domain, "example.org", 0},
        {"bücher.example", ProbeTarget::Kind::Domain, "xn--bcher-kva.example", 0},
        {"postmaster@Example.org", ProbeTarget::Kind::Domain, "example.org", 0},
        {"\"a@b\"@example.org", ProbeTarget::Kind::Domain, "example.org", 0},
        {"[mx.Example.org]", ProbeTarget::Kind::Host, "mx.example.org", 0},
        {"[mx.example.org]:587", ProbeTarget::Kind::Host, "mx.example.org", 587},
        {"[192.0.2.1]", ProbeTarget::Kind::Address, "192.0.2.1", 0},
        {"[192.0.2.1]:2525", ProbeTarget::Kind::Address, "192.0.2.1", 2525},
        {"[IPv6:2001:db8::1]", ProbeTarget::Kind::Address, "2001:db8::1", 0},
        {"[2001:db8::1]:25", ProbeTarget::Kind::Address, "2001:db8::1", 25},
        {"", ProbeTarget::Kind::Invalid, "", 0},
        {"192.0.2.1", ProbeTarget::Kind::Invalid, "", 0},  // bare literal: write [192.0.2.1]
        {"[mx.example.org", ProbeTarget::Kind::Invalid, "", 0},
        {"[mx.example.org]:0", ProbeTarget::Kind::Invalid, "", 0},
        {"[mx.example.org]:65536", ProbeTarget::Kind::Invalid, "", 0},
        {"[mx.example.org]:25x", ProbeTarget::Kind::Invalid, "", 0},
        {"[mx.example.org]:025", ProbeTarget::Kind::Invalid, "", 0},
        {"[999.1.1.1]", ProbeTarget::Kind::Invalid, "", 0},
        {"[bad host]", ProbeTarget::Kind::Invalid, "", 0},
        {"exa mple.org", ProbeTarget::Kind::Invalid, "", 0},
        {".example.org", ProbeTarget::Kind::Invalid, "", 0},
        {"user@", ProbeTarget::Kind::Invalid, "", 0},
    };
    for (const Row& r : rows) {
        CAPTURE(r.text);
        const ProbeTarget t = parse_probe_target(r.text);
        CHECK_EQ_GW("kind", s(t.kind), s(r.kind));
        CHECK_EQ_GW("name", t.name, std::string(r.name));
        CHECK_EQ_GW("port", int(t.port), int(r.port));
        CHECK_EQ_GW("error set", !t.error.empty(), r.kind == ProbeTarget::Kind::Invalid);
    }
}

TEST_CASE("probe: what each policy asks of a host") {
    const StoredStsPolicy sts = sts_policy({"mx.example.org", "*.backup.example"});
    struct Row {
        const char* policy;  // "" = not found
        Source source;
        const char* host_kind;
        const char* host_name;
        bool with_sts;
        Need want;
        const char* want_sni;
    };
    const Row rows[] = {
        // dane-only: usable TLSA → DANE; anything else → Postfix defers the host.
        {"dane-only", Source::Dane, "usable", "mx.example.org", false, Need::Dane, "mx.example.org"},
        {"dane-only", Source::Dane, "no-tlsa", "mx.example.org", false, Need::Refuse, "mx.example.org"},
        {"dane-only", Source::Dane, "unusable", "mx.example.org", false, Need::Refuse, "mx.example.org"},
        {"dane-only", Source::Dane, "insecure", "mx.example.org", false, Need::Refuse, "mx.example.org"},
        // dane: per host, as Postfix's dane level (RFC 7672 §2.2).
        {"dane", Source::Dane, "usable", "mx.example.org", false, Need::Dane, "mx.example.org"},
        {"dane", Source::Dane, "unusable", "mx.example.org", false, Need::Encrypt, "mx.example.org"},
        {"dane", Source::Dane, "tlsa-error", "mx.example.org", false, Need::Refuse, "mx.example.org"},
        {"dane", Source::Dane, "no-tlsa", "mx.example.org", false, Need::Opportunistic, "mx.example.org"},
        {"dane", Source::Dane, "insecure", "mx.example.org", false, Need::Opportunistic, "mx.example.org"},
        {"encrypt", Source::Dane, "unusable", "mx.example.org", false, Need::Encrypt, "mx.example.org"},
        {"encrypt", Source::Override, "insecure", "mx.example.org", false, Need::Encrypt, "mx.example.org"},
        // MTA-STS: the MX must match a pattern (RFC 8461 §4.1), then PKIX for its name.
        {"verify match=mx.example.org:.backup.example servername=hostname", Source::MtaSts,
         "insecure", "mx.example.org", true, Need::Pkix, "mx.example.org"},
        {"verify match=mx.example.org:.backup.example servername=hostname", Source::MtaSts,
         "insecure", "a.backup.example", true, Need::Pkix, "a.backup.example"},
        {"verify match=mx.example.org:.backup.example servername=hostname", Source::MtaSts,
         "insecure", "a.b.backup.example", true, Need::Refuse, "a.b.backup.example"},
        {"verify match=mx.example.org:.backup.example servername=hostname", Source::MtaSts,
         "insecure", "mx.elsewhere.example", true, Need::Refuse, "mx.elsewhere.example"},
        {"secure", Source::Override, "insecure", "mx.example.org", false, Need::Pkix, "mx.example.org"},
        // Nothing to verify.
        {"may", Source::Override, "usable", "mx.example.org", false, Need::Opportunistic, "mx.example.org"},
        {"none", Source::Override, "usable", "mx.example.org", false, Need::Opportunistic, "mx.example.org"},
        {"", Source::None, "usable", "mx.example.org", false, Need::Opportunistic, "mx.example.org"},
    };
    for (const Row& r : rows) {
        CAPTURE(r.policy);
        CAPTURE(r.host_kind);
        CAPTURE(r.host_name);
        const Answer a = *r.policy ? Answer::found(r.policy, r.source, "why")
                                   : Answer::not_found("nothing published");
        DaneFacts facts;
        facts.domain = "example.org";
        const HostFacts h = host(r.host_name, r.host_kind);
        const HostNeed n = host_need(a, facts, h, r.with_sts ? &sts : nullptr);
        CHECK_EQ_GW("need", std::string(need_name(n.need)), std::string(need_name(r.want)));
        CHECK_EQ_GW("sni", n.sni, std::string(r.want_sni));
        CHECK_FALSE(n.why.empty());
        if (n.need == Need::Dane) {
            CHECK_EQ_GW("records", n.tlsa.size(), std::size_t(1));
            CHECK_EQ_GW("reference names", n.names, h.reference_names);
        }
    }
}

TEST_CASE("probe: judging one conversation") {
    struct Row {
        Need need;
        const char* conversation;
        AddrStatus want;
        const char* detail_has;
    };
    const Row rows[] = {
        {Need::Opportunistic, "refused", AddrStatus::Unreachable, "Connection refused"},
        {Need::Dane, "refused", AddrStatus::Unreachable, "connect"},
        {Need::Dane, "silent", AddrStatus::Unreachable, "timeout"},
        {Need::Opportunistic, "silent", AddrStatus::Unreachable, "banner"},
        // No STARTTLS: only an opportunistic policy lets Postfix send in cleartext.
        {Need::Opportunistic, "no-starttls", AddrStatus::Plaintext, "cleartext"},
        {Need::Encrypt, "no-starttls", AddrStatus::Failed, "requires TLS"},
        {Need::Dane, "no-starttls", AddrStatus::Failed, "STARTTLS not offered"},
        {Need::Pkix, "no-starttls", AddrStatus::Failed, "STARTTLS not offered"},
        {Need::Refuse, "no-starttls", AddrStatus::Failed, "refuse-why"},
        {Need::Opportunistic, "handshake-failed", AddrStatus::Plaintext, "handshake"},
        {Need::Encrypt, "handshake-failed", AddrStatus::Failed, "handshake"},
        // TLS: the need decides.
        {Need::Opportunistic, "tls", AddrStatus::Encrypted, "not authenticated"},
        {Need::Encrypt, "tls", AddrStatus::Encrypted, "as the policy allows"},
        {Need::Refuse, "tls", AddrStatus::Failed, "refuse-why"},
        {Need::Dane, "tls", AddrStatus::Failed, "DANE: the server sent no certificate"},
        {Need::Pkix, "tls", AddrStatus::Failed, "PKIX: the server sent no certificate"},
    };
    for (const Row& r : rows) {
        CAPTURE(need_name(r.need));
        CAPTURE(r.conversation);
        HostNeed n;
        n.need = r.need;
        n.why = "refuse-why";
        const Judgement j = judge_probe(n, "mx.example.org", conversation(r.conversation), "");
        CHECK_EQ_GW("status", std::string(addr_status_name(j.status)),
                    std::string(addr_status_name(r.want)));
        INFO("detail: " << j.detail);
        CHECK(j.detail.find(r.detail_has) != std::string::npos);
    }
}

TEST_CASE("probe: the verdict") {
    struct Addr {
        Need need;
        AddrStatus status;
        bool connected;  // and greeted
    };
    struct Row {
        const char* name;
        Outcome outcome;
        std::vector<Addr> addresses;
        VerdictKind want;
        int want_exit;
        const char* reason_has;
    };
    const auto V = AddrStatus::Verified, E = AddrStatus::Encrypted, P = AddrStatus::Plaintext,
               F = AddrStatus::Failed, U = AddrStatus::Unreachable;
    const std::vector<Row> rows = {
        {"all verified", Outcome::Found, {{Need::Dane, V, true}, {Need::Dane, V, true}},
         VerdictKind::Deliver, 0, "to h0 [192.0.2.0] over verified TLS"},
        {"first fails, second verifies", Outcome::Found, {{Need::Dane, F, true}, {Need::Dane, V, true}},
         VerdictKind::Deliver, 1, "to h1 [192.0.2.1] after 1 address failed"},
        {"first unreachable", Outcome::Found, {{Need::Pkix, U, false}, {Need::Pkix, V, true}},
         VerdictKind::Deliver, 1, "after 1 address failed"},
        {"encrypt as asked", Outcome::Found, {{Need::Encrypt, E, true}}, VerdictKind::Deliver, 0,
         "without authentication, as the policy asks"},
        {"opportunistic TLS", Outcome::NotFound, {{Need::Opportunistic, E, true}},
         VerdictKind::Downgrade, 0, "unauthenticated TLS"},
        {"cleartext", Outcome::NotFound, {{Need::Opportunistic, P, true}}, VerdictKind::Downgrade,
         0, "cleartext"},
        {"dane host fails, no-DANE host opportunistic", Outcome::Found,
         {{Need::Dane, F, true}, {Need::Opportunistic, E, true}}, VerdictKind::Downgrade, 1,
         "to h1"},
        {"all fail", Outcome::Found, {{Need::Dane, F, true}, {Need::Dane, F, true}},
         VerdictKind::Defer, 1, "no server meets the policy"},
        {"none reachable", Outcome::Found, {{Need::Dane, U, false}, {Need::Dane, U, false}},
         VerdictKind::Defer, 2, "defer"},
        {"connected but silent", Outcome::NotFound, {{Need::Opportunistic, U, false}},
         VerdictKind::Defer, 2, "defer"},
        {"greeted, then refused", Outcome::Found, {{Need::Dane, F, true}, {Need::Dane, U, false}},
         VerdictKind::Defer, 1, "defer"},
        {"no servers", Outcome::NotFound, {}, VerdictKind::NoServers, 2, "no mail server"},
        {"policy TEMP", Outcome::Temp, {{Need::Dane, V, true}}, VerdictKind::PolicyTemp, 75,
         "policy lookup failed"},
        {"policy timeout", Outcome::Timeout, {}, VerdictKind::PolicyTemp, 75, "defers"},
    };
    for (const Row& r : rows) {
        CAPTURE(r.name);
        TargetReport rep;
        rep.policy = r.outcome == Outcome::Found ? Answer::found("dane", Source::Dane, "x")
                     : r.outcome == Outcome::NotFound ? Answer::not_found("x")
                     : r.outcome == Outcome::Temp     ? Answer::temp("x")
                                                      : Answer::timeout("x");
        for (std::size_t i = 0; i < r.addresses.size(); ++i) {
            AddressReport a;
            a.host = "h" + std::to_string(i);
            a.address = "192.0.2." + std::to_string(i);
            a.need.need = r.addresses[i].need;
            a.probe.connected = r.addresses[i].connected;
            if (r.addresses[i].connected) a.probe.banner = "220 h ESMTP";  // greeted
            a.judgement.status = r.addresses[i].status;
            a.judgement.detail = "d";
            rep.addresses.push_back(a);
        }
        conclude(rep);
        CHECK_EQ_GW("verdict", std::string(verdict_name(rep.verdict)),
                    std::string(verdict_name(r.want)));
        CHECK_EQ_GW("exit code", rep.exit_code, r.want_exit);
        INFO("reason: " << rep.verdict_reason);
        CHECK(rep.verdict_reason.find(r.reason_has) != std::string::npos);
        // The JSON report carries the same verdict.
        const std::string json = report_json(rep);
        CHECK(json.find("\"verdict\":\"" + std::string(verdict_name(r.want)) + "\"") !=
              std::string::npos);
    }
}
