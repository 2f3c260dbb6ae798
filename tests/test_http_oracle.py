"""minihttp's responses and refusals, with h11 as the oracle.

* Every response the ResponseWriter makes (Content-Length, chunked,
  close-delimited, HEAD, 204, 304, errors) is read by h11 in client role:
  no protocol error, the same status and body, the same idea of whether the
  connection stays open.  The same for a real server's answers.
* A corpus of invalid requests goes to a real server over loopback: the
  status, a one-line reason, and a closed connection where RFC 9112 says it
  must close.  h11 in server role judges the same bytes; where the two
  disagree, the case says why, citing the RFC.
* The head limits exactly at their edge, and one byte past it.
"""

import socket
from typing import NamedTuple

import h11
import pytest
from hypothesis import given, settings, strategies as st

from minihttp.errors import HTTPError
from minihttp.responses import Response, ResponseWriter, error_response
from minihttp.limits import MAX_FIELDS, MAX_HEAD, MAX_REQUEST_LINE
from support import (FakeSocket, SMALL_INDEX, assert_one_line_reason, closes, h11_client,
                     h11_read, read_written, receiver)

NOW = 1_700_000_000.0



# -- every response the writer makes is valid HTTP/1.1 -------------------------------

def pieces(*parts):
    """An iterator body (a generator, so its length is unknown to the writer)."""
    yield from parts


# (id, request method, Response factory, request version, keep_alive,
#  expected framing as spelled, expected body)
WRITTEN = [
    ('bytes', 'GET', lambda: Response(200, [('Content-Type', 'text/plain')], b'hello\n'),
     'HTTP/1.1', True, 'content-length 6', b'hello\n'),
    ('empty-bytes', 'GET', lambda: Response(200, body=b''),
     'HTTP/1.1', True, 'content-length 0', b''),
    ('iterator-with-length', 'GET', lambda: Response(200, body=pieces(b'ab', b'cd'), length=4),
     'HTTP/1.1', True, 'content-length 4', b'abcd'),
    ('iterator-chunked', 'GET', lambda: Response(200, body=pieces(b'ab', b'', b'cd' * 50)),
     'HTTP/1.1', True, 'chunked', b'ab' + b'cd' * 50),
    ('iterator-chunked-empty', 'GET', lambda: Response(200, body=pieces()),
     'HTTP/1.1', True, 'chunked', b''),
    # An HTTP/1.0 client cannot take chunks: the body runs until the close
    # (RFC 9112 section 6.3 item 8).  h11 sends only HTTP/1.1 requests, but it
    # reads a response with neither length nor chunks the same way, to EOF.
    ('http10-close-delimited', 'GET', lambda: Response(200, body=pieces(b'one ', b'two')),
     'HTTP/1.0', True, 'close', b'one two'),
    ('http10-keep-alive-announced', 'GET', lambda: Response(200, body=b'kept'),
     'HTTP/1.0', True, 'content-length 4', b'kept'),
    ('HEAD-bytes', 'HEAD', lambda: Response(200, body=b'not sent'),
     'HTTP/1.1', True, 'content-length 8', b''),
    ('HEAD-iterator', 'HEAD', lambda: Response(200, body=pieces(b'not sent')),
     'HTTP/1.1', True, 'chunked', b''),
    ('HEAD-iterator-with-length', 'HEAD', lambda: Response(200, body=pieces(b'x'), length=9),
     'HTTP/1.1', True, 'content-length 9', b''),
    ('204', 'OPTIONS', lambda: Response(204, [('Allow', 'GET, HEAD, OPTIONS')]),
     'HTTP/1.1', True, 'none', b''),
    ('304', 'GET', lambda: Response(304, [('ETag', '"v1"')], b''),
     'HTTP/1.1', True, 'none', b''),
    ('304-given-a-body', 'GET', lambda: Response(304, [('ETag', '"v1"')], b'not sent'),
     'HTTP/1.1', True, 'none', b''),
    ('close-asked-by-handler', 'GET', lambda: Response(200, body=b'bye', close=True),
     'HTTP/1.1', True, 'content-length 3', b'bye'),
    ('close-asked-by-server', 'GET', lambda: Response(200, body=pieces(b'bye')),
     'HTTP/1.1', False, 'chunked', b'bye'),
]


@pytest.mark.parametrize(
    'method, make, version, keep_alive, framing, body',
    [case[1:] for case in WRITTEN], ids=[case[0] for case in WRITTEN])
def test_every_written_response_is_valid_for_h11(method, make, version, keep_alive, framing,
                                                 body):
    response = make()
    sock = FakeSocket()
    writer = ResponseWriter(response, method, version, keep_alive, NOW).write(sock)
    sent, kept = writer.sent, writer.keep_alive
    answer = read_written(sock.sent, method)
    assert str(writer.framing) == framing
    assert answer.status == response.status
    assert answer.body == body
    assert sent == (0 if method == 'HEAD' else len(body))
    assert 'date' in answer.headers and answer.headers['server'].startswith('minihttp/')
    # What the server will do with the connection is what the client understands.
    assert answer.kept == kept
    if answer.status in (204, 304) or answer.status < 200:
        # RFC 9112 section 6.1 / RFC 9110 section 8.6: no framing fields on these.
        assert 'content-length' not in answer.headers
        assert 'transfer-encoding' not in answer.headers


@pytest.mark.parametrize('error', [
    HTTPError(400, 'bad request line', close=True),
    HTTPError(404, 'nothing here'),
    HTTPError(405, 'POST is not allowed', headers=[('Allow', 'GET, HEAD, OPTIONS')]),
    HTTPError(408, 'too slow', close=True),
    HTTPError(413, 'too large', close=True),
    HTTPError(414, 'request line too long', close=True),
    HTTPError(417, 'cannot meet the expectation', close=True),
    HTTPError(431, 'head too large', close=True),
    HTTPError(500, 'internal server error', close=True),
    HTTPError(501, 'not implemented'),
    HTTPError(505, 'HTTP/2.0 is not supported', close=True),
    HTTPError(400, 'non-ASCII reason: caf\u00e9 \u2603', close=True),
], ids=lambda error: f'{error.status}-{"close" if error.close else "keep"}')
@pytest.mark.parametrize('method', ['GET', 'HEAD'])
def test_every_error_response_is_valid_for_h11(error, method):
    sock = FakeSocket()
    kept = ResponseWriter(error_response(error), method, 'HTTP/1.1', True, NOW).write(
        sock).keep_alive
    answer = read_written(sock.sent, method)
    assert answer.status == error.status
    assert answer.kept == kept == (not error.close)
    for name, value in error.headers:
        assert answer.headers[name.lower()] == value
    if method == 'GET':
        assert_one_line_reason(answer)
    else:
        assert answer.body == b''


class BoundedSocket(FakeSocket):
    """A FakeSocket that fails, rather than fills memory, when a writer resends forever."""

    LIMIT = 64 * 1024

    def sendmsg(self, buffers, *unused):
        assert len(self.sent) < self.LIMIT, 'the writer keeps sending: partial writes lost?'
        return super().sendmsg(buffers, *unused)


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(st.binary(max_size=300), max_size=8), method=st.sampled_from(['GET', 'HEAD']),
       known=st.booleans(), chunked_ok=st.booleans(), keep_alive=st.booleans(),
       max_send=st.sampled_from([None, 1, 7, 1000]))
def test_any_iterator_body_is_framed_validly(parts, method, known, chunked_ok, keep_alive,
                                             max_send):
    """Whatever pieces a handler yields, in whatever size the kernel takes writes."""
    body = b''.join(parts)
    response = Response(200, body=pieces(*parts), length=len(body) if known else None)
    sock = BoundedSocket(max_send=max_send)
    version = 'HTTP/1.1' if chunked_ok else 'HTTP/1.0'
    kept = ResponseWriter(response, method, version, keep_alive, NOW).write(sock).keep_alive
    answer = read_written(sock.sent, method)
    assert answer.body == (b'' if method == 'HEAD' else body)
    assert answer.kept == kept


# -- a real server on loopback -------------------------------------------------------


def h11_exchange(sock, client, events):
    """Send h11 events over ``sock`` and read the response with the same client."""
    for event in events:
        sock.sendall(client.send(event) or b'')
    return h11_read(client, receiver(sock))


def send_request(sock, client, method, target, headers=(), body=None, chunks=None):
    """One request through h11's writer: a Content-Length body, chunks, or none."""
    headers = [('Host', 'oracle'), *headers]
    events = []
    if chunks is not None:
        headers.append(('Transfer-Encoding', 'chunked'))
        events = [h11.Data(data=chunk) for chunk in chunks]
    elif body is not None:
        headers.append(('Content-Length', str(len(body))))
        events = [h11.Data(data=body)] if body else []
    return h11_exchange(sock, client, [h11.Request(method=method, target=target, headers=headers),
                                       *events, h11.EndOfMessage()])


def test_real_responses_are_valid_for_h11_on_one_connection(connect):
    """/, /echo both ways and /headers, one after another on one keep-alive connection."""
    sock = connect()
    client = h11.Connection(h11.CLIENT)

    def next_request(*args, **kwargs):
        answer = send_request(sock, client, *args, **kwargs)
        assert answer.kept, answer
        client.start_next_cycle()
        return answer

    index = next_request('GET', '/')
    assert (index.status, index.body) == (200, SMALL_INDEX)
    head = next_request('HEAD', '/')
    assert (head.status, head.body) == (200, b'')
    assert head.headers['content-length'] == str(len(SMALL_INDEX))

    payload = bytes(range(256)) * 40
    echoed = next_request('POST', '/echo', [('Content-Type', 'application/x-test')], body=payload)
    assert (echoed.status, echoed.body) == (200, payload)
    assert echoed.headers['content-length'] == str(len(payload))
    assert echoed.headers['x-request-framing'] == f'content-length {len(payload)}'
    assert echoed.headers['content-type'] == 'application/x-test'

    chunks = [b'first chunk;', b'x' * 70000, b'', b'last']
    streamed = next_request('PUT', '/echo', chunks=chunks)
    assert (streamed.status, streamed.body) == (200, b''.join(chunks))
    assert streamed.headers['transfer-encoding'] == 'chunked'
    assert streamed.headers['x-request-framing'] == 'chunked'

    empty = next_request('POST', '/echo', body=b'')
    assert (empty.status, empty.body) == (200, b'')

    sent = [(b'X-One', b'a  b'), (b'x-two', b'caf\xe9'), (b'X-One', b''), (b'Accept', b'*/*')]
    fields = next_request('GET', '/headers', sent)
    assert fields.status == 200
    assert fields.body == b''.join(
        name + b': ' + value + b'\n' for name, value in [(b'Host', b'oracle'), *sent])

    options = next_request('OPTIONS', '*')
    assert options.status == 204 and 'GET' in options.headers['allow']

    missing = next_request('GET', '/no-such-file')
    assert missing.status == 404
    assert_one_line_reason(missing)


def test_pipelined_requests_are_answered_in_order(connect):
    """Several requests in one packet (RFC 9112 section 9.3.2): answered in order.

    h11 will not pipeline, so the bytes go out raw; one h11 client reads the
    answers, keeping what it has received beyond each one for the next.
    """
    sock = connect()
    sock.sendall(get(HEADERS, H + b'X-N: 1\r\n')
                 + post(b'Content-Length: 5\r\n', b'hello', b'/echo')
                 + post(b'Transfer-Encoding: chunked\r\n', b'3\r\nabc\r\n0\r\n\r\n', b'/echo')
                 + get(b'HEAD / HTTP/1.1')
                 + get(HEADERS, H + b'X-N: 5\r\n'))
    client = h11.Connection(h11.CLIENT)
    answers = []
    for method in ['GET', 'POST', 'POST', 'HEAD', 'GET']:
        client.send(h11.Request(method=method, target='/', headers=[('Host', 'oracle')]))
        client.send(h11.EndOfMessage())
        answers.append(h11_read(client, receiver(sock)))
        client.start_next_cycle()
    assert [a.status for a in answers] == [200] * 5
    assert [a.body for a in answers] == [b'Host: oracle\nX-N: 1\n', b'hello', b'abc', b'',
                                         b'Host: oracle\nX-N: 5\n']
    assert answers[2].headers['transfer-encoding'] == 'chunked'
    assert answers[3].headers['content-length'] == str(len(SMALL_INDEX))


def test_expect_100_continue_through_h11(connect):
    """100 Continue comes before the body is sent; h11 reads it as informational."""
    sock = connect()
    client = h11.Connection(h11.CLIENT)
    sock.sendall(client.send(h11.Request(
        method='POST', target='/echo',
        headers=[('Host', 'oracle'), ('Content-Length', '5'), ('Expect', '100-continue')])))
    # The server must ask for the body before the client sends it.
    event = client.next_event()
    while event is h11.NEED_DATA:
        client.receive_data(sock.recv(65536))
        event = client.next_event()
    assert isinstance(event, h11.InformationalResponse) and event.status_code == 100
    answer = h11_exchange(sock, client, [h11.Data(data=b'hello'), h11.EndOfMessage()])
    assert (answer.status, answer.body, answer.kept) == (200, b'hello', True)


def test_expect_100_continue_refused_gets_the_final_status(connect):
    """A refused upload gets its final status with no 100 first (RFC 9110 section 10.1.1)."""
    sock = connect()
    client = h11.Connection(h11.CLIENT)
    answer = h11_exchange(sock, client, [h11.Request(
        method='DELETE', target='/echo',
        headers=[('Host', 'oracle'), ('Content-Length', '5'), ('Expect', '100-continue')])])
    assert answer.informational == [] and answer.status == 405
    # The client now either closes or sends the body anyway: the server may
    # close, or read and discard the body and then take the next request.
    if answer.kept:
        sock.sendall(b'hello' + get())
        assert h11_read(h11_client(), receiver(sock)).status == 200
    else:
        assert closes(sock)


def test_a_body_error_mid_echo_cuts_the_response_short(connect):
    """Once the echo's head is sent, a bad chunk can only be signalled by closing
    before the last chunk: h11 must see an incomplete response, not a complete one."""
    sock = connect()
    sock.sendall(post(b'Transfer-Encoding: chunked\r\n', b'5\r\nhello\r\nzz\r\n', b'/echo'))
    with pytest.raises(h11.RemoteProtocolError, match='incomplete chunked read'):
        h11_read(h11_client('POST'), receiver(sock))


# -- the corpus of invalid requests ---------------------------------------------------

H = b'Host: oracle\r\n'
ACCEPTS, REJECTS, WAITS = 'accepts', 'rejects', 'waits for more'


# A Case's status when the server closes without answering.
UNANSWERED = 0


class Case(NamedTuple):
    id: str
    raw: bytes
    status: int
    close: object = True      # True: closes (after a framing error it MUST); False: stays
                              # usable for the next request; None: either
    h11: str = REJECTS        # h11 in server role on the same bytes
    why: str = ''             # where h11 and minihttp disagree: the RFC's word on it
    eof: bool = False         # the client half-closes after sending


def get(line=b'GET / HTTP/1.1', fields=H, body=b''):
    return line + b'\r\n' + fields + b'\r\n' + body


def post(fields, body=b'', target=b'/headers'):
    """A POST to /headers, which reads the whole body before it answers."""
    return get(b'POST ' + target + b' HTTP/1.1', H + fields, body)


def chunked(body):
    return post(b'Transfer-Encoding: chunked\r\n', body)


LONG_LINE = b'GET /' + b'a' * MAX_REQUEST_LINE + b' HTTP/1.1'
OVERSIZE_FIELD = H + b'X-Big: ' + b'b' * MAX_HEAD + b'\r\n'
MANY_FIELDS = H + b''.join(b'X-%d: %d\r\n' % (n, n) for n in range(MAX_FIELDS))

CORPUS = [
    # -- the request line (RFC 9112 section 3) --
    Case('double-space-after-method', get(b'GET  / HTTP/1.1'), 400),
    Case('double-space-before-version', get(b'GET /  HTTP/1.1'), 400),
    Case('tab-as-separator', get(b'GET\t/ HTTP/1.1'), 400),
    Case('space-after-version', get(b'GET / HTTP/1.1 '), 400),
    Case('missing-version', get(b'GET /'), 400),
    Case('lower-case-http', get(b'GET / http/1.1'), 400),
    Case('junk-version', get(b'GET / HTTP/one'), 400),
    Case('version-two-digit-minor', get(b'GET / HTTP/1.10'), 400),
    Case('not-http-at-all', get(b'GET / FOO/1.1'), 400),
    Case('HTTP/2.0', get(b'GET / HTTP/2.0'), 505, h11=ACCEPTS,
         why='RFC 9110 section 15.6.6: 505 for a major version the server does not support; '
             'h11 parses any HTTP/d.d and leaves the version policy to its user'),
    Case('HTTP/1.2', get(b'GET / HTTP/1.2'), 505, h11=ACCEPTS,
         why='issue 3 asks 505 for any version but 1.0 and 1.1; RFC 9110 section 2.5 says a '
             'recipient SHOULD process a higher minor version as the highest it knows (1.1), '
             'which is what h11 does'),
    Case('HTTP/0.9', get(b'GET / HTTP/0.9'), 505, h11=ACCEPTS,
         why='RFC 9110 section 15.6.6: 505 for an unsupported version; h11 parses any HTTP/d.d'),
    Case('method-not-a-token', get(b'G(T / HTTP/1.1'), 400),
    Case('unknown-method', get(b'BREW / HTTP/1.1'), 501, close=None, h11=ACCEPTS,
         why='RFC 9110 section 9.1: an unknown method is a 501 of the server\'s semantics, '
             'not a syntax error; h11 rightly parses any token as a method'),
    Case('CONNECT', get(b'CONNECT oracle:443 HTTP/1.1', b'Host: oracle:443\r\n'), 501, h11=ACCEPTS,
         why='RFC 9110 section 9.3.6: CONNECT asks for a tunnel, which only a proxy '
             'implements; h11 parses it (and would hand over the connection)'),
    Case('target-not-in-any-form', get(b'GET index.html HTTP/1.1'), 400, h11=ACCEPTS,
         why='RFC 9112 section 3.2: origin, absolute, authority (CONNECT) or asterisk form; '
             'h11 accepts any visible characters as a target'),
    Case('asterisk-with-GET', get(b'GET * HTTP/1.1'), 400, h11=ACCEPTS,
         why='RFC 9112 section 3.2.4: asterisk-form is only for OPTIONS; h11 does not '
             'check the form of the target'),
    Case('target-with-obs-text', get(b'GET /caf\xe9 HTTP/1.1'), 400),
    Case('target-with-DEL', get(b'GET /a\x7fb HTTP/1.1'), 400),
    Case('request-line-over-8KiB', get(LONG_LINE), 414, h11=ACCEPTS,
         why='RFC 9112 section 3 and RFC 9110 section 15.5.15: a server MUST answer 414 '
             'to a target longer than it wishes to parse; h11 only limits a whole '
             'incomplete event, to 16 KiB'),
    # -- the fields (RFC 9112 section 5, RFC 9110 section 5) --
    Case('head-over-64KiB', get(fields=OVERSIZE_FIELD), 431,
         h11=ACCEPTS,
         why='RFC 9110 section 5.4: a server MUST answer 4xx to a field section larger than '
             'it wishes to process (431, RFC 6585 section 5); h11 limits only an incomplete '
             'event (16 KiB by default), and a head that arrives whole is not one'),
    Case('101-fields', get(fields=MANY_FIELDS), 431, h11=ACCEPTS,
         why='RFC 9110 section 5.4: a server MUST answer a 4xx to more fields than it '
             'wishes to process (431, RFC 6585 section 5); h11 counts no fields'),
    Case('whitespace-before-colon', get(fields=b'Host : oracle\r\n'), 400),
    Case('obs-fold', get(fields=H + b'X-Folded: a\r\n b\r\n'), 400, h11=ACCEPTS,
         why='RFC 9112 section 5.2: a server MUST reject obs-fold with 400 or replace it '
             'with SP; minihttp rejects, h11 unfolds'),
    Case('whitespace-before-first-field', get(fields=b' X: a\r\n' + H), 400),
    Case('bare-CR-in-value', get(fields=H + b'X: a\rb\r\n'), 400),
    Case('bare-LF-in-value', get(fields=H + b'X: a\nb\r\n'), 400),
    Case('NUL-in-value', get(fields=H + b'X: a\x00b\r\n'), 400),
    Case('control-char-in-value', get(fields=H + b'X: a\x01b\r\n'), 400, h11=ACCEPTS,
         why='RFC 9110 section 5.5: CTLs other than HTAB are invalid in a value, though a '
             'recipient MAY retain them for robustness; h11 does, minihttp refuses'),
    Case('DEL-in-value', get(fields=H + b'X: a\x7fb\r\n'), 400, h11=ACCEPTS,
         why='RFC 9110 section 5.5: DEL is a CTL, not a field-vchar; h11 tolerates it'),
    Case('escape-in-value', get(fields=H + b'X: \x1b[31m\r\n'), 400, h11=ACCEPTS,
         why='RFC 9110 section 5.5: ESC is a CTL; h11 tolerates it'),
    Case('field-name-not-a-token', get(fields=H + b'X@Y: z\r\n'), 400),
    Case('empty-field-name', get(fields=H + b': z\r\n'), 400),
    Case('line-without-colon', get(fields=H + b'X-No-Colon\r\n'), 400),
    Case('missing-Host', get(fields=b'Accept: */*\r\n'), 400),
    Case('two-Host-fields', get(fields=H + H), 400),
    Case('Host-with-userinfo', get(fields=b'Host: user@oracle\r\n'), 400, h11=ACCEPTS,
         why='RFC 9112 section 3.2 / RFC 9110 section 7.2: an invalid Host MUST get 400; '
             'h11 does not parse the value of Host'),
    Case('Host-with-space', get(fields=b'Host: oracle example\r\n'), 400, h11=ACCEPTS,
         why='RFC 9112 section 3.2: an invalid Host MUST get 400; h11 does not look'),
    Case('Host-with-bad-port', get(fields=b'Host: oracle:http\r\n'), 400, h11=ACCEPTS,
         why='RFC 9110 section 7.2: Host = uri-host [ ":" port ], port = *DIGIT; '
             'h11 does not look'),
    # -- the body's framing (RFC 9112 section 6) --
    Case('CL-and-TE', post(b'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n',
                           b'0\r\n\r\n'), 400, h11=ACCEPTS,
         why='RFC 9112 section 6.1: a server MAY reject a request with both, and MUST close '
             'the connection after it either way; h11 lets chunked win (section 6.3 item 3) '
             'and would keep the connection'),
    Case('two-different-CL', post(b'Content-Length: 5\r\nContent-Length: 6\r\n', b'hello!'), 400),
    Case('CL-list-that-differs', post(b'Content-Length: 5, 6\r\n', b'hello!'), 400),
    Case('CL-not-digits', post(b'Content-Length: five\r\n', b'hello'), 400),
    Case('CL-negative', post(b'Content-Length: -5\r\n', b'hello'), 400),
    Case('CL-with-plus', post(b'Content-Length: +5\r\n', b'hello'), 400),
    Case('CL-empty', post(b'Content-Length:\r\n'), 400),
    Case('CL-huge', post(b'Content-Length: 99999999999999999999\r\n', b'hello'), 400, h11=WAITS,
         why='RFC 9110 section 8.6: a recipient MUST anticipate large numbers and prevent '
             'overflow; minihttp refuses more than 18 digits, h11 (arbitrary integers) '
             'accepts and waits for 10**20 bytes'),
    # chunked not final: RFC 9112 section 6.3 item 4's MUST 400 wins over section
    # 6.1's SHOULD 501 for an unknown coding (h11 refuses too, hinting 501).
    Case('TE-gzip', post(b'Transfer-Encoding: gzip\r\n', b'hello'), 400),
    Case('TE-gzip-then-chunked', post(b'Transfer-Encoding: gzip, chunked\r\n', b'0\r\n\r\n'), 501),
    Case('TE-chunked-not-last', post(b'Transfer-Encoding: chunked, gzip\r\n', b'0\r\n\r\n'), 400),
    Case('TE-chunked-twice-in-one-line',
         post(b'Transfer-Encoding: chunked, chunked\r\n', b'0\r\n\r\n'), 400),
    Case('TE-chunked-in-two-lines',
         post(b'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n', b'0\r\n\r\n'), 400),
    Case('TE-identity', post(b'Transfer-Encoding: identity\r\n'), 400),
    Case('TE-in-HTTP/1.0', get(b'POST /headers HTTP/1.0', b'Transfer-Encoding: chunked\r\n',
                               b'0\r\n\r\n'), 400, h11=ACCEPTS,
         why='RFC 9112 section 6.1: Transfer-Encoding in an HTTP/1.0 message MUST be '
             'treated as faulty framing; h11 reads the chunks'),
    # -- chunks (RFC 9112 section 7.1) --
    Case('chunk-size-not-hex', chunked(b'zz\r\nhello\r\n0\r\n\r\n'), 400),
    Case('chunk-size-negative', chunked(b'-5\r\nhello\r\n0\r\n\r\n'), 400),
    Case('chunk-size-0x', chunked(b'0x5\r\nhello\r\n0\r\n\r\n'), 400),
    Case('chunk-size-empty', chunked(b'\r\nhello\r\n0\r\n\r\n'), 400),
    Case('chunk-size-too-many-digits', chunked(b'1' + b'0' * 16 + b'\r\nhello\r\n0\r\n\r\n'), 400,
         h11=WAITS,
         why='RFC 9112 section 7.1: recipients MUST prevent integer overflow of chunk-size; '
             'minihttp allows 16 hex digits (2**64 - 1), h11 20, and waits for the data'),
    Case('chunk-data-without-CRLF', chunked(b'5\r\nhelloXX0\r\n\r\n'), 400),
    Case('chunk-data-too-long', chunked(b'3\r\nhello\r\n0\r\n\r\n'), 400),
    # A client that closes inside its body has left: no answer (RFC 9112 section 8: a
    # server MAY answer an incomplete message), recorded and logged as "client left".
    Case('EOF-mid-chunk', chunked(b'5\r\nhel'), UNANSWERED, eof=True),
    Case('EOF-before-last-chunk', chunked(b'5\r\nhello\r\n'), UNANSWERED, eof=True),
    Case('EOF-in-trailers', chunked(b'0\r\nX-Trailer: 1\r\n'), UNANSWERED, eof=True),
    Case('EOF-in-head', b'GET / HTTP/1.1\r\nHost: ora', 400, eof=True),
    Case('chunk-size-line-over-4KiB', chunked(b'5;' + b'e' * 5000 + b'\r\nhello\r\n0\r\n\r\n'),
         400, h11=ACCEPTS,
         why='RFC 9112 section 7.1.1: a server ought to limit the length of chunk extensions '
             'and answer 4xx beyond it; h11 only limits an incomplete event to 16 KiB'),
    Case('chunk-ext-not-a-token', chunked(b'5;a b\r\nhello\r\n0\r\n\r\n'), 400, h11=ACCEPTS,
         why='RFC 9112 section 7.1.1: chunk-ext-name is a token; h11 skips everything '
             'after ";" unparsed'),
    Case('chunk-ext-NUL-in-quotes', chunked(b'5;a="\x00"\r\nhello\r\n0\r\n\r\n'), 400,
         h11=ACCEPTS,
         why='RFC 9110 section 5.6.4: qdtext has no control characters; h11 skips the '
             'extension unparsed'),
    Case('chunk-ext-bare-LF-in-quotes', chunked(b'5;a="x\ny"\r\nhello\r\n0\r\n\r\n'), 400),
    Case('chunk-ext-bare-CR-in-quotes', chunked(b'5;a="x\ry"\r\nhello\r\n0\r\n\r\n'), 400,
         h11=ACCEPTS,
         why='RFC 9112 section 2.2: a bare CR MUST be treated as invalid; h11 skips the '
             'extension unparsed'),
    Case('trailers-over-16KiB',
         chunked(b'0\r\n' + b''.join(b'X-T%d: %s\r\n' % (n, b't' * 1000) for n in range(17))
                 + b'\r\n'), 431, h11=ACCEPTS,
         why='RFC 9110 section 5.4: a server MUST answer 4xx to a field section larger than '
             'it wishes to process; h11 limits only an incomplete event (16 KiB), and a '
             'trailer section that arrives whole is not one'),
    Case('trailer-whitespace-before-colon', chunked(b'0\r\nX-T : 1\r\n\r\n'), 400),
    Case('trailer-NUL', chunked(b'0\r\nX-T: a\x00b\r\n\r\n'), 400),
    # -- expectations (RFC 9110 section 10.1.1) --
    Case('expect-something-else', get(fields=H + b'Expect: 200-ok\r\n'), 417, h11=ACCEPTS,
         why='RFC 9110 section 10.1.1: 417 is the server\'s answer to an expectation it '
             'cannot meet, a matter of semantics; h11 rightly parses the request'),
    # -- before the request line (RFC 9112 section 2.2) --
    Case('bare-CR-before-request-line', b'\r' + get(), 400),
    # RFC 9112 section 2.2 lets a recipient take a bare LF as a line end: h11 does,
    # then refuses the empty line like any other (see LENIENT); minihttp takes
    # only CRLF, so the request line starts with LF and is not a request line.
    Case('bare-LF-before-request-line', b'\n' + get(), 400),
    Case('bare-LF-line-endings', b'GET / HTTP/1.1\nHost: oracle\n\n', 400, eof=True,
         h11=ACCEPTS,
         why='RFC 9112 section 2.2: a recipient MAY recognize a bare LF as a line '
             'terminator; h11 does, minihttp waits for CRLFCRLF and finds EOF'),
    # h11 refuses even one empty line (see LENIENT), so it agrees here.
    Case('too-many-empty-lines', b'\r\n' * 100 + get(), 400),
    # -- found by trying the server as a new user would (issue 10) --
    Case('fragment-in-target', get(b'GET /#x HTTP/1.1'), 400, h11=ACCEPTS,
         why='RFC 9112 section 3.2.1: origin-form = absolute-path [ "?" query ], no fragment; '
             'h11 leaves the target to the application'),
    Case('empty-Host', get(fields=b'Host:\r\n'), 400, h11=ACCEPTS,
         why='RFC 9112 section 3.2: 400 for a Host with an invalid value, and RFC 9110 section '
             '4.2.1: an http URI with an empty host MUST be rejected as invalid; h11 accepts '
             'any Host'),
    Case('empty-Host-with-port', get(fields=b'Host: :80\r\n'), 400, h11=ACCEPTS,
         why='RFC 9110 section 4.2.1, as above'),
    Case('chunk-size-space-before-CRLF', chunked(b'5 \r\nhello\r\n0\r\n\r\n'), 400,
         h11=ACCEPTS,
         why='RFC 9112 section 7.1: chunk = chunk-size [ chunk-ext ] CRLF; whitespace (BWS) '
             'belongs before ";" only; h11 tolerates it'),
    Case('chunk-size-bare-LF', chunked(b'5\nhello\r\n0\r\n\r\n'), 400),
    Case('trailer-ended-by-bare-LFs', chunked(b'5\r\nhello\r\n0\r\nX-T: 1\n\n'), 400,
         h11=ACCEPTS,
         why='RFC 9112 section 2.2, as above; refused when the LF arrives, not after a '
             'timeout'),
    Case('long-method', b'M' * (MAX_REQUEST_LINE + 1) + b' / HTTP/1.1\r\n' + H + b'\r\n', 501,
         h11=ACCEPTS,
         why='RFC 9112 section 3: a method longer than any implemented SHOULD get 501 (414 is '
             'for a long target); h11 limits only incomplete events'),
]

# Valid requests that a strict parser might refuse by mistake: each is answered,
# and the connection stays usable (a second request on it is answered too).
LENIENT = [
    Case('one-empty-line-first', b'\r\n' + get(), 200, close=False, h11=REJECTS,
         why='RFC 9112 section 2.2: a server SHOULD ignore at least one empty line before '
             'the request-line; h11 raises "no request line received"'),
    Case('two-empty-lines-first', b'\r\n\r\n' + get(), 200, close=False, h11=REJECTS,
         why='RFC 9112 section 2.2, as above'),
    Case('CL-list-of-one-value', post(b'Content-Length: 5, 5\r\n', b'hello'), 200, close=False,
         h11=ACCEPTS),
    Case('CL-repeated-lines', post(b'Content-Length: 5\r\nContent-Length: 5\r\n', b'hello'), 200,
         close=False, h11=ACCEPTS),
    Case('CL-leading-zeros', post(b'Content-Length: 005\r\n', b'hello'), 200, close=False,
         h11=ACCEPTS),
    Case('BWS-before-chunk-ext', chunked(b'5 ;a=b\r\nhello\r\n0\r\n\r\n'), 200, close=False,
         h11=REJECTS,
         why='RFC 9112 section 7.1.1: chunk-ext = *( BWS ";" ... ), and RFC 9110 section 5.6.3: '
             'a recipient MUST parse and remove BWS; h11 refuses whitespace before ";"'),
    Case('chunk-ext-quoted-pair', chunked(b'5;a="q\\"\\\\";b=c\r\nhello\r\n0\r\n\r\n'), 200,
         close=False, h11=ACCEPTS),
    Case('trailer-fields', chunked(b'5\r\nhello\r\n0\r\nX-Sum: 1\r\nX-Sum: 2\r\n\r\n'), 200,
         close=False, h11=ACCEPTS),
    Case('obs-text-in-value', get(fields=H + b'X-Name: caf\xe9\r\n'), 200, close=False,
         h11=ACCEPTS),
    Case('empty-value', get(fields=H + b'X-Empty:\r\n'), 200, close=False, h11=ACCEPTS),
    Case('IPv6-Host', get(fields=b'Host: [::1]:8000\r\n'), 200, close=False, h11=ACCEPTS),
    Case('absolute-form', get(b'GET http://oracle/ HTTP/1.1'), 200, close=False, h11=ACCEPTS),
    Case('absolute-form-query-only', get(b'GET http://oracle?x=1 HTTP/1.1'), 200, close=False,
         h11=ACCEPTS),
    Case('HTTP/1.0-without-Host', b'GET / HTTP/1.0\r\n\r\n', 200, close=True, h11=ACCEPTS),
    Case('HTTP/1.0-keep-alive', b'GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n', 200,
         close=False, h11=ACCEPTS),
    Case('HTTP/1.0-expect-ignored', get(b'POST /headers HTTP/1.0',
                                        b'Expect: 100-continue\r\nContent-Length: 2\r\n', b'hi'),
         200, close=True, h11=ACCEPTS),
    Case('OPTIONS-asterisk', get(b'OPTIONS * HTTP/1.1'), 204, close=False, h11=ACCEPTS),
]


def h11_verdict(raw, eof):
    """What h11 in server role makes of ``raw``: ACCEPTS, REJECTS, or WAITS for more."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    if eof:
        conn.receive_data(b'')
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.EndOfMessage):
                return ACCEPTS
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return WAITS
    except h11.RemoteProtocolError:
        return REJECTS


def ask(connect, raw, eof):
    """Send raw bytes, read the answer as an h11 client; (socket, Answer)."""
    sock = connect()
    sock.sendall(raw)
    if eof:
        sock.shutdown(socket.SHUT_WR)
    # h11 needs to have sent a request to read a response; which one does not
    # matter for a GET-like answer, so it sends (to nobody) a plain GET.
    return sock, h11_read(h11_client(), receiver(sock))


@pytest.mark.parametrize('case', CORPUS + LENIENT, ids=[case.id for case in CORPUS + LENIENT])
def test_request_corpus_against_the_server_and_h11(connect, case):
    if case.status == UNANSWERED:
        sock = connect()
        sock.sendall(case.raw)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b''
        assert h11_verdict(case.raw, case.eof) == case.h11
        return
    sock, answer = ask(connect, case.raw, case.eof)
    assert answer.status == case.status, answer.body
    if case.status >= 400:
        assert_one_line_reason(answer)
    if case.close is True:
        assert not answer.kept and answer.headers.get('connection') == 'close'
        assert closes(sock)
    elif case.close is False:
        assert answer.kept
        sock.sendall(get())
        assert h11_read(h11_client(), receiver(sock)).status == 200
    # The oracle: does h11 see a protocol error in the same bytes?
    verdict = h11_verdict(case.raw, case.eof)
    assert verdict == case.h11
    minihttp_refuses = case.status >= 400
    if minihttp_refuses != (verdict == REJECTS):
        assert case.why, 'minihttp and h11 disagree: the case must say why'


# -- the limits, at the edge and one past it ---------------------------------------------

def request_line_of(size):
    """GET /headers?aaa... HTTP/1.1 of exactly ``size`` bytes (CRLF not counted)."""
    fixed = len(b'GET /headers? HTTP/1.1')
    return b'GET /headers?' + b'a' * (size - fixed) + b' HTTP/1.1'


HEADERS = b'GET /headers HTTP/1.1'


def head_of(size):
    """A head of exactly ``size`` bytes before its CRLFCRLF, padded by one field.

    read_request reads the head with read_until(CRLFCRLF, MAX_HEAD): up to
    MAX_HEAD bytes may precede the blank line's CRLFCRLF.
    """
    start = HEADERS + b'\r\n' + H + b'X-Pad: '
    return start + b'p' * (size - len(start))


@pytest.mark.parametrize('raw, status', [
    (get(request_line_of(MAX_REQUEST_LINE)), 200),
    (get(request_line_of(MAX_REQUEST_LINE + 1)), 414),
    (get(HEADERS, MANY_FIELDS[:MANY_FIELDS.rindex(b'X-')]), 200),   # Host + 99: 100 fields
    (get(HEADERS, MANY_FIELDS), 431),                                # 101 fields
    (head_of(MAX_HEAD) + b'\r\n\r\n', 200),
    (head_of(MAX_HEAD + 1) + b'\r\n\r\n', 431),
    # When the whole head is too long, read_request looks for the end of the
    # request line in what it has, to tell 414 from 431: the same edge.
    (get(request_line_of(MAX_REQUEST_LINE), OVERSIZE_FIELD), 431),
    (get(request_line_of(MAX_REQUEST_LINE + 1), OVERSIZE_FIELD), 414),
], ids=['request-line-8192', 'request-line-8193', 'fields-100', 'fields-101',
        'head-65536', 'head-65537', 'request-line-8192-in-oversize-head',
        'request-line-8193-in-oversize-head'])
def test_limits_at_the_edge(connect, raw, status):
    sock, answer = ask(connect, raw, eof=False)
    assert answer.status == status, answer.body
    if status == 200:
        # Accepted whole: /headers answers every field line, and the connection is kept.
        assert answer.body.count(b'\n') == raw.count(b'\r\n') - 2
        assert answer.kept
    else:
        assert_one_line_reason(answer)
        assert closes(sock)
