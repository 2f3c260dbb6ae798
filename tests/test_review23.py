"""Review 23: the hot-path cuts (main 82d2957) attacked as a hostile client.

An answer given again (HTTPServer.again) takes its bytes and its access-log line from
one PerSecond, its TLS facts from TLSConnection.exchange_facts, and advance returns
IDLE once its reader let go.  Each test here tries to make one of them lie: the Date
and the log line's time of two different seconds, a record's time not the request's,
the TLS tallies not what the wire carried (counted here on a MemoryBIO client), a
pipelined or trickled request lost or answered twice.  h11 reads the answers.
"""

import re
import socket
import threading
import ssl
import struct
import time
import types
from email.utils import parsedate_to_datetime

import h11
import pytest

from minihttp import server as server_module
from minihttp.limits import PIPELINE_QUEUE
from support import (INDEX, WAIT, RawClient, Site, bio_handshake, get, post, read_reply,
                     wait_until)

pytestmark = pytest.mark.timeout(60)

LOG_TIME = re.compile(r'\[(\d\d/\w\w\w/\d{4}:\d\d:\d\d:\d\d) \+0000\]')


def stopped_after(request, served):
    """A Site whose loop stops when the test ends (however it ends)."""
    request.addfinalizer(lambda: served.loop.stop(0.5))
    return served


@pytest.fixture(params=['plain', 'tls'])
def site(request, tmp_path, pki, monkeypatch):
    """Each test plain and over TLS (the cuts differ most there)."""
    return stopped_after(request, Site(tmp_path, pki, request.param, monkeypatch))


class Clock:
    """time.time for the server module: the seconds given, in turn, then the last."""

    def __init__(self, *times):
        self.times = list(times)

    def time(self):
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


def fake_time(monkeypatch, clock):
    fake = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time)
                                    if not name.startswith('__')})
    fake.time = clock.time
    monkeypatch.setattr(server_module, 'time', fake)


def date_second(raw):
    value = re.search(rb'\r\nDate: ([^\r]*)\r\n', raw).group(1).decode()
    return int(parsedate_to_datetime(value).timestamp())


def log_second(line):
    stamp = LOG_TIME.search(line).group(1)
    return int(time.mktime(time.strptime(stamp, '%d/%b/%Y:%H:%M:%S')) - time.timezone)


def access_lines(site):
    return [line for line in site.lines if LOG_TIME.search(line) and '"' in line]


@pytest.mark.parametrize('method', ['GET', 'HEAD'])
@pytest.mark.parametrize('version', ['HTTP/1.0', 'HTTP/1.1'])
def test_an_answer_given_again_across_a_second_is_dated_logged_and_recorded_in_its_second(
        site, monkeypatch, method, version):
    """Seconds chosen to end a hair after one request and begin before the next: the Date,
    the log line's time and the record's time of each answer are its own request's."""
    base = 1_800_000_000
    seconds = [base + 0.999999, base + 1.0, base + 1.5, base + 2.999, base + 7.0]
    keep = ('Connection: keep-alive',) if version == 'HTTP/1.0' else ()
    for now in seconds:
        fake_time(monkeypatch, Clock(now))
        with site.client() as client:
            client.send(get('/index.html', version, *keep, method=method))
            reply = client.reply(method)
            assert reply.status == 200
            assert reply.body == (b'' if method == 'HEAD' else INDEX)
            assert date_second(reply.raw) == int(now), now
    assert site.app.calls == 1          # all but the first given again
    lines = access_lines(site)
    assert [log_second(line) for line in lines] == [int(now) for now in seconds]
    wait_until(lambda: len(site.records()) == len(seconds), 'a record per request')
    assert [record['time'] for record in site.records()] == seconds


def test_many_answers_given_again_on_two_connections_say_one_second_each(site):
    """The real clock: answers given again until at least one second boundary has passed
    (with a deadline), on two connections in turn; each answer's Date and its log line's
    time are the same second."""
    first, second = site.client(), site.client()
    with first, second:
        dates = []
        start = time.time()
        deadline = time.monotonic() + WAIT
        while int(time.time()) <= int(start) + 1:
            assert time.monotonic() < deadline
            for client in (first, second):
                client.send(get('/index.html'))
                dates.append(date_second(client.reply().raw))
    lines = access_lines(site)
    assert len(lines) == len(dates) and len(set(dates)) >= 2
    assert [log_second(line) for line in lines] == dates
    # The ring keeps the latest records: those are the latest answers'.
    kept = site.records()
    assert kept[-1]['id'] == len(dates)
    assert [int(record['time']) for record in kept] == dates[len(dates) - len(kept):]


# -- TLS records counted on the wire --------------------------------------------------

HEADER = struct.Struct('!BHH')


class BioClient:
    """A TLS client over memory BIOs: what it sends is cut as the test says, and every
    record it sends is counted from its ciphertext."""

    def __init__(self, site):
        self.sock = socket.create_connection(('127.0.0.1', site.port), timeout=WAIT)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = site.context.wrap_bio(self.incoming, self.outgoing,
                                         server_hostname='localhost')
        bio_handshake(self.tls, self.incoming, self.outgoing, self.sock)
        self.finished = self.outgoing.read()    # the last flight, sent with the first request
        self.h11 = h11.Connection(h11.CLIENT)
        self.received = b''     # the server's ciphertext since the handshake

    def seal(self, *requests):
        """Each request written as its own record(s); the ciphertext and its records'
        lengths (header included)."""
        for request in requests:
            self.tls.write(request)
        data = self.outgoing.read()
        return data, record_lengths(data)

    def answers(self, count):
        got, ended = [], 0
        while ended < count:
            if self.h11.our_state is h11.IDLE:      # (h11 reads answers to requests it sent)
                self.h11.send(h11.Request(method='GET', target='/',
                                          headers=[('Host', 'localhost')]))
                self.h11.send(h11.EndOfMessage())
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(self.plain())
                continue
            if isinstance(event, h11.Response):
                got.append([event.status_code, b''])
            elif isinstance(event, h11.Data):
                got[-1][1] += event.data
            elif isinstance(event, h11.EndOfMessage):
                ended += 1
                self.h11.start_next_cycle()
        return got

    def plain(self):
        while True:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                data = self.sock.recv(65536)
                assert data, 'the server closed'
                self.received += data
                self.incoming.write(data)

    def close(self):
        self.sock.close()


def record_lengths(data):
    lengths, at = [], 0
    while at < len(data):
        kind, version, length = HEADER.unpack_from(data, at)
        lengths.append(length + 5)
        at += length + 5
    assert at == len(data)
    return lengths


@pytest.fixture
def tls_site(request, tmp_path, pki, monkeypatch):
    return stopped_after(request, Site(tmp_path, pki, 'tls', monkeypatch))


def test_tls_tallies_follow_the_wire_as_sizes_and_cuts_change(tls_site):
    site = tls_site
    (site.root / 'b.txt').write_bytes(b'b' * 3000)
    client = BioClient(site)
    sent_lengths = []           # the records each exchange's request came in
    try:
        def ask(*cuts, requests=1, finished=b''):
            ciphertext = b''.join(cuts)
            for piece in (finished + cuts[0],) + cuts[1:]:
                client.sock.sendall(piece)
            assert all(status == 200 for status, _ in client.answers(requests))
            return record_lengths(ciphertext)

        data, lengths = client.seal(get('/index.html'))
        ask(data, finished=client.finished)
        sent_lengths.append(lengths)
        for path, extra in (('/index.html', ()), ('/b.txt', ()), ('/index.html', ('X-A: 1',)),
                            ('/index.html', ()), ('/b.txt', ()), ('/b.txt', ())):
            data, lengths = client.seal(get(path, 'HTTP/1.1', *extra))
            ask(data)
            sent_lengths.append(lengths)
        # A request in two TCP pieces (cut inside its record's header and body).
        data, lengths = client.seal(get('/index.html'))
        ask(data[:3], data[3:20], data[20:])
        sent_lengths.append(lengths)
        data, lengths = client.seal(get('/index.html'))   # and whole again
        ask(data)
        sent_lengths.append(lengths)
        wait_until(lambda: len(site.records()) == len(sent_lengths), 'a record per request')
        said = [record['tls'] for record in site.records()]
        assert said[0]['handshake'] is not None
        assert all(facts['handshake'] is None for facts in said[1:])
        for facts, lengths in zip(said, sent_lengths):
            assert facts['received']['records'] == len(lengths), (facts, lengths)
            assert facts['received']['bytes'] == sum(lengths), (facts, lengths)
            assert [entry[2] + 5 for entry in facts['received']['sizes']] == lengths
    finally:
        client.close()


def test_tls_two_requests_in_one_record_and_one_with_the_next_ones_first_bytes(tls_site):
    site = tls_site
    client = BioClient(site)
    try:
        client.sock.sendall(client.finished)
        # Two requests in one record: answered both, the record counted once.
        data, lengths = client.seal(get('/index.html') + get('/index.html'))
        assert len(lengths) == 1
        client.sock.sendall(data)
        assert [status for status, _ in client.answers(2)] == [200, 200]
        # A request and the next one's first bytes in one receive, then the rest.
        data1, first = client.seal(get('/index.html'))
        data2, second = client.seal(get('/index.html'))
        client.sock.sendall(data1 + data2[:7])
        assert [status for status, _ in client.answers(1)] == [200]
        client.sock.sendall(data2[7:])
        assert [status for status, _ in client.answers(1)] == [200]
        wait_until(lambda: len(site.records()) == 4, 'four records')
        said = [record['tls']['received'] for record in site.records()]
        # Every record the client sent since the handshake counted once, in some exchange.
        total = sum(facts['records'] for facts in said)
        assert total == len(lengths) + len(first) + len(second), said
        assert sum(facts['bytes'] for facts in said) == sum(lengths + first + second), said
        assert site.app.calls == 1
    finally:
        client.close()


# -- pipelining, trickling, a client that stops reading ----------------------------------

def test_pipelined_hits_misses_and_a_post_are_answered_in_order(site):
    (site.root / 'b.txt').write_bytes(b'bee')
    site.ask(get('/index.html'))        # remembered
    batch = [get('/index.html'), get('/b.txt'), post('/echo', b'hello'), get('/index.html'),
             get('/index.html', 'HTTP/1.1', 'X-B: 1'), get('/b.txt'), get('/index.html'),
             get('/missing'), get('/index.html')]
    with site.client() as client:
        client.send(b''.join(batch))
        replies = [client.reply() for _ in batch]
    statuses = [reply.status for reply in replies]
    assert statuses == [200, 200, 200, 200, 200, 200, 200, 404, 200]
    assert replies[2].body == b'hello'
    assert [reply.body for i, reply in enumerate(replies) if i in (0, 3, 4, 6, 8)] == [INDEX] * 5
    assert replies[1].body == replies[5].body == b'bee'
    wait_until(lambda: len(site.records()) == 1 + len(batch), 'a record per request')
    ids = [record['id'] for record in site.records()]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    targets = [record['request']['target'] for record in site.records()[1:]]
    assert targets == ['/index.html', '/b.txt', '/echo', '/index.html', '/index.html',
                       '/b.txt', '/index.html', '/missing', '/index.html']


def test_a_remembered_request_that_comes_byte_by_byte_is_answered_once(site):
    site.ask(get('/index.html'))
    with site.client() as client:
        request = get('/index.html')
        for index in range(len(request)):
            client.send(request[index:index + 1])
        reply = client.reply()
        assert reply.status == 200 and reply.body == INDEX
        client.send(get('/index.html'))
        assert client.reply().body == INDEX
    assert site.app.calls == 1


def test_the_idle_deadline_closes_a_connection_after_an_answer_given_again(site):
    """advance returned IDLE (its reader let go): the connection waits keepalive_timeout,
    not head_timeout (set past the socket's WAIT here: at_eof would time out)."""
    site.protocol.keepalive_timeout = 0.3
    site.protocol.head_timeout = 10 * WAIT
    site.ask(get('/index.html'))
    with site.client() as client:
        client.send(get('/index.html'))
        assert client.reply().body == INDEX
        client.sock.settimeout(WAIT)
        assert client.at_eof()              # closed by the server, within WAIT


def test_tls_sent_tallies_add_up_to_the_wire_and_a_close_notify_comes_with_the_last(tls_site):
    """What the server's records say it sent, handshake included, is every byte the
    client received after its own last handshake read; a close_notify written with the
    last request is counted with that exchange (two records: the request, the alert)."""
    site = tls_site
    (site.root / 'b.txt').write_bytes(b'b' * 20000)
    client = BioClient(site)
    try:
        client.sock.sendall(client.finished)
        for path in ('/index.html', '/b.txt', '/index.html', '/b.txt', '/index.html'):
            data, _ = client.seal(get(path))
            client.sock.sendall(data)
            assert client.answers(1)[0][0] == 200
        client.tls.write(get('/index.html'))
        with pytest.raises(ssl.SSLWantReadError):
            client.tls.unwrap()                 # its close_notify, after the request
        data = client.outgoing.read()
        lengths = record_lengths(data)
        assert len(lengths) == 2
        client.sock.sendall(data)
        assert client.answers(1)[0][0] == 200
        wait_until(lambda: len(site.records()) == 6, 'a record per request')
        said = [record['tls'] for record in site.records()]
        last = said[-1]['received']
        assert last['records'] == 2 and last['bytes'] == sum(lengths), last
        # (TLS 1.3 encrypts the alert: its outer type is application_data, as on the wire.)
        kinds = [HEADER.unpack_from(data, 0)[0], HEADER.unpack_from(data, lengths[0])[0]]
        assert sum(last['types'].values()) == 2 and \
            last['types'].get('alert', 0) == kinds.count(21)
        total = sum(facts['sent']['bytes'] for facts in said)
        # Bytes of the server's handshake flights the client read before do_handshake
        # returned are not in ``received``; what came after is every exchange's.
        assert total <= len(client.received) + said[0]['handshake']['sent']['bytes']
        assert sum(record_lengths(client.received)) == len(client.received)
        wire = record_lengths(client.received)
        assert sum(facts['sent']['records'] for facts in said[1:]) <= len(wire)
        # The records the exchanges after the first say they sent, in order, are a run of
        # what the client read (the first's may follow session tickets; the server's
        # close_notify follows the last).
        told = [entry[2] + 5 for facts in said[1:] for entry in facts['sent']['sizes']]
        assert all(facts['sent']['more'] == 0 for facts in said)
        assert any(wire[at:at + len(told)] == told for at in range(len(wire))), (told, wire)
        assert [facts['sent']['bytes'] for facts in said[1:]] == [
            sum(entry[2] + 5 for entry in facts['sent']['sizes']) for facts in said[1:]]
    finally:
        client.close()


def test_records_are_numbered_in_order_while_pool_threads_and_the_loop_add(site):
    """Echoes (their bodies read by pool threads) on two connections while a third asks
    GETs answered again by the loop: every record once, the ring in number order, and
    the echoes' bodies whole."""
    site.ask(get('/index.html'))
    failures = []
    rounds = 40

    def echo(tag):
        try:
            with site.client() as client:
                for n in range(rounds):
                    body = (f'{tag}{n}.' * 500).encode()
                    client.send(post('/echo', body))
                    reply = client.reply()
                    if (reply.status, reply.body) != (200, body):
                        failures.append((tag, n, reply.status))
        except Exception as exc:            # said by the test, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=echo, args=(tag,)) for tag in 'ab']
    for thread in threads:
        thread.start()
    with site.client() as client:
        for _ in range(rounds):
            client.send(get('/index.html') * 3)
            assert [client.reply().body for _ in range(3)] == [INDEX] * 3
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads) and not failures, failures
    total = 1 + 3 * rounds + 2 * rounds
    wait_until(lambda: site.protocol.records._latest == total, 'every record numbered')
    ids = [record['id'] for record in site.records()]
    assert ids == list(range(ids[0], total + 1))
    assert site.app.calls == 1 + 2 * rounds


def test_a_client_that_pipelines_and_never_reads_is_not_read_past_the_queue_bound(
        request, tmp_path, pki, monkeypatch):
    """Remembered answers of 30 KB asked for without reading: the server stops reading
    once its queue is full (the client's send then blocks, long before CAP bytes), and
    when the client reads at last, every request it sent whole is answered, in order."""
    site = stopped_after(request, Site(tmp_path, pki, 'plain', monkeypatch))
    (site.root / 'big.txt').write_bytes(b'z' * 30000)
    ask = get('/big.txt')
    assert site.ask(ask).body == b'z' * 30000
    cap = 64 * 1024 * 1024
    sock = socket.socket()
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):   # (fewer answers to read)
        sock.setsockopt(socket.SOL_SOCKET, option, 4096)
    sock.connect(('127.0.0.1', site.port))
    with sock, sock.makefile('rb') as file:
        sock.setblocking(False)
        pending = b''
        sent = 0
        while sent < cap:
            pending = pending or ask * 64
            try:
                n = sock.send(pending)
            except BlockingIOError:
                break
            sent += n
            pending = pending[n:]
        assert sent < cap, 'the server read every request without sending its answers'
        sock.settimeout(WAIT)
        # (The last request left cut: the server waits for its rest, answering the
        # others as the client reads.)
        whole = sent // len(ask)
        assert whole > PIPELINE_QUEUE // 30000
        for _ in range(whole):
            reply = read_reply(file)
            assert reply.status == 200 and len(reply.body) == 30000
    assert site.app.calls == 1


@pytest.mark.parametrize('trace', [(), ('--trace',)])
def test_two_workers_log_each_answer_given_again_in_its_dates_second(serve, tmp_path, trace):
    """--workers 2, the access log on: connections (the kernel spreads them) each ask
    their own target again and again until a second boundary has passed; each access
    log line's time is the second of the Date its answer carried."""
    (tmp_path / 'index.html').write_bytes(INDEX)
    server = serve('--workers', '2', '--root', tmp_path, '--uploads', tmp_path / 'up', *trace)
    clients = [RawClient(server.port) for _ in range(4)]
    dates = {}
    try:
        start = time.time()
        deadline = time.monotonic() + WAIT
        while int(time.time()) <= int(start) + 1:
            assert time.monotonic() < deadline
            for n, client in enumerate(clients):
                client.send(get(f'/index.html?c={n}'))
                reply = client.reply()
                assert reply.status == 200 and reply.body == INDEX
                dates.setdefault(n, []).append(date_second(reply.raw))
    finally:
        for client in clients:
            client.__exit__()
    assert len({second for seconds in dates.values() for second in seconds}) >= 2
    for n, seconds in dates.items():
        lines = server.wait_for_lines(rf'"GET /index\.html\?c={n} HTTP/1\.1" 200 ',
                                      len(seconds), stream='stderr')
        assert [log_second(match.string) for match in lines] == seconds
