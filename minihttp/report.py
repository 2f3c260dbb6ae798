"""One line at a time to the console, from any thread.

Connection threads report concurrently; each line is written whole, under a
lock, and flushed, so that a reader (a person, a test, a log collector) never
sees two lines spliced together or a line held back in a buffer.
"""

import sys
import threading

_lock = threading.Lock()


def say(line, *, err=False):
    """Write ``line`` and a newline to stdout (or stderr with err=True)."""
    stream = sys.stderr if err else sys.stdout
    with _lock:
        stream.write(line + '\n')
        stream.flush()
