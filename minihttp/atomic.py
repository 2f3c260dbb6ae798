"""Files that appear whole or not at all: written under a temporary name, renamed into place.

The temporary file is made in the directory of its final name, so that the
rename is one atomic step on one file system: a reader sees the previous
version or the new one, never a part.  Before the rename the data is flushed
to the disk (fsync), and after it the directory, so that the new name
survives a crash too.  On any other path the temporary file is removed.
Both the uploads and the block server's --save write this way.
"""

import os
import tempfile

# Who may read what is stored: a file that is served or saved is not secret
# (mkstemp makes it readable by its owner only).
FILE_MODE = 0o644


def sync_directory(directory):
    """Make the renames in ``directory`` durable (POSIX keeps names in the directory)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """A temporary file in ``directory`` (named ``prefix``...) that becomes a file only by ``commit``.

    ``file`` is the open binary file to write to.  ``finish`` flushes it to
    the disk and closes it; ``commit`` renames it over its final name.  Its
    one owner calls ``discard`` on every path, after a commit too: it closes
    and removes whatever is left, and may be called more than once.
    """

    def __init__(self, directory, prefix):
        fd, self.temp_path = tempfile.mkstemp(prefix=prefix, dir=directory)
        try:
            os.fchmod(fd, FILE_MODE)
            self.file = os.fdopen(fd, 'wb')
        except BaseException:
            os.close(fd)
            os.unlink(self.temp_path)
            raise

    def finish(self):
        """Flush what was written to the disk and close the file; not yet visible."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def commit(self, path):
        """Rename the finished file to ``path`` (in the same directory), durably."""
        os.replace(self.temp_path, path)
        self.temp_path = None
        sync_directory(os.path.dirname(path))

    def discard(self):
        """Close the file and remove it unless it was committed."""
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass            # its last bytes could not be written: thrown away anyway
        if self.temp_path is not None:
            try:
                os.unlink(self.temp_path)
            except FileNotFoundError:
                pass
            self.temp_path = None
