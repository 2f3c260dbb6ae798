"""minihttp among its peers: nginx, uvicorn, http.server; many idle and hostile clients.

    python -m bench peers [--only SCENARIO...] [--duration S] [--rounds N] [...]

Every server is a child process on 127.0.0.1, serving one temporary root
(removed at the end), with its access log on, written to a file: minihttp
without --quiet, nginx with access_log, uvicorn with its access logger,
http.server with its log_message.  Scenarios (``--only`` picks some):

small      GET of a 1 KiB file with keep-alive, by ``wrk -t1 --latency``, with 64
           connections and with 1, each server loaded in turn for ``--rounds``
           rounds (medians count): minihttp (one process) against uvicorn with
           httptools (target 3x) and nginx with 2 workers (0.5x); minihttp
           --workers 2 against nginx (1.0x); with -c1, minihttp against nginx
           (1.0x) and p99 latencies reported.  uvicorn with h11 and http.server
           are there for context.  uvicorn serves an ASGI app of ours doing the
           work minihttp does for a small file: one os.stat per request, the
           bytes from memory.
idle       one minihttp process holds 10,000 idle keep-alive connections (each
           opened and answered once, by client processes of ours), while 1,000
           GETs arrive on fresh connections: all answered, p99 under 20 ms,
           server RSS under 150 MiB; RSS per idle connection reported.
hostile    600 hostile connections (200 dripping a head a byte every 0.5 s, 200
           silent, 200 stalling a PUT body) while 200 GETs arrive on fresh
           connections: all answered, p99 under 50 ms; each hostile one answered
           or closed by its deadline (minihttp runs with --head-timeout 2
           --keepalive-timeout 3 --body-timeout 4) plus a slack; threads and
           descriptors back to where they were.
transfers  a 200 MiB download against nginx (1.0x) with curl -o /dev/null; a 1 GiB
           chunked upload with curl -T against nginx's WebDAV PUT (1.0x) and
           against minihttp's own Content-Length upload (0.9x); medians of
           ``--runs``; minihttp's peak RSS (VmHWM) after them under 64 MiB.
           minihttp's upload also computes a sha256 and fsyncs; nginx does neither.

Peers that are not installed are skipped with a line saying so (make
bench-deps installs them).  uvicorn runs on asyncio's own event loop (uvloop is
not installed).  About 4 minutes with the defaults on two cores.
"""

import argparse
import contextlib
import email.utils
import functools
import http.server
import importlib.util
import json
import mimetypes
import os
import re
import selectors
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time

from bench import _results
from bench._support import (GiB, MB, MiB, Child, Exchange, ServerProcess, download, fd_count,
                            fetch, free_port, get_many, median_of, memory, minihttp_supports,
                            percentile, raise_open_files, settle, start_minihttp, steady, stored_by_minihttp,
                            thread_count, typical, upload, write_random, wrk)
from minihttp.cli import size

SMALL = '/1k.html'
SMALL_SIZE = 1024
BIG = '/big.bin'
NGINX = 'nginx (2 workers)'
HTTPTOOLS, H11 = 'uvicorn httptools', 'uvicorn h11'
MINIHTTP, WORKERS = 'minihttp', 'minihttp --workers 2'
SETUP_TIMEOUT = 120.0     # for the client processes to open their connections


def amount(nbytes):
    """A byte count for a title: 1 GiB, 200 MiB."""
    return f'{nbytes // GiB} GiB' if nbytes % GiB == 0 else f'{nbytes / MiB:g} MiB'


def skipped(what, tool):
    line = f'skipped: {tool} not installed, run make bench-deps'
    print(f'  {what}: {line}')
    _results.note(f'{what}: {line}')


def show(row):
    """Print a recorded row as a line, with its verdict."""
    value = f'{_results.number(row.value)} {row.unit}'
    compared = f' = {row.ratio_text} {row.peer} ({_results.number(row.peer_value)})' \
        if row.peer is not None else ''
    target = f'; target {row.target_text}: {row.verdict}' if row.target is not None else ''
    print(f'  {row.subject}: {value}{compared}{target}')


def record(*args, **kwargs):
    show(row := _results.record(*args, **kwargs))
    return row


# -- the peers --------------------------------------------------------------------------

NGINX_CONF = '''\
# Written by python -m bench peers for one run; every path is under {prefix}.
worker_processes 2;
{user}
pid {prefix}/nginx.pid;
error_log stderr notice;
worker_rlimit_nofile {nofile};
events {{ worker_connections {connections}; }}
http {{
    types {{ text/html html; application/octet-stream bin; }}
    access_log {prefix}/access.log;
    sendfile on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port}{listen};
        root {root};{tls}
        location /uploads/ {{
            alias {uploads}/;
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 0;
        }}
    }}
}}
'''
# With tls=(cert, key): the settings minihttp's TLS has (minihttp.tls), so that the two are
# compared on the same terms.  `listen ... ssl` is what `ssl on` became (deprecated in 1.15,
# gone in 1.25).  Left at nginx's defaults, and said here: ssl_ciphers HIGH:!aNULL:!MD5 (TLS
# 1.2 only; TLS 1.3's suites are OpenSSL's defaults, as in Python), ssl_session_tickets on,
# ssl_session_cache none (resumption by tickets only), ssl_buffer_size 16k.  HTTP/1.1 only:
# nginx answers ALPN http/1.1.
NGINX_TLS = '''
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;'''
# nginx says this once its listening socket is open, before its workers start.
NGINX_READY = re.compile(r'start worker process')


def start_nginx(work, root, connections=4096, tls=None):
    """nginx in the foreground, 2 workers, its prefix, logs and temporary files under ``work``.

    ``connections`` is each worker's worker_connections; with ``tls`` (certificate
    and key files) it speaks HTTPS only.
    """
    prefix = os.path.join(work, 'nginx')
    uploads = os.path.join(work, 'nginx-uploads')
    os.makedirs(prefix, exist_ok=True)
    os.makedirs(uploads, exist_ok=True)
    port = free_port()
    conf = os.path.join(prefix, 'nginx.conf')
    with open(conf, 'w') as file:
        # As root, nginx would run its workers as nobody, who cannot reach our 0700 directory.
        file.write(NGINX_CONF.format(prefix=prefix, port=port, root=root, uploads=uploads,
                                     connections=connections, nofile=2 * connections + 100,
                                     listen=' ssl' if tls else '',
                                     tls=NGINX_TLS.format(cert=tls[0], key=tls[1]) if tls else '',
                                     user='user root;' if os.geteuid() == 0 else ''))
    return ServerProcess(NGINX, ['nginx', '-p', prefix, '-c', conf, '-e', 'stderr',
                                 '-g', 'daemon off;'],
                         ready=NGINX_READY, port=port, read='stderr')


def start_uvicorn(protocol, work, root):
    return ServerProcess(f'uvicorn {protocol}',
                         [sys.executable, '-m', 'bench.peers', '--uvicorn', protocol, root,
                          os.path.join(work, f'uvicorn-{protocol}.log')])


def start_stdlib(work, root):
    return ServerProcess('http.server', [sys.executable, '-m', 'bench.peers', '--stdlib', root],
                         log=os.path.join(work, 'stdlib.log'))


def start_ours(work, root, *args, label=MINIHTTP, extra=()):
    name = label.replace(' ', '').replace('-', '')
    return start_minihttp('--root', root, '--uploads', os.path.join(work, 'uploads'), *args,
                          *extra, log=os.path.join(work, f'{name}.log'), name=label)


def missing_module(*names):
    """The first of these modules that is not installed, or None."""
    return next((name for name in names if importlib.util.find_spec(name) is None), None)


class FileApp:
    """An ASGI app doing for a file what minihttp does for a small one.

    One os.stat per request; a file of at most 64 KiB is read once and kept
    with its head fields while the stat says it is unchanged.  Anything that is
    not a file under the root (or a name starting with a dot) gets 404.
    """

    SMALL_FILE = 64 * 1024
    PIECE = 256 * 1024

    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.cache = {}        # path -> (stat key, head fields, body)

    async def __call__(self, scope, receive, send):
        if scope['type'] != 'http':
            return
        status, fields, body, path = self.answer(scope['method'], scope['path'])
        await send({'type': 'http.response.start', 'status': status, 'headers': fields})
        if path is None or scope['method'] == 'HEAD':
            await send({'type': 'http.response.body', 'body': b'' if scope['method'] == 'HEAD'
                        else body})
            return
        with open(path, 'rb') as file:
            while piece := file.read(self.PIECE):
                await send({'type': 'http.response.body', 'body': piece, 'more_body': True})
        await send({'type': 'http.response.body', 'body': b''})

    def answer(self, method, target):
        """(status, head fields, body, or the path of a large file to stream)."""
        if method not in ('GET', 'HEAD'):
            return 405, [(b'allow', b'GET, HEAD'), (b'content-length', b'0')], b'', None
        names = [name for name in target.split('/') if name]
        if any(name.startswith('.') for name in names):
            return self.not_found()
        path = os.path.join(self.root, *names)
        try:
            info = os.stat(path)
        except OSError:
            return self.not_found()
        if not stat.S_ISREG(info.st_mode):
            return self.not_found()
        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        cached = self.cache.get(path)
        if cached is not None and cached[0] == key:
            return 200, cached[1], cached[2], None
        fields = [
            (b'content-type', (mimetypes.guess_type(path)[0]
                               or 'application/octet-stream').encode()),
            (b'content-length', str(info.st_size).encode()),
            (b'last-modified', email.utils.formatdate(info.st_mtime, usegmt=True).encode()),
            (b'etag', f'"{info.st_ino:x}-{info.st_size:x}-{info.st_mtime_ns:x}"'.encode()),
        ]
        if info.st_size > self.SMALL_FILE:
            return 200, fields, b'', path
        with open(path, 'rb') as file:
            body = file.read()
        self.cache[path] = key, fields, body
        return 200, fields, body, None

    @staticmethod
    def not_found():
        return 404, [(b'content-type', b'text/plain'), (b'content-length', b'10')], \
            b'not found\n', None


def serve_uvicorn(protocol, root, access_log):
    """The uvicorn peer's process: FileApp, access log on, to a file."""
    import uvicorn

    # IPPROTO_TCP said outright: asyncio turns Nagle off (TCP_NODELAY) only on accepted
    # sockets whose proto says TCP, and create_server() leaves it 0.  Without, every
    # response waits 40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(('127.0.0.1', 0))
    sock.listen(1024)
    logging_config = {
        'version': 1,
        'disable_existing_loggers': False,
        'formatters': {'access': {'()': 'uvicorn.logging.AccessFormatter', 'use_colors': False,
                                  'fmt': '%(client_addr)s - "%(request_line)s" %(status_code)s'}},
        'handlers': {'access': {'class': 'logging.FileHandler', 'filename': access_log,
                                'formatter': 'access'}},
        'loggers': {'uvicorn.access': {'handlers': ['access'], 'level': 'INFO',
                                       'propagate': False},
                    'uvicorn.error': {'level': 'WARNING'}},
    }
    config = uvicorn.Config(FileApp(root), http=protocol, lifespan='off', access_log=True,
                            log_config=logging_config)
    print(f'uvicorn {protocol} listening on http://127.0.0.1:{sock.getsockname()[1]}/', flush=True)
    uvicorn.Server(config).run(sockets=[sock])


def serve_stdlib(root):
    """http.server's peer process: as bench http's baseline, but with its access log on."""
    from bench.http import BaselineHandler, run_stdlib

    class Handler(BaselineHandler):
        log_message = http.server.BaseHTTPRequestHandler.log_message   # to stderr, our file

    run_stdlib(functools.partial(Handler, directory=root))


# -- small GETs ---------------------------------------------------------------------------

def small_gets(work, root, duration, rounds, extra):
    print(f'small GET {SMALL} ({SMALL_SIZE} B), keep-alive, wrk -t1 --latency, -c64 and -c1, '
          f'{rounds} rounds of {duration} s per server, taking turns; access logs on')
    if not shutil.which('wrk'):
        skipped('small GETs', 'wrk')
        return
    starters = {'http.server': lambda: start_stdlib(work, root)}
    for label, module in ((H11, 'h11'), (HTTPTOOLS, 'httptools')):
        lacking = missing_module('uvicorn', module)
        if lacking:
            skipped(label, lacking)
        else:
            starters[label] = functools.partial(start_uvicorn, module, work, root)
    starters[MINIHTTP] = lambda: start_ours(work, root, extra=extra)
    starters[WORKERS] = lambda: start_ours(work, root, '--workers', 2, label=WORKERS,
                                           extra=extra)
    if shutil.which('nginx'):
        starters[NGINX] = lambda: start_nginx(work, root)
    else:
        skipped(NGINX, 'nginx')
    expected = open(os.path.join(root, SMALL[1:]), 'rb').read()
    loads = {(name, c): [] for name in starters for c in (64, 1)}
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(start()) for name, start in starters.items()}
        for name, server in servers.items():
            status, body, _ = fetch(server.port, SMALL)
            if status != 200 or body != expected:
                raise SystemExit(f'{name} answered GET {SMALL} with {status}, {len(body)} B')
        for _ in range(rounds):
            for connections in (64, 1):
                for name, server in servers.items():
                    loads[name, connections].append(
                        wrk(f'http://127.0.0.1:{server.port}{SMALL}', duration, connections))
    rates, p99s = {}, {}
    for connections in (64, 1):
        scenario = f'small GET 1 KiB, wrk -c{connections}'
        print(f'  -c{connections}:')
        for name in starters:
            rate, p99, errors = median_of(loads[name, connections])
            rates.setdefault(f'-c{connections}', {})[name] = rate
            p99s.setdefault(f'-c{connections}', {})[name] = p99 * 1000
            rounds_of = ', '.join(f'{load.rate:.0f}' for load in loads[name, connections])
            print(f'    {name:22} {rate:8.0f} requests/s (rounds: {rounds_of}), '
                  f'p99 {p99 * 1000:6.2f} ms {" ".join(errors)}')
            if errors:
                _results.note(f'{scenario}, {name}: {"; ".join(errors)}')
        measured = rates[f'-c{connections}']
        targets = ({HTTPTOOLS: 3.0, NGINX: 0.5} if connections == 64 else {NGINX: 1.0})
        for peer in measured:
            if peer not in (MINIHTTP, WORKERS):
                record(scenario, MINIHTTP, measured[MINIHTTP], 'req/s', peer=peer,
                       peer_value=measured[peer], target=targets.get(peer))
        if NGINX in measured:
            record(scenario, WORKERS, measured[WORKERS], 'req/s', peer=NGINX,
                   peer_value=measured[NGINX], target=1.0 if connections == 64 else None)
        for name, p99 in p99s[f'-c{connections}'].items():
            record(scenario, f'p99 latency, {name}', p99, 'ms')
    _results.bars('small GET 1 KiB, wrk -t1: requests/s (higher is better)', 'requests/s',
                  rates)
    _results.bars('small GET 1 KiB, wrk -t1: p99 latency (lower is better)', 'ms', p99s,
                  log=True)


# -- many idle connections ---------------------------------------------------------------

HELD = re.compile(r'^held (\d+) of (\d+)$')
STILL_OPEN = re.compile(r'^open (\d+)$')


def is_open(sock):
    """Whether the server has neither closed this idle connection nor sent on it."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def hold(port, path, count, window, exchange=Exchange, still=is_open):
    """A client process of the idle scenario: open ``count`` connections, GET once on each, hold.

    Prints ``held N of COUNT``; once its standard input closes, checks its
    connections (``still``) and prints ``open N``.  ``exchange`` as get_many's.
    """
    raise_open_files()
    _, kept = get_many(port, path, count, window=window, timeout=SETUP_TIMEOUT / 2, keep=True,
                       exchange=exchange)
    print(f'held {len(kept)} of {count}', flush=True)
    sys.stdin.read()
    print(f'open {sum(1 for sock in kept if still(sock))}', flush=True)


def idle(work, root, count, fresh, interval, holders, extra):
    # The idle ones must outlive the scenario, and the cap must not be what is measured.
    options = ('--keepalive-timeout', 600, '--max-connections', count + fresh + 100)
    print(f'{count} idle keep-alive connections held by one minihttp process '
          f'({" ".join(map(str, options))}), by {holders} client processes; then {fresh} GETs '
          f'on fresh connections, one every {interval * 1000:g} ms')
    scenario = f'{count:,} idle connections'
    raise_open_files()
    with start_ours(work, root, *options, extra=extra) as server, \
            contextlib.ExitStack() as clients:
        get_many(server.port, SMALL, 1)
        base_rss, base_threads = memory(server.pid), thread_count(server.pid)
        started = time.monotonic()
        shares = [count // holders + (i < count % holders) for i in range(holders)]
        procs = [clients.enter_context(Child(
            f'idle client {i}', [sys.executable, '-m', 'bench.peers', '--hold',
                                 str(server.port), SMALL, str(share), '64'],
            stdin=subprocess.PIPE)) for i, share in enumerate(shares)]
        held = sum(int(proc.expect(HELD, SETUP_TIMEOUT)[1]) for proc in procs)
        opened = time.monotonic() - started
        rss, threads = memory(server.pid), thread_count(server.pid)
        latencies, _ = get_many(server.port, SMALL, fresh, interval=interval, timeout=5.0)
        rss = max(rss, memory(server.pid))
        for proc in procs:
            proc.proc.stdin.close()
        still = sum(int(proc.expect(STILL_OPEN, SETUP_TIMEOUT)[1]) for proc in procs)
    answered = sum(1 for latency in latencies if latency is not None)
    p99 = percentile(latencies, 99)
    print(f'  opened and answered {held} of {count} in {opened:.1f} s; server threads '
          f'{base_threads} -> {threads}, RSS {base_rss / MiB:.1f} -> {rss / MiB:.1f} MiB')
    record(scenario, 'idle connections answered and held', held, 'connections', target=count)
    record(scenario, 'idle connections still open at the end', still, 'connections',
           target=count)
    record(scenario, 'fresh GETs answered', answered, 'requests', target=fresh)
    record(scenario, 'fresh GETs, p99 latency', (p99 or float('inf')) * 1000, 'ms', target=20,
           lower_is_better=True)
    record(scenario, 'server RSS (VmRSS) with them', rss / MiB, 'MiB', target=150,
           lower_is_better=True)
    record(scenario, 'RSS per idle connection', (rss - base_rss) / max(held, 1) / 1024, 'KiB')


# -- hostile connections -----------------------------------------------------------------

HOSTILE_OPEN = re.compile(r'^hostile open (\d+)$')
HOSTILE_DONE = re.compile(r'^hostile done (.*)$')
KINDS = ('drip', 'silent', 'stall')
DRIP_HEAD = b'GET /1k.html HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: ' + b'd' * 1000


class Hostile:
    """One hostile connection and the time by which the server should have dealt with it."""

    def __init__(self, kind, index, port, timeouts):
        self.kind = kind
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sent = 0
        head, keepalive, body = timeouts
        if kind == 'silent':          # no byte at all: the idle timeout applies
            self.deadline = time.monotonic() + keepalive
        elif kind == 'drip':          # the head's deadline runs from its first byte
            self.sock.sendall(DRIP_HEAD[:1])
            self.sent = 1
            self.deadline = time.monotonic() + head
        else:                         # a body that stops after a few bytes
            self.sock.sendall(f'PUT /uploads/stall-{index} HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                              'Content-Length: 1000000\r\n\r\n0123456789'.encode())
            self.deadline = time.monotonic() + body
        self.sock.setblocking(False)
        self.answered = None          # when the server first sent something or closed
        self.closed = None            # when it closed

    def drip(self):
        if self.answered is None and self.sent < len(DRIP_HEAD):
            try:
                self.sock.send(DRIP_HEAD[self.sent:self.sent + 1])
                self.sent += 1
            except OSError:
                pass                  # closed: the reading side notices

    def readable(self, now):
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b''
        if self.answered is None:
            self.answered = now
        if not data:
            self.closed = now


def hostile(port, count, head, keepalive, body, drip_every, give_up):
    """The hostile client process: ``count`` connections of each kind; a JSON summary."""
    raise_open_files()
    conns = [Hostile(kind, i, port, (head, keepalive, body))
             for i in range(count) for kind in KINDS]
    print(f'hostile open {len(conns)}', flush=True)
    end = max(conn.deadline for conn in conns) + give_up
    next_drip = time.monotonic() + drip_every
    with selectors.DefaultSelector() as sel:
        for conn in conns:
            sel.register(conn.sock, selectors.EVENT_READ, conn)
        while len(sel.get_map()) and (now := time.monotonic()) < end:
            if now >= next_drip:
                for conn in conns:
                    if conn.kind == 'drip' and conn.closed is None:
                        conn.drip()
                next_drip += drip_every
            for key, _ in sel.select(max(0.0, min(next_drip, end) - time.monotonic())):
                conn = key.data
                conn.readable(time.monotonic())
                if conn.closed is not None:
                    sel.unregister(conn.sock)
                    conn.sock.close()
    summary = {}
    for kind in KINDS:
        mine = [conn for conn in conns if conn.kind == kind]
        late = [conn.answered - conn.deadline for conn in mine if conn.answered is not None]
        summary[kind] = {
            'count': len(mine),
            'answered': len(late),
            'closed': sum(1 for conn in mine if conn.closed is not None),
            'latest': max(late, default=None),       # seconds after the deadline
            'earliest': min(late, default=None),
            'by_deadline': [round(x, 3) for x in late],
        }
    for conn in conns:
        conn.sock.close()
    print(f'hostile done {json.dumps(summary)}', flush=True)


def hostile_scenario(work, root, count, gets, slack, extra):
    head, keepalive, body = 2, 3, 4
    print(f'{3 * count} hostile connections ({count} each dripping a head a byte every 0.5 s, '
          f'silent, stalling a PUT body) while {gets} GETs arrive on fresh connections; '
          f'minihttp --head-timeout {head} --keepalive-timeout {keepalive} --body-timeout {body}'
          f', slack {slack} s')
    scenario = f'{3 * count} hostile connections'
    with start_ours(work, root, '--head-timeout', head, '--keepalive-timeout', keepalive,
                    '--body-timeout', body, extra=extra) as server:
        get_many(server.port, SMALL, 1)
        base_threads = steady(lambda: thread_count(server.pid), 2.0)
        base_fds = steady(lambda: fd_count(server.pid), 2.0)
        with Child('hostile client', [sys.executable, '-m', 'bench.peers', '--hostile-client',
                                      str(server.port), str(count), str(head), str(keepalive),
                                      str(body), '0.5', str(slack + 2)]) as client:
            client.expect(HOSTILE_OPEN, SETUP_TIMEOUT)
            # Spread over the head timeout: every GET meets all the hostile connections.
            latencies, _ = get_many(server.port, SMALL, gets, interval=head / gets * 0.9,
                                    timeout=10.0)
            peak_threads, peak_fds = thread_count(server.pid), fd_count(server.pid)
            summary = json.loads(client.expect(HOSTILE_DONE, body + slack + 30)[1])
        threads = settle(lambda: thread_count(server.pid), base_threads, 5.0)
        fds = settle(lambda: fd_count(server.pid), base_fds, 5.0)
    answered = sum(1 for latency in latencies if latency is not None)
    print(f'  server threads {base_threads} -> {peak_threads} with them -> {threads} after; '
          f'descriptors {base_fds} -> {peak_fds} -> {fds}')
    record(scenario, 'GETs answered meanwhile', answered, 'requests', target=gets)
    p99 = percentile(latencies, 99)
    record(scenario, 'GETs meanwhile, p99 latency', (p99 or float('inf')) * 1000, 'ms',
           target=50, lower_is_better=True)
    for kind, figures in summary.items():
        in_time = sum(1 for late in figures['by_deadline'] if late <= slack)
        latest = figures['latest']
        span = ('' if latest is None else
                f'; {figures["earliest"]:+.2f} to {latest:+.2f} s from the deadline')
        print(f'  {kind}: {figures["answered"]} of {figures["count"]} answered or closed, '
              f'{figures["closed"]} closed{span}')
        record(scenario, f'{kind} connections dealt with by their deadline + {slack:g} s',
               in_time, 'connections', target=figures['count'])
    record(scenario, 'server threads afterwards', threads, 'threads', target=base_threads,
           lower_is_better=True)
    record(scenario, 'server descriptors afterwards', fds, 'descriptors', target=base_fds,
           lower_is_better=True)


# -- downloads and uploads ---------------------------------------------------------------

def transfers(work, root, download_size, upload_size, runs, extra):
    print(f'download of {amount(download_size)} (curl -o /dev/null) and upload of '
          f'{amount(upload_size)} (curl -T), median of {runs}, taking turns')
    if not shutil.which('curl'):
        skipped('transfers', 'curl')
        return
    source = os.path.join(work, 'upload.bin')
    sha256 = write_random(source, upload_size)
    have_nginx = bool(shutil.which('nginx'))
    if not have_nginx:
        skipped('transfers against nginx', 'nginx')

    with contextlib.ExitStack() as stack:
        ours = stack.enter_context(start_ours(work, root, extra=extra))
        nginx = stack.enter_context(start_nginx(work, root)) if have_nginx else None
        scenario = f'download {amount(download_size)}'
        if nginx:
            times = typical({name: (server.pid, functools.partial(
                download, server.port, BIG, download_size))
                for name, server in ((NGINX, nginx), (MINIHTTP, ours))}, runs)
            show_times(times, download_size)
            record(scenario, MINIHTTP, download_size / times[MINIHTTP][0] / MB, 'MB/s',
                   peer=NGINX, peer_value=download_size / times[NGINX][0] / MB, target=1.0)
        scenario = f'upload {amount(upload_size)}'
        uploads = {}
        if nginx:
            uploads[f'{NGINX}, chunked'] = (nginx.pid, functools.partial(
                upload, f'http://127.0.0.1:{nginx.port}/uploads/upload.bin', source,
                upload_size, 'chunked'))
        for framing in ('chunked', 'content-length'):
            uploads[f'{MINIHTTP}, {framing}'] = (ours.pid, functools.partial(
                upload, f'http://127.0.0.1:{ours.port}/uploads/upload.bin', source, upload_size,
                framing, stored_by_minihttp(upload_size, sha256, framing)))
        times = typical(uploads, runs)
        show_times(times, upload_size)
        rate = {name: upload_size / seconds / MB for name, (seconds, _) in times.items()}
        if nginx:
            record(scenario, f'{MINIHTTP}, chunked', rate[f'{MINIHTTP}, chunked'], 'MB/s',
                   peer=f'{NGINX}, chunked (WebDAV PUT, no fsync)',
                   peer_value=rate[f'{NGINX}, chunked'], target=1.0)
        record(scenario, f'{MINIHTTP}, chunked', rate[f'{MINIHTTP}, chunked'], 'MB/s',
               peer=f'{MINIHTTP}, content-length', peer_value=rate[f'{MINIHTTP}, content-length'],
               target=0.9)
        record(scenario, 'minihttp peak RSS (VmHWM) after the transfers',
               memory(ours.pid, 'VmHWM') / MiB, 'MiB', target=64, lower_is_better=True)


def show_times(times, size):
    for name, (seconds, cpu) in times.items():
        print(f'    {name:40} {size / seconds / MB:8.0f} MB/s, server CPU {cpu:.2f} s')


# -- the run ---------------------------------------------------------------------------

SCENARIOS = ('small', 'idle', 'hostile', 'transfers')


def make_root(work):
    """The document root under ``work``, holding the small file, beside an uploads directory."""
    root = os.path.join(work, 'root')
    os.makedirs(os.path.join(work, 'uploads'))
    os.mkdir(root)
    with open(os.path.join(root, SMALL[1:]), 'wb') as file:
        file.write((b'<p>a small file of one KiB</p>\n' * 64)[:SMALL_SIZE])
    return root


def run(args):
    started = time.monotonic()
    extra = ('--threads', args.threads) if args.threads else ()
    if args.threads and not minihttp_supports('--threads'):
        raise SystemExit('--threads: this minihttp has no --threads option')
    model = ('an event loop and a pool of threads' if minihttp_supports('--threads')
             else 'a thread per connection')
    print(f'minihttp among its peers; this minihttp serves with {model}')
    _results.note(f'minihttp measured: it serves with {model}.')
    work = tempfile.mkdtemp(prefix='minihttp-bench-peers-')
    try:
        root = make_root(work)
        if 'transfers' in args.only:
            write_random(os.path.join(root, BIG[1:]), args.download_size)
        if 'small' in args.only:
            small_gets(work, root, args.duration, args.rounds, extra)
        if 'idle' in args.only:
            idle(work, root, args.idle, args.fresh, args.fresh_interval, args.holders, extra)
        if 'hostile' in args.only:
            hostile_scenario(work, root, args.hostile, args.gets, args.slack, extra)
        if 'transfers' in args.only:
            transfers(work, root, args.download_size, args.upload_size, args.runs, extra)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f'peers benchmark took {time.monotonic() - started:.0f} s')
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m bench peers', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--only', nargs='+', choices=SCENARIOS, default=list(SCENARIOS),
                        metavar='SCENARIO', help=f'scenarios to run: {", ".join(SCENARIOS)}')
    parser.add_argument('--threads', type=int,
                        help="minihttp's --threads (default: its own default)")
    small = parser.add_argument_group('small')
    small.add_argument('--duration', type=int, default=5, help='seconds of each wrk run (5)')
    small.add_argument('--rounds', type=int, default=3, help='wrk runs per server and -c (3)')
    many = parser.add_argument_group('idle and hostile')
    many.add_argument('--idle', type=int, default=10000, help='idle connections (10000)')
    many.add_argument('--holders', type=int, default=2,
                      help='client processes holding them (2)')
    many.add_argument('--fresh', type=int, default=1000, help='GETs while they are held (1000)')
    many.add_argument('--fresh-interval', type=float, default=0.002,
                      help='seconds between two fresh GETs (0.002)')
    many.add_argument('--hostile', type=int, default=200,
                      help='hostile connections of each of the three kinds (200)')
    many.add_argument('--gets', type=int, default=200, help='GETs among the hostile ones (200)')
    many.add_argument('--slack', type=float, default=1.0,
                      help='seconds past its deadline a hostile connection may be dealt with (1)')
    sizes = parser.add_argument_group('transfers')
    sizes.add_argument('--download-size', type=size, default=200 * MiB, help='(200M)')
    sizes.add_argument('--upload-size', type=size, default=GiB, help='(1G)')
    sizes.add_argument('--runs', type=int, default=5, help='transfers per server (5)')
    # Internal: the child processes this benchmark starts.
    roles = parser.add_mutually_exclusive_group()
    roles.add_argument('--uvicorn', nargs=3, help=argparse.SUPPRESS)
    roles.add_argument('--stdlib', help=argparse.SUPPRESS)
    roles.add_argument('--hold', nargs=4, help=argparse.SUPPRESS)
    roles.add_argument('--hostile-client', nargs=7, dest='hostile_client', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.uvicorn:
        return serve_uvicorn(*args.uvicorn)
    if args.stdlib:
        return serve_stdlib(args.stdlib)
    if args.hold:
        port, path, count, window = args.hold
        return hold(int(port), path, int(count), int(window))
    if args.hostile_client:
        port, count, *seconds = args.hostile_client
        return hostile(int(port), int(count), *map(float, seconds))
    return run(args)


if __name__ == '__main__':
    sys.exit(main())
