"""Faults: clients that vanish, drip, say nothing or never read; a stop mid-upload; a full disk.

Each test runs a real server and makes one kind of trouble, while a
well-behaved client is answered; afterwards the server's descriptors and
threads are back to their baseline and no temporary or partial file is
visible.  Timeouts are short (a second) so that every deadline passes within
the test's own bound.
"""

import contextlib
import errno
import os
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from minihttp import atomic
from minihttp.eventloop import EventLoop
from minihttp.files import FileBody
from minihttp.responses import Response
from minihttp.server import HTTPServer
from minihttp.uploads import TEMP_PREFIX
from support import (Client, HTTP_LISTENING, WAIT, assert_back_to_baseline, baseline,
                     framing_records, get, multipart_body, temps, wait_until,
                     wait_until_refused)

SHORT = ('--head-timeout', '1', '--body-timeout', '1', '--keepalive-timeout', '2')


@pytest.fixture
def troubled(minihttp, tmp_path):
    """A server with short timeouts and an upload directory; (process, uploads, baseline)."""
    uploads = tmp_path / 'uploads'
    root = tmp_path / 'root'
    root.mkdir()
    (root / 'big.bin').write_bytes(os.urandom(16 << 20))
    server = minihttp('serve', '--port', 0, '--block-port', 0, '--root', root,
                      '--uploads', uploads, '--quiet', *SHORT, listening=HTTP_LISTENING)
    return server, uploads, baseline(server)


def put_head(path, *fields):
    return get(path, 'HTTP/1.1', *fields, method='PUT')


BOUNDARY = 'vanish'
FORM = multipart_body(BOUNDARY, [('f', 'form.bin', os.urandom(5000))])

# What a vanishing client had sent: a head, a body, a chunk-size line, a
# trailer, a multipart part, each cut short.
CUT_SHORT = {
    'mid-head': b'GET / HTTP/1.1\r\nHo',
    'mid-body': put_head('/uploads/v.bin', 'Content-Length: 100000') + b'x' * 5000,
    'mid-chunk-size': put_head('/uploads/v.bin', 'Transfer-Encoding: chunked')
    + b'5\r\nhello\r\n1',
    'mid-trailer': put_head('/uploads/v.bin', 'Transfer-Encoding: chunked')
    + b'5\r\nhello\r\n0\r\nX-Sum: 1',
    'mid-multipart': get('/uploads/', 'HTTP/1.1',
                         f'Content-Type: multipart/form-data; boundary={BOUNDARY}',
                         f'Content-Length: {len(FORM)}', method='POST') + FORM[:3000],
}


def vanish(port, data, reset):
    """Send ``data``, then go: with a FIN, or with a reset (SO_LINGER 0)."""
    sock = socket.create_connection(('127.0.0.1', port))
    sock.sendall(data)
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    sock.close()


def answered(port):
    with Client(port) as client:
        return client.exchange(get('/')).status == 200


def nothing_left(uploads):
    return [name for name in os.listdir(uploads)
            if name.startswith(TEMP_PREFIX) or name in ('v.bin', 'form.bin')] == []


@pytest.mark.parametrize('reset', [False, True], ids=['closed', 'reset'])
@pytest.mark.parametrize('where', CUT_SHORT)
def test_a_client_that_vanishes_leaves_nothing_and_no_one_waits(troubled, where, reset):
    server, uploads, base = troubled
    vanish(server.port, CUT_SHORT[where], reset)
    assert answered(server.port)
    assert_back_to_baseline(server, base)
    assert nothing_left(uploads)


def test_a_block_stream_cut_mid_block_leaves_no_file(minihttp, tmp_path):
    server = minihttp('blocks', '-p', 0, '--save', tmp_path)
    vanish(server.port, struct.pack('!I', 1000) + b'only part of it', reset=False)
    server.wait_for_line(r': stream cut inside a block payload: ', stream='stderr')
    vanish(server.port, struct.pack('!I', 1000) + b'only part of it', reset=True)
    server.wait_for_line(r': (connection failed: .*reset|stream cut inside a block payload)',
                         stream='stderr')
    assert os.listdir(tmp_path) == []


def drip(port, data, gap=0.3, first=b''):
    """Send ``first`` whole, then ``data`` a byte at a time, ``gap`` seconds apart: a slow
    or hostile client.  Returns what the server answered."""
    sock = socket.create_connection(('127.0.0.1', port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.sendall(first)
        for byte in data:
            if select.select([sock], [], [], 0)[0]:
                break           # the server has answered (or closed): stop sending
            sock.sendall(bytes([byte]))
            time.sleep(gap)     # the client's pace, not a synchronisation
        sock.settimeout(WAIT)
        return sock.recv(65536)
    except OSError:
        return b''
    finally:
        sock.close()


@pytest.mark.timeout(60)
def test_dripping_heads_and_bodies_meet_their_deadlines_while_others_are_served(troubled):
    server, uploads, base = troubled
    results = {}
    dripping = {
        # A head a byte every 0.3 s: its whole head is due within 1 s of its first byte.
        'head': lambda: drip(server.port, get('/')),
        # A whole head, then a body a byte every 1.5 s: each byte is due within 1 s.
        'body': lambda: drip(server.port, b'0123456789', gap=1.5,
                             first=put_head('/uploads/v.bin', 'Content-Length: 10'))}
    with contextlib.ExitStack() as stack:
        for name, client in dripping.items():
            thread = threading.Thread(target=lambda n=name, c=client: results.__setitem__(n, c()))
            thread.start()
            stack.callback(thread.join, WAIT * 2)
        for _ in range(5):
            assert answered(server.port)     # served meanwhile
    assert results['head'].startswith(b'HTTP/1.1 408 ')
    assert b'request head not received in time' in results['head']
    assert results['body'].startswith(b'HTTP/1.1 408 ')
    assert b'request body stalled' in results['body']
    assert_back_to_baseline(server, base)
    assert nothing_left(uploads)


def test_a_silent_connection_is_closed_by_its_deadline(troubled):
    server, _, base = troubled
    with socket.create_connection(('127.0.0.1', server.port)) as silent:
        silent.settimeout(WAIT)
        assert silent.recv(1) == b''         # closed, without a word
    assert_back_to_baseline(server, base)


@pytest.mark.timeout(60)
def test_a_client_that_never_reads_a_large_response_is_dropped(troubled):
    server, _, base = troubled
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(('127.0.0.1', server.port))
    try:
        stuck.sendall(get('/big.bin'))       # 16 MiB by sendfile, never read
        for _ in range(5):
            assert answered(server.port)
        # The send stalls; after --body-timeout the server gives up on it.
        assert_back_to_baseline(server, base)
    finally:
        stuck.close()


# A rate rule judged every second, and a between-bytes timeout far away: what cuts
# the slow clients below is their rate, not a gap.
PACED = ('--min-rate', '1000', '--rate-window', '1', '--body-timeout', '30')


@pytest.mark.timeout(60)
def test_bodies_dripping_below_the_minimum_rate_get_408_and_free_the_pool(minihttp, tmp_path):
    uploads = tmp_path / 'uploads'
    server = minihttp('serve', '--port', 0, '--block-port', 0, '--uploads', uploads,
                      '--threads', '2', *PACED, listening=HTTP_LISTENING)
    results = {}
    with contextlib.ExitStack() as stack:
        for name in ('first', 'second'):
            # A byte every 0.2 s (5 bytes/s): each gap is far inside --body-timeout.
            head = put_head(f'/uploads/{name}.bin', 'Content-Length: 100000')
            thread = threading.Thread(target=lambda n=name, h=head: results.__setitem__(
                n, drip(server.port, b'x' * 200, gap=0.2, first=h)))
            thread.start()
            stack.callback(thread.join, WAIT * 2)
        # Both bodies have begun on the pool's two threads.
        wait_until(lambda: len(temps(uploads)) == 2, 'both dripping uploads started')
        assert answered(server.port)          # a GET is answered in the loop meanwhile
        with Client(server.port) as client:   # and an upload waits for a thread, and gets one
            content = os.urandom(100_000)
            reply = client.exchange(put_head('/uploads/fast.bin',
                                             f'Content-Length: {len(content)}') + content, 'PUT')
            assert reply.status == 201, reply.body
    for name in ('first', 'second'):
        assert results[name].startswith(b'HTTP/1.1 408 '), results[name]
        assert re.search(rb'request body too slow: \d+ bytes received in 1\.\d s, below the '
                         rb'minimum of 1000 bytes/s\n$', results[name]), results[name]
        server.wait_for_line(rf'"PUT /uploads/{name}\.bin HTTP/1\.1" 408 \d+ "timed out: '
                             r'request body too slow: \d+ bytes received in 1\.\d s',
                             stream='stderr')
    assert (uploads / 'fast.bin').read_bytes() == content
    assert sorted(os.listdir(uploads)) == ['fast.bin']


@pytest.mark.timeout(60)
def test_a_client_that_never_reads_a_response_from_the_pool_is_cut_by_the_rate_and_logged(
        troubled_paced):
    server, base = troubled_paced
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(('127.0.0.1', server.port))
    try:
        stuck.sendall(get('/big.bin'))       # 16 MiB by sendfile, never read
        # Cut by the rate within a window or two, long before --body-timeout's 30 s.
        server.wait_for_line(r'"GET /big\.bin HTTP/1\.1" 200 \d+ "timed out: mid-response, '
                             r'after \d+ bytes: too slow: \d+ bytes read by the peer in 1\.\d s, '
                             r'below the minimum of 1000 bytes/s"$', stream='stderr')
        assert answered(server.port)
        assert_back_to_baseline(server, base)
    finally:
        stuck.close()


@pytest.fixture
def troubled_paced(minihttp, tmp_path):
    root = tmp_path / 'root'
    root.mkdir()
    (root / 'big.bin').write_bytes(os.urandom(16 << 20))
    server = minihttp('serve', '--port', 0, '--block-port', 0, '--root', root, '--quiet',
                      *PACED, listening=HTTP_LISTENING)
    return server, baseline(server)


@pytest.mark.timeout(90)
def test_sigterm_during_twenty_uploads_each_completes_or_leaves_nothing(minihttp, tmp_path):
    uploads = tmp_path / 'uploads'
    server = minihttp('serve', '--port', 0, '--block-port', 0, '--uploads', uploads, '--quiet',
                      '--grace', '3', listening=HTTP_LISTENING)
    size = 1 << 20
    contents = [os.urandom(size) for _ in range(20)]
    clients = [Client(server.port) for _ in contents]
    try:
        for n, (client, content) in enumerate(zip(clients, contents)):
            client.send(put_head(f'/uploads/u{n}.bin', f'Content-Length: {size}')
                        + content[:size // 2])
        wait_until(lambda: len(temps(uploads)) >= 20, 'all the uploads started')
        server.proc.send_signal(signal.SIGTERM)
        # The port closes once the loop is stopping: only then is an upload that ends
        # sure to be answered with a close (one that ends before is simply kept).
        wait_until_refused(server.port)
        for client, content in zip(clients[:10], contents[:10]):   # these finish in time
            client.send(content[size // 2:])
        for client in clients[:10]:
            reply = client.reply('PUT')
            assert reply.status == 201 and reply.closes
        assert server.proc.wait(WAIT) == 0      # the other ten were cut at the grace
    finally:
        for client in clients:
            client.__exit__(None, None, None)
    stored = sorted(os.listdir(uploads))
    assert stored == sorted(f'u{n}.bin' for n in range(10))
    for n in range(10):
        assert (uploads / f'u{n}.bin').read_bytes() == contents[n]


@contextlib.contextmanager
def mounted(directory, options):
    """A tmpfs mounted at ``directory`` with ``options``, or a skip where this machine cannot."""
    directory.mkdir(exist_ok=True)
    made = subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(directory)],
                          capture_output=True)
    if made.returncode:
        pytest.skip(f'cannot mount a tmpfs here: {made.stderr.decode().strip()} '
                    '(test_uploads.py injects ENOSPC instead)')
    try:
        yield directory
    finally:
        subprocess.run(['umount', '-l', str(directory)], check=False)


@pytest.mark.parametrize('options, status', [('size=1m', 507), ('ro,size=1m', 500)],
                         ids=['full', 'read-only'])
def test_a_full_or_read_only_upload_directory_answers_in_words_and_keeps_nothing(
        minihttp, tmp_path, options, status):
    with mounted(tmp_path / 'uploads', options) as uploads:
        server = minihttp('serve', '--port', 0, '--block-port', 0, '--uploads', uploads,
                          '--quiet', listening=HTTP_LISTENING)
        with Client(server.port) as client:
            content = os.urandom(2 << 20)            # more than the 1 MiB disk holds
            reply = client.exchange(put_head('/uploads/x.bin', f'Content-Length: {len(content)}')
                                    + content, 'PUT')
        assert reply.status == status, reply.body
        assert reply.body.count(b'\n') == 1
        assert os.listdir(uploads) == []
        server.stop()


def test_a_read_only_upload_directory_injected_gives_500_and_keeps_nothing(in_process,
                                                                             monkeypatch):
    # Where no tmpfs can be mounted, the same refusal by an injected error.
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(atomic.tempfile, 'mkstemp', read_only)
    with Client(in_process.port) as client:
        reply = client.exchange(put_head('/uploads/x.bin', 'Content-Length: 5') + b'hello',
                                'PUT')
    assert reply.status == 500 and b'Read-only file system' in reply.body
    assert os.listdir(in_process.directory) == []


# -- how each exchange ended: one access-log line and one record, cut or not ---------------

def ended(port, method, path, kind):
    """The record of the exchange ``method path`` that ended ``kind``, waited for."""
    found = []

    def recorded():
        found[:] = [r for r in framing_records(port) if r['kind'] == 'http'
                    and r['request'] is not None and r['request']['method'] == method
                    and r['request']['target'] == path and r['ended']['kind'] == kind]
        return found
    wait_until(recorded, f'a record of {method} {path} that ended {kind!r}')
    (record,) = found
    return record


@pytest.fixture
def logged(minihttp, tmp_path):
    """A server with short timeouts that writes its access log; (process, root, uploads)."""
    root, uploads = tmp_path / 'root', tmp_path / 'uploads'
    root.mkdir()
    (root / 'big.bin').write_bytes(os.urandom(16 << 20))

    def start(*args):
        return minihttp('serve', '--port', 0, '--block-port', 0, '--root', root,
                        '--uploads', uploads, *(args or SHORT), listening=HTTP_LISTENING)
    return start, uploads


def reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    sock.close()


def test_a_reset_mid_body_is_logged_and_recorded_as_the_client_gone(logged):
    start, uploads = logged
    server = start()
    sock = socket.create_connection(('127.0.0.1', server.port))
    sock.sendall(put_head('/uploads/v.bin', 'Content-Length: 100000') + b'x' * 5000)
    wait_until(lambda: len(temps(uploads)) == 1, 'the upload began on a thread')
    reset(sock)
    line = server.wait_for_line(r'"PUT /uploads/v\.bin HTTP/1\.1" - - "client left: (.*)"$',
                                stream='stderr')
    assert re.fullmatch(r'Connection reset by peer after \d+ bytes of the body', line[1])
    record = ended(server.port, 'PUT', '/uploads/v.bin', 'client left')
    assert record['ended']['reason'] == line[1]
    assert record['response']['status'] is None and 'no response' in record['words']
    assert nothing_left(uploads)


def test_a_reset_mid_response_is_logged_with_the_status_begun_and_the_bytes_sent(logged):
    start, _ = logged
    server = start()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(('127.0.0.1', server.port))
    sock.sendall(get('/big.bin'))
    sock.settimeout(WAIT)
    assert sock.recv(4096).startswith(b'HTTP/1.1 200 ')     # the answer has begun
    reset(sock)
    line = server.wait_for_line(r'"GET /big\.bin HTTP/1\.1" 200 (\d+) "client left: (.*)"$',
                                stream='stderr')
    assert 0 < int(line[1]) < 16 << 20
    assert re.fullmatch(r'(Connection reset by peer|Broken pipe) after \d+ bytes of the '
                        r'body', line[2])
    record = ended(server.port, 'GET', '/big.bin', 'client left')
    assert record['ended']['reason'] == line[2] and record['response']['status'] == 200
    assert record['words'].endswith('; client left: ' + line[2])


@pytest.mark.timeout(60)
def test_a_slow_reader_cut_by_the_minimum_rate_is_logged_and_recorded_as_timed_out(logged):
    start, _ = logged
    server = start(*PACED)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(('127.0.0.1', server.port))
    try:
        stuck.sendall(get('/big.bin'))       # never read
        line = server.wait_for_line(r'"GET /big\.bin HTTP/1\.1" 200 \d+ "timed out: '
                                    r'(mid-response, after \d+ bytes: too slow: .*)"$',
                                    stream='stderr')
        assert 'below the minimum of 1000 bytes/s' in line[1]
        record = ended(server.port, 'GET', '/big.bin', 'timed out')
        assert record['ended']['reason'] == line[1]
    finally:
        stuck.close()


def test_an_echo_whose_body_stalls_is_logged_and_recorded_as_timed_out(logged):
    start, _ = logged
    server = start()
    with Client(server.port) as client:
        client.send(get('/echo', 'HTTP/1.1', 'Transfer-Encoding: chunked', method='POST')
                    + b'5\r\nhello\r\n')             # one chunk, then nothing
        assert client.file.readline().startswith(b'HTTP/1.1 200 ')
        line = server.wait_for_line(r'"POST /echo HTTP/1\.1" 200 \d+ "timed out: (mid-response'
                                    r', after \d+ bytes: stalled: nothing received for 1 s)"$',
                                    stream='stderr')
        client.sock.settimeout(WAIT)
        assert not client.file.read().endswith(b'0\r\n\r\n')   # cut before its end
    record = ended(server.port, 'POST', '/echo', 'timed out')
    assert record['ended']['reason'] == line[1]
    assert record['request']['body']['done'] is False


@pytest.fixture
def serving(capsys):
    """``serving(app)``: an HTTP server on a thread of this process, with its access log;
    yields (port, records, lines on stderr so far)."""
    loops = []

    def start(app):
        server = HTTPServer(app)
        loop = EventLoop('127.0.0.1', 0, server)
        loop.start()
        loops.append(loop)
        err = []

        def lines():
            err.extend(capsys.readouterr().err.splitlines())
            return err
        return loop.address[1], server.records, lines
    yield start
    for loop in loops:
        loop.stop(0.5)


def assert_cut(serving, app, pattern):
    """Serve GET /x with ``app``: the response is cut, logged with a traceback and recorded."""
    port, records, lines = serving(app)
    with Client(port) as client:
        client.send(get('/x'))
        client.sock.settimeout(WAIT)
        client.file.read()                           # until the server closes
    wait_until(lambda: any('"GET /x HTTP/1.1" 200 ' in line for line in lines()),
               'the access log line')
    (line,) = [line for line in lines() if '"GET /x HTTP/1.1"' in line]
    reason = re.search(r' 200 \d+ "response cut: (.*)"$', line)[1]
    assert re.fullmatch(pattern, reason), reason
    assert 'Traceback (most recent call last)' in '\n'.join(lines())   # ours: said whole
    (record,) = [r for r in records.recent() if r['kind'] == 'http']
    assert record['ended'] == {'kind': 'response cut', 'reason': reason}
    assert record['response']['status'] == 200


def test_a_handler_that_lies_about_its_length_is_cut_logged_and_recorded(serving):
    def lying(request):
        return Response(200, [], iter([b'only this']), length=100)
    assert_cut(serving, lying, r'ResponseError: response body was 9 bytes, announced 100')


def test_a_file_that_shrinks_while_sent_is_cut_logged_and_recorded(serving, tmp_path):
    path = tmp_path / 'shrinking.bin'
    path.write_bytes(os.urandom(1 << 20))

    def shrinking(request):
        fd = os.open(path, os.O_RDONLY)
        size = os.fstat(fd).st_size
        os.truncate(path, size // 2)                 # as another process would, meanwhile
        return Response(200, [], FileBody(fd, 0, size), length=size)
    assert_cut(serving, shrinking,
               rf'ResponseError: file ended after {(1 << 20) // 2} of {1 << 20} bytes')


def test_a_full_disk_under_folders_and_resumable_uploads_answers_507_and_shows_nothing(
        minihttp, tmp_path):
    """Issue 17's writes keep today's guarantee on a full disk: a PUT into new folders
    makes none of them, and a resumable append keeps only what was durable (HEAD says
    it; DELETE then leaves the folder as it was)."""
    from support import exchange
    with mounted(tmp_path / 'uploads', 'size=1m') as uploads:
        server = minihttp('serve', '--port', 0, '--block-port', 0, '--uploads', uploads,
                          '--quiet', listening=HTTP_LISTENING)
        content = os.urandom(2 << 20)            # more than the 1 MiB disk holds
        reply = exchange(server.port, 'PUT', '/uploads/a/b/x.bin', [], content)
        assert reply.status == 507 and reply.body.count(b'\n') == 1, reply.body
        assert os.listdir(uploads) == []          # no folder, no temporary file
        version = 'Upload-Draft-Interop-Version: 9'
        created = exchange(server.port, 'PUT', '/uploads/r.bin',
                           ['Upload-Complete: ?0', version, 'Content-Length: 0'])
        assert created.status == 201, created.body
        location = created.headers['location']
        appended = exchange(server.port, 'PATCH', location,
                            ['Content-Type: application/partial-upload', 'Upload-Offset: 0',
                             'Upload-Complete: ?1', version], content)
        assert appended.status == 507, appended.body
        state = exchange(server.port, 'HEAD', location, [version])
        assert state.status == 204 and state.headers['upload-complete'] == '?0'
        assert int(state.headers['upload-offset']) < len(content)
        assert not [name for name in os.listdir(uploads) if not name.startswith('.')]
        assert exchange(server.port, 'DELETE', location).status == 204
        assert os.listdir(uploads) == []
        server.stop()
