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

#include "cache/domain_table.h"
#include "cache/freshness.h"
#include "cache/store.h"
#include "core/config.h"
#include "core/resolver.h"
#include "server/metrics.h"
#include "sts/domain_engine.h"
#include "util/event.h"

namespace tlspolicy {

inline constexpr int kSyncSeconds = 1;                 // how often the file is checked for changes
inline constexpr std::size_t kSyncBatchRows = 2000;    // other writers' rows read at a time
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
    // The same for a fresh entry (or a stale one while refreshes fail) without copying its
    // text: the server's hot path. The view is valid until the cache changes.
    std::optional<AnswerView> lookup_now(const std::string& domain, const PolicySettings& settings,
                                         Answer& storage) override;

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
    using Ref = DomainRef;
    static constexpr Ref kNone = kNoDomainRef;

    static constexpr uint32_t kNoSts = UINT32_MAX;

    // One domain's cached answer in 56 bytes (a million of them at start): the CachedAnswer
    // packed, times as unix seconds in 32 bits (pack_time: until 2106, saturating), the
    // MTA-STS policy (few entries have one) in sts_, small fields in bits.
    struct Entry {
        SharedText policy;  // under the [policy] settings (CachedAnswer::policy)
        SharedText reason;
        uint32_t fetched_at = 0, expires_at = 0, stale_until = 0;
        uint32_t retry_at = 0;    // while failing: served stale without a new resolution until then
        uint32_t last_used = 0;   // 0: never
        uint32_t generation = 0;  // of the store (wraps after 2^32 stores: harmless)
        uint32_t unflushed_hits = 0;     // flushed every kHitFlushSeconds, long before 2^32
        uint32_t sts = kNoSts;           // index in sts_ of the policy that decides
        uint64_t lru_prev : 24 = kNone;  // towards the front of its LruList (Refs fit 24 bits)
        uint64_t lru_next : 24 = kNone;
        // Consecutive failed resolutions, saturating at 15 (refresh_backoff() is the same
        // from 7 on).
        uint64_t failures : 4 = 0;
        uint64_t outcome_bits : 3 = static_cast<uint8_t>(Outcome::NotFound);
        uint64_t source_bits : 2 = static_cast<uint8_t>(Source::None);
        uint64_t sts_status_bits : 3 = 0;
        uint64_t used : 1 = 0;  // answered a lookup since it was stored: refresh it ahead
        uint64_t in_found_list : 1 = 0;

        Outcome outcome() const { return static_cast<Outcome>(outcome_bits); }
        void set_outcome(Outcome o) { outcome_bits = static_cast<uint8_t>(o); }
        Source source() const { return static_cast<Source>(source_bits); }
        void set_source(Source s) { source_bits = static_cast<uint8_t>(s); }
        StsStatus sts_status() const { return StsStatus::from_code(sts_status_bits); }
        void set_sts_status(StsStatus s) { sts_status_bits = s.code(); }
    };
    static_assert(sizeof(Entry) == 56, "a million entries: keep Entry small");
    using Table = DomainTable<Entry>;
    struct Waiter;
    struct Flight;
    struct Due {
        int64_t at;
        uint32_t generation;
        Ref ref;  // still the entry it was queued for when the generation matches
        bool operator>(const Due& o) const { return at > o.at; }
    };

    Answer answer_from(const std::string& domain, const Entry& e, const PolicySettings& settings,
                       int64_t now) const;
    // lookup_now(); `built`: the answer is in `storage` (rendered or stale).
    std::optional<AnswerView> immediate(const std::string& domain, const PolicySettings& settings,
                                        Answer& storage, bool& built);
    bool stale_answer(const std::string& domain, const PolicySettings& settings, int64_t now,
                      const std::string& why, Answer& out);
    void hit(Ref r, int64_t now);
    void rebuild_due();
    void launch(const std::string& domain);  // resolves into the flight of `domain`
    void finished(const std::string& domain, std::shared_ptr<const Resolution> r);
    void waiter_deadline(Waiter* w);
    // Stores `c` for `domain` (evicting others as max_entries needs) and links it in front of
    // its LRU list, unless !link_now (loading: the caller links it).
    Ref store_entry(const std::string& domain, CachedAnswer c, bool link_now = true);
    void erase_entry(const std::string& domain);
    void erase_ref(Ref r);  // the only way entries leave entries_ (frees their sts_ slot)
    std::size_t forget(const std::string& domain);  // memory and engine; "" = all
    void link(Ref r);
    void unlink(Ref r);
    CachedAnswer cached(const Entry& e) const;         // unpacked
    void assign(Entry& e, CachedAnswer&& c);           // packed
    const StsPolicyPtr& sts_of(const Entry& e) const;  // null when none
    void set_sts(Entry& e, StsPolicyPtr p);
    bool evict_one();      // false when nothing could be evicted
    void open_and_load();  // at start
    void open_file(CacheStore::Probe probe);
    // Reads the rows into memory. With `probe` the store was opened with Probe::Deferred and
    // the probe runs meanwhile; false when it failed (then nothing was kept).
    bool load_file(bool probe);
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

    Table entries_;
    // Doubly linked through the entries themselves by Ref (no allocation per entry); front:
    // most recently used.
    struct LruList {
        Ref front = kNone;
        Ref back = kNone;
        bool empty() const { return front == kNone; }
        void push_front(Table& t, Ref r);
        void erase(Table& t, Ref r);
    };
    LruList lru_found_, lru_not_found_;
    std::vector<StsPolicyPtr> sts_;  // Entry::sts; free slots are null and listed in sts_free_
    std::vector<uint32_t> sts_free_;
    std::unordered_map<std::string, std::shared_ptr<Flight>> flights_;
    std::priority_queue<Due, std::vector<Due>, std::greater<Due>> due_;
    std::vector<Ref> dirty_hits_;  // entries with unflushed hits (may repeat; checked at flush)
    std::size_t refreshes_running_ = 0;
    uint32_t generation_ = 0;
    std::mt19937_64 rng_;
    Stats stats_;
    EventPtr tick_event_;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
    // tlspolicyd_cache_entries and tlspolicyd_resolutions_in_flight, sampled at scrape time.
    metrics::CallbackHandle entries_metric_, flights_metric_;
};

}  // namespace tlspolicy
