"""The HTTP server end to end, over raw sockets: persistence, pipelining, timeouts, logs, the process.

Every test talks bytes it chose to a real server (a `python -m minihttp serve`
process on a free port, or an EventLoop in this process when a test needs an
application of its own) and reads the answers with a small strict response
parser.  Nothing waits by sleeping: a test waits for a line, a byte, EOF or a
process exit, each with a deadline.
"""

import concurrent.futures
import contextlib
import errno
import http.client
import os
import re
import select
import signal
import socket
import threading
import time

import pytest

from minihttp import cli
from minihttp.cli import build_parser
from minihttp.responses import Response
from minihttp.records import describe
from minihttp.eventloop import EventLoop
from minihttp.server import HTTPServer
from support import (CLF, Client, HTTP_LISTENING, WAIT, children_of, chunked, framing_records,
                     get, post, read_chunked, run_minihttp, wait_until_refused)


# -- a strict little HTTP client ---------------------------------------------------


# -- persistence and pipelining (RFC 9112 section 9) -------------------------------

def test_pipelined_requests_in_one_send_are_answered_in_order(serve):
    server = serve()
    requests = [get('/headers', 'HTTP/1.1', 'X-N: 0'),
                post('/echo', b'first body'),
                get('/headers', 'HTTP/1.1', 'X-N: 2'),
                get('/', method='HEAD'),
                get('/echo', 'HTTP/1.1', 'Transfer-Encoding: chunked', method='PUT',
                    body=chunked(b'chunked ', b'second')),
                get('/headers', 'HTTP/1.1', 'X-N: 5')]
    with Client(server.port) as client:
        client.send(b''.join(requests))
        replies = [client.reply(method) for method in
                   ['GET', 'POST', 'GET', 'HEAD', 'PUT', 'GET']]
    assert [r.status for r in replies] == [200] * 6
    assert b'X-N: 0\n' in replies[0].body and b'X-N: 2\n' in replies[2].body
    assert replies[1].body == b'first body'
    assert replies[3].body == b'' and int(replies[3].get('content-length')) > 0
    assert replies[4].body == b'chunked second'
    assert replies[4].get('transfer-encoding') == 'chunked'
    assert b'X-N: 5\n' in replies[5].body
    assert not any(r.closes for r in replies)


def test_http10_without_keep_alive_closes(serve):
    with Client(serve().port) as client:
        reply = client.exchange(get('/', 'HTTP/1.0'))
        assert reply.status == 200 and reply.body.startswith(b'<!doctype html>')
        client.assert_closed_after(reply)


def test_http10_with_keep_alive_keeps_and_says_so(serve):
    with Client(serve().port) as client:
        for _ in range(3):
            reply = client.exchange(get('/', 'HTTP/1.0', 'Connection: keep-alive'))
            assert reply.status == 200 and not reply.closes
            # An HTTP/1.0 client keeps the connection only if the response says
            # keep-alive (RFC 9112 appendix C.2.2; RFC 2068 section 19.7.1).
            assert 'keep-alive' in reply.get('connection').lower()
        reply = client.exchange(get('/', 'HTTP/1.0'))
        client.assert_closed_after(reply)


def test_http11_keeps_by_default_and_connection_close_closes(serve):
    with Client(serve().port) as client:
        for _ in range(3):
            assert not client.exchange(get('/')).closes
        reply = client.exchange(get('/', 'HTTP/1.1', 'Connection: close'))
        assert reply.status == 200
        client.assert_closed_after(reply)


# Requests after which the server must close: each response says "Connection: close" first.
CLOSING = {
    'HTTP/1.0 default': (get('/', 'HTTP/1.0'), 200),
    'Connection: close': (get('/', 'HTTP/1.1', 'Connection: close'), 200),
    'close among other options': (get('/', 'HTTP/1.1', 'Connection: upgrade, Close'), 200),
    'no Host': (b'GET / HTTP/1.1\r\n\r\n', 400),
    'two Hosts': (get('/', 'HTTP/1.1', 'Host: other'), 400),
    'Content-Length and Transfer-Encoding': (
        post('/echo', b'abc', 'Transfer-Encoding: chunked'), 400),
    'Content-Length values differ': (post('/echo', b'abc', 'Content-Length: 4'), 400),
    'unknown transfer coding': (get('/echo', 'HTTP/1.1', 'Transfer-Encoding: gzip, chunked',
                                    method='POST', body=chunked(b'x')), 501),
    'HTTP/2.0': (b'GET / HTTP/2.0\r\nHost: localhost\r\n\r\n', 505),
    'bad chunk size': (get('/headers', 'HTTP/1.1', 'Transfer-Encoding: chunked', method='POST',
                           body=b'zz\r\nabc\r\n0\r\n\r\n'), 400),
    'unmet expectation': (post('/echo', b'abc', 'Expect: telepathy'), 417),
}


@pytest.mark.parametrize('request_bytes, status', CLOSING.values(), ids=CLOSING.keys())
def test_connection_close_is_sent_whenever_the_server_closes(serve, request_bytes, status):
    with Client(serve().port) as client:
        # A second request behind the first: it must not be answered.
        client.send(request_bytes + get('/'))
        reply = client.reply()
        assert reply.status == status, reply
        client.assert_closed_after(reply)


def test_a_body_that_breaks_during_its_echo_cuts_the_response_short(serve):
    with Client(serve().port) as client:
        client.send(get('/echo', 'HTTP/1.1', 'Transfer-Encoding: chunked', method='PUT')
                    + b'5\r\nfirst\r\nzz\r\n' + get('/'))
        # The 200 head and the first chunk are out before the bad size line is
        # read: the only signal left is to close before the last-chunk.
        assert client.file.readline().startswith(b'HTTP/1.1 200 ')
        while client.file.readline() != b'\r\n':
            pass
        assert client.file.read() == b'5\r\nfirst\r\n'


@pytest.mark.parametrize('request_bytes, status, allow', [
    (post('/nowhere', b'x' * 1000, method='GET'), 404, None),
    (post('/', b'y' * 1000, method='PUT'), 405, 'GET, HEAD, OPTIONS'),
    (get('/nowhere', 'HTTP/1.1', 'Transfer-Encoding: chunked', method='GET',
         body=chunked(b'a' * 100, b'b' * 50, trailers=['X-T: 1'])), 404, None),
])
def test_unread_small_body_is_drained_and_the_next_request_works(
        serve, request_bytes, status, allow):
    with Client(serve().port) as client:
        client.send(request_bytes + post('/echo', b'next') + get('/headers', 'HTTP/1.1', 'X-N: 3'))
        refused = client.reply('POST')
        assert (refused.status, refused.get('allow')) == (status, allow)
        if refused.closes:
            # Closing instead of draining is allowed (RFC 9112 section 9.3), but
            # only for a chunked body here: a short Content-Length body is drained.
            assert b'Transfer-Encoding' in request_bytes
            assert client.at_eof()
            return
        assert client.reply('POST').body == b'next'
        assert b'X-N: 3\n' in client.reply().body


def announcing(path, length, method='POST'):
    """A head that announces a body and waits for 100 Continue before sending it."""
    return get(path, 'HTTP/1.1', f'Content-Length: {length}', 'Expect: 100-continue',
               method=method)


@pytest.mark.parametrize('path, method, status', [('/nowhere', 'GET', 404), ('/', 'PUT', 405)])
def test_refused_expect_100_gets_the_final_status_and_closes(serve, path, method, status):
    with Client(serve().port) as client:
        reply = client.exchange(announcing(path, 100000, method))
        # RFC 9110 section 10.1.1: the server may send the final status instead
        # of 100 Continue; it cannot then know whether the body will come, so it closes.
        assert reply.status == status
        client.assert_closed_after(reply)


def test_accepted_expect_100_gets_continue_before_the_body_is_sent(serve):
    body = b'z' * 5000
    with Client(serve().port) as client:
        interim = client.exchange(announcing('/echo', len(body)))
        assert (interim.version, interim.status, interim.fields) == ('HTTP/1.1', 100, [])
        client.send(body)
        reply = client.reply('POST')
        assert (reply.status, reply.body) == (200, body)
        assert not reply.closes


def test_a_stalled_head_gets_408_and_the_connection_closes(serve):
    with Client(serve('--head-timeout', '0.5').port) as client:
        reply = client.exchange(b'GET / HTTP/1.1\r\nHost: localhost\r\n')   # the blank line never comes
        assert reply.status == 408
        client.assert_closed_after(reply)


def test_a_head_dripping_in_slower_than_its_deadline_gets_408(serve):
    # Every gap is shorter than the head timeout, the whole head is not: the
    # deadline is for the head, not for each byte.
    server = serve('--head-timeout', '1')
    with Client(server.port) as client:
        started = time.monotonic()
        client.send(b'GET / HTTP/1.1\r\n')
        for n in range(100):
            try:
                client.send(b'X-Drip-%d: y\r\n' % n)
            except OSError:
                break                          # the server gave up and closed
            if wait_readable(client, 0.3):     # the 408, once it comes
                break
        reply = client.reply()
        assert reply.status == 408
        assert time.monotonic() - started < 5  # not 100 x 0.3 s
        client.assert_closed_after(reply)


def wait_readable(client, seconds):
    return bool(select.select([client.sock], [], [], seconds)[0])


def test_an_idle_keep_alive_connection_is_closed(serve):
    with Client(serve('--keepalive-timeout', '0.5').port) as client:
        assert not client.exchange(get('/')).closes
        # Nothing more is sent: the server closes, without a response.
        assert client.at_eof()


# -- response framing (RFC 9112 section 6) -----------------------------------------

def test_unknown_length_body_is_close_delimited_for_http10_and_chunked_for_http11(
        serve, tmp_path):
    # A directory listing is streamed: its length is not known when its head is sent.
    (tmp_path / 'listed').mkdir()
    (tmp_path / 'listed' / 'a.txt').write_bytes(b'a')
    server = serve('--root', tmp_path)
    with Client(server.port) as client:
        reply = client.exchange(get('/listed/', 'HTTP/1.0', 'Connection: keep-alive'))
        assert reply.get('content-length') is None and reply.get('transfer-encoding') is None
        assert reply.status == 200 and b'a.txt' in reply.body   # read_reply read it to EOF
        assert reply.closes
        listing = reply.body
    with Client(server.port) as client:
        reply = client.exchange(get('/listed/'))
        assert reply.get('transfer-encoding') == 'chunked' and not reply.closes
        assert reply.body == listing
        assert client.exchange(get('/listed/')).body == listing


def test_no_body_for_head_204_and_304(serve):
    with Client(serve().port) as client:
        page = client.exchange(get('/'))
        etag = page.get('etag')
        assert etag, page.fields
        # Each bodiless answer has a request behind it: had a body been sent,
        # its bytes would stand where the next status line must be.
        client.send(get('/', method='HEAD') + get('/echo', method='OPTIONS')
                    + get('/', 'HTTP/1.1', f'If-None-Match: {etag}')
                    + get('/nowhere', method='HEAD') + get('/'))
        replies = [client.reply(method) for method in ['HEAD', 'OPTIONS', 'GET', 'HEAD', 'GET']]
    assert [r.status for r in replies] == [200, 204, 304, 404, 200]
    assert [r.body for r in replies] == [b''] * 4 + [page.body]
    assert replies[0].get('content-length') == str(len(page.body))
    assert replies[2].get('etag') == etag


def test_head_answers_the_get_fields_without_the_body(serve):
    with Client(serve().port) as client:
        got = client.exchange(get('/'))
        head = client.exchange(get('/', method='HEAD'), 'HEAD')
        assert head.status == 200 and head.body == b''
        assert head.get('content-length') == got.get('content-length') == str(len(got.body))
        assert head.get('content-type') == got.get('content-type')
        assert client.exchange(get('/')).body == got.body


def test_options_and_405_name_the_allowed_methods(serve):
    with Client(serve().port) as client:
        reply = client.exchange(get('/echo', method='OPTIONS'))
        assert (reply.status, reply.get('allow')) == (204, 'OPTIONS, POST, PUT')
        reply = client.exchange(get('*', method='OPTIONS'))
        assert reply.status == 204
        assert set(reply.get('allow').split(', ')) >= {'GET', 'HEAD', 'OPTIONS', 'POST', 'PUT'}
        reply = client.exchange(get('/', method='OPTIONS'))
        assert (reply.status, reply.get('allow')) == (204, 'GET, HEAD, OPTIONS')
        reply = client.exchange(get('/', method='DELETE'))
        assert (reply.status, reply.get('allow')) == (405, 'GET, HEAD, OPTIONS')
        reply = client.exchange(get('/echo'))
        assert (reply.status, reply.get('allow')) == (405, 'OPTIONS, POST, PUT')
        reply = client.exchange(get('/', method='BREW'))
        assert reply.status == 501
        assert not reply.closes and client.exchange(get('/')).status == 200


def test_headers_lists_the_fields_exactly_as_received_in_order(serve):
    fields = ['x-B: 1', 'X-a:two  words', 'Host-Like:   padded value \t',
              'x-b: 3', 'Empty:', 'Latin: caf\xe9']
    with Client(serve().port) as client:
        reply = client.exchange(get('/headers', 'HTTP/1.1', *fields, method='DELETE'))
    assert reply.status == 200 and reply.get('content-type').startswith('text/plain')
    # Names keep their case; values lose only the optional whitespace around
    # them (RFC 9112 section 5: OWS is not part of the field value).
    assert reply.body.decode('latin-1') == ('Host: localhost\nx-B: 1\nX-a: two  words\n'
                                            'Host-Like: padded value\nx-b: 3\nEmpty: \n'
                                            'Latin: caf\xe9\n')


# -- what the server prints ----------------------------------------------------------

def test_one_access_log_line_per_request_on_stderr(serve):
    server = serve()
    with Client(server.port) as client:
        client.send(get('/') + get('/', method='HEAD') + post('/echo', b'12345')
                    + get('/missing') + get('/', 'HTTP/1.1', 'Connection: close'))
        for method in ['GET', 'HEAD', 'POST', 'GET', 'GET']:
            client.reply(method)
    lines = server.wait_for_lines(CLF, 5, stream='stderr')
    assert [(m['host'], m['request'], m['status']) for m in lines] == [
        ('127.0.0.1', 'GET / HTTP/1.1', '200'), ('127.0.0.1', 'HEAD / HTTP/1.1', '200'),
        ('127.0.0.1', 'POST /echo HTTP/1.1', '200'), ('127.0.0.1', 'GET /missing HTTP/1.1', '404'),
        ('127.0.0.1', 'GET / HTTP/1.1', '200')]
    assert lines[1]['bytes'] == '-' and lines[2]['bytes'] == '5'
    assert int(lines[0]['bytes']) == int(lines[4]['bytes']) > 0


def test_quotes_in_a_target_cannot_end_the_access_logs_quoted_field(serve):
    """A target may hold '"' and '\\' (VCHAR): escaped as Apache's log does, so that
    the request field ends where the server ended it, not where the client did."""
    server = serve()
    target = '/a"b\\c"'
    with Client(server.port) as client:
        assert client.exchange(get(target, 'HTTP/1.1', 'Connection: close')).status == 404
    line = server.wait_for_line(r'^\S+ - - \[[^]]+\] "((?:[^"\\]|\\.)*+)" 404 \d+ "[^"]*"$',
                                stream='stderr')
    assert re.sub(r'\\(.)', r'\1', line[1]) == f'GET {target} HTTP/1.1'


def test_no_access_log_prints_none(serve):
    server = serve('--no-access-log')
    with Client(server.port) as client:
        assert client.exchange(get('/', 'HTTP/1.1', 'Connection: close')).status == 200
        assert client.at_eof()
    assert server.stop() == 0
    assert not re.search(CLF, server.output(), re.M)


def test_trace_counts_one_chunk_as_a_chunk(serve):
    # '1 chunks' was said of a one-chunk body and its echo (as '1 blocks' of a stream).
    server = serve('--trace')
    chunked_put = get('/echo', 'HTTP/1.1', 'Transfer-Encoding: chunked', method='PUT')
    with Client(server.port) as client:
        client.send(chunked_put + chunked(b'hello'))
        assert client.reply('PUT').body == b'hello'
        local_port = client.sock.getsockname()[1]
    trace = server.wait_for_line(rf'^trace 127\.0\.0\.1:{local_port}: (.*)$', stream='stderr')
    assert trace[1] == (f'head {len(chunked_put)} B by CRLFCRLF; body chunked: 1 chunk, 5 B, '
                        '0 trailers; response 200 by chunked (1 chunk, 5 B, 0 trailers)')


def test_trace_says_how_each_message_was_framed(serve):
    server = serve('--trace')
    pieces = [b'a' * 10, b'b' * 300, b'c']
    chunked_put = get('/echo', 'HTTP/1.1', 'Transfer-Encoding: chunked', method='PUT')
    with Client(server.port) as client:
        client.send(chunked_put + chunked(*pieces, trailers=['X-Sum: 311']))
        assert client.reply('PUT').body == b''.join(pieces)
        client.send(post('/echo', b'hello'))
        assert client.reply('POST').body == b'hello'
        client.send(get('/'))
        page = client.reply().body
        local_port = client.sock.getsockname()[1]
    traces = server.wait_for_lines(rf'^trace 127\.0\.0\.1:{local_port}: (.*)$', 3, stream='stderr')
    assert [m[1] for m in traces] == [
        f'head {len(chunked_put)} B by CRLFCRLF; body chunked: 3 chunks, 311 B, 1 trailer (X-Sum); '
        'response 200 by chunked (3 chunks, 311 B, 1 trailer (X-Sum))',
        f'head {len(post("/echo", b""))} B by CRLFCRLF; body content-length 5; '
        'response 200 by content-length 5 (5 B)',
        f'head {len(get("/"))} B by CRLFCRLF; body none; '
        f'response 200 by content-length {len(page)} ({len(page)} B)']
    # GET /_framing serves the records those lines were made from.
    records = [r for r in framing_records(server.port) if r['peer'].endswith(f':{local_port}')]
    assert [describe(r) for r in records] == [m[1] for m in traces]
    assert records[0]['request']['body'] == {
        'framing': 'chunked', 'bytes': 311, 'chunks': 3, 'sizes': [10, 300, 1],
        'last_sizes': [], 'more': 0, 'trailers': 1, 'trailer_fields': [['X-Sum', '*']], 'done': True}
    # The echo sent the trailer back: the response's record has it too (its value is not a
    # digest, so shown as *).
    assert records[0]['response'] == {'sent': True, 'done': True, 'status': 200,
                                      'framing': 'chunked', 'chunks': 3, 'bytes': 311, 'trailers': 1,
                                      'trailer_fields': [['X-Sum', '*']], 'sizes': [10, 300, 1],
                                      'last_sizes': [], 'more': 0}


def test_an_echo_whose_body_turns_out_malformed_is_cut_and_traced(serve):
    server = serve('--trace')
    head = get('/echo', 'HTTP/1.1', 'Transfer-Encoding: chunked', method='PUT')
    with Client(server.port) as client:
        port = client.sock.getsockname()[1]
        client.send(head + b'5\r\nhello\r\n')
        assert client.file.readline().startswith(b'HTTP/1.1 200 ')   # the head has gone
        while client.file.readline() != b'\r\n':
            pass
        assert client.file.readline() == b'5\r\n'                   # the echo began
        client.send(b'zz\r\nmore\r\n0\r\n\r\n')                # not a chunk size
        client.sock.settimeout(WAIT)
        rest = client.file.read()
        assert not rest.endswith(b'0\r\n\r\n')    # cut before the response's end
    # The access log line and the record (--trace) say how far it went, and why it ended.
    server.wait_for_line(r'"PUT /echo HTTP/1.1" 200 \d+ "response cut: request body: bad '
                         r"chunk-size line 'zz'\"$", stream='stderr')
    server.wait_for_line(rf"^trace 127\.0\.0\.1:{port}: .*; response 200 by chunked .*; "
                         r"response cut: request body: bad chunk-size line 'zz'$", stream='stderr')


# -- the server process ----------------------------------------------------------------

def test_ipv6_loopback(serve):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(('::1', 0))
    except OSError as exc:
        pytest.skip(f'no IPv6 loopback here: {exc}')
    server = serve('--host', '::1')
    assert re.search(HTTP_LISTENING, server.output())['host'] == '[::1]'
    with Client(server.port, '::1') as client:
        reply = client.exchange(get('/', 'HTTP/1.1', 'Connection: close'))
        assert reply.status == 200
        client.assert_closed_after(reply)


def test_host_localhost(serve):
    server = serve('--host', 'localhost')
    host = re.search(HTTP_LISTENING, server.output())['host'].strip('[]')
    assert host in ('127.0.0.1', '::1')
    with Client(server.port, host) as client:
        assert client.exchange(get('/')).status == 200


def assert_one_line_exit_2(result, *words):
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert len(err.splitlines()) == 1 and 'Traceback' not in err, err
    assert all(word in err for word in words), err


def test_a_port_in_use_gives_one_line_and_exit_2():
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_minihttp('serve', '--port', port, '--block-port', 0, timeout=WAIT)
    assert_one_line_exit_2(result, str(port))


def test_an_unresolvable_host_gives_one_line_and_exit_2():
    result = run_minihttp('serve', '--host', 'no-such-host.invalid', '--port', 0,
                          '--block-port', 0, timeout=WAIT)
    assert_one_line_exit_2(result, 'no-such-host.invalid')


def test_no_arguments_means_serve_on_port_8000_beside_blocks_on_1060(minihttp):
    # `make run` binds fixed ports, so the defaults are read, not bound...
    args = build_parser().parse_args(['serve'])
    assert (args.host, args.port, args.block_port, args.root) == ('127.0.0.1', 8000, 1060, None)
    # ... and the command word is optional, as `python -m minihttp` relies on.
    server = minihttp('--port', 0, '--block-port', 0, listening=HTTP_LISTENING)
    with Client(server.port) as client:
        assert client.exchange(get('/')).status == 200


def test_sigterm_while_idle_exits_0(serve):
    server = serve()
    with Client(server.port) as client:
        assert not client.exchange(get('/')).closes     # an idle keep-alive connection
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(WAIT) == 0
        assert client.at_eof()
    assert 'stopped' in server.output('stdout')


def test_sigterm_right_after_the_listening_line_exits_0(serve):
    # A supervisor signals as soon as it reads the line: no window in which
    # SIGTERM still kills the process outright (status -15).
    server = serve()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(WAIT) == 0


def test_sigint_ignored_at_start_still_stops_the_server_before_its_loop(monkeypatch):
    # A shell's background job starts with SIGINT ignored.  The loop obeys SIGINT once
    # its handlers are in (run_until_signalled); the moments before it, after the
    # listening line is said, must not ignore it either: SIGINT then is Ctrl-C (exit 0),
    # and what was set before is back when main returns.
    seen = {}

    def run_serve(args):
        seen['int'] = signal.getsignal(signal.SIGINT)
        seen['term'] = signal.getsignal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)      # as if it came right after the line
        seen['after'] = True                    # (never: the signal stops main)

    monkeypatch.setattr(cli, 'run_serve', run_serve)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert cli.main(['serve']) == 0
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == {'int': signal.default_int_handler, 'term': signal.default_int_handler}


def test_sigterm_lets_an_in_flight_request_finish_within_grace(serve):
    server = serve('--grace', str(WAIT))
    with Client(server.port) as client:
        client.send(get('/echo', 'HTTP/1.1', 'Transfer-Encoding: chunked', method='PUT')
                    + b'5\r\nfirst\r\n')
        reply_head = client.file.readline()
        assert reply_head.startswith(b'HTTP/1.1 200 ')
        server.proc.send_signal(signal.SIGTERM)
        wait_until_refused(server.port)     # the server has begun to stop ...
        assert server.proc.poll() is None   # ... and waits for this request
        client.send(b'6\r\nsecond\r\n0\r\n\r\n')
        while client.file.readline() != b'\r\n':
            pass
        assert read_chunked(client.file) == b'firstsecond'
        assert client.at_eof()
    assert server.proc.wait(WAIT) == 0


def test_fifty_concurrent_keep_alive_clients_all_succeed(serve):
    server = serve('--quiet')
    clients, rounds = 50, 4
    start = threading.Barrier(clients, timeout=WAIT)

    def client(n):
        connection = http.client.HTTPConnection('127.0.0.1', server.port, timeout=WAIT)
        try:
            connection.connect()
            start.wait()
            bodies = []
            for i in range(rounds):
                body = f'client {n} request {i}'.encode()
                connection.request('POST', '/echo', body)
                response = connection.getresponse()
                bodies.append((response.status, response.read() == body))
            ports = {connection.sock.getsockname()[1]}
            connection.request('GET', '/')
            ports.add(connection.sock.getsockname()[1])
            response = connection.getresponse()
            bodies.append((response.status, len(response.read()) > 0))
            return bodies, len(ports)
        finally:
            connection.close()

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients), timeout=2 * WAIT))
    assert all(bodies == [(200, True)] * (rounds + 1) for bodies, _ in results)
    assert all(sockets == 1 for _, sockets in results)


def test_workers_share_the_port_and_all_stop_on_sigterm(serve):
    server = serve('--workers', '2', '--trace')
    line = server.wait_for_line(r'^http served by 2 worker processes: (?P<pids>\d+ \d+)$')
    workers = sorted(map(int, line['pids'].split()))
    assert sorted(children_of(server.proc.pid)) == workers
    # Many connections at once: the kernel hands them to the workers.
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(Client(server.port)) for _ in range(16)]
        for client in clients:
            reply = client.exchange(get('/headers'))
            assert reply.status == 200 and not reply.closes
    assert len(server.wait_for_lines(r'^trace ', 16, stream='stderr')) == 16
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(WAIT) == 0
    # The parent reaped its workers before it exited: none is left running.
    assert not [pid for pid in workers if os.path.exists(f'/proc/{pid}')]


def test_an_error_of_ours_gets_500_and_the_server_goes_on(capsys):
    calls = []

    def failing_app(request):
        calls.append(request.path)
        if request.path == '/broken':
            raise OSError(errno.EIO, 'Input/output error')   # not the connection's fault
        return Response(200, [], b'fine')

    listener = EventLoop('127.0.0.1', 0, HTTPServer(failing_app, access_log=False))
    listener.start()
    try:
        with Client(listener.address[1]) as client:
            reply = client.exchange(get('/broken'))
            assert reply.status == 500
            client.assert_closed_after(reply)
        with Client(listener.address[1]) as client:
            assert client.exchange(get('/fine')).status == 200
    finally:
        listener.stop(0)
    assert calls == ['/broken', '/fine']
    assert 'Input/output error' in capsys.readouterr().err   # the cause, for the operator
