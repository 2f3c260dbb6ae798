"""The HTTP/1.1 protocol: heads in the event loop, bodies on the pool, one StreamReader.

The event loop (minihttp.eventloop) calls ``advance`` when a connection has
bytes.  ``advance`` reads request heads with the framing core's delimiter
read, exactly as a blocking server would, and answers inline every request
that needs no body read and whose answer is small: pipelined requests already
buffered are answered in order in the same pass.  A request with a body (or
a 100-continue to send), or an answer that must stream (a large file, a
listing), is handed to a pool thread as ``exchange`` or ``respond``: the
plain sequential code of a thread-per-connection server, pulling the body off
the same StreamReader.  A head seen before byte for byte, whose answer was a
small file held in memory and still is, is answered again from what the first
exchange decided (``Answer``), without parsing it or asking the app.  Every
way, one access log line and one framing record (and with --trace, its line)
describe the exchange, however it ended: whole, refused, timed out, the client
gone, or the response cut (the record's ``ended``: a kind and a reason; the log
line of an exchange that did not end whole or refused says it in a last quoted
field).  An exchange handed to the pool has a live record (``Live``): published
open once it has lasted ``update_interval`` (waiting for its body or a thread,
or on a thread reading its body or sending its answer), republished as it
changes, closed at the end.
"""

import collections
import sys
import threading
import time
import typing

from .eventloop import (AWAITING_BODY, BODY, BUSY, CLOSE, IDLE, LINGER, POOL, QUEUED, READ,
                        STREAM, Job as PoolJob, Protocol)
from .framing import write_all
from .bodies import PARTIAL, Body, BodyCut, bounded, buffered_body, open_body
from .errors import HTTPError, peer_gone
from .files import ENTRY_COST, Remembered
from .request import parse_request, read_head
from .tls import plain_http_error, tls_on_plain_error
from .responses import (PerSecond, ResponseWriter, bodiless, chunk, close_unsent, dated,
                        error_response, interim_head, is_bytes, redated)
from .transfer import CHUNKED, LENGTH, NONE, request_framing
from .limits import (ANSWERS_BUDGET, BODY_TIMEOUT, HEAD_TIMEOUT, KEEPALIVE_TIMEOUT, LIVE_TICK,
                     MAX_DRAIN, MIN_RATE, PIPELINE_QUEUE, RATE_WINDOW, READ_BUFFER_SIZE,
                     RETRY_AFTER, STREAM_QUEUE, UPDATE_INTERVAL)
from .records import (CLIENT_LEFT, ENDED_WHOLE, FAILED, NOT_SENT, NUMBER, OPEN, REFUSED, REQUEST,
                      RESPONSE, RESPONSE_CUT, TIMED_OUT, VERSION, EventStream, FramingLog,
                      dropped_event, counted, ended_words, event_bytes, exchange_record,
                      http_record, public, response_facts, tls_facts)
from .report import log_failure, log_soon, say, say_soon


class Stream:
    """One open feed of records: the events waiting for its client, at most STREAM_QUEUE."""

    __slots__ = ('chunked', 'events', 'updates', 'dropped', 'first')

    def __init__(self, chunked):
        self.chunked = chunked
        self.events = collections.deque(maxlen=STREAM_QUEUE)
        # Record number -> its latest update not yet sent: a newer one replaces it, so
        # a slow client is sent the current version of each record, not every step.
        self.updates = {}
        self.dropped = 0          # records that went unsent since the last send
        # Record number -> version of the records it began with: with --workers, those
        # merged from the others while it opened are told to the streams afterwards,
        # and this one has them already.
        self.first = {}


class Job(PoolJob):
    """Blocking work for a pool thread, and the response it sends, which it owns.

    ``work(job, *args)`` runs on the thread and leaves the response it makes
    (or was given) in ``job.response``.  The event loop closes the job when
    it is done with it (eventloop.py says when: once run, or with its
    connection when never run), and closing lets go of what the response's
    body still holds, an open file say, sent or not.  ``ended`` is how the
    exchange ends if the response goes whole (records.ENDED_WHOLE, or why it
    was refused).
    """

    __slots__ = ('response', 'ended', 'live')

    def __init__(self, work, *args, response=None, ended=ENDED_WHOLE):
        super().__init__(work, *args)
        self.response = response
        self.ended = ended
        self.live = None          # the exchange's Live record (made in the loop)

    def __call__(self):
        return self.work(self, *self.args)

    def close(self):
        response, self.response = self.response, None
        if response is not None:
            close_unsent(response.body)


class Live:
    """The live record of an exchange handed to the pool, made when the loop read its head.

    Two publish it open, at most every ``server.update_interval`` and only
    when it changed: the loop, in its sweep (``HTTPServer.sweep``), whatever the
    client or the pool does (a body that does not begin, a job waiting for a
    thread, a thread waiting in a receive); and the pool thread, standing in
    for the connection's socket in the body's reader: before each receive,
    when every buffered byte has been read.  Nothing is done per piece or per
    chunk.  The first publication waits for one interval: an exchange that
    ends sooner (a small POST, a quick upload) has one record, made when it
    ends, as an inline answer has.

    One publishes at a time (``lock``), so versions go up one by one, and the
    last (``HTTPServer.record``) sets ``closed``: nothing is published after it.
    ``body`` is the request's Body once a thread opened it (None before),
    ``writer`` the ResponseWriter once the response began; ``record`` is the
    version last published (None before the first).
    """

    __slots__ = ('server', 'conn', 'request', 'body', 'writer', 'now', 'record', 'due',
                 'closed', 'lock', '_recv_into')

    def __init__(self, server, conn, request, body, now):
        self.server = server
        self.conn = conn
        self.request = request
        self.body = body
        self.writer = None
        self.now = now
        self.record = None
        self.due = server.clock() + server.update_interval
        self.closed = False
        self.lock = threading.Lock()
        self._recv_into = None

    def reads(self, sock):
        """On the pool thread: the body is read from ``sock`` through this record."""
        self._recv_into = sock.recv_into

    def recv_into(self, buffer):
        if self.server.clock() >= self.due:
            self.server.progress(self)
        return self._recv_into(buffer)


class Waiting:
    """A request whose work waits (for its body to begin, or a thread): ``conn.exchange``
    until a thread takes it; ``live`` is its Live record.

    ``found`` is what the body reader made of the buffered bytes when the loop
    last asked (None before), and ``buffered`` how many there were: the loop
    reads nothing more of a connection while its work waits, so the reader
    runs over the buffer once, not every time the deadline comes back (a
    buffer of one-byte chunks costs milliseconds, and a busy pool may keep
    thousands waiting).
    """

    __slots__ = ('request', 'live', 'buffered', 'found')

    def __init__(self, request, live=None):
        self.request = request
        self.live = live
        self.buffered = -1
        self.found = None


class Answer(typing.NamedTuple):
    """An answer the server gives again, without parsing or asking the app, to a request
    head it has seen before byte for byte (``HTTPServer.again``), while ``source`` holds.

    A head is remembered only after the one parser parsed it and the one app answered
    it (``HTTPServer.remember``): every decision the parser, the app (routes, the Host
    and Origin check, which file) and the server (framing, inline or not, keep-alive)
    made, they made from those bytes and from the server's configuration, which is
    fixed for its life (root, token, Host names, one listening socket: TLS or plain,
    one per server).  Only the answer a handler marked as depending on its head and on
    one thing alone besides (``Response.source``: a small file held in memory, whole,
    200, no conditional, range or digest field) is remembered, and only when it was
    answered in the loop, whole, with no interim response, while the server was not
    stopping.  What else could change the answer to the same bytes is looked at again
    at each use:

    * the file: ``source.holds()``, a stat showing it unchanged (changed, replaced or
      gone, it is not, and the answer is forgotten: the full path answers);
    * the time: the head is made again with the current second's Date (``redated``);
      the log line and the record take the current time;
    * the peer and the TLS records that carry the answer: the log line and the record
      take the connection's own (records.tls_facts);
    * a stopping server: it says Connection: close, so the full path answers.

    Everything else is the first exchange's: what is sent and said (``per_second``, a
    PerSecond: made at most once a second, (the head cut around its Date, redated,
    and the body pieces sent with it, the file's bytes or none for HEAD, joined into
    one piece; the access log's line after the client's address, log_line's time and
    what the first exchange's line said after it)), the record's facts
    of the request and the response, and what the connection did next (``outcome``:
    kept or closed, decided from the head: HTTP/1.0, Connection).  ``cost``: what it
    holds, as the Remembered that keeps it counts it.
    """

    source: object
    per_second: PerSecond
    request: tuple
    response: tuple
    outcome: object
    cost: int


class HTTPServer(Protocol):
    """The protocol an EventLoop runs: HTTP/1.1 over each of its connections.

    ``app(request) -> Response``; when the app has ``inline(request)``, a
    request it answers False for (a write, say) goes to the pool even without
    a body; when it has ``admit(request, framing)``, that runs in the loop
    first, for work bound for the pool, and may refuse it (HTTPError) on its
    head alone, or say (True) that the handler speaks before the body (an
    interim response): its thread starts without waiting for the body to begin.

    Its own per-exchange state is ``conn.exchange``: Waiting, a Request whose
    body work waits (for its first bytes, or a thread), until a pool thread takes it.
    """

    def __init__(self, app, *, trace=False, access_log=True,
                 keepalive_timeout=KEEPALIVE_TIMEOUT, head_timeout=HEAD_TIMEOUT,
                 body_timeout=BODY_TIMEOUT, min_rate=MIN_RATE, rate_window=RATE_WINDOW,
                 records=None, update_interval=UPDATE_INTERVAL, clock=time.monotonic):
        self.app = app
        self.trace = trace
        # How each exchange was framed: --trace says it, GET /_framing serves it,
        # and every open GET /_framing/stream is sent it.
        self.records = FramingLog() if records is None else records
        # Told of every record while a stream is open (listening only then: an exchange
        # with none open makes no call for it), by the one bound method it was given.
        self._publish = self.published
        self._streams = {}       # connection -> Stream, touched only in the loop's thread
        # Live records of work handed to the pool and not known closed, in the loop's
        # thread: one sweep looks at them all, a few times a second, while there are any.
        self._lives = []
        self._sweeping = False
        self.access_log = access_log
        self.keepalive_timeout = keepalive_timeout
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.min_rate = min_rate          # bytes a second, judged per rate_window (0: none)
        self.rate_window = rate_window
        # Answers given again to heads seen before (Answer), touched only in the loop's
        # thread, bounded in bytes.
        self.answers = Remembered(ANSWERS_BUDGET)
        self._inline = getattr(app, 'inline', None)
        # How a handler's request.interim goes out: queued by the loop, or written by
        # the pool thread; bound once here, not per request.
        self._queue_interim = self.queue_interim
        self._write_interim = self.write_interim
        self._admit = getattr(app, 'admit', None)
        # A live record is republished at most every update_interval seconds, by clock.
        self.update_interval = update_interval
        self.clock = clock
        # A Common Log Format line's middle, its timestamp: the same for a second.
        self._stamp = PerSecond(
            lambda second: time.strftime(' - - [%d/%b/%Y:%H:%M:%S +0000] ', time.gmtime(second)))

    # -- in the event loop --------------------------------------------------------------

    def advance(self, conn):
        """Answer every whole request buffered that can be answered without blocking.

        Returns what the connection waits for next (eventloop.READ, or IDLE when
        nothing more is buffered and the reader let its buffer go; BODY for
        work that reads a body, POOL for other blocking work, given to the
        loop with conn.give; LINGER or CLOSE).  BlockingIOError from the reader means
        the head is not all here yet: the loop waits for more.
        """
        reader = conn.reader
        answers = self.answers.entries
        while True:
            try:
                head = read_head(reader)
            except BlockingIOError:
                return READ
            except HTTPError as error:
                return self.answer(conn, None, None, error_response(error), time.time(),
                                   refused(error))
            if head is None:
                return CLOSE            # the client closed between requests
            answer = answers.get(head)
            outcome = None if answer is None else self.again(conn, head, answer)
            if outcome is None:
                outcome = self.serve_head(conn, head)
            if outcome is not READ:
                return outcome
            # (release: nothing more buffered, its buffer let go now, as the loop would
            # once the answer is queued, and says so: IDLE; a method's call, cheaper
            # than ``buffered``'s)
            if reader.release():
                return IDLE
            if conn.queued >= PIPELINE_QUEUE:
                return outcome

    def serve_head(self, conn, head):
        """Parse a request head and answer it in the loop, or hand its work to the pool;
        what the connection waits for next."""
        try:
            request = parse_request(head)
        except HTTPError as error:
            return self.answer(conn, None, None, error_response(error), time.time(),
                               refused(error))
        conn.head_read()
        now = time.time()
        body = None
        ended = ENDED_WHOLE
        try:
            framing = request_framing(request)
            if framing.kind != NONE or not self.inline(request):
                early = False
                if self._admit is not None:
                    # What the head alone refuses (a write not allowed, an upload
                    # announced too large) is answered now, not after the body
                    # or a thread is waited for; a body never read is not kept
                    # on the connection (it closes, lingering).
                    try:
                        early = self._admit(request, framing)
                    except HTTPError as error:
                        error.close = error.close or framing.has_body
                        raise
                job = Job(self.exchange, conn, request, now)
                self.go_live(conn, job, request, None, now)
                conn.give(job)
                if not framing.has_body or request.get('expect') is not None or early:
                    # Nothing to wait for from the client first, or something to
                    # tell it before its body (a 100, an interim response the
                    # app sends: the client may wait for it to send the body).
                    return POOL
                return BODY
            body = request.body = Body(conn.reader)
            request.interim_sink, request.interim_conn = self._queue_interim, conn
            response = self.app(request)
        except HTTPError as error:
            response, ended = error_response(error), refused(error)
        except Exception:
            response, ended = self.failed(conn)
        if isinstance(response.body, EventStream) and request.method == 'GET':
            return self.open_stream(conn, request, response, now)
        if not is_bytes(response.body) and not bodiless(request.method, response.status):
            job = Job(self.respond, conn, request, body, now, response=response, ended=ended)
            self.go_live(conn, job, request, body, now)
            conn.give(job)
            return POOL
        return self.answer(conn, request, body, response, now, ended, head=head)

    def again(self, conn, head, answer):
        """Give a head seen before its remembered Answer, if it still holds: queued,
        logged and recorded as the first was (with this connection's peer and TLS
        records, and the current time); what the connection waits for next, or
        None: the full path must answer (the file changed, or the server is
        stopping), and a changed file's answer is forgotten."""
        loop = self.loop
        if loop.stop_asked:         # (conn.stopping, without its call)
            return None
        # One unpacking, not an attribute lookup per field (each a descriptor's call).
        # (Not named ``dated``, the function this module imports: CPython then takes the
        # name for a module's and looks ``at`` up as an attribute, a bound method made
        # per call.)
        source, per_second, request, response, outcome, cost = answer
        if not source.holds(loop.turn):
            self.answers.pop(head, cost)
            return None
        if conn.head_since is not None:     # (a keep-alive request's came whole: None)
            conn.head_read()
        now = time.time()
        pieces, said = per_second.at(now)
        conn.send(pieces)
        peer = conn.peer
        if self.access_log:         # log_line's line, without its call
            log_soon(peer[0] + said)
        # keep_record's work for a record with no live one, without its call; its TLS
        # facts as tls_facts takes them, without its call.
        tls = conn.tls
        record = self.records.add(exchange_record(
            peer, now, request, response, ENDED_WHOLE,
            None if tls is None else tls.exchange_facts()))
        if self.trace:
            self.say_trace(conn, record, say_soon)
        return outcome

    def remember(self, conn, head, request, writer, writes, record, outcome, now):
        """Keep the answer just queued for ``head`` (its ``writes``: the head and body
        pieces, one write), to give again (``again``), if it may be (Answer says when)."""
        response = writer.response
        if (response.source is None or request.interims or conn.stopping
                or len(writes) != 1 or writes[0][0] is not writer.head):
            return
        head_pieces = dated(writer.head, response.status, now)
        if head_pieces is None:
            return
        body = writes[0][1:]
        said = logged(request_line(request), response.status, writer.sent)
        stamp = self._stamp.at
        # Joined once a second into one piece: what an answer given again sends is then
        # one buffer (one TLS write, one iovec), made by no join per request.  Its copy of
        # the body is counted in its cost.  The log line's time and the rest made with
        # it: one PerSecond asked per request, not two, and one join fewer.
        per_second = PerSecond(lambda second: (
            (b''.join(redated(head_pieces, second) + body),), stamp(second) + said))
        cost = (5 * ENTRY_COST + len(head) + 2 * len(said) + 2 * len(writer.head)
                + writer.sent + response.source.cost())
        # Kept as a plain tuple of Answer's fields: ``again`` unpacks it for every request,
        # and CPython unpacks only an exact tuple its fast way (a NamedTuple, by iterator).
        self.answers.put(head, tuple(Answer(response.source, per_second, record[REQUEST],
                                             record[RESPONSE], outcome, cost)), cost)

    def inline(self, request):
        """Whether a request without a body may be answered in the loop.

        A 100-continue expectation on a request without content has nothing
        to continue: RFC 9110 section 10.1.1 lets a server omit the 100 then,
        so it is answered as if absent.  Any other expectation goes to the
        pool's exchange, which answers 417.
        """
        expect = request.get('expect')
        if expect is not None and not continues(expect):
            return False
        return self._inline is None or self._inline(request)

    def answer(self, conn, request, body, response, now, ended=ENDED_WHOLE, live=None,
               head=None):
        """Queue a response whose body is bytes-like (or none); the loop sends it.
        ``ended``: how the exchange ends (records.ENDED_WHOLE, or why it was refused);
        ``live``: its Live record, if it has one; ``head``: the request head's bytes,
        when the answer may be remembered for them (``remember``)."""
        keep = (request is not None and request.keep_alive and not conn.stopping
                and self.can_keep(body, response))
        if request is None:
            writer = ResponseWriter(response, 'GET', None, keep, now)
        else:
            writer = ResponseWriter(response, request.method, request.version, keep, now)
        writes = writer.sends()
        for pieces in writes:
            conn.send(pieces)
        self.log(conn.peer, request, response.status, writer.sent, now, say_soon, ended)
        record = self.record(conn, request, body, writer, now, say_soon, ended, live=live)
        outcome = self.after(request, body, writer.keep_alive)
        if head is not None and ended is ENDED_WHOLE:
            self.remember(conn, head, request, writer, writes, record, outcome, now)
        return outcome

    # -- the live feed of framing records, held by the loop ------------------------------

    def open_stream(self, conn, request, response, now):
        """Answer GET /_framing/stream: a head, then each record as it comes, never an end.

        Chunked to an HTTP/1.1 client, close-delimited to HTTP/1.0 (RFC 9112
        section 6.3 item 8).  The connection waits in the loop, with no thread.
        """
        writer = ResponseWriter(response, request.method, request.version, False, now)
        for pieces in writer.sends():
            conn.send(pieces)
        self.log(conn.peer, request, response.status, 0, now, say_soon)
        self.record(conn, request, request.body, writer, now, say_soon, done=False)
        if not self._streams:
            self.records.listen(self._publish)
        stream = self._streams[conn] = Stream(writer.chunked)
        self.records.watch()        # with --workers, the others' records come while it is open
        for record in self.records.kept(response.body.after)[-STREAM_QUEUE:]:
            stream.events.append(event_bytes(record, self.records.as_json(record)))
            stream.first[record[NUMBER]] = record[VERSION]
        return STREAM

    def published(self, record):
        """A record was added (in any thread) while a stream was open: the loop sends it
        to every stream (none, if the last closed meanwhile)."""
        if self._streams:
            self.loop.call_soon(self.fan_out, record)

    def fan_out(self, record):
        """In the loop: queue the record on every stream, dropping a slow one's oldest."""
        event = event_bytes(record, self.records.as_json(record))
        number = record[NUMBER] if record[VERSION] else None
        for conn, stream in list(self._streams.items()):
            if stream.first.get(record[NUMBER], -1) >= record[VERSION]:
                continue                  # it began with this version
            if number is not None:        # an update: the stream's pending one replaced
                updates = stream.updates
                if number in updates or len(updates) < STREAM_QUEUE:
                    updates[number] = event
                else:
                    stream.dropped += 1
            else:
                if len(stream.events) == STREAM_QUEUE:
                    stream.dropped += 1
                stream.events.append(event)
            self.loop.resume(conn, STREAM)

    def pump(self, conn):
        """Queue what a stream has waiting on its connection; whether there was any."""
        stream = self._streams.get(conn)
        if stream is None or not (stream.events or stream.updates):
            return False
        pieces = [dropped_event(stream.dropped)] if stream.dropped else []
        pieces.extend(stream.events)      # first versions before updates: open, then grown
        pieces.extend(stream.updates.values())
        stream.events.clear()
        stream.updates.clear()
        stream.dropped = 0
        data = b''.join(pieces)
        conn.send(chunk(data) if stream.chunked else (data,))
        return True

    def closed(self, conn):
        """The loop closed a connection: forget its stream, if it was one; work that no
        thread took (the server stopped first) is logged and its record closed."""
        if self._streams.pop(conn, None) is not None:
            self.records.unwatch()
            if not self._streams:
                self.records.unlisten(self._publish)
        waiting = conn.exchange
        live = waiting.live if waiting is not None else None
        if live is not None and conn.state is not BUSY and not live.closed:
            if conn.stopping:
                ended = (TIMED_OUT, 'the server stopped before a thread took it')
            else:       # gone, or not reading the answers before this one
                ended = (CLIENT_LEFT, 'connection closed before a thread took it')
            self.log(conn.peer, waiting.request, None, 0, live.now, say_soon, ended)
            self.record(conn, waiting.request, live.body, None, live.now, say_soon, ended,
                        live=live)

    def needs_more(self, conn):
        """Whether body work waiting for a thread still needs bytes from the client.

        The loop asks when such a client has sent nothing for body_timeout (or
        since it queued, when a thread comes free): one whose whole body is
        already buffered is waiting for us, not stalling, and so is one whose
        body is malformed (the thread answers 400).  The body reader itself says
        so, run over the buffered bytes.
        """
        waiting, buffered = conn.exchange, conn.reader.buffered
        if waiting.buffered != buffered:
            waiting.found = buffered_body(request_framing(waiting.request), conn.reader)
            waiting.buffered = buffered
        return waiting.found == PARTIAL

    def expired(self, conn):
        """A head not whole within head_timeout, or a body not begun (or stalled
        while it waited for a thread) within body_timeout: 408.  An idle
        connection is closed without a word."""
        waiting = conn.exchange
        request = waiting.request if waiting is not None else None
        if request is None and conn.head_since is None:
            return
        if request is not None:      # its job is closed with the connection, right after
            error = HTTPError(408, 'request body not received in time', close=True)
            self.answer(conn, request, None, error_response(error), time.time(),
                        (TIMED_OUT, error.reason), waiting.live)
            return
        error = HTTPError(408, 'request head not received in time', close=True)
        self.answer(conn, None, None, error_response(error), time.time(),
                    (TIMED_OUT, error.reason))

    def wrong_scheme(self, conn, tls_hello):
        """Plain HTTP on the TLS port (nginx's 400 line), or a TLS hello on the plain
        one: the 400 saying which, logged and recorded with its reason; the loop
        sends it in clear and closes."""
        error = tls_on_plain_error() if tls_hello else plain_http_error()
        self.answer(conn, None, None, error_response(error), time.time(), refused(error))

    def refusal(self, now, peer):
        """The whole answer to a connection beyond --max-connections: 503, and close."""
        error = HTTPError(503, 'too many connections; try again shortly', close=True,
                          headers=[('Retry-After', str(RETRY_AFTER))])
        writer = ResponseWriter(error_response(error), 'GET', None, False, now)
        (pieces,) = writer.sends()
        self.log(peer, None, 503, writer.sent, now, say_soon, refused(error))
        return b''.join(pieces)

    # -- on a pool thread ---------------------------------------------------------------

    def exchange(self, job, conn, request, now):
        """The rest of an exchange whose head the loop read: the body, the answer."""
        conn.exchange = None       # the pool's now: the loop will not expire it
        body = None
        request.interim_sink, request.interim_conn = self._write_interim, conn
        try:
            body = request.body = job.live.body = open_body(
                request, conn.reader, self.continuer(request))
            if body.framing.kind != NONE:
                # The loop's buffer is sized for heads: a body is received in
                # pieces as large as before (a large one's reader grows further).
                conn.reader.reserve(READ_BUFFER_SIZE)
                # Its record is republished while the body arrives (the loop gives
                # the reader its own socket back when the connection returns).
                job.live.reads(conn.timed)
                conn.reader.receive_from(job.live)
            response = job.response = self.app(request)
            if isinstance(response.body, EventStream):
                # Only the loop holds an event stream (with no thread), and this
                # request's body needs a thread to be read; content in a GET has
                # no meaning anyway (RFC 9110 section 9.3.1).  The body is drained
                # (or, when the client waits for 100 Continue, never asked for).
                raise HTTPError(400, f'{request.path[:80]} is an event stream: send it '
                                     'no body (no Content-Length or Transfer-Encoding)')
        except BodyCut:                 # the client left inside its body: nobody to answer
            return self.unanswered(conn, request, body, now, 'connection closed', job.live)
        except HTTPError as error:
            response, job.ended = error_response(error), refused(error)
        except Exception as exc:
            if peer_gone(exc):          # nobody to answer: the log and the record say so
                return self.unanswered(conn, request, body, now, exc.strerror or str(exc),
                                       job.live)
            if not isinstance(exc, TimeoutError):
                response, job.ended = self.failed(conn)
            else:                       # stalled, or too slow: the Pace says which
                # The 408 tells the client; its access-log line says why (the one
                # place every answer's reason is logged).
                response = error_response(HTTPError(408, f'request body {exc}', close=True))
                job.ended = (TIMED_OUT, f'request body {exc}')
        if response is not job.response:
            job.close()                 # the app's answer, replaced by the error's
            job.response = response
        return self.respond(job, conn, request, body, now)

    def respond(self, job, conn, request, body, now):
        """Send the job's response, which may block (a stream, a file, an echo), then
        finish the body.  The job closes the response, sent or not."""
        conn.exchange = None       # the pool's now (exchange's already, when it came so)
        response = job.response
        keep = request.keep_alive and not conn.stopping and self.can_keep(body, response)
        handed, writer = conn.timed.handed, None
        try:
            writer = job.live.writer = ResponseWriter(response, request.method,
                                                      request.version, keep, now)
            writer.write(conn.timed)
        except Exception as exc:
            return self.cut(conn, request, body, writer, now, exc, conn.timed.handed - handed,
                            job.live)
        keep = writer.keep_alive
        if keep and body is not None and not body.done:
            keep = self.drain(body)
        self.log(conn.peer, request, response.status, writer.sent, now, ended=job.ended)
        self.record(conn, request, body, writer, now, ended=job.ended, live=job.live)
        return self.after(request, body, keep)

    def cut(self, conn, request, body, writer, now, exc, handed, live=None):
        """A response begun and not finished: ``exc`` stopped it after ``handed`` bytes
        had left for the socket.  The client cannot find its end, so the connection
        closes; the log line and the record say how far it went, and why."""
        if writer is not None:
            # What the peer may have had of the body: the bytes that left, less the
            # head (a chunked body's chunk framing counts).  The writer counts what
            # it handed on, which for a file sent by sendfile is nothing until the end.
            writer.sent = sent = max(0, handed - len(writer.head))
        else:
            sent = 0    # refused before its head was made
        if conn.cut:
            ended = stopped_at_grace(f'after {sent} bytes of its response body')
        elif peer_gone(exc):
            ended = (CLIENT_LEFT, f'{exc.strerror or exc} after {sent} bytes of the body')
        elif isinstance(exc, BodyCut):
            # An echo's request body ended early: the client left, its answer half sent.
            ended = (CLIENT_LEFT, f'connection closed {body_progress(body)}; response '
                                  f'cut after {sent} bytes of its body')
        elif isinstance(exc, TimeoutError):
            # The client reads too slowly (or an echo's body comes too slowly):
            # nothing can be said to it any more; its access-log line says it.
            ended = (TIMED_OUT, f'mid-response, after {sent} bytes: {exc}')
        elif isinstance(exc, HTTPError):
            # The request body failed while its echo was being streamed: the
            # response head is gone already, so the only honest signal left
            # is to cut the connection before the response's end.
            ended = (RESPONSE_CUT, f'request body: {exc.reason}')
        else:
            # Ours: a body that broke its announced length or a file that shrank
            # while sent (ResponseError), or a bug.  The traceback shows whose.
            log_failure(f'response to {self.peer(conn)} cut')
            ended = (RESPONSE_CUT, f'{type(exc).__name__}: {exc}')
        status = writer.response.status if writer is not None else None
        self.log(conn.peer, request, status, sent, now, ended=ended)
        self.record(conn, request, body, writer, now, ended=ended, done=False, live=live)
        return CLOSE

    def unanswered(self, conn, request, body, now, how, live=None):
        """The client went away before its answer began (``how``: 'connection closed',
        or the error's words): said and recorded, with how far its body came.  When the
        loop cut it, the server stopping, the server ended it, not the client."""
        if conn.cut:
            ended = stopped_at_grace(body_progress(body))
        else:
            ended = (CLIENT_LEFT, f'{how} {body_progress(body)}')
        self.log(conn.peer, request, None, 0, now, ended=ended)
        self.record(conn, request, body, None, now, ended=ended, live=live)
        return CLOSE

    def progress(self, live, waiting=''):
        """Publish an exchange's record as it stands, open, if it changed since it was
        last published: on its thread before its body's reader waits, or in the loop
        (``sweep``; ``waiting``: what for, while no thread has it).  The request as the
        body's reader counts it, the response as its writer does, so far."""
        with live.lock:
            if live.closed:
                return
            live.due = self.clock() + self.update_interval
            writer = live.writer
            if writer is None:
                response = NOT_SENT
            else:
                response = response_facts(writer.response.status, writer.framing, writer.chunks,
                                          writer.sent, writer.trailers, False, writer.sizes)
            record = http_record(live.conn.peer, live.now, live.request, live.body, response,
                                 (OPEN, waiting), tls_facts(live.conn.sock, final=False))
            if live.record is None:
                live.record = self.records.add(record)
            elif record[:VERSION] != live.record[:VERSION]:     # the facts, not the number
                live.record = self.records.update(live.record, record)

    # -- in the event loop, for exchanges on the pool ------------------------------------

    def go_live(self, conn, job, request, body, now):
        """Work handed to the pool gets a Live record (published once it has lasted
        update_interval) and waits as ``conn.exchange`` until a thread takes it."""
        live = job.live = Live(self, conn, request, body, now)
        conn.exchange = Waiting(request, live)
        self._lives.append(live)
        if not self._sweeping:
            self._sweeping = True
            self.loop.call_later(self.sweep_every(), self.sweep)

    def sweep_every(self):
        """Twice an update_interval: an exchange is first published at most 1.5 intervals
        after its head.  One timer for them all, not one each: a timer per exchange
        would wake the loop once more per request."""
        return max(self.update_interval / 2, LIVE_TICK)

    def sweep(self):
        """Publish each open exchange whose update is due if it changed, whoever holds it
        (no thread yet, or one waiting in a receive); forget the closed ones."""
        lives = self._lives = [live for live in self._lives if not live.closed]
        now = self.clock()
        for live in lives:
            if now >= live.due:
                state = live.conn.state
                self.progress(live, 'waiting for a thread' if state is QUEUED else
                              'waiting for its body to begin' if state is AWAITING_BODY
                              else '')
        if lives:
            self.loop.call_later(self.sweep_every(), self.sweep)
        else:
            self._sweeping = False

    # -- either side ----------------------------------------------------------------------

    def failed(self, conn):
        """A bug of ours: the client gets a 500, the log gets the traceback; (response, ended).

        The record names the exception's type only: records are shown to anyone.
        """
        log_failure(f'error answering {self.peer(conn)}')
        error = HTTPError(500, 'internal server error', close=True)
        return error_response(error), (FAILED, f'{error.reason}: {sys.exc_info()[0].__name__}')

    @staticmethod
    def after(request, body, keep):
        """What the connection does next: the next request, or a close.

        A close with a request body left unread lingers (RFC 9112 section 9.6),
        so that the client reads our answer rather than a reset.
        """
        if keep:
            return READ
        if request is not None and (body is None or not body.done):
            return LINGER
        return CLOSE

    @staticmethod
    def continuer(request):
        """What to do before the first body byte is read, per the Expect field.

        RFC 9110 section 10.1.1: send 100 Continue only when about to read the
        body (so a refused upload is never sent); an HTTP/1.0 client's
        100-continue MUST be ignored; other expectations get 417.  The 100 is
        an interim response like any other (request.interim).
        """
        expect = request.get('expect')
        if expect is None:
            return None
        if not continues(expect):
            raise HTTPError(417, f'cannot meet the expectation {expect[:40]!r}', close=True)
        if request.version != 'HTTP/1.1':
            return None
        return lambda: request.interim(100)

    # -- interim responses (request.interim), from the loop or a pool thread ---------------

    def queue_interim(self, request, status, fields):
        """In the loop: queued ahead of the final answer, which is queued after it."""
        request.interim_conn.send((interim_head(status, fields),))
        request.interims += ((status, fields),)

    def write_interim(self, request, status, fields):
        """On the pool thread that runs the handler: written now, through the paced
        socket (TLS over it when the connection is TLS), before the final response."""
        write_all(request.interim_conn.timed, interim_head(status, fields))
        request.interims += ((status, fields),)

    @staticmethod
    def can_keep(body, response):
        """Can the next request be read after this response?

        Not if the body was never started while the client waits for 100
        Continue (it may or may not send the body now), nor if more is left
        unread than we are willing to drain.  A streaming response reads the
        body itself, so it is judged after it was written.
        """
        if body is None or body.done:
            return True
        if not is_bytes(response.body) and not hasattr(response.body, 'sendfile'):
            return True                    # streaming
        if not body.started:
            return False
        return body.framing.kind == LENGTH and body.length - body.received <= MAX_DRAIN

    @staticmethod
    def drain(body):
        """Read and discard what the handler left of the body, within MAX_DRAIN."""
        try:
            body.read_to(bounded(lambda piece: None, MAX_DRAIN))
        except HTTPError:
            return False
        except OSError as exc:
            # Gone, or too slow (the Pace): the answer went whole, the
            # connection just is not kept.  Anything else is ours.
            if not peer_gone(exc) and not isinstance(exc, TimeoutError):
                log_failure(f'draining {body.framing} from a client')
            return False
        return True

    @staticmethod
    def peer(conn):
        return f'{conn.peer[0]}:{conn.peer[1]}'

    def log(self, peer, request, status, sent, now, say=say, ended=ENDED_WHOLE):
        """One Common Log Format line per request, to stderr (said soon, from the loop).

        An exchange that did not end whole says how it ended in a last quoted
        field (as the combined format adds its own), in the words of its record:
        'refused 404: no such file at /x' for every error answer, 'client left:
        ...' for an abort; the status as begun ('-' when no response began), the
        bytes sent so far.
        """
        if self.access_log:
            self.log_line(peer, logged(request_line(request), status, sent, ended), now, say)

    def log_line(self, peer, logged, now, say=say):
        """The access log's line: the client's address, the time, and what ``logged``
        made of the exchange (an answer given again keeps its time and that, made once
        a second: Answer.per_second, and ``again`` says its line as this does, without this
        call)."""
        say(peer[0] + self._stamp.at(now) + logged, err=True)

    def record(self, conn, request, body, writer, now, say=say, ended=ENDED_WHOLE, done=True,
               live=None):
        """Keep how this exchange was framed (``writer`` wrote its response; None when
        none began; ``done``: whether it went to its end) and how it ended; with
        --trace, say it in the words of chapter 5.  A live record (``live``, once
        published) is closed: this is its last version.  Returns the record kept."""
        if writer is None:
            response = NOT_SENT
        else:
            response = response_facts(writer.response.status, writer.framing, writer.chunks,
                                      writer.sent, writer.trailers, done, writer.sizes)
        record = http_record(conn.peer, now, request, body, response, ended, tls_facts(conn.sock))
        return self.keep_record(conn, record, say, live)

    def keep_record(self, conn, record, say=say, live=None):
        """Keep an exchange's record (closing its live one, if published) and say it
        with --trace; the record kept."""
        if live is not None:
            record = self.close_live(live, record)
        else:
            record = self.records.add(record)
        if self.trace:
            self.say_trace(conn, record, say)
        return record

    def say_trace(self, conn, record, say=say):
        """The --trace line of a record kept."""
        say(f'trace {self.peer(conn)}: {public(record)["words"]}', err=True)

    def close_live(self, live, record):
        """Publish an exchange's last version (its first, if it ended within the interval):
        after every open one, and nothing after it."""
        with live.lock:
            live.closed = True
            # What the exchange held goes now, not when the sweep next forgets it:
            # kept for that long, a busy server's exchanges pile up for the collector.
            live.request = live.body = live.writer = None
            if live.record is None:
                live.record = self.records.add(record)
            else:
                live.record = self.records.update(live.record, record)
            return live.record


def body_progress(body):
    """How far a request body came, for a log line and a record's reason: 'after 120
    bytes of the body', with a chunked body's chunks and its missing last chunk."""
    if body is None:
        return 'before its body'
    if body.framing.kind == CHUNKED and not body.done:
        return (f'after {body.received} bytes of the body ({counted(body.chunks, "chunk")}, '
                'no last chunk)')
    return f'after {body.received} bytes of the body'


def stopped_at_grace(progress):
    """How an exchange ends that the loop cut (``conn.cut``: its socket shut when a
    stopping server's grace was over): the peer sees its stream end as a client gone
    would, but the record and the log line say whose doing it was."""
    return (TIMED_OUT, f'the server stopped at the end of its grace, {progress}')


def logged(line, status, sent, ended=ENDED_WHOLE):
    """What an access-log line says after its time: the request line (``request_line``),
    the status, the body bytes sent, and how the exchange ended when not whole."""
    text = f'"{line}" {status or "-"} {sent or "-"}'
    if ended[0] != ENDED_WHOLE[0]:
        words = ended_words({'kind': ended[0], 'reason': ended[1]}, status)
        text += ' "' + words.replace('"', "'") + '"'
    return text


def request_line(request):
    """The request as the access log quotes it: method, target, version ('-' for none)."""
    if request is None:
        return '-'
    return f'{request.method} {log_escaped(request.target)} {request.version}'


def log_escaped(target):
    """A target as the access log quotes it: '"' and '\\' escaped with '\\', as Apache's
    log does, so that a client cannot end the quoted field (a target is VCHAR: no
    space, CR or LF to escape)."""
    if '"' in target or '\\' in target:
        return target.replace('\\', '\\\\').replace('"', '\\"')
    return target


def refused(error):
    """How an exchange answered with ``error``'s response ends (records' ``ended``)."""
    return (REFUSED, error.reason)


def continues(expect):
    """Whether an Expect field asks for 100 Continue, the one expectation there is."""
    return expect.strip().lower() == '100-continue'
