"""The framing core against a fake socket: every helper, every split, every place EOF can fall."""

import tracemalloc

import pytest
from hypothesis import given, strategies as st

from minihttp.framing import (FramingError, IncompleteRead, LimitExceeded, StreamReader,
                              write_all)
from minihttp.limits import STREAM_BUFFER_SIZE
from support import FakeSocket

# Split points for data of any length: offsets past the end are ignored.
splits = st.lists(st.integers(min_value=1, max_value=300), max_size=40)
# Small buffers make the reader compact, grow and take its large-read path.
buffer_sizes = st.sampled_from([1, 2, 3, 5, 8, 64, 65536])


def reader_over(data, pieces=1, buffer_size=65536):
    sock = FakeSocket(data, pieces)
    return StreamReader(sock, buffer_size), sock


def collect(reader, n):
    """read_exact_to into a list; returns (bytes delivered, largest piece)."""
    pieces = []
    assert reader.read_exact_to(n, lambda piece: pieces.append(bytes(piece))) == n
    return b''.join(pieces), max(map(len, pieces), default=0)


def assert_incomplete(exc, expected, received):
    assert isinstance(exc, EOFError) and isinstance(exc, FramingError)
    assert (exc.expected, exc.received) == (expected, received)
    assert exc.missing == (None if expected is None else expected - received)


# -- read_exact ---------------------------------------------------------------

@given(data=st.binary(max_size=300), cuts=splits, sizes=st.lists(st.integers(0, 80)),
       buffer_size=buffer_sizes)
def test_read_exact_returns_the_stream_in_order(data, cuts, sizes, buffer_size):
    reader, sock = reader_over(data, cuts, buffer_size)
    position = 0
    for n in sizes:
        if position + n > len(data):
            with pytest.raises(IncompleteRead) as info:
                reader.read_exact(n)
            assert_incomplete(info.value, n, len(data) - position)
            return
        assert reader.read_exact(n) == data[position:position + n]
        position += n
    assert reader.read_exact(len(data) - position) == data[position:]
    assert reader.at_eof()


@pytest.mark.parametrize('buffer_size', [4, 16, 65536])
def test_read_exact_eof_at_every_position(buffer_size):
    message = bytes(range(40))
    for cut in range(len(message)):
        reader, _ = reader_over(b'head' + message[:cut], 1, buffer_size)
        assert reader.read_exact(4) == b'head'
        with pytest.raises(IncompleteRead) as info:
            reader.read_exact(len(message))
        assert_incomplete(info.value, len(message), cut)
        assert f'({len(message) - cut} bytes missing)' in str(info.value)


def test_read_exact_larger_than_the_buffer_keeps_what_follows():
    data = bytes(range(256)) * 40
    reader, sock = reader_over(data + b'next', 7, buffer_size=16)
    assert reader.read_exact(3) == data[:3]
    assert reader.read_exact(len(data) - 3) == data[3:]
    assert reader.read_exact(4) == b'next'
    assert reader.at_eof()
    # The large read asks only for what it needs: it never swallows the next message.
    assert sock.delivered == len(data) + 4


@pytest.mark.parametrize('arrives', [0, 10, 300_000])
def test_read_exact_allocates_as_bytes_arrive_not_for_the_length_asked(arrives):
    # A peer that announces a megabyte and sends a few bytes costs a few bytes.
    reader = StreamReader(FakeSocket(b'x' * arrives, 1000))
    reader.reserve(STREAM_BUFFER_SIZE)        # what any large read does first
    tracemalloc.start()
    try:
        with pytest.raises(IncompleteRead) as info:
            reader.read_exact(1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (info.value.expected, info.value.received) == (1 << 20, arrives)
    assert peak < 2 * arrives + 64 * 1024, peak


def test_read_exact_of_nothing_reads_nothing():
    reader, sock = reader_over(b'')
    assert reader.read_exact(0) == b''
    assert sock.recv_calls == 0


def test_read_exact_returns_immutable_bytes_that_survive_the_next_read():
    reader, _ = reader_over(b'abcdefgh', 2, buffer_size=4)
    first = reader.read_exact(4)
    second = reader.read_exact(4)
    assert (type(first), first, second) == (bytes, b'abcd', b'efgh')


# -- read_exact_to ---------------------------------------------------------------

@given(data=st.binary(max_size=300), cuts=splits, n=st.integers(0, 300),
       buffer_size=buffer_sizes, already=st.integers(0, 10))
def test_read_exact_to_delivers_n_bytes_and_leaves_the_surplus(data, cuts, n, buffer_size,
                                                               already):
    reader, _ = reader_over(data, cuts, buffer_size)
    already = min(already, len(data))
    assert reader.read_exact(already) == data[:already]
    if already + n > len(data):
        received = []
        with pytest.raises(IncompleteRead) as info:
            reader.read_exact_to(n, lambda piece: received.append(bytes(piece)))
        assert_incomplete(info.value, n, len(data) - already)
        assert b''.join(received) == data[already:]
        return
    delivered, largest = collect(reader, n)
    assert delivered == data[already:already + n]
    # At most one buffer of the message in memory (the exact read before may have
    # grown the buffer to its own size).
    assert largest <= max(buffer_size, already)
    assert reader.read_exact(len(data) - already - n) == data[already + n:]
    assert reader.at_eof()


def test_read_exact_to_eof_at_every_position():
    message = bytes(range(30))
    for cut in range(len(message)):
        reader, _ = reader_over(message[:cut], 1, buffer_size=8)
        received = []
        with pytest.raises(IncompleteRead) as info:
            reader.read_exact_to(len(message), lambda piece: received.append(bytes(piece)))
        assert_incomplete(info.value, len(message), cut)
        assert b''.join(received) == message[:cut]


def test_read_exact_to_streams_a_message_many_buffers_long():
    data = bytes(range(256)) * 4096  # 1 MiB
    reader, sock = reader_over(data + b'tail', 1000, buffer_size=4096)
    delivered, largest = collect(reader, len(data))
    assert delivered == data and largest <= 4096
    assert reader.peek() == b'tail'[:reader.buffered]
    assert reader.read_exact(4) == b'tail'


# -- read_until ---------------------------------------------------------------

@pytest.mark.parametrize('delimiter', [b'\n', b'\r\n', b'\r\n\r\n'])
@pytest.mark.parametrize('buffer_size', [1, 4, 65536])
def test_read_until_limit_at_the_edge_and_one_past(delimiter, buffer_size):
    limit = 10
    reader, sock = reader_over(b'x' * limit + delimiter + b'rest', 1, buffer_size)
    assert reader.read_until(delimiter, limit) == b'x' * limit
    assert reader.read_exact(4) == b'rest'

    reader, sock = reader_over(b'x' * (limit + 1) + delimiter + b'rest', 1, buffer_size)
    with pytest.raises(LimitExceeded) as info:
        reader.read_until(delimiter, limit)
    assert (info.value.delimiter, info.value.limit) == (delimiter, limit)
    # It stopped looking after limit + len(delimiter) bytes: no more was received.
    assert sock.delivered == limit + len(delimiter)


def test_read_until_stops_looking_on_an_endless_line():
    reader, sock = reader_over(b'a' * 100_000, 1)
    with pytest.raises(LimitExceeded):
        reader.read_until(b'\r\n', 8192)
    assert sock.delivered == 8194


def test_read_until_limit_counts_a_delimiter_already_buffered():
    # Everything arrives at once, the delimiter too, but too far in.
    reader, _ = reader_over(b'y' * 11 + b'\r\n', None)
    with pytest.raises(LimitExceeded):
        reader.read_until(b'\r\n', 10)


def test_read_until_limit_zero_accepts_only_an_empty_line():
    reader, _ = reader_over(b'\r\nx\r\n', 1)
    assert reader.read_until(b'\r\n', 0) == b''
    with pytest.raises(LimitExceeded):
        reader.read_until(b'\r\n', 0)


@pytest.mark.parametrize('delimiter', [b'\r\n', b'\r\n\r\n'])
def test_read_until_delimiter_split_at_every_offset(delimiter):
    data = b'GET / HTTP/1.1' + delimiter + b'next'
    for cut in range(1, len(data)):
        for pieces in ([cut], [cut, cut + 1], [cut - 1, cut, cut + 2]):
            reader, _ = reader_over(data, pieces)
            assert reader.read_until(delimiter, 100) == b'GET / HTTP/1.1', pieces
            assert reader.read_exact(4) == b'next'


def test_read_until_eof_at_every_position():
    data = b'Host: example\r\n'
    for cut in range(len(data)):
        reader, _ = reader_over(data[:cut], 1, buffer_size=4)
        with pytest.raises(IncompleteRead) as info:
            reader.read_until(b'\r\n', 100)
        assert_incomplete(info.value, None, cut)
        assert 'before its delimiter' in str(info.value)


def ends_at_its_delimiter(head):
    return (head + b'\r\n\r\n').find(b'\r\n\r\n') == len(head)


@given(heads=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b'\0', b'\r\n'))
                      .filter(ends_at_its_delimiter), min_size=1, max_size=5),
       body=st.binary(max_size=50), cuts=splits, buffer_size=buffer_sizes)
def test_read_until_leaves_pipelined_messages_buffered(heads, body, cuts, buffer_size):
    data = b''.join(head + b'\r\n\r\n' for head in heads) + body
    reader, _ = reader_over(data, cuts, buffer_size)
    for head in heads:
        # Up to 40 bytes drawn, each NUL made two: a head is at most 80 bytes.
        assert reader.read_until(b'\r\n\r\n', 80) == head
    assert reader.read_exact(len(body)) == body
    assert reader.at_eof()


# -- the helpers mixed, against a model ----------------------------------------

def model_read_until(data, position, delimiter, limit):
    """What read_until must do at ``position``: (result, new position) or an exception."""
    found = data.find(delimiter, position)
    if found >= 0 and found - position <= limit:
        return data[position:found], found + len(delimiter)
    if found >= 0 or len(data) - position >= limit + len(delimiter):
        return LimitExceeded, position
    return IncompleteRead, position


operations = st.lists(st.one_of(
    st.tuples(st.just('exact'), st.integers(0, 20)),
    st.tuples(st.just('exact_to'), st.integers(0, 20)),
    st.tuples(st.just('until'), st.sampled_from([b'\n', b'\r\n', b'\r\n\r\n']),
              st.integers(0, 12)),
    st.tuples(st.just('peek')),
), max_size=20)


@given(data=st.binary(max_size=200).map(lambda b: b.translate(bytes(b'ab\r\n'[i % 4]
                                                                    for i in range(256)))),
       cuts=splits, ops=operations, buffer_size=buffer_sizes)
def test_any_sequence_of_reads_matches_a_model(data, cuts, ops, buffer_size):
    reader, _ = reader_over(data, cuts, buffer_size)
    position = 0
    for op in ops:
        if op[0] == 'peek':
            assert data[position:].startswith(reader.peek())
            continue
        if op[0] == 'until':
            expected, after = model_read_until(data, position, op[1], op[2])
            if isinstance(expected, type):
                with pytest.raises(expected):
                    reader.read_until(op[1], op[2])
                return  # after an error the connection is given up
            assert reader.read_until(op[1], op[2]) == expected
            position = after
            continue
        n = op[1]
        if position + n > len(data):
            with pytest.raises(IncompleteRead):
                reader.read_exact(n) if op[0] == 'exact' else collect(reader, n)
            return
        got = reader.read_exact(n) if op[0] == 'exact' else collect(reader, n)[0]
        assert got == data[position:position + n]
        position += n
    assert reader.buffered <= len(data) - position
    assert reader.read_exact(len(data) - position) == data[position:]
    assert reader.at_eof()


# -- at_eof and peek ---------------------------------------------------------------

def test_at_eof_tells_a_clean_end_from_more_data():
    reader, _ = reader_over(b'')
    assert reader.at_eof()
    reader, sock = reader_over(b'ab', 1)
    assert not reader.at_eof()
    assert (reader.peek(), reader.buffered) == (b'a', 1)
    assert not reader.at_eof()  # data buffered: no need to receive
    assert sock.delivered == 1
    assert reader.read_exact(2) == b'ab'
    assert reader.at_eof()


def test_peek_does_not_consume():
    reader, _ = reader_over(b'abc\r\nrest', None)
    reader.at_eof()
    assert reader.peek() == b'abc\r\nrest'
    assert reader.read_until(b'\r\n', 10) == b'abc'
    assert reader.peek() == b'rest'
    assert reader.read_exact(4) == b'rest'


# -- write_all ---------------------------------------------------------------

@given(pieces=st.lists(st.binary(max_size=50), max_size=6), max_send=st.integers(1, 60),
       as_views=st.booleans())
def test_write_all_sends_every_byte_in_order_through_partial_sends(pieces, max_send,
                                                                   as_views):
    sock = FakeSocket(max_send=max_send)
    write_all(sock, *(memoryview(p) if as_views else p for p in pieces))
    assert bytes(sock.sent) == b''.join(pieces)


def test_write_all_gathers_pieces_and_resumes_inside_one():
    sock = FakeSocket(max_send=3)
    write_all(sock, b'\x00\x00\x00\x05', b'hello', b'', b'!')
    assert bytes(sock.sent) == b'\x00\x00\x00\x05hello!'
    assert sock.sendmsg_calls == 4  # 3 + 3 + 3 + 1 bytes


def test_write_all_single_piece_uses_sendall():
    sock = FakeSocket(max_send=1)
    write_all(sock, b'', b'only')
    assert (bytes(sock.sent), sock.sendmsg_calls) == (b'only', 0)


@given(data=st.binary(min_size=1, max_size=3000), consumed=st.integers(0, 3000),
       pieces=st.lists(st.integers(0, 3000), max_size=8))
def test_reserve_grows_the_buffer_and_keeps_what_was_buffered(data, consumed, pieces):
    consumed = min(consumed, len(data) - 1)
    reader = StreamReader(FakeSocket(data, pieces), buffer_size=64)
    head = reader.read_exact(consumed)
    reader.reserve(4096)
    reader.reserve(100)                    # never shrinks
    got = bytearray()
    assert reader.read_exact_to(len(data) - consumed, got.extend) == len(data) - consumed
    assert head + bytes(got) == data
    assert reader.at_eof()
    assert reader.capacity == 4096


def test_large_exact_reads_grow_the_buffer_once():
    # Back-to-back 64 KiB messages with a 4-byte header each, as blocks come.
    messages = [bytes([n]) * (64 * 1024) for n in range(8)]
    data = b''.join(len(m).to_bytes(4, 'big') + m for m in messages)
    sock = FakeSocket(data)            # everything available at once, as on a fast link
    reader = StreamReader(sock)
    for message in messages:
        assert int.from_bytes(reader.read_exact(4), 'big') == len(message)
        assert reader.read_exact(len(message)) == message
    assert reader.at_eof()
    # A 64 KiB buffer needs two receives per message (it cannot hold a header
    # and its message): 17 here, with the one that finds the end.  Grown to
    # STREAM_BUFFER_SIZE, one receive holds about four messages.
    assert reader.capacity == STREAM_BUFFER_SIZE
    assert sock.recv_calls <= len(data) // STREAM_BUFFER_SIZE + 3
