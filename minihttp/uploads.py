"""Uploads that lose nothing: a body becomes a file only once it fully arrived.

Every upload streams into a temporary file in the upload directory itself
(so the final rename is atomic: same file system), is hashed on the way, and
is renamed over its name only after the body's framing said it was complete
(Content-Length bytes counted, or the last chunk read) and the data was
flushed to disk.  Any failure removes the temporary file, leaving the
directory exactly as it was, including a previous version of the same name.
"""

import errno
import hashlib
import os
import re
import threading
import unicodedata
from urllib.parse import quote, unquote

from .atomic import AtomicFile
from .digests import ALGORITHMS, DEFAULT
from .errors import HTTPError, SizeLimit
from .limits import MAX_UPLOAD_NAME, WRITEBACK_STEP

TEMP_PREFIX = '.upload-'

# A stored name is one path segment of ordinary characters, not hidden, and at
# most MAX_UPLOAD_NAME bytes long in UTF-8 (the file system counts bytes).
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


def check_name(name):
    """The name to store, or HTTPError 400 saying why it cannot be stored.

    The name is stored in Unicode normalization form C (UAX #15): a Mac sends
    "résumé.txt" decomposed (NFD: "e" then U+0301), Windows and Linux composed,
    and Linux file systems compare bytes, so without this one name would be two
    files that look the same.  Every way in (PUT, DELETE, a form's parts) comes
    through here, so each finds the same file whichever form it was given.
    """
    if not name:
        raise HTTPError(400, 'upload name is empty')
    if name.startswith('.'):
        raise HTTPError(400, f'upload name may not start with a dot: {name[:60]!r}')
    if not NAME.fullmatch(name):
        raise HTTPError(400, f'upload name must be one path segment without control '
                             f'characters: {name[:60]!r}')
    for char in name:
        what = invisible(char)
        if what is not None:
            called = unicodedata.name(char, '')    # C0 and C1 controls have none
            raise HTTPError(400, f'upload name contains U+{ord(char):04X}'
                                 f'{f" ({called})" if called else ""}, {what}')
    name = unicodedata.normalize('NFC', name)
    size = len(name.encode('utf-8', 'surrogatepass'))
    if size > MAX_UPLOAD_NAME:
        raise HTTPError(400, f'upload name is {size} bytes in UTF-8, longer than a file '
                             f'name may be ({MAX_UPLOAD_NAME}): {name[:40]!r}...')
    return name


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
    """

    def __init__(self, directory, limit, more=()):
        # Named for this process, so that what a killed worker leaves is known.
        super().__init__(directory, f'{TEMP_PREFIX}{os.getpid()}-')
        self.hash = hashlib.sha256()
        self.more = {name: ALGORITHMS[name]() for name in more if name != DEFAULT}
        self.size = 0
        self.room = SizeLimit('upload', limit)
        self.writeback = Writeback(self.file, WRITEBACK_STEP)

    def write(self, piece):
        self.size = self.room.take(len(piece))
        self.hash.update(piece)
        for other in self.more.values():
            other.update(piece)
        try:
            self.file.write(piece)
            self.writeback.wrote(self.size)
        except OSError as exc:
            raise storage_error(exc) from None

    def finish(self):
        """Flush to disk; the caller commits afterwards."""
        try:
            self.writeback.wait()
            super().finish()
        except OSError as exc:
            raise storage_error(exc) from None

    def discard(self):
        try:
            self.writeback.wait()
        except OSError:
            pass          # the upload is being thrown away anyway
        super().discard()

    def summary(self, name):
        return {'name': name, 'bytes': self.size, 'sha256': self.hash.hexdigest()}

    def digests(self):
        """{algorithm: digest} of every hash computed (RFC 9530 names)."""
        return {DEFAULT: self.hash.digest(),
                **{name: other.digest() for name, other in self.more.items()}}


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


class UploadStore:
    """The upload directory: store, replace and delete files atomically."""

    def __init__(self, directory, max_upload):
        self.directory = directory
        self.max_upload = max_upload

    def prepare(self):
        """Create the directory, and remove temporaries a killed server left behind."""
        os.makedirs(self.directory, exist_ok=True)
        self.sweep()

    def sweep(self, pid=None):
        """Remove the temporaries of uploads cut by a kill: every one (at start), or
        those of process ``pid`` (a worker that died; the others' are in progress)."""
        prefix = TEMP_PREFIX if pid is None else f'{TEMP_PREFIX}{pid}-'
        for entry in os.scandir(self.directory):
            if entry.name.startswith(prefix) and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass

    def path(self, name):
        return os.path.join(self.directory, check_name(name))

    def stored(self):
        """The stored files, by name: [{name, bytes, modified}] (temporaries and
        directories left out)."""
        found = []
        for entry in os.scandir(self.directory):
            if entry.name.startswith('.') or not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
            found.append({'name': entry.name, 'bytes': st.st_size, 'modified': st.st_mtime})
        return sorted(found, key=lambda item: item['name'])

    def incoming(self, more=()):
        try:
            return Incoming(self.directory, self.max_upload, more)
        except OSError as exc:
            raise storage_error(exc) from None

    def refuse_oversize(self, length):
        """413 for a body announced ``length`` bytes (None: not announced), larger than
        --max-upload, before a byte is read (and so before 100 Continue is sent)."""
        SizeLimit('upload', self.max_upload).refuse(length)

    def put(self, name, body, algorithms=(), verify=None):
        """Store a request body under ``name``; return (summary, replaced, digests).

        ``algorithms`` are hashed besides sha-256, in the same pass;
        ``verify(digests)``, called once the whole body (and its trailers) is
        read and before the file takes its name, may refuse it with HTTPError.
        """
        path = self.path(name)
        self.refuse_oversize(body.length)
        incoming = self.incoming(algorithms)
        try:
            body.read_to(incoming.write)
            if verify is not None:
                verify(incoming.digests())
            incoming.finish()
            replaced = os.path.exists(path)
            if os.path.isdir(path):
                raise HTTPError(409, f'{name!r} is a directory')
            incoming.commit(path)
        finally:
            incoming.discard()
        return incoming.summary(name), replaced, incoming.digests()

    def delete(self, name):
        path = self.path(name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise HTTPError(404, f'no upload named {name[:60]!r}') from None
        except IsADirectoryError:
            raise HTTPError(409, f'{name[:60]!r} is a directory') from None
