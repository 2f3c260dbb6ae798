"""Responses: what a handler returns, and the one writer that frames it (the mirror of
minihttp.bodies).

A ResponseWriter turns a Response into what goes on the wire, in order: the
head, with Date, Server, the framing fields (as transfer.response_framing
decided) and Connection added to the handler's fields; then the body's pieces,
framed: as they are for content-length and close, each in a chunk for chunked
(``chunk``, the one chunk encoder, which the event stream uses too), then the
last chunk with the trailer section (``last_chunk``).  The event loop queues
those pieces without blocking (``sends``); a pool thread writes them blocking,
or hands a file to sendfile (``write``): a whole file (a FileBody, from
minihttp.files), or a region of one among a body's pieces (a FileRegion, from
minihttp.archives), which goes in its chunk like any piece.
"""

import json
import socket
from email.utils import formatdate
from http import HTTPStatus

from . import __version__
from .errors import ResponseError
from .framing import write_all
from .grammar import CRLF, FIELD_LINE, FIELD_NAME, LAST_CHUNK
from .records import EventStream, Sizes
from .transfer import (CHUNKED, CLOSE, LENGTH, NO_CONTENT, NOT_TRAILERS, STREAM,
                       response_framing)

SERVER = f'minihttp/{__version__}'
# Linux's "more data follows" send flag; elsewhere a file's head goes out alone.
MSG_MORE = getattr(socket, 'MSG_MORE', 0)

_REASONS = {s.value: s.phrase for s in HTTPStatus}
# draft-ietf-httpbis-resumable-upload: not (yet) in Python's table.
_REASONS[104] = 'Upload Resumption Supported'

# A body of one of these is sent whole, in one write with its head.
BYTES_LIKE = (bytes, bytearray, memoryview)


class PerSecond:
    """A text that depends only on the current second, made at most once a second.

    ``at(now)`` is the text of the second ``now`` (time.time()) falls in; the object
    called does the same.  Hot paths call ``at``: calling an instance costs CPython
    its slow way (slot_tp_call: a lookup of ``__call__`` and an argument tuple), about
    a thousand instructions a call.
    """

    __slots__ = ('_make', '_known')

    def __init__(self, make):
        self._make = make
        # (second, the next second, its text), replaced as one: the loop and the pool's
        # threads ask at once, and a second set apart from its text could be left with
        # another's.  Compared as bounds, ``now`` needs no int() per call; floats, as
        # ``now`` is (a float compared with an int takes CPython's slow way).
        self._known = (0.0, 0.0, '')

    def at(self, now):
        known = self._known
        if known[0] <= now < known[1]:
            return known[2]
        second = int(now)
        known = self._known = (float(second), float(second + 1), self._make(second))
        return known[2]

    __call__ = at


# The Date field (RFC 9110 section 6.6.1) and the constant Server field,
# ready to join into a response head.
http_date = PerSecond(
    lambda second: f'Date: {formatdate(second, usegmt=True)}\r\nServer: {SERVER}\r\n')
# The same, as bytes, for a head made again (redated).
http_date_bytes = PerSecond(lambda second: http_date(second).encode('latin-1'))


class Response:
    """What a handler returns: status, fields, and a body of one of three kinds.

    ``body`` is bytes-like (sent with Content-Length), or an iterable of
    bytes-like pieces or FileRegions (with ``length`` known: Content-Length;
    unknown: chunked to an HTTP/1.1 client, close-delimited to HTTP/1.0), or a
    FileBody sent with sendfile.  Each piece is sent whole before the next is
    asked for, so a piece may be a view of a buffer its maker then reuses.  ``headers`` are (name, value) pairs; the server adds Date,
    Server, the framing fields and Connection.

    ``trailers``, when given, is called once, after the body's last piece was
    produced, and returns the trailer fields, (name, value) pairs: sent after
    the last chunk (RFC 9112 section 7.1.2) when the response is chunked, and
    then only; otherwise it is never called (a Content-Length body has no
    place for them, and RFC 9110 section 6.5 lets a sender leave them out).
    ``trailer_names`` may announce their names in a Trailer field (RFC 9110
    section 6.6.2), checked before the head is sent.

    ``source`` is None, or what a handler says the answer depended on besides the
    request's head, when that is one thing alone: an object whose ``holds()`` says
    whether it is unchanged (files.cached_file's answer from a small file held in
    memory).  The server may then give the same head the same answer again,
    without asking the handler, while it holds.  Whoever changes a response after
    it was made sets it back to None.
    """

    __slots__ = ('status', 'headers', 'body', 'length', 'close', 'trailers', 'trailer_names',
                 'source')

    def __init__(self, status=200, headers=(), body=b'', length=None, close=False,
                 trailers=None, trailer_names=()):
        self.status = status
        self.headers = list(headers)
        if isinstance(body, BYTES_LIKE):
            if type(body) is memoryview and body.itemsize != 1:
                body = body.cast('B')         # counted, queued and sliced in bytes
            length = len(body)
        self.body = body
        self.length = length
        self.close = close
        self.trailers = trailers
        self.trailer_names = trailer_names
        self.source = None


def is_bytes(body):
    """Whether a body is bytes-like: sent whole with its head, the loop can answer it."""
    return isinstance(body, BYTES_LIKE)


def bodiless(method, status):
    """No body for HEAD, 1xx, 204 and 304 (RFC 9112 section 6.3 item 1)."""
    return method == 'HEAD' or status in NO_CONTENT


_STATUS_LINES = {}


def status_line(status):
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = f'HTTP/1.1 {status} {_REASONS.get(status, "")}\r\n'
    return line


def head_bytes(status, headers, now):
    parts = [status_line(status), http_date.at(now)]
    parts.extend([f'{name}: {value}\r\n' for name, value in headers])
    parts.append('\r\n')
    return ''.join(parts).encode('latin-1')


def dated(head, status, now):
    """A head that head_bytes made at ``now``, cut around its Date and Server fields:
    (what comes before them, what comes after), for ``redated`` to make the same head
    at another second without its fields; None for a head not made so."""
    start = len(status_line(status))
    date = http_date_bytes.at(now)
    if head[start:start + len(date)] != date:
        return None
    return head[:start], head[start + len(date):]


def redated(pieces, now):
    """The pieces of a head ``dated`` cut, with the Date of ``now`` between them: to be
    sent together (a scatter send, or joined into one TLS write), never joined here."""
    return pieces[0], http_date_bytes.at(now), pieces[1]


def interim_head(status, fields):
    """An interim response's whole message: a status line and fields, no body, no
    Date (RFC 9110 section 15.2: 1xx is the head alone, ended by the empty line).
    101 is not one: it switches protocols, and is a final answer here."""
    if not 100 <= status < 200 or status == 101:
        raise ResponseError(f'{status} is not an interim status')
    parts = [status_line(status)]
    parts.extend([f'{name}: {value}\r\n' for name, value in fields])
    parts.append('\r\n')
    return ''.join(parts).encode('latin-1')


class ResponseWriter:
    """One response on its way: the head that frames it, then its body as pieces.

    Made when the response is about to be sent; says what was decided
    (``framing``, a transfer.Framing; ``keep_alive``; ``chunked``, whether the
    body goes in chunks, as chunked framing and an event stream to HTTP/1.1
    do) and, as the body goes, what went (``sent`` body bytes, ``chunks``, and
    the ``trailers`` sent, once the last chunk has gone).  ``sizes`` lists the
    chunks' sizes (a records.Sizes) once a body goes in chunks from ``sends``,
    and is None otherwise: a response of bytes or Content-Length keeps none.
    ``version`` is the request's (None when its head was unreadable): only an
    HTTP/1.1 client is sent chunks (RFC 9112 section 7), and an HTTP/1.0 client
    keeps the connection only when told (RFC 9112 section 9.3).  ``keep_alive``
    is the caller's wish, kept unless the framing (close, an event stream) or
    the handler says otherwise.
    """

    __slots__ = ('response', 'framing', 'head', 'keep_alive', 'has_body', 'chunked',
                 'sent', 'chunks', 'trailers', 'sizes')

    def __init__(self, response, method, version, keep_alive, now):
        # Positional, and few: this runs for every response (a class called
        # with keywords costs as much as the rest of this).
        self.response = response
        chunked_ok = version == 'HTTP/1.1'
        body = response.body
        framing = self.framing = response_framing(
            response.status, response.length, chunked_ok, type(body) is EventStream)
        kind = framing.kind
        self.has_body = not bodiless(method, response.status)
        self.chunked = kind == CHUNKED or (kind == STREAM and chunked_ok)
        self.sent = self.chunks = 0
        self.trailers = ()
        self.sizes = None
        if kind == LENGTH:
            fields = [('Content-Length', str(framing.length))]
        elif self.chunked:
            fields = [('Transfer-Encoding', 'chunked')]
            if response.trailer_names and kind == CHUNKED:
                fields.append(('Trailer', ', '.join(map(checked_trailer, response.trailer_names))))
        else:
            fields = []
        if kind == CLOSE or kind == STREAM or response.close:
            # The body ends only when we close (or never), or the handler asked.
            keep_alive = False
        self.keep_alive = keep_alive
        if not keep_alive:
            fields.append(('Connection', 'close'))
        elif version == 'HTTP/1.0':
            fields.append(('Connection', 'keep-alive'))
        self.head = head_bytes(response.status, response.headers + fields, now)

    def sends(self):
        """The response as writes, each a tuple of bytes-like pieces to send together: one
        for the head with a bytes-like body (or none), else the head, then one a piece.

        An event stream's writes are only its head: its records follow as they
        come (``chunk`` each, when ``chunked``).  A FileBody is ``write``'s.
        """
        body = self.response.body
        if not self.has_body:
            close_unsent(body)
            return ((self.head,),)
        if isinstance(body, BYTES_LIKE):
            self.sent = len(body)
            return ((self.head, body),)
        if self.framing.kind == STREAM:
            return ((self.head,),)
        return self._pieces(body)

    def _pieces(self, body):
        yield (self.head,)
        if self.chunked:
            self.sizes = Sizes()
            keep = self.sizes.add
            for piece in body:
                if piece:                 # an empty chunk would end the body
                    size = byte_length(piece)
                    self.chunks += 1
                    self.sent += size
                    keep(size)
                    yield chunk(piece)
            trailers = self.trailer_fields()
            yield (last_chunk(trailers),)
            self.trailers = trailers      # asked for the next write: the last chunk went
        elif self.framing.kind == LENGTH:
            announced = self.framing.length
            for piece in body:
                self.sent += byte_length(piece)
                if self.sent > announced:
                    # Never a byte past the announced end: it would be read
                    # as the start of the next response.
                    raise ResponseError(f'response body longer than the {announced} bytes '
                                        'announced')
                yield (piece,)
            if self.sent != announced:
                raise ResponseError(f'response body was {self.sent} bytes, announced {announced}')
        else:                             # close-delimited: whatever comes, then we close
            for piece in body:
                self.sent += byte_length(piece)
                yield (piece,)

    def trailer_fields(self):
        """The handler's trailer fields, each checked; called once, after the last piece."""
        make = self.response.trailers
        if make is None:
            return ()
        fields = list(make())
        for name, value in fields:
            checked_trailer(name)
            if not isinstance(value, str) or not FIELD_LINE.fullmatch(f'{name}: {value}'):
                raise ResponseError(f'trailer field {name}: {str(value)[:40]!r} is not a '
                                    'field-value (RFC 9110 section 5.5)')
        return fields

    def write(self, sock):
        """Send the whole response on a blocking socket (a file with sendfile); return self."""
        body = self.response.body
        if self.has_body and hasattr(body, 'sendfile'):
            if self.framing.kind != LENGTH or body.length != self.framing.length:
                raise ResponseError(f'a file body of {body.length} bytes framed as '
                                    f'{self.framing}')
            # MSG_MORE: the head waits for the file's first bytes, so that a small
            # file goes out in one segment with it (sendfile pushes at its end).
            sock.sendall(self.head, MSG_MORE if body.length else 0)
            self.sent = body.sendfile(sock)
            return self
        for pieces in self.sends():
            if any(type(piece) is FileRegion for piece in pieces):
                send_region(sock, pieces)
            else:
                write_all(sock, *pieces)
        return self


def send_region(sock, pieces):
    """A write whose piece is a FileRegion, alone or in its chunk (``chunk``: size line,
    region, CRLF): the bytes around it with MSG_MORE, so that they wait to leave with
    the file's (the next write, at the latest the last chunk, sends without it)."""
    for piece in pieces:
        if type(piece) is FileRegion:
            piece.send(sock)
        else:
            sock.sendall(piece, MSG_MORE)


class FileRegion:
    """``length`` bytes of the open file ``fd`` from ``offset``, as a piece of a body: sent
    by the pool's writer with sendfile (read and encrypted, over TLS), never read into
    memory here.  The descriptor is its maker's, open until the body is asked for its
    next piece.  Never queued by the event loop, which sends only bytes-like bodies."""

    __slots__ = ('fd', 'offset', 'length')

    def __init__(self, fd, offset, length):
        self.fd = fd
        self.offset = offset
        self.length = length

    def __len__(self):
        return self.length

    def send(self, sock):
        send_range(sock, self.fd, self.offset, self.length)


def send_range(sock, fd, offset, length, announced=None):
    """``length`` bytes of ``fd`` from ``offset``, page cache to socket (of the
    ``announced`` bytes the head promised, for the message when the file shrank).

    ``sock`` is the pool's TimedSocket (minihttp.eventloop): its ``send_file``
    waits for room in the socket's buffer, and cuts a client that stopped
    reading or reads too slowly.
    """
    end = offset + length
    while offset < end:
        sent = sock.send_file(fd, offset, end - offset)
        if not sent:
            # The file shrank under us: the client cannot find the end.
            raise ResponseError(f'file ended after {length - (end - offset)} of '
                                f'{announced or length} bytes')
        offset += sent


def byte_length(piece):
    """A piece's size in bytes (a memoryview's len counts its items)."""
    return piece.nbytes if type(piece) is memoryview else len(piece)


def chunk(piece):
    """One chunk (RFC 9112 section 7.1): its size in hex, CRLF, the data, CRLF; the three
    pieces to send together.  ``piece`` is not empty: a chunk of 0 is the last."""
    return (b'%x\r\n' % byte_length(piece), piece, CRLF)


def last_chunk(trailers=()):
    """The last chunk and the trailer section that ends a chunked body (RFC 9112 section
    7.1.2); ``trailers`` are (name, value) pairs, checked already."""
    if not trailers:
        return LAST_CHUNK
    lines = ''.join([f'{name}: {value}\r\n' for name, value in trailers])
    return b'0\r\n' + lines.encode('latin-1') + CRLF


def checked_trailer(name):
    """A field name fit for a trailer section, or ResponseError (RFC 9110 section 6.5.1)."""
    if not isinstance(name, str) or not FIELD_NAME.fullmatch(name):
        raise ResponseError(f'trailer field name {str(name)[:40]!r} is not a token')
    if name.lower() in NOT_TRAILERS:
        raise ResponseError(f'{name} is not allowed in a trailer section (RFC 9110 '
                            'section 6.5.1)')
    return name


def close_unsent(body):
    close = getattr(body, 'close', None)
    if close is not None:
        close()


def error_response(error):
    """The response for an HTTPError: its status and one line of plain text, or, for
    an error that names an RFC 9457 problem (``problem``, a dict), that problem as
    JSON with the reason as its ``detail``."""
    problem = getattr(error, 'problem', None)
    if problem is not None:
        text = json.dumps({**problem, 'detail': error.reason}).encode() + b'\n'
        return Response(error.status, [('Content-Type', 'application/problem+json'),
                                       *error.headers], text, close=error.close)
    text = f'{error.status} {_REASONS.get(error.status, "")}: {error.reason}\n'.encode(
        'utf-8', 'replace')
    return Response(error.status, [('Content-Type', 'text/plain; charset=utf-8'),
                                   *error.headers], text, close=error.close)
