# CPU accounting shared by bench/compare.sh and bench/cold-prefetch.sh (sourced, not run).
# children_cpu writes its scratch file into "$dir", which the sourcing script sets.
hz=$(getconf CLK_TCK)
cpu_busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }  # all cores, jiffies
proc_cpu() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }  # utime + stime
# Seconds of user + system time of the waited-for children of this shell, in $children_s
# (`times` must run in this shell, not in a $(...) subshell, which has no children of its own).
children_cpu() {
  times >"$dir/times"
  children_s=$(awk 'NR == 2 {
         split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.3f\n", u[1] * 60 + u[2] + s[1] * 60 + s[2]
       }' "$dir/times")
}
