"""Deadlines of many connections in one lazy heap: no timer, no thread per connection.

The event loop gives each waiting connection a deadline (idle, a head begun,
a body not begun, a stalled send) and sleeps until the earliest.  A
keep-alive connection moves its deadline later with every request; were each
move a heap entry (or a removal, which a heap does not do cheaply), the heap
would grow with the request rate.  So the heap is lazy:

* an owner (a connection) keeps its own ``deadline`` and ``timer`` (its one
  live entry in the heap); a later deadline changes only ``deadline``, and the
  entry, when it comes up, finds it moved and goes back in once;
* an earlier deadline adds an entry, and the old one no longer counts;
* an owner that is closed is ``forget``-ed: its entry no longer counts, and
  when such stale entries are most of the heap (past STALE_TIMERS), the heap
  is rebuilt without them, so that many short connections are not kept in
  memory until their deadlines.

An owner is any object with the attributes ``deadline`` (when its wait ends,
on the clock the caller uses, or None) and ``timer`` (None at first); only
this class writes ``timer``.
"""

import heapq
import itertools

from .limits import STALE_TIMERS


class Deadlines:
    """One lazy heap of (deadline, n, owner) entries: ``set``, ``clear``, ``forget``,
    ``earliest`` and ``due``."""

    __slots__ = ('_heap', '_stale', '_count')

    def __init__(self):
        self._heap = []
        self._stale = 0                   # entries that no longer count
        self._count = itertools.count()   # ties go in order, never to the owners

    def __len__(self):
        """Entries in the heap, stale ones included: what it holds in memory."""
        return len(self._heap)

    def set(self, owner, deadline):
        """The owner's wait ends at ``deadline``."""
        owner.deadline = deadline
        entry = owner.timer
        if entry is not None and entry[0] <= deadline:
            return     # later (or the same): the entry comes up first, and goes back in
        owner.timer = (deadline, next(self._count), owner)
        heapq.heappush(self._heap, owner.timer)
        if entry is not None:
            self._one_stale()

    @staticmethod
    def clear(owner):
        """The owner waits with no deadline (its entry is dropped when it comes up)."""
        owner.deadline = None

    def forget(self, owner):
        """The owner is gone: its entry no longer counts (nor keeps it in memory long)."""
        entry, owner.timer, owner.deadline = owner.timer, None, None
        if entry is not None:
            self._one_stale()

    def earliest(self):
        """When the first entry comes up (it may turn out stale, or moved), or None."""
        return self._heap[0][0] if self._heap else None

    def due(self, now):
        """The owners whose deadline is ``now`` or before, earliest first (a generator).

        Each is yielded once, its entry gone; what it does next (set again,
        forgotten) is the caller's.  Entries that come up for owners whose
        deadline moved later go back in, once; stale ones are dropped.
        """
        while self._heap and self._heap[0][0] <= now:
            # self._heap each time: forgetting (closing) an owner may rebuild it.
            entry = heapq.heappop(self._heap)
            owner = entry[2]
            if owner.timer is not entry:
                self._stale -= 1          # replaced by an earlier entry, or forgotten
                continue
            owner.timer = None
            if owner.deadline is None:
                continue
            if owner.deadline > now:
                self.set(owner, owner.deadline)
                continue
            yield owner

    def _one_stale(self):
        """One more entry no longer counts; when most of the heap is such, rebuild it."""
        self._stale += 1
        if self._stale > STALE_TIMERS and self._stale > len(self._heap) // 2:
            self._heap = [entry for entry in self._heap if entry[2].timer is entry]
            heapq.heapify(self._heap)
            self._stale = 0
