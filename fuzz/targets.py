"""The entry points every fuzzer drives: bytes in, a message or the protocol's error out.

Each target reads ``data`` the way the server would, delivered in pieces of
``piece`` bytes, and returns quietly for a parsed message or the protocol's
own error (an HTTPError with its 4xx/5xx status and a one-line reason, a
truncated or oversized block).  Anything else (another exception, an
assertion) is a bug.  The hypothesis tests (tests/test_fuzz.py) and the
coverage-guided runs of ``make fuzz`` share them, and every input a run
finds crashing is kept in fuzz/crashes/ and replayed by the tests.
"""

import collections

from minihttp import multipart
from minihttp.blocks import BlockTooLarge, TruncatedBlock, get_block
from minihttp.framing import StreamReader
from minihttp.bodies import ChunkedBody, open_body
from minihttp.errors import HTTPError
from minihttp.request import read_request


class Pieces:
    """A socket that hands ``data`` out ``piece`` bytes at a time, then EOF.

    With ``waits``, it has nothing to give (BlockingIOError) before each piece,
    as a non-blocking socket in the event loop does.
    """

    def __init__(self, data, piece, waits=False):
        piece = max(1, piece)
        self.pieces = collections.deque(data[at:at + piece] for at in range(0, len(data), piece))
        self.waits = waits
        self.ready = False

    def recv_into(self, buffer):
        if self.waits and not self.ready and self.pieces:
            self.ready = True
            raise BlockingIOError('nothing yet')
        self.ready = False
        if not self.pieces:
            return 0
        chunk = self.pieces.popleft()
        view = memoryview(buffer)
        taken = min(len(view), len(chunk))
        view[:taken] = chunk[:taken]
        if taken < len(chunk):
            self.pieces.appendleft(chunk[taken:])
        return taken


def protocol_error(error):
    assert 400 <= error.status < 600, error
    assert error.reason and '\n' not in error.reason, error.reason


def head_and_body(data, piece):
    """Requests off a stream, heads and bodies, as a pool thread reads them."""
    reader = StreamReader(Pieces(data, piece), buffer_size=64)
    try:
        while (request := read_request(reader)) is not None:
            body = open_body(request, reader)
            body.read(limit=1 << 20)
            assert body.done
    except HTTPError as error:
        protocol_error(error)


def chunked(data, piece):
    """A chunked body on its own: chunks, extensions, the trailer section."""
    body = ChunkedBody(StreamReader(Pieces(data, piece), buffer_size=32))
    received = bytearray()
    try:
        body.read_to(received.extend)
    except HTTPError as error:
        protocol_error(error)
        return
    assert body.done and len(received) == body.received


BOUNDARY = b'b0undary'


def form(data, piece):
    """A multipart/form-data body with a known boundary, as a Content-Length body."""
    head = b'POST /uploads/ HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n' % len(data)
    reader = StreamReader(Pieces(head + data, piece), buffer_size=64)
    body = open_body(read_request(reader), reader)
    try:
        multipart.read_parts(body, BOUNDARY, lambda part: (lambda piece: None), limit=1 << 20)
    except HTTPError as error:
        protocol_error(error)


def blocks(data, piece):
    """Listing 5-2's blocks until the empty one, with a 4 KiB limit."""
    reader = StreamReader(Pieces(data, piece), buffer_size=16)
    try:
        while get_block(reader, limit=4096):
            pass
    except (TruncatedBlock, BlockTooLarge):
        pass


def loop_head(data, piece):
    """A head read the event loop's way: non-blocking, asked again after each wait."""
    reader = StreamReader(Pieces(data, piece, waits=True), buffer_size=64)
    for _ in range(2 * len(data) + 2):
        try:
            read_request(reader)
            return
        except BlockingIOError:
            continue
        except HTTPError as error:
            protocol_error(error)
            return
    raise AssertionError('the head reader made no progress')


TARGETS = {'head': head_and_body, 'chunked': chunked, 'form': form, 'blocks': blocks,
           'loop-head': loop_head}
