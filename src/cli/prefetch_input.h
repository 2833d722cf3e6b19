// Where `tlspolicy prefetch` gets its domains: lines of a domain list (FILE or stdin) and the
// recipient domains of a Postfix mail log, ranked by how often mail goes there. Pure parsing:
// the caller turns each domain into the daemon's key form with normalize_key().
#pragma once

#include <cstddef>
#include <istream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace tlspolicy::prefetch {

// The domain named by one line of a domain list: text from '#' on is a comment, surrounding
// blanks are dropped, "<addr>" loses its brackets and an address is cut to what follows its
// last '@'; "" when the line names nothing. The result is not validated.
std::string domain_of_line(std::string_view line);

// Mail log lines longer than this (in bytes, without the newline) are ignored.
inline constexpr std::size_t kMaxMaillogLine = 64 * 1024;
// At most this many distinct domains are counted; later new domains are dropped.
inline constexpr std::size_t kMaxMaillogDomains = 1'000'000;
// Recipient domains longer than this (in bytes; no valid domain is, even in UTF-8) are ignored.
inline constexpr std::size_t kMaxMaillogDomainBytes = 1024;

// The recipient domain of one Postfix delivery log line, or nullopt. A delivery line is
// "[syslog prefix] PROGRAM[PID]: QUEUEID: to=<ADDR>, ..., status=STATUS ..." (or the same
// without the prefix, as `journalctl -o cat` prints it) with STATUS "sent" or "deferred"; the
// domain is what follows ADDR's last '@' outside double quotes, ASCII-lowercased, other bytes
// kept. Never the orig_to= field; nullopt for an address literal ("[...]"), a missing or empty
// domain, one with blanks or control bytes, or one longer than kMaxMaillogDomainBytes.
std::optional<std::string> maillog_recipient_domain(std::string_view line);

// One recipient domain of a mail log and the number of delivery lines that named it.
struct MaillogDomain {
    std::string domain;
    std::size_t count = 0;
};

// What domains_from_maillog() read and left out.
struct MaillogStats {
    std::size_t lines = 0;      // lines read, including ignored ones
    std::size_t used = 0;       // sent/deferred delivery lines counted for a domain
    std::size_t no_domain = 0;  // sent/deferred delivery lines without a usable domain
    std::size_t too_long = 0;   // lines longer than kMaxMaillogLine, ignored
    std::size_t over_cap = 0;   // delivery lines of new domains beyond the cap on domains
    std::size_t skipped() const { return no_domain + too_long + over_cap; }
};

// Counts the recipient domains of every line of `in` (see maillog_recipient_domain) and returns
// them most frequent first, equal counts by name (bytewise). Memory stays bounded by
// kMaxMaillogLine and `max_domains`. A read error (not end of file) is an Error; `stats`, when
// given, is filled in either case.
Result<std::vector<MaillogDomain>> domains_from_maillog(
    std::istream& in, MaillogStats* stats = nullptr, std::size_t max_domains = kMaxMaillogDomains);

}  // namespace tlspolicy::prefetch
