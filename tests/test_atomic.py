"""The one way minihttp stores a file: a temporary file beside its name, fsynced, renamed into place.

Uploads and the block server's --save both stand on minihttp.atomic; these
tests pin what each may rely on: the name appears only at commit, with the
bytes written and a public mode, the directory is synced after the rename,
and every other path (a failure while it is made, written or finished)
leaves the directory as it was.
"""

import errno
import os
import stat

import pytest

from minihttp import atomic
from minihttp.atomic import AtomicFile


def test_the_name_appears_only_at_commit_with_every_byte_and_a_public_mode(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(atomic, 'sync_directory', synced.append)
    (tmp_path / 'kept.bin').write_bytes(b'the previous version')
    made = AtomicFile(tmp_path, '.temp-')
    made.file.write(b'new ')
    made.file.write(b'content')
    assert (tmp_path / 'kept.bin').read_bytes() == b'the previous version'
    made.finish()
    assert (tmp_path / 'kept.bin').read_bytes() == b'the previous version'
    made.commit(str(tmp_path / 'kept.bin'))
    made.discard()                      # its owner calls it on every path: a commit stays
    assert os.listdir(tmp_path) == ['kept.bin']
    assert (tmp_path / 'kept.bin').read_bytes() == b'new content'
    assert stat.S_IMODE(os.stat(tmp_path / 'kept.bin').st_mode) == atomic.FILE_MODE
    assert synced == [str(tmp_path)]


def test_a_discarded_file_leaves_the_directory_as_it_was(tmp_path):
    (tmp_path / 'kept.bin').write_bytes(b'the previous version')
    made = AtomicFile(tmp_path, '.temp-')
    made.file.write(b'half')
    assert len(os.listdir(tmp_path)) == 2
    made.discard()
    made.discard()                      # twice is harmless
    assert os.listdir(tmp_path) == ['kept.bin']
    assert (tmp_path / 'kept.bin').read_bytes() == b'the previous version'


def test_a_failure_while_it_is_made_leaves_no_temporary_file(tmp_path, monkeypatch):
    def refuse(fd, mode):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))
    monkeypatch.setattr(atomic.os, 'fchmod', refuse)
    with pytest.raises(PermissionError):
        AtomicFile(tmp_path, '.temp-')
    assert os.listdir(tmp_path) == []


def test_a_failed_fsync_at_finish_leaves_nothing_once_discarded(tmp_path, monkeypatch):
    made = AtomicFile(tmp_path, '.temp-')
    made.file.write(b'data')

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(atomic.os, 'fsync', no_space)
    with pytest.raises(OSError, match='No space'):
        made.finish()
    made.discard()
    assert os.listdir(tmp_path) == []


def test_sync_directory_syncs_a_real_directory(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)
    monkeypatch.setattr(atomic.os, 'fsync', fsync)
    atomic.sync_directory(str(tmp_path))
    assert synced == [True]
