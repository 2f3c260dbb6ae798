"""Resumable uploads over HTTP (draft-ietf-httpbis-resumable-upload): the routes in
minihttp.app, the 104 interim response, and the state in the uploads folder.

Most tests run an in-process server; those that need a process (a restart on
the same folder, --workers 2, --trace, curl) start `minihttp serve`.  h11 reads
the 104 and the final response as the oracle of their wire format.
"""

import base64
import hashlib
import json
import os
import re
import socket
import threading

import h11
import pytest

from minihttp.app import App
from minihttp.eventloop import EventLoop
from minihttp.records import FramingLog, public
from minihttp.responses import Response
from minihttp.resumable import PREFIX
from minihttp.server import HTTPServer
from support import (HTTP_LISTENING, MinihttpProcess, RawClient, curl, request_bytes,
                     serve_args, sha256_file, wait_until)

pytestmark = pytest.mark.timeout(90)

INTEROP = 'Upload-Draft-Interop-Version: 9'
PATCH_TYPE = 'Content-Type: application/partial-upload'


class Site:
    """An in-process minihttp serving ``uploads``; ``records`` its framing records."""

    def __init__(self, tmp_path, token=None, partial_expiry=3600):
        self.root = tmp_path / 'root'
        self.root.mkdir(exist_ok=True)
        self.uploads = tmp_path / 'uploads'
        self.records = FramingLog()
        app = App(str(self.root), str(self.uploads), records=self.records, token=token,
                  partial_expiry=partial_expiry)
        protocol = HTTPServer(app, access_log=False, head_timeout=5.0, body_timeout=5.0,
                              keepalive_timeout=5.0, records=self.records)
        self.loop = EventLoop('127.0.0.1', 0, protocol, threads=4)
        self.loop.start()
        self.port = self.loop.address[1]


@pytest.fixture
def site(tmp_path):
    served = Site(tmp_path)
    yield served
    served.loop.stop(0.5)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def creation(name, length, *fields, complete=True, version=INTEROP, method='PUT',
             http='HTTP/1.1'):
    """A creation request's head (its body follows)."""
    lines = [f'{method} /uploads/{name} {http}', 'Host: 127.0.0.1',
             f'Upload-Complete: {"?1" if complete else "?0"}',
             f'Content-Length: {length}', *fields]
    if version:
        lines.append(version)
    return ('\r\n'.join(lines) + '\r\n\r\n').encode()


def read_104(client):
    """The 104 that precedes the body's end: its fields, read with h11 (lower-case names)."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method='PUT', target='/', headers=[('Host', 'x'),
                                                              ('Content-Length', '1')]))
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            piece = client.sock.recv(1)         # a byte at a time: nothing past the 104 taken
            assert piece, 'closed before a 104'
            conn.receive_data(piece)
        else:
            assert isinstance(event, h11.InformationalResponse), event
            assert event.status_code == 104
            return {name.decode().lower(): value.decode() for name, value in event.headers}


def head(port, location):
    with RawClient(port) as client:
        client.send(request_bytes('HEAD', location, ['Connection: close']))
        return client.reply('HEAD')


def offset_of(port, location):
    reply = head(port, location)
    assert reply.status == 204, reply
    return int(reply.headers['upload-offset'])


def patch(port, location, offset, data, complete=True, fields=(), chunked=False):
    framing = ['Transfer-Encoding: chunked'] if chunked else [f'Content-Length: {len(data)}']
    body = (b'%x\r\n%s\r\n0\r\n\r\n' % (len(data), data) if data else b'0\r\n\r\n') \
        if chunked else data
    with RawClient(port) as client:
        client.send(request_bytes('PATCH', location, [
            PATCH_TYPE, f'Upload-Offset: {offset}',
            f'Upload-Complete: {"?1" if complete else "?0"}', *framing, *fields,
            'Connection: close'], body))
        return client.reply('PATCH')


def create_and_cut(port, name, data, cut, complete=True):
    """Create an upload of ``data`` and leave after ``cut`` bytes of it; its location once
    the server holds all ``cut`` bytes."""
    with RawClient(port) as client:
        client.send(creation(name, len(data), complete=complete))
        location = read_104(client)['location']
        client.send(data[:cut])
    wait_until(lambda: offset_of(port, location) == cut, f'offset {cut} held')
    return location


# -- the whole cycle --------------------------------------------------------------------

@pytest.mark.parametrize('chunked', [False, True], ids=['content-length', 'chunked'])
def test_create_cut_head_patch_the_rest(site, chunked):
    data = os.urandom(1_500_000)
    cut = 654_321
    location = create_and_cut(site.port, 'resumed.bin', data, cut)
    assert re.fullmatch(r'/_uploads/[A-Za-z0-9_-]{24}', location)
    assert not (site.uploads / 'resumed.bin').exists()        # invisible until complete
    answer = head(site.port, location)
    assert answer.headers['upload-complete'] == '?0'
    assert answer.headers['upload-length'] == str(len(data))
    assert answer.headers['cache-control'] == 'no-store'
    assert 'max-age=' in answer.headers['upload-limit']
    reply = patch(site.port, location, cut, data[cut:], chunked=chunked)
    assert reply.status == 201, reply.body
    assert reply.headers['upload-complete'] == '?1'
    summary = json.loads(reply.body)
    assert summary['sha256'] == sha(data) and summary['bytes'] == len(data)
    assert sha256_file(site.uploads / 'resumed.bin') == sha(data)
    assert head(site.port, location).headers['upload-complete'] == '?1'


def test_parts_appended_one_by_one(site):
    data = os.urandom(300_000)
    with RawClient(site.port) as client:           # no content: the URL, then parts
        client.send(creation('parts.bin', 0, complete=False))
        reply = client.reply('PUT')
    assert reply.status == 201 and reply.informational == []   # no content: no 104
    location = reply.headers['location']
    assert reply.headers['upload-offset'] == '0'
    for start in range(0, 200_000, 100_000):
        reply = patch(site.port, location, start, data[start:start + 100_000], complete=False)
        assert reply.status == 204 and reply.headers['upload-offset'] == str(start + 100_000)
    reply = patch(site.port, location, 200_000, data[200_000:], chunked=True)
    assert reply.status == 201
    assert sha256_file(site.uploads / 'parts.bin') == sha(data)


def test_a_wrong_offset_is_409_with_the_right_one(site):
    location = create_and_cut(site.port, 'conflict.bin', os.urandom(10_000), 4_000)
    reply = patch(site.port, location, 3_999, b'x' * 6_001)
    assert reply.status == 409
    assert reply.headers['upload-offset'] == '4000'
    problem = json.loads(reply.body)
    assert problem['type'].endswith('#mismatching-upload-offset')
    assert (problem['expected-offset'], problem['provided-offset']) == (4000, 3999)
    assert offset_of(site.port, location) == 4000


def test_an_append_is_application_partial_upload(site):
    location = create_and_cut(site.port, 'typed.bin', b'abcdef', 3)
    with RawClient(site.port) as client:
        client.send(request_bytes('PATCH', location, ['Upload-Offset: 3', 'Upload-Complete: ?1',
                                                      'Content-Type: text/plain'], b'def'))
        reply = client.reply('PATCH')
    assert reply.status == 415 and reply.headers['accept-patch'] == 'application/partial-upload'


def test_racing_patches_never_interleave(site):
    """One PATCH holds the upload while its body arrives; a second for the same offset
    gets 409 at once; the first then completes with its own bytes only."""
    data = os.urandom(400_000)
    location = create_and_cut(site.port, 'race.bin', data, 100_000)
    upload_id = location.rsplit('/', 1)[1]
    partial = site.uploads / (PREFIX + upload_id)
    rest = data[100_000:]
    with RawClient(site.port) as first:
        first.send(request_bytes('PATCH', location, [
            PATCH_TYPE, 'Upload-Offset: 100000', 'Upload-Complete: ?1',
            f'Content-Length: {len(rest)}'], rest[:50_000]))
        # The first append holds the lock once its bytes reach the file.
        wait_until(lambda: partial.stat().st_size >= 150_000, 'the first append writing')
        other = patch(site.port, location, 100_000, os.urandom(len(rest)))
        assert other.status == 409 and other.headers['upload-offset'] == '100000'
        first.send(rest[50_000:])
        reply = first.reply('PATCH')
    assert reply.status == 201
    assert sha256_file(site.uploads / 'race.bin') == sha(data)


def test_delete_cancels(site):
    location = create_and_cut(site.port, 'gone.bin', os.urandom(50_000), 20_000)
    with RawClient(site.port) as client:
        client.send(request_bytes('DELETE', location, ['Connection: close']))
        assert client.reply('DELETE').status == 204
    assert head(site.port, location).status == 404
    assert not [name for name in os.listdir(site.uploads) if name.startswith(PREFIX)]
    assert patch(site.port, location, 20_000, b'x' * 30_000).status == 404


@pytest.mark.parametrize('end', ['rest sent', 'client gone'])
def test_delete_during_a_patch_leaves_nothing_whatever_the_patch_does_after(site, end):
    """A PATCH held mid-body; a DELETE on another connection is answered 204, and
    then already nothing of the upload is in the folder; the PATCH's end (the
    rest of its body, or its client leaving) brings nothing back."""
    data = os.urandom(60_000)
    location = create_and_cut(site.port, 'held.bin', data, 10_000)
    partial = site.uploads / (PREFIX + location.rsplit('/', 1)[1])
    with RawClient(site.port) as held:
        held.send(request_bytes('PATCH', location, [
            PATCH_TYPE, 'Upload-Offset: 10000', 'Upload-Complete: ?1',
            f'Content-Length: {len(data) - 10_000}'], data[10_000:30_000]))
        wait_until(lambda: partial.stat().st_size >= 30_000, 'the PATCH writing')
        with RawClient(site.port) as client:
            client.send(request_bytes('DELETE', location, ['Connection: close']))
            assert client.reply('DELETE').status == 204
        assert [name for name in os.listdir(site.uploads) if name.startswith(PREFIX)] == []
        if end == 'rest sent':
            held.send(data[30_000:])
            assert held.reply('PATCH').status == 404
        else:
            held.shut_write()
            while held.sock.recv(65536):      # to the server's close (the socket's timeout)
                pass
    assert os.listdir(site.uploads) == []         # no file took the name either
    assert head(site.port, location).status == 404


def test_an_expired_upload_is_gone(tmp_path):
    site = Site(tmp_path, partial_expiry=60)
    try:
        location = create_and_cut(site.port, 'old.bin', os.urandom(5_000), 1_000)
        meta = site.uploads / (PREFIX + location.rsplit('/', 1)[1] + '.meta')
        state = json.loads(meta.read_bytes())
        state['created'] -= 61                  # made 61 s ago: past --partial-expiry
        meta.write_text(json.dumps(state))
        assert head(site.port, location).status == 404
        assert patch(site.port, location, 1_000, b'x' * 4_000).status == 404
        # The next creation sweeps it away, files and all.
        create_and_cut(site.port, 'new.bin', b'fresh', 2)
        assert not meta.exists()
    finally:
        site.loop.stop(0.5)


def test_the_token_rule(tmp_path):
    """Writes (creation, PATCH, DELETE) need the token; HEAD does not (the ID is the key,
    and it says only an offset)."""
    site = Site(tmp_path, token='s3cret')
    auth = 'Authorization: Bearer s3cret'
    try:
        with RawClient(site.port) as client:
            client.send(creation('t.bin', 0, complete=False))
            assert client.reply('PUT').status == 401
        with RawClient(site.port) as client:
            client.send(creation('t.bin', 0, auth, complete=False))
            location = client.reply('PUT').headers['location']
        assert patch(site.port, location, 0, b'abc').status == 401
        assert head(site.port, location).status == 204
        with RawClient(site.port) as client:
            client.send(request_bytes('DELETE', location, ['Connection: close']))
            assert client.reply('DELETE').status == 401
        assert patch(site.port, location, 0, b'abc', fields=[auth]).status == 201
    finally:
        site.loop.stop(0.5)


def test_parts_count_against_max_upload(tmp_path):
    root = tmp_path / 'root'
    root.mkdir()
    records = FramingLog()
    app = App(str(root), str(tmp_path / 'up'), max_upload=10_000, records=records)
    loop = EventLoop('127.0.0.1', 0, HTTPServer(app, access_log=False, records=records),
                     threads=2)
    loop.start()
    try:
        port = loop.address[1]
        # Upload-Complete: ?0, and no Upload-Length: no length declared.
        location = create_and_cut(port, 'small.bin', b'x' * 10_000, 6_000, complete=False)
        reply = patch(port, location, 6_000, b'y' * 5_000)     # 11,000 in all: over
        assert reply.status == 413 and 'max-size=10000' in reply.headers['upload-limit']
        with RawClient(port) as client:       # refused on its head: announced too large
            client.send(creation('large.bin', 10_001))
            reply = client.reply('PUT')
        assert reply.status == 413 and 'max-size=10000' in reply.headers['upload-limit']
    finally:
        loop.stop(0.5)


# -- the interim response ---------------------------------------------------------------

def test_104_and_the_final_response_as_h11_reads_them(site):
    data = os.urandom(20_000)
    with RawClient(site.port) as client:
        client.send(creation('oracle.bin', len(data), 'Expect: 100-continue'))
        fields = read_104(client)
        assert fields['upload-draft-interop-version'] == '9'
        assert fields['location'].startswith('/_uploads/')
        assert re.fullmatch(r'max-size=\d+, max-age=\d+', fields['upload-limit'])
        client.send(data)
        reply = client.reply('PUT')
    assert reply.informational == [100]        # after the 104: the body was asked for
    assert reply.status == 201 and json.loads(reply.body)['sha256'] == sha(data)


def test_version_6_is_served_with_expires(site):
    with RawClient(site.port) as client:
        client.send(creation('apple.bin', 3, version='Upload-Draft-Interop-Version: 6'))
        fields = read_104(client)
        client.send(b'abc')
        assert client.reply('PUT').status == 201
    assert re.fullmatch(r'max-size=\d+, expires=\d+', fields['upload-limit'])


def test_no_104_without_a_version_served_and_never_to_http_1_0(site):
    for head_bytes, name in ((creation('plain.bin', 3, version=None), 'plain.bin'),
                             (creation('five.bin', 3, version='Upload-Draft-Interop-Version: 5'),
                              'five.bin'),
                             (creation('old.bin', 3, http='HTTP/1.0'), 'old.bin')):
        with RawClient(site.port) as client:
            client.send(head_bytes + b'abc')
            reply = client.reply('PUT')
        assert reply.status == 201 and reply.informational == []
        assert b' 104 ' not in reply.raw
        assert (site.uploads / name).read_bytes() == b'abc'


def test_an_http_1_0_creation_cut_leaves_no_upload_behind(site):
    """No 104 goes to HTTP/1.0, so such a client never learns an upload's URL: its
    complete creation is a plain PUT, and cut, it leaves nothing (no partial holding
    its bytes for --partial-expiry, one of MAX_PARTIALS)."""
    with RawClient(site.port) as client:
        client.send(creation('old.bin', 100_000, http='HTTP/1.0'), b'x' * 30_000)
        client.shut_write()
        assert client.sock.recv(1) == b''            # closed unanswered: the client left
    # The server let go of the cut body: no temporary file, no upload kept.
    wait_until(lambda: not [p for p in site.uploads.iterdir() if p.name.startswith('.')],
               'nothing hidden left in the uploads folder')
    assert not (site.uploads / 'old.bin').exists()


def test_the_record_keeps_the_104(site):
    data = b'z' * 1000
    with RawClient(site.port) as client:
        client.send(creation('rec.bin', len(data)) + data)
        assert client.reply('PUT').status == 201
    wait_until(lambda: any(public(r)['interim'] for r in site.records.kept()), 'a record')
    record = next(public(r) for r in site.records.kept() if public(r)['interim'])
    (interim,) = record['interim']
    assert interim['status'] == 104
    fields = dict(interim['fields'])
    assert fields['Location'] == '*'             # the ID is a key: records are public
    assert fields['Upload-Draft-Interop-Version'] == '9'
    assert 'interim 104 (Location, Upload-Draft-Interop-Version, Upload-Limit)' in record['words']


# -- processes: a restart, --trace, curl, --workers --------------------------------------

def start(tmp_path, *options):
    (tmp_path / 'root').mkdir(exist_ok=True)
    server = MinihttpProcess(serve_args(str(tmp_path / 'root'), str(tmp_path / 'uploads'),
                                        *options))
    try:
        server.wait_listening(HTTP_LISTENING)
    except BaseException:
        server.stop()
        raise
    return server


def test_a_restart_loses_nothing_acknowledged(tmp_path):
    data = os.urandom(3_000_000)
    server = start(tmp_path, '--trace')
    try:
        location = create_and_cut(server.port, 'restart.bin', data, 1_234_567)
        server.wait_for_line(r'trace .*interim 104 \(Location, Upload-Draft-Interop-Version, '
                             r'Upload-Limit\); no response; client left')
    finally:
        server.stop()
    again = start(tmp_path)
    try:
        assert offset_of(again.port, location) == 1_234_567
        reply = patch(again.port, location, 1_234_567, data[1_234_567:])
        assert reply.status == 201
    finally:
        again.stop()
    assert sha256_file(tmp_path / 'uploads' / 'restart.bin') == sha(data)


def test_curl_creates_and_patches(tmp_path):
    data = os.urandom(700_000)
    source = tmp_path / 'source.bin'
    source.write_bytes(data)
    server = start(tmp_path)
    try:
        url = f'http://127.0.0.1:{server.port}'
        done = curl('-v', '-T', source, '-H', 'Upload-Complete: ?1', '-H', INTEROP,
                    f'{url}/uploads/by-curl.bin')
        assert done.returncode == 0, done.stderr
        assert b'< HTTP/1.1 104 Upload Resumption Supported' in done.stderr
        assert json.loads(done.stdout)['sha256'] == sha(data)
        made = curl('-i', '-X', 'PUT', '--data-binary', '', '-H', 'Upload-Complete: ?0',
                    '-H', INTEROP, f'{url}/uploads/patched.bin')
        location = re.search(rb'(?im)^location: (\S+)', made.stdout)[1].decode()
        (tmp_path / 'first').write_bytes(data[:300_000])
        (tmp_path / 'rest').write_bytes(data[300_000:])
        first = curl('-X', 'PATCH', '--data-binary', f'@{tmp_path / "first"}', '-H', PATCH_TYPE,
                     '-H', 'Upload-Offset: 0', '-H', 'Upload-Complete: ?0', f'{url}{location}')
        assert first.returncode == 0, first.stderr
        offset = curl('-I', f'{url}{location}')
        assert re.search(rb'(?im)^upload-offset: 300000\r$', offset.stdout), offset.stdout
        rest = curl('-X', 'PATCH', '--data-binary', f'@{tmp_path / "rest"}', '-H', PATCH_TYPE,
                    '-H', 'Upload-Offset: 300000', '-H', 'Upload-Complete: ?1',
                    f'{url}{location}')
        assert json.loads(rest.stdout)['sha256'] == sha(data)
    finally:
        server.stop()
    assert sha256_file(tmp_path / 'uploads' / 'patched.bin') == sha(data)


def test_two_workers_resume_each_others_uploads(tmp_path):
    """Each request on a new connection: the kernel spreads them over both workers,
    whose state is the folder alone."""
    data = os.urandom(1_000_000)
    server = start(tmp_path, '--workers', '2')
    try:
        location = create_and_cut(server.port, 'workers.bin', data, 100_000)
        offset = 100_000
        for step in range(9):
            assert offset_of(server.port, location) == offset
            end = offset + 100_000
            reply = patch(server.port, location, offset, data[offset:end], complete=end == len(data))
            assert reply.status in (201, 204), reply.body
            offset = end
    finally:
        server.stop()
    assert sha256_file(tmp_path / 'uploads' / 'workers.bin') == sha(data)


def test_a_client_cut_mid_patch_keeps_what_arrived(site):
    data = os.urandom(500_000)
    location = create_and_cut(site.port, 'twice.bin', data, 100_000)
    with RawClient(site.port) as client:
        client.send(request_bytes('PATCH', location, [
            PATCH_TYPE, 'Upload-Offset: 100000', 'Upload-Complete: ?1',
            f'Content-Length: {len(data) - 100_000}'], data[100_000:321_000]))
        client.sock.shutdown(socket.SHUT_WR)
        assert client.sock.recv(100) == b''       # nobody left to answer: closed
    wait_until(lambda: offset_of(site.port, location) == 321_000, 'the cut append kept')
    assert patch(site.port, location, 321_000, data[321_000:]).status == 201
    assert sha256_file(site.uploads / 'twice.bin') == sha(data)


# -- request.interim from either side: the loop (an inline answer) or a pool thread ------

@pytest.mark.parametrize('method', ['GET', 'POST'], ids=['in the loop', 'on a pool thread'])
def test_an_interim_response_goes_before_the_final_one(method):
    threads = set()

    def app(request):
        threads.add(threading.current_thread().name)
        request.body.read()
        sent = request.interim(103, [('Link', '</a.css>; rel=preload')])
        return Response(200, [('X-Sent', str(sent))], b'final')

    records = FramingLog()
    loop = EventLoop('127.0.0.1', 0, HTTPServer(app, access_log=False, records=records),
                     threads=2)
    loop.start()
    try:
        for version, expected in (('HTTP/1.1', [103]), ('HTTP/1.0', [])):
            with RawClient(loop.address[1]) as client:
                body = b'abc' if method == 'POST' else b''
                client.send(request_bytes(method, '/', [], body).replace(
                    b' HTTP/1.1\r\n', f' {version}\r\n'.encode(), 1))
                reply = client.reply(method)
            assert reply.informational == expected      # never to HTTP/1.0 (RFC 9110 15.2)
            assert reply.body == b'final' and reply.headers['x-sent'] == str(bool(expected))
        wait_until(lambda: len(records.kept()) == 2, 'two records')
        first = public(records.kept()[0])
        assert first['interim'] == [{'status': 103, 'fields': [['Link', '*']]}]
        assert public(records.kept()[1])['interim'] == []
        # The loop's own thread answers a GET inline; a body goes to a pool thread.
        assert all(('pool' in name) == (method == 'POST') for name in threads), threads
    finally:
        loop.stop(0.5)


def test_a_resumed_upload_into_folders_makes_them_on_completion(site):
    """A resumable upload's name may hold folders, as a PUT's may: they are made when
    it completes (UploadStore.commit), not before (a cancelled one leaves none)."""
    data = os.urandom(300_000)
    cut = 100_000
    location = create_and_cut(site.port, 'trip/day%201/photo.raw', data, cut)
    assert not (site.uploads / 'trip').exists()
    reply = patch(site.port, location, cut, data[cut:])
    assert reply.status == 201, reply.body
    assert sha256_file(site.uploads / 'trip' / 'day 1' / 'photo.raw') == sha(data)


# -- conditions and names, decided at the creation as a PUT's are ---------------------

def put(port, name, data, *fields):
    with RawClient(port) as client:
        client.send(request_bytes('PUT', f'/uploads/{name}', [*fields, 'Connection: close'],
                                  data))
        return client.reply('PUT')


def partials(site):
    return sorted(p.name for p in site.uploads.iterdir() if p.name.startswith(PREFIX))


@pytest.mark.parametrize('fields, existing', [
    (['If-None-Match: *'], 'a file'),
    (['If-Match: "not-its-etag"'], 'a file'),
    ([], 'a folder')])
def test_a_creation_is_refused_before_its_content_as_a_put_is(site, fields, existing):
    """If-None-Match: * on a name taken (412), If-Match with another ETag (412), a folder's
    name (409): answered from the head, before any 104 and any byte stored, never after
    the whole body, and never a silent replacement."""
    if existing == 'a file':
        assert put(site.port, 'taken.txt', b'theirs').status == 201
    else:
        (site.uploads / 'taken.txt').mkdir()
    with RawClient(site.port) as client:
        client.send(creation('taken.txt', 6, *fields, 'Connection: close'), b'mine!!')
        reply = client.reply('PUT')
    assert reply.status == (412 if fields else 409), reply.body
    assert reply.informational == [], reply.informational       # no 104, no 100
    assert partials(site) == []
    if existing == 'a file':
        assert (site.uploads / 'taken.txt').read_bytes() == b'theirs'


def test_if_none_match_star_holds_until_a_later_patch_completes(site):
    """The creation's If-None-Match: * is kept with the upload: a file that took the
    name meanwhile is not replaced by the PATCH that completes it (412, which says
    why).  The 412 ends the upload (Upload-Complete: ?1, the draft's answer about the
    whole representation, which resending would not change): its bytes are gone at
    once, not left on the disk until --partial-expiry."""
    data = os.urandom(200_000)
    with RawClient(site.port) as client:
        client.send(creation('mine.bin', len(data), 'If-None-Match: *'))
        location = read_104(client)['location']
        client.send(data[:50_000])
    wait_until(lambda: offset_of(site.port, location) == 50_000, 'offset held')
    assert put(site.port, 'mine.bin', b'theirs').status == 201
    reply = patch(site.port, location, 50_000, data[50_000:])
    assert reply.status == 412, reply.body
    assert b'exists (If-None-Match: *)' in reply.body
    assert reply.headers['upload-complete'] == '?1'
    assert (site.uploads / 'mine.bin').read_bytes() == b'theirs'
    assert head(site.port, location).status == 404
    assert partials(site) == []


def test_if_match_holds_until_a_later_patch_completes(site):
    """If-Match: the ETag the client read; a PUT that replaced the file meanwhile makes
    the completion a 412 carrying the new ETag (a lost update prevented)."""
    first = put(site.port, 'doc.txt', b'version 1')
    etag = first.headers['etag']
    data = os.urandom(100_000)
    with RawClient(site.port) as client:
        client.send(creation('doc.txt', len(data), f'If-Match: {etag}'))
        location = read_104(client)['location']
        client.send(data[:10_000])
    wait_until(lambda: offset_of(site.port, location) == 10_000, 'offset held')
    second = put(site.port, 'doc.txt', b'version 2 by another')
    reply = patch(site.port, location, 10_000, data[10_000:])
    assert reply.status == 412, reply.body
    assert reply.headers['etag'] == second.headers['etag']
    assert reply.headers['upload-complete'] == '?1'
    assert (site.uploads / 'doc.txt').read_bytes() == b'version 2 by another'
    assert partials(site) == []


def test_a_kept_condition_that_holds_completes(site):
    """The same conditions, holding, let the upload take its name (and If-Match keeps
    to the ETag of the file as it was when the upload was created)."""
    etag = put(site.port, 'doc.txt', b'version 1').headers['etag']
    data = os.urandom(100_000)
    for name, field in (('doc.txt', f'If-Match: {etag}'), ('new.txt', 'If-None-Match: *')):
        with RawClient(site.port) as client:
            client.send(creation(name, len(data), field))
            location = read_104(client)['location']
            client.send(data[:30_000])
        wait_until(lambda: offset_of(site.port, location) == 30_000, 'offset held')
        reply = patch(site.port, location, 30_000, data[30_000:])
        assert reply.status in (200, 201), reply.body
        assert sha256_file(site.uploads / name) == sha(data)


def test_a_conditional_field_too_long_to_keep_is_400(site):
    with RawClient(site.port) as client:
        client.send(creation('x.bin', 3, 'If-None-Match: "' + 'a' * 300 + '"',
                             'Connection: close'), b'abc')
        reply = client.reply('PUT')
    assert reply.status == 400 and b'if-none-match is 302 characters' in reply.body, reply.body
    assert partials(site) == []


# -- integrity digests (RFC 9530; the draft's "Integrity Digests") -------------------------

def sf_digest(data, algorithm='sha-256'):
    """A digest field's value for ``data``."""
    make = {'sha-256': hashlib.sha256, 'sha-512': hashlib.sha512}[algorithm]
    return f'{algorithm}=:{base64.b64encode(make(data).digest()).decode()}:'


def framed(data, field, where):
    """(head fields, body) sending ``data`` with ``field`` (name: value) in the head,
    or in a chunked body's trailer section, announced by Trailer."""
    if where == 'head':
        return [field, f'Content-Length: {len(data)}'], data
    name = field.partition(':')[0]
    body = b'%x\r\n%s\r\n0\r\n%s\r\n\r\n' % (len(data), data, field.encode())
    return [f'Trailer: {name}', 'Transfer-Encoding: chunked'], body


def create(port, name, data, fields=(), complete=False, body=None):
    """A creation sending ``data`` (or the ``body`` given, framed by ``fields``): its reply."""
    framing = [] if body is not None else [f'Content-Length: {len(data)}']
    with RawClient(port) as client:
        client.send(request_bytes('PUT', f'/uploads/{name}', [
            f'Upload-Complete: {"?1" if complete else "?0"}', INTEROP, *framing, *fields,
            'Connection: close'], data if body is None else body))
        return client.reply('PUT')


def append_part(port, location, offset, data, fields=(), complete=True, body=None):
    framing = [] if body is not None else [f'Content-Length: {len(data)}']
    with RawClient(port) as client:
        client.send(request_bytes('PATCH', location, [
            PATCH_TYPE, f'Upload-Offset: {offset}',
            f'Upload-Complete: {"?1" if complete else "?0"}', *framing, *fields,
            'Connection: close'], data if body is None else body))
        return client.reply('PATCH')


@pytest.mark.parametrize('where', ['head', 'trailer'])
def test_a_creations_content_digest_is_its_parts(site, where):
    """A creation's Content-Digest is of its content: wrong, the part is not kept (400
    naming the digest, the upload's Location and offset 0 to send it to); right, it is,
    and the answer lists it as checked."""
    data = os.urandom(300_000)
    fields, body = framed(data[:100_000], f'Content-Digest: {sf_digest(b"other")}', where)
    reply = create(site.port, 'c.bin', data[:100_000], fields, body=body)
    assert reply.status == 400, reply.body
    assert b'content-digest' in reply.body and b'does not match' in reply.body
    assert reply.body.count(b'\n') == 1
    location = reply.headers['location']
    assert reply.headers['upload-offset'] == '0'
    assert offset_of(site.port, location) == 0
    assert os.path.getsize(site.uploads / (PREFIX + location.rsplit('/', 1)[1])) == 0
    fields, body = framed(data[:100_000], f'Content-Digest: {sf_digest(data[:100_000])}',
                          where)
    reply = append_part(site.port, location, 0, data[:100_000], fields, complete=False,
                        body=body)
    assert reply.status == 204 and reply.headers['upload-offset'] == '100000', reply.body
    reply = append_part(site.port, location, 100_000, data[100_000:],
                        [f'Content-Digest: {sf_digest(data[100_000:])}'])
    assert reply.status == 201, reply.body
    assert json.loads(reply.body)['digests_checked'] == ['content-digest sha-256']
    assert sha256_file(site.uploads / 'c.bin') == sha(data)


@pytest.mark.parametrize('where', ['head', 'trailer'])
def test_a_patchs_content_digest_is_its_parts(site, where):
    """A PATCH whose Content-Digest does not match its content: 400 naming it, the part
    not appended (HEAD says the offset from before, the file was cut back), no file
    stored; sent again with the right digest, it completes the upload."""
    data = os.urandom(400_000)
    location = create_and_cut(site.port, 'p.bin', data, 150_000)
    rest = data[150_000:]
    fields, body = framed(rest, f'Content-Digest: {sf_digest(rest[::-1])}', where)
    reply = append_part(site.port, location, 150_000, rest, fields, body=body)
    assert reply.status == 400, reply.body
    assert b'content-digest' + (b' trailer' if where == 'trailer' else b'') + \
        b' sha-256 does not match' in reply.body
    assert reply.headers['upload-offset'] == '150000'
    assert offset_of(site.port, location) == 150_000
    assert os.path.getsize(site.uploads / (PREFIX + location.rsplit('/', 1)[1])) == 150_000
    assert not (site.uploads / 'p.bin').exists()
    fields, body = framed(rest, f'Content-Digest: {sf_digest(rest, "sha-512")}', where)
    reply = append_part(site.port, location, 150_000, rest, fields, body=body)
    assert reply.status == 201, reply.body
    checked = 'content-digest trailer sha-512' if where == 'trailer' else \
        'content-digest sha-512'
    assert json.loads(reply.body)['digests_checked'] == [checked]
    assert sha256_file(site.uploads / 'p.bin') == sha(data)


def test_a_part_with_a_digest_cut_midway_is_not_kept(site):
    """A part whose digest is to be checked is all or nothing: the bytes that arrived
    before the client left cannot be checked, so HEAD never counts them, and the
    file is cut back to the offset from before once the server sees the client gone."""
    data = os.urandom(200_000)
    with RawClient(site.port) as client:
        client.send(creation('cut.bin', len(data), f'Content-Digest: {sf_digest(data)}'))
        location = read_104(client)['location']
        client.send(data[:120_000])
        path = site.uploads / (PREFIX + location.rsplit('/', 1)[1])
        wait_until(lambda: os.path.getsize(path) == 120_000, 'the bytes written')
        assert offset_of(site.port, location) == 0
    wait_until(lambda: os.path.getsize(path) == 0, 'the part rolled back')
    assert offset_of(site.port, location) == 0


def test_repr_digest_of_the_creation_is_checked_on_completion(site):
    """The draft sends the whole upload's Repr-Digest with the creation: kept with the
    upload, checked when a later PATCH completes it; the answer's Repr-Digest (sha-256,
    and sha-512 when asked for) and ETag are the stored file's, as a PUT's are."""
    data = os.urandom(300_000)
    reply = create(site.port, 'r.bin', data[:100_000],
                   [f'Repr-Digest: {sf_digest(data, "sha-512")}'])
    assert reply.status == 201, reply.body
    reply = append_part(site.port, reply.headers['location'], 100_000, data[100_000:])
    assert reply.status == 201, reply.body
    assert json.loads(reply.body)['digests_checked'] == ['repr-digest sha-512']
    assert reply.headers['repr-digest'] == f'{sf_digest(data)}, {sf_digest(data, "sha-512")}'
    with RawClient(site.port) as client:
        client.send(request_bytes('HEAD', '/uploads/r.bin', ['Connection: close']))
        assert client.reply('HEAD').headers['etag'] == reply.headers['etag']


@pytest.mark.parametrize('where', ['creation', 'head', 'trailer'])
def test_a_wrong_repr_digest_ends_the_upload(site, where):
    """A Repr-Digest that does not match the whole upload: 400 naming it with
    Upload-Complete: ?1 (the draft: about the whole representation; resending cannot
    change it), no file stored, and the upload's bytes removed (HEAD: 404)."""
    data = os.urandom(300_000)
    wrong = f'Repr-Digest: {sf_digest(data[1:])}'
    reply = create(site.port, 'w.bin', data[:100_000], [wrong] if where == 'creation' else [])
    location = reply.headers['location']
    rest = data[100_000:]
    fields, body = framed(rest, wrong, where if where != 'creation' else 'head')
    if where == 'creation':
        fields, body = [f'Content-Length: {len(rest)}'], rest
    reply = append_part(site.port, location, 100_000, rest, fields, body=body)
    assert reply.status == 400, reply.body
    assert b'repr-digest' in reply.body and b'does not match the upload stored' in reply.body
    assert reply.headers['upload-complete'] == '?1'
    assert not (site.uploads / 'w.bin').exists()
    assert head(site.port, location).status == 404
    assert partials(site) == []


def test_a_right_repr_digest_on_a_one_request_creation(site):
    data = os.urandom(50_000)
    reply = create(site.port, 'one.bin', data, [f'Repr-Digest: {sf_digest(data)}',
                                                f'Content-Digest: {sf_digest(data)}'],
                   complete=True)
    assert reply.status == 201, reply.body
    assert json.loads(reply.body)['digests_checked'] == ['content-digest sha-256',
                                                          'repr-digest sha-256']
    assert reply.headers['repr-digest'] == sf_digest(data)


def test_a_malformed_repr_digest_is_refused_with_the_creation(site):
    """Kept for the end, it is checked for form at once: 400 before any byte is stored."""
    reply = create(site.port, 'm.bin', b'abc', ['Repr-Digest: sha-256=:c2hvcnQ=:'])
    assert reply.status == 400 and b'repr-digest sha-256 is not a 32-byte' in reply.body
    assert partials(site) == []
