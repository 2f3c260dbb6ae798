"""Request bodies: one reader per framing, pulling from the framing core.

A body measured by Content-Length is one streamed exact read.  A chunked body
(RFC 9112 section 7.1) is, per chunk, a delimiter-read size line, an exact
read of the data and an exact read of the CRLF after it, up to the zero-size
last chunk and a trailer section read line by line.  Both share one interface
(``pieces``, ``read_to``, ``read``), so the rest of the server does not care
how a body was framed; ``open_body`` picks the reader by the request's
transfer.Framing.  ``buffered_body`` runs the same readers over what a
connection has buffered, to tell whether a whole body is already there.
"""

from .errors import HTTPError, SizeLimit, framing_error
from .framing import IncompleteRead, LimitExceeded
from .grammar import CHUNK_EXT, CHUNK_LINE, CRLF
from .limits import (BODY_PIECE, MAX_CHUNK_LINE, MAX_TRAILER, MAX_TRAILER_FIELDS,
                     STREAM_BUFFER_SIZE)
from .records import Sizes
from .request import read_field_lines, read_line
from .transfer import (CHUNKED, CHUNKED_BODY, LENGTH, NO_BODY, NONE, NOT_TRAILERS,
                       content_length, request_framing)


class Body:
    """The request body, however it was framed.

    ``pieces()`` yields it in pieces of at most BODY_PIECE bytes (a chunked body
    yields each chunk whole when it fits, so chunk boundaries survive);
    ``read_to(sink)`` streams it into a callable without copies; ``read()``
    returns it whole, for bodies known to be small.  ``received`` counts the
    bytes so far and ``done`` says whether the end of the body was reached.
    Before the first byte is read, ``start`` sends ``100 Continue`` if the
    client is waiting for it (RFC 9110 section 10.1.1).
    """

    framing = NO_BODY
    length = 0

    def __init__(self, reader, send_continue=None):
        self.reader = reader
        self.received = 0
        self.done = self.framing.kind == NONE
        self.chunks = 0
        self.trailers = []           # [(name, value)]: a chunked body's, once read
        self.ignored_trailers = ()   # names of trailer fields dropped (NOT_TRAILERS)
        self._send_continue = send_continue

    @property
    def started(self):
        return self._send_continue is None

    def start(self):
        if self._send_continue is not None:
            send, self._send_continue = self._send_continue, None
            send()

    def pieces(self):
        self.start()
        self.done = True
        return iter(())

    def read_to(self, sink):
        self.start()
        self.done = True
        return 0

    def read(self, limit=None):
        out = bytearray()
        self.read_to(bounded(out.extend, limit))
        return bytes(out)

    def _data_cut(self, exc):
        """The error for a read of body data that the stream's end cut, once the bytes
        of it that did come are counted: 'after N bytes of the body' says what arrived
        (a resumable append keeps them), not only the pieces and chunks that came whole."""
        self.received += exc.received
        return truncated_body(exc)


def bounded(sink, limit):
    """A sink that raises 413 once more than ``limit`` bytes passed through it."""
    return SizeLimit('request body', limit).sink(sink)


class ContentLengthBody(Body):
    """A body of exactly ``length`` bytes: the framing core's exact read."""

    def __init__(self, reader, length, send_continue=None):
        self.framing = content_length(length)
        super().__init__(reader, send_continue)
        self.length = length
        if not length:
            self.done = True

    def _count(self, sink):
        def counted(piece):
            self.received += len(piece)
            sink(piece)
        return counted

    def read_to(self, sink):
        self.start()
        remaining = self.length - self.received
        if remaining >= STREAM_BUFFER_SIZE:
            self.reader.reserve(STREAM_BUFFER_SIZE)
        try:
            self.reader.read_exact_to(remaining, self._count(sink))
        except IncompleteRead as exc:
            raise truncated_body(exc) from None
        self.done = True
        return self.length

    def pieces(self):
        self.start()
        read_exact = self.reader.read_exact
        while self.received < self.length:
            try:
                piece = read_exact(min(BODY_PIECE, self.length - self.received))
            except IncompleteRead as exc:
                raise self._data_cut(exc) from None
            self.received += len(piece)
            yield piece
        self.done = True


class ChunkedBody(Body):
    """A chunked body (RFC 9112 section 7.1), read by pulling, not by state machine.

    Each chunk is a delimiter read of its size line, an exact read of its data,
    and an exact read of the CRLF that must follow; the zero-size chunk is
    followed by the trailer section, read line by line up to the empty line.
    """

    framing = CHUNKED_BODY
    length = None

    def __init__(self, reader, send_continue=None):
        super().__init__(reader, send_continue)
        self.sizes = Sizes()     # the whole chunks' sizes, first and last, for the record

    def _next_size(self):
        """Read a chunk-size line; at the last chunk, read the trailers and return 0."""
        try:
            line = read_line(self.reader, MAX_CHUNK_LINE, 'chunk-size')
        except LimitExceeded:
            raise framing_error(f'chunk-size line longer than {MAX_CHUNK_LINE} bytes') from None
        except IncompleteRead as exc:
            raise truncated_body(exc) from None
        text = line.decode('latin-1')
        match = CHUNK_LINE.fullmatch(text)
        # (no extensions, every chunk of most clients: no second match to run)
        if match is None or match.end(1) < len(text) and not CHUNK_EXT.fullmatch(match.group(2)):
            raise framing_error(f'bad chunk-size line {text[:40]!r}')
        size = int(match.group(1), 16)
        if size == 0:
            self._read_trailers()
            self.done = True
        return size

    def _end_chunk(self, size):
        """The CRLF after chunk data, exactly (section 7.1): a whole chunk of ``size``,
        counted and its size kept (a record lists the chunks that came whole)."""
        try:
            if self.reader.read_exact(2) != CRLF:
                raise framing_error('chunk data not followed by CRLF')
        except IncompleteRead as exc:
            raise truncated_body(exc) from None
        self.chunks += 1
        self.sizes.add(size)

    def _read_trailers(self):
        """The trailer section (section 7.1.2), bounded like a head, kept apart from it.

        Never merged into the request's fields (a recipient MUST NOT, unless a
        field's definition says how); a field that must not be a trailer is
        dropped (transfer.NOT_TRAILERS: RFC 9112 section 7.1.2 lets a recipient
        discard trailer fields) and its name kept in ``ignored_trailers``.
        """
        try:
            fields = read_field_lines(self.reader, MAX_TRAILER, MAX_TRAILER_FIELDS, 'trailer')
        except IncompleteRead as exc:
            raise truncated_body(exc) from None
        self.trailers = [f for f in fields if f[0].lower() not in NOT_TRAILERS]
        if len(self.trailers) < len(fields):
            self.ignored_trailers = [f[0] for f in fields if f[0].lower() in NOT_TRAILERS]

    def read_to(self, sink):
        self.start()
        self.reader.reserve(STREAM_BUFFER_SIZE)
        # Bound once: this loop runs once a chunk (16384 a GiB of curl's 64 KiB chunks).
        read_exact_to, next_size, end_chunk = self.reader.read_exact_to, self._next_size, self._end_chunk
        while not self.done:
            size = next_size()
            if not size:
                break
            try:
                read_exact_to(size, sink)
            except IncompleteRead as exc:
                raise self._data_cut(exc) from None
            self.received += size
            end_chunk(size)
        return self.received

    def pieces(self):
        self.start()
        read_exact = self.reader.read_exact
        while not self.done:
            size = self._next_size()
            if not size:
                break
            remaining = size
            while remaining:
                try:
                    piece = read_exact(min(BODY_PIECE, remaining))
                except IncompleteRead as exc:
                    raise self._data_cut(exc) from None
                remaining -= len(piece)
                self.received += len(piece)
                yield piece
            self._end_chunk(size)


# What buffered_body answers.
WHOLE, PARTIAL, MALFORMED = 'whole', 'partial', 'malformed'


def buffered_body(framing, reader):
    """Whether the bytes ``reader`` has buffered hold a whole body framed so.

    WHOLE; PARTIAL when more must come; MALFORMED when the body's reader
    refuses what is there (whoever reads the body answers that).  The one
    place this is decided, and by the readers that read bodies: the body's
    reader runs over ``reader.snapshot()``, which receives nothing, consumes
    nothing and copies nothing but chunk-size and trailer lines, and stops
    where the buffer ends, so the cost is bounded by what is buffered (a body
    longer than the buffer is PARTIAL once its buffered part is passed).
    """
    if not framing.has_body:
        return WHOLE
    body = READERS[framing.kind](reader.snapshot(), framing, None)
    try:
        body.read_to(_discard)
    except BlockingIOError:
        return PARTIAL
    except HTTPError:
        return MALFORMED
    return WHOLE


def _discard(piece):
    pass


class BodyCut(HTTPError):
    """The connection closed inside the body: the client left.  Nobody is left to
    read an answer (RFC 9112 section 8 lets a server close without one), so the
    server records and logs it as "client left", never as the 400 it would be if
    anyone asked."""


def truncated_body(exc):
    return BodyCut(400, f'connection closed inside the body: {exc}', close=True)


def open_body(request, reader, send_continue=None):
    """The Body reader for a request, as ``transfer.request_framing`` decides."""
    framing = request_framing(request)
    return READERS[framing.kind](reader, framing, send_continue)


# The reader for each framing a request may have, indexed by its kind.
READERS = {
    NONE: lambda reader, framing, send_continue: Body(reader),
    LENGTH: lambda reader, framing, send_continue: ContentLengthBody(
        reader, framing.length, send_continue),
    CHUNKED: lambda reader, framing, send_continue: ChunkedBody(reader, send_continue),
}
