// Builders of the two halves of a resolution (DANE facts and decision, MTA-STS report) for
// the unit tests of the combination and of the cache.
#pragma once

#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

#include "sts/domain_engine.h"

namespace tlspolicy::testutil {

inline DaneFacts facts_with(std::vector<std::string> hosts) {
    DaneFacts f;
    f.domain = "example.com";
    for (auto& h : hosts) {
        HostFacts hf;
        hf.name = h;
        f.hosts.push_back(hf);
    }
    return f;
}

inline DaneDecision dane(DaneVerdict v, bool unfinished = false) {
    DaneDecision d;
    d.verdict = v;
    d.rule = "test";
    d.reason = "test reason";
    d.ttl = v == DaneVerdict::Temp ? 0 : 600;
    d.unfinished = unfinished;
    return d;
}

inline StsReport sts_with(std::optional<std::string> body, int64_t now) {
    StsReport r;
    r.domain = "example.com";
    r.txt_valid_until = now + 300;
    if (!body) {
        r.outcome.status = "not_found";
        r.outcome.code = "no_sts_record";
        r.outcome.reason = "no usable _mta-sts record";
        return r;
    }
    StsParse p = parse_sts_policy(*body);
    REQUIRE(p.ok);
    StoredStsPolicy sp;
    sp.id = "id1";
    sp.policy = p.policy;
    sp.body = *body;
    sp.fetched_at = now;
    sp.expires_at = now + p.policy.max_age;
    r.outcome.status = "found";
    r.outcome.policy = std::make_shared<const StoredStsPolicy>(sp);
    return r;
}

}  // namespace tlspolicy::testutil
