"""The block transport of Listing 5-2: length-prefixed blocks, an empty one ends the stream.

On the wire a block is a 4-byte big-endian length and then that many bytes of
payload.  A block of length 0 says "no more blocks".  Reading one is two exact
reads on the framing core: the header, then the payload.
"""

import os
import struct
import sys
import tempfile
import time

from .framing import IncompleteRead, StreamReader, write_all
from .limits import BLOCK_PREVIEW, BLOCK_STREAM_THRESHOLD, CLIENT_BLOCK_SIZE, MAX_BLOCK
from .records import block_record, keep_size
from .report import say

# The length prefix: 4 bytes, network (big-endian) order, unsigned, so one
# block carries at most 2**32 - 1 bytes.  The receiver's --max-block is what
# really limits it.
HEADER = struct.Struct('!I')

# What the book's client sends, line for line.
ZEN = (b'Beautiful is better than ugly.',
       b'Explicit is better than implicit.',
       b'Simple is better than complex.')


class BlockTooLarge(Exception):
    """A header announced more than the receiver accepts; no payload was read."""

    def __init__(self, length, limit):
        self.length = length
        self.limit = limit
        super().__init__(f'block of {length} bytes announced, the limit is {limit}')


class TruncatedBlock(EOFError):
    """The stream ended inside a block's header or payload."""

    def __init__(self, part, cause):
        self.part = part            # 'header' or 'payload'
        self.missing = cause.missing
        super().__init__(f'stream cut inside a block {part}: {cause}')


# -- reading ----------------------------------------------------------------

def get_length(reader, limit=MAX_BLOCK):
    """Read a block header: the payload length, checked against ``limit``.

    Returns None when the stream ends cleanly before a header begins (the
    peer closed without sending the empty block).
    """
    if reader.at_eof():
        return None
    try:
        (length,) = HEADER.unpack(reader.read_exact(HEADER.size))
    except IncompleteRead as exc:
        raise TruncatedBlock('header', exc) from None
    if length > limit:
        raise BlockTooLarge(length, limit)
    return length


def get_block(reader, limit=MAX_BLOCK):
    """Read one block and return its payload (b'' for the end-of-stream block)."""
    length = get_length(reader, limit)
    if length is None:
        raise TruncatedBlock('header', IncompleteRead(HEADER.size, 0))
    try:
        return reader.read_exact(length)
    except IncompleteRead as exc:
        raise TruncatedBlock('payload', exc) from None


def get_block_to(reader, sink, length):
    """Stream a payload whose header was already read into ``sink``, piece by piece."""
    try:
        return reader.read_exact_to(length, sink)
    except IncompleteRead as exc:
        raise TruncatedBlock('payload', exc) from None


# -- writing ----------------------------------------------------------------

def put_block(sock, payload):
    """Send one block: the header and the payload in a single gather-write."""
    write_all(sock, HEADER.pack(len(payload)), payload)


def put_stream(sock, source, block_size=CLIENT_BLOCK_SIZE, progress=None):
    """Send a binary file as blocks of ``block_size``, then the empty block; return bytes sent.

    ``progress(total)`` is told the bytes sent so far after each block.
    """
    total = 0
    buf = bytearray(block_size)
    view = memoryview(buf)
    while True:
        got = source.readinto(view)
        if not got:
            break
        put_block(sock, view[:got])
        total += got
        if progress is not None:
            progress(total)
    put_block(sock, b'')
    return total


# -- the server ---------------------------------------------------------------

def describe(payload, size=None):
    """How `Block says:` shows a payload: its repr, or its size and a prefix when long."""
    size = len(payload) if size is None else size
    if size <= BLOCK_PREVIEW:
        return repr(bytes(payload))
    return f'{size} bytes {bytes(payload[:BLOCK_PREVIEW // 2])!r}...'


class Saver:
    """Collects one connection's payload bytes in a temporary file in ``directory``.

    The file gets its final name only in ``commit`` (after the empty block);
    ``discard`` removes it, so a broken stream leaves nothing behind.
    """

    def __init__(self, directory, peer):
        self.directory = directory
        self.name = f'blocks-{time.strftime("%Y%m%dT%H%M%S")}-{peer[0]}-{peer[1]}.bin'
        fd, self.temp_path = tempfile.mkstemp(prefix='.incoming-', dir=directory)
        os.fchmod(fd, 0o644)   # mkstemp makes it private; the saved file is not secret
        self.file = os.fdopen(fd, 'wb')
        self.write = self.file.write
        self.size = 0

    def commit(self):
        self.file.flush()
        os.fsync(self.file.fileno())
        self.size = self.file.tell()
        self.file.close()
        path = os.path.join(self.directory, self.name)
        os.replace(self.temp_path, path)
        return path

    def discard(self):
        self.file.close()
        try:
            os.unlink(self.temp_path)
        except FileNotFoundError:
            pass


class BlockServer:
    """The handler a Listener runs for each block connection."""

    def __init__(self, max_block=MAX_BLOCK, save_dir=None, quiet=False, records=None):
        self.max_block = max_block
        self.save_dir = save_dir
        self.quiet = quiet
        self.records = records    # a FramingLog that keeps each stream's record, or None

    def __call__(self, conn):
        peer = f'{conn.peer[0]}:{conn.peer[1]}'
        say(f'Accepted connection from {peer}')
        reader = StreamReader(conn.sock)
        saver = None
        blocks = total = 0
        lengths = []        # the first blocks' sizes, for the framing record
        try:
            saver = Saver(self.save_dir, conn.peer) if self.save_dir else None
            while True:
                conn.idle = True
                length = get_length(reader, self.max_block)
                conn.idle = False
                if length is None:
                    why = 'the server is stopping' if conn.stopping else 'the peer closed'
                    problem = (f'{peer}: stream ended without the empty block after {blocks} '
                               f'blocks ({why})')
                    break
                if not length:
                    line = f'{peer}: end of stream after {blocks} blocks, {total} bytes'
                    if saver:
                        line += f'; saved to {saver.commit()}'
                        saver = None
                    problem = None
                    break
                self.receive(reader, length, saver)
                blocks += 1
                total += length
                keep_size(lengths, length)
        except TruncatedBlock as exc:
            problem = f'{peer}: {exc}, after {blocks} whole blocks'
        except BlockTooLarge as exc:
            problem = f'{peer}: refused: {exc}; closing without reading it'
        except ConnectionError as exc:
            problem = f'{peer}: connection failed: {exc}, after {blocks} whole blocks'
        except OSError as exc:
            problem = f'{peer}: {"saving" if saver else "connection"} failed: {exc}'
        finally:
            if saver:
                saver.discard()
        # Reported once the temporary file is gone: whoever acts on the line
        # (a person, a script, a test) finds no trace of the broken stream.
        if problem:
            say(problem, err=True)
        else:
            say(line)
        if self.records is not None:
            ended = problem.partition(': ')[2] if problem else 'ended by the empty block'
            self.records.add(block_record(conn.peer, time.time(), blocks, total, lengths, ended))

    def receive(self, reader, length, saver):
        """Read one payload: whole when small, streamed when above the threshold."""
        if length <= BLOCK_STREAM_THRESHOLD:
            try:
                payload = reader.read_exact(length)
            except IncompleteRead as exc:
                raise TruncatedBlock('payload', exc) from None
            if saver:
                saver.write(payload)
            if not self.quiet:
                say(f'Block says: {describe(payload)}')
            return
        prefix = bytearray()

        def sink(piece):
            if len(prefix) < BLOCK_PREVIEW:
                prefix.extend(piece[:BLOCK_PREVIEW - len(prefix)])
            if saver:
                saver.write(piece)

        get_block_to(reader, sink, length)
        if not self.quiet:
            say(f'Block says: {describe(prefix, length)}')


# -- the client ---------------------------------------------------------------

def client(sock, source=None, block_size=CLIENT_BLOCK_SIZE, progress=None):
    """Send the book's three lines, or a file, then the empty block."""
    if source is None:
        for line in ZEN:
            put_block(sock, line)
        put_block(sock, b'')
        return sum(map(len, ZEN))
    return put_stream(sock, source, block_size, progress)


def open_source(path):
    """The binary file to send: a path, or '-' for standard input."""
    return sys.stdin.buffer if path == '-' else open(path, 'rb')
