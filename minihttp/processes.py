"""Running servers until a signal: in one process, or as supervised worker processes.

The HTTP server and the block server each wait in an event loop
(minihttp.eventloop), whose face (``address``, ``name``, ``start()``,
``stop(grace)``) is all that ``run_until_signalled`` and ``run_workers`` need.
"""

import contextlib
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback

from .limits import (ORPHAN_GRACE, RESPAWN_DELAY, RESPAWN_DELAY_MAX, SHUTDOWN_GRACE,
                     WORKER_STEADY, WORKER_STOP_SLACK)
from .report import say

# prctl(2): the signal a process gets when the thread that forked it ends.
PR_SET_PDEATHSIG = 1


class Signals:
    """Signals turned into wake-ups of the main thread, for as long as the ``with`` lasts.

    The main thread sleeps in ``wait`` on a socket that the C-level signal
    handler writes to (set_wakeup_fd): woken by the signal itself, no polling.
    The Python-level handler only notes the signal, without a lock: it runs in
    the main thread between two bytecodes, possibly while that thread holds a
    lock, and an Event.set() would then wait forever for the lock of the very
    wait it interrupted.
    """

    def __init__(self, *signums):
        self.signums = signums
        self.received = []

    def __enter__(self):
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._previous = {sig: signal.signal(sig, self._note) for sig in self.signums}
        self._previous_fd = signal.set_wakeup_fd(self._wake_w.fileno())
        return self

    def _note(self, signum, frame):
        self.received.append(signum)

    def __exit__(self, *exc_info):
        signal.set_wakeup_fd(self._previous_fd)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._wake_r.close()
        self._wake_w.close()

    def wait(self, timeout=None, watch=()):
        """Sleep until a signal, ``timeout`` seconds, or one of the descriptors ``watch``
        is readable; return the readable ones of ``watch``."""
        if self.received:
            timeout = 0
        ready = select.select([self._wake_r, *watch], [], [], timeout)[0]
        if self._wake_r in ready:
            self._wake_r.recv(64)
            ready.remove(self._wake_r)
        return ready

    def take(self):
        """The signals received since the last take, oldest first."""
        received, self.received = self.received, []
        return received


def run_until_signalled(listeners, grace=SHUTDOWN_GRACE, lifeline=None):
    """Serve on every listener until SIGINT or SIGTERM, then stop them all.

    ``lifeline`` (in a worker) is the read end of a pipe that only the parent
    holds open for writing: when it ends, however the parent went (SIGKILL
    included), this process stops too, giving in-flight work ORPHAN_GRACE.
    """
    watch = () if lifeline is None else (lifeline,)
    orphan_signals = () if lifeline is None else (signal.SIGHUP,)
    stopped = False
    try:
        with Signals(signal.SIGINT, signal.SIGTERM, *orphan_signals) as signals:
            for listener in listeners:
                listener.start()
            while True:
                ended = signals.wait(None, watch)
                received = signals.take()
                # The pipe's end, or the kernel's SIGHUP at the parent's death
                # (die_with_parent), whichever comes first.
                if ended or signal.SIGHUP in received:
                    # Stopped here, where the other, however late, is only noted.
                    say(f'worker {os.getpid()}: the parent process is gone; stopping', err=True)
                    stopped = True
                    stop_all(listeners, min(grace, ORPHAN_GRACE))
                    return
                if received:
                    break
    finally:
        if not stopped:
            stop_all(listeners, grace)


def stop_all(listeners, grace):
    """Stop every listener at once (each lets its work finish for ``grace`` seconds)."""
    stoppers = [threading.Thread(target=l.stop, args=(grace,)) for l in listeners]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join()


def run_workers(shared, others, workers, grace=SHUTDOWN_GRACE, hub=None, reaped=None):
    """Serve ``shared`` from ``workers`` forked processes until SIGINT or SIGTERM.

    Each worker accepts from a listening socket of its own on the one port
    (the first keeps the one bound here; see EventLoop.listen_apart) and runs
    its own threads: Python runs one thread at a time per process, so under
    many small requests the threads of one process mostly wait for each
    other; processes do not.  This process serves ``others`` meanwhile,
    replaces a worker that dies, and on a signal stops the workers and waits
    for them.  ``hub`` (a minihttp.hub.Hub) connects the workers' records to
    this process.  ``reaped(pid)`` clears what a worker that died leaves behind
    (its uploads' temporary files).
    """
    Supervisor(shared, others, workers, grace, hub, reaped).run()


class Supervisor:
    """The parent of the worker processes: forks them, replaces the dead, stops them all.

    Workers die with their parent: each watches a pipe that only the parent
    holds open for writing (its end is the parent's death, even by SIGKILL),
    and asks Linux for SIGHUP when the parent dies as a second line.  A dead
    worker is reaped at its SIGCHLD, logged with its exit status, and replaced,
    at once unless workers keep dying young (``Backoff``).

    A replacement is forked from a parent whose threads are at work (the
    block server, the hub): it is forked while the locks those threads take
    are held (so that it finds them free), and it lets go of every descriptor
    the parent opened since the first workers were forked (the block server's
    connections and files: a copy held by a worker would keep them open).
    """

    def __init__(self, shared, others, count, grace, hub, reaped=None):
        self.shared = shared
        self.others = others
        self.count = count
        self.grace = grace
        self.hub = hub
        self.reaped = reaped  # called with the pid of each worker that died
        self.workers = {}     # pid -> (index, when it started)
        self.due = {}         # index -> (when its replacement is due, the pid it replaces)
        self.backoff = Backoff()
        # Only this process holds the write end open; every worker watches the read end.
        self.lifeline, self.lifeline_w = os.pipe()
        # What the first workers inherit (descriptor -> what it is): all a replacement keeps.
        self.inherited = descriptors()

    def run(self):
        try:
            for index in range(self.count):
                self.fork(index)
            say(f'{self.shared.name} served by {self.count} worker processes: '
                f'{" ".join(map(str, self.workers))}')
            if self.hub is not None:
                self.hub.in_parent()
            with Signals(signal.SIGINT, signal.SIGTERM, signal.SIGCHLD) as signals:
                try:
                    self.supervise(signals)
                finally:
                    self.stop(signals)
        finally:
            self.shared.sock.close()
            os.close(self.lifeline)
            os.close(self.lifeline_w)

    def supervise(self, signals):
        for listener in self.others:
            listener.start()
        while True:
            self.reap()                    # (a worker may have died before SIGCHLD was ours)
            now = time.monotonic()
            for index, (when, dead) in list(self.due.items()):
                if when <= now:
                    del self.due[index]
                    if self.hub is not None:
                        self.hub.renew(index)      # new socket pairs for the replacement
                    pid = self.fork(index)
                    if self.hub is not None:
                        self.hub.join(index)
                    say(f'{self.shared.name} worker {pid} started in place of {dead}',
                        err=True)
            next_due = min((when for when, _ in self.due.values()), default=None)
            signals.wait(None if next_due is None else max(0.0, next_due - now))
            received = signals.take()
            if signal.SIGINT in received or signal.SIGTERM in received:
                return

    def reap(self):
        """Every worker that died: said with its exit status, its replacement scheduled."""
        for pid, (index, started) in list(self.workers.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if not done:
                continue
            del self.workers[pid]
            if self.reaped is not None:    # before the line: it finds nothing left
                try:
                    self.reaped(pid)
                except OSError as exc:
                    say(f'{self.shared.name} worker {pid}: could not clear what it left: '
                        f'{exc}', err=True)
            now = time.monotonic()
            delay = self.backoff.after(now - started)
            self.due[index] = (now + delay, pid)
            later = f' in {delay:g} s (workers keep dying young)' if delay else ''
            say(f'{self.shared.name} worker {pid} {exit_status(status)} after '
                f'{now - started:.1f} s; replacing it{later}', err=True)

    def fork(self, index):
        with (self.hub.quiet() if self.hub is not None else contextlib.nullcontext()):
            pid = os.fork()
        if pid == 0:
            self.work(index)               # never returns
        self.workers[pid] = (index, time.monotonic())
        return pid

    def work(self, index):
        """In the forked worker: serve until a signal, or until the parent is gone."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)       # the parent's: not ours to write to
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.default_int_handler)
            # die_with_parent's signal: until run_until_signalled notes it, the pipe
            # alone tells the parent's death (it is not missed: it stays ended).
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.close(self.lifeline_w)
            die_with_parent()
            for listener in self.others:
                listener.sock.close()
            keep = dict(self.inherited)
            if self.hub is not None:
                keep.update(self.hub.worker_ends(index))
            forget_descriptors(keep)
            if self.hub is not None:
                self.hub.in_worker(index)
            if index:
                self.shared.listen_apart()     # the first keeps the parent's socket
            run_until_signalled([self.shared], self.grace, self.lifeline)
            code = 0
        except KeyboardInterrupt:          # stopped before its handlers were in place
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def stop(self, signals):
        """SIGTERM to every worker, stop the other servers, and wait for the workers (for
        --grace and WORKER_STOP_SLACK, then SIGKILL)."""
        for pid in self.workers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        stopper = threading.Thread(target=stop_all, args=(self.others, self.grace))
        stopper.start()
        deadline = time.monotonic() + self.grace + WORKER_STOP_SLACK
        while self.workers:
            for pid in list(self.workers):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    del self.workers[pid]
            left = deadline - time.monotonic()
            if not self.workers:
                break
            if left <= 0:
                for pid in self.workers:
                    say(f'{self.shared.name} worker {pid} did not stop in time: killed', err=True)
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                break
            signals.wait(left)             # woken by each SIGCHLD
            signals.take()
        stopper.join()


class Backoff:
    """How long to wait before replacing a dead worker: not at all, unless workers keep
    dying young (each death in a row of workers that ran less than WORKER_STEADY
    seconds doubles the wait, from RESPAWN_DELAY up to RESPAWN_DELAY_MAX)."""

    def __init__(self):
        self.young = 0        # deaths in a row of workers that died young

    def after(self, lived):
        """The wait before replacing a worker that died after ``lived`` seconds."""
        if lived >= WORKER_STEADY:
            self.young = 0
            return 0.0
        self.young += 1
        if self.young == 1:
            return 0.0        # once is not a loop
        return min(RESPAWN_DELAY * 2 ** (self.young - 2), RESPAWN_DELAY_MAX)


def exit_status(status):
    """How a process ended, from its wait status: 'was killed by SIGKILL', 'exited with
    status 3'."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f'signal {number}'
        return f'was killed by {name}'
    return f'exited with status {os.waitstatus_to_exitcode(status)}'


def die_with_parent():
    """Ask Linux for SIGHUP when the parent dies (prctl PR_SET_PDEATHSIG): the second
    line, beside the lifeline pipe.  Elsewhere, or without libc, the pipe alone.

    Not SIGTERM: it comes when the parent's main thread ends, which may be before
    its other threads let go of the pipe, and a worker must tell it from a stop.
    """
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGHUP), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def descriptors():
    """This process's open descriptors, each with what it refers to (device, inode)."""
    found = {}
    try:
        names = os.listdir('/proc/self/fd')
    except OSError:
        return found          # not Linux: nothing known, nothing let go
    for name in names:
        try:
            st = os.fstat(int(name))
        except OSError:
            continue          # the listing's own, closed by now
        found[int(name)] = (st.st_dev, st.st_ino)
    return found


def forget_descriptors(keep):
    """Let go of every descriptor not in ``keep`` (descriptor -> what it must refer to).

    Each is pointed at /dev/null rather than closed: the Python objects that own
    them (the parent's connections and files) may close them one day, and must
    not close a number reused meanwhile, nor flush a copy of the parent's buffer
    into its file.
    """
    found = descriptors()
    if not found:
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd, what in found.items():
            if fd > 2 and fd != null and keep.get(fd) != what:
                os.dup2(null, fd)
    finally:
        os.close(null)
