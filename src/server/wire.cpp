#include "server/wire.h"

#include "util/hexquote.h"
#include "util/log.h"

namespace tlspolicy {

WireStatus wire_status(Outcome outcome) {
    switch (outcome) {
        case Outcome::Found:
            return {"OK", 200, 0};
        case Outcome::NotFound:
            return {"NOTFOUND", 500, 1};
        case Outcome::Temp:
            return {"TEMP", 400, 75};
        case Outcome::Timeout:
            return {"TIMEOUT", 400, 75};
        case Outcome::Perm:
            return {"PERM", 400, 75};
    }
    return {"TEMP", 400, 75};  // unreachable; fail safe: defer, never downgrade
}

std::string wire_reason(AnswerView answer) {
    std::string r = log::sanitize(answer.reason, kMaxWireReason);
    if (r.empty()) r = answer.outcome == Outcome::NotFound ? "not found" : "lookup failed";
    return r;
}

void socketmap_reply_into(std::string& out, AnswerView answer) {
    const WireStatus st = wire_status(answer.outcome);
    out.assign(st.socketmap);
    out += ' ';
    if (answer.outcome == Outcome::Found) {
        // Postfix rejects an empty policy and defers; an empty Found is a bug upstream.
        if (answer.policy.empty()) {
            out = "TEMP empty policy";
            return;
        }
        out += answer.policy;
        if (out.size() > kMaxSocketmapReply) out = "TEMP policy longer than socketmap allows";
    } else if (answer.outcome != Outcome::NotFound) {
        out += wire_reason(answer);
    }
}

std::string socketmap_reply(AnswerView answer) {
    std::string out;
    socketmap_reply_into(out, answer);
    return out;
}

void tcp_table_reply_append(std::string& out, AnswerView answer) {
    const std::size_t start = out.size();
    const WireStatus st = wire_status(answer.outcome);
    char code[4];
    code[0] = static_cast<char>('0' + st.tcp_code / 100);
    code[1] = static_cast<char>('0' + st.tcp_code / 10 % 10);
    code[2] = static_cast<char>('0' + st.tcp_code % 10);
    code[3] = ' ';
    out.append(code, 4);
    if (answer.outcome == Outcome::Found) {
        if (answer.policy.empty()) {
            out.resize(start);
            out += "400 empty policy\n";
            return;
        }
        hex_quote_append(out, answer.policy);
    } else {
        hex_quote_append(out, wire_reason(answer));
    }
    out += '\n';
    if (out.size() - start > kMaxTcpTableReply) {
        out.resize(start);
        out += "400 policy longer than tcp_table allows; use socketmap\n";
    }
}

std::string tcp_table_reply(AnswerView answer) {
    std::string out;
    tcp_table_reply_append(out, answer);
    return out;
}

void parse_socketmap_request_into(std::string_view payload, WireRequest& r) {
    r.clear();
    const auto space = payload.find(' ');
    if (space == std::string_view::npos || space == 0) {
        r.error = "malformed request: expected NAME KEY";
        return;
    }
    r.ok = true;
    r.name.assign(payload.substr(0, space));
    r.key.assign(payload.substr(space + 1));
}

WireRequest parse_socketmap_request(std::string_view payload) {
    WireRequest r;
    parse_socketmap_request_into(payload, r);
    return r;
}

void parse_tcp_table_request_into(std::string_view line, WireRequest& r) {
    r.clear();
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.starts_with("get ")) {
        r.error =
            line.starts_with("put ") ? "put is not supported" : "unknown request: expected get KEY";
        return;
    }
    if (hex_unquote_into(line.substr(4), r.key)) {
        r.key.clear();
        r.error = "malformed hex escape in key";
        return;
    }
    r.ok = true;
}

WireRequest parse_tcp_table_request(std::string_view line) {
    WireRequest r;
    parse_tcp_table_request_into(line, r);
    return r;
}

}  // namespace tlspolicy
