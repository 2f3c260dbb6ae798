"""Every worker's framing records in every worker that reads them: Listing 5-2's blocks over
socket pairs, asked for on demand.

With ``--workers N`` each worker process serves HTTP on its own, but any of
them may answer ``GET /_framing`` or hold a ``/_framing/stream``.  Each
process keeps only its own records while nobody looks: a request costs no
more with workers than without (sending every record to the parent, as this
hub first did, cost 15-25% of a TLS worker's time under load).  A reader asks:

* a worker about to read its records (``FramingLog.kept``: GET /_framing, a
  stream opening) sends ``?`` and a tag up to the parent, which passes the
  question to every other worker and answers with its own records (the block
  server's); each worker answers with its own, which the parent passes to
  every other worker.  An answer is a block: ``R``, the tag, the highest
  record number the process gave, and as JSON its records that are new or
  changed since its last answer (every worker was sent that one too).  The
  reader waits until every process has answered (at most HUB_ASK_TIMEOUT: a
  worker being replaced does not), so what it serves includes every process's
  records as they were when it asked;
* a worker holding a stream asks every HUB_BATCH_INTERVAL while it does, and
  the answers reach the stream as they are merged (``FramingLog.merge``).

An answer costs what changed since the last one: a client reading /_framing in
a loop costs each other process a look over its ring per read, and each record
is made JSON for the others once per version.  A process numbers its records
in a series of its own (every (N + 1)-th number), so that numbers never
collide; the parent never parses a record, only the number in an answer's
header (a replacement worker numbers on from its predecessor's).
"""

import contextlib
import json
import os
import socket
import threading
import time

from .blocks import TruncatedBlock, get_block, put_block
from .framing import StreamReader
from .limits import HUB_ASK_TIMEOUT, HUB_BATCH_INTERVAL
from .records import NUMBER, VERSION

ASK, ANSWER = b'?', b'R'


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
        # In a worker: its index and way up, and the question a read waits on.  A
        # question's answers come from every other process: the other workers and the
        # parent.
        self._index = None
        self._up = None
        self._round = 0
        # The questions reads wait on: tag -> [answers so far, the Event set by the
        # last].  Each read has its own, so that reads on several pool threads never
        # take each other's answers.
        self._waiting = {}
        self._streams = threading.Event()
        # What this process's last answer told (number -> version), and the lock of
        # answering (the parent answers from a thread per worker).
        self._told = {}
        self._answering = threading.Lock()
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

    # -- in a worker ------------------------------------------------------------------

    def in_worker(self, index):
        """In worker ``index``, just forked: its records stay here until asked for; a
        read of them here asks the others for theirs."""
        for n, (up, down) in enumerate(self._pairs):
            up[0].close()
            down[0].close()
            if n != index:
                up[1].close()
                down[1].close()
        (_, up), (_, down) = self._pairs[index]
        self._index, self._up = index, up
        self._told = {}             # the parent's, when this worker replaces another
        series = len(self._pairs) + 1
        self.records.number_in_series(index + 1, series, after=self._last[index])
        self.records.on_read(self.ask, self._streams.set)
        start_receiving(down, self._from_parent, 'records from the parent')
        threading.Thread(target=self._follow, name='records for streams', daemon=True).start()

    def ask(self, wait=True):
        """Ask every other process for its records; with ``wait`` (a read: on a pool
        thread, never the loop's, see App.inline), until all have answered, within
        HUB_ASK_TIMEOUT."""
        answered = threading.Event()
        with self._lock:
            self._round += 1
            tag = b'%d.%d' % (self._index, self._round)
            if wait:
                self._waiting[tag] = [0, answered]
            send_all([self._up], ASK + tag)
        if wait:
            try:
                answered.wait(HUB_ASK_TIMEOUT)
            finally:
                with self._lock:
                    del self._waiting[tag]

    def _follow(self):
        """While this worker holds a stream: ask every HUB_BATCH_INTERVAL (the answers
        reach the streams as they are merged)."""
        while True:
            self._streams.wait()
            self._streams.clear()
            while self.records.streams:
                self.ask(wait=False)
                time.sleep(HUB_BATCH_INTERVAL)

    def _from_parent(self, payload):
        kind = payload[:1]
        if kind == ASK:
            mine = self._answer(payload[1:])
            with self._lock:
                send_all([self._up], mine)
            return
        if kind != ANSWER:
            return
        tag, _, data = payload[1:].split(b' ', 2)
        self.records.merge(json.loads(data))
        with self._lock:
            waiting = self._waiting.get(tag)
            if waiting is not None:
                waiting[0] += 1
                if waiting[0] >= len(self._pairs):   # the other workers and the parent
                    waiting[1].set()

    # -- in the parent ----------------------------------------------------------------

    def in_parent(self):
        """In the parent, once every worker is forked: pass questions and answers on."""
        self._downs = [down[0] for _, down in self._pairs]
        for index in range(len(self._pairs)):
            self.join(index)

    def renew(self, index):
        """In the parent, before worker ``index`` is replaced: new pairs for its place."""
        self._pairs[index] = self._new_pairs()

    def join(self, index):
        """In the parent, once worker ``index`` is forked: its questions and answers are
        passed on to the others, and theirs (and the parent's answers) to it."""
        up, down = self._pairs[index]
        up[1].close()
        down[1].close()
        with self._lock:
            gone, self._downs[index] = self._downs[index], down[0]
        if gone is not down[0]:
            gone.close()            # the dead worker's way down
        start_receiving(up[0], lambda payload: self._from_worker(index, payload),
                        'records from a worker')

    def _from_worker(self, index, payload):
        kind = payload[:1]
        if kind == ASK:
            mine = self._answer(payload[1:])
        elif kind == ANSWER:
            mine = None
            try:        # the highest number it gave: its replacement numbers on from it
                self._last[index] = max(self._last[index], int(payload[1:].split(b' ', 2)[1]))
            except (ValueError, IndexError):
                pass
        else:
            return
        with self._lock:            # whole blocks, never two interleaved
            send_all([down for n, down in enumerate(self._downs) if n != index], payload)
            if mine is not None:
                send_all(self._downs, mine)


    def _answer(self, tag):
        """The block that answers question ``tag``: this process's own records that are
        new or in a new version since its last answer."""
        with self._answering:
            own, last = self.records.own()
            told = self._told
            changed = [record for record in own
                       if told.get(record[NUMBER], -1) < record[VERSION]]
            self._told = {record[NUMBER]: record[VERSION] for record in own}
        return b'%s%s %d %s' % (ANSWER, tag, last,
                                json.dumps(changed, separators=(',', ':')).encode())


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


def start_receiving(sock, handle, name):
    """A thread that reads blocks until the other end closes (then closes its own), each
    to ``handle``."""
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
                handle(payload)
    threading.Thread(target=receive, name=name, daemon=True).start()
