#include "cli/prefetch_input.h"

#include <algorithm>
#include <unordered_map>

namespace tlspolicy::prefetch {

namespace {

constexpr std::string_view kBlanks = " \t\r\n";

bool is_alnum(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// An address between '<' and '>' as Postfix logs it, starting just after the '<'.
struct Address {
    std::string_view text;                         // without the angle brackets
    std::size_t last_at = std::string_view::npos;  // in text, outside double quotes
    std::size_t end = 0;                           // in the line, just after the closing '>'
};

// Postfix writes the address unquoted (internal form, before 3.5) or quoted (external form),
// so neither '>' nor '@' can be trusted blindly: inside double quotes (with backslash escapes)
// nothing counts, and the closing '>' is the first one outside quotes that ends the line or is
// followed by the ',' of the next field.
std::optional<Address> parse_address(std::string_view line, std::size_t start) {
    Address a;
    bool quoted = false;
    for (std::size_t i = start; i < line.size(); ++i) {
        const char c = line[i];
        if (quoted) {
            if (c == '\\')
                ++i;
            else if (c == '"')
                quoted = false;
        } else if (c == '"') {
            quoted = true;
        } else if (c == '@') {
            a.last_at = i - start;
        } else if (c == '>' && (i + 1 == line.size() || line[i + 1] == ',')) {
            a.text = line.substr(start, i - start);
            a.end = i + 1;
            return a;
        }
    }
    return std::nullopt;
}

// Where the "QUEUEID: to=<" of a delivery record starts: at the beginning of the line (the
// message alone) or after the first "]: " (syslog, journal and postlogd formats all end their
// prefix with "PROGRAM[PID]: "). Looking no further keeps text quoted from a remote server
// (in the status's parenthesis) from passing for a record.
std::size_t record_start(std::string_view line) {
    for (std::size_t i = 0; i < line.size() && is_alnum(line[i]); ++i)
        if (line.substr(i + 1).starts_with(": to=<")) return 0;
    const auto p = line.find("]: ");
    return p == std::string_view::npos ? std::string_view::npos : p + 3;
}

enum class LineKind { Other, Delivery };

struct Parsed {
    LineKind kind = LineKind::Other;  // Delivery: status sent or deferred
    std::optional<std::string> domain;
};

Parsed parse_line(std::string_view line) {
    Parsed out;
    std::size_t pos = record_start(line);
    if (pos == std::string_view::npos) return out;
    // QUEUEID: short (hex) or long (base 52 with a 'z' separator) form; alphanumerics either way.
    const std::size_t id_start = pos;
    while (pos < line.size() && is_alnum(line[pos]))
        ++pos;
    if (pos == id_start || pos - id_start > 64) return out;
    constexpr std::string_view kTo = ": to=<";
    if (!line.substr(pos).starts_with(kTo)) return out;
    const auto to = parse_address(line, pos + kTo.size());
    if (!to) return out;
    pos = to->end;

    // ", name=value" fields (orig_to, relay, conn_use, delay, delays, dsn) up to ", status=WORD".
    std::string_view status;
    while (pos < line.size()) {
        if (!line.substr(pos).starts_with(", ")) return out;
        pos += 2;
        const std::size_t name_start = pos;
        while (pos < line.size() && ((line[pos] >= 'a' && line[pos] <= 'z') || line[pos] == '_'))
            ++pos;
        if (pos == name_start || pos == line.size() || line[pos] != '=') return out;
        const std::string_view name = line.substr(name_start, pos - name_start);
        ++pos;
        if (name == "status") {
            const auto end = line.find(' ', pos);
            status = line.substr(pos, end == std::string_view::npos ? end : end - pos);
            break;
        }
        if (pos < line.size() && line[pos] == '<') {
            const auto addr = parse_address(line, pos + 1);
            if (!addr) return out;
            pos = addr->end;
        } else {
            pos = line.find(',', pos);
            if (pos == std::string_view::npos) return out;
        }
    }
    if (status != "sent" && status != "deferred") return out;
    out.kind = LineKind::Delivery;

    if (to->last_at == std::string_view::npos) return out;
    const std::string_view domain = to->text.substr(to->last_at + 1);
    if (domain.empty() || domain.front() == '[' || domain.size() > kMaxMaillogDomainBytes)
        return out;
    std::string lower(domain);
    for (char& c : lower) {
        const auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u == 0x7f) return out;
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    out.domain = std::move(lower);
    return out;
}

}  // namespace

std::string domain_of_line(std::string_view line) {
    if (auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    const auto b = line.find_first_not_of(kBlanks);
    if (b == std::string_view::npos) return {};
    const auto e = line.find_last_not_of(kBlanks);
    line = line.substr(b, e - b + 1);
    if (line.size() >= 2 && line.front() == '<' && line.back() == '>')
        line = line.substr(1, line.size() - 2);
    if (auto at = line.rfind('@'); at != std::string_view::npos) line = line.substr(at + 1);
    return std::string(line);
}

std::optional<std::string> maillog_recipient_domain(std::string_view line) {
    return parse_line(line).domain;
}

Result<std::vector<MaillogDomain>> domains_from_maillog(std::istream& in, MaillogStats* stats,
                                                        std::size_t max_domains) {
    MaillogStats st;
    std::unordered_map<std::string, std::size_t> counts;
    std::string line;
    bool overlong = false;  // the current line passed kMaxMaillogLine: dropped to its end

    auto end_line = [&] {
        ++st.lines;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (overlong || line.size() > kMaxMaillogLine) {
            ++st.too_long;
        } else {
            Parsed p = parse_line(line);
            if (p.kind == LineKind::Delivery) {
                if (!p.domain) {
                    ++st.no_domain;
                } else if (auto it = counts.find(*p.domain); it != counts.end()) {
                    ++it->second;
                    ++st.used;
                } else if (counts.size() >= max_domains) {
                    ++st.over_cap;
                } else {
                    counts.emplace(std::move(*p.domain), 1);
                    ++st.used;
                }
            }
        }
        line.clear();
        overlong = false;
    };

    std::vector<char> buf(64 * 1024);
    bool pending = false;  // bytes of an unterminated line were seen
    while (in) {
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        const auto n = static_cast<std::size_t>(in.gcount());
        std::string_view chunk(buf.data(), n);
        while (!chunk.empty()) {
            const auto nl = chunk.find('\n');
            const std::string_view piece = chunk.substr(0, nl);
            if (!overlong) {
                if (line.size() + piece.size() > kMaxMaillogLine + 1) {  // +1: a trailing '\r'
                    overlong = true;
                    line.clear();
                } else {
                    line.append(piece);
                }
            }
            pending = true;
            if (nl == std::string_view::npos) break;
            end_line();
            pending = false;
            chunk.remove_prefix(nl + 1);
        }
    }
    if (pending) end_line();
    if (stats) *stats = st;
    if (in.bad()) return make_error("read error after " + std::to_string(st.lines) + " line(s)");

    std::vector<MaillogDomain> out;
    out.reserve(counts.size());
    for (auto& [domain, count] : counts)
        out.push_back(MaillogDomain{domain, count});
    std::sort(out.begin(), out.end(), [](const MaillogDomain& a, const MaillogDomain& b) {
        return a.count != b.count ? a.count > b.count : a.domain < b.domain;
    });
    return out;
}

}  // namespace tlspolicy::prefetch
