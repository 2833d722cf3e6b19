// The %XX coding of Postfix's tcp_table protocol (Postfix src/util/hex_quote.c).
#pragma once

#include <string>
#include <string_view>

#include "util/result.h"

namespace tlspolicy {

// Decodes %XX escapes (either hex case); other bytes are copied. A '%' not followed by two
// hex digits is an Error.
Result<std::string> hex_unquote(std::string_view in);
// The same into `out` (replaced; its capacity is reused); the error message, or nullptr.
const char* hex_unquote_into(std::string_view in, std::string& out);

// Encodes '%', control characters (including newline) and bytes >= 0x7f as %XX (uppercase),
// leaving printable ASCII and spaces as they are, which every tcp_table client decodes. With
// `quote_space`, spaces too, as Postfix's own client encodes its requests.
std::string hex_quote(std::string_view in, bool quote_space = false);
// The same, appended to `out`.
void hex_quote_append(std::string& out, std::string_view in, bool quote_space = false);

}  // namespace tlspolicy
