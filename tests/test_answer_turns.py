"""What an answer given again costs: the file stat'ed once per turn of the event loop
(files.Held.holds, EventLoop.turn), the access-log line made from what the first
exchange said (server.Answer.per_second, once a second), and the framing record from the
first one's facts.
Nothing a client or a reader of the log and the records sees may differ."""

import re
import time
import types
from email.utils import formatdate

import pytest

from minihttp import files
from minihttp import server as server_module
from minihttp.files import Held, small_files
from support import INDEX, Site, get, wait_until

pytestmark = pytest.mark.timeout(60)

# A Common Log Format line, whole: nothing before the address, nothing after the bytes.
LOG_LINE = re.compile(r'127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
                      r'"GET /index\.html HTTP/1\.1" 200 %d' % len(INDEX))


@pytest.fixture(params=['plain', 'tls'])
def site(request, tmp_path, pki, monkeypatch):
    served = Site(tmp_path, pki, request.param, monkeypatch)
    yield served
    served.loop.stop(0.5)


@pytest.fixture
def stats(monkeypatch):
    """The paths os.stat was asked about from files.py, in order."""
    asked = []
    stat = files.os.stat

    def counted(path, *args, **kwargs):
        asked.append(path)
        return stat(path, *args, **kwargs)
    monkeypatch.setattr(files.os, 'stat', counted)
    return asked


def test_a_held_file_is_stated_once_a_turn_and_a_change_seen_ends_it_at_once(tmp_path, stats):
    path = str(tmp_path / 'page.html')
    with open(path, 'wb') as file:
        file.write(b'one\n')
    st = files.os.stat(path)
    data = b'one\n'
    small_files.put(path, st, data, [])
    held = Held(path, data)
    stats.clear()
    assert held.holds(1) and held.holds(1) and held.holds(1)
    assert stats == [path]                         # once in turn 1
    assert held.holds(2) and stats == [path, path]
    with open(path, 'wb') as file:
        file.write(b'two, longer\n')
    # Still turn 2: no stat, and the stat of turn 2 said it held ...
    assert held.holds(2) and len(stats) == 2
    # ... until anyone sees the change (here the full path's get): forgotten at once.
    assert small_files.get(path) is None
    assert not held.holds(2)
    assert not held.holds(3)


def test_answers_given_again_in_one_turn_stat_their_file_once(site, stats):
    path = str(site.root / 'index.html')
    with site.client() as client:
        client.send(get('/index.html'))
        assert client.reply().body == INDEX
        assert site.app.calls == 1
        stats.clear()
        turn = site.loop.turn
        client.send(get('/index.html') * 4)         # one write: read and answered in one turn
        for _ in range(4):
            assert client.reply().body == INDEX
        assert site.app.calls == 1                   # all four given again
        assert site.loop.turn > turn
        assert stats.count(path) == 1


def test_access_log_lines_are_whole_and_an_answer_given_again_says_what_the_first_did(site):
    with site.client() as client:
        client.send(get('/index.html') * 3 + get('/missing'))
        assert [client.reply().status for _ in range(4)] == [200, 200, 200, 404]
    assert site.app.calls == 2                       # the first and the 404
    wait_until(lambda: len([line for line in site.lines if not line.startswith('trace ')]) == 4,
               'four log lines')
    *given, missing = [line for line in site.lines if not line.startswith('trace ')]
    for line in given:
        assert LOG_LINE.fullmatch(line), line
    assert re.fullmatch(r'127\.0\.0\.1 - - \[[^]]+\] "GET /missing HTTP/1\.1" 404 \d+ '
                        r'"refused 404: no file at /missing"', missing), missing


def test_an_answer_given_again_is_dated_and_logged_in_its_own_second(site, monkeypatch):
    clock = [1_000_000_000.25]
    fake = types.SimpleNamespace(time=lambda: clock[0], strftime=time.strftime,
                                 gmtime=time.gmtime, monotonic=time.monotonic)
    monkeypatch.setattr(server_module, 'time', fake)
    seen = []
    with site.client() as client:
        for now in (clock[0], clock[0] + 0.5, clock[0] + 1.0, clock[0] + 61.0, clock[0] + 61.5):
            clock[0] = now
            client.send(get('/index.html'))
            reply = client.reply()
            assert reply.body == INDEX
            assert reply.headers['date'] == formatdate(int(now), usegmt=True)
            seen.append(reply.raw)
    assert site.app.calls == 1
    assert len({re.sub(rb'Date: [^\r]*', b'', raw) for raw in seen}) == 1
    wait_until(lambda: len(site.records()) == 5, 'five records')
    assert [record['time'] for record in site.records()] == [
        1_000_000_000.25 + offset for offset in (0.0, 0.5, 1.0, 61.0, 61.5)]
    stamps = [re.search(r'\[([^]]+)\]', line)[1] for line in site.lines
              if not line.startswith('trace ')]
    assert stamps == ['09/Sep/2001:01:46:40 +0000'] * 2 + ['09/Sep/2001:01:46:41 +0000'] + [
        '09/Sep/2001:01:47:41 +0000'] * 2
