"""One event loop per process for waiting; a bounded pool of threads for blocking work.

A thread per connection spends a thread on every client that is doing
nothing: idle between requests, or sending its head slowly.  Here one loop
(epoll on Linux, poll elsewhere: Poller below) owns every connection while it waits:

* it accepts, as many a pass as it serves, and refuses politely beyond
  ``max_connections``;
* it receives into the connection's own StreamReader without blocking, and
  asks the protocol to ``advance``: the protocol finds the head with the
  framing core's delimiter read, answers what it can at once (a small answer
  is one non-blocking send), and says what the connection waits for next;
* it keeps the deadlines (idle, a message on its way, a stalled send) in one
  lazy heap (minihttp.deadlines), not in a timer or a thread per connection.

Whatever must block (reading a body, sending a large file) runs on a pool
thread with the socket switched to blocking, through the same StreamReader:
the pull-style framing code reads top to bottom as before.  When the
exchange is over the connection comes back to the loop, its buffered bytes
(a pipelined request, say) intact.

What the loop asks of the protocol it runs (minihttp.server.HTTPServer,
minihttp.blockserver.BlockServer), and what the protocol may ask of the loop
and of a Connection, is the class Protocol below: the whole contract.

Every resource has one owner at a time.  A job (callable, with ``close()``)
may hold what its answer needs, an open file say: the connection owns it
from ``conn.give(job)`` until a pool thread takes it, and the thread then
closes it once it has run, however the run ended; a connection that closes
with its job unrun (a reset while earlier answers were sent, work dropped
from the queue at shutdown, a 408) closes it in ``_close``.  A connection on a pool thread (BUSY) is the
thread's: the loop only shuts it down, and closes it once the thread gives
it back (or, at the very end of ``stop``, when the thread never did).

Work waits in the loop, not on a thread, while it cannot go on:

* a body that has not begun to arrive (a head, then nothing) waits until its
  first bytes come, on body_timeout;
* when every thread is busy, work waits its turn in order.  Body work waiting
  so is checked at body_timeout: a client that sent nothing more although the
  protocol ``needs_more`` of its body has stalled, and is answered (408) and
  closed; one still sending, or done, waits on;
* body work whose turn comes while its client has sent nothing since it
  began to wait, and owes more, waits on in the loop, on the deadline it has,
  until its bytes come (as a body not begun does): a thread would only wait
  for it, and would count body_timeout afresh from when it took it.

On a pool thread the connection's socket is a TimedSocket: a peer that
sends its body, or reads our answer, with a gap of body_timeout, or slower
than the protocol's ``min_rate`` bytes a second over each ``rate_window``
seconds, is cut (a Pace says why).  So a thread is held by a slow peer for
a window or so, not for as long as the peer likes.
"""

import collections
import fcntl
import math
import os
import queue
import select
import socket
import ssl
import struct
import termios
import threading
import time

from .deadlines import Deadlines
from .errors import peer_gone
from .framing import StreamReader
from .limits import (ACCEPT_MAX, ACCEPT_MIN, CONNECTION_BUFFER_SIZE, LINGER_TIMEOUT,
                     MAX_CONNECTIONS, MAX_LINGER, MAX_REFUSING, POOL_THREADS, READ_BUFFER_SIZE,
                     REFUSAL_TIMEOUT, SHUTDOWN_GRACE, TLS_IDLE_BUDGET)
from .sockets import StartupError, bind
from .report import flush_soon, log_failure, say, say_soon
from .tls import (TLS_RECEIVE_SIZE, TLSConnection, WantRead, WantWrite, failure_reason,
                  looks_like_tls)

# What a connection waits for next, as the protocol's advance (or a pool job) says.
READ = 'read'        # the next message: wait until readable (or answer what is buffered)
POOL = 'pool'        # blocking work in conn.job: run it on a pool thread
BODY = 'body'        # the same, work that reads a body from the client
LINGER = 'linger'    # close politely: send FIN, read and drop what still comes, then close
STREAM = 'stream'    # a response that stays open: the protocol's pump(conn) sends more
CLOSE = 'close'      # close at once
# READ, with nothing buffered: the reader let go of its buffer (a protocol that
# released it says so, and the loop does not ask again; the loop's own ``conn.then``
# when it released it as the answer was queued: nothing reads it while that is sent).
IDLE = 'idle'

# Where a connection is.
WAITING, AWAITING_BODY, QUEUED, SENDING, BUSY, STREAMING, LINGERING, CLOSED = (
    'waiting', 'awaiting body', 'queued', 'sending', 'busy', 'streaming', 'lingering', 'closed')
HANDSHAKE = 'handshake'    # TLS: the loop drives the handshake, on head_timeout

# Pieces one sendmsg may gather (Linux's IOV_MAX is 1024).
IOV_MAX = 512
# A connection's ``outgoing`` when its answers are TLS ciphertext held by its
# TLSConnection (sealed there as they were queued).
SEALED = ('sealed',)

_clock = time.monotonic

# What the loop watches a descriptor for (epoll's bits; poll's are the same).
READABLE = select.POLLIN
WRITABLE = select.POLLOUT

class _Owner:
    """The poller's owner of a socket of the loop's own, with a ``state`` as a
    Connection has: the loop asks a ready owner's state first."""

    __slots__ = ('state',)

    def __init__(self, state):
        self.state = state


_ACCEPT = _Owner('accepting')    # the poller's owner of the listening socket
_WAKE = _Owner('waking')         # and of the wake-up socket


def timeval(seconds):
    """A struct timeval for SO_RCVTIMEO / SO_SNDTIMEO."""
    whole = int(seconds)
    return struct.pack('@ll', whole, int((seconds - whole) * 1_000_000))


class Poller:
    """Which descriptors are ready, each with what the loop registered it for.

    ``poll`` hands back the kernel's own (descriptor, events) pairs and
    ``owners`` maps a descriptor to its owner: no key looked up through a
    method, no mask translated and no pair made per ready descriptor, as
    ``selectors`` does (about 2,000 of the 156,000 instructions a keep-alive
    small GET cost, by callgrind).  A connection is watched for one thing at
    a time, so the loop knows what a ready one is ready for by what it
    watches.  epoll on Linux; elsewhere poll(2), whose calls and bits are
    epoll's but for a timeout in milliseconds.
    """

    __slots__ = ('owners', '_poll', '_ms')

    def __init__(self):
        self.owners = {}     # descriptor -> what the loop registered it for
        self._ms = not hasattr(select, 'epoll')
        self._poll = select.poll() if self._ms else select.epoll()

    def register(self, sock, events, owner):
        fd = sock.fileno()
        self._poll.register(fd, events)
        self.owners[fd] = owner

    def modify(self, sock, events):
        self._poll.modify(sock.fileno(), events)

    def unregister(self, sock):
        fd = sock.fileno()
        self._poll.unregister(fd)
        del self.owners[fd]

    def poll(self, timeout):
        """(descriptor, events) pairs ready within ``timeout`` seconds (None: no limit).
        A descriptor unregistered since (closed by an earlier pair) is no longer in
        ``owners``: skip it."""
        if self._ms:
            return self._poll.poll(None if timeout is None else math.ceil(timeout * 1000))
        return self._poll.poll(-1 if timeout is None else timeout)

    def close(self):
        if not self._ms:
            self._poll.close()
        self.owners.clear()


class Pace:
    """Whether a peer keeps up: what it moved, against the time a pool thread waited for it.

    Two rules, checked each time a receive or send returns (``moved``) and
    each time the kernel's timeout, a tick, runs out with nothing moved
    (``waited``); either raises TimeoutError, whose text is the reason:

    * nothing moved for ``stall`` seconds: the between-bytes timeout, the
      outer bound;
    * fewer than ``min_rate`` bytes a second over a window of ``window``
      seconds, judged once each window is over (0: no such rule).  Bytes
      beyond the minimum count for the next windows, up to what the stall
      rule lets a peer idle anyway (``min_rate * stall``): a client that
      sends in bursts (curl --limit-rate sends 64 KiB, then waits) is judged
      by its average, and no connection banks more than that.

    Only waiting counts: the time a thread spends on the server's own work
    (writing an upload to disk) is not the peer's, nor is the time the
    connection spends in the loop between two trips to the pool (its windows
    go on where they were).  ``progress()`` says how many bytes the peer has
    moved in all: for a send, what left the socket's queue, not what we
    handed it (a slow reader makes the kernel take nothing until a third of
    its buffer is free, which at a legitimate slow rate can take longer than
    a window).
    """

    __slots__ = ('stall', 'min_rate', 'window', 'words', 'progress', 'idle', 'spent', 'mark',
                 'seen', 'ahead')

    def __init__(self, stall, min_rate, window, words, progress):
        self.stall = stall
        self.min_rate = min_rate
        self.window = window if min_rate else math.inf
        self.words = words          # what the peer's bytes did: 'received', 'read by the peer'
        self.progress = progress
        self.idle = self.spent = 0.0      # waited with nothing moved; waited in this window
        self.mark = progress()      # progress at the window's start
        self.seen = None            # at the last tick, if no call moved bytes since
        self.ahead = 0.0            # bytes beyond the minimum in the windows before

    def moved(self, seconds):
        """A call returned after ``seconds``, having moved bytes (the usual case: cheap)."""
        self.seen = None            # the gap begins again
        self.spent += seconds
        if self.spent >= self.window:
            self._judge()

    def waited(self, seconds):
        """A tick ran out after ``seconds`` with nothing moved by the call."""
        seen = self.progress()
        if self.seen is None:       # the first tick since a call moved bytes
            self.idle = seconds
        elif seen > self.seen:      # a send's queue drained meanwhile: the peer read
            self.idle = 0.0
        else:
            self.idle += seconds
        self.seen = seen
        if self.idle >= self.stall:
            raise TimeoutError(f'stalled: nothing {self.words} for {self.stall:g} s')
        self.spent += seconds
        if self.spent >= self.window:
            self._judge()

    def _judge(self):
        """A window is over: the rate over it, or TimeoutError."""
        now = self.progress()
        moved = now - self.mark
        ahead = moved + self.ahead - self.min_rate * self.spent
        if ahead < 0:
            raise TimeoutError(f'too slow: {moved} bytes {self.words} in {self.spent:.1f} s, '
                               f'below the minimum of {self.min_rate} bytes/s')
        self.ahead = min(ahead, self.min_rate * self.stall)
        self.mark, self.spent = now, 0.0


def unsent(sock):
    """Bytes a socket still queues: not yet acknowledged by the peer (TCP), not yet read (Unix)."""
    try:
        return struct.unpack('i', fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4)))[0]
    except OSError:
        return 0     # closed meanwhile: a measurement, not an exchange; nothing queued


class Protocol:
    """The contract between an EventLoop and the protocol it runs: the one place it is said.

    What the loop calls, in its own thread unless said:

    * ``attach(loop)``: once, when the EventLoop is made; the protocol keeps
      ``self.loop`` (here) and serves that loop only.
    * ``advance(conn)``: bytes came, or came while an answer was sent or work
      ran; read what is buffered and return an outcome (READ, POOL, BODY,
      LINGER, STREAM, CLOSE; IDLE for READ when its ``conn.reader.release()``
      said nothing is buffered).  For POOL and BODY the protocol has handed the
      work over with ``conn.give(job)``.
    * ``expired(conn)``: a wait ran out: idle (``conn.head_since`` None: nothing
      buffered, no part of a TLS record), a head begun (``head_timeout``), a body
      not begun or stalled while it waited for a thread (``body_timeout``).  The
      protocol may queue a last answer with ``conn.send``; the loop sends what the
      socket takes, and closes.
    * ``needs_more(conn)``: body work waits for a thread and the client has sent
      nothing since it began to wait (for ``body_timeout``, or until a thread is
      free): does it still owe bytes (it stalled), or is its body here (it waits
      for us)?
    * ``refusal(now, peer)``: the bytes to send a connection beyond the cap.
    * ``closed(conn)``: any connection, as the loop closes it; its state is BUSY
      when the loop stops without a pool thread having given it back.
    * ``pump(conn)``: for STREAM: queue what the stream has (``conn.send``);
      whether there was any.
    * ``wrong_scheme(conn, tls_hello)``: plain bytes came to a TLS port, or
      (``tls_hello``) a TLS hello to a plain one: say so, and queue an answer if
      there is one; the loop sends it in clear and closes, lingering.
    * the numbers ``keepalive_timeout`` (idle), ``head_timeout`` (a head
      begun), ``body_timeout`` (a body not begun, a stalled send, a receive
      on the pool), ``min_rate`` and ``rate_window`` (the pool's pace).
    * ``close_notify_at_close``: whether a TLS connection the loop closes
      (CLOSE, a deadline, a peer gone) gets our close_notify first.  LINGER always
      sends one.  HTTP's messages frame themselves, so its every close may; the
      block protocol's close is its only word that a stream was kept, which a
      close_notify would give to a stream cut short (blockserver.end).

    What the protocol may use, and nothing else:

    * on its loop: ``call_soon(function, *args)`` (from any thread),
      ``call_later(delay, function, *args)`` (in the loop's thread),
      ``resume(conn, outcome)`` (in the loop's thread: go on with a STREAM it
      queued to), ``stopping`` (an Event), ``stop_asked`` (a bool, set with it:
      what every ``conn.stopping`` says, read without a call);
    * on a Connection: ``peer``, ``reader`` (its StreamReader), ``stopping``,
      ``state`` (to read), ``send(pieces)`` and ``queued`` (in the loop),
      ``give(job)``, ``head_read()``, ``head_since`` (to read: None once no head is
      on its way), and on a pool thread ``timed`` (the
      TimedSocket) and ``sock`` (to peek);
    * ``conn.exchange``: the protocol's own, for what it keeps about the
      exchange in progress (its own class; the loop never reads it).

    A job is a callable with ``close()`` (Job below), run at most once on a
    pool thread; its return value is the next outcome.
    """

    keepalive_timeout = head_timeout = body_timeout = 0.0
    min_rate = 0
    rate_window = 0.0
    close_notify_at_close = True
    loop = None

    def attach(self, loop):
        if self.loop is not None and self.loop is not loop:
            raise ValueError(f'{type(self).__name__} already serves a loop: make one per loop')
        self.loop = loop

    def advance(self, conn):
        raise NotImplementedError

    def expired(self, conn):
        raise NotImplementedError

    def needs_more(self, conn):
        return True

    def refusal(self, now, peer):
        return b''

    def closed(self, conn):
        pass

    def pump(self, conn):
        return False

    def wrong_scheme(self, conn, tls_hello):
        said = 'a TLS hello on a plain port' if tls_hello else 'plain bytes on a TLS port'
        say_soon(f'{conn.peer[0]}:{conn.peer[1]}: {said}; closed', err=True)


class Timer:
    """A call the loop makes once, ``delay`` seconds on (EventLoop.call_later): an owner
    in the loop's Deadlines beside the connections, so that it costs no thread and no
    wake-up of its own."""

    __slots__ = ('deadline', 'timer', 'function', 'args')

    def __init__(self, function, args):
        self.deadline = None
        self.timer = None
        self.function = function
        self.args = args


class Job:
    """Blocking work for a pool thread, ``work(*args)``, run at most once.

    ``close()`` lets go of what the work holds for its answer (nothing here; an
    HTTP job closes its response's body).  The loop calls it once the work has
    run, however it ended, or with the connection when it never ran.
    """

    __slots__ = ('work', 'args')

    def __init__(self, work, *args):
        self.work = work
        self.args = args

    def __call__(self):
        return self.work(*self.args)

    def close(self):
        pass


class TimedSocket:
    """A connection's socket as the pool uses it: blocking, each call paced, at the cost of a
    clock reading or two per call.

    Python's own socket timeouts poll() before every recv and send.  Here the
    socket is blocking and the kernel times each call out (SO_RCVTIMEO and
    SO_SNDTIMEO, set once) after a tick: the between-bytes timeout, or the
    rate window when that is shorter.  Each call's wait is told to a Pace,
    one for each direction, which raises TimeoutError with its reason when
    the peer has stalled or is too slow; a tick that passes within the rules
    just waits again.  Receives (``recv_into``), sends (``sendall``,
    ``sendmsg``) and the kernel's file copies (``send_file``) all go through it.
    """

    def __init__(self, sock, stall, min_rate=0, window=0.0):
        self.sock = sock
        # EAGAIN from a blocking socket means a whole tick passed (by the
        # kernel's clock, which ours may read as a hair less).
        self.tick = min(stall, window) if min_rate else stall
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(self.tick))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval(self.tick))
        self.received = 0      # bytes received on the pool
        self.handed = 0        # bytes handed to the kernel to send
        self.receiving = Pace(stall, min_rate, window, 'received', lambda: self.received)
        self.sending = Pace(stall, min_rate, window, 'read by the peer',
                            lambda: max(0, self.handed - unsent(sock)))

    def recv_into(self, buffer):
        pace, recv_into = self.receiving, self.sock.recv_into
        while True:
            start = _clock()
            try:
                got = recv_into(buffer)
            except BlockingIOError:   # EAGAIN: a tick ran out with nothing received
                pace.waited(self.tick)
                continue
            if got:
                self.received += got
                pace.moved(_clock() - start)
            return got

    def _send(self, send, *args):
        pace = self.sending
        while True:
            start = _clock()
            try:
                sent = send(*args)
            except BlockingIOError:   # a tick ran out with nothing taken
                pace.waited(self.tick)
                continue
            self.handed += sent
            if sent:
                pace.moved(_clock() - start)
            return sent

    def sendmsg(self, buffers):
        return self._send(self.sock.sendmsg, buffers)

    def sendall(self, data, flags=0):
        sent = self._send(self.sock.send, data, flags)
        if sent < len(data):       # the kernel took part of it before a tick ran out
            view = memoryview(data).cast('B')
            while sent < len(view):
                sent += self._send(self.sock.send, view[sent:], flags)

    def send_file(self, fd, offset, count):
        """os.sendfile from ``fd`` to this socket: how many bytes the kernel took (0: the
        file ended)."""
        return self._send(os.sendfile, self.sock.fileno(), fd, offset, count)


class Connection:
    """One accepted socket and its one StreamReader, wherever it is (loop or pool)."""

    __slots__ = ('sock', 'raw', 'tls', 'peer', 'reader', 'loop', 'state', 'events', 'deadline',
                 'timer', 'head_since', 'outgoing', 'queued', 'then', 'job', 'reads_body',
                 'exchange', 'timed', 'paced', 'lingered', 'cut', 'silent', 'counted')

    def __init__(self, sock, peer, loop, tls=None):
        # ``sock`` is what the protocol reads and writes: the socket, or over TLS
        # the TLSConnection (``tls``); ``raw`` is the socket either way (the
        # poller's, and what shutdown, peeks and lingering use).
        self.raw = sock
        self.tls = tls
        if tls is not None:
            sock = tls
        self.sock = sock
        self.peer = peer
        self.loop = loop
        reader = self.reader = StreamReader(sock, CONNECTION_BUFFER_SIZE,
                                            spares=loop.spare_buffers)
        reader.release()      # no buffer until the first bytes arrive
        self.silent = True    # nothing received since it connected: may make room at the cap
        self.counted = 0      # what its TLS buffers count in the loop's idle budget (_count_idle)
        self.state = WAITING
        self.events = 0       # what the poller watches for (0: not registered)
        self.deadline = None  # when the current wait ends (time.monotonic())
        self.timer = None     # its live entry in the loop's Deadlines (theirs to write)
        # When the first byte of the message on its way came (head_read ends it).
        self.head_since = None
        self.outgoing = None  # bytes queued for the socket: [bytes-like]
        self.queued = 0       # how many
        self.then = None      # what to do once they are sent
        self.job = None       # the pool's work, for POOL and BODY (give); closed by its last owner
        self.reads_body = False   # whether it is BODY work
        self.exchange = None  # the protocol's own (Protocol says): the loop never reads it
        self.timed = None     # what the pool reads and writes: paced, or TLS over it
        self.paced = None     # the TimedSocket, made on the first trip to the pool
        self.lingered = 0
        self.cut = False      # shut down by a stopping server

    @property
    def stopping(self):
        return self.loop.stop_asked

    def give(self, job):
        """The protocol hands over blocking work for POOL or BODY: from now on the loop
        owns it, runs it once on a pool thread, or closes it unrun with the connection."""
        self.job = job

    def head_read(self):
        """The protocol read a whole head (a request's, a block's header): the
        head_timeout of the message on its way is over."""
        self.head_since = None

    def send(self, pieces):
        """Queue bytes to send; the loop sends every connection's queue once per pass.

        Answers to all the requests one pass of the loop read leave together:
        pipelined answers in one sendmsg, and one wake-up of a client reading
        many connections, not one per answer.  Over TLS they are encrypted now
        (TLSConnection.seal), so that the records that carry an answer are counted
        with its exchange, and their ciphertext waits in the TLSConnection.
        """
        if self.tls is not None:
            self.queued += self.tls.seal(pieces)
            if self.queued:
                self.outgoing = SEALED
            return
        outgoing = self.outgoing
        if outgoing is None:
            outgoing = self.outgoing = []
        for piece in pieces:
            if piece:
                outgoing.append(piece)
                self.queued += len(piece)

    def flush(self):
        """Send what is queued without blocking; True once nothing is left."""
        pieces = self.outgoing
        if pieces is SEALED:
            if self.tls is not None and not self.tls.flush():
                return False
            self.queued = 0       # sent (or, TLS dropped at a close, never to be)
            self.outgoing = None
            return True
        while pieces:
            try:
                sent = self.sock.sendmsg(pieces if len(pieces) <= IOV_MAX else pieces[:IOV_MAX])
            except BlockingIOError:
                return False
            self.queued -= sent
            if not self.queued:
                break                     # the usual case: the kernel took it all
            while sent >= len(pieces[0]):
                sent -= len(pieces.pop(0))
            if sent:
                pieces[0] = memoryview(pieces[0])[sent:]
                return False
        self.outgoing = None
        return True

    def plain(self):
        """Read and written through the socket itself from now on: the TLSConnection,
        and OpenSSL's buffers with it, let go."""
        self.tls = None
        self.sock = self.raw
        self.timed = self.paced
        self.reader.receive_from(self.raw)

    def to_pool(self, protocol):
        """Blocking socket, used through a TimedSocket: for pull-style code.

        A client whose body stalls or drips, or that stops reading our response
        or reads it too slowly, is cut by the protocol's ``body_timeout`` (between
        bytes), ``min_rate`` and ``rate_window``; the timed socket is made once per
        connection.
        """
        sock = self.sock
        sock.setblocking(True)
        if self.paced is None:
            self.paced = self.timed = TimedSocket(self.raw, protocol.body_timeout,
                                                  protocol.min_rate, protocol.rate_window)
            if self.tls is not None:
                self.timed = self.tls
        if self.tls is not None:
            # Ciphertext through the pace, into a buffer of the thread's own: the
            # loop's is shared.  Files go out read into a buffer, encrypted
            # (TLSConnection.send_file): no sendfile, no kernel TLS in Python's ssl.
            self.tls.use(self.paced)
        self.reader.receive_from(self.timed)

    def to_loop(self):
        self.sock.setblocking(False)
        if self.tls is not None:
            self.tls.use(self.raw, self.loop.tls_scratch)
        self.reader.receive_from(self.sock)

    def readable(self, need):
        """Whether ``need`` more bytes are here or in the kernel, so that a read would not
        wait; over TLS whether any are (records hide the count)."""
        tls = self.tls
        if tls is not None:
            if tls.pending():
                return True
            need = 1
        try:
            return len(self.raw.recv(need, socket.MSG_PEEK | socket.MSG_DONTWAIT)) == need
        except BlockingIOError:
            return False


class EventLoop:
    """Accepts on (host, port) and serves every connection with ``protocol``.

    Its face (``address``, ``name``, ``start()``, ``stop(grace)``) is what
    run_until_signalled and run_workers drive.
    """

    # The loop's passes, counted as each poll returns (read in the loop's thread): what
    # the kernel held when a poll returned is older than anything done after it.
    turn = 0

    def __init__(self, host, port, protocol, *, name='http', threads=POOL_THREADS,
                 max_connections=MAX_CONNECTIONS, reuse_port=False, context=None,
                 tls_idle_budget=TLS_IDLE_BUDGET):
        self._host = host
        # reuse_port: worker processes will share the port, each with a
        # listening socket of its own (listen_apart).
        self.sock = bind(host, port, reuse_port=reuse_port)
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()[:2]
        self.name = name
        self.protocol = protocol
        self.threads = threads
        self.max_connections = max_connections
        self.stopping = threading.Event()
        self.connections = set()     # every open connection (in the loop or the pool)
        self._refusing = set()       # refused ones, lingering before they close
        # Connections that have sent nothing since they connected, oldest first: at
        # the cap the oldest makes room for a newcomer, so that a flood of silent
        # connections cannot keep every other client out until their deadlines.
        self._silent = collections.OrderedDict()
        self.deadlines = Deadlines()  # every waiting connection's, in one lazy heap
        self._returned = collections.deque()   # (connection, outcome) from the pool
        self._calls = collections.deque()      # (function, args) to run in the loop
        self._jobs = queue.SimpleQueue()
        self._workers = []
        self._free = 0               # threads not running a job
        self._turns = collections.deque()   # connections waiting for a free thread
        self._scratch = memoryview(bytearray(READ_BUFFER_SIZE))   # what lingering drops
        # Buffers that idle connections gave up, for the next that receives.
        self.spare_buffers = []
        # TLS (``context``, a server-side ssl.SSLContext): every connection's
        # handshake is driven here, then it is served as a plain one through its
        # TLSConnection.  Their ciphertext receives share one scratch (copied into
        # each connection's BIO at once): an idle TLS connection holds no buffer.
        self.context = context
        self.tls_scratch = memoryview(bytearray(TLS_RECEIVE_SIZE)) if context else None
        # TLS connections whose OpenSSL buffers grew past TLS_IDLE_LEAN, in the
        # order they last went idle, and the sum of what they hold: past
        # tls_idle_budget, the one idle longest is closed (_count_idle).
        self._grown = collections.OrderedDict()
        self._grown_bytes = 0
        self._idle_budget = tls_idle_budget
        self._unsent = []            # connections with answers queued in this pass
        self._grace = SHUTDOWN_GRACE
        self._paused = False         # accepting stopped for want of descriptors
        # The loop thread's own word for ``stopping`` once it has begun to stop
        # (_begin_stop): read for every request, where the Event costs a call.
        self._stop_begun = False
        # ``stopping`` as a bool, set with it (stop): what Connection.stopping says,
        # asked for every answer, where Event.is_set costs a Python call.
        self.stop_asked = False
        self._thread = self._poller = self._wake_r = self._wake_w = None
        self._ident = None
        protocol.attach(self)     # the protocol's loop from now on (Protocol says)

    # -- running ---------------------------------------------------------------------

    def listen_apart(self):
        """In a worker process: accept from a listening socket of its own on the same port.

        Worker processes that shared one listening socket took turns by luck:
        whichever woke first took every connection waiting, so with batched
        accepts one of them would serve a burst alone.  With a socket each
        (SO_REUSEPORT), the kernel spreads new connections evenly over them.
        The first worker keeps the socket the parent bound (connections that
        came before the others listen wait there); each other worker calls
        this before it starts.  Where the port cannot be shared so (no
        SO_REUSEPORT, or the socket was bound without it), the worker goes on
        with the shared socket, and says so.
        """
        try:
            own = bind(self._host, self.address[1], reuse_port=True, join=True)
        except StartupError as exc:
            say(f'{self.name}: {exc}; this worker accepts from the shared socket', err=True)
            return
        own.setblocking(False)
        self.sock.close()
        self.sock = own

    def start(self):
        # Made here, not in __init__: worker processes forked after the bind
        # share the listening socket but must each have a loop of their own.
        self._poller = Poller()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._workers = [threading.Thread(target=self._work, daemon=True,
                                          name=f'{self.name} pool {n}')
                         for n in range(self.threads)]
        for worker in self._workers:
            worker.start()
        self._free = self.threads
        self._thread = threading.Thread(target=self.serve_forever, name=self.name, daemon=True)
        self._thread.start()
        self._ident = self._thread.ident

    def stop(self, grace=SHUTDOWN_GRACE):
        """Stop accepting, close idle connections, let busy ones finish for ``grace``
        seconds, then cut them."""
        self._grace = grace
        self.stop_asked = True
        self.stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(grace + 2.0)
        for _ in self._workers:
            self._jobs.put(None)
        deadline = time.monotonic() + 1.0
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        if self._thread is not None and not self._thread.is_alive():
            # The loop has ended: what the pool gave back since, or still holds past
            # every deadline (its socket shut down long ago), has no other owner.
            for conn in list(self.connections):
                self._close(conn)
        if self._wake_r is not None:
            self._wake_r.close()
            self._wake_w.close()
        self.sock.close()

    def serve_forever(self):
        poll, owners = self._poller.poll, self._poller.owners
        advance = self.protocol.advance
        self._poller.register(self.sock, READABLE, _ACCEPT)
        self._poller.register(self._wake_r, READABLE, _WAKE)
        stop_at = None
        try:
            while True:
                timeout = self.deadlines.earliest()
                if timeout is not None:
                    timeout = max(0.0, timeout - time.monotonic())
                if self._calls:
                    timeout = 0.0       # calls the last pass made in this thread, at once
                if stop_at is not None:
                    # Wake at the end of the grace, and a second later to give up.
                    now = time.monotonic()
                    until = max(0.0, (stop_at if now < stop_at else stop_at + 1.0) - now)
                    timeout = until if timeout is None else min(timeout, until)
                ready = poll(timeout)
                self.turn += 1
                for fd, _ in ready:
                    try:
                        conn = owners[fd]
                    except KeyError:
                        continue            # closed by an earlier one of this pass
                    if conn.state is WAITING and not conn.silent:
                        # Bytes for a connection waiting for its next message, every
                        # request's path: _on_readable's work, without its call.  (A
                        # WAITING connection is watched for READABLE only.)
                        try:
                            outcome = advance(conn)
                        except Exception as exc:
                            outcome = self._advance_failed(conn, exc)
                        self._proceed(conn, outcome)
                    elif conn is _ACCEPT:
                        self._accept(len(ready))
                    elif conn is _WAKE:
                        self._take_returns()
                    elif conn.state is HANDSHAKE:
                        self._shake(conn)
                    elif conn.events == WRITABLE:
                        # Watched for one thing at a time: writable (or failed) now.
                        self._on_writable(conn)
                    elif conn.state is LINGERING or conn.state is STREAMING:
                        self._drain(conn)
                    else:
                        self._on_readable(conn)
                while self._calls:
                    function, args = self._calls.popleft()
                    function(*args)
                self._send_queued()
                now = time.monotonic()
                earliest = self.deadlines.earliest()
                if earliest is not None and earliest <= now:
                    self._expire(now)
                flush_soon()            # the pass's log lines, in one write
                if self.stopping.is_set():
                    if stop_at is None:
                        stop_at = self._begin_stop(now)
                    if self._stopped(now, stop_at):
                        break
        finally:
            for conn in list(self.connections) + list(self._refusing):
                if conn.state is not BUSY:    # a pool thread's: closed once given back
                    self._close(conn)
            self._poller.close()
            flush_soon()

    # -- accepting --------------------------------------------------------------------

    def _accept(self, served):
        """Accept the connections waiting, as many as the ``served`` events of this pass
        (within ACCEPT_MIN and ACCEPT_MAX): newcomers get in as fast as the loop serves."""
        for _ in range(min(max(served, ACCEPT_MIN), ACCEPT_MAX)):
            try:
                sock, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                # Out of descriptors (EMFILE) or memory: stop watching the
                # listening socket (it would wake the loop again at once) until
                # a connection closes; the client waits in the backlog.
                say(f'{self.name}: cannot accept: {exc.strerror}; waiting for a '
                    'connection to close', err=True)
                self._poller.unregister(self.sock)
                self._paused = True
                return
            sock.setblocking(False)
            if len(self.connections) >= self.max_connections and not self._make_room():
                self._refuse(sock, peer)
                continue
            # Responses go out in one write each; never wait for an ACK first.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.context is None:
                conn = Connection(sock, peer, self)
                self.connections.add(conn)
                self._silent[conn] = None
                self._wait_read(conn, time.monotonic())
                continue
            tls = TLSConnection(sock, self.context, server_side=True, scan=True)
            tls.use(sock, self.tls_scratch)
            conn = Connection(sock, peer, self, tls)
            self.connections.add(conn)
            self._silent[conn] = None     # silent until its handshake is done
            conn.state = HANDSHAKE
            self._watch(conn, READABLE)
            self.deadlines.set(conn, time.monotonic() + self.protocol.head_timeout)

    def _make_room(self):
        """At the cap: close the connection that has been silent longest since it
        connected, if any: it asked for nothing, so nothing is lost."""
        if not self._silent:
            return False
        conn, _ = self._silent.popitem(last=False)
        self._close(conn)
        return True

    def _refuse(self, sock, peer):
        """Answer a connection beyond the cap with the protocol's refusal, and close.

        A TLS port's newcomer is closed without a word: a 503 in clear would reach
        its client as a failed handshake anyway, and a handshake to say it costs
        what the cap is there to save."""
        if self.context is not None:
            sock.close()
            return
        answer = self.protocol.refusal(time.time(), peer)
        try:
            sent = sock.send(answer)
        except OSError as exc:
            self._failed(peer, exc, 'refusing')
            sent = 0
        if len(self._refusing) >= MAX_REFUSING or sent < len(answer):
            sock.close()
            return
        conn = Connection(sock, peer, self)
        self._refusing.add(conn)
        self._linger(conn, time.monotonic() + REFUSAL_TIMEOUT)

    # -- TLS: the handshake, and what is not TLS ----------------------------------------

    def _shake(self, conn):
        """Drive a TLS connection's handshake as far as its socket allows, without blocking."""
        tls = conn.tls
        try:
            tls.do_handshake()
        except WantRead:
            self._watch(conn, READABLE)
            return
        except WantWrite:
            self._watch(conn, WRITABLE)
            return
        except (ssl.SSLError, OSError) as exc:
            self._handshake_failed(conn, exc)
            return
        conn.silent = False
        self._silent.pop(conn, None)
        conn.state = WAITING
        self._watch(conn, READABLE)
        self._wait_read(conn, time.monotonic())

    def _handshake_failed(self, conn, exc):
        """One line saying why (none for a client that left before a byte), and a close;
        plain HTTP gets the protocol's answer in clear."""
        tls = conn.tls
        if tls.plain_http():
            # The clear request went into the TLS connection; its answer goes
            # past it, on the socket itself.
            conn.plain()
            self._wrong_scheme(conn, False)
            return
        if tls.first:
            reason = failure_reason(exc)
            if isinstance(exc, ssl.SSLEOFError):
                reason = 'the client closed the connection'
            say_soon(f'{self.name}: TLS handshake with {conn.peer[0]}:{conn.peer[1]} failed: '
                     f'{reason}', err=True)
        self._close(conn)

    def _wrong_scheme(self, conn, tls_hello):
        """Plain bytes on a TLS port, or TLS on a plain one: the protocol's answer, in
        clear, then a lingering close."""
        conn.state = WAITING
        try:
            self.protocol.wrong_scheme(conn, tls_hello)
        except Exception as exc:
            self._failed(conn.peer, exc, 'answering')
        self._proceed(conn, LINGER)

    # -- waiting for bytes ------------------------------------------------------------

    def _wait_read(self, conn, now, idle=False):
        """Park a connection until it is readable, with the deadline its state asks for
        (``idle``: its reader is known to be released, nothing buffered in it).

        A TLS connection may hold what the socket will never announce: plaintext
        decrypted and not read, whole records received with an earlier one (a
        pipelined request).  It is advanced again in this pass (a read that then
        waits has taken what was held, so this ends).
        """
        tls = conn.tls
        if tls is not None and not tls.drained and tls.pending():
            self._calls.append((self._on_held, (conn,)))
        # Idle: nothing buffered (its buffer given back), and over TLS no part of a record
        # either: ciphertext begins a head as plaintext does, and a byte of it now and
        # then must not renew keepalive_timeout for ever (head_timeout runs from it).
        # ``idle`` says the first only: part of the next record may have come with the
        # last request's, and OpenSSL may hold it (the BIO then empty, nothing ``pending``);
        # a TLS connection that read its records to their end (``drained``) holds none.
        if ((idle or conn.reader.release())
                and (tls is None or tls.drained or not tls.receiving())):
            if self._stop_begun:
                self._close(conn)     # idle while stopping: nothing is lost
                return
            conn.head_since = None
            deadline = now + self.protocol.keepalive_timeout
            if tls is not None and tls.grown:
                self._count_idle(conn, tls.grown)
        else:
            if conn.head_since is None:
                conn.head_since = now
            deadline = conn.head_since + self.protocol.head_timeout
        conn.state = WAITING
        if conn.events != READABLE:     # (a keep-alive connection's already is)
            self._watch(conn, READABLE)
        self.deadlines.set(conn, deadline)

    def _on_held(self, conn):
        if conn.state is WAITING:
            self._on_readable(conn)

    def _on_readable(self, conn):
        if conn.silent:
            first = self._first_bytes(conn) if self.context is None else b''
            if first is None:
                # Nothing came: its descriptor's readiness was another's, closed and
                # taken again within this pass (a silent one closed to make room).
                return
            conn.silent = False
            self._silent.pop(conn, None)
            if looks_like_tls(first):
                self._wrong_scheme(conn, True)
                return
        if conn.state is AWAITING_BODY:
            self._submit(conn)            # the body has begun: a thread may read it
            return
        self._proceed(conn, self._advance(conn))

    def _advance(self, conn):
        try:
            return self.protocol.advance(conn)
        except Exception as exc:
            return self._advance_failed(conn, exc)

    def _advance_failed(self, conn, exc):
        """In an ``except`` block: what escaped the protocol's advance is said; the
        connection closes."""
        self._failed(conn.peer, exc, 'serving')
        return CLOSE

    def _proceed(self, conn, outcome):
        """Do what the protocol said, once whatever it queued has left."""
        if conn.outgoing:
            if conn.state is not SENDING:
                conn.state = SENDING
                # The request is read: its buffer serves the next connection of
                # this pass, not this one while its answer waits for the send
                # (IDLE: the protocol gave it back already).
                if outcome is not IDLE and conn.reader.release() and outcome is READ:
                    outcome = IDLE
                self._unsent.append(conn)
            conn.then = outcome
        elif outcome is READ or outcome is IDLE:
            self._wait_read(conn, time.monotonic())     # (nothing sent: rare)
        elif outcome is POOL:
            conn.reads_body = False
            self._submit(conn)
        elif outcome is BODY:
            conn.reads_body = True
            # Begun when bytes are buffered, or held by TLS (records received with
            # the head's): the socket would never announce those.
            if conn.reader.buffered or (conn.tls is not None and conn.tls.pending()):
                self._submit(conn)
            else:   # no thread until the body's first bytes come
                conn.state = AWAITING_BODY
                self._watch(conn, READABLE)
                self.deadlines.set(conn, time.monotonic() + self.protocol.body_timeout)
        elif outcome is STREAM:
            # Open until the client goes: watched for its close, with no deadline
            # (a client that stops reading meets body_timeout while sending).
            conn.state = STREAMING
            self.deadlines.clear(conn)
            self._watch(conn, READABLE)
            if self.protocol.pump(conn):
                self._proceed(conn, STREAM)
        elif outcome is LINGER:
            self._linger(conn, time.monotonic() + LINGER_TIMEOUT)
        else:
            self._close(conn)

    def call_soon(self, function, *args):
        """Run ``function(*args)`` in the loop's thread, in this pass or the next; from any thread."""
        self._calls.append((function, args))
        if threading.get_ident() != self._ident:
            self._wake()

    def call_later(self, delay, function, *args):
        """Run ``function(*args)`` in the loop's thread once ``delay`` seconds have passed;
        from the loop's thread only (the deadlines are its own).  There is no cancel: a
        call that is no longer wanted finds so when it runs."""
        self.deadlines.set(Timer(function, args), time.monotonic() + delay)

    def resume(self, conn, outcome):
        """Go on with a connection the protocol has more for (a stream it queued to)."""
        if conn.state is STREAMING:
            self._proceed(conn, outcome)

    def _send_queued(self):
        """At the end of a pass: send every connection's queued answers (those sent whole
        wait for their next request from this moment: one clock reading a pass)."""
        unsent = self._unsent
        if unsent:
            now = time.monotonic()
            while unsent:
                self._on_writable(unsent.pop(), now)

    def _on_writable(self, conn, now=None):
        if conn.state is not SENDING:
            return                       # closed meanwhile
        try:
            done = conn.flush()
        except OSError as exc:
            self._failed(conn.peer, exc, 'sending to')
            self._close(conn)
            return
        if not done:
            # The client is not reading: wait until it does, or for body_timeout.
            self._watch(conn, WRITABLE)
            self.deadlines.set(conn, time.monotonic() + self.protocol.body_timeout)
            return
        conn.state = WAITING
        outcome, conn.then = conn.then, None
        if outcome is IDLE:
            self._wait_read(conn, now or time.monotonic(), True)
            return
        if outcome is READ:
            if conn.reader.release():       # nothing more came: wait for the next request
                self._wait_read(conn, time.monotonic(), True)
                return
            outcome = self._advance(conn)   # pipelined requests waited for the send
        self._proceed(conn, outcome)

    # -- idle TLS connections' memory ------------------------------------------------

    def _count_idle(self, conn, grown):
        """Count a TLS connection gone idle whose OpenSSL buffers hold ``grown`` bytes (its
        BIOs keep what its largest receive or answer needed).  Past the budget, the
        connection idle longest is closed (RFC 9112 section 9.5: a server may close an
        idle connection at any time; it asked for nothing), never this one: the budget
        is passed by one connection's at most.

        One that became active is not taken out then (no cost on every request's path):
        it goes back to the end when it idles again, and out of the count if it comes
        first while still busy."""
        counted = self._grown
        if conn.counted:
            counted.move_to_end(conn)
            self._grown_bytes -= conn.counted
        else:
            counted[conn] = None
        conn.counted = grown
        self._grown_bytes += grown
        while self._grown_bytes > self._idle_budget:
            oldest = next(iter(counted))
            if oldest is conn:
                break
            if (oldest.state is WAITING and oldest.head_since is None
                    and not oldest.tls.pending()):
                self._close(oldest)       # idle: nothing buffered, nothing held by TLS
            else:
                self._uncount(oldest)     # busy since: counted again when it idles

    def _uncount(self, conn):
        """Out of the count: busy again, or closing."""
        del self._grown[conn]
        self._grown_bytes -= conn.counted
        conn.counted = 0

    # -- the pool ---------------------------------------------------------------------

    def _submit(self, conn):
        """Give the connection's work to a free thread, or queue it for one."""
        self._watch(conn, 0)
        if not self._free:
            conn.state = QUEUED
            self._turns.append(conn)
            if conn.reads_body:
                self.deadlines.set(conn, time.monotonic() + self.protocol.body_timeout)
            else:
                self.deadlines.clear(conn)     # the client waits for us: no deadline
            return
        conn.state = BUSY
        self.deadlines.clear(conn)     # the pool thread's socket timeouts take over
        try:
            conn.to_pool(self.protocol)
        except OSError as exc:
            self._failed(conn.peer, exc, 'handing to the pool')
            self._close(conn)
            return
        self._free -= 1
        self._jobs.put(conn)

    def _next_turns(self):
        """Give freed threads to the connections waiting longest.

        Body work whose client has sent nothing since it was queued, and owes more,
        gets none: a thread's stall timeout would run from when it took it, so a
        client silent since just before its deadline in the loop would be
        answered (408) up to a whole body_timeout late, and hold the thread
        meanwhile.  It waits in the loop on the deadline it has, as a body not
        begun does, and queues again once its bytes come.
        """
        while self._free and self._turns:
            conn = self._turns.popleft()
            if conn.state is not QUEUED:
                continue
            if conn.reads_body and self._unread(conn) is None and self.protocol.needs_more(conn):
                conn.state = AWAITING_BODY
                self._watch(conn, READABLE)
                continue
            self._submit(conn)

    def _unread(self, conn):
        """What the client of body work waiting in the loop sent that the loop has not
        read: True (bytes, in the socket or held by TLS), None (nothing yet: what it
        sent is in our buffer), or False (it closed, or the socket failed: a thread's
        read says which)."""
        if conn.tls is not None and conn.tls.pending():
            return True          # here already, held by TLS: the thread will read it
        try:
            return bool(conn.raw.recv(1, socket.MSG_PEEK))   # b'': it closed
        except BlockingIOError:
            return None
        except OSError as exc:
            self._failed(conn.peer, exc, 'peeking at')
            return False

    def _work(self):
        """A pool thread: run connections' blocking work, give them back to the loop."""
        while True:
            conn = self._jobs.get()
            if conn is None:
                return
            job, conn.job = conn.job, None
            try:
                try:
                    outcome = job()
                finally:
                    job.close()     # sent or not, what it held is let go of here
            except Exception as exc:
                # The protocol answers for its own exchanges (HTTPServer logs and
                # records each one); what escapes it is said here.
                self._failed(conn.peer, exc, 'serving')
                outcome = CLOSE
            if outcome is not CLOSE:
                try:
                    conn.to_loop()
                except OSError as exc:
                    self._failed(conn.peer, exc, 'taking back')
                    outcome = CLOSE
            self._returned.append((conn, outcome))
            self._wake()
            # A thread waiting for work holds no connection: a closed one (its TLS
            # buffers) goes as soon as the loop lets it go.
            conn = job = None

    def _wake(self):
        try:
            self._wake_w.send(b'\0')
        except (BlockingIOError, AttributeError, OSError):
            # Already awake (its buffer is full), not started, or stopped: our own
            # socket pair, no peer's, and nothing waits for the wake-up then.
            pass

    def _take_returns(self):
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        if self._returned:
            # A new turn (files.Held.holds): what a thread did before it gave a connection
            # back (a PUT, a DELETE) may be newer than this turn's stat of that file, and
            # a request pipelined after it must see it (test_review19).
            self.turn += 1
        while self._returned:
            conn, outcome = self._returned.popleft()
            self._free += 1
            conn.state = WAITING
            if conn.cut:
                outcome = CLOSE
            elif outcome is READ and conn.reader.buffered:
                outcome = self._advance(conn)    # the next request came with this one
            self._proceed(conn, outcome)
        self._next_turns()

    # -- closing ----------------------------------------------------------------------

    @staticmethod
    def _first_bytes(conn):
        """A plain port's new connection's first bytes, peeked (whether they begin a TLS
        hello), b'' at its end, or None while none came."""
        try:
            return conn.raw.recv(2, socket.MSG_PEEK)
        except BlockingIOError:
            return None
        except OSError:
            return b''        # the read that follows meets it, and says so

    def _linger(self, conn, deadline):
        """Close without destroying our own answer (RFC 9112 section 9.6).

        The client may still be sending what we refused; closing with its bytes
        unread makes the kernel send a reset, which can discard our response
        before the client reads it.  So: FIN first, then read and drop what
        still comes, until ``deadline`` and within MAX_LINGER bytes.
        """
        conn.state = LINGERING
        if conn.tls is not None:
            conn.tls.unwrap()    # close_notify, as far as the socket takes it now
            conn.tls = None      # what still comes is dropped unread, ciphertext or not
        try:
            conn.raw.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._failed(conn.peer, exc, 'lingering with')
            self._close(conn)
            return
        self._watch(conn, READABLE)
        self.deadlines.set(conn, deadline)

    def _drain(self, conn):
        recv_into, scratch = conn.raw.recv_into, self._scratch
        try:
            while True:
                got = recv_into(scratch)
                conn.lingered += got
                if not got or conn.lingered > MAX_LINGER:
                    break
        except BlockingIOError:
            return
        except OSError as exc:
            self._failed(conn.peer, exc, 'draining')
        self._close(conn)

    def _close(self, conn):
        state = conn.state
        if state is CLOSED:
            return
        self.protocol.closed(conn)
        job, conn.job = conn.job, None
        if job is not None:
            job.close()        # never run: what it held for its answer goes with it
        self._watch(conn, 0)
        conn.state = CLOSED
        self.deadlines.forget(conn)
        self.connections.discard(conn)
        self._refusing.discard(conn)
        if conn.silent:
            self._silent.pop(conn, None)
        if conn.counted:
            self._uncount(conn)
        tls = conn.tls
        if (tls is not None and state is not HANDSHAKE and tls.gettimeout() == 0.0
                and self.protocol.close_notify_at_close):
            tls.unwrap()        # close_notify if the socket takes it now; never a wait
        try:
            conn.sock.close()
        except OSError as exc:
            self._failed(conn.peer, exc, 'closing')
        if conn.sock is not conn.raw:
            # OpenSSL's buffers (~330 KiB after an upload) go now, not when the
            # deadline heap lets the connection go (up to half its entries may be stale).
            conn.plain()
        # Its deadline entry may hold it until the lazy heap drops the entry: the
        # buffer (a body's reader grows it to 128 KiB or more) goes now, not then.
        conn.reader.release()
        if self._paused and not self.stopping.is_set():
            self._paused = False
            self._poller.register(self.sock, READABLE, _ACCEPT)

    def _failed(self, peer, exc, doing):
        """In an ``except`` block: the peer's going away (errors.peer_gone) says nothing
        more; any other error is ours, and logged with its traceback."""
        if not peer_gone(exc):
            log_failure(f'{self.name}: error {doing} {peer[0]}:{peer[1]}')
        elif isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError):
            # A client that broke TLS (an alert, a record failing its check) outside an
            # exchange the protocol logs: one line, as a failed handshake's, not none.
            say_soon(f'{self.name}: TLS with {peer[0]}:{peer[1]} broken: {failure_reason(exc)}',
                     err=True)

    # -- poller and deadlines ---------------------------------------------------------

    def _watch(self, conn, events):
        if events == conn.events:
            return
        if not conn.events:
            self._poller.register(conn.raw, events, conn)
        elif not events:
            self._poller.unregister(conn.raw)
        else:
            self._poller.modify(conn.raw, events)
        conn.events = events

    def _expire(self, now):
        """Every connection whose wait ran out: answered (or said) by the protocol, closed;
        and every call_later that is due, made."""
        for conn in self.deadlines.due(now):
            if type(conn) is Timer:
                try:
                    conn.function(*conn.args)
                except Exception:
                    log_failure(f'{self.name}: error in a timed call')
                continue
            if conn.state is CLOSED or conn.state is BUSY:
                continue
            if conn.state is HANDSHAKE and conn.tls.plain_http():
                # Plain bytes too few for OpenSSL to refuse (a 'G', then nothing):
                # the same answer in clear as a whole plain request gets.
                self._handshake_failed(conn, None)
                self._send_queued()     # this pass has sent its queue already
                continue
            if conn.state is HANDSHAKE and conn.tls.first:
                say_soon(f'{self.name}: TLS handshake with {conn.peer[0]}:{conn.peer[1]} not '
                         f'finished within {self.protocol.head_timeout:g} s', err=True)
            if conn.state is QUEUED and (self._unread(conn)
                                         or not self.protocol.needs_more(conn)):
                self.deadlines.set(conn, now + self.protocol.body_timeout)
                continue
            if conn.state is AWAITING_BODY or conn.state is QUEUED or conn.state is WAITING:
                # A message begun and not finished in time, or an idle connection:
                # the protocol answers (or logs), once, as far as the socket takes it.
                try:
                    self.protocol.expired(conn)
                    conn.flush()
                except Exception as exc:
                    self._failed(conn.peer, exc, 'timing out')
            self._close(conn)

    # -- stopping ---------------------------------------------------------------------

    def _begin_stop(self, now):
        self._stop_begun = True
        if not self._paused:
            self._poller.unregister(self.sock)
        self.sock.close()
        for conn in list(self.connections):
            if (conn.state is WAITING and not conn.reader.buffered or conn.state is STREAMING
                    or conn.state is HANDSHAKE):
                self._close(conn)
        for conn in list(self._refusing):
            self._close(conn)
        return now + self._grace

    def _stopped(self, now, stop_at):
        """Whether the loop may end: nothing left, or the grace (and a second) is over."""
        if not self.connections:
            return True
        if now < stop_at:
            return False
        for conn in list(self.connections):
            if conn.state is BUSY:
                if not conn.cut:
                    conn.cut = True
                    try:
                        conn.raw.shutdown(socket.SHUT_RDWR)   # its blocked recv returns
                    except OSError as exc:
                        self._failed(conn.peer, exc, 'cutting')
            else:
                self._close(conn)
        return now >= stop_at + 1.0
