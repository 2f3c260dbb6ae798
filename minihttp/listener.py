"""Listening sockets, a thread per connection for the block server, and a clean stop.

``bind`` makes every listening socket.  The block server is a Listener: a
block stream is one long pull-style read from its first block to the empty
one, so a thread per connection is what it needs, capped (a connection
beyond the cap is closed at once, with a line in the log).  The HTTP server
waits in an event loop instead (minihttp.eventloop), which has the same
face, so that ``run_until_signalled`` and ``run_workers`` drive both.
"""

import errno
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback

from .limits import LISTEN_BACKLOG, MAX_BLOCK_CONNECTIONS, SHUTDOWN_GRACE
from .report import say


class StartupError(Exception):
    """A server could not start; the message is one line for the user."""


def bind(host, port, backlog=LISTEN_BACKLOG, reuse_port=False, join=False):
    """A listening socket on (host, port); host may be IPv4, IPv6 or a name.

    With ``reuse_port``, other sockets with it may listen on the same port
    (SO_REUSEPORT, Linux): the kernel spreads new connections over them.
    Such a port is shared with any process of the same user that asks, so
    the first socket first checks that nobody listens there yet (another
    server started with --workers would otherwise silently get half of the
    connections); only ``join``, a worker's socket beside its parent's,
    expects the port taken.
    """
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                   0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f'cannot resolve host {host!r}: {exc.strerror}') from None
    except OverflowError:
        raise StartupError(f'port {port} is out of range (0-65535)') from None
    family, kind, proto, _, address = infos[0]
    if reuse_port and not join:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
            except OSError as exc:
                raise StartupError(in_use(host, port, exc)) from None
            address = probe.getsockname()    # port 0: the free port the probe was given
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and hasattr(socket, 'SO_REUSEPORT'):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise StartupError(in_use(host, port, exc)) from None
    return sock


def in_use(host, port, exc):
    """Why a port cannot be listened on, in one line, with what to do when it is taken."""
    hint = ' (another server holds it: stop it, or choose another port)' if (
        exc.errno == errno.EADDRINUSE) else ''
    return f'cannot listen on {host} port {port}: {exc.strerror}{hint}'


class Connection:
    """An accepted socket, with what the Listener needs to stop it politely."""

    def __init__(self, sock, peer, listener):
        self.sock = sock
        self.peer = peer
        self.listener = listener
        # True while the handler waits for the peer to start a new message:
        # a stopping server may cut such a connection at once, losing nothing.
        self.idle = False

    @property
    def stopping(self):
        return self.listener.stopping.is_set()

    def cut(self):
        """Shut the socket down so that a blocked recv returns at once."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Listener:
    """Accepts connections and runs ``handle(connection)`` in a thread for each."""

    def __init__(self, host, port, handle, *, name, max_connections=MAX_BLOCK_CONNECTIONS,
                 backlog=LISTEN_BACKLOG):
        self.sock = bind(host, port, backlog)
        # Non-blocking: when worker processes share this socket, the ones that
        # lose the race for a connection get EAGAIN instead of hanging in accept.
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()[:2]
        self.name = name
        self.handle = handle
        self.max_connections = max_connections
        self.stopping = threading.Event()
        self._active = set()
        self._changed = threading.Condition()
        self._wake_r = self._wake_w = None
        self._thread = None

    def start(self):
        # Made here, not in __init__: worker processes forked after the bind
        # share the listening socket but must each have a wake-up of their own.
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self.serve_forever, name=self.name, daemon=True)
        self._thread.start()

    def serve_forever(self):
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self.stopping.is_set():
                # stop() sets ``stopping`` before it wakes the selector: checked
                # after select, so a wake-up never falls through to a blocking accept.
                ready = sel.select()
                if self.stopping.is_set() or not ready:
                    break
                try:
                    sock, peer = self.sock.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                except OSError:  # the listening socket was closed under us
                    break
                with self._changed:
                    full = len(self._active) >= self.max_connections
                if full:
                    # A refusal the client sees at once (its connection closes),
                    # rather than a wait in the backlog with no end it can see.
                    sock.close()
                    say(f'{self.name}: refused {peer[0]}:{peer[1]}: '
                        f'{self.max_connections} connections are open', err=True)
                    continue
                sock.setblocking(True)   # connection threads do blocking I/O
                conn = Connection(sock, peer, self)
                with self._changed:
                    self._active.add(conn)
                threading.Thread(target=self._run, args=(conn,), daemon=True,
                                 name=f'{self.name} {peer[0]}:{peer[1]}').start()
        self.sock.close()

    def _run(self, conn):
        try:
            self.handle(conn)
        finally:
            # Counted out before the close: a client that saw this connection
            # end finds its place free.
            with self._changed:
                self._active.discard(conn)
                self._changed.notify_all()
            conn.sock.close()

    def stop(self, grace=SHUTDOWN_GRACE):
        """Stop accepting, let busy connections finish for ``grace`` seconds, then cut them."""
        self.stopping.set()
        if self._wake_w is not None:
            self._wake_w.send(b'x')
        with self._changed:
            self._changed.notify_all()
            for conn in list(self._active):
                if conn.idle:
                    conn.cut()
            deadline = time.monotonic() + grace
            while self._active and self._changed.wait(max(0.0, deadline - time.monotonic())):
                for conn in list(self._active):
                    if conn.idle:
                        conn.cut()
            for conn in list(self._active):
                conn.cut()
            # Cut connections end promptly; do not wait forever for a stuck one.
            self._changed.wait_for(lambda: not self._active, timeout=1.0)
        if self._thread is not None:
            self._thread.join(1.0)
            self._wake_r.close()
            self._wake_w.close()
        else:
            self.sock.close()


def run_until_signalled(listeners, grace=SHUTDOWN_GRACE):
    """Serve on every listener until SIGINT or SIGTERM, then stop them all."""
    received = []

    def on_signal(signum, frame):
        # No lock here: the handler runs in the main thread between two bytecodes,
        # possibly while that thread holds a lock, and an Event.set() would then
        # wait forever for the lock of the very wait it interrupted.
        received.append(signum)

    # The main thread sleeps in recv on a socket that the C-level signal
    # handler writes to (set_wakeup_fd): woken by the signal itself, no polling.
    wake_r, wake_w = socket.socketpair()
    wake_w.setblocking(False)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous_fd = signal.set_wakeup_fd(wake_w.fileno())
    try:
        for listener in listeners:
            listener.start()
        while not received:
            wake_r.recv(64)
    finally:
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        wake_r.close()
        wake_w.close()
        stoppers = [threading.Thread(target=l.stop, args=(grace,)) for l in listeners]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()


def run_workers(shared, others, workers, grace=SHUTDOWN_GRACE, hub=None):
    """Serve ``shared`` from ``workers`` forked processes until SIGINT or SIGTERM.

    Each worker accepts from a listening socket of its own on the one port
    (the first keeps the one bound here; see EventLoop.listen_apart) and runs
    its own threads: Python runs one thread at a time per process, so under
    many small requests the threads of one process mostly wait for each
    other; processes do not.  This process serves ``others`` meanwhile, and
    on a signal stops the workers and waits for them.  ``hub`` (a
    minihttp.hub.Hub) connects the workers' records to this process.
    """
    children = []
    for index in range(workers):
        pid = os.fork()
        if pid == 0:                      # a worker
            code = 1
            try:
                for listener in others:
                    listener.sock.close()
                if hub is not None:
                    hub.in_worker(index)
                if index:
                    shared.listen_apart()     # the first keeps the parent's socket
                run_until_signalled([shared], grace)
                code = 0
            except KeyboardInterrupt:     # stopped before its handlers were in place
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)
    say(f'{shared.name} served by {workers} worker processes: {" ".join(map(str, children))}')
    shared.sock.close()
    if hub is not None:
        hub.in_parent()
    try:
        run_until_signalled(others, grace)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in children:
            os.waitpid(pid, 0)
