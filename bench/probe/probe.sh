#!/usr/bin/env bash
# probe.sh MODE CADDY [ARGS...]: starts CADDY (a Caddy with caddy-spawn) with
# this directory's Caddyfile (a managed containerd of its own, namespace
# caddy-spawn-probe; routes /warm, pool 4, and /s, pool 8, of the hello
# image), waits for the pools, runs MODE, and stops it. Run as root from
# anywhere; needs `make tools images` done (PATH gets .tools/bin).
#
#   warm    [warmab flags]  paced warm requests vs host CGI (warmab)
#   trace   OUT             warm + perf tracepoints -> OUT.perf.txt, OUT.reqs;
#                           then: segments.py OUT.perf.txt OUT.reqs
#   load    [SECONDS]       wrk -c16 on /s: containers/s, CPU ms each (/proc/stat)
#   profile OUT             wrk -c16 on /s with perf record -a -g for 12 s -> OUT
#                           (perf report -i OUT --sort comm)
#   initmem                 PSS/RSS of the pooled containers' inits
#
# A/B two builds by alternating them: probe.sh warm A; probe.sh warm B; ...
# Quiet machine only: a build or test running beside it moves the figures.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
mode=$1 bin=$2
shift 2
export PATH=$repo/.tools/bin:$PATH PROBE_IMAGES=${PROBE_IMAGES:-$repo/build/images}
hello=${PROBE_HELLO:-/tmp/caddy-spawn-probe-hello}
[ -x "$hello" ] || (cd "$repo" && CGO_ENABLED=0 go build -trimpath -o "$hello" ./examples/functions/hello)
warmab=/tmp/caddy-spawn-probe-warmab
(cd "$here/warmab" && go build -o "$warmab" .)

log=$(mktemp /tmp/caddy-spawn-probe-caddy.XXXXXX.log)
"$bin" run --config "$here/Caddyfile" --adapter caddyfile > "$log" 2>&1 &
caddy=$!
trap 'kill -TERM $caddy 2>/dev/null; wait $caddy 2>/dev/null || true' EXIT
# (Not curl | grep -q: with pipefail, grep's early exit fails curl.)
ready() {
	local m
	m=$(curl -s http://127.0.0.1:2099/metrics 2>/dev/null) || return 1
	grep -q "caddy_spawn_pool_idle{route=\"$1\"} $2" <<<"$m"
}
for _ in $(seq 1 180); do ready warm 4 && ready s 8 && break; sleep 1; done
ready warm 4 && ready s 8 || { echo "pools not full after 3 min; Caddy's log: $log" >&2; exit 1; }
sleep 2
cpu() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }

case $mode in
warm)
	"$warmab" -hello "$hello" "$@"
	;;
trace)
	out=$1
	perf record -q -k CLOCK_MONOTONIC -a -o "$out.data" \
		-e sched:sched_process_fork -e sched:sched_process_exec -e sched:sched_process_exit \
		-e syscalls:sys_enter_pwrite64 \
		-e syscalls:sys_enter_write --filter 'fd <= 2' \
		-e syscalls:sys_exit_read --filter 'ret == 9' \
		-e syscalls:sys_enter_exit_group -e syscalls:sys_exit_wait4 -e syscalls:sys_exit_waitid \
		> /dev/null 2>&1 &
	perf=$!
	sleep 1
	WARMAB_TRACE=1 "$warmab" -hello "$hello" -n "${N:-150}" 2> "$out.reqs"
	kill -INT $perf; wait $perf || true
	perf script -i "$out.data" -F comm,pid,tid,cpu,time,event,trace --ns > "$out.perf.txt" 2>/dev/null
	echo "wrote $out.perf.txt and $out.reqs: $here/segments.py $out.perf.txt $out.reqs"
	;;
load)
	d=${1:-15}
	c0=$(cpu)
	res=$(wrk -c16 -t2 -d"${d}s" http://127.0.0.1:8090/s 2>&1)
	c1=$(cpu)
	reqs=$(awk '/requests in/{print $1}' <<<"$res")
	rps=$(awk '/Requests\/sec/{print $2}' <<<"$res")
	echo "$(basename "$bin"): $rps containers/s, $reqs requests, $(echo "($c1-$c0)*1000/$(getconf CLK_TCK)/$reqs" | bc -l | cut -c1-5) ms CPU each $(grep -i non-2xx <<<"$res" || true)"
	;;
profile)
	out=$1
	wrk -c16 -t2 -d22s http://127.0.0.1:8090/s > "$out.wrk" 2>&1 &
	w=$!
	sleep 4
	perf record -q -a -g -o "$out" -- sleep 12 > /dev/null 2>&1
	wait $w
	grep -E 'Requests/sec' "$out.wrk"
	perf report -i "$out" --sort comm --stdio 2>/dev/null | grep -E '^\s+[0-9]' | head -12
	;;
initmem)
	tot=0 n=0 rss=0
	for p in $(pgrep -x init); do
		grep -q caddy-spawn-probe /proc/$p/cgroup 2>/dev/null || continue
		tot=$((tot + $(awk '/^Pss:/{print $2}' /proc/$p/smaps_rollup)))
		rss=$(awk '/^Rss:/{print $2}' /proc/$p/smaps_rollup)
		n=$((n + 1))
	done
	[ "$n" -gt 0 ] || { echo "no pooled inits found" >&2; exit 1; }
	echo "$n pooled inits: PSS $tot KiB in all, $((tot / n)) KiB each (RSS of one: $rss KiB)"
	;;
*)
	echo "probe.sh: unknown mode $mode" >&2
	exit 2
	;;
esac
