"""TLS (minihttp.tls): contexts and their errors, certificate facts against openssl's,
the record scanner on every split of a real stream, and TLSConnection on loopback,
blocking and non-blocking, against itself and against ssl.SSLSocket."""

import datetime
import re
import select
import selectors
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, strategies as st

from minihttp import tls
from minihttp.tls import (MAX_RECORD_LENGTH, MalformedRecord, RecordScanner, TLSConfigError,
                          TLSConnection, WantRead, WantWrite)
from support import OPENSSL, WAIT, read_exactly

pytestmark = pytest.mark.timeout(60)

MiB = 1 << 20
# -- contexts and what goes wrong ---------------------------------------------------

def test_a_server_context_speaks_tls12_and_up_with_alpn_and_no_renegotiation(pki):
    context = tls.server_context(pki['cert'], pki['key'])
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_RENEGOTIATION


def test_an_encrypted_key_takes_its_password_from_the_file_or_asks(pki):
    tls.server_context(pki['cert'], pki['encrypted-key'], password_file=pki['password'])
    asked = []
    tls.server_context(pki['cert'], pki['encrypted-key'],
                       ask=lambda: asked.append(1) or 'correct horse')
    assert asked == [1]
    tls.server_context(pki['cert'], pki['key'], ask=lambda: asked.append(2))
    assert asked == [1]            # an unencrypted key asks nothing


@pytest.mark.parametrize('cert, key, options, said', [
    ('cert', 'other-key', {}, r'key file \S+other-key.pem: does not match the certificate'),
    ('cert', 'encrypted-key', {}, r'key file \S+encrypted-key.pem: is encrypted, and no password'),
    ('cert', 'encrypted-key', {'password_file': 'wrong-password'},
     r'key file \S+encrypted-key.pem: cannot be decrypted with the password file \S+wrong-password'),
    ('cert', 'encrypted-key', {'ask': lambda: 'guess'},
     r'key file \S+encrypted-key.pem: cannot be decrypted with the password given'),
    ('expired', 'key', {}, r'certificate file \S+expired.pem: expired on \d{4}-\d\d-\d\d'),
    ('key', 'key', {}, r'certificate file \S+key.pem: holds no PEM certificate \(it holds a private key'),
    ('cert', 'cert', {}, r'key file \S+cert.pem: holds no PEM private key'),
    ('missing', 'key', {}, r'certificate file \S+missing.pem: cannot be read \(No such file'),
    ('cert', 'missing', {}, r'key file \S+missing.pem: cannot be read \(No such file'),
    ('password', 'key', {}, r'certificate file \S+password: holds no PEM certificate$'),
    ('cert', 'encrypted-key', {'password_file': 'missing'},
     r'password file \S+missing.pem: cannot be read'),
])
def test_every_file_problem_is_one_error_naming_the_file(pki, cert, key, options, said):
    if cert not in pki:
        if cert == 'expired':
            pytest.skip('this openssl cannot make an expired certificate')
    folder = pki['cert'].rsplit('/', 1)[0]

    def path(name):
        return pki.get(name, f'{folder}/{name}.pem')
    options = {name: path(value) if name == 'password_file' else value
               for name, value in options.items()}
    with pytest.raises(TLSConfigError, match=said):
        tls.server_context(path(cert), path(key), **options)


def test_a_certificate_not_yet_valid_is_refused(pki):
    facts = tls.certificate_facts(pki['cert'])
    before = facts.not_before - datetime.timedelta(seconds=1)
    with pytest.raises(TLSConfigError, match=r'certificate file \S+cert.pem: not valid until '):
        tls.server_context(pki['cert'], pki['key'], now=before)


def test_a_garbled_certificate_and_a_huge_file_are_refused(pki, tmp_path):
    garbled = tmp_path / 'garbled.pem'
    garbled.write_text('-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAK\n-----END CERTIFICATE-----\n')
    with pytest.raises(TLSConfigError, match='garbled.pem: not a readable certificate'):
        tls.certificate_facts(str(garbled))
    with pytest.raises(TLSConfigError, match='/dev/zero: larger than'):
        tls.certificate_facts('/dev/zero')
    # A password file is no PEM file: the message says which it is too large for.
    with pytest.raises(TLSConfigError, match='password file /dev/zero: larger than 4096 bytes,'
                                             ' too large for a password file$'):
        tls.server_context(pki['cert'], pki['encrypted-key'], password_file='/dev/zero')


def test_ctrl_d_at_the_password_prompt_is_one_error_naming_the_key(pki, monkeypatch):
    import argparse
    import getpass
    import io
    from minihttp import cli

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    def ctrl_d(prompt):
        raise EOFError
    monkeypatch.setattr(sys, 'stdin', Terminal())
    monkeypatch.setattr(getpass, 'getpass', ctrl_d)
    args = argparse.Namespace(tls_cert=pki['cert'], tls_key=pki['encrypted-key'],
                              tls_password_file=None)
    with pytest.raises(TLSConfigError, match=r'key file \S+encrypted-key.pem: is encrypted, '
                                             'and no password was typed'):
        cli.tls_context(args)


def test_a_client_context_trusts_its_cafile_alone(pki):
    context = tls.client_context(pki['cert'])
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1
    with pytest.raises(TLSConfigError, match=r'CA file \S+key.pem: holds no PEM certificate'):
        tls.client_context(pki['key'])


# -- certificate facts ---------------------------------------------------------------

def test_certificate_facts_agree_with_openssl(pki):
    said = subprocess.run([OPENSSL, 'x509', '-in', pki['cert'], '-noout', '-fingerprint',
                           '-sha256', '-subject', '-enddate', '-startdate'],
                          capture_output=True, text=True, check=True, timeout=WAIT).stdout
    facts = tls.certificate_facts(pki['cert'])
    assert facts.fingerprint == re.search(r'(?i)sha256 Fingerprint=(\S+)', said)[1]
    assert ('CN', 'localhost') in facts.subject and ('O', 'minihttp tests') in facts.subject

    def moment(field):
        text = re.search(rf'{field}=(.+)', said)[1]
        return datetime.datetime.strptime(text, '%b %d %H:%M:%S %Y GMT').replace(
            tzinfo=datetime.timezone.utc)
    assert facts.not_after == moment('notAfter') and facts.not_before == moment('notBefore')
    assert facts.names == ('DNS:localhost', 'IP:127.0.0.1')
    assert facts.fingerprint in facts.describe() and 'CN=localhost' in facts.describe()


@given(st.binary(max_size=300))
def test_the_der_reader_fails_cleanly_on_garbage(data):
    try:
        tls.parse_certificate(data)
    except ValueError:
        pass


def test_the_der_reader_fails_cleanly_on_every_truncation(pki):
    der = ssl.PEM_cert_to_DER_cert(open(pki['cert']).read())
    for end in range(len(der)):
        with pytest.raises(ValueError):
            tls.parse_certificate(der[:end])


# -- plain bytes -------------------------------------------------------------------

def test_a_tls_hello_is_told_from_plain_http():
    assert tls.looks_like_tls(b'\x16\x03\x01\x02\x00\x01')
    assert tls.looks_like_tls(b'\x16')
    assert not tls.looks_like_tls(b'GET / HTTP/1.1\r\n')
    assert not tls.looks_like_tls(b'\x16\x04') and not tls.looks_like_tls(b'')
    error = tls.plain_http_error()
    assert error.status == 400 and error.close and 'plain HTTP' in error.reason


# -- loopback ------------------------------------------------------------------------

class Recording:
    """A transport that keeps a copy of every byte received (for the scanner tests)."""

    def __init__(self, sock):
        self.sock = sock
        self.received = bytearray()

    def recv_into(self, buffer):
        got = self.sock.recv_into(buffer)
        self.received += buffer[:got]
        return got

    def sendall(self, data):
        self.sock.sendall(data)


@pytest.fixture
def pair():
    """A connected loopback TCP pair (client, server), both closed at teardown."""
    with socket.create_server(('127.0.0.1', 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=WAIT)
        server, _ = listener.accept()
    server.settimeout(WAIT)
    yield client, server
    client.close()
    server.close()


@pytest.fixture
def contexts(pki):
    return tls.server_context(pki['cert'], pki['key']), tls.client_context(pki['cert'])


class Peer(threading.Thread):
    """Runs ``job`` on another thread; ``result()`` joins it (bounded) and re-raises."""

    def __init__(self, job):
        super().__init__(daemon=True)
        self.job = job
        self.error = self.value = None
        self.start()

    def run(self):
        try:
            self.value = self.job()
        except BaseException as exc:      # handed to the test's thread
            self.error = exc

    def result(self):
        self.join(WAIT)
        assert not self.is_alive()
        if self.error:
            raise self.error
        return self.value


def echo_once(conn, size):
    """Server side: handshake, read ``size`` bytes, send them back."""
    conn.do_handshake()
    handshake = conn.handshake
    conn.sendall(read_exactly(conn, size))
    return handshake


PAYLOAD = bytes(range(256)) * (4 * 1024)        # 1 MiB


@pytest.mark.parametrize('client_kind', ['TLSConnection', 'SSLSocket'])
def test_a_blocking_echo_of_1_mib_over_loopback_with_records_counted(pair, contexts, client_kind):
    client_sock, server_sock = pair
    server_context, client_context = contexts
    server = TLSConnection(server_sock, server_context, server_side=True, scan=True)
    peer = Peer(lambda: echo_once(server, len(PAYLOAD)))
    if client_kind == 'SSLSocket':
        client = client_context.wrap_socket(client_sock, server_hostname='localhost')
    else:
        client = TLSConnection(client_sock, client_context, server_side=False,
                               server_hostname='localhost')
        client.do_handshake()
    assert client.selected_alpn_protocol() == 'http/1.1'
    client.sendall(PAYLOAD)
    assert read_exactly(client, len(PAYLOAD)) == PAYLOAD
    received, sent = peer.result()
    assert server.version() in ('TLSv1.2', 'TLSv1.3')
    assert received.as_dict()['sizes'][0][0] == 'handshake'
    assert received.handshake[0] == 'client_hello'
    assert sent.as_dict()['sizes'][0][0] == 'handshake' and sent.handshake[0] == 'server_hello'
    received, (data_in, data_out) = received.as_dict(), server.records()
    data_in, data_out = data_in.as_dict(), data_out.as_dict()
    # 1 MiB in records of at most 2^14 bytes of plaintext: 64 or more each way.  Records
    # are counted as they arrive: the client's first ones came with its last flight.
    data = 'application_data'
    assert received['types'].get(data, 0) + data_in['types'][data] >= 64
    assert data_out['types']['application_data'] >= 64
    assert set(data_out['types']) == {'application_data'} and data_out['bytes'] > len(PAYLOAD)
    if client_kind == 'SSLSocket':
        client.close()


def test_tls_connection_as_client_of_an_ssl_socket_server(pair, contexts):
    client_sock, server_sock = pair
    server_context, client_context = contexts

    def serve():
        with server_context.wrap_socket(server_sock, server_side=True) as server:
            server.sendall(read_exactly(server, len(PAYLOAD)))
    peer = Peer(serve)
    client = TLSConnection(client_sock, client_context, server_side=False,
                           server_hostname='localhost', scan=True)
    client.do_handshake()
    client.sendall(PAYLOAD)
    assert read_exactly(client, len(PAYLOAD)) == PAYLOAD
    peer.result()
    assert client.recv(10) == b''        # the server closed (close_notify or not): an end
    received, _ = client.handshake             # cut when the handshake was done
    assert received.handshake[0] == 'server_hello' and client.records()[0].handshake == []


def test_unwrap_sends_close_notify_and_the_peer_reads_a_clean_end(pair, contexts):
    client_sock, server_sock = pair
    server = TLSConnection(server_sock, contexts[0], server_side=True, scan=True)
    peer = Peer(lambda: (server.do_handshake(), server.records(), server.recv(10)))
    client = TLSConnection(client_sock, contexts[1], server_side=False,
                           server_hostname='localhost')
    client.do_handshake()
    assert client.unwrap() is client_sock
    assert peer.result()[2] == b''
    # The close_notify came as one record (an alert; in TLS 1.3 encrypted as
    # application_data), not as a bare end of the TCP stream.
    assert server.received.tally.records == 1
    client.close()
    assert client_sock.fileno() == -1


def test_a_huge_object_identifier_is_refused_in_linear_time():
    with pytest.raises(ValueError, match='object identifier of'):
        tls._oid(b'\x81' * 100_000 + b'\x01')


def captured_stream(pair, contexts):
    """The bytes a client sent a server in a handshake and a few small messages."""
    client_sock, server_sock = pair
    server_context, client_context = contexts
    server = TLSConnection(server_sock, server_context, server_side=True)
    recording = Recording(server_sock)
    server.use(recording)
    peer = Peer(lambda: echo_once(server, 3000))
    client = TLSConnection(client_sock, client_context, server_side=False,
                           server_hostname='localhost')
    client.do_handshake()
    for size in (1, 999, 2000):
        client.sendall(b'x' * size)
    read_exactly(client, 3000)
    peer.result()
    return bytes(recording.received)


def scan(*pieces):
    scanner = RecordScanner()
    for piece in pieces:
        scanner.feed(memoryview(piece))
    return scanner.tally.as_dict()


def test_the_scanner_gives_the_same_records_for_every_split_of_a_real_stream(pair, contexts):
    stream = captured_stream(pair, contexts)
    whole = scan(stream)
    assert whole['handshake'][0] == 'client_hello' and whole['bytes'] == len(stream)
    assert whole['types']['application_data'] >= 3
    for cut in range(len(stream) + 1):
        assert scan(stream[:cut], stream[cut:]) == whole
    assert scan(*(stream[i:i + 1] for i in range(len(stream)))) == whole


@given(cuts=st.lists(st.integers(0, 4000), max_size=20))
def test_the_scanner_on_any_pieces(cuts):
    stream = (b'\x16\x03\x01\x00\x08' + b'\x01\x00\x00\x04abcd'
              + b'\x14\x03\x03\x00\x01\x01' + b'\x17\x03\x03\x0f\xa0' + b'z' * 4000)
    points = sorted({min(cut, len(stream)) for cut in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]
    assert scan(*pieces) == scan(stream)
    assert scan(stream)['handshake'] == ['client_hello']
    assert scan(stream)['types'] == {'handshake': 1, 'change_cipher_spec': 1,
                                     'application_data': 1}


@given(lengths=st.lists(st.integers(0, 300), min_size=1, max_size=80),
       alert_at=st.integers(0, 90), cuts=st.lists(st.integers(0, 30000), max_size=12))
def test_the_scanner_s_fast_path_agrees_with_the_general_one(lengths, alert_at, cuts):
    # Whole application_data records take the fast path; one byte at a time never
    # does (every header is cut): both must tally the same, alerts, runs past the
    # first RECORDED_CHUNKS sizes and records cut across pieces included.
    records = [b'\x17\x03\x03' + n.to_bytes(2, 'big') + bytes(n) for n in lengths]
    records.insert(min(alert_at, len(records)), b'\x15\x03\x03\x00\x02\x01\x00')
    stream = b''.join(records)
    points = sorted({min(cut, len(stream)) for cut in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]
    bytewise = scan(*(stream[i:i + 1] for i in range(len(stream))))
    assert scan(stream) == scan(*pieces) == bytewise
    assert bytewise['records'] == len(lengths) + 1 and bytewise['bytes'] == len(stream)
    assert bytewise['types'] == {'application_data': len(lengths), 'alert': 1}


def test_the_scanner_refuses_a_record_longer_than_rfc_8446_allows():
    scanner = RecordScanner()
    scanner.feed(b'\x17\x03\x03' + MAX_RECORD_LENGTH.to_bytes(2, 'big'))
    with pytest.raises(MalformedRecord, match='length 16641'):
        scanner.feed(b'x' * MAX_RECORD_LENGTH + b'\x17\x03\x03'
                     + (MAX_RECORD_LENGTH + 1).to_bytes(2, 'big'))
    assert scanner.tally.records == 1 and 'length 16641' in scanner.tally.malformed
    scanner.feed(b'anything')          # stopped: it ignores what follows
    with pytest.raises(MalformedRecord, match='type 71'):
        RecordScanner().feed(b'GET / HTTP/1.1\r\n')


def test_a_tally_keeps_the_first_record_sizes_only():
    scanner = RecordScanner()
    scanner.feed(b'\x17\x03\x03\x00\x00' * 1000)
    tally = scanner.cut().as_dict()
    assert tally['records'] == 1000 and len(tally['sizes']) + tally['more'] == 1000
    assert len(tally['sizes']) < 100
    assert scanner.tally.records == 0


def test_take_gives_each_exchange_its_records_in_the_order_their_types_came():
    scanner = RecordScanner()
    data = b'\x17\x03\x03\x00\x02ab'
    alert = b'\x15\x03\x03\x00\x02\x01\x00'
    scanner.feed(memoryview(data))                  # whole records: the fast path
    scanner.feed(memoryview(data * 2))
    scanner.feed(memoryview(alert + data))          # an alert: the general path
    scanner.feed(memoryview(data))
    data_size, alert_size = (23, 0x0303, 2), (21, 0x0303, 2)
    assert scanner.take() == (6, 42, ((23, 5), (21, 1)),
                              (data_size,) * 3 + (alert_size,) + (data_size,) * 2, (), None)
    assert scanner.take() == (0, 0, (), (), (), None)        # begun afresh
    scanner.feed(memoryview(alert))
    scanner.feed(memoryview(data))
    assert scanner.take(restart=False)[2] == ((21, 1), (23, 1))
    assert scanner.take()[:2] == (2, 14) and scanner.tally.records == 0



def data_record(length):
    return b'\x17\x03\x03' + length.to_bytes(2, 'big') + b'r' * length


@given(st.lists(st.lists(st.tuples(st.integers(0, 300), st.integers(1, 400)), max_size=4),
                max_size=6))
def test_each_exchanges_take_is_its_records_however_they_came(exchanges):
    """Exchange after exchange, a tally is the records fed since the last take, whether it
    is one whole record (kept as its size alone) or records cut anywhere."""
    scanner = RecordScanner()
    scanner.take()
    for exchange in exchanges:
        stream = b''.join(data_record(length) for length, _ in exchange)
        cuts = sorted({min(cut, len(stream)) for _, cut in exchange})
        pieces = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
        for piece in pieces:
            if piece:
                scanner.feed(memoryview(piece))
        count = len(exchange)
        kinds = ((23, count),) if count else ()
        sizes = tuple((23, 0x0303, length) for length, _ in exchange)
        expected = (count, len(stream), kinds, sizes, (), None)
        assert scanner.take(restart=False) == expected
        assert scanner.take() == expected
        assert scanner.take() == (0, 0, (), (), (), None)


def test_one_whole_record_then_more_is_counted_as_records():
    scanner = RecordScanner()
    scanner.take()
    scanner.feed(data_record(3))                    # kept as its size alone
    assert scanner.tally.as_dict()['sizes'] == [['application_data', '3.3', 3]]
    scanner.feed(data_record(1) + data_record(2)[:4])     # then counted with the rest
    scanner.feed(data_record(2)[4:] + b'\x15\x03\x03\x00\x02\x01\x00')
    assert scanner.take() == (4, 28, ((23, 3), (21, 1)),
                              ((23, 0x0303, 3), (23, 0x0303, 1), (23, 0x0303, 2),
                               (21, 0x0303, 2)), (), None)
    scanner.feed(data_record(5))
    assert scanner.take()[:2] == (1, 10)
    with pytest.raises(MalformedRecord):
        scanner.feed(b'GET / HTTP/1.1\r\n')       # not a record: scanning stops
    scanner.take()
    scanner.feed(data_record(5))                    # and stays stopped
    assert scanner.take()[:2] == (0, 0)


# -- non-blocking --------------------------------------------------------------------

def drive(conns, step, deadline):
    """Run ``step(conn)`` for each conn until all return True, waiting in a selector
    for what each WantRead / WantWrite asked; fails at ``deadline``."""
    waiting = list(conns)
    with selectors.DefaultSelector() as selector:
        while waiting:
            for conn in list(waiting):
                try:
                    if step(conn):
                        waiting.remove(conn)
                        continue
                except WantRead:
                    events = selectors.EVENT_READ
                except WantWrite:
                    events = selectors.EVENT_WRITE
                else:
                    continue
                selector.register(conn, events)
            left = deadline - time.monotonic()
            assert left > 0, 'deadline passed'
            if waiting and len(selector.get_map()):
                selector.select(left)
            for key in list(selector.get_map().values()):
                selector.unregister(key.fileobj)


def test_a_non_blocking_handshake_and_transfer_driven_by_a_selector(pair, contexts):
    client_sock, server_sock = pair
    server_context, client_context = contexts
    for sock in pair:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)   # WantWrite happens
    server = TLSConnection(server_sock, server_context, server_side=True, scan=True)
    client = TLSConnection(client_sock, client_context, server_side=False,
                           server_hostname='localhost')
    deadline = time.monotonic() + WAIT
    threads = threading.active_count()
    drive([server, client], lambda conn: conn.do_handshake() or True, deadline)
    assert server.selected_alpn_protocol() == 'http/1.1'
    assert threading.active_count() == threads
    sent, got, wants = [0], bytearray(), {'write': 0}
    view = memoryview(PAYLOAD)
    scratch = bytearray(7000)            # not a record's size: plaintext stays pending

    def step(conn):
        if conn is client:
            while sent[0] < len(view):
                try:
                    sent[0] += client.send(view[sent[0]:])
                except WantWrite:
                    wants['write'] += 1
                    raise
            return True
        while True:
            n = server.recv_into(scratch)
            got.extend(scratch[:n])
            if len(got) == len(PAYLOAD):
                return True
            assert n
    drive([client, server], step, deadline)
    assert bytes(got) == PAYLOAD and wants['write'] > 0
    assert server.pending() == 0


def test_sealed_answers_leave_whole_and_in_order_through_a_socket_taking_parts(pair,
                                                                            contexts):
    # As the event loop queues answers: sealed now (their records tallied), sent by
    # flush calls that a full socket interrupts; what the kernel took is never resent.
    client_sock, server_sock = pair
    server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    server = TLSConnection(server_sock, contexts[0], server_side=True, scan=True)
    peer = Peer(server.do_handshake)
    client = TLSConnection(client_sock, contexts[1], server_side=False,
                           server_hostname='localhost')
    client.do_handshake()
    peer.result()
    server.records()
    server.setblocking(False)
    answers = [bytes([n]) * (1000 + 5000 * n) for n in range(12)]
    for answer in answers:
        assert server.seal([answer[:10], answer[10:]]) == len(answer)
    sealed = server.unsent
    assert sealed > sum(map(len, answers))
    _, sent = server.records()
    assert sent.bytes == sealed and sent.types == {23: sent.records}
    reader = Peer(lambda: read_exactly(client, sum(map(len, answers))))
    partial, deadline = 0, time.monotonic() + WAIT
    with selectors.DefaultSelector() as selector:
        selector.register(server_sock, selectors.EVENT_WRITE)
        while not server.flush():
            partial += 1
            assert 0 < server.unsent <= sealed
            assert selector.select(deadline - time.monotonic()), 'the socket never drained'
    assert reader.result() == b''.join(answers) and server.unsent == 0 and partial


def test_pending_says_there_is_plaintext_without_the_socket(pair, contexts):
    client_sock, server_sock = pair
    server_context, client_context = contexts
    server = TLSConnection(server_sock, server_context, server_side=True)
    peer = Peer(server.do_handshake)
    client = TLSConnection(client_sock, client_context, server_side=False,
                           server_hostname='localhost')
    client.do_handshake()
    peer.result()
    assert client.sendmsg([b'a' * 100, b'b' * 100]) == 200    # two records, one write
    server.setblocking(False)
    assert read_exactly_nonblocking(server, 10) == b'a' * 10
    assert server.pending() > 0
    # No wait on the socket: the rest is already here, in the SSLObject or its BIO.
    assert read_exactly_nonblocking(server, 190) == b'a' * 90 + b'b' * 100
    with pytest.raises(WantRead):
        server.recv_into(bytearray(10))


def read_exactly_nonblocking(conn, size):
    """Read ``size`` bytes without ever waiting for the socket (pending only)."""
    out = bytearray()
    deadline = time.monotonic() + WAIT
    while len(out) < size:
        assert time.monotonic() < deadline
        try:
            buffer = bytearray(size - len(out))
            out += buffer[:conn.recv_into(buffer)]
        except WantRead:
            if not out and not conn.pending():     # the first bytes may still be on the way
                selectors.DefaultSelector().select(0.01)
                continue
            raise
    return bytes(out)


def test_a_client_stalling_mid_handshake_costs_no_thread(pair, contexts, pki):
    client_sock, server_sock = pair
    server_sock.setblocking(False)
    server = TLSConnection(server_sock, contexts[0], server_side=True, scan=True)
    threads = threading.active_count()
    client_sock.sendall(b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03')   # a hello, cut
    with selectors.DefaultSelector() as selector:
        selector.register(server_sock, selectors.EVENT_READ)
        assert selector.select(WAIT)
    with pytest.raises(WantRead):
        server.do_handshake()
    assert threading.active_count() == threads
    assert server.received.tally.handshake == ['client_hello']
    client_sock.close()            # and then goes: the handshake fails, nothing waits
    with selectors.DefaultSelector() as selector:
        selector.register(server_sock, selectors.EVENT_READ)
        assert selector.select(WAIT)
    with pytest.raises(ssl.SSLError):
        server.do_handshake()
    server.close()


def test_plain_http_to_the_server_side_fails_cleanly(pair, contexts):
    client_sock, server_sock = pair
    server = TLSConnection(server_sock, contexts[0], server_side=True, scan=True)
    client_sock.sendall(b'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n')
    with pytest.raises(ssl.SSLError):
        server.do_handshake()
    assert server.plain_http()
    assert server.received.tally.malformed     # the scanner saw no record either
    # The 400 goes in clear on the plain socket, then the connection closes.
    server.sock.sendall(b'HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n'
                        + tls.PLAIN_HTTP_LINE.encode())
    server.close()
    assert tls.PLAIN_HTTP_LINE.encode() in client_sock.recv(4096)


def test_a_tls_hello_is_what_a_plain_port_sees_first(pair, contexts):
    client_sock, server_sock = pair
    client = TLSConnection(client_sock, contexts[1], server_side=False,
                           server_hostname='localhost')
    client.setblocking(False)
    with pytest.raises(WantRead):
        client.do_handshake()
    assert tls.looks_like_tls(server_sock.recv(5))


@pytest.mark.skipif(OPENSSL is None, reason='the openssl command is not installed')
def test_client_renegotiation_is_refused(pair, contexts, pki):
    """openssl s_client's R command renegotiates a TLS 1.2 session: refused."""
    with socket.create_server(('127.0.0.1', 0)) as listener:
        port = listener.getsockname()[1]
        client = subprocess.Popen(
            [OPENSSL, 's_client', '-tls1_2', '-connect', f'127.0.0.1:{port}', '-CAfile',
             pki['cert'], '-servername', 'localhost'],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            listener.settimeout(WAIT)
            sock, _ = listener.accept()
            sock.settimeout(WAIT)
            with TLSConnection(sock, contexts[0], server_side=True, scan=True) as server:
                server.do_handshake()
                client.stdin.write(b'R\n')
                client.stdin.flush()
                with pytest.raises(ssl.SSLError, match='HANDSHAKE_FAILURE|RENEGOTIATION'):
                    while server.recv(100):
                        pass
                alert = 21     # RFC 8446 section 5.1, ContentType.alert
                assert server.sent.tally.types.get(alert) or server.received.tally.types
        finally:
            client.stdin.close()
            client.kill()
            said = client.stdout.read()
            client.wait(WAIT)
            client.stdout.close()
        assert b'RENEGOTIATING' in said         # it did try



def handshaken(pair, contexts):
    """(client, server) TLSConnections over ``pair``, past their handshake."""
    client_sock, server_sock = pair
    server = TLSConnection(server_sock, contexts[0], server_side=True)
    peer = Peer(server.do_handshake)
    client = TLSConnection(client_sock, contexts[1], server_side=False,
                           server_hostname='localhost')
    client.do_handshake()
    peer.result()
    return client, server

@pytest.mark.parametrize('first', [99, 100, 101])
def test_plaintext_is_held_only_after_a_read_that_filled_its_buffer(pair, contexts, first):
    # OpenSSL returns one record's plaintext at most a read: a read given 99 bytes of a
    # 100-byte record leaves one held (pending, read without the socket); one given
    # 100 or more takes it all, and the next read goes to the socket (nothing there yet:
    # WantRead, then the second record once it is sent).
    client_sock, server_sock = pair
    client, server = handshaken(pair, contexts)
    server.setblocking(False)
    client.sendall(b'a' * 100)
    buffer = bytearray(first)
    assert recv_when_readable(server, server_sock, buffer) == min(first, 100)
    assert buffer[:100] == b'a' * min(first, 100)
    if first < 100:
        assert server.pending() == 100 - first
        assert server.recv_into(buffer) == 100 - first       # held: no socket asked
    assert server.pending() == 0
    with pytest.raises(WantRead):
        server.recv_into(buffer)
    client.sendall(b'b' * 10)
    assert read_exactly_nonblocking(server, 10) == b'b' * 10



def test_a_record_cut_by_a_receive_waits_for_its_rest_and_one_read_whole_holds_nothing(
        pair, contexts):
    """A receive that brings a whole record and part of the next: the first is read, and
    the second's read waits for its rest (OpenSSL holds its first bytes); a read that took
    all there was leaves nothing held (pending 0), and the next goes to the socket."""
    client_sock, server_sock = pair
    client, server = handshaken(pair, contexts)
    server.setblocking(False)
    client.seal([b'a' * 50])
    client.seal([b'b' * 50])
    first, second = client._unsent           # one record each, not sent yet
    client_sock.sendall(first + second[:10])
    buffer = bytearray(4096)
    assert recv_when_readable(server, server_sock, buffer) == 50
    assert buffer[:50] == b'a' * 50
    with pytest.raises(WantRead):
        server.recv_into(buffer)              # not all here: the socket is asked
    client_sock.sendall(second[10:])
    assert recv_when_readable(server, server_sock, buffer) == 50
    assert buffer[:50] == b'b' * 50
    assert server.pending() == 0              # read to its end, nothing after it
    with pytest.raises(WantRead):
        server.recv_into(buffer)
    client_sock.sendall(first)                # (a record may come twice: ours is not TLS)
    with pytest.raises(ssl.SSLError):
        recv_when_readable(server, server_sock, buffer)


def test_close_notify_in_the_receive_of_a_request_is_read_without_the_socket(pair, contexts):
    """A client that sends its last request and close_notify together and then waits for
    ours (its socket left open): the read that returns the request meets close_notify
    after it, and the next read says the end at once, ``pending`` saying it is there;
    neither waits for a socket on which nothing more will come."""
    client_sock, server_sock = pair
    client, server = handshaken(pair, contexts)
    server.setblocking(False)
    client.seal([b'a' * 50])
    try:
        client._ssl.unwrap()
    except ssl.SSLWantReadError:
        pass                                  # (it waits for ours: not sent yet)
    client_sock.sendall(b''.join(client._unsent) + client._outgoing.read())
    buffer = bytearray(4096)
    assert recv_when_readable(server, server_sock, buffer) == 50
    assert server.pending()
    assert server.recv_into(buffer) == 0      # the end, not WantRead
    assert server.recv_into(buffer) == 0


def recv_when_readable(conn, sock, buffer):
    """One recv_into, asked again each time ``sock`` becomes readable, within WAIT."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return conn.recv_into(buffer)
        except WantRead:
            left = deadline - time.monotonic()
            assert left > 0, 'nothing came'
            select.select([sock], [], [], left)
