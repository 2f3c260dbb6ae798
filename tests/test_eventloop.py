"""The event loop's parts without a server: non-blocking heads, released buffers, deadlines, queued sends.

The loop reads a head with the same delimiter read as a blocking server, on a
non-blocking socket: each receive that finds nothing raises BlockingIOError
and the loop asks again later.  These tests drive that with a scripted socket
that says "nothing yet" between every piece, so that every split of a head is
met, and check the loop's own bookkeeping (buffers small at first, grown to
about a long head's size, given up once a request is read; one heap entry
per connection; answers that wait for a full socket) directly.
"""

import re
import select
import socket
import time
import types

import pytest
from hypothesis import given, strategies as st

from minihttp import eventloop
from minihttp.app import App
from minihttp.eventloop import (READ, READABLE, WRITABLE, Connection, EventLoop, Pace, Poller,
                                Protocol, TimedSocket)
from minihttp.framing import StreamReader
from minihttp.errors import HTTPError
from minihttp.request import parse_request, read_head, read_request
from minihttp.responses import Response
from minihttp.limits import (CONNECTION_BUFFER_SIZE, MAX_EMPTY_LINES, MAX_HEAD, READ_BUFFER_SIZE,
                             SPARE_BUFFER_BYTES)
from minihttp.server import HTTPServer, Waiting
from support import FakeSocket


class NonBlockingSocket(FakeSocket):
    """FakeSocket that has nothing to give (BlockingIOError) before every piece.

    At the end it keeps saying "nothing yet" unless ``closes``, then EOF.
    """

    def __init__(self, data, pieces=None, closes=False):
        super().__init__(data, pieces)
        self.closes = closes
        self.waits = 0
        self._ready = False

    def recv_into(self, buffer, nbytes=0):
        if not self._ready:
            if self._pieces or not self.closes:
                self._ready = True
                self.waits += 1
                raise BlockingIOError('nothing yet')
        self._ready = False
        return super().recv_into(buffer, nbytes)


def read_requests_nonblocking(reader, count):
    """``count`` request heads, asking again after every BlockingIOError, as the loop does."""
    found = []
    asked = 0
    while len(found) < count:
        asked += 1
        assert asked < 100_000, 'no progress'
        try:
            request = read_request(reader)
        except BlockingIOError:
            continue
        found.append((request.method, request.target, request.fields))
    return found


HEAD = b'GET /a/b?c=d HTTP/1.1\r\nHost: example\r\nAccept: */*\r\nX-Long: ' + b'v' * 40 + b'\r\n\r\n'
EXPECTED = ('GET', '/a/b?c=d', [('Host', 'example'), ('Accept', '*/*'), ('X-Long', 'v' * 40)])


@pytest.mark.parametrize('cut', range(1, len(HEAD)))
def test_a_head_split_at_any_byte_is_read_after_the_wait(cut):
    sock = NonBlockingSocket(HEAD, [cut])
    reader = StreamReader(sock)
    assert read_requests_nonblocking(reader, 1) == [EXPECTED]
    assert sock.waits == 2 and reader.buffered == 0


def test_a_head_dripped_a_byte_per_receive_is_read_whole():
    sock = NonBlockingSocket(HEAD, 1)
    reader = StreamReader(sock)
    assert read_requests_nonblocking(reader, 1) == [EXPECTED]
    assert sock.recv_calls == sock.waits == len(HEAD)   # each byte after a "nothing yet"


def test_a_dripped_head_is_scanned_once_not_once_per_byte():
    # A head of n bytes dripped one at a time: each wait resumes the search
    # where it stopped, so the delimiter search looks at O(n) bytes in all,
    # not O(n**2).  Measured on the reader's record of where it stopped.
    head = b'GET / HTTP/1.1\r\nHost: h\r\nX: ' + b'x' * 3000 + b'\r\n\r\n'
    reader = StreamReader(NonBlockingSocket(head, 1))
    resumed_from = []
    while True:
        try:
            read_request(reader)
            break
        except BlockingIOError:
            if reader._waiting is not None:
                resumed_from.append(reader._waiting[2])
    assert resumed_from == sorted(resumed_from)
    assert resumed_from[-1] >= len(head) - 8


@given(heads=st.lists(st.sampled_from([
           b'GET / HTTP/1.1\r\nHost: a\r\n\r\n',
           b'HEAD /x HTTP/1.1\r\nHost: b\r\nX-Y: z\r\n\r\n',
           b'\r\nOPTIONS * HTTP/1.1\r\nHost: c\r\n\r\n',
           b'GET /' + b'p' * 300 + b' HTTP/1.0\r\n\r\n']), min_size=1, max_size=6),
       cuts=st.lists(st.integers(1, 1500), max_size=30),
       buffer_size=st.sampled_from([64, 128, 65536]))
def test_pipelined_heads_in_any_pieces_match_reading_them_whole(heads, cuts, buffer_size):
    raw = b''.join(heads)
    whole = StreamReader(FakeSocket(raw))
    expected = [(r.method, r.target, r.fields)
                for r in iter(lambda: read_request(whole), None)]
    reader = StreamReader(NonBlockingSocket(raw, cuts, closes=True), buffer_size)
    assert read_requests_nonblocking(reader, len(heads)) == expected
    assert read_request(reader) is None


# -- buffers --------------------------------------------------------------------------

def test_a_released_reader_holds_no_buffer_and_takes_one_when_bytes_come():
    spares = []
    sock = NonBlockingSocket(HEAD + HEAD, [len(HEAD) + 5], closes=True)
    reader = StreamReader(sock, spares=spares)
    assert reader.release()                  # nothing buffered: given up
    assert spares and len(spares[0][0]) == READ_BUFFER_SIZE and spares[0][0].obj is spares[0][1]
    assert read_requests_nonblocking(reader, 1) == [EXPECTED]
    assert not spares                        # the next receive took it back
    assert reader.buffered == 5
    assert not reader.release()              # five bytes of the next head: kept
    assert read_requests_nonblocking(reader, 1) == [EXPECTED]
    assert reader.release() and read_request(reader) is None


def test_release_says_whether_nothing_is_buffered_whether_given_up_now_or_before():
    reader = StreamReader(NonBlockingSocket(HEAD + b'GET', closes=True))
    assert reader.release() and reader.release() and reader.capacity == 0
    assert read_requests_nonblocking(reader, 1) == [EXPECTED]
    assert not reader.release() and reader.capacity      # b'GET' kept, and its buffer


@pytest.mark.parametrize('data, pieces', [(b'', None), (b'\r\n\r\n', 1),
                                          (b'\r\n' * 4, [2, 3])])
def test_a_stream_ending_before_a_request_begins_is_no_request(data, pieces):
    # Empty lines before a request line are ignored (RFC 9112 section 2.2), a blank
    # line's worth at a time: after them the stream's end is a clean one, as before
    # any byte.
    reader = StreamReader(NonBlockingSocket(data, pieces, closes=True))
    for _ in range(100):
        try:
            head = read_head(reader)
        except BlockingIOError:
            continue          # asked again once "readable", as the loop does
        break
    assert head is None and reader.release()


@pytest.mark.parametrize('data', [b'G', b'\r\nGET / HTTP/1.1\r\n', b'\r', b'\r\n',
                                  b'\r\n' * 3])
def test_a_stream_ending_inside_a_head_is_a_400(data):
    reader = StreamReader(FakeSocket(data))
    with pytest.raises(HTTPError) as refused:
        read_head(reader)
    assert refused.value.status == 400 and 'inside the request head' in str(refused.value)



@pytest.mark.parametrize('lines', range(2 * MAX_EMPTY_LINES + 4))
def test_empty_lines_before_a_request_line_are_skipped_up_to_the_limit(lines):
    # RFC 9112 section 2.2: at least one is ignored; MAX_EMPTY_LINES reads of blank
    # lines alone (a CRLF pair each) are, one more is a 400.
    reader = StreamReader(FakeSocket(b'\r\n' * lines + b'GET /x HTTP/1.1\r\nHost: a\r\n\r\n'))
    if lines // 2 <= MAX_EMPTY_LINES:
        assert parse_request(read_head(reader)).target == '/x'
    else:
        with pytest.raises(HTTPError) as refused:
            read_head(reader)
        assert refused.value.status == 400 and 'too many empty lines' in str(refused.value)

def test_released_readers_share_nothing_that_one_of_them_can_break():
    readers = [StreamReader(FakeSocket(HEAD + HEAD, len(HEAD)), buffer_size=32)
               for _ in range(2)]
    for reader in readers:
        assert reader.release()
    for reader in readers:                   # each grows out of the shared empty buffer
        assert [read_request(reader).target for _ in range(2)] == ['/a/b?c=d'] * 2
        assert read_request(reader) is None and reader.release()


@pytest.mark.parametrize('size', [CONNECTION_BUFFER_SIZE, READ_BUFFER_SIZE])
def test_spare_buffers_are_bounded_in_bytes(size):
    spares = []
    readers = [StreamReader(FakeSocket(b''), size, spares=spares)
               for _ in range(SPARE_BUFFER_BYTES // size + 10)]
    for reader in readers:
        reader.release()
    assert len(spares) == SPARE_BUFFER_BYTES // size


def test_a_grown_buffer_is_not_kept_as_a_spare():
    spares = []
    reader = StreamReader(FakeSocket(b''), spares=spares)
    reader.reserve(4 * READ_BUFFER_SIZE)
    assert reader.release() and spares == []


def long_head(size):
    """A request head of ``size`` bytes before its blank line (one long field)."""
    start = b'GET /long HTTP/1.1\r\nHost: h\r\nX-Pad: '
    return start + b'p' * (size - len(start)) + b'\r\n\r\n'


@pytest.mark.parametrize('size', [5_000, 20_000, MAX_HEAD - 1, MAX_HEAD])
def test_a_long_head_grows_the_buffer_to_about_its_size_and_gives_it_back(size):
    # Dripped in pieces, with waits between: the read resumes as it grows.
    head = long_head(size) + HEAD
    spares = []
    reader = StreamReader(NonBlockingSocket(head, 3000, closes=True), CONNECTION_BUFFER_SIZE,
                          spares=spares)
    assert read_requests_nonblocking(reader, 1)[0][1] == '/long'
    grown = reader.capacity
    assert size < grown < 2 * (size + 4)        # doubling, never straight to MAX_HEAD
    assert read_requests_nonblocking(reader, 1) == [EXPECTED]
    assert reader.release() and reader.capacity == 0
    assert spares == []                         # a grown buffer goes back to the allocator


def test_a_head_one_byte_past_max_head_is_refused_from_a_small_buffer():
    reader = StreamReader(FakeSocket(long_head(MAX_HEAD + 1), 3000), CONNECTION_BUFFER_SIZE)
    with pytest.raises(HTTPError) as refused:
        read_request(reader)
    assert refused.value.status == 431
    assert reader.capacity <= MAX_HEAD + 4


def test_a_small_request_leaves_the_connection_buffer_small(loop, pair):
    ours, theirs = pair
    ours.setblocking(False)
    conn = Connection(ours, ('local', 0), loop)
    theirs.sendall(HEAD)
    assert read_requests_nonblocking(conn.reader, 1) == [EXPECTED]
    assert conn.reader.capacity == CONNECTION_BUFFER_SIZE < READ_BUFFER_SIZE // 4


def test_a_running_loop_gives_each_buffer_back_once_the_request_is_read():
    loop = EventLoop('127.0.0.1', 0, HTTPServer(lambda request: Response(200, [], b'fine'),
                                                access_log=False))
    loop.start()
    try:
        with socket.create_connection(loop.address, timeout=10) as sock:
            reader = StreamReader(sock)
            for head in (HEAD, long_head(MAX_HEAD - 100), HEAD):
                sock.sendall(head)
                assert read_reply(reader) == b'fine'
                # The answer was queued after the buffer went back.
                (conn,) = list(loop.connections)
                assert conn.reader.capacity == 0
                assert {len(spare) for spare, _ in loop.spare_buffers} <= {CONNECTION_BUFFER_SIZE}
    finally:
        loop.stop(0)


def read_reply(reader):
    """The body of one answer with a Content-Length, read off ``reader``."""
    head = reader.read_until(b'\r\n\r\n', 4096).decode('latin-1')
    length = int(re.search(r'(?im)^content-length: *(\d+)', head)[1])
    return reader.read_exact(length)


@pytest.mark.parametrize('kernel', ['epoll', 'poll'])
def test_the_poller_says_which_descriptor_is_ready_for_what_and_whose_it_is(kernel, monkeypatch):
    if kernel == 'poll':        # as where there is no epoll: poll(2), its timeout in ms
        monkeypatch.setattr(eventloop, 'select', types.SimpleNamespace(poll=select.poll))
    poller = Poller()
    assert poller._ms == (kernel == 'poll')
    a, b = socket.socketpair()
    try:
        poller.register(a, READABLE, 'a')
        assert poller.poll(0) == []
        b.send(b'x')
        ((fd, events),) = poller.poll(5.0)
        assert poller.owners[fd] == 'a' and events & READABLE and not events & WRITABLE
        a.recv(1)
        poller.modify(a, WRITABLE)
        ((fd, events),) = poller.poll(5.0)
        assert poller.owners[fd] == 'a' and events & WRITABLE and not events & READABLE
        poller.unregister(a)
        assert poller.owners == {} and poller.poll(0) == []
    finally:
        poller.close()
        a.close()
        b.close()


def test_a_loop_on_poll_serves_as_on_epoll(tmp_path, monkeypatch):
    """Where there is no epoll the loop runs on poll(2): keep-alive, pipelined requests,
    a client gone between requests, a pool thread's work and its return."""
    monkeypatch.setattr(eventloop, 'select', types.SimpleNamespace(poll=select.poll))
    (tmp_path / 'index.html').write_bytes(b'polled\n')
    (tmp_path / 'big.bin').write_bytes(b'b' * 300_000)          # sent by a pool thread
    loop = EventLoop('127.0.0.1', 0, HTTPServer(App(str(tmp_path)), access_log=False),
                     threads=2)
    loop.start()
    try:
        assert loop._poller._ms
        gone = socket.create_connection(loop.address, timeout=5.0)
        gone.close()
        with socket.create_connection(loop.address, timeout=5.0) as client:
            reader = StreamReader(client, 4096)
            ask = b'GET /%s HTTP/1.1\r\nHost: localhost\r\n\r\n'
            client.sendall(ask % b'index.html' * 2 + ask % b'big.bin')
            assert read_reply(reader) == b'polled\n' == read_reply(reader)
            assert read_reply(reader) == b'b' * 300_000
            client.sendall(ask % b'index.html')
            assert read_reply(reader) == b'polled\n'
    finally:
        loop.stop(0.5)


# -- the loop's bookkeeping, on a loop that is not running ------------------------------

@pytest.fixture
def loop():
    class Quiet(Protocol):
        keepalive_timeout = head_timeout = body_timeout = 1.0

        def expired(self, conn):
            pass
    loop = EventLoop('127.0.0.1', 0, Quiet(), threads=1)
    yield loop
    loop.sock.close()


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_a_stale_readiness_leaves_a_new_connection_silent_and_its_tls_hello_seen(pair):
    """A descriptor closed and taken again by a connection accepted in the same pass of
    the loop (the cap's room made by closing a silent one, say) is ready for what the
    old one received: the new one, asked to read, finds nothing.  It has said nothing
    yet: it stays silent (it may still make room at the cap) and its first bytes are
    still looked at (a TLS hello on the plain port gets its own answer)."""
    class Reading(Protocol):
        keepalive_timeout = head_timeout = body_timeout = 1.0
        advanced = 0
        hellos = 0

        def advance(self, conn):
            self.advanced += 1
            return READ

        def wrong_scheme(self, conn, tls_hello):
            self.hellos += tls_hello

    protocol = Reading()
    loop = EventLoop('127.0.0.1', 0, protocol, threads=1)
    loop._poller = Poller()                       # as a running loop has
    ours, theirs = pair
    ours.setblocking(False)
    try:
        conn = Connection(ours, ('local', 0), loop)
        loop.connections.add(conn)
        loop._silent[conn] = None
        loop._on_readable(conn)                   # the stale readiness: nothing came
        assert conn.silent and conn in loop._silent and protocol.advanced == 0
        theirs.sendall(b'\x16\x03\x01\x00\x05hello')
        loop._on_readable(conn)
        assert protocol.hellos == 1 and not conn.silent and conn not in loop._silent
    finally:
        loop._close(conn)
        loop._poller.close()
        loop.sock.close()


def test_a_connection_is_stopping_once_its_loop_is_told_to_stop(loop, pair):
    conn = Connection(pair[0], ('local', 0), loop)
    assert not conn.stopping
    loop.stop(0)                                  # never started: nothing to wait for
    assert conn.stopping and loop.stopping.is_set()


def test_queued_answers_wait_for_a_full_socket_and_leave_in_order(loop, pair):
    ours, theirs = pair
    ours.setblocking(False)
    conn = Connection(ours, ('local', 0), loop)
    answers = [bytes([n]) * 100_000 for n in range(1, 9)]     # 800 kB: more than fits
    for answer in answers:
        conn.send([answer[:10], answer[10:]])
    assert conn.queued == 800_000
    received = bytearray()
    while not conn.flush():
        received += theirs.recv(1 << 20)     # the client reads a little
    theirs.setblocking(False)
    while True:
        try:
            received += theirs.recv(1 << 20)
        except BlockingIOError:
            break
    assert received == b''.join(answers) and conn.queued == 0 and conn.outgoing is None



@pytest.mark.parametrize('pipelined, waits', [(b'', 'keepalive'), (b'GET /next', 'head')])
def test_once_its_answer_left_a_connection_waits_for_the_next_head_on_the_right_deadline(
        pair, pipelined, waits):
    """The answer queued in a pass leaves at its end; then the connection waits to read,
    its buffer given back when nothing came after the request (the keep-alive
    deadline), kept with the next request's beginning (the head deadline, from when the
    first of its bytes was read)."""
    class Answering(Protocol):
        keepalive_timeout, head_timeout, body_timeout = 100.0, 5.0, 1.0

        def advance(self, conn):
            while True:
                try:
                    read_head(conn.reader)
                except BlockingIOError:
                    return READ
                conn.head_read()
                conn.send([b'answer'])

    loop = EventLoop('127.0.0.1', 0, Answering(), threads=1)
    loop._poller = Poller()               # the loop's, as start makes it (never run here)
    try:
        ours, theirs = pair
        ours.setblocking(False)
        conn = Connection(ours, ('local', 0), loop)
        theirs.sendall(HEAD + pipelined)
        before = time.monotonic()
        loop._on_readable(conn)
        assert conn.state == 'sending' and conn.reader.capacity == (pipelined != b'') * \
            CONNECTION_BUFFER_SIZE        # the buffer went back with nothing left in it
        loop._send_queued()
        assert theirs.recv(100) == b'answer'
        timeout = Answering.keepalive_timeout if waits == 'keepalive' else Answering.head_timeout
        assert conn.state == 'waiting' and conn.events == READABLE
        assert before + timeout <= conn.deadline <= time.monotonic() + timeout
        assert conn.reader.buffered == len(pipelined)
    finally:
        loop._poller.close()
        loop.sock.close()

@pytest.mark.parametrize('fields, buffered, needs_more', [
    ('Content-Length: 10', b'hello', True),
    ('Content-Length: 10', b'helloworld', False),
    ('Content-Length: 3', b'abcGET / HTTP/1.1\r\n', False),      # a pipelined head follows
    ('Transfer-Encoding: chunked', b'5\r\nhello\r\n', True),
    ('Transfer-Encoding: chunked', b'5\r\nhello\r\n0\r\n\r\n', False),
    ('Transfer-Encoding: chunked', b'0\r\n\r\n', False),
])
def test_body_work_needs_more_until_its_body_is_buffered_whole(fields, buffered, needs_more):
    raw = f'PUT /x HTTP/1.1\r\nHost: h\r\n{fields}\r\n\r\n'.encode() + buffered

    class Queued:
        reader = StreamReader(FakeSocket(raw))
        exchange = Waiting(read_request(reader))

    assert Queued.reader.at_eof() is False
    assert HTTPServer(None).needs_more(Queued) is needs_more


# -- the pace of a peer on the pool -------------------------------------------------------

def test_a_pace_cuts_a_peer_that_moves_nothing_for_the_stall_timeout():
    received = [0]
    pace = Pace(1.0, 0, 0.0, 'received', lambda: received[0])
    pace.waited(0.6)
    received[0] += 1
    pace.moved(0.3)                            # a byte resets the gap
    pace.waited(0.6)
    with pytest.raises(TimeoutError, match=r'^stalled: nothing received for 1 s$'):
        pace.waited(0.5)


def test_a_pace_judges_the_rate_once_a_window_is_over():
    moved = [0]
    pace = Pace(30.0, 100, 2.0, 'received', lambda: moved[0])

    def call(seconds, count):
        moved[0] += count
        pace.moved(seconds)

    call(1.5, 10)          # 10 bytes in 1.5 s: too slow, but the window is not over
    call(1.0, 240)         # 250 bytes in 2.5 s: just fast enough; a new window begins
    call(1.0, 100)
    with pytest.raises(TimeoutError, match=r'^too slow: 150 bytes received in 2\.0 s, below '
                                           r'the minimum of 100 bytes/s$'):
        call(1.0, 50)      # 150 bytes in 2 s


def test_a_pace_counts_a_burst_for_the_windows_after_it_up_to_the_stall_timeout():
    moved = [0]
    pace = Pace(30.0, 1000, 10.0, 'received', lambda: moved[0])

    def window(count):     # a window: ``count`` bytes at once, then nothing until its end
        moved[0] += count
        pace.moved(0.1)
        pace.waited(9.9)

    window(64 * 1024)      # curl --limit-rate 3k: 64 KiB at once, then 21 s of nothing
    pace.waited(10.0)      # a window with nothing received: the burst covers it
    window(64 * 1024)      # 30,000 bytes ahead at most (30 s at the minimum), not 55,536
    for _ in range(3):     # a byte a window: each uses 9,999 of them
        window(1)
    with pytest.raises(TimeoutError, match=r'^too slow: 1 bytes received in 10\.0 s'):
        window(1)


def test_a_minimum_rate_of_0_is_no_rule():
    pace = Pace(30.0, 0, 2.0, 'received', lambda: 0)
    for _ in range(100):
        pace.moved(10.0)   # a byte every 10 s: within the between-bytes timeout


def test_a_send_whose_queue_drains_is_progress_though_the_kernel_took_nothing_new():
    read = [0]
    pace = Pace(1.0, 100, 2.0, 'read by the peer', lambda: read[0])
    for _ in range(10):    # each tick: the kernel took nothing, the peer read 150 bytes
        read[0] += 150
        pace.waited(0.9)
    with pytest.raises(TimeoutError, match='stalled'):
        pace.waited(0.9)
        pace.waited(0.9)


def test_a_timed_socket_cuts_a_dripping_peer_by_its_rate(pair):
    ours, theirs = pair
    timed = TimedSocket(ours, 30.0, 1000, 0.3)
    buffer = bytearray(100)
    theirs.send(b'x')
    assert timed.recv_into(buffer) == 1
    with pytest.raises(TimeoutError, match=r'too slow: 1 bytes received in 0\.\d s'):
        while True:        # nothing more comes: the window ends with 1 byte
            timed.recv_into(buffer)


# -- the contract between the loop and its protocol ------------------------------------

def test_a_loop_attaches_its_protocol_once_and_a_protocol_serves_one_loop():
    protocol = HTTPServer(lambda request: Response(200, [], b'fine'), access_log=False)
    loop = EventLoop('127.0.0.1', 0, protocol)
    try:
        assert protocol.loop is loop            # known before any connection comes
        with pytest.raises(ValueError, match='already serves a loop'):
            EventLoop('127.0.0.1', 0, protocol).sock.close()
    finally:
        loop.sock.close()

