#include "util/netstring.h"

namespace tlspolicy {

NetstringDecode netstring_decode(std::string_view buf, std::size_t max_payload) {
    using State = NetstringDecode::State;
    NetstringDecode r;
    std::size_t len = 0;
    std::size_t i = 0;
    for (; i < buf.size(); ++i) {
        const char c = buf[i];
        if (c == ':') break;
        if (c < '0' || c > '9') return {State::Malformed, {}, 0};
        // "012:" is not a netstring: a leading zero is only allowed for the empty payload.
        if (i == 1 && buf[0] == '0') return {State::Malformed, {}, 0};
        len = len * 10 + static_cast<std::size_t>(c - '0');
        // Checked per digit, so neither overflow nor a long run of digits is possible.
        if (len > max_payload) return {State::TooLong, {}, 0};
    }
    if (i == buf.size()) return r;                 // still reading the length
    if (i == 0) return {State::Malformed, {}, 0};  // ":" without digits
    const std::size_t start = i + 1;
    if (buf.size() - start < len + 1) return r;  // payload or ',' not here yet
    if (buf[start + len] != ',') return {State::Malformed, {}, 0};
    r.state = State::Complete;
    r.payload = buf.substr(start, len);
    r.consumed = start + len + 1;
    return r;
}

void netstring_append(std::string& out, std::string_view payload) {
    out += std::to_string(payload.size());
    out += ':';
    out += payload;
    out += ',';
}

}  // namespace tlspolicy
