"""Uploads that lose nothing: every way in, every fault, the limits and the token.

Random files of 0 B, 1 B, 1 MiB and 200 MiB are made once per session and
sent through each upload way (curl with Content-Length, chunked and from
stdin, curl -F multipart, a requests generator); each must come back with the
same sha256.  Each fault (a client gone mid-body, a bad chunk, SIGTERM, a
full disk, a limit passed) must leave the upload directory exactly as it was,
dotfiles included, with the previous version of the name intact.
"""

import base64
import errno
import hashlib
import json
import os
import random
import re
import signal
import tempfile
import threading
from dataclasses import dataclass

import pytest
import requests

from minihttp import uploads as uploads_module
from minihttp.app import App
from minihttp.eventloop import EventLoop
from minihttp.records import public
from minihttp.server import HTTPServer
from minihttp.uploads import TEMP_PREFIX
from support import (HTTP_LISTENING, RawClient, Served, Store, WAIT, chunked, curl, exchange,
                     multipart_body, peak_rss, request_bytes, serve_args, sha256_file, snapshot,
                     temps, wait_until)

MiB = 1 << 20
BIG = 200 * MiB
# How much the server's peak resident memory may grow while it takes 200 MiB.
MEMORY_BOUND = 64 * MiB
# Most a 200 MiB round trip (upload, fsync, download, hashing) may take.
BIG_TIMEOUT = 240

CONTINUE = b'HTTP/1.1 100 Continue\r\n\r\n'


@dataclass
class Payload:
    path: str
    size: int
    sha256: str


@pytest.fixture(scope='session')
def payloads(tmp_path_factory):
    """Random files, made once: size -> Payload."""
    directory = tmp_path_factory.mktemp('payloads')
    made = {}
    for size in (0, 1, MiB, BIG):
        path = directory / f'random-{size}.bin'
        digest = hashlib.sha256()
        with open(path, 'wb') as file:
            left = size
            while left:
                piece = os.urandom(min(left, 4 * MiB))
                digest.update(piece)
                file.write(piece)
                left -= len(piece)
        made[size] = Payload(str(path), size, digest.hexdigest())
    return made


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    """One server for the upload tests that need no special options."""
    top = tmp_path_factory.mktemp('store')
    (top / 'root').mkdir()
    server = Served(top / 'root', top / 'uploads')
    yield Store(server.port, top / 'uploads', server.process.pid, peak_rss(server.process.pid))
    server.stop()


def start_store(minihttp, tmp_path, *options, **process_options):
    """A server of this test's own (conftest's fixture stops it): (Store, the process)."""
    (tmp_path / 'root').mkdir(exist_ok=True)
    directory = tmp_path / 'uploads'
    process = minihttp(*serve_args(tmp_path / 'root', directory, *options),
                       listening=HTTP_LISTENING, **process_options)
    return Store(process.port, directory, process.pid), process


def download_sha256(url):
    digest = hashlib.sha256()
    with requests.get(url, stream=True, timeout=60) as response:
        assert response.status_code == 200
        for piece in response.iter_content(MiB):
            digest.update(piece)
    return digest.hexdigest()


def store_victim(store, name, content=b'the previous version\n'):
    """Store a file the fault must not touch; return the directory as it now is."""
    assert exchange(store.port, 'PUT', f'/uploads/{name}', body=content).status in (200, 201)
    return snapshot(store.directory)


# -- the ways in ------------------------------------------------------------------------

def parse_heads(dump):
    """The heads curl -D wrote: [(status, {lower-case name: value})], 1xx ones included."""
    heads = []
    for block in dump.strip().split('\r\n\r\n'):
        lines = block.split('\r\n')
        fields = dict(line.split(': ', 1) for line in lines[1:] if ': ' in line)
        heads.append((int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}))
    return heads


def curl_upload(tmp_path, *args, stdin=None):
    """curl ARGS, its heads written to a file; (status, headers, JSON answer, 1xx seen)."""
    dump = tmp_path / 'heads.txt'
    done = curl('-D', dump, *args, stdin=stdin, timeout=BIG_TIMEOUT)
    assert done.returncode == 0, done.stderr.decode(errors='replace')
    heads = parse_heads(dump.read_bytes().decode('latin-1'))
    status, headers = heads[-1]
    return status, headers, json.loads(done.stdout), [s for s, _ in heads[:-1]]


def via_curl_length(tmp_path, url, payload):
    return curl_upload(tmp_path, '-T', payload.path, url)


def via_curl_chunked(tmp_path, url, payload):
    return curl_upload(tmp_path, '-T', payload.path, '-H', 'Transfer-Encoding: chunked', url)


def via_curl_stdin(tmp_path, url, payload):
    with open(payload.path, 'rb') as stdin:
        return curl_upload(tmp_path, '-T', '-', url, stdin=stdin)


def via_curl_multipart(tmp_path, url, payload):
    folder, _, name = url.rpartition('/')
    status, headers, answer, seen = curl_upload(
        tmp_path, '-F', f'file=@{payload.path};filename={name}', folder + '/')
    assert [stored['name'] for stored in answer['stored']] == [name]
    return status, headers, {**answer['stored'][0], 'framing': answer['framing']}, seen


def via_requests_generator(tmp_path, url, payload):
    sent = []
    sizes = random.Random(payload.size)

    def pieces():
        with open(payload.path, 'rb') as file:
            while piece := file.read(sizes.choice([1, 1000, MiB])):
                sent.append(len(piece))
                yield piece
    response = requests.put(url, data=pieces(), timeout=BIG_TIMEOUT)
    answer = response.json()
    assert answer['chunks'] == len(sent)       # each piece went as one chunk
    return response.status_code, {k.lower(): v for k, v in response.headers.items()}, \
        answer, []


WAYS = {
    'curl-T': (via_curl_length, 'content-length'),
    'curl-T-chunked': (via_curl_chunked, 'chunked'),
    'curl-T-stdin': (via_curl_stdin, 'chunked'),
    'curl-F': (via_curl_multipart, 'content-length'),
    'requests-generator': (via_requests_generator, 'chunked'),
}


SIZES = {'0B': 0, '1B': 1, '1MiB': MiB, '200MiB': BIG}


def round_trips():
    for way in WAYS:
        for label, size in SIZES.items():
            if (way, size) == ('curl-T-chunked', 0):
                # curl 7.88 sends no last chunk for an empty file given with -H
                # 'Transfer-Encoding: chunked' (no server can see that body end);
                # an empty chunked body is covered by curl-T-stdin and requests.
                continue
            marks = [pytest.mark.timeout(BIG_TIMEOUT * 2)] if size == BIG else []
            yield pytest.param(way, size, marks=marks, id=f'{label}-{way}')


@pytest.mark.parametrize('way, size', list(round_trips()))
def test_round_trip(store, payloads, tmp_path, way, size):
    upload, framing = WAYS[way]
    payload = payloads[size]
    name = f'{way}-{size}.bin'
    status, headers, answer, informational = upload(tmp_path, store.url(f'/uploads/{name}'),
                                                    payload)
    assert answer['name'] == name
    assert answer['bytes'] == size
    assert answer['sha256'] == payload.sha256
    assert answer['framing'] == framing
    if way != 'curl-F':
        assert (status, headers['location']) == (201, f'/uploads/{name}')
        if framing == 'chunked':
            assert (answer['chunks'] > 0) == (size > 0)
        else:
            assert 'chunks' not in answer
    else:
        assert status == 200
    if size == BIG:
        if way != 'requests-generator':
            # curl asks before it sends a large body, and must be told to go on.
            assert informational == [100]
        assert peak_rss(store.pid) - store.start_rss < MEMORY_BOUND
    assert download_sha256(store.url(f'/uploads/{name}')) == payload.sha256
    assert sha256_file(store.directory / name) == payload.sha256
    assert not temps(store.directory)
    if size == BIG:   # keep the disk for the next one
        assert requests.delete(store.url(f'/uploads/{name}'), timeout=10).status_code == 204


def test_multipart_may_be_chunked(store, payloads, tmp_path):
    payload = payloads[MiB]
    status, _, answer, _ = curl_upload(tmp_path, '-H', 'Transfer-Encoding: chunked',
                                       '-F', f'file=@{payload.path};filename=mp-chunked.bin',
                                       store.url('/uploads/'))
    assert status == 200
    assert answer['framing'] == 'chunked'
    assert answer['stored'][0]['sha256'] == payload.sha256
    assert sha256_file(store.directory / 'mp-chunked.bin') == payload.sha256


def test_new_then_replaced(store):
    url = store.url('/uploads/a%20b.txt')
    first = requests.put(url, data=b'one', timeout=10)
    assert first.status_code == 201
    assert first.headers['Location'] == '/uploads/a%20b.txt'
    second = requests.put(url, data=b'two!', timeout=10)
    assert second.status_code == 200
    assert 'Location' not in second.headers
    assert second.json() == {'name': 'a b.txt', 'bytes': 4, 'framing': 'content-length',
                             'sha256': hashlib.sha256(b'two!').hexdigest()}
    assert requests.get(url, timeout=10).content == b'two!'


def test_expect_100_continue_is_answered_before_the_body(store):
    with RawClient(store.port) as client:
        client.send(request_bytes('PUT', '/uploads/expect.txt',
                                  ['Expect: 100-continue', 'Content-Length: 5']))
        assert client.read_exact(len(CONTINUE)) == CONTINUE
        client.send(b'hello')
        reply = client.reply('PUT')
    assert reply.status == 201
    assert (store.directory / 'expect.txt').read_bytes() == b'hello'


def test_delete(store):
    url = store.url('/uploads/doomed.txt')
    assert requests.put(url, data=b'x', timeout=10).status_code == 201
    assert requests.delete(url, timeout=10).status_code == 204
    assert requests.get(url, timeout=10).status_code == 404
    assert requests.delete(url, timeout=10).status_code == 404
    assert 'doomed.txt' not in os.listdir(store.directory)


@pytest.mark.parametrize('target', [
    '/uploads/..', '/uploads/%2e%2e', '/uploads/.hidden', '/uploads/%2ehidden',
    '/uploads/a/../b', '/uploads/a%2f..%2fb', '/uploads/a//b', '/uploads/a/.hidden/b',
    '/uploads/..%2fescape', '/uploads/a/%2e%2e/%2e%2e/escape', '/uploads//a',
    '/uploads/a%5cb', '/uploads/%00', '/uploads/a%00b', '/uploads/%0a', '/uploads/%ff',
])
@pytest.mark.parametrize('method', ['PUT', 'DELETE'])
def test_bad_names_are_refused_with_a_reason(store, target, method):
    before = snapshot(store.directory)
    reply = exchange(store.port, method, target, body=b'data' if method == 'PUT' else b'')
    assert reply.status == 400
    reason = reply.body.decode()
    assert reason.startswith('400 Bad Request: ') and 'name' in reason, reason
    assert snapshot(store.directory) == before
    assert not (store.directory.parent / 'escape').exists()


def test_temporaries_are_neither_listed_nor_served(store):
    with RawClient(store.port) as client:
        client.send(request_bytes('PUT', '/uploads/pending.bin', ['Content-Length: 100000'],
                                  b'x' * 1000))
        wait_until(lambda: temps(store.directory), 'the upload started')
        temp, = temps(store.directory)
        listing = requests.get(store.url('/uploads/'), timeout=10)
        assert listing.status_code == 200
        assert TEMP_PREFIX not in listing.text and 'pending.bin' not in listing.text
        assert requests.get(store.url(f'/uploads/{temp}'), timeout=10).status_code == 404
        client.send(b'x' * 99000)
        assert client.reply('PUT').status == 201
    assert 'pending.bin' in requests.get(store.url('/uploads/'), timeout=10).text


# -- multipart ------------------------------------------------------------------------

FORM_FILES = {'first': ('one.txt', b'first file\n'), 'second': ('<two>&.bin', os.urandom(70_000)),
              'third': ('empty', b'')}


def test_multipart_several_files_and_a_field(store):
    response = requests.post(store.url('/uploads/'), files=FORM_FILES,
                             data={'note': 'hello, form'}, timeout=10)
    assert response.status_code == 200
    answer = response.json()
    assert answer['fields'] == {'note': 'hello, form'}
    assert answer['framing'] == 'content-length'
    assert [(s['name'], s['bytes'], s['sha256']) for s in answer['stored']] == [
        (name, len(data), hashlib.sha256(data).hexdigest()) for name, data in FORM_FILES.values()]
    for name, data in FORM_FILES.values():
        assert (store.directory / name).read_bytes() == data


def test_multipart_answers_a_browser_with_a_page(store):
    response = requests.post(store.url('/uploads/'), files=FORM_FILES, data={'note': 'x'},
                             headers={'Accept': 'text/html,application/xhtml+xml,*/*;q=0.8'},
                             timeout=10)
    assert response.status_code == 200
    assert response.headers['Content-Type'] == 'text/html; charset=utf-8'
    page = response.text
    assert page.startswith('<!doctype html>')
    assert '&lt;two&gt;&amp;.bin' in page and '<two>' not in page
    assert 'href="/uploads/%3Ctwo%3E%26.bin"' in page
    assert hashlib.sha256(FORM_FILES['second'][1]).hexdigest() in page


@pytest.mark.parametrize('parts, close', [
    ([('a', 'complete-1.txt', b'one'), ('b', 'complete-2.txt', b'two')], False),
    ([('a', 'good.txt', b'one'), ('b', '..', b'two')], True),
    ([('a', 'good.txt', b'one'), ('b', '.hidden', b'two')], True),
], ids=['no-closing-boundary', 'dot-dot-filename', 'hidden-filename'])
def test_multipart_stores_all_or_nothing(store, parts, close):
    before = store_victim(store, 'good.txt')
    boundary = 'xyzzy'
    reply = exchange(store.port, 'POST', '/uploads/',
                     [f'Content-Type: multipart/form-data; boundary={boundary}'],
                     multipart_body(boundary, parts, close))
    assert reply.status == 400
    assert snapshot(store.directory) == before


def test_multipart_naming_a_directory_stores_nothing(store):
    os.mkdir(os.path.join(store.directory, 'adir'))
    before = snapshot(store.directory)
    boundary = 'xyzzy'
    reply = exchange(store.port, 'POST', '/uploads/',
                     [f'Content-Type: multipart/form-data; boundary={boundary}'],
                     multipart_body(boundary, [('a', 'first.txt', b'one'),
                                               ('b', 'adir', b'two')]))
    assert reply.status == 409
    assert snapshot(store.directory) == before    # not even first.txt
    os.rmdir(os.path.join(store.directory, 'adir'))


# -- limits -----------------------------------------------------------------------------

@pytest.fixture
def small_store(minihttp, tmp_path):
    """A server whose --max-upload is 1000 bytes."""
    return start_store(minihttp, tmp_path, '--max-upload', '1000')[0]


def test_content_length_over_the_limit_is_refused_before_the_body(small_store):
    before = store_victim(small_store, 'kept.bin')
    with RawClient(small_store.port) as client:
        client.send(request_bytes('PUT', '/uploads/kept.bin',
                                  ['Expect: 100-continue', 'Content-Length: 1001']))
        reply = client.reply('PUT')
        assert reply.status == 413
        assert reply.informational == []         # no 100 Continue: the body was not wanted
        assert reply.headers['connection'] == 'close'
        assert client.at_eof()
    assert snapshot(small_store.directory) == before


def test_content_length_over_the_limit_is_refused_at_once_without_waiting_for_the_body(
        small_store):
    """No Expect, and the body never comes: the head alone decides the 413, answered in
    the loop at once (not a 408 at --body-timeout, 30 s, when the body never begins)."""
    with RawClient(small_store.port, timeout=5.0) as client:
        client.send(request_bytes('PUT', '/uploads/kept.bin', ['Content-Length: 2000000']))
        reply = client.reply('PUT')
        assert reply.status == 413
        assert b'upload: 2000000 bytes, more than 1000 bytes' in reply.body
        assert reply.headers['connection'] == 'close'


def test_curl_over_the_limit_gets_413(small_store, tmp_path):
    big = tmp_path / 'big.bin'
    big.write_bytes(os.urandom(5000))
    done = curl('-o', '/dev/null', '-w', '%{http_code}', '-H', 'Expect: 100-continue',
                '-T', big, small_store.url('/uploads/big.bin'))
    assert done.stdout == b'413'
    assert 'big.bin' not in os.listdir(small_store.directory)


@pytest.mark.parametrize('path', ['/uploads/kept.bin', '/uploads/'])
def test_chunked_body_passing_the_limit_is_refused(small_store, path):
    before = store_victim(small_store, 'kept.bin')
    content = b'a' * 400
    body = chunked(content, content, content)
    fields = ['Transfer-Encoding: chunked']
    if path == '/uploads/':
        boundary = 'limit'
        body = chunked(multipart_body(boundary, [('f', 'kept.bin', content * 3)]))
        fields.append(f'Content-Type: multipart/form-data; boundary={boundary}')
    with RawClient(small_store.port) as client:
        client.send(request_bytes('POST' if path.endswith('/') else 'PUT', path, fields, body))
        reply = client.reply('PUT')
        assert reply.status == 413
        assert reply.headers['connection'] == 'close'
        assert client.at_eof()
    assert snapshot(small_store.directory) == before


def test_chunked_form_whose_files_each_fit_but_not_together_is_refused(small_store):
    before = snapshot(small_store.directory)
    boundary = 'limit'
    parts = [('f', f'part-{n}.bin', b'a' * 400) for n in range(3)]   # 3 x 400 > 1000
    body = chunked(multipart_body(boundary, parts))
    with RawClient(small_store.port) as client:
        client.send(request_bytes('POST', '/uploads/', [
            'Transfer-Encoding: chunked',
            f'Content-Type: multipart/form-data; boundary={boundary}'], body))
        reply = client.reply('POST')
        assert reply.status == 413
        assert client.at_eof()
    assert snapshot(small_store.directory) == before


@pytest.mark.parametrize('framing', ['length', 'chunked'])
def test_exactly_the_limit_is_stored(small_store, framing):
    content = os.urandom(1000)
    fields, body = [], content
    if framing == 'chunked':
        fields, body = ['Transfer-Encoding: chunked'], chunked(content[:300], content[300:])
    reply = exchange(small_store.port, 'PUT', '/uploads/full.bin', fields, body)
    assert reply.status == 201
    assert (small_store.directory / 'full.bin').read_bytes() == content


# -- faults ------------------------------------------------------------------------------

@pytest.mark.parametrize('how', ['half-close', 'close'])
def test_client_gone_mid_body_leaves_nothing(store, how):
    before = store_victim(store, 'victim.bin')
    client = RawClient(store.port)
    with client:
        client.send(request_bytes('PUT', '/uploads/victim.bin', ['Content-Length: 100000'],
                                  b'y' * 50_000))
        wait_until(lambda: temps(store.directory), 'the upload started')
        if how == 'half-close':
            # The server sees the stream end: the client left inside its body, and
            # gets no answer (RFC 9112 section 8 makes one optional).
            client.shut_write()
            assert client.read_exact(1) == b''
            assert snapshot(store.directory) == before
    wait_until(lambda: snapshot(store.directory) == before, 'the temporary file removed')
    assert (store.directory / 'victim.bin').read_bytes() == b'the previous version\n'


# Chunked bodies the stream ends inside: the client left, and is not answered.
CUT_BODIES = (b'5\r\nhel', b'5\r\nhello\r\n')


@pytest.mark.parametrize('body', [
    b'5\r\nhello\r\nzz\r\n',                        # a size that is not hex
    b'5\r\nhello!!\r\n0\r\n\r\n',                   # data longer than its size
    b'5\r\nhel',                                    # the stream ends inside a chunk
    b'5\r\nhello\r\n',                              # ... or before the last chunk
    b'5;\x01=x\r\nhello\r\n0\r\n\r\n',              # a broken extension
    b'3\r\nabc\r\n0\r\nBad Trailer\r\n\r\n',        # a broken trailer
], ids=['not-hex', 'overlong', 'cut-in-chunk', 'no-last-chunk', 'bad-extension', 'bad-trailer'])
def test_bad_chunk_leaves_nothing(store, body):
    before = store_victim(store, 'victim.bin')
    with RawClient(store.port) as client:
        client.send(request_bytes('PUT', '/uploads/victim.bin', ['Transfer-Encoding: chunked'],
                                  body))
        client.shut_write()
        if body in CUT_BODIES:      # the stream ended inside the body: the client left
            assert client.read_exact(1) == b''
        else:
            assert client.reply('PUT').status == 400
    assert snapshot(store.directory) == before


def test_sigterm_mid_upload_leaves_nothing(minihttp, tmp_path):
    store, process = start_store(minihttp, tmp_path, '--grace', '0.2')
    before = store_victim(store, 'victim.bin')
    with RawClient(store.port) as client:
        client.send(request_bytes('PUT', '/uploads/victim.bin', [f'Content-Length: {MiB}'],
                                  b'z' * 100_000))
        wait_until(lambda: temps(store.directory), 'the upload started')
        assert process.stop(signal.SIGTERM) == 0
    assert snapshot(store.directory) == before


def test_temporaries_of_a_killed_server_are_removed_at_start(minihttp, tmp_path):
    store, process = start_store(minihttp, tmp_path)
    before = store_victim(store, 'victim.bin')
    with RawClient(store.port) as client:
        client.send(request_bytes('PUT', '/uploads/victim.bin', [f'Content-Length: {MiB}'],
                                  b'z' * 100_000))
        wait_until(lambda: temps(store.directory), 'the upload started')
        process.stop(signal.SIGKILL)
    assert temps(store.directory)              # nobody could clean up ...
    start_store(minihttp, tmp_path)
    assert snapshot(store.directory) == before  # ... until the next start


def disk_full():
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class FullDisk:
    """A file that takes ``room`` bytes, then fails as a full disk does.

    With ``room`` None every write is taken and the flush fails instead, as
    when the kernel finds no blocks for data it had buffered.
    """

    def __init__(self, file, room):
        self.file = file
        self.room = room

    def write(self, piece):
        if self.room is not None:
            if len(piece) > self.room:
                raise disk_full()
            self.room -= len(piece)
        return self.file.write(piece)

    def flush(self):
        if self.room is None:
            raise disk_full()
        return self.file.flush()

    def __getattr__(self, name):
        return getattr(self.file, name)


@pytest.mark.parametrize('way, fails', [('PUT', 'write'), ('PUT', 'flush'), ('POST', 'flush')])
def test_full_disk_gives_507_and_leaves_nothing(in_process, monkeypatch, way, fails):
    before = store_victim(in_process, 'victim.bin')
    content = os.urandom(200_000)
    # The disk fills on the body's last piece, or at the flush after it: the
    # whole body has been read by then, so the server's close cannot reset the
    # connection under the reply.
    room = len(content) - 1 if fails == 'write' else None
    opened = uploads_module.Incoming.__init__

    def nearly_full(self, *args):
        opened(self, *args)
        self.file = FullDisk(self.file, room)
    monkeypatch.setattr(uploads_module.Incoming, '__init__', nearly_full)
    if way == 'PUT':
        reply = exchange(in_process.port, 'PUT', '/uploads/victim.bin', body=content)
    else:
        boundary = 'diskfull'
        reply = exchange(in_process.port, 'POST', '/uploads/',
                         [f'Content-Type: multipart/form-data; boundary={boundary}'],
                         multipart_body(boundary, [('f', 'victim.bin', content)]))
    assert reply.status == 507
    assert snapshot(in_process.directory) == before


class Flushes:
    """os.fdatasync stood in for: records the size of the file at each call,
    and fails with ``error`` when one is given."""

    def __init__(self, error=None):
        self.sizes = []
        self.error = error

    def __call__(self, fd):
        self.sizes.append(os.fstat(fd).st_size)
        if self.error is not None:
            raise self.error


def test_writeback_flushes_a_step_behind_the_writer(tmp_path, monkeypatch):
    flushes = Flushes()
    monkeypatch.setattr(uploads_module.os, 'fdatasync', flushes)
    with open(tmp_path / 'growing', 'wb') as file:
        writeback = uploads_module.Writeback(file, step=1000)
        for size in range(300, 3001, 300):
            file.write(b'x' * 300)
            writeback.wrote(size)
            writeback.wait()     # one flush at a time: let each finish here
    # A flush started at the first size a step past the previous one, and it
    # saw every byte written so far (Python's buffer was flushed first).
    assert flushes.sizes == [1200, 2400]


def test_writeback_error_is_raised_by_wait(tmp_path, monkeypatch):
    monkeypatch.setattr(uploads_module.os, 'fdatasync', Flushes(disk_full()))
    with open(tmp_path / 'growing', 'wb') as file:
        writeback = uploads_module.Writeback(file, step=10)
        file.write(b'x' * 10)
        writeback.wrote(10)
        with pytest.raises(OSError) as caught:
            writeback.wait()
    assert caught.value.errno == errno.ENOSPC


@pytest.mark.parametrize('framing', ['length', 'chunked'])
def test_upload_flushed_in_steps_round_trips(in_process, monkeypatch, framing):
    flushes = Flushes()
    monkeypatch.setattr(uploads_module.os, 'fdatasync', flushes)
    monkeypatch.setattr(uploads_module, 'WRITEBACK_STEP', 64 * 1024)
    content = os.urandom(1 << 20)
    body = content if framing == 'length' else chunked(*[content[i:i + 50_000]
                                                        for i in range(0, len(content), 50_000)])
    reply = exchange(in_process.port, 'PUT', '/uploads/stepped.bin',
                     [] if framing == 'length' else ['Transfer-Encoding: chunked'], body)
    assert reply.status == 201
    assert json.loads(reply.body)['sha256'] == hashlib.sha256(content).hexdigest()
    assert (in_process.directory / 'stepped.bin').read_bytes() == content
    assert flushes.sizes and all(0 < size <= len(content) for size in flushes.sizes)


def test_a_failed_background_flush_gives_507_and_leaves_nothing(in_process, monkeypatch):
    # The disk fails during a flush in the background, mid-body: the final
    # fsync might then report nothing (Linux reports a writeback error once),
    # so the answer must come from the error kept by the background flush.
    before = store_victim(in_process, 'victim.bin')
    monkeypatch.setattr(uploads_module.os, 'fdatasync', Flushes(disk_full()))
    monkeypatch.setattr(uploads_module, 'WRITEBACK_STEP', 64 * 1024)
    reply = exchange(in_process.port, 'PUT', '/uploads/victim.bin', body=os.urandom(1 << 20))
    assert reply.status == 507
    assert snapshot(in_process.directory) == before


def test_two_uploads_at_once_the_last_to_finish_wins(store):
    size = 200_000
    first, second = b'1' * size, b'2' * size
    half = size // 2
    head = request_bytes('PUT', '/uploads/raced.bin', [f'Content-Length: {size}'])
    with RawClient(store.port) as one, RawClient(store.port) as two:
        one.send(head, first[:half])
        two.send(head, second[:half])
        wait_until(lambda: len(temps(store.directory)) == 2, 'both uploads started')
        two.send(second[half:])
        assert two.reply('PUT').status in (200, 201)
        assert (store.directory / 'raced.bin').read_bytes() == second
        one.send(first[half:])                 # the first to start finishes last
        assert one.reply('PUT').status == 200
    assert (store.directory / 'raced.bin').read_bytes() == first
    assert not temps(store.directory)


def test_concurrent_uploads_never_mix(store):
    contents = [bytes([n]) * (4 * MiB) for n in b'ab']
    results = []

    def put(content):
        results.append(requests.put(store.url('/uploads/mixed.bin'), data=content,
                                    timeout=WAIT).status_code)
    threads = [threading.Thread(target=put, args=(c,)) for c in contents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert len(results) == 2 and set(results) <= {200, 201}
    assert (store.directory / 'mixed.bin').read_bytes() in contents


# -- who may write -----------------------------------------------------------------------

TOKEN = 's3cret-token'


@pytest.mark.parametrize('source', ['option', 'environment'])
def test_token_guards_writes_and_not_reads(minihttp, tmp_path, source):
    options, env = (['--token', TOKEN], None) if source == 'option' else \
        ([], {'MINIHTTP_TOKEN': TOKEN})
    store, process = start_store(minihttp, tmp_path, *options, env=env)
    process.wait_for_line(r'writes \(PUT, POST, DELETE\) need "Authorization: Bearer')
    url = store.url('/uploads/guarded.txt')
    for headers in ({}, {'Authorization': 'Bearer wrong'}, {'Authorization': f'Basic {TOKEN}'},
                    {'Authorization': TOKEN}):
        for method in ('PUT', 'DELETE'):
            response = requests.request(method, url, data=b'x', headers=headers, timeout=10)
            assert response.status_code == 401, (method, headers)
            assert response.headers['WWW-Authenticate'].startswith('Bearer')
        form = requests.post(store.url('/uploads/'), files={'f': ('x.txt', b'x')},
                             headers=headers, timeout=10)
        assert form.status_code == 401
    assert os.listdir(tmp_path / 'uploads') == []
    granted = {'Authorization': f'Bearer {TOKEN}'}
    assert requests.put(url, data=b'mine', headers=granted, timeout=10).status_code == 201
    assert requests.get(url, timeout=10).content == b'mine'          # reads stay open
    assert requests.get(store.url('/uploads/'), timeout=10).status_code == 200
    assert requests.delete(url, headers=granted, timeout=10).status_code == 204
    # A head without the token whose body never comes: 401 at once, from the head alone.
    with RawClient(store.port, timeout=5.0) as client:
        client.send(request_bytes('PUT', '/uploads/guarded.txt', ['Content-Length: 10']))
        reply = client.reply('PUT')
        assert reply.status == 401
        assert reply.headers['connection'] == 'close'


def test_beyond_loopback_without_token_refuses_writes(minihttp, tmp_path):
    (tmp_path / 'root').mkdir()
    (tmp_path / 'root' / 'open.txt').write_bytes(b'reads work\n')
    # Listening on every address; the test still only ever connects to 127.0.0.1.
    store, process = start_store(minihttp, tmp_path, '--host', '0.0.0.0')
    line = process.wait_for_line(r'writes \(PUT, POST, DELETE\)').string
    assert re.search(r'\brefused\b', line), line
    for method in ('PUT', 'DELETE'):
        response = requests.request(method, store.url('/uploads/x.txt'), data=b'x', timeout=10)
        assert response.status_code == 403
    assert requests.post(store.url('/uploads/'), files={'f': ('x.txt', b'x')},
                         timeout=10).status_code == 403
    assert requests.get(store.url('/open.txt'), timeout=10).content == b'reads work\n'
    assert os.listdir(tmp_path / 'uploads') == []


# -- the handoff: hashing and writing on a thread of the upload's own -----------------

def handoff_threads():
    return [thread for thread in threading.enumerate() if thread.name == 'handoff']


class Consumed:
    """A Handoff's consume that keeps what it is given, optionally held at a gate
    before its first block or failing from a block on."""

    def __init__(self, gate=None, fail_at=None):
        self.blocks = []
        self.gate = gate
        self.fail_at = fail_at
        self.at_gate = threading.Event()

    def __call__(self, view):
        if self.gate is not None and not self.blocks:
            self.at_gate.set()
            assert self.gate.wait(WAIT), 'the gate never opened'
        if self.fail_at is not None and len(self.blocks) >= self.fail_at:
            raise disk_full()
        self.blocks.append(bytes(view))


def test_handoff_consumes_every_byte_in_order_in_blocks():
    data = os.urandom(50_000)
    consumed = Consumed()
    handoff = uploads_module.Handoff(consumed, 1000, 3)
    sizes = random.Random(16).choices([0, 1, 7, 999, 1000, 1001, 2500], k=200)
    at = 0
    for size in sizes:
        if at < len(data):
            handoff.put(data[at:at + size] if size % 2 else memoryview(data)[at:at + size])
            at += size
    handoff.put(data[at:])
    handoff.finish()
    assert b''.join(consumed.blocks) == data
    assert all(len(block) == 1000 for block in consumed.blocks[:-1])
    assert handoff.made <= 3 and not handoff.thread.is_alive()
    handoff.finish()                         # again: nothing more, nothing raised
    with pytest.raises(ValueError):
        handoff.put(b'late')


def test_handoff_holds_at_most_its_blocks_while_the_thread_is_behind():
    gate = threading.Event()
    consumed = Consumed(gate)
    handoff = uploads_module.Handoff(consumed, 1000, 3)
    given = []

    def writer():
        for index in range(10):
            handoff.put(bytes([index]) * 1000)
            given.append(index)
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        # The thread holds the first block at the gate, two more wait for it: every
        # block made is out, and the writer waits for one to come back.
        wait_until(lambda: handoff.made == 3 and handoff.full.qsize() == 2,
                   'three blocks out')
        assert len(given) <= 3 and thread.is_alive() and handoff.made == 3
    finally:
        gate.set()
        thread.join(WAIT)
    handoff.finish()
    assert handoff.made == 3
    assert consumed.blocks == [bytes([index]) * 1000 for index in range(10)]


def test_handoff_error_is_raised_by_the_next_put_and_by_finish():
    consumed = Consumed(fail_at=1)
    handoff = uploads_module.Handoff(consumed, 100, 2)
    handoff.put(b'a' * 250)                  # two blocks passed, the second fails
    wait_until(lambda: handoff.error is not None, 'the failure seen')
    with pytest.raises(OSError) as caught:
        handoff.put(b'b')
    assert caught.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        handoff.finish()
    assert consumed.blocks == [b'a' * 100] and not handoff.thread.is_alive()


def test_handoff_stop_drops_what_is_waiting_and_ends_its_thread():
    gate = threading.Event()
    consumed = Consumed(gate)
    handoff = uploads_module.Handoff(consumed, 100, 3)
    handoff.put(b'a' * 100 + b'b' * 100 + b'c' * 50)
    assert consumed.at_gate.wait(WAIT)
    stopping = threading.Thread(target=handoff.stop)
    stopping.start()
    try:
        wait_until(lambda: handoff.error is not None, 'the stop said')
    finally:
        gate.set()
        stopping.join(WAIT)
    assert not stopping.is_alive() and not handoff.thread.is_alive()
    assert consumed.blocks == [b'a' * 100]   # the block at the gate ended; the rest dropped
    with pytest.raises(uploads_module.HandoffStopped):
        handoff.finish()


@pytest.fixture
def handed_off(monkeypatch):
    """Every upload past its first 10,000 bytes written by a handoff's thread (hashed by
    the receiving one), in blocks of 4096 bytes, two of them."""
    monkeypatch.setattr(uploads_module, 'HANDOFF_AFTER', 10_000)
    monkeypatch.setattr(uploads_module, 'HANDOFF_BLOCK', 4096)
    monkeypatch.setattr(uploads_module, 'HANDOFF_BLOCKS', 2)


@pytest.mark.parametrize('handoff', ['handed_off', 'handed_off_direct'])
@pytest.mark.parametrize('framing', ['length', 'chunked'])
def test_a_handed_off_upload_is_stored_whole_and_its_digest_checked(
        in_process, request, handoff, framing):
    request.getfixturevalue(handoff)     # its blocks written through the page cache or not
    content = os.urandom(300_001)
    digest = base64.b64encode(hashlib.sha256(content).digest()).decode()
    wrong = base64.b64encode(hashlib.sha256(b'other').digest()).decode()
    replies = {}
    for name, given in (('right.bin', digest), ('wrong.bin', wrong)):
        fields = [f'Content-Digest: sha-256=:{given}:']
        body = content
        if framing == 'chunked':
            fields.append('Transfer-Encoding: chunked')
            body = chunked(*[content[i:i + 65_536] for i in range(0, len(content), 65_536)])
        replies[name] = exchange(in_process.port, 'PUT', f'/uploads/{name}', fields, body)
    # The digest is checked once every byte was hashed, not before the handoff's last.
    assert replies['right.bin'].status == 201, replies['right.bin'].body
    assert replies['wrong.bin'].status == 400, replies['wrong.bin'].body
    assert json.loads(replies['right.bin'].body)['sha256'] == hashlib.sha256(content).hexdigest()
    assert (in_process.directory / 'right.bin').read_bytes() == content
    assert not (in_process.directory / 'wrong.bin').exists() and not temps(in_process.directory)
    wait_until(lambda: not handoff_threads(), 'every handoff thread ended')


class ThreadsSeen:
    """A hash that notes which threads fed it."""

    def __init__(self, hash):
        self.hash, self.threads = hash, set()

    def update(self, piece):
        self.threads.add(threading.get_ident())
        self.hash.update(piece)


def test_every_byte_is_hashed_on_the_receiving_thread_and_written_by_the_handoff(
        tmp_path, handed_off):
    incoming = uploads_module.Incoming(str(tmp_path), None, more=('sha-512',))
    incoming.hash = ThreadsSeen(incoming.hash)
    incoming.more = {name: ThreadsSeen(h) for name, h in incoming.more.items()}
    written = set()
    write = incoming._write
    incoming._write = lambda piece: (written.add(threading.get_ident()), write(piece))
    content = os.urandom(100_003)
    try:
        for at in range(0, len(content), 7_001):
            incoming.write(content[at:at + 7_001])
        assert incoming.handoff is not None          # past HANDOFF_AFTER: handed off
        incoming.settle()
        hashes = [incoming.hash, *incoming.more.values()]
        assert all(h.threads == {threading.get_ident()} for h in hashes)
        assert len(written) == 2 and threading.get_ident() in written   # and the handoff's
        assert incoming.hash.hash.hexdigest() == hashlib.sha256(content).hexdigest()
        assert incoming.more['sha-512'].hash.digest() == hashlib.sha512(content).digest()
        incoming.finish()
        with open(incoming.temp_path, 'rb') as stored:
            assert stored.read() == content
    finally:
        incoming.discard()


@pytest.mark.parametrize('fails', ['write', 'flush'])
def test_a_full_disk_under_the_handoff_gives_507_and_leaves_nothing(
        in_process, handed_off, monkeypatch, fails):
    before = store_victim(in_process, 'victim.bin')
    content = os.urandom(200_000)
    opened = uploads_module.Incoming.__init__

    def nearly_full(self, *args):
        opened(self, *args)
        self.file = FullDisk(self.file, 100_000 if fails == 'write' else None)
    monkeypatch.setattr(uploads_module.Incoming, '__init__', nearly_full)
    with RawClient(in_process.port) as client:
        client.send(request_bytes('PUT', '/uploads/victim.bin', [], content))
        reply = client.reply('PUT')
    assert reply.status == 507
    assert snapshot(in_process.directory) == before
    wait_until(lambda: not handoff_threads(), 'the handoff thread ended')


@pytest.mark.parametrize('handoff', ['handed_off', 'handed_off_direct'])
@pytest.mark.parametrize('how', ['half-close', 'close'])
def test_a_client_gone_mid_body_ends_the_handoff_and_leaves_nothing(
        in_process, request, handoff, how):
    request.getfixturevalue(handoff)     # its blocks written through the page cache or not
    before = store_victim(in_process, 'victim.bin')
    with RawClient(in_process.port) as client:
        client.send(request_bytes('PUT', '/uploads/victim.bin', ['Content-Length: 1000000'],
                                  b'y' * 200_000))
        wait_until(handoff_threads, 'the handoff under way')
        if how == 'half-close':
            client.shut_write()
            assert client.read_exact(1) == b''
    wait_until(lambda: not handoff_threads(), 'the handoff thread ended')
    wait_until(lambda: snapshot(in_process.directory) == before, 'the temporary file removed')


def test_a_server_stopping_cuts_a_handed_off_upload_at_its_grace_and_says_it_did(
        tmp_path, handed_off):
    """The server, not the client, ends an upload still arriving when its grace is over:
    its record says so (timed out: the server stopped), and the temporary file and the
    handoff's thread are gone."""
    (tmp_path / 'root').mkdir()
    directory = tmp_path / 'uploads'
    protocol = HTTPServer(App(str(tmp_path / 'root'), str(directory)), access_log=False)
    loop = EventLoop('127.0.0.1', 0, protocol)
    loop.start()
    try:
        with RawClient(loop.address[1]) as client:
            client.send(request_bytes('PUT', '/uploads/cut.bin', ['Content-Length: 1000000'],
                                      b'y' * 200_000))
            wait_until(handoff_threads, 'the handoff under way')
            loop.stop(0.2)
            assert client.read_exact(1) == b''        # cut: no answer, the stream ends
    finally:
        loop.stop(0.2)                                # again: nothing more to stop
    wait_until(lambda: not handoff_threads(), 'the handoff thread ended')
    assert not temps(directory) and not (directory / 'cut.bin').exists()
    wait_until(lambda: [public(record)['ended']['kind'] for record in protocol.records.kept()]
               == ['timed out'], 'the record closed')
    (record,) = [public(record) for record in protocol.records.kept()]
    assert record['ended']['reason'] == (
        'the server stopped at the end of its grace, after 200000 bytes of the body')


def test_a_form_whose_files_are_handed_off_stores_each_whole(in_process, handed_off):
    files = [('one', 'first.bin', os.urandom(30_000)), ('two', 'second.bin', os.urandom(25_001))]
    body = multipart_body('handed', files)
    reply = exchange(in_process.port, 'POST', '/uploads/',
                     ['Content-Type: multipart/form-data; boundary=handed'], body)
    assert reply.status == 200, reply.body
    stored = {item['name']: item['sha256'] for item in json.loads(reply.body)['stored']}
    assert stored == {name: hashlib.sha256(content).hexdigest() for _, name, content in files}
    for _, name, content in files:
        assert (in_process.directory / name).read_bytes() == content
    wait_until(lambda: not handoff_threads(), 'every handoff thread ended')


# -- the handoff's direct writes (O_DIRECT) ------------------------------------------

def direct_writes_work(directory):
    """Whether the file system of ``directory`` takes O_DIRECT (tmpfs before Linux 6.6
    does not: the uploads then go through the page cache, as the tests below check
    otherwise)."""
    fd, path = tempfile.mkstemp(dir=directory)
    try:
        return uploads_module.set_direct(fd, True)
    finally:
        os.close(fd)
        os.unlink(path)


@pytest.fixture
def handed_off_direct(monkeypatch, tmp_path):
    """Every upload past its first 8192 bytes handed off in blocks of 8192, two of them,
    aligned as direct writes must be; ``set_direct``'s answers recorded."""
    if not direct_writes_work(tmp_path):
        pytest.skip('the file system of the temporary folder has no O_DIRECT')
    monkeypatch.setattr(uploads_module, 'HANDOFF_AFTER', 8192)
    monkeypatch.setattr(uploads_module, 'HANDOFF_BLOCK', 8192)
    monkeypatch.setattr(uploads_module, 'HANDOFF_BLOCKS', 2)
    answers = []
    real = uploads_module.set_direct

    def recorded(fd, on):
        answers.append((on, real(fd, on)))
        return answers[-1][1]
    monkeypatch.setattr(uploads_module, 'set_direct', recorded)
    return answers


def upload_writes(monkeypatch, fail):
    """os.write stood in for: a write to an upload's temporary file raises ``fail``
    (an OSError) instead; every other write is left alone."""
    real = os.write

    def write(fd, data):
        if os.path.basename(os.readlink(f'/proc/self/fd/{fd}')).startswith(TEMP_PREFIX):
            raise fail
        return real(fd, data)
    monkeypatch.setattr(uploads_module.os, 'write', write)


@pytest.mark.parametrize('framing', ['length', 'chunked'])
def test_direct_writes_store_an_upload_whole_across_chunks_and_blocks(
        in_process, handed_off_direct, framing):
    # Chunks of 3000 bytes cross the hand-off point and every block; the last block
    # is part of one (so written through the page cache after direct ones).
    content = os.urandom(8192 * 7 + 1234)
    fields, body = [], content
    if framing == 'chunked':
        fields = ['Transfer-Encoding: chunked', 'Trailer: X-Note']
        body = chunked(*[content[i:i + 3000] for i in range(0, len(content), 3000)],
                       trailers=['X-Note: after the body'])
    reply = exchange(in_process.port, 'PUT', '/uploads/direct.bin', fields, body)
    assert reply.status == 201, reply.body
    assert json.loads(reply.body)['sha256'] == hashlib.sha256(content).hexdigest()
    assert (in_process.directory / 'direct.bin').read_bytes() == content
    assert handed_off_direct == [(True, True), (False, False)]
    wait_until(lambda: not handoff_threads(), 'the handoff thread ended')


def test_an_upload_of_whole_blocks_is_written_direct_to_its_end(in_process, handed_off_direct):
    content = os.urandom(8192 * 6)
    reply = exchange(in_process.port, 'PUT', '/uploads/whole.bin', body=content)
    assert reply.status == 201, reply.body
    assert (in_process.directory / 'whole.bin').read_bytes() == content
    assert handed_off_direct == [(True, True)]


def test_a_file_system_refusing_a_direct_write_gets_it_through_the_page_cache(
        in_process, handed_off_direct, monkeypatch):
    upload_writes(monkeypatch, OSError(errno.EINVAL, os.strerror(errno.EINVAL)))
    content = os.urandom(8192 * 5 + 7)
    reply = exchange(in_process.port, 'PUT', '/uploads/refused.bin', body=content)
    assert reply.status == 201, reply.body
    assert (in_process.directory / 'refused.bin').read_bytes() == content
    assert handed_off_direct == [(True, True), (False, False)]


def test_a_full_disk_under_a_direct_write_gives_507_and_leaves_nothing(
        in_process, handed_off_direct, monkeypatch):
    before = store_victim(in_process, 'victim.bin')
    upload_writes(monkeypatch, disk_full())
    with RawClient(in_process.port) as client:
        client.send(request_bytes('PUT', '/uploads/victim.bin', [], os.urandom(8192 * 5)))
        reply = client.reply('PUT')
    assert reply.status == 507
    assert snapshot(in_process.directory) == before
    wait_until(lambda: not handoff_threads(), 'the handoff thread ended')

