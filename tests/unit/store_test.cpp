// CacheStore (src/cache/store.h) against real SQLite files in a private temporary directory:
// round trips, the multi-writer protocol (seq, writer, purges, data_version), housekeeping,
// the administrators' view, and every way a file can be unusable (garbage, truncated, newer
// schema, foreign database, missing, read-only, locked).
#include "cache/store.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "got_want.h"
#include "temp_dir.h"

using namespace tlspolicy;

// shown() for this file's types, where testutil::got_want() finds them. Static: another test
// file may show the same types its own way.
namespace tlspolicy {
static std::string shown(StoreFailure f) {
    switch (f) {
        case StoreFailure::None:
            return "None";
        case StoreFailure::Busy:
            return "Busy";
        case StoreFailure::Full:
            return "Full";
        case StoreFailure::Corrupt:
            return "Corrupt";
        case StoreFailure::Other:
            return "Other";
    }
    return "?";
}
static std::string shown(const CacheRow& r) {
    auto body = r.sts_body.size() > 40 ? r.sts_body.substr(0, 40) + "...(" +
                                             std::to_string(r.sts_body.size()) + " bytes)"
                                       : r.sts_body;
    return "{" + r.domain + " " + std::string(outcome_name(r.outcome)) + " policy=\"" + r.policy +
           "\" " + std::string(source_name(r.source)) + " reason=\"" + r.reason +
           "\" fetched=" + std::to_string(r.fetched_at) +
           " expires=" + std::to_string(r.expires_at) + " stale=" + std::to_string(r.stale_until) +
           " sts_decides=" + (r.sts_decides ? "1" : "0") + " sts_id=\"" + r.sts_id +
           "\" sts_body=\"" + body + "\" sts_max_age=" + std::to_string(r.sts_max_age) +
           " sts_fetched=" + std::to_string(r.sts_fetched_at) +
           " sts_expires=" + std::to_string(r.sts_expires_at) + " details=" + r.details +
           " hits=" + std::to_string(r.hits) + " last_used=" + std::to_string(r.last_used) +
           " seq=" + std::to_string(r.seq) + " writer=" + r.writer + "}";
}
}  // namespace tlspolicy

namespace {

using testutil::shown;
using testutil::TempDir;

bool exists(const std::string& path) {
    struct stat st;
    return ::lstat(path.c_str(), &st) == 0;
}

std::string read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
}

// A second, raw connection: what another process or an administrator with sqlite3 does.
class RawDb {
  public:
    explicit RawDb(const std::string& path,
                   int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) {
        sqlite3* db = nullptr;
        const int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
        db_.reset(db);
        REQUIRE(rc == SQLITE_OK);
    }
    // Runs SQL that must succeed.
    void exec(const std::string& sql) {
        char* err = nullptr;
        const int rc = sqlite3_exec(db_.get(), sql.c_str(), nullptr, nullptr, &err);
        INFO(sql << ": " << (err ? err : ""));
        sqlite3_free(err);
        REQUIRE(rc == SQLITE_OK);
    }
    // Every row of a query as text ("NULL" for NULL), and the column names.
    std::vector<std::vector<std::string>> rows(const std::string& sql,
                                               std::vector<std::string>* columns = nullptr) {
        sqlite3_stmt* raw = nullptr;
        INFO(sql);
        REQUIRE(sqlite3_prepare_v2(db_.get(), sql.c_str(), -1, &raw, nullptr) == SQLITE_OK);
        std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> s(raw, &sqlite3_finalize);
        const int n = sqlite3_column_count(raw);
        if (columns) {
            columns->clear();
            for (int i = 0; i < n; ++i)
                columns->push_back(sqlite3_column_name(raw, i));
        }
        std::vector<std::vector<std::string>> out;
        int rc;
        while ((rc = sqlite3_step(raw)) == SQLITE_ROW) {
            std::vector<std::string> row;
            for (int i = 0; i < n; ++i) {
                const auto* t = sqlite3_column_text(raw, i);
                row.push_back(t ? reinterpret_cast<const char*>(t) : "NULL");
            }
            out.push_back(std::move(row));
        }
        REQUIRE(rc == SQLITE_DONE);
        return out;
    }
    std::string value(const std::string& sql) {
        auto r = rows(sql);
        REQUIRE(r.size() == 1);
        return r[0][0];
    }
    sqlite3* get() { return db_.get(); }

  private:
    SqlitePtr db_;
};

std::unique_ptr<CacheStore> open_store(const std::string& path, const std::string& writer,
                                       CacheStore::OpenReport* report = nullptr) {
    auto s = CacheStore::open(path, writer, report);
    INFO(path << ": " << (s ? std::string() : s.error().message));
    REQUIRE(s.ok());
    return std::move(s).value();
}

std::unique_ptr<CacheStore> open_readonly(const std::string& path) {
    auto s = CacheStore::open_readonly(path);
    INFO(path << ": " << (s ? std::string() : s.error().message));
    REQUIRE(s.ok());
    return std::move(s).value();
}

void write_ok(CacheStore& store, const std::vector<CacheRow>& rows,
              const std::vector<HitDelta>& hits = {}) {
    auto st = store.write(rows, hits);
    INFO((st ? std::string() : st.error().message));
    REQUIRE(st.ok());
}

std::optional<CacheRow> get_ok(CacheStore& store, const std::string& domain) {
    auto r = store.get(domain);
    INFO(domain << ": " << (r ? std::string() : r.error().message));
    REQUIRE(r.ok());
    return *r;
}

std::vector<CacheRow> load_ok(CacheStore& store, std::size_t limit = 1000000) {
    auto r = store.load(limit);
    INFO((r ? std::string() : r.error().message));
    REQUIRE(r.ok());
    return *r;
}

CacheChanges changes_ok(CacheStore& store, int64_t seq) {
    auto r = store.changes_since(seq);
    INFO((r ? std::string() : r.error().message));
    REQUIRE(r.ok());
    return *r;
}

bool changed_ok(CacheStore& store) {
    auto r = store.changed();
    INFO((r ? std::string() : r.error().message));
    REQUIRE(r.ok());
    return *r;
}

int64_t last_seq_ok(CacheStore& store) {
    auto r = store.last_seq();
    REQUIRE(r.ok());
    return *r;
}

std::vector<std::string> domains(const std::vector<CacheRow>& rows) {
    std::vector<std::string> out;
    for (const CacheRow& r : rows)
        out.push_back(r.domain);
    return out;
}

// A plain found row; tests change what they look at.
CacheRow row(const std::string& domain, int64_t fetched_at = 1763892000) {
    CacheRow r;
    r.domain = domain;
    r.outcome = Outcome::Found;
    r.policy = "dane-only";
    r.source = Source::Dane;
    r.reason = "DANE TLSA records";
    r.fetched_at = fetched_at;
    r.expires_at = fetched_at + 3600;
    r.stale_until = fetched_at + 86400;
    r.details = R"({"tlsa":2})";
    return r;
}

CacheRow sts_row(const std::string& domain, std::size_t body_size = 200) {
    CacheRow r = row(domain);
    r.policy = "secure match=mx.example.com";
    r.source = Source::MtaSts;
    r.reason = "MTA-STS enforce";
    r.sts_decides = true;
    r.sts_id = "20251123T100000";
    r.sts_body = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 604800\n";
    while (r.sts_body.size() < body_size)
        r.sts_body += "# padding line to make the body long enough for this test case\n";
    r.sts_max_age = 604800;
    r.sts_fetched_at = r.fetched_at - 60;
    r.sts_expires_at = r.sts_fetched_at + 604800;
    return r;
}

// A closed cache file at `path` holding 2000 MTA-STS rows (d0.example ...): big enough that
// damage to some of its pages can be placed away from the header. Closing the last connection
// checkpoints the WAL into the file; no -wal or -shm is left.
void write_big_file(const std::string& path) {
    {
        auto store = open_store(path, "w");
        std::vector<CacheRow> rows;
        for (int i = 0; i < 2000; ++i)
            rows.push_back(sts_row("d" + std::to_string(i) + ".example", 1000));
        write_ok(*store, rows);
    }
    std::filesystem::remove(path + "-wal");
    std::filesystem::remove(path + "-shm");
}

// Overwrites a page in the middle of a file whose WAL was folded in (the header and the size
// stay intact); returns the new bytes.
std::string damage_middle_page(const std::string& path) {
    std::string bytes = read_bytes(path);
    const std::size_t page = 4096, middle = bytes.size() / page / 2 * page;
    for (std::size_t i = middle; i < middle + page; ++i)
        bytes[i] = static_cast<char>(0xA5);
    write_bytes(path, bytes);
    return bytes;
}

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

std::size_t count_prefixed(const std::vector<std::string>& names, const std::string& prefix) {
    std::size_t n = 0;
    for (const auto& name : names)
        if (name.rfind(prefix, 0) == 0) ++n;
    return n;
}

}  // namespace

TEST_CASE("store: a new file is created with mode 0640, WAL and the current schema version") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    CacheStore::OpenReport report;
    auto store = open_store(path, "w1", &report);
    CHECK_EQ_GW("report.created", report.created, true);
    CHECK_EQ_GW("report.moved_aside", report.moved_aside, std::string());

    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    const mode_t mask = ::umask(0);
    ::umask(mask);
    CHECK_EQ_GW("mode", static_cast<int>(st.st_mode & 0777), static_cast<int>(0640 & ~mask));

    RawDb raw(path);
    CHECK_EQ_GW("journal_mode", raw.value("PRAGMA journal_mode"), std::string("wal"));
    CHECK_EQ_GW("user_version", raw.value("PRAGMA user_version"),
                std::to_string(kCacheSchemaVersion));
    CHECK_EQ_GW("meta seq", raw.value("SELECT value FROM meta WHERE key = 'seq'"),
                std::string("0"));
    CHECK_EQ_GW("last_seq", last_seq_ok(*store), int64_t{0});
}

TEST_CASE("store: rows round-trip with every field") {
    TempDir dir;
    auto store = open_store(dir.file("cache.sqlite"), "tlspolicyd:1");

    // Distinct times, so load()'s order is fully determined.
    CacheRow not_found = row("nf.example", 1763892003);
    not_found.outcome = Outcome::NotFound;
    not_found.policy = "";
    not_found.source = Source::None;
    not_found.reason = "no DANE, no MTA-STS";
    not_found.details = "{}";

    CacheRow override_row = row("ov.example", 1763892002);
    override_row.source = Source::Override;
    override_row.policy = "encrypt";

    CacheRow long_body = sts_row("long.example", 200000);
    long_body.hits = 7;
    long_body.last_used = 1763892500;

    CacheRow dane_sts = sts_row("both.example");
    dane_sts.source = Source::Dane;
    dane_sts.sts_decides = false;
    dane_sts.reason = "DANE wins";
    dane_sts.fetched_at = 1763892001;

    CacheRow negative_times = row("old.example", 5);
    negative_times.expires_at = -1;

    const std::vector<CacheRow> rows = {not_found, override_row, long_body, dane_sts,
                                        negative_times};
    write_ok(*store, rows);

    for (CacheRow want : rows) {
        want.seq = 1;
        want.writer = "tlspolicyd:1";
        auto got = get_ok(*store, want.domain);
        REQUIRE(got.has_value());
        CHECK_EQ_GW(want.domain.c_str(), *got, want);
    }
    CHECK_FALSE(get_ok(*store, "missing.example").has_value());

    // Stored as the schema says: NULL policy when not found, NULL sts_* when no policy.
    RawDb raw(store->path());
    CHECK_EQ_GW("not-found policy",
                raw.value("SELECT ifnull(policy, 'NULL') FROM entries WHERE domain = 'nf.example'"),
                std::string("NULL"));
    CHECK_EQ_GW("no-policy sts columns",
                raw.value("SELECT count(*) FROM entries WHERE domain = 'ov.example' AND sts_id IS "
                          "NULL AND sts_body IS NULL AND sts_max_age IS NULL AND sts_fetched_at "
                          "IS NULL AND sts_expires_at IS NULL"),
                std::string("1"));
    CHECK_EQ_GW("outcome text",
                raw.value("SELECT group_concat(outcome || '/' || source, ',') FROM (SELECT * "
                          "FROM entries ORDER BY domain)"),
                std::string("found/dane,found/mta-sts,not-found/none,found/dane,found/override"));

    // load(): most recently used first, then most recently fetched.
    const auto loaded = load_ok(*store);
    CHECK_EQ_GW("load order", domains(loaded),
                (std::vector<std::string>{"long.example", "nf.example", "ov.example",
                                          "both.example", "old.example"}));
    CHECK_EQ_GW("load limit", domains(load_ok(*store, 2)),
                (std::vector<std::string>{"long.example", "nf.example"}));
    CHECK_EQ_GW("load 0", load_ok(*store, 0).size(), std::size_t{0});
    CHECK_EQ_GW("last_seq", last_seq_ok(*store), int64_t{1});
    CHECK_EQ_GW("failure", store->failure(), StoreFailure::None);
}

TEST_CASE("store: an empty write is a no-op and an uncacheable outcome is refused") {
    TempDir dir;
    auto store = open_store(dir.file("cache.sqlite"), "w");
    write_ok(*store, {});
    CHECK_EQ_GW("last_seq after empty write", last_seq_ok(*store), int64_t{0});

    CacheRow temp = row("t.example");
    temp.outcome = Outcome::Temp;
    auto st = store->write({row("ok.example"), temp});
    CHECK_FALSE(st.ok());
    if (!st.ok()) {
        INFO(st.error().message);
        CHECK(contains(st.error().message, "not cacheable"));
        CHECK(testutil::printable_ascii(st.error().message));
    }
    CHECK_EQ_GW("failure", store->failure(), StoreFailure::Other);
    CHECK_FALSE(get_ok(*store, "ok.example").has_value());
    CHECK_EQ_GW("failure after success", store->failure(), StoreFailure::None);
}

TEST_CASE("store: an upsert keeps hits and last_used; hit deltas add up without a new seq") {
    TempDir dir;
    auto store = open_store(dir.file("cache.sqlite"), "w");
    CacheRow r = row("a.example");
    r.hits = 5;
    r.last_used = 100;
    write_ok(*store, {r});  // a fresh insert takes the row's hits and last_used

    CacheRow again = row("a.example", 1763895600);
    again.reason = "refreshed";
    write_ok(*store, {again});
    auto got = get_ok(*store, "a.example");
    REQUIRE(got.has_value());
    CHECK_EQ_GW("reason", got->reason, std::string("refreshed"));
    CHECK_EQ_GW("fetched_at", got->fetched_at, int64_t{1763895600});
    CHECK_EQ_GW("hits kept", got->hits, int64_t{5});
    CHECK_EQ_GW("last_used kept", got->last_used, int64_t{100});
    CHECK_EQ_GW("seq", got->seq, int64_t{2});

    struct Case {
        const char* name;
        std::vector<HitDelta> deltas;
        int64_t want_hits, want_last_used;
    };
    const std::vector<Case> cases = {
        {"add", {{"a.example", 3, 200}}, 8, 200},
        {"older last_used keeps the newer", {{"a.example", 1, 50}}, 9, 200},
        {"two deltas", {{"a.example", 1, 300}, {"a.example", 2, 250}}, 12, 300},
        {"missing domain dropped", {{"b.example", 4, 400}}, 12, 300},
    };
    for (const Case& c : cases) {
        INFO(c.name);
        write_ok(*store, {}, c.deltas);
        got = get_ok(*store, "a.example");
        REQUIRE(got.has_value());
        CHECK_EQ_GW("hits", got->hits, c.want_hits);
        CHECK_EQ_GW("last_used", got->last_used, c.want_last_used);
        CHECK_EQ_GW("seq unchanged", got->seq, int64_t{2});
        CHECK_EQ_GW("last_seq unchanged", last_seq_ok(*store), int64_t{2});
    }
    CHECK_FALSE(get_ok(*store, "b.example").has_value());

    // Rows and deltas in one write: the delta applies to the row just written.
    CacheRow b = row("b.example");
    write_ok(*store, {b}, {{"b.example", 2, 500}});
    got = get_ok(*store, "b.example");
    REQUIRE(got.has_value());
    CHECK_EQ_GW("hits of a row written with its delta", got->hits, int64_t{2});
}

TEST_CASE("store: two writers see each other's changes but not their own") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    auto a = open_store(path, "a");
    auto b = open_store(path, "b");

    CHECK_EQ_GW("a first changed()", changed_ok(*a), true);
    CHECK_EQ_GW("b first changed()", changed_ok(*b), true);
    CHECK_EQ_GW("a changed() nothing new", changed_ok(*a), false);

    write_ok(*a, {row("x.example")});  // seq 1
    CHECK_EQ_GW("a after its own write", changed_ok(*a), false);
    CHECK_EQ_GW("b after a's write", changed_ok(*b), true);
    CHECK_EQ_GW("b again", changed_ok(*b), false);

    auto cb = changes_ok(*b, 0);
    CHECK_EQ_GW("b sees", domains(cb.rows), std::vector<std::string>{"x.example"});
    REQUIRE(cb.rows.size() == 1);
    CHECK_EQ_GW("writer", cb.rows[0].writer, std::string("a"));
    CHECK_EQ_GW("seq of the row", cb.rows[0].seq, int64_t{1});
    CHECK_EQ_GW("b seq", cb.seq, int64_t{1});
    auto ca = changes_ok(*a, 0);
    CHECK_EQ_GW("a sees none of its own", ca.rows.size(), std::size_t{0});
    CHECK_EQ_GW("a seq covers its own write", ca.seq, int64_t{1});

    write_ok(*b, {row("y.example"), row("z.example")});  // seq 2
    CHECK_EQ_GW("a after b's write", changed_ok(*a), true);
    CHECK_EQ_GW("b after its own write", changed_ok(*b), false);
    ca = changes_ok(*a, ca.seq);
    CHECK_EQ_GW("a sees", domains(ca.rows), (std::vector<std::string>{"y.example", "z.example"}));
    CHECK_EQ_GW("a seq", ca.seq, int64_t{2});
    CHECK_EQ_GW("b nothing new", changes_ok(*b, cb.seq).rows.size(), std::size_t{0});

    // Hit deltas are commits (changed() fires) but not changes to reload.
    write_ok(*a, {}, {{"y.example", 1, 10}});
    CHECK_EQ_GW("b after a's hits", changed_ok(*b), true);
    cb = changes_ok(*b, cb.seq);
    CHECK_EQ_GW("b after hits: rows", cb.rows.size(), std::size_t{0});
    CHECK_EQ_GW("b after hits: seq", cb.seq, int64_t{2});

    // a purges one of b's rows, then purges and rewrites x: b learns both, and the rewritten
    // row comes with a higher seq than the purge (apply purges first, then rows).
    auto n = a->purge("y.example");  // seq 3
    REQUIRE(n.ok());
    CHECK_EQ_GW("purged rows", *n, int64_t{1});
    REQUIRE(a->purge("x.example").ok());  // seq 4
    CacheRow x2 = row("x.example");
    x2.reason = "after the purge";
    write_ok(*a, {x2});  // seq 5
    CHECK_EQ_GW("b after purges", changed_ok(*b), true);
    cb = changes_ok(*b, cb.seq);
    CHECK_EQ_GW("b purged", cb.purged, (std::vector<std::string>{"y.example", "x.example"}));
    CHECK_EQ_GW("b rows", domains(cb.rows), std::vector<std::string>{"x.example"});
    REQUIRE(cb.rows.size() == 1);
    CHECK_EQ_GW("rewritten row seq", cb.rows[0].seq, int64_t{5});
    CHECK_EQ_GW("rewritten row reason", cb.rows[0].reason, std::string("after the purge"));
    CHECK_EQ_GW("b seq after purges", cb.seq, int64_t{5});
    ca = changes_ok(*a, 2);
    CHECK_EQ_GW("a sees none of its own purges", ca.purged.size(), std::size_t{0});
    CHECK_EQ_GW("a sees none of its own rows", ca.rows.size(), std::size_t{0});

    // b purges everything: a gets "".
    auto all = b->purge("");  // seq 6
    REQUIRE(all.ok());
    CHECK_EQ_GW("purge all count", *all, int64_t{2});  // x.example, z.example
    ca = changes_ok(*a, 5);
    CHECK_EQ_GW("a purged", ca.purged, std::vector<std::string>{""});
    CHECK_EQ_GW("a seq after purge all", ca.seq, int64_t{6});
    CHECK_EQ_GW("last_seq", last_seq_ok(*a), int64_t{6});
}

TEST_CASE("store: changes are read in bounded batches from a (seq, domain) cursor") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    auto a = open_store(path, "a");
    auto b = open_store(path, "b");
    // seq 1: seven rows in one transaction; seq 2: a purge; seq 3: three rows, one of them
    // a rewrite of a purged domain; seq 4: b's own row, never shown to b.
    std::vector<CacheRow> first;
    for (const char* d : {"g.example", "b.example", "e.example", "a.example", "f.example",
                          "c.example", "d.example"})
        first.push_back(row(d));
    write_ok(*a, first);
    REQUIRE(a->purge("c.example").ok());
    write_ok(*a, {row("c.example"), row("z.example"), row("y.example")});
    write_ok(*b, {row("own.example")});

    const auto all = changes_ok(*b, 0);
    CHECK_EQ_GW(
        "unbatched rows", domains(all.rows),
        (std::vector<std::string>{"a.example", "b.example", "d.example", "e.example", "f.example",
                                  "g.example", "c.example", "y.example", "z.example"}));
    CHECK_EQ_GW("unbatched purges", all.purged, std::vector<std::string>{"c.example"});
    CHECK_EQ_GW("unbatched: nothing more", all.more, false);
    CHECK_EQ_GW("unbatched seq", all.seq, int64_t{4});

    for (std::size_t limit : {1u, 2u, 3u, 4u, 6u, 7u, 9u, 10u}) {
        CAPTURE(limit);
        ChangeCursor cursor;
        std::vector<std::string> rows, purged;
        int calls = 0;
        for (;; ++calls) {
            REQUIRE(calls < 20);
            auto r = b->changes_since(cursor, limit);
            REQUIRE(r.ok());
            CHECK(r->rows.size() <= limit);
            // A purge of seq 2 arrives with or after the batch that finished seq 1's rows.
            if (!r->purged.empty()) CHECK(rows.size() + r->rows.size() >= 6);
            for (const auto& x : r->rows)
                rows.push_back(x.domain);
            for (const auto& p : r->purged)
                purged.push_back(p);
            cursor = r->next;
            if (!r->more) {
                CHECK_EQ_GW("final seq", r->seq, int64_t{4});
                break;
            }
        }
        CHECK_EQ_GW("rows", rows, domains(all.rows));
        CHECK_EQ_GW("purges, once", purged, all.purged);
        CHECK_EQ_GW("nothing after the end", b->changes_since(cursor, limit)->rows.size(),
                    std::size_t{0});
    }
}

TEST_CASE("store: a version 1 file is migrated: the seq index covers the domain") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    {
        auto store = open_store(path, "old");
        write_ok(*store, {row("a.example"), row("b.example")});
    }
    {
        RawDb raw(path);  // what version 1 looked like
        raw.exec(
            "DROP INDEX entries_seq; CREATE INDEX entries_seq ON entries(seq); "
            "PRAGMA user_version = 1");
    }
    CacheStore::OpenReport report;
    auto store = open_store(path, "new", &report);
    CHECK_EQ_GW("created", report.created, false);
    RawDb raw(path);
    CHECK_EQ_GW("user_version", raw.value("PRAGMA user_version"),
                std::to_string(kCacheSchemaVersion));
    const auto columns = raw.rows("SELECT name FROM pragma_index_info('entries_seq')");
    std::vector<std::string> names;
    for (const auto& c : columns)
        names.push_back(c.at(0));
    CHECK_EQ_GW("index columns", names, (std::vector<std::string>{"seq", "domain"}));
    CHECK_EQ_GW("rows kept", domains(changes_ok(*store, 0).rows),
                (std::vector<std::string>{"a.example", "b.example"}));
}

TEST_CASE("store: purge one domain and purge everything") {
    TempDir dir;
    auto store = open_store(dir.file("cache.sqlite"), "w");
    write_ok(*store, {row("a.example"), row("b.example"), row("c.example")});

    struct Case {
        std::string domain;
        int64_t want_deleted;
        std::vector<std::string> want_left;
    };
    const std::vector<Case> cases = {
        {"b.example", 1, {"a.example", "c.example"}},
        {"b.example", 0, {"a.example", "c.example"}},
        {"nope.example", 0, {"a.example", "c.example"}},
        {"", 2, {}},
    };
    int64_t want_seq = 1;
    for (const Case& c : cases) {
        INFO("purge \"" << c.domain << "\"");
        auto n = store->purge(c.domain);
        REQUIRE(n.ok());
        CHECK_EQ_GW("deleted", *n, c.want_deleted);
        auto left = domains(load_ok(*store));
        std::sort(left.begin(), left.end());
        CHECK_EQ_GW("left", left, c.want_left);
        CHECK_EQ_GW("last_seq", last_seq_ok(*store), ++want_seq);
    }
    RawDb raw(store->path());
    CHECK_EQ_GW("purges table",
                raw.value("SELECT group_concat(seq || ':' || domain || ':' || writer, ',') FROM "
                          "(SELECT * FROM purges ORDER BY seq)"),
                std::string("2:b.example:w,3:b.example:w,4:nope.example:w,5::w"));
}

TEST_CASE("store: the purges table keeps the 1000 most recent purges") {
    TempDir dir;
    auto store = open_store(dir.file("cache.sqlite"), "w");
    for (int i = 0; i < 1005; ++i)
        REQUIRE(store->purge("d" + std::to_string(i) + ".example").ok());
    RawDb raw(store->path());
    CHECK_EQ_GW("rows", raw.value("SELECT count(*) FROM purges"), std::string("1000"));
    CHECK_EQ_GW("oldest kept", raw.value("SELECT min(seq) FROM purges"), std::string("6"));
    CHECK_EQ_GW("newest", raw.value("SELECT max(seq) FROM purges"), std::string("1005"));
}

TEST_CASE("store: delete_dead deletes the longest-dead rows first, up to the limit") {
    // now = 1000; dead = stale_until < now and expires_at < now.
    struct Dead {
        const char* domain;
        int64_t expires_at, stale_until;
    };
    const std::vector<Dead> rows = {
        {"d900.example", 800, 900},     // dead
        {"d500.example", 400, 500},     // dead, the longest
        {"d999.example", 100, 999},     // dead
        {"at-now.example", 100, 1000},  // stale_until == now: alive
        {"alive.example", 500, 2000},   // alive
        {"fresh.example", 1500, 800},   // not expired: alive whatever stale_until says
    };
    struct Case {
        std::size_t limit;
        int64_t want_deleted;
        std::vector<std::string> want_left;
    };
    const std::vector<Case> cases = {
        {0,
         0,
         {"alive.example", "at-now.example", "d500.example", "d900.example", "d999.example",
          "fresh.example"}},
        {1,
         1,
         {"alive.example", "at-now.example", "d900.example", "d999.example", "fresh.example"}},
        {2, 2, {"alive.example", "at-now.example", "d999.example", "fresh.example"}},
        {100, 3, {"alive.example", "at-now.example", "fresh.example"}},
    };
    for (const Case& c : cases) {
        INFO("limit " << c.limit);
        TempDir dir;
        auto store = open_store(dir.file("cache.sqlite"), "w");
        std::vector<CacheRow> in;
        for (const Dead& d : rows) {
            CacheRow r = row(d.domain, 10);
            r.expires_at = d.expires_at;
            r.stale_until = d.stale_until;
            in.push_back(r);
        }
        write_ok(*store, in);
        const int64_t seq = last_seq_ok(*store);
        auto n = store->delete_dead(1000, c.limit);
        REQUIRE(n.ok());
        CHECK_EQ_GW("deleted", *n, c.want_deleted);
        auto left = domains(load_ok(*store));
        std::sort(left.begin(), left.end());
        CHECK_EQ_GW("left", left, c.want_left);
        CHECK_EQ_GW("not a purge: seq", last_seq_ok(*store), seq);
    }
}

TEST_CASE("store: the policies view shows ISO 8601 UTC times") {
    TempDir dir;
    auto store = open_store(dir.file("cache.sqlite"), "w");
    CacheRow s = sts_row("sts.example");  // fetched 2025-11-23T10:00:00Z
    s.hits = 3;
    s.last_used = 1763892061;
    CacheRow nf = row("nf.example", 1763892000);
    nf.outcome = Outcome::NotFound;
    nf.policy = "";
    nf.source = Source::None;
    nf.reason = "nothing";
    nf.details = "{}";
    write_ok(*store, {s, nf});

    RawDb raw(store->path(), SQLITE_OPEN_READONLY);
    std::vector<std::string> columns;
    const auto got = raw.rows("SELECT * FROM policies ORDER BY domain", &columns);
    CHECK_EQ_GW(
        "columns", columns,
        (std::vector<std::string>{"domain", "policy", "source", "fetched_at", "expires_at",
                                  "stale_until", "outcome", "reason", "sts_id", "sts_max_age",
                                  "sts_expires_at", "hits", "last_used", "details"}));
    const std::vector<std::vector<std::string>> want = {
        {"nf.example", "NULL", "none", "2025-11-23T10:00:00Z", "2025-11-23T11:00:00Z",
         "2025-11-24T10:00:00Z", "not-found", "nothing", "NULL", "NULL", "NULL", "0", "NULL", "{}"},
        {"sts.example", "secure match=mx.example.com", "mta-sts", "2025-11-23T10:00:00Z",
         "2025-11-23T11:00:00Z", "2025-11-24T10:00:00Z", "found", "MTA-STS enforce",
         "20251123T100000", "604800", "2025-11-30T09:59:00Z", "3", "2025-11-23T10:01:01Z",
         R"({"tlsa":2})"},
    };
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i) {
        INFO("row " << i);
        for (std::size_t j = 0; j < columns.size(); ++j)
            CHECK_EQ_GW(columns[j].c_str(), got[i][j], want[i][j]);
    }
}

TEST_CASE("store: iso_time") {
    struct Case {
        int64_t in;
        std::string want;
    };
    const std::vector<Case> cases = {
        {0, ""},
        {1, "1970-01-01T00:00:01Z"},
        {1763892000, "2025-11-23T10:00:00Z"},
        {1763892061, "2025-11-23T10:01:01Z"},
        {4102444800, "2100-01-01T00:00:00Z"},
    };
    for (const Case& c : cases) {
        INFO(c.in);
        CHECK_EQ_GW("iso_time", iso_time(c.in), c.want);
    }
}

TEST_CASE("store: a file of garbage is moved aside and a fresh cache is created") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    std::string garbage;
    for (int i = 0; i < 300; ++i)
        garbage += "not a database " + std::to_string(i) + "\n";
    write_bytes(path, garbage);

    const auto before = std::time(nullptr);
    CacheStore::OpenReport report;
    auto store = open_store(path, "w", &report);
    const auto after = std::time(nullptr);

    CHECK_EQ_GW("created", report.created, true);
    INFO("moved_aside " << report.moved_aside << ", why " << report.why);
    CHECK_FALSE(report.why.empty());
    CHECK(testutil::printable_ascii(report.why));
    const std::string prefix = path + ".corrupt-";
    REQUIRE(report.moved_aside.rfind(prefix, 0) == 0);
    const int64_t stamp = std::atoll(report.moved_aside.substr(prefix.size()).c_str());
    CHECK(stamp >= before);
    CHECK(stamp <= after);
    CHECK_EQ_GW("moved-aside bytes", read_bytes(report.moved_aside), garbage);

    write_ok(*store, {row("a.example")});
    CHECK(get_ok(*store, "a.example").has_value());
    CHECK_EQ_GW("failure", store->failure(), StoreFailure::None);
}

TEST_CASE("store: a truncated database is detected at open, never crashes") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    write_big_file(path);
    REQUIRE(::truncate(path.c_str(), std::filesystem::file_size(path) / 2) == 0);
    std::filesystem::remove(path + "-wal");
    std::filesystem::remove(path + "-shm");
    const std::string half = read_bytes(path);

    // The header's page count no longer matches the file: SQLite reports SQLITE_CORRUPT on
    // the first read, so open() (not load()) finds it and moves the file aside.
    CacheStore::OpenReport report;
    auto store = open_store(path, "w", &report);
    INFO("why " << report.why);
    CHECK_FALSE(report.moved_aside.empty());
    CHECK_EQ_GW("moved-aside bytes", read_bytes(report.moved_aside), half);
    CHECK_EQ_GW("rows in the fresh file", load_ok(*store).size(), std::size_t{0});

    // Read-only opening never moves anything; the header check fails it at once.
    std::filesystem::copy_file(report.moved_aside, dir.file("copy.sqlite"));
    auto ro = CacheStore::open_readonly(dir.file("copy.sqlite"));
    REQUIRE_FALSE(ro.ok());
    INFO(ro.error().message);
    CHECK(contains(ro.error().message, "malformed"));
    CHECK_EQ_GW("copy bytes", read_bytes(dir.file("copy.sqlite")) == half, true);
    CHECK_EQ_GW("corrupt copies", count_prefixed(dir.names(), "copy.sqlite.corrupt-"),
                std::size_t{0});
}

TEST_CASE("store: damage past the pages a cheap probe reads is caught at open") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    write_big_file(path);
    const std::string bytes = damage_middle_page(path);
    const std::string copy = dir.file("copy.sqlite");
    write_bytes(copy, bytes);

    // open_readonly() has no probe: the damage shows when a read reaches it, as Corrupt.
    {
        auto ro = open_readonly(copy);
        auto rows = ro->load(10000);
        REQUIRE_FALSE(rows.ok());
        INFO(rows.error().message);
        CHECK_EQ_GW("read-only load failure", ro->failure(), StoreFailure::Corrupt);
        CHECK_EQ_GW("copy bytes", read_bytes(copy) == bytes, true);
    }

    CacheStore::OpenReport report;
    auto store = open_store(path, "w", &report);
    INFO("why " << report.why);
    CHECK_FALSE(report.moved_aside.empty());
    CHECK_EQ_GW("rows in the fresh file", load_ok(*store).size(), std::size_t{0});
}

TEST_CASE("store: a deferred probe: open() leaves it to probe(), which never moves anything") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    write_big_file(path);
    CHECK_EQ_GW("probe of an intact file", CacheStore::probe(path).ok(), true);
    const std::string bytes = damage_middle_page(path);

    CacheStore::OpenReport report;
    auto store = CacheStore::open(path, "w", &report, CacheStore::Probe::Deferred);
    REQUIRE(store.ok());
    CHECK(report.moved_aside.empty());
    auto probed = CacheStore::probe(path);
    REQUIRE_FALSE(probed.ok());
    INFO(probed.error().message);
    CHECK(contains(probed.error().message, "cache " + path + ": "));
    CHECK_EQ_GW("corrupt copies", count_prefixed(dir.names(), "cache.sqlite.corrupt-"),
                std::size_t{0});
    store->reset();
    CHECK_EQ_GW("bytes", read_bytes(path) == bytes, true);
    CHECK_FALSE(CacheStore::probe(dir.file("missing.sqlite")).ok());
}

TEST_CASE("store: load_ranked passes on an exception from `each` and the store stays usable") {
    TempDir dir;
    auto store = open_store(dir.file("cache.sqlite"), "w");
    // More rows than the reading thread may hand over before it waits for the taker.
    std::vector<CacheRow> rows;
    for (int i = 0; i < 20000; ++i)
        rows.push_back(row("r" + std::to_string(i) + ".example"));
    write_ok(*store, rows);
    struct Stop {};
    for (std::size_t after : {std::size_t{0}, std::size_t{5000}}) {
        INFO("throws after " << after << " rows");
        std::size_t seen = 0;
        CHECK_THROWS_AS(store->load_ranked(1000000,
                                           [&](CacheRow&&, std::size_t) {
                                               if (seen == after) throw Stop{};
                                               ++seen;
                                           }),
                        Stop);
        CHECK(seen == after);
    }
    // The read transaction ended: a write and a whole load work.
    write_ok(*store, {row("new.example")});
    std::size_t n = 0;
    auto st = store->load_ranked(1000000, [&](CacheRow&&, std::size_t) { ++n; });
    REQUIRE(st.ok());
    CHECK(n == 20001);
}

TEST_CASE("store: malformed rows are skipped on load, not fatal") {
    TempDir dir;
    auto store = open_store(dir.file("cache.sqlite"), "w");
    write_ok(*store, {row("good.example"), row("outcome.example"), row("source.example"),
                      row("policy.example"), row("time.example"), row("temp.example")});
    {
        RawDb raw(store->path());
        raw.exec("UPDATE entries SET outcome = 'bogus' WHERE domain = 'outcome.example'");
        raw.exec("UPDATE entries SET source = 'dns' WHERE domain = 'source.example'");
        raw.exec("UPDATE entries SET policy = NULL WHERE domain = 'policy.example'");
        raw.exec("UPDATE entries SET fetched_at = 'yesterday' WHERE domain = 'time.example'");
        raw.exec("UPDATE entries SET outcome = 'temp' WHERE domain = 'temp.example'");
    }
    CHECK_EQ_GW("loaded", domains(load_ok(*store)), std::vector<std::string>{"good.example"});
    CHECK_FALSE(get_ok(*store, "outcome.example").has_value());
    CHECK(get_ok(*store, "good.example").has_value());
    auto other = open_store(store->path(), "other");
    CHECK_EQ_GW("changes", domains(changes_ok(*other, 0).rows),
                std::vector<std::string>{"good.example"});
}

TEST_CASE("store: a newer schema version is an error and the file is left untouched") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    {
        RawDb raw(path);
        raw.exec("CREATE TABLE future(x); INSERT INTO future VALUES(1); PRAGMA user_version = 99");
    }
    const std::string before = read_bytes(path);
    const auto names_before = dir.names();

    auto s = CacheStore::open(path, "w");
    REQUIRE_FALSE(s.ok());
    CHECK_EQ_GW("error", s.error().message,
                "cache " + path + ": schema version 99 is newer than this tlspolicyd (" +
                    std::to_string(kCacheSchemaVersion) + "); leaving it untouched");
    CHECK_EQ_GW("bytes unchanged", read_bytes(path) == before, true);
    CHECK_EQ_GW("files", dir.names(), names_before);

    auto ro = CacheStore::open_readonly(path);
    REQUIRE_FALSE(ro.ok());
    CHECK(contains(ro.error().message, "schema version 99"));
    CHECK_EQ_GW("bytes unchanged after read-only", read_bytes(path) == before, true);
}

TEST_CASE("store: another application's SQLite database is left untouched") {
    TempDir dir;
    const std::string path = dir.file("other.sqlite");
    {
        RawDb raw(path);
        raw.exec("CREATE TABLE mail(x); INSERT INTO mail VALUES('important')");
    }
    const std::string before = read_bytes(path);
    auto s = CacheStore::open(path, "w");
    REQUIRE_FALSE(s.ok());
    CHECK(contains(s.error().message, "not a tlspolicyd cache"));
    CHECK_EQ_GW("bytes unchanged", read_bytes(path) == before, true);
    CHECK_EQ_GW("files", dir.names(), std::vector<std::string>{"other.sqlite"});
    auto ro = CacheStore::open_readonly(path);
    REQUIRE_FALSE(ro.ok());
    CHECK(contains(ro.error().message, "not a tlspolicyd cache"));
}

TEST_CASE("store: open_readonly on a missing or non-cache file fails and creates nothing") {
    TempDir dir;
    const std::string path = dir.file("missing.sqlite");
    auto s = CacheStore::open_readonly(path);
    REQUIRE_FALSE(s.ok());
    CHECK_EQ_GW("error", s.error().message, "cache " + path + ": no such file");
    CHECK_FALSE(exists(path));

    const std::string empty = dir.file("empty.sqlite");
    write_bytes(empty, "");
    s = CacheStore::open_readonly(empty);
    REQUIRE_FALSE(s.ok());
    CHECK_EQ_GW("empty file", s.error().message, "cache " + empty + ": not a tlspolicyd cache");

    const std::string garbage = dir.file("garbage.sqlite");
    write_bytes(garbage, std::string(2048, 'x'));
    s = CacheStore::open_readonly(garbage);
    REQUIRE_FALSE(s.ok());
    CHECK(contains(s.error().message, "cache " + garbage + ":"));
    CHECK_EQ_GW("garbage untouched", read_bytes(garbage), std::string(2048, 'x'));
    CHECK_EQ_GW("files", dir.names(), (std::vector<std::string>{"empty.sqlite", "garbage.sqlite"}));
}

TEST_CASE("store: open_readonly reads what open() wrote") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    auto rw = open_store(path, "w");
    write_ok(*rw, {row("a.example")});
    auto ro = open_readonly(path);
    CHECK_EQ_GW("load", domains(load_ok(*ro)), std::vector<std::string>{"a.example"});
    CHECK_EQ_GW("changes", domains(changes_ok(*ro, 0).rows), std::vector<std::string>{"a.example"});
    CHECK_EQ_GW("last_seq", last_seq_ok(*ro), int64_t{1});
    CHECK_EQ_GW("first changed()", changed_ok(*ro), true);
    write_ok(*rw, {row("b.example")});
    CHECK_EQ_GW("changed() after a write", changed_ok(*ro), true);
    CHECK(get_ok(*ro, "b.example").has_value());
}

TEST_CASE("store: a missing directory is a clear error") {
    TempDir dir;
    const std::string path = dir.file("no/such/dir/cache.sqlite");
    auto s = CacheStore::open(path, "w");
    REQUIRE_FALSE(s.ok());
    CHECK_EQ_GW("error", s.error().message,
                "cache " + path + ": directory " + dir.file("no/such/dir") + " does not exist");
    CHECK_EQ_GW("files", dir.names(), std::vector<std::string>{});
}

TEST_CASE("store: writing to a read-only cache fails without crashing") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    {
        auto store = open_store(path, "w");
        write_ok(*store, {row("a.example")});
    }
    if (::geteuid() != 0) {
        // Permissions bind: SQLite would open the file read-only; open() refuses.
        REQUIRE(::chmod(path.c_str(), 0444) == 0);
        auto s = CacheStore::open(path, "w");
        REQUIRE_FALSE(s.ok());
        CHECK_EQ_GW("error", s.error().message,
                    "cache " + path + ": cannot open read-write: permission denied");
        CHECK_EQ_GW("files", count_prefixed(dir.names(), "cache.sqlite.corrupt-"), std::size_t{0});
        // SQLite gives -wal and -shm the database's mode when it creates them.
        for (const char* suffix : {"", "-wal", "-shm"})
            if (exists(path + suffix)) REQUIRE(::chmod((path + suffix).c_str(), 0640) == 0);
    }
    // Root ignores file modes: a read-only connection and PRAGMA query_only stand in for a
    // read-only file.
    {
        auto ro = open_readonly(path);
        auto st = ro->write({row("b.example")});
        CHECK_FALSE(st.ok());
        CHECK_EQ_GW("read-only store failure", ro->failure(), StoreFailure::Other);
        CHECK_FALSE(ro->purge("a.example").ok());
        CHECK_FALSE(ro->delete_dead(INT64_MAX, 10).ok());
    }
    {
        auto store = open_store(path, "w");
        REQUIRE(sqlite3_exec(store->handle(), "PRAGMA query_only = 1", nullptr, nullptr, nullptr) ==
                SQLITE_OK);
        auto st = store->write({row("b.example")}, {{"a.example", 1, 1}});
        REQUIRE_FALSE(st.ok());
        INFO(st.error().message);
        CHECK(testutil::printable_ascii(st.error().message));
        CHECK_EQ_GW("query_only failure", store->failure(), StoreFailure::Full);
        CHECK_FALSE(store->purge("").ok());
        CHECK_EQ_GW("query_only purge failure", store->failure(), StoreFailure::Full);

        REQUIRE(sqlite3_exec(store->handle(), "PRAGMA query_only = 0", nullptr, nullptr, nullptr) ==
                SQLITE_OK);
        CHECK_FALSE(get_ok(*store, "b.example").has_value());  // nothing half-written
        CHECK_EQ_GW("last_seq", last_seq_ok(*store), int64_t{1});
        write_ok(*store, {row("b.example")});
        CHECK_EQ_GW("failure after success", store->failure(), StoreFailure::None);
    }
}

TEST_CASE("store: a write blocked by another connection fails as Busy") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    auto store = open_store(path, "w");
    write_ok(*store, {row("a.example")});
    sqlite3_busy_timeout(store->handle(), 50);

    RawDb other(path);
    other.exec("BEGIN EXCLUSIVE");
    other.exec("UPDATE meta SET value = value WHERE key = 'seq'");

    const auto start = std::chrono::steady_clock::now();
    auto st = store->write({row("b.example")});
    const auto waited = std::chrono::steady_clock::now() - start;
    REQUIRE_FALSE(st.ok());
    INFO(st.error().message);
    CHECK_EQ_GW("failure", store->failure(), StoreFailure::Busy);
    CHECK(waited >= std::chrono::milliseconds(40));
    CHECK_FALSE(store->purge("a.example").ok());
    CHECK_EQ_GW("purge failure", store->failure(), StoreFailure::Busy);
    // WAL: reading goes on while the other connection writes.
    CHECK(get_ok(*store, "a.example").has_value());

    other.exec("COMMIT");
    write_ok(*store, {row("b.example")});
    CHECK_EQ_GW("failure after success", store->failure(), StoreFailure::None);
}

TEST_CASE("store: a file of the current version reopens without migrating and keeps its rows") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    CacheRow r = sts_row("a.example");
    r.hits = 4;
    r.last_used = 1763892100;
    {
        auto store = open_store(path, "first");
        write_ok(*store, {r});
        REQUIRE(store->purge("gone.example").ok());
    }
    CacheStore::OpenReport report;
    auto store = open_store(path, "second", &report);
    CHECK_EQ_GW("created", report.created, false);
    CHECK_EQ_GW("moved_aside", report.moved_aside, std::string());
    auto got = get_ok(*store, "a.example");
    REQUIRE(got.has_value());
    r.seq = 1;
    r.writer = "first";
    CHECK_EQ_GW("row", *got, r);
    CHECK_EQ_GW("last_seq", last_seq_ok(*store), int64_t{2});
    auto c = changes_ok(*store, 0);
    CHECK_EQ_GW("purged", c.purged, std::vector<std::string>{"gone.example"});
    RawDb raw(path);
    CHECK_EQ_GW("user_version", raw.value("PRAGMA user_version"),
                std::to_string(kCacheSchemaVersion));
}

TEST_CASE("store: processes opening a new file at once create the schema once") {
    TempDir dir;
    const std::string path = dir.file("cache.sqlite");
    constexpr int kOpeners = 8;
    std::vector<pid_t> children;
    for (int i = 0; i < kOpeners; ++i) {
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            // The child reports through a file and leaves without running doctest's exit.
            std::string error;
            auto s = CacheStore::open(path, "w" + std::to_string(i));
            if (!s) {
                error = s.error().message;
            } else if (auto st = (*s)->write({row("d" + std::to_string(i) + ".example")}); !st) {
                error = st.error().message;
            }
            write_bytes(dir.file("result-" + std::to_string(i)), error.empty() ? "ok" : error);
            ::_exit(0);
        }
        children.push_back(pid);
    }
    for (pid_t pid : children) {
        int status = 0;
        REQUIRE(::waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status));
    }
    for (int i = 0; i < kOpeners; ++i) {
        const std::string name = "opener " + std::to_string(i);
        CHECK_EQ_GW(name.c_str(), read_bytes(dir.file("result-" + std::to_string(i))),
                    std::string("ok"));
    }
    auto store = open_store(path, "check");
    CHECK_EQ_GW("rows", load_ok(*store).size(), std::size_t{kOpeners});
    CHECK_EQ_GW("last_seq", last_seq_ok(*store), int64_t{kOpeners});
    RawDb raw(path);
    CHECK_EQ_GW("meta rows", raw.value("SELECT count(*) FROM meta"), std::string("1"));
}

TEST_CASE("store: load_ranked gives load()'s rows and order (as ranks), whatever the rowids") {
    struct Case {
        const char* name;
        int rows;
        int keep_every;     // rows deleted but every keep_every-th: rowids far apart
        std::size_t limit;  // rows asked for
        bool malformed;     // the first row's details are not text: skipped by both
    };
    const Case cases[] = {
        {"dense, all", 300, 1, 1000000, false},
        {"dense, limit below the rows", 300, 1, 120, false},
        {"dense, a malformed row", 300, 1, 1000000, true},
        {"half deleted, still dense", 600, 2, 1000000, false},
        {"sparse rowids: read in rank order", 3000, 300, 1000000, false},
        {"sparse rowids, limit and a malformed row", 3000, 300, 4, true},
    };
    for (const Case& c : cases) {
        INFO(std::string(c.name));
        TempDir dir;
        auto store = open_store(dir.file("cache.sqlite"), "w");
        std::vector<CacheRow> rows;
        for (int i = 0; i < c.rows; ++i) {
            // Many equal (last_used, fetched_at) pairs: their order is the file's to decide.
            CacheRow r = row("r" + std::to_string(i) + ".example", 1763892000 + i % 3);
            r.last_used = 1763892000 + (i * 7) % 11;
            rows.push_back(r);
        }
        write_ok(*store, rows);
        {
            RawDb raw(store->path());
            if (c.keep_every > 1)
                raw.exec("DELETE FROM entries WHERE rowid % " + std::to_string(c.keep_every) +
                         " != 1");
            if (c.malformed)
                raw.exec(
                    "UPDATE entries SET details = x'00' WHERE rowid = "
                    "(SELECT min(rowid) FROM entries)");
        }
        const std::vector<CacheRow> want = load_ok(*store, c.limit);
        REQUIRE_FALSE(want.empty());
        std::vector<std::pair<std::size_t, CacheRow>> got;
        auto st = store->load_ranked(
            c.limit, [&](CacheRow&& r, std::size_t rank) { got.emplace_back(rank, std::move(r)); });
        INFO((st ? std::string() : st.error().message));
        REQUIRE(st.ok());
        std::sort(got.begin(), got.end(),
                  [](const auto& a, const auto& b) { return a.first < b.first; });
        std::vector<CacheRow> got_rows;
        for (std::size_t i = 0; i < got.size(); ++i) {
            CHECK(got[i].first < c.limit);
            if (i) CHECK(got[i].first > got[i - 1].first);
            got_rows.push_back(got[i].second);
        }
        CHECK_EQ_GW("order", domains(got_rows), domains(want));
        for (std::size_t i = 0; i < std::min(got_rows.size(), want.size()); ++i) {
            CacheRow g = got_rows[i];
            // Not read at start.
            CHECK(g.details.empty());
            CHECK(g.writer.empty());
            CHECK_EQ(g.hits, 0);
            CHECK_EQ(g.seq, 0);
            g.details = want[i].details;
            g.writer = want[i].writer;
            g.hits = want[i].hits;
            g.seq = want[i].seq;
            CHECK_EQ_GW("row", g, want[i]);
        }
    }
}
