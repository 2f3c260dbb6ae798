"""Framing records: what GET /_framing serves, and that --trace says the same thing.

Each HTTP exchange and each block stream leaves one record of how it was
framed; the page draws them, --trace prints them.  These tests make messages
of known framing and read the records back.
"""

import os
import re
import socket
import sys
import threading
import time

import pytest

from minihttp import records
from minihttp.blocks import put_block
from minihttp.limits import RECORDED_CHUNKS, RECORDED_LAST
from minihttp.records import FramingLog, Sizes, block_record, describe, public
from support import (CLF, Client, Feed, HTTP_LISTENING, WAIT, assert_back_to_baseline, chunked,
                     framing_records, free_port, get, post, resources, run_minihttp,
                     wait_until, workers_listening)

NO_SIZES = Sizes().facts()


def test_records_are_numbered_and_after_gives_only_newer_ones(serve):
    server = serve()
    with Client(server.port) as client:
        assert client.exchange(post('/echo', b'hello')).body == b'hello'
        assert client.exchange(get('/nothing-here')).status == 404
    first, second = framing_records(server.port)
    assert second['id'] == first['id'] + 1
    assert first['request']['body'] == {'framing': 'content-length', 'length': 5, 'bytes': 5,
                                        'done': True}
    assert (second['request']['target'], second['response']['status']) == ('/nothing-here', 404)
    newer = framing_records(server.port, after=second['id'])
    assert [r['request']['target'] for r in newer] == ['/_framing?after=*']   # no value shown
    with Client(server.port) as client:
        reply = client.exchange(get('/_framing?after=x'))
    assert reply.status == 400 and b'not a record number' in reply.body


def test_a_block_stream_is_recorded_with_its_block_sizes(minihttp):
    blocks_port = free_port()     # serve's --block-port 0 turns the block server off
    server = minihttp('serve', '--port', 0, '--block-port', blocks_port,
                      listening=HTTP_LISTENING)
    result = run_minihttp('blocks', '-c', '-p', blocks_port)
    assert result.returncode == 0, result.stderr
    server.wait_for_line(r'end of stream after 3 blocks')
    record, = [r for r in framing_records(server.port) if r['kind'] == 'blocks']
    assert (record['blocks'], record['bytes'], record['sizes'], record['last_sizes'],
            record['more'], record['ended']) == (3, 93, [30, 33, 30], [], 0,
                                                 'ended by the empty block')
    assert describe(record) == ('3 blocks by 4-byte length prefix, 93 B; '
                                'ended by the empty block')


def test_the_ring_keeps_the_newest_records_and_a_record_lists_a_bounded_number_of_sizes():
    log = FramingLog(size=3)
    for n in range(5):
        log.add(block_record(('h', n), 0.0, 0, 0, NO_SIZES, 'ended'))
    assert [r['id'] for r in log.recent()] == [3, 4, 5]
    assert [r['id'] for r in log.recent(after=4)] == [5]
    many = RECORDED_CHUNKS + 10
    kept = Sizes()
    for size in range(many):
        kept.add(size)
    record = public(block_record(('h', 0), 0.0, many, many, kept.facts(), 'ended'))
    assert record['sizes'] == list(range(RECORDED_CHUNKS))
    assert record['last_sizes'] == list(range(many - RECORDED_LAST, many))
    assert record['more'] == 10 - RECORDED_LAST


# -- chunk and block sizes: the first and the last few, and how many between -------------


@pytest.mark.parametrize('count', [0, 1, RECORDED_CHUNKS, RECORDED_CHUNKS + 1,
                                   RECORDED_CHUNKS + RECORDED_LAST + 1, 10_000])
def test_sizes_keeps_the_first_and_the_last_few_and_counts_the_rest(count):
    kept = Sizes()
    for size in range(1, count + 1):
        kept.add(size)
    first, last, total = kept.facts()
    assert total == count
    assert list(first) == list(range(1, min(count, RECORDED_CHUNKS) + 1))
    # The last few, none of them among the first: 65 chunks keep 64 first and 1 last.
    assert list(last) == list(range(max(RECORDED_CHUNKS, count - RECORDED_LAST) + 1, count + 1))
    shown = records.sizes(kept.facts())
    assert shown['more'] == count - len(first) - len(last) == max(
        0, count - RECORDED_CHUNKS - RECORDED_LAST)


def test_sizes_costs_bounded_memory_whatever_the_count():
    def held(kept):
        return (len(kept.first), len(kept.last),
                sys.getsizeof(kept.first) + sys.getsizeof(kept.last))

    small, large = Sizes(), Sizes()
    for size in range(RECORDED_CHUNKS + RECORDED_LAST + 1):
        small.add(size)
    for size in range(100_000):
        large.add(size)
    assert held(large) == held(small)
    assert held(large)[:2] == (RECORDED_CHUNKS, RECORDED_LAST)


def test_a_long_chunked_upload_and_its_chunked_echo_list_their_first_and_last_sizes(serve):
    server = serve()
    pieces = [b'x' * (n % 50 + 1) for n in range(200)]
    with Client(server.port) as client:
        client.send(get('/echo', 'HTTP/1.1', 'Transfer-Encoding: chunked', method='POST',
                        body=chunked(*pieces)))
        reply = client.reply('POST')
    assert reply.status == 200 and reply.get('transfer-encoding') == 'chunked'
    assert reply.body == b''.join(pieces)
    def echoes():
        return [r for r in framing_records(server.port) if r['request']['target'] == '/echo']
    wait_until(echoes, 'the echo recorded')    # recorded once its last chunk went
    record, = echoes()
    sizes = [len(piece) for piece in pieces]
    expected = {'sizes': sizes[:64], 'last_sizes': sizes[-4:], 'more': 132}
    body = record['request']['body']
    assert body['chunks'] == 200 and {k: body[k] for k in expected} == expected
    # The echo sends each chunk as it came: the response's chunks, listed the same way.
    response = record['response']
    assert (response['framing'], response['chunks']) == ('chunked', 200)
    assert {k: response[k] for k in expected} == expected


def test_a_response_of_bytes_or_content_length_lists_no_sizes(serve):
    server = serve()
    with Client(server.port) as client:
        assert client.exchange(post('/echo', b'hello')).status == 200
        assert client.exchange(get('/')).status == 200
    def answered():
        return [r['response'] for r in framing_records(server.port)
                if r['request']['target'] in ('/echo', '/')]
    wait_until(lambda: len(answered()) == 2, 'both recorded')
    assert [r['framing'] for r in answered()] == ['content-length'] * 2
    assert all('sizes' not in r and 'last_sizes' not in r for r in answered())


def test_a_long_block_stream_lists_its_first_and_last_block_sizes(minihttp):
    blocks_port = free_port()
    server = minihttp('serve', '--port', 0, '--block-port', blocks_port,
                      listening=HTTP_LISTENING)
    sizes = [n % 7 + 1 for n in range(70)]
    with socket.create_connection(('127.0.0.1', blocks_port), timeout=WAIT) as sock:
        for size in sizes:
            put_block(sock, b'b' * size)
        put_block(sock, b'')
        assert sock.recv(1) == b''          # closed once the stream is kept
    def streams():
        return [r for r in framing_records(server.port) if r['kind'] == 'blocks']
    wait_until(streams, 'the stream recorded')
    record, = streams()
    assert (record['blocks'], record['bytes']) == (70, sum(sizes))
    assert (record['sizes'], record['last_sizes'], record['more']) == (
        sizes[:64], sizes[-4:], 2)


# -- GET /_framing/stream: the records as they come, held by the event loop ------------


def test_a_stream_sends_the_kept_records_then_each_new_one_as_it_comes(serve):
    server = serve()
    with Client(server.port) as client:
        assert client.exchange(get('/nothing')).status == 404
    feed = Feed(server.port)
    try:
        first, itself = feed.events(2)     # the kept records: the 404 and the stream's own
        assert first['event'] == 'record' and first['data']['response']['status'] == 404
        assert itself['data']['request']['target'] == '/_framing/stream?after=*'
        with Client(server.port) as client:   # a body read on a pool thread: sent all the same
            assert client.exchange(post('/echo', b'hello')).body == b'hello'
        event, = feed.events(1)
        assert int(event['id']) == event['data']['id'] == int(itself['id']) + 1
        assert event['data']['request']['body']['length'] == 5
    finally:
        feed.close()
    later = Feed(server.port, after=event['data']['id'])
    try:
        assert later.events(1)[0]['data']['request']['target'].startswith('/_framing/stream')
    finally:
        later.close()


@pytest.mark.timeout(90)
def test_a_thousand_open_streams_hold_no_thread_and_each_gets_every_record(measured):
    server, base = measured(1000)
    feeds = []
    try:
        for n in range(1000):
            feeds.append(Feed(server.port, after=10**9))    # nothing kept: only new records
        assert resources(server.pid)[1] == base[1]         # not one thread more
        with Client(server.port) as client:
            assert client.exchange(get('/nothing', 'HTTP/1.1', 'X-Mark: 1')).status == 404
        for feed in feeds:
            event, = feed.events(1)
            assert event['data']['request']['target'].startswith('/_framing/stream')
    finally:
        for feed in feeds:
            feed.close()
    assert_back_to_baseline(server, base)


def test_a_stream_that_is_not_read_drops_its_oldest_records_and_says_how_many(serve):
    server = serve('--quiet')
    feed = Feed(server.port, after=10**9)
    try:
        feed.client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        count = 5000   # far more than STREAM_QUEUE and what the sockets' buffers hold
        with Client(server.port) as client:
            client.send(get('/nothing') * count)
            for _ in range(count):
                assert client.reply().status == 404
            assert client.exchange(get('/last-one')).status == 404
        seen = dropped = 0
        while True:
            event, = feed.events(1)
            if event['event'] == 'dropped':
                dropped += event['data']['dropped']
                continue
            seen += 1
            if event['data']['request']['target'] == '/last-one':
                break
        # Every record is either sent or counted as dropped; most were dropped:
        # the stream held STREAM_QUEUE of them, the sockets' buffers a few more.
        assert seen + dropped == count + 1 and seen < count // 4
    finally:
        feed.close()


def test_with_workers_every_worker_serves_every_process_s_records(minihttp):
    blocks_port = free_port()
    server = minihttp('serve', '--port', 0, '--block-port', blocks_port, '--workers', '2',
                      '--quiet', listening=HTTP_LISTENING)
    line = server.wait_for_line(r'^http served by 2 worker processes: (?P<pids>\d+ \d+)$')
    workers = {int(pid) for pid in line['pids'].split()}
    assert run_minihttp('blocks', '-c', '-p', blocks_port).returncode == 0   # the parent's
    targets = set()
    for round_ in range(16):      # until both workers have served: the kernel chooses
        for n in range(8):
            target = f'/r{round_}-{n}'
            with Client(server.port) as client:
                assert client.exchange(get(target)).status == 404
            targets.add(target)
        records = wait_for_records(server.port, targets)
        if {r['process'] for r in records if r['kind'] == 'http'} >= workers:
            break
    assert {r['process'] for r in records if r['kind'] == 'http'} >= workers
    assert [r for r in records if r['kind'] == 'blocks'][0]['blocks'] == 3
    ids = [r['id'] for r in records]
    assert len(set(ids)) == len(ids)          # each process numbers in a series of its own
    for process in {r['process'] for r in records}:
        own = [r['id'] for r in records if r['process'] == process]
        assert own == sorted(own)
    for _ in range(8):            # whichever worker answers, it has every record
        again = wait_for_records(server.port, targets)
        assert {r['id'] for r in again} >= {r['id'] for r in records if r['kind'] == 'blocks'
                                           or r['request']['target'] in targets}


def test_with_workers_one_read_of_any_worker_has_every_worker_s_records(minihttp):
    # Nobody reads the records while the requests are served: each worker keeps its
    # own (none travel), and the first read asks the others and waits for them.  So
    # one read, not a poll, names every target, whichever worker served it or reads.
    server = minihttp('serve', '--port', 0, '--block-port', 0, '--workers', '2', '--quiet',
                      listening=HTTP_LISTENING)
    # Both workers listening first: until the second has a socket of its own, the
    # first is given every connection (this failed 1 run in 8 on a loaded machine).
    workers = set(workers_listening(server))
    for round_ in range(3):
        # New connections: the kernel spreads them over both workers (24 all on one:
        # a chance of 2 ** -23).
        targets = {f'/one-read-{round_}-{n}' for n in range(24)}
        for target in sorted(targets):
            with Client(server.port) as client:
                assert client.exchange(get(target)).status == 404
        records = framing_records(server.port)
        served = [r for r in records if r['kind'] == 'http'
                  and r['request']['target'] in targets]
        assert {r['request']['target'] for r in served} == targets
        assert {r['process'] for r in served} == workers
        ids = [r['id'] for r in records]
        assert len(set(ids)) == len(ids)      # asked again, none is kept twice


def wait_for_records(port, targets, timeout=WAIT):
    """GET /_framing until its records name every target (they travel between processes)."""
    deadline = time.monotonic() + timeout
    while True:
        records = framing_records(port)
        named = {r['request']['target'] for r in records if r['kind'] == 'http'}
        if targets <= named:
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f'{sorted(targets - named)} not among the records')
        time.sleep(0.01)   # a poll interval, not a synchronisation


# -- cheap and discreet --------------------------------------------------------------------

def server_cpu(pid):
    """CPU seconds a process has used (user and system), from /proc/PID/stat."""
    with open(f'/proc/{pid}/stat') as stat:
        fields = stat.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def test_a_record_is_made_json_once_however_often_it_is_read(monkeypatch):
    made = []
    monkeypatch.setattr(records, 'public', lambda record: made.append(record) or {'n': 1})
    log = FramingLog(size=50)
    for n in range(120):                   # the ring turns: old records' JSON is let go
        log.add(block_record(('h', n), 0.0, 0, 0, NO_SIZES, 'ended'))
        for record in log.kept(after=max(0, n - 5)):
            assert log.as_json(record) == b'{"n":1}'
    assert len(made) == 120
    assert len(log._json) <= 2 * 50


@pytest.mark.timeout(120)
def test_get_framing_costs_about_as_much_as_sending_its_bytes(serve):
    server = serve('--quiet')
    with Client(server.port) as client:
        for n in range(300):               # a full ring of records, each read once below
            assert client.exchange(get(f'/fill-{n}')).status == 404
        assert len(framing_records(server.port)) == 200
        # The same records asked for again and again: they were made JSON once; each
        # answer only joins them.  (Made anew each time, one cost 50 times a 404's.)
        start = server_cpu(server.pid)
        for _ in range(200):
            assert client.exchange(get('/_framing')).status == 200
        framing = server_cpu(server.pid) - start
        start = server_cpu(server.pid)
        for _ in range(2000):
            assert client.exchange(get('/nothing')).status == 404
        small = server_cpu(server.pid) - start
    assert framing / 200 < 20 * max(small, 0.01) / 2000, (framing, small)


def test_records_and_the_stream_keep_the_path_and_the_query_s_names_not_its_values(serve):
    server = serve('--trace')
    feed = Feed(server.port, after=10**9)
    try:
        with Client(server.port) as client:
            assert client.exchange(get('/nothing?api_key=s3cret&token&page=2')).status == 404
            assert client.exchange(get('http://user:pa55@localhost/x?k=s3cret')).status == 404
        shown = '/nothing?api_key=*&*&page=*'
        kept = [r['request']['target'] for r in framing_records(server.port)]
        assert kept[-2:] == [shown, 'http://localhost/x?k=*']
        events = [e['data']['request']['target'] for e in feed.events(3)]
        assert events == [shown, 'http://localhost/x?k=*', '/_framing?after=*']
    finally:
        feed.close()
    assert server.stop() == 0
    # The access log keeps the request line, as Common Log Format does; nothing else.
    secret = [line for line in server.output().splitlines() if 's3cret' in line or 'pa55' in line]
    assert len(secret) == 2 and all(re.search(CLF, line) for line in secret), secret


def test_with_workers_a_read_of_the_records_waits_on_the_pool_never_in_the_loop(tmp_path):
    """A read with --workers waits for the other processes' answers (minihttp.hub):
    that wait must hold a pool thread, never the loop every connection shares."""
    from minihttp.app import App
    from minihttp.request import parse_head
    records = FramingLog()
    app = App(root=str(tmp_path), records=records)
    read = parse_head(b'GET /_framing HTTP/1.1\r\nHost: localhost')
    page = parse_head(b'GET /index.html HTTP/1.1\r\nHost: localhost')
    assert app.inline(read) and app.inline(page)
    records.on_read(lambda: None, lambda: None)
    assert not app.inline(read)
    assert app.inline(page)


def test_a_listener_is_told_of_each_record_until_it_stops_listening():
    log, seen = FramingLog(), []
    log.listen(seen.append)
    first = log.add(records.exchange_record(('127.0.0.1', 1), 0.0, None, None))
    log.unlisten(seen.append)       # an equal bound method: the one given to listen
    log.add(records.exchange_record(('127.0.0.1', 1), 0.0, None, None))
    assert seen == [first] and log._listeners == ()


def test_records_added_by_threads_at_once_are_kept_in_the_order_of_their_numbers():
    """The loop's thread and pool threads add at once: each number once, and the ring
    in the order of the numbers (numbered and appended under one lock)."""
    threads, each = 6, 2000
    log = FramingLog(size=threads * each)
    start = threading.Barrier(threads)

    def add_many():
        start.wait(WAIT)
        for n in range(each):
            log.add(block_record(('h', n), 0.0, 0, 0, NO_SIZES, 'ended'))

    workers = [threading.Thread(target=add_many) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(WAIT)
    assert not any(worker.is_alive() for worker in workers)
    numbers = [record[records.NUMBER] for record in log.kept()]
    assert numbers == list(range(1, threads * each + 1))
    assert log._latest == threads * each


def test_a_record_waits_while_its_lock_is_held_as_the_hub_holds_it_across_a_fork():
    log = FramingLog()
    added = threading.Event()
    lock = log.held()
    lock.acquire()
    try:
        adder = threading.Thread(target=lambda: (
            log.add(records.exchange_record(('127.0.0.1', 1), 0.0, None, None)), added.set()))
        adder.start()
        assert not added.wait(0.2)          # numbered only once the lock is let go
        assert log._latest == 0
    finally:
        lock.release()
    assert added.wait(WAIT)
    adder.join(WAIT)
    assert [record[records.NUMBER] for record in log.kept()] == [1]
