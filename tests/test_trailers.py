"""Request trailers: the trailer section of a chunked body (RFC 9112 section 7.1.2).

Parsed with the header grammar and bounded like a head (MAX_TRAILER bytes,
MAX_TRAILER_FIELDS lines); kept apart from the header fields (never merged:
``request.get`` does not see them); fields that cannot be trailers (RFC 9110
section 6.5.1) dropped; and shown in the framing record, names and values,
within RECORDED_TRAILER bytes.
"""

import pytest
from hypothesis import given, strategies as st

from conftest import FakeSocket
from minihttp.bodies import NOT_IN_TRAILERS, open_body
from minihttp.errors import HTTPError
from minihttp.framing import StreamReader
from minihttp.limits import MAX_TRAILER, MAX_TRAILER_FIELDS, RECORDED_TRAILER
from minihttp.records import body_dict, body_facts, trailer_facts
from minihttp.request import read_request

HEAD = b'PUT /x HTTP/1.1\r\nHost: h\r\nX-Sum: head\r\nTransfer-Encoding: chunked\r\n\r\n'


def read_chunked(section):
    """A request whose chunked body ends in ``section`` (trailer lines, then CRLF), read whole."""
    reader = StreamReader(FakeSocket(HEAD + b'2\r\nhi\r\n0\r\n' + section, 3), 64)
    request = read_request(reader)
    request.body = open_body(request, reader)
    assert request.trailers == []                # nothing before the body is read
    assert request.body.read() == b'hi'
    return request


def test_trailers_are_the_requests_and_never_merged_into_its_fields():
    request = read_chunked(b'X-Sum: 2\r\nContent-Digest: sha-256=:abc=:\r\n\r\n')
    assert request.trailers == [('X-Sum', '2'), ('Content-Digest', 'sha-256=:abc=:')]
    assert request.trailers is request.body.trailers
    # RFC 9112 section 7.1.2: a recipient MUST NOT merge them into the header section.
    assert request.get('X-Sum') == 'head' and request.get('Content-Digest') is None
    assert request.body.ignored_trailers == ()


def test_fields_that_cannot_be_trailers_are_dropped():
    request = read_chunked(b'Content-Length: 5\r\nX-Ok: 1\r\nHOST: evil\r\n'
                           b'Transfer-Encoding: gzip\r\nAuthorization: Basic x\r\n\r\n')
    assert request.trailers == [('X-Ok', '1')]
    assert request.body.ignored_trailers == ['Content-Length', 'HOST', 'Transfer-Encoding',
                                             'Authorization']
    assert {'content-length', 'transfer-encoding', 'trailer', 'host'} <= NOT_IN_TRAILERS


def test_a_request_without_a_chunked_body_has_no_trailers():
    reader = StreamReader(FakeSocket(b'PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi'))
    request = read_request(reader)
    assert request.trailers == []
    request.body = open_body(request, reader)
    assert request.body.read() == b'hi' and request.trailers == []


@pytest.mark.parametrize('section, status', [
    (b'X: ' + b'v' * (MAX_TRAILER - 5) + b'\r\n\r\n', None),     # exactly MAX_TRAILER bytes
    (b'X: ' + b'v' * (MAX_TRAILER - 4) + b'\r\n\r\n', 431),      # one more
    (b''.join(b'X-%d: 1\r\n' % n for n in range(MAX_TRAILER_FIELDS)) + b'\r\n', None),
    (b''.join(b'X-%d: 1\r\n' % n for n in range(MAX_TRAILER_FIELDS + 1)) + b'\r\n', 431),
    (b'X: 1\r\n folded\r\n\r\n', 400),         # obs-fold (RFC 9112 section 5.2)
    (b'X : 1\r\n\r\n', 400),                   # whitespace before the colon (section 5.1)
    (b'X: 1\n\r\n', 400),                      # a bare LF ends no line here (section 2.2)
    (b'no colon\r\n\r\n', 400),
])
def test_the_trailer_section_has_the_header_grammar_and_its_limits(section, status):
    if status is None:
        assert read_chunked(section).trailers
        return
    with pytest.raises(HTTPError) as info:
        read_chunked(section)
    assert info.value.status == status and info.value.close


def test_a_record_keeps_trailer_fields_within_its_bytes():
    request = read_chunked(b'X-Sum: 2\r\nContent-Digest: sha-256=:abc=:\r\n\r\n')
    assert body_dict(body_facts(request.body))['trailer_fields'] == [
        ['X-Sum', '2'], ['Content-Digest', 'sha-256=:abc=:']]
    many = [(f'X-{n}', 'v' * 100) for n in range(MAX_TRAILER_FIELDS)]
    count, kept = trailer_facts(many)
    assert count == MAX_TRAILER_FIELDS and 0 < len(kept) < count
    assert sum(len(name) + len(value) for name, value in kept) <= RECORDED_TRAILER
    assert kept[-1][1].endswith('...')          # the value that did not fit, cut and marked
    assert trailer_facts([('X', 'v' * 10_000)])[1][0][1].endswith('...')


@given(st.lists(st.tuples(st.text('Xab-', min_size=1, max_size=40), st.text('v', max_size=300)),
                max_size=MAX_TRAILER_FIELDS))
def test_a_record_never_keeps_more_than_its_bytes_of_trailers(fields):
    count, kept = trailer_facts(fields)
    assert count == len(fields)
    assert sum(len(name) + len(value) for name, value in kept) <= RECORDED_TRAILER
    whole = [field for field in kept if field in fields]
    assert whole == fields[:len(whole)] and len(kept) - len(whole) <= 1
