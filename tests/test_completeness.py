"""Whether buffered bytes hold a whole body: asked of the body readers, checked against h11.

``bodies.buffered_body`` runs a request's body reader over what its
connection has buffered (``StreamReader.snapshot``): WHOLE, PARTIAL or
MALFORMED.  The event loop asks it (through ``HTTPServer.needs_more``) when a
body waiting for a thread has gone quiet: a whole one waits its turn, a
partial one gets 408.  Here every prefix of a chunked body (extensions,
trailers) or a Content-Length body must get the answer h11 gives when fed
the same bytes after the same head; and a live server, its one thread busy,
answers a whole chunked body with trailers and gives 408 to `3\\r\\n0\\r\\n\\r\\n`.
"""

import select
import time

import h11
import pytest
from hypothesis import given, strategies as st

from support import (WAIT, FakeSocket, RawClient, chunked, request_bytes, temps,
                     wait_until)
from minihttp.bodies import MALFORMED, PARTIAL, WHOLE, buffered_body
from minihttp.framing import StreamReader
from minihttp.request import read_request
from minihttp.server import HTTPServer, Waiting
from minihttp.transfer import request_framing

CHUNKED_HEAD = b'PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n'
# What may follow a body on the connection: nothing, or the next request.
AFTER = st.sampled_from([b'', b'GET / HTTP/1.1\r\nHost: h\r\n\r\n', b'G'])

tokens = st.text('abcxyzABC-_.!#019', min_size=1, max_size=6)
quoted = st.text('abc ;=,\t', max_size=6).map(lambda text: f'"{text}"')
# chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ) (RFC 9112 section 7.1.1).
# No whitespace before the first ";": the grammar allows it, h11 does not (a
# case below checks it on its own).
extensions = st.lists(st.tuples(st.sampled_from(['', ' ', '\t ']), tokens,
                                st.one_of(st.just(None), tokens, quoted)), max_size=3).map(
    lambda exts: ''.join(f';{ws}{name}' + ('' if value is None else f'{ws}={ws}{value}')
                         for ws, name, value in exts))
trailer_fields = st.lists(st.tuples(st.sampled_from(['X-Sum', 'Content-Digest', 'x-t', 'Host']),
                                    st.text('abc 019:=;', max_size=12).map(str.strip)),
                          max_size=3)


@st.composite
def chunked_bodies(draw):
    """A well-formed chunked body: chunks (hex sizes in any case, any extensions), trailers."""
    out = bytearray()
    for data in draw(st.lists(st.binary(min_size=1, max_size=20), max_size=4)):
        size = f'{len(data):x}'
        size = size.upper() if draw(st.booleans()) else size
        out += f'{"0" * draw(st.integers(0, 2))}{size}{draw(extensions)}\r\n'.encode()
        out += data + b'\r\n'
    out += f'0{draw(extensions)}\r\n'.encode()
    for name, value in draw(trailer_fields):
        out += f'{name}: {value}\r\n'.encode()
    return bytes(out + b'\r\n')


def minihttp_says(head, buffered):
    """buffered_body over a reader that has ``buffered`` after having read ``head``."""
    reader = StreamReader(FakeSocket(head + buffered))
    request = read_request(reader)
    assert reader.buffered == len(buffered)       # everything came in one receive
    answer = buffered_body(request_framing(request), reader)
    assert reader.peek() == buffered              # looking consumed nothing
    return answer


def h11_says(head, buffered):
    """What h11 makes of the same bytes: the body's end, more needed, or an error."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head + buffered)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return PARTIAL
            if isinstance(event, h11.EndOfMessage):
                return WHOLE
    except h11.RemoteProtocolError:
        return MALFORMED


@given(body=chunked_bodies(), after=AFTER, data=st.data())
def test_any_prefix_of_a_chunked_body_is_whole_exactly_when_h11_reaches_its_end(body, after,
                                                                                 data):
    stream = body + after
    cut = data.draw(st.integers(0, len(stream)), label='cut')
    expected = h11_says(CHUNKED_HEAD, stream[:cut])
    assert minihttp_says(CHUNKED_HEAD, stream[:cut]) == expected
    assert expected == (WHOLE if cut >= len(body) else PARTIAL)


@given(length=st.integers(0, 40), after=AFTER, data=st.data())
def test_any_prefix_of_a_content_length_body_is_whole_exactly_when_h11_reaches_its_end(
        length, after, data):
    head = b'PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n' % length
    stream = b'b' * length + after
    cut = data.draw(st.integers(0, len(stream)), label='cut')
    assert minihttp_says(head, stream[:cut]) == h11_says(head, stream[:cut])


@pytest.mark.parametrize('buffered, answer', [
    # The two cases the old check ("ends with 0\r\n\r\n") had wrong:
    (b'5\r\nhello\r\n0\r\nX-Sum: 5\r\n\r\n', WHOLE),      # a trailer after the last chunk
    (b'3\r\n0\r\n\r\n', PARTIAL),                          # a 3-byte chunk "0\r\n", then CRLF
    (b'5;name="v;x"\r\nhello\r\n0;last\r\n\r\n', WHOLE),  # extensions
    (b'5 ; a = b\r\nhello\r\n0\r\n\r\n', WHOLE),          # BWS around ";" and "="
    (b'5\r\nhello\r\n0\r\nX-Sum: 5\r\n', PARTIAL),         # the trailer section not ended
    (b'5\r\nhello\r\n0\r\n\r', PARTIAL),
    (b'zz\r\n', MALFORMED),                                # not a chunk size
    (b'5\r\nhelloXY', MALFORMED),                          # no CRLF after the data
    (b'5 \r\nhello\r\n0\r\n\r\n', MALFORMED),              # whitespace before the CRLF
    (b'0\r\nno colon\r\n\r\n', MALFORMED),                 # a bad trailer line
])
def test_chunked_bodies_whole_partial_and_malformed(buffered, answer):
    assert minihttp_says(CHUNKED_HEAD, buffered) == answer


def test_a_body_longer_than_the_buffer_is_partial_at_the_cost_of_the_buffer():
    head = b'PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000000000\r\n\r\n'
    assert minihttp_says(head, b'x' * 100) == PARTIAL
    # A chunk announcing far more than is buffered: the same.
    assert minihttp_says(CHUNKED_HEAD, b'ffffffffffff\r\n' + b'x' * 100) == PARTIAL


class Queued:
    """A connection whose body work waits for a thread: its head read, its body buffered."""

    def __init__(self, head, buffered):
        self.reader = StreamReader(FakeSocket(head + buffered))
        self.exchange = Waiting(read_request(self.reader))


@pytest.mark.parametrize('buffered, needs_more', [
    (b'5\r\nhello\r\n0\r\nX-Sum: 5\r\n\r\n', False),
    (b'3\r\n0\r\n\r\n', True),
    (b'zz\r\n', False),          # malformed: the thread that reads it answers 400
])
def test_needs_more_asks_the_body_reader(buffered, needs_more):
    assert HTTPServer(None).needs_more(Queued(CHUNKED_HEAD, buffered)) is needs_more


def test_a_queued_body_is_read_once_however_often_its_deadline_comes(monkeypatch):
    """The loop reads nothing more of a connection whose work waits for a thread, so
    its buffer is read once: one of a few KiB of one-byte chunks costs the loop
    milliseconds, and the deadline comes back every body_timeout while the pool is busy."""
    runs = []
    monkeypatch.setattr('minihttp.server.buffered_body',
                        lambda *args: runs.append(args) or buffered_body(*args))
    conn = Queued(CHUNKED_HEAD, b'1\r\nx\r\n' * 500 + b'0\r\n\r\n')
    protocol = HTTPServer(None)
    assert [protocol.needs_more(conn) for _ in range(5)] == [False] * 5
    assert len(runs) == 1


# -- a live server whose only thread is busy ------------------------------------------------

def test_a_busy_pool_answers_a_whole_body_with_trailers_and_408s_a_partial_one(serve, tmp_path):
    server = serve('--threads', '1', '--body-timeout', '1', '--min-rate', '0',
                   '--uploads', tmp_path)
    head = ['Connection: close', 'Transfer-Encoding: chunked']
    with RawClient(server.port) as holder, RawClient(server.port) as whole, \
            RawClient(server.port) as partial:
        # The holder's upload takes the only thread, and keeps it while it drips
        # one-byte chunks (each written to its file as it comes).
        holder.send(request_bytes('PUT', '/uploads/hold.bin', head), b'1\r\nx\r\n')
        wait_until(lambda: temps(tmp_path), 'the holder took the thread')
        whole.send(request_bytes('PUT', '/echo', head, chunked(b'hello', trailers=['X-Sum: 5'])))
        partial.send(request_bytes('PUT', '/echo', head, b'3\r\n0\r\n\r\n'))
        # Until the partial body's deadline has passed: a chunk for the holder now
        # and then, so that its read never stalls.
        deadline = time.monotonic() + WAIT
        while not select.select([partial.sock], [], [], 0.25)[0]:
            assert time.monotonic() < deadline, 'the partial body never got its 408'
            holder.send(b'1\r\nx\r\n')
        reply = partial.reply('PUT')
        assert reply.status == 408 and b'request body not received in time' in reply.body
        # The whole body's deadline came first: it waits its turn, unanswered.
        assert not select.select([whole.sock], [], [], 0)[0]
        holder.send(b'0\r\n\r\n')
        assert holder.reply('PUT').status == 201
        reply = whole.reply('PUT')
        assert (reply.status, reply.body) == (200, b'hello')
