// Netstrings (https://cr.yp.to/proto/netstrings.txt), the framing of Postfix's socketmap
// protocol: "<decimal length>:<payload>,". Pure functions over byte spans, no I/O.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tlspolicy {

// Outcome of trying to decode one netstring from the front of a buffer.
struct NetstringDecode {
    enum class State {
        Complete,   // payload holds the payload; consumed bytes may be dropped from the buffer
        NeedMore,   // the buffer holds a valid prefix; read more and try again
        Malformed,  // not a netstring (bad length digits, leading zero, missing ',')
        TooLong,    // declared length exceeds the limit: the stream cannot be resynchronised
    };
    State state = State::NeedMore;
    std::string_view payload;  // points into the input buffer (valid while it is)
    std::size_t consumed = 0;
};

// Decodes the first netstring in `buf`, accepting payloads of at most `max_payload` bytes.
// Leading zeros in the length are refused, as the specification prescribes.
NetstringDecode netstring_decode(std::string_view buf, std::size_t max_payload);

// Appends the netstring encoding of `payload` to `out`.
void netstring_append(std::string& out, std::string_view payload);

}  // namespace tlspolicy
