"""Every read of the framing core on a non-blocking socket: a wait keeps every byte.

A read that must wait raises BlockingIOError; the caller (the event loop)
asks the same read again once the socket is readable.  Asked again after
every wait, each read must give what one read gives when every byte came at
once: the same bytes, the same count, the same IncompleteRead or
LimitExceeded at the same point.  ``NonBlockingFakeSocket`` (conftest) makes
the waits: it hands out the pieces of a split chosen by hypothesis, and raises
BlockingIOError before each one (and before the end of the stream).
"""

import pytest
from hypothesis import given, settings, strategies as st

from support import FakeSocket, NonBlockingFakeSocket
from minihttp.framing import IncompleteRead, LimitExceeded, StreamReader
from minihttp.limits import STREAM_BUFFER_SIZE

splits = st.lists(st.integers(min_value=1, max_value=300), max_size=40)
buffer_sizes = st.sampled_from([1, 2, 3, 5, 8, 64, 65536])


def again(read, *args):
    """Ask ``read(*args)`` until it does not wait, as the loop does on each readable event."""
    for _ in range(100_000):
        try:
            return read(*args)
        except BlockingIOError:
            continue
    raise AssertionError('a read waited for ever')


def outcome(reader, op, patient):
    """Run one operation; its result, or the error it raised, as comparable values."""
    ask = again if patient else (lambda read, *args: read(*args))
    delivered = []
    sink = lambda piece: delivered.append(bytes(piece))  # noqa: E731
    try:
        if op[0] == 'exact':
            result = ask(reader.read_exact, op[1])
        elif op[0] == 'exact_to':
            result = ask(reader.read_exact_to, op[1], sink)
        elif op[0] == 'until':
            result = ask(reader.read_until, op[1], op[2])
        elif op[0] == 'until_to':
            result = ask(reader.read_until_to, op[1], sink)
        else:
            result = ask(reader.at_eof)
    except IncompleteRead as exc:
        return ('IncompleteRead', exc.expected, exc.received, b''.join(delivered))
    except LimitExceeded as exc:
        return ('LimitExceeded', exc.delimiter, exc.limit)
    return ('ok', result, b''.join(delivered))


operations = st.lists(st.one_of(
    st.tuples(st.just('exact'), st.integers(0, 40)),
    st.tuples(st.just('exact_to'), st.integers(0, 40)),
    st.tuples(st.just('until'), st.sampled_from([b'\n', b'\r\n', b'\r\n\r\n']),
              st.integers(0, 30)),
    st.tuples(st.just('until_to'), st.sampled_from([b'\n', b'\r\n', b'--b\r\n'])),
    st.tuples(st.just('at_eof')),
), max_size=20)

# Bytes made of few symbols, so that delimiters are found, split and just missed.
streams = st.binary(max_size=300).map(
    lambda b: b.translate(bytes(b'ab\r\n-'[i % 5] for i in range(256))))


@given(data=streams, cuts=splits, ops=operations, buffer_size=buffer_sizes)
def test_every_read_asked_again_after_each_wait_gives_what_one_read_gives(
        data, cuts, ops, buffer_size):
    at_once = StreamReader(FakeSocket(data), buffer_size)
    sock = NonBlockingFakeSocket(data, cuts)
    waiting = StreamReader(sock, buffer_size)
    for op in ops:
        expected = outcome(at_once, op, patient=False)
        assert outcome(waiting, op, patient=True) == expected, op
        if expected[0] != 'ok':
            return  # after a framing error the connection is given up
    rest = outcome(at_once, ('until_to', b'\0'), patient=False)
    assert outcome(waiting, ('until_to', b'\0'), patient=True) == rest
    assert sock.waits > 0 or not data


@settings(max_examples=30)
@given(cuts=st.lists(st.integers(1, 700_000), max_size=12), first=st.integers(0, 10),
       size=st.sampled_from([STREAM_BUFFER_SIZE + 1, 300_000, 600_000]))
def test_an_exact_read_larger_than_the_buffer_keeps_its_bytes_across_waits(cuts, first, size):
    data = bytes(range(251)) * 2800          # 702,800 bytes: no period of 2**k
    reader = StreamReader(NonBlockingFakeSocket(data, cuts))
    assert again(reader.read_exact, first) == data[:first]
    assert again(reader.read_exact, size) == data[first:first + size]
    # The buffer grew as the bytes came, never past what the read needed.
    assert reader.capacity <= max(STREAM_BUFFER_SIZE, size)
    assert again(reader.read_exact, len(data) - first - size) == data[first + size:]
    assert again(reader.at_eof)


def test_a_streamed_read_asked_again_delivers_only_the_rest_and_the_whole_count():
    reader = StreamReader(NonBlockingFakeSocket(b'0123456789tail', [4, 7]), 64)
    got = bytearray()
    waits = 0
    while True:
        try:
            assert reader.read_exact_to(10, got.extend) == 10
            break
        except BlockingIOError:
            waits += 1
    assert (bytes(got), waits) == (b'0123456789', 3)
    assert again(reader.read_exact, 4) == b'tail'


def test_another_read_after_a_wait_gives_up_the_streamed_read_and_goes_on_after_its_bytes():
    reader = StreamReader(NonBlockingFakeSocket(b'0123456789', [4]), 64)
    got = bytearray()
    for _ in range(2):
        with pytest.raises(BlockingIOError):
            reader.read_exact_to(8, got.extend)
    assert got == b'0123'                   # the sink has them: they are consumed
    assert again(reader.read_exact, 2) == b'45'
    # The 8-byte read was given up: asked now, it is a new read of 8 bytes.
    with pytest.raises(IncompleteRead) as info:
        again(reader.read_exact_to, 8, got.extend)
    assert (info.value.expected, info.value.received, bytes(got)) == (8, 4, b'01236789')


# -- snapshots: looking at what is buffered without touching it --------------------------

def test_a_snapshot_reads_what_is_buffered_and_then_would_block():
    reader = StreamReader(FakeSocket(b'ab\r\ncdef'), 64)
    assert reader.at_eof() is False          # one receive: everything is buffered
    look = reader.snapshot()
    assert look.read_until(b'\r\n', 10) == b'ab'
    got = bytearray()
    with pytest.raises(BlockingIOError):
        look.read_exact_to(10, got.extend)
    assert got == b'cdef'
    with pytest.raises(BlockingIOError):
        look.read_exact(1)
    look.reserve(STREAM_BUFFER_SIZE)        # never grows or moves the shared bytes
    # The reader it looked at is untouched.
    assert (reader.buffered, reader.peek()) == (8, b'ab\r\ncdef')
    assert reader.read_until(b'\r\n', 10) == b'ab'
    assert reader.read_exact(4) == b'cdef'


def test_a_snapshot_of_a_released_reader_is_empty():
    reader = StreamReader(FakeSocket(b''), 64)
    assert reader.at_eof() and reader.release()
    with pytest.raises(BlockingIOError):
        reader.snapshot().read_until(b'\n', 10)
    assert reader.at_eof()
