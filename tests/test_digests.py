"""RFC 9530 digests: the parser, uploads checked before they are stored, Repr-Digest on GET,
and `minihttp blocks --digest`.

Every expected digest is computed here with hashlib and base64, never by
minihttp; curl, requests and raw sockets are the clients.
"""

import base64
import hashlib
import os

import pytest
import requests

from support import (RawClient, Served, chunked, curl, exchange, request_bytes, run_minihttp,
                     snapshot)
from minihttp import digests, files
from minihttp.errors import HTTPError
from minihttp.request import parse_head

KiB = 1 << 10


def sf(algorithm, data):
    """The RFC 9530 form of data's digest, made with hashlib alone."""
    return f'{algorithm}=:{base64.b64encode(hashlib.new(algorithm.replace("-", ""), data).digest()).decode()}:'


def curl_status(tmp_path, *args):
    """curl ARGS: (HTTP status, response body), the head written to tmp_path/'head'."""
    done = curl('-o', tmp_path / 'body', '-D', tmp_path / 'head', '-w', '%{http_code}', *args)
    assert done.returncode == 0, done.stderr.decode(errors='replace')
    return int(done.stdout), (tmp_path / 'body').read_bytes()


# -- the parser ---------------------------------------------------------------------------

@pytest.mark.parametrize('text, expected', [
    ('sha-256=:AAAA:', {'sha-256': ':AAAA:'}),
    ('sha-256=:AA==:, sha-512=:BB:', {'sha-256': ':AA==:', 'sha-512': ':BB:'}),
    ('  a=1,b=2.5 ,\tc="x\\"y"  ', {'a': '1', 'b': '2.5', 'c': '"x\\"y"'}),
    ('unixsum=30637, flag, t=tok/en:1;p=?1;q', {'unixsum': '30637', 'flag': '', 't': 'tok/en:1'}),
    ('l=(1 "two" :AA:);p, *k=?0', {'l': '(1 "two" :AA:)', '*k': '?0'}),
    ('a=1, a=2', {'a': '2'}),                  # the last wins (RFC 8941 section 4.2.2)
    ('', {}),
])
def test_dictionaries_parse(text, expected):
    assert digests.parse_dictionary(text) == expected


@pytest.mark.parametrize('text', [
    'a=1,', ',a=1', 'a=1,,b=2', 'a=1 b=2', 'A=1', '1a=1', 'a=', 'a=:AA', 'a="open',
    'a=1234567890123.5', 'a=1.2345', 'a=(1 2', 'a=(1"x")', 'a=@1', 'a=1;', 'a=\x01',
])
def test_what_is_not_a_dictionary_is_refused_whole(text):
    assert digests.parse_dictionary(text) is None


def test_byte_sequences_need_no_padding():
    assert digests.byte_sequence(':AA==:') == digests.byte_sequence(':AA:') == b'\x00'
    assert digests.byte_sequence('AA==') is None
    assert digests.byte_sequence(':A*:') is None


@pytest.mark.parametrize('value, chosen', [
    ('sha-256=5, sha-512=3', 'sha-256'),
    ('sha-256=3, sha-512=5', 'sha-512'),
    ('sha-512=3', 'sha-512'),              # named beats not named
    ('sha-256=1, sha-512=1', 'sha-256'),   # a tie goes to our order
    ('sha=10', 'sha-256'),                 # none of ours asked for: ours anyway (appendix C.2)
    ('sha-256=0', 'sha-512'),
    ('sha-256=0, sha-512=0', None),        # 0 is "not acceptable"
    ('sha-256=11', None),                  # beyond 10: not a preference, ignored
    ('sha-256=-1', None),
    ('sha-256', None),                     # a Boolean, not an Integer
    ('sha-256=5,', None),                  # not a Dictionary
])
def test_wanted_algorithm(value, chosen):
    assert digests.wanted_algorithm(value) == chosen


# -- uploads --------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def store(tmp_path_factory):
    top = tmp_path_factory.mktemp('digests')
    (top / 'root').mkdir()
    (top / 'root' / 'small.txt').write_bytes(b'{"hello": "world"}\n')
    (top / 'root' / 'large.bin').write_bytes(os.urandom(3 * files.SMALL_FILE + 17))
    server = Served(top / 'root', top / 'uploads')
    server.root = top / 'root'
    server.directory = top / 'uploads'
    yield server
    server.stop()


def test_curl_upload_with_the_right_digest_is_stored_and_answered_with_it(store, tmp_path):
    data = os.urandom(100 * KiB)
    source = tmp_path / 'data.bin'
    source.write_bytes(data)
    status, body = curl_status(tmp_path, '-T', source, '-H',
                               f'Content-Digest: {sf("sha-256", data)}', store.url('/uploads/right.bin'))
    assert status in (200, 201), body
    assert (store.directory / 'right.bin').read_bytes() == data
    head = (tmp_path / 'head').read_text().lower()
    assert f'repr-digest: {sf("sha-256", data)}'.lower() in head
    assert b'"digests_checked": [\n  "content-digest sha-256"\n ]' in body


def test_a_wrong_digest_is_400_and_the_previous_version_stays(store, tmp_path):
    assert exchange(store.port, 'PUT', '/uploads/kept.txt', body=b'previous\n').status in (200, 201)
    before = snapshot(store.directory)
    status, body = curl_status(tmp_path, '-X', 'PUT', '--data-binary', 'changed\n', '-H',
                               f'Content-Digest: {sf("sha-256", b"something else")}',
                               store.url('/uploads/kept.txt'))
    assert status == 400
    assert body == b'400 Bad Request: content-digest sha-256 does not match the content received\n'
    assert snapshot(store.directory) == before
    assert (store.directory / 'kept.txt').read_bytes() == b'previous\n'


def test_sha512_is_computed_only_when_sent_and_then_stored_form_has_both(store):
    data = b'x' * 5000
    plain = requests.put(store.url('/uploads/plain.bin'), data=data, timeout=10)
    assert plain.headers['Repr-Digest'] == sf('sha-256', data)
    both = requests.put(store.url('/uploads/both.bin'), data=data, timeout=10,
                        headers={'Content-Digest': sf('sha-512', data)})
    assert both.status_code in (200, 201)
    assert both.headers['Repr-Digest'] == f'{sf("sha-256", data)}, {sf("sha-512", data)}'
    assert both.json()['digests_checked'] == ['content-digest sha-512']


@pytest.mark.parametrize('field, status', [
    ('md5=:1B2M2Y8AsgTpgAmY7PhCfg==:', 201),      # no algorithm we know: ignored
    ('sha-256=:AA==:, sha-256', 400),              # the last sha-256 wins: a Boolean
    ('sha-256=:not base64!:', 201),                # not a Dictionary: ignored whole (RFC 8941)
    ('sha-256=:AAAA:', 400),                       # ours, but 3 bytes, not 32
    ('sha-256="text"', 400),                       # ours, but not a Byte Sequence
])
def test_what_is_checked_and_what_is_ignored(store, field, status):
    name = f'ignored-{status}-{hashlib.sha256(field.encode()).hexdigest()[:8]}'
    reply = exchange(store.port, 'PUT', f'/uploads/{name}', [f'Content-Digest: {field}'], b'data')
    assert reply.status == status, reply.body
    assert (store.directory / name).exists() == (status == 201)


def test_repr_digest_of_the_request_is_checked_like_content_digest(store):
    reply = exchange(store.port, 'PUT', '/uploads/repr.txt',
                     [f'Repr-Digest: {sf("sha-256", b"other")}'], b'data')
    assert reply.status == 400
    assert b'repr-digest sha-256 does not match' in reply.body


def chunked_put(port, name, trailers=(), headers=(), pieces=(b'hello ', b'world')):
    with RawClient(port) as client:
        client.send(request_bytes('PUT', f'/uploads/{name}',
                                  ['Transfer-Encoding: chunked', *headers, 'Connection: close'],
                                  chunked(*pieces, trailers=trailers)))
        return client.reply('PUT')


def test_a_digest_in_the_trailers_of_a_chunked_upload_is_checked(store):
    data = b'hello world'
    right = chunked_put(store.port, 'trailed.txt', [f'Content-Digest: {sf("sha-256", data)}'])
    assert right.status == 201, right.body
    assert right.headers['repr-digest'] == sf('sha-256', data)
    assert b'content-digest trailer sha-256' in right.body
    before = snapshot(store.directory)
    wrong = chunked_put(store.port, 'trailed.txt', [f'Content-Digest: {sf("sha-256", b"no")}'])
    assert wrong.status == 400
    assert wrong.body == (b'400 Bad Request: content-digest trailer sha-256 does not match '
                          b'the content received\n')
    assert snapshot(store.directory) == before


def test_sha512_in_the_trailers_is_checked_when_announced(store):
    data = b'hello world'
    trailer = [f'Content-Digest: {sf("sha-512", data)}']
    announced = chunked_put(store.port, 'announced.txt', trailer, ['Trailer: Content-Digest'])
    assert announced.status == 201, announced.body
    assert sf('sha-512', data) in announced.headers['repr-digest']
    # Not announced: sha-512 was not computed, and the client asked for a check.
    unannounced = chunked_put(store.port, 'unannounced.txt', trailer)
    assert unannounced.status == 400
    assert b'announce it with "Trailer: content-digest"' in unannounced.body
    assert not (store.directory / 'unannounced.txt').exists()


def test_a_header_and_a_trailer_digest_are_both_checked(store):
    data = b'hello world'
    good = f'Content-Digest: {sf("sha-256", data)}'
    bad = f'Content-Digest: {sf("sha-256", b"other")}'
    both = chunked_put(store.port, 'twice.txt', [good], [good])
    assert both.status == 201
    assert b'"content-digest sha-256",\n  "content-digest trailer sha-256"' in both.body
    assert chunked_put(store.port, 'twice-bad.txt', [bad], [good]).status == 400
    assert chunked_put(store.port, 'twice-bad.txt', [good], [bad]).status == 400
    assert not (store.directory / 'twice-bad.txt').exists()


# -- Repr-Digest on GET -------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['small.txt', 'large.bin'])
def test_get_with_want_repr_digest(store, name):
    data = (store.root / name).read_bytes()
    url = store.url(f'/{name}')
    assert 'Repr-Digest' not in requests.get(url, timeout=10).headers
    got = requests.get(url, headers={'Want-Repr-Digest': 'sha-256=5, sha-512=3'}, timeout=10)
    assert got.content == data
    assert got.headers['Repr-Digest'] == sf('sha-256', data)
    got = requests.get(url, headers={'Want-Repr-Digest': 'sha-512=3'}, timeout=10)
    assert got.headers['Repr-Digest'] == sf('sha-512', data)
    none = requests.get(url, headers={'Want-Repr-Digest': 'sha-256=0, sha-512=0'}, timeout=10)
    assert 'Repr-Digest' not in none.headers


@pytest.mark.parametrize('name', ['small.txt', 'large.bin'])
def test_a_range_and_head_carry_the_digest_of_the_whole_file(store, name):
    """RFC 9530 section 3: the representation's digest, not the part's (appendix B.2, B.3)."""
    data = (store.root / name).read_bytes()
    want = 'Want-Repr-Digest: sha-256=1'
    part = exchange(store.port, 'GET', f'/{name}', [want, 'Range: bytes=1-7'])
    assert part.status == 206 and part.body == data[1:8]
    assert part.headers['repr-digest'] == sf('sha-256', data)
    head = exchange(store.port, 'HEAD', f'/{name}', [want])
    assert head.status == 200 and head.body == b''
    assert head.headers['repr-digest'] == sf('sha-256', data)


def test_curl_checks_a_downloaded_file(store, tmp_path):
    data = (store.root / 'large.bin').read_bytes()
    status, body = curl_status(tmp_path, '-H', 'Want-Repr-Digest: sha-256=1',
                               store.url('/large.bin'))
    assert status == 200 and body == data
    assert f'Repr-Digest: {sf("sha-256", data)}' in (tmp_path / 'head').read_text()


def open_file(path):
    fd = os.open(path, os.O_RDONLY)
    return fd, os.fstat(fd)


def file_request(*fields):
    return parse_head(b'\r\n'.join([b'GET /f HTTP/1.1', b'Host: x', *fields]))


def test_a_file_beyond_the_read_ahead_limit_gets_no_digest(tmp_path, monkeypatch):
    path = tmp_path / 'f'
    path.write_bytes(b'y' * 1000)
    monkeypatch.setattr(files, 'MAX_DIGEST_AHEAD', 999)
    fd, st = open_file(path)
    try:
        response = files.file_response(file_request(b'Want-Repr-Digest: sha-512=1'), st, [
            ('Content-Type', 'x'), ('Last-Modified', 'x'), ('ETag', files.etag_of(st))])
        response = files.with_digest(file_request(b'Want-Repr-Digest: sha-512=1'), response,
                                     st, fd=fd)
        assert 'Repr-Digest' not in dict(response.headers)
    finally:
        os.close(fd)


def test_a_digest_is_computed_once_per_unchanged_file(tmp_path, monkeypatch):
    path = tmp_path / 'f'
    path.write_bytes(b'z' * (2 * files.SMALL_FILE))
    reads = []
    real = files.hash_file
    monkeypatch.setattr(files, 'hash_file', lambda *args: reads.append(args) or real(*args))
    request = file_request(b'Want-Repr-Digest: sha-512=9')
    answers = []
    for content in (b'z', b'z', b'w'):
        path.write_bytes(content * (2 * files.SMALL_FILE))
        for _ in range(2):
            fd, st = open_file(path)
            try:
                response = files.file_response(request, st, [('Content-Type', 'x'), ('L', 'x'),
                                                             ('ETag', files.etag_of(st))])
                answers.append(dict(files.with_digest(request, response, st, fd=fd).headers))
            finally:
                os.close(fd)
    # Rewritten with the same bytes is a new mtime: computed again, and alike.
    assert len(reads) == 3
    assert answers[0]['Repr-Digest'] == sf('sha-512', b'z' * (2 * files.SMALL_FILE))
    assert answers[-1]['Repr-Digest'] == sf('sha-512', b'w' * (2 * files.SMALL_FILE))


def test_a_file_that_changes_while_hashed_is_503(tmp_path):
    path = tmp_path / 'f'
    path.write_bytes(b'a' * 1000)
    fd, st = open_file(path)
    try:
        with open(path, 'ab') as more:
            more.write(b'b')
        with pytest.raises(HTTPError) as caught:
            files.hash_file(fd, st, 'sha-256')
        assert caught.value.status == 503
    finally:
        os.close(fd)


# -- blocks --------------------------------------------------------------------------------

def test_block_client_and_server_print_the_same_digest(minihttp, tmp_path):
    data = os.urandom(200 * KiB + 3)
    (tmp_path / 'data').write_bytes(data)
    server = minihttp('blocks', '-p', 0, '--digest')
    sent = run_minihttp('blocks', '-c', '-p', server.port, '--digest', '--file',
                        tmp_path / 'data', '--block-size', '4K')
    assert sent.returncode == 0, sent.stderr
    expected = sf('sha-256', data)
    assert expected in sent.stderr.decode() + sent.stdout.decode()
    line = server.wait_for_line(
        r'end of stream after (\d+) blocks, (\d+) bytes in [\d.]+ s, (\S+)')
    assert line.groups() == ('51', str(len(data)), expected)
