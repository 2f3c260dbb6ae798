"""HTTP/1.1 messages (RFC 9112) on the framing core.

A request is framed twice, as chapter 5 says:

* its **head** ends at a delimiter, the blank line: one ``read_until(CRLFCRLF)``;
* its **body** is measured by Content-Length (one streamed exact read) or sent
  as **chunks**, each a delimiter-read size line, an exact read of the data
  and an exact read of the CRLF after it, ending with a zero-length chunk and
  a trailer section read line by line.

Parsing functions take bytes and return values, so the tests need no sockets.
Everything a client can get wrong raises HTTPError, which carries the status
it maps to; the server turns it into a response in one place.
"""

import re
import socket
from email.utils import formatdate
from http import HTTPStatus

from .framing import IncompleteRead, LimitExceeded, write_all
from .limits import (BODY_PIECE, MAX_CHUNK_LINE, MAX_CHUNK_SIZE_DIGITS,
                     MAX_CONTENT_LENGTH_DIGITS, MAX_EMPTY_LINES, MAX_FIELDS, MAX_HEAD,
                     MAX_METHOD, MAX_REQUEST_LINE, MAX_TRAILER, MAX_TRAILER_FIELDS,
                     STREAM_BUFFER_SIZE)
from .records import keep_size

CRLF = b'\r\n'
# The last chunk with an empty trailer section: the end of a chunked body (section 7.1).
LAST_CHUNK = b'0\r\n\r\n'
HEAD_END = b'\r\n\r\n'
SERVER = 'minihttp/0.1'
# Linux's "more data follows" send flag; elsewhere a file's head goes out alone.
MSG_MORE = getattr(socket, 'MSG_MORE', 0)

# Methods this server knows (RFC 9110 section 9).  Anything else is 501.
KNOWN_METHODS = frozenset(
    ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'])


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


# -- grammar (RFC 9110 section 5.6, RFC 9112 sections 3 and 5) -----------------
# Matched on the head decoded as Latin-1, so every byte is one character.
#
# Every pattern here runs on client bytes, so each is written to take time
# linear in its input: Python's re backtracks, and two runs that can match the
# same characters (optional whitespace before and after an optional value, or
# an outer repetition that can retry its earlier rounds) make a failed match
# try every way of splitting them, polynomial or exponential in the length.
# Possessive quantifiers (*+, ++, ?+) and atomic groups (?>...) give back
# nothing once matched; each is used only where giving back could never have
# helped (the next character cannot be one the run takes), so the grammar is
# unchanged.  Digits are [0-9]: in a str pattern \d is any script's digit.

# token = 1*tchar (RFC 9110 section 5.6.2)
TOKEN = r"[-!#$%&'*+.^_`|~0-9A-Za-z]++"

# request-line = method SP request-target SP HTTP-version (RFC 9112 section 3).
# Single spaces only: section 3 lets a server split on other whitespace, and we
# choose not to, since lenient splitting is how request smuggling starts.  The
# target is checked loosely here, as visible ASCII (VCHAR): its finer RFC 3986
# grammar is only a SHOULD for recipients (section 3.2), and real clients send
# characters such as | and {} unescaped.
REQUEST_LINE = re.compile(rf'({TOKEN}) ([\x21-\x7e]++) (HTTP/[0-9]\.[0-9])')
HTTP_VERSION = re.compile(r'HTTP/[0-9]\.[0-9]')

# field-line = field-name ":" OWS field-value OWS (RFC 9112 section 5)
# field-value = *field-content; field-content = field-vchar
#               [ 1*( SP / HTAB / field-vchar ) field-vchar ] (RFC 9110 section 5.5)
# No whitespace before the colon (section 5.1: a server MUST reject it with
# 400).  field-vchar is VCHAR or obs-text; CR, LF and NUL MUST be rejected
# or replaced (RFC 9110 section 5.5) and we reject them, along with the other
# control characters, which that section lets a recipient refuse.
# The leading OWS is possessive (a value starts with a field-vchar, never with
# whitespace), the value is atomic (it gives back its trailing whitespace once,
# inside the group, and is not retried shorter) and the trailing OWS is
# possessive: a line is matched one way, whatever follows it.
FIELD = (rf'({TOKEN}):[ \t]*+'
         r'((?>[\x21-\x7e\x80-\xff](?:[ \t\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?+)'
         r'[ \t]*+')
FIELD_LINE = re.compile(FIELD)
# The same grammar for a whole field section after the request line: one
# fullmatch checks every line in C, one findall takes them apart.  The
# repetition is possessive: a line that fails does not make it retry the
# lines before.
FIELD_SECTION = re.compile(rf'(?:\r\n{FIELD})*+')
FIELD_LINES = re.compile(rf'\r\n{FIELD}')

# Host = uri-host [ ":" port ] (RFC 9110 section 7.2): a reg-name or an IPv4
# address, or an IPv6 literal in brackets.
HOST = re.compile(r"(?:[-A-Za-z0-9._~%!$&'()*+,;=]*+|\[[0-9A-Fa-f:.]++\])(?::[0-9]*+)?+")

# chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF (RFC 9112 section 7.1)
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
# The extensions are bounded by MAX_CHUNK_LINE and ignored, as section 7.1.1
# requires of a recipient that does not understand them.
CHUNK_LINE = re.compile(rf'([0-9A-Fa-f]{{1,{MAX_CHUNK_SIZE_DIGITS}}})(.*)', re.S)
# quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE (RFC 9110 section 5.6.4):
# no control characters inside the quotes either, so a bare CR or LF there is
# refused (RFC 9112 section 2.2), not hidden from us while a proxy splits on it.
# qdtext and quoted-pair start with different characters, so the repetition
# can be possessive.
QUOTED_STRING = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*+"'
# Whitespace (BWS) only where the grammar puts it: around ";" and "=".  After
# the size or an extension, right before the CRLF, it is not chunk-ext, and a
# size line that a proxy might read differently is refused.
CHUNK_EXT = re.compile(
    rf'(?:[ \t]*+;[ \t]*+{TOKEN}(?:[ \t]*+=[ \t]*+(?:{TOKEN}|{QUOTED_STRING}))?+)*+')

LEADING_CRLFS = re.compile(rb'(?:\r\n)*+')

# The authority ends at the first "/", "?" or "#" and the rest is the path and
# query: each run possessive, so that a target ending in a stray "#" is not
# split again at every earlier character.
ABSOLUTE_FORM = re.compile(r'[A-Za-z][A-Za-z0-9+.-]*+://[^/?#]*+([^#]*+)')


def decimal(text, max_digits):
    """The value of ``1*DIGIT`` (DIGIT is ASCII 0-9, RFC 5234 appendix B.1), or None.

    None for anything else, and for a numeral longer than ``max_digits``,
    which is never converted: int() refuses more than 4300 digits
    (sys.get_int_max_str_digits) and is quadratic below that.  str.isdigit()
    alone would take '²', which int() refuses, and digits of other scripts,
    which int() takes.
    """
    if len(text) > max_digits or not text.isdigit() or not text.isascii():
        return None
    return int(text)


class Request:
    """One request: its head as received, and the reader of its body."""

    __slots__ = ('method', 'target', 'version', 'fields', 'head_size', 'path', 'query',
                 '_index', 'body', 'trailers')

    def __init__(self, method, target, version, fields, head_size=0):
        self.method = method
        self.target = target
        self.version = version
        self.fields = fields      # [(name, value)] as received, in order
        self.head_size = head_size
        self.body = None
        self.trailers = []
        self._index = index_fields(fields)
        path, _, query = request_path(method, target).partition('?')
        self.path = path
        self.query = query

    def get(self, name, default=None):
        """The field's value (several lines joined with ', ', RFC 9110 section 5.3)."""
        values = self._index.get(name.lower())
        return default if values is None else ', '.join(values)

    def get_all(self, name):
        return self._index.get(name.lower(), [])

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
    by ``body_framing``.
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
    for _ in range(MAX_EMPTY_LINES + 1):
        if reader.at_eof():
            return None
        try:
            head = reader.read_until(HEAD_END, MAX_HEAD)
        except LimitExceeded:
            # Was it the request line alone that was too long?
            start = reader.peek()[:MAX_REQUEST_LINE + 2]
            if start.find(CRLF) < 0:
                raise too_long_request_line(start.decode('latin-1')) from None
            raise HTTPError(431, f'request head longer than {MAX_HEAD} bytes',
                            close=True) from None
        except IncompleteRead as exc:
            raise HTTPError(400, f'connection closed inside the request head ({exc.received}'
                                 ' bytes)', close=True) from None
        # RFC 9112 section 2.2: a server SHOULD ignore at least one empty line
        # (CRLF) received before the request-line.  We ignore a few.
        # Whole CRLFs only: a bare CR or LF before the request line is not an
        # empty line, and a bare CR MUST be treated as invalid (section 2.2),
        # so it is left for parse_head to refuse.
        stripped = head[LEADING_CRLFS.match(head).end():] if head[:2] == CRLF else head
        if len(head) - len(stripped) > 2 * MAX_EMPTY_LINES:
            break
        if stripped:
            request = parse_head(stripped)
            request.head_size = len(head) + len(HEAD_END)
            return request
    raise HTTPError(400, 'too many empty lines before the request line', close=True)


# -- the body's framing, decided in one place (RFC 9112 section 6.3) ----------

def body_framing(request):
    """('chunked', None), ('length', n) or ('none', 0), in RFC 9112 section 6.3's order.

    Every ambiguity is an HTTPError that closes the connection: the server
    cannot know where this message ends, so it cannot read the next one.
    """
    index = request._index
    if 'transfer-encoding' not in index and 'content-length' not in index:
        return 'none', 0                     # section 6.3 item 7, for requests
    codings = request.tokens('transfer-encoding')
    lengths = request.get_all('content-length')
    if 'transfer-encoding' in index:
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
        return 'chunked', None
    if lengths:
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
        return 'length', length
    return 'none', 0


# -- body readers: one interface, two framings -------------------------------

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

    framing = 'none'
    length = 0

    def __init__(self, reader, send_continue=None):
        self.reader = reader
        self.received = 0
        self.done = self.framing == 'none'
        self.chunks = 0
        self.sizes = []      # the first RECORDED_CHUNKS chunk sizes, for the framing record
        self.trailers = []
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


def bounded(sink, limit):
    """A sink that raises 413 once more than ``limit`` bytes passed through it."""
    if limit is None:
        return sink
    seen = 0

    def guarded(piece):
        nonlocal seen
        seen += len(piece)
        if seen > limit:
            raise HTTPError(413, f'request body larger than {limit} bytes', close=True)
        sink(piece)
    return guarded


class ContentLengthBody(Body):
    """A body of exactly ``length`` bytes: the framing core's exact read."""

    framing = 'length'

    def __init__(self, reader, length, send_continue=None):
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
                raise truncated_body(exc) from None
            self.received += len(piece)
            yield piece
        self.done = True


class ChunkedBody(Body):
    """A chunked body (RFC 9112 section 7.1), read by pulling, not by state machine.

    Each chunk is a delimiter read of its size line, an exact read of its data,
    and an exact read of the CRLF that must follow; the zero-size chunk is
    followed by the trailer section, read line by line up to the empty line.
    """

    framing = 'chunked'
    length = None

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
        if match is None or not CHUNK_EXT.fullmatch(match.group(2)):
            raise framing_error(f'bad chunk-size line {text[:40]!r}')
        size = int(match.group(1), 16)
        if size == 0:
            self._read_trailers()
            self.done = True
        else:
            keep_size(self.sizes, size)
        return size

    def _end_chunk(self):
        """The CRLF after chunk data, exactly (section 7.1)."""
        try:
            if self.reader.read_exact(2) != CRLF:
                raise framing_error('chunk data not followed by CRLF')
        except IncompleteRead as exc:
            raise truncated_body(exc) from None
        self.chunks += 1

    def _read_trailers(self):
        try:
            self.trailers = read_field_lines(self.reader, MAX_TRAILER, MAX_TRAILER_FIELDS,
                                             'trailer')
        except IncompleteRead as exc:
            raise truncated_body(exc) from None

    def read_to(self, sink):
        self.start()
        self.reader.reserve(STREAM_BUFFER_SIZE)
        read_exact_to = self.reader.read_exact_to
        while not self.done:
            size = self._next_size()
            if not size:
                break
            try:
                read_exact_to(size, sink)
            except IncompleteRead as exc:
                raise truncated_body(exc) from None
            self.received += size
            self._end_chunk()
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
                    raise truncated_body(exc) from None
                remaining -= len(piece)
                self.received += len(piece)
                yield piece
            self._end_chunk()


def truncated_body(exc):
    return framing_error(f'connection closed inside the body: {exc}')


def open_body(request, reader, send_continue=None):
    """The Body reader for a request, as ``body_framing`` decides."""
    kind, length = body_framing(request)
    if kind == 'chunked':
        return ChunkedBody(reader, send_continue)
    if kind == 'length':
        return ContentLengthBody(reader, length, send_continue)
    return Body(reader)


# -- writing responses (the mirror of the readers) -----------------------------

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
    status = response.status
    length = response.length
    if status < 200 or status in (204, 304):
        # No body, so no framing fields: 1xx and 204 never carry a length (RFC 9110
        # section 8.6), and a 304's would have to be the full representation's.
        framing, fields = 'none', []
    elif length is not None:
        framing, fields = 'Content-Length', [('Content-Length', str(length))]
    elif chunked_ok:
        framing, fields = 'chunked', [('Transfer-Encoding', 'chunked')]
    else:
        framing, fields = 'close', []
        keep_alive = False
    keep_alive = keep_alive and not response.close
    if not keep_alive:
        fields.append(('Connection', 'close'))
    elif announce_keep_alive:
        # An HTTP/1.0 client keeps the connection only when told (RFC 9112 section 9.3).
        fields.append(('Connection', 'keep-alive'))
    return head_bytes(status, response.headers + fields, now), framing, keep_alive


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
