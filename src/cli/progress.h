// The progress display of `tlspolicy prefetch`: on a terminal one line redrawn in place (bar,
// done/total, percent, rate, ETA), otherwise (cron, files, journald) a plain line every 10 s.
// Time and output are injected, so tests drive it with a fake clock.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace tlspolicy::prefetch {

// "45s", "1m32s", "2h05m" (hours not capped): `seconds` rounded to a whole second; "--" when
// negative or not finite.
std::string format_duration(double seconds);

// "95.3/s" below 1000 per second, "1234/s" from there on; "--/s" when negative or not finite.
std::string format_rate(double per_second);

// "[####------]": `width` cells between the brackets, done/total of them filled (rounded down;
// done is capped at total; all filled when total is 0).
std::string render_bar(std::size_t done, std::size_t total, std::size_t width);

// Reports the progress of `total` lookups through `write`. The rate is the average over the
// whole run so far (done / time since construction), unknown ("--") during the first second;
// the ETA is the remaining count at that rate, "--" while the rate is unknown or zero.
class Progress {
  public:
    using Writer = std::function<void(std::string_view)>;
    using Clock = std::function<std::chrono::steady_clock::time_point()>;

    // Terminal lines are redrawn at most this often.
    static constexpr std::chrono::milliseconds kRedrawInterval{100};
    // Plain lines are written this long after the start, then this long after the previous one.
    static constexpr std::chrono::seconds kPlainInterval{10};
    // The terminal line, bar included, stays within this many columns when it can (bar 10..20).
    static constexpr std::size_t kLineWidth = 79;

    // Starts the clock; writes nothing yet. `terminal` selects the redrawn line.
    Progress(std::size_t total, bool terminal, Writer write,
             Clock now = std::chrono::steady_clock::now);

    // Records the counts (failed lookups are included in done) and writes a line when one is
    // due: on a terminal "\r" + line + "\x1b[K" unless the last redraw is under
    // kRedrawInterval old; otherwise "prefetch: ...\n" once kPlainInterval has passed.
    void update(std::size_t done, std::size_t failed);

    // Ends the display once: on a terminal the final state is redrawn and the line ended with
    // "\n"; in plain mode nothing is written (the caller prints its summary).
    void finish();

    // The text of the terminal line for the recorded counts at `now`, without control bytes:
    // "[##------------------]  1200/10000  12%  95.3/s  ETA 1m32s" (+ "  3 failed").
    std::string terminal_line(std::chrono::steady_clock::time_point now) const;
    // The plain line at `now`, without the newline:
    // "prefetch: 1200/10000 done (12%), 95.3/s, ETA 1m32s" (+ ", 3 failed").
    std::string plain_line(std::chrono::steady_clock::time_point now) const;

  private:
    struct Figures {
        std::string counts, percent, rate, eta;
    };
    Figures figures(std::chrono::steady_clock::time_point now) const;

    std::size_t total_;
    bool terminal_;
    Writer write_;
    Clock now_;
    std::chrono::steady_clock::time_point start_;
    std::chrono::steady_clock::time_point last_draw_{};
    std::chrono::steady_clock::time_point next_plain_;
    std::size_t done_ = 0;
    std::size_t failed_ = 0;
    bool drawn_ = false;
    bool finished_ = false;
};

}  // namespace tlspolicy::prefetch
