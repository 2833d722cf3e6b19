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

std::string wire_reason(const Answer& answer) {
    std::string r = log::sanitize(answer.reason, kMaxWireReason);
    if (r.empty()) r = answer.outcome == Outcome::NotFound ? "not found" : "lookup failed";
    return r;
}

std::string socketmap_reply(const Answer& answer) {
    const WireStatus st = wire_status(answer.outcome);
    std::string out(st.socketmap);
    out += ' ';
    if (answer.outcome == Outcome::Found) {
        // Postfix rejects an empty policy and defers; an empty Found is a bug upstream.
        if (answer.policy.empty()) return "TEMP empty policy";
        out += answer.policy;
        if (out.size() > kMaxSocketmapReply) return "TEMP policy longer than socketmap allows";
    } else if (answer.outcome != Outcome::NotFound) {
        out += wire_reason(answer);
    }
    return out;
}

std::string tcp_table_reply(const Answer& answer) {
    const WireStatus st = wire_status(answer.outcome);
    std::string out = std::to_string(st.tcp_code);
    out += ' ';
    if (answer.outcome == Outcome::Found) {
        if (answer.policy.empty()) return "400 empty policy\n";
        out += hex_quote(answer.policy);
    } else {
        out += hex_quote(wire_reason(answer));
    }
    out += '\n';
    if (out.size() > kMaxTcpTableReply)
        return "400 policy longer than tcp_table allows; use socketmap\n";
    return out;
}

WireRequest parse_socketmap_request(std::string_view payload) {
    WireRequest r;
    const auto space = payload.find(' ');
    if (space == std::string_view::npos || space == 0) {
        r.error = "malformed request: expected NAME KEY";
        return r;
    }
    r.ok = true;
    r.name = std::string(payload.substr(0, space));
    r.key = std::string(payload.substr(space + 1));
    return r;
}

WireRequest parse_tcp_table_request(std::string_view line) {
    WireRequest r;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.starts_with("get ")) {
        r.error = line.starts_with("put ") ? "put is not supported"
                                           : "unknown request: expected get KEY";
        return r;
    }
    auto key = hex_unquote(line.substr(4));
    if (!key) {
        r.error = "malformed hex escape in key";
        return r;
    }
    r.ok = true;
    r.key = std::move(*key);
    return r;
}

}  // namespace tlspolicy
