"""Files benchmark: minihttp serve against http.server on the same directory, and uploads.

    python -m bench files [--duration SECONDS] [--connections N] [--size SIZE]

In one run, each server in a process of its own, serving one temporary
directory (removed at the end, 1 GiB files included):

1. Small-file GET requests per second with keep-alive, by ``wrk`` (else by
   load processes of our own), ``minihttp serve`` against the standard
   library's ThreadingHTTPServer with SimpleHTTPRequestHandler, given every
   fair chance: HTTP/1.1 keep-alive, TCP_NODELAY, no access log (as
   ``--quiet``).  Target: 5x.
2. Download MB/s of a 1 GiB file with ``curl -o /dev/null``.  Target: 1.2x.
3. Upload MB/s of 1 GiB with ``curl -T`` to ``PUT /uploads/...``, with
   Content-Length and chunked (http.server cannot take uploads), against a
   ceiling measured in the same run with the same curl command: a raw-socket
   sink that writes what it receives to a file, fsyncs it (as minihttp does)
   and answers.  Target: 0.6 of the sink.
4. minihttp's peak resident memory (VmHWM) after all that.  Target: under 64 MiB.

Each figure comes with the server CPU it cost (from /proc/PID/stat).  A 1 GiB
download is bounded by curl and the loopback as much as by the server, and
varies from run to run, so the CPU column says what each server spent.
minihttp's upload costs the sink's work plus a sha256 of every byte, which
the sink skips; it also flushes to disk every 64 MiB on the way, while the
sink flushes everything at the end, as a minimal server would.
"""

import argparse
import functools
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from bench import _results
from bench._support import (MB, GiB, MiB, ServerProcess, cpu_seconds, download, memory,
                            start_minihttp, stored_by_minihttp, typical, upload, write_random,
                            wrk)
from bench.http import child
from minihttp.cli import size

SMALL_SIZE = 2048          # bytes of the small file
RPS_TARGET = 5.0
DOWNLOAD_TARGET = 1.2
UPLOAD_TARGET = 0.6
MEMORY_TARGET = 64 * MiB
# Transfers per server, taken in turns so that both meet the same page cache and
# the same neighbours; the median of each counts (the best would favour whichever
# server varies most: http.server's downloads run at 1.2 to 3.4 GB/s here).
RUNS = 5
SINK_BUFFER = 256 * 1024


# -- the ceiling for uploads: a raw-socket sink ------------------------------------------

CONTINUE = b'HTTP/1.1 100 Continue\r\n\r\n'
CREATED = b'HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
# The end of a chunked body with no trailers: the CRLF after the last data, the
# last chunk, the empty trailer section.  Random data ending a recv with these
# seven bytes is a 1 in 2**56 chance per recv: good enough for a ceiling.
CHUNKED_END = b'\r\n0\r\n\r\n'


def sink_one(conn, directory):
    """Take one PUT: its head, then every byte of the body written to a file."""
    buf = bytearray(SINK_BUFFER)
    view = memoryview(buf)
    head = b''
    while b'\r\n\r\n' not in head:
        got = conn.recv(65536)
        if not got:
            return
        head += got
    head, _, first = head.partition(b'\r\n\r\n')
    fields = head.lower()
    length = re.search(rb'\r\ncontent-length: *(\d+)', fields)
    if b'\r\nexpect: 100-continue' in fields:
        conn.sendall(CONTINUE)
    path = os.path.join(directory, 'sink.bin')
    with open(path, 'wb', buffering=0) as file:
        file.write(first)
        if length:
            left = int(length[1]) - len(first)
            while left > 0:
                got = conn.recv_into(view)
                if not got:
                    return
                file.write(view[:got])
                left -= got
        else:
            tail = first[-len(CHUNKED_END):]
            while tail != CHUNKED_END:
                got = conn.recv_into(view)
                if not got:
                    return
                file.write(view[:got])
                tail = (tail + view[max(0, got - len(CHUNKED_END)):got])[-len(CHUNKED_END):]
        os.fsync(file.fileno())
    conn.sendall(CREATED)


def serve_sink(directory):
    """The sink's process: one connection at a time, forever."""
    with socket.create_server(('127.0.0.1', 0)) as listener:
        print(f'sink server listening on http://127.0.0.1:{listener.getsockname()[1]}/',
              flush=True)
        while True:
            conn, _ = listener.accept()
            with conn:
                sink_one(conn, directory)


# -- measurements -----------------------------------------------------------------------

def wrk_requests(url, duration, connections):
    """Keep-alive GETs of one URL made by wrk in ``duration`` s; non-2xx answers are an error."""
    load = wrk(url, duration, connections)
    if any(error.startswith('Non-2xx') for error in load.errors):
        raise SystemExit(f'wrk {url}: {load.errors}')
    return load.requests


def get_loop(port, path, deadline, counts):
    """One keep-alive connection GETting ``path`` until ``deadline`` (the fallback load)."""
    connection = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    done = 0
    while time.monotonic() < deadline:
        connection.request('GET', path)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f'GET {path}: {response.status}')
        done += 1
    connection.close()
    counts.append(done)


def load_process(port, path, connections, duration):
    """A load process of the fallback: ``connections`` threads, prints its request count."""
    counts = []
    deadline = time.monotonic() + duration
    threads = [threading.Thread(target=get_loop, args=(port, path, deadline, counts))
               for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(sum(counts), flush=True)


def own_load_requests(url, duration, connections):
    """GETs made by two load processes of http.client threads (when wrk is missing)."""
    port, path = re.fullmatch(r'http://127\.0\.0\.1:(\d+)(/.*)', url).groups()
    share = [connections // 2, connections - connections // 2]
    procs = [subprocess.Popen([sys.executable, '-m', 'bench.files', '--load', port, path,
                               str(n), str(duration)], stdout=subprocess.PIPE, text=True)
             for n in share if n]
    return sum(int(p.communicate(timeout=duration + 60)[0]) for p in procs)


# -- the run ----------------------------------------------------------------------------

def make_files(root, size):
    """The small file and a ``size``-byte random one; returns the big one's sha256."""
    with open(os.path.join(root, 'small.html'), 'wb') as file:
        file.write((b'<p>a small file</p>\n' * SMALL_SIZE)[:SMALL_SIZE])
    return write_random(os.path.join(root, 'big.bin'), size)


def run(duration, connections, size):
    if not shutil.which('curl'):
        raise SystemExit('the files benchmark needs curl')
    load, tool = (wrk_requests, 'wrk -t1') if shutil.which('wrk') else \
        (own_load_requests, 'http.client load processes (install wrk for a faster load)')
    work = tempfile.mkdtemp(prefix='minihttp-bench-files-')
    root, uploads, sink_dir = (os.path.join(work, name) for name in ('root', 'uploads', 'sink'))
    for directory in (root, uploads, sink_dir):
        os.mkdir(directory)
    servers = []
    try:
        started = time.monotonic()
        sha256 = make_files(root, size)
        big = os.path.join(root, 'big.bin')
        stdlib = child('stdlib files', '--stdlib-files', root)
        servers.append(stdlib)
        minihttp = start_minihttp('--root', root, '--uploads', uploads)
        servers.append(minihttp)
        sink = ServerProcess('sink', [sys.executable, '-m', 'bench.files', '--sink', sink_dir])
        servers.append(sink)
        pid = minihttp.pid
        print(f'files: minihttp serve against http.server (ThreadingHTTPServer, '
              f'SimpleHTTPRequestHandler, HTTP/1.1, TCP_NODELAY, no log), same directory; '
              f'minihttp VmHWM at start {memory(pid, "VmHWM") / MiB:.1f} MiB')

        scenario = f'files: small GET {SMALL_SIZE} B, -c{connections}, no access logs'
        print(f'small-file GET /small.html ({SMALL_SIZE} B), keep-alive, {connections} '
              f'connections, {duration} s per server, by {tool}')
        rates = {}
        for name, server in (('http.server', stdlib), ('minihttp', minihttp)):
            before = cpu_seconds(server.pid)
            count = load(f'http://127.0.0.1:{server.port}/small.html', duration, connections)
            cpu = cpu_seconds(server.pid) - before
            rates[name] = count / duration
            print(f'  {name:22} {rates[name]:8.0f} requests/s, {cpu / count * 1e6:4.0f} us '
                  'of server CPU each')
        workers = os.cpu_count() or 1
        if workers > 1:
            # One process runs one Python thread at a time; --workers forks more.
            name = f'minihttp --workers {workers}'
            pool = start_minihttp('--root', root, '--uploads', uploads, '--workers', str(workers))
            servers.append(pool)
            rates[name] = load(f'http://127.0.0.1:{pool.port}/small.html', duration,
                               connections) / duration
            pool.stop()
            print(f'  {name:22} {rates[name]:8.0f} requests/s')
        for name, rate in rates.items():
            if name != 'http.server':
                row = _results.record(scenario, name, rate, 'req/s', peer='http.server',
                                      peer_value=rates['http.server'], target=RPS_TARGET)
                print(f'  ratio {row.ratio:.2f}x for {name} (target {RPS_TARGET:g}x: '
                      f'{row.verdict})')

        print(f'download of {size / GiB:g} GiB with curl -o /dev/null, median of {RUNS}')
        times = typical({name: (server.pid,
                                functools.partial(download, server.port, '/big.bin', size))
                         for name, server in (('http.server', stdlib), ('minihttp', minihttp))},
                        RUNS)
        for name, (seconds, cpu) in times.items():
            print(f'  {name:12} {size / seconds / MB:10.0f} MB/s, server CPU {cpu:.2f} s')
        row = _results.record(f'files: download {size / GiB:g} GiB', 'minihttp',
                              size / times['minihttp'][0] / MB, 'MB/s', peer='http.server',
                              peer_value=size / times['http.server'][0] / MB,
                              target=DOWNLOAD_TARGET)
        print(f'  ratio {row.ratio:.2f}x (target {DOWNLOAD_TARGET:g}x: {row.verdict})')

        for framing in ('content-length', 'chunked'):
            print(f'upload of {size / GiB:g} GiB with curl -T ({framing}), median of {RUNS}; '
                  'http.server cannot take uploads')
            times = typical({
                'raw-socket sink (ceiling)': (sink.pid, functools.partial(
                    upload, f'http://127.0.0.1:{sink.port}/big.bin', big, size, framing)),
                'minihttp, sha256 checked': (minihttp.pid, functools.partial(
                    upload, f'http://127.0.0.1:{minihttp.port}/uploads/big.bin', big, size,
                    framing, stored_by_minihttp(size, sha256, framing)))}, RUNS)
            for name, (seconds, cpu) in times.items():
                print(f'  {name:26} {size / seconds / MB:6.0f} MB/s, server CPU {cpu:.2f} s')
            (ceiling, _), (seconds, _) = times.values()
            row = _results.record(f'files: upload {size / GiB:g} GiB, {framing}', 'minihttp',
                                  size / seconds / MB, 'MB/s', peer='raw-socket sink',
                                  peer_value=size / ceiling / MB, target=UPLOAD_TARGET)
            print(f'  ratio {row.ratio:.2f} of the ceiling (target {UPLOAD_TARGET:g}: '
                  f'{row.verdict})')

        row = _results.record('files: after all of it', 'minihttp peak RSS (VmHWM)',
                              memory(pid, 'VmHWM') / MiB, 'MiB', target=MEMORY_TARGET / MiB,
                              lower_is_better=True)
        print(f'peak memory of minihttp (VmHWM) after all of it: {row.value:.1f} MiB '
              f'(target under {MEMORY_TARGET // MiB} MiB: {row.verdict})')
        print(f'files benchmark took {time.monotonic() - started:.0f} s')
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m bench files', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--duration', type=int, default=5, help='seconds of GET load per server')
    parser.add_argument('--connections', type=int, default=32, help='keep-alive connections')
    parser.add_argument('--size', type=size, default=GiB,
                        help='size of the file downloaded and uploaded (default: 1G)')
    # Internal: the child processes this benchmark starts.
    roles = parser.add_mutually_exclusive_group()
    roles.add_argument('--sink', help=argparse.SUPPRESS)
    roles.add_argument('--load', nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sink:
        return serve_sink(args.sink)
    if args.load:
        port, path, connections, duration = args.load
        return load_process(int(port), path, int(connections), float(duration))
    return run(args.duration, args.connections, args.size)


if __name__ == '__main__':
    sys.exit(main())
