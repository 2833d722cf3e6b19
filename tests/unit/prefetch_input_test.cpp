// Table-driven tests for the prefetch sources (src/cli/prefetch_input.h): domain list lines,
// Postfix delivery log lines, and the ranking of a whole mail log
// (tests/integration/data/maillog.sample against its .expected file).
#include "cli/prefetch_input.h"

#include <doctest/doctest.h>

#include <fstream>
#include <optional>
#include <sstream>
#include <streambuf>
#include <string>
#include <vector>

#include "got_want.h"

using namespace std::string_literals;
using tlspolicy::prefetch::domain_of_line;
using tlspolicy::prefetch::domains_from_maillog;
using tlspolicy::prefetch::kMaxMaillogDomainBytes;
using tlspolicy::prefetch::kMaxMaillogLine;
using tlspolicy::prefetch::maillog_recipient_domain;
using tlspolicy::prefetch::MaillogDomain;
using tlspolicy::prefetch::MaillogStats;

namespace {

const std::string kNone = "(none)";

std::string shown_domain(const std::optional<std::string>& d) {
    return d ? *d : kNone;
}

// A BSD-syslog smtp(8) line for `to` with `status` and the rest of Postfix's fields.
std::string smtp(const std::string& to, const std::string& status, const std::string& extra = "") {
    return "Nov 23 10:00:01 mx postfix/smtp[1234]: 4ABC123: to=<" + to + ">" + extra +
           ", relay=mx.example.org[192.0.2.1]:25, delay=0.5, delays=0.1/0/0.2/0.2, dsn=2.0.0, "
           "status=" +
           status + " (250 2.0.0 Ok)";
}

std::string render(const std::vector<MaillogDomain>& v) {
    std::string out;
    for (const auto& d : v)
        out += std::to_string(d.count) + " " + d.domain + "\n";
    return out;
}

}  // namespace

TEST_CASE("prefetch: domain_of_line") {
    struct Row {
        std::string line, want;
    };
    const std::vector<Row> rows = {
        {"example.org", "example.org"},
        {"  Example.ORG \t", "Example.ORG"},  // case is normalize_key's business
        {"example.org\r", "example.org"},
        {"example.org # our biggest peer", "example.org"},
        {"# a comment", ""},
        {"   # indented comment", ""},
        {"", ""},
        {" \t ", ""},
        {"bob@example.org", "example.org"},
        {"<bob@example.org>", "example.org"},
        {"  <Bob@Example.org>  ", "Example.org"},
        {"\"a@b\"@example.org", "example.org"},
        {"@example.org", "example.org"},
        {"bob@", ""},
        {"<>", ""},
        {"bücher.example", "bücher.example"},
        {"xn--bcher-kva.example", "xn--bcher-kva.example"},
        {"[192.0.2.1]", "[192.0.2.1]"},  // normalize_key classifies it (not a domain)
        {"example.org.", "example.org."},
    };
    for (const auto& r : rows) {
        INFO("line: " << r.line);
        CHECK_EQ_GW("domain", domain_of_line(r.line), r.want);
    }
}

TEST_CASE("prefetch: maillog_recipient_domain") {
    struct Row {
        const char* name;
        std::string line;
        std::string want;  // kNone: not counted
    };
    const std::string long_domain(kMaxMaillogDomainBytes + 1, 'a');
    const std::string ok_reason = ", dsn=2.0.0, status=sent (250 2.0.0 Ok)";
    const std::vector<Row> rows = {
        // --- delivery lines that count
        {"smtp sent", smtp("bob@example.org", "sent"), "example.org"},
        {"smtp deferred",
         "Nov 23 10:00:01 mx postfix/smtp[1234]: 4ABC123: to=<bob@example.org>, relay=none, "
         "delay=30, delays=0/0/30/0, dsn=4.4.1, status=deferred (connect to "
         "mx.example.org[192.0.2.1]:25: Connection timed out)",
         "example.org"},
        {"RFC 3339 timestamp (rsyslog)",
         "2026-11-23T10:00:01.123456+00:00 mx postfix/smtp[1234]: 4ABC123: to=<bob@example.org>, "
         "relay=mx.example.org[192.0.2.1]:25, delay=0.5, delays=0.1/0/0.2/0.2" +
             ok_reason,
         "example.org"},
        {"message only (journalctl -o cat)",
         "4ABC123: to=<bob@example.org>, relay=mx.example.org[192.0.2.1]:25, delay=0.5, "
         "delays=0.1/0/0.2/0.2" +
             ok_reason,
         "example.org"},
        {"single-digit day (two spaces)",
         "Nov  3 10:00:01 mx postfix/smtp[1234]: 4ABC123: to=<bob@example.org>, relay=none, "
         "delay=1, delays=1/0/0/0" +
             ok_reason,
         "example.org"},
        {"second instance's syslog name",
         "Nov 23 10:00:01 mx postfix-out/smtp[1234]: 4ABC123: to=<bob@example.org>, relay=none, "
         "delay=1, delays=1/0/0/0" +
             ok_reason,
         "example.org"},
        {"long queue id",
         "Nov 23 10:00:01 mx postfix/smtp[1]: 4Xk2Lq0Zz1z9: to=<a@example.org>, "
         "relay=none, delay=1, delays=1/0/0/0" +
             ok_reason,
         "example.org"},
        {"lmtp",
         "Nov 23 10:00:01 mx postfix/lmtp[77]: 4ABC123: to=<bob@example.org>, "
         "relay=mx[private/dovecot-lmtp], delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent "
         "(250 2.0.0 <bob@example.org> Saved)",
         "example.org"},
        {"local with orig_to",
         "Nov 23 10:00:01 mx postfix/local[77]: 4ABC123: to=<root@example.org>, orig_to=<root>, "
         "relay=local, delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (delivered to "
         "mailbox)",
         "example.org"},
        {"conn_use field", smtp("bob@example.org", "sent", ", conn_use=2"), "example.org"},
        {"status without reason",
         "Nov 23 10:00:01 mx postfix/smtp[1]: 4ABC123: to=<bob@example.org>, relay=none, "
         "delay=1, delays=1/0/0/0, dsn=2.0.0, status=sent",
         "example.org"},
        {"uppercase domain", smtp("Bob@Example.ORG", "sent"), "example.org"},
        {"U-label kept as bytes", smtp("jürgen@bücher.example", "sent"), "bücher.example"},
        {"only ASCII is lowercased", smtp("x@BÜCHER.example", "sent"), "bÜcher.example"},
        {"A-label", smtp("x@XN--BCHER-KVA.example", "sent"), "xn--bcher-kva.example"},
        {"trailing dot kept (normalize_key drops it)", smtp("bob@example.org.", "sent"),
         "example.org."},
        {"quoted local part with @", smtp("\"a@b\"@example.org", "sent"), "example.org"},
        {"quoted local part with escaped quote and @", smtp("\"a\\\"@x\"@example.org", "sent"),
         "example.org"},
        {"quoted local part with '>' and a fake status",
         smtp("\"x>, relay=none, status=sent\"@example.org", "sent"), "example.org"},
        {"internal form (Postfix < 3.5): unquoted @ in the local part",
         smtp("a@b@example.org", "sent"), "example.org"},
        {"internal form: unquoted '>' in the local part", smtp("a>b@example.org", "sent"),
         "example.org"},
        {"orig_to is never the recipient",
         smtp("bob@example.org", "sent", ", orig_to=<alias@other.example>"), "example.org"},
        {"orig_to with quotes and '>'",
         smtp("bob@example.org", "sent", ", orig_to=<\"x>, status=bounced\"@other.example>"),
         "example.org"},
        {"remote reply quoting a fake record",
         "Nov 23 10:00:01 mx postfix/smtp[1]: 4ABC123: to=<bob@example.org>, relay=none, "
         "delay=1, delays=1/0/0/0, dsn=4.3.0, status=deferred (host x said: 451 x]: 4AB: "
         "to=<evil@evil.example>, relay=none, dsn=2.0.0, status=sent (in reply to end of DATA "
         "command))",
         "example.org"},
        // --- delivery lines that do not count
        {"bounced", smtp("bob@example.org", "bounced"), kNone},
        {"expired (recipient line)", smtp("bob@example.org", "expired"), kNone},
        {"address verification: deliverable", smtp("bob@example.org", "deliverable"), kNone},
        {"address verification: undeliverable", smtp("bob@example.org", "undeliverable"), kNone},
        {"status that only starts with sent", smtp("bob@example.org", "sentinel"), kNone},
        {"bounced with a fake status in the reply",
         "Nov 23 10:00:01 mx postfix/smtp[1]: 4ABC123: to=<bob@example.org>, relay=none, "
         "delay=1, delays=1/0/0/0, dsn=5.1.1, status=bounced (host x said: 550 x]: 4AB: "
         "to=<evil@evil.example>, relay=none, dsn=2.0.0, status=sent)",
         kNone},
        {"bounced, orig_to hiding a status",
         smtp("bob@example.org", "bounced", ", orig_to=<\"y, dsn=2.0.0, status=sent\"@o.example>"),
         kNone},
        {"address literal", smtp("user@[192.0.2.1]", "sent"), kNone},
        {"IPv6 address literal", smtp("user@[IPv6:2001:db8::1]", "sent"), kNone},
        {"empty domain", smtp("user@", "sent"), kNone},
        {"no domain", smtp("dmarc-reports", "sent"), kNone},
        {"empty address", smtp("", "sent"), kNone},
        {"blank in the domain", smtp("\"a\"@exa mple.org", "sent"), kNone},
        {"control byte in the domain", smtp("a@exa\x01mple.org", "sent"), kNone},
        {"domain longer than the limit", smtp("a@" + long_domain, "sent"), kNone},
        // --- other daemons and other lines
        {"qmgr from=",
         "Nov 23 10:00:01 mx postfix/qmgr[1733]: 4ABC123: from=<alice@example.net>, size=1234, "
         "nrcpt=1 (queue active)",
         kNone},
        {"qmgr expired",
         "Nov 23 10:00:01 mx postfix/qmgr[1733]: 4ABC123: from=<alice@example.net>, "
         "status=expired, returned to sender",
         kNone},
        {"cleanup", "Nov 23 10:00:01 mx postfix/cleanup[88]: 4ABC123: message-id=<x@example.net>",
         kNone},
        {"smtpd reject with to=",
         "Nov 23 10:00:01 mx postfix/smtpd[9]: NOQUEUE: reject: RCPT from unknown[203.0.113.9]: "
         "554 5.7.1 <v@example.org>: Relay access denied; from=<s@spam.example> "
         "to=<v@example.org> proto=ESMTP helo=<spam.example>",
         kNone},
        {"smtpd client", "Nov 23 10:00:01 mx postfix/smtpd[9]: 4ABC123: client=x[192.0.2.9]",
         kNone},
        {"TLS connection line",
         "Nov 23 10:00:01 mx postfix/smtp[1]: Verified TLS connection established to "
         "mx.example.org[192.0.2.1]:25: TLSv1.3",
         kNone},
        {"empty line", "", kNone},
        // --- malformed
        {"truncated address", "Nov 23 10:00:01 mx postfix/smtp[1]: 4ABC123: to=<bob@exa", kNone},
        {"truncated before status",
         "Nov 23 10:00:01 mx postfix/smtp[1]: 4ABC123: to=<bob@example.org>, relay=none, delay=1",
         kNone},
        {"fields without commas",
         "Nov 23 10:00:01 mx postfix/smtp[1]: 4ABC123: to=<bob@example.org> relay=none "
         "status=sent",
         kNone},
        {"no queue id",
         "Nov 23 10:00:01 mx postfix/smtp[1]: to=<bob@example.org>, relay=none, delay=1, "
         "delays=1/0/0/0" +
             ok_reason,
         kNone},
        {"no program prefix, no queue id", "to=<bob@example.org>, status=sent", kNone},
        {"unterminated quote", smtp("\"bob@example.org", "sent"), kNone},
    };
    for (const auto& r : rows) {
        INFO(r.name << "\nline: " << r.line);
        CHECK_EQ_GW("domain", shown_domain(maillog_recipient_domain(r.line)), r.want);
    }
}

TEST_CASE("prefetch: domains_from_maillog counts, ranks and skips") {
    const std::string padded =  // exactly kMaxMaillogLine bytes: still read
        smtp("a@edge.example", "sent");
    std::string at_limit = padded.substr(0, padded.size() - 1);
    at_limit += std::string(kMaxMaillogLine - padded.size(), 'x') + ")";
    REQUIRE(at_limit.size() == kMaxMaillogLine);
    std::string over_limit = smtp("a@big.example", "sent");
    over_limit += std::string(kMaxMaillogLine + 1 - over_limit.size(), 'x');

    std::string log;
    log += smtp("a@b.example", "sent") + "\n";
    log += smtp("a@a.example", "deferred") + "\n";
    log += smtp("b@B.Example", "sent") + "\r\n";  // CRLF
    log += smtp("a@c.example", "bounced") + "\n";
    log += smtp("a@[192.0.2.1]", "sent") + "\n";  // no domain
    log += "garbage\n\n";
    log += at_limit + "\n";
    log += over_limit + "\n";
    log += smtp("c@a.example", "sent") + "\n";
    log += smtp("d@b.example", "sent");  // no final newline

    std::istringstream in(log);
    MaillogStats st;
    auto got = domains_from_maillog(in, &st);
    REQUIRE(got.ok());
    CHECK_EQ_GW("ranking", render(*got), "3 b.example\n2 a.example\n1 edge.example\n"s);
    CHECK_EQ_GW("lines", st.lines, std::size_t{11});
    CHECK_EQ_GW("used", st.used, std::size_t{6});
    CHECK_EQ_GW("no_domain", st.no_domain, std::size_t{1});
    CHECK_EQ_GW("too_long", st.too_long, std::size_t{1});
    CHECK_EQ_GW("over_cap", st.over_cap, std::size_t{0});
    CHECK_EQ_GW("skipped", st.skipped(), std::size_t{2});
}

TEST_CASE("prefetch: domains_from_maillog caps distinct domains") {
    std::string log;
    for (const char* d : {"a.example", "b.example", "a.example", "c.example", "b.example"})
        log += smtp(std::string("x@") + d, "sent") + "\n";
    std::istringstream in(log);
    MaillogStats st;
    auto got = domains_from_maillog(in, &st, 2);
    REQUIRE(got.ok());
    CHECK_EQ_GW("ranking", render(*got), "2 a.example\n2 b.example\n"s);
    CHECK_EQ_GW("used", st.used, std::size_t{4});
    CHECK_EQ_GW("over_cap", st.over_cap, std::size_t{1});
}

TEST_CASE("prefetch: domains_from_maillog on empty input and on read errors") {
    std::istringstream empty;
    MaillogStats st;
    auto got = domains_from_maillog(empty, &st);
    REQUIRE(got.ok());
    CHECK(got->empty());
    CHECK_EQ_GW("lines", st.lines, std::size_t{0});

    // A stream buffer that fails the way a disk read error does (libstdc++'s filebuf throws
    // from underflow(); the stream turns that into badbit).
    struct FailingBuf : std::streambuf {
        int_type underflow() override { throw std::ios_base::failure("EIO"); }
    } buf;
    std::istream failing(&buf);
    auto failed = domains_from_maillog(failing, &st);
    REQUIRE_FALSE(failed.ok());
    CHECK_EQ_GW("error", failed.error().message, "read error after 0 line(s)"s);

    // A directory opens but cannot be read.
    std::ifstream dir("/");
    if (dir.is_open()) {
        auto r = domains_from_maillog(dir, &st);
        CHECK_FALSE(r.ok());
    }
}

TEST_CASE("prefetch: the sample mail log ranks as maillog.sample.expected says") {
    const std::string dir = std::string(SOURCE_ROOT) + "/tests/integration/data/";
    std::ifstream log(dir + "maillog.sample", std::ios::binary);
    std::ifstream want_file(dir + "maillog.sample.expected", std::ios::binary);
    REQUIRE(log.good());
    REQUIRE(want_file.good());
    std::stringstream want;
    want << want_file.rdbuf();

    MaillogStats st;
    auto got = domains_from_maillog(log, &st);
    REQUIRE(got.ok());
    CHECK_EQ_GW("ranking", render(*got), want.str());

    std::size_t want_used = 0;
    for (const auto& d : *got)
        want_used += d.count;
    CHECK_EQ_GW("used", st.used, want_used);
    CHECK(st.lines > 300);
    CHECK_EQ_GW("too_long", st.too_long, std::size_t{0});
    CHECK_EQ_GW("no_domain (2 literals, 1 bare name)", st.no_domain, std::size_t{3});
}
