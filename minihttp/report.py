"""One line at a time to the console, from any thread; or a pass's lines at once.

The loop thread and the pool threads report concurrently; each line is
written whole, under a lock, and flushed, so that a reader (a person, a test,
a log collector) never sees two lines spliced together or a line held back in
a buffer.

A ``Progress`` bar redraws one terminal line in place.

The event loop answers many requests in one pass: its lines (``say_soon``)
wait until the pass ends (``flush_soon``) and go out in one write per stream,
a moment later and still whole.
"""

import os
import sys
import threading
import time
import traceback

_lock = threading.Lock()
# A process forked while another thread writes a line would inherit this lock
# (and the stream's own) held for ever: fork only between lines.
os.register_at_fork(before=_lock.acquire, after_in_parent=_lock.release,
                    after_in_child=_lock.release)
_soon = ([], [])   # lines said during the event loop's pass: (stdout's, stderr's)


def say(line, *, err=False):
    """Write ``line`` and a newline to stdout (or stderr with err=True)."""
    stream = sys.stderr if err else sys.stdout
    with _lock:
        stream.write(line + '\n')
        stream.flush()


def log_failure(what):
    """An error of ours (not the peer's going away: errors.peer_gone), in an ``except``
    block: ``what`` failed, said on stderr with the traceback.  The one place every
    such error is logged."""
    say(f'{what}:\n{traceback.format_exc().rstrip()}', err=True)


def say_soon(line, *, err=False):
    """``say``, from the event loop's thread: written by the next ``flush_soon``."""
    _soon[err].append(line)


# ``say_soon(line, err=True)`` without a Python call, for the line every request says
# (the access log's): the list's own append (flush_soon empties it in place).
log_soon = _soon[1].append


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


class Progress:
    """A progress bar on one terminal line: bytes, rate, and time left when the total is known.

    Redrawn in place (carriage return) at most ``rate`` times a second; ``done``
    ends the line.  For a terminal only: the caller decides (stderr.isatty()).
    """

    WIDTH = 24

    def __init__(self, total=None, stream=None, rate=10):
        self.total = total
        self.stream = stream or sys.stderr
        self.interval = 1 / rate
        self.started = time.monotonic()
        self._drawn = 0.0
        self._sent = 0

    def __call__(self, sent):
        self._sent = sent
        now = time.monotonic()
        if now - self._drawn >= self.interval:
            self._drawn = now
            self._draw(now)

    def done(self):
        self._draw(time.monotonic())
        self.stream.write('\n')
        self.stream.flush()

    def _draw(self, now):
        elapsed = max(now - self.started, 1e-6)
        speed = self._sent / elapsed
        text = f'{amount(self._sent)}'
        if self.total:
            share = min(self._sent / self.total, 1.0)
            filled = int(share * self.WIDTH)
            left = (self.total - self._sent) / speed if speed else 0.0
            text = (f'[{"#" * filled}{"." * (self.WIDTH - filled)}] {share:4.0%} {text} of '
                    f'{amount(self.total)}, {amount(speed)}/s, {clock(left)} left')
        else:
            text = f'{text}, {amount(speed)}/s'
        self.stream.write('\r' + text + '\x1b[K')     # and erase what a longer line left
        self.stream.flush()


def amount(nbytes):
    """A byte count for people: 512 B, 1.5 KiB, 27.0 MiB."""
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if nbytes < 1024 or unit == 'GiB':
            return f'{nbytes:.0f} {unit}' if unit == 'B' else f'{nbytes:.1f} {unit}'
        nbytes /= 1024
    return f'{nbytes:.1f} GiB'


def clock(seconds):
    """Seconds as m:ss (or h:mm:ss)."""
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f'{hours}:{minutes:02}:{seconds:02}' if hours else f'{minutes}:{seconds:02}'
