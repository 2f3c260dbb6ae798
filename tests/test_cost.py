"""Cost is part of correctness: every parser of client bytes takes time linear in its input.

Python's re backtracks, so a pattern that can match a run of characters in
two ways is polynomial or exponential on a crafted input, and a few hundred
bytes can hold the event loop (and with it every client) for seconds.  Each
row of COSTS is one entry point that reads client bytes, called directly
(bytes or str in, a value or the protocol's error out: no sockets), with a
generator of hostile inputs made from that entry point's own grammar: runs of
optional whitespace, empty values, repeated separators, quotes and
backslashes, long runs before a final bad byte.  Each is timed at size n and
8n (8n as large as the limits let a client send) and the CPU time may grow
by at most GROWTH: about 8 when linear, 64 when quadratic, for ever when
exponential.  A row whose 8n run passes that budget is stopped there by a
CPU-time timer, so the old exponential parser fails here in well under a
second instead of hanging.

A new entry point is one more row.  The end-to-end tests then send the
attack that started this (a 131-byte head that held the old server for
seconds) and numbers beyond Python's int-string limit to a live server.
"""

import argparse
import gc
import math
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from minihttp import cli, digests, files, multipart, records
from minihttp.app import after, upload_name
from minihttp.blocks import get_block
from minihttp.browsers import Browsers
from minihttp.framing import StreamReader
from minihttp.bodies import ChunkedBody, ContentLengthBody
from minihttp.errors import HTTPError
from minihttp.request import parse_head
from minihttp.transfer import CHUNKED_BODY, content_length, request_framing
from minihttp.tls import RECORDED_HANDSHAKE, MalformedRecord, RecordScanner
from minihttp.limits import (RECORDED_CHUNKS, MAX_CHUNK_LINE, MAX_FIELDS, MAX_HEAD, MAX_PART_HEAD,
                             MAX_REQUEST_LINE, MAX_TRAILER, MAX_TRAILER_FIELDS)
from minihttp.server import HTTPServer
from support import FakeSocket, RawClient, Served, WAIT, request_bytes

# CPU time at 8n over CPU time at n: about 8 for a linear parser (less where a
# fixed cost is part of it), 64 for a quadratic one.
GROWTH = 24
# Calls at size n are repeated until they take this much CPU time, so that
# neither the clock's resolution nor a fixed cost per call decides.
FLOOR = 0.005
REPEATS = 3


class TooCostly(Exception):
    """The CPU-time timer ran out: the call grew beyond the budget."""


@pytest.fixture
def cpu_timer():
    """SIGPROF (CPU time of this process) raises TooCostly while a budget is set."""
    def expire(signum, frame):
        raise TooCostly()
    previous = signal.signal(signal.SIGPROF, expire)
    yield
    signal.setitimer(signal.ITIMER_PROF, 0)
    signal.signal(signal.SIGPROF, previous)


def cpu_seconds(call, data, reps, budget=None):
    """CPU time of ``reps`` calls; TooCostly once ``budget`` seconds of it are spent."""
    gc.collect()
    gc.disable()
    if budget:
        signal.setitimer(signal.ITIMER_PROF, budget)
    start = time.process_time()
    try:
        for _ in range(reps):
            call(data)
        return time.process_time() - start
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        gc.enable()


# -- the entry points -------------------------------------------------------------------
# Each caller takes the input and returns the parser's value, or raises HTTPError.

def head(fields, request_line=b'GET / HTTP/1.1', host=b'Host: x'):
    """A request head (without the blank line): the request line, Host, these field lines."""
    return b'\r\n'.join([request_line, *([host] if host else []), *fields])


def chunked_body(data):
    body = ChunkedBody(StreamReader(FakeSocket(data)))
    return body.read_to(lambda piece: None), body.trailers


BOUNDARY = b'b0undary'


def form(part_head):
    """A multipart body of one part with this head, read as the server reads uploads."""
    data = b'--%s\r\n%s\r\n\r\nvalue\r\n--%s--\r\n' % (BOUNDARY, part_head, BOUNDARY)
    parts = []
    multipart.read_parts(ContentLengthBody(StreamReader(FakeSocket(data)), len(data)),
                         BOUNDARY, lambda part: parts.append(part) or (lambda piece: None))
    return len(parts)


def blocks(data):
    """Blocks up to the empty one that ends the stream; whether it came."""
    reader = StreamReader(FakeSocket(data))
    while get_block(reader, limit=1 << 20):
        pass
    return reader.at_eof()


def tls_records(data, piece=None):
    """A stream of TLS records scanned as tls.RecordScanner watches a connection's bytes,
    in pieces of ``piece`` bytes (None: one piece): how it ended, and the tally's size."""
    scanner = RecordScanner()
    view = memoryview(data)
    try:
        for start in range(0, len(view), piece or len(view) or 1):
            scanner.feed(view[start:start + piece] if piece else view)
    except MalformedRecord:
        return 'malformed', len(scanner.tally.sizes)
    return len(scanner.tally.sizes), len(scanner.tally.handshake)


APPLICATION_RECORD = b'\x17\x03\x03\x00\x00'          # an empty application_data record
# A handshake record in clear of 1,024 empty handshake messages (type 0, length 0).
HANDSHAKE_RECORD = b'\x16\x03\x01\x10\x00' + b'\x00' * 4096


def size_option(text):
    try:
        return cli.size(text)
    except argparse.ArgumentTypeError:
        return 'refused'


@dataclass
class Cost:
    """One entry point with one shape of hostile input: ``make(n)`` at n and 8n."""
    name: str
    call: Callable
    make: Callable
    n: int
    expect: Any      # the status of the HTTPError it must raise, or the value it returns


# A field line of optional whitespace alone: the old field pattern split each such line
# eleven ways, and tried every split of every line before a bad one.
OWS_LINE = b'X:' + b' ' * 10
COSTS = [
    # The request head (RFC 9112 sections 3 and 5): n lines or n bytes.
    Cost('head: lines of optional whitespace, then a control character', parse_head,
         lambda n: head([OWS_LINE] * n + [b'Y: \x01']), 2, 400),
    Cost('head: the most lines, empty values, then a control character', parse_head,
         lambda n: head([b'X:'] * n + [b'Y: \x01']), (MAX_FIELDS - 2) // 8, 400),
    Cost('head: a run of whitespace before a control character', parse_head,
         lambda n: head([b'X:' + b' \t' * n + b'\x01']), MAX_HEAD // 16 - 16, 400),
    Cost('head: words and spaces before a control character', parse_head,
         lambda n: head([b'X: ' + b'a ' * n + b'\x01']), MAX_HEAD // 16 - 16, 400),
    Cost('head: a value between runs of whitespace', parse_head,
         lambda n: head([b'X:' + b' ' * n + b'v' + b'\t' * n + b'\x01']),
         MAX_HEAD // 16 - 16, 400),
    Cost('head: a long name, then whitespace before the colon', parse_head,
         lambda n: head([b'X' * n + b' : v']), MAX_HEAD // 8 - 16, 400),
    Cost('head: repeated colons', parse_head,
         lambda n: head([b'X' + b':' * n + b'\x7f']), MAX_HEAD // 8 - 16, 400),
    Cost('request line: a long target before a bad byte', parse_head,
         lambda n: head([], b'GET /' + b'a' * n + b'\x7f HTTP/1.1'),
         MAX_REQUEST_LINE // 8 - 16, 400),
    Cost('request line: absolute-form with a fragment', parse_head,
         lambda n: head([], b'GET http://' + b'a' * n + b'# HTTP/1.1'),
         MAX_REQUEST_LINE // 8 - 16, 400),
    Cost('Host: a long name and port before a bad byte', parse_head,
         lambda n: head([], host=b'Host: ' + b'a' * n + b':' + b'1' * n + b'/'),
         MAX_HEAD // 16 - 16, 400),
    Cost('Host: an unclosed IPv6 literal', parse_head,
         lambda n: head([], host=b'Host: [' + b':' * n), MAX_HEAD // 8 - 16, 400),
    # Where the request was sent and from which page (RFC 9110 section 7.2, RFC 6454).
    Cost('Host: a long name not ours', lambda data: Browsers().check(parse_head(data)),
         lambda n: head([], host=b'Host: ' + b'a.' * n + b'example'), MAX_HEAD // 16 - 16, 421),
    Cost('absolute-form: userinfo and a long authority',
         lambda data: Browsers().check(parse_head(data)),
         lambda n: head([], b'GET http://' + b'a@' * n + b'x/ HTTP/1.1'),
         MAX_REQUEST_LINE // 16 - 8, 421),
    Cost('Origin: a long origin of another site', lambda data: Browsers().check(parse_head(data)),
         lambda n: head([b'Origin: http://' + b'a:' * n + b'x', b'Content-Length: 0'],
                        b'POST /echo HTTP/1.1', b'Host: localhost'), MAX_HEAD // 16 - 16, 403),
    # Lists (RFC 9110 section 5.6.1) that decide framing and persistence.
    Cost('Connection: a list of empty members', lambda data: parse_head(data).keep_alive,
         lambda n: head([b'Connection: ' + b' ,' * n + b'close']), MAX_HEAD // 16 - 16, False),
    Cost('Transfer-Encoding: a list of empty members',
         lambda data: request_framing(parse_head(data)),
         lambda n: head([b'Transfer-Encoding: ' + b', ' * n + b'chunked']),
         MAX_HEAD // 16 - 16, CHUNKED_BODY),
    Cost('Content-Length: a list of one value repeated',
         lambda data: request_framing(parse_head(data)),
         lambda n: head([b'Content-Length: ' + b'7, ' * n + b'7']), MAX_HEAD // 24 - 16,
         content_length(7)),
    Cost('Content-Length: a numeral of leading zeros', lambda data: request_framing(parse_head(data)),
         lambda n: head([b'Content-Length: ' + b'0' * n + b'7']), MAX_HEAD // 8 - 16, 400),
    Cost('Expect: a long expectation', lambda data: HTTPServer.continuer(parse_head(data)),
         lambda n: head([b'Expect: 100-' + b'c ' * n + b'x']), MAX_HEAD // 16 - 16, 417),
    # The chunked body (RFC 9112 section 7.1): size lines and trailers.
    Cost('chunk size line: whitespace runs before a bad byte', chunked_body,
         lambda n: b'1;' + b' \t' * n + b'\x01\r\nx\r\n0\r\n\r\n', MAX_CHUNK_LINE // 16 - 8, 400),
    Cost('chunk size line: repeated extensions with whitespace', chunked_body,
         lambda n: b'1' + b' ; a = b' * n + b' \r\nx\r\n0\r\n\r\n', MAX_CHUNK_LINE // 64 - 2, 400),
    Cost('chunk size line: an unclosed quoted string of quoted-pairs', chunked_body,
         lambda n: b'1;a="' + b'\\"' * n + b'\r\nx\r\n0\r\n\r\n', MAX_CHUNK_LINE // 16 - 8, 400),
    Cost('trailer: a run of whitespace before a control character', chunked_body,
         lambda n: b'0\r\nX:' + b' ' * n + b'\x01\r\n\r\n', MAX_TRAILER // 8 - 16, 400),
    Cost('trailer: the most lines of whitespace, then a control character', chunked_body,
         lambda n: b'0\r\n' + (OWS_LINE + b'\r\n') * n + b'Y: \x01\r\n\r\n',
         (MAX_TRAILER_FIELDS - 1) // 8, 400),
    # Range and conditional requests (RFC 9110 sections 13 and 14).
    Cost('Range: a run of whitespace', lambda text: files.parse_range(text, 10_000),
         lambda n: 'bytes=' + ' ' * n + 'x', MAX_HEAD // 8 - 64, None),
    Cost('Range: many ranges before a bad one', lambda text: files.parse_range(text, 10_000),
         lambda n: 'bytes=' + '0-0, ' * n + ' -x', MAX_HEAD // 40 - 16, None),
    Cost('Range: a long numeral', lambda text: files.parse_range(text, 10_000),
         lambda n: 'bytes=' + '9' * n + '-', MAX_HEAD // 8 - 64, None),
    Cost('If-None-Match: an unclosed entity-tag',
         lambda text: files.etag_matches(text, '"e"', weak=True),
         lambda n: 'W/"' + 'x' * n, MAX_HEAD // 8 - 64, False),
    Cost('If-None-Match: repeated weak prefixes and commas',
         lambda text: files.etag_matches(text, '"e"', weak=True),
         lambda n: 'W/, ' * n + '"f"', MAX_HEAD // 32 - 16, False),
    Cost('If-Modified-Since: a long year', files.http_time,
         lambda n: 'Mon, 01 Jan ' + '9' * n + ' 00:00:00 GMT', 500, None),
    Cost('If-Modified-Since: whitespace runs', files.http_time,
         lambda n: 'Mon, ' + ' ' * n + '01 Jan 2024 00:00:00 GMT', MAX_HEAD // 8 - 64, None),
    # multipart/form-data (RFC 7578): the boundary parameter, part heads, their parameters.
    Cost('Content-Type: an unclosed quoted boundary of quoted-pairs', multipart.boundary_of,
         lambda n: 'multipart/form-data; boundary="' + '\\"' * n, MAX_HEAD // 16 - 64, 400),
    Cost('Content-Type: parameters without values', multipart.boundary_of,
         lambda n: 'multipart/form-data' + ';  x' * n, MAX_HEAD // 32 - 64, 400),
    Cost('Content-Type: a long boundary', multipart.boundary_of,
         lambda n: 'multipart/form-data; boundary=' + 'a' * n, MAX_HEAD // 8 - 64, 400),
    Cost('part head: a run of whitespace before a control character', form,
         lambda n: b'Content-Disposition:' + b' ' * n + b'\x01', MAX_PART_HEAD // 8 - 64, 400),
    Cost('Content-Disposition: an unclosed quoted name of quoted-pairs', form,
         lambda n: b'Content-Disposition: form-data; name="' + b'\\"' * n,
         MAX_PART_HEAD // 16 - 64, 1),
    Cost('Content-Disposition: parameters with whitespace and no value', form,
         lambda n: b'Content-Disposition: form-data' + b'; \t x' * n,
         MAX_PART_HEAD // 48 - 16, 1),
    # The block transport (Listing 5-2): headers one after another.
    Cost('blocks: many one-byte blocks', blocks,
         lambda n: b'\x00\x00\x00\x01x' * n + b'\x00\x00\x00\x00', 1024, True),
    # TLS records (RFC 8446 section 5.1), headers one after another, as the scanner sees them.
    Cost('TLS: many empty records in one piece', tls_records,
         lambda n: APPLICATION_RECORD * n, 1024, (RECORDED_CHUNKS, 0)),
    Cost('TLS: many empty records, a byte at a time', lambda data: tls_records(data, 1),
         lambda n: APPLICATION_RECORD * n, 256, (RECORDED_CHUNKS, 0)),
    Cost('TLS: many empty records, then a malformed header', tls_records,
         lambda n: APPLICATION_RECORD * n + b'\x17\x03\x03\xff\xff', 1024,
         ('malformed', RECORDED_CHUNKS)),
    Cost('TLS: handshake records of empty messages, in pieces of 3 bytes',
         lambda data: tls_records(data, 3)[1], lambda n: HANDSHAKE_RECORD * n, 4,
         RECORDED_HANDSHAKE),
    # Query strings and record numbers (GET /_framing).
    Cost('query: repeated separators before a bad number', lambda data: after(parse_head(data)),
         lambda n: head([], b'GET /_framing?' + b'&' * n + b'after=x HTTP/1.1'),
         MAX_REQUEST_LINE // 8 - 16, 400),
    Cost('query: percent signs', lambda data: after(parse_head(data)),
         lambda n: head([], b'GET /_framing?after=' + b'%' * n + b' HTTP/1.1'),
         MAX_REQUEST_LINE // 8 - 16, 400),
    Cost('query: a long number', lambda data: after(parse_head(data)),
         lambda n: head([], b'GET /_framing?after=' + b'9' * n + b' HTTP/1.1'),
         MAX_REQUEST_LINE // 8 - 16, 400),
    Cost('Last-Event-ID: a long number', lambda data: after(parse_head(data)),
         lambda n: head([b'Last-Event-ID: ' + b'9' * n]), MAX_HEAD // 8 - 16, 400),
    # Paths, upload names, and targets as the framing log shows them.
    Cost('path: percent-escapes that are not UTF-8', files.url_segments,
         lambda n: '/' + '%C3' * n, MAX_REQUEST_LINE // 24, None),
    Cost('upload name: a long name with a control character',
         lambda data: upload_name(parse_head(data).path),
         lambda n: head([], b'PUT /uploads/' + b'a' * n + b'%01 HTTP/1.1'),
         MAX_REQUEST_LINE // 8 - 32, 400),
    Cost('upload name: many folders', lambda data: upload_name(parse_head(data).path),
         lambda n: head([], b'PUT /uploads/' + b'a/' * n + b'z HTTP/1.1'),
         MAX_REQUEST_LINE // 16 - 16, 400),
    Cost('upload name: a folder of escaped characters, then a hidden name',
         lambda data: upload_name(parse_head(data).path),
         lambda n: head([], b'PUT /uploads/' + b'%C3%A9' * n + b'/.z HTTP/1.1'),
         MAX_REQUEST_LINE // 48 - 8, 400),
    Cost('framing record: userinfo and a query of empty items',
         lambda text: records.redact(text).startswith('http://x/?&=*'),
         lambda n: 'http://' + 'a@' * n + 'x/?' + '&=' * n, MAX_REQUEST_LINE // 32 - 4, True),
    # Integrity fields (RFC 9530): Structured Fields Dictionaries (RFC 8941 section 3.2).
    Cost('Content-Digest: many members, then a bad key', digests.parse_dictionary,
         lambda n: 'sha-256=:AAAA:, ' * n + 'A', MAX_HEAD // 128, None),
    Cost('Content-Digest: whitespace runs before a missing comma', digests.parse_dictionary,
         lambda n: 'a=1' + ' \t' * n + 'b=2', MAX_HEAD // 16 - 16, None),
    Cost('Content-Digest: an unclosed string of quoted-pairs', digests.parse_dictionary,
         lambda n: 'a="' + '\\"' * n, MAX_HEAD // 16 - 16, None),
    Cost('Content-Digest: an unclosed inner list of items and spaces', digests.parse_dictionary,
         lambda n: 'a=(' + '1 ' * n, MAX_HEAD // 16 - 16, None),
    Cost('Content-Digest: many parameters, then an empty one', digests.parse_dictionary,
         lambda n: 'a=:AA:' + ';p=1' * n + ';', MAX_HEAD // 32 - 16, None),
    Cost('Content-Digest: an unclosed byte sequence', digests.parse_dictionary,
         lambda n: 'sha-256=:' + 'A' * n, MAX_HEAD // 8 - 16, None),
    Cost('Want-Repr-Digest: many preferences, then a bad one', digests.wanted_algorithm,
         lambda n: 'sha-256=1, ' * n + 'sha-512=x', MAX_HEAD // 96, None),
    # The command line: sizes.
    Cost('--max-upload: a number, whitespace, then junk', size_option,
         lambda n: '1' + ' ' * n + 'x', 1000, 'refused'),
]


def outcome(call, data):
    """What the entry point answers: its value, or the status of its HTTPError."""
    try:
        return call(data)
    except HTTPError as error:
        return error.status


@pytest.mark.timeout(120)
@pytest.mark.parametrize('cost', COSTS, ids=[cost.name for cost in COSTS])
def test_parsing_time_grows_at_most_linearly(cost, cpu_timer):
    small, large = cost.make(cost.n), cost.make(8 * cost.n)
    assert outcome(cost.call, small) == cost.expect
    swallowing = lambda data: outcome(cost.call, data)   # noqa: E731
    reps = 1
    while (spent := cpu_seconds(swallowing, small, reps)) < FLOOR:
        reps = max(2 * reps, math.ceil(1.2 * FLOOR / max(spent, 1e-7) * reps))
    at_n = min(spent, *(cpu_seconds(swallowing, small, reps) for _ in range(REPEATS - 1)))
    budget = GROWTH * at_n
    at_8n = []
    for _ in range(REPEATS):
        try:
            at_8n.append(cpu_seconds(swallowing, large, reps, budget))
        except TooCostly:
            at_8n.append(budget)
            if at_8n.count(budget) > 1:
                break
    assert min(at_8n) < budget, (
        f'{cost.name}: {len(large)} bytes took more than {GROWTH} times the CPU time of '
        f'{len(small)} bytes ({1e3 * at_n / reps:.3f} ms a call): worse than linear')
    assert outcome(cost.call, large) == cost.expect



# -- a live server -------------------------------------------------------------------------

SMALL = b'small file\n'
BIG = bytes(range(256)) * 400       # beyond SMALL_FILE: served by sendfile from the pool


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp('root')
    (root / 'small.txt').write_bytes(SMALL)
    (root / 'big.bin').write_bytes(BIG)
    uploads = tmp_path_factory.mktemp('uploads')
    served = Served(root, uploads)
    yield served
    served.stop()


def slow_head(lines):
    """The head that held the old parser for seconds (lines=7: 131 bytes, ~8 s; each
    more line multiplied that by 11): optional whitespace alone, then a control character."""
    return head([OWS_LINE] * lines + [b'Y: \x01']) + b'\r\n\r\n'


@pytest.mark.timeout(60)
def test_the_131_byte_head_gets_400_while_another_connection_is_answered(serve, tmp_path):
    (tmp_path / 'small.txt').write_bytes(SMALL)
    server = serve('--root', tmp_path, '--quiet')     # its own: the old one never recovered
    assert len(slow_head(7)) == 131
    with RawClient(server.port) as first, RawClient(server.port) as second:
        first.send(slow_head(7))
        second.send(slow_head(12))        # the old parser would never finish this one
        with RawClient(server.port, timeout=WAIT) as other:
            other.send(request_bytes('GET', '/small.txt'))
            reply = other.reply()
        assert (reply.status, reply.body) == (200, SMALL)
        for attacker in first, second:
            refused = attacker.reply()
            assert refused.status == 400 and b'control character' in refused.body
            assert attacker.at_eof()


D = '9' * 5000            # beyond sys.get_int_max_str_digits() (4300): int() refuses it


@pytest.mark.timeout(60)
@pytest.mark.parametrize('method, target, fields, status', [
    # Range (RFC 9110 section 14.2): a server may ignore the field; one with a numeral no
    # file reaches is ignored, and the whole file is sent.
    ('GET', '/big.bin', [f'Range: bytes={D}-'], 200),
    ('GET', '/big.bin', [f'Range: bytes=0-{D}'], 200),
    ('GET', '/small.txt', [f'Range: bytes=-{D}'], 200),
    ('GET', '/small.txt', [f'Range: bytes={D}-{D}'], 200),
    ('GET', '/small.txt', ['Range: bytes=\xb2-'], 200),
    ('GET', '/big.bin', ['Range: bytes=0-1', f'If-Range: Mon, 01 Jan {D} 00:00:00 GMT'], 200),
    # A date that is no HTTP-date MUST be ignored (RFC 9110 sections 13.1.3 and 13.1.4).
    ('GET', '/small.txt', [f'If-Modified-Since: Mon, 01 Jan {D} 00:00:00 GMT'], 200),
    ('GET', '/small.txt', [f'If-Unmodified-Since: Mon, 01 Jan 2001 00:00:00 {D}'], 200),
    ('GET', '/small.txt', [f'If-Unmodified-Since: {D}'], 200),
    # Content-Length = 1*DIGIT (RFC 9110 section 8.6): anything else is 400 and close
    # (RFC 9112 section 6.3 item 5).
    ('POST', '/echo', [f'Content-Length: {D}'], 400),
    ('POST', '/echo', ['Content-Length: \xb2'], 400),
    # The port of Host is never converted.
    ('GET', '/small.txt', [f'Host: localhost:{D}'], 200),
    # A record number is ASCII digits, and not too many of them.
    ('GET', f'/_framing?after={D}', [], 400),
    ('GET', '/_framing?after=%C2%B2', [], 400),
    ('GET', '/_framing?after=%D9%A3', [], 400),    # ARABIC-INDIC DIGIT THREE: int() takes it
    ('GET', '/_framing', [f'Last-Event-ID: {D}'], 400),
    ('GET', '/_framing', ['Last-Event-ID: \xb2'], 400),
    ('GET', f'/_framing/stream?after={D}', [], 400),
], ids=lambda value: value[:40] if isinstance(value, str) else None)
def test_numbers_get_their_rfc_answer_never_a_500(server, method, target, fields, status):
    headers = [*fields, 'Connection: close']
    data = request_bytes(method, target, headers)
    if fields and fields[0].startswith('Host:'):
        data = data.replace(b'Host: 127.0.0.1\r\n', b'', 1)
    with RawClient(server.port) as client:
        client.send(data)
        reply = client.reply(method)
    assert reply.status == status, reply.body[:200]
    if status == 200 and target == '/big.bin':
        assert reply.body == BIG
    if status == 200 and target == '/small.txt':
        assert reply.body == SMALL
