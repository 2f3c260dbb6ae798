"""Every feature over TLS as over TCP: one table of scenarios, run both ways.

Each test here takes ``site``, an in-process minihttp served plain or over TLS
(the session's test certificate, trusted by the client's context alone), or
``scheme`` for a `minihttp` process started either way.  The test bodies do
not know which: the same bytes go out, the same answers must come back, and
after a client that vanishes at any step the server's descriptors and
threads are back where they were.  What only TLS has (the handshake, the
wrong scheme, renegotiation) is in test_tls_server.py and at the end here.
"""

import base64
import hashlib
import io
import json
import os
import re
import socket
import ssl
import struct
import subprocess
import tarfile
import threading
import zipfile

import pytest

from minihttp import tls
from minihttp.app import App
from minihttp.eventloop import AWAITING_BODY, HANDSHAKE, QUEUED, WAITING, EventLoop
from minihttp.records import FramingLog
from minihttp.server import HTTPServer
from support import (HTTP_LISTENING, LISTENING, OPENSSL, WAIT, Client, Feed, MinihttpProcess,
                     archivable, chunked, curl, get, multipart_body, post, run_minihttp,
                     sha256_file, temps, wait_until)

pytestmark = pytest.mark.timeout(90)

BIG = (1 << 20) + 17
INDEX = b'<p>the same page either way</p>\n'
SCHEMES = ['plain', 'tls']


class Site:
    """An in-process minihttp on loopback, plain or TLS: its loop, port, root, uploads.

    ``client()`` opens a support.Client speaking the site's scheme; ``connect()``
    a bare socket (TLS handshake done).
    """

    def __init__(self, tmp_path, pki, scheme, threads=4, body_timeout=5.0):
        self.scheme = scheme
        self.root = tmp_path / 'root'
        self.root.mkdir()
        (self.root / 'index.html').write_bytes(INDEX)
        self.big = self.root / 'big.bin'
        self.big.write_bytes(os.urandom(BIG))
        self.uploads = tmp_path / 'uploads'
        records = FramingLog()
        app = App(str(self.root), str(self.uploads), records=records)
        protocol = HTTPServer(app, access_log=False, head_timeout=5.0,
                              body_timeout=body_timeout, keepalive_timeout=5.0, records=records)
        self.context = tls.client_context(pki['cert']) if scheme == 'tls' else None
        self.loop = EventLoop('127.0.0.1', 0, protocol, threads=threads, context=(
            tls.server_context(pki['cert'], pki['key']) if scheme == 'tls' else None))
        self.loop.start()
        self.port = self.loop.address[1]

    def client(self):
        return Client(self.port, context=self.context)

    def connect(self):
        sock = socket.create_connection(('127.0.0.1', self.port), timeout=WAIT)
        if self.context is None:
            return sock
        return self.context.wrap_socket(sock, server_hostname='localhost')


@pytest.fixture(params=SCHEMES)
def site(request, tmp_path, pki):
    served = Site(tmp_path, pki, request.param)
    yield served
    served.loop.stop(0.5)


def put(path, *fields, body=b''):
    return get(path, 'HTTP/1.1', *fields, method='PUT', body=body)


# -- keep-alive, pipelining, 100-continue ------------------------------------------------

def test_keep_alive_and_pipelined_requests_in_one_write(site):
    with site.client() as client:
        client.send(get('/index.html') + get('/big.bin') + get('/index.html', 'HTTP/1.1',
                                                                 'Connection: close'))
        first, big, last = client.reply(), client.reply(), client.reply()
        assert (first.status, big.status, last.status) == (200, 200, 200)
        assert first.body == last.body == INDEX
        assert big.body == site.big.read_bytes()
        client.assert_closed_after(last)
    with site.client() as client:          # kept alive: five requests one after another
        for _ in range(5):
            reply = client.exchange(get('/index.html'))
            assert reply.status == 200 and not reply.closes


def test_100_continue_then_the_body(site):
    body = os.urandom(200_000)
    with site.client() as client:
        client.send(put('/uploads/continued.bin', 'Expect: 100-continue',
                        f'Content-Length: {len(body)}'))
        assert client.reply().status == 100        # before a byte of the body
        client.send(body)
        reply = client.reply()
        assert reply.status == 201
        assert json.loads(reply.body)['sha256'] == hashlib.sha256(body).hexdigest()


def test_after_an_answer_a_begun_head_waits_on_head_timeout_an_idle_one_on_keepalive(site):
    """The loop parks a connection once its answer has left: with the next head begun
    it is held to head_timeout (408), with nothing buffered to keepalive_timeout (closed
    unanswered).  Each timeout here is the short one in turn, the other far beyond the
    client's wait: a connection parked on the wrong one fails the read."""
    protocol = site.loop.protocol
    protocol.head_timeout, protocol.keepalive_timeout = 0.5, 10 * WAIT
    with site.client() as begun:
        begun.send(get('/index.html') + b'GET /index.html HTTP/1.1\r\nHost: h\r\n')
        assert begun.reply().status == 200
        late = begun.reply()
        assert late.status == 408
        begun.assert_closed_after(late)
    protocol.head_timeout, protocol.keepalive_timeout = 10 * WAIT, 0.5
    with site.client() as idle:
        idle.send(get('/index.html') * 2)          # pipelined: answered, then idle
        assert [idle.reply().status for _ in range(2)] == [200, 200]
        assert idle.at_eof()


# -- uploads -------------------------------------------------------------------------

def test_a_resumable_upload_cut_then_resumed(site):
    """The 104 (an interim response from the handler's thread) before the body, a cut,
    HEAD for the offset, PATCH for the rest: the same bytes stored either way."""
    data = os.urandom(900_000)
    cut = 345_678
    with site.client() as client:
        client.send(put('/uploads/resumed.bin', 'Upload-Complete: ?1',
                        'Upload-Draft-Interop-Version: 9', f'Content-Length: {len(data)}'))
        interim = client.reply()
        assert interim.status == 104 and interim.get('upload-draft-interop-version') == '9'
        location = interim.get('location')
        client.send(data[:cut])

    def offset():
        with site.client() as client:
            reply = client.exchange(get(location, 'HTTP/1.1', method='HEAD'), 'HEAD')
            assert reply.status == 204 and reply.get('cache-control') == 'no-store'
            return int(reply.get('upload-offset'))

    wait_until(lambda: offset() == cut, f'offset {cut} held')
    with site.client() as client:
        reply = client.exchange(put(location, 'Content-Type: application/partial-upload',
                                    f'Upload-Offset: {cut}', 'Upload-Complete: ?1',
                                    f'Content-Length: {len(data) - cut}',
                                    body=data[cut:]).replace(b'PUT ', b'PATCH ', 1))
    assert reply.status == 201 and reply.get('upload-complete') == '?1'
    assert sha256_file(site.uploads / 'resumed.bin') == hashlib.sha256(data).hexdigest()


def test_a_parts_content_digest_in_a_trailer_is_checked(site):
    """A PATCH's Content-Digest in the trailer section: wrong, the part is not appended
    (400, the offset from before); right, it completes the upload."""
    data = os.urandom(300_000)
    with site.client() as client:
        created = client.exchange(put('/uploads/checked.bin', 'Upload-Complete: ?0',
                                      'Content-Length: 0'))
    assert created.status == 201, created.body
    location = created.get('location')
    for digest, status in ((hashlib.sha256(b'other'), 400), (hashlib.sha256(data), 201)):
        field = 'Content-Digest: sha-256=:' + base64.b64encode(digest.digest()).decode() + ':'
        with site.client() as client:
            reply = client.exchange(put(
                location, 'Content-Type: application/partial-upload', 'Upload-Offset: 0',
                'Upload-Complete: ?1', 'Trailer: Content-Digest', 'Transfer-Encoding: chunked',
                body=chunked(data[:100_000], data[100_000:], trailers=[field])
            ).replace(b'PUT ', b'PATCH ', 1))
        assert reply.status == status, reply.body
    assert json.loads(reply.body)['digests_checked'] == ['content-digest trailer sha-256']
    assert sha256_file(site.uploads / 'checked.bin') == hashlib.sha256(data).hexdigest()


# The larger is hashed and written on a thread of its own past its first MiB
# (uploads.Handoff), the smaller by the thread that reads it.
@pytest.mark.parametrize('size', [700_000, 3 * 1024 * 1024 + 5])
@pytest.mark.parametrize('framing', ['content-length', 'chunked'])
def test_an_upload_is_stored_whole(site, framing, size):
    data = os.urandom(size)
    if framing == 'chunked':
        request = put('/uploads/up.bin', 'Transfer-Encoding: chunked',
                      body=chunked(*(data[i:i + 65536] for i in range(0, len(data), 65536))))
    else:
        request = put('/uploads/up.bin', f'Content-Length: {len(data)}', body=data)
    with site.client() as client:
        reply = client.exchange(request)
    assert reply.status == 201, reply.body
    assert json.loads(reply.body)['framing'] == framing
    assert sha256_file(site.uploads / 'up.bin') == hashlib.sha256(data).hexdigest()


def test_a_multipart_form_upload_stores_each_file(site):
    parts = [('one', 'first.bin', os.urandom(100_000)), ('two', 'second.txt', b'hello\r\n--')]
    body = multipart_body('parity-boundary', parts)
    with site.client() as client:
        reply = client.exchange(post('/uploads/', body, 'Accept: application/json',
                                     'Content-Type: multipart/form-data; boundary=parity-boundary'))
    assert reply.status in (200, 201), reply.body
    for _, filename, content in parts:
        assert (site.uploads / filename).read_bytes() == content


def test_folders_conditional_puts_and_listings(site):
    with site.client() as client:
        made = client.exchange(put('/uploads/a/b/f.bin', 'If-None-Match: *',
                                   'Content-Length: 5', body=b'first'))
        again = client.exchange(put('/uploads/a/b/f.bin', 'If-None-Match: *',
                                    'Content-Length: 6', body=b'second'))
        stale = client.exchange(put('/uploads/a/b/f.bin', 'If-Match: "stale"',
                                    'Content-Length: 5', body=b'third'))
        folder = client.exchange(put('/uploads/a/empty/', 'Content-Length: 0'))
        listed = client.exchange(get('/uploads/a/', 'HTTP/1.1', 'Accept: application/json'))
        full = client.exchange(get('/uploads/a/', 'HTTP/1.1', method='DELETE'))
        emptied = client.exchange(get('/uploads/a/empty/', 'HTTP/1.1', method='DELETE'))
    assert (made.status, again.status, stale.status) == (201, 412, 412)
    assert again.get('etag') == made.get('etag')
    assert folder.status == 201 and (full.status, emptied.status) == (409, 204)
    assert listed.status == 200 and listed.get('transfer-encoding') == 'chunked'
    answer = json.loads(listed.body)
    assert answer['folder'] == 'a/' and answer['files'] == []
    assert [folder['name'] for folder in answer['folders']] == ['b', 'empty']
    assert (site.uploads / 'a' / 'b' / 'f.bin').read_bytes() == b'first'


def states(site):
    return sorted(conn.state for conn in list(site.loop.connections))


def unanswered(client):
    """Whether nothing has come for ``client`` to read: no answer, no close (over TLS,
    the session tickets the server sent after the handshake are not one)."""
    client.sock.setblocking(False)
    try:
        client.sock.recv(1)
        return False
    except (BlockingIOError, ssl.SSLWantReadError):
        return True
    finally:
        client.sock.settimeout(WAIT)


@pytest.mark.parametrize('scheme', SCHEMES)
def test_a_stalled_body_whose_turn_comes_waits_in_the_loop_and_the_thread_serves_the_next(
        tmp_path, pki, scheme):
    """A body stalled while it waited for a thread is not given the thread when its
    turn comes: the thread's timeout would run from then, and answer it (408) up
    to a whole body_timeout after its deadline (bench peers --only hostile: up to
    --threads stalled bodies closed late), holding the thread meanwhile."""
    site = Site(tmp_path, pki, scheme, threads=1, body_timeout=3.0)
    try:
        with site.client() as holder, site.client() as stalled, site.client() as whole:
            # The holder's upload takes the only thread; the stalled body and a whole
            # one queue behind it, in that order.
            holder.send(put('/uploads/held.txt', 'Transfer-Encoding: chunked',
                            body=b'5\r\nfirst\r\n'))
            wait_until(lambda: temps(site.uploads), 'the holder took the thread')
            stalled.send(put('/uploads/stalled.bin', 'Content-Length: 100', body=b'first'))
            wait_until(lambda: QUEUED in states(site), 'the stalled body queued')
            whole.send(post('/echo', b'whole', method='PUT'))
            wait_until(lambda: states(site).count(QUEUED) == 2, 'the whole body queued')
            # The thread comes free long before the stalled body's deadline.
            holder.send(chunked(b' body'))
            assert holder.reply('PUT').status == 201
            reply = whole.reply('PUT')
            assert (reply.status, reply.body) == (200, b'whole')
            # Its deadline has not come: it waits in the loop, unanswered.
            assert unanswered(stalled)
            assert AWAITING_BODY in states(site)
            reply = stalled.reply('PUT')
            assert reply.status == 408 and b'request body not received in time' in reply.body
            stalled.assert_closed_after(reply)
    finally:
        site.loop.stop(0.5)
    assert (site.uploads / 'held.txt').read_bytes() == b'first body'
    assert temps(site.uploads) == []


# -- ranges ----------------------------------------------------------------------------

def test_a_range_and_multiple_ranges(site):
    data = site.big.read_bytes()
    with site.client() as client:
        one = client.exchange(get('/big.bin', 'HTTP/1.1', 'Range: bytes=1000-1999'))
        assert one.status == 206
        assert one.get('content-range') == f'bytes 1000-1999/{BIG}'
        assert one.body == data[1000:2000]
        many = client.exchange(get('/big.bin', 'HTTP/1.1', 'Range: bytes=0-3,-5,500000-500099'))
    assert many.status == 206
    boundary = re.fullmatch(r'multipart/byteranges; boundary=(\S+)',
                            many.get('content-type'))[1].encode()
    parts = many.body.split(b'--' + boundary)
    assert parts[0] == b'' and parts[-1] == b'--\r\n'
    got = []
    for part in parts[1:-1]:
        head, _, content = part.partition(b'\r\n\r\n')
        first, last = map(int, re.search(rb'Content-Range: bytes (\d+)-(\d+)/', head).groups())
        assert content[:-2] == data[first:last + 1] and content.endswith(b'\r\n')
        got.append((first, last))
    assert got == [(0, 3), (BIG - 5, BIG - 1), (500000, 500099)]


# -- a folder as one archive, chunked while it is made ---------------------------------

def archived_folder(site):
    """A folder under the uploads folder with a file larger than a piece of the archive."""
    folder = site.uploads / 'folder' / 'inner'
    folder.mkdir(parents=True)
    (folder / 'big.bin').write_bytes(site.big.read_bytes())
    (folder / 'small.txt').write_bytes(INDEX)
    return site.uploads / 'folder'


@pytest.mark.parametrize('kind', ['tar', 'zip'])
def test_a_folder_comes_as_one_chunked_archive(site, kind):
    archivable_files = archivable(archived_folder(site))
    with site.client() as client:
        reply = client.exchange(get(f'/uploads/folder/?archive={kind}'))
        assert reply.status == 200 and reply.get('transfer-encoding') == 'chunked'
        head = client.exchange(get(f'/uploads/folder/?archive={kind}', method='HEAD'), 'HEAD')
    assert head.status == 200 and head.body == b'' and head.get('transfer-encoding') == 'chunked'
    if kind == 'zip':
        with zipfile.ZipFile(io.BytesIO(reply.body)) as z:
            got = {name.removeprefix('folder/').rstrip('/'): None if name.endswith('/')
                   else z.read(name) for name in z.namelist() if name != 'folder/'}
    else:
        with tarfile.open(fileobj=io.BytesIO(reply.body)) as tar:
            got = {m.name.removeprefix('folder/'): tar.extractfile(m).read() if m.isfile()
                   else None for m in tar if m.name != 'folder'}
    assert got == archivable_files


# -- /echo and /_framing/stream --------------------------------------------------------

def test_echo_mirrors_a_content_length_body_and_a_chunked_one(site):
    data = os.urandom(300_000)
    with site.client() as client:
        sized = client.exchange(post('/echo', data))
        assert sized.status == 200 and sized.body == data
        assert sized.get('content-length') == str(len(data))
        assert sized.get('transfer-encoding') is None
        assert sized.get('x-request-framing') == f'content-length {len(data)}'
        pieces = [data[:1], data[1:70_000], data[70_000:]]
        streamed = client.exchange(get('/echo', 'HTTP/1.1', 'Transfer-Encoding: chunked',
                                       method='PUT', body=chunked(*pieces)))
    assert streamed.status == 200 and streamed.body == data
    assert streamed.get('transfer-encoding') == 'chunked'
    assert streamed.get('content-length') is None
    assert streamed.get('x-request-framing').startswith('chunked')


def test_framing_events_arrive_live_while_an_upload_is_under_way(site):
    feed = Feed(site.port, context=site.context)
    try:
        with site.client() as client:
            client.send(put('/uploads/live.bin', 'Transfer-Encoding: chunked',
                            body=b'5\r\nhello\r\n'))
            mine = []
            while not mine:          # the record opens before the upload ends
                mine = [event for event in feed.events(1)
                        if (event['data'].get('request') or {}).get('target') == '/uploads/live.bin']
            assert mine[0]['data']['ended']['kind'] == 'open'
            assert (mine[0]['data']['tls'] is None) == (site.scheme == 'plain')
            client.send(b'3\r\nbye\r\n0\r\n\r\n')
            assert client.reply().status == 201
    finally:
        feed.close()
    assert (site.uploads / 'live.bin').read_bytes() == b'hellobye'


# -- clients that vanish at every step -------------------------------------------------

FORM = multipart_body('vanish', [('f', 'form.bin', os.urandom(200_000))])


def cut_short(request, keep):
    """A request's first ``keep`` bytes (negative: all but the last -keep)."""
    return request[:keep]


# What a client sent before it went: each request cut short where its framing was
# being read.  The body is still arriving when it goes, so the server is reading it.
CUT_SHORT = [
    pytest.param(cut_short(get('/'), 20), id='mid-head'),
    pytest.param(put('/uploads/cut.bin', 'Content-Length: 1000000') + b'x' * 100_000,
                 id='mid-body'),
    pytest.param(put('/uploads/deep/er/cut.bin', 'Content-Length: 1000000') + b'x' * 100_000,
                 id='mid-body-into-folders'),
    pytest.param(cut_short(put('/uploads/cut.bin', 'Transfer-Encoding: chunked',
                               body=chunked(b'y' * 65536, b'z' * 65536)), -60_000),
                 id='mid-chunked'),
    pytest.param(cut_short(put('/uploads/cut.bin', 'Transfer-Encoding: chunked',
                               body=chunked(*[b'h' * (1 << 20)] * 3)), -600_000),
                 id='mid-chunked-handed-off'),
    pytest.param(cut_short(post('/uploads/', FORM, 'Content-Type: multipart/form-data; '
                                'boundary=vanish'), -100_000), id='mid-multipart'),
    pytest.param(cut_short(post('/echo', b'e' * 1_000_000), -900_000), id='mid-echo'),
]


def descriptors():
    return len(os.listdir('/proc/self/fd'))


def go(sock, reset):
    """Leave: with a FIN, or with a reset (SO_LINGER 0) as a client that crashes."""
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    sock.close()


def settled(site):
    """A connection served and closed (the pool's threads started), then the baseline."""
    with site.client() as client:
        client.assert_closed_after(client.exchange(get('/', 'HTTP/1.1', 'Connection: close')))
    wait_until(lambda: not site.loop.connections, 'the first connection closed')
    return descriptors(), threading.active_count()


def assert_back(site, fds, threads):
    wait_until(lambda: not site.loop.connections, 'every connection closed by the loop')
    wait_until(lambda: descriptors() <= fds and threading.active_count() <= threads,
               f'descriptors back to {fds} and threads to {threads}')
    assert not temps(site.uploads) and not list(site.uploads.glob('cut.bin'))
    assert not list(site.uploads.glob('form.bin'))
    assert not (site.uploads / 'deep').exists()      # folders are made with the file only
    with site.client() as client:          # and the server still serves
        assert client.exchange(get('/index.html')).body == INDEX


@pytest.mark.parametrize('reset', [False, True], ids=['closed', 'reset'])
@pytest.mark.parametrize('sent', CUT_SHORT)
def test_a_client_gone_mid_request_leaves_descriptors_threads_and_files_at_baseline(
        site, sent, reset):
    fds, threads = settled(site)
    sock = site.connect()
    sock.sendall(sent)
    if sent.startswith(b'POST /echo '):         # the echo has begun coming back
        assert sock.recv(100).startswith(b'HTTP/1.1 200 ')
    elif b'\r\n\r\n' in sent:                  # the body is being read, off the loop
        wait_until(lambda: any(conn.state not in (WAITING, HANDSHAKE)
                               for conn in site.loop.connections), 'the body on its way')
    go(sock, reset)
    assert_back(site, fds, threads)


@pytest.mark.parametrize('reset', [False, True], ids=['closed', 'reset'])
@pytest.mark.parametrize('target', ['/big.bin', '/uploads/folder/?archive=tar'],
                         ids=['file', 'archive'])
def test_a_client_gone_mid_response_of_a_large_file_leaves_baseline(site, reset, target):
    archived_folder(site)
    fds, threads = settled(site)
    sock = site.connect()
    sock.sendall(get(target))
    assert sock.recv(1000).startswith(b'HTTP/1.1 200 ')
    go(sock, reset)
    assert_back(site, fds, threads)


@pytest.mark.parametrize('reset', [False, True], ids=['closed', 'reset'])
def test_a_client_gone_mid_listing_leaves_baseline(site, reset):
    many = site.uploads / 'many'
    many.mkdir(parents=True)
    for n in range(20_000):          # a listing of about 1.5 MB: more than buffers hold
        os.mknod(many / f'entry-{n:05d}', 0o100644)
    fds, threads = settled(site)
    sock = site.connect()
    sock.sendall(get('/uploads/many/', 'HTTP/1.1', 'Accept: application/json'))
    assert sock.recv(1000).startswith(b'HTTP/1.1 200 ')
    go(sock, reset)
    assert_back(site, fds, threads)


# -- processes: --workers 2 and the block transport --------------------------------------

@pytest.fixture(params=SCHEMES)
def scheme(request, pki):
    """('plain' or 'tls', the server's TLS options, curl's trust options, the URL scheme)."""
    if request.param == 'plain':
        return request.param, [], [], 'http'
    return (request.param, ['--tls-cert', pki['cert'], '--tls-key', pki['key']],
            ['--cacert', pki['cert']], 'https')


def test_two_workers_both_serve_uploads_and_downloads(minihttp, scheme, tmp_path):
    _, serving, trusting, url = scheme
    root = tmp_path / 'root'
    root.mkdir()
    data = os.urandom(500_000)
    (root / 'file.bin').write_bytes(data)
    server = minihttp('serve', '--port', 0, '--block-port', 0, '--workers', 2, '--root', root,
                      '--uploads', tmp_path / 'uploads', '--quiet', *serving,
                      listening=HTTP_LISTENING)
    base = f'{url}://localhost:{server.port}'
    source = tmp_path / 'source.bin'
    source.write_bytes(data)
    done = curl(*trusting, '--fail', '-T', source, '-H', 'Transfer-Encoding: chunked',
                f'{base}/uploads/sent.bin')
    assert done.returncode == 0, done.stderr
    assert sha256_file(tmp_path / 'uploads' / 'sent.bin') == sha256_file(source)
    # Separate connections, spread over the workers by the kernel: each gets it whole.
    for _ in range(8):
        done = curl(*trusting, '--fail', '-o', tmp_path / 'got.bin', f'{base}/file.bin')
        assert done.returncode == 0, done.stderr
        assert (tmp_path / 'got.bin').read_bytes() == data
    assert server.proc.poll() is None


def test_the_block_client_sends_a_file_and_the_server_saves_it(minihttp, scheme, tmp_path):
    _, serving, _, _ = scheme
    saved = tmp_path / 'saved'
    server = minihttp('blocks', '-p', 0, '--save', saved, *serving, listening=LISTENING)
    payload = tmp_path / 'payload.bin'
    payload.write_bytes(os.urandom(900_000))
    trusting = ['--tls', '--cafile', serving[1]] if serving else []
    done = run_minihttp('blocks', '-c', *trusting, '-p', server.port, '--file', payload,
                        'localhost', timeout=WAIT)
    assert done.returncode == 0, done.stderr
    server.wait_for_line('end of stream')
    (stored,) = saved.glob('blocks-*.bin')
    assert sha256_file(stored) == sha256_file(payload)


# -- TLS only: renegotiation -------------------------------------------------------------

@pytest.fixture
def tls_site(tmp_path, pki):
    served = Site(tmp_path, pki, 'tls')
    yield served
    served.loop.stop(0.5)


@pytest.mark.skipif(OPENSSL is None, reason='the openssl command is not installed')
def test_a_tls12_client_that_renegotiates_is_refused_and_closed(tls_site, pki):
    """openssl s_client's 'R' line starts a real renegotiation (a new ClientHello inside
    the TLS 1.2 session); the server refuses it, and the connection ends."""
    fds, threads = settled(tls_site)
    client = MinihttpProcess(['s_client', '-tls1_2', '-connect', f'127.0.0.1:{tls_site.port}',
                              '-servername', 'localhost', '-CAfile', pki['cert']],
                             command=(OPENSSL,), stdin=subprocess.PIPE)
    try:
        client.wait_for_line(r'Protocol *: TLSv1\.2')
        client.proc.stdin.write(b'GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n')
        client.proc.stdin.flush()
        client.wait_for_line(re.escape(INDEX.decode().strip()))    # served before it
        client.proc.stdin.write(b'R\n')       # stdin stays open: only the server ends it
        client.proc.stdin.flush()
        client.wait_for_line('RENEGOTIATING')                      # the attempt was made
        client.proc.wait(WAIT)      # it ended: the connection was closed under it
    finally:
        client.stop()
    said = client.output()
    assert re.search(r'no renegotiation|NO_RENEGOTIATION|handshake failure', said, re.I), said
    assert_back(tls_site, fds, threads)
