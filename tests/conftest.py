"""Helpers every test file shares: a scripted fake socket, real minihttp processes, peak memory.

``FakeSocket`` drives any reader with no network: the bytes arrive in the
pieces a test chooses (a byte at a time, or at hypothesis-chosen split points);
``NonBlockingFakeSocket`` makes the reader wait (BlockingIOError) before each.
``minihttp`` starts ``python -m minihttp ...`` and finds its port in a
listening line given as a regular expression, so the HTTP tests reuse it as is;
``serve`` is the HTTP server on free ports that test_http_server.py and
test_connections.py both start.
Every process a test starts is stopped at teardown, by its PID.
"""

import collections
import errno
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parent.parent

# CI machines are noisy: an example that runs slowly has not failed.
settings.register_profile('minihttp', deadline=None)
settings.load_profile('minihttp')

# What a server prints once it accepts connections: `Listening at ('127.0.0.1', 1060)`
# from the block server, `blocks server listening at (...)` from `serve`.
LISTENING = r"[Ll]istening at \('(?P<host>[^']*)', (?P<port>\d+)"
# What `serve` prints once the HTTP listener accepts: the host as bound ([::1] for IPv6).
HTTP_LISTENING = r'http server listening on http://(?P<host>\[[^\]]+\]|[^/:]+):(?P<port>\d+)/'

# How long a test waits for a line, or for a process to end, unless it says otherwise.
WAIT = 15.0


class FakeSocket:
    """A socket scripted from bytes: recv_into hands them out in pieces, then EOF (0) forever.

    ``pieces`` chooses the pieces: None for everything at once, an int for
    pieces of that size (1: a byte at a time), or a list of split points
    (offsets into ``data``; out-of-range and repeated ones are ignored).
    A piece larger than the reader's buffer is handed out over several calls.

    What is written is recorded in ``sent``; ``max_send`` caps the bytes one
    sendmsg call accepts, so that partial gather-writes happen.
    """

    def __init__(self, data=b'', pieces=None, max_send=None):
        data = bytes(data)
        if pieces is None:
            cuts = []
        elif isinstance(pieces, int):
            cuts = list(range(pieces, len(data), pieces))
        else:
            cuts = sorted({cut for cut in pieces if 0 < cut < len(data)})
        edges = [0, *cuts, len(data)]
        self._pieces = collections.deque(data[a:b] for a, b in zip(edges, edges[1:]) if b > a)
        self.delivered = 0   # bytes handed to the reader so far
        self.recv_calls = 0
        self.sent = bytearray()
        self.sendmsg_calls = 0
        self.max_send = max_send

    def recv_into(self, buffer, nbytes=0):
        view = memoryview(buffer).cast('B')
        size = min(nbytes, len(view)) if nbytes else len(view)
        # A real socket answers an empty buffer with 0, which looks like EOF.
        assert size > 0, 'recv_into with no room: the reader would take it for EOF'
        self.recv_calls += 1
        if not self._pieces:
            return 0
        piece = self._pieces.popleft()
        got = min(size, len(piece))
        view[:got] = piece[:got]
        if got < len(piece):
            self._pieces.appendleft(piece[got:])
        self.delivered += got
        return got

    def recv(self, bufsize):
        buf = bytearray(bufsize)
        return bytes(buf[:self.recv_into(buf)])

    def sendall(self, data):
        self.sent += data

    def sendmsg(self, buffers, *unused):
        self.sendmsg_calls += 1
        room = sys.maxsize if self.max_send is None else self.max_send
        taken = 0
        for buf in buffers:
            view = memoryview(buf).cast('B')
            take = min(len(view), room - taken)
            self.sent += view[:take]
            taken += take
            if taken == room:
                break
        return taken


class NonBlockingFakeSocket(FakeSocket):
    """A FakeSocket on which every receive that gives bytes, and the EOF, must wait first.

    Before each it raises BlockingIOError once (as a non-blocking socket with
    nothing yet to give): a reader asked again after each wait sees every
    place a read can be interrupted.  ``waits`` counts them.
    """

    def __init__(self, data=b'', pieces=None):
        super().__init__(data, pieces)
        self.ready = False
        self.waits = 0

    def recv_into(self, buffer, nbytes=0):
        if not self.ready:
            self.ready = True
            self.waits += 1
            raise BlockingIOError(errno.EAGAIN, 'Resource temporarily unavailable')
        self.ready = False
        return super().recv_into(buffer, nbytes)


def peak_rss(pid):
    """A process's peak resident memory in bytes (VmHWM of /proc/PID/status)."""
    with open(f'/proc/{pid}/status') as status:
        for line in status:
            if line.startswith('VmHWM:'):
                value, unit = line.split()[1:3]
                assert unit == 'kB', line
                return int(value) * 1024
    raise AssertionError(f'no VmHWM for process {pid}')


class MinihttpProcess:
    """`python -m minihttp ARGS...` with its output read line by line, and a sure stop.

    Two threads read stdout and stderr into one queue; ``wait_for_line`` takes
    lines from it until one matches or the deadline passes.  Each line is
    ``(stream, text)``, so a test can insist a message went to stderr.
    """

    def __init__(self, args, *, stdin=subprocess.DEVNULL, env=None, preexec_fn=None):
        self.args = [str(arg) for arg in args]
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'minihttp', *self.args], cwd=REPO, stdin=stdin,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=preexec_fn,
            env={**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})})
        self.pid = self.proc.pid
        self.port = None
        self.lines = []          # every (stream, text) taken from the queue so far
        self._returned = set()   # indexes of lines a wait already returned
        self._queue = queue.Queue()
        self._open_pipes = 2
        self._pumps = [threading.Thread(target=self._pump, args=(name, pipe), daemon=True)
                       for name, pipe in (('stdout', self.proc.stdout),
                                          ('stderr', self.proc.stderr))]
        for pump in self._pumps:
            pump.start()

    def _pump(self, name, pipe):
        for raw in pipe:
            self._queue.put((name, raw.decode('utf-8', 'replace').rstrip('\r\n')))
        self._queue.put((name, None))

    def _take(self, timeout):
        """Move one queued line into ``lines``; False if none came within ``timeout``."""
        try:
            name, text = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return False
        if text is None:
            self._open_pipes -= 1
        else:
            self.lines.append((name, text))
        return True

    def output(self, stream=None):
        """Every line seen so far (of one stream, or both), as text."""
        while self._take(0):
            pass
        return '\n'.join(text for name, text in self.lines if stream in (None, name))

    def wait_for_lines(self, pattern, count, timeout=WAIT, stream=None):
        """The first ``count`` lines matching ``pattern`` that no earlier wait returned.

        Returns their re.Match objects; fails when the deadline passes or the
        process closes its output first.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        found = []
        scanned = 0
        while True:
            for index in range(scanned, len(self.lines)):
                name, text = self.lines[index]
                if index in self._returned or stream not in (None, name):
                    continue
                match = regex.search(text)
                if match:
                    found.append(match)
                    self._returned.add(index)
                    if len(found) == count:
                        return found
            scanned = len(self.lines)
            if not self._open_pipes:
                raise AssertionError(
                    f'minihttp {" ".join(self.args)} ended (status {self.proc.wait()}) after '
                    f'{len(found)} of {count} lines matching {pattern!r}; its output:\n'
                    f'{self.output()}')
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f'{len(found)} of {count} lines matching {pattern!r} within {timeout} s; '
                    f'output so far:\n{self.output()}')
            self._take(remaining)

    def wait_for_line(self, pattern, timeout=WAIT, stream=None):
        """The first line matching ``pattern`` that no earlier wait returned (a re.Match)."""
        return self.wait_for_lines(pattern, 1, timeout, stream)[0]

    def wait_listening(self, pattern=LISTENING, timeout=WAIT):
        """Wait for the listening line and take the port from its ``port`` group."""
        self.port = int(self.wait_for_line(pattern, timeout)['port'])
        return self.port

    def peak_rss(self):
        return peak_rss(self.pid)

    def stop(self, sig=signal.SIGTERM, timeout=WAIT):
        """Signal the process (by PID) unless it has ended, wait, kill it if it hangs.

        Returns the exit status: negative for a process killed by a signal.
        """
        if self.proc.poll() is None:
            os.kill(self.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        for pump in self._pumps:
            pump.join(timeout)
        self.output()  # keep every last line for the test to read
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return self.proc.returncode


@pytest.fixture
def minihttp():
    """``minihttp(*args)`` starts `python -m minihttp ARGS...`; each is stopped at teardown.

    With ``listening=None`` it does not wait for a listening line (a client, or
    a server expected to fail).
    """
    started = []

    def start(*args, listening=LISTENING, timeout=WAIT, **options):
        process = MinihttpProcess(args, **options)
        started.append(process)
        if listening:
            process.wait_listening(listening, timeout)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def serve(minihttp):
    """Start `minihttp serve --port 0 --block-port 0 ARGS...`; the process, its port parsed."""
    return lambda *args: minihttp('serve', '--port', 0, '--block-port', 0, *args,
                                  listening=HTTP_LISTENING)


def run_minihttp(*args, timeout=60.0, **options):
    """Run ``python -m minihttp ARGS...`` to its end (killed after ``timeout``); a CompletedProcess."""
    return subprocess.run([sys.executable, '-m', 'minihttp', *map(str, args)], cwd=REPO,
                          capture_output=True, timeout=timeout, **options)
