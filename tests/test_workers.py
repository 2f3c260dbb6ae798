"""Supervised workers (issue 13): `serve --workers N` replaces the dead and dies with its parent.

- ``test_a_worker_killed_by_sigkill_is_reaped_replaced_and_joins_the_records``:
  the parent reaps it (no zombie), says how it died, forks a replacement that
  serves, and whose records reach the other worker through the parent,
  numbered on from its predecessor's.
- ``test_workers_that_keep_dying_young_are_replaced_after_a_growing_wait``:
  the back-off, in the log and as a rule.
- ``test_a_replacement_holds_none_of_the_parents_descriptors``: forked from a
  parent whose block server holds connections, it keeps none of them.
- ``test_workers_stop_when_the_parent_is_killed``: SIGKILL to the parent, and
  the workers are gone in seconds, the port with them.
- ``test_sigterm_after_a_replacement_stops_all_with_status_0``.
"""

import os
import signal
import socket
import time

import pytest

from minihttp import processes
from minihttp.limits import RESPAWN_DELAY, RESPAWN_DELAY_MAX, WORKER_STEADY
from minihttp.processes import Backoff
from support import (Client, Feed, HTTP_LISTENING, WAIT, children_of, free_port, get, wait_until,
                     wait_until_refused)

SERVED = r'^http served by 2 worker processes: (?P<pids>\d+) (?P<other>\d+)$'


def workers_of(server):
    line = server.wait_for_line(SERVED)
    return [int(line['pids']), int(line['other'])]


def killed(server, pid, sig='SIGKILL'):
    """Wait for the parent's lines about a worker's death; the pid of its replacement."""
    server.wait_for_line(rf'^http worker {pid} was killed by {sig} after [\d.]+ s; replacing it',
                         stream='stderr')
    return int(server.wait_for_line(rf'^http worker (?P<pid>\d+) started in place of {pid}$',
                                    stream='stderr')['pid'])


def running(pid):
    """Whether a process exists and has not exited (a zombie whose parent went may stay)."""
    try:
        with open(f'/proc/{pid}/stat') as stat:
            return stat.read().rpartition(')')[2].split()[0] != 'Z'
    except FileNotFoundError:
        return False


def sockets(pid):
    """The inodes of the sockets a process holds."""
    found = set()
    for fd in os.listdir(f'/proc/{pid}/fd'):
        try:
            link = os.readlink(f'/proc/{pid}/fd/{fd}')
        except OSError:
            continue
        if link.startswith('socket:['):
            found.add(link[len('socket:['):-1])
    return found


def record_from(feed, port, process, deadline):
    """Ask new connections for /rN until the feed shows a record of ``process`` (the
    kernel chooses which worker accepts); that record."""
    for n in range(1000):
        assert time.monotonic() < deadline, f'no record of process {process} came'
        target = f'/r{n}-{time.monotonic_ns()}'
        with Client(port) as client:
            assert client.exchange(get(target)).status == 404
        while True:        # every record comes to the feed: this one, and any earlier
            data = feed.events(1)[0]['data']
            if data['kind'] == 'http' and data['process'] == process:
                return data
            if data['kind'] == 'http' and data['request']['target'] == target:
                break


@pytest.mark.timeout(60)
def test_a_worker_killed_by_sigkill_is_reaped_replaced_and_joins_the_records(serve):
    server = serve('--workers', '2', '--quiet')
    workers = workers_of(server)
    feed = Feed(server.port)
    try:
        while True:        # the records kept, the stream's own last: its process holds it
            data = feed.events(1)[0]['data']
            if data['kind'] == 'http' and data['request']['target'].startswith('/_framing'):
                holder = data['process']
                break
        other, = set(workers) - {holder}
        deadline = time.monotonic() + WAIT
        before = record_from(feed, server.port, other, deadline)   # came through the parent
        os.kill(other, signal.SIGKILL)
        new = killed(server, other)
        assert not running(other) and not os.path.exists(f'/proc/{other}')   # reaped
        assert sorted(children_of(server.pid)) == sorted([holder, new])
        # The replacement serves, and its records reach the holder through the parent,
        # numbered on in its predecessor's series.
        after = record_from(feed, server.port, new, time.monotonic() + WAIT)
        assert after['id'] > before['id'] and after['id'] % 3 == before['id'] % 3
    finally:
        feed.close()
    for _ in range(8):
        with Client(server.port) as client:
            assert client.exchange(get('/')).status == 200


@pytest.mark.timeout(60)
def test_a_worker_killed_mid_upload_leaves_no_temporary_file(serve, tmp_path):
    server = serve('--workers', '2', '--quiet', '--uploads', tmp_path)
    workers = workers_of(server)
    with socket.create_connection(('127.0.0.1', server.port)) as sock:
        sock.sendall(b'PUT /uploads/cut.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                     b'Content-Length: 1000000\r\n\r\n' + bytes(100_000))
        wait_until(lambda: os.listdir(tmp_path), 'the upload\'s temporary file')
        temp = os.path.join(tmp_path, os.listdir(tmp_path)[0])

        def holds(pid):
            return any(os.path.realpath(f'/proc/{pid}/fd/{fd}') == temp
                       for fd in os.listdir(f'/proc/{pid}/fd'))

        wait_until(lambda: any(map(holds, workers)), 'a worker holding it')
        victim, = filter(holds, workers)
        os.kill(victim, signal.SIGKILL)
        killed(server, victim)
        assert os.listdir(tmp_path) == []


def test_the_back_off_grows_only_while_workers_keep_dying_young():
    backoff = Backoff()
    young = [backoff.after(0.5) for _ in range(12)]
    assert young[:4] == [0.0, RESPAWN_DELAY, 2 * RESPAWN_DELAY, 4 * RESPAWN_DELAY]
    assert young == sorted(young) and young[-1] == RESPAWN_DELAY_MAX
    assert backoff.after(WORKER_STEADY) == 0.0       # one that lived: a fresh start
    assert backoff.after(0.5) == 0.0


@pytest.mark.timeout(60)
def test_workers_that_keep_dying_young_are_replaced_after_a_growing_wait(serve):
    server = serve('--workers', '2', '--quiet')
    pid = workers_of(server)[0]
    waits = []
    for _ in range(3):
        os.kill(pid, signal.SIGKILL)
        line = server.wait_for_line(rf'^http worker {pid} was killed by SIGKILL after [\d.]+ s; '
                                    r'replacing it(?: in (?P<wait>[\d.]+) s \(workers keep '
                                    r'dying young\))?$', stream='stderr')
        waits.append(float(line['wait'] or 0))
        pid = int(server.wait_for_line(rf'^http worker (?P<pid>\d+) started in place of {pid}$',
                                       stream='stderr')['pid'])
    assert waits == [0.0, RESPAWN_DELAY, 2 * RESPAWN_DELAY]
    with Client(server.port) as client:
        assert client.exchange(get('/')).status == 200


@pytest.mark.timeout(60)
def test_a_replacement_holds_none_of_the_parents_descriptors(minihttp):
    blocks_port = free_port()
    server = minihttp('serve', '--port', 0, '--block-port', blocks_port, '--workers', '2', '--trace',
                      listening=HTTP_LISTENING)
    survivor, victim = workers_of(server)
    with socket.create_connection(('127.0.0.1', blocks_port)) as block_stream:
        block_stream.sendall(b'\0\0\0\2hi')       # a stream the parent holds, idle
        server.wait_for_line(r"^Block says: b'hi'$")
        os.kill(victim, signal.SIGKILL)
        new = killed(server, victim)

        def shared(pid):
            return sockets(pid) & sockets(server.pid)
        # Once set up, it shares with the parent at most what the first worker does
        # (the listening socket the parent bound; the others listen on one of their
        # own), and no more: not the block stream, nor the parent's other sockets (its
        # own start, the block server's, the hub's).
        wait_until(lambda: len(shared(survivor)) == 1 and shared(new) <= shared(survivor),
                   'the replacement shares only the listening socket with the parent')


@pytest.mark.timeout(60)
def test_workers_stop_when_the_parent_is_killed(serve):
    server = serve('--workers', '2', '--quiet')
    workers = workers_of(server)
    with Client(server.port) as client:
        assert client.exchange(get('/')).status == 200
    os.kill(server.pid, signal.SIGKILL)
    server.wait_for_lines(r'^worker \d+: the parent process is gone; stopping$', 2,
                          stream='stderr')
    # ORPHAN_GRACE and a stop, on a loaded machine
    wait_until(lambda: not [pid for pid in workers if running(pid)],
               'the workers stop after their parent', timeout=10)
    wait_until_refused(server.port)        # nobody holds the port


@pytest.mark.timeout(60)
def test_sigterm_after_a_replacement_stops_all_with_status_0(serve):
    server = serve('--workers', '2', '--quiet')
    workers = workers_of(server)
    os.kill(workers[0], signal.SIGKILL)
    new = killed(server, workers[0])
    with Client(server.port) as client:
        assert client.exchange(get('/')).status == 200
    assert server.stop() == 0
    assert not [pid for pid in [*workers, new] if running(pid)]


def test_exit_statuses_are_said_with_the_signal_name():
    assert processes.exit_status(signal.SIGKILL) == 'was killed by SIGKILL'
    assert processes.exit_status(3 << 8) == 'exited with status 3'
