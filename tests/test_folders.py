"""Folders under /uploads/: names with "/", made, listed, removed; conditional writes.

Every file-system step below the uploads folder is taken relative to an open
folder with O_NOFOLLOW, so a symbolic link planted there (pointing outside)
takes no PUT, GET, DELETE, form or listing outside.  Conditional PUTs are
decided as the file takes its name: two racing If-None-Match: * get one 201
and one 412.  Wire formats are read with h11, files written by real curl.
"""

import json
import os
import shutil
import stat
import threading

import pytest
import requests

from minihttp.limits import MAX_FOLDER_DEPTH, MAX_UPLOAD_PATH
from minihttp.uploads import check_name
from minihttp.errors import HTTPError
from support import (WAIT, RawClient, assert_one_line_reason, curl, exchange, h11_client,
                     h11_read, multipart_body, receiver, request_bytes, temps, wait_until)

pytestmark = pytest.mark.timeout(60)

CURL = shutil.which('curl')
JSON = ['Accept: application/json']


@pytest.fixture
def site(in_process, tmp_path):
    """The in-process server, and a folder outside the uploads with a secret in it."""
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'secret.txt').write_bytes(b'secret\n')
    in_process.outside = outside
    return in_process


def ask(site, method, target, headers=(), body=b''):
    return exchange(site.port, method, target, headers, body)


def listing(site, target):
    reply = ask(site, 'GET', target, JSON)
    assert reply.status == 200, reply.body
    return json.loads(reply.body)


def names(found):
    return [entry['name'] for entry in found]


# -- names --------------------------------------------------------------------------------

def test_a_name_may_hold_folders_each_segment_checked_and_composed():
    assert check_name('a/b/c.txt') == 'a/b/c.txt'
    assert check_name('re\u0301sume\u0301/cafe\u0301.txt') == 'r\u00e9sum\u00e9/caf\u00e9.txt'
    for bad in ('a//b', '/a', 'a/', 'a/../b', 'a/./b', '..', 'a/.git/config', 'a\\b',
                'a/x\u202e.txt', 'a/b\u00a0\u200b/c', 'a/\x01/b'):
        with pytest.raises(HTTPError) as caught:
            check_name(bad)
        assert caught.value.status == 400 and 'name' in caught.value.reason, bad


def test_depth_and_length_are_bounded():
    deepest = '/'.join(['d'] * MAX_FOLDER_DEPTH + ['f'])
    assert check_name(deepest) == deepest
    with pytest.raises(HTTPError, match='deep'):
        check_name('d/' + deepest)
    longest = '/'.join(['x' * 200] * (MAX_UPLOAD_PATH // 201) + ['y' * (MAX_UPLOAD_PATH % 201)])
    assert len(longest) == MAX_UPLOAD_PATH and check_name(longest) == longest
    with pytest.raises(HTTPError, match=str(MAX_UPLOAD_PATH)):
        check_name(longest + 'y')
    with pytest.raises(HTTPError, match='255'):
        check_name('a/' + 'x' * 256)


# -- files in folders ---------------------------------------------------------------------

def test_put_makes_the_missing_folders_and_get_serves_the_file_sandboxed(site):
    reply = ask(site, 'PUT', '/uploads/a/b/c%20d.html', body=b'<p>hi</p>')
    assert reply.status == 201
    assert reply.headers['location'] == '/uploads/a/b/c%20d.html'
    assert (site.directory / 'a' / 'b' / 'c d.html').read_bytes() == b'<p>hi</p>'
    got = ask(site, 'GET', '/uploads/a/b/c%20d.html')
    assert got.status == 200 and got.body == b'<p>hi</p>'
    assert got.headers['content-security-policy'] == 'sandbox'
    assert got.headers['x-content-type-options'] == 'nosniff'
    assert got.headers['etag'] == reply.headers['etag']
    # A folder named without its "/" is redirected to it, as a directory is.
    moved = ask(site, 'GET', '/uploads/a/b?x=1')
    assert moved.status == 301 and moved.headers['location'] == '/uploads/a/b/?x=1'


def test_an_upload_is_invisible_until_complete_and_makes_no_folder_before(site):
    with RawClient(site.port) as client:
        client.send(request_bytes('PUT', '/uploads/new/deep/file.bin',
                                  ['Content-Length: 100000'], b'x' * 1000))
        wait_until(lambda: temps(site.directory), 'the upload started')
        # The temporary file is in the uploads folder itself (where the sweeps look),
        # and the folders it goes to are made only when it is whole.
        assert not (site.directory / 'new').exists()
        assert listing(site, '/uploads/')['folders'] == []
        client.send(b'x' * 99000)
        assert client.reply('PUT').status == 201
    assert (site.directory / 'new' / 'deep' / 'file.bin').stat().st_size == 100000
    assert temps(site.directory) == []


def test_a_file_on_the_way_or_a_folder_by_the_name_is_409_before_the_body(site):
    assert ask(site, 'PUT', '/uploads/f.txt', body=b'file').status == 201
    assert ask(site, 'PUT', '/uploads/dir/', body=b'').status == 201
    for target, why in (('/uploads/f.txt/x', "'f.txt' is a file"),
                        ('/uploads/f.txt/y/z', "'f.txt' is a file"),
                        ('/uploads/dir', "'dir' is a folder")):
        with RawClient(site.port) as client:
            # Refused before 100 Continue: the client never sends the body.
            client.send(request_bytes('PUT', target, ['Expect: 100-continue',
                                                      'Content-Length: 5']))
            reply = client.reply('PUT')
        assert reply.status == 409 and reply.informational == [], target
        assert why in reply.body.decode(), reply.body
    assert (site.directory / 'f.txt').read_bytes() == b'file'
    assert sorted(os.listdir(site.directory)) == ['dir', 'f.txt']


def test_delete_a_file_in_a_folder_and_what_is_not_one(site):
    assert ask(site, 'PUT', '/uploads/a/b.txt', body=b'b').status == 201
    assert ask(site, 'DELETE', '/uploads/a').status == 409         # a folder: a/
    assert ask(site, 'DELETE', '/uploads/a/missing').status == 404
    assert ask(site, 'DELETE', '/uploads/missing/b.txt').status == 404
    assert ask(site, 'DELETE', '/uploads/a/b.txt').status == 204
    assert os.listdir(site.directory / 'a') == []


# -- folders ------------------------------------------------------------------------------

def test_put_a_folder_makes_it_and_its_parents_then_200(site):
    made = ask(site, 'PUT', '/uploads/x/y/z/')
    assert made.status == 201 and made.headers['location'] == '/uploads/x/y/z/'
    assert json.loads(made.body) == {'folder': 'x/y/z/'}
    assert (site.directory / 'x' / 'y' / 'z').is_dir()
    assert ask(site, 'PUT', '/uploads/x/y/z/').status == 200
    assert ask(site, 'PUT', '/uploads/x/', body=b'data').status == 400
    assert ask(site, 'PUT', '/uploads/x/y/f', body=b'f').status == 201
    assert ask(site, 'PUT', '/uploads/x/y/f/').status == 409
    assert ask(site, 'PUT', '/uploads/x/y/f/g/').status == 409
    assert ask(site, 'PUT', '/uploads/').status == 405


def test_delete_a_folder_empty_204_not_empty_409_with_a_reason(site):
    assert ask(site, 'PUT', '/uploads/full/inner/').status == 201
    with RawClient(site.port) as client:
        client.send(request_bytes('DELETE', '/uploads/full/'))
        reply = client.reply('DELETE')
    assert reply.status == 409
    assert reply.body == b"409 Conflict: folder 'full' is not empty\n"
    assert ask(site, 'DELETE', '/uploads/full/inner/').status == 204
    assert ask(site, 'DELETE', '/uploads/full/').status == 204
    assert ask(site, 'DELETE', '/uploads/full/').status == 404
    assert ask(site, 'PUT', '/uploads/plain', body=b'p').status == 201
    assert ask(site, 'DELETE', '/uploads/plain/').status == 404      # a file, not a folder
    assert ask(site, 'DELETE', '/uploads/').status == 405
    assert os.listdir(site.directory) == ['plain']


def test_listings_per_folder_as_json_and_html(site):
    for target, body in (('/uploads/top.txt', b'1'), ('/uploads/a/one.txt', b'22'),
                         ('/uploads/a/b/two.txt', b'333'), ('/uploads/a/c/', b'')):
        assert ask(site, 'PUT', target, body=body).status == 201
    (site.directory / 'a' / '.hidden').write_bytes(b'h')
    root = listing(site, '/uploads/')
    assert root['folder'] == '' and names(root['folders']) == ['a']
    assert [(f['name'], f['bytes']) for f in root['files']] == [('top.txt', 1)]
    inner = listing(site, '/uploads/a/')
    assert inner['folder'] == 'a/'
    assert names(inner['folders']) == ['b', 'c'] and names(inner['files']) == ['one.txt']
    assert set(inner['folders'][0]) == {'name', 'modified'}
    assert set(inner['files'][0]) == {'name', 'bytes', 'modified'}
    assert listing(site, '/uploads/a/b/')['files'][0]['bytes'] == 3
    page = requests.get(site.url('/uploads/a/'), timeout=WAIT)
    assert page.headers['content-type'] == 'text/html; charset=utf-8'
    assert 'href="b/"' in page.text and 'href="one.txt"' in page.text
    assert '.hidden' not in page.text
    for missing in ('/uploads/nope/', '/uploads/top.txt/', '/uploads/.hidden/', '/uploads/a//'):
        assert ask(site, 'GET', missing, JSON).status == 404, missing


def test_a_listing_is_chunked_and_h11_reads_it(site):
    assert ask(site, 'PUT', '/uploads/f/g.txt', body=b'g').status == 201
    with RawClient(site.port) as client:
        client.sock.sendall(request_bytes('GET', '/uploads/f/', JSON))
        answer = h11_read(h11_client('GET'), receiver(client.sock))
        # And a 412, and a redirect, on the same connection: framed as h11 expects.
        client.sock.sendall(request_bytes('PUT', '/uploads/f/g.txt',
                                          ['If-None-Match: *', 'Content-Length: 1'], b'x'))
        refused = h11_read(h11_client('PUT'), receiver(client.sock))
        client.sock.sendall(request_bytes('GET', '/uploads/f'))
        moved = h11_read(h11_client('GET'), receiver(client.sock))
    assert answer.status == 200 and answer.headers['transfer-encoding'] == 'chunked'
    assert names(json.loads(answer.body)['files']) == ['g.txt']
    assert refused.status == 412 and refused.kept
    assert moved.status == 301 and moved.headers['location'] == '/uploads/f/'


def test_a_form_posted_to_a_folder_keeps_the_paths_a_browser_sends(site):
    boundary = 'folderboundary'
    body = multipart_body(boundary, [
        ('files', 'pics/2024/cat.jpg', b'cat'), ('files', 'pics/dog.jpg', b'dog')])
    reply = ask(site, 'POST', '/uploads/album/', [
        f'Content-Type: multipart/form-data; boundary={boundary}',
        f'Content-Length: {len(body)}'], body)
    assert reply.status == 200, reply.body
    assert sorted(s['name'] for s in json.loads(reply.body)['stored']) == [
        'album/pics/2024/cat.jpg', 'album/pics/dog.jpg']
    assert (site.directory / 'album' / 'pics' / '2024' / 'cat.jpg').read_bytes() == b'cat'
    for bad in ('../escape.txt', 'pics//x', '/abs.txt'):
        body = multipart_body(boundary, [('files', bad, b'x')])
        reply = ask(site, 'POST', '/uploads/album/', [
            f'Content-Type: multipart/form-data; boundary={boundary}',
            f'Content-Length: {len(body)}'], body)
        assert reply.status == 400, bad
    assert not (site.directory.parent / 'escape.txt').exists()


def test_a_listing_never_sent_still_closes_its_folder(site):
    assert ask(site, 'PUT', '/uploads/h/x.txt', body=b'x').status == 201
    ask(site, 'HEAD', '/uploads/h/')
    before = len(os.listdir('/proc/self/fd'))
    for _ in range(20):
        reply = ask(site, 'HEAD', '/uploads/h/', JSON)
        assert reply.status == 200 and reply.body == b''
    wait_until(lambda: len(os.listdir('/proc/self/fd')) <= before,
               'the folders opened for HEAD closed')


# -- conditional writes -------------------------------------------------------------------

def test_if_none_match_star_never_replaces(site):
    assert ask(site, 'PUT', '/uploads/c/once.txt', ['If-None-Match: *'], b'first').status == 201
    refused = ask(site, 'PUT', '/uploads/c/once.txt', ['If-None-Match: *'], b'second')
    assert refused.status == 412 and refused.headers['etag']
    assert_one_line_reason(refused)
    assert b"'c/once.txt' already exists (If-None-Match: *)" in refused.body
    assert (site.directory / 'c' / 'once.txt').read_bytes() == b'first'
    assert ask(site, 'PUT', '/uploads/c/', ['If-None-Match: *']).status == 412   # a folder PUT
    assert ask(site, 'PUT', '/uploads/c/d/', ['If-None-Match: *']).status == 201


def test_if_match_refuses_a_lost_update(site):
    first = ask(site, 'PUT', '/uploads/doc.txt', body=b'v1')
    etag = first.headers['etag']
    assert ask(site, 'GET', '/uploads/doc.txt').headers['etag'] == etag
    second = ask(site, 'PUT', '/uploads/doc.txt', [f'If-Match: {etag}'], b'v2')
    assert second.status == 200 and second.headers['etag'] != etag
    stale = ask(site, 'PUT', '/uploads/doc.txt', [f'If-Match: {etag}'], b'v3 from a stale copy')
    assert stale.status == 412 and stale.headers['etag'] == second.headers['etag']
    assert b'not an ETag If-Match names' in stale.body
    assert (site.directory / 'doc.txt').read_bytes() == b'v2'
    assert ask(site, 'PUT', '/uploads/new.txt', ['If-Match: *'], b'x').status == 412
    assert ask(site, 'PUT', '/uploads/doc.txt', ['If-Match: *'], b'v4').status == 200
    assert ask(site, 'DELETE', '/uploads/doc.txt', [f'If-Match: {etag}']).status == 412
    current = ask(site, 'GET', '/uploads/doc.txt').headers['etag']
    assert ask(site, 'DELETE', '/uploads/doc.txt', [f'If-Match: {current}']).status == 204


def race(site, target, fields, bodies):
    """Two PUTs to ``target``, each past its precondition check and its body all but
    received (both temporaries exist), then finished together: their statuses."""
    clients = [RawClient(site.port) for _ in bodies]
    try:
        for client, body in zip(clients, bodies):
            client.send(request_bytes('PUT', target, [*fields, f'Content-Length: {len(body)}'],
                                      body[:-1]))
        wait_until(lambda: len(temps(site.directory)) == len(bodies), 'both uploads began')
        go = threading.Barrier(len(bodies))
        statuses = [None] * len(bodies)

        def finish(n):
            go.wait(WAIT)
            clients[n].send(bodies[n][-1:])
            statuses[n] = clients[n].reply('PUT').status
        threads = [threading.Thread(target=finish, args=(n,)) for n in range(len(bodies))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        return statuses
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize('attempt', range(3))
def test_two_racing_if_none_match_star_puts_one_201_one_412(site, attempt):
    bodies = [b'A' * 50_000, b'B' * 50_000]
    statuses = race(site, f'/uploads/r{attempt}/same.bin', ['If-None-Match: *'], bodies)
    assert sorted(statuses) == [201, 412]
    winner = bodies[statuses.index(201)]
    assert (site.directory / f'r{attempt}' / 'same.bin').read_bytes() == winner
    assert temps(site.directory) == []


def test_two_racing_if_match_puts_one_200_one_412(site):
    etag = ask(site, 'PUT', '/uploads/shared.txt', body=b'v1').headers['etag']
    bodies = [b'A' * 50_000, b'B' * 50_000]
    statuses = race(site, '/uploads/shared.txt', [f'If-Match: {etag}'], bodies)
    assert sorted(statuses) == [200, 412]
    assert (site.directory / 'shared.txt').read_bytes() == bodies[statuses.index(200)]


# -- symbolic links never lead out --------------------------------------------------------

def plant(site):
    """Links under the uploads to the folder outside, to its secret, and deeper down."""
    (site.directory / 'out').symlink_to(site.outside)
    (site.directory / 'secret.txt').symlink_to(site.outside / 'secret.txt')
    (site.directory / 'a').mkdir()
    (site.directory / 'a' / 'out').symlink_to(site.outside)


def outside_is_untouched(site):
    assert sorted(os.listdir(site.outside)) == ['secret.txt']
    assert (site.outside / 'secret.txt').read_bytes() == b'secret\n'


@pytest.mark.parametrize('via', ['out', 'a/out'])
def test_put_delete_and_get_through_a_planted_symlink_stay_inside(site, via):
    plant(site)
    for target in (f'/uploads/{via}/new.txt', f'/uploads/{via}/deeper/new.txt',
                   f'/uploads/{via}/secret.txt'):
        reply = ask(site, 'PUT', target, body=b'pwned')
        assert reply.status == 409 and 'symbolic link' in reply.body.decode(), target
    assert ask(site, 'PUT', f'/uploads/{via}/made/').status == 409
    for method in ('GET', 'HEAD', 'DELETE'):
        assert ask(site, method, f'/uploads/{via}/secret.txt').status == 404, method
    assert ask(site, 'DELETE', f'/uploads/{via}/').status == 404
    assert ask(site, 'GET', f'/uploads/{via}/').status == 404
    assert ask(site, 'GET', f'/uploads/{via}/', JSON).status == 404
    boundary = 'b'
    body = multipart_body(boundary, [('f', f'{via}/form.txt', b'pwned')])
    assert ask(site, 'POST', '/uploads/', [
        f'Content-Type: multipart/form-data; boundary={boundary}',
        f'Content-Length: {len(body)}'], body).status == 409
    assert ask(site, 'POST', f'/uploads/{via}/', [
        f'Content-Type: multipart/form-data; boundary={boundary}',
        f'Content-Length: {len(body)}'], body).status == 409
    outside_is_untouched(site)
    assert temps(site.directory) == []


def test_a_planted_symlink_is_never_listed_and_is_replaced_not_followed(site):
    plant(site)
    root = listing(site, '/uploads/')
    assert names(root['folders']) == ['a'] and root['files'] == []
    assert listing(site, '/uploads/a/') == {'folder': 'a/', 'folders': [], 'files': []}
    page = requests.get(site.url('/uploads/'), timeout=WAIT).text
    assert 'out' not in page and 'secret' not in page
    assert ask(site, 'GET', '/uploads/secret.txt').status == 404
    # A PUT to the link's own name replaces the link (rename never follows the target's
    # name), and a DELETE of it removes the link: the file outside is never reached.
    assert ask(site, 'PUT', '/uploads/secret.txt', body=b'mine').status == 200
    assert not (site.directory / 'secret.txt').is_symlink()
    assert ask(site, 'DELETE', '/uploads/a/out').status == 204
    outside_is_untouched(site)


def test_a_symlink_swapped_in_for_a_folder_is_refused(site):
    assert ask(site, 'PUT', '/uploads/sw/ok.txt', body=b'ok').status == 201
    shutil.rmtree(site.directory / 'sw')
    (site.directory / 'sw').symlink_to(site.outside)
    assert ask(site, 'PUT', '/uploads/sw/ok.txt', body=b'again').status == 409
    assert ask(site, 'DELETE', '/uploads/sw/secret.txt').status == 404
    outside_is_untouched(site)


# -- bounds -------------------------------------------------------------------------------

def test_depth_bounded_over_http(site):
    deepest = '/'.join(['d'] * MAX_FOLDER_DEPTH)
    assert ask(site, 'PUT', f'/uploads/{deepest}/f', body=b'f').status == 201
    reply = ask(site, 'PUT', f'/uploads/{deepest}/d/f', body=b'f')
    assert reply.status == 400 and 'deep' in reply.body.decode()
    assert ask(site, 'PUT', f'/uploads/{deepest}/d/').status == 400


@pytest.mark.timeout(120)
def test_a_folder_of_100000_entries_is_listed_whole_while_the_loop_serves_others(site):
    big = site.directory / 'big'
    big.mkdir()
    count = 100_000
    for n in range(count):
        os.mknod(big / f'f{n:06d}', stat.S_IFREG | 0o644)
    with RawClient(site.port) as lister:
        lister.sock.sendall(request_bytes('GET', '/uploads/big/', JSON))
        # While that listing is made and sent, another client is answered.
        assert ask(site, 'GET', '/uploads/', JSON).status == 200
        reply = lister.reply('GET')
    assert reply.status == 200
    found = json.loads(reply.body)['files']
    assert len(found) == count and {f['name'] for f in found} == {
        f'f{n:06d}' for n in range(count)}


# -- curl -----------------------------------------------------------------------------------

@pytest.mark.skipif(CURL is None, reason='curl is not installed')
def test_curl_puts_into_folders_and_lists_them(site, tmp_path):
    payload = tmp_path / 'f.bin'
    payload.write_bytes(os.urandom(300_000))
    done = curl('-f', '-T', payload, site.url('/uploads/a/b/f.bin'))
    assert done.returncode == 0, done.stderr
    assert (site.directory / 'a' / 'b' / 'f.bin').read_bytes() == payload.read_bytes()
    again = curl('-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'If-None-Match: *',
                 '-T', payload, site.url('/uploads/a/b/f.bin'))
    assert again.stdout == b'412'
    listed = curl('-f', '-H', 'Accept: application/json', site.url('/uploads/a/b/'))
    assert names(json.loads(listed.stdout)['files']) == ['f.bin']
    made = curl('-f', '-X', 'PUT', site.url('/uploads/a/empty/'))
    assert made.returncode == 0 and json.loads(made.stdout) == {'folder': 'a/empty/'}
    gone = curl('-s', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'DELETE',
                site.url('/uploads/a/empty/'))
    assert gone.stdout == b'204'


# -- a folder picked in Chromium ------------------------------------------------------------

@pytest.mark.timeout(120)
def test_chromium_sends_a_picked_folder_with_its_paths_and_they_are_kept(site, tmp_path):
    """What Chromium sends for <input type=file webkitdirectory>: each file's part named
    by its webkitRelativePath ("tree/sub/deep.txt"), which the form keeps as folders."""
    sync_api = pytest.importorskip('playwright.sync_api', reason='playwright is not installed')
    chromium = shutil.which('chromium')
    if chromium is None:
        pytest.skip('chromium is not installed (apt-get install chromium)')
    picked = tmp_path / 'tree'
    (picked / 'sub').mkdir(parents=True)
    (picked / 'top.txt').write_bytes(b'top\n')
    (picked / 'sub' / 'deep.txt').write_bytes(b'deep\n')
    (site.directory.parent / 'root' / 'pick.html').write_text(
        '<!doctype html><form method="post" enctype="multipart/form-data" '
        'action="/uploads/picked/"><input type="file" name="files" webkitdirectory>'
        '<button>Send</button></form>')
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=[
            '--no-sandbox', '--disable-gpu', '--no-first-run',
            '--disable-background-networking', '--disable-component-update'])
        try:
            page = browser.new_page()
            page.set_default_timeout(WAIT * 1000)
            page.goto(site.url('/pick.html'))
            page.set_input_files('input', str(picked))
            with page.expect_navigation():
                page.click('button')
            assert 'Uploaded' in page.content()
        finally:
            browser.close()
    assert (site.directory / 'picked' / 'tree' / 'top.txt').read_bytes() == b'top\n'
    assert (site.directory / 'picked' / 'tree' / 'sub' / 'deep.txt').read_bytes() == b'deep\n'
