#include "util/hexquote.h"

#include <algorithm>

namespace tlspolicy {
namespace {

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

Result<std::string> hex_unquote(std::string_view in) {
    std::string out;
    if (const char* err = hex_unquote_into(in, out)) return make_error(err);
    return out;
}

const char* hex_unquote_into(std::string_view in, std::string& out) {
    out.clear();
    out.reserve(in.size());
    for (std::size_t i = 0; i < in.size();) {
        // The bytes up to the next escape in one go.
        const std::size_t pct = std::min(in.find('%', i), in.size());
        out.append(in.data() + i, pct - i);
        if (pct == in.size()) break;
        if (pct + 2 >= in.size()) return "truncated %XX escape";
        const int hi = hex_value(in[pct + 1]);
        const int lo = hex_value(in[pct + 2]);
        if (hi < 0 || lo < 0) return "malformed %XX escape";
        out += static_cast<char>(hi * 16 + lo);
        i = pct + 3;
    }
    return nullptr;
}

std::string hex_quote(std::string_view in, bool quote_space) {
    std::string out;
    hex_quote_append(out, in, quote_space);
    return out;
}

void hex_quote_append(std::string& out, std::string_view in, bool quote_space) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    auto quoted = [quote_space](unsigned char c) {
        return c == '%' || c < 0x20 || c >= 0x7f || (quote_space && c == ' ');
    };
    out.reserve(out.size() + in.size());
    for (std::size_t i = 0; i < in.size();) {
        // A run of bytes that stay as they are, appended in one go.
        std::size_t end = i;
        while (end < in.size() && !quoted(static_cast<unsigned char>(in[end])))
            ++end;
        out.append(in.data() + i, end - i);
        if (end == in.size()) break;
        const auto c = static_cast<unsigned char>(in[end]);
        const char escape[3] = {'%', kHex[c >> 4], kHex[c & 0xf]};
        out.append(escape, 3);
        i = end + 1;
    }
}

}  // namespace tlspolicy
