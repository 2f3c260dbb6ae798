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
_soon = ([], [])   # lines said during the event loop's pass: (stdout's, stderr's)


def say(line, *, err=False):
    """Write ``line`` and a newline to stdout (or stderr with err=True)."""
    stream = sys.stderr if err else sys.stdout
    with _lock:
        stream.write(line + '\n')
        stream.flush()


def say_soon(line, *, err=False):
    """``say``, from the event loop's thread: written by the next ``flush_soon``."""
    _soon[err].append(line)


def flush_soon():
    """Write the lines said soon, in order, one write per stream."""
    out, err = _soon
    if not out and not err:
        return
    with _lock:
        for lines, stream in ((out, sys.stdout), (err, sys.stderr)):
            if lines:
                lines.append('')           # the last line's newline
                stream.write('\n'.join(lines))
                stream.flush()
                lines.clear()
