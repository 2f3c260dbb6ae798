"""Trailers both ways at the application: /headers shows a request's, /echo sends them back,
and a file's Repr-Digest goes in the trailer section when the client says TE: trailers.

Raw sockets send the trailers (curl cannot); h11 reads the responses, trailers
included, as the independent oracle.
"""

import base64
import hashlib
import os

import h11
import pytest

from support import RawClient, Served, chunked, exchange, request_bytes

MiB = 1 << 20


def sha(algorithm, data):
    return f'{algorithm}=:{base64.b64encode(hashlib.new(algorithm.replace("-", ""), data).digest()).decode()}:'


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    top = tmp_path_factory.mktemp('trailers')
    (top / 'root').mkdir()
    served = Served(top / 'root', top / 'uploads')
    served.root = top / 'root'
    yield served
    served.stop()


def put_file(server, name, size):
    data = os.urandom(size)
    (server.root / name).write_bytes(data)
    return data


# -- request trailers at the application ------------------------------------------------

def test_headers_shows_the_trailer_section_after_the_head(server):
    reply = exchange(server.port, 'POST', '/headers',
                     ['Transfer-Encoding: chunked', 'Trailer: Checksum'],
                     chunked(b'hello', trailers=['Checksum: abc', 'X-Note:  two words ']))
    assert reply.status == 200
    text = reply.body.decode('latin-1')
    head, _, trailers = text.partition('\n\n')
    assert 'Transfer-Encoding: chunked\nTrailer: Checksum\n' in head
    assert trailers == '# trailer section (after the last chunk)\nChecksum: abc\nX-Note: two words\n'


@pytest.mark.parametrize('framing, body', [
    ('Transfer-Encoding: chunked', chunked(b'hello')),
    ('Content-Length: 5', b'hello'),
])
def test_headers_without_trailers_has_no_trailer_section(server, framing, body):
    reply = exchange(server.port, 'POST', '/headers', [framing], body)
    assert reply.status == 200
    assert '\n\n' not in reply.body.decode('latin-1')
    assert 'trailer section' not in reply.body.decode('latin-1')


def test_echo_sends_a_chunked_requests_trailers_back(server):
    reply = exchange(server.port, 'POST', '/echo', ['Transfer-Encoding: chunked'],
                     chunked(b'hello ', b'world', trailers=[
                         'Checksum: abc', 'Content-Type: text/x', 'X-Two: 2', 'Host: elsewhere']))
    assert reply.status == 200
    assert reply.headers['transfer-encoding'] == 'chunked'
    assert reply.body == b'hello world'
    # Content-Type and Host may not be trailers (RFC 9110 section 6.5.1): left out.
    assert reply.trailers == [('checksum', 'abc'), ('x-two', '2')]


def test_echo_without_trailers_and_with_content_length_sends_none(server):
    plain = exchange(server.port, 'POST', '/echo', ['Transfer-Encoding: chunked'],
                     chunked(b'abc'))
    assert plain.headers['transfer-encoding'] == 'chunked' and plain.trailers == []
    assert plain.raw.endswith(b'\r\n0\r\n\r\n')
    sized = exchange(server.port, 'PUT', '/echo', ['Content-Length: 3'], b'abc')
    assert sized.headers['content-length'] == '3' and sized.trailers == []


def test_echo_trailers_on_a_kept_connection(server):
    """The trailer section ends the response exactly: the next one on the connection parses."""
    with RawClient(server.port) as client:
        for n in range(3):
            client.send(request_bytes('POST', '/echo', ['Transfer-Encoding: chunked'],
                                      chunked(b'x' * n or b'-', trailers=['N: %d' % n])))
            reply = client.reply('POST')
            assert reply.trailers == [('n', str(n))]


# -- Repr-Digest as a trailer (TE: trailers) ------------------------------------------------------

TRAILERS = ['TE: trailers', 'Connection: TE']


def test_a_files_digest_goes_in_the_trailers_then_in_the_head(server):
    data = put_file(server, 'trailed.bin', 3 * MiB + 5)
    asked = [*TRAILERS, 'Want-Repr-Digest: sha-512=3']
    first = exchange(server.port, 'GET', '/trailed.bin', asked)
    assert first.status == 200 and first.body == data
    assert first.headers['transfer-encoding'] == 'chunked'
    assert first.headers['trailer'] == 'Repr-Digest'
    assert 'repr-digest' not in first.headers
    assert first.trailers == [('repr-digest', sha('sha-512', data))]
    # Now known for this very file: in the head, and the file goes by sendfile.
    second = exchange(server.port, 'GET', '/trailed.bin', asked)
    assert second.headers['content-length'] == str(len(data))
    assert second.headers['repr-digest'] == sha('sha-512', data) and second.trailers == []


@pytest.mark.parametrize('case, fields, version', [
    ('no TE: trailers', ['Want-Repr-Digest: sha-256=1'], 'HTTP/1.1'),
    ('HTTP/1.0', [*TRAILERS, 'Want-Repr-Digest: sha-256=1'], 'HTTP/1.0'),
    ('a range', [*TRAILERS, 'Want-Repr-Digest: sha-256=1', 'Range: bytes=0-9'], 'HTTP/1.1'),
])
def test_otherwise_the_digest_is_read_ahead_into_the_head(server, case, fields, version):
    name = f'ahead-{hashlib.sha256(case.encode()).hexdigest()[:8]}.bin'
    data = put_file(server, name, MiB + 1)
    with RawClient(server.port) as client:
        head = request_bytes('GET', f'/{name}', [*fields, 'Connection: close'])
        client.send(head.replace(b'HTTP/1.1', version.encode(), 1))
        reply = client.reply()
    assert reply.status in (200, 206)
    assert 'transfer-encoding' not in reply.headers
    assert reply.headers['repr-digest'] == sha('sha-256', data)
    assert reply.body == (data if reply.status == 200 else data[:10])


def test_a_small_file_gets_its_digest_in_the_head_even_with_te_trailers(server):
    data = put_file(server, 'small.txt', 100)
    reply = exchange(server.port, 'GET', '/small.txt', [*TRAILERS, 'Want-Repr-Digest: sha-256=1'])
    assert reply.headers['content-length'] == '100'
    assert reply.headers['repr-digest'] == sha('sha-256', data)


def test_a_file_cut_short_while_sent_ends_without_the_last_chunk(server):
    """The trailer would describe bytes never sent: the connection is cut instead."""
    put_file(server, 'shrinking.bin', 32 * MiB)
    with RawClient(server.port) as client:
        client.send(request_bytes('GET', '/shrinking.bin',
                                  [*TRAILERS, 'Want-Repr-Digest: sha-256=1', 'Connection: close']))
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method='GET', target='/', headers=[('Host', 'x')]))
        conn.send(h11.EndOfMessage())
        events = []
        while not any(isinstance(e, h11.Response) for e in events):
            conn.receive_data(client.sock.recv(65536))
            events.extend(iter(conn.next_event, h11.NEED_DATA))
        os.truncate(server.root / 'shrinking.bin', MiB)
        with pytest.raises(h11.RemoteProtocolError):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(client.sock.recv(1 << 20))
                assert not isinstance(event, h11.EndOfMessage)
