"""The block server: Listing 5-2's protocol on the event loop, headers there, payloads on the pool.

The block transport (minihttp.blocks) says what a block is; this is the
server that receives streams of them, as minihttp.server is the one that
receives HTTP requests: the loop (minihttp.eventloop) holds every stream
while it waits, and a pool thread reads what must be pulled.
"""

import os
import time

from .atomic import AtomicFile
from .blocks import (HEADER, BlockTooLarge, TruncatedBlock, describe, get_block_to,
                     get_length)
from .digests import ALGORITHMS, DEFAULT, serialize
from .errors import peer_gone
from .eventloop import BODY, BUSY, CLOSE, LINGER, POOL, READ, Job, Protocol
from .framing import IncompleteRead
from .limits import (BLOCK_PREVIEW, BLOCK_STREAM_THRESHOLD, BODY_TIMEOUT, HEAD_TIMEOUT,
                     KEEPALIVE_TIMEOUT, MAX_BLOCK, MAX_BLOCK_CONNECTIONS, MIN_RATE, RATE_WINDOW)
from .records import Sizes, block_record, counted
from .report import log_failure, say


class Saver(AtomicFile):
    """Collects one connection's payload bytes in a temporary file in ``directory``.

    The file gets its final name only in ``commit`` (after the empty block);
    ``discard`` removes it, so a broken stream leaves nothing behind.  It is
    open only while a pool thread writes to it (``resume``, ``pause``): a
    stream waiting in the loop holds its socket, no file (--max-connections
    such streams would hold as many files again).
    """

    def __init__(self, directory, peer):
        super().__init__(directory, '.incoming-')
        self.directory = directory
        self.name = f'blocks-{time.strftime("%Y%m%dT%H%M%S")}-{peer[0]}-{peer[1]}.bin'
        self.write = self.file.write
        self.size = 0

    def resume(self):
        """Open the file again to write on (a pool thread's next trip)."""
        if self.file is None:
            self.file = open(self.temp_path, 'ab')
            self.write = self.file.write

    def pause(self):
        """Close the file while the stream waits in the loop."""
        self.file.close()
        self.file = self.write = None

    def commit(self):
        """Finish the file and give it its name; the path it is saved at."""
        self.size = self.file.tell()
        self.finish()
        path = os.path.join(self.directory, self.name)
        super().commit(path)
        return path


class Stream:
    """What one connection's block stream has received so far, and where it saves it."""

    __slots__ = ('peer', 'saver', 'blocks', 'total', 'sizes', 'length', 'hashing', 'began')

    def __init__(self, peer, saver, hashing=None):
        self.began = time.monotonic()   # for the time its last line says
        self.peer = peer
        self.saver = saver
        self.blocks = self.total = 0
        self.sizes = Sizes()   # the blocks' sizes, first and last, for the framing record
        self.length = None     # the payload announced by the header just read
        self.hashing = hashing  # with --digest: a hash of every payload byte, in order

    def count(self, length):
        self.blocks += 1
        self.total += length
        self.sizes.add(length)


class BlockServer(Protocol):
    """The block transport as the protocol of an EventLoop (minihttp.eventloop).

    The loop holds every stream while it waits, with no thread: for its first
    block or the next one (``keepalive_timeout``), for the rest of a header
    begun (``head_timeout``), for a payload announced by a header
    (``body_timeout``), each in its deadline heap.  So a flood of silent
    connections costs descriptors, not threads, and each one goes at its
    deadline.  The loop reads a header; the payload is read on a pool thread,
    pull-style, under the pool's between-bytes timeout and minimum rate, and
    the thread goes on with the next blocks while they keep coming, then gives
    the stream back to the loop.  Every way a stream ends is said in one line
    and kept as one framing record.

    Its own per-connection state is ``conn.exchange``: the Stream, from the
    first header begun to the stream's end.
    """

    def __init__(self, max_block=MAX_BLOCK, save_dir=None, quiet=False, records=None, *,
                 trace=False,
                 keepalive_timeout=KEEPALIVE_TIMEOUT, head_timeout=HEAD_TIMEOUT,
                 body_timeout=BODY_TIMEOUT, min_rate=MIN_RATE, rate_window=RATE_WINDOW,
                 max_connections=MAX_BLOCK_CONNECTIONS, digest=False):
        self.max_block = max_block
        # Whether each stream's payload is hashed, and its digest said (and
        # recorded) at its end, in the form `minihttp blocks -c --digest` prints.
        self.digest = digest
        self.save_dir = save_dir
        # What the console hears: one line per stream when it ends (failures
        # always; whole streams unless ``quiet``), and with ``trace`` a line per
        # connection accepted and per block, a chapter-5 lesson at 3 lines a
        # stream and 3,200 for a 200 MB file.
        self.quiet = quiet
        self.trace = trace
        self.records = records    # a FramingLog that keeps each stream's record, or None
        self.keepalive_timeout = keepalive_timeout
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.min_rate = min_rate
        self.rate_window = rate_window
        self.max_connections = max_connections   # the loop's, for the refusal's line

    # A stream's close is the client's only word that it was kept: close_notify goes
    # with the close of a kept stream alone (LINGER over TLS, from end), never with a cut
    # one's.
    close_notify_at_close = False

    # -- in the event loop ------------------------------------------------------------

    def advance(self, conn):
        """Read the next block header; its payload (or the stream's end) goes to the pool."""
        stream = conn.exchange
        try:
            if stream is None:
                if self.trace:
                    say(f'Accepted connection from {self.peer(conn)}')
                stream = conn.exchange = Stream(   # its Saver: on the pool
                    conn.peer, None, ALGORITHMS[DEFAULT]() if self.digest else None)
            length = get_length(conn.reader, self.max_block)
        except BlockingIOError:
            return READ                   # a header begun, or nothing yet
        except (TruncatedBlock, BlockTooLarge, OSError) as exc:
            return self.end(conn, self.problem(conn, exc))
        if length is None:
            return self.end(conn, self.cut_short(conn))
        conn.head_read()                  # the header is whole: its deadline is over
        stream.length = length
        conn.give(Job(self.receive, conn))
        if not length:
            return POOL                   # the end: saving it waits for the disk
        conn.reader.release()             # no buffer while the payload has not begun
        return BODY

    def wrong_scheme(self, conn, tls_hello):
        """Said, and answered with a line in clear: a plain block client reads bytes where
        it waits for a close, and says the server does not speak its protocol."""
        super().wrong_scheme(conn, tls_hello)
        conn.send((b'this port speaks TLS: blocks -c --tls\n' if not tls_hello else
                   b'this port speaks plain blocks: blocks -c without --tls\n',))

    def expired(self, conn):
        """A deadline of the loop passed: say which, and end the stream."""
        stream = conn.exchange
        if stream is not None and stream.length is not None:
            why = f'block payload stalled: nothing received for {self.body_timeout:g} s'
        elif conn.head_since is not None:
            why = f'block header not complete within {self.head_timeout:g} s'
        elif stream is None:
            say(f'{self.peer(conn)}: closed: nothing received within '
                f'{self.keepalive_timeout:g} s of connecting', err=True)
            return
        else:
            why = f'no block begun within {self.keepalive_timeout:g} s'
        whole = counted(stream.blocks, 'whole block')
        self.end(conn, f'{self.peer(conn)}: closed: {why}, after {whole}')

    def needs_more(self, conn):
        """Whether a payload waiting for a thread still needs bytes from the client."""
        return conn.reader.buffered < conn.exchange.length

    def refusal(self, now, peer):
        """Beyond --max-connections: a line in the log, and the connection closed."""
        say(f'blocks: refused {peer[0]}:{peer[1]}: {self.max_connections} connections are '
            'open', err=True)
        return b''

    def closed(self, conn):
        """The loop closed the connection: a stream it did not end was cut short."""
        if conn.exchange is not None and conn.state is not BUSY:   # a thread's is its own
            self.end(conn, self.cut_short(conn))

    # -- on a pool thread ----------------------------------------------------------------

    def receive(self, conn):
        """The payload of the header the loop read, then the next blocks while they keep
        coming; back to the loop when the stream goes quiet.  An empty block ends it."""
        stream = conn.exchange
        reader = conn.reader
        try:
            if stream.saver is not None:
                stream.saver.resume()
            elif self.save_dir:            # made here: the disk is the pool's to wait on
                stream.saver = Saver(self.save_dir, conn.peer)
            while stream.length:
                self.receive_payload(reader, stream.length, stream.saver, stream.hashing)
                stream.count(stream.length)
                if not self.more_coming(conn):
                    if stream.saver is not None:
                        stream.saver.pause()
                    stream.length = None      # no payload announced while it waits
                    return READ
                stream.length = get_length(reader, self.max_block)
                if stream.length is None:
                    return self.end(conn, self.cut_short(conn))
            return self.end(conn, None)
        except (TruncatedBlock, BlockTooLarge, OSError) as exc:
            return self.end(conn, self.problem(conn, exc))

    def receive_payload(self, reader, length, saver, hashing=None):
        """Read one payload: whole when small, streamed when above the threshold."""
        if length <= BLOCK_STREAM_THRESHOLD:
            try:
                payload = reader.read_exact(length)
            except IncompleteRead as exc:
                raise TruncatedBlock('payload', exc) from None
            if saver:
                saver.write(payload)
            if hashing is not None:
                hashing.update(payload)
            if self.trace:
                say(f'Block says: {describe(payload)}')
            return
        prefix = bytearray()

        def sink(piece):
            if len(prefix) < BLOCK_PREVIEW:
                prefix.extend(piece[:BLOCK_PREVIEW - len(prefix)])
            if saver:
                saver.write(piece)
            if hashing is not None:
                hashing.update(piece)

        get_block_to(reader, sink, length)
        if self.trace:
            say(f'Block says: {describe(prefix, length)}')

    @staticmethod
    def more_coming(conn):
        """Whether the next header is here (or in the kernel): the thread reads it at once."""
        need = HEADER.size - conn.reader.buffered
        return need <= 0 or conn.readable(need)

    # -- the end of a stream, wherever it is seen -------------------------------------------

    @staticmethod
    def peer(conn):
        return f'{conn.peer[0]}:{conn.peer[1]}'

    def cut_short(self, conn):
        why = 'the server is stopping' if conn.stopping else 'the peer closed'
        return (f'{self.peer(conn)}: stream ended without the empty block after '
                f'{counted(conn.exchange.blocks, "block")} ({why})')

    def problem(self, conn, exc):
        """The line for a stream that failed: what failed, and how far it had come."""
        whole = counted(conn.exchange.blocks if conn.exchange is not None else 0, 'whole block')
        if isinstance(exc, TruncatedBlock):
            return f'{self.peer(conn)}: {exc}, after {whole}'
        if isinstance(exc, BlockTooLarge):
            return f'{self.peer(conn)}: refused: {exc}; closing without reading it'
        if peer_gone(exc):
            return f'{self.peer(conn)}: connection failed: {exc}, after {whole}'
        if isinstance(exc, TimeoutError):       # the pool's pace: stalled, or too slow
            return f'{self.peer(conn)}: closed: stream {exc}, after {whole}'
        log_failure(f'{self.peer(conn)}: saving blocks')    # ours (the disk's, say)
        return f'{self.peer(conn)}: saving failed: {exc}'

    def end(self, conn, problem):
        """Keep or discard what the stream saved, say how it ended, record it: once.

        ``problem`` is the line of a stream that did not end with the empty block
        (None for one that did).
        """
        stream, conn.exchange = conn.exchange, None
        if stream is None:
            return CLOSE
        saver = stream.saver
        took = f'{stream.total} bytes in {time.monotonic() - stream.began:.3f} s'
        line = f'{self.peer(conn)}: end of stream after {counted(stream.blocks, "block")}, {took}'
        ended = 'ended by the empty block'
        if stream.hashing is not None and problem is None:
            digest = serialize({DEFAULT: stream.hashing.digest()})
            line += f', {digest}'
            ended += f', {digest}'
        try:
            if saver is not None and problem is None:
                line += f'; saved to {saver.commit()}'
                saver = None
        except OSError as exc:
            log_failure(f'{self.peer(conn)}: saving blocks')
            problem = f'{self.peer(conn)}: saving failed: {exc}'
        finally:
            if saver is not None:
                saver.discard()
        if self.records is not None:
            ended = problem.partition(': ')[2] if problem else ended
            self.records.add(block_record(conn.peer, time.time(), stream.blocks, stream.total,
                                          stream.sizes.facts(), ended))
        # Said once the temporary file is gone and the record kept: whoever acts on
        # the line (a person, a script, a test) finds no trace of a broken stream,
        # and finds its record.
        if problem:
            say(f'{problem} ({took})', err=True)
            return CLOSE
        if not self.quiet:
            say(line)
        # The close is the client's only word that its stream was kept (blocks.
        # wait_for_close): over TLS it goes with our close_notify, which a FIN forged on
        # the path cannot pass for; the loop's linger sends it, and our FIN after it.
        # Over TCP the FIN is that word, and the connection is counted out before it
        # goes (CLOSE): a client that read it finds its place under --max-connections free.
        return LINGER if conn.tls is not None else CLOSE
