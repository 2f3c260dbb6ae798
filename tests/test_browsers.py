"""Pages from other sites, through the browser of the person running the server.

Each test sends what a browser would send for a hostile page (a cross-origin
form POST with its Origin and Sec-Fetch-Site, a request after DNS rebinding
with the attacker's name in Host, a visit to an uploaded page), over a raw
socket or with requests, and checks that the server refuses it in words, or
serves the upload so that it cannot run as the server's origin.  The page's
own requests (same-origin, which Chromium sends with an Origin too) keep
working: tests/test_page.py drives the real thing.
"""

import os

import pytest
import requests

from minihttp.browsers import Browsers, host_name, loopback_name, normal_origin, upload_fields
from minihttp.errors import HTTPError
from minihttp.request import Request
from support import HTTP_LISTENING, RawClient, WAIT, run_minihttp, serve_args

EVIL = 'http://evil.example'
PAGE = '<!doctype html><script>fetch("/uploads/", {method: "POST"})</script>\n'


@pytest.fixture
def site(minihttp, tmp_path):
    """Start a server on loopback (its uploads inside its root, as by default): base URL."""
    started = []

    def start(*options):
        root = tmp_path / f'root{len(started)}'
        root.mkdir()
        (root / 'page.html').write_text('<p>the operator\'s own page</p>\n')
        server = minihttp(*serve_args(root, root / 'uploads', *options),
                          listening=HTTP_LISTENING)
        started.append(server)
        return server, root
    return start


def send(port, method, target, host='127.0.0.1', fields=(), body=b''):
    """One request exactly as written, Host as given (None: no Host, HTTP/1.0); the reply."""
    version = 'HTTP/1.1' if host is not None else 'HTTP/1.0'
    lines = [f'{method} {target} {version}', *([f'Host: {host}'] if host is not None else []),
             *fields, f'Content-Length: {len(body)}', 'Connection: close']
    with RawClient(port, timeout=WAIT) as client:
        client.send(('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1') + body)
        return client.reply(method)


def form(name, content):
    boundary = 'browserboundary'
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="{name}"\r\n'
            f'Content-Type: text/html\r\n\r\n{content}\r\n--{boundary}--\r\n').encode()
    return [f'Content-Type: multipart/form-data; boundary={boundary}'], body


def one_line_reason(reply, status, *words):
    text = reply.body.decode()
    assert reply.status == status, text
    assert text.count('\n') == 1 and all(word in text for word in words), text


# -- writes from other origins (403) --------------------------------------------------------

def test_a_cross_origin_form_post_is_refused_and_stores_nothing(site):
    server, root = site()
    fields, body = form('evil.html', PAGE)
    for browser in (['Origin: http://evil.example', 'Sec-Fetch-Site: cross-site'],
                    ['Origin: null', 'Sec-Fetch-Site: cross-site'],      # a sandboxed page
                    ['Origin: http://127.0.0.1:1', 'Sec-Fetch-Site: same-site'],
                    ['Origin: https://127.0.0.1:%d' % server.port],   # another scheme
                    ['Sec-Fetch-Site: cross-site']):                  # Origin held back
        reply = send(server.port, 'POST', '/uploads/', fields=[*fields, *browser], body=body)
        one_line_reason(reply, 403, 'refused')
    for method in ('PUT', 'DELETE'):
        reply = send(server.port, method, '/uploads/evil.html', fields=[f'Origin: {EVIL}'],
                     body=PAGE.encode() if method == 'PUT' else b'')
        one_line_reason(reply, 403, 'another origin', EVIL)
    assert not os.path.exists(root / 'uploads' / 'evil.html')
    # Reads from any page are answered: they change nothing, and CORS keeps their answer
    # from the page.
    reply = send(server.port, 'GET', '/page.html', fields=[f'Origin: {EVIL}',
                                                            'Sec-Fetch-Site: cross-site'])
    assert reply.status == 200


def test_the_page_s_own_writes_and_clients_without_origin_are_served(site):
    server, root = site()
    own = f'http://127.0.0.1:{server.port}'
    fields, body = form('mine.html', PAGE)
    reply = send(server.port, 'POST', '/uploads/', host=f'127.0.0.1:{server.port}', fields=[
        *fields, f'Origin: {own}', 'Sec-Fetch-Site: same-origin'], body=body)
    assert reply.status == 200, reply.body
    # The same origin spelled with the default port, and through another loopback name.
    assert send(server.port, 'PUT', '/uploads/a.txt', host=f'localhost:{server.port}',
                fields=[f'Origin: http://LOCALHOST:{server.port}'], body=b'a').status == 201
    assert send(server.port, 'DELETE', '/uploads/a.txt', host='localhost:80',
                fields=['Origin: http://localhost']).status == 204
    # curl and scripts send no Origin: what the token (or loopback) allows, as before.
    assert requests.put(f'{own}/uploads/b.txt', data=b'b', timeout=WAIT).status_code == 201
    assert send(server.port, 'PUT', '/uploads/c.txt', fields=['Sec-Fetch-Site: none'],
                body=b'c').status == 201      # typed by the person in the address bar
    assert sorted(os.listdir(root / 'uploads')) == ['b.txt', 'c.txt', 'mine.html']


def test_allow_origin_lets_named_pages_write(site):
    server, root = site('--allow-origin', 'http://localhost:3000',
                        '--allow-origin', 'HTTPS://App.Example:443/')
    for origin in ('http://localhost:3000', 'https://app.example'):
        assert send(server.port, 'PUT', '/uploads/x.txt', fields=[f'Origin: {origin}'],
                    body=b'x').status in (200, 201), origin
    for origin in ('http://localhost:3001', 'http://app.example', 'null'):
        assert send(server.port, 'PUT', '/uploads/x.txt', fields=[f'Origin: {origin}'],
                    body=b'x').status == 403, origin


@pytest.mark.parametrize('option, value', [
    ('--allow-origin', 'null'), ('--allow-origin', 'http://a.example/path'),
    ('--allow-origin', 'localhost:3000'), ('--allow-origin', 'http://a.example:99999'),
    ('--allow-host', 'a b'), ('--allow-host', 'a.example:8000'), ('--allow-host', '')])
def test_a_bad_allow_option_is_one_line_and_exit_2(option, value):
    result = run_minihttp('serve', '--port', 0, '--block-port', 0, option, value, timeout=WAIT)
    err = result.stderr.decode()
    assert result.returncode == 2 and 'Traceback' not in err, err
    assert option in err and repr(value) in err, err


# -- DNS rebinding (421) ----------------------------------------------------------------------

def test_a_loopback_server_answers_only_to_its_own_names(site):
    server, root = site()
    port = server.port
    # After DNS rebinding, the attacker's page is same-origin with the server, as far as
    # the browser knows; only Host still names the attacker's site.
    for host in (f'rebind.evil.example:{port}', 'evil.example', '10.0.0.1', '128.0.0.1',
                 '127.0.0.1.evil.example', 'localhost.evil.example', '127.0.0.256', '[::2]'):
        reply = send(port, 'GET', '/page.html', host=host)
        one_line_reason(reply, 421, 'does not answer for the host', '--allow-host')
    reply = send(port, 'POST', '/uploads/', host=f'rebind.evil.example:{port}',
                 fields=[f'Origin: http://rebind.evil.example:{port}', *form('x.html', PAGE)[0]],
                 body=form('x.html', PAGE)[1])
    assert reply.status == 421 and not os.path.exists(root / 'uploads' / 'x.html')
    # The absolute form names the host instead of Host (RFC 9112 section 3.2.2).
    assert send(port, 'GET', f'http://evil.example:{port}/page.html').status == 421
    assert send(port, 'GET', f'http://localhost:{port}/page.html', host='evil.example').status \
        == 200
    for host in (f'127.0.0.1:{port}', f'LOCALHOST:{port}', 'localhost.', 'app.localhost',
                 '127.1.2.3', f'[::1]:{port}', '[0:0:0:0:0:0:0:1]', None):
        assert send(port, 'GET', '/page.html', host=host).status == 200, host


def test_allow_host_adds_names_and_the_bound_name_is_always_one(site):
    server, _ = site('--allow-host', 'Box.Lan', '--allow-host', '192.168.1.5')
    for host in ('box.lan', f'BOX.LAN:{server.port}', '192.168.1.5:8000', '127.0.0.1'):
        assert send(server.port, 'GET', '/page.html', host=host).status == 200, host
    assert send(server.port, 'GET', '/page.html', host='other.lan').status == 421


def test_beyond_loopback_any_host_unless_allow_host_names_them(site):
    # Listening on every address; the test still only ever connects to 127.0.0.1.
    server, _ = site('--host', '0.0.0.0')
    assert send(server.port, 'GET', '/page.html', host='files.example.org').status == 200
    server, _ = site('--host', '0.0.0.0', '--allow-host', 'files.example.org')
    assert send(server.port, 'GET', '/page.html', host='files.example.org').status == 200
    assert send(server.port, 'GET', '/page.html', host='localhost').status == 200
    assert send(server.port, 'GET', '/page.html', host='rebind.evil.example').status == 421


# -- uploads never run as this origin ---------------------------------------------------------

@pytest.mark.parametrize('name, content_type, download', [
    ('page.html', 'text/html; charset=utf-8', True),
    ('image.svg', 'image/svg+xml', True),
    ('script.js', 'text/javascript; charset=utf-8', True),
    ('data.xml', 'application/xml', True),
    ('page.xhtml', 'application/xhtml+xml', True),
    ('strange.qqq', 'application/octet-stream', True),
    ('notes.txt', 'text/plain; charset=utf-8', False),
    ('photo.png', 'image/png', False),
])
def test_uploads_are_never_sniffed_always_sandboxed_and_active_ones_downloaded(
        site, name, content_type, download):
    server, root = site()
    base = f'http://127.0.0.1:{server.port}'
    body = PAGE.encode() * 40               # past a small file's size, and served from memory
    assert requests.put(f'{base}/uploads/{name}', data=body, timeout=WAIT).status_code == 201
    # Every URL that reaches the file (/uploads/ spelled otherwise reaches it through the
    # root), whole, in part and by HEAD; sent raw, as requests would tidy the spellings.
    for target in (f'/uploads/{name}', f'/%75ploads/{name}', f'/uploads%2f{name}'):
        for method, fields in (('GET', []), ('HEAD', []), ('GET', ['Range: bytes=0-9'])):
            reply = send(server.port, method, target, fields=fields)
            assert reply.status in (200, 206), (target, reply.status)
            got = reply.headers
            assert got['x-content-type-options'] == 'nosniff', target
            assert got['content-security-policy'] == 'sandbox', target
            assert got.get('content-disposition') == ('attachment' if download else None)
            if reply.status == 200:
                assert got['content-type'] == content_type
    # The operator's own files and the server's own pages stay as they were.
    page = requests.get(f'{base}/page.html', timeout=WAIT)
    listing = requests.get(f'{base}/uploads/', timeout=WAIT)
    for response in (page, listing):
        assert response.headers['Content-Type'] == 'text/html; charset=utf-8'
        assert 'Content-Disposition' not in response.headers
        assert 'Content-Security-Policy' not in response.headers


def test_an_uploaded_index_html_is_not_served_as_the_directory_s_page(site):
    server, root = site()
    os.makedirs(root / 'uploads' / 'sub')
    (root / 'uploads' / 'sub' / 'index.html').write_text(PAGE)
    response = requests.get(f'http://127.0.0.1:{server.port}/uploads/sub/index.html',
                            timeout=WAIT)
    assert response.headers['Content-Disposition'] == 'attachment'
    # A folder of uploads is its listing, never its index.html.
    listing = requests.get(f'http://127.0.0.1:{server.port}/uploads/sub/', timeout=WAIT)
    assert listing.status_code == 200 and 'href="index.html"' in listing.text
    assert PAGE not in listing.text


# -- the decisions themselves ------------------------------------------------------------------

def request(method, target, *fields):
    return Request(method, target, 'HTTP/1.1', list(fields))


def status_of(browsers, req):
    try:
        browsers.check(req)
    except HTTPError as error:
        return error.status
    return None


def test_names_and_origins_are_compared_as_browsers_spell_them():
    assert host_name('LocalHost.:8000') == 'localhost'
    assert host_name('[::1]:80') == '[::1]'
    assert all(map(loopback_name, ['localhost', 'a.b.localhost', '127.255.0.1', '[::1]',
                                   '[::ffff:127.0.0.1]', '[::ffff:7f00:2]']))
    assert not any(map(loopback_name, ['localhost.example', '127.0.0.1.example', '127.0.0',
                                       '127.0.0.999', '[::2]', '[fe80::1]', '0.0.0.0',
                                       '[::ffff:10.0.0.1]', '[::ffff:zz]']))
    assert normal_origin('HTTP://Example.ORG:80') == 'http://example.org'
    assert normal_origin('https://example.org:8443/') == 'https://example.org:8443'
    browsers = Browsers('127.0.0.1', loopback=True)
    assert status_of(browsers, request('POST', '/', ('Host', 'localhost:8000'),
                                       ('Origin', 'http://localhost:8000'))) is None
    assert status_of(browsers, request('POST', '/', ('Host', 'localhost:8000'),
                                       ('Origin', 'http://localhost:8001'))) == 403
    assert status_of(browsers, request('POST', '/', ('Host', 'localhost:8000'),
                                       ('Origin', 'http://localhost:8000, http://x'))) == 403
    assert status_of(browsers, request('OPTIONS', '*', ('Host', 'localhost'),
                                       ('Origin', EVIL))) is None
    assert status_of(browsers, request('GET', '/', ('Host', 'evil.example'))) == 421
    assert upload_fields('text/html; charset=utf-8')[-1] == ('Content-Disposition', 'attachment')
    assert upload_fields('video/mp4')[-1][0] != 'Content-Disposition'


def test_over_tls_the_server_s_own_origin_is_https():
    """With --tls-cert the page is https://host:port: its writes are its own, and a page
    of the same host and port over plain http is another origin (RFC 6454 section 4)."""
    browsers = Browsers('127.0.0.1', loopback=True, scheme='https')
    assert status_of(browsers, request('POST', '/echo', ('Host', 'localhost:8443'),
                                       ('Origin', 'https://localhost:8443'))) is None
    assert status_of(browsers, request('POST', '/echo', ('Host', 'localhost'),
                                       ('Origin', 'https://localhost:443'))) is None
    assert status_of(browsers, request('POST', '/echo', ('Host', 'localhost:8443'),
                                       ('Origin', 'http://localhost:8443'))) == 403
    assert status_of(Browsers('127.0.0.1'), request(
        'POST', '/echo', ('Host', 'localhost:8443'), ('Origin', 'https://localhost:8443'))) == 403
