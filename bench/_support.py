"""What every benchmark needs: servers as child processes, loads, clients, /proc readers.

Not a benchmark itself (the leading underscore keeps ``python -m bench`` from
running it).  Everything here talks to 127.0.0.1 only.
"""

import collections
import dataclasses
import hashlib
import http.client
import json
import math
import os
import queue
import re
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MiB, GiB = 1 << 20, 1 << 30
MB = 1e6
# minihttp, and every server role of the benchmarks, prints this once it accepts connections
# (minihttp with --tls-cert says https://).
LISTENING = re.compile(r'listening on https?://[^ ]*:(\d+)/')
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
CURL_TIMEOUT = 300


# -- servers as child processes -------------------------------------------------------

class Child:
    """A child process whose lines on one stream (``read``) can be awaited with a deadline.

    The other stream goes to the file ``log`` (an access log, say) or to
    /dev/null.  Stopped by its PID only: SIGTERM, then SIGKILL after
    STOP_TIMEOUT.  Usable as a context manager.
    """

    def __init__(self, name, args, *, read='stdout', log=None, stdin=subprocess.DEVNULL,
                 env=None):
        self.name = name
        self._lines = queue.Queue()
        self._tail = collections.deque(maxlen=20)
        other = open(log or os.devnull, 'ab')
        streams = {'stdout': other, 'stderr': other, read: subprocess.PIPE}
        try:
            self.proc = subprocess.Popen(
                args, cwd=REPO, stdin=stdin, **streams,
                env={**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})})
        finally:
            other.close()
        threading.Thread(target=self._read, args=(getattr(self.proc, read),),
                         daemon=True).start()

    @property
    def pid(self):
        return self.proc.pid

    def _read(self, stream):
        for raw in stream:
            line = raw.decode('utf-8', 'replace').rstrip()
            self._tail.append(line)
            if self._lines is not None:
                self._lines.put(line)
        if self._lines is not None:
            self._lines.put(None)

    def expect(self, pattern, timeout):
        """The match of the next line matching ``pattern`` (earlier lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise SystemExit(f'{self.name}: no line like {pattern.pattern!r} within '
                                 f'{timeout:g} s; it said:\n' + '\n'.join(self._tail)) from None
            if line is None:
                self.proc.wait()
                raise SystemExit(f'{self.name}: exited with status {self.proc.returncode}; '
                                 'it said:\n' + '\n'.join(self._tail))
            match = pattern.search(line)
            if match:
                return match

    def ignore_rest(self):
        """Stop keeping lines for expect() (a server's access log, say), but the last few."""
        self._lines = None

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class ServerProcess(Child):
    """A server as a child process, ready once it printed a line matching ``ready``.

    The port comes from that line's first group, or is given (``port``) for a
    server whose line does not say it (nginx).
    """

    def __init__(self, name, args, *, ready=LISTENING, port=None, read='stdout', log=None,
                 env=None):
        super().__init__(name, args, read=read, log=log, env=env)
        self.port = port
        try:
            match = self.expect(ready, START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        if match.groups():
            self.port = int(match[1])
        self.ignore_rest()


def minihttp_supports(option):
    """Whether ``minihttp serve`` knows a command-line option (the bench runs old and new)."""
    done = subprocess.run([sys.executable, '-m', 'minihttp', 'serve', '--help'], cwd=REPO,
                          capture_output=True, text=True, timeout=START_TIMEOUT)
    return option in done.stdout


def start_minihttp(*args, log=None, name='minihttp serve'):
    """``minihttp serve`` on a free port, without the block server.

    With ``log`` (a file, or os.devnull) the access log is on and goes there;
    without, ``--quiet``.
    """
    quiet = () if log else ('--quiet',)
    return ServerProcess(name, [sys.executable, '-m', 'minihttp', 'serve', '--port', '0',
                                '--block-port', '0', *quiet, *map(str, args)], log=log)


def fetch(port, path='/'):
    """(status, body, response size in bytes) of one GET."""
    connection = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    try:
        connection.request('GET', path)
        response = connection.getresponse()
        body = response.read()
        head = len(str(response.msg)) + len('HTTP/1.1 200 OK\r\n\r\n')
        return response.status, body, head + len(body)
    finally:
        connection.close()


def free_port():
    """A port nothing listens on now, for a server that cannot be told to pick one (nginx)."""
    with socket.create_server(('127.0.0.1', 0)) as sock:
        return sock.getsockname()[1]


def raise_open_files():
    """Lift this process's descriptor limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# -- /proc (Linux) --------------------------------------------------------------------

def proc_stat(pid):
    with open(f'/proc/{pid}/stat') as stat:
        return stat.read().rsplit(')', 1)[1].split()


def children(pid):
    """The PIDs whose parent is ``pid`` (worker processes)."""
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                if int(proc_stat(entry)[1]) == pid:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def cpu_seconds(pid):
    """User and system CPU time a process and its children (workers) have used, or None."""
    try:
        pids = [pid, *children(pid)]
        ticks = 0
        for each in pids:
            fields = proc_stat(each)
            ticks += int(fields[11]) + int(fields[12])
    except OSError:
        return None
    return ticks / os.sysconf('SC_CLK_TCK')


def memory(pid, field='VmRSS'):
    """A memory figure of /proc/PID/status (VmRSS, VmHWM, ...), in bytes."""
    with open(f'/proc/{pid}/status') as status:
        return next(int(line.split()[1]) * 1024 for line in status
                    if line.startswith(field + ':'))


def thread_count(pid):
    return len(os.listdir(f'/proc/{pid}/task'))


def fd_count(pid):
    return len(os.listdir(f'/proc/{pid}/fd'))


def steady(read, timeout, still=0.2):
    """``read()`` once it has not changed for ``still`` s (or after ``timeout`` s).

    For a baseline: a connection just closed may still hold a thread and a
    descriptor for a moment.  /proc cannot be waited on, so this looks every 50 ms.
    """
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < still:
        time.sleep(0.05)
        if (now := read()) != value:
            value, since = now, time.monotonic()
    return value


def settle(read, limit, timeout):
    """Wait up to ``timeout`` s for ``read()`` to come down to ``limit``; its last value.

    /proc has no way to be woken by a change, so this looks every 50 ms.
    """
    deadline = time.monotonic() + timeout
    while (value := read()) > limit and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


# -- wrk --------------------------------------------------------------------------------

@dataclasses.dataclass
class Load:
    """What one wrk run measured."""
    requests: int
    seconds: float
    latency: dict          # percentile (50, 75, 90, 99) -> seconds
    errors: list           # wrk's lines about socket errors and non-2xx/3xx answers

    @property
    def rate(self):
        return self.requests / self.seconds


TIME_UNITS = {'us': 1e-6, 'ms': 1e-3, 's': 1.0, 'm': 60.0, 'h': 3600.0}


def seconds_of(text):
    """wrk's way of writing a time ("108.00us", "1.20ms", "2.00s") in seconds."""
    match = re.fullmatch(r'([\d.]+)(us|ms|s|m|h)', text)
    return float(match[1]) * TIME_UNITS[match[2]]


def wrk(url, duration, connections, threads=1, extra=()):
    """Load ``url`` with wrk for ``duration`` s over ``connections`` keep-alive connections."""
    done = subprocess.run(['wrk', f'-t{threads}', f'-c{connections}', f'-d{duration}s',
                           '--latency', *extra, url],
                          capture_output=True, text=True, timeout=duration + 60)
    out = done.stdout
    count = re.search(r'(\d+) requests in ([\d.]+\w+)', out)
    if done.returncode or not count:
        raise SystemExit(f'wrk {url} failed:\n{out}{done.stderr}')
    latency = {int(p): seconds_of(t) for p, t in re.findall(r'^\s+(\d+)%\s+([\d.]+\w+)$', out,
                                                            re.MULTILINE)}
    errors = re.findall(r'(Socket errors: .*|Non-2xx or 3xx responses: \d+)', out)
    return Load(int(count[1]), seconds_of(count[2]), latency, errors)


def median_of(loads):
    """(median requests/s, median p99 in seconds, every error seen) of several wrk runs."""
    return (statistics.median(load.rate for load in loads),
            statistics.median(load.latency[99] for load in loads),
            sorted({error for load in loads for error in load.errors}))


# -- one GET per connection, many connections, one thread -------------------------------

RESPONSE_HEAD_END = b'\r\n\r\n'
CONTENT_LENGTH = re.compile(rb'\r\ncontent-length: *(\d+)', re.I)


def response_length(buf):
    """The length of the whole response at the start of ``buf`` once its head is there, else None.

    Only responses framed by Content-Length (what a GET of a file gets).
    """
    end = buf.find(RESPONSE_HEAD_END)
    if end < 0:
        return None
    length = CONTENT_LENGTH.search(buf, 0, end + 2)
    return end + 4 + (int(length[1]) if length else 0)


class Exchange:
    """One connection making one GET, driven by a selector (by its descriptor, ``fd``)."""

    def __init__(self, index, port, request):
        self.index = index
        self.request = request
        self.started = time.monotonic()
        self.buf = bytearray()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.fd = self.sock.fileno()
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.connect_ex(('127.0.0.1', port))

    def writable(self):
        """Connected: send the request.  False if the connection failed."""
        if self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            return False
        self.sock.send(self.request)      # a few dozen bytes: the empty buffer takes them
        return True

    def readable(self):
        """True once the whole response is in, False if it never will be, None for more."""
        return self.received(self.sock.recv(65536))

    def received(self, data):
        """readable()'s answer once ``data`` came (b'' for the end of the connection)."""
        if not data:
            return False
        self.buf += data
        total = response_length(self.buf)
        if total is None or len(self.buf) < total:
            return None
        return self.buf.startswith(b'HTTP/1.1 200 ')


def get_many(port, path, count, *, interval=None, window=None, timeout=10.0, keep=False,
             exchange=Exchange):
    """``count`` GETs of ``path``, each on a new connection: (latencies, kept sockets).

    A new connection starts every ``interval`` s (an open loop: a slow server
    does not slow the arrivals), or as soon as fewer than ``window`` are in
    flight.  A latency runs from the connect to the whole 200 response; a
    GET that failed or took longer than ``timeout`` counts as None.  With
    ``keep``, the answered connections are left open and returned.
    ``exchange`` makes one connection's exchange: Exchange, or one over TLS.
    """
    request = f'GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n'.encode()
    latencies = [None] * count
    kept = []
    started = 0
    first = time.monotonic()
    in_flight = {}       # by descriptor: a TLS exchange replaces its socket object
    with selectors.DefaultSelector() as sel:
        while started < count or in_flight:
            now = time.monotonic()
            while started < count and (window is None or len(in_flight) < window) and (
                    interval is None or now >= first + started * interval):
                one = exchange(started, port, request)
                in_flight[one.fd] = one
                sel.register(one.fd, selectors.EVENT_WRITE, one)
                started += 1
            for fd, one in list(in_flight.items()):
                if now - one.started > timeout:
                    del in_flight[fd]
                    sel.unregister(fd)
                    one.sock.close()
            waits = [one.started + timeout for one in in_flight.values()]
            if started < count and interval is not None:
                waits.append(first + started * interval)
            if not waits:
                continue
            for key, events in sel.select(max(0.0, min(waits) - time.monotonic())):
                one = key.data
                try:
                    if events & selectors.EVENT_WRITE:
                        result = None if one.writable() else False
                        if result is None:
                            sel.modify(one.fd, selectors.EVENT_READ, one)
                    else:
                        result = one.readable()
                except OSError:
                    result = False
                if result is None:
                    continue
                del in_flight[one.fd]
                sel.unregister(one.fd)
                if result:
                    latencies[one.index] = time.monotonic() - one.started
                if result and keep:
                    kept.append(one.sock)
                else:
                    one.sock.close()
    return latencies, kept


def percentile(values, p):
    """The ``p``-th percentile (nearest rank) of the values that are not None, or None."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return values[max(0, math.ceil(p / 100 * len(values)) - 1)]


# -- transfers with curl -----------------------------------------------------------------

def write_random(path, size):
    """A file of ``size`` bytes that nothing can compress or deduplicate; returns its sha256."""
    digest = hashlib.sha256()
    block = os.urandom(4 * MiB)
    with open(path, 'wb') as file:
        for offset in range(0, size, len(block)):
            # Each block differs from the last, so nothing is deduplicated away.
            piece = (offset.to_bytes(8, 'big') + block[8:])[:size - offset]
            digest.update(piece)
            file.write(piece)
    return digest.hexdigest()


def curl_transfer(*args):
    """(status, bytes uploaded, bytes downloaded, seconds, body) of one curl command."""
    done = subprocess.run(
        ['curl', '-sS', '--noproxy', '*', '--max-time', str(CURL_TIMEOUT),
         '-w', '\n%{http_code} %{size_upload} %{size_download} %{time_total}', *map(str, args)],
        capture_output=True, timeout=CURL_TIMEOUT + 10)
    body, _, figures = done.stdout.rpartition(b'\n')
    if done.returncode:
        raise SystemExit(f'curl {" ".join(map(str, args))} failed: {done.stderr.decode()}')
    status, up, down, seconds = figures.decode().split()
    return int(status), int(float(up)), int(float(down)), float(seconds), body


def over_tls(cafile):
    """curl's options for https trusting only ``cafile``, and the scheme; plain HTTP for None."""
    return (('--cacert', cafile), 'https') if cafile else ((), 'http')


def download(port, path, size, cafile=None):
    """Seconds curl took to download ``path`` (all ``size`` bytes of it); over https with
    ``cafile`` (the certificate to trust)."""
    options, scheme = over_tls(cafile)
    status, _, down, seconds, _ = curl_transfer(*options, '-o', os.devnull,
                                                f'{scheme}://127.0.0.1:{port}{path}')
    if status != 200 or down != size:
        raise SystemExit(f'download from port {port}: {status}, {down} of {size} bytes')
    return seconds


def upload(url, path, size, framing, check=None, cafile=None):
    """Seconds ``curl -T`` took, with Content-Length or chunked.

    ``check``, if given, is called with the response body (to see that the
    upload was stored right).  An https ``url`` needs ``cafile``.
    """
    extra = ['-H', 'Transfer-Encoding: chunked'] if framing == 'chunked' else []
    options, _ = over_tls(cafile)
    status, up, _, seconds, body = curl_transfer(*options, '-T', path, *extra, url)
    if status not in (200, 201, 204) or up < size:
        raise SystemExit(f'upload to {url}: {status}, {up} of {size} bytes sent')
    if check is not None:
        check(body)
    return seconds


def stored_by_minihttp(size, sha256, framing):
    """A ``check`` for upload(): minihttp's JSON answer says it stored exactly these bytes."""
    def check(body):
        answer = json.loads(body)
        if (answer['bytes'], answer['sha256'], answer['framing']) != (size, sha256, framing):
            raise SystemExit(f'minihttp stored an upload wrong: {answer}')
    return check


def typical(transfers, runs):
    """{name: (seconds, server CPU seconds) of its median run}, in ``runs`` turns.

    ``transfers`` maps a name to (the server's pid, a function doing one
    transfer and returning the seconds it took).  Taking turns spreads the
    machine's other work over all; the median (not the best) counts, since the
    best would favour whichever server varies most.
    """
    results = {name: [] for name in transfers}
    for _ in range(runs):
        for name, (pid, transfer) in transfers.items():
            before = cpu_seconds(pid)
            seconds = transfer()
            results[name].append((seconds, cpu_seconds(pid) - before))
    return {name: statistics.median_low(times) for name, times in results.items()}
