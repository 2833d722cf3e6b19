// tlspolicy: the command-line tool (check-config, query, prefetch, cache).

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "cache/freshness.h"
#include "cache/store.h"
#include "cli/cache_first.h"
#include "cli/prefetch_input.h"
#include "cli/progress.h"
#include "core/config.h"
#include "core/resolver.h"
#include "probe/prober.h"
#include "server/control.h"
#include "server/wire.h"
#include "sts/domain_engine.h"
#include "util/domain.h"
#include "util/event.h"
#include "util/fd.h"
#include "util/json.h"
#include "util/log.h"
#include "util/options.h"

using namespace tlspolicy;

namespace {

constexpr int kExitUsage = 64;
constexpr int kExitConfig = 78;
constexpr int kExitTemp = 75;
constexpr int kExitCantCreate = 73;  // EX_CANTCREAT: the cache file cannot be written
constexpr int kExitNoInput = 66;     // EX_NOINPUT

int64_t unix_now() {
    return static_cast<int64_t>(std::time(nullptr));
}

void usage(FILE* to) {
    std::fprintf(
        to,
        "usage: tlspolicy [-c FILE] COMMAND [ARGS]\n"
        "\n"
        "commands:\n"
        "  check-config [--keys]        validate the configuration (exit 0 valid, 78 not);\n"
        "                               --keys lists every key with type, default, doc\n"
        "  query [--json] [--fresh] DOMAIN...\n"
        "                               print the policy Postfix would get; exit 0 found,\n"
        "                               1 not found, 75 temporary failure (the worst wins);\n"
        "                               --json: one object per key with the facts behind it;\n"
        "                               a fresh answer in the cache file is shown as it is\n"
        "                               unless --fresh (the cache file is never written)\n"
        "  prefetch [--parallel N] [--top N] [--from-maillog FILE] [--progress|--no-progress]\n"
        "           [FILE|-]            look up domains and store the answers in the cache file,\n"
        "                               where the running daemon picks them up: the domains of\n"
        "                               FILE (or stdin: one per line, addresses reduced to their\n"
        "                               domain, # comments), the N most-used domains of the\n"
        "                               cache (--top), the recipient domains of a Postfix mail\n"
        "                               log, most frequent first (--from-maillog); stdin when\n"
        "                               none is given. Progress on stderr: a bar on a terminal,\n"
        "                               a line every 10 s otherwise. Exit 0, 75 when some\n"
        "                               lookups failed or another prefetch is running, 73 when\n"
        "                               the cache cannot be written, 66 input unreadable\n"
        "  probe [--port N] [--tls-on-connect] [--ipv4|--ipv6] [--timeout S] [--json]\n"
        "        TARGET...              connect to the mail servers of each TARGET (a domain,\n"
        "                               an email address, [host], [host]:port, [IP]) and\n"
        "                               check them against the computed policy (DANE,\n"
        "                               MTA-STS); never sends mail. --port 1-65535 (25),\n"
        "                               --timeout 1-3600 s per step. Exit 0 all passed, 1 some\n"
        "                               failed or unreachable, 2 no server greeted (or none\n"
        "                               exists), 75 the policy lookup failed (worst wins)\n"
        "  cache list                   one line per cached domain: policy, source, expiry\n"
        "  cache show DOMAIN            the cached row of DOMAIN as JSON (exit 1: none)\n"
        "  cache purge [DOMAIN]         forget DOMAIN (all domains without one): through the\n"
        "                               running daemon's control socket at once, else in the\n"
        "                               file (a daemon started later reads it)\n"
        "  cache export                 every cached row as one JSON object per line (the\n"
        "                               running daemon writes what it holds first)\n"
        "\n"
        "Without -c, built-in defaults apply.\n");
}

// The members every JSON answer has, `query --json` and the cache commands alike:
// ,"outcome":…,"policy":… (null unless found),"source":…,"reason":…
void json_append_answer(std::string& out, Outcome outcome, const std::string& policy, Source source,
                        const std::string& reason) {
    out += ",\"outcome\":";
    json_append_string(out, outcome_name(outcome));
    out += ",\"policy\":";
    out += outcome == Outcome::Found ? json_string(policy) : "null";
    out += ",\"source\":";
    json_append_string(out, source_name(source));
    out += ",\"reason\":";
    json_append_string(out, reason);
}

// The configuration, or nullopt after printing why it cannot be loaded.
std::optional<Config> load_or_complain(const std::string& path) {
    auto cfg = load_config(path);
    if (!cfg) {
        std::fprintf(stderr, "%s\n", cfg.error().message.c_str());
        return std::nullopt;
    }
    return std::move(*cfg);
}

// The same for commands that log: [log] level, format and syslog take effect.
std::optional<Config> load_with_logging(const std::string& path) {
    auto cfg = load_or_complain(path);
    if (cfg) {
        log::set_level(cfg->log.level);
        log::set_output(cfg->log.format, cfg->log.syslog);
    }
    return cfg;
}

int check_config(const std::string& path, int argc, char** argv) {
    bool keys = false;
    for (int i = 0; i < argc; ++i) {
        if (std::strcmp(argv[i], "--keys") == 0)
            keys = true;
        else {
            usage(stderr);
            return kExitUsage;
        }
    }
    if (keys) {
        for (const auto& k : config_keys()) {
            std::printf("%s (%s%s%s)%s%s\n    %s\n", k.name.c_str(), k.type.c_str(),
                        k.range.empty() ? "" : ", ", k.range.c_str(),
                        k.default_value.empty() ? "" : " = ", k.default_value.c_str(),
                        k.doc.c_str());
        }
        return 0;
    }
    auto cfg = load_config(path);
    if (!cfg) {
        std::fprintf(stderr, "%s\n", cfg.error().message.c_str());
        return kExitConfig;
    }
    std::printf("%s: ok (%zu listener(s), %zu override(s), %zu profile(s))\n", cfg->source.c_str(),
                cfg->listen.size(), cfg->overrides.size(), cfg->profiles.size());
    return 0;
}

int query(const std::string& path, int argc, char** argv) {
    bool json = false;
    bool fresh = false;
    std::string profile;
    std::vector<std::string> keys;
    for (int i = 0; i < argc; ++i) {
        if (std::strcmp(argv[i], "--json") == 0)
            json = true;
        else if (std::strcmp(argv[i], "--fresh") == 0)
            fresh = true;
        else if (std::strcmp(argv[i], "--profile") == 0 && i + 1 < argc)
            profile = argv[++i];
        else if (argv[i][0] == '-' && argv[i][1] == '-') {
            usage(stderr);
            return kExitUsage;
        } else
            keys.emplace_back(argv[i]);
    }
    if (keys.empty()) {
        usage(stderr);
        return kExitUsage;
    }
    auto cfg = load_with_logging(path);
    if (!cfg) return kExitConfig;
    EventBasePtr base(new_event_base());
    if (!base) {
        std::fprintf(stderr, "tlspolicy: cannot create the event loop\n");
        return 1;
    }
    auto engine = DomainEngine::create(base.get(), *cfg);
    if (!engine) {
        std::fprintf(stderr, "tlspolicy: cannot start the policy engine: %s\n",
                     engine.error().message.c_str());
        return kExitConfig;
    }
    // Unless --fresh, an answer still fresh in the cache file is what the daemon would give.
    std::unique_ptr<CacheStore> store;
    if (!fresh) {
        if (auto st = CacheStore::open_readonly(cfg->cache.path)) store = std::move(*st);
    }
    CacheFirst cache_first(store.get(), **engine);
    PolicyResolver resolver(std::make_shared<const Config>(std::move(*cfg)), &cache_first);

    // Every key is looked up at once; the answers are printed in the order of the keys.
    std::vector<Answer> answers(keys.size());
    std::vector<bool> done(keys.size(), false);
    std::size_t pending = keys.size();
    for (std::size_t i = 0; i < keys.size(); ++i) {
        resolver.resolve(keys[i], profile, [&, i](Answer a) {
            answers[i] = std::move(a);
            done[i] = true;
            if (--pending == 0) event_base_loopbreak(base.get());
        });
    }
    if (pending > 0) event_base_dispatch(base.get());

    int worst = 0;
    for (std::size_t i = 0; i < keys.size(); ++i) {
        const std::string& raw = keys[i];
        Answer& answer = answers[i];
        if (!done[i]) answer = Answer::temp("lookup did not complete");
        const WireStatus st = wire_status(answer.outcome);
        // Failures (75) outrank not found (1), which outranks found (0).
        if (st.exit_code == 75 || (st.exit_code == 1 && worst == 0)) worst = st.exit_code;
        if (json) {
            const Key key = normalize_key(raw);
            std::string line = "{\"key\":";
            json_append_string(line, raw);
            line += ",\"normalized\":";
            json_append_string(line, key.name);
            line += ",\"kind\":";
            json_append_string(line, key_kind_name(key.kind));
            json_append_answer(line, answer.outcome, answer.policy, answer.source, answer.reason);
            line += ",\"ttl\":" + std::to_string(answer.ttl);
            if (cache_first.answered_from_cache(key.name)) line += ",\"cached\":true";
            // The engine's details object ({"dane":…,"mta_sts":…}) is merged into the line.
            if (answer.details.size() > 2)
                line += "," + answer.details.substr(1, answer.details.size() - 2);
            line += "}";
            std::printf("%s\n", line.c_str());
        } else if (answer.outcome == Outcome::Found) {
            // One key: the bare policy (scripts); several: "key<TAB>policy".
            if (keys.size() == 1)
                std::printf("%s\n", answer.policy.c_str());
            else
                std::printf("%s\t%s\n", log::sanitize(raw).c_str(), answer.policy.c_str());
        } else if (answer.outcome != Outcome::NotFound) {
            std::fprintf(stderr, "%s: %s %s\n", log::sanitize(raw).c_str(),
                         std::string(st.socketmap).c_str(), wire_reason(answer).c_str());
        } else if (keys.size() > 1) {
            std::printf("%s\t\n", log::sanitize(raw).c_str());
        }
    }
    return worst;
}

// ---- prefetch ----------------------------------------------------------------------------

// "dane-only", "dane", "encrypt", "verify", "secure" (the policy's first word), "not found".
std::string answer_kind(const Answer& a) {
    if (a.outcome == Outcome::NotFound) return "not found";
    if (a.outcome != Outcome::Found) return "failed";
    return a.policy.substr(0, a.policy.find(' '));
}

// Holds an exclusive lock on PATH.prefetch.lock for the life of the prefetch, so that
// overlapping runs (a slow cron job and the next one) never do the same work twice.
class PrefetchLock {
  public:
    // nullopt with `holder` set (the other prefetch's pid, or "") when the lock is taken;
    // an Error when the lock file cannot be created.
    static Result<std::optional<PrefetchLock>> take(const std::string& cache_path,
                                                    std::string& holder) {
        const std::string path = cache_path + ".prefetch.lock";
        UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640));
        // A lock file another user left (root's run by hand) still locks when only readable.
        if (!fd && errno == EACCES) fd.reset(open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) return make_error("cannot create " + path + ": " + std::strerror(errno));
        if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
            if (errno != EWOULDBLOCK)
                return make_error("cannot lock " + path + ": " + std::strerror(errno));
            char buf[32] = {};
            const ssize_t n = pread(fd.get(), buf, sizeof buf - 1, 0);
            holder = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
            while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' '))
                holder.pop_back();
            return std::optional<PrefetchLock>();
        }
        const std::string pid = std::to_string(getpid()) + "\n";
        if (ftruncate(fd.get(), 0) == 0) [[maybe_unused]]
            ssize_t n = pwrite(fd.get(), pid.data(), pid.size(), 0);
        PrefetchLock lock;
        lock.fd_ = std::move(fd);
        return std::optional<PrefetchLock>(std::move(lock));
    }

  private:
    UniqueFd fd_;  // the lock goes with the descriptor
};

// Adds the domain named by `text` to the list unless it is there already or cannot be looked
// up (an override, an IP address, not a domain): those are counted and said on stderr.
struct DomainList {
    const Config& cfg;
    std::vector<std::string> domains;
    std::unordered_set<std::string> seen;
    std::size_t skipped = 0;

    void add(const std::string& text, const std::string& where) {
        const Key key = normalize_key(text);
        if (key.kind != KeyKind::Domain || cfg.overrides.count(key.name)) {
            ++skipped;
            std::fprintf(
                stderr, "tlspolicy: %s skipped: %s\n", where.c_str(),
                key.kind != KeyKind::Domain
                    ? (key.reason.empty() ? std::string(key_kind_name(key.kind)) : key.reason)
                          .c_str()
                    : "a static override");
            return;
        }
        if (seen.insert(key.name).second) domains.push_back(key.name);
    }
};

bool parse_count(const char* text, long max, long& out) {
    char* end = nullptr;
    errno = 0;
    out = std::strtol(text, &end, 10);
    return errno == 0 && end != text && *end == '\0' && out >= 1 && out <= max;
}

int prefetch_command(const std::string& path, int argc, char** argv) {
    std::vector<std::string> files;
    std::vector<std::string> maillogs;
    long parallel = 16, top = 0;
    int progress = -1;  // -1: when stderr is a terminal
    for (int i = 0; i < argc; ++i) {
        const std::string arg = argv[i];
        const bool has_value = i + 1 < argc;
        if (arg == "--parallel" && has_value) {
            if (!parse_count(argv[++i], 1000, parallel)) {
                std::fprintf(stderr, "tlspolicy: --parallel takes a number from 1 to 1000\n");
                return kExitUsage;
            }
        } else if (arg == "--top" && has_value) {
            if (!parse_count(argv[++i], 10000000, top)) {
                std::fprintf(stderr, "tlspolicy: --top takes a number from 1 to 10000000\n");
                return kExitUsage;
            }
        } else if (arg == "--from-maillog" && has_value) {
            maillogs.push_back(argv[++i]);
        } else if (arg == "--progress" || arg == "--no-progress") {
            progress = arg == "--progress";
        } else if ((arg[0] != '-' || arg == "-") && files.empty()) {
            files.push_back(arg);
        } else {
            usage(stderr);
            return kExitUsage;
        }
    }
    if (files.empty() && maillogs.empty() && top == 0) files.push_back("-");
    auto cfg = load_with_logging(path);
    if (!cfg) return kExitConfig;

    std::string holder;
    auto lock = PrefetchLock::take(cfg->cache.path, holder);
    if (!lock) {
        std::fprintf(stderr, "tlspolicy: %s\n", lock.error().message.c_str());
        return kExitCantCreate;
    }
    if (!*lock) {
        std::fprintf(stderr, "tlspolicy: another prefetch (pid %s) is running; nothing done\n",
                     holder.empty() ? "unknown" : log::sanitize(holder, 20).c_str());
        return kExitTemp;
    }

    DomainList list{*cfg, {}, {}, 0};
    for (const auto& file : files) {
        std::ifstream in_file;
        if (file != "-") {
            in_file.open(file);
            if (!in_file) {
                std::fprintf(stderr, "tlspolicy: cannot read %s: %s\n", log::sanitize(file).c_str(),
                             std::strerror(errno));
                return kExitNoInput;
            }
        }
        std::istream& in = file == "-" ? std::cin : in_file;
        std::size_t line_no = 0;
        for (std::string line; std::getline(in, line);) {
            ++line_no;
            const std::string d = prefetch::domain_of_line(line);
            if (!d.empty()) list.add(d, "line " + std::to_string(line_no));
        }
    }
    for (const auto& file : maillogs) {
        std::ifstream in(file);
        prefetch::MaillogStats stats;
        auto found = in ? prefetch::domains_from_maillog(in, &stats)
                        : Result<std::vector<prefetch::MaillogDomain>>(
                              make_error(std::string(std::strerror(errno))));
        if (!found) {
            std::fprintf(stderr, "tlspolicy: cannot read %s: %s\n", log::sanitize(file).c_str(),
                         found.error().message.c_str());
            return kExitNoInput;
        }
        std::fprintf(stderr,
                     "tlspolicy: %s: %zu recipient domain(s) in %zu delivery line(s) of %zu "
                     "line(s)\n",
                     log::sanitize(file).c_str(), found->size(), stats.used, stats.lines);
        for (const auto& m : *found)
            list.add(m.domain,
                     log::sanitize(file) + " domain \"" + log::sanitize(m.domain, 80) + "\"");
    }

    auto store =
        CacheStore::open(cfg->cache.path, "tlspolicy prefetch pid " + std::to_string(getpid()));
    if (!store) {
        std::fprintf(stderr, "tlspolicy: %s\n", store.error().message.c_str());
        return kExitCantCreate;
    }
    if (top > 0) {
        auto used = (*store)->most_used(static_cast<std::size_t>(top));
        if (!used) {
            std::fprintf(stderr, "tlspolicy: %s\n", used.error().message.c_str());
            return kExitNoInput;
        }
        std::fprintf(stderr, "tlspolicy: --top %ld: %zu used domain(s) in the cache\n", top,
                     used->size());
        for (const auto& d : *used)
            list.add(d, "cached domain \"" + log::sanitize(d, 80) + "\"");
    }
    const std::vector<std::string>& domains = list.domains;
    const std::size_t skipped = list.skipped;
    EventBasePtr base(new_event_base());
    auto engine = base ? DomainEngine::create(base.get(), *cfg)
                       : Result<std::unique_ptr<DomainEngine>>(make_error("no event loop"));
    if (!engine) {
        std::fprintf(stderr, "tlspolicy: cannot start the policy engine: %s\n",
                     engine.error().message.c_str());
        return kExitConfig;
    }
    DomainEngine& eng = **engine;
    // What the file knows of each domain's MTA-STS policy is kept (RFC 8461 §5.1).
    for (const auto& d : domains)
        if (auto row = (*store)->get(d); row && *row)
            if (auto p = sts_policy_from_row(**row)) eng.remember_sts(d, std::move(p));

    const auto t0 = std::chrono::steady_clock::now();
    std::map<std::string, std::size_t> kinds;
    std::vector<CacheRow> rows;
    std::size_t next = 0, running = 0, failed = 0, written = 0, done = 0;

    // Progress on stderr: a bar on a terminal, a plain line every 10 s otherwise.
    const bool terminal = progress == 1 || (progress == -1 && isatty(STDERR_FILENO));
    std::optional<prefetch::Progress> shown;
    if (progress != 0 && !domains.empty())
        shown.emplace(domains.size(), terminal, [](std::string_view text) {
            std::fwrite(text.data(), 1, text.size(), stderr);
            std::fflush(stderr);
        });
    // A message between redraws of the bar clears the line first.
    auto say = [&](const std::string& message) {
        std::fprintf(stderr, "%s%s\n", shown && terminal ? "\r\x1b[K" : "", message.c_str());
    };
    // Plain lines are due by time, also while no lookup finishes.
    std::function<void()> on_tick = [&] {
        if (shown) shown->update(done, failed);
    };
    EventPtr ticker(event_new(
        base.get(), -1, EV_PERSIST,
        [](evutil_socket_t, short, void* arg) { (*static_cast<std::function<void()>*>(arg))(); },
        &on_tick));
    const timeval second{1, 0};
    event_add(ticker.get(), &second);
    std::string write_error;
    auto write_rows = [&] {
        if (rows.empty() || !write_error.empty()) return;
        // The daemon writes the same file: a busy or full moment is waited out a little.
        for (int attempt = 0;; ++attempt) {
            auto w = (*store)->write(rows);
            if (w) {
                written += rows.size();
                break;
            }
            const StoreFailure f = (*store)->failure();
            if ((f != StoreFailure::Busy && f != StoreFailure::Full) || attempt == 3) {
                write_error = w.error().message;
                break;
            }
            std::this_thread::sleep_for(std::chrono::seconds(1 << attempt));
        }
        rows.clear();
    };
    std::function<void()> start_more = [&] {
        while (running < static_cast<std::size_t>(parallel) && next < domains.size()) {
            const std::string d = domains[next++];
            ++running;
            eng.resolve(d, [&, d](std::shared_ptr<const Resolution> r) {
                --running;
                ++done;
                const Answer a = r->answer(cfg->policy);
                ++kinds[answer_kind(a)];
                if (cacheable(*r, a)) {
                    const CachedAnswer c = cached_answer(*r, a, r->now, cfg->cache.stale_ttl);
                    rows.push_back(cache_row(d, *r, a, c));
                    if (rows.size() >= 500) write_rows();
                } else if (a.outcome != Outcome::Found && a.outcome != Outcome::NotFound) {
                    ++failed;
                    say("tlspolicy: " + d + ": " + log::sanitize(a.reason));
                }
                if (shown) shown->update(done, failed);
                if (next < domains.size())
                    start_more();
                else if (running == 0)
                    event_base_loopbreak(base.get());
            });
        }
    };
    start_more();
    if (running > 0) event_base_dispatch(base.get());
    ticker.reset();
    if (shown) shown->finish();
    write_rows();
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::string summary;
    for (const auto& [k, n] : kinds)
        summary += (summary.empty() ? "" : ", ") + std::to_string(n) + " " + k;
    std::printf("prefetched %zu domain(s) in %.1f s: %s; %zu stored, %zu skipped\n", domains.size(),
                secs, summary.empty() ? "nothing to do" : summary.c_str(), written, skipped);
    if (!write_error.empty()) {
        std::fprintf(stderr, "tlspolicy: %s\n", write_error.c_str());
        return kExitCantCreate;
    }
    return failed > 0 ? kExitTemp : 0;
}

// ---- cache -----------------------------------------------------------------------------------

std::string row_json(const CacheRow& r) {
    std::string o = "{\"domain\":";
    json_append_string(o, r.domain);
    json_append_answer(o, r.outcome, r.policy, r.source, r.reason);
    for (const auto& [name, t] : {std::pair<const char*, int64_t>{"fetched_at", r.fetched_at},
                                  {"expires_at", r.expires_at},
                                  {"stale_until", r.stale_until}}) {
        o += ",\"" + std::string(name) + "\":";
        json_append_string(o, iso_time(t));
    }
    o += ",\"sts_id\":";
    o += r.sts_id.empty() ? "null" : json_string(r.sts_id);
    o += ",\"sts_max_age\":" + (r.sts_id.empty() ? "null" : std::to_string(r.sts_max_age));
    o += ",\"sts_expires_at\":";
    o += r.sts_id.empty() ? "null" : json_string(iso_time(r.sts_expires_at));
    o += ",\"hits\":" + std::to_string(r.hits);
    o += ",\"last_used\":";
    o += r.last_used ? json_string(iso_time(r.last_used)) : "null";
    o += ",\"details\":";
    o += r.details.empty() ? "{}" : r.details;
    o += '}';
    return o;
}

int cache_command(const std::string& path, int argc, char** argv) {
    if (argc < 1) {
        usage(stderr);
        return kExitUsage;
    }
    const std::string sub = argv[0];
    const bool needs_domain = sub == "show";
    const bool takes_domain = needs_domain || sub == "purge";
    if ((sub != "list" && sub != "show" && sub != "purge" && sub != "export") ||
        (needs_domain && argc != 2) || (!takes_domain && argc != 1) || argc > 2) {
        usage(stderr);
        return kExitUsage;
    }
    auto cfg = load_or_complain(path);
    if (!cfg) return kExitConfig;
    std::string domain;
    if (argc == 2) {
        const Key key = normalize_key(argv[1]);
        if (key.kind != KeyKind::Domain) {
            std::fprintf(stderr, "tlspolicy: not a domain name: %s\n",
                         log::sanitize(argv[1], 80).c_str());
            return kExitUsage;
        }
        domain = key.name;
    }
    // The running daemon first: it forgets at once and writes the file before it replies.
    if ((sub == "purge" || sub == "export") && cfg->control.endpoint) {
        bool absent = false;
        auto reply =
            control_request(*cfg->control.endpoint,
                            sub == "purge" ? "purge " + domain : std::string("export"), &absent);
        if (reply && sub == "purge") {
            std::printf(
                "purged %s: %lld cached answer(s) dropped by the running daemon, the cache "
                "file purged too\n",
                domain.empty() ? "every domain" : domain.c_str(),
                std::atoll(reply->substr(3).c_str()));
            return 0;
        }
        if (!reply && !absent) {
            std::fprintf(stderr, "tlspolicy: %s\n", reply.error().message.c_str());
            if (sub == "purge") return kExitTemp;
            std::fprintf(stderr, "tlspolicy: exporting the cache file as it is\n");
        }
        // No daemon running: the file is all there is (a daemon started later reads it).
    }
    if (sub == "purge") {
        auto store =
            CacheStore::open(cfg->cache.path, "tlspolicy purge pid " + std::to_string(getpid()));
        if (!store) {
            std::fprintf(stderr, "tlspolicy: %s\n", store.error().message.c_str());
            return kExitCantCreate;
        }
        auto n = (*store)->purge(domain);
        if (!n) {
            std::fprintf(stderr, "tlspolicy: %s\n", n.error().message.c_str());
            return kExitCantCreate;
        }
        std::printf("purged %lld row(s)%s%s\n", static_cast<long long>(*n),
                    domain.empty() ? "" : " for ", domain.c_str());
        return 0;
    }
    auto store = CacheStore::open_readonly(cfg->cache.path);
    if (!store) {
        std::fprintf(stderr, "tlspolicy: %s\n", store.error().message.c_str());
        return kExitNoInput;
    }
    if (sub == "show") {
        auto row = (*store)->get(domain);
        if (!row) {
            std::fprintf(stderr, "tlspolicy: %s\n", row.error().message.c_str());
            return kExitNoInput;
        }
        if (!*row) return 1;
        std::printf("%s\n", row_json(**row).c_str());
        return 0;
    }
    auto rows = (*store)->load(static_cast<std::size_t>(-1) >> 1);
    if (!rows) {
        std::fprintf(stderr, "tlspolicy: %s\n", rows.error().message.c_str());
        return kExitNoInput;
    }
    std::sort(rows->begin(), rows->end(),
              [](const CacheRow& a, const CacheRow& b) { return a.domain < b.domain; });
    const int64_t now = unix_now();
    for (const auto& r : *rows) {
        if (sub == "export") {
            std::printf("%s\n", row_json(r).c_str());
        } else {
            const char* state = r.expires_at > now    ? "fresh"
                                : r.stale_until > now ? "stale"
                                                      : "expired";
            std::printf("%s\t%s\t%s\t%s\t%s\n", r.domain.c_str(),
                        r.outcome == Outcome::Found ? r.policy.c_str() : "-",
                        std::string(source_name(r.source)).c_str(), iso_time(r.expires_at).c_str(),
                        state);
        }
    }
    return 0;
}

// ---- probe ------------------------------------------------------------------------------

std::string probe_helo() {
    char name[256] = {};
    if (gethostname(name, sizeof name - 1) == 0) {
        auto host = canonical_domain(name);
        if (host && host->find('.') != std::string::npos) return *host;
    }
    return "localhost";
}

int probe_command(const std::string& path, int argc, char** argv) {
    ProbeOptions options;
    bool json = false;
    std::vector<std::string> targets;
    for (int i = 0; i < argc; ++i) {
        const std::string arg = argv[i];
        long n = 0;
        if (arg == "--json") {
            json = true;
        } else if (arg == "--tls-on-connect") {
            options.tls_on_connect = true;
        } else if (arg == "--ipv4") {
            options.ipv6 = false;
        } else if (arg == "--ipv6") {
            options.ipv4 = false;
        } else if (arg == "--port" && i + 1 < argc && parse_count(argv[i + 1], 65535, n)) {
            options.port = static_cast<uint16_t>(n);
            ++i;
        } else if (arg == "--timeout" && i + 1 < argc && parse_count(argv[i + 1], 3600, n)) {
            options.connect_timeout_ms = options.read_timeout_ms = n * 1000;
            ++i;
        } else if (arg.size() > 1 && arg[0] == '-') {
            usage(stderr);
            return kExitUsage;
        } else {
            targets.push_back(arg);
        }
    }
    if (targets.empty() || (!options.ipv4 && !options.ipv6)) {
        if (!options.ipv4 && !options.ipv6)
            std::fprintf(stderr, "tlspolicy: --ipv4 and --ipv6 exclude each other\n");
        usage(stderr);
        return kExitUsage;
    }
    auto cfg = load_with_logging(path);
    if (!cfg) return kExitConfig;
    options.helo = probe_helo();
    std::unique_ptr<CacheStore> store;
    if (auto st = CacheStore::open_readonly(cfg->cache.path)) store = std::move(*st);

    // Every target is checked before any is probed.
    std::vector<ProbeTarget> parsed;
    for (const std::string& text : targets) {
        parsed.push_back(parse_probe_target(text));
        if (parsed.back().kind == ProbeTarget::Kind::Invalid) {
            std::fprintf(stderr, "tlspolicy: %s: %s\n", log::sanitize(text).c_str(),
                         parsed.back().error.c_str());
            return kExitUsage;
        }
    }
    int worst = 0;
    for (const ProbeTarget& target : parsed) {
        EventBasePtr base(new_event_base());
        if (!base) {
            std::fprintf(stderr, "tlspolicy: cannot create the event loop\n");
            return 1;
        }
        // The policy is computed as the daemon does (TLSA at _25._tcp); the hosts are judged
        // by the TLSA records of the port probed (RFC 7672 §2.2.3), from a second engine.
        const uint16_t port = target.port ? target.port : options.port;
        auto engine = DomainEngine::create(base.get(), *cfg);
        auto port_engine = port == 25 ? DomainEngine::create(base.get(), *cfg)
                                      : DomainEngine::create(base.get(), *cfg, {}, port);
        if (!engine || !port_engine) {
            std::fprintf(stderr, "tlspolicy: cannot start the policy engine: %s\n",
                         (!engine ? engine : port_engine).error().message.c_str());
            return kExitConfig;
        }
        DomainEngine& facts_engine = port == 25 ? **engine : **port_engine;
        std::optional<TargetReport> report;
        {
            Prober prober(base.get(), *cfg, **engine, facts_engine, store.get(), options);
            prober.run(target, [&](TargetReport r) {
                report = std::move(r);
                event_base_loopbreak(base.get());
            });
            if (!report) event_base_dispatch(base.get());
        }
        if (!report) {
            std::fprintf(stderr, "tlspolicy: %s: the probe did not complete\n",
                         target.text.c_str());
            worst = std::max(worst, kExitTemp);
            continue;
        }
        if (json)
            std::printf("%s\n", report_json(*report).c_str());
        else
            std::printf("%s", report_text(*report).c_str());
        std::fflush(stdout);
        worst = std::max(worst, report->exit_code);
    }
    return worst;
}

}  // namespace

int main(int argc, char** argv) {
    // Stop at the command, so its own options are left to it.
    auto parsed = parse_common_options(argc, argv, "tlspolicy", true, usage);
    if (const int* code = std::get_if<int>(&parsed)) return *code;
    std::string config_path = std::get<CommonOptions>(parsed).config_path;
    const int first = std::get<CommonOptions>(parsed).next;
    if (first >= argc) {
        usage(stderr);
        return kExitUsage;
    }
    const std::string command = argv[first];
    const int rest = argc - first - 1;
    char** args = argv + first + 1;
    // Config options may also follow the command: "tlspolicy check-config -c FILE".
    std::vector<char*> filtered;
    for (int i = 0; i < rest; ++i) {
        if ((std::strcmp(args[i], "-c") == 0 || std::strcmp(args[i], "--config") == 0) &&
            i + 1 < rest) {
            config_path = args[++i];
        } else {
            filtered.push_back(args[i]);
        }
    }
    const int n = static_cast<int>(filtered.size());
    if (command == "check-config") return check_config(config_path, n, filtered.data());
    if (command == "query") return query(config_path, n, filtered.data());
    if (command == "prefetch") return prefetch_command(config_path, n, filtered.data());
    if (command == "probe") return probe_command(config_path, n, filtered.data());
    if (command == "cache") return cache_command(config_path, n, filtered.data());
    std::fprintf(stderr, "tlspolicy: unknown command \"%s\"\n", log::sanitize(command, 40).c_str());
    usage(stderr);
    return kExitUsage;
}
