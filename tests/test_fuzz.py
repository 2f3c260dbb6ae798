"""Every parser against arbitrary bytes in arbitrary pieces: a message, or its protocol error.

hypothesis feeds the targets of fuzz/targets.py (the head parser with the body
readers, the chunked decoder, the multipart parser, the block codec and the
event loop's non-blocking head reader) with bytes it makes up, and with
mutations of valid messages, which reach deeper, delivered in pieces of a
size it chooses.  The only outcomes allowed are a parsed message or the
protocol's own error; never another exception, a hang or unbounded memory
(every read is bounded by the limits).  `make fuzz` drives the same targets
with a coverage-guided fuzzer; what it finds crashing is kept in
fuzz/crashes/ and replayed here.

FUZZ_EXAMPLES=20000 make test PYTEST_ARGS=tests/test_fuzz.py runs longer; the
suite runs 300 examples a target.
"""

import os
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from fuzz.__main__ import SEEDS
from fuzz.targets import TARGETS

EXAMPLES = settings(max_examples=int(os.environ.get('FUZZ_EXAMPLES', '300')))
CRASHES = Path(__file__).resolve().parent.parent / 'fuzz' / 'crashes'


@st.composite
def mutated(draw, valid):
    """A valid message with a few bytes replaced, inserted or removed: closer to the edge."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(['replace', 'insert', 'delete']))
        byte = draw(st.sampled_from(b'\r\n \t:;"0F-\x00\x7f\xff'))
        if action == 'insert' or not data:
            data[at:at] = bytes([byte])
        elif action == 'replace':
            data[min(at, len(data) - 1)] = byte
        else:
            del data[min(at, len(data) - 1)]
    return bytes(data)


@pytest.mark.parametrize('name', TARGETS)
def test_the_seeds_are_read_whole(name):
    TARGETS[name](SEEDS[name], 7)


@pytest.mark.parametrize('name', TARGETS)
def test_any_bytes_in_any_pieces_are_read_or_refused(name):
    @EXAMPLES
    @given(data=st.one_of(st.binary(max_size=2048), mutated(SEEDS[name])),
           piece=st.integers(1, 300))
    def check(data, piece):
        TARGETS[name](data, piece)
    check()


def test_every_input_make_fuzz_found_crashing_is_now_read_or_refused():
    found = sorted(CRASHES.glob('*-crash-*')) if CRASHES.is_dir() else []
    for crash in found:          # named TARGET-crash-HASH by make fuzz
        name = crash.name.partition('-crash-')[0]
        data = crash.read_bytes()
        if data:
            TARGETS[name](data[1:], data[0] or 1)
    assert all(crash.name.partition('-crash-')[0] in TARGETS for crash in found)
