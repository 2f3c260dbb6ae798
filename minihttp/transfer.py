"""How a message is framed: one vocabulary, decided once per direction.

A message's body ends in one of five ways, and this module names them:

    none             no body at all (a GET, a 204, any answer to HEAD)
    content-length N exactly N bytes: one exact read, one exact write
    chunked          chunks, each prefixed by its size in hex, up to the
                     zero-size last chunk and its trailer section
    close            the body runs until the sender closes (RFC 9112 section
                     6.3 item 8: only a response, only to an HTTP/1.0 client)
    stream           an event stream: chunked (or close-delimited to HTTP/1.0)
                     records that never end while the client listens

``request_framing`` decides a request's, ``response_framing`` a response's,
each in RFC 9112 section 6.3's order.  The value they return, a Framing, is
what the body readers (minihttp.bodies) and the response writer
(minihttp.responses) are chosen by, and its one spelling, ``str(framing)``, is
what --trace, the access log, the records, X-Request-Framing and the page say.
"""

from .errors import HTTPError, framing_error
from .grammar import decimal
from .limits import MAX_CONTENT_LENGTH_DIGITS

NONE, LENGTH, CHUNKED, CLOSE, STREAM = 'none', 'content-length', 'chunked', 'close', 'stream'

# Fields that a trailer section must not carry, in either direction (RFC 9110
# section 6.5.1): those that frame the message or route it, authenticate,
# modify the request, control caching or the response, or say how to process
# the content, which must be known before the content is (and a sender MUST
# NOT generate a trailer its definition does not allow).  The response writer
# never sends them as trailers; the chunked body reader drops them from a
# request's (RFC 9112 section 7.1.2: a recipient MAY discard trailer fields),
# rather than refusing the request: they were never going to change how it
# is handled, and /echo never sends them back.
NOT_TRAILERS = frozenset([
    # framing and the connection (RFC 9112 sections 6, 7 and 9.3; RFC 9110
    # sections 6.6.2, 7.6.1, 7.8, 10.1.4)
    'content-length', 'transfer-encoding', 'trailer', 'te', 'connection', 'keep-alive',
    'proxy-connection', 'upgrade',
    'host',                                                               # routing
    # request modifiers: controls and conditionals (RFC 9110 sections 7.6.2, 10.1,
    # 13.1, 14.2; RFC 9111 section 5.4)
    'expect', 'max-forwards', 'range', 'if-match', 'if-none-match', 'if-modified-since',
    'if-unmodified-since', 'if-range', 'pragma',
    # authentication and state (RFC 9110 section 11; RFC 6265)
    'authorization', 'proxy-authorization', 'www-authenticate', 'proxy-authenticate',
    'authentication-info', 'proxy-authentication-info', 'cookie', 'set-cookie',
    # caching and response controls (RFC 9111 section 5; RFC 9110 sections 6.6.1, 10.2)
    'age', 'cache-control', 'expires', 'date', 'location', 'retry-after', 'vary',
    # content format (RFC 9110 sections 8.3, 8.4, 14.4)
    'content-type', 'content-encoding', 'content-range'])


class Framing:
    """How one message's body is delimited: a kind, and for content-length its length."""

    __slots__ = ('kind', 'length')

    def __init__(self, kind, length=None):
        self.kind = kind
        self.length = length if kind == LENGTH else (0 if kind == NONE else None)

    def __str__(self):
        return f'{LENGTH} {self.length}' if self.kind == LENGTH else self.kind

    def __repr__(self):
        return f'Framing({str(self)!r})'

    def __eq__(self, other):
        return (isinstance(other, Framing) and self.kind == other.kind
                and self.length == other.length)

    def __hash__(self):
        return hash((self.kind, self.length))

    @property
    def has_body(self):
        """Whether bytes follow the head (a content-length of 0 has none)."""
        return self.kind != NONE and self.length != 0


def content_length(n):
    """The Framing of a body of exactly ``n`` bytes."""
    return Framing(LENGTH, n)


NO_BODY = Framing(NONE)
CHUNKED_BODY = Framing(CHUNKED)
UNTIL_CLOSE = Framing(CLOSE)
EVENT_STREAM = Framing(STREAM)


def request_framing(request):
    """A request's Framing, in RFC 9112 section 6.3's order: none, content-length N or chunked.

    Every ambiguity is an HTTPError that closes the connection: the server
    cannot know where this message ends, so it cannot read the next one.
    """
    chunked = request.has('transfer-encoding')
    if not chunked and not request.has('content-length'):
        return NO_BODY                       # section 6.3 item 7, for requests
    codings = request.tokens('transfer-encoding')
    lengths = request.get_all('content-length')
    if chunked:
        if request.version == 'HTTP/1.0':
            # Section 6.1: Transfer-Encoding in an HTTP/1.0 message MUST be
            # treated as faulty framing.
            raise framing_error('Transfer-Encoding in an HTTP/1.0 request')
        if lengths:
            # Section 6.3 item 3: both present is a smuggling attempt or a
            # broken client; a server MAY reject it and MUST close anyway.
            raise framing_error('both Transfer-Encoding and Content-Length')
        if not codings or codings[-1] != 'chunked':
            # Section 6.3 item 4: chunked not final: 400, then close.
            raise framing_error('Transfer-Encoding does not end with chunked')
        if codings.count('chunked') > 1:
            # Section 7: a sender MUST NOT apply chunked more than once.
            raise framing_error('chunked applied more than once')
        for coding in codings[:-1]:
            # Section 6.1: a coding we do not understand SHOULD get 501.
            raise HTTPError(501, f'transfer coding {coding!r} is not implemented', close=True)
        return CHUNKED_BODY
    # RFC 9110 section 8.6: Content-Length = 1*DIGIT.  A list of one value
    # repeated ("42, 42", or several lines) MAY be taken as that value;
    # different values MUST be rejected (RFC 9112 section 6.3 item 5).
    values = {v.strip() for line in lengths for v in line.split(',')}
    if len(values) != 1:
        raise framing_error('Content-Length values differ')
    value = values.pop()
    length = decimal(value, MAX_CONTENT_LENGTH_DIGITS)
    if length is None:
        raise framing_error(f'Content-Length is not a number of at most '
                            f'{MAX_CONTENT_LENGTH_DIGITS} digits: {value[:30]!r}')
    return content_length(length)


# The statuses whose responses never have content: 1xx, 204 and 304 (RFC 9112
# section 6.3 item 1); a set, since it is asked for every response.
NO_CONTENT = frozenset([*range(100, 200), 204, 304])


def response_framing(status, length, chunked_ok, stream=False):
    """A response's Framing, in RFC 9112 section 6.3's order.

    None for 1xx, 204 and 304 (no body, so no framing fields: 1xx and 204
    never carry a length, RFC 9110 section 8.6, and a 304's would have to be
    the full representation's); an event stream when the body is one (its
    records go in chunks to an HTTP/1.1 client, until we close to HTTP/1.0);
    content-length when the length is known; chunked when it is not and the
    client speaks HTTP/1.1; otherwise the body runs until we close (item 8).
    """
    if status in NO_CONTENT:
        return NO_BODY
    if stream:
        return EVENT_STREAM
    if length is not None:
        return content_length(length)
    return CHUNKED_BODY if chunked_ok else UNTIL_CLOSE
