// PolicyCache: the policy cache in front of the DomainEngine (docs/architecture.md section 2,
// docs/cache.md). An in-memory index answers cached lookups without disk, DNS or waiting; the
// SQLite file (cache/store.h) keeps the answers across restarts and shares them with
// `tlspolicy prefetch` and `tlspolicy cache purge`, whose changes are picked up within a
// second (kSyncSeconds). Writes and hit counts go to a writer thread in batches, off the
// event loop.
//
// - Concurrent misses of one domain share one resolution; each client waits at most
//   [server] lookup_deadline_ms, then gets a stale answer where allowed, else TEMP.
// - An entry used since it was stored is refreshed in the background shortly before it expires
//   ([cache] max_refreshes at once); failed refreshes back off and the entry is served stale
//   as the freshness rules allow.
// - At most [cache] max_entries domains: not-found entries are evicted first, then the least
//   recently used.
// - A file that cannot be used never stops answers: it is logged, a corrupt one is moved aside
//   and replaced, and failed writes are retried while answers are served from memory.
#pragma once

#include <event2/event.h>

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <queue>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "cache/freshness.h"
#include "cache/store.h"
#include "core/config.h"
#include "core/resolver.h"
#include "server/metrics.h"
#include "sts/domain_engine.h"
#include "util/event.h"

namespace tlspolicy {

inline constexpr int kSyncSeconds = 1;                 // how often the file is checked for changes
inline constexpr std::size_t kSyncBatchRows = 2000;   // other writers' rows read at a time
inline constexpr int kSyncBudgetMs = 50;               // loop time one sync may take
inline constexpr int kHitFlushSeconds = 10;            // how often hit counts are written
inline constexpr int kReopenSeconds = 30;              // how often an unusable file is tried again
inline constexpr int64_t kDeadRowSeconds = 7 * 86400;  // rows dead this long leave the file

class CacheWriter;

class PolicyCache : public PolicyEngine {
  public:
    using Clock = std::function<int64_t()>;  // unix seconds
    struct Stats {
        uint64_t hits = 0, misses = 0, stale = 0, deadline = 0;
        uint64_t refreshes = 0, refresh_failures = 0, evictions = 0;
        uint64_t loaded = 0, synced_rows = 0, synced_purges = 0;
    };

    // `engine` must outlive the cache. With `use_file` the file [cache] path is opened (a
    // corrupt one moved aside) and up to max_entries rows are loaded before this returns; a
    // file that cannot be opened is logged and tried again every kReopenSeconds. Without it
    // the cache lives in memory only (tests). Starts a once-a-second timer on `base`.
    PolicyCache(event_base* base, DomainResolver& engine, const Config& config, Clock clock = {},
                bool use_file = true);
    // Writes what is pending (waiting at most for the busy timeout) and stops the writer.
    // Clients still waiting are not called back.
    ~PolicyCache() override;

    // PolicyEngine: answers from memory when fresh (or stale as allowed while refreshes fail),
    // else waits for the shared resolution, at most lookup_deadline_ms.
    void lookup(const std::string& domain, const PolicySettings& settings,
                AnswerCallback done) override;

    // Reload: new freshness settings, deadline, limits and [policy] settings (MTA-STS answers
    // are re-rendered). A new [cache] path takes effect at the next start.
    void set_config(const Config& config);

    // Once a second (the timer calls it; tests with an injected clock call it directly):
    // starts due refreshes, applies the file's changes, writes hit counts, reopens the file.
    void tick();

    // Forgets `domain` ("" = every domain) now, in memory and in the MTA-STS engine, and in the
    // file (recorded for the other processes) with the writer's next batch. Returns how many
    // entries were dropped.
    std::size_t purge(const std::string& domain);

    std::size_t size() const { return entries_.size(); }
    std::size_t refreshing() const { return refreshes_running_; }
    const Stats& stats() const { return stats_; }
    bool file_open() const { return store_ != nullptr; }
    // Waits until every write queued so far was attempted (tests and shutdown).
    void flush();

  private:
    struct Entry;
    struct Waiter;
    struct Flight;
    struct Due {
        int64_t at;
        uint64_t generation;
        std::string domain;
        bool operator>(const Due& o) const { return at > o.at; }
    };

    Answer answer_from(const std::string& domain, const Entry& e, const PolicySettings& settings,
                       int64_t now) const;
    bool stale_answer(const std::string& domain, const PolicySettings& settings, int64_t now,
                      const std::string& why, Answer& out);
    void hit(Entry& e, int64_t now);
    void rebuild_due();
    void launch(const std::string& domain);  // resolves into the flight of `domain`
    void finished(const std::string& domain, std::shared_ptr<const Resolution> r);
    void waiter_deadline(Waiter* w);
    Entry& store_entry(const std::string& domain, CachedAnswer c);
    void erase_entry(const std::string& domain);
    std::size_t forget(const std::string& domain);  // memory and engine; "" = all
    void link(Entry& e);
    void unlink(Entry& e);
    bool evict_one();  // false when nothing could be evicted
    void open_file();
    void load_file();
    void sync_file();
    void apply_changes(const CacheChanges& changes);
    void flush_hits();
    void rewrite_all();

    event_base* base_;
    DomainResolver& engine_;
    Clock clock_;
    CacheSettings settings_;
    PolicySettings defaults_;
    std::string path_;
    std::string writer_id_;
    std::string last_open_error_;
    bool use_file_;
    std::unique_ptr<CacheStore> store_;  // the loop's connection: loading and syncing
    std::unique_ptr<CacheWriter> writer_;
    ChangeCursor cursor_;        // how far other writers' changes have been read
    bool more_changes_ = false;  // the last sync stopped at its batch limit
    int64_t next_reopen_ = 0;
    int64_t next_hit_flush_ = 0;
    int64_t next_housekeeping_ = 0;

    std::unordered_map<std::string, Entry> entries_;
    // Doubly linked through the entries themselves (no allocation per entry); front: most
    // recently used.
    struct LruList {
        Entry* front = nullptr;
        Entry* back = nullptr;
        bool empty() const { return front == nullptr; }
        void push_front(Entry& e);
        void erase(Entry& e);
        void reverse();
    };
    LruList lru_found_, lru_not_found_;
    std::unordered_map<std::string, std::shared_ptr<Flight>> flights_;
    std::priority_queue<Due, std::vector<Due>, std::greater<Due>> due_;
    std::vector<std::string> dirty_hits_;
    std::size_t refreshes_running_ = 0;
    uint64_t generation_ = 0;
    std::mt19937_64 rng_;
    Stats stats_;
    EventPtr tick_event_;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
    // tlspolicyd_cache_entries and tlspolicyd_resolutions_in_flight, sampled at scrape time.
    metrics::CallbackHandle entries_metric_, flights_metric_;
};

}  // namespace tlspolicy
