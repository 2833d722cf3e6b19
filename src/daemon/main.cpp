// tlspolicyd: serves Postfix smtp_tls_policy_maps (socketmap, tcp_table) until SIGTERM.
#include <signal.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "cache/policy_cache.h"
#include "core/config.h"
#include "core/resolver.h"
#include "server/control.h"
#include "server/listener.h"
#include "server/metrics_http.h"
#include "server/server.h"
#include "sts/domain_engine.h"
#include "util/domain.h"
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
    std::unique_ptr<ControlServer> control;
    std::unique_ptr<MetricsHttp> metrics_http;
    std::optional<Endpoint> metrics_endpoint;
    metrics::CallbackHandle connections_metric;

    // Serves [metrics] address unless the running listener is it; "" closes it.
    Status open_metrics(const Config& config) {
        if (config.metrics.endpoint == metrics_endpoint && (metrics_http || !metrics_endpoint))
            return {};
        if (!config.metrics.endpoint) {
            metrics_http.reset();
            metrics_endpoint.reset();
            return {};
        }
        // A changed address: the old listener goes first (it may be the same port).
        metrics_http.reset();
        auto m = MetricsHttp::start(base.get(), *config.metrics.endpoint, metrics::global());
        if (!m) return m.error();
        metrics_http = std::move(*m);
        metrics_endpoint = config.metrics.endpoint;
        log::info("metrics on http://" + metrics_http->bound_address() + "/metrics");
        return {};
    }
    bool stopping = false;

    // The control socket's commands (server/control.h).
    std::string control_command(std::string_view cmd) {
        if (cmd == "purge" || cmd.rfind("purge ", 0) == 0) {
            std::string domain;
            if (cmd.size() > 6) {
                const Key key = normalize_key(cmd.substr(6));
                if (key.kind != KeyKind::Domain) return "error not a domain name\n";
                domain = key.name;
            }
            const std::size_t n = cache->purge(domain);
            cache->flush();  // the file too, before the reply
            log::info("control: purged " + (domain.empty() ? std::string("every domain") : domain) +
                      " (" + std::to_string(n) + " cached answer(s))");
            return "ok " + std::to_string(n) + "\n";
        }
        if (cmd == "export") {
            cache->flush();  // what is in memory is in the file: the caller reads the file
            return "ok\n";
        }
        if (cmd == "stats") {
            const auto& st = cache->stats();
            return "{\"entries\":" + std::to_string(cache->size()) +
                   ",\"hits\":" + std::to_string(st.hits) +
                   ",\"misses\":" + std::to_string(st.misses) +
                   ",\"stale\":" + std::to_string(st.stale) +
                   ",\"refreshing\":" + std::to_string(cache->refreshing()) +
                   ",\"connections\":" + std::to_string(server->session_count()) + "}\n";
        }
        return "error unknown command: use purge [DOMAIN], export or stats\n";
    }

    // Opens the control socket of `config` unless the one running is it. A failure is fatal
    // for an address the config names; for the default one beside the cache file, a warning.
    Status open_control(const Config& config) {
        const auto& want = config.control.endpoint;
        if (control && want && control->endpoint() == *want) return {};
        if (!want) {
            control.reset();
            return {};
        }
        auto c = ControlServer::start(
            base.get(), *want, [this](std::string_view cmd) { return control_command(cmd); });
        if (!c) {
            if (!config.control.address.empty()) return c.error();
            log::warning(c.error().message + "; `tlspolicy cache purge` will work on the file");
            control.reset();
            return {};
        }
        control = std::move(*c);
        log::info("control socket " + control->address());
        return {};
    }

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
            if (auto c = open_control(*next); !c) log::error(c.error().message);
            if (auto m = open_metrics(*next); !m) log::error(m.error().message);
            engine->apply(std::move(*prepared));
            cache->set_config(*next);
            log::set_level(next->log.level);
            log::set_output(next->log.format, next->log.syslog);
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
    log::set_output(config->log.format, config->log.syslog);
    signal(SIGPIPE, SIG_IGN);

    Daemon d;
    d.config_path = config_path;
    d.base.reset(new_event_base());
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
    // Socket activation: systemd's sockets stand in for the [[listen]] entries they match.
    if (const int n = sd_listen_fds(1); n < 0) {
        log::error(std::string("socket activation: ") + std::strerror(-n));
        return 1;
    } else if (auto s = adopt_inherited_sockets(SD_LISTEN_FDS_START, n); !s) {
        log::error("socket activation: " + s.error().message);
        return 1;
    }
    d.server = std::make_unique<Server>(d.base.get(), *d.resolver);
    if (auto s = d.server->apply(*d.resolver->config()); !s) {
        log::error("cannot listen: " + s.error().message);
        return 1;
    }
    if (auto c = d.open_control(*d.resolver->config()); !c) {
        log::error(c.error().message);
        return 1;
    }
    if (auto m = d.open_metrics(*d.resolver->config()); !m) {
        log::error(m.error().message);
        return 1;
    }
    metrics::global()
        .gauge("tlspolicyd_build_info", "Version of the running tlspolicyd (value 1)",
               {{"version", TLSPOLICY_VERSION}})
        .set(1);
    metrics::global()
        .gauge("tlspolicyd_start_time_seconds", "Start time of the process, unix seconds")
        .set(static_cast<double>(time(nullptr)));
    d.connections_metric = metrics::global().gauge_callback(
        "tlspolicyd_connections", "Open client connections (socketmap and tcp_table)",
        [&d] { return static_cast<double>(d.server->session_count()); });
    if (const auto unused = unused_inherited_sockets(); !unused.empty()) {
        log::error("socket activation: " + unused.front() +
                   " was passed by the service manager but no [[listen]] entry names it; "
                   "list it in " +
                   d.resolver->config()->source + " with its protocol");
        return kExitConfig;
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
    d.control.reset();
    d.connections_metric.reset();
    d.metrics_http.reset();
    d.server.reset();
    d.resolver.reset();
    d.cache.reset();  // writes what is pending
    d.engine.reset();
    log::info("stopped");
    return 0;
}
