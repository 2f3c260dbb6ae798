"""The request head: its line and fields read off the stream with one delimiter read.

A request is framed twice, as chapter 5 says: its head ends at a delimiter,
the blank line (``read_until(HEAD_END)``), read here; its body is measured as
transfer.request_framing decides and read by minihttp.bodies.  Parsing
functions take bytes and return values, so the tests need no sockets.
"""

import re

from .errors import HTTPError, framing_error
from .framing import IncompleteRead, LimitExceeded
from .grammar import (ABSOLUTE_FORM, CRLF, FIELD_LINE, FIELD_LINES, FIELD_SECTION, HEAD_END,
                      HOST, HTTP_VERSION, LEADING_CRLFS, REQUEST_LINE, TOKEN)
from .limits import MAX_EMPTY_LINES, MAX_FIELDS, MAX_HEAD, MAX_METHOD, MAX_REQUEST_LINE


class Request:
    """One request: its head as received, and the reader of its body."""

    __slots__ = ('method', 'target', 'version', 'fields', 'head_size', 'path', 'query',
                 '_index', 'body', 'interims', 'interim_sink', 'interim_conn')

    def __init__(self, method, target, version, fields, head_size=0):
        self.method = method
        self.target = target
        self.version = version
        self.fields = fields      # [(name, value)] as received, in order
        self.head_size = head_size
        self.body = None
        # Interim (1xx) responses sent so far, ((status, fields), ...), for the record;
        # and how the server sends one on this request's connection (None: it cannot).
        self.interims = ()
        self.interim_sink = None
        self.interim_conn = None
        self._index = index_fields(fields)
        path, _, query = request_path(method, target).partition('?')
        self.path = path
        self.query = query

    def interim(self, status, fields=()):
        """Send an interim (1xx) response now, ahead of the final one, from whichever
        thread runs the handler; whether it went.

        Never to an HTTP/1.0 client: RFC 9110 section 15.2 says a server MUST
        NOT send it one (it would take the 1xx for the final answer).  The
        server sends it in order before the final response, plain or TLS, and
        keeps it in ``interims`` for the exchange's record.
        """
        if self.interim_sink is None or self.version != 'HTTP/1.1':
            return False
        self.interim_sink(self, status, tuple(fields))
        return True

    @property
    def trailers(self):
        """The trailer fields of a chunked body once it is read, [(name, value)] ([] until
        then, and for other framings): its own list, never merged into ``fields``
        (RFC 9112 section 7.1.2), so ``get`` never sees them."""
        return [] if self.body is None else self.body.trailers

    def get(self, name, default=None):
        """The field's value (several lines joined with ', ', RFC 9110 section 5.3)."""
        values = self._index.get(name.lower())
        return default if values is None else ', '.join(values)

    def get_all(self, name):
        return self._index.get(name.lower(), [])

    def has(self, name):
        """Whether a field is present; ``name`` in lower case (a per-request check, kept cheap)."""
        return name in self._index

    def has_any(self, names):
        """Whether any of these lower-case field names is present."""
        return not self._index.keys().isdisjoint(names)

    def tokens(self, name):
        """A comma-separated list field as lower-case members (RFC 9110 section 5.6.1)."""
        return [t.strip().lower() for v in self.get_all(name) for t in v.split(',') if t.strip()]

    @property
    def keep_alive(self):
        """Whether the client wants the connection kept (RFC 9112 section 9.3)."""
        options = self.tokens('connection') if 'connection' in self._index else ()
        if 'close' in options:
            return False
        if self.version == 'HTTP/1.1':
            return True
        return 'keep-alive' in options


def index_fields(fields):
    index = {}
    for name, value in fields:
        index.setdefault(name.lower(), []).append(value)
    return index


def request_path(method, target):
    """The path and query of any request-target form (RFC 9112 section 3.2)."""
    if method == 'CONNECT':
        # Its authority-form (section 3.2.3) asks for a tunnel (RFC 9110 section
        # 9.3.6), and we are no proxy: 501, and close, since what follows the
        # head would be the tunnel's bytes, not HTTP.
        raise HTTPError(501, 'CONNECT is not implemented: this server is no proxy', close=True)
    if target[0] == '/':
        if '#' in target:
            # origin-form = absolute-path [ "?" query ] (section 3.2.1): a fragment
            # is the client's own, never sent; one that arrives is a malformed target.
            raise HTTPError(400, f'request-target {target[:40]!r} has a fragment (#)')
        return target                            # origin-form
    match = ABSOLUTE_FORM.fullmatch(target)
    if match:
        # absolute-form (section 3.2.2); an empty path is "/" (RFC 9110 section 4.2.3),
        # also when a query follows: http://host?q is /?q.
        rest = match.group(1)
        return rest if rest[:1] == '/' else '/' + rest
    if target == '*' and method == 'OPTIONS':
        return '*'                               # asterisk-form: section 3.2.4
    raise HTTPError(400, f'request-target {target[:40]!r} is not in origin, absolute or '
                         'asterisk form')


# -- the head ---------------------------------------------------------------

def parse_fields(lines, what='header'):
    """Field lines (str, no CRLF) as [(name, value)]; HTTPError on any invalid line."""
    fields = []
    for line in lines:
        match = FIELD_LINE.fullmatch(line)
        if match is None:
            raise HTTPError(400, bad_field_reason(line, what), close=True)
        fields.append(match.groups())
    return fields


def read_line(reader, limit, what):
    """One line of at most ``limit`` bytes, without its CRLF: a delimiter read.

    Read up to LF and then required to end in CR, so that a bare LF (which
    RFC 9112 section 2.2 lets a recipient refuse, and which this server never
    takes as a line end) is refused as soon as it arrives, instead of waiting
    for a CRLF that may never come.  Raises LimitExceeded beyond ``limit``.
    """
    line = reader.read_until(b'\n', limit + 1)
    if line[-1:] != b'\r':
        raise framing_error(f'bare LF ending a {what} line')
    return line[:-1]


def read_field_lines(reader, max_bytes, max_fields, what):
    """Field lines up to an empty line, one delimiter read each, within limits.

    Used where a field section follows other framing: the trailer section of
    a chunked body (RFC 9112 section 7.1.2) and the head of a multipart part.
    """
    lines = []
    total = 0
    while True:
        try:
            line = read_line(reader, max_bytes - total, what)
        except LimitExceeded:
            raise HTTPError(431, f'{what} section longer than {max_bytes} bytes',
                            close=True) from None
        if not line:
            return parse_fields(lines, what)
        total += len(line) + 2
        lines.append(line.decode('latin-1'))
        if len(lines) > max_fields:
            raise HTTPError(431, f'more than {max_fields} {what} fields', close=True)


def bad_field_reason(line, what):
    """Why a field line failed FIELD_LINE, in words a client author can act on."""
    if line[:1] in (' ', '\t'):
        # RFC 9112 section 5.2: a server MUST reject obs-fold with 400 or unfold it.
        return f'obsolete line folding in a {what} field'
    name, colon, value = line.partition(':')
    if not colon:
        return f'{what} line without a colon: {line[:40]!r}'
    if name != name.rstrip(' \t'):
        # RFC 9112 section 5.1: no whitespace between field name and colon.
        return f'whitespace before the colon in {what} field {name.strip()[:40]!r}'
    if not re.fullmatch(TOKEN, name):
        return f'{what} field name is not a token: {name[:40]!r}'
    if '\r' in value:
        return f'bare CR in {what} field {name!r}'  # RFC 9112 section 2.2
    if '\n' in value:
        return f'bare LF in {what} field {name!r}'
    if '\0' in value:
        return f'NUL in {what} field {name!r}'
    return f'control character in {what} field {name!r}'


def parse_head(head):
    """Parse a request head (bytes, without the final blank line) into a Request.

    Checks everything RFC 9112 asks of the head itself: the request line, the
    field lines, the version and Host.  The body's framing is decided later
    by ``transfer.request_framing``.
    """
    text = head.decode('latin-1')
    end = text.find('\r\n')
    line = text if end < 0 else text[:end]
    if len(line) > MAX_REQUEST_LINE:
        raise too_long_request_line(line)
    match = REQUEST_LINE.fullmatch(line)
    if match is None:
        raise HTTPError(400, bad_request_line_reason(line), close=True)
    method, target, version = match.groups()
    if version not in ('HTTP/1.1', 'HTTP/1.0'):
        # Section 2.3 and RFC 9110 section 15.6.6.
        raise HTTPError(505, f'{version} is not supported; use HTTP/1.1 or HTTP/1.0',
                        close=True)
    if end < 0:
        fields = []
    elif text.count('\r\n', end) > MAX_FIELDS:
        raise HTTPError(431, f'more than {MAX_FIELDS} header fields', close=True)
    elif FIELD_SECTION.fullmatch(text, end):
        fields = FIELD_LINES.findall(text, end)
    else:
        parse_fields(text[end + 2:].split('\r\n'))   # raises, naming the bad line
        raise HTTPError(400, 'invalid header section', close=True)
    request = Request(method, target, version, fields, len(head) + len(HEAD_END))
    hosts = request.get_all('host')
    # RFC 9112 section 3.2: a server MUST respond 400 to an HTTP/1.1 request
    # without Host, and to any request with more than one or an invalid one.
    if len(hosts) > 1:
        raise HTTPError(400, 'more than one Host field', close=True)
    if not hosts and version == 'HTTP/1.1':
        raise HTTPError(400, 'HTTP/1.1 request without a Host field', close=True)
    if hosts and not HOST.fullmatch(hosts[0]):
        raise HTTPError(400, f'invalid Host {hosts[0][:40]!r}', close=True)
    if hosts and not hosts[0].partition(':')[0] and not hosts[0].startswith('['):
        # An http URI has a host (RFC 9110 section 4.2.1: one with an empty host
        # identifier MUST be rejected as invalid), so an empty Host is invalid here.
        raise HTTPError(400, 'empty Host', close=True)
    return request


def too_long_request_line(line):
    """414 when the target makes the request line too long, 501 when the method does.

    RFC 9112 section 3: a server that receives a method longer than any it
    implements SHOULD answer 501; a target longer than it wishes to parse
    MUST get 414.  Blaming the target for a long method would mislead.
    """
    method_end = line.find(' ')
    if method_end < 0 or method_end > MAX_METHOD:
        return HTTPError(501, f'method longer than any this server implements ({MAX_METHOD} '
                              'characters)', close=True)
    return HTTPError(414, f'request line longer than {MAX_REQUEST_LINE} bytes', close=True)


def bad_request_line_reason(line):
    if not line:
        return 'empty request line'
    parts = line.split(' ')
    if len(parts) != 3:
        return 'request line is not "method SP target SP version" with single spaces'
    method, target, version = parts
    if not HTTP_VERSION.fullmatch(version):
        return f'not an HTTP version: {version[:20]!r}'
    if not re.fullmatch(TOKEN, method):
        return f'method is not a token: {method[:20]!r}'
    return f'invalid characters in request-target {target[:40]!r}'


def read_request(reader):
    """Read one request head off the stream (a delimiter read) and parse it.

    Returns None when the peer closed cleanly before a new request began.
    Raises HTTPError for anything malformed or too large.
    """
    head = read_head(reader)
    return None if head is None else parse_request(head)


_CR = CRLF[0]     # a head that begins with it may begin with empty lines


def read_head(reader):
    """The bytes of one request head off the stream, as they came (any empty lines
    before it included, its final blank line not), unparsed: one delimiter read.

    Returns None when the peer closed cleanly before a new request began.
    Raises HTTPError for a head too large, cut, or after too many empty lines;
    whatever else is wrong with it is parse_request's to say.  The server looks
    a head up by these bytes (an answer it remembers) before parsing it.
    """
    reads = 0
    while True:
        try:
            # No at_eof() first: a stream that ends before a byte of the head is the
            # read's IncompleteRead of 0 bytes, one call fewer for every request.
            head = reader.read_until(HEAD_END, MAX_HEAD)
        except LimitExceeded:
            # Was it the request line alone that was too long?
            start = reader.peek()[:MAX_REQUEST_LINE + 2]
            if start.find(CRLF) < 0:
                raise too_long_request_line(start.decode('latin-1')) from None
            raise HTTPError(431, f'request head longer than {MAX_HEAD} bytes',
                            close=True) from None
        except IncompleteRead as exc:
            if not exc.received:
                return None             # closed cleanly before a new request began
            raise HTTPError(400, f'connection closed inside the request head ({exc.received}'
                                 ' bytes)', close=True) from None
        if head and head[0] != _CR:
            return head                 # the usual head: no empty line before it
        empty = empty_lines(head)
        if empty > 2 * MAX_EMPTY_LINES:
            break
        if empty < len(head):
            return head
        reads += 1                      # empty lines alone so far: read on, a few times
        if reads > MAX_EMPTY_LINES:
            break
    raise HTTPError(400, 'too many empty lines before the request line', close=True)


def empty_lines(head):
    """How many bytes of empty lines (whole CRLFs) begin a head.

    RFC 9112 section 2.2: a server SHOULD ignore at least one empty line
    (CRLF) received before the request-line.  We ignore a few (read_head).
    Whole CRLFs only: a bare CR or LF before the request line is not an
    empty line, and a bare CR MUST be treated as invalid (section 2.2), so
    it is left for parse_head to refuse.
    """
    return LEADING_CRLFS.match(head).end() if head[:2] == CRLF else 0


def parse_request(head):
    """The Request of a head as read_head gave it: its empty lines skipped, the rest
    parsed (parse_head), its size on the wire counted from its first byte."""
    request = parse_head(head[empty_lines(head):])
    request.head_size = len(head) + len(HEAD_END)
    return request
