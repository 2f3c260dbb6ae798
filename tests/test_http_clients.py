"""Real clients against a real server: `requests` and `curl` upload to /echo and get their bytes back.

Each upload is random data of a few sizes (empty, one byte, 1 MiB, 20 MiB),
compared by SHA-256, with the framing the client chose checked on both sides:
the request's (X-Request-Framing) and the response's (chunked or Content-Length).
"""

import hashlib
import os
import re
import shutil
import subprocess

import pytest
import requests
from support import HTTP_LISTENING, WAIT, sha256_file


MiB = 1 << 20
SIZES = [0, 1, 1 * MiB, 20 * MiB]
# A 20 MiB exchange over loopback takes well under a second; this bounds a hang.
CURL_TIMEOUT = 60


@pytest.fixture
def served(minihttp):
    """(base URL, process) of a fresh `minihttp serve --trace`; the fixture stops it."""
    server = minihttp('serve', '--port', 0, '--block-port', 0, '--trace', listening=HTTP_LISTENING)
    return f'http://127.0.0.1:{server.port}', server


@pytest.fixture
def session():
    with requests.Session() as s:
        s.trust_env = False     # no proxy from the environment between us and 127.0.0.1
        yield s


@pytest.fixture(scope='module')
def payloads(tmp_path_factory):
    """{size: (path, sha256 hex)} of random files."""
    folder = tmp_path_factory.mktemp('payloads')
    files = {}
    for size in SIZES:
        data = os.urandom(size)
        path = folder / f'{size}.bin'
        path.write_bytes(data)
        files[size] = path, hashlib.sha256(data).hexdigest()
    return files


# -- requests ------------------------------------------------------------------------

def test_requests_chunked_upload_from_a_generator(served, session):
    base, _ = served
    pieces = [os.urandom(n) for n in (1, 100, 4096, 65536, 3)]
    response = session.post(f'{base}/echo', data=iter(pieces), timeout=WAIT)
    assert response.status_code == 200
    assert response.headers['X-Request-Framing'] == 'chunked'
    assert response.headers['Transfer-Encoding'] == 'chunked'   # echoed the way it came
    assert response.content == b''.join(pieces)


def test_requests_content_length_upload(served, session):
    base, _ = served
    body = os.urandom(300_000)
    response = session.put(f'{base}/echo', data=body, timeout=WAIT,
                           headers={'Content-Type': 'application/x-test'})
    assert response.status_code == 200
    assert response.headers['X-Request-Framing'] == f'content-length {len(body)}'
    assert response.headers['Content-Length'] == str(len(body))
    assert response.headers['Content-Type'] == 'application/x-test'
    assert response.content == body


def test_requests_session_reuses_one_connection(served, session):
    base, server = served
    answers = [session.get(f'{base}/', timeout=WAIT),
               session.post(f'{base}/echo', data=b'abc', timeout=WAIT),
               session.post(f'{base}/echo', data=iter([b'd', b'ef']), timeout=WAIT),
               session.head(f'{base}/', timeout=WAIT),
               session.get(f'{base}/headers', timeout=WAIT)]
    assert [a.status_code for a in answers] == [200] * 5
    # --trace names each request's peer: one client port means one connection.
    traces = server.wait_for_lines(r'^trace 127\.0\.0\.1:(\d+): ', 5, stream='stderr')
    assert len({m[1] for m in traces}) == 1, [m.string for m in traces]


def test_requests_head(served, session):
    base, _ = served
    page = session.get(f'{base}/', timeout=WAIT)
    head = session.head(f'{base}/', timeout=WAIT)
    assert head.status_code == 200 and head.content == b''
    assert head.headers['Content-Length'] == str(len(page.content))
    assert head.headers['Content-Type'] == page.headers['Content-Type']
    assert 'Date' in head.headers and 'Server' in head.headers


# -- curl ----------------------------------------------------------------------------

# How each test has curl send the file: (curl options, expected X-Request-Framing).
CURL_MODES = {
    'chunked': (['-T', '{file}', '-H', 'Transfer-Encoding: chunked'], 'chunked'),
    'chunked-stdin': (['-T', '-', '-H', 'Transfer-Encoding: chunked'], 'chunked'),
    'http1.0': (['--http1.0', '--data-binary', '@{file}'], 'content-length {size}'),
    'no-expect': (['-H', 'Expect:', '--data-binary', '@{file}'], 'content-length {size}'),
    'data-binary': (['--data-binary', '@{file}'], 'content-length {size}'),
    'expect-100': (['-H', 'Expect: 100-continue', '--data-binary', '@{file}'],
                   'content-length {size}'),
}


def curl(base, options, tmp_path, stdin=None):
    """Run curl -v against /echo; (response headers as one string, body path, curl's stderr)."""
    if shutil.which('curl') is None:
        pytest.skip('curl is not installed')
    headers, body = tmp_path / 'headers', tmp_path / 'body'
    with open(stdin or os.devnull, 'rb') as source:
        result = subprocess.run(
            ['curl', '-sS', '-v', '--noproxy', '*', '--max-time', str(CURL_TIMEOUT),
             '-D', str(headers), '-o', str(body), *options, f'{base}/echo'],
            stdin=source, capture_output=True, timeout=CURL_TIMEOUT + 10)
    assert result.returncode == 0, result.stderr.decode(errors='replace')
    return headers.read_text('latin-1'), body, result.stderr.decode('latin-1')


def header(headers, name):
    """The last response's field (curl -D keeps 100 Continue's empty head before it)."""
    last = headers.rstrip('\r\n').split('\r\n\r\n')[-1]
    match = re.search(rf'^{name}: *(.*?)\r?$', last, re.M | re.I)
    return match and match[1]


# curl 7.88 sends no last-chunk after an empty `-T file` with chunked (it sends
# the head and waits for the response): an empty chunked upload goes by stdin.
ECHO_CASES = [(mode, size) for mode in ['chunked', 'chunked-stdin', 'http1.0', 'no-expect',
                                        'data-binary']
              for size in SIZES if (mode, size) != ('chunked', 0)]


@pytest.mark.parametrize('mode, size', ECHO_CASES)
def test_curl_echo_returns_the_same_bytes(served, payloads, tmp_path, mode, size):
    base, _ = served
    path, digest = payloads[size]
    options, framing = CURL_MODES[mode]
    headers, body, verbose = curl(base, [o.format(file=path) for o in options], tmp_path,
                                  stdin=path if mode == 'chunked-stdin' else None)
    assert header(headers, 'X-Request-Framing') == framing.format(size=size)
    assert sha256_file(body) == digest
    if mode.startswith('chunked'):
        assert header(headers, 'Transfer-Encoding') == 'chunked'
    else:
        assert header(headers, 'Content-Length') == str(size)
    if mode == 'http1.0':
        # No keep-alive asked for: the server closes, and says so.
        assert header(headers, 'Connection') == 'close'
    if mode == 'no-expect':
        # An empty Expect: curl sends the body at once, and the server sends no 100.
        assert '> Expect' not in verbose and '100 Continue' not in verbose


@pytest.mark.parametrize('size', [s for s in SIZES if s >= MiB])
def test_curl_expect_100_continue_gets_100_before_the_body(served, payloads, tmp_path, size):
    base, _ = served
    path, digest = payloads[size]
    options, framing = CURL_MODES['expect-100']
    headers, body, verbose = curl(base, [o.format(file=path) for o in options], tmp_path)
    assert '> Expect: 100-continue' in verbose
    assert '< HTTP/1.1 100 Continue' in verbose
    assert header(headers, 'X-Request-Framing') == framing.format(size=size)
    assert sha256_file(body) == digest
