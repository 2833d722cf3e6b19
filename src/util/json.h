// Minimal JSON output: string escaping for the machine-readable outputs of the CLI.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tlspolicy {

// Appends `s` as a JSON string literal (quotes included). Bytes that are not valid in a
// JSON string are escaped; bytes >= 0x80 are escaped as \u00XX so the output is always
// valid ASCII JSON even for invalid UTF-8 input.
void json_append_string(std::string& out, std::string_view s);

// The same, returned as a new string.
std::string json_string(std::string_view s);

// Appends a JSON array of string literals.
void json_append_strings(std::string& out, const std::vector<std::string>& strings);

}  // namespace tlspolicy
