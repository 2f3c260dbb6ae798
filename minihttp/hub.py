"""Every worker's framing records in every worker: Listing 5-2's blocks over socket pairs.

With ``--workers N`` each worker process serves HTTP on its own, but any of
them may answer ``GET /_framing`` or hold a ``/_framing/stream``.  So a
worker keeps none of its records itself: it sends each one to the parent as
one block (a 4-byte length, then the record as JSON), the parent numbers it
among its own (the block server's) and sends it back down to every worker
the same way.  Every worker then keeps every record, in one order, with one
number.  The framing core carries the server's own bookkeeping: the book's
framing once more.
"""

import json
import socket
import threading

from .blocks import TruncatedBlock, get_block, put_block
from .framing import StreamReader


class Hub:
    """The socket pairs between the parent and ``workers`` forked workers, and their use."""

    def __init__(self, records, workers):
        self.records = records
        # For each worker: (parent's end, worker's end) of the way up, and of the way down.
        self._pairs = [(socket.socketpair(), socket.socketpair()) for _ in range(workers)]
        self._downs = []
        self._lock = threading.Lock()

    def in_worker(self, index):
        """In worker ``index``, just forked: records go up; what comes down is kept."""
        for n, (up, down) in enumerate(self._pairs):
            up[0].close()
            down[0].close()
            if n != index:
                up[1].close()
                down[1].close()
        (_, up), (_, down) = self._pairs[index]
        self.records.forward = lambda record: self._send([up], record)
        start_receiving(down, self.records.keep, 'records from the parent')

    def in_parent(self):
        """In the parent, once every worker is forked: number what comes up, send it down."""
        for up, down in self._pairs:
            up[1].close()
            down[1].close()
            self._downs.append(down[0])
            start_receiving(up[0], self.records.add, 'records from a worker')
        self.records.listen(lambda record: self._send(self._downs, record))

    def _send(self, socks, record):
        payload = json.dumps(record, separators=(',', ':')).encode()
        with self._lock:            # whole blocks, never two interleaved
            for sock in socks:
                try:
                    put_block(sock, payload)
                except OSError:
                    pass            # that process has gone: nobody to tell


def start_receiving(sock, take, name):
    """A thread that reads records, one block each, until the other end closes."""
    def receive():
        reader = StreamReader(sock)
        while True:
            try:
                payload = get_block(reader)
            except (TruncatedBlock, OSError):
                return
            if not payload:
                return
            take(json.loads(payload))
    threading.Thread(target=receive, name=name, daemon=True).start()
