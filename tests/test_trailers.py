"""Trailers both ways at the application: /headers shows a request's, /echo sends them back,
and a file's Repr-Digest goes in the trailer section when the client says TE: trailers.

And a request's trailer section as the chunked body reader reads it (RFC 9112
section 7.1.2): the header grammar, bounded like a head (MAX_TRAILER bytes,
MAX_TRAILER_FIELDS lines), kept apart from the header fields (``request.get``
never sees them), fields that cannot be trailers (RFC 9110 section 6.5.1)
dropped, and shown in the framing record within RECORDED_TRAILER bytes; the
trailers a response's last chunk carried are in its record too.

Raw sockets send the trailers (curl cannot); h11 reads the responses, trailers
included, as the independent oracle.
"""

import base64
import hashlib
import os

import h11
import pytest
from hypothesis import given, strategies as st

from minihttp.bodies import open_body
from minihttp.errors import HTTPError
from minihttp.framing import StreamReader
from minihttp.limits import MAX_TRAILER, MAX_TRAILER_FIELDS, RECORDED_TRAILER
from minihttp.records import (body_dict, body_facts, http_record, public, response_facts,
                              trailer_facts)
from minihttp.request import read_request
from minihttp.transfer import CHUNKED_BODY, NOT_TRAILERS, content_length
from support import (FakeSocket, RawClient, Served, chunked, exchange, framing_records,
                     request_bytes, wait_until)

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


# -- the trailer section as the chunked body reader reads it ----------------------------------

HEAD = b'PUT /x HTTP/1.1\r\nHost: h\r\nX-Sum: head\r\nTransfer-Encoding: chunked\r\n\r\n'


def read_with_trailers(section):
    """A request whose chunked body ends in ``section`` (trailer lines, then CRLF), read whole."""
    reader = StreamReader(FakeSocket(HEAD + b'2\r\nhi\r\n0\r\n' + section, 3), 64)
    request = read_request(reader)
    request.body = open_body(request, reader)
    assert request.trailers == []                # nothing before the body is read
    assert request.body.read() == b'hi'
    return request


def test_trailers_are_the_requests_and_never_merged_into_its_fields():
    request = read_with_trailers(b'X-Sum: 2\r\nContent-Digest: sha-256=:abc=:\r\n\r\n')
    assert request.trailers == [('X-Sum', '2'), ('Content-Digest', 'sha-256=:abc=:')]
    assert request.trailers is request.body.trailers
    # RFC 9112 section 7.1.2: a recipient MUST NOT merge them into the header section.
    assert request.get('X-Sum') == 'head' and request.get('Content-Digest') is None
    assert request.body.ignored_trailers == ()


def test_fields_that_cannot_be_trailers_are_dropped():
    request = read_with_trailers(b'Content-Length: 5\r\nX-Ok: 1\r\nHOST: evil\r\n'
                           b'Transfer-Encoding: gzip\r\nAuthorization: Basic x\r\n\r\n')
    assert request.trailers == [('X-Ok', '1')]
    assert request.body.ignored_trailers == ['Content-Length', 'HOST', 'Transfer-Encoding',
                                             'Authorization']
    assert {'content-length', 'transfer-encoding', 'trailer', 'host'} <= NOT_TRAILERS


def test_a_request_without_a_chunked_body_has_no_trailers():
    reader = StreamReader(FakeSocket(b'PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi'))
    request = read_request(reader)
    assert request.trailers == []
    request.body = open_body(request, reader)
    assert request.body.read() == b'hi' and request.trailers == []


@pytest.mark.parametrize('section, status', [
    (b'X: ' + b'v' * (MAX_TRAILER - 5) + b'\r\n\r\n', None),     # exactly MAX_TRAILER bytes
    (b'X: ' + b'v' * (MAX_TRAILER - 4) + b'\r\n\r\n', 431),      # one more
    (b''.join(b'X-%d: 1\r\n' % n for n in range(MAX_TRAILER_FIELDS)) + b'\r\n', None),
    (b''.join(b'X-%d: 1\r\n' % n for n in range(MAX_TRAILER_FIELDS + 1)) + b'\r\n', 431),
    (b'X: 1\r\n folded\r\n\r\n', 400),         # obs-fold (RFC 9112 section 5.2)
    (b'X : 1\r\n\r\n', 400),                   # whitespace before the colon (section 5.1)
    (b'X: 1\n\r\n', 400),                      # a bare LF ends no line here (section 2.2)
    (b'no colon\r\n\r\n', 400),
])
def test_the_trailer_section_has_the_header_grammar_and_its_limits(section, status):
    if status is None:
        assert read_with_trailers(section).trailers
        return
    with pytest.raises(HTTPError) as info:
        read_with_trailers(section)
    assert info.value.status == status and info.value.close


def test_a_record_keeps_trailer_fields_within_its_bytes():
    # Records are public: a digest's value is shown, any other value is "*".
    request = read_with_trailers(b'X-Secret: 2\r\nContent-Digest: sha-256=:abc=:\r\n\r\n')
    assert body_dict(body_facts(request.body))['trailer_fields'] == [
        ['X-Secret', '*'], ['Content-Digest', 'sha-256=:abc=:']]
    many = [('Repr-Digest', 'v' * 100) for n in range(MAX_TRAILER_FIELDS)]
    count, kept = trailer_facts(many)
    assert count == MAX_TRAILER_FIELDS and 0 < len(kept) < count
    assert sum(len(name) + len(value) for name, value in kept) <= RECORDED_TRAILER
    assert kept[-1][1].endswith('...')          # the value that did not fit, cut and marked
    assert trailer_facts([('Repr-Digest', 'v' * 10_000)])[1][0][1].endswith('...')


@given(st.lists(st.tuples(st.sampled_from(['Content-Digest', 'repr-digest', 'X-a']),
                          st.text('v', max_size=300)),
                max_size=MAX_TRAILER_FIELDS))
def test_a_record_never_keeps_more_than_its_bytes_of_trailers(fields):
    count, kept = trailer_facts(fields)
    assert count == len(fields)
    assert sum(len(name) + len(value) for name, value in kept) <= RECORDED_TRAILER
    shown = [(name, value if name.lower().endswith('digest') else '*') for name, value in fields]
    whole = [field for field in kept if field in shown]
    assert whole == shown[:len(whole)] and len(kept) - len(whole) <= 1


# -- the trailers a response sent, in its record ----------------------------------------------

def response_record(trailers, framing=CHUNKED_BODY, chunks=2, sent=10):
    return public(http_record(('127.0.0.1', 1), 0.0, None, None,
                              response_facts(200, framing, chunks, sent, trailers)))


def test_a_responses_record_keeps_the_trailers_its_last_chunk_carried():
    record = response_record([('Repr-Digest', 'sha-256=:abc=:'), ('X-Secret', 'v')])
    assert record['response'] == {
        'sent': True, 'done': True, 'status': 200, 'framing': 'chunked', 'chunks': 2, 'bytes': 10, 'trailers': 2,
        'trailer_fields': [['Repr-Digest', 'sha-256=:abc=:'], ['X-Secret', '*']]}
    assert record['words'].endswith(
        'response 200 by chunked (2 chunks, 10 B, 2 trailers (Repr-Digest, X-Secret))')
    none = response_record(())
    assert (none['response']['trailers'], none['response']['trailer_fields']) == (0, [])
    assert none['words'].endswith('(2 chunks, 10 B, 0 trailers)')
    # Not chunked: no place for trailers, and the record names none.
    sized = response_record((), content_length(10), chunks=0)
    assert 'trailers' not in sized['response'] and 'trailer' not in sized['words']


def test_a_responses_record_keeps_its_trailers_within_its_bytes_and_counts_the_rest():
    many = [('Repr-Digest', 'v' * 100) for n in range(MAX_TRAILER_FIELDS)]
    record = response_record(many)
    kept = record['response']['trailer_fields']
    assert record['response']['trailers'] == MAX_TRAILER_FIELDS
    assert 0 < len(kept) < MAX_TRAILER_FIELDS
    assert sum(len(name) + len(value) for name, value in kept) <= RECORDED_TRAILER
    assert record['words'].endswith(
        f'{MAX_TRAILER_FIELDS} trailers ({", ".join(["Repr-Digest"] * len(kept))}, '
        f'+{MAX_TRAILER_FIELDS - len(kept)} more))')


def records_of(server, method, target, count=1):
    """The records of ``method target``, oldest first, once there are ``count`` of them (a
    record is added once its response went, perhaps after the client read it)."""
    found = []

    def recorded():
        found[:] = [r for r in framing_records(server.port) if r['request']
                    and (r['request']['method'], r['request']['target']) == (method, target)]
        return len(found) >= count
    wait_until(recorded, f'{count} records of {method} {target}')
    return found


def test_the_record_of_a_chunked_echo_shows_the_trailers_both_ways(server):
    digest = sha('sha-256', b'hello world')
    reply = exchange(server.port, 'PUT', '/echo?trailed', ['Transfer-Encoding: chunked'],
                     chunked(b'hello ', b'world', trailers=[f'Content-Digest: {digest}',
                                                             'X-Secret: s3cret']))
    assert reply.trailers == [('content-digest', digest), ('x-secret', 's3cret')]
    record, = records_of(server, 'PUT', '/echo?*')
    fields = [['Content-Digest', digest], ['X-Secret', '*']]   # a digest's value, others *
    assert (record['request']['body']['trailers'],
            record['request']['body']['trailer_fields']) == (2, fields)
    assert (record['response']['framing'], record['response']['trailers'],
            record['response']['trailer_fields']) == ('chunked', 2, fields)
    assert record['words'] == (
        f'head {record["request"]["head"]} B by CRLFCRLF; '
        'body chunked: 2 chunks, 11 B, 2 trailers (Content-Digest, X-Secret); '
        'response 200 by chunked (2 chunks, 11 B, 2 trailers (Content-Digest, X-Secret))')
    assert 's3cret' not in str(record)


def test_the_record_of_a_file_sent_with_its_digest_as_a_trailer_shows_it(server):
    data = put_file(server, 'recorded.bin', 3 * MiB + 1)
    asked = [*TRAILERS, 'Want-Repr-Digest: sha-256=1']
    reply = exchange(server.port, 'GET', '/recorded.bin', asked)
    assert reply.trailers == [('repr-digest', sha('sha-256', data))]
    response = records_of(server, 'GET', '/recorded.bin')[0]['response']
    assert response['framing'] == 'chunked' and response['bytes'] == len(data)
    assert (response['trailers'], response['trailer_fields']) == (
        1, [['Repr-Digest', sha('sha-256', data)]])
    # Asked again, the digest is known and goes in the head: no trailers to record.
    assert 'repr-digest' in exchange(server.port, 'GET', '/recorded.bin', asked).headers
    again = records_of(server, 'GET', '/recorded.bin', 2)[1]
    assert again['response']['framing'] == 'content-length'
    assert 'trailers' not in again['response'] and 'trailer' not in again['words']
