#include "util/options.h"

#include <getopt.h>

namespace tlspolicy {

std::variant<CommonOptions, int> parse_common_options(int argc, char** argv, const char* program,
                                                      bool stop_at_operand,
                                                      void (*usage)(std::FILE*)) {
    static const option longopts[] = {{"config", required_argument, nullptr, 'c'},
                                      {"help", no_argument, nullptr, 'h'},
                                      {"version", no_argument, nullptr, 'V'},
                                      {nullptr, 0, nullptr, 0}};
    CommonOptions out;
    const char* shortopts = stop_at_operand ? "+c:hV" : "c:hV";
    for (int c; (c = getopt_long(argc, argv, shortopts, longopts, nullptr)) != -1;) {
        switch (c) {
            case 'c':
                out.config_path = optarg;
                break;
            case 'h':
                usage(stdout);
                return 0;
            case 'V':
                std::printf("%s %s\n", program, TLSPOLICY_VERSION);
                return 0;
            default:
                usage(stderr);
                return 64;
        }
    }
    out.next = optind;
    return out;
}

}  // namespace tlspolicy
