"""Resumable uploads benchmark: a large upload cut at random offsets and resumed.

    python -m bench resumable [--size SIZE] [--cuts N] [--rounds N]

A file of SIZE random bytes (1 GiB) is uploaded to a `minihttp serve` two ways,
by a client of our own that sends the file with sendfile:

1. uninterrupted: one creation request (PUT with Upload-Complete: ?1 and the
   interop version), the 104 read, the whole body sent, the answer read;
2. resumed: the same creation cut (the connection closed) at N random offsets
   (3): after each cut, HEAD on the resumption URL until it says the offset
   the client reached, then a PATCH from there, itself cut at the next offset;
   the last PATCH sends the rest with Upload-Complete: ?1.

Both stores must answer the file's sha256 (the server reads the whole file
once to say it).  Recorded: the throughput of each (the median of --rounds,
taken in turns), and the resumed one against the uninterrupted one (target,
issue 17: at least 0.9x).
"""

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import time

from bench import _results
from bench._support import start_minihttp, write_random
from minihttp.cli import size

MiB = 1024 * 1024
TARGET = 0.9
# How long one HEAD may keep saying less than the client sent after a cut (the server
# fsyncs what arrived before it says the offset).
SETTLE = 60.0


def read_head(sock, data=b''):
    """One response head off ``sock`` (``data``: bytes already received): status,
    {lower-case name: value}, and the bytes received after it."""
    while b'\r\n\r\n' not in data:
        piece = sock.recv(65536)
        if not piece:
            raise SystemExit(f'the server closed before a response head: {data[:200]!r}')
        data += piece
    head, _, rest = data.partition(b'\r\n\r\n')
    lines = head.decode('latin-1').split('\r\n')
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(':')
        fields[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), fields, rest


def read_answer(sock, rest=b''):
    """The final response (1xx passed over): status, fields, body (by Content-Length)."""
    while True:
        status, fields, rest = read_head(sock, rest)
        if status >= 200:
            break
    length = int(fields.get('content-length', '0'))
    while len(rest) < length:
        piece = sock.recv(65536)
        if not piece:
            break
        rest += piece
    return status, fields, rest[:length]


def connect(port):
    sock = socket.create_connection(('127.0.0.1', port), timeout=120)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send_part(port, head, file, offset, end):
    """Send ``head`` and the file's bytes [offset, end) on a new connection; then close."""
    with connect(port) as sock:
        sock.sendall(head)
        sock.sendfile(file, offset, end - offset)


def create(port, name, total, file, cut=None):
    """A creation request; with ``cut``, the connection is closed after that many bytes
    (the resumption URL taken from the 104).  (location, final answer or None)."""
    head = (f'PUT /uploads/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpload-Complete: ?1\r\n'
            f'Upload-Draft-Interop-Version: 9\r\nContent-Length: {total}\r\n\r\n').encode()
    with connect(port) as sock:
        sock.sendall(head)
        status, fields, rest = read_head(sock)
        if status != 104:
            raise SystemExit(f'creation answered {status}, not 104')
        location = fields['location']
        sock.sendfile(file, 0, total if cut is None else cut)
        if cut is not None:
            return location, None
        return location, read_answer(sock, rest)


def offset_of(port, location):
    with connect(port) as sock:
        sock.sendall(f'HEAD {location} HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                     'Connection: close\r\n\r\n'.encode())
        status, fields, _ = read_head(sock)
    if status != 204:
        raise SystemExit(f'HEAD {location}: {status}')
    return int(fields['upload-offset'])


def held(port, location, offset):
    """Wait until the server says it holds ``offset`` bytes (it fsyncs them first)."""
    deadline = time.monotonic() + SETTLE
    while (now := offset_of(port, location)) != offset:
        if now > offset or time.monotonic() > deadline:
            raise SystemExit(f'after a cut at {offset}, HEAD says {now}')
        time.sleep(0.002)


def patch(port, location, file, offset, end, total):
    """A PATCH of the file's bytes [offset, end), complete when ``end`` is ``total``."""
    complete = end == total
    head = (f'PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\n'
            'Content-Type: application/partial-upload\r\n'
            f'Upload-Offset: {offset}\r\nUpload-Complete: {"?1" if complete else "?0"}\r\n'
            f'Content-Length: {total - offset}\r\n\r\n').encode()
    if not complete:
        send_part(port, head, file, offset, end)
        return None
    with connect(port) as sock:
        sock.sendall(head)
        sock.sendfile(file, offset, end - offset)
        return read_answer(sock)


def checked(answer, sha256, total):
    status, _, body = answer
    summary = json.loads(body)
    if status not in (200, 201) or summary['sha256'] != sha256 or summary['bytes'] != total:
        raise SystemExit(f'stored wrong: {status} {summary}')


def uninterrupted(port, path, total, sha256):
    with open(path, 'rb') as file:
        start = time.perf_counter()
        _, answer = create(port, 'whole.bin', total, file)
        seconds = time.perf_counter() - start
    checked(answer, sha256, total)
    return seconds


def resumed(port, path, total, sha256, cuts, rng):
    offsets = sorted(rng.sample(range(1, total), cuts))
    with open(path, 'rb') as file:
        start = time.perf_counter()
        location, _ = create(port, 'resumed.bin', total, file, cut=offsets[0])
        held(port, location, offsets[0])
        for offset, end in zip(offsets, offsets[1:]):
            patch(port, location, file, offset, end, total)
            held(port, location, end)
        answer = patch(port, location, file, offsets[-1], total, total)
        seconds = time.perf_counter() - start
    checked(answer, sha256, total)
    return seconds, offsets


def run(total, cuts, rounds):
    folder = tempfile.mkdtemp(prefix='bench-resumable-')
    server = None
    try:
        path = os.path.join(folder, 'source.bin')
        sha256 = write_random(path, total)
        root = os.path.join(folder, 'root')
        os.mkdir(root)
        server = start_minihttp('--root', root, '--uploads', os.path.join(folder, 'uploads'),
                                '--max-upload', str(total))
        rng = random.Random(17)
        whole, parts = [], []
        for _ in range(rounds):
            whole.append(uninterrupted(server.port, path, total, sha256))
            seconds, offsets = resumed(server.port, path, total, sha256, cuts, rng)
            parts.append(seconds)
            print(f'  uninterrupted {total / whole[-1] / MiB:6.0f} MB/s; resumed '
                  f'{total / seconds / MiB:6.0f} MB/s (cut at {", ".join(map(str, offsets))})')
        a, b = statistics.median(whole), statistics.median(parts)
        label = f'{total // MiB} MiB upload cut at {cuts} random offsets, resumed'
        print(f'{label}: {total / b / MiB:.0f} MB/s, {a / b:.2f}x of uninterrupted '
              f'({total / a / MiB:.0f} MB/s); sha256 right each time')
        _results.record(label, 'minihttp', total / b / MiB, 'MB/s', peer='uninterrupted',
                        peer_value=total / a / MiB, target=TARGET)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m bench resumable', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', type=size, default=1024 * MiB, help='bytes (1G)')
    parser.add_argument('--cuts', type=int, default=3, help='cuts (3)')
    parser.add_argument('--rounds', type=int, default=3, help='runs of each, median kept (3)')
    args = parser.parse_args(argv)
    return run(args.size, args.cuts, args.rounds)


if __name__ == '__main__':
    sys.exit(main())
