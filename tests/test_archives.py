"""Folders as archives streamed while they are made (minihttp.archives): tar, tar.gz, zip.

Every archive is unpacked by another implementation (GNU tar, tarfile,
zipfile) and must give the same files as the folder holds, less what is never
included (symlinks, hidden names, FIFOs).  Then the edges: a file that shrinks
cuts the archive, one that grows gives the size its header said, a directory
swapped for a symlink mid-walk is not followed, zip64 and pax fields, limits,
descriptors released on every path, memory and time that do not grow with the
number of files beyond the zip directory's bytes.
"""

import gc
import io
import os
import shutil
import stat
import subprocess
import tarfile
import time
import tracemalloc
import zipfile
import zlib

import h11
import pytest

from minihttp import archives
from minihttp.archives import ArchiveError, FILE, archive_pieces, pax_record, tar_entry
from minihttp.errors import HTTPError
from minihttp.responses import FileRegion, Response, ResponseWriter
from support import FakeSocket, archivable

pytestmark = pytest.mark.timeout(60)

LONG = 'n' * 150                          # a name past ustar's 100 bytes
DEEP = ['level-' + 'x' * 40] * 5          # a path past 255 bytes


def build(top):
    """The test folder, and the symlinks and oddities that must be left out."""
    os.makedirs(top / 'empty dir')
    os.makedirs(top.joinpath(*DEEP))
    (top / 'a file with spaces.txt').write_bytes(b'spaces\n')
    (top / 'résumé ünïcödé 文件.txt').write_bytes('non-ASCII\n'.encode())
    (top / LONG).write_bytes(b'long name\n')
    top.joinpath(*DEEP, 'deep ' + LONG).write_bytes(b'deep and long\n')
    (top / 'empty').write_bytes(b'')
    (top / 'exactly 512').write_bytes(bytes(range(256)) * 2)
    (top / 'five MiB').write_bytes(os.urandom(5 << 20))
    (top / 'tool').write_bytes(b'#!/bin/sh\n')
    os.chmod(top / 'tool', 0o755)
    # Never included:
    (top / '.hidden').write_bytes(b'hidden')
    (top / '.partial-upload').write_bytes(b'in progress')
    os.symlink('/etc/passwd', top / 'link outside')
    os.symlink('a file with spaces.txt', top / 'link inside')
    os.symlink(top / 'empty dir', top / 'link to a dir')
    os.mkfifo(top / 'a fifo')


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp('root')
    build(root / 'folder')
    outside = root.parent / f'{root.name}-outside'
    outside.mkdir()
    (outside / 'secret').write_bytes(b'secret')
    os.symlink(outside, root / 'folder' / 'link to outside dir')
    return root


def archive(root, kind, folder=('folder',)):
    """The whole archive, each piece copied before the next is asked for (the contract)."""
    data = bytearray()
    for piece in archive_pieces(str(root), list(folder), kind):
        data += piece
    return bytes(data)


def test_expected_tree_is_what_the_test_thinks(root):
    found = archivable(root / 'folder')
    assert 'link outside' not in found and '.hidden' not in found and 'a fifo' not in found
    assert len(found['five MiB']) == 5 << 20
    assert len(os.path.join(*DEEP, 'deep ' + LONG)) > 255


def test_tarfile_unpacks_identical_files(root, tmp_path):
    data = archive(root, 'tar')
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        for member in members:
            assert member.uid == member.gid == 0 and not member.uname
        tar.extractall(tmp_path, filter='data')
    assert archivable(tmp_path / 'folder') == archivable(root / 'folder')
    # The folder first, each directory before what it holds, names sorted: the same
    # bytes every time.
    names = [m.name for m in members]
    assert names[0] == 'folder' and all(n.startswith('folder/') for n in names[1:])
    assert names.index('folder/empty dir') < len(names) and names == sorted(names)
    assert archive(root, 'tar') == data
    modes = {m.name: m.mode for m in members}
    assert modes['folder/tool'] == 0o755 and modes['folder/empty'] == 0o644
    assert modes['folder/empty dir'] == modes['folder'] == 0o755
    mtime = int(os.stat(root / 'folder' / 'five MiB').st_mtime)
    assert {m.name: m.mtime for m in members}['folder/five MiB'] == mtime
    assert len(data) % 512 == 0 and data.endswith(bytes(1024))


@pytest.mark.parametrize('kind, flags', [('tar', '-xf'), ('tar.gz', '-xzf')])
def test_gnu_tar_unpacks_identical_files(root, tmp_path, kind, flags):
    if shutil.which('tar') is None:
        pytest.skip('no tar')
    data = archive(root, kind)
    subprocess.run(['tar', flags, '-'], input=data, cwd=tmp_path, check=True, timeout=30)
    assert os.listdir(tmp_path) == ['folder']
    assert archivable(tmp_path / 'folder') == archivable(root / 'folder')


def test_zipfile_unpacks_identical_files(root, tmp_path):
    data = archive(root, 'zip')
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.testzip() is None                  # every CRC-32 checked
        infos = z.infolist()
        z.extractall(tmp_path)
    assert archivable(tmp_path / 'folder') == archivable(root / 'folder')
    for info in infos:
        assert info.flag_bits & 0x800                # names in UTF-8
        assert info.compress_type == zipfile.ZIP_STORED
    modes = {i.filename: i.external_attr >> 16 for i in infos}
    assert modes['folder/tool'] == stat.S_IFREG | 0o755
    assert modes['folder/empty dir/'] == modes['folder/'] == stat.S_IFDIR | 0o755


def test_unzip_agrees_when_present(root, tmp_path):
    if shutil.which('unzip') is None:
        pytest.skip('no unzip')
    (tmp_path / 'a.zip').write_bytes(archive(root, 'zip'))
    out = subprocess.run(['unzip', '-t', 'a.zip'], cwd=tmp_path, capture_output=True,
                         timeout=30)
    assert out.returncode == 0, out.stdout[-500:]


@pytest.mark.parametrize('kind', ['tar', 'tar.gz', 'zip'])
def test_regions_stand_for_the_bytes_a_tar_would_hold(root, kind):
    """With ``regions``, a tar's large files are FileRegions of their open descriptor
    (for sendfile), each valid until the next piece is asked for; read there and
    then, they make the same archive.  zip and tar.gz read every byte anyway."""
    data, regions = bytearray(), 0
    for piece in archive_pieces(str(root), ['folder'], kind, regions=True):
        if isinstance(piece, FileRegion):
            regions += 1
            assert piece.length >= archives.REGION_MIN
            data += os.pread(piece.fd, piece.length, piece.offset)
        else:
            data += piece
    assert bytes(data) == archive(root, kind)
    assert regions == (1 if kind == 'tar' else 0)        # 'five MiB'


def test_tar_gz_is_one_gzip_stream_of_the_tar(root):
    assert zlib.decompress(archive(root, 'tar.gz'), 16 + zlib.MAX_WBITS) == archive(root, 'tar')


def test_nothing_outside_and_no_symlink_is_included(root):
    data = archive(root, 'tar')
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert all(m.isfile() or m.isdir() for m in tar.getmembers())
    for name in ('link outside', 'link inside', 'link to a dir', 'link to outside dir', 'a fifo',
                 '.hidden', '.partial-upload'):
        assert not any(n.split('/')[1:2] == [name] for n in names)
    assert b'secret' not in data and b'root:' not in data


def test_a_folder_that_is_a_symlink_or_not_there_is_404(root, tmp_path):
    for folder in (['folder', 'link to a dir'], ['folder', 'link to outside dir'], ['nothing'],
                   ['folder', '..', 'folder'], ['folder', 'a file with spaces.txt'],
                   ['folder', 'a/b']):
        with pytest.raises(HTTPError) as caught:
            archive_pieces(str(root), folder, 'tar')
        assert caught.value.status == 404, folder
    with pytest.raises(HTTPError) as caught:
        archive_pieces(str(root), ['folder'], 'rar')
    assert caught.value.status == 400
    # The root itself may be a symlink (a release re-pointed), followed as given.
    os.symlink(root, tmp_path / 'current')
    assert archive(tmp_path / 'current', 'tar') == archive(root, 'tar')


def test_headers_name_the_download(root):
    made = archive_pieces(str(root), ['folder'], 'zip', name='résumé "x"')
    try:
        fields = dict(made.headers())
    finally:
        made.close()
    assert fields['Content-Type'] == 'application/zip'
    assert fields['Content-Disposition'] == (
        'attachment; filename="r?sum? _x_.zip"; filename*=UTF-8\'\'r%C3%A9sum%C3%A9%20%22x%22.zip')


def test_a_directory_swapped_for_a_symlink_during_the_walk_is_not_followed(tmp_path, monkeypatch):
    top = tmp_path / 'folder'
    (top / 'd').mkdir(parents=True)
    (top / 'd' / 'inside').write_bytes(b'ok')
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'secret').write_bytes(b'secret')
    listed = archives.listed

    def listed_then_swapped(fd, budget):
        names = listed(fd, budget)
        if (top / 'd').is_dir() and not (top / 'd').is_symlink():
            shutil.rmtree(top / 'd')
            os.symlink(outside, top / 'd')     # after the listing said 'd' is a directory
        return names

    monkeypatch.setattr(archives, 'listed', listed_then_swapped)
    data = archive(tmp_path, 'tar')
    assert b'secret' not in data
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == ['folder']


def test_a_file_that_shrinks_while_read_cuts_the_archive(tmp_path):
    top = tmp_path / 'folder'
    top.mkdir()
    (top / 'a big').write_bytes(os.urandom(2 << 20))
    (top / 'b').write_bytes(b'after')
    for kind in ('tar', 'zip'):
        (top / 'a big').write_bytes(os.urandom(2 << 20))
        pieces = iter(archive_pieces(str(tmp_path), ['folder'], kind))
        next(pieces)                              # the first buffer: 'a big' is being read
        os.truncate(top / 'a big', 1000)
        with pytest.raises(ArchiveError, match='shrank while it was read'):
            for _ in pieces:
                pass


def test_a_file_that_grows_while_read_gives_the_size_its_header_said(tmp_path):
    top = tmp_path / 'folder'
    top.mkdir()
    first = os.urandom(1 << 20)
    (top / 'growing').write_bytes(first)
    data = bytearray()
    pieces = iter(archive_pieces(str(tmp_path), ['folder'], 'zip'))
    data += next(pieces)
    with open(top / 'growing', 'ab') as f:
        f.write(b'more' * 1000)
    for piece in pieces:
        data += piece
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        assert z.read('folder/growing') == first


def descriptors():
    return len(os.listdir('/proc/self/fd'))


@pytest.mark.skipif(not os.path.isdir('/proc/self/fd'), reason='no /proc')
@pytest.mark.parametrize('kind', ['tar', 'tar.gz', 'zip'])
def test_descriptors_are_released_on_every_path(root, kind):
    gc.collect()                # what earlier tests left to the collector goes first
    before = descriptors()
    archive_pieces(str(root), ['folder'], kind).close()              # HEAD: never iterated
    assert descriptors() == before
    made = archive_pieces(str(root), ['folder'], kind)               # cut after one piece
    next(iter(made))
    assert descriptors() > before
    made.close()
    assert descriptors() == before
    made = archive_pieces(str(root), ['folder'], kind)               # dropped, not closed
    next(iter(made))
    del made
    gc.collect()
    assert descriptors() == before
    archive(root, kind)                                               # whole
    assert descriptors() == before


def test_too_deep_cuts_and_releases(tmp_path, monkeypatch):
    monkeypatch.setattr(archives, 'MAX_DEPTH', 3)
    (tmp_path / 'folder' / 'a' / 'b' / 'c').mkdir(parents=True)
    archive(tmp_path, 'tar')                                          # 3 levels: fine
    (tmp_path / 'folder' / 'a' / 'b' / 'c' / 'd').mkdir()
    before = descriptors()
    with pytest.raises(ArchiveError, match='deeper than 3'):
        archive(tmp_path, 'tar')
    assert descriptors() == before


def test_a_directory_too_large_to_sort_is_archived_in_listing_order(tmp_path, monkeypatch):
    top = tmp_path / 'folder'
    (top / 'sub').mkdir(parents=True)
    for n in range(50):
        (top / 'sub' / f'{n:03}').write_bytes(b'%d' % n)
    sorted_names = tarfile.open(fileobj=io.BytesIO(archive(tmp_path, 'tar'))).getnames()
    monkeypatch.setattr(archives, 'SORT_BUDGET', 2000)   # the top level fits, 'sub' does not
    data = archive(tmp_path, 'tar')
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert sorted(names) == sorted_names               # every file, once
        assert tar.extractfile('folder/sub/007').read() == b'7'


def test_zip64_fields_are_read_back(root, tmp_path, monkeypatch):
    """With the zip64 thresholds lowered, every entry and the end go through zip64 records,
    as a 4 GiB file or the 65,535th entry would; zipfile must read the same files."""
    monkeypatch.setattr(archives, 'ZIP32_LIMIT', 1000)
    monkeypatch.setattr(archives, 'ENTRIES_LIMIT', 3)
    data = archive(root, 'zip')
    assert b'PK\x06\x06' in data[-200:] and b'PK\x06\x07' in data[-200:]
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.testzip() is None
        z.extractall(tmp_path)
    assert archivable(tmp_path / 'folder') == archivable(root / 'folder')


def test_pax_headers_for_what_ustar_cannot_hold():
    class Stat:
        st_size = 9 << 30
        st_mtime = -1.5
        st_mode = 0o100644
    header = tar_entry(('ü' + 'x' * 120).encode(), FILE, Stat)
    with tarfile.open(fileobj=io.BytesIO(header + bytes(1024)), mode='r|') as tar:
        member = tar.next()
        assert member.name == 'ü' + 'x' * 120
        assert member.size == 9 << 30 and member.mtime == -1
    # A record's length counts its own digits, across a power of ten.
    for n in range(0, 200):
        record = pax_record(b'path', b'x' * n)
        assert int(record.split(b' ')[0]) == len(record)


def many_files(tmp_path, count):
    top = tmp_path / f'folder{count}'
    for n in range(count):
        folder = top / f'd{n // 100:02}'
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f'file {n:05}').write_bytes(b'x' * (n % 700))
    return top.name


def peak(root, folder, kind):
    gc.collect()
    tracemalloc.start()
    try:
        for _ in archive_pieces(str(root), [folder], kind):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize('kind', ['tar', 'tar.gz', 'zip'])
def test_memory_does_not_grow_with_the_files(tmp_path, kind):
    small, large = many_files(tmp_path, 200), many_files(tmp_path, 2000)
    few, many = peak(tmp_path, small, kind), peak(tmp_path, large, kind)
    # tar keeps nothing per entry; zip keeps its central directory (about 80 bytes an
    # entry here, and a bytearray's growth): bounded by ZIP_DIRECTORY_BUDGET.  The
    # small folder's tar fits in one buffer, so tar.gz's compressor gives one small
    # piece for it, and up to a buffer's worth a piece for the large one.
    allowed = 64 * 1024 + {'tar': 0, 'tar.gz': archives.PIECE, 'zip': 1800 * 80 * 3}[kind]
    assert many - few < allowed, (few, many)
    assert many < archives.PIECE + (1 << 20) + (400 * 1024 if kind == 'zip' else 0)


def test_time_grows_linearly_with_the_files(tmp_path):
    small, large = many_files(tmp_path, 300), many_files(tmp_path, 3000)

    def cpu(folder):
        best = float('inf')
        for _ in range(3):
            start = time.process_time()
            for _ in archive_pieces(str(tmp_path), [folder], 'zip'):
                pass
            best = min(best, time.process_time() - start)
        return best

    few, many = cpu(small), cpu(large)
    # 10 times the files: about 10 times the time; quadratic would be 100.
    assert many < 30 * max(few, 0.002), (few, many)


@pytest.mark.parametrize('kind', ['tar', 'zip'])
def test_the_response_writer_sends_it_chunked_and_h11_reads_it_back(root, tmp_path, kind):
    """Through the one writer, as the lead wires it: chunked (unknown length), each piece
    sent whole before the next is made, also when the socket takes part of a write."""
    made = archive_pieces(str(root), ['folder'], kind)
    response = Response(200, made.headers(), made)
    sock = FakeSocket(max_send=100_000)
    writer = ResponseWriter(response, 'GET', 'HTTP/1.1', True, 0.0).write(sock)
    assert writer.chunked and writer.chunks > 1
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method='GET', target='/', headers=[('Host', 'h')]))
    client.send(h11.EndOfMessage())
    client.receive_data(bytes(sock.sent))
    body = bytearray()
    while not isinstance(event := client.next_event(), h11.EndOfMessage):
        assert event is not h11.NEED_DATA
        if isinstance(event, h11.Response):
            fields = {k.decode(): v.decode() for k, v in event.headers}
            assert fields['transfer-encoding'] == 'chunked' and 'content-length' not in fields
        elif isinstance(event, h11.Data):
            body += event.data
    assert bytes(body) == archive(root, kind)


def test_a_head_request_closes_the_archive_unread(root):
    before = descriptors()
    made = archive_pieces(str(root), ['folder'], 'zip')
    writer = ResponseWriter(Response(200, made.headers(), made), 'HEAD', 'HTTP/1.1', True, 0.0)
    writer.write(FakeSocket())
    assert descriptors() == before
