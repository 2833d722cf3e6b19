// The edges where an Answer leaves the process: socketmap replies, tcp_table replies and CLI
// exit codes. wire_status() is the one place where outcomes map to what clients see.
#pragma once

#include <string>
#include <string_view>

#include "core/answer.h"

namespace tlspolicy {

struct WireStatus {
    std::string_view socketmap;  // "OK", "NOTFOUND", "TEMP", "TIMEOUT", "PERM"
    int tcp_code;                // 200 found, 500 not found, 400 any failure
    int exit_code;               // tlspolicy query: 0 found, 1 not found, 75 (EX_TEMPFAIL) failure
};

// The mapping of every outcome to every edge.
WireStatus wire_status(Outcome outcome);

// Longest reason sent to a client; Postfix logs at most 200 characters of it.
inline constexpr std::size_t kMaxWireReason = 100;

// The reason as clients see it: printable ASCII, at most kMaxWireReason characters (then
// "..." when cut), never empty for failures.
std::string wire_reason(AnswerView answer);

// Longest replies Postfix reads: dict_sockmap's default socketmap_max_reply, and dict_tcp's
// line limit (newline included). A longer policy (a huge MTA-STS policy with TLSRPT
// attributes) is answered TEMP: Postfix would fail on it and defer anyway, and this way the
// log says why.
inline constexpr std::size_t kMaxSocketmapReply = 100000;
inline constexpr std::size_t kMaxTcpTableReply = 4096;

// Socketmap reply payload (before netstring framing): "OK <policy>", "NOTFOUND ", "TEMP <why>".
std::string socketmap_reply(AnswerView answer);
// The same into `out` (replaced; its capacity is reused).
void socketmap_reply_into(std::string& out, AnswerView answer);

// tcp_table reply line including the newline: "200 <policy>\n", "500 not found\n", "400 <why>\n".
std::string tcp_table_reply(AnswerView answer);
// The same appended to `out`.
void tcp_table_reply_append(std::string& out, AnswerView answer);

// A request as the server reads it: the key (and the socketmap map name), or why it cannot
// be answered (a short reason for the PERM / 400 reply; never echoes the request).
struct WireRequest {
    bool ok = false;
    std::string name;  // socketmap: the map name
    std::string key;
    std::string error;

    void clear() {  // as default-constructed, keeping the strings' capacity
        ok = false;
        name.clear();
        key.clear();
        error.clear();
    }
};

// A socketmap netstring payload: "NAME KEY" (NAME non-empty, split at the first space).
WireRequest parse_socketmap_request(std::string_view payload);
// The same into `r` (its strings' capacity reused: the server's hot path).
void parse_socketmap_request_into(std::string_view payload, WireRequest& r);

// A tcp_table request line without its newline (a trailing CR is dropped): "get KEY" with KEY
// %XX-decoded; "put" is refused, as is anything else.
WireRequest parse_tcp_table_request(std::string_view line);
void parse_tcp_table_request_into(std::string_view line, WireRequest& r);

}  // namespace tlspolicy
