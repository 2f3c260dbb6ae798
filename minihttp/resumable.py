"""Partial uploads that survive a dropped connection (draft-ietf-httpbis-resumable-upload).

This module is the upload resource's state and storage, without HTTP: the
routes map requests onto ``PartialStore`` and its errors onto responses.

Everything lives in the uploads folder, never in one process's memory, so
that any worker, or another upstream behind a proxy sharing the folder,
resumes any upload.  An upload ``ID`` (unguessable: 18 random bytes) is two
hidden files (the file server neither lists nor serves names with a dot):

    .partial-ID        the bytes received so far
    .partial-ID.meta   JSON: name, declared length, created, the durable
                       offset, complete; replaced atomically (AtomicFile)

The offset reported (HEAD) is the one in ``.meta``, written only after the
data up to it was fsynced: what a HEAD says survives a crash of the server
or the machine.  The data file may hold more than that (bytes written but
not yet synced when the machine crashed): the next append, holding the lock,
cuts it back to the durable offset before writing (the draft: the offset
never decreases, and the bytes past it were never acknowledged).  A data
file shorter than its durable offset means acknowledged bytes were lost:
the upload is deactivated (the draft: "If the server loses any part of the
state, it MUST deactivate the upload resource").

One append at a time per upload, across processes: an append holds
``flock(LOCK_EX)`` on the data file for its whole length, so a second one
racing for it fails with 409 (never interleaved bytes) after waiting at most
APPEND_LOCK_WAIT (never behind a client that went silent).  ``flock`` rather than
``lockf``: its lock belongs to the open file, so two threads of one process
exclude each other too (POSIX record locks belong to the process).

Who ends an upload: every write of its ``.meta`` by an append (a checkpoint,
its end, its completion) and a cancel hold the upload's end lock (``ending``),
an OFD lock on the data file that only they take, for a few file operations,
never for a client.  A cancel that comes while an append writes its state
waits for that write and then removes every file; each later write finds
the data file unlinked and writes nothing.  So once a DELETE is answered,
nothing of the upload is in the folder (not even a temporary .meta), whatever
its append does after.  A separate lock, not the append's flock: a cancel
must not wait for an append whose client is silent for minutes.

A client that leaves mid-append is the normal case here: what arrived is
fsynced on the way out and becomes the new offset, so the client resumes
from the last byte the server got.  A failure of ours (a full disk) cuts
the file back to the last durable offset instead.
"""

import fcntl
import json
import os
import re
import secrets
import struct
import threading
import time
import types
import contextlib
import dataclasses
from dataclasses import dataclass

from .atomic import FILE_MODE, AtomicFile, sync_directory
from .errors import HTTPError
from .files import etag_of
from .limits import (APPEND_LOCK_POLL, APPEND_LOCK_WAIT, EXPIRE_AFTER, EXPIRE_BATCH, MAX_META,
                     MAX_PARTIALS, WRITEBACK_STEP)
from .uploads import TEMP_PREFIX, Condition, UploadStore, check_name, storage_error

PREFIX = '.partial-'
META = '.meta'
DONE = '-done'
assert not PREFIX.startswith(TEMP_PREFIX) and not TEMP_PREFIX.startswith(PREFIX)

# An upload's ID: secrets.token_urlsafe(18), 24 characters of the URL-safe
# base64 alphabet.  Anything else never reaches the file system.
ID_BYTES = 18
ID_LENGTH = 24             # base64: 4 characters per 3 bytes
ID = re.compile(r'[A-Za-z0-9_-]{%d}' % ID_LENGTH)

# --- the draft's problem types (RFC 9457), for the routes' error bodies -------
PROBLEMS = 'https://iana.org/assignments/http-problem-types#'
MISMATCHING_OFFSET = PROBLEMS + 'mismatching-upload-offset'
COMPLETED_UPLOAD = PROBLEMS + 'completed-upload'
INCONSISTENT_LENGTH = PROBLEMS + 'inconsistent-upload-length'


class UploadError(HTTPError):
    """An HTTPError about an upload resource; ``problem`` is the RFC 9457 object
    (type and members) the draft names for it, or None."""

    def __init__(self, status, reason, problem=None, headers=(), close=False):
        super().__init__(status, reason, close=close, headers=headers)
        self.problem = problem


class Conflict(UploadError):
    """409: the append does not start at the upload's offset, or another append
    holds the upload.  ``offset`` is the right one (sent as Upload-Offset)."""

    def __init__(self, offset, provided=None, busy=False):
        if busy:
            reason, problem = 'another request is appending to this upload', None
        else:
            reason = f'the upload is at offset {offset}, not {provided}'
            problem = {'type': MISMATCHING_OFFSET,
                       'title': 'offset from request does not match offset of resource',
                       'expected-offset': offset, 'provided-offset': provided}
        # close: the body that was to go at the wrong offset is not read.
        super().__init__(409, reason, problem, [('Upload-Offset', str(offset))], close=True)
        self.offset = offset


class Rejected(UploadError):
    """Raised by an append's ``source`` (say, a Content-Digest that does not
    match, RFC 9530) to throw this append's bytes away rather than keep them
    as a cut append's are: the offset stays where the append started (Upload-Offset)."""

    def __init__(self, status, reason, offset=None, headers=()):
        fields = [] if offset is None else [('Upload-Offset', str(offset))]
        super().__init__(status, reason, headers=[*fields, *headers])


def gone(upload_id):
    return UploadError(404, f'no upload in progress with id {upload_id[:40]!r}')


def inconsistent_length(reason):
    return UploadError(400, reason, {'type': INCONSISTENT_LENGTH,
                                     'title': 'inconsistent length values for upload'},
                       close=True)


def completed():
    return UploadError(400, 'the upload is already complete',
                       {'type': COMPLETED_UPLOAD, 'title': 'upload is already completed'},
                       close=True)


@dataclass(frozen=True)
class Partial:
    """An upload resource's state: what HEAD reports."""
    id: str
    name: str                # the file it becomes (check_name's spelling)
    length: int | None       # declared (Upload-Length, or offset + Content-Length)
    offset: int              # bytes durably held
    complete: bool
    created: float           # time.time() at creation
    expires: float
    # The creation's conditional fields (uploads.Condition.fields), checked again
    # as the file takes its name, whichever request completes it.
    conditions: dict | None = None
    # The creation's Repr-Digest (digests.to_keep), checked against the whole
    # file as it takes its name (the draft, section "Representation Digests").
    digest: str | None = None

    def max_age(self, now=None):
        """Seconds left to live, for Upload-Limit's max-age (expires before draft 06)."""
        return max(0, int(self.expires - (time.time() if now is None else now)))


class PartialStore:
    """Partial uploads in ``directory``, each at most ``max_upload`` bytes
    (None: no limit), living ``expire_after`` seconds from their creation."""

    def __init__(self, directory, max_upload, expire_after=EXPIRE_AFTER, uploads=None):
        self.directory = directory
        self.max_upload = max_upload
        self.expire_after = expire_after
        # The uploads a completed one joins, by the one way every upload takes its
        # name (UploadStore.commit: folders made, locked, never through a symlink).
        self.uploads = UploadStore(directory, max_upload) if uploads is None else uploads

    # --- where things are -------------------------------------------------------
    def _data(self, upload_id):
        return os.path.join(self.directory, PREFIX + upload_id)

    def _meta(self, upload_id):
        return os.path.join(self.directory, PREFIX + upload_id + META)

    def _read(self, upload_id):
        """The stored state of ``upload_id`` (a well-formed ID), or None."""
        try:
            fd = os.open(self._meta(upload_id), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, OSError):
            return None
        try:
            raw = os.read(fd, MAX_META + 1)
        finally:
            os.close(fd)
        if len(raw) > MAX_META:
            return None
        try:
            meta = json.loads(raw)
            return Partial(upload_id, meta['name'], meta['length'], meta['offset'],
                           meta['complete'], meta['created'],
                           meta['created'] + self.expire_after, meta.get('conditions'),
                           meta.get('digest'))
        except (ValueError, KeyError, TypeError):
            return None          # torn or foreign: AtomicFile never leaves one torn

    def _done(self, upload_id):
        # A completion's remembered state, written before its file takes its name
        # and renamed over the .meta after (named as a .meta's temporary file:
        # expire() removes one a crash left).
        return self._meta(upload_id) + DONE

    def _write(self, partial, path=None):
        """Write the .meta of ``partial`` (or ``path``) atomically and durably."""
        meta = {'name': partial.name, 'length': partial.length, 'offset': partial.offset,
                'complete': partial.complete, 'created': partial.created}
        if partial.conditions:
            meta['conditions'] = partial.conditions
        if partial.digest:
            meta['digest'] = partial.digest
        out = AtomicFile(self.directory, f'{PREFIX}{partial.id}{META}-')
        try:
            out.file.write(json.dumps(meta, ensure_ascii=False).encode('utf-8'))
            out.finish()
            out.commit(path or self._meta(partial.id))
        finally:
            out.discard()

    def _remove(self, upload_id):
        """Remove an upload's files (data first: the .meta is what makes it exist;
        a completion's state to come before the .meta, so that none replaces it after)."""
        for path in (self._data(upload_id), self._done(upload_id), self._meta(upload_id)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    # --- the upload resource ------------------------------------------------------
    def create(self, name, length=None, now=None, condition=None, digest=None):
        """A new upload resource that becomes ``name`` once complete.

        413 when ``length`` (declared) is over max_upload; 507 when the disk
        has not that much room or MAX_PARTIALS uploads are already in progress.
        Refused at once, before any content is stored, as a PUT would be: 409
        when a folder (or a file where a folder must be) has the name, 412 when
        ``condition`` (an uploads.Condition) fails; the condition is kept and
        checked again on completion, as is ``digest`` (a Repr-Digest value to
        keep, digests.to_keep) by the ``verify`` of the completing append.
        """
        name = check_name(name)
        self.uploads.check_write(name, condition)
        conditions = None if condition is None else condition.fields()
        if length is not None and self.max_upload is not None and length > self.max_upload:
            raise UploadError(413, f'upload: {length} bytes, more than {self.max_upload} bytes',
                              close=True)
        try:
            if self._count() >= MAX_PARTIALS:
                raise UploadError(507, f'{MAX_PARTIALS} uploads are in progress already')
            if length is not None:
                room = os.statvfs(self.directory)
                if length > room.f_bavail * room.f_frsize:
                    raise UploadError(507, f'no room on the disk for {length} bytes')
            upload_id = secrets.token_urlsafe(ID_BYTES)
            # O_EXCL: an ID that exists (one in 2**144) is never shared.
            fd = os.open(self._data(upload_id),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.fchmod(fd, FILE_MODE)    # what it becomes is served
            finally:
                os.close(fd)
            created = time.time() if now is None else now
            partial = Partial(upload_id, name, length, 0, False, created,
                              created + self.expire_after, conditions, digest)
            try:
                self._write(partial)
            except BaseException:
                self._remove(upload_id)
                raise
        except OSError as exc:
            raise storage_error(exc) from None
        return partial

    def open(self, upload_id, now=None):
        """The state of ``upload_id``, or None when unknown, cancelled or expired."""
        if not isinstance(upload_id, str) or not ID.fullmatch(upload_id):
            return None
        partial = self._read(upload_id)
        if partial is None or partial.expires <= (time.time() if now is None else now):
            return None
        return partial

    def offset(self, upload_id):
        """Bytes durably held for ``upload_id``; 404 when it is gone."""
        partial = self.open(upload_id)
        if partial is None:
            raise gone(upload_id)
        return partial.offset

    def append(self, upload_id, offset, source, complete=False, length=None, verify=None,
               whole=False):
        """Append what ``source(sink)`` delivers at ``offset``; the new state.

        ``source`` calls ``sink(piece)`` for each piece of the request content
        (a body's ``read_to``).  ``length``, when given, is a length the request
        declares (Upload-Length, or offset + Content-Length with Upload-Complete:
        ?1); it must agree with one declared before.  With ``complete`` the file
        takes its name once its length is right and ``verify(path, partial)``
        (if given) did not raise: atomically, the previous version intact on any
        failure.  The returned state's ``replaced`` says whether a file had that
        name.  A completion refused by a client error (4xx: ``verify``, a
        condition kept, a folder of that name) ends the upload, its bytes
        removed: the draft calls such an answer the processing of the whole
        representation (Upload-Complete: ?1), which resending would not change.

        ``whole``: this append's bytes are kept all or none (their digest is to
        be checked once they are all in): no checkpoint claims a part of them,
        and a client that leaves midway leaves the offset where it was.

        Errors: 404 gone, 409 Conflict (wrong offset, or another append holds
        the upload), 400 completed or inconsistent length, 413 over max_upload,
        409 the name is a directory, 507/500 from the disk.  When the client
        leaves mid-append, what arrived is kept (fsynced) and the exception
        from ``source`` propagates.
        """
        if not isinstance(upload_id, str) or not ID.fullmatch(upload_id):
            raise gone(str(upload_id))
        try:
            fd = os.open(self._data(upload_id), os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            partial = self.open(upload_id)
            raise completed() if partial is not None and partial.complete else gone(upload_id)
        except OSError as exc:
            raise storage_error(exc) from None
        try:
            if not lock(fd):
                partial = self.open(upload_id)
                if partial is None:
                    raise gone(upload_id) from None
                raise Conflict(partial.offset, offset, busy=True) from None
            return Append(self, fd, upload_id, whole).run(offset, source, complete, length,
                                                          verify)
        finally:
            os.close(fd)           # lets go of the lock too

    def cancel(self, upload_id):
        """Deactivate ``upload_id`` and free its bytes; 404 when it is gone.

        Not waiting for an append in progress (its client may be silent for
        minutes), only for a write of its .meta under way (the end lock): then
        the files go, and the append notices at its next checkpoint or its end
        that its data file has no name left, and writes nothing.  A completion
        that renamed the file first has won: its remembered state goes.
        """
        if self.open(upload_id) is None:
            raise gone(str(upload_id))
        try:
            # Write access: the end lock is a write lock (fcntl(2) asks for it).
            fd = os.open(self._data(upload_id), os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            # Completed (or its bytes lost): no append can write but a completion
            # between its rename and its last .meta, whose state to come _remove
            # takes before the .meta: its rename into place then fails.
            self._remove(upload_id)
            return
        except OSError as exc:
            raise storage_error(exc) from None
        try:
            with ending(fd):
                self._remove(upload_id)
        finally:
            os.close(fd)

    def expire(self, now=None, batch=EXPIRE_BATCH):
        """Remove up to ``batch`` expired uploads (and leftovers of a crash);
        how many were removed.  Reads at most every .meta in the folder
        (MAX_PARTIALS of them, give or take those being made)."""
        now = time.time() if now is None else now
        removed = 0
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if removed >= batch:
                    break
                if not entry.name.startswith(PREFIX):
                    continue
                upload_id = entry.name[len(PREFIX):len(PREFIX) + ID_LENGTH]
                rest = entry.name[len(PREFIX) + ID_LENGTH:]
                if not ID.fullmatch(upload_id):
                    continue
                if rest == META:
                    partial = self._read(upload_id)
                    if partial is None or partial.expires <= now:
                        self._remove(upload_id)
                        removed += 1
                elif rest == '' or rest.startswith(META + '-'):
                    # A data file whose .meta is gone (a crash while creating or
                    # cancelling) or a .meta's temporary file a crash left: old
                    # enough that nobody is writing it any more.
                    if rest == '' and os.path.exists(self._meta(upload_id)):
                        continue
                    try:
                        if entry.stat(follow_symlinks=False).st_mtime + self.expire_after <= now:
                            os.unlink(entry.path)
                            removed += 1
                    except FileNotFoundError:
                        pass
        return removed

    def _count(self):
        """Uploads in progress: those with a data file.  Not the completed ones
        remembered until they expire (a .meta alone, no bytes held): counted, they
        refused every resumable upload for a day after MAX_PARTIALS completed,
        as a page uploading a folder of 300 files does."""
        whole = len(PREFIX) + ID_LENGTH         # a data file's name, no suffix
        with os.scandir(self.directory) as entries:
            return sum(1 for entry in entries
                       if len(entry.name) == whole and entry.name.startswith(PREFIX))


def lock(fd):
    """Take the upload's lock; False if another append holds it APPEND_LOCK_WAIT on.

    Not at once: an append ending has made its offset durable (HEAD says it)
    just before it lets go, and a client that resumes at once from that offset
    must not get 409.  flock has no timeout: polled, on this pool thread only.
    """
    deadline = time.monotonic() + APPEND_LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(APPEND_LOCK_POLL)


# struct flock (fcntl(2)): type, whence, start, length, pid (0 for an OFD lock),
# padded to its size on 64-bit Linux.
FLOCK = struct.Struct('hhqqi4x')


@contextlib.contextmanager
def ending(fd):
    """Hold the end lock of the upload whose data file is open as ``fd``.

    An OFD lock (Linux 3.15): like flock it belongs to the open file, so two
    requests (each opens the file: threads of one process or of two) exclude
    each other, but it is a lock of its own, independent of the append's flock
    on the same file (on a local file system; NFS emulates flock with such
    locks).  It does not exclude the threads that share one open file: an
    append's own checkpoint is waited for instead (Append.wait), never run
    beside another write of the same append's.  Held for a .meta write or a
    removal, so waited for without a deadline.
    """
    fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
    try:
        yield
    finally:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, 0, 0, 0))


class Append:
    """One append, holding the upload's lock: its data file ``fd`` and the state."""

    def __init__(self, store, fd, upload_id, whole=False):
        self.store = store
        self.whole = whole         # all or nothing: no checkpoint moves the offset
        self.fd = fd
        self.id = upload_id
        self.partial = None
        self.start = 0             # the offset this append started at
        self.size = 0              # bytes in the data file
        self.ours = None           # an error of ours (the disk's), not the client's
        self.flush = None          # the background checkpoint in progress
        self.flush_error = None
        self.flushed = 0           # size when the last checkpoint started

    def run(self, offset, source, complete, length, verify):
        store = self.store
        # Read under the lock: an append that just ended moved the offset.
        partial = store.open(self.id)
        if partial is None or os.fstat(self.fd).st_nlink == 0:
            raise gone(self.id)
        if partial.complete:
            raise completed()
        if offset != partial.offset:
            raise Conflict(partial.offset, offset)
        if length is not None:
            if partial.length is not None and length != partial.length:
                raise inconsistent_length(
                    f'the upload was declared {partial.length} bytes long, not {length}')
            if store.max_upload is not None and length > store.max_upload:
                raise UploadError(413, f'upload: {length} bytes, more than '
                                       f'{store.max_upload} bytes', close=True)
            if length < partial.offset:
                raise inconsistent_length(f'{length} bytes declared, {partial.offset} held')
            partial = self.replace(partial, length=length)
        self.partial = partial
        self.start = partial.offset
        self.recover()
        try:
            source(self.sink)
        except BaseException as exc:
            if self.ours is not None or self.whole or isinstance(exc, Rejected):
                self.roll_back(to_start=isinstance(exc, Rejected))
                raise
            self.keep()            # the client left or sent a broken body: keep what came
            raise
        self.keep()
        if complete:
            return self.complete(verify)
        return self.partial

    def replace(self, partial, **changes):
        """``partial`` with ``changes``, durably written; 404 if the upload was
        cancelled (then its .meta is not revived).  Under the end lock, the
        data file's link count says it: a cancel unlinks it holding that lock."""
        new = dataclasses.replace(partial, **changes)
        with ending(self.fd):
            if os.fstat(self.fd).st_nlink == 0:
                raise gone(self.id)
            try:
                self.store._write(new)
            except OSError as exc:
                raise storage_error(exc) from None
        return new

    def remove(self):
        """End the upload, its files removed once the checkpoint in progress is
        done: it would write the .meta back.  (Not the end lock: an OFD lock
        does not exclude the threads that share this one open file.)"""
        self.wait()
        self.store._remove(self.id)

    def recover(self):
        """Cut what a crash left past the durable offset; deactivate a shortened file."""
        size = os.fstat(self.fd).st_size
        durable = self.partial.offset
        if size < durable:
            self.remove()
            raise UploadError(404, f'upload {self.id[:40]!r} lost data it had acknowledged')
        if size > durable:
            os.ftruncate(self.fd, durable)
        os.lseek(self.fd, durable, os.SEEK_SET)
        self.size = self.flushed = durable

    def sink(self, piece):
        try:
            self._write(piece)
        except BaseException as exc:
            self.ours = exc
            raise

    def _write(self, piece):
        store, partial = self.store, self.partial
        end = self.size + len(piece)
        if partial.length is not None and end > partial.length:
            # The draft: reject once the offset would pass the length, and mark
            # the upload invalid; this piece is not written.
            self.remove()
            raise inconsistent_length(f'more than the {partial.length} bytes declared')
        if store.max_upload is not None and end > store.max_upload:
            self.remove()
            raise UploadError(413, f'upload: more than {store.max_upload} bytes', close=True)
        if self.flush_error is not None:
            raise self.flush_error
        view = memoryview(piece)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            raise storage_error(exc) from None
        self.size = end
        if end - self.flushed >= WRITEBACK_STEP and not (self.flush and self.flush.is_alive()):
            self.flushed = end
            self.flush = threading.Thread(target=self.checkpoint, args=(end,),
                                          name='checkpoint', daemon=True)
            self.flush.start()

    def checkpoint(self, size):
        """On a thread of its own: make ``size`` bytes durable, then say so in .meta,
        so that a long append cut by a crash resumes near where it was (not for
        a ``whole`` append: its bytes count only once all are in and checked)."""
        try:
            os.fdatasync(self.fd)
            if not self.whole:
                self.partial = self.replace(self.partial, offset=size)
        except OSError as exc:
            self.flush_error = storage_error(exc)
        except HTTPError as exc:       # cancelled, or the disk failed writing .meta
            self.flush_error = exc

    def wait(self):
        if self.flush is not None:
            self.flush.join()
            self.flush = None

    def keep(self):
        """Make everything written durable and the new offset."""
        self.wait()
        if self.size == self.partial.offset:
            return
        try:
            os.fsync(self.fd)
        except OSError as exc:
            self.roll_back()
            raise storage_error(exc) from None
        self.partial = self.replace(self.partial, offset=self.size)

    def roll_back(self, to_start=False):
        """After an error of ours: back to the last durable offset.  ``to_start``
        (a part rejected): back to where this append started, even past a
        checkpoint of it (one not ``whole``: a digest in trailers not announced),
        which no answer acknowledged; a crash before that leaves it claimed."""
        self.wait()
        if to_start and self.partial.offset != self.start:
            self.partial = self.replace(self.partial, offset=self.start)
        try:
            os.ftruncate(self.fd, self.partial.offset)
        except OSError:
            pass             # recover() cuts it at the next append

    def complete(self, verify):
        """Give the durable file its name: renamed first, then the .meta says
        complete (a crash between leaves the file whole and the upload unknown,
        never a .meta claiming a file that is not there)."""
        store, partial = self.store, self.partial
        if partial.length is not None and partial.offset != partial.length:
            raise inconsistent_length(f'complete at {partial.offset} bytes, '
                                      f'{partial.length} declared')
        data = store._data(self.id)
        if not os.path.exists(data):
            raise gone(self.id)                    # cancelled at the last moment
        try:
            if verify is not None:
                verify(data, partial)
        except HTTPError as error:
            self.refused(error)
            raise
        # Under the end lock from the last look at the data file to the
        # remembered state: a cancel before it wins (no file takes the name), one
        # after it finds the file renamed and the state written, and removes that.
        with ending(self.fd):
            if os.fstat(self.fd).st_nlink == 0:
                raise gone(self.id)
            # Remembered until it expires, so that a client that missed the answer
            # learns from HEAD that the upload completed (the draft).  Written
            # before the rename, put in place by one rename after it: a cancel that
            # comes between (no data file to lock) removes it first and then the
            # .meta, so that nothing of the upload stays, and that rename fails.
            done = store._done(self.id)
            try:
                store._write(dataclasses.replace(partial, length=partial.offset,
                                                 complete=True), done)
            except OSError as exc:
                raise storage_error(exc) from None
            try:
                try:
                    replaced, st = store.uploads.commit(partial.name,
                                                        types.SimpleNamespace(temp_path=data),
                                                        Condition.kept(partial.conditions))
                except HTTPError as error:
                    self.refused(error)
                    raise
                try:
                    os.rename(done, store._meta(self.id))
                    sync_directory(store.directory)
                except OSError:
                    pass   # cancelled, or the disk: the file is stored whole all the same
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(done)
        return Completed(**{**vars(partial), 'length': partial.offset, 'complete': True,
                            'replaced': replaced, 'etag': etag_of(st)})

    def refused(self, error):
        """A completion refused: by a client error (4xx: a digest, a condition) the
        representation is refused as a whole, which no byte sent again changes
        (the draft: "resuming the upload would not resolve this error"), so its
        bytes go now, rather than lie on the disk until --partial-expiry.  A 5xx
        (a full disk at the rename) keeps them: the client may complete it again."""
        if 400 <= error.status < 500:
            self.store._remove(self.id)
            error.headers.append(('Upload-Complete', '?1'))


@dataclass(frozen=True)
class Completed(Partial):
    replaced: bool = False     # a file of that name was replaced (200), or not (201)
    etag: str | None = None    # the stored file's (files.etag_of), as a PUT answers it


def limit_field(max_size, max_age, interop=None):
    """Upload-Limit's value (a Structured Fields Dictionary of Integers): the
    lifetime is called max-age since draft 06 (interop 7), expires before."""
    members = []
    if max_size is not None:
        members.append(f'max-size={int(max_size)}')
    age = 'expires' if interop is not None and interop < 7 else 'max-age'
    members.append(f'{age}={int(max_age)}')
    return ', '.join(members)
