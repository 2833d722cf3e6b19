// tlspolicyd: serves Postfix smtp_tls_policy_maps (socketmap, tcp_table) until SIGTERM.
#include <signal.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include <cstdio>
#include <memory>
#include <string>

#include "cache/policy_cache.h"
#include "core/config.h"
#include "core/resolver.h"
#include "server/server.h"
#include "sts/domain_engine.h"
#include "util/event.h"
#include "util/log.h"
#include "util/options.h"

using namespace tlspolicy;

namespace {

constexpr int kExitConfig = 78;  // EX_CONFIG

void usage(FILE* to) {
    std::fprintf(to,
                 "usage: tlspolicyd [-c FILE]\n"
                 "Serves TLS policies to Postfix (socketmap, tcp_table) until SIGTERM;\n"
                 "SIGHUP reloads the configuration. Without -c, built-in defaults apply.\n");
}

std::string status_line(const Server& server) {
    std::string s = "serving";
    const char* sep = " ";
    for (const auto& a : server.bound_addresses()) {
        s += sep + a;
        sep = ", ";
    }
    return s;
}

uint64_t monotonic_usec() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

struct Daemon {
    std::string config_path;
    EventBasePtr base;
    std::unique_ptr<DomainEngine> engine;
    std::unique_ptr<PolicyCache> cache;
    std::unique_ptr<PolicyResolver> resolver;
    std::unique_ptr<Server> server;
    bool stopping = false;

    void reload() {
        if (stopping) return;  // the listeners are gone; a reload must not bring them back
        sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
                   static_cast<unsigned long long>(monotonic_usec()));
        auto next = load_config(config_path);
        std::string outcome;
        if (!next) {
            outcome = "reload failed, keeping the running configuration: " + next.error().message;
            log::error(outcome);
        } else if (auto prepared = engine->prepare(*next); !prepared) {
            outcome =
                "reload failed, keeping the running configuration: " + prepared.error().message;
            log::error(outcome);
        } else if (auto s = server->apply(*next); !s) {
            outcome = "reload failed, keeping the running configuration: " + s.error().message;
            log::error(outcome);
        } else {
            engine->apply(std::move(*prepared));
            cache->set_config(*next);
            log::set_level(next->log.level);
            resolver->set_config(std::make_shared<const Config>(std::move(*next)));
            outcome = "reloaded " + resolver->config()->source;
            log::info(outcome);
        }
        sd_notifyf(0, "READY=1\nSTATUS=%s; %s", status_line(*server).c_str(), outcome.c_str());
    }

    void stop(const char* why) {
        if (stopping) return;
        stopping = true;
        log::info(std::string("received ") + why + ", draining connections");
        sd_notify(0, "STOPPING=1\nSTATUS=draining");
        const int timeout = static_cast<int>(resolver->config()->server.drain_timeout);
        server->drain(timeout, [this] { event_base_loopexit(base.get(), nullptr); });
    }
};

}  // namespace

int main(int argc, char** argv) {
    auto parsed = parse_common_options(argc, argv, "tlspolicyd", false, usage);
    if (const int* code = std::get_if<int>(&parsed)) return *code;
    const std::string config_path = std::get<CommonOptions>(parsed).config_path;
    if (std::get<CommonOptions>(parsed).next != argc) {
        usage(stderr);
        return 64;
    }

    auto config = load_config(config_path);
    if (!config) {
        log::error(config.error().message);
        return kExitConfig;
    }
    log::set_level(config->log.level);
    signal(SIGPIPE, SIG_IGN);

    Daemon d;
    d.config_path = config_path;
    d.base.reset(event_base_new());
    if (!d.base) {
        log::error("cannot create the event loop");
        return 1;
    }
    auto engine = DomainEngine::create(d.base.get(), *config);
    if (!engine) {
        log::error("cannot start the policy engine: " + engine.error().message);
        return kExitConfig;
    }
    d.engine = std::move(*engine);
    // Loads the cached answers before the listeners open, so a restart starts warm.
    d.cache = std::make_unique<PolicyCache>(d.base.get(), *d.engine, *config);
    d.resolver = std::make_unique<PolicyResolver>(
        std::make_shared<const Config>(std::move(*config)), d.cache.get());
    d.server = std::make_unique<Server>(d.base.get(), *d.resolver);
    if (auto s = d.server->apply(*d.resolver->config()); !s) {
        log::error("cannot listen: " + s.error().message);
        return 1;
    }

    auto on_signal = [](evutil_socket_t sig, short, void* arg) {
        auto* self = static_cast<Daemon*>(arg);
        if (sig == SIGHUP)
            self->reload();
        else
            self->stop(sig == SIGTERM ? "SIGTERM" : "SIGINT");
    };
    EventPtr hup(evsignal_new(d.base.get(), SIGHUP, on_signal, &d));
    EventPtr term(evsignal_new(d.base.get(), SIGTERM, on_signal, &d));
    EventPtr intr(evsignal_new(d.base.get(), SIGINT, on_signal, &d));
    for (event* e : {hup.get(), term.get(), intr.get()})
        event_add(e, nullptr);

    const std::string status = status_line(*d.server);
    log::info("tlspolicyd " TLSPOLICY_VERSION " started (" + d.resolver->config()->source + "), " +
              status);
    sd_notifyf(0, "READY=1\nSTATUS=%s", status.c_str());

    event_base_dispatch(d.base.get());
    d.server.reset();
    d.resolver.reset();
    d.cache.reset();  // writes what is pending
    d.engine.reset();
    log::info("stopped");
    return 0;
}
