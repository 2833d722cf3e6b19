// CacheStore: the SQLite file behind the policy cache ([cache] path), shared by the daemon,
// `tlspolicy` and people with sqlite3. WAL mode and a busy timeout, so readers never block a
// writer; the schema is versioned (PRAGMA user_version) and migrated forward at open. The
// `policies` view shows one row per domain with ISO 8601 UTC times (docs/cache.md).
//
// Several processes write the same file: every write transaction takes the next sequence
// number from the meta table and stamps it, with the writer's id, on the rows it writes (and
// on the purge events it records), so each process can read what the others changed since it
// last looked (changes_since) and ignore its own writes.
//
// Not thread-safe: one CacheStore per thread. Errors are values; failure() classifies them.
#pragma once

#include <sqlite3.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/answer.h"
#include "util/result.h"

namespace tlspolicy {

inline constexpr int kCacheSchemaVersion = 2;

// One domain's cached answer and what it rests on: a row of the `entries` table.
struct CacheRow {
    std::string domain;                   // normalised A-label name (primary key)
    Outcome outcome = Outcome::NotFound;  // Found or NotFound only (TEMP is never stored)
    std::string policy;  // Found: the policy string for the [policy] settings; "" otherwise
    Source source = Source::None;
    std::string reason;
    int64_t fetched_at = 0;   // unix seconds the answer was computed
    int64_t expires_at = 0;   // unix seconds it stops being fresh
    int64_t stale_until = 0;  // unix seconds it may be served while refreshes fail
    // DANE said "no DANE", so the MTA-STS policy (if any) decides, per socketmap profile.
    bool sts_decides = false;
    // The MTA-STS policy in force when the answer was computed (sts_id "" = none).
    std::string sts_id;
    std::string sts_body;
    int64_t sts_max_age = 0;
    int64_t sts_fetched_at = 0;
    int64_t sts_expires_at = 0;
    std::string details;    // JSON object: the facts behind the answer
    int64_t hits = 0;       // lookups answered from this row (all processes, approximately)
    int64_t last_used = 0;  // unix seconds of the last such lookup (0: never)
    int64_t seq = 0;        // set by write(): the transaction's sequence number
    std::string writer;     // set by write(): the id of the process that wrote it
    bool operator==(const CacheRow&) const = default;
};

// Hits counted in memory since the last flush, added to a row without rewriting it.
struct HitDelta {
    std::string domain;
    int64_t hits = 0;
    int64_t last_used = 0;
};

// What other writers changed since a sequence number.
// Where a reader of other writers' changes stands: after every change with a sequence number
// up to `seq`, or, when `inside`, in the middle of sequence number `seq` after `domain` (a
// write transaction stamps all its rows with one number, and a batch may end inside one).
struct ChangeCursor {
    int64_t seq = 0;
    std::string domain;
    bool inside = false;
};

struct CacheChanges {
    std::vector<CacheRow> rows;       // upserted rows, in (sequence, domain) order
    std::vector<std::string> purged;  // purged domains ("" = the whole cache was purged)
    int64_t seq = 0;                  // the highest sequence number seen (pass it next time)
    ChangeCursor next;                // where the next call starts
    bool more = false;                // the batch was cut at max_rows: call again
};

// How a store operation failed.
enum class StoreFailure {
    None,
    Busy,     // locked by another process past the busy timeout: retry later
    Full,     // disk full or read-only or I/O error: retry later, keep data in memory
    Corrupt,  // not a database or corrupt: move aside and start afresh (open() does that)
    Other,
};

struct SqliteCloser {
    void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using SqlitePtr = std::unique_ptr<sqlite3, SqliteCloser>;

class CacheStore {
  public:
    struct OpenReport {
        bool created = false;     // the file did not exist (or was replaced)
        std::string moved_aside;  // a corrupt file was renamed to this path ("" = none)
        std::string why;          // the SQLite error that made it corrupt
    };

    // Opens `path` read-write, creating it (not its directory) with mode 0640 when missing;
    // WAL, synchronous=NORMAL, busy timeout 2 s; migrates older schemas. A file that is not a
    // database or fails its integrity probe is renamed to PATH.corrupt-<unix seconds> (with
    // its -wal and -shm) and a fresh one is created; `report` says so. Fails when the file
    // cannot be created or opened, or holds a newer schema (it is then left untouched).
    // `writer` identifies this process in the rows it writes (e.g. "tlspolicyd:1234").
    //
    // With Probe::Deferred the integrity probe is left to the caller, who must run probe()
    // before trusting what it read (the daemon's start runs it on another thread while it
    // reads the rows) and, when it fails, drop what it read and open() again with the probe.
    enum class Probe { Now, Deferred };
    static Result<std::unique_ptr<CacheStore>> open(const std::string& path, std::string writer,
                                                    OpenReport* report = nullptr,
                                                    Probe probe = Probe::Now);
    // The integrity probe of open(), on a read-only connection of its own: safe to run on
    // another thread while a store reads the same file. Fails when the file is corrupt or
    // cannot be read; never moves or changes anything.
    static Status probe(const std::string& path);
    // Opens an existing file read-only (for `tlspolicy cache list|show|export` and `query`);
    // fails when it is missing, not a database or of another schema version. Never moves or
    // changes anything.
    static Result<std::unique_ptr<CacheStore>> open_readonly(const std::string& path);

    // Renames a file found corrupt while in use (and its -wal and -shm) to
    // PATH.corrupt-<unix seconds>, so that the next open() starts afresh; returns the new name.
    // Close every connection to it first.
    static Result<std::string> discard(const std::string& path);

    // Up to `limit` rows, most recently used (last_used, then fetched_at) first.
    Result<std::vector<CacheRow>> load(std::size_t limit);
    // The same rows, one at a time to `each` (no vector of them all: the daemon's start).
    Status load_each(std::size_t limit, const std::function<void(CacheRow&&)>& each);
    // The same rows for the daemon's start, each with its rank in that order (0 = most
    // recently used) and without what the start does not use (details and writer "", hits
    // and seq 0), in an order of the store's choosing (the file's when that is faster: nearly
    // always). One snapshot of the file. The rows are read on a thread of its own; `each` is
    // called on the caller's.
    Status load_ranked(std::size_t limit,
                       const std::function<void(CacheRow&&, std::size_t rank)>& each);
    // One row, or nullopt.
    Result<std::optional<CacheRow>> get(const std::string& domain);
    // The domains of up to `limit` rows that answered lookups, most hits first (then most
    // recently used): what `tlspolicy prefetch --top N` refreshes.
    Result<std::vector<std::string>> most_used(std::size_t limit);

    // In one transaction: upserts `rows` (replacing every column but hits and last_used, which
    // are kept: hits add up across writers) and adds `hits` to existing rows (deltas for
    // missing rows are dropped). Stamps seq and writer. On failure nothing was written;
    // failure() tells whether to retry.
    Status write(const std::vector<CacheRow>& rows, const std::vector<HitDelta>& hits = {});
    // Deletes one domain's row ("" = every row) and records the purge for the other processes.
    // Returns the number of rows deleted.
    Result<int64_t> purge(const std::string& domain);
    // Deletes rows whose expires_at, stale_until and MTA-STS policy expiry are all before `now`
    // (a policy in force is kept for the next start), the longest dead first, at
    // most `limit` of them (housekeeping; not recorded as purges). Returns how many.
    Result<int64_t> delete_dead(int64_t now, std::size_t limit);

    // True when another connection committed since the last call (PRAGMA data_version); cheap
    // enough to poll every second. The first call returns true.
    Result<bool> changed();
    // Rows and purges written by other writers with a sequence number above `seq`.
    Result<CacheChanges> changes_since(int64_t seq);
    // The same from a cursor, at most `max_rows` rows at a time (a huge prefetch is read in
    // bounded batches); the purges returned are those up to the last row's sequence number.
    Result<CacheChanges> changes_since(const ChangeCursor& from, std::size_t max_rows);
    // The highest sequence number in the file (0 for a new file).
    Result<int64_t> last_seq();

    // True when the path no longer names the file this store opened (deleted, or replaced by
    // another file): writes would go to a file nobody will read again.
    bool file_replaced() const;

    // How the last failed operation failed (None after a success).
    StoreFailure failure() const { return failure_; }
    const std::string& path() const { return path_; }
    sqlite3* handle() { return db_.get(); }  // for tests

  private:
    CacheStore() = default;
    SqlitePtr db_;
    std::string path_;
    dev_t dev_ = 0;  // the file opened, for file_replaced()
    ino_t ino_ = 0;
    std::string writer_;
    bool readonly_ = false;
    int64_t data_version_ = -1;
    StoreFailure failure_ = StoreFailure::None;
};

// ISO 8601 UTC ("2026-11-23T10:00:00Z") of unix seconds; "" for 0.
std::string iso_time(int64_t unix_seconds);

}  // namespace tlspolicy
