"""Conformance, one row per requirement: the bytes sent, the status, whether it closes, the section.

Each row is a requirement of RFC 9112 (message syntax and framing) or RFC
9110 (semantics) quoted by section, the raw request bytes that exercise it,
and what the server must answer: the status, whether the connection must
close afterwards (True), must stay usable (False, proved by a second request
on it), or may do either (None), and the response fields the answer must
carry.  The server is a real one on loopback; h11 reads its answers.
test_http_oracle.py compares the same parser with h11 on a wider corpus;
this table is the list a reviewer reads.
"""

import socket
from typing import NamedTuple

import pytest

from support import SMALL_INDEX, assert_one_line_reason, h11_client, h11_read, receiver


H = b'Host: conformance\r\n'


class Row(NamedTuple):
    id: str
    raw: bytes
    status: int
    close: object           # True: closes; False: stays usable; None: either
    section: str            # the requirement, quoted or paraphrased, with its section
    fields: tuple = ()      # response fields that must be there: (name, value or None)
    method: str = 'GET'     # what h11 reads the answer as (HEAD has no body)
    informational: tuple = ()


def req(line=b'GET / HTTP/1.1', fields=H, body=b''):
    return line + b'\r\n' + fields + b'\r\n' + body


def put(fields, body=b''):
    """A PUT to /headers, which reads the whole body before it answers (an /echo would
    have sent its head already when a malformed body is found); the fields frame it."""
    return req(b'PUT /headers HTTP/1.1', H + fields, body)


def chunked(body):
    return put(b'Transfer-Encoding: chunked\r\n', body)


ETAG = '"{etag}"'       # replaced by the index page's ETag when the row is sent

ROWS = [
    # -- the request line (RFC 9112 section 3) --
    Row('request-line: two spaces', req(b'GET  / HTTP/1.1'), 400, True,
        '9112 3: request-line = method SP request-target SP HTTP-version (we do not split '
        'on other whitespace: section 3 allows it, smuggling starts there)'),
    Row('request-line: tab for SP', req(b'GET\t/ HTTP/1.1'), 400, True, '9112 3, as above'),
    Row('version in lower case', req(b'GET / http/1.1'), 400, True,
        '9112 2.3: HTTP-name is case-sensitive "HTTP"'),
    Row('version 2.0', req(b'GET / HTTP/2.0'), 505, True,
        '9110 15.6.6: 505 for a major version the server does not support'),
    Row('target with a fragment', req(b'GET /#x HTTP/1.1'), 400, True,
        '9112 3.2.1: origin-form = absolute-path [ "?" query ]'),
    Row('target not in any form', req(b'GET x HTTP/1.1'), 400, True,
        '9112 3.2: request-target = origin-form / absolute-form / authority-form / '
        'asterisk-form'),
    Row('long method', b'M' * 9000 + b' / HTTP/1.1\r\n' + H + b'\r\n', 501, True,
        '9112 3: a method longer than any implemented SHOULD get 501'),
    Row('long target', b'GET /' + b'a' * 9000 + b' HTTP/1.1\r\n' + H + b'\r\n', 414, True,
        '9112 3: a target longer than the server wishes to parse MUST get 414'),
    Row('unknown method', req(b'FROB / HTTP/1.1'), 501, False,
        '9110 15.6.2: 501 for a method the server does not recognize'),
    Row('known method not allowed here', req(b'PUT / HTTP/1.1', H + b'Content-Length: 0\r\n'),
        405, False, '9110 15.5.6: a 405 MUST carry Allow', fields=(('allow', None),)),
    # -- field syntax (RFC 9112 section 5, RFC 9110 section 5.5) --
    Row('whitespace before the colon', req(fields=H + b'X-A : 1\r\n'), 400, True,
        '9112 5.1: a server MUST reject whitespace between field name and colon with 400'),
    Row('obsolete line folding', req(fields=H + b'X-A: 1\r\n 2\r\n'), 400, True,
        '9112 5.2: a server MUST reject obs-fold with 400 (or unfold it)'),
    Row('field without a colon', req(fields=H + b'X-A\r\n'), 400, True,
        '9112 5: field-line = field-name ":" OWS field-value OWS'),
    Row('NUL in a value', req(fields=H + b'X-A: a\x00b\r\n'), 400, True,
        '9110 5.5: CR, LF and NUL MUST be rejected or replaced'),
    Row('bare CR in a value', req(fields=H + b'X-A: a\rb\r\n'), 400, True,
        '9112 2.2: a bare CR MUST be treated as invalid'),
    Row('bare LF line endings', b'GET / HTTP/1.1\n' + b'Host: h\n\n' + req(), 400, True,
        '9112 2.2: a recipient MAY take a bare LF as a line end; we do not, so this is not a '
        'head: the line "GET / HTTP/1.1\\nHost: h" is refused'),
    Row('empty value', req(fields=H + b'X-A:\r\n'), 200, False,
        '9110 5.5: field-value = *field-content, which may be empty'),
    Row('value with OWS around it', req(fields=H + b'X-A: \t 1 \t\r\n'), 200, False,
        '9112 5: OWS before and after the value is not part of it'),
    # -- Host (RFC 9112 section 3.2, RFC 9110 section 7.2) --
    Row('HTTP/1.1 without Host', req(fields=b''), 400, True,
        '9112 3.2: a server MUST respond 400 to an HTTP/1.1 request without Host'),
    Row('two Host fields', req(fields=H + H), 400, True,
        '9112 3.2: ... and to one with more than one Host field line'),
    Row('empty Host', req(fields=b'Host:\r\n'), 400, True,
        '9112 3.2: ... or an invalid Host; 9110 4.2.1: an http URI with an empty host MUST '
        'be rejected'),
    Row('invalid Host', req(fields=b'Host: a b\r\n'), 400, True, '9112 3.2, as above'),
    Row('HTTP/1.0 without Host', b'GET / HTTP/1.0\r\n\r\n', 200, True,
        '9112 3.2: only HTTP/1.1 requires Host; 9112 9.3: 1.0 closes unless kept alive'),
    Row('absolute-form', req(b'GET http://conformance/ HTTP/1.1'), 200, False,
        '9112 3.2.2: a server MUST accept the absolute-form'),
    # -- Content-Length (RFC 9112 section 6.3, RFC 9110 section 8.6) --
    Row('Content-Length with leading zeros', put(b'Content-Length: 005\r\n', b'hello'), 200,
        False, '9110 8.6: Content-Length = 1*DIGIT'),
    Row('Content-Length with a sign', put(b'Content-Length: +5\r\n', b'hello'), 400, True,
        '9112 6.3 item 5: an invalid Content-Length MUST be treated as an unrecoverable '
        'error: 400, and close'),
    Row('negative Content-Length', put(b'Content-Length: -5\r\n', b'hello'), 400, True,
        '9112 6.3 item 5, as above'),
    Row('Content-Length in hex', put(b'Content-Length: 0x5\r\n', b'hello'), 400, True,
        '9112 6.3 item 5, as above'),
    Row('Content-Length with a space inside', put(b'Content-Length: 5 5\r\n', b'hello'), 400,
        True, '9112 6.3 item 5, as above'),
    Row('Content-Length list of one value', put(b'Content-Length: 5, 5\r\n', b'hello'), 200,
        False, '9110 8.6: a recipient MAY take a list of identical values as that value'),
    Row('Content-Length list of two values', put(b'Content-Length: 5, 6\r\n', b'hello'), 400,
        True, '9112 6.3 item 5: differing lengths MUST be rejected'),
    Row('two different Content-Length lines',
        put(b'Content-Length: 5\r\nContent-Length: 6\r\n', b'hello'), 400, True,
        '9112 6.3 item 5, as above'),
    # -- Transfer-Encoding (RFC 9112 sections 6.1, 6.3 and 7) --
    Row('Transfer-Encoding "chunked " (OWS)',
        put(b'Transfer-Encoding: chunked \r\n', b'5\r\nhello\r\n0\r\n\r\n'), 200, False,
        '9112 5: the OWS after a value is not part of it'),
    Row('Transfer-Encoding "Chunked"',
        put(b'Transfer-Encoding: Chunked\r\n', b'5\r\nhello\r\n0\r\n\r\n'), 200, False,
        '9112 7: transfer-coding names are case-insensitive'),
    Row('chunked not last', put(b'Transfer-Encoding: chunked, identity\r\n', b''), 400, True,
        '9112 6.3 item 4: chunked not the final coding: 400, then close'),
    Row('identity alone', put(b'Transfer-Encoding: identity\r\n', b''), 400, True,
        '9112 6.3 item 4, as above'),
    Row('chunked twice in two fields',
        put(b'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n', b'0\r\n\r\n'),
        400, True, '9112 7: a sender MUST NOT apply chunked more than once'),
    Row('an unknown coding before chunked',
        put(b'Transfer-Encoding: gzip, chunked\r\n', b'0\r\n\r\n'), 501, True,
        '9112 6.1: a coding the server does not understand SHOULD get 501'),
    Row('Transfer-Encoding and Content-Length',
        put(b'Transfer-Encoding: chunked\r\nContent-Length: 5\r\n', b'0\r\n\r\n'), 400, True,
        '9112 6.3 item 3: both present MAY be rejected, and the connection MUST close'),
    Row('Transfer-Encoding in HTTP/1.0',
        req(b'PUT /headers HTTP/1.0', b'Transfer-Encoding: chunked\r\n', b'0\r\n\r\n'), 400,
        True, '9112 6.1: in an HTTP/1.0 message it MUST be treated as faulty framing'),
    # -- chunk-size lines, data and trailers (RFC 9112 section 7.1) --
    Row('chunk size with leading zeros', chunked(b'005\r\nhello\r\n0\r\n\r\n'), 200, False,
        '9112 7.1: chunk-size = 1*HEXDIG'),
    Row('chunk size "0x5"', chunked(b'0x5\r\nhello\r\n0\r\n\r\n'), 400, True,
        '9112 7.1, as above'),
    Row('chunk size "+5"', chunked(b'+5\r\nhello\r\n0\r\n\r\n'), 400, True,
        '9112 7.1, as above'),
    Row('chunk size of 17 hex digits', chunked(b'1' + b'0' * 16 + b'\r\nx\r\n0\r\n\r\n'), 400,
        True, '9112 7.1: a recipient MUST anticipate large sizes and prevent overflow'),
    Row('whitespace before a chunk size\'s CRLF', chunked(b'5 \r\nhello\r\n0\r\n\r\n'), 400,
        True, '9112 7.1: chunk = chunk-size [ chunk-ext ] CRLF; BWS only around ";" and "="'),
    Row('extension name not a token', chunked(b'5;a b\r\nhello\r\n0\r\n\r\n'), 400, True,
        '9112 7.1.1: chunk-ext-name = token'),
    Row('control character in an extension', chunked(b'5;a="\x01"\r\nhello\r\n0\r\n\r\n'),
        400, True, '9110 5.6.4: qdtext has no control characters'),
    Row('extensions ignored', chunked(b'5;a=b;c="d e"\r\nhello\r\n0\r\n\r\n'), 200, False,
        '9112 7.1.1: a recipient MUST ignore extensions it does not understand'),
    Row('bare LF after a chunk size', chunked(b'5\nhello\r\n0\r\n\r\n'), 400, True,
        '9112 2.2: we never take a bare LF as a line end'),
    Row('bare CR after a chunk size', chunked(b'5\rhello\r\n0\r\n\r\n'), 400, True,
        '9112 2.2: a bare CR MUST be treated as invalid'),
    Row('chunk data longer than its size', chunked(b'5\r\nhelloX\r\n0\r\n\r\n'), 400, True,
        '9112 7.1: chunk-data is exactly chunk-size octets, then CRLF'),
    Row('trailer ended by bare LFs', chunked(b'5\r\nhello\r\n0\r\nX-T: 1\n\n'), 400, True,
        '9112 2.2: refused as soon as the LF arrives'),
    Row('bare CR in a trailer', chunked(b'5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n'), 400, True,
        '9112 2.2, as above'),
    Row('trailer fields', chunked(b'5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n'), 200, False,
        '9112 7.1.2: a trailer section may follow the last chunk'),
    # -- pipelining (RFC 9112 section 9.3.2) --
    Row('pipelined requests', req() + req(b'HEAD / HTTP/1.1'), 200, False,
        '9112 9.3.2: a server MAY process pipelined requests, answering in order'),
    Row('a request after a rejected one', req(fields=b'') + req(), 400, True,
        '9112 9.6 and 6.3: after a framing error the next request cannot be found: the '
        'connection closes and the pipelined request gets no answer'),
    # -- HTTP/1.0 and persistence (RFC 9112 section 9.3) --
    Row('HTTP/1.0 keep-alive', b'GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n', 200, False,
        '9112 9.3: a 1.0 client keeps the connection only when told',
        fields=(('connection', 'keep-alive'),)),
    Row('HTTP/1.1 Connection: close', req(fields=H + b'Connection: close\r\n'), 200, True,
        '9112 9.6: a server that closes says so', fields=(('connection', 'close'),)),
    # -- Expect (RFC 9110 section 10.1.1) --
    Row('100-continue', put(b'Expect: 100-continue\r\nContent-Length: 5\r\n', b'hello'), 200,
        False, '9110 10.1.1: 100 (Continue) before reading the body', informational=(100,)),
    Row('an expectation not met', req(fields=H + b'Expect: 200-ok\r\n'), 417, None,
        '9110 10.1.1: 417 for an expectation the server cannot meet'),
    Row('Expect in HTTP/1.0 ignored',
        req(b'PUT /headers HTTP/1.0', b'Expect: 100-continue\r\nContent-Length: 2\r\n',
            b'hi'),
        200, True, '9110 10.1.1: a server MUST ignore 100-continue in an HTTP/1.0 request'),
    # -- HEAD and the status codes with required fields (RFC 9110 sections 9 and 15) --
    Row('HEAD', req(b'HEAD / HTTP/1.1'), 200, False,
        '9110 9.3.2: the same fields as GET, no content', method='HEAD',
        fields=(('content-length', str(len(SMALL_INDEX))),)),
    Row('304', req(fields=H + b'If-None-Match: ' + ETAG.encode() + b'\r\n'), 304, False,
        '9110 15.4.5: a 304 MUST carry Date and the ETag a 200 would',
        fields=(('etag', None), ('date', None))),
    Row('206', req(fields=H + b'Range: bytes=0-9\r\n'), 206, False,
        '9110 15.3.7: a 206 with one range MUST carry Content-Range',
        fields=(('content-range', f'bytes 0-9/{len(SMALL_INDEX)}'), ('content-length', '10'))),
    Row('416', req(fields=H + b'Range: bytes=99999-\r\n'), 416, False,
        '9110 15.5.17: a 416 SHOULD carry Content-Range: bytes */length',
        fields=(('content-range', f'bytes */{len(SMALL_INDEX)}'),)),
    Row('OPTIONS *', req(b'OPTIONS * HTTP/1.1'), 204, False,
        '9110 9.3.7: OPTIONS * asks about the server; Allow says what it does',
        fields=(('allow', None),)),
]


@pytest.fixture(scope='module')
def etag(loop_server):
    """The index page's ETag, for the conditional rows."""
    client = h11_client()
    with socket.create_connection(loop_server) as sock:
        sock.sendall(req())
        return h11_read(client, receiver(sock)).headers['etag']


@pytest.mark.parametrize('row', ROWS, ids=[row.id for row in ROWS])
def test_requirement(connect, etag, row):
    sock = connect()
    sock.sendall(row.raw.replace(ETAG.encode(), etag.encode()))
    answer = h11_read(h11_client(row.method), receiver(sock))
    assert answer.status == row.status, (row.section, answer.body)
    assert tuple(answer.informational) == row.informational
    for name, value in row.fields:
        assert name in answer.headers, (row.section, answer.headers)
        if value is not None:
            assert answer.headers[name] == value, (row.section, answer.headers)
    if row.status >= 400:
        assert_one_line_reason(answer)
    if row.close is True:
        assert not answer.kept and answer.headers.get('connection') == 'close', row.section
        sock.settimeout(5)
        rest = b''
        try:
            while data := sock.recv(65536):
                rest += data
        except ConnectionResetError:
            pass
        assert rest == b'', f'answered after a close: {rest[:80]!r}'
    elif row.close is False:
        assert answer.kept, row.section
        sock.sendall(req())
        assert h11_read(h11_client(), receiver(sock)).status == 200


def test_the_table_names_a_section_for_every_row():
    assert all(row.section[:4] in ('9112', '9110') for row in ROWS)
    assert len({row.id for row in ROWS}) == len(ROWS)
