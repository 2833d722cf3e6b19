// fuzz-normalize-key: normalize_key() and canonical_domain() (util/domain.h) on arbitrary
// bytes: the keys Postfix, Exim and the CLI send, including UTF-8 for the IDNA path.
//
// Invariants:
//   - Invalid keys have an empty name and a short printable reason that does not echo the key;
//   - every other name is non-empty printable ASCII without upper-case letters, and
//     normalising it again gives the same kind and name (idempotent);
//   - a Domain name is what canonical_domain() returns for the key, and has the documented
//     shape: <= 253 characters, >= 2 labels of 1-63 LDH characters without a hyphen at either
//     end, a top-level label that is not all digits; canonical_domain() accepts exactly the
//     keys normalize_key() classifies as Domain;
//   - a ParentProbe is "." + a canonical domain; a NextHop keeps its brackets and port;
//     an IpLiteral is the key lower-cased;
//   - canonical_domain() gives what its general path (no one-pass ASCII path) gives;
//   - for ASCII keys the letter case does not matter (same kind and name for the key
//     lower-cased and upper-cased).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_common.h"
#include "util/domain.h"

using namespace tlspolicy;

namespace {

bool ldh_label(std::string_view label) {
    if (label.empty() || label.size() > kMaxLabelLength) return false;
    if (label.front() == '-' || label.back() == '-') return false;
    for (char c : label) {
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
    }
    return true;
}

void check_domain_shape(std::string_view name) {
    FUZZ_CHECK(!name.empty() && name.size() <= kMaxDomainLength);
    std::size_t labels = 0;
    std::string_view last;
    std::size_t start = 0;
    for (;;) {
        const std::size_t dot = name.find('.', start);
        const std::string_view label =
            name.substr(start, dot == std::string_view::npos ? dot : dot - start);
        FUZZ_CHECK(ldh_label(label));
        ++labels;
        last = label;
        if (dot == std::string_view::npos) break;
        start = dot + 1;
    }
    FUZZ_CHECK(labels >= 2);
    bool numeric = true;
    for (char c : last)
        numeric = numeric && c >= '0' && c <= '9';
    FUZZ_CHECK(!numeric);
}

bool same_key(const Key& a, const Key& b) {
    return a.kind == b.kind && a.name == b.name;
}

void check_key(std::string_view raw, const Key& k) {
    if (k.kind == KeyKind::Invalid) {
        FUZZ_CHECK(k.name.empty());
        FUZZ_CHECK(!k.reason.empty() && k.reason.size() <= 100);
        FUZZ_CHECK(fuzz::printable_ascii(k.reason));
        FUZZ_CHECK(!fuzz::echoes(k.reason, raw, 12));
        return;
    }
    FUZZ_CHECK(!k.name.empty());
    for (char c : k.name) {
        FUZZ_CHECK(fuzz::is_printable_ascii(c) && c != ' ');
        FUZZ_CHECK(!(c >= 'A' && c <= 'Z'));
    }
    // Idempotent: the normalised name is its own normal form.
    FUZZ_CHECK(same_key(normalize_key(k.name), k));

    switch (k.kind) {
        case KeyKind::Domain:
            check_domain_shape(k.name);
            break;
        case KeyKind::ParentProbe:
            FUZZ_CHECK(k.name.front() == '.');
            check_domain_shape(std::string_view(k.name).substr(1));
            break;
        case KeyKind::NextHop:
            FUZZ_CHECK(k.name.find(':') != std::string::npos || k.name.front() == '[');
            FUZZ_CHECK((k.name.front() == '[') == (raw.front() == '['));
            break;
        case KeyKind::IpLiteral:
            FUZZ_CHECK(k.name == fuzz::lower(raw));
            break;
        case KeyKind::Invalid:
            break;
    }
    FUZZ_CHECK(key_kind_name(k.kind) != "invalid");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
    const std::string_view raw = fuzz::as_text(data, size);

    const Key k = normalize_key(raw);
    check_key(raw, k);

    auto canon = canonical_domain(raw);
    FUZZ_CHECK(canon.ok() == (k.kind == KeyKind::Domain));
    // The one-pass path for plain ASCII names gives what the general path gives.
    auto general = detail::canonical_domain_general(raw);
    FUZZ_CHECK(general.ok() == canon.ok());
    FUZZ_CHECK(canon.ok() ? *general == *canon : general.error().message == canon.error().message);
    if (canon.ok()) {
        FUZZ_CHECK(*canon == k.name);
        auto again = canonical_domain(*canon);
        FUZZ_CHECK(again.ok() && *again == *canon);
    } else {
        FUZZ_CHECK(fuzz::printable_ascii(canon.error().message));
        FUZZ_CHECK(!fuzz::echoes(canon.error().message, raw, 12));
    }

    if (fuzz::ascii_only(raw)) {
        FUZZ_CHECK(same_key(normalize_key(fuzz::lower(raw)), k));
        FUZZ_CHECK(same_key(normalize_key(fuzz::upper(raw)), k));
    }
    return 0;
}
