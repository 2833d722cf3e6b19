#include "cache/policy_cache.h"

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <future>
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

namespace {

// Unix seconds in an Entry: 0 .. 2^32 - 1 (2106); earlier times read as 0, later ones as 2106.
uint32_t pack_time(int64_t t) {
    return static_cast<uint32_t>(std::clamp<int64_t>(t, 0, UINT32_MAX));
}

}  // namespace

void PolicyCache::LruList::push_front(Table& t, Ref r) {
    Entry& e = t[r];
    e.lru_prev = kNone;
    e.lru_next = front;
    if (front != kNone)
        t[front].lru_prev = r;
    else
        back = r;
    front = r;
}

void PolicyCache::LruList::erase(Table& t, Ref r) {
    Entry& e = t[r];
    const Ref prev = e.lru_prev, next = e.lru_next;
    if (prev != kNone)
        t[prev].lru_next = next;
    else
        front = next;
    if (next != kNone)
        t[next].lru_prev = prev;
    else
        back = prev;
    e.lru_prev = e.lru_next = kNone;
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
    if (use_file_) open_and_load();
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

void PolicyCache::open_and_load() {
    // The integrity probe reads every page and so does the load: they run side by side, on
    // two connections, and the rows count only when the probe passes.
    open_file(CacheStore::Probe::Deferred);
    if (!store_ || load_file(true)) return;
    // As if the probe had run first: a corrupt file is moved aside and a fresh one opened.
    store_.reset();
    open_file(CacheStore::Probe::Now);
    if (store_) load_file(false);
}

void PolicyCache::open_file(CacheStore::Probe probe) {
    CacheStore::OpenReport report;
    auto s = CacheStore::open(path_, writer_id_, &report, probe);
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

bool PolicyCache::load_file(bool probe) {
    // Started first, so that it ends as soon as possible; joined on every path (the future).
    std::future<Status> probed;
    if (probe)
        probed = std::async(std::launch::async, [path = path_] { return CacheStore::probe(path); });
    // Said by the open() with the probe that follows a failure.
    auto probe_failed = [&] { return probed.valid() && !probed.get(); };
    auto seq = store_->last_seq();
    if (!seq) {
        if (probe_failed()) return false;
        log::error(seq.error().message + "; starting with an empty cache");
        if (store_->failure() == StoreFailure::Corrupt && writer_) writer_->request_recovery();
        store_.reset();
        return true;
    }
    cursor_ = ChangeCursor{*seq, {}, false};
    const int64_t now = clock_();
    // One allocation of the index instead of growing it all the way up.
    entries_.reserve(std::min<std::size_t>(settings_.max_entries, 1u << 20));
    // Rows come in the file's order, each with its rank in use order (0 = most recently
    // used), one at a time: the whole file is never held in memory twice. The LRU lists are
    // linked, and the MTA-STS engine is told the policies, in rank order once all are read:
    // as if the rows had come most recently used first.
    std::vector<Ref> by_rank;
    struct StsRow {
        std::size_t rank;
        Ref ref;             // the entry that holds the policy, or kNone: then...
        std::string domain;  // ...the domain (a row too old to answer from)
        StsPolicyPtr sts;
    };
    std::vector<StsRow> sts_rows;
    auto st = store_->load_ranked(settings_.max_entries, [&](CacheRow&& row, std::size_t rank) {
        StsPolicyPtr sts = sts_policy_from_row(row);
        // Domains are unique (the table's primary key) and at most max_entries rows come, so
        // nothing is evicted while loading and every Ref stays valid.
        Ref r = kNone;
        if (row.stale_until > now) {
            if (auto c = cached_from_row(row.domain, row, defaults_, sts)) {
                r = store_entry(row.domain, std::move(*c), false);
                entries_[r].last_used = pack_time(row.last_used);
                if (rank >= by_rank.size()) by_rank.resize(rank + 1, kNone);
                by_rank[rank] = r;
                ++stats_.loaded;
            }
        }
        if (sts) {
            if (r != kNone && sts_of(entries_[r]) == sts)
                sts_rows.push_back({rank, r, {}, nullptr});
            else
                sts_rows.push_back({rank, kNone, std::move(row.domain), std::move(sts)});
        }
    });
    if (probe_failed()) {
        // Nothing else has seen the rows yet (the engine is told below): forget them.
        entries_.clear();
        sts_.clear();
        sts_free_.clear();
        stats_.loaded = 0;
        return false;
    }
    std::sort(sts_rows.begin(), sts_rows.end(),
              [](const StsRow& a, const StsRow& b) { return a.rank < b.rank; });
    for (auto& s : sts_rows) {
        if (s.ref != kNone)
            engine_.remember_sts(std::string(entries_.key(s.ref)), sts_of(entries_[s.ref]));
        else
            engine_.remember_sts(s.domain, std::move(s.sts));
    }
    for (auto r = by_rank.rbegin(); r != by_rank.rend(); ++r)
        if (*r != kNone) link(*r);  // the most recently used ends up in front
    if (!st) {
        log::error(st.error().message + "; keeping the " + std::to_string(stats_.loaded) +
                   " answer(s) read before it");
        if (store_->failure() == StoreFailure::Corrupt && writer_) writer_->request_recovery();
        store_.reset();
        return true;
    }
    // The reading thread's malloc arena held the rows on their way here: give back the pages
    // it and the handed-over batches no longer use (4 MiB resident for a million rows).
    ::malloc_trim(0);
    log::info("cache " + path_ + ": " + std::to_string(stats_.loaded) + " answer(s) loaded");
    return true;
}

void PolicyCache::link(Ref r) {
    Entry& e = entries_[r];
    e.in_found_list = e.outcome() == Outcome::Found;
    (e.in_found_list ? lru_found_ : lru_not_found_).push_front(entries_, r);
}

void PolicyCache::unlink(Ref r) {
    (entries_[r].in_found_list ? lru_found_ : lru_not_found_).erase(entries_, r);
}

CachedAnswer PolicyCache::cached(const Entry& e) const {
    CachedAnswer c;
    c.outcome = e.outcome();
    c.source = e.source();
    c.sts_status = e.sts_status();
    c.policy = e.policy;
    c.reason = e.reason;
    c.fetched_at = e.fetched_at;
    c.expires_at = e.expires_at;
    c.stale_until = e.stale_until;
    c.sts = sts_of(e);
    return c;
}

void PolicyCache::assign(Entry& e, CachedAnswer&& c) {
    e.set_outcome(c.outcome);
    e.set_source(c.source);
    e.set_sts_status(c.sts_status);
    e.policy = std::move(c.policy);
    e.reason = std::move(c.reason);
    e.fetched_at = pack_time(c.fetched_at);
    e.expires_at = pack_time(c.expires_at);
    e.stale_until = pack_time(c.stale_until);
    set_sts(e, std::move(c.sts));
}

const StsPolicyPtr& PolicyCache::sts_of(const Entry& e) const {
    static const StsPolicyPtr none;
    return e.sts == kNoSts ? none : sts_[e.sts];
}

void PolicyCache::set_sts(Entry& e, StsPolicyPtr p) {
    if (e.sts != kNoSts && !p) {
        sts_[e.sts].reset();
        sts_free_.push_back(e.sts);
        e.sts = kNoSts;
    } else if (e.sts != kNoSts) {
        sts_[e.sts] = std::move(p);
    } else if (p) {
        if (sts_free_.empty()) {
            e.sts = static_cast<uint32_t>(sts_.size());
            sts_.push_back(std::move(p));
        } else {
            e.sts = sts_free_.back();
            sts_free_.pop_back();
            sts_[e.sts] = std::move(p);
        }
    }
}

bool PolicyCache::evict_one() {
    // Not-found answers are the cheapest to lose; then the least recently used.
    auto& list = !lru_not_found_.empty() ? lru_not_found_ : lru_found_;
    if (list.empty()) return false;
    erase_ref(list.back);
    ++stats_.evictions;
    return true;
}

void PolicyCache::erase_entry(const std::string& domain) {
    if (const Ref r = entries_.find(domain); r != kNone) erase_ref(r);
}

void PolicyCache::erase_ref(Ref r) {
    unlink(r);
    set_sts(entries_[r], nullptr);
    entries_.erase(r);
    if (entries_.empty()) {
        // Everything went (a purge of all): give the side table's memory back too.
        std::vector<StsPolicyPtr>().swap(sts_);
        std::vector<uint32_t>().swap(sts_free_);
    }
}

std::size_t PolicyCache::forget(const std::string& domain) {
    if (!domain.empty()) {
        const Ref r = entries_.find(domain);
        if (r != kNone) erase_ref(r);
        engine_.forget(domain);
        return r != kNone ? 1 : 0;
    }
    // Everything: the table is emptied at once, then the engine forgets each domain.
    std::vector<std::string> gone;
    gone.reserve(entries_.size());
    entries_.for_each([&](Ref, std::string_view d, Entry&) { gone.emplace_back(d); });
    entries_.clear();
    lru_found_ = {};
    lru_not_found_ = {};
    std::vector<StsPolicyPtr>().swap(sts_);
    std::vector<uint32_t>().swap(sts_free_);
    for (const auto& d : gone)
        engine_.forget(d);
    return gone.size();
}

std::size_t PolicyCache::purge(const std::string& domain) {
    const std::size_t n = forget(domain);
    if (writer_) writer_->purge(domain);
    return n;
}

PolicyCache::Ref PolicyCache::store_entry(const std::string& domain, CachedAnswer c,
                                          bool link_now) {
    // One lookup (a million of them at start): insert, then make room among the others (the
    // new entry is not linked yet, so eviction cannot pick it; Refs stay valid).
    const auto [r, inserted] = entries_.insert(domain);
    if (inserted) {
        while (entries_.size() > settings_.max_entries && evict_one()) {
        }
    } else {
        unlink(r);
    }
    Entry& e = entries_[r];
    assign(e, std::move(c));
    e.generation = ++generation_;
    e.used = false;
    e.failures = 0;
    e.retry_at = 0;
    if (link_now) link(r);
    return r;
}

Answer PolicyCache::answer_from(const std::string& domain, const Entry& e,
                                const PolicySettings& settings, int64_t now) const {
    if (e.sts != kNoSts && !(settings == defaults_))
        return render(domain, cached(e), settings, now);
    Answer a;
    a.outcome = e.outcome();
    a.policy = e.policy.str();
    a.source = e.source();
    a.reason = e.reason.str();
    a.ttl = std::max<int64_t>(int64_t{e.expires_at} - now, 0);
    return a;
}

void PolicyCache::hit(Ref r, int64_t now) {
    ++stats_.hits;
    CacheMetrics::get().hit.inc();
    Entry& e = entries_[r];
    e.last_used = pack_time(now);
    if (e.unflushed_hits++ == 0) dirty_hits_.push_back(r);
    auto& list = e.in_found_list ? lru_found_ : lru_not_found_;
    if (list.front != r) {
        list.erase(entries_, r);
        list.push_front(entries_, r);
    }
    if (!e.used) {
        // First use since it was stored: refresh it before it expires.
        e.used = true;
        if (due_.size() > 2 * settings_.max_entries + 1024) rebuild_due();
        const double jitter = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
        due_.push({refresh_time(e.fetched_at, e.expires_at, jitter), e.generation, r});
    }
}

void PolicyCache::rebuild_due() {
    // Items of replaced or evicted entries wait in the queue until they are due; under heavy
    // churn that is many, so the queue is rebuilt from the entries that still need one.
    std::vector<Due> keep;
    while (!due_.empty()) {
        const Due& d = due_.top();
        if (entries_.live(d.ref) && entries_[d.ref].generation == d.generation &&
            entries_[d.ref].used)
            keep.push_back(d);
        due_.pop();
    }
    for (auto& d : keep)
        due_.push(d);
}

bool PolicyCache::stale_answer(const std::string& domain, const PolicySettings& settings,
                               int64_t now, const std::string& why, Answer& out) {
    const Ref r = entries_.find(domain);
    if (r == kNone || now >= entries_[r].stale_until) return false;
    Answer a = answer_from(domain, entries_[r], settings, now);
    // Only a policy is served stale: a stale "not found" could hide one published since.
    if (a.outcome != Outcome::Found) return false;
    a.reason = "stale answer (" + why + ")";
    a.ttl = 0;
    ++stats_.stale;
    CacheMetrics::get().stale.inc();
    out = std::move(a);
    return true;
}

std::optional<AnswerView> PolicyCache::immediate(const std::string& domain,
                                                 const PolicySettings& settings, Answer& storage,
                                                 bool& built) {
    built = false;
    const Ref r = entries_.find(domain);
    if (r == kNone) return std::nullopt;
    const int64_t now = clock_();
    Entry& e = entries_[r];
    if (now < e.expires_at) {
        hit(r, now);
        if (e.sts != kNoSts && !(settings == defaults_)) {
            storage = render(domain, cached(e), settings, now);
            built = true;
            return AnswerView(storage);
        }
        return AnswerView(e.outcome(), e.policy.str(), e.reason.str(), e.source(),
                          std::max<int64_t>(int64_t{e.expires_at} - now, 0));
    }
    // Expired while resolutions fail: stale (where allowed) until the next retry is due,
    // instead of every client waiting for a resolution that is likely to fail again.
    if (e.failures > 0 && now < e.retry_at &&
        stale_answer(domain, settings, now, "refresh failing", storage)) {
        entries_[r].last_used = pack_time(now);
        built = true;
        return AnswerView(storage);
    }
    return std::nullopt;
}

std::optional<AnswerView> PolicyCache::lookup_now(const std::string& domain,
                                                  const PolicySettings& settings, Answer& storage) {
    bool built = false;
    return immediate(domain, settings, storage, built);
}

void PolicyCache::lookup(const std::string& domain, const PolicySettings& settings,
                         AnswerCallback done) {
    Answer storage;
    bool built = false;
    if (const auto now = immediate(domain, settings, storage, built))
        return done(built ? std::move(storage) : now->owned());
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
    if (const Ref r = entries_.find(domain); r != kNone) {
        const StsPolicyPtr& sts = sts_of(entries_[r]);
        if (sts && sts->expires_at > clock_()) engine_.remember_sts(domain, sts);
    }
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
    } else if (const Ref ref = entries_.find(domain); ref != kNone) {
        // Not cacheable: a failure, or an answer without a lifetime (TTL 0, an unfinished
        // TLSA lookup). Either way the entry could not be renewed: back off, keep it.
        Entry& e = entries_[ref];
        if (e.failures < 15) ++e.failures;
        e.retry_at = pack_time(now + refresh_backoff(static_cast<int>(e.failures)));
        if (f->refresh) {
            ++stats_.refresh_failures;
            CacheMetrics::get().refresh_failed.inc();
            log::warning(domain + ": refresh failed (" + log::sanitize(def.reason) +
                         "); keeping the cached answer, next try in " +
                         std::to_string(int64_t{e.retry_at} - now) + " s");
            if (e.used && e.retry_at < e.stale_until) due_.push({e.retry_at, e.generation, ref});
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
    for (const Ref r : dirty_hits_) {
        // An entry erased since has no hits to give; one stored in its slot since counts its
        // own (and was listed itself).
        if (!entries_.live(r) || entries_[r].unflushed_hits == 0) continue;
        Entry& e = entries_[r];
        deltas.push_back({std::string(entries_.key(r)), e.unflushed_hits, e.last_used});
        e.unflushed_hits = 0;
    }
    dirty_hits_.clear();
    if (writer_ && !deltas.empty()) writer_->put_hits(std::move(deltas));
}

void PolicyCache::rewrite_all() {
    // The file was replaced: everything known goes into the fresh one.
    // (Domains DANE decided lose their stored MTA-STS policy here; the MTA-STS engine still
    // holds it and the next resolution stores it again.)
    entries_.for_each([&](Ref, std::string_view domain, const Entry& e) {
        writer_->put(cache_row(std::string(domain), cached(e), sts_of(e).get(), {}));
    });
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
    } while (more_changes_ &&
             std::chrono::steady_clock::now() - started < std::chrono::milliseconds(kSyncBudgetMs));
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
        const Ref r = entries_.find(row.domain);
        if (r != kNone && entries_[r].fetched_at > pack_time(row.fetched_at)) continue;
        auto c = cached_from_row(row.domain, row, defaults_, sts);
        if (!c) continue;
        const uint32_t last_used = r != kNone ? entries_[r].last_used : pack_time(row.last_used);
        entries_[store_entry(row.domain, std::move(*c))].last_used = last_used;
        ++stats_.synced_rows;
    }
}

void PolicyCache::tick() {
    const int64_t now = clock_();
    // Refresh-ahead of used entries, a bounded number at once.
    while (!due_.empty() && due_.top().at <= now) {
        if (refreshes_running_ >= settings_.max_refreshes) break;
        const Due d = due_.top();
        due_.pop();
        if (!entries_.live(d.ref) || entries_[d.ref].generation != d.generation ||
            !entries_[d.ref].used)
            continue;  // replaced, evicted or not used since
        const std::string domain(entries_.key(d.ref));
        if (flights_.count(domain)) continue;  // a client's miss is resolving it already
        if (now >= entries_[d.ref].stale_until) continue;
        auto f = std::make_shared<Flight>();
        f->refresh = true;
        ++refreshes_running_;
        ++stats_.refreshes;
        flights_.emplace(domain, std::move(f));
        launch(domain);
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
        open_file(CacheStore::Probe::Now);
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
        entries_.for_each([&](Ref r, std::string_view domain, Entry& e) {
            if (e.sts == kNoSts) return;
            const StoredStsPolicy& sts = *sts_[e.sts];
            Answer a =
                DomainEngine::sts_decision(std::string(domain), sts, e.sts_status(), defaults_);
            e.set_outcome(a.outcome);
            e.policy = a.outcome == Outcome::Found ? a.policy : std::string();
            e.set_source(a.source);
            e.reason = a.reason;
            e.stale_until = pack_time(
                stale_until(e.outcome(), e.source(), e.expires_at, &sts, settings_.stale_ttl));
            if (e.in_found_list != (e.outcome() == Outcome::Found)) {
                unlink(r);
                link(r);
            }
        });
    }
    while (entries_.size() > settings_.max_entries && evict_one()) {
    }
}

}  // namespace tlspolicy
