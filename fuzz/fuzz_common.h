// Shared helpers of the libFuzzer targets (docs/fuzzing.md): an invariant check that stops
// the run with a message and a stack, and the predicates several targets assert.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace fuzz {

[[noreturn]] inline void fail(const char* what, const char* file, int line) {
    std::fprintf(stderr, "\nfuzz invariant broken: %s (%s:%d)\n", what, file, line);
    std::fflush(stderr);
    __builtin_trap();  // libFuzzer reports it as a deadly signal, with the stack
}

// Checks an invariant; a broken one is a crash that libFuzzer saves as crash-<sha1>.
#define FUZZ_CHECK(cond)                                      \
    do {                                                      \
        if (!(cond)) ::fuzz::fail(#cond, __FILE__, __LINE__); \
    } while (0)

inline std::string_view as_text(const uint8_t* data, std::size_t size) {
    return {reinterpret_cast<const char*>(data), size};
}

inline bool is_printable_ascii(char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u < 0x7f;
}

// Printable ASCII only (spaces allowed): what every reason and error message must be.
inline bool printable_ascii(std::string_view s) {
    for (char c : s) {
        if (!is_printable_ascii(c)) return false;
    }
    return true;
}

// No control byte (< 0x20 or DEL); bytes >= 0x80 allowed.
inline bool no_controls(std::string_view s) {
    for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) return false;
    }
    return true;
}

inline char ascii_lower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}
inline char ascii_upper(char c) {
    return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
}
inline std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        c = ascii_lower(c);
    return out;
}
inline std::string upper(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        c = ascii_upper(c);
    return out;
}
inline bool ascii_only(std::string_view s) {
    for (char c : s) {
        if (static_cast<unsigned char>(c) >= 0x80) return false;
    }
    return true;
}

// True when `message` contains `window` consecutive bytes of `input`: a message built from
// fixed text, numbers and short quotes never does for a window longer than its quotes, so
// this catches a reason or error that echoes untrusted input. Inputs are small (libFuzzer
// -max_len), so the quadratic search is fine. Deliberately hidden from libFuzzer: no
// coverage or comparison tracing and no memcmp()/find(), else the fuzzer would learn the
// message texts from this very check and feed them back as input (a false "echo").
__attribute__((no_sanitize("coverage"), noinline)) inline bool echoes(std::string_view message,
                                                                      std::string_view input,
                                                                      std::size_t window) {
    if (window == 0 || input.size() < window || message.size() < window) return false;
    const char* m = message.data();
    const char* in = input.data();
    for (std::size_t i = 0; i + window <= input.size(); ++i) {
        for (std::size_t j = 0; j + window <= message.size(); ++j) {
            std::size_t k = 0;
            while (k < window && in[i + k] == m[j + k])
                ++k;
            if (k == window) return true;
        }
    }
    return false;
}

// Splits on `sep`, keeping empty pieces; at most `max_pieces` (the rest stays in the last).
inline std::vector<std::string> split(std::string_view s, char sep, std::size_t max_pieces) {
    std::vector<std::string> out;
    while (out.size() + 1 < max_pieces) {
        const std::size_t pos = s.find(sep);
        if (pos == std::string_view::npos) break;
        out.emplace_back(s.substr(0, pos));
        s.remove_prefix(pos + 1);
    }
    out.emplace_back(s);
    return out;
}

}  // namespace fuzz
