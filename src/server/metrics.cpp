#include "server/metrics.h"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cmath>
#include <limits>

namespace tlspolicy::metrics {

namespace detail {

// Shared by the registry and the handle, so either may go first; the mutex guarantees that
// once reset() returns, a render running on another thread no longer calls the function.
struct CallbackSlot {
    std::mutex mu;
    std::function<double()> sample;
};

enum Type { kCounter, kGauge, kHistogram };

struct Series {
    Labels sorted;         // for comparison: {a,b} and {b,a} are one series
    std::string rendered;  // a="1",b="2" (without braces), escaped once at registration
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
    std::shared_ptr<CallbackSlot> callback;
};

struct Family {
    std::string name;
    std::string help;
    Type type;
    std::vector<double> bounds;  // histograms
    std::vector<Series> series;  // registration order; objects behind pointers stay put
};

}  // namespace detail

using detail::Family;
using detail::Series;

namespace {

bool valid_name(std::string_view s, bool colon) {
    if (s.empty()) return false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                        (colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

bool valid_labels(const Labels& labels, bool histogram) {
    for (std::size_t i = 0; i < labels.size(); ++i) {
        const std::string& n = labels[i].first;
        if (!valid_name(n, false) || n.starts_with("__") || (histogram && n == "le")) return false;
        for (std::size_t j = 0; j < i; ++j)
            if (labels[j].first == n) return false;
    }
    return true;
}

std::vector<double> clean_bounds(std::span<const double> bounds) {
    std::vector<double> out(bounds.begin(), bounds.end());
    if (!out.empty() && out.back() == std::numeric_limits<double>::infinity()) out.pop_back();
    return out;
}

bool valid_bounds(const std::vector<double>& b) {
    for (std::size_t i = 0; i < b.size(); ++i) {
        if (!std::isfinite(b[i])) return false;
        if (i > 0 && !(b[i - 1] < b[i])) return false;
    }
    return true;
}

std::string escape_help(std::string_view help) {
    std::string out;
    out.reserve(help.size());
    for (char c : help) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

std::string render_labels(const Labels& labels) {
    std::string out;
    for (const auto& [n, v] : labels) {
        if (!out.empty()) out += ',';
        out += n;
        out += "=\"";
        out += escape_label_value(v);
        out += '"';
    }
    return out;
}

void sample_line(std::string& out, std::string_view name, std::string_view suffix,
                 std::string_view labels, std::string_view extra, std::string_view value) {
    out += name;
    out += suffix;
    if (!labels.empty() || !extra.empty()) {
        out += '{';
        out += labels;
        if (!labels.empty() && !extra.empty()) out += ',';
        out += extra;
        out += '}';
    }
    out += ' ';
    out += value;
    out += '\n';
}

const char* type_name(detail::Type t) {
    switch (t) {
        case detail::kCounter:
            return "counter";
        case detail::kGauge:
            return "gauge";
        case detail::kHistogram:
            return "histogram";
    }
    return "untyped";
}

}  // namespace

std::string format_value(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    char buf[64];
    // Whole numbers below 2^53 are exact: print them as integers, never as 1e+06.
    if (v == std::trunc(v) && std::fabs(v) < 9007199254740992.0)
        return std::to_string(static_cast<int64_t>(v));
    const double a = std::fabs(v);
    const auto fmt =
        (a >= 1e-4 && a < 1e16) ? std::chars_format::fixed : std::chars_format::scientific;
    const auto r = std::to_chars(buf, buf + sizeof buf, v, fmt);
    return std::string(buf, r.ptr);
}

std::string escape_label_value(std::string_view value) {
    std::string out;
    out.reserve(value.size());
    for (char c : value) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '"')
            out += "\\\"";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

Histogram::Histogram(std::span<const double> bounds)
    : bounds_(clean_bounds(bounds)),
      buckets_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {}

void Histogram::observe(double seconds) {
    // Single writer: load + store instead of a locked read-modify-write.
    std::size_t i = 0;
    const std::size_t n = bounds_.size();
    while (i < n && !(seconds <= bounds_[i]))
        ++i;  // NaN lands in +Inf
    auto& b = buckets_[i];
    b.store(b.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    sum_.store(sum_.load(std::memory_order_relaxed) + seconds, std::memory_order_relaxed);
}

uint64_t Histogram::cumulative(std::size_t i) const {
    uint64_t total = 0;
    for (std::size_t k = 0; k <= i && k <= bounds_.size(); ++k)
        total += buckets_[k].load(std::memory_order_relaxed);
    return total;
}

CallbackHandle& CallbackHandle::operator=(CallbackHandle&& o) noexcept {
    if (this != &o) {
        reset();
        slot_ = std::move(o.slot_);
    }
    return *this;
}

void CallbackHandle::reset() {
    if (!slot_) return;
    {
        std::lock_guard lock(slot_->mu);
        slot_->sample = nullptr;
    }
    slot_.reset();
}

Registry::Registry() = default;
Registry::~Registry() = default;

// Returns the family `name` of `type`, creating it; nullptr on misuse (after asserting).
Family* Registry::family(std::string_view name, std::string_view help, int type,
                         std::span<const double> bounds) {
    const auto t = static_cast<detail::Type>(type);
    const std::vector<double> b = clean_bounds(bounds);
    for (auto& f : families_) {
        if (f->name != name) continue;
        assert(f->type == t && "metric name registered with another type");
        assert(f->help == help && "metric name registered with another help text");
        assert(f->bounds == b && "histogram registered with other bounds");
        if (f->type != t || f->bounds != b) return nullptr;
        return f.get();
    }
    const bool ok = valid_name(name, true) && (t != detail::kHistogram || valid_bounds(b));
    assert(ok && "invalid metric name or histogram bounds");
    if (!ok) return nullptr;
    families_.push_back(
        std::make_unique<Family>(Family{std::string(name), std::string(help), t, b, {}}));
    return families_.back().get();
}

namespace {

Series* find_or_add(Family* f, Labels&& labels) {
    if (!f) return nullptr;
    const bool ok = valid_labels(labels, f->type == detail::kHistogram);
    assert(ok && "invalid or duplicate label name");
    if (!ok) return nullptr;
    Labels sorted = labels;
    std::sort(sorted.begin(), sorted.end());
    for (auto& s : f->series)
        if (s.sorted == sorted) return &s;
    Series s;
    s.rendered = render_labels(labels);
    s.sorted = std::move(sorted);
    f->series.push_back(std::move(s));
    return &f->series.back();
}

}  // namespace

Counter& Registry::counter(std::string_view name, std::string_view help, Labels labels) {
    std::lock_guard lock(mu_);
    Series* s = find_or_add(family(name, help, detail::kCounter, {}), std::move(labels));
    if (!s) return *detached_counters_.emplace_back(std::make_unique<Counter>());
    if (!s->counter) s->counter = std::make_unique<Counter>();
    return *s->counter;
}

Gauge& Registry::gauge(std::string_view name, std::string_view help, Labels labels) {
    std::lock_guard lock(mu_);
    Series* s = find_or_add(family(name, help, detail::kGauge, {}), std::move(labels));
    assert((!s || !s->callback) && "gauge series already registered as a callback");
    if (!s || s->callback) return *detached_gauges_.emplace_back(std::make_unique<Gauge>());
    if (!s->gauge) s->gauge = std::make_unique<Gauge>();
    return *s->gauge;
}

Histogram& Registry::histogram(std::string_view name, std::string_view help,
                               std::span<const double> bounds, Labels labels) {
    std::lock_guard lock(mu_);
    Series* s = find_or_add(family(name, help, detail::kHistogram, bounds), std::move(labels));
    if (!s) return *detached_histograms_.emplace_back(std::make_unique<Histogram>(bounds));
    if (!s->histogram) s->histogram = std::make_unique<Histogram>(bounds);
    return *s->histogram;
}

CallbackHandle Registry::gauge_callback(std::string_view name, std::string_view help,
                                        std::function<double()> sample, Labels labels) {
    auto slot = std::make_shared<detail::CallbackSlot>();
    slot->sample = std::move(sample);
    std::lock_guard lock(mu_);
    Series* s = find_or_add(family(name, help, detail::kGauge, {}), std::move(labels));
    assert((!s || !s->gauge) && "gauge series already registered as a plain gauge");
    if (!s || s->gauge) return CallbackHandle(std::move(slot));  // never sampled
    if (s->callback) {
        // Replaced: the old handle becomes inert and its function is never called again.
        std::lock_guard old(s->callback->mu);
        s->callback->sample = nullptr;
    }
    s->callback = slot;
    return CallbackHandle(std::move(slot));
}

std::string Registry::render() const {
    std::lock_guard lock(mu_);
    std::string out;
    std::string body;
    for (const auto& f : families_) {
        body.clear();
        for (const auto& s : f->series) {
            if (s.counter) {
                sample_line(body, f->name, "", s.rendered, "", std::to_string(s.counter->value()));
            } else if (s.gauge) {
                sample_line(body, f->name, "", s.rendered, "", format_value(s.gauge->value()));
            } else if (s.callback) {
                std::lock_guard slot(s.callback->mu);
                if (s.callback->sample)
                    sample_line(body, f->name, "", s.rendered, "",
                                format_value(s.callback->sample()));
            } else if (s.histogram) {
                const Histogram& h = *s.histogram;
                // _count repeats the +Inf bucket, so the two agree even while observe()
                // runs on another thread.
                uint64_t cum = 0;
                for (std::size_t i = 0; i <= h.bounds().size(); ++i) {
                    cum = h.cumulative(i);
                    const std::string le =
                        i < h.bounds().size() ? format_value(h.bounds()[i]) : "+Inf";
                    sample_line(body, f->name, "_bucket", s.rendered, "le=\"" + le + "\"",
                                std::to_string(cum));
                }
                sample_line(body, f->name, "_sum", s.rendered, "", format_value(h.sum()));
                sample_line(body, f->name, "_count", s.rendered, "", std::to_string(cum));
            }
        }
        if (body.empty()) continue;
        out += "# HELP " + f->name + " " + escape_help(f->help) + "\n";
        out += "# TYPE " + f->name + " " + type_name(f->type) + "\n";
        out += body;
    }
    return out;
}

Registry& global() {
    static Registry* registry = new Registry();
    return *registry;
}

}  // namespace tlspolicy::metrics
