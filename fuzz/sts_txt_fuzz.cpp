// fuzz-sts-txt: parse_sts_txt() (core/mta_sts.h), the judge of the TXT records at
// _mta-sts.<domain>. The input is the record set, one record per line ('\n' separates
// records; a record's character-strings are already joined).
//
// Invariants:
//   - found exactly when no code is set; a found id is 1-32 letters and digits and appears as
//     "id=<id>" in the one record that starts with "v=STSv1" *WSP ";";
//   - zero such records is no_sts_record, several is multi_sts_records; any other failure is
//     invalid_sts_record or invalid_sts_id; reasons are short printable ASCII and never echo
//     a record;
//   - the order of the records and extra non-STS records do not change the verdict.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/mta_sts.h"
#include "fuzz_common.h"

using namespace tlspolicy;

namespace {

constexpr std::size_t kMaxRecords = 64;

bool is_sts_record(std::string_view r) {
    if (!r.starts_with("v=STSv1")) return false;
    std::size_t i = 7;
    while (i < r.size() && (r[i] == ' ' || r[i] == '\t'))
        ++i;
    return i < r.size() && r[i] == ';';
}

bool valid_id(std::string_view id) {
    if (id.empty() || id.size() > 32) return false;
    for (char c : id) {
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

bool same_verdict(const StsTxt& a, const StsTxt& b) {
    return a.found == b.found && a.id == b.id && a.code == b.code;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
    const std::string_view in = fuzz::as_text(data, size);
    const std::vector<std::string> records = fuzz::split(in, '\n', kMaxRecords);

    const StsTxt t = parse_sts_txt(records);
    std::size_t sts = 0;
    const std::string* the_one = nullptr;
    for (const std::string& r : records) {
        if (!is_sts_record(r)) continue;
        ++sts;
        the_one = &r;
    }

    FUZZ_CHECK(t.found == t.code.empty());
    if (t.found) {
        FUZZ_CHECK(sts == 1);
        FUZZ_CHECK(valid_id(t.id));
        FUZZ_CHECK(the_one->find("id=" + t.id) != std::string::npos);
        FUZZ_CHECK(t.reason.empty());
    } else {
        FUZZ_CHECK(t.id.empty());
        if (sts == 0) {
            FUZZ_CHECK(t.code == "no_sts_record");
        } else if (sts > 1) {
            FUZZ_CHECK(t.code == "multi_sts_records");
        } else {
            FUZZ_CHECK(t.code == "invalid_sts_record" || t.code == "invalid_sts_id");
        }
        FUZZ_CHECK(!t.reason.empty() && t.reason.size() <= 200);
        FUZZ_CHECK(fuzz::printable_ascii(t.reason));
        for (const std::string& r : records)
            FUZZ_CHECK(!fuzz::echoes(t.reason, r, 12));
    }

    // Order and unrelated records do not matter.
    std::vector<std::string> other(records.rbegin(), records.rend());
    FUZZ_CHECK(same_verdict(parse_sts_txt(other), t));
    other.push_back("v=spf1 -all");
    other.insert(other.begin(), "");
    FUZZ_CHECK(same_verdict(parse_sts_txt(other), t));
    return 0;
}
