#include "cache/store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <functional>
#include <iterator>
#include <limits>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>

#include "util/fd.h"
#include "util/log.h"

namespace tlspolicy {

namespace {

// Index i upgrades a file from schema version i to i + 1; open() runs the missing ones in one
// transaction, so version 3 is one more entry here (and kCacheSchemaVersion = 3).
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta(key, value) VALUES('seq', 0);
CREATE TABLE entries(
    domain TEXT PRIMARY KEY,
    outcome TEXT NOT NULL,
    policy TEXT,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    fetched_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    stale_until INTEGER NOT NULL,
    sts_decides INTEGER NOT NULL,
    sts_id TEXT,
    sts_body TEXT,
    sts_max_age INTEGER,
    sts_fetched_at INTEGER,
    sts_expires_at INTEGER,
    details TEXT NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    last_used INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL,
    writer TEXT NOT NULL
);
CREATE INDEX entries_seq ON entries(seq);
CREATE INDEX entries_used ON entries(last_used, fetched_at);
CREATE TABLE purges(seq INTEGER NOT NULL, domain TEXT NOT NULL, writer TEXT NOT NULL);
CREATE INDEX purges_seq ON purges(seq);
CREATE VIEW policies AS SELECT
    domain,
    policy,
    source,
    strftime('%Y-%m-%dT%H:%M:%SZ', fetched_at, 'unixepoch') AS fetched_at,
    strftime('%Y-%m-%dT%H:%M:%SZ', expires_at, 'unixepoch') AS expires_at,
    strftime('%Y-%m-%dT%H:%M:%SZ', stale_until, 'unixepoch') AS stale_until,
    outcome,
    reason,
    sts_id,
    sts_max_age,
    CASE WHEN sts_id IS NULL THEN NULL
         ELSE strftime('%Y-%m-%dT%H:%M:%SZ', sts_expires_at, 'unixepoch') END AS sts_expires_at,
    hits,
    CASE WHEN last_used = 0 THEN NULL
         ELSE strftime('%Y-%m-%dT%H:%M:%SZ', last_used, 'unixepoch') END AS last_used,
    details
FROM entries;
)sql",
    // 1 -> 2: other writers' changes are read in (seq, domain) batches (changes_since with a
    // cursor), which this index serves in order without sorting.
    R"sql(
DROP INDEX entries_seq;
CREATE INDEX entries_seq ON entries(seq, domain);
)sql",
};
static_assert(std::size(kMigrations) == kCacheSchemaVersion);

constexpr int kBusyTimeoutMs = 2000;
constexpr int kPurgesKept = 1000;

// The column list every row read and the upsert use, and the matching indexes.
constexpr const char* kRowColumns =
    "domain, outcome, policy, source, reason, fetched_at, expires_at, stale_until, sts_decides, "
    "sts_id, sts_body, sts_max_age, sts_fetched_at, sts_expires_at, details, hits, last_used, "
    "seq, writer";
// The same columns for the daemon's start (load_ranked). What it does not use is a constant
// (computed once per statement): hits, seq, writer, and `details` (the largest), which is ""
// when it is text and NULL when not, so that read_row() checks it all the same; SQLite reads
// only a value's type for typeof().
constexpr const char* kStartColumns =
    "domain, outcome, policy, source, reason, fetched_at, expires_at, stale_until, sts_decides, "
    "sts_id, sts_body, sts_max_age, sts_fetched_at, sts_expires_at, "
    "CASE WHEN typeof(details) = 'text' THEN '' END, 0, last_used, 0, ''";
enum Col {
    kDomain,
    kOutcome,
    kPolicy,
    kSource,
    kReason,
    kFetchedAt,
    kExpiresAt,
    kStaleUntil,
    kStsDecides,
    kStsId,
    kStsBody,
    kStsMaxAge,
    kStsFetchedAt,
    kStsExpiresAt,
    kDetails,
    kHits,
    kLastUsed,
    kSeq,
    kWriter,
};

struct StmtFinalizer {
    void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

StoreFailure classify(int rc) {
    switch (rc & 0xff) {
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
            return StoreFailure::Busy;
        case SQLITE_FULL:
        case SQLITE_IOERR:
        case SQLITE_READONLY:
        case SQLITE_CANTOPEN:
        case SQLITE_PERM:
            return StoreFailure::Full;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
            return StoreFailure::Corrupt;
        default:
            return StoreFailure::Other;
    }
}

bool is_corrupt(int rc) {
    return classify(rc) == StoreFailure::Corrupt;
}

std::optional<Outcome> parse_outcome(std::string_view s) {
    for (Outcome o : {Outcome::Found, Outcome::NotFound})
        if (s == outcome_name(o)) return o;
    return std::nullopt;
}

std::optional<Source> parse_source(std::string_view s) {
    for (Source src : {Source::None, Source::Override, Source::Dane, Source::MtaSts})
        if (s == source_name(src)) return src;
    return std::nullopt;
}

bool file_exists(const std::string& path) {
    struct stat st;
    return ::lstat(path.c_str(), &st) == 0;
}

std::string parent_dir(const std::string& path) {
    const auto slash = path.rfind('/');
    if (slash == std::string::npos) return ".";
    return slash == 0 ? "/" : path.substr(0, slash);
}

// A failed SQLite call: the message and the primary result code that classifies it.
struct DbError {
    int rc = SQLITE_OK;
    std::string message;
};

// Thin helpers over one connection; every failure becomes a DbError naming the file.
class Db {
  public:
    Db(sqlite3* db, const std::string& path) : db_(db), path_(path) {}

    DbError fail(int rc, std::string_view what) const {
        std::string m = "cache " + path_ + ": " + std::string(what) + ": ";
        m += db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
        return {rc, std::move(m)};
    }

    std::optional<DbError> exec(const char* sql, std::string_view what) const {
        const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
        if (rc != SQLITE_OK) return fail(rc, what);
        return std::nullopt;
    }

    std::optional<DbError> prepare(const std::string& sql, StmtPtr& out,
                                   std::string_view what) const {
        sqlite3_stmt* s = nullptr;
        const int rc =
            sqlite3_prepare_v2(db_, sql.c_str(), static_cast<int>(sql.size()) + 1, &s, nullptr);
        out.reset(s);
        if (rc != SQLITE_OK) return fail(rc, what);
        return std::nullopt;
    }

    // Runs a statement that returns at most one integer (or no row: `out` keeps its value).
    std::optional<DbError> query_int(const std::string& sql, int64_t& out,
                                     std::string_view what) const {
        StmtPtr s;
        if (auto e = prepare(sql, s, what)) return e;
        const int rc = sqlite3_step(s.get());
        if (rc == SQLITE_ROW) {
            out = sqlite3_column_int64(s.get(), 0);
            return std::nullopt;
        }
        if (rc == SQLITE_DONE) return std::nullopt;
        return fail(rc, what);
    }

    std::optional<DbError> query_text(const std::string& sql, std::string& out,
                                      std::string_view what) const {
        StmtPtr s;
        if (auto e = prepare(sql, s, what)) return e;
        const int rc = sqlite3_step(s.get());
        if (rc == SQLITE_ROW) {
            const auto* t = sqlite3_column_text(s.get(), 0);
            out.assign(t ? reinterpret_cast<const char*>(t) : "",
                       static_cast<std::size_t>(sqlite3_column_bytes(s.get(), 0)));
            return std::nullopt;
        }
        if (rc == SQLITE_DONE) return std::nullopt;
        return fail(rc, what);
    }

    std::optional<DbError> step_done(sqlite3_stmt* s, std::string_view what) const {
        const int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE || rc == SQLITE_ROW) return std::nullopt;
        return fail(rc, what);
    }

    const std::string& path() const { return path_; }

  private:
    sqlite3* db_;
    const std::string& path_;
};

void bind_text(sqlite3_stmt* s, int i, std::string_view v) {
    sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}

void bind_text_or_null(sqlite3_stmt* s, int i, const std::string& v, bool null) {
    if (null)
        sqlite3_bind_null(s, i);
    else
        bind_text(s, i, v);
}

void bind_int_or_null(sqlite3_stmt* s, int i, int64_t v, bool null) {
    if (null)
        sqlite3_bind_null(s, i);
    else
        sqlite3_bind_int64(s, i, v);
}

// Reads one row in kRowColumns order. nullopt when the row breaks the schema's rules: the file
// is shared with other programs and people, so its contents are input like any other.
std::optional<CacheRow> read_row(sqlite3_stmt* s) {
    auto is = [&](int col, int type) { return sqlite3_column_type(s, col) == type; };
    auto text = [&](int col) {
        const auto* t = sqlite3_column_text(s, col);
        return std::string(t ? reinterpret_cast<const char*>(t) : "",
                           static_cast<std::size_t>(sqlite3_column_bytes(s, col)));
    };
    auto integer = [&](int col) -> int64_t { return sqlite3_column_int64(s, col); };

    for (int col : {kDomain, kOutcome, kSource, kReason, kDetails, kWriter})
        if (!is(col, SQLITE_TEXT)) return std::nullopt;
    for (int col : {kFetchedAt, kExpiresAt, kStaleUntil, kStsDecides, kHits, kLastUsed, kSeq})
        if (!is(col, SQLITE_INTEGER)) return std::nullopt;

    CacheRow r;
    r.domain = text(kDomain);
    const auto outcome = parse_outcome(text(kOutcome));
    const auto source = parse_source(text(kSource));
    if (r.domain.empty() || !outcome || !source) return std::nullopt;
    r.outcome = *outcome;
    r.source = *source;
    if (r.outcome == Outcome::Found) {
        if (!is(kPolicy, SQLITE_TEXT)) return std::nullopt;
        r.policy = text(kPolicy);
        if (r.policy.empty()) return std::nullopt;
    }
    r.reason = text(kReason);
    r.fetched_at = integer(kFetchedAt);
    r.expires_at = integer(kExpiresAt);
    r.stale_until = integer(kStaleUntil);
    r.sts_decides = integer(kStsDecides) != 0;
    if (!is(kStsId, SQLITE_NULL)) {
        if (!is(kStsId, SQLITE_TEXT)) return std::nullopt;
        r.sts_id = text(kStsId);
        if (!is(kStsBody, SQLITE_TEXT) && !is(kStsBody, SQLITE_NULL)) return std::nullopt;
        r.sts_body = text(kStsBody);
        for (int col : {kStsMaxAge, kStsFetchedAt, kStsExpiresAt})
            if (!is(col, SQLITE_INTEGER) && !is(col, SQLITE_NULL)) return std::nullopt;
        r.sts_max_age = integer(kStsMaxAge);
        r.sts_fetched_at = integer(kStsFetchedAt);
        r.sts_expires_at = integer(kStsExpiresAt);
    }
    r.details = text(kDetails);
    r.hits = integer(kHits);
    r.last_used = integer(kLastUsed);
    r.seq = integer(kSeq);
    r.writer = text(kWriter);
    return r;
}

// Steps `s` to the end, appending the rows that read_row() accepts; logs how many it skipped.
std::optional<DbError> read_rows(sqlite3_stmt* s, const Db& db, std::string_view what,
                                 const std::function<void(CacheRow&&)>& each) {
    std::size_t skipped = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (auto r = read_row(s))
            each(std::move(*r));
        else
            ++skipped;
    }
    if (rc != SQLITE_DONE) return db.fail(rc, what);
    if (skipped)
        log::warning("cache " + db.path() + ": skipped " + std::to_string(skipped) +
                     " malformed row(s)");
    return std::nullopt;
}

// Creates the file ourselves so it gets our mode (SQLite would use 0644), and says clearly
// when the directory is missing (SQLite only says "unable to open database file").
Status create_file(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640));
    if (fd || errno == EEXIST) return {};
    const int err = errno;
    if (err == ENOENT) {
        return make_error("cache " + path + ": directory " + parent_dir(path) + " does not exist");
    }
    return make_error("cache " + path + ": cannot create: " + std::strerror(err));
}

// Renames PATH and its -wal and -shm to PATH.corrupt-<unix seconds>[-wal|-shm]; returns the
// new name of PATH. A name already taken (two corruptions in one second) gets a ".N" suffix.
Result<std::string> move_aside(const std::string& path) {
    const std::string base = path + ".corrupt-" + std::to_string(std::time(nullptr));
    std::string target = base;
    for (int n = 1; file_exists(target) || file_exists(target + "-wal"); ++n)
        target = base + "." + std::to_string(n);
    if (::rename(path.c_str(), target.c_str()) != 0)
        return make_error("cache " + path +
                          ": cannot move the corrupt file aside: " + std::strerror(errno));
    for (const char* suffix : {"-wal", "-shm"}) {
        const std::string from = path + suffix;
        if (::rename(from.c_str(), (target + suffix).c_str()) != 0 && errno != ENOENT)
            log::warning("cache " + path + ": cannot move " + from +
                         " aside: " + std::strerror(errno));
    }
    return target;
}

// Opens the connection and applies the per-connection settings.
std::optional<DbError> connect(const std::string& path, int flags, SqlitePtr& out) {
    sqlite3* raw = nullptr;
    const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
    out.reset(raw);
    if (rc != SQLITE_OK) return Db(out.get(), path).fail(rc, "cannot open");
    sqlite3_busy_timeout(out.get(), kBusyTimeoutMs);
    return std::nullopt;
}

// user_version and whether the file holds any schema object at all, from one snapshot:
// between two statements another process could create the schema.
std::optional<DbError> read_version(const Db& db, int64_t& version, bool& has_tables) {
    StmtPtr s;
    if (auto e = db.prepare("SELECT (SELECT user_version FROM pragma_user_version), "
                            "(SELECT count(*) FROM sqlite_schema)",
                            s, "cannot read the schema version"))
        return e;
    const int rc = sqlite3_step(s.get());
    if (rc != SQLITE_ROW) return db.fail(rc, "cannot read the schema version");
    version = sqlite3_column_int64(s.get(), 0);
    has_tables = sqlite3_column_int64(s.get(), 1) > 0;
    return std::nullopt;
}

std::optional<DbError> migrate(const Db& db, const std::string& path) {
    if (auto e = db.exec("BEGIN IMMEDIATE", "cannot start the migration")) return e;
    // Re-read inside the write lock: another process may have migrated since we looked.
    int64_t version = 0;
    bool has_tables = false;
    auto e = read_version(db, version, has_tables);
    if (!e && version == 0 && has_tables)
        e = DbError{SQLITE_ERROR,
                    "cache " + path + ": not a tlspolicyd cache; leaving it untouched"};
    for (int64_t v = version; !e && v < kCacheSchemaVersion; ++v)
        e = db.exec(kMigrations[v], "cannot migrate to schema version " + std::to_string(v + 1));
    if (!e && version < kCacheSchemaVersion)
        e = db.exec(("PRAGMA user_version = " + std::to_string(kCacheSchemaVersion)).c_str(),
                    "cannot set the schema version");
    if (!e) e = db.exec("COMMIT", "cannot commit the migration");
    if (e) db.exec("ROLLBACK", "rollback");
    return e;
}

// The corruption probe. quick_check reads every page (about 0.4 s for 1,000,000 rows, warm),
// but a cheaper probe would pass a file whose damage load() then hits, and reopening (what a
// Corrupt failure calls for) would never move it aside.
std::optional<DbError> integrity_probe(const Db& db, const std::string& path) {
    std::string verdict;
    if (auto e = db.query_text("PRAGMA quick_check(1)", verdict, "integrity check failed"))
        return e;
    if (verdict != "ok")
        return DbError{SQLITE_CORRUPT,
                       "cache " + path + ": integrity check failed: " + log::sanitize(verdict)};
    return std::nullopt;
}

// Everything open() does to one file. A DbError with a corrupt code means "move it aside".
std::optional<DbError> open_rw(const std::string& path, CacheStore::Probe probe, SqlitePtr& out) {
    if (auto e =
            connect(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, out))
        return e;
    // SQLite quietly falls back to read-only when the file is not writable; every write would
    // then fail, so say so now.
    if (sqlite3_db_readonly(out.get(), "main") == 1)
        return DbError{SQLITE_READONLY,
                       "cache " + path + ": cannot open read-write: permission denied"};
    const Db db(out.get(), path);
    // Before anything writes: a newer or foreign file must keep its exact bytes (WAL mode
    // would rewrite the header).
    int64_t version = 0;
    bool has_tables = false;
    if (auto e = read_version(db, version, has_tables)) return e;
    if (version > kCacheSchemaVersion) {
        return DbError{SQLITE_ERROR,
                       "cache " + path + ": schema version " + std::to_string(version) +
                           " is newer than this tlspolicyd (" +
                           std::to_string(kCacheSchemaVersion) + "); leaving it untouched"};
    }
    if (version == 0 && has_tables)
        return DbError{SQLITE_ERROR,
                       "cache " + path + ": not a tlspolicyd cache; leaving it untouched"};

    // Switching needs an exclusive lock, and SQLite returns BUSY at once, without its busy
    // handler, when processes opening a new file at the same time would deadlock: retry.
    std::string mode;
    for (int waited = 0;; waited += 10) {
        auto e = db.query_text("PRAGMA journal_mode=WAL", mode, "cannot switch to WAL");
        if (!e) break;
        if ((e->rc & 0xff) != SQLITE_BUSY || waited >= kBusyTimeoutMs) return e;
        sqlite3_sleep(10);
    }
    if (mode != "wal")
        return DbError{SQLITE_ERROR, "cache " + path + ": cannot switch to WAL (journal mode is " +
                                         log::sanitize(mode, 20) + ")"};
    if (auto e = db.exec("PRAGMA synchronous=NORMAL", "cannot set synchronous")) return e;

    if (version == kCacheSchemaVersion && probe == CacheStore::Probe::Now)
        return integrity_probe(db, path);
    if (version < kCacheSchemaVersion) return migrate(db, path);
    return std::nullopt;
}

struct FileId {
    dev_t dev = 0;
    ino_t ino = 0;
    bool operator==(const FileId&) const = default;
};

std::optional<FileId> file_id(const std::string& path) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return std::nullopt;
    return FileId{st.st_dev, st.st_ino};
}

}  // namespace

Result<std::unique_ptr<CacheStore>> CacheStore::open(const std::string& path, std::string writer,
                                                     OpenReport* report, Probe probe) {
    OpenReport local;
    OpenReport& rep = report ? *report : local;
    rep = OpenReport{};

    auto store = std::unique_ptr<CacheStore>(new CacheStore());
    store->path_ = path;
    store->writer_ = std::move(writer);

    // At most twice: the second time on a fresh file after moving a corrupt one aside.
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (!file_exists(path)) {
            if (auto st = create_file(path); !st) return st.error();
            rep.created = true;
        }
        const auto id = file_id(path);
        auto e = open_rw(path, probe, store->db_);
        if (!e) {
            if (id) {
                store->dev_ = id->dev;
                store->ino_ = id->ino;
            }
            return store;
        }
        store->db_.reset();
        if (!is_corrupt(e->rc) || attempt > 0) return make_error(std::move(e->message));
        // Another process may have replaced the corrupt file already: only move the one we
        // found corrupt, and try again in any case.
        if (id && file_id(path) == id) {
            auto moved = move_aside(path);
            if (!moved) return moved.error();
            rep.moved_aside = std::move(*moved);
            rep.why = e->message;
            if (!report)
                log::warning(e->message + "; moved it to " + rep.moved_aside + ", starting afresh");
        }
    }
    return make_error("cache " + path + ": cannot open");
}

bool CacheStore::file_replaced() const {
    if (ino_ == 0) return false;  // not known: never claim it
    const auto id = file_id(path_);
    return !id || id->dev != dev_ || id->ino != ino_;
}

Status CacheStore::probe(const std::string& path) {
    SqlitePtr db;
    auto e = connect(path, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, db);
    if (!e) e = integrity_probe(Db(db.get(), path), path);
    if (e) return make_error(std::move(e->message));
    return {};
}

Result<std::string> CacheStore::discard(const std::string& path) {
    return move_aside(path);
}

Result<std::unique_ptr<CacheStore>> CacheStore::open_readonly(const std::string& path) {
    if (!file_exists(path)) return make_error("cache " + path + ": no such file");
    auto store = std::unique_ptr<CacheStore>(new CacheStore());
    store->path_ = path;
    store->readonly_ = true;
    if (auto e = connect(path, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, store->db_))
        return make_error(std::move(e->message));
    const Db db(store->db_.get(), path);
    int64_t version = 0;
    bool has_tables = false;
    if (auto e = read_version(db, version, has_tables)) return make_error(std::move(e->message));
    if (version == 0) return make_error("cache " + path + ": not a tlspolicyd cache");
    if (version != kCacheSchemaVersion) {
        return make_error("cache " + path + ": schema version " + std::to_string(version) +
                          ", this tlspolicyd reads " + std::to_string(kCacheSchemaVersion));
    }
    return store;
}

namespace {

// Fills failure and returns the error: the common tail of every failed operation.
Error failed(StoreFailure& failure, DbError e) {
    failure = classify(e.rc);
    return make_error(std::move(e.message));
}

// Takes the next sequence number; inside a write transaction.
std::optional<DbError> next_seq(const Db& db, const std::string& path, int64_t& seq) {
    seq = -1;
    if (auto e = db.query_int("UPDATE meta SET value = value + 1 WHERE key = 'seq' RETURNING value",
                              seq, "cannot take a sequence number"))
        return e;
    if (seq < 0) return DbError{SQLITE_ERROR, "cache " + path + ": meta has no seq row"};
    return std::nullopt;
}

int64_t clamp_limit(std::size_t limit) {
    constexpr auto kMax = static_cast<std::size_t>(std::numeric_limits<int64_t>::max());
    return static_cast<int64_t>(limit > kMax ? kMax : limit);
}

}  // namespace

Status CacheStore::load_each(std::size_t limit, const std::function<void(CacheRow&&)>& each) {
    const Db db(db_.get(), path_);
    StmtPtr s;
    auto e = db.prepare(std::string("SELECT ") + kRowColumns +
                            " FROM entries ORDER BY last_used DESC, fetched_at DESC LIMIT ?",
                        s, "cannot load");
    if (!e) {
        sqlite3_bind_int64(s.get(), 1, clamp_limit(limit));
        e = read_rows(s.get(), db, "cannot load", each);
    }
    if (e) return failed(failure_, std::move(*e));
    failure_ = StoreFailure::None;
    return {};
}

namespace {

struct LoadCancelled {};

// Rows from the thread that reads them to the thread that keeps them, a batch at a time, with
// at most a few batches waiting (the file is never held in memory twice).
class RowHandoff {
  public:
    using Item = std::pair<CacheRow, std::size_t>;
    // Reader side: false once the taker has given up.
    bool put(CacheRow&& row, std::size_t rank) {
        filling_.emplace_back(std::move(row), rank);
        if (filling_.size() < kBatch) return true;
        std::unique_lock<std::mutex> l(m_);
        room_.wait(l, [&] { return cancelled_ || ready_.size() < kMaxWaiting; });
        if (cancelled_) return false;
        ready_.push_back(std::move(filling_));
        filling_ = {};
        filling_.reserve(kBatch);
        l.unlock();
        has_.notify_one();
        return true;
    }
    // Reader side, last: hands over what is left.
    void finish() {
        std::lock_guard<std::mutex> g(m_);
        if (!filling_.empty()) ready_.push_back(std::move(filling_));
        done_ = true;
        has_.notify_one();
    }
    // Taker side: the next batch into `out`; false when there are no more.
    bool take(std::vector<Item>& out) {
        std::unique_lock<std::mutex> l(m_);
        has_.wait(l, [&] { return done_ || !ready_.empty(); });
        if (ready_.empty()) return false;
        out = std::move(ready_.front());
        ready_.pop_front();
        l.unlock();
        room_.notify_one();
        return true;
    }
    void cancel() {
        std::lock_guard<std::mutex> g(m_);
        cancelled_ = true;
        room_.notify_one();
    }

  private:
    static constexpr std::size_t kBatch = 1024, kMaxWaiting = 4;
    std::vector<Item> filling_;  // reader only
    std::mutex m_;
    std::condition_variable has_, room_;
    std::deque<std::vector<Item>> ready_;
    bool done_ = false, cancelled_ = false;
};

}  // namespace

Status CacheStore::load_ranked(std::size_t limit,
                               const std::function<void(CacheRow&&, std::size_t rank)>& each) {
    // SQLite's half (reading and decoding rows) runs on a thread of its own and hands the rows
    // over in batches; `each` runs on this thread. The connection is used by that thread only
    // until it ends.
    RowHandoff handoff;
    auto emit = [&](CacheRow&& r, std::size_t rank) {
        if (!handoff.put(std::move(r), rank)) throw LoadCancelled{};
    };
    const Db db(db_.get(), path_);
    // A read transaction: the order and the rows come from one snapshot of the file.
    auto read = [&]() -> std::optional<DbError> {
        const std::string order_by = " ORDER BY last_used DESC, fetched_at DESC LIMIT ?";
        // The ranks, from the index alone. Reading the rows in this order would fetch each
        // from its own place in the file; reading them in the file's (rowid) order is
        // several times faster, so each row's rank is looked up by its rowid.
        StmtPtr s;
        if (auto e = db.prepare("SELECT rowid FROM entries" + order_by, s, "cannot load")) return e;
        sqlite3_bind_int64(s.get(), 1, clamp_limit(limit));
        std::vector<int64_t> rowids;
        int rc;
        while ((rc = sqlite3_step(s.get())) == SQLITE_ROW)
            rowids.push_back(sqlite3_column_int64(s.get(), 0));
        if (rc != SQLITE_DONE) return db.fail(rc, "cannot load");
        if (rowids.empty()) return std::nullopt;
        const auto [lo, hi] = std::minmax_element(rowids.begin(), rowids.end());
        const int64_t first = *lo, last = *hi;
        const uint64_t span = static_cast<uint64_t>(last) - static_cast<uint64_t>(first) + 1;
        if (span > 4 * rowids.size() + 1024) {
            // Rowids spread far apart (many rows deleted): a table of ranks by rowid would be
            // large, so read in rank order.
            rowids = {};
            if (auto e =
                    db.prepare(std::string("SELECT ") + kStartColumns + " FROM entries" + order_by,
                               s, "cannot load"))
                return e;
            sqlite3_bind_int64(s.get(), 1, clamp_limit(limit));
            std::size_t rank = 0;
            return read_rows(s.get(), db, "cannot load",
                             [&](CacheRow&& r) { emit(std::move(r), rank++); });
        }
        constexpr uint32_t kUnranked = UINT32_MAX;
        std::vector<uint32_t> rank_of(span, kUnranked);
        for (std::size_t i = 0; i < rowids.size(); ++i)
            rank_of[static_cast<uint64_t>(rowids[i]) - static_cast<uint64_t>(first)] =
                static_cast<uint32_t>(i);
        rowids = {};
        if (auto e = db.prepare(std::string("SELECT ") + kStartColumns +
                                    ", rowid FROM entries WHERE rowid BETWEEN ? AND ?",
                                s, "cannot load"))
            return e;
        sqlite3_bind_int64(s.get(), 1, first);
        sqlite3_bind_int64(s.get(), 2, last);
        const int rowid_col = kWriter + 1;
        std::size_t skipped = 0;
        while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
            const uint32_t rank =
                rank_of[static_cast<uint64_t>(sqlite3_column_int64(s.get(), rowid_col)) -
                        static_cast<uint64_t>(first)];
            if (rank == kUnranked) continue;  // past `limit`
            if (auto r = read_row(s.get()))
                emit(std::move(*r), rank);
            else
                ++skipped;
        }
        if (rc != SQLITE_DONE) return db.fail(rc, "cannot load");
        if (skipped)
            log::warning("cache " + path_ + ": skipped " + std::to_string(skipped) +
                         " malformed row(s)");
        return std::nullopt;
    };
    std::optional<DbError> e;
    std::thread reader([&] {
        e = db.exec("BEGIN", "cannot load");
        if (!e) {
            try {
                e = read();
            } catch (const LoadCancelled&) {
                e = DbError{SQLITE_INTERRUPT, "cache " + path_ + ": load cancelled"};
            }
            // Ends the read transaction; on success a failure to end it is the error.
            if (auto end = db.exec(e ? "ROLLBACK" : "COMMIT", "cannot load"); end && !e) e = end;
        }
        handoff.finish();
    });
    try {
        for (std::vector<RowHandoff::Item> batch; handoff.take(batch);)
            for (auto& [row, rank] : batch)
                each(std::move(row), rank);
    } catch (...) {
        handoff.cancel();
        reader.join();
        throw;
    }
    reader.join();
    if (e) return failed(failure_, std::move(*e));
    failure_ = StoreFailure::None;
    return {};
}

Result<std::vector<CacheRow>> CacheStore::load(std::size_t limit) {
    std::vector<CacheRow> rows;
    if (auto st = load_each(limit, [&](CacheRow&& r) { rows.push_back(std::move(r)); }); !st)
        return st.error();
    return rows;
}

Result<std::vector<std::string>> CacheStore::most_used(std::size_t limit) {
    const Db db(db_.get(), path_);
    StmtPtr s;
    std::vector<std::string> domains;
    auto e = db.prepare(std::string("SELECT ") + kRowColumns +
                            " FROM entries WHERE hits > 0"
                            " ORDER BY hits DESC, last_used DESC, domain LIMIT ?",
                        s, "cannot read");
    if (!e) {
        sqlite3_bind_int64(s.get(), 1, clamp_limit(limit));
        e = read_rows(s.get(), db, "cannot read",
                      [&](CacheRow&& r) { domains.push_back(std::move(r.domain)); });
    }
    if (e) return failed(failure_, std::move(*e));
    failure_ = StoreFailure::None;
    return domains;
}

Result<std::optional<CacheRow>> CacheStore::get(const std::string& domain) {
    const Db db(db_.get(), path_);
    StmtPtr s;
    std::vector<CacheRow> rows;
    auto e = db.prepare(std::string("SELECT ") + kRowColumns + " FROM entries WHERE domain = ?", s,
                        "cannot read");
    if (!e) {
        bind_text(s.get(), 1, domain);
        e = read_rows(s.get(), db, "cannot read",
                      [&](CacheRow&& r) { rows.push_back(std::move(r)); });
    }
    if (e) return failed(failure_, std::move(*e));
    failure_ = StoreFailure::None;
    if (rows.empty()) return std::optional<CacheRow>();
    return std::optional<CacheRow>(std::move(rows.front()));
}

Status CacheStore::write(const std::vector<CacheRow>& rows, const std::vector<HitDelta>& hits) {
    if (rows.empty() && hits.empty()) {
        failure_ = StoreFailure::None;
        return {};
    }
    if (readonly_) {
        failure_ = StoreFailure::Other;
        return make_error("cache " + path_ + ": opened read-only");
    }
    for (const CacheRow& r : rows) {
        if (r.outcome != Outcome::Found && r.outcome != Outcome::NotFound) {
            failure_ = StoreFailure::Other;
            return make_error("cache " + path_ + ": " + log::sanitize(r.domain) + ": outcome " +
                              std::string(outcome_name(r.outcome)) + " is not cacheable");
        }
    }

    const Db db(db_.get(), path_);
    auto run = [&]() -> std::optional<DbError> {
        if (auto e = db.exec("BEGIN IMMEDIATE", "cannot start a write")) return e;
        if (!rows.empty()) {
            int64_t seq = 0;
            if (auto e = next_seq(db, path_, seq)) return e;
            StmtPtr s;
            if (auto e = db.prepare(
                    std::string("INSERT INTO entries(") + kRowColumns +
                        ") VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, "
                        "?15, ?16, ?17, ?18, ?19) ON CONFLICT(domain) DO UPDATE SET "
                        "outcome = ?2, policy = ?3, source = ?4, reason = ?5, fetched_at = ?6, "
                        "expires_at = ?7, stale_until = ?8, sts_decides = ?9, sts_id = ?10, "
                        "sts_body = ?11, sts_max_age = ?12, sts_fetched_at = ?13, "
                        "sts_expires_at = ?14, details = ?15, seq = ?18, writer = ?19",
                    s, "cannot write"))
                return e;
            for (const CacheRow& r : rows) {
                sqlite3_stmt* st = s.get();
                const bool no_sts = r.sts_id.empty();
                bind_text(st, 1, r.domain);
                bind_text(st, 2, outcome_name(r.outcome));
                bind_text_or_null(st, 3, r.policy, r.outcome != Outcome::Found);
                bind_text(st, 4, source_name(r.source));
                bind_text(st, 5, r.reason);
                sqlite3_bind_int64(st, 6, r.fetched_at);
                sqlite3_bind_int64(st, 7, r.expires_at);
                sqlite3_bind_int64(st, 8, r.stale_until);
                sqlite3_bind_int64(st, 9, r.sts_decides ? 1 : 0);
                bind_text_or_null(st, 10, r.sts_id, no_sts);
                bind_text_or_null(st, 11, r.sts_body, no_sts);
                bind_int_or_null(st, 12, r.sts_max_age, no_sts);
                bind_int_or_null(st, 13, r.sts_fetched_at, no_sts);
                bind_int_or_null(st, 14, r.sts_expires_at, no_sts);
                bind_text(st, 15, r.details);
                sqlite3_bind_int64(st, 16, r.hits);
                sqlite3_bind_int64(st, 17, r.last_used);
                sqlite3_bind_int64(st, 18, seq);
                bind_text(st, 19, writer_);
                if (auto e = db.step_done(st, "cannot write")) return e;
                sqlite3_reset(st);
            }
        }
        if (!hits.empty()) {
            StmtPtr s;
            // Not a change the other processes must reload, so seq and writer stay.
            if (auto e = db.prepare("UPDATE entries SET hits = hits + ?1, last_used = "
                                    "max(last_used, ?2) WHERE domain = ?3",
                                    s, "cannot count hits"))
                return e;
            for (const HitDelta& h : hits) {
                sqlite3_bind_int64(s.get(), 1, h.hits);
                sqlite3_bind_int64(s.get(), 2, h.last_used);
                bind_text(s.get(), 3, h.domain);
                if (auto e = db.step_done(s.get(), "cannot count hits")) return e;
                sqlite3_reset(s.get());
            }
        }
        return db.exec("COMMIT", "cannot commit");
    };
    if (auto e = run()) {
        if (!sqlite3_get_autocommit(db_.get())) db.exec("ROLLBACK", "rollback");
        return failed(failure_, std::move(*e));
    }
    failure_ = StoreFailure::None;
    return {};
}

Result<int64_t> CacheStore::purge(const std::string& domain) {
    if (readonly_) {
        failure_ = StoreFailure::Other;
        return make_error("cache " + path_ + ": opened read-only");
    }
    const Db db(db_.get(), path_);
    int64_t deleted = 0;
    auto run = [&]() -> std::optional<DbError> {
        if (auto e = db.exec("BEGIN IMMEDIATE", "cannot start a purge")) return e;
        int64_t seq = 0;
        if (auto e = next_seq(db, path_, seq)) return e;
        StmtPtr del;
        if (auto e = db.prepare(
                domain.empty() ? "DELETE FROM entries" : "DELETE FROM entries WHERE domain = ?",
                del, "cannot purge"))
            return e;
        if (!domain.empty()) bind_text(del.get(), 1, domain);
        if (auto e = db.step_done(del.get(), "cannot purge")) return e;
        deleted = sqlite3_changes64(db_.get());

        StmtPtr rec;
        if (auto e = db.prepare("INSERT INTO purges(seq, domain, writer) VALUES(?, ?, ?)", rec,
                                "cannot record the purge"))
            return e;
        sqlite3_bind_int64(rec.get(), 1, seq);
        bind_text(rec.get(), 2, domain);
        bind_text(rec.get(), 3, writer_);
        if (auto e = db.step_done(rec.get(), "cannot record the purge")) return e;

        const std::string trim =
            "DELETE FROM purges WHERE seq <= (SELECT seq FROM purges ORDER BY seq DESC LIMIT 1 "
            "OFFSET " +
            std::to_string(kPurgesKept) + ")";
        if (auto e = db.exec(trim.c_str(), "cannot trim the purges")) return e;
        return db.exec("COMMIT", "cannot commit");
    };
    if (auto e = run()) {
        if (!sqlite3_get_autocommit(db_.get())) db.exec("ROLLBACK", "rollback");
        return failed(failure_, std::move(*e));
    }
    failure_ = StoreFailure::None;
    return deleted;
}

Result<int64_t> CacheStore::delete_dead(int64_t now, std::size_t limit) {
    if (readonly_) {
        failure_ = StoreFailure::Other;
        return make_error("cache " + path_ + ": opened read-only");
    }
    const Db db(db_.get(), path_);
    StmtPtr s;
    // SQLite's DELETE ... ORDER BY ... LIMIT needs a compile-time option; a subquery does not.
    if (auto e = db.prepare(
            "DELETE FROM entries WHERE domain IN (SELECT domain FROM entries "
            "WHERE stale_until < ?1 AND expires_at < ?1 AND coalesce(sts_expires_at, 0) < ?1 "
            "ORDER BY stale_until "
            "LIMIT ?2)",
            s, "cannot delete dead rows"))
        return failed(failure_, std::move(*e));
    sqlite3_bind_int64(s.get(), 1, now);
    sqlite3_bind_int64(s.get(), 2, clamp_limit(limit));
    if (auto e = db.step_done(s.get(), "cannot delete dead rows"))
        return failed(failure_, std::move(*e));
    failure_ = StoreFailure::None;
    return static_cast<int64_t>(sqlite3_changes64(db_.get()));
}

Result<bool> CacheStore::changed() {
    const Db db(db_.get(), path_);
    int64_t version = 0;
    if (auto e = db.query_int("PRAGMA data_version", version, "cannot poll"))
        return failed(failure_, std::move(*e));
    failure_ = StoreFailure::None;
    const bool first = data_version_ < 0;
    const bool differs = version != data_version_;
    data_version_ = version;
    return first || differs;
}

// How to apply the result: the rows are what the file holds now, so each has a higher seq
// than any purge that removed an earlier version of it. Apply every purge first (drop the
// domain, or everything for ""), then upsert the rows. A purge also drops this process's own
// rows: right for those written before it, a mere reload for those written after (telling
// them apart would need each purge's seq). CacheChanges.seq is the file's seq, which also
// covers this process's own writes, so the next call does not scan them again.
Result<CacheChanges> CacheStore::changes_since(int64_t seq) {
    return changes_since(ChangeCursor{seq, {}, false}, SIZE_MAX);
}

Result<CacheChanges> CacheStore::changes_since(const ChangeCursor& from, std::size_t max_rows) {
    const int64_t seq = from.seq;
    const Db db(db_.get(), path_);
    CacheChanges out;
    out.seq = seq;
    auto run = [&]() -> std::optional<DbError> {
        // One read transaction: the rows, the purges and the seq come from one snapshot.
        if (auto e = db.exec("BEGIN", "cannot read changes")) return e;
        int64_t top = 0;
        if (auto e = db.query_int("SELECT value FROM meta WHERE key = 'seq'", top,
                                  "cannot read changes"))
            return e;
        out.seq = std::max<int64_t>(out.seq, top);

        StmtPtr s;
        // (seq, domain) order, straight from the entries_seq index.
        if (auto e = db.prepare(std::string("SELECT ") + kRowColumns +
                                    " FROM entries WHERE (seq > ?1 OR (?4 AND seq = ?1 AND "
                                    "domain > ?3)) AND writer != ?2 ORDER BY seq, domain LIMIT ?5",
                                s, "cannot read changes"))
            return e;
        sqlite3_bind_int64(s.get(), 1, seq);
        bind_text(s.get(), 2, writer_);
        bind_text(s.get(), 3, from.domain);
        sqlite3_bind_int(s.get(), 4, from.inside ? 1 : 0);
        const std::size_t limit = max_rows == SIZE_MAX ? max_rows : max_rows + 1;
        sqlite3_bind_int64(
            s.get(), 5,
            limit > static_cast<std::size_t>(INT64_MAX) ? -1 : static_cast<int64_t>(limit));
        if (auto e = read_rows(s.get(), db, "cannot read changes",
                               [&](CacheRow&& r) { out.rows.push_back(std::move(r)); }))
            return e;
        // One row past the limit says whether there is more; it is read again next time.
        int64_t purge_top = INT64_MAX;
        if (max_rows != SIZE_MAX && out.rows.size() > max_rows) {
            out.rows.resize(max_rows);
            out.more = true;
        }
        if (out.more) {
            out.next = ChangeCursor{out.rows.back().seq, out.rows.back().domain, true};
            out.seq = out.rows.back().seq;
            purge_top = out.rows.back().seq;
        } else {
            for (const CacheRow& r : out.rows)
                out.seq = std::max<int64_t>(out.seq, r.seq);
            out.next = ChangeCursor{out.seq, {}, false};
        }

        // Purges of a sequence number already passed (from.inside: its rows were being read)
        // were returned with the batch that reached it.
        if (auto e = db.prepare("SELECT seq, domain FROM purges WHERE seq > ?1 AND seq <= ?3 AND "
                                "writer != ?2 ORDER BY seq",
                                s, "cannot read changes"))
            return e;
        sqlite3_bind_int64(s.get(), 1, seq);
        bind_text(s.get(), 2, writer_);
        sqlite3_bind_int64(s.get(), 3, purge_top);
        int rc;
        while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
            if (sqlite3_column_type(s.get(), 1) != SQLITE_TEXT) continue;
            if (!out.more) out.seq = std::max<int64_t>(out.seq, sqlite3_column_int64(s.get(), 0));
            const auto* t = sqlite3_column_text(s.get(), 1);
            out.purged.emplace_back(reinterpret_cast<const char*>(t),
                                    static_cast<std::size_t>(sqlite3_column_bytes(s.get(), 1)));
        }
        if (rc != SQLITE_DONE) return db.fail(rc, "cannot read changes");
        s.reset();
        return db.exec("COMMIT", "cannot read changes");
    };
    if (auto e = run()) {
        if (!sqlite3_get_autocommit(db_.get())) db.exec("ROLLBACK", "rollback");
        return failed(failure_, std::move(*e));
    }
    failure_ = StoreFailure::None;
    return out;
}

Result<int64_t> CacheStore::last_seq() {
    const Db db(db_.get(), path_);
    int64_t seq = 0;
    if (auto e = db.query_int("SELECT value FROM meta WHERE key = 'seq'", seq,
                              "cannot read the sequence number"))
        return failed(failure_, std::move(*e));
    failure_ = StoreFailure::None;
    return seq;
}

std::string iso_time(int64_t unix_seconds) {
    if (unix_seconds == 0) return "";
    const auto t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    if (!::gmtime_r(&t, &tm)) return "";
    char buf[32];
    const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return std::string(buf, n);
}

}  // namespace tlspolicy
