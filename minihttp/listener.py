"""Listening sockets, and running servers until a signal: in one process, or in workers.

``bind`` makes every listening socket.  The HTTP server and the block server
each wait in an event loop (minihttp.eventloop), whose face (``address``,
``name``, ``start()``, ``stop(grace)``) is all that ``run_until_signalled``
and ``run_workers`` need.
"""

import errno
import os
import signal
import socket
import sys
import threading
import traceback

from .limits import LISTEN_BACKLOG, SHUTDOWN_GRACE
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
