// Exim's ${readsocket} against tlspolicyd: it writes the request, half-closes, reads to EOF.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "harness.h"

using harness::Daemon;
using harness::TempDir;

TEST_CASE("exim ${readsocket}: tcp_table and socketmap requests, inet and unix") {
    TempDir dir;
    const std::string sock = dir.file("tt.sock");
    Daemon d(dir, R"(
[[listen]]
protocol = "tcp_table"
address = "127.0.0.1:0"
[[listen]]
protocol = "socketmap"
address = "127.0.0.1:0"
[[listen]]
protocol = "tcp_table"
address = "unix:)" + sock +
                      "\"\n" + harness::world_dns() + R"(
[overrides]
"dane.example" = "dane-only"
"xn--bcher-kva.example" = "encrypt"
)");
    const std::string tt = "inet:" + d.address("tcp_table");
    const std::string sm = "inet:" + d.address("socketmap");
    struct Row {
        std::string expr;
        std::string want;  // the expansion; exim -be adds a newline of its own
    };
    const std::vector<Row> rows = {
        {"${readsocket{" + tt + "}{get dane.example\\n}{5s}{}{FAILED}}", "200 dane-only\n"},
        {"${readsocket{" + tt + "}{get nothing.example\\n}{5s}{}{FAILED}}",
         "500 secure NXDOMAIN: nothing.example does not exist\n"},
        // Without the newline: the half-close ends the request.
        {"${readsocket{" + tt + "}{get dane.example}{5s}{}{FAILED}}", "200 dane-only\n"},
        {"${readsocket{" + tt + "}{get b%C3%BCcher.example\\n}{5s}{}{FAILED}}", "200 encrypt\n"},
        {"${readsocket{" + sock + "}{get dane.example\\n}{5s}{}{FAILED}}", "200 dane-only\n"},
        // Socketmap framing built in Exim, as the protocol brief describes.
        {"${readsocket{" + sm +
             "}{${strlen:postfix dane.example}:postfix dane.example,}{5s}{}{FAILED}}",
         "12:OK dane-only,"},
        // The policy word alone, as an Exim router or transport would use it.
        {"${if match{${readsocket{" + tt +
             "}{get DANE.example\\n}{5s}{}{FAILED}}}{\\N^200 (.*)$\\N}{$1}{none}}",
         "dane-only"},
    };
    for (const auto& r : rows) {
        CAPTURE(r.expr);
        const auto res = harness::exim_expand(dir, r.expr);
        CHECK(res.exit_code == 0);
        CHECK(res.out == r.want + "\n");
    }
}
