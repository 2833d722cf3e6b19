// Codecs: netstring framing, %XX coding, JSON strings, endpoints, and the wire mapping.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "server/wire.h"
#include "util/endpoint.h"
#include "util/hexquote.h"
#include "util/json.h"
#include "util/log.h"
#include "util/netstring.h"

using namespace tlspolicy;
using State = NetstringDecode::State;

TEST_CASE("netstring_decode: got state/payload, want table") {
    struct Row {
        std::string in;
        std::size_t max;
        State state;
        std::string payload;
        std::size_t consumed;
    };
    const std::vector<Row> rows = {
        {"0:,", 100, State::Complete, "", 3},
        {"5:hello,", 100, State::Complete, "hello", 8},
        {"5:hello,6:world!,", 100, State::Complete, "hello", 8},  // first of two
        {std::string("3:a\0b,", 6), 100, State::Complete, std::string("a\0b", 3), 6},
        {"", 100, State::NeedMore, "", 0},
        {"1", 100, State::NeedMore, "", 0},
        {"12:", 100, State::NeedMore, "", 0},
        {"5:hello", 100, State::NeedMore, "", 0},  // ',' not yet read
        {"5:hellox", 100, State::Malformed, "", 0},
        {":hello,", 100, State::Malformed, "", 0},
        {"05:hello,", 100, State::Malformed, "", 0},  // leading zero
        {"-1:x,", 100, State::Malformed, "", 0},
        {" 1:x,", 100, State::Malformed, "", 0},
        {"a:x,", 100, State::Malformed, "", 0},
        {"101:", 100, State::TooLong, "", 0},
        {"100:", 100, State::NeedMore, "", 0},  // exactly at the limit is fine
        {"99999999999999999999999:", 100, State::TooLong, "", 0},
        {"10001", 10000, State::TooLong, "", 0},  // detected before the ':' arrives
    };
    for (const auto& r : rows) {
        CAPTURE(r.in);
        const auto d = netstring_decode(r.in, r.max);
        CHECK(d.state == r.state);
        CHECK(std::string(d.payload) == r.payload);
        CHECK(d.consumed == r.consumed);
    }
}

TEST_CASE("netstring_append round-trips through netstring_decode") {
    for (std::string p : {std::string(), std::string("OK dane-only"), std::string(1000, 'x'),
                          std::string("a,b:c\0", 6)}) {
        std::string enc;
        netstring_append(enc, p);
        const auto d = netstring_decode(enc, 100000);
        REQUIRE(d.state == State::Complete);
        CHECK(std::string(d.payload) == p);
        CHECK(d.consumed == enc.size());
    }
    std::string enc;
    netstring_append(enc, "NOTFOUND ");
    CHECK(enc == "9:NOTFOUND ,");
}

TEST_CASE("hex_unquote: got decoded or error, want table") {
    struct Row {
        std::string in;
        bool ok;
        std::string out;
    };
    const std::vector<Row> rows = {
        {"example.com", true, "example.com"},
        {"a%20b", true, "a b"},
        {"%41%4a%4A", true, "AJJ"},
        {"%25", true, "%"},
        {"%0A", true, "\n"},
        {"%00x", true, std::string("\0x", 2)},
        {"", true, ""},
        {"%", false, ""},
        {"%4", false, ""},
        {"abc%4", false, ""},
        {"%zz", false, ""},
        {"%4g", false, ""},
    };
    std::string reused = "left over from before";  // hex_unquote_into replaces it
    for (const auto& r : rows) {
        CAPTURE(r.in);
        auto got = hex_unquote(r.in);
        CHECK(got.ok() == r.ok);
        if (r.ok && got.ok()) CHECK(*got == r.out);
        const char* err = hex_unquote_into(r.in, reused);
        CHECK((err == nullptr) == r.ok);
        if (r.ok) CHECK(reused == r.out);
        if (!r.ok) CHECK(got.error().message == err);
    }
}

TEST_CASE("hex_quote encodes what tcp_table must, keeps the rest readable") {
    CHECK(hex_quote("secure match=.example.net:mx.example.com") ==
          "secure match=.example.net:mx.example.com");
    CHECK(hex_quote("100%") == "100%25");
    CHECK(hex_quote("a\nb\r\t") == "a%0Ab%0D%09");
    CHECK(hex_quote("\x7f\xc3\xa9") == "%7F%C3%A9");
    // As Postfix's client quotes requests: spaces too.
    CHECK(hex_quote("a b%", true) == "a%20b%25");
    CHECK(hex_quote("a b%") == "a b%25");
    // Every byte, between runs that stay as they are; appended after what `out` holds.
    std::string all;
    for (int c = 0; c < 256; ++c) {
        all += "ab";
        all += static_cast<char>(c);
    }
    std::string out = "200 ";
    hex_quote_append(out, all);
    REQUIRE(out.rfind("200 ", 0) == 0);
    CHECK(out.find_first_of(std::string("\0\n\r\x7f\x80\xff", 6), 4) == std::string::npos);
    auto all_back = hex_unquote(std::string_view(out).substr(4));
    REQUIRE(all_back.ok());
    CHECK(*all_back == all);
    for (std::string s :
         {std::string("x%y\nz"), std::string("\x01\xff", 2), std::string("plain")}) {
        auto back = hex_unquote(hex_quote(s));
        REQUIRE(back.ok());
        CHECK(*back == s);
    }
}

TEST_CASE("json_string escapes control, quote, backslash and non-ASCII bytes") {
    CHECK(json_string("a\"b\\c") == "\"a\\\"b\\\\c\"");
    CHECK(json_string("\n\x01") == "\"\\n\\u0001\"");
    CHECK(json_string("\xc3\xa9") == "\"\\u00c3\\u00a9\"");
}

TEST_CASE("parse_endpoint: got endpoint or error, want table") {
    struct Row {
        std::string in;
        bool ok;
        std::string canonical;
    };
    const std::vector<Row> rows = {
        {"127.0.0.1:8461", true, "127.0.0.1:8461"},
        {"0.0.0.0:0", true, "0.0.0.0:0"},
        {"[::1]:8461", true, "[::1]:8461"},
        {"[2001:db8::1]:25", true, "[2001:db8::1]:25"},
        {"unix:/run/tlspolicyd/socketmap.sock", true, "unix:/run/tlspolicyd/socketmap.sock"},
        {"unix:relative.sock", false, ""},
        {"unix:", false, ""},
        {"unix:/" + std::string(120, 'x'), false, ""},
        {"localhost:8461", false, ""},
        {"127.0.0.1", false, ""},
        {"127.0.0.1:65536", false, ""},
        {"127.0.0.1:-1", false, ""},
        {"127.0.0.1:", false, ""},
        {"::1:8461", false, ""},
        {"[::1]8461", false, ""},
        {"[127.0.0.1]:8461", false, ""},
        {"", false, ""},
    };
    for (const auto& r : rows) {
        CAPTURE(r.in);
        auto got = parse_endpoint(r.in);
        CHECK(got.ok() == r.ok);
        if (r.ok && got.ok()) CHECK(got->to_string() == r.canonical);
    }
}

TEST_CASE("wire: every outcome maps to socketmap, tcp_table and exit code") {
    struct Row {
        Answer answer;
        std::string socketmap;
        std::string tcp;
        int exit_code;
    };
    const std::vector<Row> rows = {
        {Answer::found("dane-only", Source::Dane), "OK dane-only", "200 dane-only\n", 0},
        {Answer::found("secure match=.x.org:mx.x.org", Source::MtaSts),
         "OK secure match=.x.org:mx.x.org", "200 secure match=.x.org:mx.x.org\n", 0},
        {Answer::not_found("no policy"), "NOTFOUND ", "500 no policy\n", 1},
        {Answer::not_found(""), "NOTFOUND ", "500 not found\n", 1},
        {Answer::temp("MX lookup SERVFAIL"), "TEMP MX lookup SERVFAIL", "400 MX lookup SERVFAIL\n",
         75},
        {Answer::timeout("deadline"), "TIMEOUT deadline", "400 deadline\n", 75},
        {Answer::perm("bad"), "PERM bad", "400 bad\n", 75},
        {Answer::temp(""), "TEMP lookup failed", "400 lookup failed\n", 75},
        // Reasons are sanitised: no raw control bytes reach the client.
        {Answer::temp("a\nb"), "TEMP a\\x0ab", "400 a\\x0ab\n", 75},
        // An empty Found would make Postfix defer with "invalid empty policy": never send it.
        // (PolicyResolver turns it into Temp before it gets here; see resolver_test.)
        {Answer::found("", Source::Override), "TEMP empty policy", "400 empty policy\n", 0},
    };
    // The server writes replies into buffers it reuses: the same bytes, after what is there.
    std::string reused = "a longer reply left over from the request before this one";
    std::string batch = "200 earlier\n";
    std::string want_batch = batch;
    for (const auto& r : rows) {
        CAPTURE(r.socketmap);
        CHECK(socketmap_reply(r.answer) == r.socketmap);
        CHECK(tcp_table_reply(r.answer) == r.tcp);
        CHECK(wire_status(r.answer.outcome).exit_code == r.exit_code);
        socketmap_reply_into(reused, AnswerView(r.answer));
        CHECK(reused == r.socketmap);
        tcp_table_reply_append(batch, AnswerView(r.answer));
        want_batch += r.tcp;
        CHECK(batch == want_batch);
    }
    const std::string long_reason(500, 'r');
    CHECK(wire_reason(Answer::temp(long_reason)).size() <= kMaxWireReason + 3);
}

TEST_CASE("wire: a policy longer than a protocol allows is TEMP there, not cut") {
    // 4092 bytes of policy: "200 " + policy + "\n" is 4097, one over tcp_table's line limit.
    const std::string just_over = "verify match=" + std::string(4092 - 13, 'a');
    const std::string at_limit = just_over.substr(1);
    CHECK(tcp_table_reply(Answer::found(at_limit, Source::MtaSts)).size() == kMaxTcpTableReply);
    CHECK(tcp_table_reply(Answer::found(just_over, Source::MtaSts)) ==
          "400 policy longer than tcp_table allows; use socketmap\n");
    CHECK(socketmap_reply(Answer::found(just_over, Source::MtaSts)) == "OK " + just_over);
    const std::string huge = "verify match=" + std::string(kMaxSocketmapReply, 'a');
    CHECK(socketmap_reply(Answer::found(huge, Source::MtaSts)) ==
          "TEMP policy longer than socketmap allows");
    // Appended after earlier replies, the limit is this reply's alone.
    std::string batch(5000, 'x');
    tcp_table_reply_append(batch, Answer::found(at_limit, Source::MtaSts));
    CHECK(batch.size() == 5000 + kMaxTcpTableReply);
    batch.resize(5000);
    tcp_table_reply_append(batch, Answer::found(just_over, Source::MtaSts));
    CHECK(batch ==
          std::string(5000, 'x') + "400 policy longer than tcp_table allows; use socketmap\n");
}

TEST_CASE("log::sanitize: untrusted bytes become \\xNN, long text is cut") {
    struct Row {
        std::string in;
        std::size_t max;
        std::string want;
    };
    const std::vector<Row> rows = {
        {"example.org", 200, "example.org"},
        {"a\nb\rc\td", 200, "a\\x0ab\\x0dc\\x09d"},
        {"back\\slash", 200, "back\\x5cslash"},
        {"\x1b[31mred", 200, "\\x1b[31mred"},
        {"b\xc3\xbc"
         "cher",
         200, "b\\xc3\\xbccher"},
        {std::string("nul\0x", 5), 200, "nul\\x00x"},
        {"abcdef", 3, "abc..."},
        {"abc", 3, "abc"},
        // An escape that would cross the limit is left out whole (found by fuzz-tcp-table).
        {"ab\x01", 4, "ab..."},
        {"ab\x01", 6, "ab\\x01"},
        {"ab\x01z", 6, "ab\\x01..."},
    };
    for (const auto& r : rows) {
        CAPTURE(r.in);
        CHECK(tlspolicy::log::sanitize(r.in, r.max) == r.want);
    }
}

TEST_CASE("log::json_line: one JSON object, fields in order, strings escaped") {
    using tlspolicy::log::Level;
    CHECK(tlspolicy::log::json_line(Level::Info, "2026-11-23T10:00:00.000Z", "m", {}) ==
          R"({"time":"2026-11-23T10:00:00.000Z","level":"info","msg":"m"})");
    CHECK(
        tlspolicy::log::json_line(Level::Warning, "t", "a \"quoted\" \\ line\n",
                                  {{"domain", "x.example"}, {"duration_ms", "12", true}}) ==
        R"({"time":"t","level":"warning","msg":"a \"quoted\" \\ line\n","domain":"x.example","duration_ms":12})");
}

TEST_CASE("wire: requests as the server parses them") {
    struct Row {
        bool socketmap;
        std::string in;
        bool ok;
        std::string name, key, error;
    };
    const std::vector<Row> rows = {
        {true, "tls example.org", true, "tls", "example.org", ""},
        {true, "tls a b", true, "tls", "a b", ""},  // the first space splits
        {true, "tls ", true, "tls", "", ""},
        {true, " example.org", false, "", "", "malformed request: expected NAME KEY"},
        {true, "example.org", false, "", "", "malformed request: expected NAME KEY"},
        {true, "", false, "", "", "malformed request: expected NAME KEY"},
        {false, "get example.org", true, "", "example.org", ""},
        {false, "get example.org\r", true, "", "example.org", ""},
        {false, "get a%20b%25", true, "", "a b%", ""},
        {false, "get ", true, "", "", ""},
        {false, "get a%2", false, "", "", "malformed hex escape in key"},
        {false, "get a%zz", false, "", "", "malformed hex escape in key"},
        {false, "put example.org 1", false, "", "", "put is not supported"},
        {false, "GET example.org", false, "", "", "unknown request: expected get KEY"},
        {false, "get", false, "", "", "unknown request: expected get KEY"},
        {false, "", false, "", "", "unknown request: expected get KEY"},
    };
    // One request reused for every row, as the server does: nothing may carry over.
    WireRequest reused;
    reused.name = "stale name";
    reused.key = "stale.key.example";
    reused.error = "stale error";
    for (const Row& r : rows) {
        CAPTURE(r.in);
        const WireRequest got =
            r.socketmap ? parse_socketmap_request(r.in) : parse_tcp_table_request(r.in);
        CHECK(got.ok == r.ok);
        CHECK(got.name == r.name);
        CHECK(got.key == r.key);
        CHECK(got.error == r.error);
        if (r.socketmap)
            parse_socketmap_request_into(r.in, reused);
        else
            parse_tcp_table_request_into(r.in, reused);
        CHECK(reused.ok == r.ok);
        CHECK(reused.name == r.name);
        CHECK(reused.key == r.key);
        CHECK(reused.error == r.error);
    }
}
