#include "cli/progress.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>

namespace tlspolicy::prefetch {

namespace {

using TimePoint = std::chrono::steady_clock::time_point;

// Below this much elapsed time the rate is too noisy to show.
constexpr std::chrono::seconds kMinRateTime{1};
constexpr std::size_t kMinBarWidth = 10;
constexpr std::size_t kMaxBarWidth = 20;

}  // namespace

std::string format_duration(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return "--";
    const long long s = std::llround(std::min(seconds, 1e12));
    char buf[48];
    if (s < 60)
        std::snprintf(buf, sizeof buf, "%llds", s);
    else if (s < 3600)
        std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
    else
        std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, s % 3600 / 60);
    return buf;
}

std::string format_rate(double per_second) {
    if (!std::isfinite(per_second) || per_second < 0) return "--/s";
    if (per_second == 0) per_second = 0;  // no "-0.0"
    char buf[48];
    if (per_second < 999.95)
        std::snprintf(buf, sizeof buf, "%.1f/s", per_second);
    else
        std::snprintf(buf, sizeof buf, "%.0f/s", std::min(per_second, 1e15));
    return buf;
}

std::string render_bar(std::size_t done, std::size_t total, std::size_t width) {
    const std::size_t filled = total == 0 ? width : std::min(done, total) * width / total;
    return "[" + std::string(filled, '#') + std::string(width - filled, '-') + "]";
}

Progress::Progress(std::size_t total, bool terminal, Writer write, Clock now)
    : total_(total),
      terminal_(terminal),
      write_(std::move(write)),
      now_(std::move(now)),
      start_(now_()),
      next_plain_(start_ + kPlainInterval) {}

Progress::Figures Progress::figures(TimePoint now) const {
    Figures f;
    f.counts = std::to_string(done_) + "/" + std::to_string(total_);
    const std::size_t pct = total_ == 0 ? 100 : std::min(done_, total_) * 100 / total_;
    f.percent = std::to_string(pct) + "%";
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const bool known = now - start_ >= kMinRateTime;
    const double rate = known ? static_cast<double>(done_) / elapsed : -1;
    f.rate = format_rate(rate);
    if (done_ >= total_)
        f.eta = "0s";
    else if (rate > 0)
        f.eta = format_duration(static_cast<double>(total_ - done_) / rate);
    else
        f.eta = "--";
    return f;
}

std::string Progress::terminal_line(TimePoint now) const {
    const Figures f = figures(now);
    std::string text = f.counts + "  " + f.percent + "  " + f.rate + "  ETA " + f.eta;
    if (failed_ > 0) text += "  " + std::to_string(failed_) + " failed";
    // "[" + bar + "]  " + text within kLineWidth columns while the bar keeps kMinBarWidth.
    const std::size_t room = kLineWidth > text.size() + 4 ? kLineWidth - text.size() - 4 : 0;
    const std::size_t width = std::clamp(room, kMinBarWidth, kMaxBarWidth);
    return render_bar(done_, total_, width) + "  " + text;
}

std::string Progress::plain_line(TimePoint now) const {
    const Figures f = figures(now);
    std::string text =
        "prefetch: " + f.counts + " done (" + f.percent + "), " + f.rate + ", ETA " + f.eta;
    if (failed_ > 0) text += ", " + std::to_string(failed_) + " failed";
    return text;
}

void Progress::update(std::size_t done, std::size_t failed) {
    if (finished_) return;
    done_ = done;
    failed_ = failed;
    const TimePoint now = now_();
    if (terminal_) {
        if (drawn_ && now - last_draw_ < kRedrawInterval) return;
        drawn_ = true;
        last_draw_ = now;
        write_("\r" + terminal_line(now) + "\x1b[K");
    } else if (now >= next_plain_) {
        next_plain_ = now + kPlainInterval;
        write_(plain_line(now) + "\n");
    }
}

void Progress::finish() {
    if (finished_) return;
    finished_ = true;
    if (terminal_) write_("\r" + terminal_line(now_()) + "\x1b[K\n");
}

}  // namespace tlspolicy::prefetch
