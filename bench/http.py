"""HTTP benchmark: small keep-alive GETs against the standard library, and a 1 GiB chunked echo.

    python -m bench http [--duration SECONDS] [--connections N] [--echo-size SIZE]

1. Requests per second for ``GET /`` with keep-alive, minihttp against the
   standard library's ThreadingHTTPServer, each in its own process, both up
   at once and loaded in turn in the same run, by ``wrk`` when it is
   installed (else by load-generator processes of our own).  Both serve the
   ``/`` page's bytes from memory: minihttp's HTTPServer with a one-body
   application, i.e. the HTTP/1.1 core this benchmark is about (head parsing,
   framing, keep-alive); target at least 5x.  (``bench files`` compares the
   file server.)  The baseline is given every fair chance: HTTP/1.1
   keep-alive, TCP_NODELAY on accepted sockets (so that delayed ACKs do not
   stall it), a listen backlog as deep as minihttp's, the same body bytes
   (checked), and no access log on either side.
2. ``PUT /echo`` of 1 GiB, chunked: curl streams the request from a pipe and
   reads the echoed chunked response at the same time.  Reported as payload
   MB/s against a ceiling measured in the same run: one sendall/recv_into pair
   over loopback carrying the same number of bytes one way.
"""

import argparse
import functools
import http.server
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench import _results
from bench._support import (MB, REPO, GiB, ServerProcess, cpu_seconds, fetch, response_length,
                            start_minihttp, wrk)
from minihttp.cli import size
from minihttp.responses import Response
from minihttp.limits import DOCUMENT_ROOT, LISTEN_BACKLOG, READ_BUFFER_SIZE
from minihttp.eventloop import EventLoop
from minihttp.processes import run_until_signalled, run_workers
from minihttp.server import HTTPServer

TARGET_RATIO = 5.0
HTML = 'text/html; charset=utf-8'


# -- the two servers, each in its own process -----------------------------------------

def child(name, *args):
    """One of this module's own server roles, in a process of its own."""
    return ServerProcess(name, [sys.executable, '-m', 'bench.http', *map(str, args)])


class BaselineHandler(http.server.SimpleHTTPRequestHandler):
    """The standard library's handler, given every fair chance."""

    protocol_version = 'HTTP/1.1'      # keep-alive
    disable_nagle_algorithm = True     # TCP_NODELAY on each accepted socket

    def log_message(self, format, *args):
        pass                           # no access log, as minihttp --quiet


class BaselineServer(http.server.ThreadingHTTPServer):
    request_queue_size = LISTEN_BACKLOG   # not 5: no SYN retransmits in the connect burst


def fixed_body(body_path, content_type):
    """(body, content type) for the roles that answer every request with one body."""
    return Path(body_path).read_bytes(), content_type


def serve_stdlib_fixed(body_path, content_type):
    """The baseline: ThreadingHTTPServer answering every GET with one body from memory."""
    body, content_type = fixed_body(body_path, content_type)

    class Handler(BaselineHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header('Content-Type', content_type)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    run_stdlib(Handler)


def serve_stdlib_files(root):
    """The baseline for files: SimpleHTTPRequestHandler on the same document root."""
    run_stdlib(functools.partial(BaselineHandler, directory=root))


def run_stdlib(handler):
    with BaselineServer(('127.0.0.1', 0), handler) as server:
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
        print(f'stdlib server listening on http://127.0.0.1:{server.server_address[1]}/',
              flush=True)
        server.serve_forever()


def serve_minihttp_fixed(body_path, content_type, workers='1'):
    """minihttp's HTTP server (head parsing, framing, keep-alive) with one body from memory."""
    body, content_type = fixed_body(body_path, content_type)
    answer = Response(200, [('Content-Type', content_type)], body)
    listener = EventLoop('127.0.0.1', 0, HTTPServer(lambda request: answer, access_log=False),
                         reuse_port=int(workers) > 1)
    print(f'minihttp server listening on http://127.0.0.1:{listener.address[1]}/', flush=True)
    if int(workers) > 1:
        run_workers(listener, [], int(workers))
    else:
        run_until_signalled([listener])


# -- load ------------------------------------------------------------------------------

def wrk_load(port, duration, connections):
    """Requests/s from wrk, and any errors it saw."""
    load = wrk(f'http://127.0.0.1:{port}/', duration, connections)
    return load.rate, load.errors


def load_worker(port, connections, duration):
    """Keep ``connections`` keep-alive connections busy with GET / for ``duration`` s.

    Prints the number of 200 responses received.  One request in flight per
    connection, as wrk does.
    """
    request = f'GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n'.encode()
    sel = selectors.DefaultSelector()
    for _ in range(connections):
        sock = socket.create_connection(('127.0.0.1', port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sel.register(sock, selectors.EVENT_READ, bytearray())
        sock.sendall(request)
    done = errors = 0
    deadline = time.monotonic() + duration
    while (left := deadline - time.monotonic()) > 0:
        for key, _ in sel.select(left):
            sock, buf = key.fileobj, key.data
            data = sock.recv(65536)
            if not data:
                raise SystemExit('server closed a keep-alive connection')
            buf += data
            while (total := response_length(buf)) is not None and len(buf) >= total:
                if buf.startswith(b'HTTP/1.1 200 '):
                    done += 1
                else:
                    errors += 1
                del buf[:total]
                sock.sendall(request)
    print(done, errors, flush=True)


def own_load(port, duration, connections):
    """Requests/s from load_worker processes (used when wrk is not installed)."""
    workers = max(1, (os.cpu_count() or 2) // 2)
    share = [connections // workers + (i < connections % workers) for i in range(workers)]
    procs = [subprocess.Popen([sys.executable, '-m', 'bench.http', '--load-worker', str(port),
                               str(n), str(duration)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True) for n in share if n]
    counts = [proc.communicate(timeout=duration + 60)[0].split() for proc in procs]
    done = sum(int(c[0]) for c in counts)
    errors = sum(int(c[1]) for c in counts)
    return done / duration, [f'Non-200 responses: {errors}'] if errors else []


def load_tool():
    if shutil.which('wrk'):
        return wrk_load, 'wrk -t1'
    return own_load, 'bench.http load workers'


def load_round(server, duration, connections):
    """(requests/s, server CPU microseconds per request or None, errors) of one round."""
    before = cpu_seconds(server.proc.pid)
    rate, errors = load_tool()[0](server.port, duration, connections)
    after = cpu_seconds(server.proc.pid)
    cpu = None if before is None or after is None else (after - before) / (rate * duration) * 1e6
    return rate, cpu, errors


def compare(title, baseline, contender, duration, connections, rounds, target=None):
    """Both servers up, loaded in turn for ``rounds`` rounds; print medians and the ratio.

    Taking turns, rather than one long run each, spreads whatever else the
    machine is doing over both; the server's CPU time per request is printed
    beside the rate, since it varies far less with that noise.
    """
    print(title)
    servers = []
    try:
        servers.append(baseline())
        servers.append(contender())
        answers = [fetch(server.port) for server in servers]
        assert all(status == 200 for status, _, _ in answers), answers
        (_, body, base_size), (_, other, size) = answers
        assert body == other, 'the two servers answered GET / with different bytes'
        print(f'  body {len(body)} B, the same bytes from both; whole response {size} B '
              f'(minihttp), {base_size} B (stdlib)')
        results = {server.name: [] for server in servers}
        for _ in range(rounds):
            for server in servers:
                results[server.name].append(load_round(server, duration, connections))
    finally:
        for server in servers:
            server.stop()
    medians = {}
    for name, rounds_of in results.items():
        rate = statistics.median(r for r, _, _ in rounds_of)
        cpus = [c for _, c, _ in rounds_of if c is not None]
        cpu = statistics.median(cpus) if cpus else None
        errors = sorted({e for _, _, errs in rounds_of for e in errs})
        medians[name] = rate, cpu
        each = ', '.join(f'{r:.0f}' for r, _, _ in rounds_of)
        per_request = f'; {cpu:5.1f} us CPU per request' if cpu is not None else ''
        print(f'  {name:20s} {rate:8.0f} requests/s (rounds: {each}){per_request} '
              f'{" ".join(errors)}')
    (base_name, (base_rate, base_cpu)), (name, (rate, cpu)) = medians.items()
    _results.record(title, name, rate, 'req/s', peer=base_name, peer_value=base_rate,
                    target=target)
    ratio = rate / base_rate
    verdict = '' if target is None else (
        f'; target {target:g}x {"met" if ratio >= target else "NOT met"}')
    by_cpu = f', {base_cpu / cpu:.1f}x by CPU per request' if base_cpu and cpu else ''
    print(f'  ratio: {ratio:.1f}x by requests/s{by_cpu}{verdict}')
    return ratio


def requests_per_second(duration, connections, rounds):
    print(f'GET / with keep-alive: {connections} connections, by {load_tool()[1]}, '
          f'{rounds} rounds of {duration} s per server, taking turns')
    page = REPO / DOCUMENT_ROOT / 'index.html'
    compare('HTTP/1.1 core, one body from memory (the issue 3 comparison)',
            lambda: child('ThreadingHTTPServer', '--stdlib-fixed', page, HTML),
            lambda: child('minihttp HTTPServer', '--minihttp-fixed', page, HTML),
            duration, connections, rounds, TARGET_RATIO)
    workers = os.cpu_count()
    compare(f'the same, minihttp with --workers {workers} (one process per CPU)',
            lambda: child('ThreadingHTTPServer', '--stdlib-fixed', page, HTML),
            lambda: child(f'minihttp {workers} workers', '--minihttp-fixed', page, HTML,
                          workers),
            duration, connections, rounds, TARGET_RATIO)
    print('  (GET / as a file, minihttp serve against SimpleHTTPRequestHandler: '
          'python -m bench files)')


# -- the chunked echo against a loopback ceiling ------------------------------------

def loopback_ceiling(size):
    """MB/s of one sendall/recv_into pair over loopback carrying ``size`` bytes one way."""
    with socket.create_server(('127.0.0.1', 0)) as listener:
        received = []

        def receive():
            conn, _ = listener.accept()
            with conn:
                view = memoryview(bytearray(READ_BUFFER_SIZE))
                got = 0
                while n := conn.recv_into(view):
                    got += n
                received.append(got)

        reader = threading.Thread(target=receive)
        reader.start()
        block = bytes(READ_BUFFER_SIZE)
        with socket.create_connection(listener.getsockname()) as sock:
            start = time.perf_counter()
            for _ in range(size // len(block)):
                sock.sendall(block)
            sock.sendall(block[:size % len(block)])
            sock.shutdown(socket.SHUT_WR)
            reader.join()
            elapsed = time.perf_counter() - start
    assert received == [size], received
    return size / elapsed / MB


def feed(pipe, size):
    """Write ``size`` bytes into curl's standard input, then close it."""
    block = bytes(range(256)) * 4096      # 1 MiB
    try:
        while size:
            n = min(size, len(block))
            pipe.write(block[:n])
            size -= n
    finally:
        pipe.close()


def chunked_echo(size):
    """MB/s of a chunked PUT /echo of ``size`` bytes, streamed both ways by curl."""
    minihttp = start_minihttp()
    try:
        curl = subprocess.Popen(
            ['curl', '-sS', '--noproxy', '*', '-T', '-', '-H', 'Transfer-Encoding: chunked',
             '-H', 'Expect:', '-o', os.devnull,
             '-w', '%{http_code} %{size_upload} %{size_download} %{time_total}',
             f'http://127.0.0.1:{minihttp.port}/echo'],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        writer = threading.Thread(target=feed, args=(curl.stdin, size))
        writer.start()
        # Not communicate(): it would close curl's standard input under the writer.
        out, err = curl.stdout.read(), curl.stderr.read()
        writer.join()
        curl.wait()
    finally:
        minihttp.stop()
    status, up, down, seconds = out.decode().split()
    if curl.returncode or status != '200' or int(float(down)) != size:
        raise SystemExit(f'chunked echo failed: {out.decode()} {err.decode()}')
    return size / float(seconds) / MB


def echo_throughput(size):
    print(f'PUT /echo of {size / GiB:g} GiB, chunked, streamed both ways by curl')
    if not shutil.which('curl'):
        print('  skipped: curl is not installed')
        return
    ceiling = loopback_ceiling(size)
    echo = chunked_echo(size)
    print(f'  ceiling (sendall/recv_into pair, one way): {ceiling:8.0f} MB/s')
    print(f'  minihttp chunked echo (payload):           {echo:8.0f} MB/s '
          f'({echo / ceiling:.0%} of the ceiling)')
    _results.record(f'PUT /echo {size / GiB:g} GiB chunked', 'minihttp chunked echo', echo,
                    'MB/s', peer='loopback ceiling', peer_value=ceiling)


# -- command line ----------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m bench http', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--duration', type=int, default=4,
                        help='seconds of load per server per round')
    parser.add_argument('--rounds', type=int, default=3, help='rounds of load per server')
    parser.add_argument('--connections', type=int, default=32, help='keep-alive connections')
    parser.add_argument('--echo-size', type=size, default=GiB, help='bytes to echo')
    # Internal: the child processes this benchmark starts.
    roles = parser.add_mutually_exclusive_group()
    roles.add_argument('--stdlib-fixed', nargs=2, help=argparse.SUPPRESS)
    roles.add_argument('--minihttp-fixed', nargs='+', help=argparse.SUPPRESS)
    roles.add_argument('--stdlib-files', help=argparse.SUPPRESS)
    roles.add_argument('--load-worker', nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stdlib_fixed:
        return serve_stdlib_fixed(*args.stdlib_fixed)
    if args.minihttp_fixed:
        return serve_minihttp_fixed(*args.minihttp_fixed)
    if args.stdlib_files:
        return serve_stdlib_files(args.stdlib_files)
    if args.load_worker:
        return load_worker(*args.load_worker)
    requests_per_second(args.duration, args.connections, args.rounds)
    echo_throughput(args.echo_size)
    return 0


if __name__ == '__main__':
    sys.exit(main())
