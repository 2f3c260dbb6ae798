"""The one response writer (minihttp.responses.ResponseWriter), with h11 as the oracle.

* Every body kind (bytes, bytearray, memoryview, an iterable of known or
  unknown length, a file, empty) to GET and HEAD, over HTTP/1.1 and HTTP/1.0,
  kept alive or not, and the bodiless statuses: h11 reads the bytes back, and
  when the writer keeps the connection, h11 reads a second response right
  after the first (so the first one's end is exactly where it says).
* What the loop queues (``sends``) and what a pool thread writes (``write``)
  are the same bytes.
* Trailers: sent after the last chunk, read back by h11; dropped when there is
  no trailer section; refused when RFC 9110 section 6.5.1 forbids them or the
  grammar does not allow them.
* A body that breaks its announced length raises ResponseError, never a byte
  past the announced end, and on a real server the connection closes.
"""

import os
import socket

import h11
import pytest

from support import FakeSocket
from minihttp.errors import ResponseError
from minihttp.eventloop import EventLoop
from minihttp.files import FileBody
from minihttp.records import EventStream
from minihttp.responses import PerSecond, Response, ResponseWriter, chunk, last_chunk
from minihttp.server import HTTPServer
from minihttp.transfer import CHUNKED_BODY, EVENT_STREAM, NO_BODY, UNTIL_CLOSE, content_length

NOW = 1_700_000_000.0
WAIT = 10.0
PAYLOAD = bytes(range(256)) * 4 + b'tail'


class FileSocket(FakeSocket):
    """A FakeSocket that also takes a file's bytes the way TimedSocket.send_file does."""

    def sendall(self, data, flags=0):
        self.sent += data

    def send_file(self, fd, offset, count):
        data = os.pread(fd, min(count, 4096), offset)
        self.sent += data
        return len(data)


def generated(data, size=300):
    """An iterable body whose length the writer cannot know: a generator."""
    yield from (data[i:i + size] for i in range(0, len(data), size))


@pytest.fixture
def payload_file(tmp_path):
    path = tmp_path / 'payload'
    path.write_bytes(PAYLOAD)
    return path


# (id, status, a body maker (given the file's path), its length if the Response is told,
#  the body the client must get)
BODIES = [
    ('bytes', 200, lambda path: PAYLOAD, None, PAYLOAD),
    ('bytearray', 200, lambda path: bytearray(PAYLOAD), None, PAYLOAD),
    ('memoryview', 200, lambda path: memoryview(PAYLOAD), None, PAYLOAD),
    ('memoryview-of-ints', 200, lambda path: memoryview(PAYLOAD).cast('I'), None, PAYLOAD),
    ('empty', 200, lambda path: b'', None, b''),
    ('iterable-known', 200, lambda path: generated(PAYLOAD), len(PAYLOAD), PAYLOAD),
    ('iterable-unknown', 200, lambda path: generated(PAYLOAD), None, PAYLOAD),
    ('iterable-of-views', 200, lambda path: map(memoryview, generated(PAYLOAD)), None, PAYLOAD),
    ('iterable-empty', 200, lambda path: iter(()), None, b''),
    ('file', 200, lambda path: FileBody(os.open(path, os.O_RDONLY), 0, len(PAYLOAD)),
     len(PAYLOAD), PAYLOAD),
    ('204', 204, lambda path: b'', None, b''),
    ('304', 304, lambda path: b'not sent', None, b''),
    ('304-iterable', 304, lambda path: generated(b'not sent'), None, b''),
]


def expected_framing(status, body, length, version):
    if status in (204, 304):
        return NO_BODY
    if isinstance(body, (bytes, bytearray, memoryview)):
        return content_length(len(PAYLOAD) if body else 0)
    if length is not None:
        return content_length(length)
    return CHUNKED_BODY if version == 'HTTP/1.1' else UNTIL_CLOSE


def write(response, method='GET', version='HTTP/1.1', keep_alive=True, sock=None):
    sock = FileSocket() if sock is None else sock
    return ResponseWriter(response, method, version, keep_alive, NOW).write(sock), sock


class Read:
    """One response as h11 read it (field names in lower case, as h11 gives them)."""

    def __init__(self):
        self.status = None
        self.headers = {}
        self.body = bytearray()
        self.trailers = {}
        self.kept = None


def h11_read(data, method, count=1):
    """Read ``count`` responses from ``data`` (then EOF) as an h11 client that sent
    ``method`` before each; a framing error is h11's exception."""
    client = h11.Connection(h11.CLIENT)
    client.receive_data(bytes(data))
    client.receive_data(b'')
    answers = []
    for _ in range(count):
        if answers:
            client.start_next_cycle()
        client.send(h11.Request(method=method, target='/', headers=[('Host', 'writer')]))
        client.send(h11.EndOfMessage())
        answer = Read()
        while True:
            event = client.next_event()
            assert event is not h11.NEED_DATA, 'the response does not end where it says'
            if isinstance(event, h11.Response):
                answer.status = event.status_code
                answer.headers = {k.decode(): v.decode('latin-1') for k, v in event.headers}
            elif isinstance(event, h11.Data):
                answer.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                answer.trailers = {k.decode(): v.decode('latin-1') for k, v in event.headers}
                answer.kept = client.our_state is h11.DONE and client.their_state is h11.DONE
                break
        answers.append(answer)
    return answers


@pytest.mark.parametrize('keep_alive', [True, False], ids=['keep', 'close'])
@pytest.mark.parametrize('version', ['HTTP/1.1', 'HTTP/1.0'])
@pytest.mark.parametrize('method', ['GET', 'HEAD'])
@pytest.mark.parametrize('case, status, make, length, expected', BODIES,
                         ids=[body[0] for body in BODIES])
def test_every_body_kind_is_framed_as_h11_reads_it(case, status, make, length, expected, method,
                                                  version, keep_alive, payload_file):
    body = make(payload_file)
    framing = expected_framing(status, body, length, version)
    writer, sock = write(Response(status, [('X-Case', case)], body, length=length), method,
                         version, keep_alive)
    assert writer.framing == framing
    # Kept only when asked, and when the body's end is not the connection's close.
    assert writer.keep_alive == (keep_alive and framing != UNTIL_CLOSE)
    head_only = method == 'HEAD' or status in (204, 304)
    assert writer.sent == (0 if head_only else len(expected))
    if writer.keep_alive:
        # A second response right behind the first: h11 must find it where the
        # first one's framing says the first ends.
        ResponseWriter(Response(200, body=b'next'), method, 'HTTP/1.1', True, NOW).write(sock)
        first, second = h11_read(sock.sent, method, count=2)
        assert (second.status, bytes(second.body)) == (200, b'' if method == 'HEAD' else b'next')
    else:
        first, = h11_read(sock.sent, method)
    assert first.status == status and first.headers['x-case'] == case
    assert bytes(first.body) == (b'' if head_only else expected)
    assert first.kept == writer.keep_alive
    if status in (204, 304):
        # RFC 9110 section 8.6 and RFC 9112 section 6.1: no framing fields on these.
        assert 'content-length' not in first.headers
        assert 'transfer-encoding' not in first.headers
    if version == 'HTTP/1.0' and writer.keep_alive:
        assert first.headers['connection'] == 'keep-alive'     # RFC 9112 section 9.3
    if isinstance(body, FileBody):
        assert body.fd == -1                                   # sent or not, closed


@pytest.mark.parametrize('method', ['GET', 'HEAD'])
@pytest.mark.parametrize('case, status, make, length, expected',
                         [body for body in BODIES if body[0] != 'file'],
                         ids=[body[0] for body in BODIES if body[0] != 'file'])
def test_what_the_loop_queues_is_what_a_thread_writes(case, status, make, length, expected,
                                                     method, payload_file):
    written = write(Response(status, body=make(payload_file), length=length), method)[1].sent
    queued = ResponseWriter(Response(status, body=make(payload_file), length=length), method,
                            'HTTP/1.1', True, NOW).sends()
    assert b''.join(b''.join(map(bytes, pieces)) for pieces in queued) == written


# -- trailers ------------------------------------------------------------------------

def test_trailers_follow_the_last_chunk():
    calls = []

    def trailers():
        calls.append(len(calls))
        return [('Repr-Digest', 'sha-256=:abc=:'), ('X-Pieces', '4')]

    response = Response(200, body=generated(PAYLOAD), trailers=trailers,
                        trailer_names=['Repr-Digest', 'X-Pieces'])
    writer, sock = write(response)
    assert calls == [0]                             # once, after the last piece
    assert writer.chunks == 4 and writer.sent == len(PAYLOAD)
    answer, = h11_read(sock.sent, 'GET')
    assert bytes(answer.body) == PAYLOAD
    assert answer.trailers == {'repr-digest': 'sha-256=:abc=:', 'x-pieces': '4'}
    assert answer.headers['trailer'] == 'Repr-Digest, X-Pieces'       # RFC 9110 section 6.6.2
    assert sock.sent.endswith(b'\r\n0\r\nRepr-Digest: sha-256=:abc=:\r\nX-Pieces: 4\r\n\r\n')
    # What the record is told went: the trailers, once the last chunk has gone.
    assert writer.trailers == [('Repr-Digest', 'sha-256=:abc=:'), ('X-Pieces', '4')]


def test_the_writer_says_it_sent_trailers_only_once_the_last_chunk_went():
    writer = ResponseWriter(Response(200, body=iter([b'x', b'y']), trailers=lambda: [('X-A', '1')]),
                            'GET', 'HTTP/1.1', True, NOW)
    writes = writer.sends()
    *_, last = [next(writes) for _ in range(4)]     # the head, two chunks, the last chunk
    assert last == (b'0\r\nX-A: 1\r\n\r\n',)
    assert writer.trailers == ()                    # handed on, not yet written
    assert list(writes) == [] and writer.trailers == [('X-A', '1')]


@pytest.mark.parametrize('version, length', [('HTTP/1.0', None), ('HTTP/1.1', len(PAYLOAD))],
                         ids=['close-delimited', 'content-length'])
def test_trailers_without_a_trailer_section_are_dropped_uncomputed(version, length):
    def trailers():
        raise AssertionError('computed for nothing')

    writer, sock = write(Response(200, body=generated(PAYLOAD), length=length,
                                  trailers=trailers, trailer_names=['X-Sum']), version=version)
    answer, = h11_read(sock.sent, 'GET')
    assert bytes(answer.body) == PAYLOAD and answer.trailers == {}
    assert 'trailer' not in answer.headers


def test_no_trailers_is_the_plain_last_chunk():
    assert last_chunk() == last_chunk([]) == b'0\r\n\r\n'
    assert b''.join(chunk(b'x' * 26)) == b'1a\r\n' + b'x' * 26 + b'\r\n'


@pytest.mark.parametrize('name', ['Content-Length', 'transfer-encoding', 'Host', 'Set-Cookie',
                                  'Authorization', 'Content-Type', 'Trailer', 'Cache-Control'])
def test_a_field_not_allowed_in_trailers_is_refused(name):
    # Announced: refused before the head is written.
    sock = FileSocket()
    with pytest.raises(ResponseError, match='not allowed in a trailer'):
        write(Response(200, body=generated(b'x'), trailer_names=[name]), sock=sock)
    assert sock.sent == b''
    # Only made at the end: refused before the last chunk, so the body never ends.
    sock = FileSocket()
    with pytest.raises(ResponseError, match='not allowed in a trailer'):
        write(Response(200, body=generated(b'x'), trailers=lambda: [(name, '1')]), sock=sock)
    assert not sock.sent.endswith(b'\r\n\r\n') and b'\r\n0\r\n' not in sock.sent


@pytest.mark.parametrize('field', [
    ('X-Sum', 'a\r\nInjected: yes'), ('X-Sum', 'a\nb'), ('X-Sum', 'nul\x00'),
    ('X-Sum', 'snow \u2603'), ('X Sum', '1'), ('X-Sum:', '1'), ('', '1'), ('X-Sum', 42),
], ids=['crlf', 'lf', 'nul', 'not-latin-1', 'space-in-name', 'colon-in-name', 'empty-name',
        'not-a-str'])
def test_a_malformed_trailer_is_never_sent(field):
    sock = FileSocket()
    with pytest.raises(ResponseError):
        write(Response(200, body=generated(b'x'), trailers=lambda: [field]), sock=sock)
    assert b'Injected' not in sock.sent and b'0\r\n' not in sock.sent.split(b'\r\n\r\n', 1)[1]


# -- an event stream ------------------------------------------------------------------

@pytest.mark.parametrize('version', ['HTTP/1.1', 'HTTP/1.0'])
def test_an_event_stream_is_chunked_to_http11_and_close_delimited_to_http10(version):
    response = Response(200, [('Content-Type', 'text/event-stream')], EventStream())
    writer, sock = write(response, version=version)
    assert writer.framing == EVENT_STREAM and not writer.keep_alive
    assert writer.chunked == (version == 'HTTP/1.1')
    event = b'id: 1\nevent: record\ndata: {}\n\n'
    sock.sent += b''.join(chunk(event) if writer.chunked else (event,))
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method='GET', target='/', headers=[('Host', 'writer')]))
    client.send(h11.EndOfMessage())
    client.receive_data(bytes(sock.sent))
    head, data = client.next_event(), client.next_event()
    assert head.status_code == 200 and (b'connection', b'close') in head.headers
    assert data.data == event and client.next_event() is h11.NEED_DATA   # never an end


# -- a body that breaks its announced length ----------------------------------------

@pytest.mark.parametrize('given', [b'x' * 5, b'x' * 15], ids=['short', 'long'])
def test_a_body_unlike_its_length_raises_and_never_sends_past_it(given):
    sock = FileSocket()
    with pytest.raises(ResponseError, match='announced'):
        write(Response(200, body=generated(given, size=4), length=10), sock=sock)
    head, body = bytes(sock.sent).split(b'\r\n\r\n', 1)
    assert b'Content-Length: 10' in head and len(body) <= 10


def test_a_file_unlike_its_length_is_refused_before_its_head(payload_file):
    sock = FileSocket()
    body = FileBody(os.open(payload_file, os.O_RDONLY), 0, len(PAYLOAD))
    with pytest.raises(ResponseError, match='framed as content-length 10'):
        write(Response(200, body=body, length=10), sock=sock)
    body.close()
    assert sock.sent == b''


class Liar:
    """An application whose /short body is shorter than the length it announces."""

    def __call__(self, request):
        if request.path == '/short':
            return Response(200, body=iter([b'five!']), length=100)
        return Response(200, body=b'fine')


@pytest.fixture
def liar_server():
    loop = EventLoop('127.0.0.1', 0, HTTPServer(Liar(), access_log=False, body_timeout=5.0,
                                                keepalive_timeout=5.0))
    loop.start()
    yield loop.address
    loop.stop(1.0)


@pytest.mark.timeout(30)
def test_a_server_whose_handler_lies_about_the_length_closes_the_connection(liar_server):
    with socket.create_connection(liar_server, timeout=WAIT) as sock:
        # Two requests at once: the second must never be answered on this connection.
        sock.sendall(b'GET /short HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n')
        received = bytearray()
        while True:
            data = sock.recv(65536)     # ends at EOF, or at the timeout's exception
            if not data:
                break
            received += data
    head, body = bytes(received).split(b'\r\n\r\n', 1)
    assert head.startswith(b'HTTP/1.1 200 ') and b'Content-Length: 100' in head
    assert body == b'five!'              # then the close: the client sees it cut short
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method='GET', target='/short', headers=[('Host', 'x')]))
    client.receive_data(bytes(received))
    client.receive_data(b'')
    with pytest.raises(h11.RemoteProtocolError):
        while client.next_event() is not h11.PAUSED:
            pass


def test_a_text_per_second_made_by_two_threads_at_once_is_each_second_s_own():
    """PerSecond serves the loop and the pool's threads (Date, the access log's time):
    a thread that makes the text of its second while another is making the next
    one's must not leave one second's time with the other's text."""
    texts = PerSecond(lambda second: (texts(1) if second == 2 else None, f't{second}')[1])
    assert texts(2) == 't2'           # made while the second 1's was made meanwhile
    assert texts(1) == 't1' and texts(2) == 't2' and texts(2.5) == 't2'
