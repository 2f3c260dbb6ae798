"""Memory bounded in bytes: what a client chooses to send cannot make the server hold more.

Each test mounts one attack of issue 13 on a real server (long paths that fill
a cache, a form of many parts or of many fields, upload names longer than a
file system takes) and reads the server's own accounts in /proc: its peak
resident memory stays flat, its descriptors come back to where they were, and
the client gets a 4xx with a reason instead of a 500.
"""

import os

import pytest

from minihttp import files
from minihttp.app import App
from minihttp.request import Request
from minihttp.limits import (BODY_PIECE, MAX_FORM_FIELD, MAX_FORM_FIELDS, MAX_FORM_PARTS,
                             MAX_UPLOAD_NAME)
from minihttp.uploads import TEMP_PREFIX
from support import (HTTP_LISTENING, RawClient, exchange, peak_rss, request_bytes, serve_args,
                     snapshot, wait_until)

MiB = 1 << 20
# How much a server's peak resident memory may grow under one attack: its
# allocator's own slack, far below what the attacks made it hold before.
FLAT = 24 * MiB


@pytest.fixture
def server(minihttp, tmp_path):
    """A server of the test's own: (process, its upload directory)."""
    root, uploads = tmp_path / 'root', tmp_path / 'uploads'
    root.mkdir()
    (root / 'small.txt').write_bytes(b'small\n')
    process = minihttp(*serve_args(root, uploads), listening=HTTP_LISTENING)
    return process, uploads


def descriptors(pid):
    return len(os.listdir(f'/proc/{pid}/fd'))


def settled(process):
    """The server once it has answered a few requests: (peak memory, descriptors)."""
    for _ in range(3):
        assert exchange(process.port, 'GET', '/small.txt').status == 200
    return peak_rss(process.pid), descriptors(process.pid)


def assert_back(process, before):
    peak, fds = before
    wait_until(lambda: descriptors(process.pid) <= fds, 'descriptors back at the baseline')
    grown = peak_rss(process.pid) - peak
    assert grown < FLAT, f'peak memory grew by {grown / MiB:.0f} MiB'


# -- caches ---------------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_long_distinct_paths_leave_memory_flat(server):
    process, _ = server
    before = settled(process)
    # 8 KiB request lines of two-letter segments, each path new: remembered whole,
    # each cost about 200 KB (1,500 of them took 300 MB).
    tail = '/ab' * 2700
    with RawClient(process.port) as client:
        for n in range(1500):
            client.send(request_bytes('GET', f'/{n:05d}{tail}'))
            assert client.reply().status == 404     # longer than any path can be
    assert_back(process, before)


def test_a_cache_of_small_files_counts_their_paths_and_fields_not_only_their_bytes(tmp_path):
    cache = files.SmallFiles(budget=1 * MiB)
    empty = tmp_path / 'empty'
    empty.write_bytes(b'')
    st = os.stat(empty)
    for n in range(20_000):       # empty files: no bytes, but each entry holds a path and fields
        cache.put(f'{tmp_path}/{n:05d}-{"x" * 100}', st, b'', [('Content-Type', 'text/plain')])
    assert cache._entries.size <= 1 * MiB
    assert len(cache._entries.entries) < 1000


def test_the_path_cache_keeps_within_its_budget():
    budget = files._LOCAL_PATHS.budget
    for n in range(200):
        assert files.local_path('/root', f'/{n}' + '/ab' * 2700) is not None
        assert files.local_path('/root', f'/short/{n}') == (('short', str(n)), f'/root/short/{n}')
    assert files._LOCAL_PATHS.size <= budget


# -- multipart forms ----------------------------------------------------------------------------

BOUNDARY = 'boundsboundary'
FORM = [f'Content-Type: multipart/form-data; boundary={BOUNDARY}']


def file_part(name, content=b'x'):
    """A file part, its name in UTF-8 as browsers send it."""
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="{name}"'
            '\r\n\r\n').encode() + content + b'\r\n'


def field_part(name, value):
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"'
            '\r\n\r\n').encode() + value + b'\r\n'


CLOSE = f'--{BOUNDARY}--\r\n'.encode()


def test_a_form_holds_one_temporary_file_open_at_a_time_and_stores_all_at_the_end(server):
    process, uploads = server
    _, fds = settled(process)
    parts = b''.join(file_part(f'part-{n}.txt', b'%d' % n) for n in range(1, MAX_FORM_PARTS))
    # The body reaches the form in BODY_PIECE pieces: the parts fill whole ones.
    padding = b'0' * ((-len(parts) - len(file_part('part-0.txt', b''))) % BODY_PIECE)
    parts = file_part('part-0.txt', padding) + parts
    with RawClient(process.port) as client:
        length = f'Content-Length: {len(parts) + len(CLOSE)}'
        client.send(request_bytes('POST', '/uploads/', [*FORM, 'Connection: close', length],
                                  parts))
        # Every part has arrived, the closing boundary not yet: each part's file is
        # written and closed (one held open at most), none is visible.
        wait_until(lambda: sum(name.startswith(TEMP_PREFIX) for name in os.listdir(uploads))
                   == MAX_FORM_PARTS, 'every part received')
        assert descriptors(process.pid) <= fds + 2     # the connection, one file at most
        assert [name for name in os.listdir(uploads) if not name.startswith('.')] == []
        client.send(CLOSE)
        assert client.reply('POST').status == 200
    assert sorted(os.listdir(uploads)) == sorted(f'part-{n}.txt' for n in range(MAX_FORM_PARTS))
    last = MAX_FORM_PARTS - 1
    assert (uploads / f'part-{last}.txt').read_bytes() == b'%d' % last
    assert (uploads / 'part-0.txt').read_bytes() == padding
    wait_until(lambda: descriptors(process.pid) <= fds, 'descriptors back at the baseline')


def test_a_form_of_too_many_parts_gets_413_and_leaves_nothing(server):
    process, uploads = server
    before = settled(process)
    body = b''.join(file_part(f'p{n}') for n in range(MAX_FORM_PARTS + 1)) + CLOSE
    reply = exchange(process.port, 'POST', '/uploads/', FORM, body)
    assert reply.status == 413 and f'more than {MAX_FORM_PARTS} parts' in reply.body.decode()
    assert snapshot(uploads) == {}
    assert_back(process, before)
    body = b''.join(file_part(f'p{n}') for n in range(MAX_FORM_PARTS)) + CLOSE
    assert exchange(process.port, 'POST', '/uploads/', FORM, body).status == 200


@pytest.mark.timeout(120)
def test_fields_beyond_their_total_get_413_and_memory_stays_flat(server):
    process, uploads = server
    before = settled(process)
    value = b'v' * (MAX_FORM_FIELD - 1024)       # each field within its own limit
    count = 800                                   # 50 MB of them, all kept until the end
    with RawClient(process.port) as client:
        client.send(request_bytes('POST', '/uploads/', [
            *FORM, 'Connection: close',
            f'Content-Length: {count * len(field_part("f0000", value)) + len(CLOSE)}']))
        try:
            for n in range(count):
                client.send(field_part(f'f{n:04d}', value))
            client.send(CLOSE)
        except (BrokenPipeError, ConnectionResetError):
            pass          # refused before the end: the server closed the connection
        reply = client.reply('POST')
    assert reply.status == 413, reply.body
    assert f'form fields in all: more than {MAX_FORM_FIELDS} bytes' in reply.body.decode()
    assert snapshot(uploads) == {}
    assert_back(process, before)


# -- names longer than a file system stores -------------------------------------------------------

LONG = 'é' * 128          # 128 characters, 256 bytes of UTF-8
LONG_URL = '%C3%A9' * 128


@pytest.mark.parametrize('method', ['PUT', 'DELETE', 'POST'])
def test_a_name_longer_than_a_file_system_takes_gets_400(server, method):
    process, uploads = server
    if method == 'POST':
        reply = exchange(process.port, 'POST', '/uploads/', FORM, file_part(LONG) + CLOSE)
    else:
        reply = exchange(process.port, method, f'/uploads/{LONG_URL}',
                         body=b'data' if method == 'PUT' else b'')
    text = reply.body.decode()
    assert reply.status == 400 and 'bytes in UTF-8' in text and text.count('\n') == 1, text
    assert snapshot(uploads) == {}
    # A name of exactly the limit is stored.
    exact = '%C3%A9' * (MAX_UPLOAD_NAME // 2) + 'x' * (MAX_UPLOAD_NAME % 2)
    assert exchange(process.port, 'PUT', f'/uploads/{exact}', body=b'ok').status == 201


def test_a_form_s_file_name_is_read_as_the_utf_8_browsers_send(server):
    process, uploads = server
    name = 'é' * 100 + '.txt'       # 204 bytes of UTF-8: a name the file system takes
    reply = exchange(process.port, 'POST', '/uploads/', FORM, file_part(name) + CLOSE)
    assert reply.status == 200, reply.body
    assert os.listdir(uploads) == [name]
    reply = exchange(process.port, 'POST', '/uploads/', FORM,
                     file_part('x').replace(b'"x"', b'"\xff.txt"') + CLOSE)
    assert reply.status == 400 and b'not UTF-8' in reply.body


# -- work kept out of the event loop ----------------------------------------------------------

def test_a_listing_reads_its_directory_only_as_it_is_sent(tmp_path, monkeypatch):
    """The loop builds the answer; a pool thread sends its body: a directory of
    many entries is read and sorted there, while the loop serves everyone."""
    for n in range(3):
        (tmp_path / f'f{n}.txt').write_bytes(b'x')
    (tmp_path / 'uploads').mkdir()
    app = App(str(tmp_path), str(tmp_path / 'uploads'))
    read = []
    scandir = os.scandir
    monkeypatch.setattr(os, 'scandir', lambda path: read.append(path) or scandir(path))
    for target, accept in (('/', '*/*'), ('/uploads/', 'application/json')):
        response = app(Request('GET', target, 'HTTP/1.1', [('Host', 'h'), ('Accept', accept)]))
        assert not isinstance(response.body, bytes) and read == [], target
        assert b''.join(response.body) and len(read) == 1, target
        read.clear()
