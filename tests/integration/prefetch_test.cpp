// `tlspolicy prefetch` against the test world: domains from a file, from the cache's most-used
// domains (--top) and from a Postfix mail log (--from-maillog), with the summary line, the exit
// code, the progress bar, and the lock that keeps a second prefetch from doing the same work.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "harness.h"
#include "util/domain.h"

using namespace harness;

namespace {

std::string prefetch_config(const TempDir& dir) {
    return world_dns() + world_sts() + "[cache]\npath = \"" + dir.file("cache.sqlite") + "\"\n";
}

// The summary's middle part for these scenario answers: "2 dane-only, 1 not found, …" in the
// order the tool prints (by kind name).
std::string kinds_of(const std::vector<std::string>& answers, std::size_t* failed) {
    std::map<std::string, std::size_t> kinds;
    *failed = 0;
    for (const auto& a : answers) {
        if (a.rfind("OK ", 0) == 0)
            ++kinds[a.substr(
                3, a.find(' ', 3) == std::string::npos ? std::string::npos : a.find(' ', 3) - 3)];
        else if (a == "NOTFOUND")
            ++kinds["not found"];
        else
            ++kinds["failed"], ++*failed;
    }
    std::string out;
    for (const auto& [k, n] : kinds)
        out += (out.empty() ? "" : ", ") + std::to_string(n) + " " + k;
    return out;
}

// "A; B" of "prefetched N domain(s) in T s: A; B".
std::string summary_tail(const std::string& out) {
    const auto colon = out.find(" s: ");
    return colon == std::string::npos ? "" : out.substr(colon + 4);
}

}  // namespace

TEST_CASE("prefetch --from-maillog: recipient domains of a Postfix log, summary and exit code") {
    TempDir dir;
    dir.write("c.toml", prefetch_config(dir));
    const std::string root = env_path("SOURCE_ROOT");
    // The expected ranking, reduced to distinct lookup keys (U- and A-labels are one domain).
    std::ifstream expected(root + "/tests/integration/data/maillog.sample.expected");
    std::vector<std::string> answers;
    std::set<std::string> keys;
    std::size_t count = 0;
    for (std::string domain; expected >> count >> domain;) {
        const auto key = tlspolicy::normalize_key(domain);
        REQUIRE(key.kind == tlspolicy::KeyKind::Domain);
        if (!keys.insert(key.name).second) continue;
        // The scenario row of the key (rows may spell it as a U-label); a name the world does
        // not have is a signed NXDOMAIN under .test: not found.
        std::string answer = "NOTFOUND";
        for (const auto& row : scenarios())
            if (row.config.empty() && tlspolicy::normalize_key(row.key).name == key.name)
                answer = row.answer;
        answers.push_back(answer);
    }
    REQUIRE(answers.size() >= 5);
    std::size_t failed = 0;
    const std::string kinds = kinds_of(answers, &failed);

    const RunResult r = harness::tlspolicy({"-c", dir.file("c.toml"), "prefetch", "--from-maillog",
                                            root + "/tests/integration/data/maillog.sample"});
    CAPTURE(r.out);
    CAPTURE(r.err);
    CHECK(r.exit_code == (failed > 0 ? 75 : 0));
    CHECK(r.out.rfind("prefetched " + std::to_string(answers.size()) + " domain(s) in ", 0) == 0);
    CHECK(summary_tail(r.out) ==
          kinds + "; " + std::to_string(answers.size() - failed) + " stored, 0 skipped\n");
    CHECK(contains(r.err, "recipient domain(s) in "));
    // Not a terminal: no bar, no carriage returns.
    CHECK(!contains(r.err, "\r"));
    // What was stored is what the daemon would answer.
    CHECK(sqlite(dir.file("cache.sqlite"), "SELECT count(*) FROM policies") ==
          std::to_string(answers.size() - failed) + "\n");

    const RunResult missing = harness::tlspolicy(
        {"-c", dir.file("c.toml"), "prefetch", "--from-maillog", dir.file("none.log")});
    CHECK(missing.exit_code == 66);
    CHECK(contains(missing.err, "cannot read " + dir.file("none.log")));
}

TEST_CASE("prefetch --top N: the most-used domains of the running daemon's cache") {
    TempDir dir;
    Daemon d(dir, std::string(kLoopbackListeners) + prefetch_config(dir));
    const std::vector<std::pair<std::string, int>> uses = {
        {"insecure.test", 1}, {"dane-ee.test", 4}, {"sts-enforce.test", 3}, {"a-only.test", 2}};
    for (const auto& [domain, n] : uses)
        for (int i = 0; i < n; ++i)
            REQUIRE(ask(d, domain) == scenario_answer(domain));
    // The daemon writes hit counts every 10 s; export asks it to write them now.
    REQUIRE(harness::tlspolicy({"-c", dir.file("tlspolicyd.toml"), "cache", "export"}).exit_code ==
            0);

    const RunResult r = harness::tlspolicy(
        {"-c", dir.file("tlspolicyd.toml"), "prefetch", "--top", "2", "--progress"});
    CAPTURE(r.err);
    CHECK(r.exit_code == 0);
    CHECK(contains(r.err, "--top 2: 2 used domain(s) in the cache"));
    std::size_t failed = 0;
    CHECK(
        summary_tail(r.out) ==
        kinds_of({scenario_answer("dane-ee.test"), scenario_answer("sts-enforce.test")}, &failed) +
            "; 2 stored, 0 skipped\n");
    // --progress draws the bar in place and ends it with a newline at 100%.
    CHECK(contains(r.err, "\r["));
    CHECK(contains(r.err, "\x1b[K"));
    CHECK(contains(r.err, "2/2  100%"));
    CHECK(r.err.back() == '\n');

    const RunResult bad =
        harness::tlspolicy({"-c", dir.file("tlspolicyd.toml"), "prefetch", "--top", "0"});
    CHECK(bad.exit_code == 64);
}

TEST_CASE("prefetch: a second prefetch while one runs does nothing and says so (exit 75)") {
    TempDir dir;
    dir.write("c.toml", prefetch_config(dir));
    dir.write("domains.txt", "dane-ee.test\n");
    // Hold the lock the way a running prefetch does.
    const std::string lock_path = dir.file("cache.sqlite.prefetch.lock");
    const int fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    REQUIRE(fd >= 0);
    REQUIRE(flock(fd, LOCK_EX) == 0);
    REQUIRE(write(fd, "4242\n", 5) == 5);
    const RunResult second =
        harness::tlspolicy({"-c", dir.file("c.toml"), "prefetch", dir.file("domains.txt")});
    CHECK(second.exit_code == 75);
    CHECK(second.err == "tlspolicy: another prefetch (pid 4242) is running; nothing done\n");
    CHECK(second.out.empty());
    close(fd);  // the first one ends

    const RunResult after =
        harness::tlspolicy({"-c", dir.file("c.toml"), "prefetch", dir.file("domains.txt")});
    CHECK(after.exit_code == 0);
    CHECK(after.out.rfind("prefetched 1 domain(s) in ", 0) == 0);
}
