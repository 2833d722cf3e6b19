// Prometheus metrics: counters, gauges, histograms and sampled gauges in a registry that
// renders the text exposition format 0.0.4. Look a series up once and keep the reference:
// the objects are stable for the registry's lifetime and updating one is a relaxed atomic
// operation, never a lookup. Metric names are the contract (docs/operations.md).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tlspolicy::metrics {

// Label pairs (name, value) of one series, rendered in the given order.
using Labels = std::vector<std::pair<std::string, std::string>>;

// Upper bounds (seconds) of tlspolicyd_lookup_duration_seconds; +Inf is implicit.
inline constexpr double kLatencyBuckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                             0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                             1,      2.5,     5,      10};

// A monotonic count; inc() is safe from any thread.
class Counter {
  public:
    void inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
    uint64_t value() const { return value_.load(std::memory_order_relaxed); }

  private:
    std::atomic<uint64_t> value_{0};
};

// A value that goes up and down (integers are exact up to 2^53); safe from any thread.
class Gauge {
  public:
    void set(double v) { value_.store(v, std::memory_order_relaxed); }
    void inc(double d = 1) { value_.fetch_add(d, std::memory_order_relaxed); }
    void dec(double d = 1) { value_.fetch_sub(d, std::memory_order_relaxed); }
    double value() const { return value_.load(std::memory_order_relaxed); }

  private:
    std::atomic<double> value_{0};
};

// Observations counted into fixed buckets (a value equal to a bound counts in that bucket).
// observe() must be called from one thread at a time; render() may run concurrently.
class Histogram {
  public:
    // `bounds` strictly increasing and finite; a trailing +Inf is dropped (it is implicit).
    explicit Histogram(std::span<const double> bounds);

    // Adds one observation; no allocation, a linear scan over the bounds.
    void observe(double seconds);

    std::span<const double> bounds() const { return bounds_; }
    // Observations <= bounds()[i] (i < bounds().size()) or all of them (i == bounds().size()).
    uint64_t cumulative(std::size_t i) const;
    uint64_t count() const { return cumulative(bounds_.size()); }
    double sum() const { return sum_.load(std::memory_order_relaxed); }

  private:
    std::vector<double> bounds_;
    std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1, not cumulative
    std::atomic<double> sum_{0};
};

namespace detail {
struct CallbackSlot;
struct Family;
}  // namespace detail

// Keeps a sampled gauge registered; destroying or reset() stops it (may outlive the registry).
class [[nodiscard]] CallbackHandle {
  public:
    CallbackHandle() = default;
    CallbackHandle(CallbackHandle&&) noexcept = default;
    CallbackHandle& operator=(CallbackHandle&& o) noexcept;
    CallbackHandle(const CallbackHandle&) = delete;
    CallbackHandle& operator=(const CallbackHandle&) = delete;
    ~CallbackHandle() { reset(); }

    // After return the callback is never called again; must not be called from inside it.
    void reset();

  private:
    friend class Registry;
    explicit CallbackHandle(std::shared_ptr<detail::CallbackSlot> slot) : slot_(std::move(slot)) {}
    std::shared_ptr<detail::CallbackSlot> slot_;
};

// A set of metric families. Registration and render() are thread-safe (one mutex); names must
// match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* (not "__…", not "le" on a
// histogram). Programming errors (bad name, a name reused with another type, other help or
// other bounds) assert; without asserts the first help wins and an object of the wrong kind
// is a detached one that works but is never rendered.
class Registry {
  public:
    Registry();
    ~Registry();
    Registry(const Registry&) = delete;
    Registry& operator=(const Registry&) = delete;

    // The series `name{labels}`, created at 0 on first use; the same reference every time.
    Counter& counter(std::string_view name, std::string_view help, Labels labels = {});
    Gauge& gauge(std::string_view name, std::string_view help, Labels labels = {});
    Histogram& histogram(std::string_view name, std::string_view help,
                         std::span<const double> bounds, Labels labels = {});

    // A gauge series whose value is `sample()` at render time (on the rendering thread, under
    // the registry lock: it must not call the registry). Registering the same name and labels
    // again replaces the previous callback.
    CallbackHandle gauge_callback(std::string_view name, std::string_view help,
                                  std::function<double()> sample, Labels labels = {});

    // Prometheus text format 0.0.4: families in registration order, each with one # HELP and
    // # TYPE line and its series; families without a series are left out.
    std::string render() const;

  private:
    detail::Family* family(std::string_view name, std::string_view help, int type,
                           std::span<const double> bounds);

    mutable std::mutex mu_;
    std::vector<std::unique_ptr<detail::Family>> families_;
    // Objects handed out for misuse (see above): they work but are never rendered.
    std::vector<std::unique_ptr<Counter>> detached_counters_;
    std::vector<std::unique_ptr<Gauge>> detached_gauges_;
    std::vector<std::unique_ptr<Histogram>> detached_histograms_;
};

// The daemon's process-wide registry (never destroyed, so late updates at exit are safe).
Registry& global();

// A number as the text format spells it: integers without exponent, "+Inf", "-Inf", "NaN",
// other values with the shortest text that reads back as the same double.
std::string format_value(double v);

// `value` with \ " and newline escaped for use inside a label value's quotes.
std::string escape_label_value(std::string_view value);

}  // namespace tlspolicy::metrics
