"""What an answer given again costs: the file stat'ed once per turn of the event loop
(files.Held.holds, EventLoop.turn), the access-log line made from what the first
exchange said (server.Answer.logged), and the framing record from the first one's facts.
Nothing a client or a reader of the log and the records sees may differ."""

import pytest

from minihttp import files
from minihttp.files import Held, small_files
from support import get
from test_answer_memo import INDEX, Site

pytestmark = pytest.mark.timeout(60)

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

