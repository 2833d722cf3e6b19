#include "util/hexquote.h"

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
    for (std::size_t i = 0; i < in.size(); ++i) {
        if (in[i] != '%') {
            out += in[i];
            continue;
        }
        if (i + 2 >= in.size()) return "truncated %XX escape";
        const int hi = hex_value(in[i + 1]);
        const int lo = hex_value(in[i + 2]);
        if (hi < 0 || lo < 0) return "malformed %XX escape";
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
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
    out.reserve(out.size() + in.size());
    for (const char ch : in) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '%' || c < 0x20 || c >= 0x7f || (quote_space && c == ' ')) {
            out += '%';
            out += kHex[c >> 4];
            out += kHex[c & 0xf];
        } else {
            out += ch;
        }
    }
}

}  // namespace tlspolicy
