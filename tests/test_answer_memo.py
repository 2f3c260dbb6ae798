"""Answers given again: a request head seen before, byte for byte, whose answer was a small
file held in memory, is answered from what the first exchange decided (server.Answer).

Every test runs plain and over TLS, and counts the app's calls: a head answered again
never reaches the app, so each test knows whether it saw a remembered answer or a new
one.  h11 reads every answer (support.RawClient); the raw bytes are compared with the
Date field masked, the one thing a remembered answer makes anew.
"""

import os
import re

import pytest

from minihttp import server as server_module
from support import INDEX, Site, get, post, wait_until

pytestmark = pytest.mark.timeout(60)

DATE = re.compile(rb'\r\nDate: [^\r]*\r\n')
LOG_TIME = re.compile(r'\[[^\]]*\]')


@pytest.fixture(params=['plain', 'tls'])
def site(request, tmp_path, pki, monkeypatch):
    served = Site(tmp_path, pki, request.param, monkeypatch)
    yield served
    served.loop.stop(0.5)


def undated(raw):
    """An answer's bytes with its Date field's value masked."""
    assert len(DATE.findall(raw)) == 1, raw
    return DATE.sub(b'\r\nDate: *\r\n', raw)


def same_facts(record):
    """What a record says that an answer given again says alike: all but its number,
    time, peer and TLS records."""
    return {key: value for key, value in record.items()
            if key not in ('id', 'version', 'time', 'peer', 'tls', 'words')}


def test_a_head_seen_before_gets_the_same_bytes_but_its_date(site):
    with site.client() as client:
        client.send(get('/index.html'))
        first = client.reply()
        for _ in range(3):
            client.send(get('/index.html'))
            again = client.reply()
            assert again.status == 200 and again.body == INDEX
            assert undated(again.raw) == undated(first.raw)
    assert site.app.calls == 1
    # Another connection, and several heads in one write (pipelined): the same.
    with site.client() as client:
        client.send(get('/index.html') * 3)
        for _ in range(3):
            assert undated(client.reply().raw) == undated(first.raw)
    assert site.app.calls == 1
    assert first.headers['content-length'] == str(len(INDEX))


def test_records_access_log_and_trace_say_the_same_for_an_answer_given_again(site):
    with site.client() as client:
        for _ in range(2):
            client.send(get('/index.html?q=1'))
            assert client.reply().body == INDEX
    assert site.app.calls == 1
    wait_until(lambda: len(site.records()) == 2, 'two records')
    first, again = site.records()
    assert same_facts(first) == same_facts(again)
    assert first['request']['target'] == '/index.html?q=*'
    assert (first['peer'], first['time'] <= again['time']) == (again['peer'], True)
    assert again['id'] > first['id']
    if site.context is None:
        assert first['tls'] is again['tls'] is None
        assert first['words'] == again['words']
    else:    # each its own TLS records: the handshake with the first, the answer each
        assert first['tls']['handshake'] is not None and again['tls']['handshake'] is None
        assert again['tls']['sent']['records'] >= 1
        assert again['tls']['sent']['bytes'] > len(INDEX)
    logged = [line for line in site.lines if not line.startswith('trace ')]
    assert len(logged) == 2 and '"GET /index.html?q=1 HTTP/1.1" 200' in logged[0]
    assert LOG_TIME.sub('', logged[0]) == LOG_TIME.sub('', logged[1])
    traced = [line for line in site.lines if line.startswith('trace ')]
    assert len(traced) == 2 and traced[0].split(';')[:3] == traced[1].split(';')[:3]


def test_a_file_changed_replaced_or_removed_is_seen(site):
    index = site.root / 'index.html'
    assert site.ask(get('/index.html')).body == INDEX
    assert site.ask(get('/index.html')).body == INDEX
    assert site.app.calls == 1
    index.write_bytes(b'changed in place, longer\n')            # the same inode
    assert site.ask(get('/index.html')).body == b'changed in place, longer\n'
    stat = index.stat()
    index.write_bytes(b'changed in place, same size\n'[:stat.st_size])
    os.utime(index, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert site.ask(get('/index.html')).body == b'changed in place, same size\n'[:stat.st_size]
    (site.root / 'new.html').write_bytes(b'a new file, renamed over\n')
    os.replace(site.root / 'new.html', index)
    assert site.ask(get('/index.html')).body == b'a new file, renamed over\n'
    calls = site.app.calls
    assert site.ask(get('/index.html')).body == b'a new file, renamed over\n'
    assert site.app.calls == calls                             # remembered again
    index.unlink()
    gone = site.ask(get('/index.html'))
    assert gone.status == 404 and b'renamed over' not in gone.raw
    assert site.ask(get('/index.html')).status == 404           # errors are not remembered
    assert site.app.calls == calls + 2
    index.write_bytes(INDEX)
    assert site.ask(get('/index.html')).body == INDEX


def test_an_upload_replaced_by_put_or_swapped_for_a_link_or_a_folder_is_seen(site, tmp_path):
    uploads = tmp_path / 'uploads'
    ask = get('/uploads/note.txt')
    for content in (b'first version\n', b'other version\n'):      # the same size
        stored = site.ask(post('/uploads/note.txt', content, method='PUT'), 'PUT').status
        assert stored in (200, 201)
        for _ in range(2):
            reply = site.ask(ask)
            assert reply.body == content and reply.headers['content-security-policy'] == 'sandbox'
    calls = site.app.calls
    outside = tmp_path / 'outside.txt'
    outside.write_bytes(b'not to be served\n')
    os.replace(uploads / 'note.txt', uploads / 'kept.txt')
    os.symlink(outside, uploads / 'note.txt')
    assert site.ask(ask).status == 404 and site.app.calls == calls + 1
    os.unlink(uploads / 'note.txt')
    os.mkdir(uploads / 'note.txt')
    assert site.ask(ask).status == 301 and site.app.calls == calls + 2


def test_each_head_gets_its_own_answer(site):
    whole = site.ask(get('/index.html'))
    etag = whole.headers['etag']
    asks = {
        'close': (get('/index.html', 'HTTP/1.1', 'Connection: close'), 'GET'),
        'http/1.0': (get('/index.html', 'HTTP/1.0'), 'GET'),
        'http/1.0 kept': (get('/index.html', 'HTTP/1.0', 'Connection: keep-alive'), 'GET'),
        'head': (get('/index.html', method='HEAD'), 'HEAD'),
        'other host': (get('/index.html').replace(b'localhost', b'127.0.0.1'), 'GET'),
        'foreign host': (get('/index.html').replace(b'localhost', b'evil.example'), 'GET'),
        'not modified': (get('/index.html', 'HTTP/1.1', f'If-None-Match: {etag}'), 'GET'),
        'range': (get('/index.html', 'HTTP/1.1', 'Range: bytes=0-3'), 'GET'),
    }
    for _ in range(2):          # the second time, those remembered are answered again
        replies = {name: site.ask(data, method) for name, (data, method) in asks.items()}
        assert replies['close'].headers['connection'] == 'close'
        assert replies['close'].body == INDEX
        assert replies['http/1.0'].headers['connection'] == 'close'
        assert replies['http/1.0'].body == INDEX
        assert replies['http/1.0 kept'].headers['connection'] == 'keep-alive'
        assert replies['head'].body == b'' and replies['head'].headers['content-length'] == str(
            len(INDEX))
        assert replies['other host'].body == INDEX
        assert replies['foreign host'].status == 421
        assert replies['not modified'].status == 304
        assert replies['range'].status == 206 and replies['range'].body == INDEX[:4]
    # Remembered: the first answer and five of the eight heads (not 421, 304, 206).
    assert site.app.calls == 1 + 8 + 3


@pytest.mark.parametrize('version', ['HTTP/1.1 Connection: close', 'HTTP/1.0'])
def test_a_remembered_answer_closes_the_connection_as_the_first_did(site, version):
    data = (get('/index.html', 'HTTP/1.1', 'Connection: close') if version != 'HTTP/1.0'
            else get('/index.html', 'HTTP/1.0'))
    for _ in range(3):
        with site.client() as client:
            client.send(data + get('/index.html'))     # nothing after a close is answered
            assert client.reply().body == INDEX
            assert client.at_eof()
    assert site.app.calls == 1


def test_a_stopping_server_answers_a_remembered_head_anew_with_a_close(site, monkeypatch):
    with site.client() as client:
        client.send(get('/index.html'))
        assert 'connection' not in client.reply().headers
    assert site.app.calls == 1 and len(site.protocol.answers.entries) == 1
    # As every connection sees it once its loop began to stop (Connection.stopping).
    monkeypatch.setattr(site.loop, 'stop_asked', True)
    for _ in range(2):
        with site.client() as client:
            client.send(get('/index.html') * 2)
            reply = client.reply()
            assert reply.body == INDEX and reply.headers['connection'] == 'close'
            assert client.at_eof()                       # the second is not answered
    assert site.app.calls == 3                           # none given again, none kept
    assert len(site.protocol.answers.entries) == 1


def test_memory_is_bounded_in_bytes_however_many_heads(site, monkeypatch):
    budget = 64 * 1024
    answers = site.protocol.answers = server_module.Remembered(budget)
    with site.client() as client:
        for n in range(300):
            client.send(get('/index.html', 'HTTP/1.1', f'X-Distinct: {n:0800}'))
            assert client.reply().body == INDEX
            assert answers.size <= budget
        assert 0 < len(answers.entries) < 300
        assert site.app.calls == 300
        # A head larger than an eighth of the budget is never kept.
        client.send(get('/index.html', 'HTTP/1.1', 'X-Large: ' + 'x' * (budget // 8)))
        assert client.reply().body == INDEX
        assert not any(len(head) > budget // 8 for head in answers.entries)
        # And the heads asked for again are remembered again.
        for _ in range(3):
            client.send(get('/index.html'))
            assert client.reply().body == INDEX
        assert site.app.calls == 300 + 1 + 1


def test_a_head_after_an_empty_line_is_remembered_as_it_came(site):
    """The empty line a server ignores before a request line (RFC 9112 section 2.2) is
    part of the bytes looked up, and of the head's size in each record."""
    data = get('/index.html')
    for ask in (data, b'\r\n' + data, b'\r\n' + data, data):
        assert site.ask(ask).body == INDEX
    assert site.app.calls == 2
    wait_until(lambda: len(site.records()) == 4, 'four records')
    sizes = [record['request']['head'] for record in site.records()]
    assert sizes == [len(data), len(data) + 2, len(data) + 2, len(data)]
