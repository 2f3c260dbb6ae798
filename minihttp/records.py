"""Framing records: how each message was cut from the stream, in the words of chapter 5.

One record per HTTP exchange (the request's head and body, the response) and
per block stream.  An exchange handed to a pool thread has a live record:
published ``open`` once it has lasted UPDATE_INTERVAL, republished (the same
number, a higher ``version``) as its body arrives and its answer goes, at most
every UPDATE_INTERVAL, and a last time when the exchange ends.  The same
record makes the ``--trace`` line and the JSON that ``GET /_framing`` serves,
so that the log and the page say the same thing.  A record holds facts
(numbers and short strings), never a body; a bounded ring keeps the most
recent ones.

Records are shown to anyone who asks, so they keep a request's path but not
its query's values (``redact``): ``/search?q=*&key=*``.
"""

import collections
import itertools
import json
import os
import threading

from .limits import (RECORDED_CHUNKS, RECORDED_INTERIM_FIELDS, RECORDED_INTERIMS,
                     RECORDED_LAST, RECORDED_TARGET, RECORDED_TRAILER, RECORDS_KEPT)
from .tls import TLSConnection, type_name, version_text
from .transfer import CHUNKED, CLOSE, LENGTH, NONE, STREAM, Framing


class FramingLog:
    """The most recent framing records of this process, each numbered in order.

    A record is kept as a short list of facts, made for every request and so
    cheap; ``public`` turns it into the dict that the JSON, the page and
    --trace read, only when someone reads it.
    """

    def __init__(self, size=RECORDS_KEPT):
        self._records = collections.deque(maxlen=size)
        self._numbers = itertools.count(1)
        self._latest = 0         # the highest record number added or kept so far
        # Record number -> the latest number when it was last updated (kept records only):
        # what ``kept(after)`` needs to give a client each update it may have missed.
        self._changed = {}
        self._lock = threading.Lock()
        # A tuple, replaced whole (listen, unlisten): a thread adding a record reads it
        # while the loop's thread may change it.
        self._listeners = ()
        # Record number -> the record as compact JSON (bytes), made when first read and
        # shared by every answer and stream that sends it; pruned to the ring's records.
        self._json = {}
        self._series = (0, 1)    # own numbers are series mod count (number_in_series)
        # With --workers (minihttp.hub): what a read calls first (to ask the other
        # processes for theirs), what a stream's opening calls, and how many are open.
        self._reading = None
        self._streaming = None
        self.streams = 0

    def listen(self, listener):
        """Call ``listener(record)`` for every record and every update of one from now
        on, this process's and those merged from others (in the adding or merging
        thread; an update's ``record[VERSION]`` is above 0)."""
        self._listeners += (listener,)

    def unlisten(self, listener):
        """No more calls to ``listener`` (one that ``listen`` was given)."""
        self._listeners = tuple(known for known in self._listeners if known != listener)

    def number_in_series(self, series, count, after=0):
        """Number this process's records series, series + count, ...: with --workers, each
        process has a series of its own, so that no two records share a number.  A
        replaced worker's successor goes on ``after`` the last number it gave."""
        first = series + count
        if after >= first:
            first = after + count
        self._numbers = itertools.count(first, count)
        self._series = (series % count, count)

    def on_read(self, reading, streaming):
        """With --workers: ``reading()`` is called before every read of the records
        (``kept``), ``streaming()`` when a stream opens (minihttp.hub asks the others)."""
        self._reading, self._streaming = reading, streaming

    @property
    def asks_others(self):
        """Whether a read of the records waits for other processes' (``on_read``)."""
        return self._reading is not None

    def watch(self):
        """A stream of the records opened here (minihttp.server): while any is open, the
        other processes' records are asked for as they come."""
        self.streams += 1
        if self._streaming is not None:
            self._streaming()

    def unwatch(self):
        self.streams -= 1

    def held(self):
        """The lock that every change takes, to hold across a fork (minihttp.hub)."""
        return self._lock

    def add(self, record):
        """Number the record and keep it (the oldest goes when the ring is full).

        The loop's thread and the pool's add at once (and with --workers, the hub
        holds the lock across a fork): numbered and appended under the lock, so the
        ring keeps records in the order of their numbers.  Taken by its methods,
        not ``with``: every request adds one, and ``with`` costs a bound ``__exit__``
        and its three arguments besides (about twice the time)."""
        lock = self._lock
        lock.acquire()
        try:
            record[NUMBER] = self._latest = next(self._numbers)
            self._records.append(record)
        finally:
            lock.release()
        listeners = self._listeners
        if listeners:                       # (none: no iterator made, every request)
            for listener in listeners:      # as _tell does: a call fewer per record
                listener(record)
        return record

    def _tell(self, record):
        """Tell every listener of a record of ours (or a new version of one)."""
        for listener in self._listeners:
            listener(record)
        return record

    def update(self, record, new):
        """Replace a record added before with ``new``, its next version: the same
        number, kept in its place (at the end if the ring let it go meanwhile)."""
        new[NUMBER] = record[NUMBER]
        new[VERSION] = record[VERSION] + 1
        with self._lock:
            self._replace(record, new)
        return self._tell(new)

    def _replace(self, record, new):
        """Under the lock: ``new`` where the record numbered as it is was kept.  Searched
        from the newest, where an open exchange's record is; at most the ring."""
        records, number = self._records, new[NUMBER]
        for index in range(len(records) - 1, -1, -1):
            if records[index][NUMBER] == number:
                records[index] = new
                break
        else:
            records.append(new)
        self._changed[number] = self._latest
        if len(self._changed) > records.maxlen:
            ring = {kept[NUMBER] for kept in records}
            self._changed = {n: at for n, at in self._changed.items() if n in ring}

    def own(self):
        """This process's records kept, oldest first, and the highest number it gave."""
        residue, count = self._series
        with self._lock:
            own = [record for record in self._records if record[NUMBER] % count == residue]
        return own, max((record[NUMBER] for record in own), default=0)

    def merge(self, records):
        """Keep another process's records (minihttp.hub: its ``own``, in any version):
        those new here and those in a newer version than kept; the ring then keeps the
        newest of all by the time each exchange began, whichever process made it.  The
        listeners are told of each."""
        told = []
        with self._lock:
            kept = self._records
            where = {record[NUMBER]: index for index, record in enumerate(kept)}
            new = []
            for record in records:
                index = where.get(record[NUMBER])
                if index is None:
                    new.append(record)
                elif record[VERSION] > kept[index][VERSION]:
                    self._replace(kept[index], record)
                else:
                    continue
                told.append(record)
            if new:
                merged = sorted([*kept, *new], key=lambda record: record[1])
                kept.clear()
                kept.extend(merged)         # the deque keeps the newest RECORDS_KEPT
                self._latest = max(self._latest, max(record[NUMBER] for record in new))
        for record in told:
            for listener in self._listeners:
                listener(record)

    def kept(self, after=0):
        """The records kept, each in its current version, that a client which has seen
        every record and update up to record ``after`` may lack, oldest first: those
        numbered above ``after``, and those updated since record ``after`` was numbered
        (once the latest number was ``after`` or more).  With --workers, every other
        process's are asked for first (``on_read``)."""
        if self._reading is not None:
            self._reading()
        return self._kept(after)

    def _kept(self, after=0):
        with self._lock:
            if not self._changed:
                return [record for record in self._records if record[NUMBER] > after]
            changed = self._changed
            return [record for record in self._records if record[NUMBER] > after
                    or changed.get(record[NUMBER], -1) >= after]

    def recent(self, after=0):
        """The records kept whose number is above ``after``, oldest first, as dicts."""
        return [public(record) for record in self.kept(after)]

    def as_json(self, record):
        """A record as ``public`` makes it, in compact JSON (bytes): made once per record."""
        number = record[NUMBER]
        made = self._json.get(number)
        if made is not None and made[0] is record:
            return made[1]
        data = json.dumps(public(record), separators=(',', ':')).encode()
        if len(self._json) >= 2 * self._records.maxlen:
            ring = {kept[NUMBER] for kept in self._kept()}
            self._json = {n: made for n, made in self._json.items() if n in ring}
        self._json[number] = (record, data)     # a later version replaces it
        return data


class EventStream:
    """The body of a response that is the live feed of records (``text/event-stream``).

    Not bytes the application produces: the server holds the connection open
    in its event loop and sends each record as it is added, after the kept
    ones numbered above ``after``.
    """

    def __init__(self, after=0):
        self.after = after


def event_bytes(record, data):
    """A record, and its JSON as FramingLog.as_json made it, as one server-sent event
    (text/event-stream): ``record`` for its first version, with the record number as
    the event's id; ``update`` for a later one, with no id, so that a browser's
    Last-Event-ID stays the highest record number it has seen (FramingLog.kept gives
    a client that comes back with it the updates it missed)."""
    if record[VERSION]:
        return b'event: update\ndata: %s\n\n' % data
    return b'id: %d\nevent: record\ndata: %s\n\n' % (record[NUMBER], data)


def dropped_event(count):
    """The event that tells a slow reader how many records it missed."""
    return f'event: dropped\ndata: {{"dropped": {count}}}\n\n'.encode()


# Where a record keeps its number: its last item (0 until a FramingLog numbers it).
NUMBER = -1
# Where a record keeps its version: 0 when first published, one more at each update.
VERSION = -2
# This process's id for its records: read once, and again in a forked worker.
_process = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _process.__setitem__(0, os.getpid()))


# How an exchange ended: a record's ``ended`` is (kind, reason), the kind one of these.
WHOLE = 'whole'                # the response went whole (reason: '')
REFUSED = 'refused'            # an error response went whole; reason: the error's
TIMED_OUT = 'timed out'        # a deadline or the pool's pace ran out; reason: which
CLIENT_LEFT = 'client left'    # the peer went away mid-exchange (errors.peer_gone)
RESPONSE_CUT = 'response cut'  # a response begun could not be finished; reason: why
FAILED = 'failed'              # a bug of ours: a 500 (the log has the traceback)
OPEN = 'open'                  # not ended yet: a live record; reason: what it waits for
ENDED_WHOLE = (WHOLE, '')
ENDED_OPEN = (OPEN, '')


def http_record(peer, now, request, body, response, ended=ENDED_WHOLE, tls=None):
    """The facts of one HTTP exchange; ``body`` is the request's Body reader, or None,
    ``response`` (status, its transfer.Framing's kind and length, chunks, body bytes
    sent, trailer_facts of the fields its last chunk carried), NOT_SENT when none
    began, ``ended`` (kind, reason): how the exchange ended, and why, and ``tls``
    the TLS records that carried it (tls_facts; None over plain TCP)."""
    if request is None:
        head = None
    else:
        target = request.target
        if '?' in target or target[0] != '/':
            target = redact(target)
        head = (request.method, target[:RECORDED_TARGET], request.version, request.head_size,
                body_facts(body))
    interims = () if request is None or not request.interims else interim_facts(request.interims)
    return exchange_record(peer, now, head, response, ended, tls, interims)


def exchange_record(peer, now, request, response, ended=ENDED_WHOLE, tls=None, interims=()):
    """An HTTP exchange's record from its facts: ``request`` and ``response`` as
    http_record makes them (an exchange that repeats another byte for byte, the server's
    remembered answer, is recorded with the first one's: record[REQUEST] and
    record[RESPONSE]); numbered when a FramingLog adds it."""
    return ['http', now, _process[0], peer, request, response, ended, tls, interims, 0, 0]


# Where an HTTP record keeps the facts of its request (head and body) and of its response.
REQUEST = 4
RESPONSE = 5


# Interim fields whose values a record shows: the resumable-upload draft's, which
# say offsets, lengths and limits.  Any other is "*": a Location names an upload
# resource whose unguessable ID is its only key (records are shown to anyone).
SHOWN_INTERIM_VALUES = frozenset({'upload-offset', 'upload-length', 'upload-complete',
                                  'upload-limit', 'upload-draft-interop-version'})


def interim_facts(interims):
    """The interim (1xx) responses sent before the final one, as a record keeps them:
    ((status, ((name, value), ...)), ...), at most RECORDED_INTERIMS of them."""
    return tuple((status, tuple((name, value if name.lower() in SHOWN_INTERIM_VALUES else '*')
                                for name, value in fields[:RECORDED_INTERIM_FIELDS]))
                 for status, fields in interims[:RECORDED_INTERIMS])


def redact(target):
    """A request-target fit to show anyone, in RECORDED_TARGET characters at most: its
    path, and the names of its query's parameters with each value shown as ``*``
    (an item without a name is all value: ``*``); no userinfo in an absolute-form
    target.  Cut short before the query is read, so a value cut in two is still
    a value."""
    if target[:1] != '/' and '@' in target:
        scheme, sep, rest = target.partition('://')
        end = min([i for i in (rest.find('/'), rest.find('?')) if i >= 0], default=len(rest))
        target = scheme + sep + rest[:end].rpartition('@')[2] + rest[end:]
    path, mark, query = target[:RECORDED_TARGET].partition('?')
    if not mark:
        return path
    items = []
    for item in query.split('&'):
        name, equals, _ = item.partition('=')
        items.append(name + '=*' if equals else '*' if item else '')
    return path + '?' + '&'.join(items)


def body_facts(body):
    """The facts of a request body, first its framing's kind ('unread': never opened)."""
    if body is None:
        return ('unread',)
    kind = body.framing.kind
    if kind == CHUNKED:
        return (kind, body.received, body.chunks, body.sizes.facts(),
                trailer_facts(body.trailers), body.done)
    if kind == LENGTH:
        return (kind, body.length, body.received, body.done)
    return (kind,)


# Trailer fields whose values a record shows: digests, which say nothing secret.
# Any other value is shown as "*", as a query's values are (records are public,
# and a header field's value is never recorded either).
SHOWN_TRAILER_VALUES = frozenset({'content-digest', 'repr-digest'})


def trailer_facts(trailers):
    """A chunked body's trailer fields as a record keeps them: (how many, the
    fields within RECORDED_TRAILER bytes of names and values, values other than
    digests as "*")."""
    kept = []
    room = RECORDED_TRAILER
    for name, value in trailers:
        if name.lower() not in SHOWN_TRAILER_VALUES:
            value = '*'
        room -= len(name) + len(value)
        if room >= 0:
            kept.append((name, value))
            continue
        fits = len(value) + room - len('...')     # of this value, with the mark
        if fits >= 0:
            kept.append((name, value[:fits] + '...'))
        break
    return len(trailers), tuple(kept)


NO_TRAILERS = trailer_facts(())       # most responses': made once
# The response facts of an exchange that ended (or is open) before a response began.
NOT_SENT = (None, NONE, 0, 0, 0, NO_TRAILERS, False, None)


def response_facts(status, framing, chunks, sent, trailers, done=True, sizes=None):
    """A response's facts as a record keeps them: its status, its transfer.Framing's kind
    and length, its chunks and body bytes sent, the trailer fields its last chunk carried,
    whether it was sent to its end (False: cut, or a stream kept open), and its chunks'
    sizes (a Sizes, or None: not sent in chunks by the writer)."""
    return (status, framing.kind, framing.length, chunks, sent,
            trailer_facts(trailers) if trailers else NO_TRAILERS, done,
            None if sizes is None else sizes.facts())


def tls_facts(sock, final=True):
    """The TLS records of an exchange on ``sock`` as a record keeps them, or None when
    ``sock`` is not a scanned tls.TLSConnection (plain TCP): (version, ALPN protocol,
    the handshake's (received, sent) or None, received, sent), each direction as
    tally_facts.

    Records are counted as they cross the socket, not per HTTP message: what was
    received since the last exchange's end (its request, and any of the next one's
    that came in the same receive: pipelining), what was sent since (its response).
    ``final`` (the exchange's last version) cuts the tallies, so the next exchange's
    start fresh, and takes the handshake's, kept on the connection by do_handshake:
    shown once, with the connection's first exchange.  An open version (not
    ``final``) looks at them as they stand and takes nothing.
    """
    if not isinstance(sock, TLSConnection):         # plain TCP
        return None
    return sock.exchange_facts(final)


def tally_facts(tally):
    """One direction's tls.RecordTally as a record keeps it: the tuple RecordScanner.take
    made, its content types, versions and lengths as numbers (direction_dict names them:
    a record is made per exchange, shown far less).  Bounded as the tally is: at most
    RECORDED_CHUNKS records listed, RECORDED_HANDSHAKE messages, five content types."""
    return tally.facts


def trailer_dict(facts):
    """Trailer facts as the JSON says them: ``trailers`` (how many), ``trailer_fields``."""
    return {'trailers': facts[0], 'trailer_fields': [list(field) for field in facts[1]]}


def block_record(peer, now, blocks, total, recorded, ended):
    """The facts of one block stream: its blocks, bytes, their sizes (Sizes.facts) and
    how it ended."""
    return ['blocks', now, _process[0], peer, blocks, total, recorded, ended, 0, 0]


def public(record):
    """A record as the JSON, the page and --trace read it; ``words`` is what --trace says."""
    kind, now, process, peer = record[:4]
    out = {'id': record[NUMBER], 'version': record[VERSION], 'kind': kind, 'time': now,
           'process': process, 'peer': f'{peer[0]}:{peer[1]}'}
    if kind == 'blocks':
        blocks, total, recorded, ended = record[4:8]
        out.update({'blocks': blocks, 'bytes': total, **sizes(recorded), 'ended': ended})
    else:
        head, (status, kind, length, chunks, sent, trailers, done, recorded) = record[4:6]
        out['request'] = None if head is None else {
            'method': head[0], 'target': head[1], 'version': head[2], 'head': head[3],
            'delimiter': 'CRLFCRLF', 'body': body_dict(head[4])}
        # ``sent``: whether a response began (False: none, and ``status`` is null);
        # ``done``: whether it went to its end (a chunked one's last chunk included).
        out['response'] = {'sent': status is not None, 'status': status, 'framing': kind,
                           'chunks': chunks, 'bytes': sent, 'done': done}
        if kind == LENGTH:
            out['response']['length'] = length
        elif kind == CHUNKED:
            out['response'].update(trailer_dict(trailers))
            if recorded is not None:
                out['response'].update(sizes(recorded))
        how, why = record[6]
        out['ended'] = {'kind': how, 'reason': why}
        out['tls'] = tls_dict(record[7])
        # Interim (1xx) responses sent before the final one, in order.
        out['interim'] = [{'status': status, 'fields': [list(field) for field in fields]}
                          for status, fields in record[8]]
    out['words'] = describe(out)
    return out


def body_dict(facts):
    """A request body's facts as the JSON says them: ``framing`` is the Framing's kind, and
    a content-length body's ``length`` is the rest of its spelling."""
    kind = facts[0]
    if kind == CHUNKED:
        _, received, chunks, recorded, trailers, done = facts
        return {'framing': kind, 'bytes': received, 'chunks': chunks,
                **sizes(recorded), **trailer_dict(trailers), 'done': done}
    if kind == LENGTH:
        _, length, received, done = facts
        return {'framing': kind, 'length': length, 'bytes': received, 'done': done}
    return {'framing': kind}


def tls_dict(facts):
    """An exchange's TLS records as the JSON says them (None over plain TCP): ``version``,
    ``alpn``, ``handshake`` ({received, sent}, on a connection's first exchange, else
    None), ``received`` and ``sent`` (the records that crossed while this exchange was
    read and answered), each as direction_dict."""
    if facts is None:
        return None
    version, alpn, handshake, received, sent = facts
    return {'version': version, 'alpn': alpn,
            'handshake': None if handshake is None else {
                'received': direction_dict(handshake[0]), 'sent': direction_dict(handshake[1])},
            'received': direction_dict(received), 'sent': direction_dict(sent)}


def direction_dict(facts):
    """One direction's records (tally_facts) as the JSON says them: ``records``, ``bytes``
    (headers included), ``types`` (content type -> records), ``sizes`` ([type, version,
    length] of the first records), ``more`` (records not in ``sizes``), ``messages``
    (the handshake messages seen in clear), and ``malformed`` when scanning stopped."""
    records, total, types, listed, messages, malformed = facts
    out = {'records': records, 'bytes': total,
           'types': {type_name(kind): count for kind, count in types},
           'sizes': [[type_name(kind), version_text(version), length]
                     for kind, version, length in listed], 'more': records - len(listed),
           'messages': list(messages)}
    if malformed:
        out['malformed'] = malformed
    return out


def sizes(facts):
    """The chunk or block sizes a record lists, as Sizes.facts made them: ``sizes`` the
    first, ``last_sizes`` the last (none of them among the first), ``more`` how many
    chunks or blocks are in neither."""
    first, last, count = facts
    return {'sizes': list(first), 'last_sizes': list(last),
            'more': count - len(first) - len(last)}


def describe(record):
    """The --trace line of a record (without its peer)."""
    if record['kind'] == 'http':
        return describe_http(record)
    return describe_blocks(record)


def describe_http(record):
    parts = []
    request = record['request']
    if request is None:
        parts.append('head unreadable')
    else:
        parts.append(f'head {request["head"]} B by CRLFCRLF')
        body = request['body']
        if body['framing'] == CHUNKED:
            end = trailer_words(body) if body['done'] else 'no last chunk'
            parts.append(f'body chunked: {counted(body["chunks"], "chunk")}, {body["bytes"]} B, '
                         f'{end}')
        elif body['framing'] == LENGTH and not body['done']:
            parts.append(f'body {spelled(body)}, {body["bytes"]} B of it')
        else:        # 'unread', or the framing's one spelling
            parts.append(f'body {spelled(body)}')
    for interim in record.get('interim', ()):
        names = ', '.join(name for name, _ in interim['fields'])
        parts.append(f'interim {interim["status"]}' + (f' ({names})' if names else ''))
    response = record['response']
    kind, sent = response['framing'], response['bytes']
    if kind == CHUNKED and response['done']:
        how = f' ({counted(response["chunks"], "chunk")}, {sent} B, {trailer_words(response)})'
    elif kind == CHUNKED:
        how = f' ({counted(response["chunks"], "chunk")}, {sent} B, no last chunk)'
    elif kind == CLOSE or kind == LENGTH:
        how = f' ({sent} B)'
    elif kind == STREAM:
        how = ' (kept open)'
    else:
        how = ''
    if response['status'] is None:
        parts.append('no response yet' if record['ended']['kind'] == OPEN else 'no response')
    else:
        parts.append(f'response {response["status"]} by {spelled(response)}{how}')
    if record['ended']['kind'] != WHOLE:
        parts.append(ended_words(record['ended'], response['status']))
    if record.get('tls'):
        parts.extend(tls_words(record['tls']))
    return '; '.join(parts)


def tls_words(facts):
    """An exchange's TLS records in words: 'TLS handshake (TLSv1.3, http/1.1): 3 records
    in (client_hello), 6 out (server_hello)' on a connection's first exchange, then
    'TLS: request in 1 record (95 B), response in 2 records (1130 B)'."""
    parts = []
    handshake = facts['handshake']
    if handshake is not None:
        said = ', '.join(str(fact) for fact in (facts['version'], facts['alpn']) if fact)
        received, sent = handshake['received'], handshake['sent']
        parts.append(f'TLS handshake ({said}): '
                     f'{records_words(received, "in", True)}, {records_words(sent, "out", True)}')
    parts.append(f'TLS: {records_words(facts["received"], "request in")}, '
                 f'{records_words(facts["sent"], "response in")}')
    return parts


def records_words(facts, what, handshake=False):
    """'request in 2 records (120 B: 1 application_data, 1 alert)': how many, their bytes
    and, beside application data, their types; a handshake's with its messages."""
    count = facts['records']
    listed = [f'{facts["bytes"]} B']
    others = {kind: n for kind, n in facts['types'].items() if kind != 'application_data'}
    if others and not handshake:
        listed[0] += ': ' + ', '.join(f'{n} {kind}' for kind, n in others.items())
    if handshake and facts['messages']:
        listed.append(', '.join(facts['messages']))
    if facts.get('malformed'):
        listed.append(f'malformed: {facts["malformed"]}')
    return f'{what} {count} record{"" if count == 1 else "s"} ({"; ".join(listed)})'


def trailer_words(facts):
    """A chunked message's trailers in words: '0 trailers', '1 trailer (Repr-Digest)',
    '3 trailers (X-A, X-B, +1 more)': the names the record kept, and how many more."""
    count, names = facts['trailers'], [field[0] for field in facts['trailer_fields']]
    if count > len(names):
        names.append(f'+{count - len(names)} more')
    listed = f' ({", ".join(names)})' if names else ''
    return counted(count, 'trailer') + listed


def counted(count, noun):
    """A count and its noun, in the singular for one: '1 chunk', '3 chunks', '0 blocks'."""
    return f'{count} {noun}{"" if count == 1 else "s"}'


def spelled(facts):
    """The one spelling of the Framing a record's request body or response names."""
    return str(Framing(facts['framing'], facts.get('length')))


def ended_words(ended, status):
    """How an exchange ended, in words: 'refused 404: no such file', 'client left: ...'."""
    kind, reason = ended['kind'], ended['reason']
    if kind == WHOLE or kind == OPEN and not reason:
        return kind           # an open one's reason, when it has one: what it waits for
    if kind == REFUSED:
        return f'{REFUSED} {status}: {reason}'
    return f'{kind}: {reason}'


def describe_blocks(record):
    return (f'{counted(record["blocks"], "block")} by 4-byte length prefix, {record["bytes"]} B; '
            f'{record["ended"]}')


class Sizes:
    """The sizes of a run of chunks or blocks as a record lists them: the first
    RECORDED_CHUNKS, the last RECORDED_LAST after those, and how many in all.

    ``add`` is O(1) and the memory bounded whatever the count (the last few in a
    deque that drops the oldest), so a body of a million chunks costs the same
    bookkeeping as one of 70; ``facts`` is what a record keeps, a snapshot.
    """

    __slots__ = ('first', 'last', 'count')

    def __init__(self):
        self.first = []
        self.last = collections.deque(maxlen=RECORDED_LAST)
        self.count = 0

    def add(self, size):
        count = self.count = self.count + 1
        if count <= RECORDED_CHUNKS:
            self.first.append(size)
        else:
            self.last.append(size)

    def facts(self):
        """(the first sizes, the last ones, the count), apart from this keeper's future."""
        return tuple(self.first), tuple(self.last), self.count
