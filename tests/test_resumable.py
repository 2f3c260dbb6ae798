"""Partial uploads (minihttp.resumable): the state machine and storage, without HTTP.

State lives in the folder: a second PartialStore over it is another worker, or
the same server after a restart.  Appenders race as threads and as processes.
"""

import errno
import hashlib
import os
import selectors
import subprocess
import sys
import threading
import time

import pytest

from minihttp import resumable
from minihttp.errors import HTTPError
from minihttp.resumable import (Conflict, PartialStore, PREFIX, Rejected, UploadError,
                                limit_field)
from minihttp.uploads import TEMP_PREFIX, UploadStore
from support import wait_until

pytestmark = pytest.mark.timeout(60)

WAIT = 20          # seconds any wait in these tests may take at most
MiB = 1024 * 1024


def pieces(*chunks):
    """A source in the style of a body's read_to: each chunk to the sink in turn."""
    def source(sink):
        for chunk in chunks:
            sink(chunk)
    return source


def cut_after(*chunks, error=ConnectionResetError(errno.ECONNRESET, 'reset')):
    """A source whose client leaves after ``chunks``."""
    def source(sink):
        for chunk in chunks:
            sink(chunk)
        raise error
    return source


def sha(data):
    return hashlib.sha256(data).hexdigest()


def open_fds():
    return len(os.listdir('/proc/self/fd'))


def hidden(directory):
    return sorted(name for name in os.listdir(directory) if name.startswith(PREFIX))


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / 'uploads'
    path.mkdir()
    return str(path)


@pytest.fixture
def store(folder):
    return PartialStore(folder, max_upload=64 * MiB, expire_after=3600)


def test_create_append_complete(store, folder):
    data = os.urandom(300_000)
    fds = open_fds()
    partial = store.create('whole.bin', length=len(data))
    assert partial.offset == 0 and not partial.complete and partial.length == len(data)
    assert resumable.ID.fullmatch(partial.id)
    state = store.append(partial.id, 0, pieces(data[:100_000], data[100_000:200_000]))
    assert state.offset == 200_000 and not state.complete
    done = store.append(partial.id, 200_000, pieces(data[200_000:]), complete=True)
    assert done.complete and done.offset == len(data) and not done.replaced
    with open(os.path.join(folder, 'whole.bin'), 'rb') as f:
        assert sha(f.read()) == sha(data)
    # The data file became the file; the record stays until it expires, for a
    # HEAD from a client that missed the answer.
    assert hidden(folder) == [f'{PREFIX}{partial.id}.meta']
    assert store.open(partial.id).complete
    with pytest.raises(UploadError) as caught:
        store.append(partial.id, len(data), pieces(b'more'))
    assert caught.value.status == 400
    assert caught.value.problem['type'] == resumable.COMPLETED_UPLOAD
    assert open_fds() == fds


def test_empty_upload_and_replace(store, folder):
    with open(os.path.join(folder, 'same.txt'), 'wb') as f:
        f.write(b'old')
    partial = store.create('same.txt')
    done = store.append(partial.id, 0, pieces(), complete=True)
    assert done.replaced and done.length == 0
    assert os.path.getsize(os.path.join(folder, 'same.txt')) == 0


def test_a_cut_append_keeps_what_arrived_and_resumes(store, folder):
    data = os.urandom(1_000_000)
    partial = store.create('cut.bin')
    fds = open_fds()
    with pytest.raises(ConnectionResetError):
        store.append(partial.id, 0, cut_after(data[:123_457], data[123_457:400_000]))
    assert open_fds() == fds
    offset = store.offset(partial.id)
    assert offset == 400_000
    # A framing error of the body (a bad chunk) keeps what came before it too.
    with pytest.raises(HTTPError):
        store.append(partial.id, offset, cut_after(data[offset:700_001],
                                                   error=HTTPError(400, 'bad chunk')))
    offset = store.offset(partial.id)
    assert offset == 700_001
    store.append(partial.id, offset, pieces(data[offset:]), complete=True)
    with open(os.path.join(folder, 'cut.bin'), 'rb') as f:
        assert sha(f.read()) == sha(data)


def test_the_offset_survives_a_restart_and_a_torn_tail_is_cut(store, folder):
    data = os.urandom(200_000)
    partial = store.create('restart.bin', length=len(data))
    with pytest.raises(ConnectionResetError):
        store.append(partial.id, 0, cut_after(data[:50_000]))
    # What a crash may leave: bytes written past the durable offset, never
    # acknowledged.  A new store (a restarted server) reports the durable offset
    # and the next append cuts the tail before writing.
    with open(os.path.join(folder, PREFIX + partial.id), 'ab') as f:
        f.write(b'\0' * 7_000)
    again = PartialStore(folder, max_upload=64 * MiB, expire_after=3600)
    assert again.offset(partial.id) == 50_000
    again.append(partial.id, 50_000, pieces(data[50_000:]), complete=True)
    with open(os.path.join(folder, 'restart.bin'), 'rb') as f:
        assert sha(f.read()) == sha(data)


def test_acknowledged_bytes_lost_deactivate_the_upload(store, folder):
    partial = store.create('lost.bin')
    store.append(partial.id, 0, pieces(b'x' * 1000))
    os.truncate(os.path.join(folder, PREFIX + partial.id), 10)
    with pytest.raises(UploadError) as caught:
        store.append(partial.id, 1000, pieces(b'y'))
    assert caught.value.status == 404
    assert store.open(partial.id) is None and hidden(folder) == []


def test_a_wrong_offset_is_a_conflict_with_the_right_one(store):
    partial = store.create('conflict.bin')
    store.append(partial.id, 0, pieces(b'a' * 10))
    for wrong in (0, 5, 11):
        with pytest.raises(Conflict) as caught:
            store.append(partial.id, wrong, pieces(b'b'))
        error = caught.value
        assert error.status == 409 and error.offset == 10
        assert ('Upload-Offset', '10') in error.headers
        assert error.problem == {
            'type': resumable.MISMATCHING_OFFSET, 'expected-offset': 10, 'provided-offset': wrong,
            'title': 'offset from request does not match offset of resource'}
    assert store.offset(partial.id) == 10


def held_source(first, entered, release):
    """A source that sends ``first``, says so, and waits to be released."""
    def source(sink):
        sink(first)
        entered.set()
        assert release.wait(WAIT)
    return source


def test_two_threads_racing_one_wins_one_conflicts(store, folder):
    partial = store.create('race.bin')
    entered, release = threading.Event(), threading.Event()
    results = []
    holder = threading.Thread(target=lambda: results.append(
        store.append(partial.id, 0, held_source(b'A' * 5000, entered, release))))
    holder.start()
    try:
        assert entered.wait(WAIT)
        other = PartialStore(folder, max_upload=64 * MiB, expire_after=3600)
        with pytest.raises(Conflict) as caught:
            other.append(partial.id, 0, pieces(b'B' * 5000))
        assert caught.value.offset == 0        # nothing acknowledged yet
        assert ('Upload-Offset', '0') in caught.value.headers
    finally:
        release.set()
        holder.join(WAIT)
    assert results and results[0].offset == 5000
    with open(os.path.join(folder, PREFIX + partial.id), 'rb') as f:
        assert f.read() == b'A' * 5000


def test_many_threads_racing_never_interleave(store, folder):
    partial = store.create('many.bin')
    start = threading.Barrier(8)
    outcomes = []

    def appender(mark):
        start.wait(WAIT)
        try:
            store.append(partial.id, 0, pieces(*[mark * 4096] * 16))
            outcomes.append(mark)
        except Conflict:
            outcomes.append(None)

    threads = [threading.Thread(target=appender, args=(bytes([65 + n]),)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    winners = [mark for mark in outcomes if mark is not None]
    assert len(outcomes) == 8 and len(winners) == 1
    with open(os.path.join(folder, PREFIX + partial.id), 'rb') as f:
        assert f.read() == winners[0] * 4096 * 16
    assert store.offset(partial.id) == 4096 * 16


CHILD = r'''
import sys
from minihttp.resumable import PartialStore
store = PartialStore(sys.argv[1], max_upload=None)
def source(sink):
    sink(b'P' * 3000)
    print('holding', flush=True)
    sys.stdin.readline()
state = store.append(sys.argv[2], 0, source)
print('offset', state.offset, flush=True)
'''


def read_line(process, deadline=WAIT):
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(deadline), 'the child said nothing in time'
    return process.stdout.readline().strip()


def test_two_processes_racing_one_wins_one_conflicts(store, folder):
    partial = store.create('processes.bin')
    child = subprocess.Popen([sys.executable, '-c', CHILD, folder, partial.id],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert read_line(child) == 'holding'
        with pytest.raises(Conflict):
            store.append(partial.id, 0, pieces(b'Q' * 3000))
        child.stdin.write('go\n')
        child.stdin.flush()
        assert read_line(child) == 'offset 3000'
        assert child.wait(WAIT) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(WAIT)
        child.stdin.close()
        child.stdout.close()
    # The process that lost may go on at the offset the winner reached.
    store.append(partial.id, 3000, pieces(b'Q' * 10), complete=True)
    with open(os.path.join(folder, 'processes.bin'), 'rb') as f:
        assert f.read() == b'P' * 3000 + b'Q' * 10


def test_expiry(folder):
    store = PartialStore(folder, max_upload=None, expire_after=100)
    t0 = time.time()
    old = store.create('old.bin', now=t0 - 50)         # lives until t0 + 50
    young = store.create('young.bin', now=t0)
    store.append(old.id, 0, pieces(b'z' * 10))
    assert store.open(old.id, now=t0 + 49).offset == 10
    assert store.open(old.id, now=t0 + 49).max_age(now=t0 + 49) == 1
    assert store.open(old.id, now=t0 + 50) is None      # expired counts as gone
    assert store.expire(now=t0 + 50) == 1
    assert hidden(folder) == sorted([PREFIX + young.id, f'{PREFIX}{young.id}.meta'])
    with pytest.raises(UploadError) as caught:
        store.append(old.id, 10, pieces(b'z'))
    assert caught.value.status == 404
    # Bounded work per call: a batch at a time.
    for n in range(5):
        store.create(f'n{n}.bin', now=t0)
    assert store.expire(now=t0 + 1000, batch=2) == 2
    assert store.expire(now=t0 + 1000) == 4
    assert hidden(folder) == []


def test_expire_removes_what_a_crash_left(folder):
    store = PartialStore(folder, max_upload=None, expire_after=100)
    orphan = os.path.join(folder, PREFIX + 'A' * 24)                 # data, no .meta
    torn = os.path.join(folder, PREFIX + 'B' * 24 + '.meta-x1y2')    # a .meta being written
    for path in (orphan, torn):
        with open(path, 'wb') as f:
            f.write(b'left')
        os.utime(path, (1000, 1000))
    assert store.expire(now=1050.0) == 0
    assert store.expire(now=1100.0) == 2
    assert hidden(folder) == []


def test_limits(folder):
    store = PartialStore(folder, max_upload=1000, expire_after=3600)
    with pytest.raises(HTTPError) as caught:
        store.create('big.bin', length=1001)
    assert caught.value.status == 413
    # Past max_upload with no length declared: 413, and the upload is gone.
    partial = store.create('grows.bin')
    store.append(partial.id, 0, pieces(b'a' * 600))
    with pytest.raises(HTTPError) as caught:
        store.append(partial.id, 600, pieces(b'b' * 300, b'c' * 200))
    assert caught.value.status == 413 and store.open(partial.id) is None
    # Past the declared length: 400 inconsistent length, and the upload is gone.
    partial = store.create('declared.bin', length=100)
    with pytest.raises(UploadError) as caught:
        store.append(partial.id, 0, pieces(b'a' * 60, b'b' * 60))
    assert caught.value.status == 400
    assert caught.value.problem['type'] == resumable.INCONSISTENT_LENGTH
    assert store.open(partial.id) is None
    # Complete short of the length: 400, and it stays, to be resumed.
    partial = store.create('short.bin', length=100)
    with pytest.raises(UploadError) as caught:
        store.append(partial.id, 0, pieces(b'a' * 60), complete=True)
    assert caught.value.status == 400 and store.offset(partial.id) == 60
    # A length that disagrees with the one declared before.
    with pytest.raises(UploadError) as caught:
        store.append(partial.id, 60, pieces(b'a'), length=99)
    assert caught.value.status == 400 and store.offset(partial.id) == 60
    # A length learnt on an append is kept, and enforced.
    partial = store.create('later.bin')
    store.append(partial.id, 0, pieces(b'a' * 10), length=20)
    assert store.open(partial.id).length == 20
    assert not os.path.exists(os.path.join(folder, 'later.bin'))
    assert all(not os.path.exists(os.path.join(folder, name)) for name in
               ('big.bin', 'grows.bin', 'declared.bin', 'short.bin'))


def test_too_many_uploads_in_progress(folder, monkeypatch):
    monkeypatch.setattr(resumable, 'MAX_PARTIALS', 3)
    store = PartialStore(folder, max_upload=None)
    for n in range(3):
        store.create(f'{n}.bin')
    with pytest.raises(HTTPError) as caught:
        store.create('one-more.bin')
    assert caught.value.status == 507


def test_completed_uploads_do_not_count_as_in_progress(folder, monkeypatch):
    """A completed upload is remembered until it expires (for a HEAD), but holds no
    bytes: a folder of more files than MAX_PARTIALS, uploaded one after another, is
    never refused; one cancelled frees its place too."""
    monkeypatch.setattr(resumable, 'MAX_PARTIALS', 3)
    store = PartialStore(folder, max_upload=None)
    for n in range(8):
        partial = store.create(f'done-{n}.bin')
        store.append(partial.id, 0, pieces(b'x' * n), complete=True)
    assert len(hidden(folder)) == 8                     # all remembered
    held = [store.create(f'{n}.bin') for n in range(3)]
    with pytest.raises(HTTPError) as caught:
        store.create('one-more.bin')
    assert caught.value.status == 507
    store.cancel(held[0].id)
    store.create('one-more.bin')


def test_names_are_checked(store):
    for bad in ('', '.hidden', 'a/../b', 'x\u202e.txt'):
        with pytest.raises(HTTPError) as caught:
            store.create(bad)
        assert caught.value.status == 400
    assert store.create('re\u0301sume\u0301.txt').name == 'r\u00e9sum\u00e9.txt'


def test_ids_that_are_not_ours_never_reach_the_disk(store):
    for bad in ('../../etc/passwd', 'A' * 23, 'A' * 25, 'A' * 23 + '/', None, 12):
        assert store.open(bad) is None
        with pytest.raises(UploadError) as caught:
            store.append(bad, 0, pieces(b'x'))
        assert caught.value.status == 404
        with pytest.raises(UploadError):
            store.cancel(bad)


def test_cancel_leaves_nothing(store, folder):
    partial = store.create('cancel.bin')
    store.append(partial.id, 0, pieces(b'c' * 1000))
    store.cancel(partial.id)
    assert hidden(folder) == [] and os.listdir(folder) == []
    with pytest.raises(UploadError) as caught:
        store.cancel(partial.id)
    assert caught.value.status == 404
    with pytest.raises(UploadError) as caught:
        store.append(partial.id, 1000, pieces(b'c'))
    assert caught.value.status == 404


def test_cancel_during_an_append(store, folder):
    partial = store.create('cancelled.bin')
    entered, release = threading.Event(), threading.Event()
    errors = []

    def append():
        try:
            store.append(partial.id, 0, held_source(b'x' * 100, entered, release), complete=True)
        except UploadError as exc:
            errors.append(exc.status)

    holder = threading.Thread(target=append)
    holder.start()
    try:
        assert entered.wait(WAIT)
        store.cancel(partial.id)
    finally:
        release.set()
        holder.join(WAIT)
    assert errors == [404]
    assert os.listdir(folder) == []          # not revived, and no file took the name


def test_rejected_bytes_are_not_kept(store):
    partial = store.create('rejected.bin')
    store.append(partial.id, 0, pieces(b'a' * 10))
    with pytest.raises(Rejected):
        store.append(partial.id, 10, cut_after(b'b' * 500,
                                               error=Rejected(400, 'Content-Digest mismatch')))
    assert store.offset(partial.id) == 10
    store.append(partial.id, 10, pieces(b'c' * 5))
    assert store.offset(partial.id) == 15


def test_a_full_disk_rolls_back_to_the_durable_offset(store, folder, monkeypatch):
    partial = store.create('full.bin')
    store.append(partial.id, 0, pieces(b'a' * 100))
    real_write = os.write
    calls = []

    def write(fd, data):
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_write(fd, data)

    fds = open_fds()
    monkeypatch.setattr(resumable.os, 'write', write)
    with pytest.raises(HTTPError) as caught:
        store.append(partial.id, 100, pieces(b'b' * 50, b'c' * 50))
    monkeypatch.undo()
    assert caught.value.status == 507
    assert store.offset(partial.id) == 100
    assert os.path.getsize(os.path.join(folder, PREFIX + partial.id)) == 100
    assert open_fds() == fds


def test_a_long_append_checkpoints_its_offset(store, folder, monkeypatch):
    monkeypatch.setattr(resumable, 'WRITEBACK_STEP', 64 * 1024)
    checkpointed = threading.Event()
    real_checkpoint = resumable.Append.checkpoint

    def checkpoint(self, size):
        real_checkpoint(self, size)
        checkpointed.set()

    monkeypatch.setattr(resumable.Append, 'checkpoint', checkpoint)
    partial = store.create('long.bin')
    other = PartialStore(folder, max_upload=None)
    seen = []

    def source(sink):
        for _ in range(8):
            sink(b'L' * 32 * 1024)
        # A checkpoint started at 64 KiB: once it is done, another process sees
        # its offset while this append still holds the upload.
        assert checkpointed.wait(WAIT)
        seen.append(other.offset(partial.id))
        raise ConnectionResetError(errno.ECONNRESET, 'reset')

    with pytest.raises(ConnectionResetError):
        store.append(partial.id, 0, source)
    assert seen and 64 * 1024 <= seen[0] < 256 * 1024 and seen[0] % (32 * 1024) == 0
    assert store.offset(partial.id) == 256 * 1024


def test_partials_are_hidden_from_uploads(store, folder):
    assert not PREFIX.startswith(TEMP_PREFIX) and not TEMP_PREFIX.startswith(PREFIX)
    uploads = UploadStore(folder, max_upload=None)
    partial = store.create('listed-later.bin')
    store.append(partial.id, 0, pieces(b'h' * 10))
    assert uploads.stored() == []
    uploads.sweep()                               # a start's sweep leaves partials alone
    assert store.offset(partial.id) == 10
    store.append(partial.id, 10, pieces(), complete=True)
    assert [item['name'] for item in uploads.stored()] == ['listed-later.bin']


def test_limit_field():
    assert limit_field(1000, 3600) == 'max-size=1000, max-age=3600'
    assert limit_field(1000, 3600, interop=6) == 'max-size=1000, expires=3600'
    assert limit_field(None, 5, interop=9) == 'max-age=5'


@pytest.mark.parametrize('whole', [False, True], ids=['checkpointed', 'whole'])
def test_a_rejected_part_goes_back_to_where_it_started(store, folder, monkeypatch, whole):
    """Past checkpoints too: a part rejected (a Content-Digest that did not match) is
    not acknowledged, so the offset returns to where the append started.  A ``whole``
    part (its digest known from the head) has no checkpoint claim any of it."""
    monkeypatch.setattr(resumable, 'WRITEBACK_STEP', 1000)
    partial = store.create('parts.bin')
    store.append(partial.id, 0, pieces(b'a' * 10))
    seen = []

    def source(sink):
        for _ in range(5):
            sink(b'b' * 1000)
        if not whole:          # the background checkpoint claims them
            wait_until(lambda: store.offset(partial.id) > 10, 'a checkpoint')
        seen.append(store.offset(partial.id))
        raise Rejected(400, 'content-digest sha-256 does not match the content received')

    with pytest.raises(Rejected):
        store.append(partial.id, 10, source, whole=whole)
    assert (seen[0] == 10) if whole else (seen[0] > 10)
    assert store.offset(partial.id) == 10
    assert os.path.getsize(os.path.join(folder, PREFIX + partial.id)) == 10


def test_a_whole_part_cut_midway_keeps_nothing(store, folder):
    partial = store.create('whole.bin')
    store.append(partial.id, 0, pieces(b'a' * 10))
    with pytest.raises(ConnectionResetError):
        store.append(partial.id, 10, cut_after(b'b' * 500), whole=True)
    assert store.offset(partial.id) == 10
    assert os.path.getsize(os.path.join(folder, PREFIX + partial.id)) == 10


def held_meta_writes(monkeypatch, writing, release):
    """Every .meta write of the store pauses once its temporary file is written,
    says so (``writing``) and waits for ``release``: the moment a cancel found
    a checkpoint's temporary .meta in the folder."""
    class Held(resumable.AtomicFile):
        def finish(self):
            super().finish()
            writing.set()
            assert release.wait(WAIT)

    monkeypatch.setattr(resumable, 'AtomicFile', Held)


def cancel_waits_said(monkeypatch, cancelling):
    """``cancelling`` is set when the thread named 'cancel' is about to wait for
    the upload's end lock (resumable.ending)."""
    real_ending = resumable.ending

    def ending(fd):
        if threading.current_thread().name == 'cancel':
            cancelling.set()
        return real_ending(fd)

    monkeypatch.setattr(resumable, 'ending', ending)


def cancel_while_held(appender, held, canceller, cancelling, release):
    """Start ``appender``; once it is ``held``, start ``canceller``; once that one
    waits for the lock or is done (``cancelling``), ``release`` the appender;
    both end within WAIT."""
    appender.start()
    try:
        assert held.wait(WAIT)
        canceller.start()
        assert cancelling.wait(WAIT)
    finally:
        release.set()
        appender.join(WAIT)
        if canceller.ident is not None:
            canceller.join(WAIT)
    assert not appender.is_alive() and not canceller.is_alive()


def test_a_cancel_during_a_meta_write_leaves_nothing_once_answered(store, folder, monkeypatch):
    """The append's client leaves; while its offset is being written to .meta, a
    DELETE comes.  Once the cancel returns (the 204 goes out), nothing of the
    upload is in the folder, and the append's end does not bring any back."""
    partial = store.create('raced.bin')
    writing, release, cancelling = threading.Event(), threading.Event(), threading.Event()
    held_meta_writes(monkeypatch, writing, release)
    cancel_waits_said(monkeypatch, cancelling)
    errors, after_cancel = [], []

    def append():
        try:
            store.append(partial.id, 0, cut_after(b'm' * 10_000))
        except (UploadError, ConnectionResetError) as exc:
            errors.append(exc)

    def cancel():
        try:
            store.cancel(partial.id)
        finally:
            after_cancel.append(hidden(folder))
            cancelling.set()

    cancel_while_held(threading.Thread(target=append), writing,
                      threading.Thread(target=cancel, name='cancel'), cancelling, release)
    assert after_cancel == [[]]               # nothing left when the 204 would go out
    assert os.listdir(folder) == []
    assert [type(exc) for exc in errors] == [ConnectionResetError]   # the client's own end
    assert store.open(partial.id) is None


def held_after_commit(store):
    """The store's completions held just after the data file took its name:
    (renamed, set then; release, which lets the completion go on)."""
    renamed, release = threading.Event(), threading.Event()
    real_commit = store.uploads.commit

    def commit(*args, **kwargs):
        result = real_commit(*args, **kwargs)
        renamed.set()
        assert release.wait(WAIT)
        return result

    store.uploads.commit = commit
    return renamed, release


def test_a_cancel_just_after_the_completing_rename_leaves_only_the_file(store, folder):
    """The completion renamed the data file (the file is stored: the completion
    won) and has still to write the remembered state when a DELETE comes: the
    cancel removes the state the completion wrote to put in place, and the .meta,
    and the completion's last rename then fails: it writes none."""
    partial = store.create('won.bin')
    renamed, release = held_after_commit(store)
    results = []
    appender = threading.Thread(target=lambda: results.append(
        store.append(partial.id, 0, pieces(b'w' * 3000), complete=True)))
    appender.start()
    try:
        assert renamed.wait(WAIT)
        store.cancel(partial.id)
        assert hidden(folder) == []
    finally:
        release.set()
        appender.join(WAIT)
    assert not appender.is_alive()
    assert results and results[0].complete             # its answer: stored
    assert os.listdir(folder) == ['won.bin']           # and nothing of the upload
    with open(os.path.join(folder, 'won.bin'), 'rb') as stored:
        assert stored.read() == b'w' * 3000
    assert store.open(partial.id) is None


def test_a_cancel_while_a_completion_holds_the_upload_waits_and_removes_its_state(
        store, folder, monkeypatch):
    """A DELETE that comes while the completion is renaming waits for it; the file
    is stored (the completion won), and the cancel removes the remembered state."""
    partial = store.create('first.bin')
    committing, release, cancelling = threading.Event(), threading.Event(), threading.Event()
    real_commit = store.uploads.commit

    def commit(*args, **kwargs):
        committing.set()
        assert release.wait(WAIT)
        return real_commit(*args, **kwargs)

    store.uploads.commit = commit
    cancel_waits_said(monkeypatch, cancelling)
    results, cancelled = [], []
    appender = threading.Thread(target=lambda: results.append(
        store.append(partial.id, 0, pieces(b'f' * 3000), complete=True)))
    canceller = threading.Thread(target=lambda: cancelled.append(store.cancel(partial.id)),
                                 name='cancel')
    cancel_while_held(appender, committing, canceller, cancelling, release)
    assert results and results[0].complete and cancelled == [None]
    assert os.listdir(folder) == ['first.bin']
    assert store.open(partial.id) is None


@pytest.mark.parametrize('limit', ['length', 'max_upload'])
def test_an_append_past_its_limit_during_a_checkpoint_leaves_nothing(folder, monkeypatch, limit):
    """An append that passes the declared length (or --max-upload) removes the
    upload; a checkpoint writing the .meta at that moment must not bring the
    .meta back once the removal is done (the removal holds the end lock too)."""
    store = PartialStore(folder, max_upload=100 * 1024 if limit == 'max_upload' else None,
                         expire_after=3600)
    partial = store.create('over.bin', length=100 * 1024 if limit == 'length' else None)
    monkeypatch.setattr(resumable, 'WRITEBACK_STEP', 64 * 1024)
    writing, release, removing = threading.Event(), threading.Event(), threading.Event()
    held_meta_writes(monkeypatch, writing, release)
    real_wait = resumable.Append.wait

    def wait(self):
        if threading.current_thread().name == 'appender':
            removing.set()          # the appender waits for the checkpoint's write
        return real_wait(self)

    monkeypatch.setattr(resumable.Append, 'wait', wait)
    real_remove = store._remove

    def remove(upload_id):
        real_remove(upload_id)
        removing.set()              # (or it removed without waiting)

    store._remove = remove
    errors = []

    def source(sink):
        sink(b'o' * 64 * 1024)              # a checkpoint starts, its .meta write held
        assert writing.wait(WAIT)
        sink(b'o' * 40 * 1024)              # past the limit: the upload is removed

    def append():
        try:
            store.append(partial.id, 0, source)
        except UploadError as exc:
            errors.append(exc)

    appender = threading.Thread(target=append, name='appender')
    appender.start()
    try:
        assert removing.wait(WAIT)
    finally:
        release.set()
        appender.join(WAIT)
    assert not appender.is_alive()
    assert [exc.status for exc in errors] == [400 if limit == 'length' else 413]
    assert hidden(folder) == []
    assert store.open(partial.id) is None


def test_a_cancel_in_the_completions_last_write_leaves_nothing_once_answered(
        store, folder, monkeypatch):
    """The completion renamed the data file and is writing the remembered state
    when a cancel, which read the .meta and then found no data file, removes what
    it finds: once it returns, nothing of the upload is in the folder, and the
    completion's last write brings no .meta back (the file stays: it won)."""
    partial = store.create('gap.bin')
    renamed, go_on = held_after_commit(store)
    in_gap, go_commit = threading.Event(), threading.Event()
    removing, go_remove = threading.Event(), threading.Event()
    data = os.path.join(folder, PREFIX + partial.id)
    real_rename, real_replace = os.rename, os.replace

    def held(real):
        def move(source, target, *args, **kwargs):
            # The completion's .meta write, once its data file is renamed.
            if (threading.current_thread().name == 'appender'
                    and str(target).endswith(resumable.META) and not os.path.exists(data)):
                in_gap.set()
                assert go_commit.wait(WAIT)
            return real(source, target, *args, **kwargs)
        return move

    monkeypatch.setattr(resumable.os, 'rename', held(real_rename))
    monkeypatch.setattr(resumable.os, 'replace', held(real_replace))
    real_remove = store._remove

    def remove(upload_id):
        if threading.current_thread().name == 'cancel':
            removing.set()
            assert go_remove.wait(WAIT)
        real_remove(upload_id)

    store._remove = remove
    results, after_cancel = [], []
    appender = threading.Thread(name='appender', target=lambda: results.append(
        store.append(partial.id, 0, pieces(b'g' * 3000), complete=True)))

    def cancel():
        try:
            store.cancel(partial.id)
        except UploadError as exc:
            after_cancel.append(exc.status)
        after_cancel.append(hidden(folder))

    canceller = threading.Thread(name='cancel', target=cancel)
    appender.start()
    try:
        assert renamed.wait(WAIT)
        canceller.start()
        assert removing.wait(WAIT)       # the cancel found no data file
        go_on.set()
        in_gap.wait(WAIT)                # the completion writes its state (if it does)
        go_remove.set()
        canceller.join(WAIT)
    finally:
        go_on.set()
        go_remove.set()
        go_commit.set()
        appender.join(WAIT)
        canceller.join(WAIT)
    assert not appender.is_alive() and not canceller.is_alive()
    assert results and results[0].complete
    assert os.listdir(folder) == ['gap.bin']
    assert store.open(partial.id) is None
