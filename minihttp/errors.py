"""What goes wrong in an exchange, and the status each failure maps to.

Everything a client can get wrong raises HTTPError, which carries the status
it maps to and a one-line reason; the server turns it into a response in one
place (responses.error_response).  What we get wrong ourselves, in a
response already on its way, raises ResponseError.

What the peer does by going away is not an error of anyone's here: the
errors that mean it are named once (PEER_GONE, ``peer_gone``); an exchange
they cut is logged and recorded as "client left", without a traceback.
Every other error is ours, and is logged with its traceback
(report.log_failure).
"""

import errno
import ssl


class HTTPError(Exception):
    """A request the server will not serve: the status, a one-line reason, and
    whether the connection must close (always, after a framing error)."""

    def __init__(self, status, reason, close=False, headers=()):
        self.status = status
        self.reason = reason
        self.close = close
        self.headers = list(headers)
        super().__init__(f'{status} {reason}')


def framing_error(reason):
    """The stream can no longer be trusted to say where the next message starts."""
    return HTTPError(400, reason, close=True)


class ResponseError(Exception):
    """A response of our own that cannot be sent as framed: a body longer or
    shorter than the length its head announced, or a trailer field that is
    malformed or not allowed in a trailer section.

    Not an OSError: the peer did nothing wrong.  By the time it is raised the
    head may be gone, so the client cannot find the response's end: the
    connection is closed, never reused.
    """


class SizeLimit:
    """Counts what a client sends against a limit: the one place a 413 is raised.

    ``what`` names the thing counted ('upload', 'form', ...), ``unit`` what is
    counted ('bytes', 'parts').  ``take(n)`` adds n and raises HTTPError 413
    once the total passes ``limit`` (None: no limit); ``refuse(size)`` does so
    for a size announced before anything arrived.  413 always closes: the rest
    of the body is not read.
    """

    __slots__ = ('what', 'limit', 'unit', 'seen')

    def __init__(self, what, limit, unit='bytes'):
        self.what = what
        self.limit = limit
        self.unit = unit
        self.seen = 0

    def take(self, size):
        """Count ``size`` more; the total so far."""
        self.seen += size
        if self.limit is not None and self.seen > self.limit:
            raise self.too_large()
        return self.seen

    def refuse(self, size):
        """413 for an announced ``size`` over the limit, before a byte is read."""
        if self.limit is not None and size is not None and size > self.limit:
            raise self.too_large(size)

    def sink(self, sink):
        """``sink``, with every piece counted on its way in."""
        if self.limit is None:
            return sink

        def counted(piece):
            self.take(len(piece))
            sink(piece)
        return counted

    def too_large(self, size=None):
        said = f'{size} {self.unit}, more' if size is not None else 'more'
        return HTTPError(413, f'{self.what}: {said} than {self.limit} {self.unit}', close=True)


# The errno values that mean "the peer went away": nobody is left to answer.
# cheroot's socket_errors_to_ignore (cheroot/errors.py) and gunicorn's workers
# (EPIPE, ECONNRESET, ENOTCONN: logged at debug level, every other OSError with
# its traceback) joined: the peer reset or closed (ECONNRESET, EPIPE, ESHUTDOWN,
# ENOTCONN), the kernel gave up on it (ECONNABORTED, ETIMEDOUT after
# retransmissions), or its network went (ENETRESET, ENETUNREACH, EHOSTDOWN,
# EHOSTUNREACH).  Not cheroot's EBADF or ENOTSOCK: here they would be our own
# bug (a descriptor closed twice), and are logged.  Checked by errno, not by
# class: the pool's Pace raises TimeoutError with no errno for a peer that is
# too slow, which is not its going away.
PEER_GONE = frozenset({
    errno.ECONNRESET, errno.EPIPE, errno.ESHUTDOWN, errno.ENOTCONN, errno.ECONNABORTED,
    errno.ETIMEDOUT, errno.ENETRESET, errno.ENETUNREACH, errno.EHOSTDOWN, errno.EHOSTUNREACH,
})


def peer_gone(exc):
    """Whether ``exc`` means the peer went away (PEER_GONE), rather than an error of ours.

    Over TLS, an ssl.SSLError from a read or a write is the peer breaking the
    stream (a record failing its MAC, a message out of place, its TCP end with
    no close_notify under our response): OpenSSL has sent its fatal alert and the
    connection is as dead as after a reset.  Any client can send such bytes, so
    they are no error of ours to log with a traceback.  (The wants to read or
    write never get here: TLSConnection raises them as BlockingIOError.)
    """
    return isinstance(exc, OSError) and (exc.errno in PEER_GONE or isinstance(exc, ssl.SSLError))
