"""What the tests share: servers to start, clients that send exact bytes, waits with deadlines.

Plain helpers only; the fixtures built on them are in conftest.py, and no test
module imports from another.

- processes: ``MinihttpProcess`` (`python -m minihttp ...`, its output read
  line by line, stopped by PID), ``run_minihttp``, ``Served``, ``peak_rss``;
- fakes: ``FakeSocket`` drives any reader with no network, in pieces a test
  chooses; ``NonBlockingFakeSocket`` makes the reader wait (BlockingIOError)
  before each;
- requests as bytes: ``get``, ``post``, ``chunked`` (the one chunk encoder),
  ``request_bytes``, ``multipart_body``;
- clients: ``Client`` reads replies with a small strict parser of its own
  (``read_reply``); ``RawClient`` and ``h11_read`` read them with h11, the
  independent oracle; ``curl``;
- waits, each with a deadline: ``wait_until``, ``wait_for_port``,
  ``wait_until_refused``, and ``MinihttpProcess.wait_for_line``;
- /proc and directories: ``resources``, ``children_of``, ``snapshot``, ``temps``.
"""

import collections
import email.utils
import errno
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import h11

from minihttp import server as server_module
from minihttp import tls
from minihttp.app import App
from minihttp.browsers import Browsers
from minihttp.eventloop import EventLoop
from minihttp.records import FramingLog, public
from minihttp.server import HTTPServer
from minihttp.uploads import TEMP_PREFIX

REPO = Path(__file__).resolve().parent.parent


# What the stand-alone block server prints once it accepts connections:
# `block server listening on 127.0.0.1:1060` (an IPv6 host in brackets).
LISTENING = (r'block server listening on (?P<host>\[[^\]]+\]|[^\s:\[]+):(?P<port>\d+)'
             r'(?: \(TLS[^)]*\))?$')
# What `serve` prints once the HTTP listener accepts: the host as bound ([::1] for IPv6).
HTTP_LISTENING = r'http server listening on https?://(?P<host>\[[^\]]+\]|[^/:]+):(?P<port>\d+)/'

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
    """`python -m minihttp ARGS...` (or ``command`` ARGS... in ``cwd``) with its output read
    line by line, and a sure stop.

    Two threads read stdout and stderr into one queue; ``wait_for_line`` takes
    lines from it until one matches or the deadline passes.  Each line is
    ``(stream, text)``, so a test can insist a message went to stderr.
    """

    def __init__(self, args, *, stdin=subprocess.DEVNULL, env=None, preexec_fn=None,
                 command=(sys.executable, '-m', 'minihttp'), cwd=REPO):
        self.args = [str(arg) for arg in args]
        self.proc = subprocess.Popen(
            [*command, *self.args], cwd=cwd, stdin=stdin,
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


def run_minihttp(*args, timeout=60.0, **options):
    """Run ``python -m minihttp ARGS...`` to its end (killed after ``timeout``); a CompletedProcess."""
    return subprocess.run([sys.executable, '-m', 'minihttp', *map(str, args)], cwd=REPO,
                          capture_output=True, timeout=timeout, **options)


# -- waits, each with a deadline -------------------------------------------------------

def bio_handshake(client, incoming, outgoing, sock):
    """Drive a stdlib TLS client over memory BIOs (``client``: an SSLObject on ``incoming``
    and ``outgoing``) through its handshake on ``sock``.  Its last flight stays in
    ``outgoing``, for the caller to send (alone, or with what it writes next)."""
    while True:
        try:
            client.do_handshake()
            return
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            got = sock.recv(65536)
            assert got, 'the server closed mid-handshake'
            incoming.write(got)


def wait_until(condition, what, timeout=WAIT, interval=0.005):
    """Poll ``condition`` until it holds, failing after ``timeout`` seconds.

    For state with no event to wait on (a temporary file appearing, a port
    opening, a process's descriptors going back down): the test looks until it
    sees it, with a deadline.  Every poll in the tests goes through here.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f'not within {timeout} s: {what}')
        time.sleep(interval)    # a poll interval, not a synchronisation


def accepts(port):
    """Whether something accepts a connection on loopback ``port`` now."""
    try:
        socket.create_connection(('127.0.0.1', port), timeout=WAIT).close()
        return True
    except ConnectionRefusedError:
        return False


def wait_for_port(port, timeout=WAIT):
    """Wait until something accepts connections on ``port``."""
    wait_until(lambda: accepts(port), f'something listening on port {port}', timeout, 0.02)


def wait_until_refused(port, timeout=WAIT):
    """Wait for a listener to stop accepting (it closes its socket on SIGTERM)."""
    wait_until(lambda: not accepts(port), f'port {port} refusing connections', timeout, 0.02)


def listening_sockets(port):
    """How many sockets listen on local ``port`` (IPv4), from /proc/net/tcp (0A: LISTEN)."""
    with open('/proc/net/tcp') as table:
        rows = [line.split() for line in table][1:]
    return sum(1 for row in rows if row[3] == '0A' and int(row[1].split(':')[1], 16) == port)


def workers_listening(server, count=2):
    """The pids of ``serve --workers count``'s workers, once each listens on the port.

    The parent says it is served by them as soon as it has forked them; each
    worker after the first then binds a listening socket of its own
    (EventLoop.listen_apart, SO_REUSEPORT).  Until it has, the kernel gives
    every new connection to the first worker, so a test that needs the
    connections spread over every worker waits for ``count`` listening
    sockets (the parent's, which the first worker accepts from, and one per
    other worker).  On a loaded machine this took longer than 24 requests.
    """
    line = server.wait_for_line(rf'^http served by {count} worker processes: (?P<pids>[\d ]+)$')
    wait_until(lambda: listening_sockets(server.port) == count, 'a listening socket per worker')
    return [int(pid) for pid in line['pids'].split()]


def free_port():
    """A port nothing listens on right now (for a server that cannot be given port 0)."""
    with socket.create_server(('127.0.0.1', 0)) as probe:
        return probe.getsockname()[1]


# -- /proc and directories ---------------------------------------------------------------

def resources(pid):
    """(open descriptors, threads) of a process, from /proc."""
    return len(os.listdir(f'/proc/{pid}/fd')), len(os.listdir(f'/proc/{pid}/task'))


def children_of(pid):
    """PIDs whose parent is ``pid``, from /proc."""
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as stat:
                    fields = stat.read().rpartition(')')[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        while piece := file.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


def archivable(top):
    """{relative path: bytes, or None for a folder} of what an archive of the folder ``top``
    must hold: folders and regular files, no symlink, no hidden name (minihttp.archives)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if not d.startswith('.')
                       and not os.path.islink(os.path.join(dirpath, d))]
        rel = os.path.relpath(dirpath, top)
        for d in dirnames:
            found[os.path.normpath(os.path.join(rel, d))] = None
        for name in filenames:
            path = os.path.join(dirpath, name)
            if name.startswith('.') or not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            with open(path, 'rb') as file:
                found[os.path.normpath(os.path.join(rel, name))] = file.read()
    return found


def snapshot(directory):
    """Every entry of a directory, dotfiles included: name -> sha256 of its content.

    An entry removed while we look (a temporary file going away) is left out.
    """
    entries = {}
    for entry in os.scandir(directory):
        try:
            entries[entry.name] = sha256_file(entry.path) if entry.is_file() else 'not a file'
        except FileNotFoundError:
            pass
    return entries


def temps(directory):
    """The upload temporary files in ``directory``."""
    return [name for name in os.listdir(directory) if name.startswith(TEMP_PREFIX)]


# -- servers ------------------------------------------------------------------------------

def serve_args(root, uploads, *options):
    """The `minihttp serve` command line for a test: any free port, no block server."""
    return ['serve', '--port', '0', '--block-port', '0', '--no-access-log',
            '--root', root, '--uploads', uploads, *options]


class Served:
    """A `minihttp serve` process for tests that outlive one function (module fixtures)."""

    def __init__(self, root, uploads, *options):
        self.process = MinihttpProcess(serve_args(root, uploads, *options))
        try:
            self.port = self.process.wait_listening(HTTP_LISTENING)
        except BaseException:
            self.process.stop()
            raise

    def url(self, path='/'):
        return f'http://127.0.0.1:{self.port}{path}'

    def stop(self):
        return self.process.stop()


@dataclass
class Store:
    """A server that takes uploads: where to reach it, where its uploads land."""
    port: int
    directory: Path
    pid: int = None
    start_rss: int = 0      # its peak resident memory once it listened

    def url(self, path):
        return f'http://127.0.0.1:{self.port}{path}'


# -- requests as bytes ------------------------------------------------------------------

def get(path='/', version='HTTP/1.1', *fields, method='GET', body=b''):
    """A request's bytes: Host first (for HTTP/1.1), then ``fields``, then ``body``."""
    lines = [f'{method} {path} {version}']
    if version == 'HTTP/1.1':
        lines.append('Host: localhost')
    lines.extend(fields)
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1') + body


def post(path, body, *fields, method='POST'):
    return get(path, 'HTTP/1.1', f'Content-Length: {len(body)}', *fields, method=method,
               body=body)


def chunked(*pieces, trailers=()):
    """A chunked body: each non-empty piece as one chunk, the last chunk, ``trailers`` (field lines)."""
    out = b''.join(b'%x\r\n%s\r\n' % (len(piece), piece) for piece in pieces if piece)
    return out + b'0\r\n' + b''.join(t.encode() + b'\r\n' for t in trailers) + b'\r\n'


def request_bytes(method, target, headers=(), body=b''):
    """A request exactly as written, with Host, and Content-Length unless the
    headers already frame the body (they may announce more than ``body``)."""
    lines = [f'{method} {target} HTTP/1.1', 'Host: 127.0.0.1', *headers]
    framed = any(re.match(r'(?i)(content-length|transfer-encoding):', line) for line in headers)
    if body and not framed:
        lines.append(f'Content-Length: {len(body)}')
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1') + body


def multipart_body(boundary, parts, close=True):
    """A multipart/form-data body of (name, filename, content) parts."""
    body = b''
    for name, filename, content in parts:
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                 f'filename="{filename}"\r\n\r\n').encode() + content + b'\r\n'
    return body + (f'--{boundary}--\r\n'.encode() if close else b'')


# -- a strict little HTTP client ---------------------------------------------------------

# One access log line, Common Log Format: host ident authuser [date] "request" status bytes.
CLF = (r'^(?P<host>\S+) - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
       r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+|-)(?: "(?P<ended>[^"]*)")?$')

STATUS_LINE = re.compile(rb'(HTTP/1\.[01]) (\d{3}) ([^\r\n]*)\r\n')


class Reply(NamedTuple):
    version: str
    status: int
    fields: list      # [(name, value)] in order, names as sent
    body: bytes

    def get(self, name):
        values = [value for field, value in self.fields if field.lower() == name.lower()]
        return ', '.join(values) if values else None

    @property
    def closes(self):
        return 'close' in (self.get('connection') or '').lower()


def read_reply(file, method='GET'):
    """One response off a buffered socket file, its body framed as RFC 9112 section 6.3 says."""
    line = file.readline(8192)
    if not line:
        raise EOFError('the server closed the connection before a response')
    match = STATUS_LINE.fullmatch(line)
    assert match, f'not a status line: {line!r}'
    fields = []
    while (line := file.readline(8192)) != b'\r\n':
        assert line.endswith(b'\r\n'), f'field line cut or not ended by CRLF: {line!r}'
        name, colon, value = line[:-2].decode('latin-1').partition(':')
        assert colon and name == name.strip(), f'bad field line {line!r}'
        fields.append((name, value.strip(' \t')))
    version, status = match[1].decode(), int(match[2])
    reply = Reply(version, status, fields, b'')
    if status >= 200:
        # RFC 9110 sections 6.6.1 and 10.2.4: an origin server with a clock sends Date.
        assert email.utils.parsedate_to_datetime(reply.get('date')), fields
        assert reply.get('server'), fields
    if status < 200 or status == 204:
        # RFC 9110 section 8.6: never a Content-Length (nor a body) in 1xx and 204.
        assert reply.get('content-length') is None and reply.get('transfer-encoding') is None
        return reply
    if method == 'HEAD' or status == 304:
        return reply
    if reply.get('transfer-encoding') is not None:
        assert reply.get('transfer-encoding') == 'chunked' and reply.get('content-length') is None
        return reply._replace(body=read_chunked(file))
    if reply.get('content-length') is not None:
        length = int(reply.get('content-length'))
        body = file.read(length)
        assert len(body) == length, f'body cut at {len(body)} of {length} bytes'
        return reply._replace(body=body)
    # Close-delimited (section 6.3 item 8): only a server that closes may send it.
    assert reply.closes, fields
    return reply._replace(body=file.read())


def read_chunked(file):
    body = bytearray()
    while True:
        size = int(file.readline(100).split(b';')[0], 16)
        if not size:
            # The trailer section (an echo sends one back): up to an empty line.
            while (line := file.readline(8192)) != b'\r\n':
                assert line.endswith(b'\r\n'), f'trailer line not ended by CRLF: {line!r}'
            return bytes(body)
        body += file.read(size)
        assert file.read(2) == b'\r\n', 'chunk data not followed by CRLF'


class Client:
    """A socket that sends exactly the bytes given and reads replies one by one.

    With ``context`` (a client ssl.SSLContext) it speaks TLS to ``localhost``.
    """

    def __init__(self, port, host='127.0.0.1', timeout=WAIT, context=None):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if context is not None:
            self.sock = context.wrap_socket(self.sock, server_hostname='localhost')
        self.file = self.sock.makefile('rb')

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def reply(self, method='GET'):
        return read_reply(self.file, method)

    def exchange(self, data, method='GET'):
        self.send(data)
        return self.reply(method)

    def at_eof(self):
        """True once the server has closed its side with nothing more to read."""
        return self.file.read(1) == b''

    def assert_closed_after(self, reply):
        """RFC 9112 section 9.6: a server that closes says so in the response first."""
        assert reply.closes, f'server closes without "Connection: close": {reply.fields}'
        assert self.at_eof()


def framing_records(port, after=0):
    """The records GET /_framing serves."""
    with Client(port) as client:
        reply = client.exchange(get(f'/_framing?after={after}'))
    assert reply.status == 200 and reply.get('cache-control') == 'no-store'
    return json.loads(reply.body)['records']


def baseline(server):
    """The server's resources once started and past one request, its connection closed."""
    with Client(server.port) as client:
        client.assert_closed_after(client.exchange(get('/', 'HTTP/1.1', 'Connection: close')))
    return resources(server.pid)


def assert_back_to_baseline(server, base, timeout=WAIT):
    """Wait until the server's (descriptors, threads) are back at or below ``base``."""
    wait_until(lambda: all(now <= then for now, then in zip(resources(server.pid), base)),
               f'(descriptors, threads) back to the baseline {base}', timeout, 0.02)


# -- replies read by h11, the independent oracle ----------------------------------------

# The index page of conftest's ``loop_server``.
SMALL_INDEX = b'<!doctype html><title>oracle</title><p>the index page</p>\n'


class Answer(NamedTuple):
    status: int
    headers: dict            # lower-case name -> value (str), the last of each name
    body: bytes
    informational: list      # statuses of 1xx responses before the final one
    kept: bool               # h11's view: may the connection carry another request?


def h11_client(method='GET', target='/', headers=()):
    """An h11 client that has sent ``method`` (it reads a response to HEAD differently)."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target=target, headers=[('Host', 'oracle'), *headers]))
    client.send(h11.EndOfMessage())
    return client


def h11_read(client, receive):
    """Events from h11 until the end of one response; ``receive()`` gives more bytes (b'' at EOF)."""
    status, headers, body, informational = None, {}, bytearray(), []
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(receive())
        elif isinstance(event, h11.InformationalResponse):
            informational.append(event.status_code)
        elif isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode().lower(): v.decode('latin-1') for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            kept = client.our_state is h11.DONE and client.their_state is h11.DONE
            return Answer(status, headers, bytes(body), informational, kept)
        else:
            raise AssertionError(f'unexpected event {event!r}')


def read_written(data, method='GET'):
    """Parse bytes a server wrote (then EOF) as h11 would after sending ``method``."""
    pending = [bytes(data), b'']
    return h11_read(h11_client(method), lambda: pending.pop(0) if pending else b'')


def receiver(sock):
    def receive():
        try:
            return sock.recv(65536)
        except ConnectionResetError:
            return b''   # a reset after the response is a close
    return receive


def closes(sock, timeout=WAIT):
    """Whether the server closes the connection (EOF or reset) within ``timeout``."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def assert_one_line_reason(answer):
    """An error body is one line: the status, its phrase, and why."""
    assert answer.headers['content-type'].startswith('text/plain')
    text = answer.body.decode('utf-8')
    assert text.endswith('\n') and text.count('\n') == 1, text
    assert text.startswith(f'{answer.status} ') and ': ' in text, text


@dataclass
class RawReply:
    status: int
    headers: dict                 # lower-case name -> value (repeated fields joined)
    body: bytes
    informational: list = field(default_factory=list)   # 1xx statuses before it
    raw: bytes = b''              # every byte of the reply as received
    trailers: list = field(default_factory=list)   # [(lower-case name, value)] after the last chunk


class RawClient:
    """A loopback connection that sends bytes as given and parses replies with h11."""

    def __init__(self, port, timeout=WAIT):
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=timeout)
        self._pending = b''

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, *pieces):
        self.sock.sendall(b''.join(pieces))

    def shut_write(self):
        """Close our sending half: to the server, exactly a client that went away."""
        self.sock.shutdown(socket.SHUT_WR)

    def read_exact(self, n):
        """n raw bytes (for a 100 Continue we must see before sending a body)."""
        data = self._pending
        while len(data) < n:
            piece = self.sock.recv(65536)
            if not piece:
                break
            data += piece
        self._pending = data[n:]
        return data[:n]

    def reply(self, method='GET'):
        """The next final response (1xx ones noted on the way), read with h11.

        h11 needs the request's method to know whether a body follows; the
        target it is told is a placeholder, since we sent our own bytes.
        """
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method=method, target='/', headers=[('Host', 'raw')]))
        conn.send(h11.EndOfMessage())
        raw = bytearray(self._pending)
        if self._pending:            # (receive_data(b'') would tell h11 of EOF)
            conn.receive_data(self._pending)
        self._pending = b''
        informational, body, response, trailers = [], bytearray(), None, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                piece = self.sock.recv(65536)
                raw += piece
                conn.receive_data(piece)
            elif isinstance(event, h11.InformationalResponse):
                informational.append(event.status_code)
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                trailers = [(name.decode('latin-1'), value.decode('latin-1'))
                            for name, value in event.headers]
                break
            elif isinstance(event, h11.ConnectionClosed):
                break
        self._pending, _ = conn.trailing_data
        if response is None:
            raise AssertionError(f'connection closed without a response; got {bytes(raw)!r}')
        headers = {}
        for name, value in response.headers:
            name = name.decode('latin-1')
            value = value.decode('latin-1')
            headers[name] = f'{headers[name]}, {value}' if name in headers else value
        return RawReply(response.status_code, headers, bytes(body), informational,
                        bytes(raw[:len(raw) - len(self._pending)]), trailers)

    def at_eof(self):
        """True when the server closed the connection with nothing more to say."""
        return not self._pending and self.sock.recv(65536) == b''


def exchange(port, method, target, headers=(), body=b''):
    """One request on its own connection (closed after the reply)."""
    with RawClient(port) as client:
        client.send(request_bytes(method, target, [*headers, 'Connection: close'], body))
        return client.reply(method)


# -- curl -----------------------------------------------------------------------------

# Longest a curl command in these tests may take.
CURL_TIMEOUT = 120


OPENSSL = shutil.which('openssl')


def openssl(*args, cwd):
    """Run the openssl command in ``cwd``; CalledProcessError when it fails."""
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=WAIT)


def curl(*args, timeout=CURL_TIMEOUT, stdin=None):
    """Run curl (silent but for errors); the CompletedProcess, stdout as bytes."""
    return subprocess.run(['curl', '-sS', '--max-time', str(timeout), *map(str, args)],
                          capture_output=True, timeout=timeout + 10, stdin=stdin, check=False)


# -- GET /_framing/stream ---------------------------------------------------------------

class Feed:
    """A client of GET /_framing/stream: its head, then server-sent events out of its chunks."""

    def __init__(self, port, after=0, context=None):
        self.client = Client(port, context=context)
        self.client.send(get(f'/_framing/stream?after={after}'))
        file = self.file = self.client.file
        assert file.readline().startswith(b'HTTP/1.1 200 ')
        fields = {}
        while (line := file.readline()) != b'\r\n':
            name, _, value = line.decode('latin-1').partition(':')
            fields[name.lower()] = value.strip()
        assert fields['content-type'] == 'text/event-stream'
        assert fields['transfer-encoding'] == 'chunked'
        self.pending = b''

    def events(self, count):
        """The next ``count`` events, each a dict of its fields (data parsed as JSON)."""
        found = []
        while len(found) < count:
            while b'\n\n' not in self.pending:
                size = int(self.file.readline().split(b';')[0], 16)
                assert size, 'the stream ended'
                self.pending += self.file.read(size)
                assert self.file.read(2) == b'\r\n'
            raw, self.pending = self.pending.split(b'\n\n', 1)
            event = dict(line.split(': ', 1) for line in raw.decode().split('\n'))
            event['data'] = json.loads(event['data'])
            found.append(event)
        return found

    def close(self):
        self.client.__exit__(None, None, None)


def read_exactly(conn, size):
    """Exactly ``size`` bytes from ``conn`` (a socket or a TLSConnection), by recv_into."""
    data = bytearray(size)
    view, got = memoryview(data), 0
    while got < size:
        n = conn.recv_into(view[got:])
        assert n, f'closed after {got} of {size} bytes'
        got += n
    return bytes(data)


# -- an in-process server whose answers may be given again (test_answer_*) -----------------

# The page such a server holds; its answer is remembered.
INDEX = b'<p>a page answered again</p>\n'


class CountingApp(App):
    """The app, counting the requests it was asked to answer."""

    calls = 0

    def __call__(self, request):
        self.calls += 1
        return super().__call__(request)


class Site:
    """An in-process server, plain or TLS, its access log and --trace lines captured."""

    def __init__(self, tmp_path, pki, scheme, monkeypatch):
        self.root = tmp_path / 'root'
        self.root.mkdir()
        (self.root / 'index.html').write_bytes(INDEX)
        self.lines = []
        monkeypatch.setattr(server_module, 'say_soon',
                            lambda line, err=False: self.lines.append(line))
        monkeypatch.setattr(server_module, 'log_soon', self.lines.append)
        records = FramingLog()
        browsers = Browsers(scheme='http' if scheme == 'plain' else 'https')
        self.app = CountingApp(str(self.root), str(tmp_path / 'uploads'), records=records,
                               browsers=browsers)
        self.protocol = HTTPServer(self.app, trace=True, head_timeout=5.0, body_timeout=5.0,
                                   keepalive_timeout=5.0, records=records)
        self.context = tls.client_context(pki['cert']) if scheme == 'tls' else None
        self.loop = EventLoop('127.0.0.1', 0, self.protocol, threads=2, context=(
            tls.server_context(pki['cert'], pki['key']) if scheme == 'tls' else None))
        self.loop.start()
        self.port = self.loop.address[1]
        browsers.listening(self.port)

    def client(self):
        client = RawClient(self.port)
        if self.context is not None:
            client.sock = self.context.wrap_socket(client.sock, server_hostname='localhost')
        return client

    def ask(self, data, method='GET'):
        """One request on a connection of its own; its reply."""
        with self.client() as client:
            client.send(data)
            return client.reply(method)

    def records(self):
        return [public(record) for record in self.protocol.records.kept()]
