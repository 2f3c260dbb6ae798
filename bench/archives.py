"""Archives benchmark: a folder streamed as tar, zip and tar.gz against `tar -cf - dir | cat`.

    python -m bench archives [--size SIZE] [--files N] [--rounds N]

A folder of N files (SIZE in all, random bytes, sizes spread from a few bytes
to twice the mean) is made in a temporary directory and read once, so that
both sides find it in the page cache.  Then, best of --rounds each:

1. ``tar -cf - DIR | cat > /dev/null``: GNU tar's speed on this machine.
2. minihttp.archives' pieces alone for tar and zip (stored), every byte read
   into the buffer, each piece put in a chunk (responses.chunk) and sent with
   framing.write_all into a socket pair whose other end is ``cat > /dev/null``:
   the same last step, a copy into a process that drops it.
3. Through HTTP: a `minihttp serve` whose uploads folder holds the folder, and
   ``curl -s -o /dev/null URL/?archive=KIND`` (the whole of it: the request, the
   pool thread making the archive, a tar's large files sent with sendfile,
   chunked framing, curl's decoding), while the server's resident memory is
   sampled every SAMPLE seconds; its peak (VmHWM, start-up included) is
   recorded.  tar.gz runs here only, once: zlib's speed is steady, and slow.

Targets (issue 17): tar >= 0.8x of GNU tar, zip >= 0.5x, both alone and through
HTTP; the server's RSS under 64 MiB throughout.  tar.gz has none (it is zlib's
speed at level archives.GZIP_LEVEL).  Also recorded: the peak resident memory
(VmHWM) of a process that only streams each archive to /dev/null (target: under
64 MiB), and the peak of Python's allocations while streaming (tracemalloc,
separately: it slows the run), which must not grow with the folder.
"""

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc

from bench import _results
from bench._support import curl_transfer, memory, start_minihttp
from minihttp.archives import archive_pieces
from minihttp.framing import write_all
from minihttp.responses import chunk
from minihttp.grammar import LAST_CHUNK

MiB = 1024 * 1024
KINDS = ('tar', 'zip', 'tar.gz')
ALONE = ('tar', 'zip')           # the generator alone: tar.gz is zlib's speed there
TARGETS = {'tar': 0.8, 'zip': 0.5}
RSS_TARGET = 64                  # MiB, the server's throughout
SAMPLE = 0.02                    # seconds between two readings of the server's RSS


def size(text):
    units = {'K': 1024, 'M': MiB, 'G': 1024 * MiB}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def make_folder(top, total, files):
    """``files`` files of ``total`` bytes in all, in folders of 100, with random sizes."""
    rng = random.Random(17)
    mean = total // files
    sizes = [rng.randint(1, 2 * mean) for _ in range(files)]
    scale = total / sum(sizes)
    block = os.urandom(4 * MiB)
    for n, each in enumerate(sizes):
        folder = os.path.join(top, f'd{n // 100:03}')
        os.makedirs(folder, exist_ok=True)
        left = int(each * scale)
        with open(os.path.join(folder, f'file {n:05}.bin'), 'wb') as f:
            while left:
                at = rng.randrange(len(block) - min(left, len(block)) + 1)
                piece = block[at:at + min(left, len(block))]
                f.write(piece)
                left -= len(piece)


def gnu_tar(parent, name):
    start = time.perf_counter()
    subprocess.run(f'tar -cf - {name} | cat > /dev/null', shell=True, cwd=parent, check=True)
    return time.perf_counter() - start


def streamed(parent, name, kind):
    """Seconds to send the archive's pieces, chunked, to ``cat > /dev/null``; and bytes."""
    ours, theirs = socket.socketpair()
    sink = subprocess.Popen(['cat'], stdin=theirs, stdout=subprocess.DEVNULL)
    theirs.close()
    sent = 0
    try:
        start = time.perf_counter()
        with ours:
            for piece in archive_pieces(parent, [name], kind):
                sent += len(piece)
                write_all(ours, *chunk(piece))
            ours.sendall(LAST_CHUNK)
        sink.wait()
        return time.perf_counter() - start, sent
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()


def peak_memory(parent, name, kind):
    tracemalloc.start()
    try:
        for piece in archive_pieces(parent, [name], kind):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# A process of its own, so that its peak resident memory is the archive's (and Python's).
STREAM_ALONE = """
import os, resource, sys
from minihttp.archives import archive_pieces
out = os.open(os.devnull, os.O_WRONLY)
for piece in archive_pieces(sys.argv[1], [sys.argv[2]], sys.argv[3]):
    os.write(out, piece)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss(parent, name, kind):
    """Peak resident memory, in bytes, of a process that streams the archive to /dev/null."""
    out = subprocess.run([sys.executable, '-c', STREAM_ALONE, parent, name, kind],
                         capture_output=True, text=True, check=True)
    return int(out.stdout) * 1024


class Sampler:
    """The largest VmRSS of a process, read every SAMPLE seconds on a thread until stopped."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(SAMPLE):
            self.peak = max(self.peak, memory(self.pid))
            self.samples += 1

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.peak


def fetched(port, name, kind):
    """Seconds for curl to fetch the folder as ``kind`` to /dev/null, and its bytes."""
    start = time.perf_counter()
    status, _, down, _, _ = curl_transfer('-o', os.devnull,
                                          f'http://127.0.0.1:{port}/uploads/{name}/'
                                          f'?archive={kind}')
    seconds = time.perf_counter() - start
    if status != 200:
        raise SystemExit(f'GET /uploads/{name}/?archive={kind}: {status}')
    return seconds, down


def over_http(parent, name, total, base, label, rounds):
    """Each kind through a minihttp server whose uploads folder is ``parent``."""
    empty = tempfile.mkdtemp(prefix='bench-archives-root-')
    server = start_minihttp('--root', empty, '--uploads', parent)
    try:
        sampler = Sampler(server.pid)
        try:
            for kind in KINDS:
                runs = 1 if kind == 'tar.gz' else rounds
                best, length = min(fetched(server.port, name, kind) for _ in range(runs))
                ratio = base / best
                print(f'{label}: {kind:6} over HTTP  {total / best / MiB:8.0f} MB/s  '
                      f'{ratio:.2f}x of GNU tar  ({length / MiB:.0f} MiB by curl)')
                _results.record(f'archive {kind} over HTTP (curl), {label}', 'minihttp',
                                total / best / MiB, 'MB/s', peer='tar -cf - DIR, to cat',
                                peer_value=total / base / MiB, target=TARGETS.get(kind))
        finally:
            sampled = sampler.stop()
        peak = memory(server.pid, 'VmHWM')
        print(f'{label}: server RSS over HTTP: at most {sampled / MiB:.1f} MiB in '
              f'{sampler.samples} samples; peak (VmHWM) {peak / MiB:.1f} MiB')
        _results.record(f'server peak RSS (VmHWM) while sending archives, {label}', 'minihttp',
                        peak / MiB, 'MiB', target=RSS_TARGET, lower_is_better=True)
    finally:
        server.stop()
        shutil.rmtree(empty)


def run(total, files, rounds):
    parent = tempfile.mkdtemp(prefix='bench-archives-')
    try:
        top = os.path.join(parent, 'folder')
        make_folder(top, total, files)
        gnu_tar(parent, 'folder')                  # into the page cache, for both
        base = min(gnu_tar(parent, 'folder') for _ in range(rounds))
        label = f'{files} files, {total // MiB} MiB'
        print(f'{label}: tar -cf - | cat  {total / base / MiB:8.0f} MB/s')
        for kind in ALONE:
            best, length = min(streamed(parent, 'folder', kind) for _ in range(rounds))
            ratio = base / best
            print(f'{label}: {kind:6}            {total / best / MiB:8.0f} MB/s  {ratio:.2f}x of '
                  f'GNU tar  ({length / MiB:.0f} MiB sent)')
            _results.record(f'archive {kind}, {label}', 'minihttp.archives', total / best / MiB,
                            'MB/s', peer='tar -cf - DIR, to cat', peer_value=total / base / MiB,
                            target=TARGETS.get(kind))
        if shutil.which('curl') is not None:
            over_http(parent, 'folder', total, base, label, rounds)
        else:
            _results.note('archives over HTTP: no curl')
        for kind in ALONE:
            rss = peak_rss(parent, 'folder', kind)
            print(f'{label}: {kind:6} peak resident memory {rss / MiB:.1f} MiB')
            _results.record(f'archive {kind} peak RSS, {label}', 'minihttp.archives',
                            rss / MiB, 'MiB', target=RSS_TARGET, lower_is_better=True)
        for kind in ALONE:
            peak = peak_memory(parent, 'folder', kind)
            print(f'{label}: {kind:6} peak Python allocations {peak / 1024:.0f} KiB')
            _results.record(f'archive {kind} Python allocations, {label}',
                            'minihttp.archives', peak / MiB, 'MiB')
    finally:
        shutil.rmtree(parent)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m bench archives', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', type=size, default=2048 * MiB, help='bytes in all (2G)')
    parser.add_argument('--files', type=int, default=10000, help='files (10000)')
    parser.add_argument('--rounds', type=int, default=3, help='runs of each, best kept (3)')
    args = parser.parse_args(argv)
    if shutil.which('tar') is None:
        raise SystemExit('no tar to compare with')
    return run(args.size, args.files, args.rounds)


if __name__ == '__main__':
    sys.exit(main())
