#!/bin/bash
# teardown-check.sh WORLD PID...: after stop-world.sh, none of PIDs may still run (zombies
# waiting for PID 1 run nothing and do not count), and no process may mention WORLD in its
# command line.  Prints "world-teardown: 1 passed, 0 failed" or the survivors.
set -u
work=$1
shift
left=""
for _ in $(seq 50); do
    left=""
    for p in "$@"; do
        st=$(awk '/^State:/{print $2}' "/proc/$p/status" 2>/dev/null) || continue
        [ -n "$st" ] && [ "$st" != Z ] && left="$left $p"
    done
    [ -z "$left" ] && break
    sleep 0.1
done
procs=$(ps -eo pid=,stat=,args=)   # snapshot first, so our own grep is not in it
stray=$(printf '%s\n' "$procs" | grep -F "$work/" | awk '$2 !~ /Z/')
if [ -z "$left" ] && [ -z "$stray" ]; then
    echo "world-teardown: 1 passed, 0 failed"
else
    echo "FAIL left running:$left $stray"
    echo "world-teardown: 0 passed, 1 failed"
    exit 1
fi
