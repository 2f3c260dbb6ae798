"""The demo page in a real browser: Debian's Chromium, driven by Playwright.

The page is what a newcomer sees first: these tests use it as a person
would (load it, upload, download, delete, watch the framing log while curl
uploads from a terminal) and save a screenshot of it under tests/artifacts/
for a person to look at.  Playwright launches /usr/bin/chromium and never
downloads a browser; without Chromium the tests skip, saying why (.ci/run
installs it).
"""

import base64
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
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


@pytest.fixture
def page(browser):
    context = browser.new_context(accept_downloads=True, viewport={'width': 1200, 'height': 900})
    page = context.new_page()
    page.set_default_timeout(WAIT * 1000)
    page.errors = []
    page.on('console', lambda message: message.type == 'error' and page.errors.append(
        message.text))
    page.on('pageerror', lambda error: page.errors.append(str(error)))
    yield page
    context.close()


@pytest.fixture
def site(minihttp, tmp_path):
    """A server on free ports with its own upload directory; (base URL, uploads, process)."""
    uploads = tmp_path / 'uploads'
    server = minihttp('serve', '--port', 0, '--block-port', free_port(), '--uploads', uploads,
                      '--max-upload', '1M', '--quiet', listening=HTTP_LISTENING)
    return f'http://127.0.0.1:{server.port}', uploads, server


def records(base):
    return requests.get(f'{base}/_framing', timeout=WAIT).json()['records']


@pytest.mark.timeout(120)
def test_the_page_uploads_lists_downloads_deletes_and_draws_live_framing(page, site, tmp_path):
    base, uploads, _ = site
    page.goto(base + '/')
    page.wait_for_selector('.record')                 # the live log, fed by the event stream
    assert page.locator('#commands').inner_text().count(base[len('http://'):]) >= 4
    assert page.errors == [], page.errors
    # The body idea: an echo sent from the page, drawn with its Content-Length.
    page.click('#send')
    assert page.locator('#idea-body .length').first.inner_text() == 'content-length 30'

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

    # A chunked upload by curl in a terminal: its record appears, chunk by chunk.
    sent = tmp_path / 'chunked.bin'
    sent.write_bytes(os.urandom(200_000))
    subprocess.run(['curl', '-sS', '--noproxy', '*', '-o', os.devnull, '-T', str(sent),
                    '-H', 'Transfer-Encoding: chunked', f'{base}/uploads/chunked.bin'],
                   check=True, timeout=WAIT)
    record, = [r for r in records(base) if r['kind'] == 'http'
               and r['request']['target'] == '/uploads/chunked.bin']
    chunks = record['request']['body']['chunks']
    entry = page.locator(f'.record[data-id="{record["id"]}"]')
    entry.wait_for()
    assert f'body chunked: {chunks} chunks, 200000 B' in entry.inner_text()
    assert entry.locator('.row').first.locator('.chunk').count() == min(chunks, 64)

    # Delete through the page.
    row.locator('button', has_text='Delete').click()
    row.wait_for(state='detached')
    assert sorted(os.listdir(uploads)) == ['chunked.bin']

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / 'page.png'), full_page=True)


@pytest.mark.timeout(120)
def test_a_refused_upload_is_shown_in_words_and_a_cancelled_one_leaves_nothing(
        page, site, tmp_path):
    base, uploads, _ = site
    page.goto(base + '/')
    page.wait_for_selector('.record')
    big = tmp_path / 'big.bin'
    big.write_bytes(os.urandom(2 << 20))      # over --max-upload 1M
    page.set_input_files('#pick', str(big))
    refusal = page.locator('#transfers .error')
    refusal.wait_for()
    assert refusal.inner_text() == ('413: 413 Request Entity Too Large: upload: 2097152 '
                                    'bytes, more than 1048576 bytes')
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
    line.locator('button', has_text='Cancel').click()
    line.locator('text=cancelled: the server keeps nothing of it').wait_for()
    wait_until(lambda: os.listdir(uploads) == [], 'the aborted upload discarded')
    page.wait_for_function("() => !document.querySelector('#stored').innerText"
                           ".includes('slow.bin')")


@pytest.mark.timeout(120)
def test_the_page_draws_a_chunked_echos_trailer_section_both_ways(page, site):
    """Trailers are what browsers never send: a raw socket sends them, the page draws them,
    after the last chunk and before the empty line that ends the message."""
    base, _, server = site
    page.goto(base + '/')
    page.wait_for_selector('.record')
    digest = f'sha-256=:{base64.b64encode(hashlib.sha256(b"a" * 300 + b"b").digest()).decode()}:'
    reply = exchange(server.port, 'PUT', '/echo', ['Transfer-Encoding: chunked'],
                     chunked(b'a' * 300, b'b', trailers=[f'Content-Digest: {digest}',
                                                         'X-Secret: s3cret']))
    assert reply.status == 200 and reply.trailers[0] == ('content-digest', digest)
    wait_until(lambda: [r for r in records(base) if r['kind'] == 'http'
                        and r['request']['target'] == '/echo'], 'the echo recorded')
    record, = [r for r in records(base) if r['kind'] == 'http'
               and r['request']['target'] == '/echo']
    entry = page.locator(f'.record[data-id="{record["id"]}"]')
    entry.wait_for()
    request, response = (entry.locator('.row').nth(n).locator('.box').all_inner_texts()
                         for n in (0, 1))
    # As they travel: chunk sizes in hex, the last chunk, each field line (a value other
    # than a digest shown as *, as in the record), then the empty line.
    section = [r'0\r\n', rf'Content-Digest: {digest}\r\n', r'X-Secret: *\r\n', r'\r\n']
    assert request[-6:] == [r'12c\r\n', r'1\r\n', *section]
    assert response[-4:] == section
    assert response.count('chunk') == record['response']['chunks'] > 0
    assert 's3cret' not in entry.inner_text()
    assert page.errors == [], page.errors
    ARTIFACTS.mkdir(exist_ok=True)
    entry.screenshot(path=str(ARTIFACTS / 'trailers.png'))
