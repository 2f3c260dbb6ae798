"""The framing core: cutting an endless TCP byte stream into messages.

Chapter 5 of *Foundations of Python Network Programming* frames a stream in
three ways that matter here, and every reader in minihttp is one of them:

``read_exact(n)``
    exactly n bytes (the book's ``recvall``): block payloads, the 4-byte block
    header, the CRLF after a chunk.
``read_exact_to(n, sink)``
    the same, delivered in pieces to a sink so that a 1 GiB body is never held
    in memory: Content-Length bodies, chunk data, large blocks.
``read_until(delimiter, limit)``
    everything up to a delimiter, refusing to look further than a limit: the
    HTTP head (``\\r\\n\\r\\n``), chunk-size lines and trailers (``\\r\\n``).

All three stand on one reused buffer filled with ``recv_into``: bytes that
arrive beyond the current message stay buffered for the next read, which is
what makes pipelined HTTP requests and back-to-back blocks work.

The same reader serves blocking and non-blocking sockets.  On a non-blocking
one (the event loop's) a read that must wait raises BlockingIOError and keeps
every byte it had: the caller asks the same read again once the socket is
readable, and gets what one read would have returned had every byte been
there at once.  Bytes a read returns are kept in the buffer until the read
is whole (an exact read larger than the buffer grows it as they arrive); a
streaming read (``read_exact_to``, ``read_until_to``) has handed the bytes
before the wait to its sink, and the reader remembers how far it got, so
that asking again delivers the rest and returns the whole count.  Any other
read in between gives that up: the stream goes on after what the sink got.
A delimiter read goes on scanning where it stopped.

``snapshot`` reads what is buffered without receiving or consuming: the body
readers run over it to tell whether a whole body is already here.

Writers need no buffering: ``write_all`` sends several pieces with one
gather-write syscall and loops until the kernel has taken them all.
"""

import errno

from .limits import LARGE_READ, READ_BUFFER_SIZE, SPARE_BUFFER_BYTES, STREAM_BUFFER_SIZE

# What a released reader holds: nothing, shared by every idle connection
# (never released itself).
_NOTHING = bytearray()
_NOTHING_VIEW = memoryview(_NOTHING)


def _new_buffer(size):
    """A reader's buffer of ``size`` bytes, as a spare is kept: (its memoryview, it)."""
    view = memoryview(bytearray(size))
    return view, view.obj


class FramingError(Exception):
    """The stream did not have the shape the reader asked for."""


class IncompleteRead(FramingError, EOFError):
    """The peer closed the stream before the message was complete.

    ``expected`` is the length asked for (None for a delimiter read, whose
    length was not known) and ``received`` how many bytes had arrived.
    """

    def __init__(self, expected, received):
        self.expected = expected
        self.received = received
        if expected is None:
            text = f'stream ended {received} bytes into a message, before its delimiter'
        else:
            text = (f'stream ended {received} bytes into a {expected}-byte read'
                    f' ({expected - received} bytes missing)')
        super().__init__(text)

    @property
    def missing(self):
        """Bytes still owed, or None when the message had no announced length."""
        return None if self.expected is None else self.expected - self.received


class LimitExceeded(FramingError):
    """No delimiter within ``limit`` bytes: the reader stopped looking."""

    def __init__(self, delimiter, limit):
        self.delimiter = delimiter
        self.limit = limit
        super().__init__(f'no {delimiter!r} within {limit} bytes')


class StreamReader:
    """A buffered reader over a socket: the exact-read and delimiter-read helpers.

    The buffer is allocated once per connection and reused: ``recv_into`` fills
    its free tail, reads hand out slices of it, and it is compacted (not
    reallocated) when the tail runs out.  It grows only for a read that must
    hold more than it is long: a delimiter read allowed to look further, or an
    exact read larger than the buffer (doubling as bytes arrive, up to what
    the read needs, so a peer that announces much and sends little costs
    little); and once (to STREAM_BUFFER_SIZE) for a connection that streams a
    body or reads exact messages of LARGE_READ bytes or more.  A buffer grown
    for an exact read keeps its size for the next (the caller bounds the
    largest: the block server streams blocks above BLOCK_STREAM_THRESHOLD):
    reallocating it for each large read made them 5 times slower.
    ``release`` gives it up while nothing is buffered (an idle connection
    costs no buffer); the next receive takes one again, from ``spares`` (a
    list that readers of many connections share, to which ``release``
    returns buffers of the first size, SPARE_BUFFER_BYTES of them at most)
    when it can.  A spare is kept with its memoryview, (view, buffer): a
    keep-alive connection gives its buffer back and takes one again for every
    request, and makes no view for it, nor asks the view for its buffer (an
    attribute CPython looks up its slow way).
    """

    __slots__ = ('_recv_into', '_size', '_spares', '_keep', '_buf', '_view', '_start', '_end',
                 '_waiting')

    def __init__(self, sock, buffer_size=READ_BUFFER_SIZE, spares=None):
        self._recv_into = sock.recv_into
        self._size = buffer_size
        # Spares shared with other readers, or none (a list of its own that stays empty);
        # how many ``release`` may leave there: SPARE_BUFFER_BYTES of them at most.
        self._spares = [] if spares is None else spares
        self._keep = 0 if spares is None else SPARE_BUFFER_BYTES // buffer_size
        self._take_buffer()
        self._start = 0  # first unread byte
        self._end = 0    # one past the last received byte
        # A read that had to wait, and how far it got, so that asking again
        # goes on from there: (UNTIL, delimiter, bytes after _start known to
        # hold no delimiter start: a head dripped a byte at a time is not
        # scanned again), (EXACT_TO, n, bytes still owed to the sink) or
        # (UNTIL_TO, delimiter, bytes delivered).  Any other read clears it.
        self._waiting = None

    def receive_from(self, sock):
        """Receive through ``sock.recv_into`` from now on, keeping what is buffered.

        The event loop reads a connection's socket non-blocking; a pool thread
        reads the same bytes through a blocking socket with a timeout.
        """
        self._recv_into = sock.recv_into

    def release(self):
        """Give the buffer up if nothing is buffered; True when nothing is (the buffer
        given up now or before), False when bytes wait to be read: so the loop asks one
        call, not ``buffered`` and then this, when a connection goes idle."""
        if self._start != self._end:
            return False
        buf = self._buf
        if buf is _NOTHING:
            return True
        spares = self._spares
        if len(spares) < self._keep and len(buf) == self._size:
            spares.append((self._view, buf))
        self._buf = _NOTHING
        self._view = _NOTHING_VIEW
        self._start = self._end = 0
        return True

    def _take_buffer(self):
        """A buffer of the first size: a spare if there is one."""
        spares = self._spares
        self._view, self._buf = spares.pop() if spares else _new_buffer(self._size)

    def snapshot(self):
        """A reader over the bytes buffered now, for looking ahead (see Snapshot)."""
        return Snapshot(self)

    # -- the buffer ----------------------------------------------------------

    @property
    def buffered(self):
        """How many received bytes are waiting to be read."""
        return self._end - self._start

    def at_eof(self):
        """Wait for data; True when the peer closed cleanly with nothing left unread.

        This is how a reader tells "no next message" from "a message cut short".
        """
        return self._start == self._end and not self._fill()

    def peek(self):
        """The received bytes not yet read, without consuming them."""
        return bytes(self._view[self._start:self._end])

    @property
    def capacity(self):
        """How many bytes the buffer has room for now (0 while released): what an idle
        or a small request's connection holds in memory."""
        return len(self._buf)

    def reserve(self, size):
        """Let the buffer hold at least ``size`` bytes from now on.

        For a connection about to stream a large body: fewer, larger receives,
        and chunks that straddle two fills less often.  The buffered bytes move
        into the new buffer; nothing is lost or reordered.
        """
        if len(self._buf) >= size:
            return
        if self._buf is _NOTHING:
            self._buf = bytearray(size)
            self._view = memoryview(self._buf)
            return
        self._move_to(size)

    def _move_to(self, size):
        """Put the buffered bytes at the front of a new buffer of ``size`` bytes."""
        count = self._end - self._start
        moved = bytearray(size)
        view = memoryview(moved)
        view[:count] = self._view[self._start:self._end]   # (a bytearray slice would copy)
        self._view.release()
        self._buf, self._view = moved, view
        self._start, self._end = 0, count

    def _make_room(self, limit=None):
        """Ensure the tail has space: compact first; a released reader takes a first
        buffer (a spare if there is one); a full one doubles, never past ``limit``
        bytes when given (what the read has to hold)."""
        if self._end < len(self._buf):
            return
        count = self._end - self._start
        if self._start:
            # Through the memoryview: one memmove, safe although the source
            # overlaps the destination (bytearray slice assignment is not).
            self._view[:count] = self._view[self._start:self._end]
            self._start, self._end = 0, count
        elif self._buf is _NOTHING:
            self._take_buffer()      # a released reader's next buffer
        else:
            size = 2 * count
            if limit is not None:
                size = max(count + 1, min(size, limit))
            self._move_to(size)

    def _fill(self, limit=None):
        """One recv_into the free tail; returns how many bytes came (0 at EOF).

        BlockingIOError from a non-blocking socket passes through with every
        buffered byte where it was."""
        end = self._end
        if self._start == end:
            if end:
                self._start = self._end = end = 0
            if self._buf is _NOTHING:
                # Released: the next request's buffer (_take_buffer, without a call:
                # every keep-alive request comes this way).
                spares = self._spares
                self._view, self._buf = spares.pop() if spares else _new_buffer(self._size)
        elif end == len(self._buf):
            self._make_room(limit)
            end = self._end
        # An empty buffer (each request of a keep-alive connection) is received
        # into whole: no view of its tail to make.  (The bound method read from its
        # slot first: called as a method, CPython looks it up its slow way.)
        recv_into = self._recv_into
        got = recv_into(self._view[end:] if end else self._view)
        self._end = end + got
        return got

    # -- exact reads ---------------------------------------------------------

    def read_exact(self, n):
        """Return exactly ``n`` bytes, or raise IncompleteRead saying how many were missing."""
        start = self._start
        if self._end - start >= n:  # the common case: already buffered
            self._start = start + n
            if self._waiting is not None:
                self._waiting = None
            return bytes(self._view[start:start + n])
        self._waiting = None
        if n >= LARGE_READ:
            # Messages about as large as the buffer (64 KiB blocks, body pieces)
            # would each take several receives and a compaction: grow it once,
            # so that one receive holds several of them.
            self.reserve(STREAM_BUFFER_SIZE)
        # Every byte stays in the buffer until all n are there, so a receive
        # that must wait loses nothing; for more than the buffer holds, it
        # doubles as they arrive (never past n), so nothing is allocated for
        # bytes announced and not sent.
        while self._end - self._start < n:
            if not self._fill(n):
                raise IncompleteRead(n, self._end - self._start)
        start = self._start
        self._start = start + n
        return bytes(self._view[start:start + n])

    def read_exact_to(self, n, sink):
        """Deliver exactly ``n`` bytes to ``sink`` in pieces; return n.

        ``sink`` is called with memoryview slices of the reused buffer, so it
        must consume (write, hash, copy) them before returning.  At most one
        buffer of the message is in memory at a time.  Bytes received beyond n
        stay buffered for the next read.

        What a wait keeps: the bytes before it are the sink's (consumed), and
        the reader remembers how many of the n are still owed; the same call
        asked again (same n) delivers only those and returns n.
        """
        remaining = n
        waiting = self._waiting
        if waiting is not None:
            self._waiting = None
            if waiting[0] is EXACT_TO and waiting[1] == n:
                remaining = waiting[2]
        if self._buf is _NOTHING and remaining:
            self._make_room()
        view = self._view
        while remaining:
            start = self._start
            if start == self._end:
                start = self._start = self._end = 0
                try:
                    got = self._recv_into(view)
                except BlockingIOError:
                    self._waiting = (EXACT_TO, n, remaining)
                    raise
                if not got:
                    raise IncompleteRead(n, n - remaining)
                self._end = got
            take = min(self._end - start, remaining)
            self._start = start + take
            remaining -= take
            sink(view[start:start + take])
        return n

    # -- delimiter reads -----------------------------------------------------

    def read_until(self, delimiter, limit):
        """Return the bytes before ``delimiter`` and consume both.

        Raises LimitExceeded when more than ``limit`` bytes come before the
        delimiter (looking at no more than ``limit + len(delimiter)`` bytes),
        and IncompleteRead(None, k) when the stream ends first.
        """
        size = len(delimiter)
        scanned = 0  # bytes after _start already known to hold no delimiter start
        waiting = self._waiting
        if waiting is not None:
            self._waiting = None
            if waiting[0] is UNTIL and waiting[1] == delimiter:
                scanned = waiting[2]
        while True:
            start = self._start
            have = self._end - start
            if have:        # (nothing buffered, each keep-alive request: receive first)
                found = self._buf.find(delimiter, start + scanned, self._end)
                if found >= 0:
                    if found - start > limit:
                        raise LimitExceeded(delimiter, limit)
                    self._start = found + size
                    # (tobytes: a method's call, cheaper than bytes()'s of a type)
                    return self._view[start:found].tobytes()
                if have >= limit + size:
                    raise LimitExceeded(delimiter, limit)
                scanned = have - size + 1 if have >= size else 0
            try:
                got = self._fill(limit + size)
            except BlockingIOError:
                self._waiting = (UNTIL, delimiter, scanned)
                raise
            if not got:
                raise IncompleteRead(None, self._end - self._start)

    def read_until_to(self, delimiter, sink):
        """Deliver everything before ``delimiter`` to ``sink`` in pieces; consume both.

        The streaming form of read_until, for a delimited part of any length
        (a multipart body part): only the last ``len(delimiter) - 1`` bytes,
        which might begin the delimiter, are held back between receives.
        Returns the number of bytes delivered.  A wait keeps what read_exact_to's
        does: the sink has the bytes before it, and asking again (same
        delimiter) delivers the rest and returns the whole count.
        """
        hold = len(delimiter) - 1
        delivered = 0
        waiting = self._waiting
        if waiting is not None:
            self._waiting = None
            if waiting[0] is UNTIL_TO and waiting[1] == delimiter:
                delivered = waiting[2]
        while True:
            start = self._start
            found = self._buf.find(delimiter, start, self._end)
            if found >= 0:
                if found > start:
                    sink(self._view[start:found])
                self._start = found + hold + 1
                return delivered + found - start
            safe = self._end - hold
            if safe > start:
                sink(self._view[start:safe])
                delivered += safe - start
                self._start = safe
            try:
                got = self._fill()
            except BlockingIOError:
                self._waiting = (UNTIL_TO, delimiter, delivered)
                raise
            if not got:
                raise IncompleteRead(None, delivered + self._end - self._start)


# What a read that had to wait was (StreamReader._waiting).
UNTIL, EXACT_TO, UNTIL_TO = 'read_until', 'read_exact_to', 'read_until_to'


def _nothing_more(buffer):
    raise BlockingIOError(errno.EAGAIN, 'nothing more is buffered')


class Snapshot(StreamReader):
    """A reader over the bytes another reader has buffered, that never receives.

    It shares that reader's buffer (no copy) and moves only its own place in
    it: a read that needs more than is buffered raises BlockingIOError, as a
    non-blocking socket with nothing more to give does.  So any reader of the
    framing core (a body reader, say) run over it answers "whole", "not yet"
    (BlockingIOError) or its own error, in time and memory bounded by what is
    buffered, and the reader it looks at is untouched.  Good only until that
    reader reads again: use it at once, in the thread that owns the reader.
    """

    __slots__ = ()

    def __init__(self, reader):
        self._recv_into = _nothing_more
        self._size = reader._size
        self._spares = None
        self._buf, self._view = reader._buf, reader._view
        self._start, self._end = reader._start, reader._end
        self._waiting = None

    # Never receive, move, grow, take or give up the shared bytes.
    def _fill(self, limit=None):
        return _nothing_more(None)

    def _make_room(self, limit=None):
        pass

    def _take_buffer(self):
        pass

    def reserve(self, size):
        pass

    def release(self):
        return False


def write_all(sock, *pieces):
    """Send every piece, in order, with as few syscalls as the kernel allows.

    One ``sendmsg`` gathers a header and a payload without concatenating them
    (no copy of the payload, and no Nagle delay between two small writes).
    """
    if not all(pieces):
        pieces = [p for p in pieces if p]
    if len(pieces) <= 1:
        if pieces:
            sock.sendall(pieces[0])
        return
    sent = sock.sendmsg(pieces)
    if sent == sum(map(len, pieces)):   # the usual case: the kernel took it all
        return
    pieces = list(pieces)
    while True:
        while pieces and sent >= len(pieces[0]):
            sent -= len(pieces[0])
            pieces.pop(0)
        if not pieces:
            return
        if sent:
            pieces[0] = memoryview(pieces[0])[sent:]
        sent = sock.sendmsg(pieces)
