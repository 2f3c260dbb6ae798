"""Live records: an exchange whose body is read on the pool is published open, updated
as the body arrives (a bounded number of times), and closed saying how it ended; the
access log, --trace and the record say the same thing."""

import socket
import threading

import pytest

from minihttp.app import App
from minihttp.eventloop import EventLoop
from minihttp.records import FramingLog, http_record, NOT_SENT, ENDED_OPEN, ENDED_WHOLE
from minihttp.server import HTTPServer
from support import Feed, framing_records, request_bytes, wait_until

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
    ``request.param`` seconds of it (0: at every wait for the client); (port, server, clock)."""
    (tmp_path / 'root').mkdir()
    clock = FakeClock()
    app = App(str(tmp_path / 'root'), str(tmp_path / 'uploads'))
    server = HTTPServer(app, access_log=False, records=app.records,
                        update_interval=getattr(request, 'param', 0), clock=clock)
    loop = EventLoop('127.0.0.1', 0, server)
    loop.start()
    yield loop.address[1], server, clock
    loop.stop(0.5)


def the_record(port, predicate, what):
    """Wait for GET /_framing to hold the upload's record as ``predicate`` wants; it."""
    found = []

    def seen():
        found[:] = [r for r in framing_records(port) if r['request'] and
                    r['request']['target'] == '/uploads/live.bin' and predicate(r)]
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


@pytest.mark.parametrize('live_server', [0.25], indirect=True)
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
