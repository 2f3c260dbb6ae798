"""Every resource has one owner on every path: a client that resets at any step leaves nothing.

A descriptor opened for an answer (a file, a temporary file, the socket), a
pool thread, a temporary upload file: each is released whether the answer is
sent, cut, dropped from a queue or refused at shutdown.  Here a client resets
(SO_LINGER {1, 0}, then close) after every step of every kind of exchange,
and the server's descriptors (/proc/PID/fd), threads (/proc/PID/task) and
temporary files are then found back at their baseline, waited for with a
deadline.  Then the attack that found the leak: a server with few
descriptors takes hundreds of resets right after GET of a large file, and
still serves.
"""

import gc
import os
import resource
import socket
import struct
import threading

import pytest

from minihttp.app import App
from minihttp.eventloop import CLOSED, Connection, EventLoop
from minihttp.grammar import HEAD_END
from minihttp.limits import SMALL_FILE
from minihttp.server import HTTPServer
from support import (Client, HTTP_LISTENING, WAIT, assert_back_to_baseline, baseline, chunked,
                     get, multipart_body, post, temps, wait_until)

BIG = 8 << 20              # more than any socket buffer holds: sent by sendfile for a while
SMALL = b'small and answered from memory, in the loop\n'
RCVBUF = 8192              # the resetting client's: a large answer stays in progress


@pytest.fixture(scope='module')
def document_root(tmp_path_factory):
    """A document root with a small file, a large one, a mid-sized one and a long listing,
    made once: the servers only read it."""
    root = tmp_path_factory.mktemp('root')
    (root / 'small.txt').write_bytes(SMALL)
    (root / 'big.bin').write_bytes(os.urandom(BIG))
    (root / 'mid.bin').write_bytes(os.urandom(SMALL_FILE - 4096))   # cached after one read
    (root / 'other.bin').write_bytes(os.urandom(SMALL_FILE + 1))    # never cached
    many = root / 'many'
    many.mkdir()
    for n in range(1500):
        (many / f'entry-with-a-longish-name-{n:05}.txt').touch()
    return root


@pytest.fixture
def site(document_root, tmp_path):
    """(document root, an upload directory of this test's own)."""
    return document_root, tmp_path / 'uploads'


@pytest.fixture
def owned(minihttp, site):
    """``owned(*args)``: a server on the site; (process, root, uploads, baseline)."""
    root, uploads = site

    def start(*args):
        server = minihttp('serve', '--port', 0, '--block-port', 0, '--root', root,
                          '--uploads', uploads, '--quiet', '--body-timeout', '5', *args,
                          listening=HTTP_LISTENING)
        return server, root, uploads, baseline(server)
    return start


# -- a client that goes away with a reset, after any step ------------------------------

class Resetting:
    """A client that takes steps, then resets: SO_LINGER {1, 0}, so close sends RST."""

    def __init__(self, port, rcvbuf=RCVBUF, mss=None):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)   # before connect
        if mss is not None:
            # Small segments make the server's send buffer start small too (Linux
            # sizes it from the segment size), so its queued answers stay queued.
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
        self.sock.settimeout(WAIT)
        self.sock.connect(('127.0.0.1', port))
        self.received = bytearray()

    def take(self, step, pid, root=None):
        """One step: send bytes, wait for bytes, or wait until the server (``pid``)
        holds files under ``root`` open: ('opened', (name, how many))."""
        kind, what = step
        if kind == 'send':
            self.sock.sendall(what)
        elif kind == 'until':          # these bytes have arrived (at most 1 MiB read)
            while what not in self.received:
                assert len(self.received) < 1 << 20, f'{what!r} not in the first MiB'
                piece = self.sock.recv(65536)
                assert piece, f'closed before {what!r}: {bytes(self.received[:300])!r}'
                self.received += piece
        elif kind == 'bytes':          # this many have arrived
            while len(self.received) < what:
                piece = self.sock.recv(65536)
                assert piece, f'closed after {len(self.received)} bytes'
                self.received += piece
        else:
            path, count = root / what[0], what[1]
            wait_until(lambda: holding(pid, path) >= count, f'{count} descriptors of {path}')

    def reset(self):
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        self.sock.close()


def holding(pid, path):
    """How many of a process's descriptors are open on ``path``."""
    count = 0
    for fd in os.listdir(f'/proc/{pid}/fd'):
        try:
            count += os.readlink(f'/proc/{pid}/fd/{fd}') == str(path)
        except FileNotFoundError:
            pass        # closed meanwhile
    return count


def assert_released(server, base, uploads):
    assert_back_to_baseline(server, base)
    wait_until(lambda: not uploads.exists() or temps(uploads) == [],
               'no temporary upload file left')


UPLOAD = os.urandom(300_000)
FORM = multipart_body('owners', [('f', 'form.bin', UPLOAD)])
ECHO_PIECE = b'e' * 16384


def put_head(path, *fields):
    return get(path, 'HTTP/1.1', *fields, method='PUT')


# Each kind of exchange as the steps a client takes; the test resets after each one.
EXCHANGES = {
    'small inline': [
        ('send', get('/small.txt')),
        ('until', SMALL)],
    'large file by sendfile': [
        ('send', get('/big.bin')),
        ('until', HEAD_END),
        ('bytes', 256 << 10)],
    'multi-range': [
        ('send', get('/big.bin', 'HTTP/1.1', 'Range: bytes=0-99,1000000-5999999')),
        ('until', HEAD_END),
        ('until', b'Content-Range: bytes 1000000-'),
        ('bytes', 256 << 10)],
    'chunked listing': [
        ('send', get('/many/')),
        ('until', HEAD_END),
        ('until', b'entry-with-a-longish-name-00900')],
    'chunked echo': [
        ('send', get('/echo', 'HTTP/1.1', 'Transfer-Encoding: chunked', method='POST')),
        ('send', chunked(ECHO_PIECE)[:-5]),          # one chunk, not the last
        ('until', HEAD_END),
        ('until', ECHO_PIECE[:1000]),
        ('send', chunked(ECHO_PIECE)),               # another, and the end
        ('until', b'\r\n0\r\n\r\n')],
    'event stream': [
        ('send', get('/_framing/stream')),
        ('until', HEAD_END),
        ('until', b'event: record')],
    '100-continue upload': [
        ('send', put_head('/uploads/o.bin', 'Expect: 100-continue',
                          f'Content-Length: {len(UPLOAD)}')),
        ('until', b'100 Continue\r\n\r\n'),
        ('send', UPLOAD[:100_000]),
        ('send', UPLOAD[100_000:]),
        ('until', b'HTTP/1.1 201 ')],
    'multipart upload': [
        ('send', post('/uploads/', FORM, 'Content-Type: multipart/form-data; boundary=owners')
         [:-len(FORM) + 100_000]),
        ('send', FORM[100_000:]),
        ('until', b'HTTP/1.1 200 ')],
}


def cases(exchanges):
    return [pytest.param(kind, n, id=f'{kind}, reset after step {n + 1} of {len(steps)}')
            for kind, steps in exchanges.items() for n in range(len(steps))]


@pytest.mark.timeout(60)
@pytest.mark.parametrize('kind, step', cases(EXCHANGES))
def test_a_reset_after_any_step_of_any_answer_leaves_nothing_held(owned, kind, step):
    server, root, uploads, base = owned()
    client = Resetting(server.port)
    for each in EXCHANGES[kind][:step + 1]:
        client.take(each, server.pid)
    client.reset()
    assert_released(server, base, uploads)
    with Client(server.port) as other:             # and the server still serves
        assert other.exchange(get('/other.bin')).status == 200


@pytest.mark.timeout(60)
@pytest.mark.parametrize('step', [0, 1], ids=['its file opened', 'the first answer begun'])
def test_a_reset_while_pipelined_work_waits_behind_unsent_answers_releases_it(owned, step):
    # Answers from memory queue up for a client that does not read; the large
    # file asked for after them is opened at once and waits for them to leave.
    server, root, uploads, base = owned()
    client = Resetting(server.port, rcvbuf=4096, mss=536)
    client.take(('send', get('/mid.bin') * 3 + get('/big.bin')), server.pid)
    client.take(('opened', ('big.bin', 1)), server.pid, root)
    if step:
        client.take(('until', HEAD_END), server.pid)
    client.reset()
    assert_released(server, base, uploads)


# -- work waiting for a thread --------------------------------------------------------

QUEUED = {
    'GET of a large file': [
        ('send', get('/big.bin')),
        ('opened', ('big.bin', 2))],         # its file is open, its turn not yet come
    'multi-range GET': [
        ('send', get('/big.bin', 'HTTP/1.1', 'Range: bytes=0-99,1000000-5999999')),
        ('opened', ('big.bin', 2))],
    'upload': [
        ('send', put_head('/uploads/q.bin', f'Content-Length: {len(UPLOAD)}')
         + UPLOAD[:50_000])],
    '100-continue upload': [
        ('send', put_head('/uploads/q.bin', 'Expect: 100-continue',
                          f'Content-Length: {len(UPLOAD)}'))],
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize('kind', QUEUED)
def test_a_reset_while_work_waits_for_a_thread_releases_it_when_its_turn_comes(owned, kind):
    server, root, uploads, base = owned('--threads', '1')
    busy = Resetting(server.port, rcvbuf=4096)          # holds the only thread, sending
    busy.take(('send', get('/big.bin')), server.pid)
    busy.take(('opened', ('big.bin', 1)), server.pid, root)
    queued = Resetting(server.port)
    for step in QUEUED[kind]:
        queued.take(step, server.pid, root)
    queued.reset()
    busy.reset()                                        # the thread is free: its turn comes
    assert_released(server, base, uploads)
    with Client(server.port) as other:
        assert other.exchange(get('/other.bin')).status == 200


@pytest.mark.timeout(60)
def test_stopping_with_work_queued_for_a_thread_releases_all_of_it(site):
    # What SIGTERM does (run_until_signalled calls stop(grace)), in this process
    # so that what the loop leaks would stay visible after it ends.
    root, uploads = site
    big = root / 'big.bin'
    before = own_resources()
    loop = EventLoop('127.0.0.1', 0, HTTPServer(App(str(root), str(uploads)), access_log=False),
                     threads=1)
    loop.start()
    port = loop.address[1]
    clients = []
    try:
        busy = Resetting(port, rcvbuf=4096)
        clients.append(busy)
        busy.take(('send', get('/big.bin')), None)
        wait_until(lambda: holding(os.getpid(), big) == 1, 'the busy answer opened')
        for request in (get('/big.bin'),
                        put_head('/uploads/q.bin', f'Content-Length: {len(UPLOAD)}')
                        + UPLOAD[:50_000]):
            queued = Resetting(port)
            clients.append(queued)
            queued.take(('send', request), None)
        wait_until(lambda: holding(os.getpid(), big) == 2, 'the queued answer opened')
        stopper = threading.Thread(target=loop.stop, args=(0.2,))
        stopper.start()
        stopper.join(WAIT)
        assert not stopper.is_alive()
    finally:
        for client in clients:
            client.sock.close()
    assert holding(os.getpid(), big) == 0
    after = own_resources()
    assert all(now <= then for now, then in zip(after, before)), (after, before)
    assert temps(uploads) == []


def own_resources():
    """(open descriptors, threads) of this process."""
    return len(os.listdir('/proc/self/fd')), threading.active_count()


# -- the attack: resets right after GET of a large file, few descriptors --------------

DESCRIPTOR_LIMIT = 300     # the server fits its connections to it: 40 with --threads 4
ATTACKS = 600              # twice what the limit holds, were each to leak one


@pytest.mark.timeout(120)
def test_hundreds_of_resets_after_get_of_a_large_file_leave_every_file_servable(minihttp, site):
    root, uploads = site
    limit = (DESCRIPTOR_LIMIT, DESCRIPTOR_LIMIT)
    server = minihttp('serve', '--port', 0, '--block-port', 0, '--root', root, '--quiet',
                      '--uploads', uploads, '--threads', '4', listening=HTTP_LISTENING,
                      preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limit))
    base = baseline(server)
    for _ in range(ATTACKS):
        client = Resetting(server.port)
        client.take(('send', get('/big.bin')), server.pid)
        client.reset()
    assert_back_to_baseline(server, base)
    with Client(server.port) as client:
        reply = client.exchange(get('/other.bin'))
    assert reply.status == 200 and reply.body == (root / 'other.bin').read_bytes()


# -- GET /_framing/stream with a body or an expectation (RFC 9110 sections 9.3.1, 10.1.1) --

@pytest.mark.parametrize('fields, body, closes', [
    (['Content-Length: 5'], b'hello', False),
    (['Transfer-Encoding: chunked'], chunked(b'hello'), True),
    (['Content-Length: 5', 'Expect: 100-continue'], b'', True),
], ids=['content-length', 'chunked', '100-continue with a body'])
def test_the_event_stream_refuses_a_request_body_in_one_line(owned, fields, body, closes):
    server, root, uploads, base = owned()
    with Client(server.port) as client:
        reply = client.exchange(get('/_framing/stream', 'HTTP/1.1', *fields) + body)
        assert reply.status == 400, reply
        assert reply.body.count(b'\n') == 1 and b'event stream' in reply.body   # no 100 first
        if closes:       # the body was never asked for, or is not drained: the answer says so
            client.assert_closed_after(reply)
        else:            # drained: the connection goes on
            assert client.exchange(get('/small.txt')).body == SMALL
    assert_released(server, base, uploads)


def test_the_event_stream_with_100_continue_and_no_body_is_served(owned):
    # RFC 9110 section 10.1.1: with no content to send, the 100 is omitted.
    server, root, uploads, base = owned()
    client = Resetting(server.port)
    try:
        client.take(('send', get('/_framing/stream', 'HTTP/1.1', 'Expect: 100-continue')),
                    server.pid)
        client.take(('until', b'event: record'), server.pid)
        assert client.received.startswith(b'HTTP/1.1 200 ')
        assert b'\r\nContent-Type: text/event-stream\r\n' in client.received
    finally:
        client.sock.close()
    with Client(server.port) as other:
        assert other.exchange(get('/x', 'HTTP/1.1', 'Expect: 200-ok')).status == 417
    assert_released(server, base, uploads)


def test_a_closed_connection_gives_its_buffer_back_at_once(tmp_path):
    """A closed connection may wait in the lazy deadline heap until its entry comes up;
    the buffer its uploads grew (128 KiB and more) must not wait with it."""
    app = App(root=str(tmp_path), uploads=str(tmp_path / 'up'))
    loop = EventLoop('127.0.0.1', 0, HTTPServer(app, access_log=False))
    loop.start()
    try:
        body = b'x' * 300_000
        for n in range(5):
            with socket.create_connection(loop.address, timeout=WAIT) as sock:
                sock.sendall(b'PUT /uploads/f%d HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: '
                             b'%d\r\nConnection: close\r\n\r\n' % (n, len(body)) + body)
                while sock.recv(65536):
                    pass
        wait_until(lambda: not loop.connections, 'every connection closed')
        closed = [o for o in gc.get_objects() if type(o) is Connection and o.loop is loop
                  and o.state is CLOSED]
        assert closed                                  # held by the deadline heap a while
        assert [conn.reader.capacity for conn in closed] == [0] * len(closed)
    finally:
        loop.stop(0)
