"""What goes wrong in an exchange, and the status each failure maps to.

Everything a client can get wrong raises HTTPError, which carries the status
it maps to and a one-line reason; the server turns it into a response in one
place (responses.error_response).
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
