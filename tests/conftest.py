"""The fixtures the tests share; the plain helpers they stand on are in support.py.

Every server a fixture starts is stopped at teardown: processes by their PID,
in-process event loops by their stop().
"""

import os
import resource
import signal
import socket
import subprocess

import pytest
from hypothesis import settings

from minihttp.app import App
from minihttp.eventloop import EventLoop
from minihttp.server import HTTPServer
from support import (HTTP_LISTENING, LISTENING, OPENSSL, MinihttpProcess, SMALL_INDEX, Store, WAIT,
                     baseline, openssl)

# A shell starts a background job (`make test &`, a CI step run so) with SIGINT
# ignored, and every server a test starts would inherit that: one sent SIGINT
# right after its listening line, before it installs its own handlers, ignored it
# and never stopped (test_blocks' SIGINT test: 1 run in 3 in a background loop).
# A handler is reset to the default at exec, so with one here the servers start
# as they do from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# CI machines are noisy: an example that runs slowly has not failed.
settings.register_profile('minihttp', deadline=None)
settings.load_profile('minihttp')

# Descriptors this test process keeps for itself beyond the connections it
# opens: pytest, the server's pipes, a connection or two made on the side.
SPARE_DESCRIPTORS = 200


@pytest.fixture
def minihttp():
    """``minihttp(*args)`` starts `python -m minihttp ARGS...`; each is stopped at teardown.

    With ``listening=None`` it does not wait for a listening line (a client, or
    a server expected to fail).
    """
    started = []

    def start(*args, listening=LISTENING, timeout=WAIT, **options):
        process = MinihttpProcess(args, **options)
        started.append(process)
        if listening:
            process.wait_listening(listening, timeout)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def serve(minihttp):
    """Start `minihttp serve --port 0 --block-port 0 ARGS...`; the process, its port parsed."""
    return lambda *args: minihttp('serve', '--port', 0, '--block-port', 0, *args,
                                  listening=HTTP_LISTENING)




@pytest.fixture
def room_for():
    """``room_for(n)``: raise this process's soft RLIMIT_NOFILE to fit n more descriptors.

    Raised to the hard limit (a server started afterwards inherits it), or the
    test is skipped when even that is too few; restored at teardown.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def make_room(count):
        needed = len(os.listdir('/proc/self/fd')) + count + SPARE_DESCRIPTORS
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f'RLIMIT_NOFILE hard limit {hard} cannot hold {needed} descriptors')
        if soft != resource.RLIM_INFINITY and soft < needed:
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (needed if hard == resource.RLIM_INFINITY else hard, hard))
    yield make_room
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def measured(serve, room_for):
    """``measured(connections, *args)``: a server with room for ``connections``, and its baseline."""
    def start(connections, *args):
        room_for(connections)
        server = serve(*args)
        return server, baseline(server)
    return start


@pytest.fixture
def in_process(tmp_path):
    """A minihttp HTTP server on a thread of this process, so that tests can patch it."""
    (tmp_path / 'root').mkdir()
    directory = tmp_path / 'uploads'
    app = App(str(tmp_path / 'root'), str(directory))
    loop = EventLoop('127.0.0.1', 0, HTTPServer(app, access_log=False))
    loop.start()
    yield Store(loop.address[1], directory)
    loop.stop(0.5)


@pytest.fixture(scope='module')
def loop_server(tmp_path_factory):
    """An in-process minihttp on 127.0.0.1 serving SMALL_INDEX, on a free port; its address."""
    root = tmp_path_factory.mktemp('www')
    (root / 'index.html').write_bytes(SMALL_INDEX)
    handler = HTTPServer(App(root=str(root)), access_log=False, head_timeout=5.0,
                         body_timeout=5.0, keepalive_timeout=5.0)
    loop = EventLoop('127.0.0.1', 0, handler)
    loop.start()
    yield loop.address
    loop.stop(1.0)


@pytest.fixture
def connect(loop_server):
    """Open loopback connections to ``loop_server``; each is closed at teardown."""
    opened = []

    def open_one():
        sock = socket.create_connection(loop_server, timeout=WAIT)
        opened.append(sock)
        return sock
    yield open_one
    for sock in opened:
        sock.close()


@pytest.fixture(scope='session')
def pki(tmp_path_factory):
    """A self-signed cert+key for localhost, another pair, an expired certificate and
    the first key encrypted with a password file (as paths by name)."""
    if OPENSSL is None:
        pytest.skip('the openssl command is not installed')
    here = tmp_path_factory.mktemp('pki')
    for name, cn in (('', 'localhost'), ('other-', 'other')):
        openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
                '-keyout', f'{name}key.pem', '-out', f'{name}cert.pem', '-days', '2',
                '-subj', f'/CN={cn}/O=minihttp tests',
                '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', cwd=here)
    (here / 'password').write_text('correct horse\n')
    (here / 'wrong-password').write_text('battery staple\n')
    openssl('pkey', '-in', 'key.pem', '-aes256', '-passout', 'file:password',
            '-out', 'encrypted-key.pem', cwd=here)
    paths = {path.stem: str(path) for path in here.iterdir()}
    try:   # notAfter a day before notBefore (OpenSSL 3.0 accepts a negative -days)
        openssl('req', '-new', '-key', 'key.pem', '-subj', '/CN=old', '-out', 'old.csr', cwd=here)
        openssl('x509', '-req', '-in', 'old.csr', '-key', 'key.pem', '-days', '-1',
                '-out', 'expired.pem', cwd=here)
        paths['expired'] = str(here / 'expired.pem')
    except subprocess.CalledProcessError:
        pass
    return paths
