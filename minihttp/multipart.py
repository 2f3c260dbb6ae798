"""multipart/form-data (RFC 7578, RFC 2046 section 5.1), streamed on the framing core.

The boundary is one more delimiter.  The request body, itself framed by
Content-Length or chunks, is turned back into a byte stream (BodyStream) and
read by a StreamReader like a socket: ``read_until_to`` streams each part's
content up to the next ``CRLF--boundary`` without ever holding a whole part,
and each part's head is read with the same field-line reader as the trailers.
"""

import re
from urllib.parse import unquote_to_bytes

from .framing import IncompleteRead, LimitExceeded, StreamReader
from .errors import HTTPError, SizeLimit
from .grammar import CRLF
from .request import read_field_lines
from .limits import (MAX_FORM_FIELD, MAX_FORM_FIELDS, MAX_FORM_PARTS, MAX_PART_FIELDS,
                     MAX_PART_HEAD)


# boundary := 0*69<bchars> bcharsnospace (RFC 2046 section 5.1.1)
BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
# parameter = ";" OWS name "=" ( token / quoted-string ) (RFC 9110 section 5.6.6),
# read leniently.  Every run is possessive: none can give back a character the
# next part of the pattern would take, and an unclosed quote is scanned once.
PARAM = re.compile(r';\s*+([^\s=;]++)\s*+=\s*+("(?:[^"\\]|\\.)*+"|[^;]*+)')
# ext-value = charset "'" [ language ] "'" value-chars (RFC 8187 section 3.2.1, once
# RFC 5987): the form of a filename* parameter.  Possessive, linear.
EXT_VALUE = re.compile(r"(?i:(utf-8|iso-8859-1))'[A-Za-z0-9-]*+'"
                       r"((?:%[0-9A-Fa-f]{2}|[A-Za-z0-9!#$&+.^_`|~-])*+)")


def parameters(value):
    """The parameters of a Content-Type or Content-Disposition value, names lower-cased."""
    params = {}
    for name, raw in PARAM.findall(value):
        raw = raw.strip()
        if raw.startswith('"'):
            raw = re.sub(r'\\(.)', r'\1', raw[1:-1])
        params[name.lower()] = raw
    return params


def boundary_of(content_type):
    """The boundary of a multipart/form-data Content-Type, or HTTPError 400/415."""
    media = content_type.split(';', 1)[0].strip().lower()
    if media != 'multipart/form-data':
        raise HTTPError(415, f'expected multipart/form-data, not {media[:60]!r}')
    boundary = parameters(content_type).get('boundary')
    if boundary is None or not BOUNDARY.fullmatch(boundary):
        raise HTTPError(400, 'multipart/form-data without a valid boundary parameter')
    return boundary.encode('latin-1')


class BodyStream:
    """A request Body seen as a socket: ``recv_into`` hands out its pieces."""

    def __init__(self, body, limit=None):
        self._pieces = body.pieces()
        self._piece = memoryview(b'')
        self._room = SizeLimit('form', limit)

    def recv_into(self, buf):
        while not self._piece:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._piece = memoryview(piece)
            self._room.take(len(piece))
        n = min(len(buf), len(self._piece))
        buf[:n] = self._piece[:n]
        self._piece = self._piece[n:]
        return n

    def drain(self):
        """Read the rest (the epilogue), within the same limit."""
        for piece in self._pieces:
            self._room.take(len(piece))


class Part:
    """One part's head: its fields, form-field name and file name (if any)."""

    def __init__(self, fields):
        self.fields = fields
        disposition = next((v for n, v in fields if n.lower() == 'content-disposition'), '')
        params = parameters(disposition)
        self.name = params.get('name')
        self.filename = file_name(params)
        if self.filename is not None:
            # Old browsers on Windows send the client-side path ("C:\\Users\\...");
            # keep its last segment.  A "/" stays: browsers name the files of a
            # picked folder by their path in it ("pics/2024/cat.jpg", the File's
            # webkitRelativePath), and uploads.check_name takes it as folders.
            self.filename = self.filename.rpartition('\\')[2]


def file_name(params):
    """A part's file name as the sender meant it, or None; HTTPError 400 when unreadable.

    RFC 7578 section 4.2: the filename parameter holds the name in UTF-8 (browsers
    send its bytes as they are; the part's head was read as latin-1, byte for
    byte).  Its note forbids senders the RFC 5987 filename* form, but some clients
    send it anyway (curl's and Python's header helpers can): taken leniently, and
    preferred when both are given, as RFC 6266 section 4.3 does for downloads.
    """
    extended = params.get('filename*')
    if extended is not None:
        match = EXT_VALUE.fullmatch(extended)
        if not match:
            raise HTTPError(400, 'filename* is not charset\'language\'percent-encoded')
        charset, value = match.groups()
        try:
            return unquote_to_bytes(value).decode(charset.lower())
        except UnicodeError:
            raise HTTPError(400, f'filename* is not {charset}') from None
    name = params.get('filename')
    if name is None:
        return None
    try:
        return name.encode('latin-1').decode('utf-8')
    except UnicodeError:
        raise HTTPError(400, 'upload name is not UTF-8') from None


def read_parts(body, boundary, on_part, limit=None, on_end=None, max_parts=MAX_FORM_PARTS):
    """Read every part of a multipart body; ``on_part(part)`` returns the sink for its
    content, and ``on_end()`` is called as each part's content ends.

    Raises HTTPError 400 when the body is not well-formed multipart, and 413
    once more than ``limit`` bytes of it arrived or it has more than
    ``max_parts`` parts.
    """
    stream = BodyStream(body, limit)
    reader = StreamReader(stream)
    delimiter = CRLF + b'--' + boundary
    parts = SizeLimit('form', max_parts, 'parts')
    try:
        # The preamble before the first boundary is ignored (RFC 2046 section
        # 5.1.1); the first boundary needs no CRLF before it.
        reader.read_until_to(b'--' + boundary, lambda piece: None)
        while True:
            after = reader.read_exact(2)
            if after == b'--':        # the close-delimiter; the epilogue is ignored
                break
            if after != CRLF:
                # Transport padding (whitespace) before the CRLF must be tolerated.
                padding = after + reader.read_until(CRLF, MAX_PART_HEAD)
                if padding.strip(b' \t'):
                    raise HTTPError(400, 'multipart boundary followed by junk', close=True)
            parts.take(1)
            part = Part(read_field_lines(reader, MAX_PART_HEAD, MAX_PART_FIELDS, 'part header'))
            reader.read_until_to(delimiter, on_part(part))
            if on_end is not None:
                on_end()
    except IncompleteRead:
        raise HTTPError(400, 'multipart body ended before its closing boundary',
                        close=True) from None
    except LimitExceeded:
        raise HTTPError(400, 'multipart boundary line too long', close=True) from None
    stream.drain()


class FormFields:
    """A form's non-file fields, kept in memory to report them: [(name, bytearray)].

    Each value is at most MAX_FORM_FIELD bytes, and all names and values
    together at most ``limit`` (413 beyond either).
    """

    def __init__(self, limit=MAX_FORM_FIELDS):
        self.items = []
        self.room = SizeLimit('form fields in all', limit)

    def sink(self, name):
        """The sink collecting one field's value."""
        value = bytearray()
        self.room.take(len(name or ''))
        self.items.append((name, value))
        field = SizeLimit(f'form field {(name or "")[:60]!r}', MAX_FORM_FIELD)

        def collect(piece):
            field.take(len(piece))
            self.room.take(len(piece))
            value.extend(piece)
        return collect
