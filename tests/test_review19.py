"""A hostile client against this session's hot path: the answer memo's stat once per turn
of the loop, the TLS layer's receive path, and what the log says of a client that breaks
TLS after its handshake.  Plain and over TLS; each test forces its interleaving (no sleep)."""

import threading

import pytest

from minihttp import eventloop, files
from support import get, wait_until
from test_answer_memo import Site

pytestmark = pytest.mark.timeout(60)

PAGE = '/uploads/page.html'


def request(method, path, body=b''):
    head = f'{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n'
    if body or method == 'PUT':
        head += f'Content-Length: {len(body)}\r\n'
    return head.encode() + b'\r\n' + body


@pytest.fixture(params=['plain', 'tls'])
def gated(request, tmp_path, pki, monkeypatch):
    """A Site whose next poll that reports a client also reports the loop's wake-up (as it
    does when a pool thread gave a connection back just before: ``state['arm']``), and
    whose DELETEs wait for ``state['go']`` on their pool thread."""
    state = {'arm': False, 'go': threading.Event(), 'entered': threading.Event(), 'loop': None}
    real_poll = eventloop.Poller.poll

    def poll(poller, timeout):
        ready = real_poll(poller, timeout)
        loop = state['loop']
        if state['arm'] and loop is not None:
            wake = loop._wake_r.fileno()
            clients = [fd for fd, _ in ready if fd not in (wake, loop.sock.fileno())]
            if clients and wake not in [fd for fd, _ in ready]:
                state['arm'] = False
                ready = list(ready) + [(wake, eventloop.READABLE)]
        return ready
    monkeypatch.setattr(eventloop.Poller, 'poll', poll)
    site = Site(tmp_path, pki, request.param, monkeypatch)
    state['loop'] = site.loop
    app = site.protocol.app

    def gate(req):
        if req.method == 'DELETE':
            state['entered'].set()
            assert state['go'].wait(20), 'the loop never let the DELETE go'
        return app(req)
    site.protocol.app = gate
    site.state = state
    yield site
    state['go'].set()
    site.loop.stop(0.5)


def test_a_write_a_pool_thread_made_is_seen_by_the_request_pipelined_after_it(gated,
                                                                            monkeypatch):
    """DELETE then GET of the same page, in one write: the GET comes back from the pool
    with its connection and is answered in the loop.  If that happens in a turn whose
    stat of the page (another client's answer given again) came before the delete, the
    turn's stat must not stand for it: RFC 9112 section 9.3.2, a server answers
    pipelined requests in order, so the GET sees the DELETE (404), never the page."""
    site, state = gated, gated.state
    with site.client() as writer:
        writer.send(request('PUT', PAGE, b'a page\n'))
        assert writer.reply().status == 201
    held = files.Held.holds

    def holds(self, turn):
        found = held(self, turn)
        if state.get('hold') and threading.current_thread() is site.loop._thread:
            state['hold'] = False
            state['go'].set()       # the DELETE goes now, after this turn's stat ...
            wait_until(lambda: site.loop._returned, 'the DELETE given back')   # ... and is back
        return found
    monkeypatch.setattr(files.Held, 'holds', holds)
    with site.client() as reader, site.client() as deleter:
        reader.send(get(PAGE))
        assert reader.reply().body == b'a page\n'
        deleter.send(request('DELETE', PAGE) + get(PAGE))    # waits for 'go' on its thread
        assert state['entered'].wait(15)
        state['hold'] = state['arm'] = True
        reader.send(get(PAGE))                               # given again: the turn's stat
        assert reader.reply().body == b'a page\n'            # (it came before the DELETE)
        assert deleter.reply().status == 204
        assert deleter.reply().status == 404
    assert not state['arm'] and not state['hold']
