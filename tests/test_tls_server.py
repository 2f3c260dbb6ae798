"""TLS served by the event loop and the command line: real clients (curl, requests, the
block client) over TLS, the handshake driven in the loop (its deadline, floods, resets at
every step), and the clear answers to plain HTTP on a TLS port and TLS on a plain one."""

import hashlib
import json
import os
import socket
import ssl
import struct
import threading

import pytest
import requests

from minihttp import tls
from minihttp.app import App
from minihttp.eventloop import HANDSHAKE, EventLoop
from minihttp.server import HTTPServer
from support import (HTTP_LISTENING, LISTENING, WAIT, Client, bio_handshake, curl, free_port, get,
                     read_reply, run_minihttp, sha256_file, wait_until)

pytestmark = pytest.mark.timeout(90)

BIG = 3 * 1024 * 1024 + 17


class TLSServer:
    """An in-process TLS minihttp: its loop, port, root and a client context trusting it."""

    def __init__(self, tmp_path, pki, head_timeout=5.0, keepalive_timeout=5.0):
        self.root = tmp_path / 'root'
        self.root.mkdir()
        (self.root / 'index.html').write_bytes(b'<p>over TLS</p>\n')
        self.big = self.root / 'big.bin'
        self.big.write_bytes(os.urandom(BIG))
        self.uploads = tmp_path / 'uploads'
        app = App(str(self.root), str(self.uploads))
        protocol = HTTPServer(app, access_log=False, head_timeout=head_timeout,
                              body_timeout=5.0, keepalive_timeout=keepalive_timeout)
        self.loop = EventLoop('127.0.0.1', 0, protocol, threads=4,
                              context=tls.server_context(pki['cert'], pki['key']))
        self.loop.start()
        self.port = self.loop.address[1]
        self.url = f'https://localhost:{self.port}'
        self.cert = pki['cert']
        self.client = tls.client_context(pki['cert'])

    def connect(self):
        """A TLS client socket to the server, handshake done."""
        raw = socket.create_connection(('127.0.0.1', self.port), timeout=WAIT)
        return self.client.wrap_socket(raw, server_hostname='localhost')


@pytest.fixture
def server(tmp_path, pki):
    served = TLSServer(tmp_path, pki)
    yield served
    served.loop.stop(0.5)


def client_hello():
    """The bytes of a real ClientHello, made by an SSLObject that sends nowhere."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname='localhost')
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def descriptors():
    return len(os.listdir('/proc/self/fd'))


def reset(sock):
    """Close with a reset (SO_LINGER 0), as a client that crashes."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    sock.close()


def assert_back(server, fds, threads):
    wait_until(lambda: not server.loop.connections, 'every connection closed by the loop')
    wait_until(lambda: descriptors() <= fds and threading.active_count() <= threads,
               f'descriptors back to {fds} and threads to {threads}')


# -- real clients -------------------------------------------------------------------

def test_curl_gets_a_file_and_ranges_over_tls(server, tmp_path):
    out = tmp_path / 'got.bin'
    done = curl('--cacert', server.cert, '-o', out, f'{server.url}/big.bin')
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == server.big.read_bytes()
    done = curl('--cacert', server.cert, '-r', '10-19', f'{server.url}/big.bin')
    assert done.stdout == server.big.read_bytes()[10:20]
    done = curl('--cacert', server.cert, '-r', '0-3,100-103', '-i', f'{server.url}/big.bin')
    assert b'206' in done.stdout.split(b'\r\n', 1)[0]
    assert b'multipart/byteranges' in done.stdout
    assert server.big.read_bytes()[100:104] in done.stdout


@pytest.mark.parametrize('how', [('-T', '{path}'), ('-H', 'Transfer-Encoding: chunked',
                                                     '-T', '{path}'),
                                 ('-F', 'file=@{path};filename=form.bin')])
def test_curl_uploads_over_tls(server, tmp_path, how):
    payload = tmp_path / 'payload.bin'
    payload.write_bytes(os.urandom(300_000))
    name = 'form.bin' if how[0] == '-F' else 'put.bin'
    url = f'{server.url}/uploads/' + ('' if how[0] == '-F' else name)
    done = curl('--cacert', server.cert, '--fail', *[arg.format(path=payload) for arg in how],
                url)
    assert done.returncode == 0, done.stderr
    assert sha256_file(server.uploads / name) == sha256_file(payload)


def test_requests_verifies_the_certificate_and_puts_and_gets(server):
    with requests.Session() as session:
        put = session.put(f'{server.url}/uploads/r.txt', data=b'x' * 100_000,
                          verify=server.cert, timeout=WAIT)
        assert put.status_code == 201, put.text
        got = session.get(f'{server.url}/uploads/r.txt', verify=server.cert, timeout=WAIT)
        assert got.content == b'x' * 100_000
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(server.url, timeout=WAIT)      # the system's CAs do not know it


def test_three_pipelined_requests_in_one_tls_write_are_answered(server):
    with server.connect() as sock:
        assert sock.selected_alpn_protocol() in (None, 'http/1.1')
        sock.sendall(get('/index.html') * 2 + get('/big.bin'))    # one record
        file = sock.makefile('rb')
        replies = [read_reply(file) for _ in range(3)]
        assert [reply.status for reply in replies] == [200, 200, 200]
        assert replies[0].body == replies[1].body == b'<p>over TLS</p>\n'
        assert replies[2].body == server.big.read_bytes()
        sock.sendall(get('/index.html'))          # and the connection is kept
        assert read_reply(file).status == 200


class Gathered:
    """A transport that keeps what a TLSConnection sends, to go out in one write later."""

    def __init__(self):
        self.data = bytearray()

    def sendall(self, data, flags=0):
        self.data += data

    def send(self, data, flags=0):
        self.data += data
        return len(data)


def test_a_body_in_the_record_after_its_head_is_read_at_once(server):
    """The head in one record, the body in the next, in one TCP write: reading the head
    leaves the body's record held by TLS, which the socket never announces.  The body
    must be read from there, not waited for until its deadline."""
    body = b'x' * 1000
    raw = socket.create_connection(('127.0.0.1', server.port), timeout=WAIT)
    with raw:
        conn = tls.TLSConnection(raw, server.client, server_side=False,
                                 server_hostname='localhost')
        conn.do_handshake()
        gathered = Gathered()
        conn.use(gathered)
        conn.sendall(b'PUT /uploads/two.bin HTTP/1.1\r\nHost: localhost\r\n'
                     b'Content-Length: %d\r\n\r\n' % len(body))
        conn.sendall(body)
        assert gathered.data.count(b'\x17\x03\x03') >= 2     # two records at least
        conn.use(raw)
        raw.sendall(gathered.data)
        reply = read_reply(conn.makefile('rb') if hasattr(conn, 'makefile')
                           else socket.SocketIO(conn, 'rb'))
    assert reply.status == 201          # at once: body_timeout is 5 s, WAIT shorter


def test_a_client_that_half_closes_after_its_request_reads_its_answer_to_a_clean_end(server):
    """A client may end its side after its request (shutdown(SHUT_WR)) without a
    close_notify, and read on: it gets the whole answer, then the server's close_notify,
    not a fatal alert after the last byte (OpenSSL 3 answers a bare TCP end with
    decode_error unless told to take it as the end).  The client is the stdlib's."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = server.client.wrap_bio(incoming, outgoing, server_hostname='localhost')
    received = bytearray()
    with socket.create_connection(('127.0.0.1', server.port), timeout=WAIT) as raw:
        bio_handshake(client, incoming, outgoing, raw)
        raw.sendall(outgoing.read())
        client.write(b'GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n')
        raw.sendall(outgoing.read())
        raw.shutdown(socket.SHUT_WR)        # the TCP stream's end alone
        while got := raw.recv(65536):       # up to the server's close
            received += got
    incoming.write(bytes(received))
    incoming.write_eof()
    answer = bytearray()
    while got := client.read(65536):        # b'' at close_notify; an alert raises
        answer += got
    assert answer.startswith(b'HTTP/1.1 200 ')
    assert answer.endswith(b'<p>over TLS</p>\n')


def test_part_of_the_next_record_with_a_request_starts_the_head_timeout(tmp_path, pki):
    """The first bytes of the next request's record, come with a request: its head has
    begun, and gets --head-timeout (a 408) from them, not --keepalive-timeout."""
    served = TLSServer(tmp_path, pki, head_timeout=0.5, keepalive_timeout=60.0)
    try:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = served.client.wrap_bio(incoming, outgoing, server_hostname='localhost')
        with socket.create_connection(('127.0.0.1', served.port), timeout=WAIT) as raw:
            bio_handshake(client, incoming, outgoing, raw)
            raw.sendall(outgoing.read())
            request = b'GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n'
            client.write(request)
            first = outgoing.read()
            client.write(request)
            second = outgoing.read()
            raw.sendall(first + second[:3])     # a request, and 3 bytes of the next record
            received = bytearray()
            while got := raw.recv(65536):       # the server's close ends it (WAIT: a failure)
                received += got
        incoming.write(bytes(received))
        answers = bytearray()
        try:
            while got := client.read(65536):
                answers += got
        except ssl.SSLError:
            pass                                # a close without close_notify is fine here
    finally:
        served.loop.stop(0.5)
    assert answers.startswith(b'HTTP/1.1 200 ')
    assert b'HTTP/1.1 408 ' in answers


def test_100_continue_over_tls(server):
    body = os.urandom(50_000)
    with server.connect() as sock:
        sock.sendall(b'PUT /uploads/c.bin HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue'
                     b'\r\nContent-Length: %d\r\n\r\n' % len(body))
        file = sock.makefile('rb')
        assert read_reply(file).status == 100
        sock.sendall(body)
        reply = read_reply(file)
        assert reply.status == 201
        assert json.loads(reply.body)['sha256'] == hashlib.sha256(body).hexdigest()


# -- the handshake in the loop --------------------------------------------------------

def test_a_client_stalling_mid_handshake_holds_no_thread_and_meets_its_deadline(tmp_path, pki):
    served = TLSServer(tmp_path, pki, head_timeout=0.5)
    try:
        threads = threading.active_count()
        hello = client_hello()
        with socket.create_connection(('127.0.0.1', served.port), timeout=WAIT) as sock:
            sock.sendall(hello[:len(hello) // 2])
            wait_until(lambda: [conn.state for conn in served.loop.connections] == [HANDSHAKE],
                       'the connection waiting in its handshake')
            assert threading.active_count() == threads
            assert sock.recv(100) == b''             # closed by the deadline, nothing said
        wait_until(lambda: not served.loop.connections, 'the connection gone')
    finally:
        served.loop.stop(0.5)


def test_a_flood_of_half_hellos_leaves_descriptors_at_baseline(server, room_for):
    room_for(400)
    fds, threads = descriptors(), threading.active_count()
    half = client_hello()[:40]
    socks = [socket.create_connection(('127.0.0.1', server.port), timeout=WAIT)
             for _ in range(200)]
    for sock in socks:
        sock.sendall(half)
    wait_until(lambda: len(server.loop.connections) == 200, 'all 200 accepted')
    assert threading.active_count() == threads
    for sock in socks:
        sock.close()
    assert_back(server, fds, threads)
    with server.connect() as sock:                  # and the server still serves
        sock.sendall(get('/index.html'))
        assert read_reply(sock.makefile('rb')).status == 200


def reset_after_connect(server):
    reset(socket.create_connection(('127.0.0.1', server.port), timeout=WAIT))


def reset_mid_handshake(server):
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=WAIT)
    sock.sendall(client_hello())
    sock.recv(1)                    # the server's hello has begun
    reset(sock)


def reset_after_handshake(server):
    sock = server.connect()
    reset(sock)


def reset_mid_body(server):
    sock = server.connect()
    sock.sendall(b'PUT /uploads/cut.bin HTTP/1.1\r\nHost: localhost\r\n'
                 b'Content-Length: 1000000\r\n\r\n' + b'x' * 100_000)
    wait_until(lambda: any(conn.state != 'waiting' for conn in server.loop.connections),
               'the body on its way')
    reset(sock)


def reset_mid_response(server):
    sock = server.connect()
    sock.sendall(get('/big.bin'))
    assert sock.recv(1000)
    reset(sock)


@pytest.mark.parametrize('step', [reset_after_connect, reset_mid_handshake,
                                  reset_after_handshake, reset_mid_body, reset_mid_response])
def test_a_reset_at_each_step_leaves_descriptors_and_threads_at_baseline(server, step):
    with server.connect() as sock:       # the pool's threads started, a connection served
        sock.sendall(get('/index.html', 'HTTP/1.1', 'Connection: close'))
        assert read_reply(sock.makefile('rb')).status == 200
    wait_until(lambda: not server.loop.connections, 'the first connection closed')
    fds, threads = descriptors(), threading.active_count()
    step(server)
    assert_back(server, fds, threads)
    assert not list(server.uploads.glob('cut.bin'))


# -- the wrong scheme on either port --------------------------------------------------

def test_plain_http_on_the_tls_port_gets_400_in_clear_and_a_close(server):
    with Client(server.port) as client:
        reply = client.exchange(get('/index.html'))
        assert reply.status == 400
        assert tls.PLAIN_HTTP_LINE.encode() in reply.body
        client.assert_closed_after(reply)


def test_one_plain_byte_then_silence_on_the_tls_port_gets_the_plain_400_at_its_deadline(
        tmp_path, pki):
    """Too few bytes for OpenSSL to refuse ('G', then nothing): at the handshake's
    deadline the client still gets the clear 400 a whole plain request gets."""
    served = TLSServer(tmp_path, pki, head_timeout=0.5)
    try:
        with socket.create_connection(('127.0.0.1', served.port), timeout=WAIT) as sock:
            sock.sendall(b'G')
            answer = b''
            while True:
                piece = sock.recv(4096)
                if not piece:
                    break
                answer += piece
        assert answer.startswith(b'HTTP/1.1 400 '), answer
        assert tls.PLAIN_HTTP_LINE.encode() in answer
    finally:
        served.loop.stop(0.5)


def test_a_tls_hello_on_the_plain_port_is_logged_and_closed(serve):
    server = serve()
    with socket.create_connection(('127.0.0.1', server.port), timeout=WAIT) as sock:
        sock.sendall(client_hello())
        answer = b''
        while piece := sock.recv(4096):
            answer += piece
    assert answer.startswith(b'HTTP/1.1 400 ')
    assert tls.TLS_ON_PLAIN_LINE.encode() in answer
    server.wait_for_line('refused 400: a TLS handshake on the plain HTTP port', stream='stderr')


def test_an_unknown_ca_is_one_log_line_without_traceback(minihttp, pki):
    server = minihttp('serve', '--port', 0, '--block-port', 0, '--tls-cert', pki['cert'],
                      '--tls-key', pki['key'], listening=HTTP_LISTENING)
    done = curl(f'https://localhost:{server.port}/')          # the system's CAs
    assert done.returncode != 0
    server.wait_for_line(r'TLS handshake with 127\.0\.0\.1:\d+ failed: \S+', stream='stderr')
    server.stop()
    assert 'Traceback' not in server.output()


@pytest.mark.parametrize('junk', [
    b'\x17\x03\x03\x40\x00' + bytes(16384),   # a full application_data record failing its MAC
    b'\x15\x03\x03\x00\x02\x01\x5a' * 50,      # clear alerts after the handshake
], ids=['bad-mac-record', 'clear-alerts'])
def test_a_client_breaking_tls_after_the_handshake_costs_no_traceback(minihttp, pki, junk):
    server = minihttp('serve', '--port', 0, '--block-port', 0, '--tls-cert', pki['cert'],
                      '--tls-key', pki['key'], listening=HTTP_LISTENING)
    context = tls.client_context(pki['cert'])
    raw = socket.create_connection(('127.0.0.1', server.port), timeout=WAIT)
    with context.wrap_socket(raw, server_hostname='localhost') as sock:
        socket.socket.sendall(sock, junk)          # past TLS, on the TCP stream itself
        with pytest.raises((ssl.SSLError, OSError)):
            while sock.recv(4096):
                pass
            raise EOFError
    with context.wrap_socket(socket.create_connection(('127.0.0.1', server.port), timeout=WAIT),
                             server_hostname='localhost') as sock:
        sock.sendall(f'GET /after-the-junk HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n'
                     'Connection: close\r\n\r\n'.encode())
        assert sock.recv(12) == b'HTTP/1.1 404'

    server.wait_for_line('after-the-junk')
    server.stop()
    assert 'Traceback' not in server.output()


# -- the command line ---------------------------------------------------------------

def test_serve_over_tls_says_https_and_the_certificate(minihttp, pki):
    redirect = free_port()
    server = minihttp('serve', '--port', 0, '--block-port', free_port(), '--redirect-port',
                      redirect, '--tls-cert', pki['cert'], '--tls-key', pki['encrypted-key'],
                      '--tls-password-file', pki['password'], listening=HTTP_LISTENING)
    assert f'https://127.0.0.1:{server.port}/' in server.output()
    server.wait_for_line(r'^block server listening on 127\.0\.0\.1:\d+ \(TLS: blocks -c --tls\)$')
    facts = tls.certificate_facts(pki['cert'])
    server.wait_for_line(f'SHA-256 {facts.fingerprint}')
    done = curl('-i', f'http://127.0.0.1:{redirect}/a/b?c=1')
    assert done.stdout.startswith(b'HTTP/1.1 308 ')
    assert f'Location: https://127.0.0.1:{server.port}/a/b?c=1'.encode() in done.stdout
    done = curl('-L', '--cacert', pki['cert'], f'http://localhost:{redirect}/_minihttp/')
    assert done.returncode == 0 and done.stdout


@pytest.mark.parametrize('cert, key, said', [
    ('cert', 'other-key', 'other-key.pem: does not match'),
    ('password', 'key', 'password: holds no PEM certificate'),
    ('cert', 'encrypted-key', 'encrypted-key.pem: is encrypted, and there is no terminal'),
])
def test_a_bad_certificate_or_key_stops_serve_with_status_2_naming_the_file(pki, cert, key,
                                                                           said):
    done = run_minihttp('serve', '--port', 0, '--block-port', 0, '--tls-cert', pki[cert],
                        '--tls-key', pki[key], stdin=open(os.devnull), timeout=WAIT)
    assert done.returncode == 2
    assert said in done.stderr.decode()
    assert 'Traceback' not in done.stderr.decode()


def test_the_block_client_sends_a_file_over_tls_and_the_server_saves_it(minihttp, pki,
                                                                       tmp_path):
    saved = tmp_path / 'saved'
    server = minihttp('blocks', '-p', 0, '--save', saved, '--tls-cert', pki['cert'],
                      '--tls-key', pki['key'], listening=LISTENING)
    payload = tmp_path / 'payload.bin'
    payload.write_bytes(os.urandom(700_000))
    done = run_minihttp('blocks', '-c', '--tls', '--cafile', pki['cert'], '-p', server.port,
                        '--file', payload, 'localhost', timeout=WAIT)
    assert done.returncode == 0, done.stderr
    server.wait_for_line('end of stream')
    (stored,) = saved.glob('blocks-*.bin')
    assert sha256_file(stored) == sha256_file(payload)
    plain = run_minihttp('blocks', '-c', '-p', server.port, 'localhost', timeout=WAIT)
    assert plain.returncode == 1 and b'does not speak the block protocol' in plain.stderr


def test_two_workers_answer_over_tls(minihttp, pki):
    server = minihttp('serve', '--port', 0, '--block-port', 0, '--workers', 2, '--tls-cert',
                      pki['cert'], '--tls-key', pki['key'], listening=HTTP_LISTENING)
    for _ in range(6):
        done = curl('--cacert', pki['cert'], f'https://localhost:{server.port}/_minihttp/')
        assert done.returncode == 0, done.stderr
