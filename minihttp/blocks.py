"""The block transport of Listing 5-2: length-prefixed blocks, an empty one ends the stream.

On the wire a block is a 4-byte big-endian length and then that many bytes of
payload.  A block of length 0 says "no more blocks".  Reading one is two exact
reads on the framing core: the header, then the payload.  The server that
receives streams of them is minihttp.blockserver; the client is here.
"""

import socket
import struct
import sys

from .framing import IncompleteRead, write_all
from .limits import BLOCK_PREVIEW, CLIENT_BLOCK_SIZE, MAX_BLOCK

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


def put_stream(sock, source, block_size=CLIENT_BLOCK_SIZE, progress=None, hashing=None):
    """Send a binary file as blocks of ``block_size``, then the empty block; return bytes sent.

    ``progress(total)`` is told the bytes sent so far after each block;
    ``hashing`` (a hashlib object), when given, is updated with every payload.
    """
    total = 0
    buf = bytearray(block_size)
    view = memoryview(buf)
    while True:
        got = source.readinto(view)
        if not got:
            break
        put_block(sock, view[:got])
        if hashing is not None:
            hashing.update(view[:got])
        total += got
        if progress is not None:
            progress(total)
    put_block(sock, b'')
    return total


# -- showing one (the server's `Block says:` lines) ------------------------------

def describe(payload, size=None):
    """How `Block says:` shows a payload: its repr, or its size and a prefix when long."""
    size = len(payload) if size is None else size
    if size <= BLOCK_PREVIEW:
        return repr(bytes(payload))
    return f'{size} bytes {bytes(payload[:BLOCK_PREVIEW // 2])!r}...'


# -- the client ---------------------------------------------------------------

def client(sock, source=None, block_size=CLIENT_BLOCK_SIZE, progress=None, hashing=None):
    """Send the book's three lines, or a file, then the empty block; ``hashing``
    (a hashlib object, or None) is updated with every payload sent."""
    if source is None:
        for line in ZEN:
            put_block(sock, line)
            if hashing is not None:
                hashing.update(line)
        put_block(sock, b'')
        return sum(map(len, ZEN))
    return put_stream(sock, source, block_size, progress, hashing)


def open_source(path):
    """The binary file to send: a path, or '-' for standard input."""
    return sys.stdin.buffer if path == '-' else open(path, 'rb')


class Refused(Exception):
    """The server did not take the whole stream: it reset the connection, or sent bytes."""


def wait_for_close(sock, timeout, half_close=True):
    """After the empty block: wait for the server to close, as it does once the stream
    is kept.  Our side is shut for writing, so the server reads to the end; a reset
    (the server closed with our bytes unread: it refused a block, or was stopping)
    or no close within ``timeout`` raises Refused.  Over TLS (``half_close``
    False) nothing is shut: SSLSocket.shutdown would drop the TLS layer under
    the read that follows, and the server's close_notify ends that read (a TCP end
    without one, which anyone on the path can make, raises Refused)."""
    if half_close:
        sock.shutdown(socket.SHUT_WR)
    sock.settimeout(timeout)
    try:
        extra = sock.recv(1)
    except TimeoutError:
        raise Refused(f'no close within {timeout:g} s after the empty block: '
                      'whether the stream was kept is unknown') from None
    except ConnectionResetError:
        raise Refused('the server reset the connection: it refused or cut the stream '
                      '(its log says why)') from None
    if extra:
        raise Refused('the server sent bytes: it does not speak the block protocol')
    if getattr(sock, 'ragged', False):
        # Over TLS the server ends a kept stream with close_notify; a bare TCP end may be
        # anyone's (RFC 8446 section 6.1), and a server's own cut or deadline ends so too.
        raise Refused('the server closed without TLS close_notify: whether the stream '
                      'was kept is unknown (its log says)')
