"""Framing records: how each message was cut from the stream, in the words of chapter 5.

One record per HTTP exchange (the request's head and body, the response) and
per block stream.  The same record makes the ``--trace`` line and the JSON
that ``GET /_framing`` serves, so that the log and the page say the same
thing.  A record holds facts (numbers and short strings), never a body; a
bounded ring keeps the most recent ones.
"""

import collections
import itertools
import json
import os
import threading

from .limits import RECORDED_CHUNKS, RECORDS_KEPT


class FramingLog:
    """The most recent framing records of this process, each numbered in order."""

    def __init__(self, size=RECORDS_KEPT):
        self._records = collections.deque(maxlen=size)
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._listeners = []
        # In a worker process: where its records go to be numbered with every
        # other worker's (minihttp.hub); they come back through keep().
        self.forward = None

    def listen(self, listener):
        """Call ``listener(record)`` for every record added from now on (in the adding thread)."""
        self._listeners.append(listener)

    def add(self, record):
        """Number the record and keep it (the oldest goes when the ring is full)."""
        if self.forward is not None:
            self.forward(record)
            return record
        with self._lock:
            record['id'] = next(self._numbers)
        return self.keep(record)

    def keep(self, record):
        """Keep a numbered record, and tell the listeners."""
        with self._lock:
            self._records.append(record)
        for listener in self._listeners:
            listener(record)
        return record

    def recent(self, after=0):
        """The records kept whose number is above ``after``, oldest first."""
        with self._lock:
            return [record for record in self._records if record['id'] > after]


class EventStream:
    """The body of a response that is the live feed of records (``text/event-stream``).

    Not bytes the application produces: the server holds the connection open
    in its event loop and sends each record as it is added, after the kept
    ones numbered above ``after``.
    """

    def __init__(self, after=0):
        self.after = after


def event_bytes(record):
    """A record as one server-sent event (the HTML standard's text/event-stream)."""
    data = json.dumps(record, separators=(',', ':'))
    return f'id: {record["id"]}\nevent: record\ndata: {data}\n\n'.encode()


def dropped_event(count):
    """The event that tells a slow reader how many records it missed."""
    return f'event: dropped\ndata: {{"dropped": {count}}}\n\n'.encode()


def sizes(recorded, count):
    """The chunk or block sizes a record lists: the first RECORDED_CHUNKS, and how many more."""
    return {'sizes': recorded, 'more': count - len(recorded)}


def http_record(peer, now, request, body, response_status, framing, chunks, sent):
    """The record of one HTTP exchange; ``body`` is the request's Body reader, or None."""
    record = {'kind': 'http', 'time': now, 'process': os.getpid(),
              'peer': f'{peer[0]}:{peer[1]}', 'request': None,
              'response': {'status': response_status, 'framing': framing, 'chunks': chunks,
                           'bytes': sent}}
    if request is not None:
        record['request'] = {
            'method': request.method, 'target': request.target[:200],
            'version': request.version, 'head': request.head_size, 'delimiter': 'CRLFCRLF',
            'body': body_record(body)}
    return record


def body_record(body):
    if body is None:
        return {'framing': 'unread'}
    if body.framing == 'chunked':
        return {'framing': 'chunked', 'bytes': body.received, 'chunks': body.chunks,
                **sizes(body.sizes, body.chunks), 'trailers': len(body.trailers),
                'done': body.done}
    if body.framing == 'length':
        return {'framing': 'length', 'length': body.length, 'bytes': body.received,
                'done': body.done}
    return {'framing': 'none'}


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
        framing = body['framing']
        if framing == 'unread':
            parts.append('body unread')
        elif framing == 'chunked':
            parts.append(f'body chunked: {body["chunks"]} chunks, {body["bytes"]} B, '
                         f'{body["trailers"]} trailers')
        elif framing == 'length':
            parts.append(f'body Content-Length {body["length"]}')
        else:
            parts.append('body none')
    response = record['response']
    framing, sent = response['framing'], response['bytes']
    if framing == 'chunked':
        how = f'chunked ({response["chunks"]} chunks, {sent} B)'
    elif framing == 'Content-Length':
        how = f'Content-Length ({sent} B)'
    elif framing == 'close':
        how = f'closing the connection ({sent} B)'
    elif framing == 'stream':
        how = 'an event stream, kept open'
    else:
        how = 'no body'
    parts.append(f'response {response["status"]} by {how}')
    return '; '.join(parts)


def block_record(peer, now, blocks, total, recorded, ended):
    """The record of one block stream: its blocks' sizes and how it ended."""
    return {'kind': 'blocks', 'time': now, 'peer': f'{peer[0]}:{peer[1]}', 'blocks': blocks,
            'bytes': total, **sizes(recorded, blocks), 'ended': ended}


def describe_blocks(record):
    return (f'{record["blocks"]} blocks by 4-byte length prefix, {record["bytes"]} B; '
            f'{record["ended"]}')


def keep_size(recorded, size):
    """Add a chunk or block size to a record's list, up to RECORDED_CHUNKS of them."""
    if len(recorded) < RECORDED_CHUNKS:
        recorded.append(size)
