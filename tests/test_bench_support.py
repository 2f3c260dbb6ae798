"""The benchmark's own pieces that a wrong figure could hide in: the TLS client of bench
tls (connect, handshake, one GET, held, seen closed) and results.md's sections.

No benchmark runs here (make bench runs them); nothing is timed.
"""

import functools
import shutil
import socket
import ssl
import threading

import pytest

from bench import _results
from bench._support import get_many
from bench.tls import TLSExchange, make_certificate, tls_is_open
from minihttp.tls import client_context, server_context
from support import WAIT

BODY = b'x' * 1500           # more than one read of the head, less than a record


class HoldingTLSServer:
    """Answers one GET on each TLS connection, then holds it open until close_all()."""

    def __init__(self, context):
        self.context = context
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.listener.settimeout(WAIT)
        self.port = self.listener.getsockname()[1]
        self.held = []
        self.lock = threading.Lock()
        self.threads = []
        self.stopping = False
        self.acceptor = threading.Thread(target=self.accept, daemon=True)
        self.acceptor.start()

    def accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return                    # no client came within WAIT
            if self.stopping:             # close_all()'s wake-up call
                conn.close()
                return
            thread = threading.Thread(target=self.answer, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def answer(self, conn):
        conn.settimeout(WAIT)
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except OSError:
            conn.close()
            return
        with self.lock:
            self.held.append(tls)
        head = b''
        while b'\r\n\r\n' not in head:
            got = tls.recv(4096)
            if not got:
                return
            head += got
        tls.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n' % len(BODY) + BODY)

    def close_all(self):
        # A listener closed under a thread blocked in accept() does not wake it: a connection does.
        self.stopping = True
        socket.create_connection(('127.0.0.1', self.port), timeout=WAIT).close()
        self.acceptor.join(WAIT)
        self.listener.close()
        for thread in self.threads:
            thread.join(WAIT)
        with self.lock:
            for tls in self.held:
                tls.close()


@pytest.fixture(scope='module')
def certificate(tmp_path_factory):
    if not shutil.which('openssl'):
        pytest.skip('the openssl command is not installed')
    return make_certificate(str(tmp_path_factory.mktemp('bench-tls')))


def test_tls_exchanges_are_answered_held_and_seen_closed(certificate):
    cert, key = certificate
    server = HoldingTLSServer(server_context(cert, key))
    try:
        exchange = functools.partial(TLSExchange, context=client_context(cert))
        latencies, kept = get_many(server.port, '/', 20, window=4, timeout=WAIT, keep=True,
                                   exchange=exchange)
        assert all(latency is not None for latency in latencies)
        assert len(kept) == 20
        assert all(isinstance(sock, ssl.SSLSocket) and sock.version() for sock in kept)
        assert all(tls_is_open(sock) for sock in kept)
    finally:
        server.close_all()
    try:
        # A closed connection is readable at once; the check must not wait for it.
        for sock in kept:
            sock.settimeout(WAIT)
            assert not tls_is_open(sock)
    finally:
        for sock in kept:
            sock.close()


def test_tls_exchange_refusing_the_certificate_counts_as_unanswered(certificate, tmp_path):
    cert, key = certificate
    other, _ = make_certificate(str(tmp_path))       # a client trusting another one
    server = HoldingTLSServer(server_context(cert, key))
    try:
        exchange = functools.partial(TLSExchange, context=client_context(other))
        latencies, kept = get_many(server.port, '/', 3, window=1, timeout=WAIT, keep=True,
                                   exchange=exchange)
    finally:
        server.close_all()
    assert latencies == [None] * 3 and kept == []


def test_results_sections_get_a_heading_and_a_table_of_their_own():
    _results.reset()
    try:
        _results.record('plain', 'minihttp', 10.0, 'req/s', peer='nginx', peer_value=20.0,
                        target=0.5)
        _results.section('TLS')
        _results.record('TLS: small', 'minihttp', 5.0, 'req/s', peer='nginx', peer_value=20.0,
                        target=0.5)
        text = _results.markdown(['tls'])
    finally:
        _results.reset()
    lines = text.splitlines()
    assert lines.count(_results.TABLE_HEAD[0]) == 2
    heading = lines.index('## TLS')
    assert lines[heading + 2] == _results.TABLE_HEAD[0]
    assert lines[heading + 4].startswith('| TLS: small | minihttp | 5 req/s | nginx | 20 req/s |')
    assert '| 0.25x | 0.5x | NOT met |' in lines[heading + 4]
    assert lines.index('| plain | minihttp | 10 req/s | nginx | 20 req/s | 0.50x | 0.5x | met |') \
        < heading
