"""The command line: `minihttp serve` and `minihttp blocks`, one argparse parser.

Every mistake a user can make here ends in one line naming the problem and
exit status 2, never a traceback.
"""

import argparse
import getpass
import ipaddress
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import stat
import sys

from . import blocks, tls
from .blockserver import BlockServer
from .digests import ALGORITHMS, DEFAULT, serialize
from .app import PAGE_URL, App, Redirect
from .browsers import Browsers, normal_host, normal_origin
from .limits import (BLOCK_CLIENT_WAIT, BLOCK_PORT, BLOCK_THREADS, BODY_TIMEOUT, EXPIRE_AFTER,
                     CLIENT_BLOCK_SIZE, DOCUMENT_ROOT, HEAD_TIMEOUT, HOST, HTTP_PORT,
                     KEEPALIVE_TIMEOUT, MAX_BLOCK, MAX_BLOCK_CONNECTIONS, MAX_CONNECTIONS,
                     MAX_UPLOAD, MIN_RATE, POOL_THREADS, RATE_WINDOW, SHUTDOWN_GRACE,
                     SPARE_DESCRIPTORS)
from .eventloop import EventLoop
from .hub import Hub
from .processes import run_until_signalled, run_workers
from .sockets import StartupError
from .records import FramingLog
from .report import Progress, say
from .server import HTTPServer

_UNITS = {'': 1, 'k': 1 << 10, 'm': 1 << 20, 'g': 1 << 30}


def size(text):
    """A byte count: 65536, 64K, 64KiB, 1M, 1G (binary units)."""
    match = re.fullmatch(r'\s*+([0-9]++)\s*+([kmg]?+)(?:i?b)?+\s*+', text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f'not a size: {text!r} (try 65536, 64K or 1M)')
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def port(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f'not a port number: {text!r} (0-65535)')
    return value


def workers(text):
    """A number of worker processes, or 'auto': one per CPU."""
    if text == 'auto':
        return os.cpu_count() or 1
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a number of processes: {text!r} '
                                         '(a number, or auto)') from None


def allowed_origin(text):
    """A page's origin for --allow-origin: scheme://host[:port]."""
    try:
        return normal_origin(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def allowed_host(text):
    """A host name or address for --allow-host, without a port."""
    try:
        return normal_host(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_size(text):
    value = size(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f'must be more than 0: {text!r}')
    return value


def positive_seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float('inf'):
        raise argparse.ArgumentTypeError(f'not a number of seconds above 0: {text!r}')
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog='minihttp',
        description='A small, strict HTTP/1.1 server that makes message framing visible, '
                    'and the block transport of Foundations of Python Network Programming, '
                    'Listing 5-2. With no command, runs "serve".')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')

    serve = commands.add_parser(
        'serve', help='run the servers (the default command)',
        description='Run the servers until Ctrl-C or SIGTERM.')
    add_serve_options(serve)

    blk = commands.add_parser(
        'blocks', help='the block server, or with -c the block client',
        description='Transmit and receive length-prefixed blocks over TCP (Listing 5-2): '
                    'a 4-byte big-endian length, the payload; an empty block ends the stream.')
    blk.add_argument('hostname', nargs='?', default=HOST,
                     help='IP address or hostname (default: %(default)s)')
    blk.add_argument('-c', action='store_true', help='run as the client')
    blk.add_argument('-p', type=port, metavar='PORT', default=BLOCK_PORT,
                     help='TCP port number (default: %(default)s)')
    blk.add_argument('--digest', action='store_true',
                     help='print the sha-256 digest of the payloads in RFC 9530 form '
                          '(sha-256=:base64:): the client of what it sent, the server of '
                          'each stream it received, for a person to compare')
    client = blk.add_argument_group('client options (with -c)')
    client.add_argument('--file', metavar='PATH',
                        help="send this file (or '-' for standard input) instead of the book's "
                             'three lines')
    client.add_argument('--tls', action='store_true',
                        help='speak TLS to the server (it runs with --tls-cert)')
    client.add_argument('--cafile', metavar='FILE',
                        help='with --tls: trust the certificates in FILE (PEM) instead of '
                             "the system's")
    client.add_argument('--block-size', type=positive_size, default=CLIENT_BLOCK_SIZE,
                        metavar='SIZE', help='bytes per block with --file (default: 64K)')
    server = blk.add_argument_group('server options')
    add_tls_options(server)
    server.add_argument('--max-block', type=size, default=MAX_BLOCK, metavar='SIZE',
                        help='refuse a block announced larger than this (default: 64M)')
    server.add_argument('--save', metavar='DIR',
                        help="save each connection's payload to a file in DIR (made if "
                             'missing), complete streams only')
    server.add_argument('--trace', action='store_true',
                        help="print each connection as it is accepted and each block as it "
                             "arrives ('Block says: ...'), besides each stream's last line")
    server.add_argument('--quiet', action='store_true',
                        help='print nothing for a stream that ends whole (only failures)')
    server.add_argument('--max-connections', type=int, default=MAX_BLOCK_CONNECTIONS,
                        metavar='N', help='streams held at once; beyond them a connection is '
                                          'closed (default: %(default)s)')
    server.add_argument('--idle-timeout', type=positive_seconds, default=KEEPALIVE_TIMEOUT,
                        metavar='SECONDS', help='close a stream that begins no block for this '
                                                'long (default: %(default)s)')
    server.add_argument('--head-timeout', type=positive_seconds, default=HEAD_TIMEOUT,
                        metavar='SECONDS', help='close a stream whose block header is not '
                                                'complete this long after its first byte '
                                                '(default: %(default)s)')
    server.add_argument('--body-timeout', type=positive_seconds, default=BODY_TIMEOUT,
                        metavar='SECONDS', help='close a stream whose payload stalls this long '
                                                '(default: %(default)s)')
    add_pace_options(server)
    server.add_argument('--grace', type=float, default=SHUTDOWN_GRACE, metavar='SECONDS',
                        help='on Ctrl-C or SIGTERM, how long open streams may go on '
                             '(default: %(default)s)')
    return parser


def add_tls_options(group):
    group.add_argument('--tls-cert', metavar='FILE',
                       help='serve TLS with this certificate (PEM, the chain after it)')
    group.add_argument('--tls-key', metavar='FILE',
                       help="the certificate's private key (PEM); an encrypted one's password "
                            'is asked for, or read from --tls-password-file')
    group.add_argument('--tls-password-file', metavar='FILE',
                       help="the encrypted key's password: the file's first line")


def tls_context(args):
    """The server's ssl context for --tls-cert and --tls-key (None without them);
    TLSConfigError naming the file for anything wrong."""
    if args.tls_cert is None and args.tls_key is None:
        if args.tls_password_file is not None:
            raise tls.TLSConfigError('--tls-password-file needs --tls-cert and --tls-key')
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise tls.TLSConfigError('--tls-cert and --tls-key go together')

    def ask():
        # Asked only for an encrypted key with no password file.
        if not sys.stdin.isatty():
            raise tls.TLSConfigError(f'key file {args.tls_key}: is encrypted, and there is no '
                                     'terminal to ask for its password: give '
                                     '--tls-password-file')
        try:
            return getpass.getpass(f'password for {args.tls_key}: ')
        except EOFError:            # Ctrl-D at the prompt: a traceback said nothing
            raise tls.TLSConfigError(f'key file {args.tls_key}: is encrypted, and no '
                                     'password was typed') from None
    return tls.server_context(args.tls_cert, args.tls_key, args.tls_password_file, ask)


def add_serve_options(parser):
    parser.add_argument('--host', default=HOST,
                        help='address or name to listen on, IPv4 or IPv6 (default: %(default)s)')
    parser.add_argument('--port', type=port, default=HTTP_PORT,
                        help='HTTP port, 0 for any free one (default: %(default)s)')
    parser.add_argument('--root', metavar='DIR',
                        help=f'directory of files to serve (default: ./{DOCUMENT_ROOT} if there '
                             'is one, as in the repository, else the current directory); the '
                             f'demo page is at {PAGE_URL} whatever the root')
    parser.add_argument('--block-port', type=port, default=BLOCK_PORT, metavar='PORT',
                        help='port of the block server, 0 to turn it off (default: %(default)s)')
    parser.add_argument('--redirect-port', type=port, metavar='PORT',
                        help='with --tls-cert: also listen for plain HTTP on PORT, answering '
                             'every request with 308 to the same path over HTTPS')
    parser.add_argument('--uploads', metavar='DIR',
                        help='where uploads are stored, served under /uploads/; made if '
                             'missing (default: ROOT/uploads when ROOT is writable, else '
                             '$XDG_DATA_HOME/minihttp/uploads)')
    parser.add_argument('--token', default=os.environ.get('MINIHTTP_TOKEN'),
                        help='require "Authorization: Bearer TOKEN" for PUT, POST and DELETE '
                             '(default: $MINIHTTP_TOKEN; without one, writes are open on '
                             'loopback and refused beyond it)')
    parser.add_argument('--allow-origin', type=allowed_origin, action='append', default=[],
                        metavar='URL',
                        help='a page of this origin (scheme://host[:port]) may also PUT, POST '
                             "and DELETE; other pages' are refused with 403 (repeatable)")
    parser.add_argument('--allow-host', type=allowed_host, action='append', default=[],
                        metavar='NAME',
                        help='answer requests for this host name too; others get 421. On '
                             'loopback the loopback names and --host are always answered; '
                             'beyond it, any name unless this is given (repeatable)')
    tls_group = parser.add_argument_group('TLS (both ports speak it)')
    add_tls_options(tls_group)
    parser.add_argument('--trace', action='store_true',
                        help='print how each message was framed, and each block as it arrives')
    parser.add_argument('--quiet', action='store_true',
                        help='no line for a block stream that ends whole (failures are '
                             'always said); the access log is --no-access-log')
    parser.add_argument('--no-access-log', dest='access_log', action='store_false',
                        help='no access log line per request (the log says why each 4xx/5xx '
                             'was answered and how each abort ended)')
    limits = parser.add_argument_group('limits')
    limits.add_argument('--max-upload', type=size, default=MAX_UPLOAD, metavar='SIZE',
                        help='largest upload, 413 beyond it (default: 1G)')
    limits.add_argument('--partial-expiry', type=positive_seconds, default=EXPIRE_AFTER,
                        metavar='SECONDS',
                        help='a resumable upload not completed this long after its creation '
                             'is removed, with its bytes (default: %(default)s seconds, a day)')
    limits.add_argument('--max-connections', type=int, default=MAX_CONNECTIONS, metavar='N',
                        help='HTTP connections held at once, per process; beyond them a new '
                             'one gets 503 and is closed (default: %(default)s)')
    limits.add_argument('--threads', type=int, default=POOL_THREADS, metavar='N',
                        help='threads per process for request bodies, uploads and large files; '
                             'more such requests wait their turn (default: %(default)s)')
    limits.add_argument('--workers', type=workers, default=1, metavar='N',
                        help='processes serving HTTP, each with its event loop and threads; '
                             f'"auto" is one per CPU ({os.cpu_count()} here) '
                             '(default: %(default)s)')
    limits.add_argument('--keepalive-timeout', type=float, default=KEEPALIVE_TIMEOUT,
                        metavar='SECONDS', help='close a connection idle this long '
                                                '(default: %(default)s)')
    limits.add_argument('--head-timeout', type=float, default=HEAD_TIMEOUT, metavar='SECONDS',
                        help='408 for a request head not complete this long after its '
                             'first byte (default: %(default)s)')
    limits.add_argument('--body-timeout', type=float, default=BODY_TIMEOUT, metavar='SECONDS',
                        help='drop a connection whose body stalls this long '
                             '(default: %(default)s)')
    add_pace_options(limits)
    limits.add_argument('--grace', type=float, default=SHUTDOWN_GRACE, metavar='SECONDS',
                        help='on Ctrl-C or SIGTERM, how long in-flight requests may go on '
                             '(default: %(default)s)')


def add_pace_options(group):
    """The minimum transfer rate of a pool thread's peer, for `serve` and `blocks` alike."""
    group.add_argument('--min-rate', type=size, default=MIN_RATE, metavar='BYTES',
                       help='cut a request body, a response or a block payload on a pool '
                            'thread that moves fewer bytes a second than this, averaged over '
                            '--rate-window; 0 turns the rule off (default: 1K)')
    group.add_argument('--rate-window', type=positive_seconds, default=RATE_WINDOW,
                       metavar='SECONDS', help='the window over which --min-rate is judged '
                                               '(default: %(default)s)')


def is_loopback(host):
    """Whether every address the host name resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    return all(ipaddress.ip_address(info[4][0].split('%')[0]).is_loopback for info in infos)


def raise_descriptor_limit(wanted):
    """Raise this process's open-file limit towards ``wanted``; return the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def fit_descriptors(held, connections):
    """Raise the open-file limit to hold ``held`` descriptors (and spares); the number of
    ``connections`` (part of ``held``) that fit, said in the log when fewer."""
    room = raise_descriptor_limit(held + SPARE_DESCRIPTORS)
    if room >= held + SPARE_DESCRIPTORS:
        return connections
    fitted = max(1, room - SPARE_DESCRIPTORS - (held - connections))
    say(f'minihttp: this process may open {room} files (RLIMIT_NOFILE): serving at most '
        f'{fitted} connections, not {connections}', err=True)
    return fitted


def fail(message, status=2):
    """Say what went wrong in one line; the exit status (2: a usage error)."""
    say(f'minihttp: {message}', err=True)
    return status


def moved_by(exc, option, make=False):
    """A StartupError's line, naming the option that moves a port in use (and, for
    serve, how to give it to make run, which takes its options in ARGS)."""
    if not exc.taken:
        return str(exc)
    how = f"{option} PORT, in make run ARGS='{option} PORT'" if make else f'{option} PORT'
    return f'{exc}: {how} (--help lists every option)'


def address(host, port):
    """host:port as a person types it: an IPv6 address in brackets."""
    return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'


def make_directory(path):
    """One rule for every directory written to (--save, --uploads, ROOT/uploads): made
    when missing, with its parents; whether it was, for the start-up lines to say
    (a typo in a path shows there).  OSError when it cannot be."""
    if os.path.isdir(path):
        return False
    os.makedirs(path, exist_ok=True)
    return True


def directory_line(what, path, created):
    return f'{what} {os.path.abspath(path)}{" (created now)" if created else ""}'


def default_root():
    """The root without --root: ./www when there is one (the repository's demo page,
    or a project's public folder, as npm's http-server takes ./public), else the
    current folder, as `python -m http.server` serves."""
    return DOCUMENT_ROOT if os.path.isdir(DOCUMENT_ROOT) else os.curdir


def default_uploads(root):
    """Where uploads go without --uploads: ROOT/uploads when it is (or can be made) a
    writable directory, as the demo expects; else a directory of the user's own
    ($XDG_DATA_HOME/minihttp/uploads), so that `minihttp` run in a read-only
    folder still takes uploads."""
    inside = os.path.join(root, 'uploads')
    if os.path.isdir(inside):
        usable = os.access(inside, os.W_OK | os.X_OK)
    else:
        usable = not os.path.lexists(inside) and os.access(root, os.W_OK | os.X_OK)
    if usable:
        return inside
    data = os.environ.get('XDG_DATA_HOME') or os.path.join(os.path.expanduser('~'), '.local',
                                                             'share')
    return os.path.join(data, 'minihttp', 'uploads')


def run_blocks(args):
    if args.c:
        return run_block_client(args)
    created = False
    if args.save:
        try:
            created = make_directory(args.save)
        except OSError as exc:
            return fail(f'--save: cannot make {exc.filename}: {exc.strerror}')
    if args.max_connections < 1:
        return fail('--max-connections must be at least 1')
    try:
        context = tls_context(args)
    except tls.TLSConfigError as exc:
        return fail(str(exc))
    held = args.max_connections + BLOCK_THREADS     # streams, and a file for each saving one
    args.max_connections = fit_descriptors(held, args.max_connections)
    handler = BlockServer(
        max_block=args.max_block, save_dir=args.save, quiet=args.quiet, trace=args.trace,
        keepalive_timeout=args.idle_timeout, head_timeout=args.head_timeout,
        body_timeout=args.body_timeout, min_rate=args.min_rate, rate_window=args.rate_window,
        max_connections=args.max_connections, digest=args.digest)
    try:
        listener = EventLoop(args.hostname, args.p, handler, name='blocks',
                             threads=BLOCK_THREADS, max_connections=args.max_connections,
                             context=context)
    except StartupError as exc:
        return fail(moved_by(exc, '-p'))
    host, bound = listener.address
    say(f'block server listening on {address(host, bound)}{" (TLS)" if context else ""}')
    if context:
        say(f'TLS with {tls.certificate_facts(args.tls_cert).describe()}')
    if args.save:
        say(directory_line('complete streams saved in', args.save, created))
    client_tls = f' --tls --cafile {args.tls_cert}' if context else ''
    say(f'Send it blocks from another window: {python_command()} -m minihttp blocks -c '
        f'-p {bound}{client_tls} {host}')
    run_until_signalled([listener], args.grace)
    return 0


def python_command():
    """How to run this Python from a shell: python3 when that is this one."""
    found = shutil.which('python3')
    if found and os.path.realpath(found) == os.path.realpath(sys.executable):
        return 'python3'
    return sys.executable


def run_block_client(args):
    if args.cafile is not None and not args.tls:
        return fail('--cafile goes with --tls')
    try:
        context = tls.client_context(args.cafile) if args.tls else None
    except tls.TLSConfigError as exc:
        return fail(str(exc))
    try:
        source = None if args.file is None else blocks.open_source(args.file)
    except OSError as exc:
        return fail(f'cannot read {args.file}: {exc.strerror}')
    try:
        sock = socket.create_connection((args.hostname, args.p))
        if context is not None:
            # TLSConnection, not SSLSocket: put_block gathers with sendmsg.
            plain, sock = sock, tls.TLSConnection(sock, context, server_side=False,
                                                  server_hostname=args.hostname)
            try:
                sock.do_handshake()
            except BaseException:
                plain.close()
                raise
    except socket.gaierror as exc:
        return fail(f'cannot resolve host {args.hostname!r}: {exc.strerror}')
    except ssl.SSLError as exc:
        why = getattr(exc, 'verify_message', None) or exc.reason or exc
        return fail(f'TLS with {args.hostname} port {args.p} failed: {why}', 1)
    except OSError as exc:
        return fail(f'cannot connect to {args.hostname} port {args.p}: '
                    f'{exc.strerror or exc}', 1)
    # A progress bar for a person watching a file go; nothing for a pipe or a log.
    progress = None
    if source is not None and sys.stderr.isatty():
        progress = Progress(file_size(source))
    hashing = ALGORITHMS[DEFAULT]() if args.digest else None
    try:
        with sock:
            sent = blocks.client(sock, source, args.block_size, progress, hashing)
            blocks.wait_for_close(sock, BLOCK_CLIENT_WAIT, half_close=context is None)
    except blocks.Refused as exc:
        return fail(f'{args.hostname} port {args.p}: {exc}', 1)
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM (main): a server's stop is its job done, a client's is not.
        # Status 1, as for a refused stream: `blocks -c --file F && rm F` must not go on.
        return fail(f'{args.hostname} port {args.p}: interrupted before the server said '
                    'the stream was kept', 1)
    except OSError as exc:
        return fail(f'connection to {args.hostname} port {args.p} broke: '
                    f'{exc.strerror or exc}: the server refused or cut the stream', 1)
    finally:
        if progress is not None:
            progress.done()
        if source is not None and source is not sys.stdin.buffer:
            source.close()
    say(f'Sent {sent} bytes and the empty block to {args.hostname} port {args.p}')
    if hashing is not None:
        say(serialize({DEFAULT: hashing.digest()}))
    return 0


def file_size(source):
    """The size of a regular file being sent, or None (a pipe, a terminal)."""
    try:
        st = os.fstat(source.fileno())
    except (OSError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def run_serve(args):
    if args.root is None:
        args.root = default_root()
    if not os.path.isdir(args.root):
        return fail(f'--root: no such directory: {args.root}')
    uploads = args.uploads or default_uploads(args.root)
    try:
        created = make_directory(uploads)
    except OSError as exc:
        return fail(f'--uploads: cannot make {exc.filename}: {exc.strerror}')
    if args.max_connections < 1:
        return fail('--max-connections must be at least 1')
    if args.workers < 1:
        return fail('--workers must be at least 1')
    if args.threads < 1:
        return fail('--threads must be at least 1')
    try:
        # Made before any worker is forked: each inherits it (a context holds no
        # connection state, and the key is read once, its password asked once).
        context = tls_context(args)
    except tls.TLSConfigError as exc:
        return fail(str(exc))
    if args.redirect_port and context is None:
        return fail('--redirect-port redirects to HTTPS: it needs --tls-cert and --tls-key')
    held = args.max_connections + args.threads + (
        MAX_BLOCK_CONNECTIONS + BLOCK_THREADS if args.block_port else 0)
    args.max_connections = fit_descriptors(held, args.max_connections)
    loopback = is_loopback(args.host)
    writes = bool(args.token) or loopback
    records = FramingLog()    # how each message was framed: --trace and GET /_framing
    # Which Host and Origin browsers may send: against DNS rebinding and foreign pages.
    browsers = Browsers(args.host, loopback, hosts=args.allow_host, origins=args.allow_origin,
                        scheme='http' if context is None else 'https')
    try:
        app = App(args.root, uploads, args.max_upload, token=args.token or None,
                  writes=writes, records=records, block_port=args.block_port or None,
                  browsers=browsers, partial_expiry=args.partial_expiry)
    except OSError as exc:
        return fail(f'--uploads: cannot use {exc.filename}: {exc.strerror}')
    http = HTTPServer(app, trace=args.trace, access_log=args.access_log,
                      keepalive_timeout=args.keepalive_timeout,
                      head_timeout=args.head_timeout, body_timeout=args.body_timeout,
                      min_rate=args.min_rate, rate_window=args.rate_window, records=records)
    listeners = []
    try:
        listeners.append(EventLoop(args.host, args.port, http, name='http', threads=args.threads,
                                   max_connections=args.max_connections,
                                   reuse_port=args.workers > 1, context=context))
        if args.block_port:
            # The same deadlines and minimum rate as HTTP's.
            block_server = BlockServer(
                quiet=args.quiet, trace=args.trace, records=records,
                keepalive_timeout=args.keepalive_timeout,
                head_timeout=args.head_timeout, body_timeout=args.body_timeout,
                min_rate=args.min_rate, rate_window=args.rate_window)
            listeners.append(EventLoop(args.host, args.block_port, block_server, name='blocks',
                                       threads=BLOCK_THREADS,
                                       max_connections=MAX_BLOCK_CONNECTIONS, context=context))
        if args.redirect_port:
            listeners.append(redirect_listener(args, listeners[0].address[1]))
    except StartupError as exc:
        for listener in listeners:
            listener.sock.close()
        return fail(moved_by(exc, '--block-port' if listeners else '--port', make=True))
    browsers.listening(listeners[0].address[1])
    banner(args, listeners, app, writes, created)
    if args.workers > 1:
        run_workers(listeners[0], listeners[1:], args.workers, args.grace,
                    hub=Hub(records, args.workers), reaped=app.store.sweep)
    else:
        run_until_signalled(listeners, args.grace)
    say('stopped')
    return 0


def redirect_listener(args, https_port):
    """--redirect-port: plain HTTP answering 308 to the HTTPS port, on the same loop
    machinery (its Host checked as the HTTPS port's is)."""
    browsers = Browsers(args.host, is_loopback(args.host), hosts=args.allow_host,
                        origins=args.allow_origin)
    fallback = 'localhost' if args.host in ('0.0.0.0', '::', '') else args.host
    app = Redirect(https_port, browsers, normal_host(fallback))
    http = HTTPServer(app, access_log=args.access_log, keepalive_timeout=args.keepalive_timeout,
                      head_timeout=args.head_timeout, body_timeout=args.body_timeout,
                      min_rate=args.min_rate, rate_window=args.rate_window)
    listener = EventLoop(args.host, args.redirect_port, http, name='redirect', threads=1,
                         max_connections=MAX_BLOCK_CONNECTIONS)
    browsers.listening(listener.address[1])
    return listener


def banner(args, listeners, app, writes, created):
    """What a person starting the server needs to know, one line each: where to point
    a browser and a block client, which folders are served and written, who may write."""
    http, *others = listeners
    redirect = others.pop() if args.redirect_port else None
    scheme = 'https' if args.tls_cert else 'http'
    url = f'{scheme}://{address(*http.address)}/'
    say(f'http server listening on {url}')
    if others:
        # Both ports speak TLS when it is on: a block client then needs --tls.
        say(f'block server listening on {address(*others[0].address)}'
            f'{" (TLS: blocks -c --tls)" if args.tls_cert else ""}')
    else:
        say('block server: off (--block-port 0)')
    if args.tls_cert:
        say(f'TLS with {tls.certificate_facts(args.tls_cert).describe()}')
    if redirect is not None:
        say(f'http://{address(*redirect.address)}/ redirects to {url}')
    say(f'serving files from {os.path.abspath(args.root)} at /; the demo page at '
        f'{url.rstrip("/")}{PAGE_URL}')
    say(directory_line('uploads stored in', app.store.directory, created)
        + ', served at /uploads/')
    if args.token:
        say('writes (PUT, POST, DELETE) need "Authorization: Bearer <token>"')
    elif writes:
        say('writes (PUT, POST, DELETE) are open: loopback only, no token')
    else:
        say(f'writes (PUT, POST, DELETE) are refused: {args.host} is reachable beyond '
            'loopback and no --token was given')


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in ('serve', 'blocks', '-h', '--help'):
        argv = ['serve', *argv]  # serve is the default command
    args = build_parser().parse_args(argv)
    # A supervisor may send SIGTERM as soon as it reads the listening line,
    # before run_until_signalled installs its handlers: until then SIGTERM
    # stops us as Ctrl-C does (exit 0), instead of killing us by the signal.
    # SIGINT too, even when we were started with it ignored (a shell's
    # background job): run_until_signalled obeys it, so the moments before
    # must not ignore it.
    previous = {sig: signal.signal(sig, signal.default_int_handler)
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.command == 'blocks':
            return run_blocks(args)
        return run_serve(args)
    except KeyboardInterrupt:
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
