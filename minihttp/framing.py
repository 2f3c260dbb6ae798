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
every byte it had: the caller asks again once the socket is readable, and a
delimiter read goes on scanning where it stopped.

Writers need no buffering: ``write_all`` sends several pieces with one
gather-write syscall and loops until the kernel has taken them all.
"""

from .limits import LARGE_READ, READ_BUFFER_SIZE, SPARE_BUFFER_BYTES, STREAM_BUFFER_SIZE

# What a released reader holds: nothing, shared by every idle connection
# (never released itself).
_NOTHING = bytearray()
_NOTHING_VIEW = memoryview(_NOTHING)


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
    reallocated) when the tail runs out.  It grows only when a delimiter read
    is allowed to look further than the buffer is long (doubling, up to what
    the read's limit needs, so a head is held in about its own size), and once
    (to STREAM_BUFFER_SIZE) for a connection that streams a body or reads
    exact messages of LARGE_READ bytes or more.  ``release`` gives it up while
    nothing is buffered (an idle connection costs no buffer); the next
    receive takes one again, from ``spares`` (a list that readers of many
    connections share, to which ``release`` returns buffers of the first
    size, SPARE_BUFFER_BYTES of them at most) when it can.
    """

    __slots__ = ('_recv_into', '_size', '_spares', '_buf', '_view', '_start', '_end',
                 '_scanned')

    def __init__(self, sock, buffer_size=READ_BUFFER_SIZE, spares=None):
        self._recv_into = sock.recv_into
        self._size = buffer_size
        self._spares = spares
        self._buf = spares.pop() if spares else bytearray(buffer_size)
        self._view = memoryview(self._buf)
        self._start = 0  # first unread byte
        self._end = 0    # one past the last received byte
        # A delimiter read that had to wait: (delimiter, bytes after _start
        # known to hold no delimiter start), so that asking again does not
        # scan the same bytes again (a head dripped a byte at a time).
        self._scanned = None

    def receive_from(self, sock):
        """Receive through ``sock.recv_into`` from now on, keeping what is buffered.

        The event loop reads a connection's socket non-blocking; a pool thread
        reads the same bytes through a blocking socket with a timeout.
        """
        self._recv_into = sock.recv_into

    def release(self):
        """Give the buffer up if nothing is buffered; True when it was given up."""
        if self._start != self._end or self._buf is _NOTHING:
            return False
        spares = self._spares
        if spares is not None and len(self._buf) == self._size and \
                (len(spares) + 1) * self._size <= SPARE_BUFFER_BYTES:
            spares.append(self._buf)
        self._buf = _NOTHING
        self._view = _NOTHING_VIEW
        self._start = self._end = 0
        return True

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
        count = self._end - self._start
        grown = bytearray(size)
        grown[:count] = self._view[self._start:self._end]
        self._view.release()
        self._buf, self._view = grown, memoryview(grown)
        self._start, self._end = 0, count

    def _make_room(self, limit=None):
        """Ensure the tail has space: compact first; a released reader takes a first
        buffer (a spare if there is one); a full one doubles, never past ``limit``
        bytes when given (what a delimiter read may have to hold)."""
        if self._end < len(self._buf):
            return
        count = self._end - self._start
        if self._start:
            # Through the memoryview: one memmove, safe although the source
            # overlaps the destination (bytearray slice assignment is not).
            self._view[:count] = self._view[self._start:self._end]
        else:
            if self._buf is _NOTHING:
                # A released reader's next buffer: a spare if there is one.
                grown = self._spares.pop() if self._spares else bytearray(self._size)
            else:
                size = 2 * count
                if limit is not None:
                    size = max(count + 1, min(size, limit))
                grown = bytearray(size)
                grown[:count] = self._view[:count]
                self._view.release()
            self._buf, self._view = grown, memoryview(grown)
        self._start, self._end = 0, count

    def _fill(self):
        """One recv_into the free tail; returns how many bytes came (0 at EOF)."""
        if self._start == self._end:
            self._start = self._end = 0
        self._make_room()
        got = self._recv_into(self._view[self._end:])
        self._end += got
        return got

    # -- exact reads ---------------------------------------------------------

    def read_exact(self, n):
        """Return exactly ``n`` bytes, or raise IncompleteRead saying how many were missing."""
        start = self._start
        if self._end - start >= n:  # the common case: already buffered
            self._start = start + n
            return bytes(self._view[start:start + n])
        if n >= LARGE_READ:
            # Messages about as large as the buffer (64 KiB blocks, body pieces)
            # would each take several receives and a compaction: grow it once,
            # so that one receive holds several of them.
            self.reserve(STREAM_BUFFER_SIZE)
        if n > max(len(self._buf), self._size):
            return self._read_large(n)
        while self._end - self._start < n:
            if not self._fill():
                raise IncompleteRead(n, self._end - self._start)
        start = self._start
        self._start = start + n
        return bytes(self._view[start:start + n])

    def _read_large(self, n):
        """read_exact for more than a buffer: the result grows as bytes arrive.

        Nothing is allocated for the announced length before its bytes come: a
        peer that announces a megabyte and sends a byte costs a byte (and the
        buffer).  Bytes received beyond ``n`` stay buffered for the next read.
        For a blocking socket only: a receive that must wait would lose what
        was gathered.
        """
        out = bytearray()
        while True:
            start = self._start
            take = min(self._end - start, n - len(out))
            out += self._view[start:start + take]
            self._start = start + take
            if len(out) == n:
                return bytes(out)
            if not self._fill():
                raise IncompleteRead(n, len(out))

    def read_exact_to(self, n, sink):
        """Deliver exactly ``n`` bytes to ``sink`` in pieces; return n.

        ``sink`` is called with memoryview slices of the reused buffer, so it
        must consume (write, hash, copy) them before returning.  At most one
        buffer of the message is in memory at a time.  Bytes received beyond n
        stay buffered for the next read.
        """
        remaining = n
        if self._buf is _NOTHING and n:
            self._make_room()
        view = self._view
        while remaining:
            start = self._start
            if start == self._end:
                start = self._start = 0
                got = self._recv_into(view)
                if not got:
                    self._end = 0
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
        if self._scanned is not None:
            if self._scanned[0] == delimiter:
                scanned = self._scanned[1]
            self._scanned = None
        while True:
            start = self._start
            found = self._buf.find(delimiter, start + scanned, self._end)
            if found >= 0:
                if found - start > limit:
                    raise LimitExceeded(delimiter, limit)
                self._start = found + size
                return bytes(self._view[start:found])
            have = self._end - start
            if have >= limit + size:
                raise LimitExceeded(delimiter, limit)
            scanned = max(0, have - size + 1)
            self._make_room(limit + size)
            try:
                got = self._fill()
            except BlockingIOError:
                self._scanned = (delimiter, scanned)
                raise
            if not got:
                raise IncompleteRead(None, self._end - self._start)

    def read_until_to(self, delimiter, sink):
        """Deliver everything before ``delimiter`` to ``sink`` in pieces; consume both.

        The streaming form of read_until, for a delimited part of any length
        (a multipart body part): only the last ``len(delimiter) - 1`` bytes,
        which might begin the delimiter, are held back between receives.
        Returns the number of bytes delivered.
        """
        hold = len(delimiter) - 1
        delivered = 0
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
            if not self._fill():
                raise IncompleteRead(None, delivered + self._end - self._start)


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
