"""The connection model of issue 8, end to end: one event loop waits, a bounded pool of threads reads bodies.

Per process, one loop holds every connection while it waits (accepting, idle
keep-alive, a head on its way) and answers small requests inline; anything
with a body, or a large answer, goes with its socket and buffer to a pool of
``--threads`` threads and comes back to the loop afterwards.  These tests
drive `python -m minihttp serve` processes over loopback and see only bytes,
exit statuses and /proc, never the server's internals.  Nothing waits by
sleeping: a test waits for a byte, EOF, a line or a process exit, or polls
/proc or a directory with a deadline.

What each test pins:

- ``test_a_head_arriving_a_byte_at_a_time_is_answered``: a head (and then a
  body) sent one byte per segment is parsed whole; the head is found on the
  connection's own buffer across many receives, the body is read in the pool.
- ``test_a_request_split_at_every_byte_boundary_is_answered``: two pipelined
  requests in two sends, cut at every offset, on one keep-alive connection.
- ``test_pipelined_requests_cross_between_the_loop_and_the_pool_in_order``:
  GET, chunked PUT, GET /headers, Content-Length PUT, GET in one write are
  answered in order on one connection, to /echo and to an upload that the last
  GET reads back.
- ``test_bytes_buffered_behind_a_body_survive_the_trips_between_loop_and_pool``:
  loop -> pool -> loop -> pool keeps the bytes read ahead, a later request's
  head and half its body, when the rest comes after the first answers.
- ``test_idle_silent_and_stalled_connections_each_meet_their_deadline``: the
  keep-alive deadline closes an idle and a never-used connection without a
  word; a started head runs on the head deadline and gets 408.
- ``test_a_client_that_does_not_read_holds_up_no_one_else``: an inline answer
  meeting a full send buffer waits for writability in the loop instead of
  blocking it; the stuck client later gets every answer whole, in order.
- ``test_2000_idle_connections_are_held_while_fresh_ones_are_served``,
  ``test_300_dripping_heads_get_408_while_other_requests_are_served``,
  ``test_beyond_max_connections_a_new_connection_gets_503_and_is_closed``:
  load with small counts; descriptors and threads go back to their baseline.
  The last replaces test_http_server.py's
  ``test_max_connections_makes_the_next_client_wait_until_one_leaves``.
- ``test_a_burst_of_connects_under_busy_connections_is_answered_promptly``: 800
  new connections under 100 busy pipelining ones are answered within 2 s (the
  loop accepts a batch a pass; one a pass took 5 s), and the busy ones go on.
- ``test_the_server_raises_its_descriptor_limit_to_hold_its_connections``: a
  server started with a soft RLIMIT_NOFILE of 256 still holds 400 connections.
- ``test_sigterm_closes_idle_connections_and_lets_an_upload_finish``: on
  SIGTERM the listener closes, idle connections are closed, an upload in
  flight finishes within --grace and is stored, the exit status is 0.
- ``test_two_workers_both_serve_and_stop_on_sigterm_with_connections_open``
  and ``test_workers_auto_starts_one_worker_per_cpu``: --workers on the loop.
- ``test_two_workers_share_a_burst_of_connects``: each worker listens on a
  socket of its own, and 300 connects are spread over both (a third each at
  least; sharing one socket, the first to wake took about 250).
- ``test_a_pool_of_one_thread_queues_the_second_upload_and_still_answers_gets``:
  --threads 1: a second upload waits in the loop (not refused), a GET meanwhile
  is answered without a pool thread, then both uploads are stored.
- ``test_the_defaults_are_32_threads_and_10000_connections_per_process``.
"""

import contextlib
import email.utils
import errno
import fcntl
import hashlib
import json
import os
import re
import resource
import selectors
import signal
import socket
import termios
import threading
import time

import pytest

from minihttp.app import App
from minihttp.cli import build_parser
from minihttp.eventloop import EventLoop
from minihttp.responses import Response
from minihttp.limits import ACCEPT_MIN, SMALL_FILE
from minihttp.records import public
from minihttp.server import HTTPServer
from support import (Client, REPO, WAIT, assert_back_to_baseline, chunked, get, listening_sockets,
                     post, read_reply, resources, temps, wait_until, wait_until_refused,
                     workers_listening)

INDEX = (REPO / 'www' / 'index.html').read_bytes()


def chunked_put(path, *pieces):
    """A PUT announcing a chunked body, then ``pieces`` as that body, one chunk each.

    With no pieces, the head alone: the test sends the chunks itself.
    """
    head = get(path, 'HTTP/1.1', 'Transfer-Encoding: chunked', method='PUT')
    return head + chunked(*pieces) if pieces else head


def nodelay(client):
    """Each send goes out as its own segment (no Nagle coalescing)."""
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


# -- the loop: heads in pieces, pipelining across the loop and the pool -------------

def test_a_head_arriving_a_byte_at_a_time_is_answered(serve):
    fields = [f'X-Drip-{n}: value {n}' for n in range(8)]
    body = b'a body dripped after its head'
    with nodelay(Client(serve().port)) as client:
        for byte in get('/headers', 'HTTP/1.1', *fields):
            client.send(bytes([byte]))
        reply = client.reply()
        assert reply.status == 200 and not reply.closes
        assert reply.body.decode() == 'Host: localhost\n' + ''.join(f'{f}\n' for f in fields)
        # The same with a body: the head comes together in the loop, the body
        # is read a byte at a time in a pool thread.
        for byte in post('/echo', body, method='PUT'):
            client.send(bytes([byte]))
        assert client.reply('PUT').body == body
        assert client.exchange(get('/')).body == INDEX


def test_a_request_split_at_every_byte_boundary_is_answered(serve):
    stream = get('/headers', 'HTTP/1.1', 'X-Split: yes') + get('/', method='HEAD')
    with nodelay(Client(serve().port)) as client:
        for cut in range(1, len(stream)):
            client.send(stream[:cut])
            client.send(stream[cut:])
            headers, head = client.reply(), client.reply('HEAD')
            assert (headers.status, headers.body) == (200, b'Host: localhost\nX-Split: yes\n'), cut
            assert (head.status, head.get('content-length')) == (200, str(len(INDEX))), cut
            assert not headers.closes and not head.closes, cut


@pytest.mark.parametrize('target', ['/echo', '/uploads/piped.bin'])
def test_pipelined_requests_cross_between_the_loop_and_the_pool_in_order(
        serve, tmp_path, target):
    # The last chunk is larger than a receive buffer, so the requests behind
    # it arrive in a later fill than their predecessors.
    pieces = [b'one ', b'two ', b'three ', os.urandom(100_000)]
    content = b''.join(pieces)
    body = b'a Content-Length body'
    last = target if target.startswith('/uploads/') else '/'
    server = serve('--uploads', tmp_path)
    with Client(server.port) as client:
        client.send(get('/') + chunked_put(target, *pieces)
                    + get('/headers', 'HTTP/1.1', 'X-N: 3')
                    + post('/echo', body, method='PUT') + get(last))
        replies = [client.reply(method) for method in ['GET', 'PUT', 'GET', 'PUT', 'GET']]
    assert not any(reply.closes for reply in replies)
    assert [reply.status for reply in replies] == [
        200, 201 if target.startswith('/uploads/') else 200, 200, 200, 200]
    assert replies[0].body == INDEX
    if target == '/echo':
        assert replies[1].get('x-request-framing') == 'chunked'
        assert replies[1].body == content
        assert replies[4].body == INDEX
    else:
        stored = json.loads(replies[1].body)
        assert (stored['bytes'], stored['sha256'], stored['framing'], stored['chunks']) == (
            len(content), hashlib.sha256(content).hexdigest(), 'chunked', len(pieces))
        assert replies[4].body == content
    assert replies[2].body == b'Host: localhost\nX-N: 3\n'
    assert replies[3].body == body


@pytest.mark.parametrize('framing', ['length', 'chunked'])
def test_bytes_buffered_behind_a_body_survive_the_trips_between_loop_and_pool(serve, framing):
    # The first body looks like a request: it must be echoed, not parsed.
    first = b'GET / HTTP/1.1\r\nHost: not-a-request\r\n\r\n'
    second = b'0123456789' * 2000
    if framing == 'length':
        third = post('/echo', second, method='PUT')
    else:
        third = chunked_put('/echo', second[:7000], second[7000:])
    stream = post('/echo', first, method='PUT') + get('/headers', 'HTTP/1.1', 'X-N: 2') + third
    # Cut inside the third request's body: its head and half of it come in
    # the first write, behind a body (pool) and a GET (loop).
    cut = len(stream) - len(third) // 3
    with Client(serve().port) as client:
        client.send(stream[:cut])
        assert client.reply('PUT').body == first
        assert client.reply().body == b'Host: localhost\nX-N: 2\n'
        client.send(stream[cut:])
        reply = client.reply('PUT')
        assert (reply.status, reply.body) == (200, second)
        assert not reply.closes
        assert client.exchange(get('/')).body == INDEX


# -- deadlines and a full send buffer --------------------------------------------------

def test_idle_silent_and_stalled_connections_each_meet_their_deadline(serve):
    # The head timeout is the longer: a head that started is held to it, not
    # cut silently at the keep-alive deadline.
    port = serve('--keepalive-timeout', '0.5', '--head-timeout', '1').port
    with Client(port) as idle, Client(port) as silent, Client(port) as stalled:
        assert not idle.exchange(get('/')).closes
        stalled.send(b'GET / HTTP/1.1\r\nHost: localhost\r\n')   # the blank line never comes
        assert idle.file.read() == b'', 'an idle connection is closed without a response'
        assert silent.file.read() == b'', 'a connection that never spoke is closed unanswered'
        reply = stalled.reply()
        assert reply.status == 408
        stalled.assert_closed_after(reply)


def tcp_send_buffer_ceiling():
    """The most a TCP socket's send buffer grows to here (tcp_wmem's maximum)."""
    try:
        with open('/proc/sys/net/ipv4/tcp_wmem') as wmem:
            return int(wmem.read().split()[2])
    except (OSError, IndexError, ValueError):
        return 4 << 20


def unread_bytes(sock):
    """Bytes waiting in a socket's receive queue (FIONREAD)."""
    return int.from_bytes(fcntl.ioctl(sock, termios.FIONREAD, bytes(4)), 'little', signed=True)


@pytest.mark.timeout(60)
def test_a_client_that_does_not_read_holds_up_no_one_else(serve, tmp_path):
    content = os.urandom(SMALL_FILE)          # the largest file answered from memory, inline
    (tmp_path / 'small.bin').write_bytes(content)
    server = serve('--root', tmp_path, '--quiet')
    # More answers than the server's send buffer and ours can hold together.
    count = tcp_send_buffer_ceiling() // len(content) + 32
    with socket.socket() as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # before the handshake
        stuck.settimeout(WAIT)
        stuck.connect(('127.0.0.1', server.port))
        stuck.sendall(get('/small.bin') * count)
        wait_until(lambda: unread_bytes(stuck) > 0, 'the answers to the stuck client began')
        with Client(server.port, timeout=5) as other:   # generous: a blocked loop never answers
            reply = other.exchange(get('/small.bin'))
            assert (reply.status, reply.body) == (200, content)
        with stuck.makefile('rb') as answers:
            for n in range(count):
                reply = read_reply(answers)
                assert (reply.status, len(reply.body)) == (200, len(content)), n
                assert reply.body == content, n


# -- load with small counts; descriptors and threads back to baseline ------------------


def ask_each(clients, requests, method='GET'):
    """Send each client its request, all before any answer is read; their replies, in order."""
    for client, request in zip(clients, requests, strict=True):
        client.send(request)
    return [client.reply(method) for client in clients]


def open_served(port, count, stack, batch=100):
    """``count`` keep-alive connections, each answered once, held open in ``stack``.

    In batches, so that a server that stops answering fails the batch it is
    in, rather than leaving connects to pile up in the backlog.
    """
    clients = []
    for first in range(0, count, batch):
        group = [stack.enter_context(Client(port)) for _ in range(min(batch, count - first))]
        for reply in ask_each(group, [get('/')] * len(group)):
            assert reply.status == 200 and not reply.closes, reply
        clients += group
    return clients


def assert_fresh_requests_served(port, count):
    """``count`` new connections, all opened and asked before any answer is read."""
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(Client(port)) for _ in range(count)]
        asked = [f'X-Fresh: {n}' for n in range(count)]
        replies = ask_each(clients, [get('/headers', 'HTTP/1.1', field, 'Connection: close')
                                     for field in asked])
        for client, field, reply in zip(clients, asked, replies):
            assert (reply.status, reply.body) == (
                200, f'Host: localhost\n{field}\nConnection: close\n'.encode())
            client.assert_closed_after(reply)


@pytest.mark.timeout(90)
def test_2000_idle_connections_are_held_while_fresh_ones_are_served(measured):
    # No keep-alive deadline may pass during the test: the connections are idle, not expired.
    server, base = measured(2000 + 50, '--quiet', '--keepalive-timeout', '120')
    with contextlib.ExitStack() as stack:
        idle = open_served(server.port, 2000, stack)
        assert_fresh_requests_served(server.port, 50)
        # They were held, not dropped: each answers a second request.
        for reply in ask_each(idle, [get('/', method='HEAD')] * len(idle), 'HEAD'):
            assert reply.status == 200 and not reply.closes
    assert_back_to_baseline(server, base)


@pytest.mark.timeout(60)
def test_300_dripping_heads_get_408_while_other_requests_are_served(measured):
    server, base = measured(300 + 50, '--quiet', '--head-timeout', '2')
    with contextlib.ExitStack() as stack:
        drippers = [stack.enter_context(Client(server.port)) for _ in range(300)]
        for client in drippers:
            client.send(b'G')         # a head begins, and nothing more comes
        assert_fresh_requests_served(server.port, 50)
        # Every one is closed by its head deadline, with a 408.
        for client in drippers:
            reply = client.reply()
            assert reply.status == 408
            client.assert_closed_after(reply)
    assert_back_to_baseline(server, base)


class Busy:
    """``count`` keep-alive clients, each with ``depth`` pipelined GET /headers in flight.

    A thread drives them until the block ends, asking again for each answer
    and counting them: busy connections that make every pass of the loop long.
    """

    ANSWER_END = b'\r\n\r\nHost: localhost\n'   # the end of every answer to get('/headers')

    def __init__(self, port, count, depth=16):
        self.depth = depth
        self.socks = [socket.create_connection(('127.0.0.1', port), timeout=WAIT)
                      for _ in range(count)]
        self.answers = [0] * count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        request = get('/headers')
        tails = [b''] * len(self.socks)
        with selectors.DefaultSelector() as sel:
            for index, sock in enumerate(self.socks):
                sock.sendall(request * self.depth)
                sel.register(sock, selectors.EVENT_READ, index)
            while not self._stop.is_set():
                for key, _ in sel.select(0.1):
                    index = key.data
                    data = tails[index] + key.fileobj.recv(65536)
                    assert data != tails[index], 'a busy connection was closed'
                    answered = data.count(self.ANSWER_END)
                    if answered:
                        self.answers[index] += answered
                        key.fileobj.sendall(request * answered)
                        data = data[data.rindex(self.ANSWER_END) + len(self.ANSWER_END):]
                    tails[index] = data[-len(self.ANSWER_END):]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(WAIT)
        for sock in self.socks:
            sock.close()


@pytest.mark.timeout(90)
def test_a_burst_of_connects_under_busy_connections_is_answered_promptly(measured):
    # The loop once accepted one connection per pass, and a pass serves every
    # busy connection: 800 newcomers under 100 busy ones waited seconds.
    server, base = measured(100 + 800, '--quiet')
    # The same burst with nobody busy first: what it takes on this machine now.
    started = time.monotonic()
    assert_fresh_requests_served(server.port, 800)
    alone = time.monotonic() - started
    with Busy(server.port, 100) as busy:
        wait_until(lambda: all(busy.answers), 'every busy connection answered')
        started = time.monotonic()
        assert_fresh_requests_served(server.port, 800)
        took = time.monotonic() - started
        after = list(busy.answers)
        # Still served, none dropped or starved by the newcomers.
        wait_until(lambda: all(now > then for now, then in zip(busy.answers, after)),
                   'every busy connection answered again after the burst')
    # Against the burst alone, not a clock: on a loaded machine 800 fresh requests took
    # up to 1.1 s alone and 4 times that under the busy ones (a bound of 2 s failed 1
    # run in 3 there); one accept a pass took 25 times as long.  The passes themselves
    # are counted, with no clock, by the test after this one.
    assert took < max(2.0, 8 * alone), (
        f'a burst of 800 connects took {took:.1f} s to be answered ({alone:.1f} s alone)')
    assert_back_to_baseline(server, base)


def test_connections_waiting_in_the_backlog_are_accepted_a_batch_a_pass(tmp_path, room_for):
    # Counted in passes of the loop: 300 connections made before it starts are taken
    # ACCEPT_MIN or more a pass (a few passes), not one a pass (300).
    room_for(2 * 300)
    protocol = HTTPServer(App(str(tmp_path), str(tmp_path / 'uploads')), access_log=False)
    loop = EventLoop('127.0.0.1', 0, protocol)
    with contextlib.ExitStack() as stack:
        for _ in range(300):       # the kernel completes each: the backlog holds them
            stack.enter_context(socket.create_connection(loop.address, timeout=WAIT))
        loop.start()
        try:
            wait_until(lambda: len(loop.connections) == 300, 'every connection accepted')
            passes = loop.turn
        finally:
            loop.stop(0.2)
    assert passes <= 2 * (300 // ACCEPT_MIN + 1), f'300 connections took {passes} passes'


def assert_retry_after(reply):
    """RFC 9110 section 10.2.3: Retry-After is an HTTP-date or a number of seconds."""
    value = reply.get('retry-after')
    assert value is not None, reply.fields
    assert re.fullmatch(r'\d+', value) or email.utils.parsedate_to_datetime(value), value


def served_once_there_is_room(port, timeout=WAIT):
    """A new connection's GET, retried while the answer is 503, until one is served."""
    deadline = time.monotonic() + timeout
    while True:
        with Client(port) as client:
            reply = client.exchange(get('/'))
        if reply.status != 503:
            return reply
        assert time.monotonic() < deadline, f'still 503 after {timeout} s'
        time.sleep(0.02)   # a poll interval, not a synchronisation


def test_beyond_max_connections_a_new_connection_gets_503_and_is_closed(measured):
    server, base = measured(10, '--max-connections', '5')
    with contextlib.ExitStack() as stack:
        held = open_served(server.port, 5, stack)
        for _ in range(2):   # refused connections take no place: see the end
            # It asks at once, as a real client does: the 503 must reach it
            # whether or not the server reads the request.  (5 s: a server
            # that parks it in the backlog fails sooner.)
            with Client(server.port, timeout=5) as sixth:
                sixth.send(get('/'))
                reply = sixth.reply()
                assert reply.status == 503
                assert_retry_after(reply)
                sixth.assert_closed_after(reply)
        leaving = held.pop()
        leaving.assert_closed_after(leaving.exchange(get('/', 'HTTP/1.1', 'Connection: close')))
        # Served once the server has seen the close: refused ones did not count.
        assert served_once_there_is_room(server.port).status == 200
        for client in held:           # the four that stayed are still served
            assert client.exchange(get('/')).status == 200
    assert_back_to_baseline(server, base)


def test_at_max_connections_the_connection_silent_longest_makes_room(measured):
    # A flood of connections that never send a byte once kept every newcomer out
    # (503) until their idle deadlines, and a flooder reconnecting kept it so.
    server, base = measured(10, '--max-connections', '5')
    with contextlib.ExitStack() as stack:
        held = open_served(server.port, 2, stack)      # served, then idle: they stay
        silent = [stack.enter_context(Client(server.port, timeout=WAIT)) for _ in range(3)]
        wait_until(lambda: resources(server.pid)[0] >= base[0] + 5, 'five connections held')
        for newcomer in range(2):          # each stays, so the server stays at its cap
            client = stack.enter_context(Client(server.port, timeout=WAIT))
            assert client.exchange(get('/')).status == 200
            # The oldest silent connection was closed to make room.
            assert silent[newcomer].at_eof()
        # Nothing else was: the served ones and the youngest silent one stay open.
        for client in held:
            assert client.exchange(get('/')).status == 200
        assert silent[2].exchange(get('/')).status == 200
    assert_back_to_baseline(server, base)


@pytest.mark.timeout(60)
def test_the_server_raises_its_descriptor_limit_to_hold_its_connections(serve, room_for):
    room_for(400)             # skips unless the hard limit is far above 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The server inherits a soft limit of 256 and the far higher hard limit.
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        server = serve('--quiet')
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with contextlib.ExitStack() as stack:
        open_served(server.port, 400, stack)
        assert_fresh_requests_served(server.port, 10)


# -- stopping, workers, the pool -------------------------------------------------------

def test_a_download_cut_at_the_grace_is_recorded_as_the_server_stopping(tmp_path):
    """A response still being sent when a stopping server's grace is over is cut by the
    server: its record says so, not that the client left."""
    (tmp_path / 'big.bin').write_bytes(b'x' * (32 << 20))
    protocol = HTTPServer(App(str(tmp_path), str(tmp_path / 'uploads')), access_log=False)
    loop = EventLoop('127.0.0.1', 0, protocol)
    loop.start()
    try:
        with socket.create_connection(loop.address, timeout=WAIT) as client:
            client.sendall(get('/big.bin'))
            assert client.recv(1, socket.MSG_PEEK) == b'H'    # the answer has begun
            loop.stop(0.2)                                    # and is not read meanwhile
    finally:
        loop.stop(0.2)

    def ended():
        return [public(record)['ended'] for record in protocol.records.kept()]
    wait_until(lambda: [end['kind'] for end in ended()] == ['timed out'], 'the record closed')
    assert ended()[0]['reason'].startswith('the server stopped at the end of its grace, after ')


def test_sigterm_closes_idle_connections_and_lets_an_upload_finish(serve, tmp_path):
    server = serve('--uploads', tmp_path, '--grace', str(WAIT))
    with contextlib.ExitStack() as stack:
        idle = open_served(server.port, 3, stack)
        upload = stack.enter_context(Client(server.port))
        upload.send(chunked_put('/uploads/late.bin') + b'5\r\nfirst\r\n')
        wait_until(lambda: temps(tmp_path), 'the upload started')
        server.proc.send_signal(signal.SIGTERM)
        wait_until_refused(server.port)           # no longer accepting ...
        for client in idle:
            assert client.file.read() == b''      # ... idle ones closed without a word ...
        assert server.proc.poll() is None         # ... and the upload may go on
        upload.send(b'6\r\nsecond\r\n0\r\n\r\n')
        reply = upload.reply('PUT')
        assert reply.status == 201 and json.loads(reply.body)['bytes'] == 11
        upload.assert_closed_after(reply)
    assert server.proc.wait(WAIT) == 0
    assert (tmp_path / 'late.bin').read_bytes() == b'firstsecond'


def connections_held(pid, port):
    """How many established TCP connections on local ``port`` process ``pid`` holds.

    Matches the socket inodes of /proc/PID/fd against /proc/net/tcp (IPv4):
    which worker accepted a connection is visible nowhere else.
    """
    inodes = set()
    for fd in os.listdir(f'/proc/{pid}/fd'):
        with contextlib.suppress(OSError):
            link = os.readlink(f'/proc/{pid}/fd/{fd}')
            if link.startswith('socket:['):
                inodes.add(link[len('socket:['):-1])
    with open('/proc/net/tcp') as table:
        rows = [line.split() for line in table][1:]
    # Columns: sl local_address rem_address st ... inode (the tenth); 01 is ESTABLISHED.
    return sum(1 for row in rows
               if row[9] in inodes and row[3] == '01' and int(row[1].split(':')[1], 16) == port)


@pytest.mark.timeout(60)
def test_two_workers_both_serve_and_stop_on_sigterm_with_connections_open(serve):
    server = serve('--workers', '2', '--quiet')
    line = server.wait_for_line(r'^http served by 2 worker processes: (?P<pids>\d+ \d+)$')
    workers = [int(pid) for pid in line['pids'].split()]
    with contextlib.ExitStack() as stack:
        clients = []
        # Connections held open until each worker holds at least one: the
        # kernel chooses the worker, so this takes a few rounds at most.
        for _ in range(16):
            clients += open_served(server.port, 16, stack)
            held = [connections_held(pid, server.port) for pid in workers]
            if all(held):
                break
        assert all(held), f'after {len(clients)} connections, the workers hold {held}'
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(WAIT) == 0
        for client in clients:
            assert client.at_eof()
    assert not [pid for pid in workers if os.path.exists(f'/proc/{pid}')]


@pytest.mark.timeout(60)
def test_two_workers_share_a_burst_of_connects(serve, room_for):
    # Each accepts many connections a pass: on one shared socket, whichever
    # woke first took most of a burst.  With a listening socket each
    # (SO_REUSEPORT), the kernel spreads them.
    room_for(300)
    server = serve('--workers', '2', '--quiet')
    workers = workers_listening(server)
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(Client(server.port)) for _ in range(300)]
        for reply in ask_each(clients, [get('/')] * len(clients)):
            assert reply.status == 200 and not reply.closes
        held = [connections_held(pid, server.port) for pid in workers]
    assert sum(held) == 300 and min(held) >= 300 // 3, f'the workers hold {held}'


@pytest.mark.timeout(60)
def test_a_second_server_with_workers_is_refused_the_port_not_given_half_of_it(serve, minihttp):
    # Each worker listens with SO_REUSEPORT, which shares a port with any
    # process of the same user that asks: a second server started on the
    # same port got every other connection, silently.
    first = serve('--workers', '2', '--quiet')
    workers_listening(first)
    second = minihttp('serve', '--port', first.port, '--block-port', 0, '--workers', '2',
                      '--quiet', listening=None)
    refusal = second.wait_for_line(r'^minihttp: cannot listen on .*', stream='stderr')
    assert 'Address already in use' in refusal[0] and 'choose another port' in refusal[0]
    assert second.proc.wait(WAIT) == 2
    assert listening_sockets(first.port) == 2


def test_workers_auto_starts_one_worker_per_cpu(serve):
    counts = {os.cpu_count(), len(os.sched_getaffinity(0))}
    if max(counts) < 2:
        pytest.skip('one CPU: --workers auto runs a single process, nothing to count')
    server = serve('--workers', 'auto', '--quiet')
    line = server.wait_for_line(r'^http served by (?P<count>\d+) worker processes: ')
    assert int(line['count']) in counts
    with Client(server.port) as client:
        assert client.exchange(get('/')).status == 200
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(WAIT) == 0


def test_a_pool_of_one_thread_queues_the_second_upload_and_still_answers_gets(serve, tmp_path):
    server = serve('--threads', '1', '--uploads', tmp_path)
    with Client(server.port) as first, Client(server.port) as second:
        first.send(chunked_put('/uploads/first.txt') + b'6\r\nfirst \r\n')
        wait_until(lambda: temps(tmp_path), 'the first upload started')
        second.send(chunked_put('/uploads/second.txt') + b'7\r\nsecond \r\n')
        # The one thread reads the first body; the loop still answers a GET.
        with Client(server.port) as other:
            assert other.exchange(get('/')).body == INDEX
        assert len(temps(tmp_path)) == 1, 'a second upload started in a pool of one thread'
        first.send(b'4\r\nbody\r\n0\r\n\r\n')
        assert first.reply('PUT').status == 201
        second.send(b'4\r\nbody\r\n0\r\n\r\n')      # waited in the loop, not refused
        assert second.reply('PUT').status == 201
        for name, content in [('first.txt', b'first body'), ('second.txt', b'second body')]:
            reply = first.exchange(get(f'/uploads/{name}'))
            assert (reply.status, reply.body) == (200, content)


def test_the_defaults_are_32_threads_and_10000_connections_per_process():
    args = build_parser().parse_args(['serve'])
    assert (args.threads, args.max_connections) == (32, 10000)


def test_a_head_whose_body_has_not_begun_holds_no_thread(serve):
    server = serve('--threads', '1')
    with Client(server.port) as waiting, Client(server.port) as other:
        # A head announcing a body, then nothing: it waits in the loop ...
        waiting.send(get('/echo', 'HTTP/1.1', 'Content-Length: 5', method='PUT'))
        # ... so the pool's only thread is free for another body meanwhile.
        for n in range(3):
            reply = other.exchange(post('/echo', b'mine %d' % n))
            assert (reply.status, reply.body) == (200, b'mine %d' % n)
        waiting.send(b'later')
        reply = waiting.reply('PUT')
        assert (reply.status, reply.body) == (200, b'later')


def test_a_body_not_begun_within_the_body_timeout_gets_408(serve):
    server = serve('--body-timeout', '0.5')
    with Client(server.port) as client:
        client.send(get('/uploads/never.bin', 'HTTP/1.1', 'Content-Length: 10', method='PUT'))
        reply = client.reply('PUT')
        assert reply.status == 408 and b'request body not received in time' in reply.body
        client.assert_closed_after(reply)
    assert server.wait_for_line(r'"PUT /uploads/never.bin HTTP/1.1" 408 ', stream='stderr')


class OutOfDescriptors:
    """A listening socket whose accept fails for want of descriptors while ``full``."""

    def __init__(self, sock):
        self.sock = sock
        self.accepts = 0
        self.full = False

    def accept(self):
        self.accepts += 1
        if self.full:
            raise OSError(errno.EMFILE, 'Too many open files')
        return self.sock.accept()

    def __getattr__(self, name):
        return getattr(self.sock, name)


def test_out_of_descriptors_the_loop_waits_for_a_close_instead_of_spinning(capsys):
    loop = EventLoop('127.0.0.1', 0, HTTPServer(lambda request: Response(200, [], b'fine'),
                                                access_log=False))
    listening = loop.sock = OutOfDescriptors(loop.sock)
    loop.start()
    try:
        with Client(loop.address[1]) as first:
            assert first.exchange(get('/')).status == 200
            listening.full = True
            second = Client(loop.address[1])
            second.send(get('/'))              # it cannot be accepted: it waits
            wait_until(lambda: 'cannot accept' in capsys.readouterr().err, 'the EMFILE line')
            listening.full = False             # as when the first one closes
            first.send(get('/', 'HTTP/1.1', 'Connection: close'))
            first.assert_closed_after(first.reply())
            with second:
                assert second.reply().status == 200   # accepted once the first one closed
    finally:
        loop.stop(0)
    # One failed accept, not a loop spinning on a listener it cannot empty.
    assert listening.accepts <= 5


def test_a_stalled_body_waiting_for_a_thread_is_closed_one_already_sent_waits_its_turn(
        serve, tmp_path):
    server = serve('--threads', '1', '--body-timeout', '1', '--uploads', tmp_path)
    stalling = get('/uploads/stalled.bin', 'HTTP/1.1', 'Content-Length: 100',
                   method='PUT') + b'first'
    with Client(server.port) as a, Client(server.port) as b, Client(server.port) as done:
        a.send(stalling)          # one of these two takes the only thread ...
        b.send(stalling)          # ... the other waits for it, and neither sends more
        done.send(post('/echo', b'whole'))   # sent whole: it waits for the thread too
        replies = [a.reply('PUT'), b.reply('PUT')]
        assert [reply.status for reply in replies] == [408, 408]
        reasons = sorted(reply.body.decode().split(': ', 1)[1].strip() for reply in replies)
        # The thread's read timed out; the waiting one was closed by the loop at
        # its deadline, without waiting for the thread first.
        assert reasons == ['request body not received in time',
                           'request body stalled: nothing received for 1 s']
        reply = done.reply('PUT')
        assert (reply.status, reply.body) == (200, b'whole')
    assert os.listdir(tmp_path) == []          # neither stalled upload left anything
