// Command-line options shared by tlspolicyd and tlspolicy: -c/--config FILE, -h/--help,
// -V/--version.
#pragma once

#include <cstdio>
#include <string>
#include <variant>

namespace tlspolicy {

struct CommonOptions {
    std::string config_path;  // "" = built-in defaults
    int next = 0;             // index in argv of the first argument that is not an option
};

// Parses the common options. With stop_at_operand, parsing stops at the first non-option
// (so "tlspolicy COMMAND --json" leaves --json to the command). Returns the options, or the
// exit code when the program is done: 0 after --help/--version, 64 (EX_USAGE) after a bad
// option, with `usage` printed to stdout or stderr accordingly.
std::variant<CommonOptions, int> parse_common_options(int argc, char** argv, const char* program,
                                                      bool stop_at_operand,
                                                      void (*usage)(std::FILE*));

}  // namespace tlspolicy
