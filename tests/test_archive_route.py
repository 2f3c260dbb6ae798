"""GET /uploads/<folder>/?archive=tar|tar.gz|zip: a folder out as one archive, through HTTP.

A `minihttp serve` process answers; the archive comes back chunked (its length
is not known until it ends), is unpacked by GNU tar and by Python's tarfile and
zipfile, and must give the folder's files, byte for byte, under one folder named
as the download, and nothing else: no symlink, nothing outside, no hidden name.
Then the head (HEAD alike), the refusals, the framing record and --trace, a file
that changes size while it is sent, a client that resets mid-archive (the
server's descriptors back at their baseline), and memory that stays flat while
a large archive goes to a reader that takes it in small pieces.
"""

import http.client
import io
import os
import shutil
import socket
import struct
import subprocess
import tarfile
import unicodedata
import zipfile
from urllib.parse import quote

import pytest

from support import (HTTP_LISTENING, WAIT, archivable, assert_back_to_baseline, baseline,
                     framing_records, peak_rss, serve_args)

pytestmark = pytest.mark.timeout(90)

NFC = unicodedata.normalize('NFC', 'résumé ünïcödé 文件')
BIG = 3 << 20                  # more than one piece (archives.PIECE) of the buffer


def build(top):
    """The folder the tests download: nested folders, an empty one, non-ASCII names, an
    executable, a file larger than a piece; and what must never be included."""
    (top / 'nested' / 'deeper' / 'deepest').mkdir(parents=True)
    (top / 'empty folder').mkdir()
    (top / 'a.txt').write_bytes(b'a\n')
    (top / f'{NFC}.txt').write_bytes('non-ASCII\n'.encode())
    (top / 'nested' / 'deeper' / 'deepest' / 'z.bin').write_bytes(os.urandom(70_000))
    (top / 'nested' / 'big.bin').write_bytes(os.urandom(BIG))
    (top / 'nested' / 'empty').write_bytes(b'')
    (top / 'tool').write_bytes(b'#!/bin/sh\n')
    os.chmod(top / 'tool', 0o755)
    outside = top.parent.parent / 'outside'
    outside.mkdir(exist_ok=True)
    (outside / 'secret').write_bytes(b'a secret outside the uploads folder')
    # Never included: symlinks (to a file outside, a file inside, a folder outside),
    # hidden names (an upload in progress is one), a FIFO.
    os.symlink(outside / 'secret', top / 'link outside')
    os.symlink('a.txt', top / 'link inside')
    os.symlink(outside, top / 'nested' / 'folder outside')
    (top / '.upload-1234-x').write_bytes(b'in progress')
    (top / '.partial-abc').write_bytes(b'in progress, resumable')
    os.mkfifo(top / 'a fifo')


@pytest.fixture
def site(minihttp, tmp_path):
    """A server whose uploads folder holds 'photos' (built) and a file of its own."""
    root, uploads = tmp_path / 'root', tmp_path / 'uploads'
    root.mkdir()
    (uploads / 'photos').mkdir(parents=True)
    build(uploads / 'photos')
    (uploads / 'top.txt').write_bytes(b'top\n')
    server = minihttp(*serve_args(root, uploads, '--trace'), listening=HTTP_LISTENING)
    server.uploads = uploads
    return server


def fetch(port, target, method='GET'):
    """(status, {lower-case name: value}, body) of one request; http.client undoes chunks."""
    connection = http.client.HTTPConnection('127.0.0.1', port, timeout=WAIT)
    try:
        connection.request(method, target)
        response = connection.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        connection.close()


def unpacked(kind, data, into):
    """Unpack with GNU tar (tar, tar.gz) or zipfile (zip); the folder it made."""
    into.mkdir()
    if kind == 'zip':
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            assert z.testzip() is None                  # every CRC-32
            z.extractall(into)
    else:
        subprocess.run(['tar', '-xzf' if kind == 'tar.gz' else '-xf', '-'], input=data,
                       cwd=into, check=True, timeout=30)
    return into


def tarfile_view(data):
    """{name: bytes, or None for a folder} as Python's tarfile reads the archive."""
    found = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            assert member.isfile() or member.isdir(), member.name
            found[member.name] = None if member.isdir() else tar.extractfile(member).read()
    return found


@pytest.mark.skipif(shutil.which('tar') is None, reason='no tar')
@pytest.mark.parametrize('kind', ['tar', 'tar.gz', 'zip'])
def test_each_kind_unpacks_to_identical_files(site, tmp_path, kind):
    status, fields, data = fetch(site.port, f'/uploads/photos/?archive={kind}')
    assert status == 200
    want = archivable(site.uploads / 'photos')
    assert 'nested/deeper/deepest/z.bin' in want and 'empty folder' in want
    assert f'{NFC}.txt' in want and 'link inside' not in want
    into = unpacked(kind, data, tmp_path / 'out')
    assert os.listdir(into) == ['photos']               # one folder, named as the download
    assert archivable(into / 'photos') == want
    if kind == 'zip':                                   # zipfile sets no modes: the field
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            assert z.getinfo('photos/tool').external_attr >> 16 & 0o111
    else:
        assert os.stat(into / 'photos' / 'tool').st_mode & 0o111
        view = tarfile_view(data)                       # and Python's tarfile agrees
        assert view.pop('photos') is None
        assert {name.removeprefix('photos/'): v for name, v in view.items()} == want
    assert b'a secret outside' not in data and b'in progress' not in data


def test_the_uploads_folder_itself_as_one_archive(site):
    status, fields, data = fetch(site.port, '/uploads/?archive=tar')
    assert status == 200
    assert 'filename="uploads.tar"' in fields['content-disposition']
    view = tarfile_view(data)
    assert view['uploads/top.txt'] == b'top\n'
    assert view['uploads/photos/nested/big.bin'] == archivable(site.uploads / 'photos')[
        'nested/big.bin']


def test_folders_made_by_put_come_back_in_the_archive(site):
    connection = http.client.HTTPConnection('127.0.0.1', site.port, timeout=WAIT)
    try:
        for name, data in (('made/by put/é.txt', b'one'), ('made/two.bin', b'two')):
            connection.request('PUT', '/uploads/' + quote(name), body=data)
            response = connection.getresponse()
            response.read()
            assert response.status == 201                # parents made by the PUT
        connection.request('PUT', '/uploads/made/empty/')
        response = connection.getresponse()
        response.read()
        assert response.status == 201
    finally:
        connection.close()
    status, _, data = fetch(site.port, '/uploads/made/?archive=tar.gz')
    assert status == 200
    assert tarfile_view(data) == {'made': None, 'made/by put': None, 'made/by put/é.txt': b'one',
                                  'made/empty': None, 'made/two.bin': b'two'}


def test_the_head_is_chunked_and_names_the_download_as_the_folder_is_named(site):
    folder = site.uploads / 'photos' / NFC
    folder.mkdir()
    (folder / 'x').write_bytes(b'x')
    # A Mac spells the name decomposed (NFD): it finds the folder stored composed.
    target = '/uploads/photos/' + quote(unicodedata.normalize('NFD', NFC)) + '/?archive=zip'
    status, fields, data = fetch(site.port, target)
    assert status == 200
    assert fields['content-type'] == 'application/zip'
    assert fields['transfer-encoding'] == 'chunked' and 'content-length' not in fields
    assert fields['cache-control'] == 'no-store'
    assert fields['x-content-type-options'] == 'nosniff'
    disposition = fields['content-disposition']
    assert disposition.startswith('attachment; filename="') and disposition.isascii()
    assert f"filename*=UTF-8''{quote(NFC)}.zip" in disposition       # RFC 6266, RFC 8187
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.read(f'{NFC}/x') == b'x'
    # HEAD: the same head, no body, and nothing left open.
    base = baseline(site)
    status, head_fields, body = fetch(site.port, target, 'HEAD')
    assert status == 200 and body == b''
    fields.pop('date'), head_fields.pop('date')
    assert head_fields == fields
    assert_back_to_baseline(site, base)


@pytest.mark.parametrize('target, status, words', [
    ('/uploads/photos/?archive=rar', 400, 'tar, tar.gz or zip'),
    ('/uploads/photos/?archive=', 400, 'tar, tar.gz or zip'),
    ('/uploads/photos/?archive=tar&archive=zip', 400, 'archive= given 2 times'),
    ('/uploads/nothing/?archive=tar', 404, 'no such folder'),
    ('/uploads/photos/a.txt/?archive=tar', 404, 'no such folder'),
    ('/uploads/photos/link%20inside/?archive=tar', 404, 'no such folder'),
    ('/uploads/photos/nested/folder%20outside/?archive=tar', 404, 'no such folder'),
    # A file's URL: never the file served as if the query were not there.
    ('/uploads/photos/a.txt?archive=zip', 400, 'is for folders, whose URL ends with "/"'),
    ('/uploads/photos/nested?archive=tar', 400, 'is for folders, whose URL ends with "/"'),
    # Names no upload can have: no folder there, as for its listing.
    ('/uploads/%2e%2e/?archive=tar', 404, 'no folder at'),
    ('/uploads/photos/%ff/?archive=tar', 404, 'no folder at'),
    ('/uploads/' + 'a/' * 33 + '?archive=tar', 404, 'no folder at'),
])
def test_refused_before_any_head(site, target, status, words):
    got, fields, body = fetch(site.port, target)
    assert got == status and words.encode() in body, body
    assert fields['content-type'].startswith('text/plain')


def test_without_archive_a_folder_is_still_its_listing(site):
    status, fields, body = fetch(site.port, '/uploads/photos/?sort=name')
    assert status == 200 and fields['content-type'].startswith('text/html')
    assert b'nested/' in body


def test_the_record_and_trace_say_chunked_of_unknown_length(site):
    status, _, data = fetch(site.port, '/uploads/photos/?archive=tar')
    assert status == 200
    record = [r for r in framing_records(site.port)
              if r['request']['target'].startswith('/uploads/photos/?archive')][-1]
    response = record['response']
    assert response['framing'] == 'chunked' and response['done']
    assert response['bytes'] == len(data) and response['chunks'] >= 2
    sizes = response['sizes']
    assert sum(sizes) == len(data) or response['chunks'] > len(sizes)
    line = site.wait_for_line(r'trace .*: .*response 200 by chunked \((\d+) chunks, (\d+) B')
    assert int(line[1]) == response['chunks'] and int(line[2]) == len(data)


# -- a client that stops, or goes; a file that changes meanwhile ------------------------

RCVBUF = 32 * 1024


def paused_client(port, target):
    """A client with a small receive buffer that has sent GET ``target`` and read its head
    and the start of its body; the server is then held back by it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)      # before connect
    sock.settimeout(WAIT)
    sock.connect(('127.0.0.1', port))
    sock.sendall(f'GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'
                 .encode())
    received = bytearray()
    while len(received) < 300_000:
        piece = sock.recv(65536)
        assert piece, bytes(received[:200])
        received += piece
    assert received.startswith(b'HTTP/1.1 200 ')
    return sock, received


def rest_of(sock, received):
    while piece := sock.recv(1 << 20):
        received += piece
    sock.close()
    return bytes(received)


def dechunked(raw):
    """(the body of a chunked response, whether its last chunk came)."""
    head, _, rest = raw.partition(b'\r\n\r\n')
    body = bytearray()
    view = memoryview(rest)
    while True:
        line_end = bytes(view[:20]).find(b'\r\n')
        if line_end < 0:
            return bytes(body), False
        size = int(bytes(view[:line_end]), 16)
        if size == 0:
            return bytes(body), bytes(view[line_end:line_end + 4]) == b'\r\n\r\n'
        start = line_end + 2
        if len(view) < start + size + 2:
            return bytes(body), False
        body += view[start:start + size]
        view = view[start + size + 2:]


def big_folder(site, size=64 << 20):
    """'changing', holding one file 'f' that no socket buffer holds, and 'g' after it."""
    folder = site.uploads / 'changing'
    folder.mkdir()
    with open(folder / 'f', 'wb') as file:
        file.truncate(size)
    (folder / 'g').write_bytes(b'after f')
    return folder


def test_a_file_that_grows_while_sent_is_archived_at_the_size_its_header_said(site):
    folder = big_folder(site)
    sock, received = paused_client(site.port, '/uploads/changing/?archive=tar')
    with open(folder / 'f', 'ab') as file:           # while the server is mid-file
        file.write(b'grown' * 1000)
    body, whole = dechunked(rest_of(sock, received))
    assert whole
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:   # well-formed, every entry there
        assert tar.getmember('changing/f').size == 64 << 20
        assert tar.extractfile('changing/g').read() == b'after f'


@pytest.mark.parametrize('kind', ['tar', 'zip'])
def test_a_file_that_shrinks_while_sent_cuts_the_response(site, kind):
    """Its header promised bytes the file no longer has: the response is cut before its
    last chunk, so that no client takes a padded or short archive for a whole one."""
    folder = big_folder(site)
    sock, received = paused_client(site.port, f'/uploads/changing/?archive={kind}')
    os.truncate(folder / 'f', 1000)
    body, whole = dechunked(rest_of(sock, received))
    assert not whole and b'after f' not in body
    line = site.wait_for_line(r'trace .*response 200 by chunked.*')
    # zip reads each byte (its CRC); tar sends a large file with sendfile (a FileRegion)
    assert 'cut' in line[0], line[0]
    assert ('shrank while it was read' if kind == 'zip' else 'file ended after') in line[0]


@pytest.mark.parametrize('kind', ['tar', 'tar.gz', 'zip'])
def test_a_reset_mid_archive_leaves_descriptors_and_threads_at_baseline(site, kind):
    base = baseline(site)
    big_folder(site, 32 << 20)
    sock, _ = paused_client(site.port, f'/uploads/changing/?archive={kind}'
                            if kind != 'tar.gz' else '/uploads/photos/?archive=tar.gz')
    # The archive is under way on a pool thread: its folder and a file are open.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    sock.close()
    assert_back_to_baseline(site, base)
    status, _, _ = fetch(site.port, '/uploads/photos/?archive=zip')     # and it still serves
    assert status == 200


def test_memory_stays_flat_while_a_large_archive_goes_to_a_slow_reader(site):
    folder = site.uploads / 'large'
    folder.mkdir()
    block = os.urandom(8 << 20)
    for n in range(24):                                  # 192 MiB
        (folder / f'part {n:02}').write_bytes(block)
    fetch(site.port, '/uploads/photos/?archive=zip')     # the pool's threads started
    before = peak_rss(site.pid)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.settimeout(WAIT)
    sock.connect(('127.0.0.1', site.port))
    sock.sendall(b'GET /uploads/large/?archive=tar HTTP/1.1\r\nHost: localhost\r\n'
                 b'Connection: close\r\n\r\n')
    received, samples, highest = 0, 0, 0
    while piece := sock.recv(16 * 1024):                  # a little at a time
        received += len(piece)
        if received >> 23 > samples:                     # every 8 MiB, the server's RSS
            samples += 1
            highest = max(highest, peak_rss(site.pid))
    sock.close()
    assert received > 24 * (8 << 20) and samples >= 20
    # The archive is 192 MiB; the server holds one piece of it at a time.
    assert highest - before < 16 << 20, (before, highest)


def test_a_client_that_stops_reading_is_cut_by_the_send_deadline(minihttp, tmp_path):
    root, uploads = tmp_path / 'root', tmp_path / 'uploads'
    root.mkdir()
    (uploads / 'f').mkdir(parents=True)
    with open(uploads / 'f' / 'zeros', 'wb') as file:
        file.truncate(64 << 20)
    server = minihttp(*serve_args(root, uploads, '--body-timeout', '1', '--trace'),
                      listening=HTTP_LISTENING)
    base = baseline(server)
    sock, _ = paused_client(server.port, '/uploads/f/?archive=tar')
    try:
        line = server.wait_for_line(r'trace .*stalled: nothing read by the peer', WAIT)
        assert 'response 200 by chunked' in line[0]
        assert_back_to_baseline(server, base)
    finally:
        sock.close()
