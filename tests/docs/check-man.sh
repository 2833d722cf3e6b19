#!/usr/bin/env bash
# Checks the man pages in MANDIR: each renders with man-db (UTF-8, 80 columns) without a
# groff warning and with exit 0, has the standard sections and the words that page must
# cover, and tlspolicyd.toml(5) documents every key `tlspolicy check-config --keys` prints.
#
# usage: check-man.sh MANDIR [TLSPOLICY]
# The tlspolicy binary is $2, else $TLSPOLICY, else ./tlspolicy (meson runs tests in the build
# directory). Without one, the key check is reported as skipped, not silently dropped.
# Prints one line per failure and one summary line "man: N passed, N failed" (N counts
# individual checks); exits 1 if any check failed, 2 on bad usage.
set -uo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ] || [ ! -d "$1" ]; then
    echo "usage: $0 MANDIR [TLSPOLICY]" >&2
    exit 2
fi
mandir=$1
tlspolicy=${2:-${TLSPOLICY:-}}
if [ -z "$tlspolicy" ] && [ -x ./tlspolicy ]; then tlspolicy=./tlspolicy; fi

passed=0
failed=0
pass() { passed=$((passed + 1)); }
fail() {
    failed=$((failed + 1))
    echo "FAIL: $*"
}

work=$(mktemp -d /tmp/check-man.XXXXXX)
trap 'rm -rf "$work"' EXIT

# render PAGE: the page as man shows it on an 80-column UTF-8 terminal, into $work/PAGE.txt;
# one check: exit 0 and nothing on stderr (groff warnings go there).
render() {
    local page=$1 name
    name=$(basename "$page")
    env -u MAN_KEEP_FORMATTING -u MANROFFOPT -u MANPAGER -u PAGER \
        LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$page" \
        >"$work/$name.txt" 2>"$work/$name.err"
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        fail "$name: man exited $rc: $(head -c 500 "$work/$name.err")"
    elif [ -s "$work/$name.err" ]; then
        fail "$name: groff/man warnings:"
        sed 's/^/    /' "$work/$name.err"
    elif [ ! -s "$work/$name.txt" ]; then
        fail "$name: rendered to nothing"
    else
        pass
    fi
    # The same text on one line with single spaces, for phrases that may wrap.
    tr -s ' \n' '  ' <"$work/$name.txt" >"$work/$name.flat"
}

# heading PAGE WORD: WORD is a section heading (a line of its own at the left margin).
heading() {
    if grep -qxF -- "$2" "$work/$1.txt"; then pass; else fail "$1: no section heading \"$2\""; fi
}

# has PAGE TEXT...: each TEXT occurs in the rendered page, line breaks and runs of spaces
# counting as one space (one check each).
has() {
    local page=$1 text
    shift
    for text in "$@"; do
        if grep -qF -- "$text" "$work/$page.flat"; then
            pass
        else
            fail "$page: the rendered page does not mention \"$text\""
        fi
    done
}

pages=(tlspolicyd.8 tlspolicy.1 tlspolicyd.toml.5)
for page in "${pages[@]}"; do
    if [ ! -f "$mandir/$page" ]; then
        fail "$page: missing in $mandir"
        continue
    fi
    render "$mandir/$page"
    for h in NAME SYNOPSIS DESCRIPTION "SEE ALSO"; do heading "$page" "$h"; done
done

if [ -s "$work/tlspolicyd.8.txt" ]; then
    for h in OPTIONS SIGNALS "EXIT STATUS" ENVIRONMENT FILES; do heading tlspolicyd.8 "$h"; done
    has tlspolicyd.8 "tlspolicyd [-c FILE]" SIGHUP SIGTERM READY=1 RELOADING=1 STOPPING=1 \
        "Socket activation" LISTEN_FDS STATE_DIRECTORY JOURNAL_STREAM NOTIFY_SOCKET \
        "control.sock" "metrics.address" socketmap tcp_table "tlspolicy(1)" \
        "tlspolicyd.toml(5)"
    # Every exit status the daemon uses.
    for code in 0 1 64 78; do
        if grep -qE "^       $code  " "$work/tlspolicyd.8.txt"; then pass; else
            fail "tlspolicyd.8: EXIT STATUS does not list $code"
        fi
    done
fi

if [ -s "$work/tlspolicy.1.txt" ]; then
    for h in OPTIONS COMMANDS "EXIT STATUS" ENVIRONMENT FILES EXAMPLES; do
        heading tlspolicy.1 "$h"
    done
    # Every command and option of the CLI contract.
    has tlspolicy.1 "check-config" "--keys" "query" "--json" "--fresh" "prefetch" \
        "--parallel" "--top" "--from-maillog" "--progress" "--no-progress" \
        "cache list" "cache show" "cache purge" "cache export" "--config" "--help" "--version" \
        "prefetch.lock" "another prefetch (pid N) is running; nothing done"
    for code in 0 1 64 66 73 75 78; do
        if grep -qE "^       $code  " "$work/tlspolicy.1.txt"; then pass; else
            fail "tlspolicy.1: EXIT STATUS does not list $code"
        fi
    done
fi

if [ -s "$work/tlspolicyd.toml.5.txt" ]; then
    heading tlspolicyd.toml.5 "DECISION TABLE"
    # Every section of the file is a heading of its own.
    for s in "[[listen]]" "[server]" "[log]" "[metrics]" "[control]" "[dns]" "[mta_sts]" \
        "[policy]" "[cache]" "[overrides]"; do
        heading tlspolicyd.toml.5 "$s"
    done
    has tlspolicyd.toml.5 "[policy.profiles.NAME]" dane-only dane encrypt "verify match=" \
        "not found" TEMP "testing_mode"

    # Every key the program knows, by the dotted name --keys prints, documented as an entry
    # of its own (an indented line that starts with the key).
    if [ -z "$tlspolicy" ]; then
        echo "NOTE: key check skipped: no tlspolicy binary (give it as \$2 or \$TLSPOLICY)"
    elif ! "$tlspolicy" check-config --keys >"$work/keys.txt" 2>"$work/keys.err"; then
        fail "$tlspolicy check-config --keys failed: $(head -c 300 "$work/keys.err")"
    else
        nkeys=0
        while read -r key _; do
            nkeys=$((nkeys + 1))
            if grep -qE "^ +(.*, )?$(printf '%s' "$key" | sed 's/[].[*^$]/\\&/g')( |,|$)" \
                "$work/tlspolicyd.toml.5.txt"; then
                pass
            else
                fail "tlspolicyd.toml.5: key $key (from check-config --keys) is not documented"
            fi
        done < <(grep -E '^[a-z]' "$work/keys.txt")
        if [ "$nkeys" -ge 10 ]; then pass; else
            fail "check-config --keys printed only $nkeys keys"
        fi
    fi
fi

echo "man: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
