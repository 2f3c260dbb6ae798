"""Every 413 comes from one counter, errors.SizeLimit, with its reason said one way."""

import pathlib
import re

import pytest

import minihttp
from minihttp.errors import HTTPError, SizeLimit


def test_the_limit_itself_passes_and_one_byte_more_is_413_and_closes():
    room = SizeLimit('upload', 10)
    assert room.take(4) == 4
    assert room.take(6) == 10
    with pytest.raises(HTTPError) as refused:
        room.take(1)
    assert (refused.value.status, refused.value.close) == (413, True)
    assert refused.value.reason == 'upload: more than 10 bytes'


def test_an_announced_size_is_refused_before_anything_is_counted():
    room = SizeLimit('upload', 10)
    room.refuse(10)
    room.refuse(None)                   # not announced (chunked): counted as it comes
    with pytest.raises(HTTPError) as refused:
        room.refuse(11)
    assert refused.value.reason == 'upload: 11 bytes, more than 10 bytes'
    assert room.seen == 0


def test_a_sink_counts_every_piece_before_it_passes_it_on():
    kept = bytearray()
    sink = SizeLimit('request body', 5, ).sink(kept.extend)
    sink(b'abc')
    with pytest.raises(HTTPError, match='request body: more than 5 bytes'):
        sink(b'def')
    assert kept == b'abc'               # the piece that passed the limit was not taken


def test_no_limit_counts_without_refusing():
    room = SizeLimit('form', None, 'parts')
    assert room.take(10 ** 9) == 10 ** 9
    room.refuse(10 ** 12)
    assert room.sink(print) is print


def test_no_module_raises_a_413_of_its_own():
    package = pathlib.Path(minihttp.__file__).parent
    raising = [path.name for path in package.glob('*.py')
               if re.search(r'HTTPError\(\s*413', path.read_text())]
    assert raising == ['errors.py']
