"""Uploads that lose nothing: a body becomes a file only once it fully arrived.

Every upload streams into a temporary file in the upload directory itself
(so the final rename is atomic: same file system), is hashed on the way, and
is renamed over its name only after the body's framing said it was complete
(Content-Length bytes counted, or the last chunk read) and the data was
flushed to disk.  Any failure removes the temporary file, leaving the
directory exactly as it was, including a previous version of the same name.
"""

import errno
import fcntl
import hashlib
import json
import mmap
import os
import queue
import re
import stat
import threading
import unicodedata
from urllib.parse import quote, unquote

from .archives import DIRECTORY, FILE, listed, unsorted
from .atomic import AtomicFile
from .digests import ALGORITHMS, DEFAULT
from .errors import HTTPError, SizeLimit
from .files import (CONDITIONAL_FIELDS, LISTING_BATCH, FolderBody, etag_of, listing_pieces,
                    precondition)
from .limits import (HANDOFF_AFTER, HANDOFF_BLOCK, HANDOFF_BLOCKS, LISTING_SORT_BUDGET,
                     MAX_FOLDER_DEPTH, MAX_KEPT_CONDITION, MAX_UPLOAD_NAME, MAX_UPLOAD_PATH,
                     WRITEBACK_STEP)

TEMP_PREFIX = '.upload-'

# Each segment of a stored name is ordinary characters, not hidden, and at most
# MAX_UPLOAD_NAME bytes long in UTF-8 (the file system counts bytes).
NAME = re.compile(r'[^/\\\x00-\x1f\x7f]+')

# Characters a name may not hold although they are neither "/" nor C0 controls:
# what draws nothing or changes how the rest is drawn.  "invoice\u202efdp.exe"
# shows as "invoiceexe.pdf"; a zero-width space makes a second "report.txt".
# Cc: controls (C1 too, U+0080-U+009F); Cf: format characters (bidi embeddings,
# overrides and isolates, marks, zero-width characters, U+FEFF, soft hyphen);
# Zl, Zp: line and paragraph separators, which break a listing's lines.
INVISIBLE = {'Cc': 'a control character', 'Cf': 'an invisible format character',
             'Zl': 'a line separator', 'Zp': 'a paragraph separator'}
# Except the two joiners (Cf too): ZWNJ is part of ordinary Persian words and ZWJ
# of emoji sequences; neither reorders text, and refusing them refuses real names.
JOINERS = frozenset('\u200c\u200d')
# Characters outside those categories that draw nothing too (Unicode's default
# ignorable code points that are not Cf): the combining grapheme joiner, the Hangul
# fillers, Khmer's inherent vowels and the Mongolian variation selectors.  "\u3164"
# alone is a name listed as blank.  The other variation selectors stay (U+FE0F is
# part of emoji: "\u2764\ufe0f.txt").
BLANK = frozenset('\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u3164\uffa0')


def invisible(char):
    """Why a character may not be in a name (it draws nothing, reorders the rest, or
    is not a character for interchange at all), or None."""
    what = INVISIBLE.get(unicodedata.category(char))
    if what is not None:
        return None if char in JOINERS else what
    if char in BLANK:
        return 'a character that draws nothing'
    point = ord(char)
    if 0xFDD0 <= point <= 0xFDEF or point & 0xFFFE == 0xFFFE:     # Unicode's 66
        return 'a noncharacter'
    return None


def check_name(name, folder=False):
    """The name to store, or HTTPError 400 saying why it cannot be stored.

    A name is a file's path below the uploads folder: folders and the file,
    separated by "/" ("photos/2024/cat.jpg"), or a folder's (``folder``: its
    last segment is a folder too).  Each segment is checked as a name of its
    own (check_segment); there are at most MAX_FOLDER_DEPTH folders, and
    MAX_UPLOAD_PATH bytes of UTF-8 in all.  An empty segment (a leading,
    trailing or doubled "/") is refused: the caller strips the one "/" that
    makes a folder's URL.

    The name is stored in Unicode normalization form C (UAX #15): a Mac sends
    "résumé.txt" decomposed (NFD: "e" then U+0301), Windows and Linux composed,
    and Linux file systems compare bytes, so without this one name would be two
    files that look the same.  Every way in (PUT, DELETE, a form's parts) comes
    through here, so each finds the same file whichever form it was given.
    """
    if not name:
        raise HTTPError(400, 'upload name is empty')
    # Counted before anything else is done with it: the work below is linear in
    # the name, and the name is bounded by the request line.
    folders = name.count('/') + folder
    if folders > MAX_FOLDER_DEPTH:
        raise HTTPError(400, f'upload name is {folders} folders deep, deeper than '
                             f'{MAX_FOLDER_DEPTH}: {name[:60]!r}...')
    name = '/'.join([check_segment(segment, name) for segment in name.split('/')])
    size = len(name.encode('utf-8', 'surrogatepass'))
    if size > MAX_UPLOAD_PATH:
        raise HTTPError(400, f'upload name is {size} bytes in UTF-8, longer than '
                             f'{MAX_UPLOAD_PATH}: {name[:40]!r}...')
    return name


def check_segment(segment, name):
    """One segment of ``name``, in NFC, or HTTPError 400: not empty, not hidden (which
    also refuses "." and ".."), ordinary characters only, at most a file name long."""
    if not segment:
        raise HTTPError(400, f'upload name has an empty segment (a leading, trailing or '
                             f'doubled "/"): {name[:60]!r}')
    if segment.startswith('.'):
        raise HTTPError(400, f'upload name may not have a segment starting with a dot: '
                             f'{name[:60]!r}')
    if not NAME.fullmatch(segment):
        raise HTTPError(400, f'upload name may not hold a backslash or control '
                             f'characters: {name[:60]!r}')
    for char in segment:
        what = invisible(char)
        if what is not None:
            called = unicodedata.name(char, '')    # C0 and C1 controls have none
            raise HTTPError(400, f'upload name contains U+{ord(char):04X}'
                                 f'{f" ({called})" if called else ""}, {what}')
    segment = unicodedata.normalize('NFC', segment)
    size = len(segment.encode('utf-8', 'surrogatepass'))
    if size > MAX_UPLOAD_NAME:
        raise HTTPError(400, f'upload name has a segment of {size} bytes in UTF-8, longer '
                             f'than a file name may be ({MAX_UPLOAD_NAME}): {segment[:40]!r}...')
    return segment


def stored_spelling(url_path):
    """A URL path under /uploads/ spelled as check_name stores names (NFC), so that a
    decomposed name from a Mac finds the file its PUT stored.  Unchanged when it is
    ASCII or not UTF-8 (the file server then refuses or misses it as before)."""
    if '%' not in url_path:
        return url_path
    try:
        decoded = unquote(url_path, errors='strict')
    except UnicodeDecodeError:
        return url_path
    composed = unicodedata.normalize('NFC', decoded)
    return url_path if composed == decoded else quote(composed)


class Incoming(AtomicFile):
    """One upload in progress: a temporary file, its hashes and a byte count.

    sha-256 always; ``more`` names other algorithms (digests.ALGORITHMS) to
    compute in the same pass, for a digest the client sent to be checked.

    Every byte is hashed by the thread that receives it, in order, while it is
    still in that core's cache: handing the hashing to another thread made it
    cost more CPU than the decryption did (the 1 MiB blocks read from the other
    core's cache: 1.1-1.2 s per GiB on the handoff's thread against 0.64 for a
    sha-256 alone; a TLS chunked upload took 2.5 s of server CPU per GiB, not
    2.8).  The first HANDOFF_AFTER bytes are written by that thread too; the
    rest through a Handoff, by a thread of its own, so that the writes overlap
    receiving the next bytes.  The hashes are read (``digests``, ``summary``)
    and the file flushed (``finish``) only once every byte is written
    (``settle``).  The handoff's whole blocks go to the disk directly (O_DIRECT,
    where the file system has it), not through the page cache: the bytes before
    them, and the last part of a block, go through it.
    """

    def __init__(self, directory, limit, more=()):
        # Named for this process, so that what a killed worker leaves is known.
        super().__init__(directory, f'{TEMP_PREFIX}{os.getpid()}-')
        self.hash = hashlib.sha256()
        self.more = {name: ALGORITHMS[name]() for name in more if name != DEFAULT}
        self.size = 0           # bytes given
        self.stored = 0         # bytes hashed and written
        self.room = SizeLimit('upload', limit)
        self.writeback = Writeback(self.file, WRITEBACK_STEP)
        self.handoff = None
        self.direct = False     # the handoff's writes go past the page cache (O_DIRECT)

    def write(self, piece):
        self.size = self.room.take(len(piece))
        if self.handoff is None:
            if self.size <= HANDOFF_AFTER:
                self._store(piece)
                return
            # The bytes up to HANDOFF_AFTER here, the rest handed off: the handoff's
            # writes begin at that offset (aligned, for direct writes).
            piece = memoryview(piece).cast('B')
            here = len(piece) - (self.size - HANDOFF_AFTER)
            if here:
                self._store(piece[:here])
                piece = piece[here:]
            self._hand_off()
        self._hash(piece)
        self.handoff.put(piece)

    def _hand_off(self):
        """Start the handoff: its blocks written past the page cache when they can be."""
        try:
            self.file.flush()       # what Python buffered, before the descriptor changes
        except OSError as exc:
            raise storage_error(exc) from None
        self.direct = (self.stored % DIRECT_ALIGN == 0 and HANDOFF_BLOCK % DIRECT_ALIGN == 0
                       and set_direct(self.file.fileno(), True))
        self.handoff = Handoff(self._write, HANDOFF_BLOCK, HANDOFF_BLOCKS)

    def _store(self, piece):
        """Hash and write ``piece`` (the first HANDOFF_AFTER bytes, on the receiving thread)."""
        self._hash(piece)
        self._write(piece)

    def _hash(self, piece):
        """Every algorithm's hash over ``piece``: on the receiving thread, always."""
        self.hash.update(piece)
        for other in self.more.values():
            other.update(piece)

    def _write(self, piece):
        """Write ``piece`` (the handoff's thread writes its blocks so)."""
        try:
            if self.direct:
                self._write_direct(piece)
            else:
                self.file.write(piece)
            self.stored += len(piece)
            self.writeback.wrote(self.stored)
        except OSError as exc:
            raise storage_error(exc) from None

    def _write_direct(self, piece):
        """Write a handed-off block with O_DIRECT: from the block's memory to the disk,
        with no copy into the page cache (on this machine that copy, and the pages it
        takes, cost about as much CPU as the sha-256).  A block that is not whole (the
        last) turns it off first, as does a file system that refuses it (EINVAL at the
        first write): direct writes are whole multiples of DIRECT_ALIGN."""
        fd = self.file.fileno()
        if not len(piece) % DIRECT_ALIGN:
            try:
                written = os.write(fd, piece)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                written = 0
            if written == len(piece):
                return
            piece = piece[written:]     # (a disk almost full: the rest says why)
        self.direct = set_direct(fd, False)
        self.file.write(piece)

    def settle(self):
        """Wait until every byte given is hashed and written; raise what stopped that."""
        if self.handoff is not None:
            self.handoff.finish()

    def finish(self):
        """Flush to disk; the caller commits afterwards."""
        self.settle()
        try:
            self.writeback.wait()
            super().finish()
        except OSError as exc:
            raise storage_error(exc) from None

    def discard(self):
        if self.handoff is not None:
            self.handoff.stop()
        try:
            self.writeback.wait()
        except OSError:
            pass          # the upload is being thrown away anyway
        super().discard()

    def summary(self, name):
        self.settle()
        return {'name': name, 'bytes': self.size, 'sha256': self.hash.hexdigest()}

    def digests(self):
        """{algorithm: digest} of every hash computed (RFC 9530 names)."""
        self.settle()
        return {DEFAULT: self.hash.digest(),
                **{name: other.digest() for name, other in self.more.items()}}


class Handoff:
    """Bytes passed, in order, to one thread that consumes them: bounded, owned, ended.

    ``put`` copies a piece (a view of a reader's reused buffer, good only until
    the caller returns) into a block of ``size`` bytes; a full block goes to
    the thread, which calls ``consume`` with it and gives the block back.  At
    most ``count`` blocks are ever made: a writer ahead of the thread waits for
    one to come back, so what is held is bounded whatever the peer sends.
    A ``consume`` that raises stops the consuming (later blocks are dropped);
    its error is raised by the next ``put`` and by ``finish``.

    The one owner ends it on every path, by ``finish`` (the rest consumed, the
    error raised) or ``stop`` (the rest dropped, nothing raised); both wait for
    the thread and may be called again (``finish`` after ``stop`` raises
    HandoffStopped).  The thread is started here and ends only by them.
    """

    def __init__(self, consume, size, count):
        self.consume = consume
        self.size = size
        self.count = count
        self.full = queue.SimpleQueue()     # (block, bytes in it), in order; None: the end
        self.free = queue.SimpleQueue()     # blocks the thread is done with
        self.block = new_block(size)
        self.view = memoryview(self.block)
        self.used = 0                       # bytes in the block being filled
        self.made = 1
        self.error = None
        self.ended = False
        self.thread = threading.Thread(target=self._run, name='handoff', daemon=True)
        self.thread.start()

    def put(self, piece):
        if self.error is not None:
            raise self.error
        if self.ended:
            raise ValueError('put after the handoff ended')
        size, used, view = self.size, self.used, self.view
        given = len(piece)
        if used + given < size:             # the usual piece: into the block, no more
            view[used:used + given] = piece
            self.used = used + given
            return
        piece, at = memoryview(piece).cast('B'), 0      # slices of it copy nothing
        while at < given:
            take = min(size - used, given - at)
            view[used:used + take] = piece[at:at + take]
            used += take
            at += take
            if used == size:
                self._pass(used)
                used, view = 0, self.view
        self.used = used

    def _pass(self, used):
        """The block to the thread; then a free one: a new one while fewer than
        ``count`` were made and none came back, else the next to come back."""
        self.full.put((self.block, used))
        self.view.release()
        if self.made < self.count and self.free.empty():
            self.made += 1
            self.block = new_block(self.size)
        else:
            self.block = self.free.get()
        self.view = memoryview(self.block)
        self.used = 0

    def _run(self):
        full, free = self.full, self.free
        while True:
            item = full.get()
            if item is None:
                return
            block, used = item
            if self.error is None:
                try:
                    with memoryview(block) as view:
                        self.consume(view[:used])
                except BaseException as exc:        # the owner's to raise
                    self.error = exc
            free.put(block)

    def finish(self):
        """Consume what is left and end the thread; raise the error that stopped it."""
        if not self.ended:
            if self.used and self.error is None:
                self.full.put((self.block, self.used))
            self._end()
        if self.error is not None:
            raise self.error

    def stop(self):
        """Drop what is not consumed yet and end the thread."""
        if not self.ended:
            self.error = self.error or HandoffStopped('the upload was thrown away')
            self._end()

    def _end(self):
        self.ended = True
        self.full.put(None)
        self.thread.join()
        self.view.release()
        self.block = self.free = self.full = None


def new_block(size):
    """A Handoff's block: anonymous memory, which starts on a page (DIRECT_ALIGN), as a
    direct write's memory must; a bytearray's does not.  Private: Python's default,
    shared, would be shared memory, that a fork would share too."""
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)


# What a direct write (O_DIRECT) must be aligned to, in memory, in the file and in
# length: a device's logical block, 512 or 4096 bytes; a page is a multiple of both.
DIRECT_ALIGN = mmap.PAGESIZE


def set_direct(fd, on):
    """Turn direct writes (O_DIRECT) on or off for ``fd``; whether they are on now.
    A file system that has none (tmpfs on older kernels) refuses with EINVAL:
    off then, written through the page cache as before."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, (flags | os.O_DIRECT) if on else (flags & ~os.O_DIRECT))
    except OSError:
        if on:
            return False
        raise
    return on


class HandoffStopped(Exception):
    """What a stopped Handoff's ``finish`` says: its owner dropped the rest."""


class Writeback:
    """Flushes a growing file to disk in the background, a step behind the writer.

    Left to itself, the kernel starts writing an upload's pages out only when
    dirty pages reach a share of memory, so the final fsync would wait for
    the whole body to reach the disk after its last byte arrived.  Here an
    fdatasync runs on a thread of its own after every WRITEBACK_STEP bytes
    (it lets go of the interpreter while the disk works, and the receiving
    goes on meanwhile), so the final fsync waits for about one step's worth
    when the disk keeps up with the network.
    An error it meets is kept and raised by ``wait``: Linux reports a failed
    writeback to one fsync only, and that one may be ours in the background.
    """

    def __init__(self, file, step):
        self.file = file
        self.step = step
        self.flushed = 0      # bytes written when the last flush started
        self.thread = None
        self.error = None

    def wrote(self, size):
        """The file now holds ``size`` bytes: start a flush if a step has passed
        since the last one and it is done.  A flush that failed stops the upload."""
        if self.error is not None:
            raise self.error
        if size - self.flushed < self.step or (self.thread and self.thread.is_alive()):
            return
        self.file.flush()     # the few bytes Python still buffers
        self.flushed = size
        self.thread = threading.Thread(target=self._sync, name='writeback', daemon=True)
        self.thread.start()

    def _sync(self):
        try:
            os.fdatasync(self.file.fileno())
        except OSError as exc:
            self.error = exc

    def wait(self):
        """Wait for the flush in progress; raise the error any flush met."""
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            raise self.error


def storage_error(exc):
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return HTTPError(507, 'no space left to store the upload', close=True)
    return HTTPError(500, f'cannot store the upload: {exc.strerror}', close=True)


# Each folder below the uploads folder is opened relative to its parent, never
# through a symbolic link (O_NOFOLLOW): a link planted there, whoever planted it,
# cannot take a write, a delete or a listing outside the folder.  (O_DIRECTORY with
# O_NOFOLLOW refuses a link with ENOTDIR, whatever it points to.)
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
FOLDER_MODE = 0o755
# A commit whose folder a DELETE removed between its opening and the rename makes
# the folder again, this many times at most (a client deleting as fast as another
# uploads gets 409 rather than a loop).
COMMIT_TRIES = 3


def split(name):
    """A checked name's folders and file: 'a/b/c.txt' -> (['a', 'b'], 'c.txt')."""
    *folders, base = name.split('/')
    return folders, base


def lstat_at(fd, name):
    """The entry ``name`` of the folder ``fd`` as it is (a link not followed), or None."""
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


class Condition:
    """What a conditional write (PUT, DELETE) asks of the name's current file (RFC 9110
    section 13.1): decided by files.precondition, as for a GET, from the file's ETag.

    ``exclusive``: If-None-Match: * asks that nothing be there at all.  A check
    followed by a rename would leave a window for another writer, so such a
    write is made with link(2), which never replaces a name (EEXIST instead).
    """

    def __init__(self, request):
        self.request = request
        self.exclusive = request.get('if-none-match', '').strip() == '*'

    @classmethod
    def of(cls, request):
        """The request's Condition, or None when it has no conditional field."""
        return cls(request) if request.has_any(CONDITIONAL_FIELDS) else None

    def fields(self):
        """The conditional fields, {lower-case name: value}: what a resumable upload
        keeps, to check them again when a later request completes it (``kept``).
        400 for a value longer than MAX_KEPT_CONDITION, which a .meta has no room for."""
        kept = {name: self.request.get(name) for name in sorted(CONDITIONAL_FIELDS)
                if self.request.has(name)}
        for name, value in kept.items():
            if len(value) > MAX_KEPT_CONDITION:
                raise HTTPError(400, f'{name} is {len(value)} characters long: a resumable '
                                     f'upload keeps at most {MAX_KEPT_CONDITION}')
        return kept

    @classmethod
    def kept(cls, fields):
        """The Condition of ``fields`` that ``fields()`` gave (None for none): a PUT's."""
        return cls(KeptFields(fields)) if fields else None

    def check(self, st, name):
        """HTTPError 412 unless the request's conditions hold for ``st`` (None: no file);
        the answer carries the current ETag, for the client to see what it lost to."""
        etag = None if st is None else etag_of(st)
        if precondition(self.request, st, etag) == 412:
            if st is not None and not self.exclusive:
                why = ('not an ETag If-Match names' if self.request.has('if-match')
                       else 'the request\'s condition does not hold')
                raise self.failed(name, etag, why=why)
            raise self.failed(name, etag, exists=st is not None)

    @staticmethod
    def failed(name, etag, exists=True, why=None):
        """The 412 of ``name``: it is there (If-None-Match: * asked that it be not), it
        is not there at all, or it is there with ``etag`` and ``why`` that fails."""
        what = ('does not exist' if not exists else
                'already exists (If-None-Match: *)' if why is None else f'is {etag}: {why}')
        return HTTPError(412, f'{name[:60]!r} {what}',
                         headers=[] if etag is None else [('ETag', etag)])


class KeptFields:
    """Conditional fields kept from a request (Condition.fields), read as precondition
    reads a request's: the method of the write they guard is a PUT's."""

    method = 'PUT'

    def __init__(self, fields):
        self._fields = dict(fields)

    def get(self, name, default=None):
        return self._fields.get(name, default)

    def has(self, name):
        return name in self._fields

    def has_any(self, names):
        return not self._fields.keys().isdisjoint(names)


def entries(fd, kinds=(DIRECTORY, FILE), names=None):
    """(name, kind, lstat) of what a folder shows: its folders and regular files of
    ``kinds``, not hidden (temporaries, partial uploads), symlinks left out; sorted
    by name within LISTING_SORT_BUDGET (archives.listed, or ``names`` it gave),
    else in the file system's order.  Linear in the entries: one scandir, one
    fstatat each."""
    if names is None:
        names, _ = listed(fd, [LISTING_SORT_BUDGET])
    try:
        for name, kind in names:
            if kind not in kinds:
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue        # gone since it was listed
            if stat.S_ISDIR(st.st_mode) if kind is DIRECTORY else stat.S_ISREG(st.st_mode):
                yield name, kind, st
    finally:
        close = getattr(names, 'close', None)
        if close is not None:
            close()             # an unsorted listing: its scandir


def folder_json(fd, folder):
    """A folder's listing as JSON, in pieces of LISTING_BATCH entries: {"folder", "folders":
    [{"name", "modified"}], "files": [{"name", "bytes", "modified"}]}, names relative.

    The folders come first, then the files: from the one sorted list of names
    when the folder's names fit in LISTING_SORT_BUDGET, else from two passes
    over the folder (never a list of either kind held beyond the budget)."""
    names, _ = listed(fd, [LISTING_SORT_BUDGET])
    if hasattr(names, 'close'):         # unsorted, read as it goes: once per kind
        names.close()
        folders, files = unsorted(fd), unsorted(fd)
    else:
        folders = files = list(names)
    yield b'{"folder": %s,\n "folders": [' % json.dumps(folder).encode()
    yield from json_rows(({'name': name, 'modified': st.st_mtime}
                          for name, _, st in entries(fd, (DIRECTORY,), folders)))
    yield b'],\n "files": ['
    yield from json_rows(({'name': name, 'bytes': st.st_size, 'modified': st.st_mtime}
                          for name, _, st in entries(fd, (FILE,), files)))
    yield b']}\n'


def json_rows(items):
    """JSON values separated by commas, one a line, in pieces of LISTING_BATCH."""
    rows, separator = [], '\n  '
    for item in items:
        rows.append(separator + json.dumps(item))
        separator = ',\n  '
        if len(rows) == LISTING_BATCH:
            yield ''.join(rows).encode()
            rows = []
    if rows:
        yield ''.join(rows).encode()


def folder_html(fd, title):
    """A folder's listing as HTML (files.listing_pieces), in the same order as its JSON."""
    return listing_pieces(title, ((name, kind is DIRECTORY, None if kind is DIRECTORY
                                   else st.st_size) for name, kind, st in entries(fd)))


class UploadStore:
    """The upload directory: store, replace and delete files atomically, in folders.

    Every temporary file is made in the uploads folder itself, whichever folder
    its upload goes to, and renamed from there into place (rename(2) between two
    folders of one file system is as atomic as within one): what a killed
    process left behind is always found by a scan of that one folder, at start
    and when a worker dies, however deep the uploads go.

    Each folder below is opened relative to its parent with O_NOFOLLOW, and what
    is done in it (make, rename, link, unlink, rmdir, list) is done relative to
    that descriptor: no symbolic link is ever followed below the uploads folder
    itself (which is followed as the operator gave it).  Reading a file goes
    through files.serve_path instead, which follows a link only to a file that
    is inside the folder (the kernel's word on where the open file is).
    """

    def __init__(self, directory, max_upload):
        self.directory = directory
        self.max_upload = max_upload

    def prepare(self):
        """Create the directory, and remove temporaries a killed server left behind."""
        os.makedirs(self.directory, exist_ok=True)
        self.sweep()

    def sweep(self, pid=None):
        """Remove the temporaries of uploads cut by a kill: every one (at start), or
        those of process ``pid`` (a worker that died; the others' are in progress).
        They are all in the uploads folder itself, whatever folder they were for."""
        prefix = TEMP_PREFIX if pid is None else f'{TEMP_PREFIX}{pid}-'
        for entry in os.scandir(self.directory):
            if entry.name.startswith(prefix) and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass

    def path(self, name):
        """Where ``name`` is, as a path: for messages and tests only, never opened to
        write (a symlink on the way would be followed): commit, delete do that."""
        return os.path.join(self.directory, check_name(name))

    # -- folders, opened safely ------------------------------------------------------

    def _open_root(self):
        try:
            return os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise storage_error(exc) from None

    def _folder(self, root, folders, create=False, writing=True):
        """The descriptor of ``root``/``folders``..., each opened below its parent with
        O_NOFOLLOW (the caller closes it), and whether the last was made here.

        A missing folder is made when ``create`` (its parent fsynced, so that the
        name survives a crash as the file renamed into it will), else the answer
        is -1.  A file or a symlink on the way is 409 when ``writing`` (the name
        cannot be made), else 404 (there is nothing to read or delete there).
        """
        fd, made = os.open('.', FOLDER_FLAGS, dir_fd=root), False
        try:
            for depth, segment in enumerate(folders):
                parent, fd = fd, -1
                try:
                    fd = self._below(parent, segment, folders[:depth + 1], writing)
                    if fd < 0 and create:
                        try:
                            os.mkdir(segment, FOLDER_MODE, dir_fd=parent)
                            os.fsync(parent)
                            made = True
                        except FileExistsError:
                            pass            # made by another request meanwhile
                        fd = self._below(parent, segment, folders[:depth + 1], writing)
                    if fd < 0:
                        return -1, made
                finally:
                    os.close(parent)
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            raise storage_error(exc) from None
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        return fd, made

    @staticmethod
    def _below(parent, segment, path, writing):
        """The folder ``segment`` of the folder ``parent``, opened; -1 when missing."""
        try:
            return os.open(segment, FOLDER_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            return -1
        except NotADirectoryError:
            st = lstat_at(parent, segment)
            what = ('a symbolic link, which uploads never follow'
                    if st is not None and stat.S_ISLNK(st.st_mode) else 'a file, not a folder')
            where = '/'.join(path)
            if writing:
                raise HTTPError(409, f'{where[:80]!r} is {what}') from None
            raise HTTPError(404, f'no folder {where[:80]!r}: it is {what}') from None
        except PermissionError:
            raise HTTPError(403, f'folder {"/".join(path)[:80]!r} is not accessible') from None

    def make_folder(self, name):
        """Make the folder ``name`` and its missing parents; whether it was made (False:
        it was there).  409 when a file or symlink is on the way, or has the name."""
        root = self._open_root()
        try:
            fd, made = self._folder(root, name.split('/'), create=True)
            os.close(fd)
        finally:
            os.close(root)
        return made

    def remove_folder(self, name):
        """Remove the empty folder ``name``: 404 when there is none, 409 when not empty."""
        *folders, last = name.split('/')
        root = self._open_root()
        try:
            parent, _ = self._folder(root, folders, writing=False)
            if parent < 0:
                raise HTTPError(404, f'no folder {name[:80]!r}')
            try:
                # Locked while removed: a commit into it holds the same lock, and
                # sees afterwards that it is gone (COMMIT_TRIES).
                folder = self._below(parent, last, name.split('/'), writing=False)
                if folder < 0:
                    raise HTTPError(404, f'no folder {name[:80]!r}')
                try:
                    fcntl.flock(folder, fcntl.LOCK_EX)
                    os.rmdir(last, dir_fd=parent)
                except OSError as exc:
                    if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                        raise HTTPError(409, f'folder {name[:80]!r} is not empty') from None
                    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                        raise HTTPError(404, f'no folder {name[:80]!r}') from None
                    raise storage_error(exc) from None
                finally:
                    os.close(folder)
            finally:
                os.close(parent)
        finally:
            os.close(root)

    def listing(self, name, make):
        """A FolderBody of the folder ``name`` ('' for the uploads folder itself), its
        pieces ``make(fd)``: the folder is opened now (404 when it is not one), read as
        the body is sent (on a pool thread)."""
        root = self._open_root()
        try:
            fd, _ = self._folder(root, name.split('/') if name else [], writing=False)
        finally:
            os.close(root)
        if fd < 0:
            raise HTTPError(404, f'no folder {name[:80]!r}')
        return FolderBody(fd, make)

    def stored(self, name=''):
        """The files of the folder ``name``, by name: [{name, bytes, modified}]."""
        body = self.listing(name, lambda fd: entries(fd, (FILE,)))
        try:
            return [{'name': found, 'bytes': st.st_size, 'modified': st.st_mtime}
                    for found, _, st in body]
        finally:
            body.close()

    # -- files -----------------------------------------------------------------------

    def incoming(self, more=()):
        try:
            return Incoming(self.directory, self.max_upload, more)
        except OSError as exc:
            raise storage_error(exc) from None

    def refuse_oversize(self, length):
        """413 for a body announced ``length`` bytes (None: not announced), larger than
        --max-upload, before a byte is read (and so before 100 Continue is sent)."""
        SizeLimit('upload', self.max_upload).refuse(length)

    def check_write(self, name, condition=None):
        """Refuse now what the commit of ``name`` would refuse, before a byte of the body
        is read: 409 when a file or symlink is where a folder must be, or a folder
        has the name; 412 when ``condition`` fails.  Nothing is made here (an upload
        that fails leaves no folder behind); commit decides again, under the lock."""
        folders, base = split(name)
        root = self._open_root()
        try:
            fd, _ = self._folder(root, folders)
        finally:
            os.close(root)
        try:
            current = None if fd < 0 else lstat_at(fd, base)
        finally:
            if fd >= 0:
                os.close(fd)
        self._may_replace(name, current, condition)

    @staticmethod
    def _may_replace(name, current, condition):
        if current is not None and stat.S_ISDIR(current.st_mode):
            raise HTTPError(409, f'{name[:80]!r} is a folder')
        if condition is not None:
            condition.check(current, name)

    def put(self, name, body, algorithms=(), verify=None, condition=None):
        """Store a request body under ``name``; return (summary, replaced, digests, etag).

        ``algorithms`` are hashed besides sha-256, in the same pass;
        ``verify(digests)``, called once the whole body (and its trailers) is
        read and before the file takes its name, may refuse it with HTTPError;
        ``condition`` (a Condition) is checked before the body is read, and
        again as the file takes its name.
        """
        self.refuse_oversize(body.length)
        self.check_write(name, condition)
        incoming = self.incoming(algorithms)
        try:
            body.read_to(incoming.write)
            if verify is not None:
                verify(incoming.digests())
            incoming.finish()
            replaced, st = self.commit(name, incoming, condition)
        finally:
            incoming.discard()
        return incoming.summary(name), replaced, incoming.digests(), etag_of(st)

    def commit(self, name, incoming, condition=None):
        """Give the finished temporary file ``incoming`` (anything whose ``temp_path``
        is in the uploads folder: an Incoming, an AtomicFile, a partial upload's
        data) the name ``name``, making the missing folders; ``temp_path`` becomes
        None.  Returns (whether a file was replaced, the new file's stat).

        The target folder is locked (flock) from the check of what the name holds
        to the rename, and every commit and delete takes that lock: a condition
        checked holds when the file takes the name, against every minihttp process
        sharing the folder (not against other programs writing there, which the
        file system gives no way to exclude; If-None-Match: * holds against them
        too, by link).  The lock is held for a stat and a rename, never for I/O
        that waits on a client.
        """
        folders, base = split(name)
        temp = os.path.basename(incoming.temp_path)
        root = self._open_root()
        try:
            for _ in range(COMMIT_TRIES):
                fd, _ = self._folder(root, folders, create=True)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    if os.fstat(fd).st_nlink == 0:
                        continue        # removed by a DELETE since it was opened
                    current = lstat_at(fd, base)
                    self._may_replace(name, current, condition)
                    st = os.stat(temp, dir_fd=root)
                    self._rename(root, temp, fd, base, name, condition)
                    incoming.temp_path = None
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.fsync(fd)        # the new name, durable
                    return current is not None, st
                except OSError as exc:
                    raise storage_error(exc) from None
                finally:
                    os.close(fd)
            raise HTTPError(409, f'the folder of {name[:80]!r} was removed while the upload '
                                 f'was stored, {COMMIT_TRIES} times')
        finally:
            os.close(root)

    @staticmethod
    def _rename(root, temp, fd, base, name, condition):
        if condition is not None and condition.exclusive:
            try:
                os.link(temp, base, src_dir_fd=root, dst_dir_fd=fd, follow_symlinks=False)
            except FileExistsError:
                raise condition.failed(name, None) from None
            os.unlink(temp, dir_fd=root)
            return
        try:
            os.rename(temp, base, src_dir_fd=root, dst_dir_fd=fd)
        except IsADirectoryError:
            raise HTTPError(409, f'{name[:80]!r} is a folder') from None

    def delete(self, name, condition=None):
        """Remove the file ``name``: 404 when there is none, 409 when it is a folder,
        412 when ``condition`` fails.  A symlink is removed itself, never followed."""
        folders, base = split(name)
        root = self._open_root()
        try:
            fd, _ = self._folder(root, folders, writing=False)
        finally:
            os.close(root)
        if fd < 0:
            raise HTTPError(404, f'no upload named {name[:80]!r}')
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = lstat_at(fd, base)
            if current is None:
                raise HTTPError(404, f'no upload named {name[:80]!r}')
            if stat.S_ISDIR(current.st_mode):
                raise HTTPError(409, f'{name[:80]!r} is a folder: its URL ends with "/"')
            if condition is not None:
                condition.check(current, name)
            os.unlink(base, dir_fd=fd)
        except FileNotFoundError:
            raise HTTPError(404, f'no upload named {name[:80]!r}') from None
        finally:
            os.close(fd)
