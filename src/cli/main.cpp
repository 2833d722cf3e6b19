// tlspolicy: the command-line tool (check-config, query).

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/resolver.h"
#include "server/wire.h"
#include "sts/domain_engine.h"
#include "util/domain.h"
#include "util/event.h"
#include "util/json.h"
#include "util/log.h"
#include "util/options.h"

using namespace tlspolicy;

namespace {

constexpr int kExitUsage = 64;
constexpr int kExitConfig = 78;

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
        "                               --json: one object per key with the facts behind it\n"
        "\n"
        "Without -c, built-in defaults apply.\n");
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
    std::string profile;
    std::vector<std::string> keys;
    for (int i = 0; i < argc; ++i) {
        if (std::strcmp(argv[i], "--json") == 0)
            json = true;
        else if (std::strcmp(argv[i], "--fresh") == 0)
            continue;  // every lookup is fresh until the cache exists
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
    auto cfg = load_config(path);
    if (!cfg) {
        std::fprintf(stderr, "%s\n", cfg.error().message.c_str());
        return kExitConfig;
    }
    log::set_level(cfg->log.level);
    EventBasePtr base(event_base_new());
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
    PolicyResolver resolver(std::make_shared<const Config>(std::move(*cfg)), engine->get());

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
            line += ",\"outcome\":";
            json_append_string(line, outcome_name(answer.outcome));
            line += ",\"policy\":";
            line += answer.outcome == Outcome::Found ? json_string(answer.policy) : "null";
            line += ",\"source\":";
            json_append_string(line, source_name(answer.source));
            line += ",\"reason\":";
            json_append_string(line, answer.reason);
            line += ",\"ttl\":" + std::to_string(answer.ttl);
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
    std::fprintf(stderr, "tlspolicy: unknown command \"%s\"\n", log::sanitize(command, 40).c_str());
    usage(stderr);
    return kExitUsage;
}
