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
import json
import socket
import threading
import time

from .blocks import TruncatedBlock, get_block, put_block
from .framing import StreamReader
from .limits import HUB_BATCH_INTERVAL, RECORDS_KEPT


class Hub:
    """The socket pairs between the parent and ``workers`` forked workers, and their use."""

    def __init__(self, records, workers):
        self.records = records
        # For each worker: (parent's end, worker's end) of the way up, and of the way down.
        self._pairs = [(socket.socketpair(), socket.socketpair()) for _ in range(workers)]
        self._lock = threading.Lock()
        # Numbers: the parent's series is 0, worker n's is n + 1.
        records.number_in_series(0, workers + 1)

    def in_worker(self, index):
        """In worker ``index``, just forked: its records go up; what comes down is kept."""
        for n, (up, down) in enumerate(self._pairs):
            up[0].close()
            down[0].close()
            if n != index:
                up[1].close()
                down[1].close()
        (_, up), (_, down) = self._pairs[index]
        self.records.number_in_series(index + 1, len(self._pairs) + 1)
        self.records.listen(Sender([up], self._lock, 'records to the parent').send, own=True)
        start_receiving(down, self.records.keep, 'records from the parent')

    def in_parent(self):
        """In the parent, once every worker is forked: pass each worker's on to the others."""
        downs = [down[0] for _, down in self._pairs]
        for n, (up, down) in enumerate(self._pairs):
            up[1].close()
            down[1].close()
            others = downs[:n] + downs[n + 1:]
            start_receiving(up[0], None, 'records from a worker',
                            relay=lambda payload, others=others: self._relay(others, payload))
        self.records.listen(Sender(downs, self._lock, 'records to the workers').send, own=True)

    def _relay(self, socks, payload):
        with self._lock:            # whole blocks, never two interleaved
            send_all(socks, payload)


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
    """A thread that reads batches of records, one block each, until the other end closes:
    each record to ``take``, or each block as it came to ``relay``."""
    def receive():
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
