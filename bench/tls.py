"""minihttp over TLS against nginx over TLS: the targets of issue 16.

    python -m bench tls [--only SCENARIO...] [--duration S] [--rounds N] [...]

Both servers get one throwaway self-signed certificate (ECDSA P-256, made
with ``openssl`` into the temporary directory, removed at the end) and the
same TLS settings: TLS 1.2 at least, ALPN http/1.1, the default ciphers,
session tickets as each has them by default (see bench.peers.NGINX_TLS for
nginx's side, minihttp.tls for minihttp's).  Every client trusts that
certificate alone.  The protocol, cipher and ALPN each server negotiated
with a Python client are printed and noted in results.md.  Servers and access
logs as in ``bench peers``: nginx with 2 workers, minihttp in one process and
with ``--workers 2``.

small      GET of a 1 KiB file with keep-alive over TLS, ``wrk -t1 --latency -c64``,
           the servers in turn for ``--rounds`` rounds (medians count): minihttp
           against nginx (target 0.5x), minihttp --workers 2 against nginx (0.8x).
handshakes new TLS connections per second, one GET each: ``wrk -c64 -H
           'Connection: close'``, every request a new connection: minihttp against
           nginx (0.5x), --workers 2 for context.  wrk resumes sessions (against
           nginx all but its first handshake per connection are TLS 1.3 resumptions
           by ticket, still with an ECDHE exchange, without the certificate's
           signature); full handshakes are those of the idle scenario's clients.
transfers  a 200 MiB download (curl -o /dev/null) and a 1 GiB chunked upload
           (curl -T, nginx's WebDAV PUT) over https, medians of ``--runs`` taking
           turns: minihttp against nginx, 0.8x each; minihttp's peak RSS after.
idle       10,000 idle TLS keep-alive connections held by one minihttp process
           (each opened, handshaken and answered once by client processes of
           ours), then 1,000 GETs on fresh TLS connections, one every 5 ms:
           server RSS under 400 MiB, all answered, p99 (connect, handshake,
           whole answer) under 50 ms.  nginx the same, for context.

Until minihttp serves TLS (``serve --tls-cert``), every scenario says
"skipped: minihttp has no --tls-cert yet" and measures nginx alone.  About 3
minutes with the defaults on two cores (the idle scenario the longest: 20,000
handshakes by Python clients).
"""

import argparse
import contextlib
import functools
import http.client
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

from bench import _results
from bench._support import (GiB, MB, MiB, Child, Exchange, download, get_many, median_of,
                            memory, minihttp_supports, percentile, raise_open_files,
                            stored_by_minihttp, typical, upload, write_random, wrk)
from bench.peers import (BIG, HELD, NGINX, SETUP_TIMEOUT, SMALL, STILL_OPEN, WORKERS, amount,
                         hold, make_root, record, show_times, skipped, start_nginx, start_ours)
from bench.scale import rss
from minihttp.cli import size
from minihttp.tls import client_context

MINIHTTP = 'minihttp'
NO_TLS = 'skipped: minihttp has no --tls-cert yet'
# Targets (issue 16), as ratios to nginx or bounds.
SMALL_RATIO, WORKERS_RATIO = 0.5, 0.8
HANDSHAKE_RATIO = 0.5
TRANSFER_RATIO = 0.8
IDLE_RSS = 400              # MiB
IDLE_P99 = 50               # ms
CERT_DAYS = 2               # the certificate outlives any run, and no more


# -- the certificate and the servers --------------------------------------------------------

def make_certificate(work):
    """(certificate, key) files of a fresh self-signed ECDSA P-256 certificate for 127.0.0.1."""
    cert, key = os.path.join(work, 'cert.pem'), os.path.join(work, 'key.pem')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                    'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert,
                    '-days', str(CERT_DAYS), '-subj', '/CN=127.0.0.1',
                    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'],
                   check=True, capture_output=True, timeout=30)
    return cert, key


class Servers:
    """What a scenario starts: minihttp over TLS (when it can), nginx over TLS (when there)."""

    def __init__(self, work, root, cert, key, tls):
        self.work, self.root, self.cert, self.key = work, root, cert, key
        self.tls = tls                          # minihttp has --tls-cert
        self.nginx = bool(shutil.which('nginx'))
        self.context = client_context(cert)
        self.negotiated = {}                    # name -> what its first check negotiated

    def minihttp(self, *args, label=MINIHTTP):
        return start_ours(self.work, self.root, '--tls-cert', self.cert, '--tls-key', self.key,
                          *args, label=label)

    def start(self, stack, names, connections=4096, minihttp_args=()):
        """{name: server} of those of ``names`` that can run, entered in ``stack``, checked."""
        starters = {}
        if NGINX in names and self.nginx:
            starters[NGINX] = lambda: start_nginx(self.work, self.root, connections,
                                                  tls=(self.cert, self.key))
        if self.tls:
            if MINIHTTP in names:
                starters[MINIHTTP] = lambda: self.minihttp(*minihttp_args)
            if WORKERS in names:
                starters[WORKERS] = lambda: self.minihttp('--workers', 2, *minihttp_args,
                                                          label=WORKERS)
        servers = {name: stack.enter_context(start()) for name, start in starters.items()}
        for name, server in servers.items():
            said = self.check(name, server.port)
            if name not in self.negotiated:
                self.negotiated[name] = said
                print(f'  {name} negotiates {said}')
                _results.note(f'TLS, {name} negotiates with a Python client: {said}.')
        return servers

    def check(self, name, port):
        """One GET over TLS: a 200 with the small file; returns what was negotiated."""
        connection = http.client.HTTPSConnection('127.0.0.1', port, timeout=10,
                                                 context=self.context)
        try:
            connection.request('GET', SMALL)
            response = connection.getresponse()
            body = response.read()
            sock = connection.sock
            said = f'{sock.version()}, {sock.cipher()[0]}, ALPN {sock.selected_alpn_protocol()}'
        finally:
            connection.close()
        with open(os.path.join(self.root, SMALL[1:]), 'rb') as file:
            if response.status != 200 or body != file.read():
                raise SystemExit(f'{name} answered GET {SMALL} over TLS with '
                                 f'{response.status}, {len(body)} B')
        return said


def no_tls_yet(what):
    print(f'  {what}: {NO_TLS}; nginx alone')
    _results.note(f'TLS, {what}: {NO_TLS}; nginx measured alone')


# -- small GETs and handshakes: wrk over https ---------------------------------------------------

def loads(servers, title, duration, rounds, extra=()):
    """{name: (median requests/s, median p99 s, errors)} of wrk -c64 over https, in turns."""
    print(f'{title}: {SMALL}, wrk -t1 -c64 --latency {" ".join(extra)}, {rounds} rounds of '
          f'{duration} s per server, taking turns; access logs on')
    runs = {}
    with contextlib.ExitStack() as stack:
        started = servers.start(stack, (NGINX, MINIHTTP, WORKERS))
        for _ in range(rounds):
            for name, server in started.items():
                runs.setdefault(name, []).append(
                    wrk(f'https://127.0.0.1:{server.port}{SMALL}', duration, 64, extra=extra))
    medians = {}
    for name, loads_of in runs.items():
        medians[name] = median_of(loads_of)
        rate, p99, errors = medians[name]
        each = ', '.join(f'{load.rate:.0f}' for load in loads_of)
        print(f'    {name:22} {rate:8.0f} requests/s (rounds: {each}), p99 '
              f'{p99 * 1000:6.2f} ms {" ".join(errors)}')
        if errors:
            _results.note(f'{title}, {name}: {"; ".join(errors)}')
    return medians


def compare(scenario, medians, unit, targets):
    """Rows of each minihttp against nginx (``targets``: name -> ratio), or nginx's alone."""
    nginx = medians.get(NGINX)
    for name in (MINIHTTP, WORKERS):
        if name in medians:
            record(scenario, name, medians[name][0], unit, peer=NGINX if nginx else None,
                   peer_value=nginx[0] if nginx else None,
                   target=targets.get(name) if nginx else None)
    if nginx and len(medians) == 1:
        record(scenario, NGINX, nginx[0], unit)
    for name, (_, p99, _) in medians.items():
        record(scenario, f'p99 latency, {name}', p99 * 1000, 'ms')


def small(servers, duration, rounds):
    medians = loads(servers, 'small GET over TLS, keep-alive', duration, rounds)
    compare('TLS: small GET 1 KiB, keep-alive, wrk -c64', medians, 'req/s',
            {MINIHTTP: SMALL_RATIO, WORKERS: WORKERS_RATIO})
    return {name: rate for name, (rate, _, _) in medians.items()}


def handshakes(servers, duration, rounds):
    medians = loads(servers, 'new TLS connections, one GET each', duration, rounds,
                    extra=('-H', 'Connection: close'))
    compare('TLS: new connections, one GET each, wrk -c64', medians, 'conn/s',
            {MINIHTTP: HANDSHAKE_RATIO})
    return {name: rate for name, (rate, _, _) in medians.items()}


# -- transfers: curl over https -------------------------------------------------------------------

def transfers(servers, download_size, upload_size, runs):
    print(f'download of {amount(download_size)} (curl -o /dev/null) and chunked upload of '
          f'{amount(upload_size)} (curl -T) over https, median of {runs}, taking turns')
    if not shutil.which('curl'):
        skipped('TLS transfers', 'curl')
        return
    source = os.path.join(servers.work, 'upload.bin')
    sha256 = write_random(source, upload_size)
    cafile = servers.cert
    with contextlib.ExitStack() as stack:
        started = servers.start(stack, (NGINX, MINIHTTP))
        fetching, putting = {}, {}
        for name, server in started.items():
            fetching[name] = (server.pid, functools.partial(download, server.port, BIG,
                                                            download_size, cafile=cafile))
            check = stored_by_minihttp(upload_size, sha256, 'chunked') if name == MINIHTTP \
                else None
            putting[name] = (server.pid, functools.partial(
                upload, f'https://127.0.0.1:{server.port}/uploads/upload.bin', source,
                upload_size, 'chunked', check, cafile=cafile))
        for scenario, transfer, nbytes in (
                (f'TLS: download {amount(download_size)}', fetching, download_size),
                (f'TLS: chunked upload {amount(upload_size)}', putting, upload_size)):
            if not transfer:
                continue
            times = typical(transfer, runs)
            show_times(times, nbytes)
            rates = {name: (nbytes / seconds / MB,) for name, (seconds, _) in times.items()}
            compare_rates(scenario, rates)
        if putting:
            _results.note('TLS, chunked upload: minihttp also computes each upload\'s sha256 '
                          '(about 0.7 s of server CPU per GiB here) and fsyncs it; nginx does '
                          'neither')
        if MINIHTTP in started:
            record('TLS: after the transfers', 'minihttp peak RSS (VmHWM)',
                   memory(started[MINIHTTP].pid, 'VmHWM') / MiB, 'MiB')


def compare_rates(scenario, rates):
    nginx = rates.get(NGINX)
    if MINIHTTP in rates:
        record(scenario, MINIHTTP, rates[MINIHTTP][0], 'MB/s', peer=NGINX if nginx else None,
               peer_value=nginx[0] if nginx else None, target=TRANSFER_RATIO if nginx else None)
    elif nginx:
        record(scenario, NGINX, nginx[0], 'MB/s')


# -- idle TLS connections ---------------------------------------------------------------------------

class TLSExchange(Exchange):
    """One connection making one GET over TLS: connect, handshake, then as Exchange.

    Driven by get_many's selector: writable() once connected wraps the socket
    and starts the handshake (the ClientHello goes out); readable() goes on
    with it, sends the request once it is done and reads the answer, all
    without blocking.  The descriptor stays the same through the wrapping.
    """

    def __init__(self, index, port, request, context):
        super().__init__(index, port, request)
        self.context = context
        self.handshaken = False

    def writable(self):
        if self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            return False
        self.sock = self.context.wrap_socket(self.sock, server_hostname='127.0.0.1',
                                             do_handshake_on_connect=False)
        with contextlib.suppress(ssl.SSLWantReadError):
            self.handshake()
        return True

    def handshake(self):
        """Go on with the handshake; once it is done, send the request."""
        self.sock.do_handshake()
        self.handshaken = True
        self.sock.send(self.request)        # a few dozen bytes: one record

    def readable(self):
        try:
            if not self.handshaken:
                self.handshake()
            while True:                     # what OpenSSL holds, not only the socket
                answer = self.received(self.sock.recv(65536))
                if answer is not None:
                    return answer
        except ssl.SSLWantReadError:
            return None


def tls_is_open(sock):
    """Whether the server has neither closed this idle TLS connection nor sent on it."""
    try:
        sock.recv(1)
    except ssl.SSLWantReadError:
        return True
    except OSError:
        return False
    return False


def hold_tls(port, path, count, window, cafile):
    """A client process of the idle scenario, over TLS (bench.peers.hold)."""
    hold(port, path, count, window,
         exchange=functools.partial(TLSExchange, context=client_context(cafile)),
         still=tls_is_open)


def idle(servers, count, fresh, interval, holders):
    print(f'{count} idle TLS keep-alive connections held by each server, by {holders} client '
          f'processes; then {fresh} GETs on fresh TLS connections, one every '
          f'{interval * 1000:g} ms')
    scenario = f'TLS: {count:,} idle connections'
    raise_open_files()
    # The idle ones must outlive the scenario, and the cap must not be what is measured.
    options = ('--keepalive-timeout', 600, '--max-connections', count + fresh + 100)
    fresh_exchange = functools.partial(TLSExchange, context=servers.context)
    for name in (MINIHTTP, NGINX):
        with contextlib.ExitStack() as stack:
            started = servers.start(stack, (name,), connections=count + fresh + 100,
                                    minihttp_args=options)
            if name not in started:
                continue
            server = started[name]
            base = rss(server.pid)
            began = time.monotonic()
            shares = [count // holders + (i < count % holders) for i in range(holders)]
            procs = [stack.enter_context(Child(
                f'idle TLS client {i}', [sys.executable, '-m', 'bench.tls', '--hold',
                                         str(server.port), SMALL, str(share), '64',
                                         servers.cert],
                stdin=subprocess.PIPE)) for i, share in enumerate(shares)]
            held = sum(int(proc.expect(HELD, SETUP_TIMEOUT)[1]) for proc in procs)
            opened = time.monotonic() - began
            with_them = rss(server.pid)
            latencies, _ = get_many(server.port, SMALL, fresh, interval=interval, timeout=5.0,
                                    exchange=fresh_exchange)
            with_them = max(with_them, rss(server.pid))
            for proc in procs:
                proc.proc.stdin.close()
            still = sum(int(proc.expect(STILL_OPEN, SETUP_TIMEOUT)[1]) for proc in procs)
        answered = sum(1 for latency in latencies if latency is not None)
        p99 = (percentile(latencies, 99) or float('inf')) * 1000
        print(f'  {name}: opened, handshaken and answered {held} of {count} in {opened:.1f} s;'
              f' RSS {base / MiB:.1f} -> {with_them / MiB:.1f} MiB (all its processes); '
              f'{answered} of {fresh} fresh answered, p99 {p99:.2f} ms; {still} still open')
        ours = name == MINIHTTP
        record(scenario, f'{name}, idle connections answered and held', held, 'connections',
               target=count if ours else None)
        record(scenario, f'{name}, idle connections still open at the end', still,
               'connections', target=count if ours else None)
        record(scenario, f'{name}, fresh GETs answered', answered, 'requests',
               target=fresh if ours else None)
        record(scenario, f'{name}, fresh GETs, p99 latency', p99, 'ms',
               target=IDLE_P99 if ours else None, lower_is_better=True)
        record(scenario, f'{name}, server RSS with them', with_them / MiB, 'MiB',
               target=IDLE_RSS if ours else None, lower_is_better=True)
        record(scenario, f'{name}, RSS per idle connection', (with_them - base)
               / max(held, 1) / 1024, 'KiB')


# -- the run ----------------------------------------------------------------------------------------

SCENARIOS = ('small', 'handshakes', 'transfers', 'idle')


def run(args):
    began = time.monotonic()
    _results.section('TLS (issue 16): minihttp against nginx, same certificate and settings')
    if not shutil.which('openssl'):
        skipped('TLS', 'openssl')
        return 0
    tls = minihttp_supports('--tls-cert')
    if not tls:
        print(f'TLS: {NO_TLS}; nginx alone in every scenario')
    if not tls and not shutil.which('nginx'):
        skipped('TLS', 'nginx')
        return 0
    work = tempfile.mkdtemp(prefix='minihttp-bench-tls-')
    try:
        root = make_root(work)
        cert, key = make_certificate(work)
        servers = Servers(work, root, cert, key, tls)
        if 'transfers' in args.only:
            write_random(os.path.join(root, BIG[1:]), args.download_size)
        rates = {}
        if not shutil.which('wrk'):
            skipped('TLS small GETs and handshakes', 'wrk')
        else:
            if 'small' in args.only:
                rates['keep-alive'] = small(servers, args.duration, args.rounds)
            if 'handshakes' in args.only:
                rates['Connection: close'] = handshakes(servers, args.duration, args.rounds)
        if rates:
            _results.bars('TLS, small GET 1 KiB, wrk -c64: requests/s', 'requests/s', rates)
        if 'transfers' in args.only:
            transfers(servers, args.download_size, args.upload_size, args.runs)
        if 'idle' in args.only:
            idle(servers, args.idle, args.fresh, args.fresh_interval, args.holders)
        if not tls:
            no_tls_yet('every scenario')
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f'tls benchmark took {time.monotonic() - began:.0f} s')
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m bench tls', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--only', nargs='+', choices=SCENARIOS, default=list(SCENARIOS),
                        metavar='SCENARIO', help=f'scenarios to run: {", ".join(SCENARIOS)}')
    parser.add_argument('--duration', type=int, default=5, help='seconds of each wrk run (5)')
    parser.add_argument('--rounds', type=int, default=3, help='wrk runs per server (3)')
    parser.add_argument('--download-size', type=size, default=200 * MiB, help='(200M)')
    parser.add_argument('--upload-size', type=size, default=GiB, help='(1G)')
    parser.add_argument('--runs', type=int, default=3, help='transfers per server (3)')
    parser.add_argument('--idle', type=int, default=10000, help='idle connections (10000)')
    parser.add_argument('--holders', type=int, default=4,
                        help='client processes holding them (4: Python handshakes are slow)')
    parser.add_argument('--fresh', type=int, default=1000, help='GETs while they are held (1000)')
    parser.add_argument('--fresh-interval', type=float, default=0.005,
                        help='seconds between two fresh GETs (0.005)')
    # Internal: a client process holding idle TLS connections.
    parser.add_argument('--hold', nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hold:
        port, path, count, window, cafile = args.hold
        return hold_tls(int(port), path, int(count), int(window), cafile)
    return run(args)


if __name__ == '__main__':
    sys.exit(main())
