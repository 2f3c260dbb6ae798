"""The demo page in a real browser: Debian's Chromium, driven by Playwright.

The page is what a newcomer sees first: these tests use it as a person
would (load it, upload, download, delete, watch the framing log while curl
uploads from a terminal) and save a screenshot of it under tests/artifacts/
for a person to look at.  Playwright launches /usr/bin/chromium and never
downloads a browser; without Chromium the tests skip, saying why (.ci/run
installs it).
"""

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import zipfile
from types import SimpleNamespace
from pathlib import Path

import pytest
import requests
from minihttp.blocks import put_block
from minihttp.records import NO_TRAILERS, NUMBER, http_record, public
from minihttp.tls import CONTENT_TYPES
from support import HTTP_LISTENING, REPO, WAIT, chunked, exchange, free_port, wait_until


sync_api = pytest.importorskip('playwright.sync_api', reason='playwright is not installed')
CHROMIUM = shutil.which('chromium')
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason='chromium is not installed '
                                                         '(apt-get install chromium)')
ARTIFACTS = REPO / 'tests' / 'artifacts'
# As the workplace runs it: as root (no sandbox), and with nothing that calls out.
FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync']


@pytest.fixture(scope='module')
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


DESKTOP = {'width': 1280, 'height': 900}
PHONE = {'width': 390, 'height': 844}


def open_page(browser, viewport):
    """A fresh context and page that collects script errors and every dialog (the page
    must show errors in words, never by alert() or confirm())."""
    context = browser.new_context(accept_downloads=True, viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(WAIT * 1000)
    page.errors = []
    page.dialogs = []
    page.on('console', lambda message: message.type == 'error' and page.errors.append(
        message.text))
    page.on('pageerror', lambda error: page.errors.append(str(error)))
    page.on('dialog', lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    return context, page


@pytest.fixture
def page(browser):
    context, page = open_page(browser, DESKTOP)
    yield page
    assert page.dialogs == [], page.dialogs
    context.close()


@pytest.fixture
def site(minihttp, tmp_path):
    """A server on free ports with its own upload directory; (base URL, uploads, process)."""
    uploads = tmp_path / 'uploads'
    server = minihttp('serve', '--port', 0, '--block-port', free_port(), '--uploads', uploads,
                      '--max-upload', '1M', '--quiet', listening=HTTP_LISTENING)
    return f'http://127.0.0.1:{server.port}', uploads, server


def test_over_tls_the_commands_say_https_and_trust_the_certificate(browser, minihttp, pki):
    server = minihttp('serve', '--port', 0, '--block-port', free_port(), '--quiet',
                      '--tls-cert', pki['cert'], '--tls-key', pki['key'],
                      listening=HTTP_LISTENING)
    context = browser.new_context(viewport=DESKTOP, ignore_https_errors=True)
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT * 1000)
        load(page, f'https://localhost:{server.port}')
        page.wait_for_function("!document.querySelector('#commands').textContent"
                               ".includes('HOST')")
        commands = page.locator('#commands').inner_text()
        assert 'http://' not in commands and commands.count('https://localhost:') == 4
        assert commands.count('curl --cacert cert.pem ') == 4
        assert commands.count('blocks -c --tls --cafile cert.pem -p ') == 2
        assert 'https://' in page.locator('#chunked-command').inner_text()
    finally:
        context.close()


def visible(folder):
    """The names in an uploads folder that the server serves: not its hidden ones (an
    upload resource's state, kept a while after it completes: resumable.PartialStore)."""
    return sorted(name for name in os.listdir(folder) if not name.startswith('.'))


def records(base):
    return requests.get(f'{base}/_framing', timeout=WAIT).json()['records']


def http_records(base, target):
    return [r for r in records(base) if r['kind'] == 'http' and r['request'] is not None
            and r['request']['target'] == target]


def load(page, base):
    """Open the page and wait until it has found its own GET / among the records."""
    page.goto(base + '/')
    page.wait_for_selector('#idea-head[data-id]', state='attached')


def save(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)



@pytest.mark.timeout(120)
def test_the_page_uploads_lists_downloads_deletes_and_draws_live_framing(page, site, tmp_path):
    base, uploads, _ = site
    load(page, base)
    assert page.locator('#commands').inner_text().count(base[len('http://'):]) >= 4
    assert page.errors == [], page.errors
    # The body idea: an echo sent from the page, drawn with its Content-Length, and the
    # echo panel shows what came back and how the server read it.
    page.click('#send')
    assert page.locator('#idea-body .length').first.inner_text() == 'content-length 30'
    page.locator('#echo .echoed').wait_for()
    assert page.locator('#echo .echoed').inner_text() == 'Beautiful is better than ugly.'
    assert 'X-Request-Framing: content-length 30' in page.locator('#echo').inner_text()

    # Upload through the page: a file picked, a progress bar, then listed.
    data = os.urandom(300_000)
    picked = tmp_path / 'picked.bin'
    picked.write_bytes(data)
    page.set_input_files('#pick', str(picked))
    page.wait_for_selector('#transfers >> text=stored (201)')
    row = page.locator('#stored tr', has_text='picked.bin')
    row.wait_for()
    assert row.locator('td').nth(1).inner_text() == str(len(data))

    # Download it as a person would, and compare.
    with page.expect_download() as download:
        row.locator('a').click()
    saved = download.value.path()
    assert hashlib.sha256(Path(saved).read_bytes()).digest() == hashlib.sha256(data).digest()

    # A chunked upload by curl in a terminal: its record appears, its long chunk list
    # cut to the first and last few, with a count of those between, sizes in hex.
    sent = tmp_path / 'chunked.bin'
    sent.write_bytes(os.urandom(900_000))
    subprocess.run(['curl', '-sS', '--noproxy', '*', '-o', os.devnull, '-T', str(sent),
                    '-H', 'Transfer-Encoding: chunked', f'{base}/uploads/chunked.bin'],
                   check=True, timeout=WAIT)
    record, = http_records(base, '/uploads/chunked.bin')
    body = record['request']['body']
    entry = page.locator(f'.record[data-id="{record["id"]}"]')
    entry.wait_for()
    assert f'body chunked: {body["chunks"]} chunks, 900000 B' in entry.inner_text()
    request = entry.locator('.row').first
    shown = request.locator('.chunk').all_inner_texts()
    first = [rf'{size:x}\r\n' for size in body['sizes'][:4]]
    assert body['chunks'] > 7 and shown[:4] == first
    tail = len(shown) - 4
    between = request.locator('.label', has_text='more chunks').inner_text()
    assert between == f'… {body["chunks"] - 4 - tail} more chunks …'
    assert request.locator('.last').count() == 1

    # Delete through the page, asked first in the row itself.
    row.get_by_role('button', name='Delete picked.bin').click()
    assert 'Delete picked.bin?' in row.inner_text()
    row.get_by_role('button', name='Keep picked.bin').click()
    assert (uploads / 'picked.bin').exists()
    row.get_by_role('button', name='Delete picked.bin').click()
    row.get_by_role('button', name='Yes, delete picked.bin').click()
    row.wait_for(state='detached')
    assert visible(uploads) == ['chunked.bin']
    page.locator('#uploads-said', has_text='Deleted picked.bin.').wait_for()
    assert page.errors == [], page.errors
    save(page, 'page.png')


@pytest.mark.timeout(120)
def test_the_pages_own_requests_are_hidden_and_its_own_get_is_the_browsers(page, site):
    base, _, _ = site
    requests.get(base + '/', timeout=WAIT)          # curl's GET /, older than the page's
    load(page, base)
    gets = http_records(base, '/')
    assert len(gets) == 2
    mine = page.locator('#idea-head').get_attribute('data-id')
    assert mine == str(gets[-1]['id'])               # the browser's, not the oldest
    page.locator(f'.record[data-id="{gets[0]["id"]}"]').wait_for()   # curl's is shown
    own = [r for r in records(base) if r['kind'] == 'http' and (
        '_page' in r['request']['target'] or r['id'] == gets[-1]['id'])]
    assert len(own) >= 4                            # the page, its css, js, fetches
    for record in own:
        assert page.locator(f'.record[data-id="{record["id"]}"]').is_hidden()
    page.get_by_label("this page's own requests").check()
    for record in own:
        page.locator(f'.record[data-id="{record["id"]}"]').wait_for()


@pytest.mark.timeout(120)
def test_the_page_served_from_the_package_finds_its_own_request_too(page, site):
    base, _, _ = site
    page.goto(base + '/_minihttp/')
    page.wait_for_selector('#idea-head[data-id]', state='attached')
    own = page.locator('#idea-head').get_attribute('data-id')
    record, = [r for r in records(base) if r['id'] == int(own)]
    assert (record['request']['method'], record['request']['target']) == ('GET', '/_minihttp/')


def test_the_log_filters_by_kind_pauses_and_clears(page, site):
    base, _, server = site
    load(page, base)
    requests.post(base + '/echo', data=b'hello', timeout=WAIT)
    requests.get(base + '/no-such-file', timeout=WAIT)
    echo, = http_records(base, '/echo')
    missing, = http_records(base, '/no-such-file')
    shown = lambda record: page.locator(f'.record[data-id="{record["id"]}"]')
    shown(echo).wait_for()
    shown(missing).wait_for()
    page.get_by_label('Show').select_option('echo')
    shown(missing).wait_for(state='hidden')
    assert shown(echo).is_visible()
    page.get_by_label('Show').select_option('errors')
    shown(echo).wait_for(state='hidden')
    assert shown(missing).is_visible()
    page.get_by_label('Show').select_option('all')

    # Paused, a record waits; resumed, it is drawn.  Clear hides what is there, locally.
    page.get_by_role('button', name='Pause').click()
    requests.get(base + '/again', timeout=WAIT)
    resume = page.get_by_role('button', name=re.compile(r'Resume \(\d+ waiting\)'))
    resume.wait_for()
    again, = http_records(base, '/again')
    assert shown(again).count() == 0
    resume.click()
    shown(again).wait_for()
    page.get_by_role('button', name='Clear').click()
    shown(again).wait_for(state='hidden')
    assert shown(echo).is_hidden()
    assert len(http_records(base, '/again')) == 1       # the server keeps its records


@pytest.mark.timeout(120)
def test_an_abandoned_chunked_upload_is_drawn_without_a_last_chunk(page, site):
    base, uploads, server = site
    load(page, base)
    with socket.create_connection(('127.0.0.1', server.port), timeout=WAIT) as sock:
        # A head, one chunk of 4096 bytes, and the client leaves (its FIN comes after
        # the data, so the server reads the chunk first).
        sock.sendall(b'PUT /uploads/cut.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                     b'Transfer-Encoding: chunked\r\n\r\n' + b'1000\r\n' + b'x' * 4096 + b'\r\n')
    wait_until(lambda: http_records(base, '/uploads/cut.bin'), 'the cut upload recorded')
    record, = http_records(base, '/uploads/cut.bin')
    assert record['request']['body']['done'] is False
    entry = page.locator(f'.record[data-id="{record["id"]}"]')
    entry.wait_for()
    request, response = entry.locator('.row').nth(0), entry.locator('.row').nth(1)
    assert request.locator('.last').count() == 0
    assert request.locator('.chunk').all_inner_texts() == [r'1000\r\n']
    said = request.locator('.missing').inner_text()
    assert said == f'{record["ended"]["kind"]} after 4.1 kB', said
    if record['response']['status'] is None:
        assert response.locator('.missing').inner_text() == 'no response sent'
    entry.screenshot(path=str(ARTIFACTS / 'cut.png'))


def test_an_echo_whose_client_left_mid_body_is_drawn_cut_on_both_rows(page, site):
    base, _, server = site
    load(page, base)
    with socket.create_connection(('127.0.0.1', server.port), timeout=WAIT) as sock:
        sock.sendall(b'PUT /echo?left HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                     b'Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n')
        got = b''
        while b'hello' not in got:          # the echo's response has begun: then leave
            piece = sock.recv(4096)
            assert piece, got
            got += piece
    wait_until(lambda: http_records(base, '/echo?*'), 'the cut echo recorded')
    record, = http_records(base, '/echo?*')
    assert record['ended']['kind'] == 'client left'
    assert record['response']['done'] is False and record['response']['status'] == 200
    entry = page.locator(f'.record[data-id="{record["id"]}"]')
    entry.wait_for()
    request, response = entry.locator('.row').nth(0), entry.locator('.row').nth(1)
    assert request.locator('.last').count() == 0 and response.locator('.last').count() == 0
    assert response.locator('.missing').inner_text().startswith('cut after')


@pytest.mark.timeout(120)
def test_a_refused_upload_is_shown_in_words_and_a_cancelled_one_leaves_nothing(
        page, site, tmp_path):
    base, uploads, _ = site
    load(page, base)
    big = tmp_path / 'big.bin'
    big.write_bytes(os.urandom(2 << 20))      # over --max-upload 1M
    page.set_input_files('#pick', str(big))
    refusal = page.locator('#transfers .error')
    refusal.wait_for()
    assert refusal.inner_text() == ('not stored: 413 Request Entity Too Large: upload: 2097152 '
                                    'bytes, more than 1048576 bytes')
    line = page.locator('#transfers p', has_text='big.bin')
    assert line.locator('progress').count() == 0 and line.locator('button').count() == 0
    assert 'big.bin: not stored: 413' in page.locator('#uploads-said').inner_text()
    assert os.listdir(uploads) == []

    # An upload slowed to 64 KB/s (the browser's own throttle), cancelled on the way.
    throttle = page.context.new_cdp_session(page)
    throttle.send('Network.enable')
    throttle.send('Network.emulateNetworkConditions', {
        'offline': False, 'latency': 0, 'downloadThroughput': -1, 'uploadThroughput': 65536})
    slow = tmp_path / 'slow.bin'
    slow.write_bytes(os.urandom(900_000))
    page.set_input_files('#pick', str(slow))
    line = page.locator('#transfers p', has_text='slow.bin')
    page.wait_for_function("() => [...document.querySelectorAll('#transfers progress')]"
                           ".some((bar) => bar.value > 0 && bar.value < bar.max)")
    line.get_by_role('button', name='Cancel upload of slow.bin').click()
    line.locator('text=cancelled: the server keeps nothing of it').wait_for()
    assert line.locator('button').count() == 0 and line.locator('progress').count() == 0
    wait_until(lambda: os.listdir(uploads) == [], 'the aborted upload discarded')
    page.wait_for_function("() => !document.querySelector('#stored').innerText"
                           ".includes('slow.bin')")


@pytest.mark.timeout(60)
def test_the_same_file_chosen_again_after_a_refusal_is_sent_again(page, site, tmp_path):
    # The file input kept its value: choosing the same file after a 413 (or a 401, before
    # the token was typed) fired no change, and the page silently did nothing.
    base, uploads, _ = site
    load(page, base)
    big = tmp_path / 'again.bin'
    big.write_bytes(bytes(2 << 20))          # over --max-upload 1M
    for attempt in (1, 2):
        page.set_input_files('#pick', str(big))
        page.wait_for_function('(n) => document.querySelectorAll("#transfers .error").length'
                               ' === n', arg=attempt)
    assert len(http_records(base, '/uploads/again.bin')) == 2


@pytest.mark.timeout(120)
def test_errors_are_said_in_words_on_the_page_never_in_a_dialog(page, site, tmp_path):
    base, uploads, _ = site
    load(page, base)
    # A failed echo: the panel resets to the error in words, nothing else.
    page.route('**/echo', lambda route: route.abort())
    page.click('#send')
    failed = page.locator('#echo .error')
    failed.wait_for()
    assert failed.inner_text() == ('The echo failed: the connection failed '
                                   '(is the server running?)')
    assert page.locator('#echo .echoed').count() == 0
    page.unroute('**/echo')
    page.click('#send')
    page.locator('#echo .echoed').wait_for()
    assert page.locator('#echo .error').count() == 0

    # A delete of a file gone behind the page's back: the server's reason, on the page.
    (uploads / 'gone.txt').write_bytes(b'soon gone')
    page.reload()
    page.wait_for_selector('#idea-head[data-id]', state='attached')
    row = page.locator('#stored tr', has_text='gone.txt')
    row.wait_for()
    (uploads / 'gone.txt').unlink()
    row.get_by_role('button', name='Delete gone.txt').click()
    row.get_by_role('button', name='Yes, delete gone.txt').click()
    said = page.locator('#uploads-said.error')
    said.wait_for()
    assert said.inner_text().startswith('gone.txt was not deleted: 404')
    assert page.dialogs == []                  # (and the fixture checks again)
    # The browser's own console lines for the failed requests are expected; the page's
    # script raised nothing.
    assert [e for e in page.errors if not e.startswith('Failed to load resource')] == []


# The roles of controls: each must have a name a screen reader says.
CONTROLS = {'button', 'textbox', 'checkbox', 'combobox', 'radio', 'link', 'slider',
            'spinbutton', 'switch', 'searchbox', 'progressbar'}


def unnamed_controls(page):
    """The controls in Chromium's accessibility tree that have no accessible name."""
    tree = page.context.new_cdp_session(page).send('Accessibility.getFullAXTree')['nodes']
    return [(node['role']['value'], node.get('properties')) for node in tree
            if not node.get('ignored') and node.get('role', {}).get('value') in CONTROLS
            and not node.get('name', {}).get('value', '').strip()]


def covered(page):
    """Where a speaking status line's box meets a command, code or framing box not its
    own: [(status id, what it covers, where that was scrolled to)]."""
    return page.evaluate("""() => {
      const shown = (element) => element.getClientRects().length > 0;
      const spoken = [...document.querySelectorAll('[aria-live]')]
        .filter((element) => shown(element) && element.textContent.trim());
      const boxes = [...document.querySelectorAll('pre, code, .box')].filter(shown);
      const meet = (a, b) => a.left < b.right && b.left < a.right
                             && a.top < b.bottom && b.top < a.bottom;
      const found = [];
      for (const box of boxes) {
        for (const block of ['start', 'end']) {
          box.scrollIntoView({block});
          for (const said of spoken) {
            if (said.contains(box)) continue;
            if (meet(said.getBoundingClientRect(), box.getBoundingClientRect())) {
              found.push([said.id, box.id || box.textContent.slice(0, 40), block]);
            }
          }
        }
      }
      return found;
    }""")


@pytest.mark.timeout(120)
@pytest.mark.parametrize('screen', ['desktop', 'phone'])
def test_any_screen_one_column_no_sideways_scroll_named_controls(browser, site, screen):
    base, uploads, _ = site
    (uploads).mkdir(exist_ok=True)
    (uploads / 'README.md').write_bytes(b'# hello\n')
    (uploads / 'M').write_bytes(b'm')        # a link of one letter is a touch target too
    context, page = open_page(browser, PHONE if screen == 'phone' else DESKTOP)
    try:
        load(page, base)
        page.locator('#stored tr', has_text='README.md').wait_for()
        page.click('#send')
        page.locator('#echo .echoed').wait_for()
        width = page.evaluate('innerWidth')
        assert page.evaluate('document.scrollingElement.scrollWidth') <= width
        lefts = page.locator('#ideas .idea').first.locator(':scope > div').evaluate_all(
            '(cells) => cells.map((cell) => cell.getBoundingClientRect().left)')
        assert (lefts[0] == lefts[1]) == (screen == 'phone'), lefts    # one column on a phone
        # Commands scroll rather than wrap: each stays one line.
        commands = page.locator('#commands')
        assert commands.evaluate('(pre) => getComputedStyle(pre).whiteSpace') == 'pre'
        if screen == 'phone':
            assert commands.evaluate('(pre) => pre.scrollWidth > pre.clientWidth')
        # Touch targets of 40 px at least (a checkbox's is its label), and every control
        # named.
        targets = page.locator('button:visible, select:visible, input:visible, '
                               '#stored a, #where a, #archives a').evaluate_all(
            '''(controls) => controls.map((control) => {
                 const rect = (control.closest('label') || control).getBoundingClientRect();
                 return [control.outerHTML, rect.width, rect.height]; })''')
        assert len(targets) >= 7
        for control, wide, high in targets:
            assert high >= 40 and wide >= 40, (control, wide, high)
        page.get_by_role('button', name='Delete README.md').wait_for()
        page.get_by_role('textbox', name='Text to send to /echo').wait_for()
        page.get_by_label('Token').wait_for()
        assert unnamed_controls(page) == []
        assert page.locator('[aria-live]').count() >= 1
        # What the page says of an action covers no command: each status line that
        # speaks, against every command, code and framing box, with the box scrolled to
        # the top and to the bottom of the screen (where a toast would sit).
        page.click('#pause')
        page.locator('#log-said', has_text='paused').wait_for()
        page.get_by_role('button', name='Delete README.md').click()
        page.get_by_role('button', name='Yes, delete README.md').click()
        page.locator('#uploads-said', has_text='Deleted README.md.').wait_for()
        assert page.locator('[aria-live]:not(:empty)').count() == 3     # echo, uploads, log
        assert covered(page) == []
        save(page, f'{screen}.png')
        assert page.dialogs == [] and page.errors == [], (page.dialogs, page.errors)
    finally:
        context.close()


@pytest.mark.timeout(120)
def test_the_chunked_upload_is_explained_with_the_curl_command_not_a_control(page, site):
    base, _, _ = site
    load(page, base)
    assert page.get_by_role('radio').count() == 0
    assert 'HTTP/1.1' in page.locator('#framing-note').inner_text()
    host = base[len('http://'):]
    assert page.locator('#chunked-command').inner_text() == (
        f"curl -T FILE -H 'Transfer-Encoding: chunked' http://{host}/uploads/FILE")
    # The drop zone's chooser is reached from the keyboard.
    for _ in range(40):
        page.keyboard.press('Tab')
        if page.evaluate('document.activeElement.id') == 'choose':
            break
    assert page.evaluate('document.activeElement.id') == 'choose'


@pytest.mark.timeout(120)
def test_the_page_draws_a_chunked_echos_trailer_section_both_ways(page, site):
    """Trailers are what browsers never send: a raw socket sends them, the page draws them,
    after the last chunk and before the empty line that ends the message."""
    base, _, server = site
    load(page, base)
    digest = f'sha-256=:{base64.b64encode(hashlib.sha256(b"a" * 300 + b"b").digest()).decode()}:'
    reply = exchange(server.port, 'PUT', '/echo', ['Transfer-Encoding: chunked'],
                     chunked(b'a' * 300, b'b', trailers=[f'Content-Digest: {digest}',
                                                         'X-Secret: s3cret']))
    assert reply.status == 200 and reply.trailers[0] == ('content-digest', digest)
    wait_until(lambda: http_records(base, '/echo'), 'the echo recorded')
    record, = http_records(base, '/echo')
    entry = page.locator(f'.record[data-id="{record["id"]}"]')
    entry.wait_for()
    request, response = (entry.locator('.row').nth(n).locator('.box').all_inner_texts()
                         for n in (0, 1))
    # As they travel: chunk sizes in hex (decimal on hover), the last chunk, each field
    # line (a value other than a digest shown as *, as in the record), then the empty line.
    section = [r'0\r\n', rf'Content-Digest: {digest}\r\n', r'X-Secret: *\r\n', r'\r\n']
    assert request[-6:] == [r'12c\r\n', r'1\r\n', *section]
    assert entry.locator('.chunk', has_text='12c').first.get_attribute('title').startswith(
        'a chunk of 300 bytes')
    assert response[-6:] == [r'12c\r\n', r'1\r\n', *section]     # the echo's chunks: the same
    assert record['response']['sizes'] == [300, 1]
    assert 's3cret' not in entry.inner_text()
    assert page.errors == [], page.errors
    ARTIFACTS.mkdir(exist_ok=True)
    entry.screenshot(path=str(ARTIFACTS / 'trailers.png'))


@pytest.mark.timeout(120)
def test_long_chunk_and_block_runs_are_drawn_first_count_last_chunks_in_hex(page, site):
    """200 chunks up and echoed back: each direction drawn as its first sizes, how many
    between and its last sizes, in hex as their size lines travel (decimal on hover);
    a long block stream likewise, in decimal (its length prefix is binary)."""
    base, _, server = site
    load(page, base)
    sizes = [n % 300 + 1 for n in range(200)]
    reply = exchange(server.port, 'PUT', '/echo', ['Transfer-Encoding: chunked'],
                     chunked(*[b'e' * size for size in sizes]))
    assert reply.status == 200 and reply.headers['transfer-encoding'] == 'chunked'
    blocks = [n + 1 for n in range(70)]
    block_port = requests.get(f'{base}/_framing', timeout=WAIT).json()['block_port']
    with socket.create_connection(('127.0.0.1', block_port), timeout=WAIT) as sock:
        for size in blocks:
            put_block(sock, b'b' * size)
        put_block(sock, b'')
        assert sock.recv(1) == b''            # closed once the stream is kept
    wait_until(lambda: [r for r in records(base) if r['kind'] == 'blocks'], 'blocks recorded')
    wait_until(lambda: http_records(base, '/echo'), 'the echo recorded')
    echo, = http_records(base, '/echo')
    entry = page.locator(f'.record[data-id="{echo["id"]}"]')
    entry.wait_for()
    hexed = [rf'{size:x}\r\n' for size in sizes]
    for row in (entry.locator('.row').nth(0), entry.locator('.row').nth(1)):
        assert row.locator('.chunk').all_inner_texts() == hexed[:4] + hexed[-2:]
        assert row.locator('.label', has_text='more chunks').inner_text() == (
            '… 194 more chunks …')
        assert row.locator('.chunk').nth(4).get_attribute('title').startswith(
            f'a chunk of {sizes[-2]} bytes ({sizes[-2]:x} in hex)')
        assert row.locator('.last').count() == 1
    stream, = [r for r in records(base) if r['kind'] == 'blocks']
    drawn = page.locator(f'.record[data-id="{stream["id"]}"]')
    drawn.wait_for()
    assert drawn.locator('.block').all_inner_texts() == ['1', '2', '3', '4', '69', '70']
    assert drawn.locator('.label', has_text='more blocks').inner_text() == '… 64 more blocks …'
    assert 'big-endian' in drawn.locator('.block').first.get_attribute('title')
    assert page.errors == [], page.errors
    entry.screenshot(path=str(ARTIFACTS / 'long-runs.png'))


def event(record, kind=None):
    """A record as one server-sent event: of type ``kind``, or a plain message."""
    return (f'event: {kind}\n' if kind else '') + f'data: {json.dumps(record)}\n\n'


def upload_record(ended, status, received, chunks):
    """A chunked upload's record as the live records publish it (issue 15's contract)."""
    sizes = [65536] * min(chunks, 64)
    return {
        'id': 9001, 'kind': 'http', 'time': 1.0, 'process': 1, 'peer': '127.0.0.1:40000',
        'request': {'method': 'PUT', 'target': '/uploads/big.bin', 'version': 'HTTP/1.1',
                    'head': 90, 'delimiter': 'CRLFCRLF',
                    'body': {'framing': 'chunked', 'bytes': received, 'chunks': chunks,
                             'sizes': sizes, 'more': chunks - len(sizes), 'trailers': 0,
                             'trailer_fields': [], 'done': False}},
        'response': {'status': status, 'framing': 'none', 'chunks': 0, 'bytes': 0},
        'ended': ended, 'words': f'body chunked: {chunks} chunks, {received} B'}


def intercepted(page, routes, what):
    """The next request the page made that ``routes`` holds: Playwright hands routes over
    only while this thread calls it, so each look at the list is made after a call."""
    def caught():
        page.evaluate('0')
        return routes
    wait_until(caught, what)
    return routes.pop()


@pytest.mark.timeout(120)
def test_an_exchange_in_progress_grows_and_ends_cut_as_the_feed_says(page, site):
    """The drawing follows the live records' contract: an open record, re-sent with the
    same id as its body grows (an `update` event, or a plain message), then closed.
    The feed here is played to the page by the browser's own request interception, so
    that each state can be looked at in turn."""
    base, _, _ = site
    feeds = []
    page.route('**/_framing/stream*', lambda route: feeds.append(route))
    page.goto(base + '/')
    opened = {'kind': 'open', 'reason': ''}
    intercepted(page, feeds, 'the page opened its feed').fulfill(status=200, content_type='text/event-stream', body='retry: 10\n\n'
                        + event(upload_record(opened, None, 65536, 1), 'record')
                        + event(upload_record(opened, None, 34_900_000, 533), 'update'))
    entry = page.locator('.record[data-id="9001"]')
    entry.wait_for()
    assert page.locator('.record[data-id="9001"]').count() == 1       # replaced, not added
    request, response = entry.locator('.row').nth(0), entry.locator('.row').nth(1)
    assert request.locator('.growing').inner_text() == 'receiving… 34.9 MB so far'
    assert request.locator('.last').count() == 0
    assert response.locator('.growing').inner_text() == 'not sent yet'
    assert 'in progress' in entry.inner_text()
    # The feed reconnects (the browser's EventSource), and the record comes closed.
    left = {'kind': 'client left', 'reason': 'the peer closed the connection'}
    intercepted(page, feeds, 'the feed reconnected').fulfill(status=200, content_type='text/event-stream', body='retry: 60000\n\n'
                        + event(upload_record(left, None, 34_900_000, 533)))
    entry.locator('.missing', has_text='client left after 34.9 MB').wait_for()
    assert page.locator('.record[data-id="9001"]').count() == 1
    assert entry.locator('.growing').count() == 0 and entry.locator('.last').count() == 0
    assert response.locator('.missing').inner_text() == 'no response sent'
    page.get_by_label('Show').select_option('errors')
    assert entry.is_visible()
    assert page.errors == [], page.errors
    entry.screenshot(path=str(ARTIFACTS / 'left.png'))


@pytest.mark.timeout(120)
def test_a_request_waiting_for_a_thread_and_an_echo_under_way_are_drawn_growing(page, site):
    """An open record whose body no thread has opened says what it waits for; an echo
    open with its response begun is drawn sending, neither ended nor cut."""
    base, _, _ = site
    feeds = []
    page.route('**/_framing/stream*', lambda route: feeds.append(route))
    page.goto(base + '/')
    waiting = upload_record({'kind': 'open', 'reason': 'waiting for a thread'}, None, 0, 0)
    waiting['request']['body'] = {'framing': 'unread'}
    echo = upload_record({'kind': 'open', 'reason': ''}, 200, 3, 1)
    echo['id'] = 9002
    echo['request'].update({'method': 'POST', 'target': '/echo'})
    echo['response'] = {'sent': True, 'status': 200, 'framing': 'chunked', 'chunks': 1,
                        'bytes': 3, 'done': False, 'trailers': 0, 'trailer_fields': []}
    intercepted(page, feeds, 'the page opened its feed').fulfill(
        status=200, content_type='text/event-stream',
        body='retry: 60000\n\n' + event(waiting, 'record') + event(echo, 'record'))
    queued = page.locator('.record[data-id="9001"]')
    queued.wait_for()
    request, response = queued.locator('.row').nth(0), queued.locator('.row').nth(1)
    assert request.locator('.growing').inner_text() == 'waiting for a thread…'
    assert response.locator('.growing').inner_text() == 'not sent yet'
    sending = page.locator('.record[data-id="9002"]')
    request, response = sending.locator('.row').nth(0), sending.locator('.row').nth(1)
    assert request.locator('.growing').inner_text() == 'receiving… 3 B so far'
    assert response.locator('.growing').inner_text() == 'sending…'
    assert sending.locator('.missing').count() == 0 and sending.locator('.last').count() == 0
    assert page.errors == [], page.errors


def tls_record(number, handshake, received, sent):
    """An exchange over TLS as records.public makes it, from tally facts (records.tally_facts'
    shape: records, bytes, types, the first (type, version, length), messages, malformed);
    with ``received`` None, over plain TCP."""
    request = SimpleNamespace(method='GET', target='/big', version='HTTP/1.1', head_size=40,
                              interims=())
    response = (200, 'content-length', 1_500_000, 0, 1_500_000, NO_TRAILERS, True, None)
    made = http_record(('127.0.0.1', 41000), 1.0, request, None, response,
                       tls=received and ('TLSv1.3', 'http/1.1', handshake, received, sent))
    made[NUMBER] = number
    return public(made)


def direction(*sizes, count=None, messages=()):
    """Tally facts of records given as (type name, 'major.minor', length): a tally keeps
    the header's numbers, which records.public names."""
    numbers = {name: kind for kind, name in CONTENT_TYPES.items()}
    sizes = [(numbers[name], int(major) << 8 | int(minor), length)
             for name, (major, _, minor), length in sizes]
    types = {}
    for kind, _, _ in sizes:
        types[kind] = types.get(kind, 0) + 1
    count = len(sizes) if count is None else count
    return (count, sum(5 + length for _, _, length in sizes), tuple(types.items()),
            tuple(sizes[:64]), tuple(messages), None)


@pytest.mark.timeout(120)
@pytest.mark.parametrize('screen', ['desktop', 'phone'])
def test_tls_records_are_a_third_row_hex_headers_collapsed_runs(browser, site, screen):
    """An exchange over TLS: its handshake's records once, then under each message the
    records that carried it, each a 5-byte header drawn in hex as on the wire (decimal
    on hover) and its payload; a long run collapsed; a plain exchange has no such row."""
    base, _, _ = site
    context, page = open_page(browser, PHONE if screen == 'phone' else DESKTOP)
    try:
        feeds = []
        page.route('**/_framing/stream*', lambda route: feeds.append(route))
        page.goto(base + '/')
        data = ('application_data', '3.3', 16401)
        handshake = (direction(('handshake', '3.1', 512), ('change_cipher_spec', '3.3', 1),
                               ('application_data', '3.3', 53), messages=['client_hello']),
                     direction(('handshake', '3.3', 90), ('change_cipher_spec', '3.3', 1),
                               *[('application_data', '3.3', 40 + n) for n in range(4)],
                               messages=['server_hello']))
        first = tls_record(9101, handshake, direction(('application_data', '3.3', 95)),
                           direction(*[data] * 64, count=92))
        second = tls_record(9102, None, direction(count=0), direction(
            ('application_data', '3.3', 300), ('application_data', '3.3', 17)))
        plain = tls_record(9103, None, None, None)
        intercepted(page, feeds, 'the page opened its feed').fulfill(
            status=200, content_type='text/event-stream',
            body='retry: 60000\n\n' + ''.join(event(r, 'record') for r in (first, second, plain)))
        entry = page.locator('.record[data-id="9101"]')
        entry.wait_for()
        rows = entry.locator('.row')
        assert rows.count() == 6
        labels = [rows.nth(n).locator('.label').first.inner_text() for n in range(6)]
        assert labels == ['handshake in', 'handshake out', 'request', 'TLS in', 'response',
                          'TLS out']
        hello = rows.nth(0).locator('.tlshead')
        assert hello.all_inner_texts() == ['16 03 01 02 00', '14 03 03 00 01', '17 03 03 00 35']
        assert hello.first.get_attribute('title').startswith(
            'a TLS record header, 5 bytes: type 22 (handshake), version 3.1, length 512')
        assert rows.nth(0).locator('.tlsdata').first.inner_text() == 'handshake 512 B'
        assert 'client_hello' in rows.nth(0).inner_text()
        assert 'server_hello' in rows.nth(1).inner_text()
        assert rows.nth(1).locator('.tlshead').count() == 6          # 6: not collapsed
        request_tls = rows.nth(3)
        assert request_tls.locator('.tlshead').all_inner_texts() == ['17 03 03 00 5f']
        assert 'crossed while this exchange was read' in request_tls.locator(
            '.label').first.get_attribute('title')
        # 92 records, the first 64 listed: the first 4, then how many more (the end unknown).
        sent = rows.nth(5)
        assert sent.locator('.tlshead').all_inner_texts() == ['17 03 03 40 11'] * 4
        assert sent.locator('.label', has_text='more records').inner_text() == (
            '… 88 more records …')
        assert sent.locator('.tlsdata').first.get_attribute('title') == (
            '16401 bytes of application_data after the 5-byte header (encrypted)')
        # The next exchange on the connection: no handshake; its request came earlier.
        later = page.locator('.record[data-id="9102"]')
        assert later.locator('.row').count() == 4
        assert later.locator('.row').nth(1).inner_text() == 'TLS in\nno records of its own'
        assert later.locator('.row').nth(3).locator('.tlshead').all_inner_texts() == [
            '17 03 03 01 2c', '17 03 03 00 11']
        assert 'TLS: request in 0 records' in later.inner_text()
        # A plain exchange: two rows, no TLS.
        assert page.locator('.record[data-id="9103"] .row').count() == 2
        assert page.locator('.record[data-id="9103"] .tlshead').count() == 0
        assert 'one level' in page.locator('#tls-note').inner_text()
        width = page.evaluate('innerWidth')
        assert page.evaluate('document.scrollingElement.scrollWidth') <= width
        for drawn in entry.locator('.box').all():
            box = drawn.bounding_box()
            assert box is None or box['x'] + box['width'] <= width, drawn.inner_text()
        assert page.errors == [], page.errors
        ARTIFACTS.mkdir(exist_ok=True)
        entry.screenshot(path=str(ARTIFACTS / (
            'tls-records.png' if screen == 'desktop' else 'tls-records-phone.png')))
    finally:
        context.close()


def spki_pin(cert):
    """The base64 SHA-256 of a certificate's SubjectPublicKeyInfo: what Chromium's
    --ignore-certificate-errors-spki-list takes, to trust exactly that key."""
    pem = subprocess.run(['openssl', 'x509', '-in', cert, '-noout', '-pubkey'], check=True,
                         capture_output=True, timeout=WAIT).stdout
    der = subprocess.run(['openssl', 'pkey', '-pubin', '-outform', 'DER'], input=pem,
                         check=True, capture_output=True, timeout=WAIT).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.mark.timeout(120)
def test_the_page_over_tls_echoes_uploads_and_draws_each_exchanges_records(
        browser, minihttp, pki, tmp_path):
    """The page served over HTTPS to a Chromium that trusts the test certificate's key
    (and no other: not ignore_https_errors), used as over HTTP; each of its exchanges
    drawn with the third row, the TLS records that carried it."""
    uploads = tmp_path / 'uploads'
    server = minihttp('serve', '--port', 0, '--block-port', free_port(), '--uploads', uploads,
                      '--max-upload', '1M', '--quiet', '--tls-cert', pki['cert'],
                      '--tls-key', pki['key'], listening=HTTP_LISTENING)
    base = f'https://localhost:{server.port}'
    # Another Chromium, from the module's Playwright (one per thread): its flags differ.
    pinned = browser.browser_type.launch(executable_path=CHROMIUM, args=[
        *FLAGS, f'--ignore-certificate-errors-spki-list={spki_pin(pki["cert"])}'])
    try:
        context, page = open_page(pinned, DESKTOP)
        page.goto(base + '/_minihttp/')
        page.wait_for_selector('#idea-head[data-id]', state='attached')
        assert page.evaluate('location.protocol') == 'https:'
        page.click('#send')           # a POST whose Origin is https://localhost:PORT
        page.locator('#echo .echoed').wait_for()
        assert page.locator('#echo .echoed').inner_text() == 'Beautiful is better than ugly.'
        data = os.urandom(200_000)
        picked = tmp_path / 'picked.bin'
        picked.write_bytes(data)
        page.set_input_files('#pick', str(picked))
        page.wait_for_selector('#transfers >> text=stored (201)')
        assert (uploads / 'picked.bin').read_bytes() == data
        page.get_by_label("this page's own requests").check()
        kept = requests.get(base + '/_framing', verify=pki['cert'], timeout=WAIT).json()
        exchanges = [r for r in kept['records'] if r['kind'] == 'http' and r['request']
                     and r['request']['target'] in ('/_minihttp/', '/echo',
                                                    '/uploads/picked.bin')]
        assert {r['request']['target'] for r in exchanges} == {
            '/_minihttp/', '/echo', '/uploads/picked.bin'}, exchanges
        for record in exchanges:
            assert record['tls']['version'] in ('TLSv1.2', 'TLSv1.3'), record['tls']
            drawn = page.locator(f'.record[data-id="{record["id"]}"]')
            drawn.wait_for()
            assert drawn.locator('.tlshead').count() >= 1
            labels = drawn.locator('.row .label').all_inner_texts()
            assert 'TLS in' in labels and 'TLS out' in labels, labels
            # Each header as on the wire: type, version, a 2-byte length, in hex.
            assert all(re.fullmatch(r'(1[4-7]) 03 0[1-4] [0-9a-f]{2} [0-9a-f]{2}', text)
                       for text in drawn.locator('.tlshead').all_inner_texts())
        # The page's own GET was the connection's first exchange: its handshake drawn.
        first = [r for r in exchanges if r['request']['target'] == '/_minihttp/'][-1]
        if first['tls']['handshake']:
            labels = page.locator(f'.record[data-id="{first["id"]}"] .row .label')
            assert 'handshake in' in labels.all_inner_texts()
        assert page.errors == [], page.errors
        assert page.dialogs == [], page.dialogs
        save(page, 'tls-page.png')
        context.close()
    finally:
        pinned.close()


# -- resumable uploads and folders from the page (issue 17) ------------------------------

class CuttingProxy:
    """A TCP proxy on loopback between Chromium and the server, as a dropped Wi-Fi would
    be: bytes copied both ways by a thread per direction, except that the first request
    whose head begins ``PATCH /_uploads/`` is cut after ``cut`` bytes of its body: those
    reach the server, which then reads the end of the stream (FIN); the browser's side
    is reset.  ``done`` is set once it cut.  A context manager: every socket closed and
    every thread joined on the way out."""

    MARK = b'PATCH /_uploads/'

    def __init__(self, port, cut):
        self.port_to = port
        self.cut = cut
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.sockets = []
        self.threads = []
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]

    def __enter__(self):
        self.start(self.accept)
        return self

    def __exit__(self, *exc):
        # shutdown, not close alone: it wakes a thread blocked in accept or recv.
        with self.lock:
            for sock in [self.listener, *self.sockets]:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        for thread in self.threads:
            thread.join(WAIT)
        assert not any(thread.is_alive() for thread in self.threads)

    def start(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self.lock:
            self.threads.append(thread)
        thread.start()

    def accept(self):
        while True:
            try:
                browser, _ = self.listener.accept()
            except OSError:
                return                      # the listener closed: the proxy stops
            server = socket.create_connection(('127.0.0.1', self.port_to), timeout=WAIT)
            with self.lock:
                self.sockets += [browser, server]
            self.start(self.upstream, browser, server)
            self.start(self.copy, server, browser)

    @staticmethod
    def copy(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass                            # cut, or closed at the end

    def upstream(self, browser, server):
        """Browser to server, watching for the PATCH to cut while none was cut: the
        connection's bytes kept until then (a few MiB at most, in a test)."""
        seen = bytearray()
        sent = 0
        try:
            while not self.done.is_set():
                data = browser.recv(65536)
                if not data:
                    server.shutdown(socket.SHUT_WR)
                    return
                seen += data
                start = seen.find(self.MARK)
                end = -1 if start < 0 else seen.find(b'\r\n\r\n', start)
                limit = len(seen) if end < 0 else min(len(seen), end + 4 + self.cut)
                server.sendall(seen[sent:limit])
                sent = limit
                if end >= 0 and limit == end + 4 + self.cut:
                    server.shutdown(socket.SHUT_WR)       # the server reads all it got
                    browser.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack('ii', 1, 0))
                    browser.close()                       # the browser's side: reset
                    self.done.set()
                    return
            self.copy(browser, server)
        except OSError:
            pass


@pytest.fixture
def roomy(minihttp, tmp_path):
    """A server whose uploads may be a few MiB; (its port, its uploads folder)."""
    uploads = tmp_path / 'uploads'
    server = minihttp('serve', '--port', 0, '--block-port', free_port(), '--uploads', uploads,
                      '--max-upload', '64M', '--quiet', listening=HTTP_LISTENING)
    return server.port, uploads


def sha256(data):
    return hashlib.sha256(data).hexdigest()


@pytest.mark.timeout(120)
def test_an_upload_cut_mid_patch_resumes_by_itself_to_the_same_bytes(page, roomy, tmp_path):
    port, uploads = roomy
    data = os.urandom(4 << 20)
    picked = tmp_path / 'resumed.bin'
    picked.write_bytes(data)
    cut = 1_234_567
    with CuttingProxy(port, cut) as proxy:
        load(page, f'http://127.0.0.1:{proxy.port}')
        page.set_input_files('#pick', str(picked))
        line = page.locator('#transfers p', has_text='resumed.bin')
        line.locator('text=stored (201)').wait_for()
        assert proxy.done.is_set()
        assert sha256((uploads / 'resumed.bin').read_bytes()) == sha256(data)
        # The offset it resumed from is the server's (HEAD), and said in words.
        assert line.get_attribute('data-resumed-at') == str(cut)
        said = page.evaluate('([at, of]) => `resumed at ${human(at)} of ${human(of)}`',
                             [cut, len(data)])
        assert said == 'resumed at 1.2 MB of 4.2 MB'
        assert said in line.inner_text()
        assert page.locator('#transfers .error').count() == 0
        # The feed: the cut PATCH, a HEAD, the PATCH of the rest from the offset, each
        # named as this page's step of the upload.
        base = f'http://127.0.0.1:{port}'
        kept = [r for r in records(base) if r['kind'] == 'http' and r['request']
                and r['request']['target'].startswith('/_uploads/')]
        patches = [r for r in kept if r['request']['method'] == 'PATCH']
        first = patches[0]['request']['body']
        assert (first['length'], first['bytes'], first['done']) == (len(data), cut, False)
        rest, = [r for r in patches if r['response']['status'] == 201]
        assert rest['request']['body']['length'] == len(data) - cut
        heads = [r for r in kept if r['request']['method'] == 'HEAD']
        assert heads and all(r['response']['status'] == 204 for r in heads)
        page.get_by_label("this page's own requests").check()
        for record, word, step in ((patches[0], 'append', 'an append, at the offset it names'),
                                   (rest, 'append', 'an append, at the offset it names'),
                                   (heads[-1], 'offset?', 'asks the offset held')):
            entry = page.locator(f'.record[data-id="{record["id"]}"]')
            entry.wait_for()
            assert f"{step}: this page's upload of resumed.bin" in entry.inner_text()
            assert entry.locator('.step').inner_text() == f'resumable: {word}'
        cut_request = page.locator(f'.record[data-id="{patches[0]["id"]}"] .row').first
        assert cut_request.locator('.missing').inner_text().endswith('after 1.2 MB of 4.2 MB')
        save(page, 'resumed.png')
        # A 409 in the console is the browser's own line: Chromium may send the cut
        # PATCH again by itself, on a new connection and from the same offset, which
        # the server refuses (it holds more); the page then asks HEAD, as after a cut.
        assert [e for e in page.errors if 'status of 409' not in e] == [], page.errors
        assert all(r['response']['status'] in (None, 201, 409) for r in patches), patches


@pytest.mark.timeout(120)
def test_cancel_deletes_the_upload_resource_and_leaves_no_file(page, roomy, tmp_path):
    port, uploads = roomy
    base = f'http://127.0.0.1:{port}'
    load(page, base)
    throttle = page.context.new_cdp_session(page)
    throttle.send('Network.enable')
    throttle.send('Network.emulateNetworkConditions', {
        'offline': False, 'latency': 0, 'downloadThroughput': -1, 'uploadThroughput': 65536})
    slow = tmp_path / 'slow.bin'
    slow.write_bytes(os.urandom(2 << 20))
    page.set_input_files('#pick', str(slow))
    line = page.locator('#transfers p', has_text='slow.bin')
    page.wait_for_function("() => [...document.querySelectorAll('#transfers progress')]"
                           ".some((bar) => bar.value > 0 && bar.value < bar.max)")
    made, = page.evaluate('[...resources.keys()]')
    assert requests.head(base + made, timeout=WAIT).status_code == 204     # it is there
    line.get_by_role('button', name='Cancel upload of slow.bin').click()
    line.locator('text=cancelled: the server keeps nothing of it').wait_for()
    assert requests.head(base + made, timeout=WAIT).status_code == 404
    assert os.listdir(uploads) == []            # neither the file nor the upload's state
    deleted, = [r for r in http_records(base, made) if r['request']['method'] == 'DELETE']
    assert deleted['response']['status'] == 204
    page.get_by_label("this page's own requests").check()
    entry = page.locator(f'.record[data-id="{deleted["id"]}"]')
    entry.wait_for()
    assert "cancels the upload: this page's upload of slow.bin" in entry.inner_text()
    assert page.errors == [], page.errors


def tree(root):
    """A folder with structure: {relative path: bytes}, written under ``root``."""
    files = {'a.txt': b'alpha\n', 'sub/b.bin': os.urandom(200_000),
             'sub/deeper/c.txt': b'see\n', 'sub/deeper/d e.txt': b'spaced\n'}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


@pytest.mark.timeout(120)
def test_a_picked_folder_is_uploaded_with_its_structure_and_navigated(page, site, tmp_path):
    base, uploads, _ = site
    (uploads / 'into').mkdir(parents=True)
    files = tree(tmp_path / 'album')
    # Opened in a folder first (the address says which): the folder goes there.
    page.goto(base + '/#folder=into%2F')
    page.wait_for_selector('#idea-head[data-id]', state='attached')
    assert page.locator('#where').inner_text() == 'Folder: uploads / into'
    page.set_input_files('#pick-folder', str(tmp_path / 'album'))
    page.wait_for_function('(n) => [...document.querySelectorAll("#transfers p")].filter('
                           '(p) => p.textContent.includes("stored (201)")).length === n',
                           arg=len(files))
    for name, data in files.items():
        assert sha256((uploads / 'into' / 'album' / name).read_bytes()) == sha256(data), name
    # Into it by its rows, as a person would; the address follows, Back goes up.
    page.locator('#stored a', has_text='album/').click()
    page.locator('#stored a', has_text='sub/').wait_for()
    # Out as one zip, made by the server as it is sent: every file as uploaded, under
    # one folder named as the download; its record a chunked response of unknown length.
    with page.expect_download() as download:
        page.get_by_role('link', name='Download album as zip').click()
    assert download.value.suggested_filename == 'album.zip'
    with zipfile.ZipFile(download.value.path()) as archive:
        got = {name.removeprefix('album/'): sha256(archive.read(name))
               for name in archive.namelist() if not name.endswith('/')}
    assert got == {name: sha256(data) for name, data in files.items()}
    wait_until(lambda: http_records(base, '/uploads/into/album/?archive=*'), 'the zip recorded')
    record, = http_records(base, '/uploads/into/album/?archive=*')
    assert record['response']['framing'] == 'chunked' and record['response']['done']
    entry = page.locator(f'.record[data-id="{record["id"]}"]')
    entry.wait_for()
    assert entry.locator('.row').nth(1).locator('.last').count() == 1
    page.locator('#stored a', has_text='sub/').click()
    page.locator('#stored tr', has_text='b.bin').wait_for()
    assert page.locator('#where').inner_text() == 'Folder: uploads / into / album / sub'
    assert page.evaluate('location.hash') == '#folder=' + 'into/album/sub/'.replace('/', '%2F')
    assert page.locator('#stored tr', has_text='b.bin').locator('td').nth(1).inner_text() == (
        str(len(files['sub/b.bin'])))
    assert page.locator('#stored tr', has_text='deeper/').locator('td').nth(1).inner_text() == (
        'folder')
    page.locator('#stored a', has_text='deeper/').click()
    row = page.locator('#stored tr', has_text='d e.txt')
    with page.expect_download() as download:
        row.locator('a').click()
    assert Path(download.value.path()).read_bytes() == files['sub/deeper/d e.txt']
    # The folder's downloads: zip and tar, of the folder shown.
    archives = page.locator('#archives a')
    assert archives.all_inner_texts() == ['zip', 'tar']
    assert [archives.nth(n).get_attribute('href') for n in (0, 1)] == [
        '/uploads/into/album/sub/deeper/?archive=zip', '/uploads/into/album/sub/deeper/?archive=tar']
    page.go_back()
    page.locator('#stored tr', has_text='b.bin').wait_for()
    page.get_by_role('link', name='Up one folder').click()
    page.locator('#stored tr', has_text='a.txt').wait_for()
    page.get_by_role('link', name='uploads (the top folder)').click()
    page.locator('#stored a', has_text='into/').wait_for()
    assert page.locator('#archives a').first.get_attribute('href') == '/uploads/?archive=zip'
    assert page.errors == [], page.errors
    save(page, 'folders.png')


@pytest.mark.timeout(120)
def test_a_folder_is_made_and_deleted_from_the_page_and_409_said_when_not_empty(page, site):
    base, uploads, _ = site
    load(page, base)
    page.get_by_label('New folder in this one').fill('made')
    page.get_by_role('button', name='New folder').click()
    page.locator('#uploads-said', has_text='Made the folder made/.').wait_for()
    assert (uploads / 'made').is_dir()
    row = page.locator('#stored tr', has_text='made/')
    row.wait_for()
    # Made again: If-None-Match: * says it is there, rather than taking it for made.
    page.get_by_label('New folder in this one').fill('made')
    page.keyboard.press('Enter')
    page.locator('#uploads-said.error', has_text='made/ was not made: 412').wait_for()
    page.locator('#stored[aria-busy=false]').wait_for()
    # Not empty: the server's 409 reason, in the status line; the folder stays.
    (uploads / 'made' / 'kept.txt').write_bytes(b'kept')
    row.get_by_role('button', name='Delete made/').click()
    row.get_by_role('button', name='Yes, delete made/').click()
    said = page.locator('#uploads-said.error', has_text='was not deleted')
    said.wait_for()
    assert said.inner_text() == "made/ was not deleted: 409 Conflict: folder 'made' is not empty"
    assert (uploads / 'made' / 'kept.txt').exists()
    (uploads / 'made' / 'kept.txt').unlink()
    page.locator('#stored[aria-busy=false]').wait_for()    # its rows read again
    page.locator('#stored tr', has_text='made/').get_by_role(
        'button', name='Delete made/').click()
    page.get_by_role('button', name='Yes, delete made/').click()
    page.locator('#uploads-said', has_text='Deleted made/.').wait_for()
    page.locator('#stored tr', has_text='made/').wait_for(state='detached')
    assert not (uploads / 'made').exists()
    # The browser's console lines for the 412 and the 409 are its own; the page raised
    # nothing, and said everything on the page.
    assert [e for e in page.errors if not e.startswith('Failed to load resource')] == []


@pytest.mark.timeout(120)
def test_interim_responses_are_drawn_before_the_final_head_with_their_fields(page, site):
    """A creation with its content and Expect: 100-continue (as curl sends one): the
    104 with its fields, then the 100, then the final head, in the order sent."""
    base, _, server = site
    load(page, base)
    data = b'r' * 5000
    reply = exchange(server.port, 'PUT', '/uploads/interim.bin', [
        'Upload-Complete: ?1', 'Upload-Draft-Interop-Version: 9', 'Expect: 100-continue',
        f'Content-Length: {len(data)}'], data)
    assert reply.status == 201
    wait_until(lambda: http_records(base, '/uploads/interim.bin'), 'the creation recorded')
    record, = http_records(base, '/uploads/interim.bin')
    assert [i['status'] for i in record['interim']] == [104, 100]
    entry = page.locator(f'.record[data-id="{record["id"]}"]')
    entry.wait_for()
    shown = entry.locator('.row').nth(1).locator('.box').all_inner_texts()
    fields = [rf'{name}: {value}\r\n' for name, value in record['interim'][0]['fields']]
    assert shown[:len(fields) + 6] == [
        'response', r'104 Upload Resumption Supported\r\n', *fields, r'\r\n',
        '100 Continue', r'\r\n\r\n', '201']
    assert r'Location: *\r\n' in fields
    assert entry.locator('.interim').first.get_attribute('title').startswith('an interim')
    assert page.errors == [], page.errors
    entry.screenshot(path=str(ARTIFACTS / 'interim.png'))


@pytest.mark.timeout(120)
def test_a_dropped_folder_is_walked_to_its_files_and_empty_folders(page, site):
    """The drop path's walk, given entries shaped as Chromium's FileSystemEntry
    (DataTransferItem.webkitGetAsEntry): a synthetic drop carries none, and Chromium's
    drag automation gives none for a folder.  A folder's entries come in batches, then
    an empty one, as readEntries gives them."""
    base, uploads, _ = site
    (uploads / 'here').mkdir(parents=True)
    page.goto(base + '/#folder=here%2F')
    page.wait_for_selector('#idea-head[data-id]', state='attached')
    page.evaluate("""() => {
      const file = (path, text) => ({isFile: true, fullPath: path,
        file: (ok) => ok(new File([text], path.split('/').pop()))});
      const folder = (path, ...batches) => ({isFile: false, fullPath: path,
        createReader: () => ({readEntries: (ok) => ok(batches.shift() || [])})});
      walk(folder('/dropped', [file('/dropped/one.txt', 'one')],
                  [folder('/dropped/inner', [file('/dropped/inner/two.txt', 'two')]),
                   folder('/dropped/empty')]), shownFolder());
    }""")
    page.wait_for_function('() => [...document.querySelectorAll("#transfers p")].filter('
                           '(p) => p.textContent.includes("stored (201)")).length === 2')
    wait_until(lambda: (uploads / 'here' / 'dropped' / 'empty').is_dir(), 'the empty folder')
    assert (uploads / 'here' / 'dropped' / 'one.txt').read_bytes() == b'one'
    assert (uploads / 'here' / 'dropped' / 'inner' / 'two.txt').read_bytes() == b'two'
    page.locator('#stored a', has_text='dropped/').wait_for()
    assert page.errors == [], page.errors


@pytest.mark.timeout(120)
@pytest.mark.parametrize('address', ['..%2F..%2F', 'a%2F..%2F..%2F', '.%2F', '%2E%2E%2F', '%',
                                     'a%2F%2Fb%2F'])
def test_a_crafted_folder_address_never_leaves_the_uploads(page, site, address):
    """#folder= is anyone's to write in a link: "..", which the URL parser resolves
    (/uploads/../ is the site's root, where the page would list, link archives and
    make folders), is no folder; nor a broken escape or an empty segment.  The page
    says so and shows the top folder, and the address no longer holds it."""
    base, uploads, _ = site
    (uploads / 'top.txt').parent.mkdir(parents=True, exist_ok=True)
    (uploads / 'top.txt').write_bytes(b'top')
    page.goto(f'{base}/#folder={address}')
    page.wait_for_selector('#idea-head[data-id]', state='attached')
    page.locator('#stored tr', has_text='top.txt').wait_for()
    assert page.locator('#where').inner_text() == 'Folder: uploads'
    assert page.locator('#archives a').evaluate_all('(links) => links.map((a) => a.href)') == [
        f'{base}/uploads/?archive=zip', f'{base}/uploads/?archive=tar']
    said = page.locator('#uploads-said.error').inner_text()
    assert said == 'The address named no folder of the uploads: showing the top folder.'
    assert page.evaluate('location.hash') == ''
    assert page.locator('#stored a', has_text='..').count() == 0
    # Nothing but /uploads/ was asked for: never the root as a listing.
    listed = [r['request']['target'].split('?')[0] for r in records(base)
              if r['kind'] == 'http' and r['request'] and '_page_' in r['request']['target']
              and r['request']['target'].startswith(('/uploads', '/?'))]
    assert listed and set(listed) == {'/uploads/'}, listed
    # A typed folder name is held to the same: ".." is refused in words, never sent.
    page.get_by_label('New folder in this one').fill('../made')
    page.get_by_role('button', name='New folder').click()
    page.locator('#uploads-said.error', has_text="../made cannot be a folder's name").wait_for()
    assert not [r for r in records(base) if r['kind'] == 'http' and r['request']
                and r['request']['method'] == 'PUT']
    assert page.errors == [], page.errors


@pytest.mark.timeout(120)
def test_a_name_already_there_is_never_replaced_by_accident_and_replace_is_a_choice(
        page, site, tmp_path):
    """The page sends If-None-Match: *: a file of the same name is left as it is and the
    412 said in words, with Replace offered; Replace sends If-Match: the ETag of the
    file the person was told of, so a file changed meanwhile is not replaced either."""
    base, uploads, _ = site
    uploads.mkdir(parents=True, exist_ok=True)
    (uploads / 'same.txt').write_bytes(b'theirs')
    mine = tmp_path / 'same.txt'
    mine.write_bytes(b'mine, newer')
    load(page, base)
    page.set_input_files('#pick', str(mine))
    line = page.locator('#transfers p', has_text='same.txt')
    line.locator('.error', has_text='already there (412)').wait_for()
    assert line.locator('.error').inner_text() == (
        'not stored: a file of this name is already there (412); it was left as it is')
    assert (uploads / 'same.txt').read_bytes() == b'theirs'
    assert line.locator('progress').count() == 0
    assert not [r for r in records(base) if r['kind'] == 'http' and r['request']
                and r['request']['method'] == 'PATCH']      # no byte sent
    # Changed meanwhile: Replace names the version it was told of, and is refused too.
    (uploads / 'same.txt').write_bytes(b'theirs, changed')
    line.get_by_role('button', name='Replace same.txt with the file you chose').click()
    page.locator('#transfers p .error', has_text='changed since you chose Replace').wait_for()
    assert (uploads / 'same.txt').read_bytes() == b'theirs, changed'
    # Chosen again, on what is there now: replaced.
    page.locator('#transfers p').first.get_by_role(
        'button', name='Replace same.txt with the file you chose').click()
    page.locator('#transfers p', has_text='stored (200)').wait_for()
    assert (uploads / 'same.txt').read_bytes() == b'mine, newer'
    assert [e for e in page.errors if 'status of 412' not in e] == [], page.errors


@pytest.mark.timeout(120)
@pytest.mark.parametrize('screen', ['desktop', 'phone'])
def test_names_of_255_bytes_wrap_in_their_column_and_nothing_scrolls_sideways(
        browser, site, screen):
    """A name is one word of up to 255 bytes: in the rows, the breadcrumb and a Delete's
    question it wraps; the sizes, "folder" and the buttons stay whole, never cut into
    letters; the page never scrolls sideways."""
    base, uploads, _ = site
    long_folder, long_file = 'D' * 200, 'L' * 250 + '.txt'
    (uploads / long_folder).mkdir(parents=True)
    (uploads / long_folder / long_file).write_bytes(b'x' * 12345)
    (uploads / long_folder / 'short.txt').write_bytes(b'y')
    context, page = open_page(browser, {'width': 360, 'height': 800} if screen == 'phone'
                              else DESKTOP)
    try:
        page.goto(f'{base}/#folder={long_folder}%2F')
        row = page.locator('#stored tr', has_text='.txt').first
        row.wait_for()
        page.get_by_role('button', name=f'Delete {long_file}').click()
        page.get_by_role('button', name=f'Yes, delete {long_file}').wait_for()
        assert page.evaluate('document.scrollingElement.scrollWidth') <= page.evaluate(
            'innerWidth')
        # Each size, "folder", heading and button is one line of text.
        lines = page.locator('#stored td:nth-child(2), #stored button, #stored th:nth-child(-n+2)').evaluate_all(
            '''(cells) => cells.map((cell) => {
                 const text = document.createRange();
                 text.selectNodeContents(cell);
                 const tops = new Set([...text.getClientRects()].map((r) => Math.round(r.top)));
                 return [cell.textContent, tops.size]; })''')
        assert len(lines) >= 7 and all(count == 1 for _, count in lines), lines
        # The name's column takes the room: the widest.
        widths = row.locator('td').evaluate_all(
            '(cells) => cells.map((cell) => cell.getBoundingClientRect().width)')
        assert widths[0] > max(widths[1:]), widths
        save(page, f'long-names-{screen}.png')
        assert page.errors == [], page.errors
    finally:
        context.close()


# -- a second review: restarts, the token, many files, the keyboard, a CSP ---------------

def throttled(page, upload, latency=0):
    """Chromium's own throttle on this page's uploads (bytes/s; -1: none) and latency
    added to each request (ms)."""
    session = page.context.new_cdp_session(page)
    session.send('Network.enable')
    session.send('Network.emulateNetworkConditions', {
        'offline': False, 'latency': latency, 'downloadThroughput': -1,
        'uploadThroughput': upload})


def sending(page, name):
    """Wait until ``name``'s bar has moved and not ended."""
    page.wait_for_function("(name) => [...document.querySelectorAll('#transfers p')].some("
                           "(p) => p.textContent.startsWith(name + ' ') && (bar => bar && "
                           "bar.value > 0 && bar.value < bar.max)(p.querySelector('progress')))",
                           arg=name)


def wait_out(page, line, seconds):
    """Let ``seconds`` of the page's clock (installed) pass, a retry's wait at a time,
    while the server is away: each wait is said, then skipped."""
    waited = 0
    while waited < seconds:
        line.locator('text=/retrying in \\d+(\\.\\d+)? s/').wait_for()
        assert line.get_by_role('button', name=re.compile('^Cancel upload')).is_enabled()
        said = line.inner_text()
        delay = float(re.search(r'retrying in (\d+(?:\.\d+)?) s', said).group(1))
        page.evaluate("(line) => line.querySelector('span').textContent = 'skipped'",
                      line.element_handle())
        page.clock.fast_forward(int(delay * 1000))
        waited += delay
    return said


@pytest.mark.timeout(120)
def test_an_upload_outlives_a_server_restart_and_gives_up_only_after_minutes(
        page, minihttp, tmp_path):
    """Stopped mid-PATCH (by PID) and started again a while later on the same port and
    uploads folder: the page waits it out (saying so, Cancel there all along) and
    finishes the same bytes.  The page's clock is Playwright's: half a minute of
    retries passes in a moment (the old page gave up after 5 tries, ~15 s)."""
    uploads = tmp_path / 'uploads'
    options = ('--block-port', free_port(), '--uploads', uploads, '--max-upload', '64M',
               '--grace', '0', '--quiet')
    server = minihttp('serve', '--port', 0, *options, listening=HTTP_LISTENING)
    port = server.port
    data = os.urandom(3 << 20)
    picked = tmp_path / 'restarted.bin'
    picked.write_bytes(data)
    page.clock.install()
    load(page, f'http://127.0.0.1:{port}')
    throttled(page, 512 << 10)
    page.set_input_files('#pick', str(picked))
    sending(page, 'restarted.bin')
    server.stop()
    line = page.locator('#transfers p', has_text='restarted.bin')
    said = wait_out(page, line, 40)
    assert 'server unreachable, retrying in 8 s (it held' in said, said
    assert page.locator('#uploads-said').inner_text().startswith('restarted.bin: ')
    again = minihttp('serve', '--port', port, *options, listening=HTTP_LISTENING)
    assert again.port == port
    throttled(page, -1)
    line.locator('text=/retrying in/').wait_for()
    page.clock.fast_forward(8000)
    line.locator('text=stored (201)').wait_for()
    assert sha256((uploads / 'restarted.bin').read_bytes()) == sha256(data)
    assert 'resumed at' in line.inner_text()
    again.stop()

    # Away for good: after two minutes with no byte moving, the page says so and stops.
    gone = tmp_path / 'gone.bin'
    gone.write_bytes(data)
    third = minihttp('serve', '--port', port, *options, listening=HTTP_LISTENING)
    throttled(page, 512 << 10)
    page.set_input_files('#pick', str(gone))
    sending(page, 'gone.bin')
    third.stop()
    line = page.locator('#transfers p', has_text='gone.bin')
    with pytest.raises(sync_api.TimeoutError):
        page.set_default_timeout(3000)
        wait_out(page, line, 200)
    page.set_default_timeout(WAIT * 1000)
    said = line.locator('.error').inner_text()
    assert said.startswith('not stored: the server was unreachable for 2 minutes'), said
    assert line.get_by_role('button').count() == 0


@pytest.mark.timeout(120)
def test_with_a_token_every_write_carries_it_and_a_401_is_said_never_retried(
        page, minihttp, tmp_path):
    uploads = tmp_path / 'uploads'
    server = minihttp('serve', '--port', 0, '--block-port', free_port(), '--uploads', uploads,
                      '--max-upload', '64M', '--token', 'sesame', '--quiet',
                      listening=HTTP_LISTENING)
    base = f'http://127.0.0.1:{server.port}'
    load(page, base)
    data = os.urandom(300_000)
    picked = tmp_path / 'guarded.bin'
    picked.write_bytes(data)
    for typed in ('', 'wrong'):
        page.get_by_label('Token').fill(typed)
        page.set_input_files('#pick', str(picked))
        refused = page.locator('#transfers p').first.locator('.error')
        refused.wait_for()
        assert refused.inner_text().startswith('not stored: 401'), refused.inner_text()
        assert 'Bearer' in page.locator('#uploads-said').inner_text()
    asked = [r['request']['method'] for r in records(base) if r['kind'] == 'http'
             and r['request'] and not r['request']['target'].startswith(('/_framing', '/?'))
             and '_page_' not in r['request']['target'] and r['request']['method'] != 'GET']
    assert asked == ['PUT', 'PUT'], asked            # no retry, no PATCH, no HEAD
    page.get_by_label('New folder in this one').fill('kept')
    page.get_by_role('button', name='New folder').click()
    page.locator('#uploads-said.error', has_text='kept/ was not made: 401').wait_for()

    # The token typed: creation, PATCH, folder PUT and DELETE, the upload's DELETE all pass.
    page.get_by_label('Token').fill('sesame')
    page.get_by_role('button', name='New folder').click()
    page.locator('#uploads-said', has_text='Made the folder kept/.').wait_for()
    page.set_input_files('#pick', str(picked))
    page.locator('#transfers p').first.locator('text=stored (201)').wait_for()
    assert (uploads / 'guarded.bin').read_bytes() == data
    row = page.locator('#stored tr', has_text='kept/')
    row.get_by_role('button', name='Delete kept/').click()
    row.get_by_role('button', name='Yes, delete kept/').click()
    page.locator('#uploads-said', has_text='Deleted kept/.').wait_for()
    assert not (uploads / 'kept').exists()
    throttled(page, 65536)
    slow = tmp_path / 'slow.bin'
    slow.write_bytes(os.urandom(1 << 20))
    page.set_input_files('#pick', str(slow))
    sending(page, 'slow.bin')
    page.get_by_role('button', name='Cancel upload of slow.bin').click()
    page.locator('#transfers p', has_text='slow.bin').locator(
        'text=cancelled: the server keeps nothing of it').wait_for()
    assert visible(uploads) == ['guarded.bin']
    assert [e for e in page.errors if 'status of 401' not in e] == [], page.errors


@pytest.mark.timeout(120)
def test_a_folder_of_200_files_is_counted_cancellable_and_listed_now_and_then(
        page, site, tmp_path):
    base, uploads, _ = site
    many = tmp_path / 'many'
    many.mkdir()
    for n in range(200):
        (many / f'{n:03}.txt').write_bytes(b'%d\n' % n * 50)
    load(page, base)
    listings = []
    page.on('request', lambda request: re.search(r'/uploads/\?_page_', request.url)
            and listings.append(request.url))
    throttled(page, -1, latency=30)       # each request a little late: a burst that lasts
    page.set_input_files('#pick-folder', str(many))
    # The last in the queue (lines are newest first) is cancelled before it began.
    last = page.locator('#transfers p').first
    name = last.inner_text().split(' ')[0]
    last.get_by_role('button', name=f'Cancel upload of {name}').click()
    last.locator('text=cancelled before it began').wait_for()
    said = page.locator('#uploads-said')
    said.locator('text=/^\\d+ of 200 stored, 1 cancelled…$/').wait_for()
    # Listed while the others go on, not only at the end.
    page.wait_for_function("() => document.querySelector('#stored').innerText.includes('many/')"
                           " && document.querySelector('#uploads-said').textContent"
                           ".endsWith('…')")
    said.locator('text=199 of 200 stored, 1 cancelled.').wait_for()
    assert len(visible(uploads / 'many')) == 199
    assert not (uploads / name).exists()
    page.locator('#stored a', has_text='many/').wait_for()
    assert 2 <= len(listings) <= 20, len(listings)
    # The folder's list stays in reach: the lines scroll in their own box.
    tops = page.evaluate("['transfers', 'stored'].map((id) => "
                         "document.getElementById(id).getBoundingClientRect().top)")
    assert tops[1] - tops[0] < 600, tops
    assert page.errors == [], page.errors


def tab_to(page, accessible, limit=80):
    """Press Tab until the focused element's text or label is ``accessible``."""
    for _ in range(limit):
        page.keyboard.press('Tab')
        if page.evaluate("(e => e.getAttribute('aria-label') || e.textContent.trim())"
                         "(document.activeElement)") == accessible:
            return
    raise AssertionError(f'{accessible!r} not reached by Tab')


@pytest.mark.timeout(120)
def test_folders_by_keyboard_alone_and_back_and_forward(page, site):
    base, uploads, _ = site
    (uploads / 'k' / 'inner').mkdir(parents=True)
    (uploads / 'k' / 'note.txt').write_bytes(b'note')
    load(page, base)
    page.locator('#stored a', has_text='k/').wait_for()
    with page.expect_file_chooser() as chooser:
        tab_to(page, 'Choose a folder to upload')
        page.keyboard.press('Enter')
    assert chooser.value.element.get_attribute('id') == 'pick-folder'
    tab_to(page, 'Open folder k')
    page.keyboard.press('Enter')
    page.locator('#stored tr', has_text='note.txt').wait_for()
    # Focus stays where the person is: on the folder now shown, not back at the top.
    assert page.evaluate("document.activeElement.getAttribute('aria-current')") == 'location'
    reached = []
    for _ in range(12):
        page.keyboard.press('Tab')
        reached.append(page.evaluate("(e => e.getAttribute('aria-label') || "
                                     "e.textContent.trim())(document.activeElement)"))
    for control in ('Download k as zip', 'Download k as tar', 'Up one folder',
                    'Open folder inner', 'Delete inner/', 'Delete note.txt'):
        assert control in reached, (control, reached)
    tab_to(page, 'Delete note.txt')
    page.keyboard.press('Space')
    page.keyboard.press('Enter')                 # on Keep, which took the focus
    assert (uploads / 'k' / 'note.txt').exists()
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == (
        'Delete note.txt')
    page.keyboard.press('Enter')
    page.keyboard.press('Shift+Tab')             # Yes, delete
    page.keyboard.press('Enter')
    page.locator('#uploads-said', has_text='Deleted note.txt.').wait_for()
    page.locator('#stored tr', has_text='note.txt').wait_for(state='detached')
    assert page.evaluate("document.activeElement.getAttribute('aria-current')") == 'location'
    tab_to(page, 'Open folder inner')
    page.keyboard.press('Enter')
    page.locator('#where', has_text='inner').wait_for()
    page.go_back()
    page.locator('#stored a', has_text='inner/').wait_for()
    assert page.locator('#where').inner_text() == 'Folder: uploads / k'
    page.go_back()
    page.locator('#stored a', has_text='k/').wait_for()
    page.go_forward()
    page.locator('#stored a', has_text='inner/').wait_for()
    assert page.errors == [], page.errors


@pytest.mark.timeout(60)
def test_the_pages_content_security_policy_runs_no_inline_script(page, site):
    base, uploads, _ = site
    violations = []
    page.on('console', lambda message: 'Content Security Policy' in message.text
            and violations.append(message.text))
    load(page, base)
    page.locator('#where a').first.wait_for()
    # Markup smuggled in (as a hostile name would be, were it ever drawn as HTML): its
    # inline handler is refused, and says so.
    page.evaluate("""() => { const held = document.createElement('div');
      held.innerHTML = '<img src="x" onerror="window.ran = true">';
      document.body.append(held); }""")
    wait_until(lambda: violations, 'the inline handler refused')
    assert page.evaluate('window.ran') is None
    assert 'script-src' in violations[0] or 'default-src' in violations[0]
    page.errors.clear()
