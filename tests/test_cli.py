"""The console: what `minihttp serve` and `minihttp blocks` say, and how they start.

The banner names both addresses, the folders served and written, and who may
write; every refused request's log line says why; a block stream is one line
when it ends; the block client says why and exits 1 when the server refuses.
"""

import os
import re
import select
import shlex
import socket
import subprocess
import sys

import pytest

import listing52
from minihttp.blocks import put_block
from minihttp.cli import build_parser, default_uploads
from minihttp.limits import EXPIRE_AFTER
from support import (CLF, HTTP_LISTENING, REPO, WAIT, exchange, free_port, run_minihttp)


# -- serve ------------------------------------------------------------------------------

def test_the_banner_names_both_addresses_both_folders_and_the_write_rule(minihttp, tmp_path):
    root, uploads = tmp_path / 'root', tmp_path / 'new' / 'uploads'
    root.mkdir()
    block_port = free_port()
    server = minihttp('serve', '--port', 0, '--block-port', block_port, '--root', root,
                      '--uploads', uploads, listening=HTTP_LISTENING)
    url = f'http://127.0.0.1:{server.port}'
    server.wait_for_line(rf'^block server listening on 127\.0\.0\.1:{block_port}$')
    server.wait_for_line(rf'^serving files from {re.escape(str(root))} at /; the demo page '
                         rf'at {re.escape(url)}/_minihttp/$')
    server.wait_for_line(rf'^uploads stored in {re.escape(str(uploads))} \(created now\), '
                         r'served at /uploads/$')
    server.wait_for_line(r'^writes \(PUT, POST, DELETE\) are open: loopback only, no token$')
    assert uploads.is_dir()


def test_the_banner_says_the_block_server_is_off(serve):
    server = serve()
    server.wait_for_line(r'^block server: off \(--block-port 0\)$')


def test_every_refusal_is_logged_with_its_reason(serve):
    server = serve()
    assert exchange(server.port, 'GET', '/missing').status == 404
    assert exchange(server.port, 'BREW', '/').status == 501
    lines = server.wait_for_lines(CLF, 2, stream='stderr')
    assert [(m['status'], m['ended']) for m in lines] == [
        ('404', 'refused 404: no file at /missing'),
        ('501', 'refused 501: method BREW is not implemented')]


def test_a_whole_exchange_has_no_reason_and_quiet_keeps_the_access_log(serve):
    server = serve('--quiet')
    assert exchange(server.port, 'GET', '/').status == 200
    line = server.wait_for_line(CLF, stream='stderr')
    assert (line['status'], line['ended']) == ('200', None)


def test_the_demo_page_is_served_at_a_fixed_path_whatever_the_root(serve, tmp_path):
    server = serve('--root', tmp_path)
    reply = exchange(server.port, 'GET', '/_minihttp/')
    assert reply.status == 200
    assert reply.body == (REPO / 'www' / 'index.html').read_bytes()
    # The page's folder is flat: www/uploads in a checkout is not reachable there.
    assert exchange(server.port, 'GET', '/_minihttp/uploads/').status == 404


def test_uploads_go_to_a_folder_of_the_users_own_when_root_uploads_cannot_be_one(
        tmp_path, monkeypatch):
    (tmp_path / 'uploads').write_bytes(b'a file, not a folder')
    monkeypatch.setenv('XDG_DATA_HOME', str(tmp_path / 'data'))
    assert default_uploads(str(tmp_path)) == str(tmp_path / 'data' / 'minihttp' / 'uploads')
    (tmp_path / 'fine').mkdir()
    assert default_uploads(str(tmp_path / 'fine')) == str(tmp_path / 'fine' / 'uploads')


def test_uploads_that_cannot_be_made_is_one_line_and_exit_2(tmp_path):
    (tmp_path / 'file').write_bytes(b'')
    result = run_minihttp('serve', '--port', 0, '--block-port', 0, '--root', tmp_path,
                          '--uploads', tmp_path / 'file' / 'below', timeout=WAIT)
    assert result.returncode == 2
    assert result.stderr.decode().startswith('minihttp: --uploads: cannot make ')
    assert result.stderr.count(b'\n') == 1


@pytest.mark.parametrize('taken_option', ['--port', '--block-port'])
def test_a_port_in_use_is_one_line_naming_the_option_that_moves_it(tmp_path, taken_option):
    # make run takes no options of its own: the line says which one, and how to pass it.
    with socket.create_server(('127.0.0.1', 0)) as taken:
        ports = {'--port': 0, '--block-port': free_port()}
        ports[taken_option] = taken.getsockname()[1]
        result = run_minihttp('serve', '--root', tmp_path, *sum(map(list, ports.items()), []),
                              timeout=WAIT)
    assert result.returncode == 2
    line = result.stderr.decode()
    assert line.count('\n') == 1
    assert line.startswith(f'minihttp: cannot listen on 127.0.0.1 port {ports[taken_option]}: ')
    assert line.rstrip().endswith(f"choose another port): {taken_option} PORT, in make run "
                                  f"ARGS='{taken_option} PORT' (--help lists every option)")


@pytest.mark.parametrize('args, command', [
    ((), '-m minihttp serve'),
    (("ARGS=--port 8080 --block-port 1061",), '-m minihttp serve --port 8080 --block-port 1061'),
])
def test_make_run_passes_args_to_serve(args, command):
    result = subprocess.run(['make', '--no-print-directory', '-n', 'run', *args], cwd=REPO,
                            capture_output=True, timeout=WAIT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split()[1:] == command.split()     # after $(PYTHON)


# -- the block server --------------------------------------------------------------------

def test_the_block_server_prints_host_port_and_a_client_command_that_runs(minihttp):
    server = minihttp('blocks', '-p', 0)
    line = server.wait_for_line(r'^Send it blocks from another window: (?P<command>.+)$')
    command = shlex.split(line['command'])
    assert command[-4:] == ['-c', '-p', str(server.port), '127.0.0.1']
    result = subprocess.run(command, cwd=REPO, capture_output=True, timeout=WAIT)
    assert result.returncode == 0, result.stderr
    server.wait_for_line(r': end of stream after 3 blocks, 93 bytes in \d+\.\d{3} s$')
    # Per-block lines are --trace's: none here.
    assert 'Block says' not in server.output()


def test_quiet_says_nothing_of_a_whole_stream_and_still_says_a_failed_one(minihttp):
    server = minihttp('blocks', '-p', 0, '--quiet')
    listing52.send_lines(('127.0.0.1', server.port))
    with socket.create_connection(('127.0.0.1', server.port), timeout=WAIT) as sock:
        put_block(sock, b'then the peer closes')
    server.wait_for_line(r'stream ended without the empty block after 1 block \(the peer '
                         r'closed\) \(20 bytes in \d+\.\d{3} s\)$', stream='stderr')
    assert 'end of stream' not in server.output('stdout')


def test_the_client_exits_1_and_says_why_when_the_server_refuses_a_block(minihttp, tmp_path):
    server = minihttp('blocks', '-p', 0, '--max-block', '1K')
    (tmp_path / 'data').write_bytes(os.urandom(256 * 1024))
    result = run_minihttp('blocks', '-c', '-p', server.port, '--file', tmp_path / 'data',
                          '--block-size', '64K', timeout=WAIT)
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert stderr.startswith('minihttp: ') and stderr.count('\n') == 1
    assert 'refused or cut' in stderr and 'Traceback' not in stderr
    assert b'Sent' not in result.stdout
    server.wait_for_line(r'refused: block of 65536 bytes announced, the limit is 1024',
                         stream='stderr')


def test_the_client_exits_1_when_the_server_closes_before_the_end():
    """A server that reads one header and closes: what the client sent after it is
    unread, so the close is a reset, whichever write or read meets it."""
    with socket.create_server(('127.0.0.1', 0)) as listening:
        listening.settimeout(WAIT)
        client = subprocess.Popen(
            [sys.executable, '-m', 'minihttp', 'blocks', '-c', '-p', str(listening.getsockname()[1])],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            conn, _ = listening.accept()
            with conn:
                conn.settimeout(WAIT)
                conn.recv(4)
                # Closed with the rest of the stream here, unread: a reset.
                assert select.select([conn], [], [], WAIT)[0]
            out, err = client.communicate(timeout=WAIT)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
    assert client.returncode == 1, err
    assert b'reset' in err and b'Sent' not in out


def test_partial_expiry_help_says_its_default_with_its_unit(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(['serve', '--help'])
    text = ' '.join(capsys.readouterr().out.split())
    assert EXPIRE_AFTER == 86400         # "a day" below is this value in words
    assert '(default: 86400 seconds, a day)' in text
