// The prefetch progress display (src/cli/progress.h): formatting helpers, and the exact
// writes of both modes driven by a fake clock.
#include "cli/progress.h"

#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "got_want.h"

using namespace std::string_literals;
using std::chrono::milliseconds;
using tlspolicy::prefetch::format_duration;
using tlspolicy::prefetch::format_rate;
using tlspolicy::prefetch::Progress;
using tlspolicy::prefetch::render_bar;

namespace {

// A Progress wired to a settable clock and a list of what it wrote.
struct Rig {
    std::chrono::steady_clock::time_point now{};
    std::vector<std::string> writes;
    Progress progress;

    Rig(std::size_t total, bool terminal)
        : progress(
              total, terminal, [this](std::string_view s) { writes.emplace_back(s); },
              [this] { return now; }) {}
    void at(long ms) { now = std::chrono::steady_clock::time_point{} + milliseconds(ms); }
};

// One step of a scripted run: at `ms`, update(done, failed) (or finish() when done < 0);
// `want` is what must be written by that step ("" = nothing).
struct Step {
    long ms;
    long done;
    std::size_t failed;
    std::string want;
};

void run(std::size_t total, bool terminal, const std::vector<Step>& steps) {
    Rig rig(total, terminal);
    for (const auto& s : steps) {
        rig.at(s.ms);
        const std::size_t before = rig.writes.size();
        if (s.done < 0)
            rig.progress.finish();
        else
            rig.progress.update(static_cast<std::size_t>(s.done), s.failed);
        const std::string got = rig.writes.size() > before ? rig.writes.back() : "";
        INFO("at " << s.ms << " ms, done " << s.done);
        CHECK_EQ_GW("write", got, s.want);
        CHECK(rig.writes.size() - before <= 1);
    }
}

const std::string CR = "\r";
const std::string EL = "\x1b[K";
constexpr long FINISH = -1;

}  // namespace

TEST_CASE("progress: format_duration") {
    struct Row {
        double seconds;
        std::string want;
    };
    const double inf = std::numeric_limits<double>::infinity();
    const std::vector<Row> rows = {
        {0, "0s"},       {0.4, "0s"},          {0.5, "1s"},         {45, "45s"},
        {59.4, "59s"},   {59.6, "1m00s"},      {60, "1m00s"},       {92, "1m32s"},
        {92.4, "1m32s"}, {605, "10m05s"},      {3599, "59m59s"},    {3600, "1h00m"},
        {7500, "2h05m"}, {7559, "2h05m"},      {360000, "100h00m"}, {-1, "--"},
        {inf, "--"},     {std::nan(""), "--"},
    };
    for (const auto& r : rows) {
        INFO("seconds: " << r.seconds);
        CHECK_EQ_GW("duration", format_duration(r.seconds), r.want);
    }
}

TEST_CASE("progress: format_rate") {
    struct Row {
        double rate;
        std::string want;
    };
    const std::vector<Row> rows = {
        {0, "0.0/s"},         {0.04, "0.0/s"},    {95.3, "95.3/s"},       {95.34, "95.3/s"},
        {95.36, "95.4/s"},    {999.9, "999.9/s"}, {999.96, "1000/s"},     {1234.4, "1234/s"},
        {25000.6, "25001/s"}, {-1, "--/s"},       {std::nan(""), "--/s"},
    };
    for (const auto& r : rows) {
        INFO("rate: " << r.rate);
        CHECK_EQ_GW("rate", format_rate(r.rate), r.want);
    }
}

TEST_CASE("progress: render_bar") {
    struct Row {
        std::size_t done, total, width;
        std::string want;
    };
    const std::vector<Row> rows = {
        {0, 10, 10, "[----------]"},
        {5, 10, 10, "[#####-----]"},
        {9, 10, 10, "[#########-]"},
        {10, 10, 10, "[##########]"},
        {12, 10, 10, "[##########]"},  // done past total: full, not wider
        {0, 0, 5, "[#####]"},          // nothing to do is done
        {1, 3, 20, "[######--------------]"},
        {1200, 10000, 20, "[##------------------]"},
        {9999, 10000, 20, "[###################-]"},
        {3, 7, 0, "[]"},
    };
    for (const auto& r : rows) {
        INFO(r.done << "/" << r.total << " width " << r.width);
        CHECK_EQ_GW("bar", render_bar(r.done, r.total, r.width), r.want);
    }
}

TEST_CASE("progress: terminal mode redraws in place, at most every 100 ms") {
    run(10000, true,
        {
            {0, 0, 0, CR + "[--------------------]  0/10000  0%  --/s  ETA --" + EL},
            {50, 1, 0, ""},  // throttled
            {99, 2, 0, ""},
            {100, 3, 0, CR + "[--------------------]  3/10000  0%  --/s  ETA --" + EL},
            {999, 9, 0, CR + "[--------------------]  9/10000  0%  --/s  ETA --" + EL},
            // From 1 s on the rate (whole run average) and the ETA are known.
            {1000, 10, 0, ""},
            {1100, 11, 0, CR + "[--------------------]  11/10000  0%  10.0/s  ETA 16m39s" + EL},
            {12590, 1200, 0,
             CR + "[##------------------]  1200/10000  12%  95.3/s  ETA 1m32s" + EL},
            {12600, 1201, 1, ""},
            {12700, 1202, 1,
             CR + "[##------------------]  1202/10000  12%  94.6/s  ETA 1m33s  1 failed" + EL},
            {100000, 10000, 3,
             CR + "[####################]  10000/10000  100%  100.0/s  ETA 0s  3 failed" + EL},
            // finish() redraws the final state (throttling does not apply) and ends the line.
            {100010, FINISH, 0,
             CR + "[####################]  10000/10000  100%  100.0/s  ETA 0s  3 failed" + EL +
                 "\n"},
            {100500, FINISH, 0, ""},  // once
            {101000, 10000, 3, ""},   // nothing after finish
        });
}

TEST_CASE("progress: terminal finish without an update, and a stalled run") {
    run(50, true,
        {
            {0, FINISH, 0, CR + "[--------------------]  0/50  0%  --/s  ETA --" + EL + "\n"},
        });
    run(50, true,
        {
            {0, 0, 0, CR + "[--------------------]  0/50  0%  --/s  ETA --" + EL},
            {5000, 0, 0, CR + "[--------------------]  0/50  0%  0.0/s  ETA --" + EL},
            {5100, 25, 0, CR + "[##########----------]  25/50  50%  4.9/s  ETA 5s" + EL},
        });
}

TEST_CASE("progress: plain mode writes a line every 10 s and nothing at finish") {
    run(10000, false,
        {
            {0, 0, 0, ""},
            {5000, 500, 0, ""},
            {9999, 999, 0, ""},
            {10000, 950, 0, "prefetch: 950/10000 done (9%), 95.0/s, ETA 1m35s\n"},
            {15000, 1400, 0, ""},
            {19999, 1900, 0, ""},
            {20000, 2000, 2, "prefetch: 2000/10000 done (20%), 100.0/s, ETA 1m20s, 2 failed\n"},
            // A stall: the next line comes with the next update, then 10 s after it.
            {47000, 2100, 2, "prefetch: 2100/10000 done (21%), 44.7/s, ETA 2m57s, 2 failed\n"},
            {50000, 2200, 2, ""},
            {56999, 2300, 2, ""},
            {57000, 2500, 2, "prefetch: 2500/10000 done (25%), 43.9/s, ETA 2m51s, 2 failed\n"},
            {58000, FINISH, 0, ""},
            {70000, 10000, 2, ""},
        });
}

TEST_CASE("progress: zero total") {
    run(0, true,
        {
            {0, 0, 0, CR + "[####################]  0/0  100%  --/s  ETA 0s" + EL},
            {10, FINISH, 0, CR + "[####################]  0/0  100%  --/s  ETA 0s" + EL + "\n"},
        });
    run(0, false,
        {
            {0, 0, 0, ""},
            {10000, 0, 0, "prefetch: 0/0 done (100%), 0.0/s, ETA 0s\n"},
            {10001, FINISH, 0, ""},
        });
}

TEST_CASE("progress: the terminal line fits 80 columns") {
    struct Row {
        std::size_t total, done, failed;
        long ms;
    };
    const std::vector<Row> rows = {
        {10, 3, 0, 2000},
        {10000, 1200, 0, 12590},
        {1000000, 999999, 999999, 3000},
        {99999999, 12345678, 1234567, 1000},
        {99999999, 1, 0, 1000000000},  // ETA in the thousands of hours
    };
    for (const auto& r : rows) {
        Rig rig(r.total, true);
        rig.at(r.ms);
        rig.progress.update(r.done, r.failed);
        const std::string line = rig.progress.terminal_line(rig.now);
        INFO(line);
        CHECK(line.size() <= Progress::kLineWidth);
        CHECK(line.find(']') >= 11);  // the bar keeps at least 10 cells
    }
}
