// "got X, want Y" messages for the table-driven unit tests. A test file adds shown() overloads
// for its own enums in the enum's namespace, where got_want() finds them.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <doctest/doctest.h>

namespace testutil {

inline std::string shown(const std::string& v) {
    return "\"" + v + "\"";
}
inline std::string shown(bool v) {
    return v ? "true" : "false";
}
template <class T>
requires(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) std::string shown(T v) {
    return std::to_string(v);
}
inline std::string shown(const std::vector<std::string>& v) {
    std::string out = "{";
    for (std::size_t i = 0; i < v.size(); ++i)
        out += (i ? ", \"" : "\"") + v[i] + "\"";
    return out + "}";
}

template <class T>
std::string got_want(const char* what, const T& got, const T& want) {
    return std::string(what) + ": got " + shown(got) + ", want " + shown(want);
}

// True when every byte is printable ASCII (what reasons sent to clients must be).
inline bool printable_ascii(const std::string& text) {
    for (unsigned char c : text)
        if (c < 0x20 || c >= 0x7f) return false;
    return true;
}

}  // namespace testutil

// Checks got == want with a "got X, want Y" message; evaluates `got` once (INFO stringifies
// lazily, so it must not hold the call itself).
#define CHECK_EQ_GW(what, got, want)                     \
    do {                                                 \
        const auto gw_got = (got);                       \
        const auto gw_want = (want);                     \
        INFO(testutil::got_want(what, gw_got, gw_want)); \
        CHECK(gw_got == gw_want);                        \
    } while (false)
