// fuzz-netstring: netstring_decode() (util/netstring.h), the socketmap framing, on arbitrary
// bytes, with the server's limit and a small one.
//
// Invariants:
//   - a Complete decode points inside the consumed bytes, respects the limit, and its payload
//     re-encodes (netstring_append) to exactly the consumed bytes;
//   - the verdict is prefix-stable: a prefix of the input decodes to NeedMore or to the same
//     verdict (a stream read in pieces is judged the same way as in one piece); Malformed and
//     TooLong carry no payload;
//   - NeedMore really is a valid prefix: completing it yields Complete;
//   - any byte string survives netstring_append + netstring_decode unchanged, and one byte
//     over the limit is TooLong;
//   - decoding a stream frame by frame (as the server does) consumes exactly what it frames.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_common.h"
#include "util/netstring.h"

using tlspolicy::netstring_append;
using tlspolicy::netstring_decode;
using tlspolicy::NetstringDecode;
using State = NetstringDecode::State;

namespace {

constexpr std::size_t kServerLimit = 10000;  // server.h kMaxSocketmapRequest
constexpr std::size_t kSmallLimit = 16;

bool same(const NetstringDecode& a, const NetstringDecode& b) {
    return a.state == b.state && a.payload == b.payload && a.consumed == b.consumed;
}

void check_complete(std::string_view in, std::size_t max, const NetstringDecode& d) {
    FUZZ_CHECK(d.consumed >= 3 && d.consumed <= in.size());  // shortest is "0:,"
    FUZZ_CHECK(d.payload.size() <= max);
    // The payload is a view into the input, inside the consumed bytes ("len:" before it, ","
    // after it): never beyond the buffer.
    FUZZ_CHECK(d.payload.data() >= in.data());
    FUZZ_CHECK(d.payload.data() + d.payload.size() + 1 == in.data() + d.consumed);
    FUZZ_CHECK(in[d.consumed - 1] == ',');
    std::string enc;
    netstring_append(enc, d.payload);
    FUZZ_CHECK(enc == in.substr(0, d.consumed));
    // The frame alone decodes the same, and so does the frame under its exact limit.
    FUZZ_CHECK(same(netstring_decode(in.substr(0, d.consumed), max), d));
    FUZZ_CHECK(netstring_decode(in, d.payload.size()).state == State::Complete);
    if (!d.payload.empty()) {
        FUZZ_CHECK(netstring_decode(in, d.payload.size() - 1).state == State::TooLong);
    }
}

// A NeedMore input completed with filler must decode as Complete.
void check_need_more(std::string_view in, std::size_t max) {
    std::string full(in);
    const std::size_t colon = in.find(':');
    std::size_t len = 0;
    for (std::size_t i = 0; i < (colon == std::string_view::npos ? in.size() : colon); ++i) {
        FUZZ_CHECK(in[i] >= '0' && in[i] <= '9');
        len = len * 10 + static_cast<std::size_t>(in[i] - '0');
        FUZZ_CHECK(len <= max);
    }
    if (colon == std::string_view::npos) {
        if (in.empty()) full = "0";
        full += ':';
    } else {
        FUZZ_CHECK(colon > 0);
    }
    const std::size_t have = full.size() - full.find(':') - 1;
    FUZZ_CHECK(have <= len);
    full.append(len - have, 'x');
    full += ',';
    const NetstringDecode d = netstring_decode(full, max);
    FUZZ_CHECK(d.state == State::Complete);
    FUZZ_CHECK(d.consumed == full.size());
    FUZZ_CHECK(d.payload.size() == len);
}

void check_one(std::string_view in, std::size_t max) {
    const NetstringDecode d = netstring_decode(in, max);
    switch (d.state) {
        case State::Complete:
            check_complete(in, max, d);
            break;
        case State::NeedMore:
            FUZZ_CHECK(d.payload.empty() && d.consumed == 0);
            check_need_more(in, max);
            break;
        case State::Malformed:
        case State::TooLong:
            FUZZ_CHECK(d.payload.empty() && d.consumed == 0);
            break;
    }
    // Prefix stability: every prefix is NeedMore or already the final verdict. All prefixes
    // of short inputs, a sample of long ones.
    const std::size_t step = in.size() <= 64 ? 1 : in.size() / 48;
    for (std::size_t n = 0; n < in.size(); n += step) {
        const NetstringDecode p = netstring_decode(in.substr(0, n), max);
        if (p.state == State::NeedMore) continue;
        FUZZ_CHECK(p.state == d.state);
        if (p.state == State::Complete) FUZZ_CHECK(same(p, d));
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
    const std::string_view in = fuzz::as_text(data, size);

    check_one(in, kServerLimit);
    check_one(in, kSmallLimit);

    // Any bytes as a payload round-trip.
    std::string enc;
    netstring_append(enc, in);
    const NetstringDecode rt = netstring_decode(enc, in.size());
    FUZZ_CHECK(rt.state == State::Complete && rt.payload == in && rt.consumed == enc.size());
    if (!in.empty()) FUZZ_CHECK(netstring_decode(enc, in.size() - 1).state == State::TooLong);

    // A stream of frames, decoded and dropped one by one like the server's input buffer.
    std::string_view rest = in;
    for (;;) {
        const NetstringDecode d = netstring_decode(rest, kServerLimit);
        if (d.state != State::Complete) break;
        FUZZ_CHECK(d.consumed > 0 && d.consumed <= rest.size());
        rest.remove_prefix(d.consumed);
    }
    return 0;
}
