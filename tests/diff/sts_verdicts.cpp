// Test-only: prints tlspolicyd's MTA-STS verdicts for the differential corpus as one JSON
// object, in the shape mailauth-verdicts.js prints for mailauth:
//
//   {"policy": {"<name>": {"ok": bool, "code": str|null, "mode": str|null,
//                          "max_age": int|null, "mx": [str]}},
//    "txt":    {"<id>": {"found": bool, "id": str|null, "code": str|null}},
//    "mx":     {"<id>": bool}}
//
// compare.py feeds the corpus on stdin, one case a line, every byte string hex-encoded behind
// an "x" (so an empty string is "x"), ids plain:
//
//   policy <name> x<body>                       parse_sts_policy(body)
//   txt <id> x<record> x<record> ...            parse_sts_txt(records): each record's strings
//                                               already joined, as the resolver hands them over
//   mx <id> x<pattern> x<host>                  sts_mx_matches(pattern, host)
//
// Strings go through json_append_string, which writes bytes >= 0x80 as \u00XX (one escape
// per byte); compare.py turns them back into UTF-8.
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "core/mta_sts.h"
#include "util/json.h"

namespace {

using tlspolicy::json_append_string;

std::optional<std::string> unhex(const std::string& token) {
    if (token.empty() || token[0] != 'x' || token.size() % 2 != 1) return std::nullopt;
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    std::string out;
    for (std::size_t i = 1; i + 1 < token.size(); i += 2) {
        int hi = nibble(token[i]), lo = nibble(token[i + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out.push_back(static_cast<char>(hi * 16 + lo));
    }
    return out;
}

void append_string_or_null(std::string& out, bool present, const std::string& s) {
    if (present)
        json_append_string(out, s);
    else
        out += "null";
}

std::string policy_verdict(const std::string& body) {
    tlspolicy::StsParse parsed = tlspolicy::parse_sts_policy(body);
    std::string out = "{\"ok\":";
    out += parsed.ok ? "true" : "false";
    out += ",\"code\":";
    append_string_or_null(out, !parsed.ok, parsed.error.code);
    out += ",\"mode\":";
    append_string_or_null(out, parsed.ok,
                          std::string(tlspolicy::sts_mode_name(parsed.policy.mode)));
    out += ",\"max_age\":";
    out += parsed.ok ? std::to_string(parsed.policy.max_age) : "null";
    out += ",\"mx\":[";
    if (parsed.ok) {
        for (std::size_t i = 0; i < parsed.policy.mx.size(); ++i) {
            if (i) out += ',';
            json_append_string(out, parsed.policy.mx[i]);
        }
    }
    out += "]}";
    return out;
}

std::string txt_verdict(const std::vector<std::string>& records) {
    tlspolicy::StsTxt txt = tlspolicy::parse_sts_txt(records);
    std::string out = "{\"found\":";
    out += txt.found ? "true" : "false";
    out += ",\"id\":";
    append_string_or_null(out, txt.found, txt.id);
    out += ",\"code\":";
    append_string_or_null(out, !txt.found, txt.code);
    out += '}';
    return out;
}

void append_section(std::string& out, const char* name,
                    const std::vector<std::pair<std::string, std::string>>& items) {
    out += '"';
    out += name;
    out += "\":{";
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += ',';
        json_append_string(out, items[i].first);
        out += ':';
        out += items[i].second;
    }
    out += '}';
}

}  // namespace

int main() {
    std::vector<std::pair<std::string, std::string>> policies, txts, mxs;
    std::map<std::string, int> seen;
    std::string line;
    int lineno = 0;
    while (std::getline(std::cin, line)) {
        ++lineno;
        if (line.empty()) continue;
        std::istringstream in(line);
        std::string kind, id, token;
        in >> kind >> id;
        std::vector<std::string> args;
        bool bad = id.empty();
        while (in >> token) {
            auto s = unhex(token);
            if (!s) {
                bad = true;
                break;
            }
            args.push_back(std::move(*s));
        }
        if (!bad && ++seen[kind + "/" + id] > 1) bad = true;
        if (bad) {
            std::cerr << "sts_verdicts: bad input line " << lineno << "\n";
            return 2;
        }
        if (kind == "policy" && args.size() == 1) {
            policies.emplace_back(id, policy_verdict(args[0]));
        } else if (kind == "txt") {
            txts.emplace_back(id, txt_verdict(args));
        } else if (kind == "mx" && args.size() == 2) {
            mxs.emplace_back(id, tlspolicy::sts_mx_matches(args[0], args[1]) ? "true" : "false");
        } else {
            std::cerr << "sts_verdicts: bad input line " << lineno << "\n";
            return 2;
        }
    }
    std::string out = "{";
    append_section(out, "policy", policies);
    out += ',';
    append_section(out, "txt", txts);
    out += ',';
    append_section(out, "mx", mxs);
    out += "}\n";
    std::cout << out;
    return 0;
}
