"""What the file and upload tests share: a serving minihttp, raw-socket exchanges, curl.

Raw sockets send targets and bodies exactly as written (curl and requests
would normalise ``/../`` or finish a body we mean to cut), and h11, an
independent parser, reads what comes back.  Directory snapshots (dotfiles
included) show that a failed upload left nothing behind.
"""

import hashlib
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass, field

import h11

from conftest import WAIT, MinihttpProcess

# What `minihttp serve` prints once the HTTP server accepts connections.
HTTP_LISTENING = r'http server listening on http://(?P<host>\S+):(?P<port>\d+)/'
# Longest a curl command in these tests may take.
CURL_TIMEOUT = 120


def serve_args(root, uploads, *options):
    """The `minihttp serve` command line for a test: any free port, no block server."""
    return ['serve', '--port', '0', '--block-port', '0', '--quiet',
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


# -- raw exchanges ------------------------------------------------------------------

@dataclass
class Reply:
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
        return Reply(response.status_code, headers, bytes(body), informational,
                     bytes(raw[:len(raw) - len(self._pending)]), trailers)

    def at_eof(self):
        """True when the server closed the connection with nothing more to say."""
        return not self._pending and self.sock.recv(65536) == b''


def request_bytes(method, target, headers=(), body=b''):
    """A request exactly as written, with Host, and Content-Length unless the
    headers already frame the body (they may announce more than ``body``)."""
    lines = [f'{method} {target} HTTP/1.1', 'Host: 127.0.0.1', *headers]
    framed = any(re.match(r'(?i)(content-length|transfer-encoding):', line) for line in headers)
    if body and not framed:
        lines.append(f'Content-Length: {len(body)}')
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1') + body


def exchange(port, method, target, headers=(), body=b''):
    """One request on its own connection (closed after the reply)."""
    with RawClient(port) as client:
        client.send(request_bytes(method, target, [*headers, 'Connection: close'], body))
        return client.reply(method)


def chunked(*pieces):
    """A chunked body of these chunks and the last chunk."""
    return b''.join(b'%x\r\n%s\r\n' % (len(p), p) for p in pieces if p) + b'0\r\n\r\n'


# -- curl -----------------------------------------------------------------------------

def curl(*args, timeout=CURL_TIMEOUT, stdin=None):
    """Run curl (silent but for errors); the CompletedProcess, stdout as bytes."""
    return subprocess.run(['curl', '-sS', '--max-time', str(timeout), *map(str, args)],
                          capture_output=True, timeout=timeout + 10, stdin=stdin, check=False)


def curl_status(*args, **options):
    """curl ARGS; (HTTP status, response body, curl's stderr)."""
    marker = b'\n--status--'
    done = curl('-w', marker.decode() + '%{http_code}', *args, **options)
    body, _, status = done.stdout.rpartition(marker)
    assert done.returncode == 0, done.stderr.decode(errors='replace')
    return int(status), body, done.stderr.decode(errors='replace')


# -- files and directories ------------------------------------------------------------

def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        while piece := file.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


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


def wait_until(condition, what, timeout=WAIT):
    """Poll ``condition`` until it holds, failing after ``timeout`` seconds.

    For state only visible on disk (a temporary file appearing): there is no
    event to wait on, so the test looks until it sees it, with a deadline.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f'not within {timeout} s: {what}')
        time.sleep(0.005)
