"""Framing records: what GET /_framing serves, and that --trace says the same thing.

Each HTTP exchange and each block stream leaves one record of how it was
framed; the page draws them, --trace prints them.  These tests make messages
of known framing and read the records back.
"""

import socket

from conftest import HTTP_LISTENING, run_minihttp
from minihttp.limits import RECORDED_CHUNKS
from minihttp.records import FramingLog, block_record, describe
from test_http_server import Client, framing_records, get, post


def test_records_are_numbered_and_after_gives_only_newer_ones(serve):
    server = serve()
    with Client(server.port) as client:
        assert client.exchange(post('/echo', b'hello')).body == b'hello'
        assert client.exchange(get('/nothing-here')).status == 404
    first, second = framing_records(server.port)
    assert second['id'] == first['id'] + 1
    assert first['request']['body'] == {'framing': 'length', 'length': 5, 'bytes': 5,
                                        'done': True}
    assert (second['request']['target'], second['response']['status']) == ('/nothing-here', 404)
    newer = framing_records(server.port, after=second['id'])
    assert [r['request']['target'] for r in newer] == ['/_framing?after=0']
    with Client(server.port) as client:
        reply = client.exchange(get('/_framing?after=x'))
    assert reply.status == 400 and b'not a record number' in reply.body


def free_port():
    with socket.create_server(('127.0.0.1', 0)) as probe:
        return probe.getsockname()[1]


def test_a_block_stream_is_recorded_with_its_block_sizes(minihttp):
    blocks_port = free_port()     # serve's --block-port 0 turns the block server off
    server = minihttp('serve', '--port', 0, '--block-port', blocks_port,
                      listening=HTTP_LISTENING)
    result = run_minihttp('blocks', '-c', '-p', blocks_port)
    assert result.returncode == 0, result.stderr
    server.wait_for_line(r'end of stream after 3 blocks')
    record, = [r for r in framing_records(server.port) if r['kind'] == 'blocks']
    assert (record['blocks'], record['bytes'], record['sizes'], record['ended']) == (
        3, 93, [30, 33, 30], 'ended by the empty block')
    assert describe(record) == ('3 blocks by 4-byte length prefix, 93 B; '
                                'ended by the empty block')


def test_the_ring_keeps_the_newest_records_and_a_record_lists_a_bounded_number_of_sizes():
    log = FramingLog(size=3)
    for n in range(5):
        log.add(block_record(('h', n), 0.0, 0, 0, [], 'ended'))
    assert [r['id'] for r in log.recent()] == [3, 4, 5]
    assert [r['id'] for r in log.recent(after=4)] == [5]
    many = RECORDED_CHUNKS + 10
    record = block_record(('h', 0), 0.0, many, many, list(range(RECORDED_CHUNKS)), 'ended')
    assert len(record['sizes']) == RECORDED_CHUNKS and record['more'] == 10
