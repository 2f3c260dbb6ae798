"""The block transport: its functions on a fake socket, then the real server and client on loopback."""

import concurrent.futures
import contextlib
import hashlib
import io
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import given, strategies as st

import listing52
from minihttp.blocks import (BlockTooLarge, TruncatedBlock, describe, get_block, get_block_to,
                             get_length, put_block, put_stream)
from minihttp.framing import StreamReader
from minihttp.report import Progress, amount, clock
from support import FakeSocket, REPO, WAIT, run_minihttp, sha256_file, wait_until

MiB = 1 << 20
WIRE_LINES = b''.join(listing52.LENGTH.pack(len(line)) + line for line in listing52.LINES)
END = b'\0\0\0\0'
SAYS = [f'Block says: {line!r}' for line in listing52.LINES]


def frame(*payloads):
    return b''.join(listing52.LENGTH.pack(len(p)) + p for p in payloads)


# -- the functions, on a fake socket -------------------------------------------

@given(payloads=st.lists(st.binary(max_size=70), max_size=6), max_send=st.integers(1, 50),
       cuts=st.lists(st.integers(1, 400), max_size=30))
def test_put_block_and_get_block_round_trip(payloads, max_send, cuts):
    sender = FakeSocket(max_send=max_send)
    for payload in payloads + [b'']:
        put_block(sender, payload)
    assert bytes(sender.sent) == frame(*payloads) + END
    reader = StreamReader(FakeSocket(sender.sent, cuts), buffer_size=16)
    assert [get_block(reader) for _ in payloads] == payloads
    assert get_block(reader) == b''
    assert reader.at_eof()


@pytest.mark.parametrize('length, refused', [(1000, False), (1001, True), (0xFFFFFFFF, True)])
def test_get_length_refuses_past_the_limit_without_reading_the_payload(length, refused):
    sock = FakeSocket(listing52.LENGTH.pack(length) + b'x' * 2000, 1)
    reader = StreamReader(sock)
    if refused:
        with pytest.raises(BlockTooLarge) as info:
            get_length(reader, limit=1000)
        assert (info.value.length, info.value.limit) == (length, 1000)
        assert sock.delivered == 4
    else:
        assert get_length(reader, limit=1000) == 1000


def test_get_block_cut_at_every_position_says_what_is_missing():
    stream = frame(b'0123456789')
    for cut in range(len(stream)):
        reader = StreamReader(FakeSocket(stream[:cut], 1))
        with pytest.raises(TruncatedBlock) as info:
            get_block(reader)
        part = 'header' if cut < 4 else 'payload'
        missing = 4 - cut if cut < 4 else len(stream) - cut
        assert (info.value.part, info.value.missing) == (part, missing)
        assert isinstance(info.value, EOFError)


def test_get_length_at_a_clean_end_is_none():
    assert get_length(StreamReader(FakeSocket(b''))) is None


def test_get_block_to_streams_a_payload_and_stops_at_its_end():
    payload = os.urandom(200_000)
    reader = StreamReader(FakeSocket(frame(payload, b'next'), 5000), buffer_size=4096)
    pieces = []
    length = get_length(reader)
    assert get_block_to(reader, lambda piece: pieces.append(bytes(piece)), length) == length
    assert b''.join(pieces) == payload and max(map(len, pieces)) <= 4096
    assert get_block(reader) == b'next'


def test_get_block_to_cut_short_is_a_truncated_payload():
    reader = StreamReader(FakeSocket(frame(b'x' * 100)[:54], 7))
    with pytest.raises(TruncatedBlock) as info:
        get_block_to(reader, lambda piece: None, get_length(reader))
    assert (info.value.part, info.value.missing) == ('payload', 50)


@pytest.mark.parametrize('size, block_size', [(0, 10), (10, 10), (25, 10), (100_000, 65536)])
def test_put_stream_sends_a_file_in_blocks_then_the_empty_block(size, block_size):
    data = os.urandom(size)
    sock = FakeSocket(max_send=3000)
    assert put_stream(sock, io.BytesIO(data), block_size) == size
    reader = StreamReader(FakeSocket(sock.sent))
    blocks = iter(lambda: get_block(reader), b'')
    received = list(blocks)
    assert b''.join(received) == data
    assert all(len(block) == block_size for block in received[:-1])
    assert reader.at_eof()


def test_describe_shows_short_blocks_whole_and_long_ones_by_size():
    assert describe(b'Simple.') == "b'Simple.'"
    text = describe(b'a' * 100)
    assert text.startswith('100 bytes ') and text.endswith('...') and len(text) < 60


# -- loopback helpers ---------------------------------------------------------

def connect(port):
    return socket.create_connection(('127.0.0.1', port), timeout=WAIT)


def random_file(path, size):
    """Write ``size`` random bytes to ``path``; return their sha256."""
    digest = hashlib.sha256()
    with open(path, 'wb') as out:
        for start in range(0, size, MiB):
            chunk = os.urandom(min(MiB, size - start))
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def saved_path(server, blocks, size):
    counted = f'{blocks} block' + ('' if blocks == 1 else 's')
    line = server.wait_for_line(
        rf'end of stream after {counted}, {size} bytes in [\d.]+ s; '
        r'saved to (?P<path>.+)$',
        stream='stdout')
    return line['path']


def assert_one_line_error(result, *words, status=2):
    """A failed command: exit ``status`` (2: a usage error, 1: the peer's refusal), one
    line on stderr naming the problem, no traceback."""
    stderr = result.stderr.decode()
    assert result.returncode == status, stderr
    assert stderr.count('\n') == 1 and stderr.startswith('minihttp: '), stderr
    assert 'Traceback' not in stderr
    for word in words:
        assert word in stderr
    assert result.stdout == b''


@pytest.fixture
def pool():
    """Threads for the book's side of a conversation; waited for with a timeout."""
    with concurrent.futures.ThreadPoolExecutor(4) as executor:
        yield executor


@pytest.fixture
def listening():
    """A loopback socket listening on a free port, for a server written in the test."""
    with socket.create_server(('127.0.0.1', 0)) as sock:
        sock.settimeout(WAIT)
        yield sock


# -- our client and our server ------------------------------------------------

def test_the_books_three_lines(minihttp):
    server = minihttp('blocks', '-p', 0, '--trace')
    result = run_minihttp('blocks', '-c', '-p', server.port)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == (f'Sent 93 bytes and the empty block to 127.0.0.1 port '
                                      f'{server.port}\n')
    server.wait_for_line(r'^Accepted connection from 127\.0\.0\.1:\d+$')
    for says in SAYS:
        assert server.wait_for_line(r'^Block says: ', stream='stdout').string == says
    server.wait_for_line(r': end of stream after 3 blocks, 93 bytes in \d+\.\d{3} s$',
                         stream='stdout')
    assert server.output('stderr') == ''


@pytest.mark.timeout(300)
def test_a_100_mib_file_is_saved_whole_and_never_held_in_memory(minihttp, tmp_path):
    block_size = 64 * MiB  # exactly --max-block, far above the 1 MiB streaming threshold
    size = 100 * MiB
    source, saved = tmp_path / 'random.bin', tmp_path / 'saved'
    saved.mkdir()
    digest = random_file(source, size)
    server = minihttp('blocks', '-p', 0, '--trace', '--save', saved, '--max-block', '64M')
    baseline = server.peak_rss()

    result = run_minihttp('blocks', '-c', '-p', server.port, '--file', source,
                          '--block-size', '64M', timeout=240)
    assert result.returncode == 0, result.stderr
    path = saved_path(server, 2, size)
    peak = server.peak_rss()

    assert sha256_file(path) == digest
    assert os.listdir(saved) == [os.path.basename(path)]  # no temporary file left
    # Had it held one block, its peak would have grown by 64 MiB.
    assert peak < block_size / 2, (baseline, peak)
    assert peak - baseline < 4 * MiB, (baseline, peak)


def test_a_file_from_standard_input(minihttp, tmp_path):
    data = os.urandom(3 * MiB + 5)
    server = minihttp('blocks', '-p', 0, '--save', tmp_path)
    result = run_minihttp('blocks', '-c', '-p', server.port, '--file', '-', input=data)
    assert result.returncode == 0, result.stderr
    assert f'Sent {len(data)} bytes'.encode() in result.stdout
    path = server.wait_for_line(rf'{len(data)} bytes in [\d.]+ s; saved to (?P<path>.+)$')['path']
    with open(path, 'rb') as f:
        assert f.read() == data


@pytest.mark.parametrize('tail, report', [
    # a header and half a payload
    (frame(b'x' * 1000)[:504], r'stream cut inside a block payload\b.*\(500 bytes missing\)'),
    # half a header
    (b'\0\0', r'stream cut inside a block header\b.*\(2 bytes missing\)'),
    # closed cleanly between blocks, but without the empty block
    (b'', r'stream ended without the empty block after 1 block \(the peer closed\)'),
])
def test_a_truncated_stream_leaves_no_file_and_says_what_is_missing(minihttp, tmp_path,
                                                                    tail, report):
    server = minihttp('blocks', '-p', 0, '--trace', '--save', tmp_path)
    with connect(server.port) as steady:
        put_block(steady, b'steady')
        server.wait_for_line(r"Block says: b'steady'")
        with connect(server.port) as broken:
            broken.sendall(frame(b'whole block') + tail)
        problem = server.wait_for_line(report + '.*', stream='stderr')
        assert 'after 1 ' in problem.string
        # Only the steady stream's temporary file: the broken one's is gone.
        assert [name[:10] for name in os.listdir(tmp_path)] == ['.incoming-']
        # The other client goes on undisturbed.
        put_block(steady, b'')
    path = saved_path(server, 1, 6)
    assert os.listdir(tmp_path) == [os.path.basename(path)]
    assert 'Traceback' not in server.output()


def test_a_stream_waiting_between_blocks_holds_no_file(minihttp, tmp_path):
    # --max-connections streams that each sent a byte, or a block, and went
    # quiet held a socket and a file each: twice the descriptors the server
    # fits its connections to, and new streams failed to save (EMFILE).
    server = minihttp('blocks', '-p', 0, '--trace', '--save', tmp_path)

    def files_open():
        return [fd for fd in os.listdir(f'/proc/{server.pid}/fd')
                if os.path.realpath(f'/proc/{server.pid}/fd/{fd}').startswith(str(tmp_path))]

    with connect(server.port) as begun, connect(server.port) as quiet:
        begun.sendall(b'\0')
        put_block(quiet, b'one')
        server.wait_for_line(r"Block says: b'one'")
        wait_until(lambda: not files_open(), 'no saving file open while the streams wait')
        put_block(quiet, b'two')
        put_block(quiet, b'')
    path = saved_path(server, 2, 6)
    with open(path, 'rb') as saved:
        assert saved.read() == b'onetwo'


def test_an_enormous_block_is_refused_without_reading_it(minihttp, tmp_path):
    server = minihttp('blocks', '-p', 0, '--trace', '--save', tmp_path)
    with connect(server.port) as sock:
        sock.sendall(b'\xff\xff\xff\xff')
        server.wait_for_line(r'refused: block of 4294967295 bytes announced, the limit is 67108864',
                             stream='stderr')
        # Closed at once: the server did not wait for 4 GiB of payload.
        try:
            assert sock.recv(1) == b''
        except ConnectionResetError:
            pass
    assert os.listdir(tmp_path) == []
    result = run_minihttp('blocks', '-c', '-p', server.port)  # and it serves the next client
    assert result.returncode == 0
    server.wait_for_line(r'end of stream after 3 blocks, 93 bytes')


def test_twenty_streams_are_served_at_once(minihttp):
    server = minihttp('blocks', '-p', 0, '--trace')
    socks = []
    try:
        for i in range(20):
            socks.append(connect(server.port))
            put_block(socks[-1], b'client %02d' % i)
        # Every stream is still open: a server taking them one at a time would
        # be waiting for the first one's next header and print one line only.
        said = server.wait_for_lines(r"Block says: b'client (\d\d)'", 20)
        assert sorted(int(m[1]) for m in said) == list(range(20))
        for sock in socks:
            put_block(sock, b'')
    finally:
        for sock in socks:
            sock.close()
    server.wait_for_lines(r'end of stream after 1 block, 9 bytes in \d+\.\d{3} s$', 20)


def test_twenty_clients_sending_files_at_once(minihttp, tmp_path):
    saved = tmp_path / 'saved'
    saved.mkdir()
    digests = {random_file(tmp_path / f'{i}.bin', MiB + i * 1000) for i in range(20)}
    server = minihttp('blocks', '-p', 0, '--save', saved)
    command = [sys.executable, '-m', 'minihttp', 'blocks', '-c', '-p', str(server.port)]
    clients = []
    try:
        for i in range(20):
            clients.append(subprocess.Popen([*command, '--file', tmp_path / f'{i}.bin'],
                                            cwd=REPO, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE))
        statuses = [client.wait(WAIT * 4) for client in clients]
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
            client.stderr.close()
    assert statuses == [0] * 20
    paths = [m['path'] for m in server.wait_for_lines(r'saved to (?P<path>.+)$', 20)]
    assert {sha256_file(path) for path in paths} == digests


# -- what goes wrong ---------------------------------------------------------

def test_client_connection_refused():
    with socket.socket() as closed:  # bound, not listening: connecting is refused
        closed.bind(('127.0.0.1', 0))
        result = run_minihttp('blocks', '-c', '-p', closed.getsockname()[1])
    assert_one_line_error(result, 'cannot connect', 'refused', status=1)


def test_client_host_not_found():
    result = run_minihttp('blocks', '-c', 'nosuchhost.invalid')
    assert_one_line_error(result, 'cannot resolve', 'nosuchhost.invalid')


def test_client_file_missing(tmp_path):
    result = run_minihttp('blocks', '-c', '--file', tmp_path / 'absent.bin')
    assert_one_line_error(result, 'cannot read', 'absent.bin')


def test_server_port_in_use():
    with socket.create_server(('127.0.0.1', 0)) as taken:
        result = run_minihttp('blocks', '-p', taken.getsockname()[1])
    assert_one_line_error(result, 'cannot listen', 'choose another port): -p PORT (--help')


def test_a_missing_save_directory_is_made_and_said(minihttp, tmp_path):
    absent = tmp_path / 'absent' / 'deeper'
    server = minihttp('blocks', '-p', 0, '--save', absent)
    server.wait_for_line(rf'^complete streams saved in {re.escape(str(absent))} \(created now\)$')
    assert absent.is_dir()


def test_a_save_directory_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / 'file').write_bytes(b'')
    result = run_minihttp('blocks', '-p', 0, '--save', tmp_path / 'file' / 'below')
    assert_one_line_error(result, '--save', 'file')


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_server_with_status_0(minihttp, sig):
    server = minihttp('blocks', '-p', 0, '--trace')
    assert server.stop(sig) == 0


def test_a_signal_cuts_open_streams_and_discards_their_files(minihttp, tmp_path):
    server = minihttp('blocks', '-p', 0, '--trace', '--save', tmp_path, '--grace', '0.5')
    with connect(server.port) as idle, connect(server.port) as busy:
        put_block(idle, b'then nothing')
        busy.sendall(listing52.LENGTH.pack(1000) + b'only ten b')  # stuck inside a payload
        server.wait_for_line(r"Block says: b'then nothing'")
        server.wait_for_lines(r'Accepted connection', 2)
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 0.5 + 5  # the grace, not a hang
    assert os.listdir(tmp_path) == []
    assert 'Traceback' not in server.output()


def test_beyond_max_connections_a_stream_is_closed_with_a_log_line(minihttp):
    server = minihttp('blocks', '-p', 0, '--trace', '--max-connections', '1')
    with connect(server.port) as first:
        put_block(first, b'holding the only place')
        server.wait_for_line(r"Block says: b'holding the only place'")
        with connect(server.port) as second:
            second.settimeout(WAIT)
            assert second.recv(1) == b''          # closed at once, nothing read
        refused = server.wait_for_line(r'^blocks: refused 127\.0\.0\.1:\d+: 1 connections are '
                                       r'open$', stream='stderr')
        assert refused
        put_block(first, b'')
        assert first.recv(1) == b''              # the server closed, and counted it out
    listing52.send_lines(('127.0.0.1', server.port))   # the place is free again
    assert len(server.wait_for_lines(r'^Block says: ', 3)) == 3


# -- interoperability with Listing 5-2, byte for byte ------------------------

def test_our_client_against_the_books_server(listening, pool):
    blocks = pool.submit(listing52.serve_once, listening)
    result = run_minihttp('blocks', '-c', '-p', listening.getsockname()[1])
    assert result.returncode == 0, result.stderr
    assert blocks.result(WAIT) == list(listing52.LINES)


def test_our_client_puts_the_books_bytes_on_the_wire(listening, pool):
    def capture():
        conn, _ = listening.accept()
        with conn:
            conn.settimeout(WAIT)
            return b''.join(iter(lambda: conn.recv(65536), b''))

    wire = pool.submit(capture)
    result = run_minihttp('blocks', '-c', '-p', listening.getsockname()[1])
    assert result.returncode == 0, result.stderr
    assert wire.result(WAIT) == WIRE_LINES + END


def test_our_file_client_against_the_books_server(listening, pool, tmp_path):
    data = os.urandom(300_000)
    (tmp_path / 'data').write_bytes(data)
    blocks = pool.submit(listing52.serve_once, listening)
    result = run_minihttp('blocks', '-c', '-p', listening.getsockname()[1],
                          '--file', tmp_path / 'data', '--block-size', '1000')
    assert result.returncode == 0, result.stderr
    received = blocks.result(WAIT)
    assert b''.join(received) == data
    assert {len(block) for block in received} == {1000}


def test_the_books_client_against_our_server(minihttp, tmp_path):
    server = minihttp('blocks', '-p', 0, '--trace', '--save', tmp_path)
    listing52.send_lines(('127.0.0.1', server.port))
    for says in SAYS:
        assert server.wait_for_line(r'^Block says: ').string == says
    path = saved_path(server, 3, 93)
    with open(path, 'rb') as f:
        assert f.read() == b''.join(listing52.LINES)
    assert server.output('stderr') == ''


def test_the_file_client_draws_progress_on_a_terminal_and_nothing_into_a_pipe(minihttp, tmp_path):
    server = minihttp('blocks', '-p', 0, '--quiet')
    data = tmp_path / 'data'
    data.write_bytes(os.urandom(3 * MiB))
    command = [sys.executable, '-m', 'minihttp', 'blocks', '-c', '-p', str(server.port),
               '--file', str(data), '--block-size', '4096']
    terminal, its_end = pty.openpty()
    try:
        result = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, stderr=its_end,
                                timeout=60)
        os.close(its_end)
        its_end = None
        shown = b''
        while True:
            try:
                piece = os.read(terminal, 4096)
            except OSError:          # EIO: the other end is closed and all was read
                break
            if not piece:
                break
            shown += piece
    finally:
        os.close(terminal)
        if its_end is not None:
            os.close(its_end)
    assert result.returncode == 0
    # Redrawn in place: the last drawing (the terminal turned the final newline into CRLF).
    last = [drawn for drawn in shown.split(b'\r') if drawn.strip()][-1]
    assert re.search(rb'\[#{24}\] 100% 3\.0 MiB of 3\.0 MiB, [\d.]+ [KMG]?i?B/s, 0:00 left', last)
    # Into a pipe (a script, a log): the one closing line, no bar.
    piped = run_minihttp('blocks', '-c', '-p', server.port, '--file', data)
    assert piped.returncode == 0 and piped.stderr == b''
    assert piped.stdout.decode().startswith(f'Sent {3 * MiB} bytes and the empty block')


def test_progress_without_a_total_shows_what_went_and_how_fast():
    shown = io.StringIO()
    progress = Progress(None, shown)
    progress(1536)
    progress.done()
    assert re.fullmatch(r'(\r1\.5 KiB, [\d.]+ [KMG]?i?B/s\x1b\[K)+\n', shown.getvalue())
    assert (amount(512), amount(3 * MiB), clock(59.6), clock(3725)) == (
        '512 B', '3.0 MiB', '1:00', '1:02:05')


# -- what a stream may cost: deadlines, memory, threads --------------------------------

SHORT = ('--idle-timeout', '1', '--head-timeout', '1', '--body-timeout', '1')
# The end of a failed stream's line: how far it came, and in how long.
TOOK = r' \(\d+ bytes in \d+\.\d{3} s\)$'


@pytest.mark.parametrize('sent, reason', [
    (b'', r'closed: nothing received within 1 s of connecting$'),
    (frame(b'one'), r'closed: no block begun within 1 s, after 1 whole block' + TOOK),
    (b'\0\0', r'closed: block header not complete within 1 s, after 0 whole blocks' + TOOK),
    (frame(b'0123456789')[:4], r'closed: block payload stalled: nothing received for 1 s, '
                               r'after 0 whole blocks' + TOOK),
    (frame(b'0123456789')[:9], r'closed: stream stalled: nothing received for 1 s, '
                               r'after 0 whole blocks' + TOOK),
], ids=['idle before the first block', 'idle between blocks', 'header', 'payload not begun',
        'payload stalled'])
def test_each_deadline_closes_a_stream_with_its_reason(minihttp, tmp_path, sent, reason):
    server = minihttp('blocks', '-p', 0, '--trace', '--save', tmp_path, *SHORT)
    with connect(server.port) as sock:
        sock.sendall(sent)
        server.wait_for_line(r'^127\.0\.0\.1:\d+: ' + reason, stream='stderr')
        assert sock.recv(1) == b''               # and closed
    assert os.listdir(tmp_path) == []            # nothing saved, nothing left behind
    result = run_minihttp('blocks', '-c', '-p', server.port)   # the next client is served
    assert result.returncode == 0, result.stderr
    saved_path(server, 3, 93)


def test_a_payload_dripping_below_the_minimum_rate_is_cut(minihttp):
    server = minihttp('blocks', '-p', 0, '--trace', '--min-rate', '1000', '--rate-window', '1',
                      '--body-timeout', '30')
    with connect(server.port) as sock:
        sock.sendall(listing52.LENGTH.pack(1000))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(100):                      # 5 bytes a second: each gap is far below 30 s
            if select.select([sock], [], [], 0.2)[0]:
                break                             # closed by the server
            sock.sendall(b'x')
        server.wait_for_line(r'^127\.0\.0\.1:\d+: closed: stream too slow: \d+ bytes received '
                             r'in 1\.\d s, below the minimum of 1000 bytes/s, after 0 whole '
                             r'blocks' + TOOK, stream='stderr')
        assert sock.recv(1) == b''


def test_headers_announcing_large_blocks_cost_no_memory_before_their_payload(minihttp):
    server = minihttp('blocks', '-p', 0, '--body-timeout', '1')
    listing52.send_lines(('127.0.0.1', server.port))
    server.wait_for_line(r'end of stream after 3 blocks')
    baseline = server.peak_rss()
    with contextlib.ExitStack() as stack:
        for _ in range(100):
            # The largest block read whole: 1 MiB announced, not a byte of it sent.
            sock = stack.enter_context(connect(server.port))
            sock.sendall(listing52.LENGTH.pack(MiB))
        # Every header was read (each payload's deadline passed): had each announced
        # megabyte been allocated at its header, the peak would show 100 MiB.
        server.wait_for_lines(r'closed: block payload stalled', 100, stream='stderr')
    grown = server.peak_rss() - baseline
    assert grown < 16 * MiB, grown


@pytest.mark.timeout(60)
def test_a_flood_of_silent_connections_past_the_cap_keeps_no_client_out(minihttp):
    # Once every place was taken by connections that never send a byte, a client was
    # refused until their idle deadline, and a flooder reconnecting kept it so for good.
    server = minihttp('blocks', '-p', 0, '--trace', '--max-connections', '20')
    with contextlib.ExitStack() as stack:
        silent = [stack.enter_context(connect(server.port)) for _ in range(30)]
        for _ in range(2):
            result = run_minihttp('blocks', '-c', '-p', server.port)
            assert result.returncode == 0, result.stderr
            server.wait_for_line(r'end of stream after 3 blocks, 93 bytes in \d+\.\d{3} s$')
        # The oldest silent ones made room (they asked for nothing); the youngest stay.
        for sock in silent[:10]:
            sock.settimeout(WAIT)
            assert sock.recv(1) == b''
        assert select.select(silent[-5:], [], [], 0)[0] == []
    assert 'refused' not in server.output()


def test_a_flood_of_silent_connections_holds_no_thread_and_a_client_gets_through(minihttp,
                                                                               room_for):
    room_for(600)
    server = minihttp('blocks', '-p', 0, '--trace')
    listing52.send_lines(('127.0.0.1', server.port))
    server.wait_for_line(r'end of stream after 3 blocks, 93 bytes in \d+\.\d{3} s$')
    threads = len(os.listdir(f'/proc/{server.pid}/task'))
    with contextlib.ExitStack() as stack:
        silent = [stack.enter_context(connect(server.port)) for _ in range(600)]
        result = run_minihttp('blocks', '-c', '-p', server.port)
        assert result.returncode == 0, result.stderr
        server.wait_for_line(r'end of stream after 3 blocks, 93 bytes in \d+\.\d{3} s$')
        # All still held (their deadline is 15 s away), and not a thread each.
        assert len(os.listdir(f'/proc/{server.pid}/task')) == threads
        readable = select.select(silent, [], [], 0)[0]
        assert readable == [], 'the server closed silent connections before their deadline'
