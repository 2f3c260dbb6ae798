"""An idle TLS connection's memory, bounded in bytes whatever it carried before.

OpenSSL's memory BIOs keep the largest buffer they ever held: a connection that
uploaded (a 256 KiB receive) or downloaded (64 KiB sealed at once) and then idles
keeps it.  The loop counts such connections' bytes (TLSConnection.grown) and,
past its budget, closes the one idle longest.  h11 reads every answer.
"""

import os
import socket

import h11
import pytest

from minihttp import tls
from minihttp.app import App
from minihttp.eventloop import WAITING, EventLoop
from minihttp.limits import KiB, MiB, TLS_IDLE_LEAN
from minihttp.server import HTTPServer
from support import WAIT, closes, h11_read, receiver, wait_until

pytestmark = pytest.mark.timeout(90)


class Server:
    """An in-process TLS minihttp with an idle budget of its own."""

    def __init__(self, tmp_path, pki, budget, keepalive=30.0):
        root = tmp_path / 'root'
        root.mkdir()
        (root / 'small.txt').write_bytes(b'small\n')
        (root / 'big.bin').write_bytes(os.urandom(1 * MiB))
        protocol = HTTPServer(App(str(root), str(tmp_path / 'uploads')), access_log=False,
                              head_timeout=5.0, body_timeout=5.0, keepalive_timeout=keepalive)
        self.loop = EventLoop('127.0.0.1', 0, protocol, threads=4, tls_idle_budget=budget,
                              context=tls.server_context(pki['cert'], pki['key']))
        self.loop.start()
        self.port = self.loop.address[1]
        self.client = tls.client_context(pki['cert'])
        self.socks = []

    def connect(self):
        raw = socket.create_connection(('127.0.0.1', self.port), timeout=WAIT)
        sock = self.client.wrap_socket(raw, server_hostname='localhost')
        self.socks.append(sock)
        return sock

    def served(self, sock):
        """The loop's Connection for our client socket ``sock``."""
        port = sock.getsockname()[1]
        found = [conn for conn in list(self.loop.connections) if conn.peer[1] == port]
        return found[0] if found else None

    def counted(self):
        """{client socket: bytes counted} for the idle connections the loop counts."""
        return {sock: conn.counted for sock in self.socks
                if (conn := self.served(sock)) is not None and conn.counted}

    def stop(self):
        for sock in self.socks:
            sock.close()
        self.loop.stop(0.5)


@pytest.fixture
def make(tmp_path, pki):
    made = []

    def make(budget, keepalive=30.0):
        made.append(Server(tmp_path, pki, budget, keepalive))
        return made[-1]
    yield make
    for server in made:
        server.stop()
        assert not server.loop._grown and server.loop._grown_bytes == 0


def exchange(sock, method, target, body=b''):
    """One request on a kept-alive connection, its answer read by h11."""
    client = h11.Connection(h11.CLIENT)
    headers = [('Host', 'localhost')]
    if method in ('PUT', 'POST'):
        headers.append(('Content-Length', str(len(body))))
    data = client.send(h11.Request(method=method, target=target, headers=headers))
    if body:
        data += client.send(h11.Data(data=body))
    sock.sendall(data + client.send(h11.EndOfMessage()))
    answer = h11_read(client, receiver(sock))
    assert answer.kept
    return answer


def download(server):
    """A connection that fetched 1 MiB (sealed 64 KiB at a time), now idle and counted."""
    sock = server.connect()
    answer = exchange(sock, 'GET', '/big.bin')
    assert answer.status == 200 and len(answer.body) == 1 * MiB
    wait_until(lambda: sock in server.counted(), 'the idle connection counted')
    return sock


def test_an_upload_leaves_an_idle_connection_counted_with_what_its_buffers_hold(make):
    server = make(64 * MiB)
    sock = server.connect()
    body = os.urandom(1 * MiB)
    answer = exchange(sock, 'PUT', '/echo', body)
    assert answer.status == 200 and answer.body == body
    wait_until(lambda: sock in server.counted(), 'the idle connection counted')
    conn = server.served(sock)
    # The BIOs were given a receive of far more than a fresh connection's, and an
    # answer's piece: what the loop counts is exactly that, and all it counts.
    assert conn.counted == conn.tls.grown > TLS_IDLE_LEAN
    assert server.loop._grown_bytes == conn.counted
    # Readable again: no longer counted while it is served; counted again once idle.
    assert exchange(sock, 'GET', '/small.txt').body == b'small\n'
    wait_until(lambda: server.counted().get(sock) == conn.tls.grown, 'counted again')


def test_fresh_and_small_idle_connections_are_not_counted(make):
    server = make(1)      # any counted connection would close every other one
    fresh = server.connect()
    small = server.connect()
    assert exchange(small, 'GET', '/small.txt').body == b'small\n'
    big = download(server)
    assert server.counted() == {big: server.served(big).tls.grown}
    for sock in (fresh, small):
        assert server.served(sock).tls.grown < TLS_IDLE_LEAN
        assert exchange(sock, 'GET', '/small.txt').status == 200


def test_past_the_budget_the_longest_idle_goes_and_the_sum_stays_bounded(make):
    server = make(150 * KiB)      # two downloads' buffers (~66 KiB each), not three
    first, second = download(server), download(server)
    held = server.counted()
    assert set(held) == {first, second} and sum(held.values()) <= 150 * KiB
    third = download(server)
    assert closes(first)          # idle longest: closed, with close_notify first
    held = server.counted()
    assert set(held) == {second, third}
    assert server.loop._grown_bytes == sum(held.values()) <= 150 * KiB
    for sock in (second, third):
        assert exchange(sock, 'GET', '/small.txt').body == b'small\n'


def test_a_connection_active_again_is_idle_from_then_and_not_closed(make):
    server = make(150 * KiB)
    first, second = download(server), download(server)
    # The first asks again: it has been idle for less time than the second now.
    assert exchange(first, 'GET', '/small.txt').status == 200
    wait_until(lambda: list(server.loop._grown) == [server.served(second),
                                                     server.served(first)],
               'the first counted again, after the second')
    third = download(server)
    assert closes(second)
    assert set(server.counted()) == {first, third}
    assert exchange(first, 'GET', '/small.txt').body == b'small\n'


def test_a_budget_smaller_than_one_connection_keeps_the_newest(make):
    server = make(1)
    first = download(server)
    second = download(server)
    assert closes(first)
    assert set(server.counted()) == {second}
    assert exchange(second, 'GET', '/small.txt').status == 200


@pytest.mark.parametrize('end', ['close', 'reset', 'keepalive'])
def test_the_count_follows_a_counted_connection_that_ends(make, end):
    server = make(64 * MiB, keepalive=1.0 if end == 'keepalive' else 30.0)
    sock = download(server)
    if end == 'reset':
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\1\0\0\0\0\0\0\0')
        sock.close()
    elif end == 'close':
        sock.close()
    wait_until(lambda: not server.loop.connections, 'the connection closed by the loop')
    assert not server.loop._grown and server.loop._grown_bytes == 0


def test_a_counted_connection_closes_with_a_stopping_server(make):
    server = make(64 * MiB)
    sock = download(server)
    server.loop.stop(0.5)
    assert closes(sock)
    assert not server.loop._grown and server.loop._grown_bytes == 0



def test_a_counted_connection_busy_when_its_turn_comes_is_uncounted_not_closed(make):
    server = make(150 * KiB)
    first = download(server)
    body = os.urandom(100 * KiB)
    first.sendall(b'PUT /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n'
                  % len(body) + body[:1000])
    wait_until(lambda: server.served(first).head_since is None
               and server.served(first).state is not WAITING, 'the upload begun')
    second, third = download(server), download(server)
    # The first came first, busy: out of the count, and open; nothing was closed.
    assert set(server.counted()) == {second, third}
    assert len(server.loop.connections) == 3
    first.sendall(body[1000:])
    answer = h11_read(h11_put_client(len(body)), receiver(first))
    assert answer.status == 200 and answer.body == body


def h11_put_client(length):
    """An h11 client that has sent a PUT of ``length`` bytes (to read its answer)."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method='PUT', target='/echo', headers=[
        ('Host', 'localhost'), ('Content-Length', str(length))]))
    client.send(h11.Data(data=bytes(length)))
    client.send(h11.EndOfMessage())
    return client
