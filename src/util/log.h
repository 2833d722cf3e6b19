// Process-wide logging to stderr (journald picks it up under systemd, with the priority
// prefix it understands), optionally also to syslog, as text or JSON lines. Untrusted text
// must go through sanitize() before it is logged.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

namespace tlspolicy::log {

enum class Level { Error = 3, Warning = 4, Info = 6, Debug = 7 };
enum class Format { Text, Json };

// A named value of a structured line: shown only in JSON lines (the text line's message
// already says it). `number` values are written without quotes and must be numeric.
struct Field {
    std::string_view name;
    std::string_view value;
    bool number = false;
};

// Sets the most verbose level that is written (default Info).
void set_level(Level level);
Level level();
bool enabled(Level level);

// Parses "error" | "warning" | "info" | "debug".
bool parse_level(std::string_view name, Level& out);

// Text or JSON lines on stderr; with `to_syslog`, every line also goes to syslog(3)
// (facility mail, ident "tlspolicyd"). Safe to call again (reload).
void set_output(Format format, bool to_syslog);

// Writes one line. Under journald (JOURNAL_STREAM set) the line carries a "<N>" priority
// prefix; otherwise a UTC timestamp and the level name. JSON lines are one object:
// {"time":…,"level":…,"msg":…, fields…}.
void write(Level level, std::string_view message, std::initializer_list<Field> fields = {});

// One JSON line as write() would produce it (for tests).
std::string json_line(Level level, std::string_view time, std::string_view message,
                      std::initializer_list<Field> fields);

inline void error(std::string_view m) {
    write(Level::Error, m);
}
inline void warning(std::string_view m) {
    write(Level::Warning, m);
}
inline void info(std::string_view m) {
    if (enabled(Level::Info)) write(Level::Info, m);
}
inline void debug(std::string_view m) {
    if (enabled(Level::Debug)) write(Level::Debug, m);
}

// Makes untrusted bytes safe to log or to send as a reason: printable ASCII is kept,
// everything else becomes \xNN; a longer result is cut to at most `max` characters (never
// inside an escape) followed by "...", so it is never longer than max + 3.
std::string sanitize(std::string_view text, std::size_t max = 200);

}  // namespace tlspolicy::log
