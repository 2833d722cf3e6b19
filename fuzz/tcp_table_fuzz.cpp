// fuzz-tcp-table: the tcp_table codec. Requests are parsed by parse_tcp_table_request() and
// parse_socketmap_request() (server/wire.h, what the server's sessions call), a key is
// %XX-decoded with hex_unquote() (util/hexquote.h), replies are built by tcp_table_reply() / socketmap_reply() (server/wire.h) from an answer
// whose policy and reason are the fuzz input.
//
// Invariants:
//   - hex_unquote() accepts exactly the inputs whose every '%' starts a two-hex-digit escape,
//     shrinks by two bytes per escape, and what it returns re-encodes (hex_quote) to text that
//     decodes back to it; escape-free printable input is returned and re-encoded unchanged;
//   - hex_quote() (with and without quote_space) gives printable ASCII that hex_unquote()
//     turns back into the original bytes;
//   - a tcp_table reply is one line of printable ASCII ending in '\n', at most 4096 bytes,
//     with the code wire_status() gives; a Found policy decodes back to the policy; reasons
//     are printable, at most kMaxWireReason (+ "...") and never empty (kReasonSlack);
//   - a socketmap reply fits kMaxSocketmapReply, starts with the status word, carries a Found
//     policy verbatim and a reason only as printable ASCII.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/answer.h"
#include "fuzz_common.h"
#include "server/wire.h"
#include "util/hexquote.h"

using namespace tlspolicy;

namespace {

bool is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// Reference acceptance: every '%' is followed by two hex digits (which are not '%').
bool well_formed(std::string_view in, std::size_t& escapes) {
    escapes = 0;
    for (std::size_t i = 0; i < in.size(); ++i) {
        if (in[i] != '%') continue;
        if (i + 2 >= in.size() || !is_hex(in[i + 1]) || !is_hex(in[i + 2])) return false;
        ++escapes;
        i += 2;
    }
    return true;
}

bool needs_quoting(char c) {
    const auto u = static_cast<unsigned char>(c);
    return c == '%' || u < 0x20 || u >= 0x7f;
}

void check_quote(std::string_view in, bool quote_space) {
    const std::string q = hex_quote(in, quote_space);
    FUZZ_CHECK(fuzz::printable_ascii(q));
    FUZZ_CHECK(q.size() >= in.size() && q.size() <= 3 * in.size());
    if (quote_space) FUZZ_CHECK(q.find(' ') == std::string::npos);
    auto back = hex_unquote(q);
    FUZZ_CHECK(back.ok());
    FUZZ_CHECK(*back == in);
}

void check_unquote(std::string_view in) {
    std::size_t escapes = 0;
    const bool want_ok = well_formed(in, escapes);
    auto out = hex_unquote(in);
    FUZZ_CHECK(out.ok() == want_ok);
    if (!out.ok()) {
        FUZZ_CHECK(fuzz::printable_ascii(out.error().message));
        FUZZ_CHECK(!fuzz::echoes(out.error().message, in, 8));
        return;
    }
    FUZZ_CHECK(out->size() == in.size() - 2 * escapes);
    const std::string requoted = hex_quote(*out);
    auto again = hex_unquote(requoted);
    FUZZ_CHECK(again.ok() && *again == *out);
    bool plain = escapes == 0;
    for (char c : in)
        plain = plain && !needs_quoting(c);
    if (plain) FUZZ_CHECK(*out == in && requoted == in);
    // Canonical input (upper-case escapes of exactly the bytes that need them) is a fixed
    // point of decode + encode.
    if (hex_quote(*out) == in) FUZZ_CHECK(hex_quote(*hex_unquote(in)) == in);
}

// wire_reason() gives at most kMaxWireReason characters and "..." when it cuts (an escape
// once overshot the cut: corpus/tcp-table/crash-wire-reason-overlong).
constexpr std::size_t kReasonSlack = 3;

void check_reason(std::string_view reason) {
    FUZZ_CHECK(!reason.empty());
    FUZZ_CHECK(fuzz::printable_ascii(reason));
    FUZZ_CHECK(reason.size() <= kMaxWireReason + kReasonSlack);
}

void check_replies(Outcome outcome, std::string_view text) {
    Answer a;
    a.outcome = outcome;
    a.policy = std::string(text);
    a.reason = std::string(text);
    const WireStatus st = wire_status(outcome);

    const std::string tcp = tcp_table_reply(a);
    FUZZ_CHECK(tcp.size() >= 5 && tcp.size() <= kMaxTcpTableReply);
    FUZZ_CHECK(tcp.back() == '\n');
    const std::string_view line(tcp.data(), tcp.size() - 1);
    FUZZ_CHECK(fuzz::printable_ascii(line));  // one line: no '\n' inside
    const std::string_view code = line.substr(0, 3);
    FUZZ_CHECK(line[3] == ' ');
    auto body = hex_unquote(line.substr(4));
    FUZZ_CHECK(body.ok());
    if (code == std::to_string(st.tcp_code)) {
        if (outcome == Outcome::Found) {
            FUZZ_CHECK(*body == text);
        } else {
            FUZZ_CHECK(*body == wire_reason(a));
            check_reason(*body);
        }
    } else {
        // Only a Found answer can be turned into a failure (empty or too long a policy).
        FUZZ_CHECK(outcome == Outcome::Found && code == "400");
        FUZZ_CHECK(text.empty() || 4 + hex_quote(text).size() + 1 > kMaxTcpTableReply);
        check_reason(*body);
    }

    const std::string sm = socketmap_reply(a);
    FUZZ_CHECK(sm.size() <= kMaxSocketmapReply);
    const std::size_t space = sm.find(' ');
    FUZZ_CHECK(space != std::string::npos);
    const std::string_view word = std::string_view(sm).substr(0, space);
    const std::string_view rest = std::string_view(sm).substr(space + 1);
    if (word == st.socketmap) {
        if (outcome == Outcome::Found) {
            FUZZ_CHECK(rest == text);
        } else if (outcome == Outcome::NotFound) {
            FUZZ_CHECK(rest.empty());
        } else {
            FUZZ_CHECK(rest == wire_reason(a));
            check_reason(rest);
        }
    } else {
        FUZZ_CHECK(outcome == Outcome::Found && word == "TEMP");
        FUZZ_CHECK(text.empty() || 3 + text.size() > kMaxSocketmapReply);
        check_reason(rest);
    }
}

// The request parsers the server uses (server/wire.h): tcp_table "get KEY" lines and
// socketmap "NAME KEY" payloads, against a reference reading of the same rules.
void check_requests(std::string_view in) {
    std::string_view line = in;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const WireRequest t = parse_tcp_table_request(in);
    if (line.starts_with("get ")) {
        auto key = hex_unquote(line.substr(4));
        FUZZ_CHECK(t.ok == key.ok());
        if (t.ok) FUZZ_CHECK(t.key == *key && t.name.empty());
    } else {
        FUZZ_CHECK(!t.ok);
    }
    if (!t.ok) FUZZ_CHECK(!t.error.empty() && fuzz::printable_ascii(t.error) &&
                          !fuzz::echoes(t.error, in, 12));

    const WireRequest m = parse_socketmap_request(in);
    const auto space = in.find(' ');
    FUZZ_CHECK(m.ok == (space != std::string_view::npos && space > 0));
    if (m.ok) {
        FUZZ_CHECK(!m.name.empty() && m.name.find(' ') == std::string::npos);
        FUZZ_CHECK(m.name + " " + m.key == in);
    } else {
        FUZZ_CHECK(!m.error.empty() && fuzz::printable_ascii(m.error));
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
    const std::string_view in = fuzz::as_text(data, size);

    check_unquote(in);
    // The server strips "get " first; a request line is decoded the same way.
    if (in.starts_with("get ")) check_unquote(in.substr(4));
    check_quote(in, false);
    check_quote(in, true);
    check_requests(in);

    for (Outcome o :
         {Outcome::Found, Outcome::NotFound, Outcome::Temp, Outcome::Timeout, Outcome::Perm}) {
        check_replies(o, in);
    }
    return 0;
}
