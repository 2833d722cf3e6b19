#include "cache/policy_cache.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <thread>

#include "util/log.h"

namespace tlspolicy {

// The writer thread: rows and hit counts queued by the loop are written in batches through
// its own connection. Failed batches are kept (coalesced by domain, bounded) and retried with
// back-off; a corrupt file is moved aside and replaced, and the loop is told to write
// everything it holds again.
class CacheWriter {
  public:
    CacheWriter(std::string path, std::string writer_id, std::size_t max_rows)
        : path_(std::move(path)), writer_id_(std::move(writer_id)), max_rows_(max_rows) {
        thread_ = std::thread([this] { run(); });
    }
    ~CacheWriter() {
        {
            std::lock_guard<std::mutex> g(m_);
            stop_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }

    void put(CacheRow row) {
        std::lock_guard<std::mutex> g(m_);
        if (rows_.size() >= max_rows_ && !rows_.count(row.domain)) {
            ++dropped_;  // the file lags behind memory; it is only a cache
            return;
        }
        std::string key = row.domain;
        rows_[std::move(key)] = std::move(row);
        ++queued_;
        cv_.notify_all();
    }
    void put_hits(std::vector<HitDelta> hits) {
        if (hits.empty()) return;
        std::lock_guard<std::mutex> g(m_);
        for (auto& h : hits) {
            if (hits_.size() >= max_rows_ && !hits_.count(h.domain)) continue;  // bounded
            HitDelta& d = hits_[h.domain];
            d.domain = h.domain;
            d.hits += h.hits;
            d.last_used = std::max(d.last_used, h.last_used);
        }
        ++queued_;
        cv_.notify_all();
    }
    // Deletes `domain`'s row ("" = all rows) and records the purge, before any row queued
    // after this call; rows of it queued before are dropped.
    void purge(const std::string& domain) {
        std::lock_guard<std::mutex> g(m_);
        if (domain.empty())
            rows_.clear();
        else
            rows_.erase(domain);
        purges_.push_back(domain);
        ++queued_;
        cv_.notify_all();
    }
    // Removes rows dead before `before` at the next chance (the loop asks once an hour).
    void housekeep(int64_t before) {
        std::lock_guard<std::mutex> g(m_);
        housekeep_before_ = before;
        cv_.notify_all();
    }
    // The loop saw the file corrupt: replace it at the next chance.
    void request_recovery() {
        std::lock_guard<std::mutex> g(m_);
        recover_ = true;
        cv_.notify_all();
    }
    // The file was deleted or replaced under us: open what the path names now (creating it)
    // and have every entry written again.
    void request_reopen() {
        std::lock_guard<std::mutex> g(m_);
        reopen_ = true;
        cv_.notify_all();
    }
    // True once after the file was replaced: the loop must queue every entry again.
    bool take_recovered() { return recovered_.exchange(false); }
    // Waits until everything queued before the call was attempted once.
    void flush() {
        std::unique_lock<std::mutex> l(m_);
        const uint64_t target = queued_;
        if (attempted_ >= target) return;
        urgent_ = true;
        cv_.notify_all();
        cv_.wait(l, [&] { return attempted_ >= target || stop_; });
    }

  private:
    void run() {
        std::unique_ptr<CacheStore> store;
        int backoff = 0;  // seconds before the next attempt after a failure
        std::unique_lock<std::mutex> l(m_);
        for (;;) {
            cv_.wait(l, [&] {
                return stop_ || recover_ || reopen_ || housekeep_before_ > 0 || !rows_.empty() ||
                       !hits_.empty() || !purges_.empty();
            });
            if (backoff > 0 && !stop_ && !urgent_)
                cv_.wait_for(l, std::chrono::seconds(backoff),
                             [&] { return stop_ || urgent_ || recover_; });
            else if (!stop_ && !urgent_)
                // Gather a batch: whatever else arrives within 200 ms goes into one transaction.
                cv_.wait_for(l, std::chrono::milliseconds(200), [&] { return stop_ || urgent_; });
            urgent_ = false;
            const bool recover = recover_;
            recover_ = false;
            const bool reopen_now = reopen_;
            reopen_ = false;
            const int64_t housekeep_before = housekeep_before_;
            housekeep_before_ = 0;
            const uint64_t upto = queued_;
            std::vector<std::string> purges = std::move(purges_);
            purges_.clear();
            std::vector<CacheRow> rows;
            rows.reserve(rows_.size());
            for (auto& [d, r] : rows_)
                rows.push_back(std::move(r));
            rows_.clear();
            std::vector<HitDelta> hits;
            for (auto& [d, h] : hits_)
                hits.push_back(std::move(h));
            hits_.clear();
            const bool stopping = stop_;
            l.unlock();

            bool ok = true;
            if (recover) {
                store.reset();
                discard("a read failed");
            }
            if (recover || reopen_now || !store) ok = reopen(store, recover || reopen_now);
            while (ok && store && !purges.empty()) {
                if (auto s = store->purge(purges.front()); !s) {
                    ok = false;
                    log_failure(s.error().message, store->failure());
                    break;
                }
                purges.erase(purges.begin());
            }
            if (ok && store && (!rows.empty() || !hits.empty())) {
                if (auto s = store->write(rows, hits); !s) {
                    ok = false;
                    const StoreFailure f = store->failure();
                    log_failure(s.error().message, f);
                    if (f == StoreFailure::Corrupt) {
                        // The open-time probe may not see what the write hit: move it aside.
                        store.reset();
                        discard(s.error().message);
                        ok = reopen(store, true);
                        // The rows of this batch are written again with everything else.
                    }
                }
            }
            if (ok) {
                if (backoff > 0) log::info("cache " + path_ + ": writing again");
                backoff = 0;
                if (store && housekeep_before > 0) {
                    // A bounded number, so that one pass never holds the write lock for long.
                    if (auto n = store->delete_dead(housekeep_before, 10000); n && *n > 0)
                        log::info("cache " + path_ + ": removed " + std::to_string(*n) +
                                  " dead row(s)");
                }
            } else {
                backoff = std::min(backoff ? backoff * 2 : 1, 30);
            }

            l.lock();
            if (!ok) {
                // Purges not done go first again; rows queued since then stay after them.
                purges_.insert(purges_.begin(), purges.begin(), purges.end());
                // Keep the failed batch unless something newer for the domain arrived.
                for (auto& r : rows)
                    if (!rows_.count(r.domain) && rows_.size() < max_rows_)
                        rows_.emplace(r.domain, std::move(r));
                for (auto& h : hits) {
                    if (hits_.size() >= max_rows_ && !hits_.count(h.domain)) continue;
                    HitDelta& d = hits_[h.domain];
                    d.domain = h.domain;
                    d.hits += h.hits;
                    d.last_used = std::max(d.last_used, h.last_used);
                }
            }
            attempted_ = std::max(attempted_, upto);
            cv_.notify_all();
            if (stopping) return;  // one last attempt was made
        }
    }

    void discard(const std::string& why) {
        auto moved = CacheStore::discard(path_);
        if (moved)
            log::error("cache " + path_ + " is corrupt (" + why + "); moved it to " + *moved +
                       " and started a fresh one");
        else
            log::error(moved.error().message);
    }

    bool reopen(std::unique_ptr<CacheStore>& store, bool recover) {
        store.reset();
        CacheStore::OpenReport report;
        auto s = CacheStore::open(path_, writer_id_, &report);
        if (!s) {
            log_failure(s.error().message, StoreFailure::Full);
            return false;
        }
        store = std::move(*s);
        if (!report.moved_aside.empty()) {
            log::error("cache " + path_ + " was corrupt (" + report.why + "); moved it to " +
                       report.moved_aside + " and started a fresh one");
            recovered_ = true;
        } else if (recover) {
            recovered_ = true;
        }
        return true;
    }

    void log_failure(const std::string& message, StoreFailure f) {
        // One line per kind of failure until writing works again: a full disk must not also
        // fill the log.
        if (f == last_logged_) return;
        last_logged_ = f;
        log::warning(message + "; serving from memory, retrying");
    }

    std::string path_, writer_id_;
    std::size_t max_rows_;
    std::thread thread_;
    std::mutex m_;
    std::condition_variable cv_;
    std::unordered_map<std::string, CacheRow> rows_;
    std::unordered_map<std::string, HitDelta> hits_;
    std::vector<std::string> purges_;
    bool stop_ = false, recover_ = false, reopen_ = false, urgent_ = false;
    uint64_t queued_ = 0, attempted_ = 0, dropped_ = 0;
    std::atomic<bool> recovered_{false};
    StoreFailure last_logged_ = StoreFailure::None;  // writer thread only
    int64_t housekeep_before_ = 0;
};

// The cache's counters in the metrics registry (docs/operations.md).
struct CacheMetrics {
    static CacheMetrics& get() {
        static CacheMetrics m;
        return m;
    }
    metrics::Counter& lookups(const char* result) {
        return metrics::global().counter("tlspolicyd_cache_lookups_total",
                                         "Lookups by cache result: hit (fresh), stale, miss",
                                         {{"result", result}});
    }
    metrics::Counter& refreshes(const char* outcome) {
        return metrics::global().counter("tlspolicyd_refreshes_total",
                                         "Background refreshes of cached answers, by outcome",
                                         {{"outcome", outcome}});
    }
    metrics::Counter& hit = lookups("hit");
    metrics::Counter& stale = lookups("stale");
    metrics::Counter& miss = lookups("miss");
    metrics::Counter& refresh_ok = refreshes("ok");
    metrics::Counter& refresh_failed = refreshes("failed");
};

struct PolicyCache::Entry {
    const std::string* domain = nullptr;  // the map's key
    CachedAnswer c;
    uint64_t generation = 0;
    bool used = false;  // answered a lookup since it was stored: refresh it ahead
    bool in_found_list = false;
    uint16_t failures = 0;  // consecutive failed resolutions (saturates)
    uint32_t unflushed_hits = 0;  // flushed every kHitFlushSeconds, long before 2^32
    int64_t retry_at = 0;  // while failing: served stale without a new resolution until then
    int64_t last_used = 0;
    Entry* lru_prev = nullptr;  // towards the front of its LruList
    Entry* lru_next = nullptr;
};

void PolicyCache::LruList::push_front(Entry& e) {
    e.lru_prev = nullptr;
    e.lru_next = front;
    (front ? front->lru_prev : back) = &e;
    front = &e;
}

void PolicyCache::LruList::erase(Entry& e) {
    (e.lru_prev ? e.lru_prev->lru_next : front) = e.lru_next;
    (e.lru_next ? e.lru_next->lru_prev : back) = e.lru_prev;
    e.lru_prev = e.lru_next = nullptr;
}

void PolicyCache::LruList::reverse() {
    for (Entry* e = front; e;) {
        Entry* next = e->lru_next;
        std::swap(e->lru_prev, e->lru_next);
        e = next;
    }
    std::swap(front, back);
}

struct PolicyCache::Waiter {
    PolicyCache* cache = nullptr;
    std::string domain;
    PolicySettings settings;
    AnswerCallback done;
    EventPtr timer;
    std::list<std::unique_ptr<Waiter>>::iterator self;
};

struct PolicyCache::Flight {
    std::list<std::unique_ptr<Waiter>> waiters;
    bool refresh = false;
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

namespace {

int64_t system_now() {
    return static_cast<int64_t>(std::time(nullptr));
}

}  // namespace

PolicyCache::PolicyCache(event_base* base, DomainResolver& engine, const Config& config,
                         Clock clock, bool use_file)
    : base_(base),
      engine_(engine),
      clock_(clock ? std::move(clock) : Clock(system_now)),
      settings_(cache_settings(config)),
      defaults_(config.policy),
      path_(config.cache.path),
      writer_id_("pid " + std::to_string(getpid()) + " @" + std::to_string(system_now())),
      use_file_(use_file),
      rng_(std::random_device{}()) {
    entries_metric_ = metrics::global().gauge_callback(
        "tlspolicyd_cache_entries", "Answers held in the in-memory cache",
        [this] { return static_cast<double>(entries_.size()); });
    flights_metric_ = metrics::global().gauge_callback(
        "tlspolicyd_resolutions_in_flight", "Domains being resolved now (misses and refreshes)",
        [this] { return static_cast<double>(flights_.size()); });
    if (use_file_) {
        open_file();
        if (store_) load_file();
    }
    tick_event_.reset(event_new(
        base_, -1, EV_PERSIST,
        [](evutil_socket_t, short, void* arg) { static_cast<PolicyCache*>(arg)->tick(); }, this));
    const timeval second{kSyncSeconds, 0};
    event_add(tick_event_.get(), &second);
}

PolicyCache::~PolicyCache() {
    *alive_ = false;
    tick_event_.reset();
    flights_.clear();  // waiters' timers go with them; their clients are not called back
    if (writer_) {
        flush_hits();
        writer_.reset();  // one last write attempt, then the thread ends
    }
}

void PolicyCache::open_file() {
    CacheStore::OpenReport report;
    auto s = CacheStore::open(path_, writer_id_, &report);
    next_reopen_ = clock_() + kReopenSeconds;
    if (!s) {
        // Tried again every kReopenSeconds: said once, not every time.
        if (s.error().message != last_open_error_)
            log::error(s.error().message + "; answering from memory only until it can be opened");
        last_open_error_ = s.error().message;
        return;
    }
    if (!last_open_error_.empty()) log::info("cache " + path_ + ": opened");
    last_open_error_.clear();
    store_ = std::move(*s);
    if (!report.moved_aside.empty())
        log::error("cache " + path_ + " was corrupt (" + report.why + "); moved it to " +
                   report.moved_aside + " and started a fresh one");
    if (!writer_) writer_ = std::make_unique<CacheWriter>(path_, writer_id_, settings_.max_entries);
}

void PolicyCache::load_file() {
    auto seq = store_->last_seq();
    if (!seq) {
        log::error(seq.error().message + "; starting with an empty cache");
        if (store_->failure() == StoreFailure::Corrupt && writer_) writer_->request_recovery();
        store_.reset();
        return;
    }
    cursor_ = ChangeCursor{*seq, {}, false};
    const int64_t now = clock_();
    // One allocation of the buckets instead of rehashing all the way up.
    entries_.reserve(std::min<std::size_t>(settings_.max_entries, 1u << 20));
    // Rows are taken one at a time: the whole file is never held in memory twice.
    auto st = store_->load_each(settings_.max_entries, [&](CacheRow&& row) {
        StsPolicyPtr sts = sts_policy_from_row(row);
        if (sts) engine_.remember_sts(row.domain, sts);
        if (row.stale_until <= now) return;  // domains are unique: the table's primary key
        auto c = cached_from_row(row.domain, row, defaults_, std::move(sts));
        if (!c) return;
        Entry& e = store_entry(row.domain, std::move(*c));
        e.last_used = row.last_used;
        ++stats_.loaded;
    });
    // load_each() gives the most recently used first, and linking put each in front: turn the
    // lists round.
    lru_found_.reverse();
    lru_not_found_.reverse();
    if (!st) {
        log::error(st.error().message + "; keeping the " + std::to_string(stats_.loaded) +
                   " answer(s) read before it");
        if (store_->failure() == StoreFailure::Corrupt && writer_) writer_->request_recovery();
        store_.reset();
        return;
    }
    log::info("cache " + path_ + ": " + std::to_string(stats_.loaded) + " answer(s) loaded");
}

void PolicyCache::link(Entry& e) {
    e.in_found_list = e.c.outcome == Outcome::Found;
    (e.in_found_list ? lru_found_ : lru_not_found_).push_front(e);
}

void PolicyCache::unlink(Entry& e) {
    (e.in_found_list ? lru_found_ : lru_not_found_).erase(e);
}

bool PolicyCache::evict_one() {
    // Not-found answers are the cheapest to lose; then the least recently used.
    auto& list = !lru_not_found_.empty() ? lru_not_found_ : lru_found_;
    if (list.empty()) return false;
    const std::string domain = *list.back->domain;
    erase_entry(domain);
    ++stats_.evictions;
    return true;
}

void PolicyCache::erase_entry(const std::string& domain) {
    auto it = entries_.find(domain);
    if (it == entries_.end()) return;
    unlink(it->second);
    entries_.erase(it);
}

std::size_t PolicyCache::forget(const std::string& domain) {
    std::vector<std::string> gone;
    if (domain.empty()) {
        for (const auto& [d, e] : entries_)
            gone.push_back(d);
    } else {
        gone.push_back(domain);
    }
    std::size_t n = 0;
    for (const auto& d : gone) {
        n += entries_.count(d);
        erase_entry(d);
        engine_.forget(d);
    }
    return n;
}

std::size_t PolicyCache::purge(const std::string& domain) {
    const std::size_t n = forget(domain);
    if (writer_) writer_->purge(domain);
    return n;
}

PolicyCache::Entry& PolicyCache::store_entry(const std::string& domain, CachedAnswer c) {
    // One lookup (a million of them at start): insert, then make room among the others (the
    // new entry is not linked yet, so eviction cannot pick it).
    auto [it, inserted] = entries_.try_emplace(domain);
    if (inserted) {
        it->second.domain = &it->first;
        while (entries_.size() > settings_.max_entries && evict_one()) {
        }
    } else {
        unlink(it->second);
    }
    Entry& e = it->second;
    e.c = std::move(c);
    e.generation = ++generation_;
    e.used = false;
    e.failures = 0;
    e.retry_at = 0;
    link(e);
    return e;
}

Answer PolicyCache::answer_from(const std::string& domain, const Entry& e,
                                const PolicySettings& settings, int64_t now) const {
    if (e.c.sts && !(settings == defaults_)) return render(domain, e.c, settings, now);
    Answer a;
    a.outcome = e.c.outcome;
    a.policy = e.c.policy;
    a.source = e.c.source;
    a.reason = e.c.reason;
    a.ttl = std::max<int64_t>(e.c.expires_at - now, 0);
    return a;
}

void PolicyCache::hit(Entry& e, int64_t now) {
    ++stats_.hits;
    CacheMetrics::get().hit.inc();
    e.last_used = now;
    if (e.unflushed_hits++ == 0) dirty_hits_.push_back(*e.domain);
    auto& list = e.in_found_list ? lru_found_ : lru_not_found_;
    list.erase(e);
    list.push_front(e);
    if (!e.used) {
        // First use since it was stored: refresh it before it expires.
        e.used = true;
        if (due_.size() > 2 * settings_.max_entries + 1024) rebuild_due();
        const double jitter = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
        due_.push({refresh_time(e.c.fetched_at, e.c.expires_at, jitter), e.generation, *e.domain});
    }
}

void PolicyCache::rebuild_due() {
    // Items of replaced or evicted entries wait in the queue until they are due; under heavy
    // churn that is many, so the queue is rebuilt from the entries that still need one.
    std::vector<Due> keep;
    while (!due_.empty()) {
        const Due& d = due_.top();
        auto it = entries_.find(d.domain);
        if (it != entries_.end() && it->second.generation == d.generation && it->second.used)
            keep.push_back(d);
        due_.pop();
    }
    for (auto& d : keep)
        due_.push(std::move(d));
}

bool PolicyCache::stale_answer(const std::string& domain, const PolicySettings& settings,
                               int64_t now, const std::string& why, Answer& out) {
    auto it = entries_.find(domain);
    if (it == entries_.end() || now >= it->second.c.stale_until) return false;
    Answer a = answer_from(domain, it->second, settings, now);
    // Only a policy is served stale: a stale "not found" could hide one published since.
    if (a.outcome != Outcome::Found) return false;
    a.reason = "stale answer (" + why + ")";
    a.ttl = 0;
    ++stats_.stale;
    CacheMetrics::get().stale.inc();
    out = std::move(a);
    return true;
}

void PolicyCache::lookup(const std::string& domain, const PolicySettings& settings,
                         AnswerCallback done) {
    const int64_t now = clock_();
    if (auto it = entries_.find(domain); it != entries_.end()) {
        Entry& e = it->second;
        if (now < e.c.expires_at) {
            hit(e, now);
            return done(answer_from(domain, e, settings, now));
        }
        // Expired while resolutions fail: stale (where allowed) until the next retry is due,
        // instead of every client waiting for a resolution that is likely to fail again.
        Answer stale;
        if (e.failures > 0 && now < e.retry_at &&
            stale_answer(domain, settings, now, "refresh failing", stale)) {
            e.last_used = now;
            return done(std::move(stale));
        }
    }
    ++stats_.misses;
    CacheMetrics::get().miss.inc();
    auto w = std::make_unique<Waiter>();
    w->cache = this;
    w->domain = domain;
    w->settings = settings;
    w->done = std::move(done);
    w->timer.reset(evtimer_new(
        base_,
        [](evutil_socket_t, short, void* arg) {
            auto* waiter = static_cast<Waiter*>(arg);
            waiter->cache->waiter_deadline(waiter);
        },
        w.get()));
    const timeval deadline{static_cast<time_t>(settings_.lookup_deadline_ms / 1000),
                           static_cast<suseconds_t>((settings_.lookup_deadline_ms % 1000) * 1000)};
    evtimer_add(w->timer.get(), &deadline);
    // The waiter joins before the resolution starts, which may finish before resolve() returns.
    auto fit = flights_.find(domain);
    const bool start = fit == flights_.end();
    if (start) fit = flights_.emplace(domain, std::make_shared<Flight>()).first;
    Flight& f = *fit->second;
    f.waiters.push_back(std::move(w));
    f.waiters.back()->self = std::prev(f.waiters.end());
    if (start) launch(domain);
}

void PolicyCache::launch(const std::string& domain) {
    // The MTA-STS engine may have forgotten a policy this entry still holds (its memory is
    // bounded separately): give it back, so a failed fetch cannot turn it into "not found".
    if (auto it = entries_.find(domain);
        it != entries_.end() && it->second.c.sts && it->second.c.sts->expires_at > clock_())
        engine_.remember_sts(domain, it->second.c.sts);
    std::weak_ptr<bool> alive = alive_;
    engine_.resolve(domain, [this, alive, domain](std::shared_ptr<const Resolution> r) {
        if (alive.expired()) return;
        finished(domain, std::move(r));
    });
}

void PolicyCache::waiter_deadline(Waiter* w) {
    auto fit = flights_.find(w->domain);
    if (fit == flights_.end()) return;
    std::unique_ptr<Waiter> mine = std::move(*w->self);
    fit->second->waiters.erase(w->self);
    ++stats_.deadline;
    const int64_t now = clock_();
    const std::string why =
        "no answer within lookup_deadline_ms " + std::to_string(settings_.lookup_deadline_ms);
    Answer a;
    if (!stale_answer(mine->domain, mine->settings, now, why, a)) a = Answer::temp(why);
    mine->done(std::move(a));
}

void PolicyCache::finished(const std::string& domain, std::shared_ptr<const Resolution> r) {
    auto fit = flights_.find(domain);
    if (fit == flights_.end()) return;
    std::shared_ptr<Flight> f = std::move(fit->second);
    flights_.erase(fit);
    if (f->refresh) --refreshes_running_;

    const int64_t now = clock_();
    const Answer def = r->answer(defaults_);
    DomainEngine::log_computed(domain, def,
                               std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now() - f->started)
                                   .count());
    bool stored = false;
    if (cacheable(*r, def)) {
        CachedAnswer c = cached_answer(*r, def, now, settings_.stale_ttl);
        if (writer_) writer_->put(cache_row(domain, *r, def, c));
        store_entry(domain, std::move(c));
        stored = true;
        if (f->refresh) CacheMetrics::get().refresh_ok.inc();
    } else if (auto it = entries_.find(domain); it != entries_.end()) {
        // Not cacheable: a failure, or an answer without a lifetime (TTL 0, an unfinished
        // TLSA lookup). Either way the entry could not be renewed: back off, keep it.
        Entry& e = it->second;
        if (e.failures < UINT16_MAX) ++e.failures;
        e.retry_at = now + refresh_backoff(e.failures);
        if (f->refresh) {
            ++stats_.refresh_failures;
            CacheMetrics::get().refresh_failed.inc();
            log::warning(domain + ": refresh failed (" + log::sanitize(def.reason) +
                         "); keeping the cached answer, next try in " +
                         std::to_string(e.retry_at - now) + " s");
            if (e.used && e.retry_at < e.c.stale_until)
                due_.push({e.retry_at, e.generation, domain});
        }
    }

    for (auto& w : f->waiters) {
        w->timer.reset();
        Answer a = w->settings == defaults_ ? def : r->answer(w->settings);
        if (!stored && (a.outcome == Outcome::Temp || a.outcome == Outcome::Timeout ||
                        a.outcome == Outcome::Perm)) {
            Answer stale;
            if (stale_answer(domain, w->settings, now, a.reason, stale)) a = std::move(stale);
        }
        w->done(std::move(a));
    }
}

void PolicyCache::flush_hits() {
    if (dirty_hits_.empty()) return;
    std::vector<HitDelta> deltas;
    deltas.reserve(dirty_hits_.size());
    for (const auto& d : dirty_hits_) {
        auto it = entries_.find(d);
        if (it == entries_.end() || it->second.unflushed_hits == 0) continue;
        deltas.push_back({d, it->second.unflushed_hits, it->second.last_used});
        it->second.unflushed_hits = 0;
    }
    dirty_hits_.clear();
    if (writer_ && !deltas.empty()) writer_->put_hits(std::move(deltas));
}

void PolicyCache::rewrite_all() {
    // The file was replaced: everything known goes into the fresh one.
    // (Domains DANE decided lose their stored MTA-STS policy here; the MTA-STS engine still
    // holds it and the next resolution stores it again.)
    for (auto& [domain, e] : entries_)
        writer_->put(cache_row(domain, e.c, e.c.sts.get(), {}));
}

void PolicyCache::sync_file() {
    auto failed = [this](const Error& e) {
        log::warning(e.message + "; will look again");
        if (store_->failure() == StoreFailure::Corrupt) {
            store_.reset();
            if (writer_) writer_->request_recovery();
        }
    };
    if (!more_changes_) {
        auto changed = store_->changed();
        if (!changed) return failed(changed.error());
        if (!*changed) return;
    }
    // Other writers' changes in bounded batches (a prefetch of a million domains is not read
    // in one go), for at most kSyncBudgetMs per tick; the rest follows on the next ticks.
    const auto started = std::chrono::steady_clock::now();
    do {
        auto ch = store_->changes_since(cursor_, kSyncBatchRows);
        if (!ch) return failed(ch.error());
        apply_changes(*ch);
        cursor_ = ch->next;
        more_changes_ = ch->more;
    } while (more_changes_ && std::chrono::steady_clock::now() - started <
                                  std::chrono::milliseconds(kSyncBudgetMs));
}

void PolicyCache::apply_changes(const CacheChanges& ch) {
    const int64_t now = clock_();
    // Purges first: a row written after a purge (a higher seq) comes back below.
    for (const auto& p : ch.purged) {
        ++stats_.synced_purges;
        forget(p);
    }
    for (const auto& row : ch.rows) {
        StsPolicyPtr sts = sts_policy_from_row(row);
        if (sts) engine_.remember_sts(row.domain, sts);
        if (row.stale_until <= now) continue;
        auto it = entries_.find(row.domain);
        if (it != entries_.end() && it->second.c.fetched_at > row.fetched_at) continue;
        auto c = cached_from_row(row.domain, row, defaults_, sts);
        if (!c) continue;
        const int64_t last_used = it != entries_.end() ? it->second.last_used : row.last_used;
        Entry& e = store_entry(row.domain, std::move(*c));
        e.last_used = last_used;
        ++stats_.synced_rows;
    }
}

void PolicyCache::tick() {
    const int64_t now = clock_();
    // Refresh-ahead of used entries, a bounded number at once.
    while (!due_.empty() && due_.top().at <= now) {
        if (refreshes_running_ >= settings_.max_refreshes) break;
        Due d = due_.top();
        due_.pop();
        auto it = entries_.find(d.domain);
        if (it == entries_.end() || it->second.generation != d.generation || !it->second.used)
            continue;                            // replaced, evicted or not used since
        if (flights_.count(d.domain)) continue;  // a client's miss is resolving it already
        if (now >= it->second.c.stale_until) continue;
        auto f = std::make_shared<Flight>();
        f->refresh = true;
        ++refreshes_running_;
        ++stats_.refreshes;
        flights_.emplace(d.domain, std::move(f));
        launch(d.domain);
    }
    if (!use_file_) return;
    if (store_ && store_->file_replaced()) {
        log::warning("cache " + path_ +
                     " was deleted or replaced while in use; writing the answers held in "
                     "memory to a new file");
        store_.reset();
        if (writer_) writer_->request_reopen();
    }
    if (writer_ && writer_->take_recovered()) {
        rewrite_all();
        store_.reset();
    }
    if (!store_ && now >= next_reopen_) {
        open_file();
        if (store_) {
            auto seq = store_->last_seq();
            cursor_ = ChangeCursor{seq ? *seq : 0, {}, false};
            more_changes_ = false;
        }
    }
    if (store_) sync_file();
    if (writer_ && now >= next_housekeeping_) {
        // Rows nobody used for a week past their stale limit leave the file.
        writer_->housekeep(now - kDeadRowSeconds);
        next_housekeeping_ = now + 3600;
    }
    if (now >= next_hit_flush_) {
        flush_hits();
        next_hit_flush_ = now + kHitFlushSeconds;
    }
}

void PolicyCache::flush() {
    flush_hits();
    if (writer_) writer_->flush();
}

void PolicyCache::set_config(const Config& config) {
    settings_ = cache_settings(config);
    if (config.cache.path != path_)
        log::warning("cache.path changed to " + config.cache.path +
                     ": takes effect at the next start; still using " + path_);
    if (!(config.policy == defaults_)) {
        defaults_ = config.policy;
        for (auto& [domain, e] : entries_) {
            if (!e.c.sts) continue;
            Answer a = DomainEngine::sts_decision(domain, *e.c.sts, e.c.sts_status, defaults_);
            e.c.outcome = a.outcome;
            e.c.policy = a.outcome == Outcome::Found ? a.policy : std::string();
            e.c.source = a.source;
            e.c.reason = a.reason;
            e.c.stale_until = stale_until(e.c.outcome, e.c.source, e.c.expires_at, e.c.sts.get(),
                                          settings_.stale_ttl);
            if (e.in_found_list != (e.c.outcome == Outcome::Found)) {
                unlink(e);
                link(e);
            }
        }
    }
    while (entries_.size() > settings_.max_entries && evict_one()) {
    }
}

}  // namespace tlspolicy
