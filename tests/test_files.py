"""Serving files from --root: types, validators, ranges, HEAD, directories, path safety.

One server, started once for the module, serves a small tree.  Ranges are
checked against Python slicing of the file, for hypothesis-chosen sizes and
ranges.  Next to the root lies a secret file that no request may ever reach,
however its path is spelled.
"""

import errno
import http.client
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time

import pytest
import requests
from hypothesis import given, settings, strategies as st

from minihttp.errors import ResponseError
from minihttp.files import FileBody, MultiRangeBody
from minihttp import eventloop
from minihttp.eventloop import TimedSocket
from support import HTTP_LISTENING, RawClient, Served, exchange, request_bytes, serve_args

# 2020-01-02 03:04:05 UTC: the modification time of hello.txt, as Last-Modified shows it.
HELLO_MTIME = 1577934245
HELLO_DATE = 'Thu, 02 Jan 2020 03:04:05 GMT'
EARLIER = 'Wed, 01 Jan 2020 00:00:00 GMT'
LATER = 'Fri, 03 Jan 2020 00:00:00 GMT'
HELLO = b'hello, world\n'
STRONG_ETAG = re.compile(r'"[\x21\x23-\x7e]*"')   # RFC 9110 section 8.8.3: no W/

# Files of the listing test: names that need HTML escaping and percent-encoding.
ODD_NAME = '<b>&"x.txt'
SPACED_NAME = 'a b.txt'


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    """The tree, the secret beside it, and one server for the whole module."""
    top = tmp_path_factory.mktemp('site')
    secret = f'SECRET-{secrets.token_hex(8)}'.encode()
    (top / 'secret.txt').write_bytes(secret)
    root = top / 'root'
    root.mkdir()
    (top / 'uploads').mkdir()
    (root / 'hello.txt').write_bytes(HELLO)
    os.utime(root / 'hello.txt', (HELLO_MTIME, HELLO_MTIME))
    (root / 'page.html').write_text('<p>page</p>\n')
    (root / 'notes.json').write_text('{}\n')
    (root / 'image.png').write_bytes(b'\x89PNG\r\n\x1a\n')
    (root / 'data.bin').write_bytes(random.Random(1).randbytes(10_000))
    (root / 'empty.txt').write_bytes(b'')
    (root / '.hidden').write_bytes(secret + b'-hidden')
    (root / 'withindex').mkdir()
    (root / 'withindex' / 'index.html').write_text('<p>the index</p>\n')
    (root / 'withindex' / 'other.txt').write_text('other\n')
    listed = root / 'list'
    listed.mkdir()
    (listed / ODD_NAME).write_text('odd\n')
    (listed / SPACED_NAME).write_text('spaced\n')
    (listed / '.dotfile').write_text('dot\n')
    (listed / 'sub').mkdir()
    (root / 'ranges').mkdir()
    os.symlink('../secret.txt', root / 'link')          # a file outside the root
    os.symlink('..', root / 'linkdir')                   # the directory above the root
    os.symlink(str(top / 'secret.txt'), root / 'abslink')
    os.symlink('hello.txt', root / 'inside')             # stays inside: allowed
    server = Served(root, top / 'uploads')
    server.root = root
    server.top = top
    server.secret = secret
    yield server
    server.stop()


def get(site, path, **headers):
    return requests.get(site.url(path), headers=headers, allow_redirects=False, timeout=10)


# -- one file -----------------------------------------------------------------------

@pytest.mark.parametrize('name, kind', [
    ('hello.txt', 'text/plain; charset=utf-8'),
    ('page.html', 'text/html; charset=utf-8'),
    ('notes.json', 'application/json; charset=utf-8'),
    ('image.png', 'image/png'),
    ('data.bin', 'application/octet-stream'),
])
def test_content_type(site, name, kind):
    response = get(site, '/' + name)
    assert response.status_code == 200
    assert response.headers['Content-Type'] == kind
    assert response.content == (site.root / name).read_bytes()


def test_file_headers(site):
    response = get(site, '/hello.txt')
    assert response.status_code == 200
    assert response.content == HELLO
    assert response.headers['Content-Length'] == str(len(HELLO))
    assert response.headers['Last-Modified'] == HELLO_DATE
    assert response.headers['Accept-Ranges'] == 'bytes'
    assert STRONG_ETAG.fullmatch(response.headers['ETag'])


def test_empty_file(site):
    response = get(site, '/empty.txt')
    assert (response.status_code, response.content) == (200, b'')
    assert response.headers['Content-Length'] == '0'


def test_etag_changes_with_the_file(site):
    path = site.root / 'changing.txt'
    path.write_bytes(b'first version\n')
    first = get(site, '/changing.txt').headers['ETag']
    path.write_bytes(b'second version, longer\n')
    response = get(site, '/changing.txt', **{'If-None-Match': first})
    assert response.status_code == 200
    assert response.content == b'second version, longer\n'
    assert response.headers['ETag'] != first


@pytest.mark.parametrize('spec', [None, 'bytes=1000-', 'bytes=-3000000'])
def test_a_file_larger_than_the_socket_buffers_arrives_whole(site, spec):
    data = content_of(site, 5_000_000)
    with RawClient(site.port) as client:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        fields = ['Connection: close'] + ([f'Range: {spec}'] if spec else [])
        client.send(request_bytes('GET', '/ranges/5000000.bin', fields))
        reply = client.reply()
    if spec is None:
        assert (reply.status, reply.body) == (200, data)
    else:
        first = int(spec[6:-1]) if spec.endswith('-') else len(data) - int(spec[7:])
        assert (reply.status, reply.body) == (206, data[first:])


# -- FileBody against a socket pair: partial sends, a full buffer, a shrunk file -------

def choppy_sendfile(monkeypatch):
    """os.sendfile as a busy socket behaves: every other call finds it full (on the
    server's blocking sockets: a tick of the kernel's timeout passed), the rest take
    at most 7000 bytes, and the peer reads them at once."""
    real, calls = os.sendfile, []

    def sendfile(out, fd, offset, count):
        calls.append(count)
        if not len(calls) % 2:
            raise BlockingIOError(errno.EAGAIN, 'full')
        return real(out, fd, offset, min(count, 7000))
    monkeypatch.setattr(os, 'sendfile', sendfile)
    monkeypatch.setattr(eventloop, 'unsent', lambda sock: 0)
    return calls


def received_by_thread(sock, size):
    got = bytearray()

    def read():
        while len(got) < size and (piece := sock.recv(65536)):
            got.extend(piece)
    thread = threading.Thread(target=read)
    thread.start()
    return got, thread


@pytest.mark.parametrize('offset', [0, 1000])
def test_file_body_resumes_after_partial_and_refused_sends(tmp_path, monkeypatch, offset):
    data = random.Random(2).randbytes(100_000)
    (tmp_path / 'f').write_bytes(data)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        calls = choppy_sendfile(monkeypatch)
        got, reader = received_by_thread(theirs, len(data) - offset)
        body = FileBody(os.open(tmp_path / 'f', os.O_RDONLY), offset, len(data) - offset)
        # Each refusal is a tick (10 s) of a 30 s between-bytes timeout; the bytes
        # between refusals keep the rate.
        assert body.sendfile(TimedSocket(ours, 30.0, 1, 10.0)) == len(data) - offset
        reader.join(10)
    assert bytes(got) == data[offset:]
    assert len(calls) > 20


@pytest.mark.parametrize('rule, pace, reason', [
    ('between bytes', (0.2,), 'stalled: nothing read by the peer for 0.2 s'),
    ('minimum rate', (30.0, 1024, 0.2), r'too slow: \d+ bytes read by the peer in 0\.\d s, '
                                        'below the minimum of 1024 bytes/s'),
])
def test_file_body_gives_up_on_a_client_that_stops_reading(tmp_path, rule, pace, reason):
    (tmp_path / 'f').write_bytes(bytes(20 * 2**20))      # more than any socket buffer
    ours, theirs = socket.socketpair()
    with ours, theirs:
        # The server's own sockets on the pool: blocking, with kernel timeouts.
        body = FileBody(os.open(tmp_path / 'f', os.O_RDONLY), 0, 20 * 2**20)
        with pytest.raises(TimeoutError, match=reason):
            body.sendfile(TimedSocket(ours, *pace))
        assert body.fd == -1                             # closed


def test_file_body_that_shrank_aborts(tmp_path):
    (tmp_path / 'f').write_bytes(b'x' * 1000)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        body = FileBody(os.open(tmp_path / 'f', os.O_RDONLY), 0, 5000)   # stat said 5000
        with pytest.raises(ResponseError, match='1000 of 5000'):
            body.sendfile(TimedSocket(ours, 10.0))
        assert theirs.recv(5000) == b'x' * 1000


@pytest.mark.parametrize('unlinked', [False, True])
@pytest.mark.parametrize('multi', [False, True])
def test_a_file_rewritten_while_sent_is_cut_before_its_last_byte(tmp_path, multi, unlinked):
    """Rewritten in place (same size), the file is no longer the one the head's ETag and
    digest describe: its last byte (and a multipart's closing delimiter) never goes;
    nor when it was unlinked afterwards (replaced or deleted)."""
    path = tmp_path / 'f'
    path.write_bytes(b'a' * 1000)
    fd = os.open(path, os.O_RDONLY)
    st = os.fstat(fd)
    with open(path, 'r+b') as rewrite:
        rewrite.write(b'b' * 1000)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))   # a later tick, surely
    if unlinked:
        os.unlink(path)
    if multi:
        body = MultiRangeBody(fd, [(b'--x\r\n\r\n', 0, 10), (b'\r\n--x\r\n\r\n', 500, 500)],
                              b'\r\n--x--\r\n', 0, st)
    else:
        body = FileBody(fd, 0, 1000, st)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        with pytest.raises(ResponseError, match='changed while it was sent'):
            body.sendfile(TimedSocket(ours, 10.0))
        assert body.fd == -1                             # closed
        ours.shutdown(socket.SHUT_WR)
        got = b''.join(iter(lambda: theirs.recv(65536), b''))
    expected = (b'--x\r\n\r\n' + b'b' * 10 + b'\r\n--x\r\n\r\n' + b'b' * 499 if multi
                else b'b' * 999)
    assert got == expected


@pytest.mark.parametrize('how', ['replaced', 'deleted'])
def test_a_file_replaced_or_deleted_while_sent_goes_whole(tmp_path, how):
    """An upload's commit renames the new file over the one being sent: the open one
    is only unlinked (its ctime moves with its link count), its bytes are the same,
    so it goes whole, as it was described."""
    path = tmp_path / 'f'
    path.write_bytes(b'a' * 1000)
    fd = os.open(path, os.O_RDONLY)
    st = os.fstat(fd)
    # The file system's clock (a coarse one) past the stat's ctime, so that the
    # unlink below moves it: a scratch file touched until its ctime says so.
    scratch, deadline = tmp_path / 'tick', time.monotonic() + 5
    while True:
        scratch.write_bytes(b'')
        if os.stat(scratch).st_ctime_ns > st.st_ctime_ns or time.monotonic() > deadline:
            break
    if how == 'replaced':
        (tmp_path / 'new').write_bytes(b'b' * 2000)
        os.replace(tmp_path / 'new', path)
    else:
        os.unlink(path)
    assert os.fstat(fd).st_ctime_ns > st.st_ctime_ns     # what the check used to refuse
    body = FileBody(fd, 0, 1000, st)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert body.sendfile(TimedSocket(ours, 10.0)) == 1000
        ours.shutdown(socket.SHUT_WR)
        got = b''.join(iter(lambda: theirs.recv(65536), b''))
    assert got == b'a' * 1000


def test_an_unchanged_file_goes_whole_with_its_last_byte(tmp_path):
    path = tmp_path / 'f'
    path.write_bytes(bytes(range(256)) * 4)
    fd = os.open(path, os.O_RDONLY)
    body = FileBody(fd, 24, 1000, os.fstat(fd))
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert body.sendfile(TimedSocket(ours, 10.0)) == 1000
        ours.shutdown(socket.SHUT_WR)
        got = b''.join(iter(lambda: theirs.recv(65536), b''))
    assert got == (bytes(range(256)) * 4)[24:]


def test_head_has_the_headers_and_no_body(site):
    got = get(site, '/data.bin')
    with RawClient(site.port) as client:
        client.send(request_bytes('HEAD', '/data.bin', ['Connection: close']))
        reply = client.reply('HEAD')
        assert client.at_eof()
    assert reply.status == 200
    assert reply.raw.endswith(b'\r\n\r\n') and reply.raw.count(b'\r\n\r\n') == 1
    for name in ('Content-Type', 'Content-Length', 'Last-Modified', 'ETag', 'Accept-Ranges'):
        assert reply.headers[name.lower()] == got.headers[name], name
    assert reply.headers['content-length'] == '10000'


# -- validators and conditional requests (RFC 9110 section 13) ------------------------

@pytest.mark.parametrize('conditions, status', [
    ({'If-None-Match': '{etag}'}, 304),
    ({'If-None-Match': '"other", {etag}'}, 304),
    ({'If-None-Match': '*'}, 304),
    ({'If-None-Match': 'W/{etag}'}, 304),       # If-None-Match compares weakly
    ({'If-None-Match': '"stale"'}, 200),
    ({'If-Modified-Since': HELLO_DATE}, 304),
    ({'If-Modified-Since': LATER}, 304),
    ({'If-Modified-Since': EARLIER}, 200),
    ({'If-Modified-Since': 'not a date'}, 200),
    # If-None-Match wins when both are present (section 13.1.3).
    ({'If-None-Match': '"stale"', 'If-Modified-Since': LATER}, 200),
    ({'If-None-Match': '{etag}', 'If-Modified-Since': EARLIER}, 304),
    ({'If-Match': '{etag}'}, 200),
    ({'If-Match': '"stale"'}, 412),
    ({'If-Unmodified-Since': EARLIER}, 412),
    ({'If-Unmodified-Since': LATER}, 200),
])
@pytest.mark.parametrize('method', ['GET', 'HEAD'])
def test_conditional_request(site, conditions, status, method):
    etag = get(site, '/hello.txt').headers['ETag']
    fields = [f'{name}: {value.format(etag=etag)}' for name, value in conditions.items()]
    reply = exchange(site.port, method, '/hello.txt', fields)
    assert reply.status == status
    if status == 200:
        assert reply.body == (HELLO if method == 'GET' else b'')
    if status == 304:
        assert reply.body == b''
        assert reply.headers['etag'] == etag
        assert reply.headers['last-modified'] == HELLO_DATE
        # RFC 9110 section 8.6: a 304 may carry Content-Length only as the 200's length.
        assert reply.headers.get('content-length', str(len(HELLO))) == str(len(HELLO))


# -- ranges (RFC 9110 section 14) -------------------------------------------------------

def content_of(site, size):
    """A file of ``size`` random bytes under /ranges/, made on first use."""
    path = site.root / 'ranges' / f'{size}.bin'
    data = random.Random(size).randbytes(size)
    if not path.exists():
        path.write_bytes(data)
    return data


@st.composite
def range_cases(draw):
    """(file size, Range value, the slice of the content it asks for)."""
    size = draw(st.integers(0, 40) | st.integers(0, 300_000))
    form = draw(st.sampled_from(['first-last', 'first-', '-suffix']))
    if form == '-suffix':
        n = draw(st.integers(0, size + 50))
        return size, f'bytes=-{n}', slice(-n, None) if n else slice(0, 0)
    first = draw(st.integers(0, size + 50))
    if form == 'first-':
        return size, f'bytes={first}-', slice(first, None)
    last = draw(st.integers(first, size + 100))
    return size, f'bytes={first}-{last}', slice(first, last + 1)


@pytest.fixture(scope='module')
def keepalive(site):
    connection = http.client.HTTPConnection('127.0.0.1', site.port, timeout=10)
    yield connection
    connection.close()


@settings(max_examples=200)
@given(case=range_cases())
def test_range_matches_python_slicing(site, keepalive, case):
    size, spec, part = case
    data = content_of(site, size)
    keepalive.request('GET', f'/ranges/{size}.bin', headers={'Range': spec})
    response = keepalive.getresponse()
    body = response.read()
    selected = range(size)[part]       # the positions Python slicing picks
    if not selected:
        assert response.status == 416, spec
        assert response.getheader('Content-Range') == f'bytes */{size}'
        return
    assert response.status == 206, spec
    assert body == data[part]
    assert response.getheader('Content-Length') == str(len(selected))
    assert response.getheader('Content-Range') == \
        f'bytes {selected[0]}-{selected[-1]}/{size}'
    assert response.getheader('Accept-Ranges') == 'bytes'


def byteranges(response):
    """The parts of a multipart/byteranges body: [(Content-Range, Content-Type, bytes)]."""
    kind, _, boundary = response.headers['Content-Type'].partition('; boundary=')
    assert kind == 'multipart/byteranges' and boundary
    body = response.content
    # RFC 2046 section 5.1.1: the first delimiter needs no CRLF before it; the
    # last one ends with '--'.
    assert body.startswith(f'--{boundary}\r\n'.encode())
    assert body.endswith(f'\r\n--{boundary}--\r\n'.encode())
    inner = body[len(boundary) + 4:-(len(boundary) + 8)]
    parts = []
    for raw in inner.split(f'\r\n--{boundary}\r\n'.encode()):
        head, _, data = raw.partition(b'\r\n\r\n')
        fields = dict(line.split(': ', 1) for line in head.decode().split('\r\n'))
        parts.append((fields['Content-Range'], fields['Content-Type'], data))
    return parts


@settings(max_examples=100)
@given(size=st.sampled_from([40, 300_000]),          # from memory, and by sendfile
       cuts=st.lists(st.integers(0, 299_999), min_size=4, max_size=12, unique=True))
def test_several_ranges_come_as_multipart_byteranges(site, keepalive, size, cuts):
    data = content_of(site, size)
    points = sorted({c % size for c in cuts})          # distinct: the ranges cannot overlap
    pairs = [(a, b) for a, b in zip(points[::2], points[1::2]) if a < b]
    if len(pairs) < 2:
        return
    pairs = pairs[1:] + pairs[:1]                    # not in file order: kept as asked
    keepalive.request('GET', f'/ranges/{size}.bin',
                      headers={'Range': 'bytes=' + ','.join(f'{a}-{b}' for a, b in pairs)})
    response = keepalive.getresponse()
    body = response.read()
    assert response.status == 206
    assert int(response.getheader('Content-Length')) == len(body)
    fake = requests.models.Response()
    fake.headers['Content-Type'], fake._content = response.getheader('Content-Type'), body
    assert byteranges(fake) == [(f'bytes {a}-{b}/{size}', 'application/octet-stream',
                                 data[a:b + 1]) for a, b in pairs]


def test_curl_asks_for_two_ranges(site, tmp_path):
    if shutil.which('curl') is None:
        pytest.skip('curl is not installed')
    out = tmp_path / 'parts'
    done = subprocess.run(['curl', '-s', '-D', '-', '-o', out, '-r', '0-1,5-6',
                           site.url('/hello.txt')], capture_output=True, timeout=30)
    assert b' 206 ' in done.stdout.split(b'\r\n', 1)[0]
    boundary = re.search(rb'boundary=(\w+)', done.stdout)[1].decode()
    fake = requests.models.Response()
    fake.headers['Content-Type'] = f'multipart/byteranges; boundary={boundary}'
    fake._content = out.read_bytes()
    assert [part[2] for part in byteranges(fake)] == [HELLO[0:2], HELLO[5:7]]


@pytest.mark.parametrize('spec', [
    'bytes=0-5,3-8',            # overlapping ranges: the whole file, 200 (see the README)
    'bytes=0-1,1-2',
    ','.join(['bytes=0-0'] + [f'{n}-{n}' for n in range(2, 40, 2)]),   # over MAX_RANGES
    'bytes=8-2',                # last before first: invalid, so ignored
    'bytes=x-y',
    'items=0-5',                # a unit we do not know
])
def test_ranges_answered_with_the_whole_file(site, spec):
    response = get(site, '/data.bin', Range=spec)
    assert response.status_code == 200
    assert response.content == (site.root / 'data.bin').read_bytes()
    assert 'Content-Range' not in response.headers


@pytest.mark.parametrize('path, spec', [
    ('/data.bin', 'bytes=10000-'),
    ('/data.bin', 'bytes=20000-30000'),
    ('/data.bin', 'bytes=-0'),
    ('/empty.txt', 'bytes=0-'),
    ('/empty.txt', 'bytes=-5'),
])
def test_unsatisfiable_range(site, path, spec):
    response = get(site, path, Range=spec)
    assert response.status_code == 416
    size = (site.root / path[1:]).stat().st_size
    assert response.headers['Content-Range'] == f'bytes */{size}'


@pytest.mark.parametrize('if_range, status', [
    ('{etag}', 206),
    ('"stale"', 200),
    ('W/{etag}', 200),          # If-Range compares strongly (section 13.1.5)
    (HELLO_DATE, 206),
    (EARLIER, 200),
])
def test_if_range(site, if_range, status):
    etag = get(site, '/hello.txt').headers['ETag']
    response = get(site, '/hello.txt', Range='bytes=0-4',
                   **{'If-Range': if_range.format(etag=etag)})
    assert response.status_code == status
    assert response.content == (HELLO[:5] if status == 206 else HELLO)


# -- directories --------------------------------------------------------------------

def test_directory_serves_its_index(site):
    response = get(site, '/withindex/')
    assert response.status_code == 200
    assert response.content == b'<p>the index</p>\n'
    assert response.headers['Content-Type'] == 'text/html; charset=utf-8'


@pytest.mark.parametrize('target, location', [
    ('/list', '/list/'),
    ('/withindex?a=1', '/withindex/?a=1'),
    ('/list/sub', '/list/sub/'),
    ('//list', '/list/'),        # not //list/: that would send a browser to the host "list"
    ('///list//sub', '/list//sub/'),
])
def test_directory_without_slash_redirects(site, target, location):
    reply = exchange(site.port, 'GET', target)
    assert reply.status == 301
    assert reply.headers['location'] == location


def test_listing_is_chunked_escaped_and_linked(site):
    reply = exchange(site.port, 'GET', '/list/')
    assert reply.status == 200
    assert reply.headers['transfer-encoding'] == 'chunked'
    assert 'content-length' not in reply.headers
    assert reply.headers['content-type'] == 'text/html; charset=utf-8'
    page = reply.body.decode()
    assert '<b>' not in page
    assert 'href="%3Cb%3E%26%22x.txt"' in page
    assert '&lt;b&gt;&amp;&quot;x.txt' in page
    assert 'href="a%20b.txt"' in page and '>a b.txt<' in page
    assert re.search(r'>a b\.txt</a>[^\n]*>7<', page), 'the size of a b.txt (7 bytes)'
    assert 'href="sub/"' in page
    assert '.dotfile' not in page
    # The links lead to the files.
    assert get(site, '/list/%3Cb%3E%26%22x.txt').content == b'odd\n'
    assert get(site, '/list/a%20b.txt').content == b'spaced\n'


def test_listing_hides_dotfiles_and_they_are_never_served(site):
    page = get(site, '/').text
    assert '.hidden' not in page
    assert get(site, '/.hidden').status_code == 404
    assert get(site, '/list/.dotfile').status_code == 404


# -- path safety ----------------------------------------------------------------------

ESCAPES = [
    '/../secret.txt', '/../../secret.txt', '/list/../../secret.txt',
    '/%2e%2e/secret.txt', '/%2E%2E/secret.txt', '/.%2e/secret.txt', '/%2e./secret.txt',
    '/..%2fsecret.txt', '/..%2Fsecret.txt', '/%2e%2e%2fsecret.txt',
    '/list/%2e%2e%2f%2e%2e%2fsecret.txt',
    '/%252e%252e/secret.txt', '/%252e%252e%252fsecret.txt', '/..%252fsecret.txt',
    '/..\\secret.txt', '/..%5csecret.txt', '/%5c..%5csecret.txt', '/%2e%2e%5csecret.txt',
    '/list\\..\\..\\secret.txt',
    '/%c0%ae%c0%ae/secret.txt',                 # overlong UTF-8 for '.'
    '/..;/secret.txt', '/.../secret.txt',
    '/hello.txt%00', '/%00/../secret.txt', '/secret.txt%00.txt', '/%00',
    '//etc/passwd', '/etc/passwd', '///etc/passwd',
    '{top}/secret.txt', '/{top}/secret.txt',
    'http://127.0.0.1/../secret.txt', 'http://127.0.0.1{top}/secret.txt',
    '/link', '/abslink', '/linkdir/secret.txt', '/linkdir/', '/linkdir',
    '/%6cink', '/link/',
    '/uploads/../secret.txt', '/uploads/%2e%2e/secret.txt', '/uploads/..%2fsecret.txt',
    '/uploads/..%5csecret.txt', '/uploads/%2e%2e%2f%2e%2e%2fetc%2fpasswd',
    '/.hidden', '/%2ehidden', '/list/.dotfile',
]


@pytest.mark.parametrize('method', ['GET', 'HEAD'])
@pytest.mark.parametrize('target', ESCAPES)
def test_no_byte_from_outside_the_root(site, target, method):
    target = target.format(top=site.top)
    reply = exchange(site.port, method, target)
    assert reply.status in (400, 404), (target, reply.status, reply.body[:200])
    assert site.secret not in reply.raw
    assert b'root:' not in reply.raw          # /etc/passwd


def test_a_file_is_no_directory(site):
    # Served at 'hello.txt/', a page's relative links would resolve below it.
    for target in ('/hello.txt/', '/list/a%20b.txt/', '/inside/'):
        assert get(site, target).status_code == 404, target


def test_symlink_inside_the_root_is_served(site):
    assert get(site, '/inside').content == HELLO


def test_listing_of_the_root_never_lists_outside(site):
    page = get(site, '/').text
    assert 'secret.txt' not in page
    assert site.secret.decode() not in page
    assert get(site, '/linkdir/').status_code == 404
    # Symlinks that lead outside are not served, so not listed (not even their
    # size); one that stays inside is.
    for outside in ('link', 'linkdir', 'abslink'):
        assert f'href="{outside}' not in page
    assert 'href="inside"' in page


def test_a_root_symlink_repointed_serves_the_new_target(tmp_path, minihttp):
    for release in ('v1', 'v2'):
        (tmp_path / release).mkdir()
        (tmp_path / release / 'version.txt').write_text(release)
    (tmp_path / 'uploads').mkdir()
    os.symlink('v1', tmp_path / 'current')
    server = minihttp(*serve_args(tmp_path / 'current', tmp_path / 'uploads'),
                      listening=HTTP_LISTENING)
    url = f'http://127.0.0.1:{server.port}/version.txt'
    assert requests.get(url, timeout=10).text == 'v1'
    os.symlink('v2', tmp_path / 'next')
    os.replace(tmp_path / 'next', tmp_path / 'current')   # an atomic deploy
    assert requests.get(url, timeout=10).text == 'v2'



def test_a_small_file_served_from_memory_follows_every_change(tmp_path, minihttp):
    root = tmp_path / 'root'
    root.mkdir()
    path = root / 'page.txt'
    path.write_bytes(b'first version')
    server = minihttp(*serve_args(root, tmp_path / 'uploads'), listening=HTTP_LISTENING)
    url = f'http://127.0.0.1:{server.port}/page.txt'

    def fetch():
        return requests.get(url, timeout=10)

    assert fetch().content == b'first version'
    assert fetch().content == b'first version'          # now from memory
    before = path.stat()
    with open(path, 'r+b') as f:                         # same size, same mtime: in place
        f.write(b'FIRST')
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert fetch().content == b'FIRST version'           # ctime moved: seen
    (root / 'new.txt').write_bytes(b'replaced')
    os.replace(root / 'new.txt', path)                   # another inode under the name
    assert fetch().content == b'replaced'
    big = os.urandom(200_000)                            # grown past SMALL_FILE: sendfile
    path.write_bytes(big)
    assert fetch().content == big
    path.unlink()
    assert fetch().status_code == 404


def test_a_folder_swapped_for_a_symlink_after_its_check_is_still_the_one_listed(
        tmp_path, monkeypatch):
    """The listing reads the directory open_inside opened and checked, by its descriptor:
    a folder renamed away and replaced by a symlink to outside the root in between (a
    race a local writer could win) cannot turn the listing to another directory."""
    from minihttp import files
    from minihttp.request import parse_head
    root, outside = tmp_path / 'root', tmp_path / 'outside'
    (root / 'docs').mkdir(parents=True)
    (root / 'docs' / 'mine.txt').write_bytes(b'in the root')
    outside.mkdir()
    (outside / 'SECRET-outside.txt').write_bytes(b'not served')
    checked = files.open_inside

    def open_then_swap(top, parts):
        opened = checked(top, parts)
        if list(parts) == ['docs'] and not (root / 'docs-moved').exists():
            os.rename(root / 'docs', root / 'docs-moved')
            os.symlink(outside, root / 'docs')
        return opened
    monkeypatch.setattr(files, 'open_inside', open_then_swap)
    request = parse_head(b'GET /docs/ HTTP/1.1\r\nHost: localhost')
    response = files.serve_path(request, str(root), '/docs/')
    page = b''.join(bytes(piece) for piece in response.body)
    assert (root / 'docs-moved').is_dir() and (root / 'docs').is_symlink()   # swapped
    assert b'mine.txt' in page
    assert b'SECRET-outside' not in page
