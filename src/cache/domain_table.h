// DomainTable: the policy cache's in-memory index, a hash map from domain names to values that
// holds a million entries without a node, a key string or a cached hash per entry
// (docs/benchmarks.md, "Memory and start-up with a large cache").
//
// - Values live in fixed-size chunks and are named by a Ref (24 bits) that stays valid until
//   that value is erased: growing the index never moves a value, so other structures (the
//   cache's LRU lists, its refresh queue) link values by Ref. At most kMaxSize values.
// - A key of up to DomainKey::kInline bytes is stored in its slot, a longer one in one
//   allocation of its own.
// - The index is an open-addressing array of 4-byte (Ref, 8-bit fingerprint) pairs, linear
//   probing, at most 80% full: a lookup reads the value's slot only when the fingerprint
//   matches. Erase shifts the following pairs back (no tombstones), so lookups never slow
//   down however many keys come and go; growing rehashes the keys.
// - The slot of an erased value is reused by the next insert (last freed, first reused); when
//   the table becomes empty every chunk is released.
// Not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

namespace tlspolicy {

// A domain name kept in 24 bytes: inline up to kInline bytes, else on the heap. Also marks
// a free slot (and links the free list through it). Neither copyable nor movable: it lives
// in its slot.
class DomainKey {
  public:
    static constexpr std::size_t kInline = 23;

    DomainKey() = default;
    DomainKey(const DomainKey&) = delete;
    DomainKey& operator=(const DomainKey&) = delete;
    ~DomainKey() { release(); }

    bool free() const { return tag() == kFree; }
    std::string_view view() const {
        if (tag() == kHeap) return {heap_ptr(), heap_len()};
        return {reinterpret_cast<const char*>(bytes_), tag() == kFree ? 0u : tag()};
    }
    void assign(std::string_view key) {
        release();
        if (key.size() <= kInline) {
            if (!key.empty()) std::memcpy(bytes_, key.data(), key.size());
            bytes_[kTag] = static_cast<unsigned char>(key.size());
            return;
        }
        char* p = new char[key.size()];
        std::memcpy(p, key.data(), key.size());
        const std::size_t n = key.size();
        std::memcpy(bytes_, &p, sizeof p);
        std::memcpy(bytes_ + sizeof p, &n, sizeof n);
        bytes_[kTag] = kHeap;
    }
    // Makes this a free slot whose successor in the free list is `next`.
    void set_free(uint32_t next) {
        release();
        std::memcpy(bytes_, &next, sizeof next);
        bytes_[kTag] = kFree;
    }
    uint32_t next_free() const {
        uint32_t next;
        std::memcpy(&next, bytes_, sizeof next);
        return next;
    }

  private:
    static constexpr std::size_t kTag = 23;
    static constexpr unsigned char kHeap = 0xFE, kFree = 0xFF;
    unsigned char tag() const { return bytes_[kTag]; }
    const char* heap_ptr() const {
        const char* p;
        std::memcpy(&p, bytes_, sizeof p);
        return p;
    }
    std::size_t heap_len() const {
        std::size_t n;
        std::memcpy(&n, bytes_ + sizeof(char*), sizeof n);
        return n;
    }
    void release() {
        if (tag() == kHeap) delete[] heap_ptr();
        bytes_[kTag] = kFree;
    }
    // A fresh slot is free (and in no free list: only erased slots are).
    alignas(8) unsigned char bytes_[24] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                           0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, kFree};
};
static_assert(sizeof(DomainKey) == 24);

// Names a value of a DomainTable until it is erased; fits in 24 bits (kNoDomainRef too).
using DomainRef = uint32_t;
inline constexpr DomainRef kNoDomainRef = 0xFFFFFF;

template <class V>
class DomainTable {
  public:
    using Ref = DomainRef;
    static constexpr Ref kNone = kNoDomainRef;
    static constexpr std::size_t kMaxSize = kNoDomainRef;  // Refs 0 .. kMaxSize - 1
    static constexpr std::size_t kChunk = 4096;            // values per chunk

    DomainTable() = default;
    DomainTable(const DomainTable&) = delete;
    DomainTable& operator=(const DomainTable&) = delete;

    std::size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }
    // Index slots (for tests: the table grows only when inserts need it).
    std::size_t capacity() const { return cap_; }
    // Value slots handed out since the table was last empty (for tests: erased ones are reused).
    std::size_t slots_used() const { return high_; }

    // The value named `key`, or kNone.
    Ref find(std::string_view key) const {
        if (cap_ == 0) return kNone;
        const uint32_t h = hash(key);
        for (std::size_t i = home(h, cap_);; i = next(i)) {
            const uint32_t s = index_[i];
            if (s == 0) return kNone;
            if (fingerprint(s) == fingerprint(h) && node(slot_ref(s)).key.view() == key)
                return slot_ref(s);
        }
    }
    // The value named `key`, inserted (default-constructed) when missing; second: inserted.
    // Throws std::length_error past kMaxSize values.
    std::pair<Ref, bool> insert(std::string_view key) {
        if ((size_ + 1) * 5 > cap_ * 4) grow(std::max<std::size_t>(16, cap_ * 2));
        const uint32_t h = hash(key);
        std::size_t i = home(h, cap_);
        for (;; i = next(i)) {
            const uint32_t s = index_[i];
            if (s == 0) break;
            if (fingerprint(s) == fingerprint(h) && node(slot_ref(s)).key.view() == key)
                return {slot_ref(s), false};
        }
        const Ref r = take_slot();
        try {
            node(r).key.assign(key);
        } catch (...) {  // no memory for a long key: the slot goes back, the table is unchanged
            node(r).key.set_free(free_);
            free_ = r;
            throw;
        }
        index_[i] = make_slot(h, r);
        ++size_;
        return {r, true};
    }
    // Erases the value `r` names (which must be live); every other Ref stays valid.
    void erase(Ref r) {
        Node& n = node(r);
        const uint32_t h = hash(n.key.view());
        const uint32_t mine = make_slot(h, r);
        std::size_t i = home(h, cap_);
        while (index_[i] != mine)
            i = next(i);
        // Backward shift: move each following pair that may sit at i (its home is not in the
        // cyclic range (i, j]) into the hole, until an empty slot ends the cluster.
        for (std::size_t j = next(i); index_[j] != 0; j = next(j)) {
            const std::size_t k = home(hash(node(slot_ref(index_[j])).key.view()), cap_);
            const bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
            if (stays) continue;
            index_[i] = index_[j];
            i = j;
        }
        index_[i] = 0;
        n.value = V{};
        n.key.set_free(free_);
        free_ = r;
        if (--size_ == 0) release_chunks();
    }
    // Erases `key`'s value; false when there was none.
    bool erase(std::string_view key) {
        const Ref r = find(key);
        if (r == kNone) return false;
        erase(r);
        return true;
    }
    // Whether `r` (any number) names a value now.
    bool live(Ref r) const { return r < high_ && !node(r).key.free(); }

    V& operator[](Ref r) { return node(r).value; }
    const V& operator[](Ref r) const { return node(r).value; }
    std::string_view key(Ref r) const { return node(r).key.view(); }

    // Room for `n` keys without growing the index.
    void reserve(std::size_t n) {
        const std::size_t want = n + n / 4 + 1;
        if (want > cap_) grow(want);
    }
    void clear() {
        if (cap_) std::fill(index_.get(), index_.get() + cap_, 0);
        size_ = 0;
        release_chunks();
    }
    // Calls f(ref, key, value) for every value, in Ref order. f must not insert or erase.
    template <class F>
    void for_each(F&& f) {
        for (Ref r = 0; r < high_; ++r) {
            Node& n = node(r);
            if (!n.key.free()) f(r, n.key.view(), n.value);
        }
    }

    // The hash the index uses (std::hash folded to 32 bits).
    static uint32_t hash(std::string_view key) {
        const uint64_t h = std::hash<std::string_view>{}(key);
        return static_cast<uint32_t>(h ^ (h >> 32));
    }

  private:
    struct Node {
        DomainKey key;
        V value{};
    };

    // An index slot: 0 = empty, else Ref + 1 in the high 24 bits and the hash's low 8 bits
    // (its position comes from the high bits, see home()).
    static uint32_t make_slot(uint32_t h, Ref r) { return ((r + 1) << 8) | (h & 0xFF); }
    static uint32_t fingerprint(uint32_t slot_or_hash) { return slot_or_hash & 0xFF; }
    static Ref slot_ref(uint32_t s) { return (s >> 8) - 1; }
    // The hash's position in an index of `cap` slots: its share of the 32-bit range.
    static std::size_t home(uint32_t h, std::size_t cap) {
        return static_cast<std::size_t>((uint64_t{h} * cap) >> 32);
    }
    std::size_t next(std::size_t i) const { return i + 1 == cap_ ? 0 : i + 1; }

    Node& node(Ref r) { return chunks_[r / kChunk][r % kChunk]; }
    const Node& node(Ref r) const { return chunks_[r / kChunk][r % kChunk]; }

    Ref take_slot() {
        if (free_ != kNone) {
            const Ref r = free_;
            free_ = node(r).key.next_free();
            return r;
        }
        if (high_ >= kMaxSize) throw std::length_error("DomainTable: more than kMaxSize values");
        if (high_ % kChunk == 0) chunks_.push_back(std::make_unique<Node[]>(kChunk));
        return high_++;
    }
    void release_chunks() {
        chunks_.clear();
        high_ = 0;
        free_ = kNone;
    }
    void grow(std::size_t cap) {
        auto fresh = std::make_unique<uint32_t[]>(cap);  // zeroed: every slot empty
        // The values in Ref order (their chunks read in sequence), each key hashed again.
        for (Ref r = 0; r < high_; ++r) {
            const Node& n = node(r);
            if (n.key.free()) continue;
            const uint32_t h = hash(n.key.view());
            std::size_t j = home(h, cap);
            while (fresh[j] != 0)
                j = j + 1 == cap ? 0 : j + 1;
            fresh[j] = make_slot(h, r);
        }
        index_ = std::move(fresh);
        cap_ = cap;
    }

    std::unique_ptr<uint32_t[]> index_;  // make_slot() pairs
    std::size_t cap_ = 0;
    std::size_t size_ = 0;
    std::vector<std::unique_ptr<Node[]>> chunks_;
    Ref high_ = 0;      // slots [0, high_) have been handed out
    Ref free_ = kNone;  // the last erased slot; its key links to the one erased before
};

}  // namespace tlspolicy
