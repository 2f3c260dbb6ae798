"""Every parser against arbitrary bytes in arbitrary pieces: a message, or its protocol error.

hypothesis feeds the targets of fuzz/targets.py (the head parser with the body
readers, the chunked decoder, the multipart parser, the block codec and the
event loop's non-blocking head reader) with bytes it makes up, and with
mutations of valid messages, which reach deeper, delivered in pieces of a
size it chooses.  The only outcomes allowed are a parsed message or the
protocol's own error; never another exception, a hang or unbounded memory
(every read is bounded by the limits), and never a slow answer: an example
that takes longer than DEADLINE fails, as a crash does.  `make fuzz` drives
the same targets with a coverage-guided fuzzer and the same kind of budget;
what it finds crashing or too slow is kept in fuzz/crashes/ and replayed here.

FUZZ_EXAMPLES=20000 make test PYTEST_ARGS=tests/test_fuzz.py runs longer; the
suite runs 300 examples a target.
"""

import os
import re
import signal
import traceback
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from fuzz.__main__ import SEEDS
from fuzz.targets import TARGETS

# An example (at most a few KiB) that takes longer than this fails: a linear parser
# reads it in well under a millisecond, while a backtracking one can take seconds on
# a hundred bytes.  Generous, so that a loaded machine is never mistaken for one.
DEADLINE = timedelta(seconds=1)
EXAMPLES = settings(max_examples=int(os.environ.get('FUZZ_EXAMPLES', '300')),
                    deadline=DEADLINE)
CRASHES = Path(__file__).resolve().parent.parent / 'fuzz' / 'crashes'


@st.composite
def mutated(draw, valid):
    """A valid message with a few bytes replaced, inserted or removed, a run of one byte
    inserted, or a piece of it repeated (runs of whitespace, repeated lines and
    separators are what make a backtracking parser slow): closer to the edge."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(['replace', 'insert', 'delete', 'run', 'repeat']))
        byte = draw(st.sampled_from(b'\r\n \t:;"0F-\x00\x7f\xff'))
        if action == 'run':
            data[at:at] = bytes([byte]) * draw(st.integers(2, 200))
        elif action == 'repeat':
            piece = data[at:at + draw(st.integers(1, 40))]
            data[at:at] = piece * draw(st.integers(1, 20))
        elif action == 'insert' or not data:
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


class TooSlow(BaseException):
    """An input past its CPU budget (a BaseException, so that no ``except Exception``
    on the way can take it for a parse error and swallow it)."""


# What libFuzzer keeps, named by `make fuzz` (-artifact_prefix=crashes/TARGET-):
# TARGET-crash-HASH, TARGET-timeout-HASH, TARGET-oom-HASH, TARGET-leak-HASH,
# TARGET-slow-unit-HASH.
KEPT = re.compile(r'(?P<target>.+?)-(?:crash|timeout|oom|leak|slow-unit)-[0-9a-f]+')


def replay(path):
    """Run one kept input as `make fuzz` ran it; None if it is now read or refused in time,
    else what went wrong."""
    named = KEPT.fullmatch(path.name)
    if not named or named['target'] not in TARGETS:
        return f'{path.name}: not TARGET-KIND-HASH with TARGET one of {", ".join(TARGETS)}'
    data = path.read_bytes()
    if not data:                 # libFuzzer's input: the first byte is the piece size
        return None

    def expire(signum, frame):
        raise TooSlow()
    previous = signal.signal(signal.SIGPROF, expire)
    try:
        signal.setitimer(signal.ITIMER_PROF, DEADLINE.total_seconds())
        TARGETS[named['target']](data[1:], data[0] or 1)
    except TooSlow:
        return f'{path.name}: more than {DEADLINE} of CPU time'
    except Exception:
        return f'{path.name}: {traceback.format_exc()}'
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
    return None


def test_every_input_make_fuzz_kept_is_now_read_or_refused_in_time():
    """Every file in fuzz/crashes/ is replayed; any that still crashes or runs past
    DEADLINE fails the test, and all of them are named, not just the first."""
    kept = sorted(path for path in CRASHES.iterdir() if path.is_file())
    failures = [failure for failure in map(replay, kept) if failure]
    assert not failures, '\n'.join(failures)
