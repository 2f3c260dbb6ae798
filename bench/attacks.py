"""What each hostile request of the bounded-cost issue costs the server.

Each attack runs against a fresh ``minihttp serve`` (its own root, uploads and
block port) while a prober makes a small GET on a new connection every
PROBE_INTERVAL.  For each attack the run records:

- the server CPU it cost, per attack request (user + system time from /proc);
- the prober's p99 latency meanwhile (a probe that failed counts as never answered);
- the server's descriptors and RSS afterwards, against before;
- whether every attack request got the answer it should.

Targets: under 50 ms of server CPU per attack request, prober p99 under 50 ms,
descriptors back to baseline, RSS within RSS_SLACK of baseline.  Every client
talks to 127.0.0.1 only, and every attack is bounded in count and time.
"""

import argparse
import os
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

from bench import _results
from bench._support import (MiB, cpu_seconds, fd_count, memory, percentile,
                            raise_open_files, settle, start_minihttp, steady, free_port)

PROBE_INTERVAL = 0.02
CPU_TARGET = 0.050        # seconds of server CPU per attack request
PROBE_TARGET = 0.050      # the prober's p99, in seconds
RSS_SLACK = 16 * MiB
PROBE_TIMEOUT = 5.0       # a probe not answered by then counts as this long
ATTACK_TIMEOUT = 60.0     # an attack still running after this has failed
SCENARIO = 'attacks'

HOSTILE_LINES = b'X:          \r\n' * 7 + b'Y: \x01\r\n'


# -- clients ---------------------------------------------------------------------------

def connect(port, timeout=10.0):
    sock = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def status_of(port, data, timeout=10.0):
    """Send ``data`` on a new connection; the status of the answer, or None."""
    try:
        with connect(port, timeout) as sock:
            try:
                sock.sendall(data)
            except OSError:
                pass            # the server may answer and close before all is sent
            got = b''
            while b'\r\n' not in got:
                piece = sock.recv(4096)
                if not piece:
                    break
                got += piece
    except OSError:
        return None
    return status_in(got)


def status_in(answer):
    """The status of an answer's first bytes, or None."""
    parts = answer.split(b' ', 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def reset(sock):
    """Close with a TCP reset (SO_LINGER on, zero seconds)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    sock.close()


class Prober(threading.Thread):
    """A small GET on a new connection every PROBE_INTERVAL; their latencies."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.latencies = []
        self.done = threading.Event()
        self.request = f'GET /small.txt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n' \
                       'Connection: close\r\n\r\n'.encode()

    def run(self):
        while True:
            started = time.monotonic()
            status = status_of(self.port, self.request, timeout=PROBE_TIMEOUT)
            self.latencies.append(time.monotonic() - started if status == 200 else None)
            if self.done.wait(PROBE_INTERVAL):
                return

    def stop(self):
        self.done.set()
        self.join()
        return self.latencies


# -- the attacks: each returns (requests made, how many were answered right) ------------

def repeat(port, data, expected, count):
    right = sum(status_of(port, data) in expected for _ in range(count))
    return count, right


def backtracking_head(server):
    head = b'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n' + HOSTILE_LINES + b'\r\n'
    return repeat(server.port, head, {400}, 10)


def long_whitespace(server):
    head = b'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: ' + b' ' * 60_000 + b'\x01\r\n\r\n'
    return repeat(server.port, head, {400}, 5)


def backtracking_trailer(server):
    data = (b'POST /headers HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n'
            b'5\r\nhello\r\n0\r\n' + HOSTILE_LINES + b'\r\n')
    return repeat(server.port, data, {400}, 10)


def multipart_body(parts, boundary=b'b0undary'):
    body = b''.join(b'--' + boundary + b'\r\n' + part for part in parts)
    return body + b'--' + boundary + b'--\r\n'


def form_request(body, boundary=b'b0undary', extra=b''):
    return (b'POST /uploads/ HTTP/1.1\r\nHost: 127.0.0.1\r\n'
            b'Content-Type: multipart/form-data; boundary=' + boundary + b'\r\n' + extra +
            b'Content-Length: %d\r\n\r\n' % len(body) + body)


def backtracking_part_head(server):
    part = (b'Content-Disposition: form-data; name="f"; filename="a.txt"\r\n' +
            HOSTILE_LINES + b'\r\nhello\r\n')
    return repeat(server.port, form_request(multipart_body([part])), {400}, 10)


def many_parts(server):
    """A form of 1,000 file parts, ten times MAX_FORM_PARTS: 413, and nothing kept."""
    parts = [b'Content-Disposition: form-data; name="f%d"; filename="p%d.txt"\r\n\r\nx\r\n'
             % (i, i) for i in range(1000)]
    return repeat(server.port, form_request(multipart_body(parts)), {413}, 3)


def resets_after_large_get(server):
    request = b'GET /large.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'
    count = 300
    for _ in range(count):
        sock = connect(server.port)
        sock.sendall(request)
        reset(sock)
    # Answered right if an uncached file is still served afterwards.
    right = status_of(server.port, b'GET /other.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                                   b'Connection: close\r\n\r\n') == 200
    return count, count if right else 0


def long_paths(server):
    count = 4096
    right = 0
    with connect(server.port) as sock:
        reader = sock.makefile('rb')
        for i in range(count):
            path = f'/{i:06d}' + 'a' * 8000
            sock.sendall(f'GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'.encode())
            status = int(reader.readline().split()[1])
            length = 0
            while (line := reader.readline()) not in (b'\r\n', b''):
                name, _, value = line.partition(b':')
                if name.lower() == b'content-length':
                    length = int(value)
            reader.read(length)
            right += 400 <= status < 500     # 404, or 403 for a name too long
    return count, right


def block_headers_only(server):
    """100 connections announce a block and send nothing more; RSS is read while held.

    The block is as large as the server reads whole (larger ones are streamed).
    """
    socks = []
    try:
        for _ in range(100):
            sock = connect(server.block_port)
            sock.sendall(struct.pack('!I', 1 * MiB))
            socks.append(sock)
        # The headers are in the server's hands once its descriptors count them all.
        settle(lambda: -fd_count(server.pid), -(server.baseline_fds + 100), 5.0)
        server.held_rss = memory(server.pid)
    finally:
        for sock in socks:
            sock.close()
    return 100, 100


def silent_block_flood(server):
    """1,100 silent connections to the block port (its cap is 1,024); then a real client
    sends its blocks."""
    socks = []
    try:
        for _ in range(1100):
            socks.append(connect(server.block_port))
        with connect(server.block_port, timeout=10.0) as sock:
            for payload in (b'Beautiful is better than ugly.', b'Explicit', b''):
                sock.sendall(struct.pack('!I', len(payload)) + payload)
            sock.shutdown(socket.SHUT_WR)
            ok = True
            try:
                sock.recv(1)       # the server closes its side once the stream is taken
            except OSError:
                ok = False
    finally:
        for sock in socks:
            sock.close()
    return 1, int(ok)


def slow_senders(server):
    """Eight uploads dripping a byte every 0.2 s (--threads 4, --rate-window 2): each is
    cut by the minimum rate, and a real upload sent meanwhile is stored."""
    count, drip, give_up = 8, 0.2, 12.0
    head = (b'PUT /uploads/slow%d HTTP/1.1\r\nHost: 127.0.0.1\r\n'
            b'Content-Length: 100000\r\n\r\n')
    socks = []
    for i in range(count):
        sock = connect(server.port)
        sock.sendall(head % i)
        socks.append(sock)
    stored = []
    body = os.urandom(64 * 1024)
    upload = threading.Thread(target=lambda: stored.append(status_of(
        server.port, b'PUT /uploads/real HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                     b'Content-Length: %d\r\n\r\n' % len(body) + body, timeout=give_up)))
    upload.start()
    answers = {}
    deadline = time.monotonic() + give_up
    try:
        while len(answers) < count and time.monotonic() < deadline:
            for i, sock in enumerate(socks):
                if i in answers:
                    continue
                try:
                    sock.send(b'x')
                    sock.setblocking(False)
                    try:
                        got = sock.recv(4096)
                    except BlockingIOError:
                        got = None
                    finally:
                        sock.setblocking(True)
                except OSError:
                    got = b''
                if got is not None:
                    answers[i] = status_in(got)
            time.sleep(drip)      # the drip's pace itself, not a wait for the server
    finally:
        for sock in socks:
            sock.close()
        upload.join(give_up)
    right = sum(status == 408 for status in answers.values())
    right += bool(stored) and stored[0] in (200, 201)
    return count + 1, right


def cross_site(server):
    body = multipart_body([b'Content-Disposition: form-data; name="f"; filename="x.html"\r\n'
                           b'\r\n<script>alert(1)</script>\r\n'])
    made = right = 0
    for origin in (b'http://evil.example', b'null'):
        made += 1
        right += status_of(server.port, form_request(body, extra=b'Origin: ' + origin +
                                                     b'\r\n')) == 403
    made += 1
    right += status_of(server.port, b'GET /small.txt HTTP/1.1\r\nHost: rebound.example\r\n'
                                    b'Connection: close\r\n\r\n') == 421
    return made, right


def huge_numbers(server):
    digits = b'9' * 5000
    tries = [
        (b'GET /other.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=' + digits + b'-\r\n\r\n',
         {200, 416}),
        (b'GET /other.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=0-' + digits + b'\r\n\r\n',
         {200, 206, 416}),
        (b'GET /_framing?after=' + digits + b' HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', {400}),
        (b'POST /headers HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: \xc2\xb2\r\n\r\n', {400}),
        (b'GET /other.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=\xd9\xa1-\r\n\r\n', {200, 416}),
    ]
    right = sum(status_of(server.port, data) in expected for data, expected in tries)
    return len(tries), right


def framing_log(server):
    with connect(server.port) as sock:
        reader = sock.makefile('rb')
        for _ in range(250):          # fill the ring of records
            sock.sendall(b'GET /small.txt?api_key=secret HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
            while reader.readline() not in (b'\r\n', b''):
                pass
            reader.read(len(SMALL))
    before = cpu_seconds(server.pid)
    count = 20
    right = 0
    for _ in range(count):
        status = status_of(server.port, b'GET /_framing HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                                        b'Connection: close\r\n\r\n')
        right += status == 200
    server.cpu_base = before      # only the /_framing calls count, not filling the ring
    return count, right


ATTACKS = [
    ('backtracking head (131 bytes)', backtracking_head),
    ('eight uploads dripping a byte every 0.2 s, four threads', slow_senders,
     ('--threads', 4, '--rate-window', 2)),
    ('60,000 spaces before a control character', long_whitespace),
    ('backtracking trailer', backtracking_trailer),
    ('backtracking multipart part head', backtracking_part_head),
    ('multipart form of 1,000 file parts', many_parts),
    ('300 resets right after GET of a large file', resets_after_large_get),
    ('4,096 GETs of 8 KiB paths', long_paths),
    ('100 block headers announcing 1 MiB, no payload', block_headers_only),
    ('1,100 silent block connections (cap 1,024), then a real stream', silent_block_flood),
    ('cross-site writes and a rebound Host', cross_site),
    ('numbers beyond the int-string limit, non-ASCII digits', huge_numbers),
    ('GET /_framing with 200 records kept', framing_log),
]

SMALL = b'small file\n' * 90


class Server:
    def __init__(self, process, block_port):
        self.process = process
        self.port = process.port
        self.pid = process.pid
        self.block_port = block_port
        self.baseline_fds = None
        self.held_rss = None
        self.cpu_base = None


def prepare(work):
    root = Path(work, 'root')
    root.mkdir()
    (root / 'small.txt').write_bytes(SMALL)
    for name in ('large.bin', 'other.bin'):
        with open(root / name, 'wb') as file:
            file.truncate(16 * MiB)
    Path(work, 'uploads').mkdir()
    return root


def run_attack(work, root, title, attack, extra=()):
    block_port = free_port()
    process = start_minihttp('--root', root, '--uploads', Path(work, 'uploads'),
                             '--block-port', block_port, *extra)
    server = Server(process, block_port)
    try:
        status_of(server.port, b'GET /small.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')   # warm
        server.baseline_fds = steady(lambda: fd_count(server.pid), 3.0)
        rss_before = steady(lambda: memory(server.pid), 3.0)
        prober = Prober(server.port)
        prober.start()
        cpu_before = cpu_seconds(server.pid)
        outcome = []
        worker = threading.Thread(target=lambda: outcome.append(attack(server)), daemon=True)
        worker.start()
        worker.join(ATTACK_TIMEOUT)
        cpu_after = cpu_seconds(server.pid)
        latencies = prober.stop()
        if not outcome:
            _results.note(f'{title}: not over after {ATTACK_TIMEOUT:g} s')
            print(f'  {title}: not over after {ATTACK_TIMEOUT:g} s')
            return
        made, right = outcome[0]
        base = server.cpu_base if server.cpu_base is not None else cpu_before
        fds_after = settle(lambda: fd_count(server.pid), server.baseline_fds, 10.0)
        rss_after = server.held_rss or steady(lambda: memory(server.pid), 3.0)
        p99 = percentile([PROBE_TIMEOUT if v is None else v for v in latencies], 99)
        record(title, 'answered as they should', right, 'requests', target=made)
        record(title, 'server CPU per attack request', (cpu_after - base) / made * 1000, 'ms',
               target=CPU_TARGET * 1000, lower_is_better=True)
        if p99 is not None:
            record(title, 'small GETs meanwhile, p99', p99 * 1000, 'ms',
                   target=PROBE_TARGET * 1000, lower_is_better=True)
        record(title, 'descriptors afterwards', fds_after, 'descriptors',
               target=server.baseline_fds, lower_is_better=True)
        record(title, 'RSS growth' + (' while held' if server.held_rss else ''),
               max(0, rss_after - rss_before) / MiB, 'MiB', target=RSS_SLACK / MiB,
               lower_is_better=True)
    finally:
        process.stop()


def record(scenario, subject, value, unit, **kwargs):
    row = _results.record(f'{SCENARIO}: {scenario}', subject, value, unit, **kwargs)
    print(f'  {scenario}: {subject}: {_results.number(value)} {unit} ({row.verdict or "-"})')
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m bench attacks', description=__doc__)
    parser.add_argument('--only', metavar='WORDS',
                        help='run the attacks whose title contains WORDS')
    args = parser.parse_args(argv)
    raise_open_files()
    print('attacks: what each hostile request costs the server')
    with tempfile.TemporaryDirectory(prefix='minihttp-attacks-') as work:
        root = prepare(work)
        for title, attack, *extra in ATTACKS:
            if args.only and args.only not in title:
                continue
            run_attack(work, root, title, attack, *extra)
    return 0
