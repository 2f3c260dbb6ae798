"""A hostile client against this session's hot path: the answer memo's stat once per turn
of the loop, the TLS layer's receive path, and what the log says of a client that breaks
TLS after its handshake.  Plain and over TLS; each test forces its interleaving (no sleep)."""

import socket
import ssl
import struct
import threading
import time

import pytest

from minihttp import eventloop, files, tls
from support import (HTTP_LISTENING, WAIT, Site, get, resources, serve_args, temps,
                     wait_until)

pytestmark = pytest.mark.timeout(60)

PAGE = '/uploads/page.html'


def request(method, path, body=b''):
    head = f'{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n'
    if body or method == 'PUT':
        head += f'Content-Length: {len(body)}\r\n'
    return head.encode() + b'\r\n' + body


@pytest.fixture(params=['plain', 'tls'])
def gated(request, tmp_path, pki, monkeypatch):
    """A Site whose next poll that reports a client also reports the loop's wake-up (as it
    does when a pool thread gave a connection back just before: ``state['arm']``), and
    whose DELETEs wait for ``state['go']`` on their pool thread."""
    state = {'arm': False, 'go': threading.Event(), 'entered': threading.Event(), 'loop': None}
    real_poll = eventloop.Poller.poll

    def poll(poller, timeout):
        ready = real_poll(poller, timeout)
        loop = state['loop']
        if state['arm'] and loop is not None:
            wake = loop._wake_r.fileno()
            clients = [fd for fd, _ in ready if fd not in (wake, loop.sock.fileno())]
            if clients and wake not in [fd for fd, _ in ready]:
                state['arm'] = False
                ready = list(ready) + [(wake, eventloop.READABLE)]
        return ready
    monkeypatch.setattr(eventloop.Poller, 'poll', poll)
    site = Site(tmp_path, pki, request.param, monkeypatch)
    state['loop'] = site.loop
    app = site.protocol.app

    def gate(req):
        if req.method == 'DELETE':
            state['entered'].set()
            assert state['go'].wait(20), 'the loop never let the DELETE go'
        return app(req)
    site.protocol.app = gate
    site.state = state
    yield site
    state['go'].set()
    site.loop.stop(0.5)


def test_a_write_a_pool_thread_made_is_seen_by_the_request_pipelined_after_it(gated,
                                                                            monkeypatch):
    """DELETE then GET of the same page, in one write: the GET comes back from the pool
    with its connection and is answered in the loop.  If that happens in a turn whose
    stat of the page (another client's answer given again) came before the delete, the
    turn's stat must not stand for it: RFC 9112 section 9.3.2, a server answers
    pipelined requests in order, so the GET sees the DELETE (404), never the page."""
    site, state = gated, gated.state
    with site.client() as writer:
        writer.send(request('PUT', PAGE, b'a page\n'))
        assert writer.reply().status == 201
    held = files.Held.holds

    def holds(self, turn):
        found = held(self, turn)
        if state.get('hold') and threading.current_thread() is site.loop._thread:
            state['hold'] = False
            state['go'].set()       # the DELETE goes now, after this turn's stat ...
            wait_until(lambda: site.loop._returned, 'the DELETE given back')   # ... and is back
        return found
    monkeypatch.setattr(files.Held, 'holds', holds)
    with site.client() as reader, site.client() as deleter:
        reader.send(get(PAGE))
        assert reader.reply().body == b'a page\n'
        deleter.send(request('DELETE', PAGE) + get(PAGE))    # waits for 'go' on its thread
        assert state['entered'].wait(15)
        state['hold'] = state['arm'] = True
        reader.send(get(PAGE))                               # given again: the turn's stat
        assert reader.reply().body == b'a page\n'            # (it came before the DELETE)
        assert deleter.reply().status == 204
        assert deleter.reply().status == 404
    assert not state['arm'] and not state['hold']


# -- a client that breaks TLS after its handshake ---------------------------------------------

class RecordClient:
    """A TLS client between memory BIOs: the test chooses its records and their sends."""

    def __init__(self, port, cert):
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=WAIT)
        self.port = self.sock.getsockname()[1]
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = tls.client_context(cert).wrap_bio(self.incoming, self.outgoing,
                                                     server_hostname='localhost')
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                piece = self.sock.recv(65536)
                assert piece, 'the server closed during the handshake'
                self.incoming.write(piece)
        self.sock.sendall(self.outgoing.read())

    def record(self, plaintext):
        self.tls.write(plaintext)
        return self.outgoing.read()

    def fatal_alert(self):
        """The encrypted alert our side sends on a record failing its check."""
        self.incoming.write(b'\x17\x03\x03\x00\x20' + bytes(32))
        with pytest.raises(ssl.SSLError):
            self.tls.read(100)
        alert = self.outgoing.read()
        assert alert[:1] == b'\x17'         # TLS 1.3: an alert is an encrypted record
        return alert

    def until_closed(self):
        """Everything the server sends until it closes."""
        got = b''
        while piece := self.sock.recv(65536):
            got += piece
        return got


HEAD = b'GET /missing HTTP/1.1\r\nHost: localhost\r\n\r\n'
BREAKS = {
    'alert-after-request': lambda c: c.record(HEAD) + c.fatal_alert(),
    'bad-mac-request': lambda c: (lambda r: r[:-1] + bytes([r[-1] ^ 1]))(c.record(HEAD)),
    'junk-inside-a-head': lambda c: c.record(HEAD[:20]) + b'\x15\x03\x03\x00\x02\x02\x28',
    'junk-between-requests': lambda c: b'\x17\x03\x03\x00\x05hello',
}


@pytest.mark.parametrize('how', sorted(BREAKS))
def test_a_client_breaking_tls_after_its_handshake_is_one_log_line(serve, pki, how):
    """README: such a client is a client gone, said in one line without a traceback, as a
    failed handshake is; a line whatever it was doing, not only inside a body."""
    server = serve('--tls-cert', pki['cert'], '--tls-key', pki['key'])
    client = RecordClient(server.port, pki['cert'])
    client.sock.sendall(BREAKS[how](client))
    client.until_closed()
    client.sock.close()
    server.wait_for_line(rf'TLS with 127\.0\.0\.1:{client.port} broken: \S', stream='stderr')
    server.stop()
    output = server.output()
    assert 'Traceback' not in output
    assert output.count(f'127.0.0.1:{client.port}') == 1, output


# -- resets at every step ----------------------------------------------------------------------

def reset(sock):
    """Close with a RST (SO_LINGER 0): the client gone at once, nothing said."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    socket.socket.close(sock)


@pytest.mark.parametrize('scheme', ['plain', 'tls'])
def test_resets_at_every_step_leave_no_descriptor_thread_or_temporary_file(minihttp, pki,
                                                                          tmp_path, scheme):
    root, uploads = tmp_path / 'root', tmp_path / 'uploads'
    root.mkdir()
    (root / 'page.html').write_bytes(b'a page\n')
    (root / 'big.bin').write_bytes(bytes(4 << 20))
    options = ['--tls-cert', pki['cert'], '--tls-key', pki['key']] if scheme == 'tls' else []
    server = minihttp(*serve_args(str(root), str(uploads), '--threads', '2', *options),
                      listening=HTTP_LISTENING)
    context = tls.client_context(pki['cert']) if scheme == 'tls' else None

    def connect():
        sock = socket.create_connection(('127.0.0.1', server.port), timeout=WAIT)
        return sock if context is None else context.wrap_socket(sock,
                                                                server_hostname='localhost')

    def say(sock, data, answer=0):
        sock.sendall(data)
        while answer > 0:
            answer -= len(sock.recv(answer))
        reset(sock)

    put = b'PUT /uploads/up.bin HTTP/1.1\r\nHost: localhost\r\nContent-Length: 9000000\r\n\r\n'
    steps = [
        lambda: reset(socket.create_connection(('127.0.0.1', server.port), timeout=WAIT)),
        lambda: say(connect(), b''),
        lambda: say(connect(), b'GET /page.html HTTP/1.1\r\nHo'),
        lambda: say(connect(), get('/page.html') * 64),
        lambda: say(connect(), get('/big.bin'), 1000),
        lambda: say(connect(), get('/big.bin') * 8),
        lambda: say(connect(), put + bytes(300_000)),
        lambda: say(connect(), b'POST /echo HTTP/1.1\r\nHost: localhost\r\n'
                               b'Transfer-Encoding: chunked\r\n\r\n100\r\n' + bytes(100)),
        lambda: say(connect(), get('/_framing/stream'), 10),
    ]
    with connect() as sock:         # the loop and its pool running, this connection closed
        sock.sendall(get('/page.html', 'HTTP/1.1', 'Connection: close'))
        while sock.recv(65536):
            pass
    before = resources(server.pid)
    for _ in range(5):
        for step in steps:
            step()
    # (At most: the warm-up's descriptor may still have been open then, lingering.)
    wait_until(lambda: all(now <= then for now, then in zip(resources(server.pid), before)),
               f'back to {before} (descriptors, threads)')
    assert not temps(uploads)


# -- a head's deadline, when its first bytes are ciphertext ------------------------------------

@pytest.mark.parametrize('when', ['first-request', 'after-an-answer'])
def test_a_head_dribbled_as_ciphertext_is_held_to_the_head_timeout(serve, pki, when):
    """Over TCP a head's deadline runs from its first byte (--head-timeout); over TLS its
    first bytes are part of a record, no plaintext yet: they must start that deadline
    too, not renew the keep-alive one, or one byte sent every keep-alive timeout holds
    the connection for ever (a slowloris one layer down)."""
    server = serve('--tls-cert', pki['cert'], '--tls-key', pki['key'],
                   '--head-timeout', '1', '--keepalive-timeout', '3')
    client = RecordClient(server.port, pki['cert'])
    if when == 'after-an-answer':
        client.sock.sendall(client.record(HEAD))
        wait_until(lambda: client.sock.recv(65536), 'an answer')
    record = client.record(HEAD)
    client.sock.settimeout(0.25)        # the pace of the dribble, and the wait for the close
    began = time.monotonic()
    closed = False
    for byte in range(len(record) - 1):
        try:
            client.sock.sendall(record[byte:byte + 1])
            while client.sock.recv(65536):      # session tickets, a 408: until the close
                pass
            closed = True
        except socket.timeout:
            pass
        except OSError:
            closed = True
        if closed or time.monotonic() - began > 12:
            break
    took = time.monotonic() - began
    client.sock.close()
    assert closed, f'still open after {took:.1f} s of a head dribbled one byte at a time'
    # Said as over TCP: a 408 for a head not received in time, not an idle close.
    server.wait_for_line(r'^127\.0\.0\.1 - - \[[^]]+\] "-" 408 \d+ "timed out: request head '
                         'not received in time"$', stream='stderr')
