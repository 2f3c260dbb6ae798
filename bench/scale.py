"""Scaling against nginx: small GETs from 1 to 5,000 connections, and a burst of newcomers under load.

    python -m bench scale [--only curve burst] [--duration S] [--steps N...] [--burst N]

Every server is a child process on 127.0.0.1 serving one temporary root, its
access log on and written to a file, as in ``bench peers``: nginx with 2
workers, minihttp --workers 2 (as many processes as nginx: the targets are
its), and minihttp in one process (for context).

curve   GET of a 1 KiB file with keep-alive, by ``wrk -t1 --latency --timeout
        2s`` at -c1, -c64, -c1000 and -c5000 (``--steps``), the servers loaded
        in turn at each step: requests/s, p99, wrk's timeouts (requests not
        answered within 2 s) and the server's RSS (all its processes, sampled
        during the step).  Targets: no timeouts at any step; p99 at -c1000
        within 3x nginx's; RSS per active connection (its growth from the -c1
        step to the largest, divided by the connections) under 16 KiB.
burst   200 keep-alive connections kept busy by wrk, then 1,000 new
        connections at once, each making one GET (bench._support.get_many, a
        selector client): all answered within 10 s, and the p99 from connect to
        the whole answer within 2x nginx's.

About a minute and a half with the defaults on two cores.
"""

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from bench import _results
from bench._support import (MiB, START_TIMEOUT, children, fetch, get_many, memory, percentile,
                            raise_open_files, wrk)
from bench.peers import (NGINX, SMALL, SMALL_SIZE, WORKERS, make_root, record, skipped,
                         start_nginx, start_ours)

MINIHTTP = 'minihttp'
STEPS = (1, 64, 1000, 5000)
WRK_TIMEOUT = 2.0           # wrk's own default, said outright
BURST_TIMEOUT = 10.0        # a newcomer not answered by then counts as unanswered
# Targets (issue 13).
P99_RATIO_STEP = 1000       # p99 at this step within P99_RATIO times nginx's
P99_RATIO = 3.0
BURST_RATIO = 2.0           # burst p99 within this many times nginx's
RSS_PER_CONNECTION = 16     # KiB per active connection, at most


def rss(pid):
    """VmRSS of a process and its children (a server's workers), in bytes."""
    total = 0
    for each in (pid, *children(pid)):
        with contextlib.suppress(OSError, StopIteration):
            total += memory(each)
    return total


class RssPeak:
    """The largest RSS of a server while the block runs, sampled every 50 ms in a thread."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = rss(pid)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._done.wait(0.05):
            self.peak = max(self.peak, rss(self.pid))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss(self.pid))


def timeouts(load):
    """The requests wrk gave up on after WRK_TIMEOUT, from its socket-error line."""
    for error in load.errors:
        if error.startswith('Socket errors:'):
            return int(error.rsplit('timeout', 1)[1].strip())
    return 0


def start_servers(stack, work, root, connections):
    """{name: server} of every server there is, each entered in ``stack``, checked once."""
    starters = {}
    if shutil.which('nginx'):
        # Room in either worker for every connection, however the kernel spreads them.
        starters[NGINX] = lambda: start_nginx(work, root, connections=connections + 1000)
    else:
        skipped(NGINX, 'nginx')
    starters[WORKERS] = lambda: start_ours(work, root, '--workers', 2, label=WORKERS)
    starters[MINIHTTP] = lambda: start_ours(work, root)
    servers = {name: stack.enter_context(start()) for name, start in starters.items()}
    expected = open(os.path.join(root, SMALL[1:]), 'rb').read()
    for name, server in servers.items():
        status, body, _ = fetch(server.port, SMALL)
        if status != 200 or body != expected:
            raise SystemExit(f'{name} answered GET {SMALL} with {status}, {len(body)} B')
    return servers


# -- the curve -----------------------------------------------------------------------------

def curve(work, root, steps, duration):
    print(f'small GET {SMALL} ({SMALL_SIZE} B), keep-alive, wrk -t1 --latency --timeout '
          f'{WRK_TIMEOUT:g}s -d{duration}s at {", ".join(f"-c{c}" for c in steps)}; '
          'servers in turn at each step; access logs on')
    results = {}
    with contextlib.ExitStack() as stack:
        servers = start_servers(stack, work, root, max(steps))
        for connections in steps:
            for name, server in servers.items():
                with RssPeak(server.pid) as peak:
                    load = wrk(f'http://127.0.0.1:{server.port}{SMALL}', duration, connections,
                               extra=('--timeout', f'{WRK_TIMEOUT:g}s'))
                results[name, connections] = load, peak.peak
    names = list(servers)
    rates, p99s = {}, {}
    for connections in steps:
        scenario = f'scaling: small GET 1 KiB, wrk -c{connections}'
        print(f'  -c{connections}:')
        for name in names:
            load, peak = results[name, connections]
            rates.setdefault(f'-c{connections}', {})[name] = load.rate
            p99s.setdefault(f'-c{connections}', {})[name] = load.latency[99] * 1000
            print(f'    {name:22} {load.rate:8.0f} requests/s, p99 {load.latency[99] * 1000:8.2f}'
                  f' ms, {timeouts(load):5d} timeouts, RSS {peak / MiB:7.1f} MiB '
                  f'{" ".join(load.errors)}')
        nginx = results.get((NGINX, connections))
        for name in names:
            if name == NGINX:
                continue
            load, peak = results[name, connections]
            if nginx:
                record(scenario, f'{name}, requests/s', load.rate, 'req/s', peer=NGINX,
                       peer_value=nginx[0].rate)
                record(scenario, f'{name}, p99 latency', load.latency[99] * 1000, 'ms',
                       peer=NGINX, peer_value=nginx[0].latency[99] * 1000, lower_is_better=True,
                       target=(1 / P99_RATIO if connections == P99_RATIO_STEP and name == WORKERS
                               else None))
            record(scenario, f'{name}, wrk timeouts', timeouts(load), 'requests', target=0,
                   lower_is_better=True)
        if nginx:
            record(scenario, f'{NGINX}, wrk timeouts', timeouts(nginx[0]), 'requests')
    low, high = min(steps), max(steps)
    if high > low:
        for name in names:
            grown = results[name, high][1] - results[name, low][1]
            per = grown / (high - low) / 1024
            print(f'  {name}: RSS {results[name, low][1] / MiB:.1f} MiB at -c{low}, '
                  f'{results[name, high][1] / MiB:.1f} MiB at -c{high}: {per:.2f} KiB '
                  'per active connection')
            record(f'scaling: RSS from -c{low} to -c{high}',
                   f'{name}, RSS per active connection', per, 'KiB',
                   target=None if name == NGINX else RSS_PER_CONNECTION, lower_is_better=True)
    _results.bars('scaling, small GET 1 KiB: requests/s (higher is better)', 'requests/s',
                  rates)
    _results.bars('scaling, small GET 1 KiB: p99 latency (lower is better)', 'ms', p99s,
                  log=True)


# -- the burst -----------------------------------------------------------------------------

def established(port):
    """Established TCP connections whose local port is ``port`` (the server's side, IPv4)."""
    with open('/proc/net/tcp') as table:
        rows = [line.split() for line in table][1:]
    return sum(1 for row in rows if row[3] == '01' and int(row[1].split(':')[1], 16) == port)


@contextlib.contextmanager
def busy_load(port, connections, give_up):
    """wrk keeping ``connections`` keep-alive connections busy until the block ends."""
    proc = subprocess.Popen(['wrk', '-t1', f'-c{connections}', f'-d{int(give_up)}s',
                             f'http://127.0.0.1:{port}{SMALL}'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # /proc cannot be waited on: look every 50 ms until wrk holds them all.
        deadline = time.monotonic() + START_TIMEOUT
        while established(port) < connections:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f'wrk did not open {connections} connections to port {port}')
            time.sleep(0.05)
        yield
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(START_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def burst(work, root, count, busy, rounds):
    print(f'a burst of {count} new connections (one GET each) under {busy} busy keep-alive '
          f'connections (wrk -t1), {rounds} rounds per server in turn; p99 from connect to '
          'the whole answer')
    latencies = {}
    with contextlib.ExitStack() as stack:
        servers = start_servers(stack, work, root, count + busy)
        for _ in range(rounds):
            for name, server in servers.items():
                with busy_load(server.port, busy, 60 + BURST_TIMEOUT):
                    got, _ = get_many(server.port, SMALL, count, timeout=BURST_TIMEOUT)
                latencies.setdefault(name, []).append(got)
    scenario = f'scaling: burst of {count} connections under {busy} busy'
    p99 = {}
    for name, runs in latencies.items():
        answered = min(sum(1 for x in run if x is not None) for run in runs)
        p99s = [percentile(run, 99) or float('inf') for run in runs]
        medians = [percentile(run, 50) or float('inf') for run in runs]
        p99[name] = sorted(p99s)[len(p99s) // 2] * 1000
        print(f'    {name:22} answered {answered} of {count} (fewest of {rounds}); p50 '
              f'{", ".join(f"{m * 1000:.0f}" for m in medians)} ms, p99 '
              f'{", ".join(f"{p * 1000:.0f}" for p in p99s)} ms')
        record(scenario, f'{name}, answered within {BURST_TIMEOUT:g} s', answered, 'requests',
               target=count)
    for name in latencies:
        if name != NGINX:
            record(scenario, f'{name}, p99 to the whole first answer', p99[name], 'ms',
                   peer=NGINX if NGINX in p99 else None, peer_value=p99.get(NGINX),
                   lower_is_better=True,
                   target=1 / BURST_RATIO if name == WORKERS and NGINX in p99 else None)
    if NGINX in p99:
        record(scenario, f'{NGINX}, p99 to the whole first answer', p99[NGINX], 'ms')


# -- the run -------------------------------------------------------------------------------

SCENARIOS = ('curve', 'burst')


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m bench scale', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--only', nargs='+', choices=SCENARIOS, default=list(SCENARIOS),
                        metavar='SCENARIO', help=f'scenarios to run: {", ".join(SCENARIOS)}')
    parser.add_argument('--duration', type=int, default=3, help='seconds of each wrk run (3)')
    parser.add_argument('--steps', type=int, nargs='+', default=list(STEPS),
                        help='wrk -c of each step (1 64 1000 5000)')
    parser.add_argument('--burst', type=int, default=1000, help='new connections (1000)')
    parser.add_argument('--busy', type=int, default=200, help='busy connections (200)')
    parser.add_argument('--rounds', type=int, default=3, help='bursts per server (3)')
    args = parser.parse_args(argv)
    if not shutil.which('wrk'):
        skipped('the scaling curve and the burst', 'wrk')
        return 0
    started = time.monotonic()
    raise_open_files()         # wrk -c5000 and the burst inherit it
    work = tempfile.mkdtemp(prefix='minihttp-bench-scale-')
    try:
        root = make_root(work)
        if 'curve' in args.only:
            curve(work, root, sorted(args.steps), args.duration)
        if 'burst' in args.only:
            burst(work, root, args.burst, args.busy, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f'scale benchmark took {time.monotonic() - started:.0f} s')
    return 0


if __name__ == '__main__':
    import sys
    sys.exit(main())
