"""The loop's deadline heap (minihttp.deadlines.Deadlines), through its public face.

A keep-alive connection moves its deadline later with every request; a
flood of short connections closes each one long before its deadline.
Neither may make the heap grow without bound, and no deadline may be missed
or met early.
"""

from minihttp.deadlines import Deadlines
from minihttp.limits import STALE_TIMERS


class Owner:
    """What the heap asks of an owner: ``deadline`` and ``timer``."""

    __slots__ = ('name', 'deadline', 'timer')

    def __init__(self, name):
        self.name = name
        self.deadline = self.timer = None

    def __repr__(self):
        return f'Owner({self.name!r})'


def test_later_deadlines_do_not_grow_the_heap():
    deadlines, owner = Deadlines(), Owner('keep-alive')
    for n in range(1000):                     # a keep-alive client's many requests
        deadlines.set(owner, 100.0 + n)
    assert len(deadlines) == 1 and owner.deadline == 1099.0
    deadlines.set(owner, 50.0)                # earlier: a second entry, the live one
    assert len(deadlines) == 2 and deadlines.earliest() == 50.0


def test_an_entry_that_comes_up_early_goes_back_in_once_and_is_due_at_its_deadline():
    deadlines, owner = Deadlines(), Owner('moved')
    deadlines.set(owner, 10.0)
    deadlines.set(owner, 20.0)                # moved later: the same entry
    assert list(deadlines.due(15.0)) == [] and deadlines.earliest() == 20.0
    assert len(deadlines) == 1
    assert list(deadlines.due(20.0)) == [owner] and deadlines.earliest() is None


def test_due_owners_come_earliest_first_and_each_once():
    deadlines = Deadlines()
    owners = [Owner(n) for n in range(5)]
    for n, owner in zip((3, 1, 4, 0, 2), owners):
        deadlines.set(owner, float(n))
    deadlines.set(owners[1], 0.5)             # earlier than it was: its old entry is stale
    assert [o.name for o in deadlines.due(3.0)] == [3, 1, 4, 0]
    assert list(deadlines.due(3.0)) == []     # each once
    assert [o.name for o in deadlines.due(10.0)] == [2]


def test_a_cleared_owner_is_never_due_and_a_forgotten_one_leaves_the_heap():
    deadlines = Deadlines()
    cleared, forgotten, live = Owner('cleared'), Owner('forgotten'), Owner('live')
    for owner in (cleared, forgotten, live):
        deadlines.set(owner, 1.0)
    deadlines.clear(cleared)                  # waits with no deadline (on a pool thread, say)
    deadlines.forget(forgotten)               # closed
    assert forgotten.timer is None and forgotten.deadline is None
    assert list(deadlines.due(2.0)) == [live]
    assert len(deadlines) == 0


def test_forgotten_owners_do_not_stay_in_the_heap():
    deadlines, live = Deadlines(), Owner('live')
    deadlines.set(live, 5.0)
    for n in range(5000):                     # many short connections, each closed
        owner = Owner(n)
        deadlines.set(owner, 10.0 + n)
        deadlines.forget(owner)
    assert len(deadlines) <= 1 + 2 * STALE_TIMERS
    assert list(deadlines.due(5.0)) == [live]


def test_an_owner_forgotten_while_the_due_ones_are_handled_is_not_yielded():
    # Closing a due connection may forget others (and rebuild the heap) mid-iteration.
    deadlines = Deadlines()
    owners = [Owner(n) for n in range(3 * STALE_TIMERS)]
    for n, owner in enumerate(owners):
        deadlines.set(owner, float(n))
    seen = []
    for owner in deadlines.due(float(len(owners))):
        seen.append(owner.name)
        if owner.name == 0:
            for other in owners[1::2]:        # enough to rebuild the heap
                deadlines.forget(other)
    assert seen == [0] + [n for n in range(2, len(owners), 2)]
    assert len(deadlines) == 0
