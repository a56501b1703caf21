#!/usr/bin/env python3
"""segments.py PERF_TXT REQS: the warm request's segments from probe.sh trace.

PERF_TXT is `perf script` output of the tracepoints probe.sh records, REQS
warmab's log of each request's CLOCK_MONOTONIC start and end ("REQ" warm,
"CGI" host CGI; CGI requests after the last warm one ran back to back).
Prints p50 per segment: for the warm requests, the init's steps from the
thaw (Caddy's pwrite of the freezer) to its exit record; for warm and host
CGI alike, client -> fork, fork -> exec, the program, its exit -> the
parent's wait, wait -> the client's last byte.
"""
import bisect
import re
import statistics
import sys

LINE = re.compile(r'\s*(\S+)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)')


def load(perf_txt, reqs_file):
    reqs = []
    for line in open(reqs_file):
        p = line.split()
        if len(p) == 3 and p[0] in ('REQ', 'CGI'):
            reqs.append((p[0], int(p[1]) / 1e9, int(p[2]) / 1e9))
    ev = []
    for line in open(perf_txt):
        m = LINE.match(line)
        if m:
            comm, pid, tid, cpu, t, name, rest = m.groups()
            ev.append((float(t), comm, int(pid), int(tid), int(cpu), name, rest))
    ev.sort()
    return reqs, ev


def main():
    reqs, ev = load(sys.argv[1], sys.argv[2])
    if not any(k == 'REQ' for k, _, _ in reqs):
        sys.exit('no warm requests in ' + sys.argv[2])
    lastwarm = max(b for k, _, b in reqs if k == 'REQ')
    ts = [x[0] for x in ev]
    segs = {}

    def add(k, v):
        segs.setdefault(k, []).append(v * 1000)

    for kind, a, b in reqs:
        e = ev[bisect.bisect_left(ts, a):bisect.bisect_right(ts, b)]

        def first(pred, after=a):
            return next((x for x in e if x[0] >= after and pred(x)), None)

        ex = first(lambda x: x[5] == 'sched:sched_process_exec' and 'hello' in x[6])
        if not ex:
            continue
        hp = ex[2]
        fk = first(lambda x: x[5] == 'sched:sched_process_fork' and ('child_pid=%d ' % hp) in x[6] + ' ')
        gd = first(lambda x: x[2] == hp and x[5] == 'sched:sched_process_exit' and 'group_dead=true' in x[6], ex[0])
        if not (fk and gd):
            continue
        wt = first(lambda x: x[5] in ('syscalls:sys_exit_wait4', 'syscalls:sys_exit_waitid') and x[1] != 'hello', gd[0])
        k = 'warm' if kind == 'REQ' else ('host CGI, back to back' if a > lastwarm else 'host CGI, paced')
        add(k + ': a client -> fork', fk[0] - a)
        add(k + ': b fork -> exec', ex[0] - fk[0])
        add(k + ': c exec -> program dead', gd[0] - ex[0])
        if wt:
            add(k + ': d dead -> wait returns', wt[0] - gd[0])
            add(k + ': e wait -> client end', b - wt[0])
        add(k + ': total', b - a)
        if kind != 'REQ':
            continue
        thaw = first(lambda x: x[1] == 'caddy' and x[5] == 'syscalls:sys_enter_pwrite64' and 'count: 0x00000006' in x[6])
        rd = thaw and first(lambda x: x[1] == 'init' and x[5] == 'syscalls:sys_exit_read', thaw[0])
        rec = first(lambda x: x[1] == 'init' and x[5] == 'syscalls:sys_enter_write' and 'fd: 0x00000002' in x[6], ex[0])
        if thaw and rd and rec:
            add('warm, the init: 1 client -> thaw', thaw[0] - a)
            add('warm, the init: 2 thaw -> frame read', rd[0] - thaw[0])
            add('warm, the init: 3 frame read -> fork', fk[0] - rd[0])
            add('warm, the init: 4 program dead -> exit record', rec[0] - gd[0])
            add('warm, the init: 5 exit record -> client end', b - rec[0])
    for k in sorted(segs):
        v = sorted(segs[k])
        print(f"{k:48s} n={len(v):3d}  p50 {statistics.median(v):.3f}  p25 {v[len(v) // 4]:.3f}  p75 {v[3 * len(v) // 4]:.3f} ms")


if __name__ == '__main__':
    main()
