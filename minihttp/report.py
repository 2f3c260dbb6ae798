"""One line at a time to the console, from any thread; or a pass's lines at once.

Connection threads report concurrently; each line is written whole, under a
lock, and flushed, so that a reader (a person, a test, a log collector) never
sees two lines spliced together or a line held back in a buffer.

The event loop answers many requests in one pass: its lines (``say_soon``)
wait until the pass ends (``flush_soon``) and go out in one write per stream,
a moment later and still whole.
"""

import sys
import threading

_lock = threading.Lock()
_soon = []      # (err, line) said during the event loop's current pass


def say(line, *, err=False):
    """Write ``line`` and a newline to stdout (or stderr with err=True)."""
    stream = sys.stderr if err else sys.stdout
    with _lock:
        stream.write(line + '\n')
        stream.flush()


def say_soon(line, *, err=False):
    """``say``, from the event loop's thread: written by the next ``flush_soon``."""
    _soon.append((err, line))


def flush_soon():
    """Write the lines said soon, in order, one write per stream."""
    if not _soon:
        return
    lines = _soon[:]
    del _soon[:len(lines)]
    with _lock:
        for err, stream in ((False, sys.stdout), (True, sys.stderr)):
            text = ''.join(line + '\n' for is_err, line in lines if is_err is err)
            if text:
                stream.write(text)
                stream.flush()
