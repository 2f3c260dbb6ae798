"""Responses: what a handler returns, and how it is written (the mirror of minihttp.bodies).

The server adds Date, Server, the framing fields (as transfer.response_framing
decides) and Connection to the handler's fields.
"""

import socket
from email.utils import formatdate
from http import HTTPStatus

from . import __version__
from .framing import write_all
from .grammar import CRLF, LAST_CHUNK
from .transfer import CHUNKED, CLOSE, LENGTH, response_framing

SERVER = f'minihttp/{__version__}'
# Linux's "more data follows" send flag; elsewhere a file's head goes out alone.
MSG_MORE = getattr(socket, 'MSG_MORE', 0)

_REASONS = {s.value: s.phrase for s in HTTPStatus}


class PerSecond:
    """A text that depends only on the current second, made at most once a second."""

    def __init__(self, make):
        self._make = make
        self._second = None
        self._text = ''

    def __call__(self, now):
        second = int(now)
        if second != self._second:
            self._second = second
            self._text = self._make(second)
        return self._text


# The Date field (RFC 9110 section 6.6.1) and the constant Server field,
# ready to join into a response head.
http_date = PerSecond(
    lambda second: f'Date: {formatdate(second, usegmt=True)}\r\nServer: {SERVER}\r\n')


class Response:
    """What a handler returns: status, fields, and a body of one of three kinds.

    ``body`` is bytes (sent with Content-Length), or an iterable of bytes-like
    pieces (with ``length`` known: Content-Length; unknown: chunked to an
    HTTP/1.1 client, close-delimited to HTTP/1.0), or a FileBody sent with
    sendfile.  ``headers`` are (name, value) pairs; the server adds Date,
    Server, the framing fields and Connection.
    """

    __slots__ = ('status', 'headers', 'body', 'length', 'close')

    def __init__(self, status=200, headers=(), body=b'', length=None, close=False):
        self.status = status
        self.headers = list(headers)
        self.body = body
        if isinstance(body, (bytes, bytearray, memoryview)):
            length = len(body)
        self.length = length
        self.close = close


def bodiless(method, status):
    """No body for HEAD, 1xx, 204 and 304 (RFC 9112 section 6.3 item 1)."""
    return method == 'HEAD' or status < 200 or status in (204, 304)


_STATUS_LINES = {}


def status_line(status):
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = f'HTTP/1.1 {status} {_REASONS.get(status, "")}\r\n'
    return line


def head_bytes(status, headers, now):
    parts = [status_line(status), http_date(now)]
    parts.extend([f'{name}: {value}\r\n' for name, value in headers])
    parts.append('\r\n')
    return ''.join(parts).encode('latin-1')


def frame_response(response, *, chunked_ok, keep_alive, now, announce_keep_alive=False):
    """Choose a response's framing; return (head bytes, framing, kept).

    Content-Length when the length is known; chunked when it is not and the
    client speaks HTTP/1.1; otherwise the body runs until we close
    (RFC 9112 section 6.3 item 8) and the connection is not kept.
    """
    framing = response_framing(response.status, response.length, chunked_ok)
    kind = framing.kind
    if kind == LENGTH:
        fields = [('Content-Length', str(framing.length))]
    elif kind == CHUNKED:
        fields = [('Transfer-Encoding', 'chunked')]
    else:
        fields = []
        if kind == CLOSE:
            keep_alive = False
    # Until the records speak transfer's one spelling, they are given the old one.
    framing = {LENGTH: 'Content-Length'}.get(kind, kind)
    keep_alive = keep_alive and not response.close
    if not keep_alive:
        fields.append(('Connection', 'close'))
    elif announce_keep_alive:
        # An HTTP/1.0 client keeps the connection only when told (RFC 9112 section 9.3).
        fields.append(('Connection', 'keep-alive'))
    return head_bytes(response.status, response.headers + fields, now), framing, keep_alive


def write_response(sock, method, response, **framing_options):
    """Send a response on a blocking socket; return (framing, chunks, body bytes, kept).

    ``framing_options`` are frame_response's.
    """
    head, framing, keep_alive = frame_response(response, **framing_options)
    body = response.body
    length = response.length
    chunks = sent = 0
    if bodiless(method, response.status):
        write_all(sock, head)
        close_unsent(body)
    elif isinstance(body, (bytes, bytearray, memoryview)):
        write_all(sock, head, body)
        sent = len(body)
    elif hasattr(body, 'sendfile'):
        # MSG_MORE: the head waits for the file's first bytes, so that a small
        # file goes out in one segment with it (sendfile pushes at its end).
        sock.sendall(head, MSG_MORE if length else 0)
        sent = body.sendfile(sock)
    elif framing == 'chunked':
        write_all(sock, head)
        for piece in body:
            if piece:
                write_all(sock, b'%x\r\n' % len(piece), piece, CRLF)
                chunks += 1
                sent += len(piece)
        write_all(sock, LAST_CHUNK)            # no trailers
    else:
        write_all(sock, head)
        for piece in body:
            write_all(sock, piece)
            sent += len(piece)
        if framing == 'Content-Length' and sent != length:
            # The handler broke its promise; the client cannot find the end.
            raise ConnectionAbortedError(f'response body was {sent} bytes, announced {length}')
    return framing, chunks, sent, keep_alive


def close_unsent(body):
    close = getattr(body, 'close', None)
    if close is not None:
        close()


def error_response(error):
    """The response for an HTTPError: its status and one line of plain text."""
    text = f'{error.status} {_REASONS.get(error.status, "")}: {error.reason}\n'.encode(
        'utf-8', 'replace')
    return Response(error.status, [('Content-Type', 'text/plain; charset=utf-8'),
                                   *error.headers], text, close=error.close)
