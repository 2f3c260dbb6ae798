"""The block client's only word that a stream was kept is the server's close.  Over TLS a
close that anyone on the path can forge (a bare TCP FIN) is no word at all: the server ends
a kept stream with its close_notify, and the client says Sent only after one (RFC 8446
section 6.1).  A client stopped by a signal before that word exits 1, not 0."""

import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading

import pytest

from minihttp import tls
from support import LISTENING, REPO, WAIT, bio_handshake, run_minihttp

pytestmark = pytest.mark.timeout(60)

BOOK = [b'Beautiful is better than ugly.', b'Explicit is better than implicit.',
        b'Simple is better than complex.']


def blocks(*payloads):
    return b''.join(struct.pack('!I', len(p)) + p for p in payloads)


def stream_ends(data):
    """Whether ``data`` holds a whole block stream, up to its empty block."""
    at = 0
    while len(data) >= at + 4:
        (length,) = struct.unpack_from('!I', data, at)
        if not length:
            return True
        at += 4 + length
    return False


def close_of_a_stream(port, client_context, data, fin=False):
    """Send ``data`` on the block port over TLS as the block client does (no half-close:
    the server's close ends our read; with ``fin``, TCP's end follows it, as a FIN
    forged on the path would) and say how the server closed: 'close_notify', or 'no
    close_notify' for the bare TCP end a client's TLS takes as an error."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(incoming, outgoing, server_hostname='localhost')
    with socket.create_connection(('127.0.0.1', port), timeout=WAIT) as raw:
        bio_handshake(client, incoming, outgoing, raw)
        client.write(data)
        raw.sendall(outgoing.read())
        if fin:
            raw.shutdown(socket.SHUT_WR)
        while got := raw.recv(65536):        # up to the server's FIN
            incoming.write(got)
    incoming.write_eof()
    try:
        while client.read(65536):
            pass
    except ssl.SSLEOFError:
        return 'no close_notify'
    return 'close_notify'


def test_a_kept_stream_ends_with_close_notify_and_a_cut_one_without(minihttp, pki, tmp_path):
    server = minihttp('blocks', '-p', 0, '--save', tmp_path / 'saved', '--head-timeout', 0.5,
                      '--tls-cert', pki['cert'], '--tls-key', pki['key'], listening=LISTENING)
    context = tls.client_context(pki['cert'])
    whole = blocks(*BOOK, b'')
    assert close_of_a_stream(server.port, context, whole) == 'close_notify'
    server.wait_for_line('end of stream after 3 blocks')
    # Cut inside the empty block's length, by a FIN or by the header's deadline: the
    # server closes with no word of a kept stream.
    assert close_of_a_stream(server.port, context, whole[:-2], fin=True) == 'no close_notify'
    server.wait_for_line('stream cut inside a block header')
    assert close_of_a_stream(server.port, context, whole[:-2]) == 'no close_notify'
    server.wait_for_line('block header not complete within')
    assert len(list((tmp_path / 'saved').iterdir())) == 1


def test_the_block_client_takes_no_bare_tcp_end_for_a_kept_stream(pki):
    """A peer that reads the whole stream and then ends TCP without close_notify (what a
    forged FIN looks like): the client cannot know the stream was kept, and says so."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki['cert'], pki['key'])
    listener = socket.create_server(('127.0.0.1', 0))
    listener.settimeout(WAIT)
    read = bytearray()

    def serve_once():
        raw, _ = listener.accept()
        with context.wrap_socket(raw, server_side=True) as conn:
            conn.settimeout(WAIT)
            while not stream_ends(read):
                got = conn.recv(65536)
                if not got:
                    break
                read.extend(got)
            conn.shutdown(socket.SHUT_RDWR)    # SSLSocket's: TCP's end, no close_notify

    thread = threading.Thread(target=serve_once)
    thread.start()
    try:
        done = run_minihttp('blocks', '-c', '--tls', '--cafile', pki['cert'], '-p',
                            listener.getsockname()[1], 'localhost', timeout=WAIT)
    finally:
        thread.join(WAIT)
        listener.close()
    assert stream_ends(read)                  # the whole stream went ...
    assert done.returncode == 1, done.stdout  # ... but whether it was kept is unknown
    assert b'Sent' not in done.stdout
    assert b'close_notify' in done.stderr
    assert b'Traceback' not in done.stderr


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_a_block_client_stopped_mid_stream_says_so_and_exits_1(sig):
    """Ctrl-C (or SIGTERM, as `timeout` sends) while the client sends: a server's stop is
    status 0, but a client's stream was not kept, and `blocks -c --file F && rm F` must
    not go on."""
    listener = socket.create_server(('127.0.0.1', 0))
    listener.settimeout(WAIT)
    client = subprocess.Popen(
        [sys.executable, '-m', 'minihttp', 'blocks', '-c', '-p', str(listener.getsockname()[1]),
         '--file', '/dev/zero'], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(WAIT)
            assert conn.recv(65536)         # it is sending: past its connect
            client.send_signal(sig)         # (we read no more: it is held in its send)
            out, err = client.communicate(timeout=WAIT)
    finally:
        listener.close()
        if client.poll() is None:
            client.kill()
            client.communicate()
    assert client.returncode == 1, err
    assert b'interrupted before the server said the stream was kept' in err
    assert b'Sent' not in out and b'Traceback' not in err


FORM = (b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="f.bin"\r\n\r\n'
        + b'f' * 50_000 + b'\r\n--b0undary--\r\n')
CUT_BODIES = {
    # a chunk's data cut: the bytes that came were written (a resumable append keeps them)
    'chunked': (b'PUT /uploads/cut.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: '
                b'chunked\r\n\r\n5\r\nfirst\r\n10000\r\n' + b'x' * 1000, 1005,
                ' (1 chunk, no last chunk)'),
    # a form's body is read in 64 KiB pieces: one cut short is counted too
    'form': (b'POST /uploads/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; '
             b'boundary=b0undary\r\nContent-Length: %d\r\n\r\n' % len(FORM) + FORM[:40_000],
             40_000, ''),
}


@pytest.mark.parametrize('kind', CUT_BODIES)
def test_a_body_cut_mid_piece_is_logged_with_every_byte_that_came(serve, tmp_path, kind):
    sent, received, chunks = CUT_BODIES[kind]
    server = serve('--uploads', str(tmp_path / 'up'))
    with socket.create_connection(('127.0.0.1', server.port), timeout=WAIT) as sock:
        sock.sendall(sent)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b''           # no answer (RFC 9112 section 8), then the end
    server.wait_for_line(f'"client left: connection closed after {received} bytes of the '
                         f'body{re.escape(chunks)}"$', stream='stderr')
    assert not list((tmp_path / 'up').rglob('*.bin'))
