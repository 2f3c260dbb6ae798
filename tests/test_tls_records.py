"""The TLS records under each HTTP exchange (issue 16): records.tls_facts on a real
loopback TLS pair (tls.TLSConnection both ends, no server), the JSON a record gives
(``tls``) and the words --trace says, bounded however many records cross."""

import inspect
import json
import math
import os
import shutil
import socket
import ssl
import subprocess
import threading
from types import SimpleNamespace

import pytest

from minihttp import records, tls
from minihttp.limits import RECORDED_CHUNKS
from minihttp.records import http_record, public, tally_facts, tls_facts
from minihttp.responses import send_range
from minihttp.tls import TLS_RECEIVE_SIZE, TLS_SEND_SIZE, RecordScanner, TLSConnection
from minihttp.app import App
from minihttp.eventloop import EventLoop
from minihttp.server import HTTPServer
from support import WAIT, bio_handshake, read_exactly, read_reply, wait_until

pytestmark = pytest.mark.timeout(60)
OPENSSL = shutil.which('openssl')
REQUEST = b'GET /a HTTP/1.1\r\nHost: localhost\r\n\r\n'
RESPONSE = b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n' + b'r' * 1000


@pytest.fixture(scope='module')
def contexts(tmp_path_factory):
    if OPENSSL is None:
        pytest.skip('the openssl command is not installed')
    here = tmp_path_factory.mktemp('pki')
    subprocess.run([OPENSSL, 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                    'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'key.pem', '-out', 'cert.pem',
                    '-days', '2', '-subj', '/CN=localhost',
                    '-addext', 'subjectAltName=DNS:localhost'],
                   cwd=here, check=True, capture_output=True, timeout=WAIT)
    return (tls.server_context(str(here / 'cert.pem'), str(here / 'key.pem')),
            tls.client_context(str(here / 'cert.pem')))


@pytest.fixture
def connected(contexts):
    """(client, server) TLSConnections over loopback, the server's scanned, both past
    the handshake; the client sends nothing until the server's handshake is done (so
    that no request record crosses with the client's Finished)."""
    with socket.create_server(('127.0.0.1', 0)) as listener:
        client_sock = socket.create_connection(listener.getsockname(), timeout=WAIT)
        server_sock, _ = listener.accept()
    server_sock.settimeout(WAIT)
    server = TLSConnection(server_sock, contexts[0], server_side=True, scan=True)
    client = TLSConnection(client_sock, contexts[1], server_side=False,
                           server_hostname='localhost')
    done = threading.Event()
    thread = threading.Thread(target=lambda: (server.do_handshake(), done.set()), daemon=True)
    thread.start()
    client.do_handshake()
    assert done.wait(WAIT)
    thread.join(WAIT)
    yield client, server
    client.close()
    server.close()


def exchange(client, server, request=REQUEST, reads=1):
    """The client sends ``request``; the server reads it (``reads`` requests of that
    size), answers RESPONSE in two sends; the client reads the answers."""
    client.sendall(request)
    read_exactly(server, len(request))
    for _ in range(reads):
        server.sendall(RESPONSE[:41])
        server.sendall(RESPONSE[41:])
    read_exactly(client, len(RESPONSE) * reads)


def record_of(tls_said):
    request = SimpleNamespace(method='GET', target='/a', version='HTTP/1.1', head_size=36,
                              interims=())
    record = http_record(('127.0.0.1', 5000), 1.0, request, None, records.NOT_SENT,
                         tls=tls_said)
    record[records.NUMBER] = 1
    return public(record)


def test_a_first_exchange_shows_the_handshake_and_its_own_records(connected):
    client, server = connected
    exchange(client, server)
    said = record_of(tls_facts(server))['tls']
    assert said['version'] in ('TLSv1.2', 'TLSv1.3') and said['alpn'] == 'http/1.1'
    handshake = said['handshake']
    assert handshake['received']['messages'][0] == 'client_hello'
    assert handshake['sent']['messages'][0] == 'server_hello'
    assert handshake['received']['sizes'][0][0] == 'handshake'
    # The request in one record, the response in two (one per send): sizes as on the wire.
    assert said['received']['types'] == {'application_data': 1}
    assert said['sent']['types'] == {'application_data': 2} and said['sent']['records'] == 2
    lengths = [entry[2] for entry in said['sent']['sizes']]
    assert said['sent']['bytes'] == sum(lengths) + 5 * 2
    assert lengths[1] > 1000 and said['received']['sizes'][0][:2] == ['application_data', '3.3']
    assert said['received']['more'] == 0 and said['received']['messages'] == []
    words = record_of(tls_facts(server))['words']      # (the tallies were cut: nothing since)
    assert 'TLS handshake' not in words


def test_a_request_sent_with_the_clients_finished_is_the_first_exchanges(contexts):
    """TLS 1.3 lets a client send its request with its Finished, in one TCP segment
    (curl and Chromium do): the server takes both in one receive, yet the request's
    record is the first exchange's, not the handshake's."""
    with socket.create_server(('127.0.0.1', 0)) as listener:
        client_sock = socket.create_connection(listener.getsockname(), timeout=WAIT)
        server_sock, _ = listener.accept()
    server_sock.settimeout(WAIT)
    server = TLSConnection(server_sock, contexts[0], server_side=True, scan=True)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = contexts[1].wrap_bio(incoming, outgoing, server_hostname='localhost')
    thread = threading.Thread(target=server.do_handshake, daemon=True)
    thread.start()
    with client_sock, server:
        bio_handshake(client, incoming, outgoing, client_sock)
        client.write(REQUEST)
        client_sock.sendall(outgoing.read())         # Finished and the request together
        thread.join(WAIT)
        assert server.handshake is not None
        read_exactly(server, len(REQUEST))
        said = record_of(tls_facts(server))['tls']
    if said['version'] != 'TLSv1.3':
        pytest.skip('the request cannot cross the Finished below TLS 1.3')
    handshake = said['handshake']['received']
    assert handshake['types'] == {'handshake': 1, 'change_cipher_spec': 1,
                                  'application_data': 1}         # the hello, CCS, Finished
    assert said['received']['types'] == {'application_data': 1}
    assert said['received']['sizes'][0][2] >= len(REQUEST)


def test_the_handshake_is_shown_once_and_each_exchange_has_its_records(connected):
    client, server = connected
    exchange(client, server)
    first = record_of(tls_facts(server))
    exchange(client, server)
    second = record_of(tls_facts(server))
    assert first['tls']['handshake'] is not None and second['tls']['handshake'] is None
    assert second['tls']['received']['records'] == 1 and second['tls']['sent']['records'] == 2
    assert 'TLS handshake (TLSv1.' in first['words'] and ': in ' in first['words']
    assert 'client_hello' in first['words'] and 'server_hello' in first['words']
    sent = second['tls']['sent']['bytes']
    assert second['words'].endswith(
        f'TLS: request in 1 record ({second["tls"]["received"]["bytes"]} B), '
        f'response in 2 records ({sent} B)')
    assert 'TLS handshake' not in second['words']


def test_an_open_version_looks_without_cutting(connected):
    client, server = connected
    client.sendall(REQUEST)
    read_exactly(server, len(REQUEST))
    looked = tls_facts(server, final=False)
    assert looked[2] is not None and looked[3][0] == 1           # the handshake: still there
    assert tls_facts(server, final=False) == looked
    server.sendall(RESPONSE)
    read_exactly(client, len(RESPONSE))
    final = tls_facts(server)
    assert final[2] == looked[2] and final[3] == looked[3] and final[4][0] == 1
    assert tls_facts(server, final=False)[3][0] == 0             # cut by the final one


def test_no_records_and_a_pipelined_receive(connected):
    """Two requests in one record: the first exchange's receive carried both, so the
    second shows none of its own (records are counted as they cross the socket)."""
    client, server = connected
    exchange(client, server, REQUEST * 2, reads=2)
    first, second = record_of(tls_facts(server)), record_of(tls_facts(server))
    assert first['tls']['received']['records'] == 1 and first['tls']['sent']['records'] == 4
    assert second['tls']['received'] == {'records': 0, 'bytes': 0, 'types': {}, 'sizes': [],
                                         'more': 0, 'messages': []}
    assert 'request in 0 records (0 B), response in 0 records (0 B)' in second['words']


def test_a_plain_socket_has_no_tls_facts():
    with socket.socket() as sock:
        assert tls_facts(sock) is None
    plain = record_of(None)
    assert plain['tls'] is None and 'TLS' not in plain['words']


def test_a_million_records_cost_a_bounded_record():
    scanner = RecordScanner()
    one = b'\x17\x03\x03\x00\x01x'
    piece = one * 10_000
    for _ in range(100):
        scanner.feed(memoryview(piece))
    scanner.feed(b'\x15\x03\x03\x00\x02ab')                          # and an alert
    facts = tally_facts(scanner.tally)
    said = records.direction_dict(facts)
    assert said['records'] == 1_000_001 and said['bytes'] == 6_000_007
    assert len(said['sizes']) == RECORDED_CHUNKS and said['more'] == 1_000_001 - RECORDED_CHUNKS
    assert said['types'] == {'application_data': 1_000_000, 'alert': 1}
    assert len(json.dumps(said)) < 4000
    assert records.records_words(said, 'request in') == (
        'request in 1000001 records (6000007 B: 1 alert)')


def test_a_stream_that_is_not_tls_says_so():
    scanner = RecordScanner()
    with pytest.raises(tls.MalformedRecord):
        scanner.feed(b'GET / HTTP/1.1\r\n')
    said = records.direction_dict(tally_facts(scanner.tally))
    assert said['records'] == 0 and 'type 71' in said['malformed']
    assert 'malformed: record header type 71' in records.records_words(said, 'request in')


@pytest.mark.timeout(60)
def test_a_tls_get_served_by_the_loop_is_recorded_with_its_records(contexts, tmp_path):
    """End to end: two GETs on one TLS connection to an in-process server; the first's
    record has the handshake, each has its request's and its response's records."""
    if 'context' not in inspect.signature(EventLoop).parameters:
        pytest.skip('the event loop does not serve TLS yet')
    (tmp_path / 'index.html').write_bytes(b'<p>hello over TLS</p>\n' * 50)
    handler = HTTPServer(App(root=str(tmp_path)), access_log=False, head_timeout=5.0,
                         body_timeout=5.0, keepalive_timeout=5.0)
    loop = EventLoop('127.0.0.1', 0, handler, context=contexts[0])
    loop.start()
    try:
        with socket.create_connection(loop.address, timeout=WAIT) as raw, \
                contexts[1].wrap_socket(raw, server_hostname='localhost') as sock, \
                sock.makefile('rb') as file:
            for _ in range(2):
                sock.sendall(b'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n')
                assert read_reply(file).status == 200
            wait_until(lambda: len(handler.records.recent()) == 2, 'both GETs recorded')
    finally:
        loop.stop(1.0)
    first, second = handler.records.recent()
    assert first['tls']['alpn'] == 'http/1.1'
    handshake = first['tls']['handshake']
    assert handshake['received']['messages'][0] == 'client_hello'
    assert handshake['sent']['messages'][0] == 'server_hello'
    # The first request may cross with the client's last handshake flight; the second
    # was sent after the first answer was read, so it is its own record.
    assert first['tls']['sent']['types'].get('application_data', 0) >= 1
    assert second['tls']['handshake'] is None
    assert second['tls']['received']['types'] == {'application_data': 1}
    assert second['tls']['sent']['types'].get('application_data', 0) >= 1
    assert second['tls']['sent']['bytes'] > 1100       # the 1100-byte page and its head
    assert 'TLS: request in 1 record' in second['words']


def test_a_sealed_answer_is_counted_when_queued_and_its_head_and_body_are_one_record(connected):
    """The loop's way (eventloop.Connection.send): the answer is encrypted as it is
    queued, so its records belong to this exchange before anything is sent, and a head
    with a small body is one record; flush sends it, and the client reads it whole."""
    client, server = connected
    client.sendall(REQUEST)
    read_exactly(server, len(REQUEST))
    server.settimeout(0.0)
    assert server.seal([RESPONSE[:41], RESPONSE[41:]]) == len(RESPONSE)
    assert server.unsent > len(RESPONSE)
    said = record_of(tls_facts(server))['tls']
    assert said['sent']['records'] == 1 and said['sent']['sizes'][0][2] > len(RESPONSE)
    assert server.flush() and server.unsent == 0
    assert read_exactly(client, len(RESPONSE)) == RESPONSE
    assert tls_facts(server)[4][0] == 0           # the send itself counted nothing more


class WatchedWrites:
    """An SSLObject's C object, every write's size noted (the rest passed through)."""

    def __init__(self, sslobj):
        self.sslobj = sslobj
        self.sizes = []

    def write(self, data):
        self.sizes.append(len(data))
        return self.sslobj.write(data)

    def __getattr__(self, name):
        return getattr(self.sslobj, name)


def test_a_file_goes_out_exact_in_records_as_full_as_tls_allows(connected, tmp_path):
    """send_file, as the pool's writer drives it (send_range): a file's bytes from an
    offset, over several reads of the scratch, arrive exact; every record but the last
    carries all a record may (2**14 bytes of plaintext, RFC 8446 section 5.1), so the
    tally is the fewest records there can be, whatever size each read is; and no write
    into the outgoing BIO passes TLS_SEND_SIZE (the BIO keeps the largest it held)."""
    client, server = connected
    data = os.urandom(2 * TLS_RECEIVE_SIZE + 5000)
    (tmp_path / 'file.bin').write_bytes(data)
    offset, count = 3, len(data) - 3
    tls_facts(server)                     # the handshake's cut: what follows is the file's
    watched = server._sslobj = WatchedWrites(server._sslobj)
    got = []
    reader = threading.Thread(target=lambda: got.append(read_exactly(client, count)),
                              daemon=True)
    reader.start()
    fd = os.open(tmp_path / 'file.bin', os.O_RDONLY)
    try:
        send_range(server, fd, offset, count)
    finally:
        os.close(fd)
    reader.join(WAIT)
    assert got == [data[offset:]]
    assert server.handed == count and server.unsent == 0
    assert sum(watched.sizes) == count and max(watched.sizes) == TLS_SEND_SIZE
    sent = record_of(tls_facts(server))['tls']['sent']
    assert sent['records'] == math.ceil(count / 2 ** 14) == len(sent['sizes'])
    lengths = [length for _, _, length in sent['sizes']]
    assert set(lengths[:-1]) == {lengths[0]} and lengths[0] > 2 ** 14 > lengths[-1]
    assert sent['bytes'] == sum(lengths) + 5 * len(lengths)
    assert sent['types'] == {'application_data': sent['records']}


def test_the_usual_exchange_s_facts_are_each_direction_s_one_record_and_follow_its_size(
        connected):
    """A request and an answer each one whole record (every keep-alive GET after the
    first): the facts taken in one step (TLSConnection.exchange_facts) are those the
    tallies say, follow the sizes when they change, and leave the tallies begun afresh."""
    client, server = connected
    exchange(client, server)
    tls_facts(server)                               # the first: the handshake's shown
    said = []
    for request in (REQUEST, REQUEST, REQUEST + b'x' * 50, REQUEST):
        client.sendall(request)
        read_exactly(server, len(request))
        server.sendall(RESPONSE)
        read_exactly(client, len(RESPONSE))
        said.append(tls_facts(server))
    for facts, request in zip(said, (REQUEST, REQUEST, REQUEST + b'x' * 50, REQUEST)):
        version, alpn, handshake, received, sent = facts
        assert (version, alpn, handshake) == (server.version(), 'http/1.1', None)
        assert received[0] == 1 and received[2] == ((23, 1),) and received[4:] == ((), None)
        assert received[3] == ((23, 0x0303, received[1] - 5),)
        assert received[1] > len(request) and sent[0] == 1 and sent[1] > len(RESPONSE)
    assert said[1] == said[0] and said[3] == said[0]
    assert said[2][3][1] == said[0][3][1] + 50 and said[2][4] == said[0][4]
    # Nothing since: both tallies empty, and an exchange of two sends counted as such.
    assert tls_facts(server)[3][0] == 0 == tls_facts(server)[4][0]
    exchange(client, server)
    two = tls_facts(server)
    assert two[3][0] == 1 and two[4][0] == 2 and two[4][2] == ((23, 2),)


def test_the_facts_kept_for_the_usual_exchange_are_one_per_connection(connected):
    client, server = connected
    exchange(client, server)
    tls_facts(server)
    for extra in range(40):                         # a size of its own each time
        request = REQUEST + b'x' * extra
        client.sendall(request)
        read_exactly(server, len(request))
        server.sendall(RESPONSE)
        read_exactly(client, len(RESPONSE))
        facts = tls_facts(server)
        assert server._last_facts[2] is facts and facts[3][1] == server._last_facts[0]
    assert len(tls._ONE_FACTS) <= tls.ONE_FACTS_KEPT


@pytest.mark.parametrize('kind', [bytes, memoryview])
def test_a_piece_is_one_whole_record_only_when_its_header_says_so_and_the_headers_kept_are_few(
        kind):
    """A scanner at a record boundary keeps a piece that is one whole application_data
    record as its size alone (its header compared with the one made per size): any
    other header of that size (another type, version or length) is scanned as such,
    and however many sizes come, at most ONE_FACTS_KEPT headers are kept."""
    for length in range(1, 300):
        scanner = RecordScanner()
        scanner.take()                                  # at a boundary, tally empty
        piece = tls.RECORD_HEADER.pack(23, 0x0303, length) + b'x' * length
        scanner.feed(kind(piece))
        assert scanner.take() == (1, length + 5, ((23, 1),), ((23, 0x0303, length),), (), None)
        assert len(tls._ONE_HEADERS) <= tls.ONE_FACTS_KEPT
    pack = tls.RECORD_HEADER.pack
    for header, kinds, sizes in (
            (pack(21, 0x0303, 10), ((21, 1),), ((21, 0x0303, 10),)),          # an alert
            (pack(23, 0x0301, 10), ((23, 1),), ((23, 0x0301, 10),)),          # TLS 1.0's
            (pack(23, 0x0303, 9), ((23, 1),), ((23, 0x0303, 9),))):           # a byte after
        scanner = RecordScanner()
        scanner.take()
        scanner.feed(kind(header + b'y' * 10))
        facts = scanner.take()
        assert facts[2:4] == (kinds, sizes) and scanner._one == 0
    scanner = RecordScanner()
    scanner.take()
    scanner.feed(kind(b'\x17\x03'))                     # shorter than a header: no record yet
    assert scanner.take()[0] == 0 and scanner.partial()
