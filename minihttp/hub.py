"""Every worker's framing records in every worker: Listing 5-2's blocks over socket pairs.

With ``--workers N`` each worker process serves HTTP on its own, but any of
them may answer ``GET /_framing`` or hold a ``/_framing/stream``.  So each
process keeps its own records and also sends them to the parent, a batch to
a block (a 4-byte length, then a JSON list of records); the parent passes
each block on, as it came, to every other worker, and sends its own (the
block server's) to all of them the same way.  Every worker then keeps every
process's records.  The framing core carries the server's own bookkeeping:
the book's framing once more.

A process numbers its records in a series of its own (every (N + 1)-th
number), so that numbers never collide.  Records are sent by a thread, in
batches gathered for HUB_BATCH_INTERVAL, and a batch holds at most the
RECORDS_KEPT newest (no process keeps more): a request costs an append, not
a system call, the parent never parses a record, and under heavy load the
other workers see the newest records of each tenth of a second.
"""

import collections
import contextlib
import json
import os
import socket
import threading
import time

from .blocks import TruncatedBlock, get_block, put_block
from .framing import StreamReader
from .limits import HUB_BATCH_INTERVAL, RECORDS_KEPT


class Hub:
    """The socket pairs between the parent and ``workers`` forked workers, and their use.

    A worker that dies is replaced (minihttp.processes.Supervisor): the parent
    makes new pairs for its place before it forks the replacement (``renew``)
    and joins them afterwards (``join``); the replacement numbers its records
    on from the last number its predecessor sent, so that no two share one.
    """

    def __init__(self, records, workers):
        self.records = records
        # For each worker: (parent's end, worker's end) of the way up, and of the way down.
        self._pairs = [self._new_pairs() for _ in range(workers)]
        self._lock = threading.Lock()
        self._downs = []            # in the parent: the way down to each worker
        self._last = [0] * workers  # in the parent: the last record number each worker sent
        self._sender = None         # in the parent: what sends its own records down
        # Numbers: the parent's series is 0, worker n's is n + 1.
        records.number_in_series(0, workers + 1)

    @staticmethod
    def _new_pairs():
        return socket.socketpair(), socket.socketpair()

    def quiet(self):
        """Hold what the parent's threads lock to pass records on: a worker forked
        meanwhile would find a lock held by a thread it does not have, for ever."""
        return _both(self._lock, self.records.held())

    def worker_ends(self, index):
        """The worker's ends of its pairs, each with what it is (device, inode)."""
        ends = {}
        for _, end in self._pairs[index]:
            st = os.fstat(end.fileno())
            ends[end.fileno()] = (st.st_dev, st.st_ino)
        return ends

    def in_worker(self, index):
        """In worker ``index``, just forked: its records go up; what comes down is kept."""
        self._sender = None         # the parent's, when this worker replaces another
        for n, (up, down) in enumerate(self._pairs):
            up[0].close()
            down[0].close()
            if n != index:
                up[1].close()
                down[1].close()
        (_, up), (_, down) = self._pairs[index]
        series = len(self._pairs) + 1
        self.records.number_in_series(index + 1, series, after=self._last[index])
        self.records.listen(Sender([up], self._lock, 'records to the parent').send, own=True)
        start_receiving(down, self.records.keep, 'records from the parent')

    def in_parent(self):
        """In the parent, once every worker is forked: pass each worker's on to the others."""
        self._downs = [down[0] for _, down in self._pairs]
        for index in range(len(self._pairs)):
            self.join(index)
        self._sender = Sender(self._downs, self._lock, 'records to the workers')
        self.records.listen(self._send_down, own=True)

    def renew(self, index):
        """In the parent, before worker ``index`` is replaced: new pairs for its place."""
        self._pairs[index] = self._new_pairs()

    def join(self, index):
        """In the parent, once worker ``index`` is forked: its records are passed on to
        the others, and theirs (and the parent's) to it."""
        up, down = self._pairs[index]
        up[1].close()
        down[1].close()
        with self._lock:
            gone, self._downs[index] = self._downs[index], down[0]
        if gone is not down[0]:
            gone.close()            # the dead worker's way down
        start_receiving(up[0], None, 'records from a worker',
                        relay=lambda payload: self._relay(index, payload))

    def _send_down(self, record):
        if self._sender is not None:
            self._sender.send(record)

    def _relay(self, index, payload):
        # The batch's last record has its highest number, last in the JSON: read from
        # the tail, without parsing the batch.
        try:
            self._last[index] = int(payload[-24:-2].rpartition(b',')[2])
        except ValueError:
            pass
        with self._lock:            # whole blocks, never two interleaved
            send_all([down for n, down in enumerate(self._downs) if n != index], payload)


@contextlib.contextmanager
def _both(first, second):
    with first, second:
        yield


def send_all(socks, payload):
    for sock in socks:
        try:
            put_block(sock, payload)
        except OSError:
            pass                    # that process has gone: nobody to tell


class Sender:
    """A thread that sends the records given to it, in batches, to every socket."""

    def __init__(self, socks, lock, name):
        self.socks = socks
        self.lock = lock
        # No more than another process keeps: under load, the newest of each batch.
        self.pending = collections.deque(maxlen=RECORDS_KEPT)
        self.ready = threading.Event()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def send(self, record):
        """Called for each record, in any thread: queue it, wake the sender if it sleeps."""
        self.pending.append(record)
        if not self.ready.is_set():
            self.ready.set()

    def _run(self):
        pending = self.pending
        while True:
            self.ready.wait()
            # Let a batch gather: a few sends a second, not one per request.
            time.sleep(HUB_BATCH_INTERVAL)
            self.ready.clear()
            batch = []
            while pending:
                batch.append(pending.popleft())
            if batch:
                payload = json.dumps(batch, separators=(',', ':')).encode()
                with self.lock:
                    send_all(self.socks, payload)


def start_receiving(sock, take, name, relay=None):
    """A thread that reads batches of records, one block each, until the other end closes
    (then closes its own): each record to ``take``, or each block as it came to ``relay``."""
    def receive():
        with sock:
            reader = StreamReader(sock)
            while True:
                try:
                    payload = get_block(reader)
                except (TruncatedBlock, OSError):
                    return
                if not payload:
                    return
                if relay is not None:
                    relay(payload)
                    continue
                for record in json.loads(payload):
                    take(record)
    threading.Thread(target=receive, name=name, daemon=True).start()
