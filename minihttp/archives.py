"""Folders as one archive (tar, tar.gz, zip), made while it is sent: a response of unknown length.

``archive_pieces(root, folder, kind)`` opens the folder at once (404 before any
head when it is not there) and returns an ``Archive``: an iterable of bytes-like
pieces for a Response body, sent chunked, everything in it under one folder
named as the download.  Nothing is built ahead: the folder is
walked lazily, each file read as its turn comes, and the headers are written
here from the specs (POSIX.1-2001 ustar and pax, PKWARE's APPNOTE 6.3 for zip),
not by tarfile or zipfile, which want a file object and keep what they write.

Memory is one buffer of PIECE bytes, the names of the directories open on the
way down (bounded by SORT_BUDGET, and their depth by MAX_DEPTH), and for zip
the central directory, which the format puts at the end (ZIP_DIRECTORY_BUDGET).

What goes in: regular files and directories under the folder, opened one
component at a time with openat and O_NOFOLLOW, so that no symlink is ever
followed, even one swapped in for a directory while the walk is under way.
Symlinks, devices, FIFOs and sockets are left out, and so are names starting
with a dot (never served, as minihttp.files says; uploads in progress are dot
files) and names that are not UTF-8 (no URL reaches them either).
"""

import errno
import os
import stat
import struct
import time
import zlib
from contextlib import closing
from urllib.parse import quote

from .errors import HTTPError, ResponseError
from .files import FolderBody
from .responses import FileRegion

# The reused buffer the archive is gathered in: headers, file contents read straight
# into it, padding.  Each piece sent is this large (but the last), one read and one
# send per PIECE of a large file, one for many small files together.
PIECE = 256 * 1024
# Directories below the folder, at most; each open one holds a descriptor.
MAX_DEPTH = 32
# The longest path inside an archive, in bytes of UTF-8 (Linux's PATH_MAX).
MAX_PATH = 4096
# Bytes of names held for sorting, across every directory open on the way down
# (a name costs its length and NAME_COST).  A directory whose names do not fit
# in what is left is archived in the order the file system lists it instead.
SORT_BUDGET = 8 * 1024 * 1024
NAME_COST = 64
# A zip's central directory lists every entry at the end, so it is kept until
# then (about 60 bytes and the name, per entry): beyond this the zip is cut.
# tar has no such limit.
ZIP_DIRECTORY_BUDGET = 16 * 1024 * 1024
# A file of at least this many bytes goes into a tar as a FileRegion (when asked:
# ``regions``), sent with sendfile from the page cache, not read into the buffer;
# smaller ones are gathered, many to a piece, one send for them all.
REGION_MIN = 64 * 1024
# gzip level of tar.gz: 1 costs a third of the CPU of the default 6 for
# archives only a little larger; one download holds one pool thread busy.
GZIP_LEVEL = 1

KINDS = {
    'tar': ('application/x-tar', '.tar'),
    'tar.gz': ('application/gzip', '.tar.gz'),
    'zip': ('application/zip', '.zip'),
}

FILE_MODE = 0o644
EXEC_MODE = 0o755
DIR_MODE = 0o755


class ArchiveError(ResponseError):
    """An archive that cannot be completed as begun (a file shrank while it was read, a
    tree too deep, a zip's directory too large): the response is cut, never padded."""


# -- the walk ---------------------------------------------------------------------------

DIRECTORY, FILE = 'd', 'f'

OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
# O_NONBLOCK: a FIFO put there in a race cannot stall the open (fstat then says what
# it is); O_NOCTTY: a terminal cannot become ours.
FILE_FLAGS = OPEN_FLAGS | os.O_NONBLOCK | os.O_NOCTTY
DIR_FLAGS = OPEN_FLAGS | os.O_DIRECTORY
# The entry went away, or is no longer what it was listed as (a symlink now: ELOOP;
# not a directory: ENOTDIR): left out, as if the walk had come a moment later.
GONE = (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO)


def open_folder(root, folder):
    """The descriptor of ``root/folder...``: the root followed as given (a symlink
    re-pointed to a new release is followed, as minihttp.files does), each segment
    below it opened with O_NOFOLLOW.  404 when it is not a directory there."""
    for segment in folder:
        if segment in ('', '.', '..') or '/' in segment or '\0' in segment or not utf8(segment):
            raise HTTPError(404, 'no such folder')
    try:
        fd = os.open(root, DIR_FLAGS & ~os.O_NOFOLLOW)
    except OSError:
        raise HTTPError(404, 'no such folder') from None
    try:
        for segment in folder:
            parent, fd = fd, -1
            try:
                fd = os.open(segment, DIR_FLAGS, dir_fd=parent)
            finally:
                os.close(parent)
    except OSError as exc:
        if fd >= 0:
            os.close(fd)
        if exc.errno in GONE or exc.errno == errno.ENAMETOOLONG:
            raise HTTPError(404, 'no such folder') from None
        raise HTTPError(403, 'folder not readable') from None
    return fd


def listed(fd, budget):
    """The names of the directory ``fd`` worth archiving, sorted by code point (which is
    UTF-8's byte order), with their type as listed (DIRECTORY or FILE); and what
    they cost of ``budget``, a one-item list of the bytes left.  A directory whose
    names do not fit is listed lazily instead, in the file system's order."""
    names, cost = [], 0
    with os.scandir(fd) as found:
        for entry in found:
            kind = entry_kind(entry)
            if kind is None:
                continue
            cost += len(entry.name) + NAME_COST
            if cost > budget[0]:
                break
            names.append((entry.name, kind))
        else:
            names.sort()
            budget[0] -= cost
            return iter(names), cost
    # scandir of a descriptor rewinds it when closed: a new one starts at the top.
    return unsorted(fd), 0


def unsorted(fd):
    with os.scandir(fd) as found:
        for entry in found:
            kind = entry_kind(entry)
            if kind is not None:
                yield entry.name, kind


def entry_kind(entry):
    """DIRECTORY, FILE, or None for what is never archived: hidden or non-UTF-8 names,
    symlinks, anything else that is not a regular file or a directory.  The type
    is the directory's word for it (d_type; lstat when it has none)."""
    name = entry.name
    if name.startswith('.') or not utf8(name):
        return None
    try:
        if entry.is_dir(follow_symlinks=False):
            return DIRECTORY
        if entry.is_file(follow_symlinks=False):
            return FILE
    except OSError:
        pass
    return None


def utf8(name):
    try:
        name.encode('utf-8')
    except UnicodeEncodeError:      # an undecodable byte, kept as a lone surrogate
        return False
    return True


def walk(top, prefix):
    """(path, DIRECTORY or FILE, stat, descriptor) for ``top`` itself (a directory's
    descriptor, the caller's to close), named ``prefix`` (bytes ending in '/'), and
    every entry under it, depth first, each directory before what it holds.
    ``path`` is bytes, relative, '/'-separated, under ``prefix``, a directory's
    ending in '/'.

    A file's descriptor is open while its tuple is out, and closed when the walk is
    resumed: read it before asking for the next.  Each entry is opened relative to
    its parent's descriptor with O_NOFOLLOW and checked with fstat, so what is
    read is what was checked, and nothing outside ``top`` can be reached.
    """
    budget = [SORT_BUDGET]
    stack = []                      # [(descriptor, names left, their cost, path prefix)]
    try:
        yield prefix, DIRECTORY, os.fstat(top), -1
        names, cost = listed(top, budget)
        stack.append((-1, names, cost, prefix))
        while stack:
            parent, names, _, prefix = stack[-1]
            for name, kind in names:
                break
            else:
                close_level(*stack.pop(), budget)
                continue
            path = prefix + name.encode('utf-8')
            if len(path) >= MAX_PATH:
                raise ArchiveError(f'a path longer than {MAX_PATH} bytes: {path[:60]!r}...')
            try:
                fd = os.open(name, DIR_FLAGS if kind is DIRECTORY else FILE_FLAGS,
                             dir_fd=top if parent < 0 else parent)
            except OSError as exc:
                if exc.errno in GONE:
                    continue
                raise ArchiveError(f'{path[:200]!r} not readable: {exc.strerror}') from None
            try:
                st = os.fstat(fd)
                if kind is DIRECTORY and stat.S_ISDIR(st.st_mode):
                    if len(stack) > MAX_DEPTH:
                        raise ArchiveError(f'folders deeper than {MAX_DEPTH}: {path[:200]!r}')
                    path += b'/'
                    yield path, DIRECTORY, st, -1
                    names, cost = listed(fd, budget)
                    stack.append((fd, names, cost, path))
                    fd = -1                     # the stack's now
                elif kind is FILE and stat.S_ISREG(st.st_mode):
                    yield path, FILE, st, fd
                # else: it changed its kind since it was listed, and is left out
            finally:
                if fd >= 0:
                    os.close(fd)
    finally:
        while stack:
            close_level(*stack.pop(), budget)


def close_level(fd, names, cost, prefix, budget):
    """A directory done with (or given up): its listing, its descriptor, its names' cost."""
    budget[0] += cost
    close = getattr(names, 'close', None)
    if close is not None:
        close()                     # an unsorted listing: its scandir
    if fd >= 0:
        os.close(fd)


# -- the buffer the pieces are gathered in ---------------------------------------------

class Gather:
    """Bytes gathered in one reused buffer and yielded as a memoryview of it when full.

    The contract of every piece yielded: it is valid until the generator is
    resumed, when the buffer is written again.  ResponseWriter.write (on a pool
    thread) sends each piece whole before it asks for the next, as it must.
    ``written`` counts every byte put, for zip's offsets.
    """

    def __init__(self, size=PIECE):
        self.buffer = bytearray(size)
        self.view = memoryview(self.buffer)
        self.fill = 0
        self.written = 0

    def put(self, data):
        """Add ``data`` (at most the buffer's size); yields the buffer if it was full."""
        if self.fill + len(data) > len(self.buffer):
            yield self.view[:self.fill]
            self.fill = 0
        end = self.fill + len(data)
        self.view[self.fill:end] = data
        self.fill = end
        self.written += len(data)

    def read(self, fd, size, path, crc=None):
        """Add ``size`` bytes of the file ``fd`` from its start, read straight into the
        buffer; yields it each time it is full.  Returns the CRC-32 of what was read
        when ``crc`` is given (its start value).

        A file that grew since its size was taken gives that size (the archive's
        header said it); one that shrank cannot fill its place: ArchiveError.
        """
        view, capacity = self.view, len(self.buffer)
        left = size
        while left:
            if self.fill == capacity:
                yield view
                self.fill = 0
            room = view[self.fill:self.fill + min(left, capacity - self.fill)]
            got = os.readv(fd, [room])
            if not got:
                raise ArchiveError(f'{path[:200]!r} shrank while it was read: ended after '
                                   f'{size - left} of {size} bytes')
            if crc is not None:
                crc = zlib.crc32(room[:got], crc)
            self.fill += got
            self.written += got
            left -= got
        return crc

    def region(self, fd, size):
        """``size`` bytes of the file ``fd`` from its start, as one FileRegion after what
        the buffer holds: the writer sends it with sendfile before it asks for more."""
        yield from self.flush()
        yield FileRegion(fd, 0, size)
        self.written += size

    def flush(self):
        if self.fill:
            yield self.view[:self.fill]
            self.fill = 0


# -- tar: POSIX.1-2001 ustar headers, pax extended headers where ustar cannot say it ----

BLOCK = 512
ZEROS = bytes(BLOCK * 2)          # padding, and the end of the archive (two zero blocks)
USTAR = struct.Struct('100s8s8s8s12s12s8s1s100s6s2s32s32s8s8s155s12x')
MAX_OCTAL_SIZE = 8 ** 11          # 11 octal digits: sizes and mtimes ustar can hold
PAX_NAME = b'PaxHeader'


def tar_entry(path, kind, st):
    """The header blocks of one tar entry: ustar, after a pax extended header when the
    name is not ASCII or longer than ustar's 100 bytes, or the size or mtime are
    beyond its 11 octal digits.  The prefix field is not used: pax says it all.

    Owner and group are not told (0, no names), and modes are 644, 755 for a file
    with any execute bit and for directories: a download says nothing of the server's
    accounts, and unpacks the same for everyone.
    """
    size = st.st_size if kind is FILE else 0
    mtime = int(st.st_mtime)
    records = []
    name = path
    if not path.isascii() or len(path) > 100:
        records.append(pax_record(b'path', path))
        name = path[:99].decode('ascii', 'replace').encode('ascii', 'replace')
        if kind is DIRECTORY:
            name = name[:98] + b'/'
    if size >= MAX_OCTAL_SIZE:
        records.append(pax_record(b'size', b'%d' % size))
    if not 0 <= mtime < MAX_OCTAL_SIZE:
        records.append(pax_record(b'mtime', b'%d' % mtime))
        mtime = 0 if mtime < 0 else MAX_OCTAL_SIZE - 1
    if kind is DIRECTORY:
        mode, flag = DIR_MODE, b'5'
    else:
        mode, flag = EXEC_MODE if st.st_mode & 0o111 else FILE_MODE, b'0'
    head = ustar(name, mode, min(size, MAX_OCTAL_SIZE - 1), mtime, flag)
    if not records:
        return head
    extended = b''.join(records)
    return (ustar(PAX_NAME + b'/' + name[:80].rstrip(b'/'), FILE_MODE, len(extended), mtime,
                  b'x')
            + extended + padding(len(extended)) + head)


def pax_record(key, value):
    """'%d %s=%s\\n', whose length counts its own digits (POSIX pax, 'extended header')."""
    body = b' ' + key + b'=' + value + b'\n'
    length = len(body) + 1
    while len(b'%d' % length) + len(body) != length:
        length += 1
    return b'%d' % length + body


def ustar(name, mode, size, mtime, flag):
    header = bytearray(USTAR.pack(
        name, b'%07o' % mode, b'%07o' % 0, b'%07o' % 0, b'%011o' % size, b'%011o' % mtime,
        b' ' * 8, flag, b'', b'ustar\0', b'00', b'', b'', b'', b'', b''))
    # The checksum: the sum of the header's bytes, its own field counted as spaces.
    header[148:156] = b'%06o\0 ' % sum(header)
    return bytes(header)


def padding(size):
    return ZEROS[:-size % BLOCK]


def tar_pieces(top, prefix, regions=False):
    gather = Gather()
    with closing(walk(top, prefix)) as entries:
        yield from tar_body(gather, entries, regions)
    yield from gather.put(ZEROS)
    yield from gather.flush()


def tar_body(gather, entries, regions):
    """Each entry's header, then its bytes: a FileRegion for a large file when
    ``regions`` (a tar stores files as they are), else read into the buffer."""
    for path, kind, st, fd in entries:
        yield from gather.put(tar_entry(path, kind, st))
        if kind is FILE and st.st_size:
            if regions and st.st_size >= REGION_MIN:
                yield from gather.region(fd, st.st_size)
            else:
                yield from gather.read(fd, st.st_size, path)
            yield from gather.put(padding(st.st_size))


def tar_gz_pieces(top, prefix, regions=False):
    """tar, gzip-compressed as it goes (zlib's gzip framing: wbits 16 + 15): every byte
    read, to be compressed, whatever ``regions`` says."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    with closing(tar_pieces(top, prefix)) as pieces:
        for piece in pieces:
            out = compressor.compress(piece)
            if out:
                yield out
    yield compressor.flush()


# -- zip: stored entries, CRC-32 taken on the way, a data descriptor after each --------

LOCAL = struct.Struct('<IHHHHHIIIHH')
CENTRAL = struct.Struct('<IHHHHHHIIIHHHHHII')
DESCRIPTOR = struct.Struct('<IIII')
DESCRIPTOR64 = struct.Struct('<IIQQ')
END = struct.Struct('<IHHHHIIH')
END64 = struct.Struct('<IQHHIIQQQQ')
LOCATOR64 = struct.Struct('<IIQI')
TIMESTAMP = struct.Struct('<HHBi')     # the extended timestamp field (0x5455): mtime in UTC
ZIP64_LOCAL = struct.Struct('<HHQQ')   # zip64 extra field in a local header: both sizes 0

UTF8_FLAG = 0x800                      # general purpose bit 11: the name is UTF-8
DESCRIPTOR_FLAG = 0x08                 # bit 3: CRC and sizes follow the data
MADE_BY = (3 << 8) | 45                # Unix, APPNOTE 4.5
VERSION = 20                           # what reading a stored entry needs
VERSION64 = 45                         # ... with zip64 fields
ZIP32_LIMIT = 0xFFFFFFFF               # a size or offset at or above this needs zip64
ENTRIES_LIMIT = 0xFFFF                 # so does a count at or above this
MARK32, MARK16 = 0xFFFFFFFF, 0xFFFF    # in a field too narrow: "see the zip64 field"


def dos_time(mtime):
    """MS-DOS date and time fields, in UTC (the extended timestamp gives the exact time);
    DOS dates start in 1980 and end in 2107."""
    t = time.gmtime(min(max(mtime, 315532800), 4354819199))
    return (t.tm_hour << 11 | t.tm_min << 5 | t.tm_sec // 2,
            (t.tm_year - 1980) << 9 | t.tm_mon << 5 | t.tm_mday)


def zip_pieces(top, prefix, regions=False):
    """A zip of stored entries: every byte read, for its CRC-32, whatever ``regions``
    says."""
    gather = Gather()
    directory = bytearray()            # the central directory, written at the end
    with closing(walk(top, prefix)) as entries:
        count = yield from zip_body(gather, entries, directory)
    start = gather.written
    for at in range(0, len(directory), PIECE):
        yield from gather.put(directory[at:at + PIECE])
    yield from gather.put(zip_end(count, len(directory), start, gather.written))
    yield from gather.flush()


def zip_body(gather, entries, directory):
    """Each entry's local header, data and descriptor; its central record kept in
    ``directory``.  Returns how many there were."""
    count = 0
    for path, kind, st, fd in entries:
        size = st.st_size if kind is FILE else 0
        offset = gather.written
        mtime = max(-2 ** 31, min(int(st.st_mtime), 2 ** 31 - 1))
        when = dos_time(mtime)
        stamp = TIMESTAMP.pack(0x5455, 5, 1, mtime)
        big = size >= ZIP32_LIMIT
        flags = UTF8_FLAG | (DESCRIPTOR_FLAG if kind is FILE else 0)
        # Sizes and CRC go in the data descriptor (bit 3): 0 here, as APPNOTE 4.4.4 says.
        extra = stamp + (ZIP64_LOCAL.pack(0x0001, 16, 0, 0) if big else b'')
        yield from gather.put(LOCAL.pack(
            0x04034b50, VERSION64 if big else VERSION, flags, 0, *when, 0,
            MARK32 if big else 0, MARK32 if big else 0, len(path), len(extra))
            + path + extra)
        crc = 0
        if kind is FILE:
            if size:
                crc = yield from gather.read(fd, size, path, 0)
            if big:
                yield from gather.put(DESCRIPTOR64.pack(0x08074b50, crc, size, size))
            else:
                yield from gather.put(DESCRIPTOR.pack(0x08074b50, crc, size, size))
        # Its central directory record: zip64 fields for what does not fit in 32 bits.
        wide = []
        if big:
            wide += [size, size]
        if offset >= ZIP32_LIMIT:
            wide.append(offset)
        extra = stamp + (struct.pack(f'<HH{len(wide)}Q', 0x0001, 8 * len(wide), *wide)
                         if wide else b'')
        if kind is FILE:
            attributes = (stat.S_IFREG | (EXEC_MODE if st.st_mode & 0o111 else FILE_MODE)) << 16
        else:
            attributes = (stat.S_IFDIR | DIR_MODE) << 16 | 0x10    # 0x10: MS-DOS directory
        directory += CENTRAL.pack(
            0x02014b50, MADE_BY, VERSION64 if wide else VERSION, flags, 0, *when, crc,
            MARK32 if big else size, MARK32 if big else size, len(path), len(extra), 0, 0, 0,
            attributes, MARK32 if offset >= ZIP32_LIMIT else offset) + path + extra
        count += 1
        if len(directory) > ZIP_DIRECTORY_BUDGET:
            raise ArchiveError(f'more entries than a zip made here can list (its directory '
                               f'passed {ZIP_DIRECTORY_BUDGET} bytes): ask for tar')
    return count


def zip_end(count, size, start, end64_at):
    """The end of central directory record, after the zip64 one and its locator when the
    count, the directory's size or its offset do not fit (APPNOTE 4.3.14-16)."""
    if count < ENTRIES_LIMIT and size < ZIP32_LIMIT and start < ZIP32_LIMIT:
        return END.pack(0x06054b50, 0, 0, count, count, size, start, 0)
    return (END64.pack(0x06064b50, 44, MADE_BY, VERSION64, 0, 0, count, count, size, start)
            + LOCATOR64.pack(0x07064b50, 0, end64_at, 1)
            + END.pack(0x06054b50, 0, 0, MARK16, MARK16, MARK32, MARK32, 0))


# -- what a handler returns ------------------------------------------------------------

MAKERS = {'tar': tar_pieces, 'tar.gz': tar_gz_pieces, 'zip': zip_pieces}


class Archive(FolderBody):
    """A folder as an archive: the folder is open already; iterating makes the pieces.

    A FolderBody: it owns the folder's descriptor from the start, and ``close``
    (which Job.close calls on a response never sent, as for HEAD, and on one cut)
    closes the walk (GeneratorExit down to it, whose finally closes every
    descriptor it holds) and then the folder.
    """

    def __init__(self, fd, kind, name, regions=False):
        super().__init__(fd, self._pieces_of)
        self.kind = kind
        self.name = name
        self.regions = regions

    def _pieces_of(self, fd):
        return MAKERS[self.kind](fd, self.name.encode('utf-8') + b'/', self.regions)

    def headers(self):
        """Content-Type and Content-Disposition (RFC 6266: an ASCII filename, and the
        exact one as filename* in UTF-8, RFC 8187)."""
        content_type, suffix = KINDS[self.kind]
        filename = self.name + suffix
        plain = filename.encode('ascii', 'replace').decode().replace('"', '_').replace('\\', '_')
        return [('Content-Type', content_type),
                ('Content-Disposition',
                 f'attachment; filename="{plain}"; filename*=UTF-8\'\'{quote(filename)}')]


def archive_pieces(root, folder, kind, name=None, regions=False):
    """The folder ``root/folder...`` (``folder``: path segments, checked already as URL
    segments are) as an Archive of ``kind`` ('tar', 'tar.gz', 'zip').

    Opens the folder now, so that the handler can answer 404 or 403 before any head;
    the rest happens as the body is iterated.  Each piece is bytes-like and valid
    only until the next is asked for (Gather says why); with ``regions``, a tar's
    large files come as responses.FileRegion pieces instead, for the response
    writer's sendfile, valid as long.  ``name`` is the download's
    name without suffix (default: the folder's last segment, or 'archive'), and the
    one folder everything in the archive is under, as `tar -cf - name` makes it: an
    archive unpacked where it was saved makes that folder, never a heap of files.
    """
    if kind not in MAKERS:
        raise HTTPError(400, f'no archive kind {kind[:20]!r}: tar, tar.gz or zip')
    if name is not None and (name in ('', '.', '..') or '/' in name or '\0' in name
                             or not utf8(name)):
        raise ValueError(f'an archive is named by one path segment, not {name[:60]!r}')
    fd = open_folder(root, folder)          # which checks the segments alike
    return Archive(fd, kind, name or (folder[-1] if folder else 'archive'), regions)
