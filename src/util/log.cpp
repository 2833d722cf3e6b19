#include "util/log.h"

#include <syslog.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "util/json.h"

namespace tlspolicy::log {
namespace {

std::atomic<Level> g_level{Level::Info};
std::atomic<Format> g_format{Format::Text};
std::atomic<bool> g_syslog{false};

std::string_view level_name(Level level) {
    switch (level) {
        case Level::Error:
            return "error";
        case Level::Warning:
            return "warning";
        case Level::Info:
            return "info";
        case Level::Debug:
            return "debug";
    }
    return "info";
}

bool under_journald() {
    static const bool journald = std::getenv("JOURNAL_STREAM") != nullptr;
    return journald;
}

}  // namespace

void set_level(Level level) {
    g_level.store(level, std::memory_order_relaxed);
}
Level level() {
    return g_level.load(std::memory_order_relaxed);
}
bool enabled(Level l) {
    return static_cast<int>(l) <= static_cast<int>(level());
}

bool parse_level(std::string_view name, Level& out) {
    for (Level l : {Level::Error, Level::Warning, Level::Info, Level::Debug}) {
        if (name == level_name(l)) {
            out = l;
            return true;
        }
    }
    return false;
}

void set_output(Format format, bool to_syslog) {
    g_format.store(format, std::memory_order_relaxed);
    if (to_syslog && !g_syslog.load()) openlog("tlspolicyd", LOG_PID | LOG_NDELAY, LOG_MAIL);
    if (!to_syslog && g_syslog.load()) closelog();
    g_syslog.store(to_syslog, std::memory_order_relaxed);
}

std::string json_line(Level l, std::string_view time, std::string_view message,
                      std::initializer_list<Field> fields) {
    std::string line = "{\"time\":";
    json_append_string(line, time);
    line += ",\"level\":";
    json_append_string(line, level_name(l));
    line += ",\"msg\":";
    json_append_string(line, message);
    for (const Field& f : fields) {
        line += ',';
        json_append_string(line, f.name);
        line += ':';
        if (f.number)
            line += f.value;
        else
            json_append_string(line, f.value);
    }
    line += '}';
    return line;
}

void write(Level l, std::string_view message, std::initializer_list<Field> fields) {
    if (!enabled(l)) return;
    const bool json = g_format.load(std::memory_order_relaxed) == Format::Json;
    std::string line;
    line.reserve(message.size() + 48);
    if (under_journald()) {
        line += '<';
        line += static_cast<char>('0' + static_cast<int>(l));
        line += '>';
    }
    if (json || !under_journald()) {
        timespec ts{};
        clock_gettime(CLOCK_REALTIME, &ts);
        tm utc{};
        gmtime_r(&ts.tv_sec, &utc);
        char stamp[64];
        std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
                      utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min,
                      utc.tm_sec, ts.tv_nsec / 1000000);
        if (json) {
            line += json_line(l, stamp, message, fields);
        } else {
            line += stamp;
            line += ' ';
            line += level_name(l);
            line += ": ";
            line += message;
        }
    } else {
        line += message;
    }
    if (g_syslog.load(std::memory_order_relaxed)) {
        const std::string_view body =
            json ? std::string_view(line).substr(line.find('{')) : message;
        syslog(static_cast<int>(l), "%.*s", static_cast<int>(body.size()), body.data());
    }
    line += '\n';
    // One write(2) per line so that lines from concurrent processes do not interleave.
    [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
}

std::string sanitize(std::string_view text, std::size_t max) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(text.size() < max ? text.size() : max);
    for (const char ch : text) {
        const auto c = static_cast<unsigned char>(ch);
        const bool plain = c >= 0x20 && c < 0x7f && c != '\\';
        // At most `max` characters of text, cut at a whole character or escape, then "...".
        if (out.size() + (plain ? 1 : 4) > max) {
            out += "...";
            break;
        }
        if (plain) {
            out += ch;
        } else {
            out += "\\x";
            out += kHex[c >> 4];
            out += kHex[c & 0xf];
        }
    }
    return out;
}

}  // namespace tlspolicy::log
