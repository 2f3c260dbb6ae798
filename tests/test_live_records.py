"""Live records: an exchange whose body is read on the pool is published open, updated
as the body arrives (a bounded number of times), and closed saying how it ended; the
access log, --trace and the record say the same thing."""

import socket
import sys
import threading
import time

import pytest

from minihttp.app import App
from minihttp.bodies import open_body
from minihttp.eventloop import EventLoop
from minihttp.framing import StreamReader
from minihttp.records import (FramingLog, http_record, NOT_SENT, ENDED_OPEN, ENDED_WHOLE,
                              VERSION)
from minihttp.request import read_request
from minihttp.server import HTTPServer, Live
from support import Client, FakeSocket, Feed, framing_records, get, request_bytes, wait_until

pytestmark = pytest.mark.timeout(60)

HEAD = request_bytes('PUT', '/uploads/live.bin', ['Transfer-Encoding: chunked'])


def piece(data):
    return b'%x\r\n%s\r\n' % (len(data), data)


class FakeClock:
    """A clock the test moves; ``reads`` counts how often the server looked at it."""

    def __init__(self):
        self.now = 0.0
        self.reads = 0
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            self.reads += 1
            return self.now


@pytest.fixture
def live_server(tmp_path, request):
    """An in-process server whose clock the test holds, republishing a live record every
    ``update_interval`` seconds of it (0, unless ``request.param`` says: at every wait for
    the client); ``request.param`` may also give the server's other options, its
    ``clock`` and the loop's ``threads``.  (port, server, clock)."""
    (tmp_path / 'root').mkdir()
    options = {'update_interval': 0, 'clock': FakeClock(), **getattr(request, 'param', {})}
    threads = options.pop('threads', 4)
    clock = options['clock']
    app = App(str(tmp_path / 'root'), str(tmp_path / 'uploads'))
    server = HTTPServer(app, access_log=False, records=app.records, **options)
    loop = EventLoop('127.0.0.1', 0, server, threads=threads)
    loop.start()
    yield loop.address[1], server, clock
    loop.stop(0.5)


def the_record(port, predicate, what, target='/uploads/live.bin'):
    """Wait for GET /_framing to hold the record of ``target`` as ``predicate`` wants; it."""
    found = []

    def seen():
        found[:] = [r for r in framing_records(port) if r['request'] and
                    r['request']['target'] == target and predicate(r)]
        return found
    wait_until(seen, what)
    (record,) = found
    return record


def test_an_upload_is_seen_open_and_growing_then_closed_as_the_client_left(live_server):
    port, _, _ = live_server
    sock = socket.create_connection(('127.0.0.1', port))
    try:
        sock.sendall(HEAD + piece(b'a' * 5))
        first = the_record(port, lambda r: r['request']['body']['bytes'] == 5, 'open, 5 B')
        assert first['ended'] == {'kind': 'open', 'reason': ''}
        assert first['response'] == {'sent': False, 'status': None, 'framing': 'none',
                                      'chunks': 0, 'bytes': 0, 'done': False}
        assert first['request']['body']['done'] is False
        sock.sendall(piece(b'b' * 7))
        grown = the_record(port, lambda r: r['request']['body']['bytes'] == 12, 'grown')
        assert grown['id'] == first['id'] and grown['version'] > first['version']
        assert grown['ended']['kind'] == 'open'
        assert grown['request']['body']['sizes'] == [5, 7]
    finally:
        sock.close()
    closed = the_record(port, lambda r: r['ended']['kind'] != 'open', 'closed')
    assert closed['id'] == first['id']
    body = closed['request']['body']
    assert (body['bytes'], body['chunks'], body['done']) == (12, 2, False)
    assert closed['ended'] == {
        'kind': 'client left',
        'reason': 'connection closed after 12 bytes of the body (2 chunks, no last chunk)'}
    assert closed['response']['sent'] is False
    assert 'no last chunk' in closed['words'] and '400' not in closed['words']


def test_the_stream_sends_open_update_and_closed_for_one_id(live_server):
    port, _, _ = live_server
    feed = Feed(port)
    sock = socket.create_connection(('127.0.0.1', port))
    try:
        sock.sendall(HEAD + piece(b'x' * 3))
        mine = lambda e: (e['data'].get('request') or {}).get('target') == '/uploads/live.bin'
        events = []
        while not events:
            events = [e for e in feed.events(1) if mine(e)]
        (opened,) = events
        assert opened['event'] == 'record' and opened['id'] == str(opened['data']['id'])
        assert opened['data']['ended']['kind'] == 'open'
        sock.sendall(piece(b'y' * 4) + piece(b'z') + b'0\r\n\r\n')
        later = []
        while not later or later[-1]['data']['ended']['kind'] == 'open':
            later += [e for e in feed.events(1) if mine(e)]
        assert all(e['event'] == 'update' and 'id' not in e for e in later)
        assert {e['data']['id'] for e in later} == {opened['data']['id']}
        final = later[-1]['data']
        assert final['ended'] == {'kind': 'whole', 'reason': ''}
        assert final['request']['body']['done'] is True
        assert final['response']['status'] == 201 and final['response']['done'] is True
    finally:
        sock.close()
        feed.close()


@pytest.mark.parametrize('live_server', [{'update_interval': 0.25}], indirect=True)
def test_updates_are_bounded_by_the_interval_whatever_the_pieces(live_server):
    port, server, clock = live_server
    versions = []
    server.records.listen(lambda r: versions.append(r[-2]) if r[0] == 'http' and
                          r[4] and r[4][1] == '/uploads/live.bin' else None)
    sock = socket.create_connection(('127.0.0.1', port))
    try:
        sock.sendall(HEAD)
        for n in range(40):             # 40 pieces over 2 seconds of the fake clock
            reads = clock.reads
            sock.sendall(piece(b'p'))
            wait_until(lambda: clock.reads > reads, f'piece {n} read')
            clock.now += 0.05
        sock.sendall(b'0\r\n\r\n')
        wait_until(lambda: server.records.kept() and versions and
                   framing_records(port)[-1]['ended']['kind'] == 'whole', 'the end')
    finally:
        sock.close()
    # 2 s at one publication per 0.25 s (the first after one interval): about 8, then
    # the close; 40 without the bound.
    assert 5 <= len(versions) <= 10, versions


def test_a_client_that_saw_a_record_open_is_given_its_updates():
    log = FramingLog()
    peer = ('127.0.0.1', 1)
    opened = log.add(http_record(peer, 0.0, None, None, NOT_SENT, ENDED_OPEN))
    later = log.add(http_record(peer, 0.0, None, None, NOT_SENT, ENDED_WHOLE))
    assert log.kept(later[-1]) == []
    closed = log.update(opened, http_record(peer, 0.0, None, None, NOT_SENT, ENDED_WHOLE))
    # Seen up to ``later``: the close came after, so it is given again, current.
    assert log.kept(later[-1]) == [closed]
    assert [r[-1] for r in log.kept()] == [opened[-1], later[-1]]
    assert log.kept()[0] is closed
    third = log.add(http_record(peer, 0.0, None, None, NOT_SENT, ENDED_WHOLE))
    assert log.kept(third[-1]) == []     # seen the third: the close came before it


def test_log_trace_and_record_agree_on_an_abandoned_chunked_upload(serve, tmp_path):
    server = serve('--trace', '--uploads', str(tmp_path / 'up'))
    sock = socket.create_connection(('127.0.0.1', server.port))
    sock.sendall(HEAD + piece(b'q' * 10) + piece(b'r' * 20))
    sock.close()        # after its 30 bytes, which the server reads before the end
    log = server.wait_for_line(r'"PUT /uploads/live\.bin HTTP/1\.1" (\S+) (\S+) '
                               r'"client left: (.*)"$', stream='stderr')
    trace = server.wait_for_line(r'^trace \S+: (head \d+ B by CRLFCRLF; body chunked.*)$',
                                 stream='stderr')
    record = the_record(server.port, lambda r: r['ended']['kind'] != 'open', 'closed')
    assert (log[1], log[2]) == ('-', '-')
    assert log[3] == record['ended']['reason'] == \
        'connection closed after 30 bytes of the body (2 chunks, no last chunk)'
    assert trace[1] == record['words']
    assert trace[1].endswith('no response; client left: ' + log[3])


def is_open(record):
    return record['ended']['kind'] == 'open'


@pytest.mark.parametrize('live_server', [{'update_interval': 0.1, 'clock': time.monotonic,
                                          'body_timeout': 1.0}], indirect=True)
def test_a_head_with_no_body_after_it_is_shown_open_then_timed_out(live_server):
    port, _, _ = live_server
    with socket.create_connection(('127.0.0.1', port)) as sock:
        sock.sendall(HEAD)        # and not one byte of its body: no thread takes it
        opened = the_record(port, is_open, 'open while its body has not begun')
        assert opened['ended']['reason'] == 'waiting for its body to begin'
        assert opened['request']['body'] == {'framing': 'unread'}
        assert opened['response']['sent'] is False
        assert opened['words'].endswith('no response yet; open: waiting for its body to begin')
        closed = the_record(port, lambda r: not is_open(r), 'closed by body_timeout')
        assert sock.recv(4096).startswith(b'HTTP/1.1 408 ')
    assert closed['id'] == opened['id'] and closed['version'] > opened['version']
    assert closed['ended'] == {'kind': 'timed out',
                               'reason': 'request body not received in time'}
    assert closed['response']['status'] == 408


@pytest.mark.parametrize('live_server', [{'threads': 1}], indirect=True)
def test_a_request_waiting_for_a_busy_pool_is_shown_open_then_served(live_server):
    port, _, _ = live_server
    holder = socket.create_connection(('127.0.0.1', port))
    waiter = socket.create_connection(('127.0.0.1', port))
    try:
        holder.sendall(HEAD + piece(b'h' * 4))      # the one thread reads it, and waits
        the_record(port, lambda r: r['request']['body']['bytes'] == 4, 'the thread busy')
        waiter.sendall(request_bytes('PUT', '/uploads/second.txt', body=b'hello'))
        waiting = the_record(port, is_open, 'waiting for a thread', '/uploads/second.txt')
        assert waiting['ended']['reason'] == 'waiting for a thread'
        assert waiting['request']['body'] == {'framing': 'unread'}
        holder.sendall(b'0\r\n\r\n')       # the thread is free: the waiter gets it
        assert waiter.recv(4096).startswith(b'HTTP/1.1 201 ')
    finally:
        holder.close()
        waiter.close()
    done = the_record(port, lambda r: not is_open(r), 'served', '/uploads/second.txt')
    assert done['id'] == waiting['id'] and done['version'] > waiting['version']
    assert done['ended']['kind'] == 'whole' and done['response']['status'] == 201


def test_work_no_thread_took_before_the_server_stopped_is_closed_saying_so(tmp_path):
    (tmp_path / 'root').mkdir()
    app = App(str(tmp_path / 'root'), str(tmp_path / 'uploads'))
    server = HTTPServer(app, access_log=False, records=app.records, update_interval=0,
                        clock=FakeClock())
    loop = EventLoop('127.0.0.1', 0, server, threads=1)
    loop.start()
    port = loop.address[1]
    holder = socket.create_connection(('127.0.0.1', port))
    waiter = socket.create_connection(('127.0.0.1', port))
    try:
        holder.sendall(HEAD + piece(b'h'))
        the_record(port, lambda r: r['request']['body']['bytes'] == 1, 'the thread busy')
        waiter.sendall(request_bytes('PUT', '/uploads/second.txt', body=b'hello'))
        waiting = the_record(port, is_open, 'waiting for a thread', '/uploads/second.txt')
    finally:
        loop.stop(0.1)          # the holder keeps the thread past the grace
        holder.close()
        waiter.close()
    (closed,) = [r for r in app.records.recent() if r['id'] == waiting['id']]
    assert closed['version'] > waiting['version']
    assert closed['ended'] == {'kind': 'timed out',
                               'reason': 'the server stopped before a thread took it'}
    assert closed['response']['sent'] is False

def test_an_echo_is_shown_sending_while_its_request_body_still_arrives(live_server):
    port, _, _ = live_server
    with socket.create_connection(('127.0.0.1', port)) as sock:
        file = sock.makefile('rb')
        sock.sendall(request_bytes('POST', '/echo', ['Transfer-Encoding: chunked']) +
                     piece(b'abc'))
        assert file.readline().startswith(b'HTTP/1.1 200 ')
        while file.readline() != b'\r\n':
            pass
        assert file.readline() == b'3\r\n' and file.readline() == b'abc\r\n'
        echoing = the_record(port, lambda r: is_open(r) and r['response']['sent'],
                             'the echo open, its response begun', '/echo')
        assert echoing['response'] == {'sent': True, 'status': 200, 'framing': 'chunked',
                                       'chunks': 1, 'bytes': 3, 'done': False,
                                       'trailers': 0, 'trailer_fields': [],
                                       'sizes': [3], 'last_sizes': [], 'more': 0}
        assert echoing['request']['body']['bytes'] == 3
        assert 'response 200 by chunked (1 chunk, 3 B, no last chunk)' in echoing['words']
        sock.sendall(b'0\r\n\r\n')
        assert file.readline() == b'0\r\n'
        file.close()
    done = the_record(port, lambda r: not is_open(r), 'the echo whole', '/echo')
    assert done['id'] == echoing['id'] and done['ended']['kind'] == 'whole'
    assert done['response']['done'] is True and done['response']['chunks'] == 1


def test_versions_only_grow_and_the_closed_one_is_last_whoever_publishes():
    """The loop's timer and the pool thread publish the same record at once: each version
    one above the last, and nothing after the closed one (a bounded number of races)."""
    head = request_bytes('PUT', '/uploads/race.bin', ['Transfer-Encoding: chunked'])
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)         # threads change places as often as they can
    try:
        race(head)
    finally:
        sys.setswitchinterval(switching)


def race(head):
    for attempt in range(100):
        server = HTTPServer(None, access_log=False, records=FramingLog(), update_interval=0)
        seen = []
        server.records.listen(lambda record: seen.append((record[VERSION], record[6][0])))
        request = read_request(StreamReader(FakeSocket(head)))
        body = open_body(request, None)

        class Conn:
            peer = ('127.0.0.1', 1)
            sock, queued = None, 0            # plain TCP, nothing queued
        live = Live(server, Conn, request, body, 0.0)
        start, done = threading.Barrier(2), threading.Event()

        def loop_ticks():
            start.wait()
            while not done.is_set():
                server.progress(live, 'waiting for a thread')
            server.progress(live)        # after the close: publishes nothing

        ticker = threading.Thread(target=loop_ticks)
        ticker.start()
        start.wait()
        for _ in range(20):              # the pool thread: the body grows, it publishes
            body.received += 1
            server.progress(live)
        server.record(Conn, request, body, None, 0.0, live=live)
        done.set()
        ticker.join()
        versions = [version for version, _ in seen]
        assert versions == list(range(len(seen))), (attempt, versions)
        assert [kind for _, kind in seen].count('whole') == 1 and seen[-1][1] == 'whole'


def test_the_server_listens_to_its_records_only_while_a_stream_is_open(live_server):
    # An exchange with no stream open makes no call to tell one (FramingLog.add calls
    # no listener); a stream opened is told of every record, and closed, no longer.
    port, server, _ = live_server
    listening = lambda: server._publish in server.records._listeners
    framing_records(port)
    assert not listening()
    feed = Feed(port)
    try:
        assert listening()          # from the stream's own answer on
        with Client(port) as client:
            assert client.exchange(get('/not-here')).status == 404
        seen = []
        while not seen:
            seen = [e for e in feed.events(1)
                    if (e['data'].get('request') or {}).get('target') == '/not-here']
        assert seen[0]['data']['response']['status'] == 404
    finally:
        feed.close()
    wait_until(lambda: not listening(), 'the server to stop listening to its records')
