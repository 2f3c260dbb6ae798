"""Listening sockets: one ``bind`` makes every one, and says in a line why it could not."""

import errno
import socket

from .limits import LISTEN_BACKLOG


class StartupError(Exception):
    """A server could not start; the message is one line for the user.  ``taken``: the
    port is in use, and the command line that chose it may say which option moves it."""

    def __init__(self, message, taken=False):
        super().__init__(message)
        self.taken = taken


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
                raise cannot_listen(host, port, exc) from None
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
        raise cannot_listen(host, port, exc) from None
    return sock


def cannot_listen(host, port, exc):
    """Why a port cannot be listened on, in one line, with what to do when it is taken."""
    taken = exc.errno == errno.EADDRINUSE
    hint = ' (another server holds it: stop it, or choose another port)' if taken else ''
    return StartupError(f'cannot listen on {host} port {port}: {exc.strerror}{hint}', taken)
