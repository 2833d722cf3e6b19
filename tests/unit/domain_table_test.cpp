// DomainTable (cache/domain_table.h): the policy cache's flat index. Checked against a
// std::unordered_map model under many keys, growth with stable Refs, backward-shift erase in
// clusters (including one that wraps around the end of the index), reuse of erased slots,
// and keys of every storage size up to and past 253 characters.
#include "cache/domain_table.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "got_want.h"

using namespace tlspolicy;

namespace {

using Table = DomainTable<int>;

std::string name(std::size_t i) {
    return "d" + std::to_string(i) + ".example.com";
}

// Every key of `model` is found with its value and Ref, and the sizes agree.
void check_against(const Table& t,
                   const std::unordered_map<std::string, std::pair<int, Table::Ref>>& model) {
    REQUIRE(t.size() == model.size());
    for (const auto& [key, want] : model) {
        const Table::Ref r = t.find(key);
        INFO("key " << key);
        REQUIRE(r != Table::kNone);
        CHECK(r == want.second);
        CHECK(t[r] == want.first);
        CHECK(t.key(r) == key);
    }
}

// The home slot of `key` in an index of `cap` slots (what DomainTable computes).
std::size_t home(std::string_view key, std::size_t cap) {
    return static_cast<std::size_t>((uint64_t{Table::hash(key)} * cap) >> 32);
}

}  // namespace

TEST_CASE("domain table: random inserts, finds and erases agree with a map, through growth") {
    struct Case {
        const char* name;
        std::size_t keys;  // the key space
        std::size_t ops;
        int erase_percent;
    };
    const Case cases[] = {
        {"few keys, many erases", 50, 20000, 50},
        {"many keys, few erases", 100000, 150000, 10},
        {"many keys, half erased", 20000, 100000, 45},
    };
    for (const Case& c : cases) {
        INFO(c.name);
        Table t;
        std::unordered_map<std::string, std::pair<int, Table::Ref>> model;
        std::mt19937 rng(7);
        std::uniform_int_distribution<std::size_t> pick(0, c.keys - 1);
        std::uniform_int_distribution<int> percent(0, 99);
        for (std::size_t op = 0; op < c.ops; ++op) {
            const std::string key = name(pick(rng));
            if (percent(rng) < c.erase_percent) {
                const bool had = model.erase(key) > 0;
                CHECK_EQ_GW("erase", t.erase(key), had);
                CHECK(t.find(key) == Table::kNone);
            } else {
                const auto [r, inserted] = t.insert(key);
                auto it = model.find(key);
                CHECK_EQ_GW("inserted", inserted, it == model.end());
                if (inserted) {
                    t[r] = static_cast<int>(op);
                    model[key] = {static_cast<int>(op), r};
                } else {
                    CHECK(r == it->second.second);  // the same value, never moved
                }
            }
            if (op % 5000 == 0) check_against(t, model);
        }
        check_against(t, model);
        // Never more than 80% full, and grown only as the keys needed.
        CHECK(t.size() * 5 <= t.capacity() * 4);
        for (std::size_t i = 0; i < c.keys; ++i)
            if (!model.count(name(i))) CHECK(t.find(name(i)) == Table::kNone);
    }
}

TEST_CASE("domain table: Refs and values survive growth of the index") {
    Table t;
    std::vector<Table::Ref> refs;
    std::size_t grew = 0, cap = t.capacity();
    for (std::size_t i = 0; i < 50000; ++i) {
        const auto [r, inserted] = t.insert(name(i));
        REQUIRE(inserted);
        t[r] = static_cast<int>(i) * 3;
        refs.push_back(r);
        if (t.capacity() != cap) ++grew, cap = t.capacity();
    }
    CHECK(grew >= 10);  // 16 slots at first, doubling
    for (std::size_t i = 0; i < refs.size(); ++i) {
        REQUIRE(t.find(name(i)) == refs[i]);
        CHECK(t[refs[i]] == static_cast<int>(i) * 3);
    }
    Table reserved;
    reserved.reserve(50000);
    const std::size_t before = reserved.capacity();
    for (std::size_t i = 0; i < 50000; ++i)
        reserved.insert(name(i));
    CHECK_EQ_GW("capacity after reserve", reserved.capacity(), before);
}

TEST_CASE("domain table: erasing from a cluster never loses another key (wrapping too)") {
    // Keys whose home slots in a 16-slot index make one cluster that wraps round the end:
    // homes 14, 14, 15, 0, 0, 0, 1, 1, 3, 3 fill slots 14, 15, 0 .. 7. Erasing one must move
    // exactly the keys that may move, on both sides of the wrap.
    constexpr std::size_t kCap = 16;
    const std::vector<std::pair<std::size_t, std::size_t>> homes = {
        {14, 2}, {15, 1}, {0, 3}, {1, 2}, {3, 2}};  // home slot, keys
    std::map<std::size_t, std::vector<std::string>> by_home;
    for (std::size_t i = 0, found = 0; found < 10; ++i) {
        const std::string k = name(i);
        const std::size_t h = home(k, kCap);
        for (const auto& [want, count] : homes)
            if (h == want && by_home[h].size() < count) {
                by_home[h].push_back(k);
                ++found;
            }
    }
    for (int order = 0; order < 2; ++order) {
        std::vector<std::string> keys;
        for (const auto& [h, count] : homes)
            keys.insert(keys.end(), by_home[h].begin(), by_home[h].end());
        if (order == 1) std::reverse(keys.begin(), keys.end());
        for (std::size_t victim = 0; victim < keys.size(); ++victim) {
            Table t;
            for (const auto& k : keys)
                t[t.insert(k).first] = static_cast<int>(k.size());
            REQUIRE(t.capacity() == kCap);  // 10 keys: no growth, so the cluster is as planned
            INFO("order " << order << ", erased " << keys[victim]);
            REQUIRE(t.erase(keys[victim]));
            for (std::size_t i = 0; i < keys.size(); ++i) {
                const bool want = i != victim;
                CHECK_EQ_GW(keys[i].c_str(), t.find(keys[i]) != Table::kNone, want);
            }
            // Erase the rest one by one from the other end: the table ends empty and usable.
            for (std::size_t i = keys.size(); i-- > 0;)
                if (i != victim) REQUIRE(t.erase(keys[i]));
            CHECK(t.empty());
            CHECK(t.insert(keys[victim]).second);
        }
    }
}

TEST_CASE("domain table: erased slots are reused before new ones, last freed first") {
    Table t;
    std::vector<Table::Ref> refs;
    for (std::size_t i = 0; i < 1000; ++i)
        refs.push_back(t.insert(name(i)).first);
    CHECK(t.slots_used() == 1000);
    const std::size_t cap = t.capacity();
    // Churn: keys come and go many times over; no slot and no index growth is added.
    for (int round = 0; round < 20; ++round) {
        for (std::size_t i = 0; i < 999; ++i)
            REQUIRE(t.erase(name(i + round * 1000)));
        for (std::size_t i = 0; i < 999; ++i)
            REQUIRE(t.insert(name(i + (round + 1) * 1000)).second);
        t.erase(name(999 + round * 1000));
        REQUIRE(t.insert(name(999 + (round + 1) * 1000)).second);
        CHECK_EQ_GW("slots", t.slots_used(), std::size_t{1000});
        CHECK_EQ_GW("capacity", t.capacity(), cap);
        CHECK(t.size() == 1000);
    }
    // Last freed, first reused; a reused slot starts with a fresh value.
    const Table::Ref a = t.find(name(20000)), b = t.find(name(20001));
    t[a] = 11;
    t.erase(a);
    t.erase(b);
    const auto [r1, new1] = t.insert("x.example");
    const auto [r2, new2] = t.insert("y.example");
    CHECK(new1);
    CHECK(new2);
    CHECK(r1 == b);
    CHECK(r2 == a);
    CHECK(t[r2] == 0);
    CHECK_FALSE(t.live(b + 5000));
    CHECK(t.live(r1));
    // Emptied: every chunk goes; Refs start again at 0.
    std::vector<std::string> all;
    t.for_each([&](Table::Ref, std::string_view k, int&) { all.emplace_back(k); });
    CHECK(all.size() == t.size());
    for (const auto& k : all)
        REQUIRE(t.erase(k));
    CHECK(t.slots_used() == 0);
    CHECK_FALSE(t.live(r1));
    CHECK(t.insert("z.example").first == 0);
}

TEST_CASE("domain table: keys of every length are stored whole (inline up to 23, else apart)") {
    const std::size_t lengths[] = {1, 2, 15, 16, 22, 23, 24, 25, 63, 64, 200, 253, 254, 1000};
    Table t;
    std::map<std::string, Table::Ref> refs;
    for (std::size_t len : lengths) {
        // Keys that share all but their last character, so a comparison of a prefix (or of
        // the inline part only) would confuse them.
        for (char last : {'a', 'b'}) {
            std::string k(len, 'x');
            for (std::size_t i = 0; i < len; i += 64)
                k[i] = '.';
            k.back() = last;
            const auto [r, inserted] = t.insert(k);
            INFO("length " << len << " last " << last);
            REQUIRE(inserted);
            CHECK(t.key(r) == k);
            t[r] = static_cast<int>(len);
            refs[k] = r;
        }
    }
    for (const auto& [k, r] : refs) {
        INFO("length " << k.size());
        CHECK(t.find(k) == r);
        CHECK(t.key(r) == k);
        CHECK(t[r] == static_cast<int>(k.size()));
        CHECK(t.find(k.substr(0, k.size() - 1)) == Table::kNone);
    }
    // A long key erased and its slot reused by a short one (and back): nothing left over.
    const std::string longest(253, 'q');
    const Table::Ref r = t.insert(longest).first;
    t.erase(r);
    CHECK(t.insert("short.example").first == r);
    CHECK(t.key(r) == "short.example");
    t.erase(r);
    CHECK(t.insert(longest).first == r);
    CHECK(t.key(r) == longest);
    CHECK(t.find("short.example") == Table::kNone);
}
