"""A real nginx in front of two minihttp processes: the way past one machine.

nginx from Debian, started by the test with a config of its own in a
temporary directory (loopback only): HTTP/1.1 and keep-alive to the
upstreams, request bodies passed on as they arrive (no buffering).  Through
it, chunked uploads, ranges and downloads give the same bytes as minihttp
gives directly; stopping one upstream under load loses no request that nginx
can retry.  Without nginx the tests skip, saying why (.ci/run installs it).
"""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading

import pytest
import requests
from support import HTTP_LISTENING, WAIT, free_port, wait_for_port, wait_until


NGINX = shutil.which('nginx') or ('/usr/sbin/nginx' if os.path.exists('/usr/sbin/nginx')
                                  else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason='nginx is not installed '
                                                      '(apt-get install nginx)')

# The configuration the README shows, with this test's ports and paths.
CONFIG = '''\
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    upstream minihttp {{
        server 127.0.0.1:{first};
        server 127.0.0.1:{second};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass {scheme}://minihttp;{upstream_tls}
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_request_buffering off;
            proxy_buffering off;
        }}
    }}
}}
'''


# With TLS upstreams: nginx verifies their certificate against the one it is
# given, by the name the certificate carries (not the upstream block's name).
UPSTREAM_TLS = '''
            proxy_ssl_trusted_certificate {cert};
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;'''


@pytest.fixture
def proxied(minihttp, tmp_path, request):
    """Two minihttp upstreams sharing a root and an upload directory, nginx in front.

    Parametrised indirectly with 'https' (and the ``pki`` fixture), the upstreams
    serve TLS and nginx proxies to them over it.  Returns (nginx's base URL, the
    upstream processes, the root, the uploads, the upstreams' base URL and curl's
    options to trust them).
    """
    scheme = getattr(request, 'param', 'http')
    root, uploads, prefix = tmp_path / 'root', tmp_path / 'uploads', tmp_path / 'nginx'
    for directory in (root, uploads, prefix, prefix / 'body', prefix / 'proxy'):
        directory.mkdir()
    serving, trusting, upstream_tls = [], [], ''
    if scheme == 'https':
        cert = request.getfixturevalue('pki')['cert']
        serving = ['--tls-cert', cert, '--tls-key', request.getfixturevalue('pki')['key']]
        trusting = ['--cacert', cert]
        upstream_tls = UPSTREAM_TLS.format(cert=cert)
    upstreams = [minihttp('serve', '--port', 0, '--block-port', 0, '--root', root,
                          '--uploads', uploads, '--quiet', *serving, listening=HTTP_LISTENING)
                 for _ in range(2)]
    port = free_port()
    (prefix / 'nginx.conf').write_text(CONFIG.format(
        user='user root;' if os.geteuid() == 0 else '', prefix=prefix, port=port,
        first=upstreams[0].port, second=upstreams[1].port, scheme=scheme,
        upstream_tls=upstream_tls))
    nginx = subprocess.Popen([NGINX, '-p', str(prefix), '-c', str(prefix / 'nginx.conf'),
                              '-e', str(prefix / 'error.log'), '-g', 'daemon off;'],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield (f'http://127.0.0.1:{port}', upstreams, root, uploads,
               f'{scheme}://localhost:{upstreams[0].port}', trusting)
    finally:
        nginx.send_signal(signal.SIGTERM)
        try:
            nginx.wait(WAIT)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait(WAIT)


def curl(*args):
    return subprocess.run(['curl', '-sS', '--noproxy', '*', *map(str, args)], check=True,
                          capture_output=True, timeout=60).stdout


@pytest.mark.timeout(120)
@pytest.mark.parametrize('proxied', ['http', 'https'], indirect=True)
def test_through_nginx_uploads_ranges_and_downloads_give_the_same_bytes(proxied, tmp_path):
    base, upstreams, root, uploads, direct, trusting = proxied
    data = os.urandom(3 << 20)
    source = tmp_path / 'source.bin'
    source.write_bytes(data)
    # A chunked upload, passed on by nginx as it arrives.
    curl('-T', source, '-H', 'Transfer-Encoding: chunked', f'{base}/uploads/up.bin')
    assert hashlib.sha256((uploads / 'up.bin').read_bytes()).digest() == \
        hashlib.sha256(data).digest()
    (root / 'big.bin').write_bytes(data)
    for path in ('/big.bin', '/uploads/up.bin'):
        assert curl(f'{base}{path}') == data
        for ranges in ('0-99', '1000-', '-500', '0-9,100-109'):
            assert same_parts(curl('-r', ranges, f'{base}{path}'),
                              curl(*trusting, '-r', ranges, f'{direct}{path}'))
    assert curl('-r', '-500', f'{base}/big.bin') == data[-500:]
    # Both upstreams answered (the second only ever through nginx), over TLS when they
    # serve it: their own records say.
    for upstream in upstreams:
        records = json.loads(curl(*trusting, f'{direct.rsplit(":", 1)[0]}:{upstream.port}'
                                  '/_framing'))['records']
        through = [record for record in records if record['kind'] == 'http'
                   and record['request']['target'] != '/_framing']
        assert through, f'upstream {upstream.port} answered nothing'
        assert all((record['tls'] is not None) == bool(trusting) for record in through)


def served(upstream):
    """How many GETs of /page.html an upstream has answered, by its own records."""
    records = requests.get(f'http://127.0.0.1:{upstream.port}/_framing', timeout=WAIT).json()
    return sum(1 for record in records['records'] if record['kind'] == 'http'
               and record['request']['target'] == '/page.html')


def same_parts(one, other):
    """Equal bodies, multipart/byteranges ones compared without their random boundaries."""
    boundary = re.compile(rb'--[0-9a-f]{32}')
    return boundary.sub(b'--', one) == boundary.sub(b'--', other)


@pytest.mark.timeout(120)
def test_stopping_one_upstream_under_load_loses_no_retried_request(proxied):
    base, upstreams, root, *_ = proxied
    (root / 'page.html').write_bytes(b'<p>the same page from either upstream</p>\n' * 50)
    expected = (root / 'page.html').read_bytes()
    results, stop = [], threading.Event()

    def load():
        with requests.Session() as session:
            while not stop.is_set() and len(results) < 5000:
                try:
                    response = session.get(f'{base}/page.html', timeout=WAIT)
                except requests.RequestException as error:
                    results.append(('failed', repr(error)))
                    continue
                results.append((response.status_code, response.content == expected))

    clients = [threading.Thread(target=load) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        # Both upstreams take their share before one goes.
        wait_until(lambda: min(served(upstream) for upstream in upstreams) >= 50,
                   'both upstreams served 50 requests')
        assert upstreams[0].stop() == 0            # SIGTERM, in-flight requests finish
        before = len(results)
        wait_until(lambda: len(results) >= before + 200, '200 more requests served')
    finally:
        stop.set()
        for client in clients:
            client.join(WAIT)
    assert len(results) >= before + 200        # served on by the other upstream
    assert all(result == (200, True) for result in results), \
        [result for result in results if result != (200, True)][:5]


@pytest.mark.timeout(120)
def test_through_nginx_either_upstream_resumes_the_same_upload(proxied):
    """Two upstreams share the uploads folder: an upload made through one is resumed
    through nginx by whichever it picks (round robin), even after a cut mid-PATCH.
    nginx 1.22 passes on no 1xx, so the upload is made the careful way: an empty
    creation whose 201 carries the resumption URL."""
    base, upstreams, _, uploads, *_ = proxied
    data = os.urandom(3 << 20)
    partial = {'Content-Type': 'application/partial-upload'}
    made = requests.put(f'{base}/uploads/via-nginx.bin', data=b'', timeout=WAIT,
                        headers={'Upload-Complete': '?0', 'Upload-Draft-Interop-Version': '9'})
    assert made.status_code == 201, made.text
    url = base + made.headers['Location']
    first = requests.patch(url, data=data[:1 << 20], timeout=WAIT, headers={
        **partial, 'Upload-Offset': '0', 'Upload-Complete': '?0'})
    assert first.status_code == 204 and first.headers['Upload-Offset'] == str(1 << 20)
    # A PATCH cut after 700,000 more bytes: nginx passes them on as they come.
    host, port = base.rsplit('/', 1)[1].split(':')
    with socket.create_connection((host, int(port)), timeout=WAIT) as sock:
        sock.sendall(f'PATCH {made.headers["Location"]} HTTP/1.1\r\nHost: {host}\r\n'
                     f'Content-Type: application/partial-upload\r\nUpload-Offset: {1 << 20}\r\n'
                     f'Upload-Complete: ?1\r\nContent-Length: {len(data) - (1 << 20)}\r\n\r\n'
                     .encode() + data[1 << 20:(1 << 20) + 700_000])
    # What HEAD says, through either upstream, is where the rest goes; an append still
    # ending on the other upstream answers 409 with the offset, and we go again.
    for _ in range(20):
        offset = int(requests.head(url, timeout=WAIT).headers['Upload-Offset'])
        assert 1 << 20 <= offset <= (1 << 20) + 700_000
        rest = requests.patch(url, data=data[offset:], timeout=WAIT, headers={
            **partial, 'Upload-Offset': str(offset), 'Upload-Complete': '?1'})
        if rest.status_code != 409:
            break
    assert rest.status_code == 201, rest.text
    assert rest.json()['sha256'] == hashlib.sha256(data).hexdigest()
    assert hashlib.sha256((uploads / 'via-nginx.bin').read_bytes()).digest() == \
        hashlib.sha256(data).digest()
    # Both upstreams took part, by their own records.
    for upstream in upstreams:
        records = requests.get(f'http://127.0.0.1:{upstream.port}/_framing', timeout=WAIT)
        assert any(record['kind'] == 'http' and record['request']['target'].startswith(
            '/_uploads/') for record in records.json()['records']), upstream.port
