"""What goes wrong in an exchange, and the status each failure maps to.

Everything a client can get wrong raises HTTPError, which carries the status
it maps to and a one-line reason; the server turns it into a response in one
place (responses.error_response).  What we get wrong ourselves, in a
response already on its way, raises ResponseError.
"""


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
