"""The HTTP/1.1 connection loop: read a request, let the application answer, repeat.

One thread owns one connection (the Listener starts it), so everything here
is plain sequential code: pipelined requests are answered in order because
they are read in order, from the one StreamReader of the connection.
"""

import socket
import struct
import time
import traceback

from .framing import StreamReader, write_all
from .http11 import (HTTPError, PerSecond, bounded, error_response, open_body, read_request,
                     write_response)
from .limits import (BODY_TIMEOUT, HEAD_TIMEOUT, KEEPALIVE_TIMEOUT, LINGER_TIMEOUT, MAX_DRAIN,
                     MAX_LINGER, READ_BUFFER_SIZE)
from .report import say

CONTINUE = b'HTTP/1.1 100 Continue\r\n\r\n'


def timeval(seconds):
    """A struct timeval for SO_RCVTIMEO / SO_SNDTIMEO."""
    whole = int(seconds)
    return struct.pack('@ll', whole, int((seconds - whole) * 1_000_000))


class TimedSocket:
    """The receiving side of a connection, with a timeout that costs nothing per request.

    Python's own socket timeouts poll() before every recv and send.  Here the
    socket stays blocking and the kernel enforces the timeout (SO_RCVTIMEO),
    set only when the wanted value changed *and* a recv is about to block:
    a request that arrived whole in one recv changes nothing.
    """

    def __init__(self, sock):
        self.sock = sock
        self.timeout = None      # what the current phase wants for each recv
        self.deadline = None     # or a time.monotonic() by which the phase must end
        self._applied = None     # what the kernel has

    def recv_into(self, buffer):
        timeout = self.timeout
        if self.deadline is not None:
            # A whole-phase deadline (the head): a client dripping a byte now
            # and then cannot hold the connection longer than it allows.
            timeout = self.deadline - time.monotonic()
            if timeout <= 0:
                raise TimeoutError('the deadline passed')
        if timeout != self._applied:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(timeout))
            self._applied = timeout
        try:
            return self.sock.recv_into(buffer)
        except BlockingIOError:   # EAGAIN: SO_RCVTIMEO expired
            raise TimeoutError(f'nothing received for {self._applied} s') from None


class HTTPServer:
    """The per-connection handler a Listener runs: HTTP/1.1 over one socket."""

    def __init__(self, app, *, trace=False, access_log=True,
                 keepalive_timeout=KEEPALIVE_TIMEOUT, head_timeout=HEAD_TIMEOUT,
                 body_timeout=BODY_TIMEOUT):
        self.app = app
        self.trace = trace
        self.access_log = access_log
        self.keepalive_timeout = keepalive_timeout
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        # Common Log Format timestamps.
        self._clock = PerSecond(
            lambda second: time.strftime('%d/%b/%Y:%H:%M:%S +0000', time.gmtime(second)))

    def __call__(self, conn):
        sock = conn.sock
        # Responses go out in one write each; never wait for an ACK first.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # A client that stops reading our response is dropped after this long.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval(self.body_timeout))
        timed = TimedSocket(sock)
        reader = StreamReader(timed)
        try:
            while not conn.stopping:
                conn.idle = True
                timed.timeout = self.keepalive_timeout
                try:
                    if reader.at_eof():
                        return
                except OSError:
                    return  # an idle client went away, or stayed silent too long
                conn.idle = False
                if not self.exchange(conn, reader, timed):
                    return
        except OSError:
            return  # the peer reset or stopped reading: nobody to answer

    def exchange(self, conn, reader, timed):
        """Answer one request; return whether the connection may carry another."""
        sock = conn.sock
        now = time.time()
        request = body = None
        # The head must be complete within head_timeout of its first byte.
        timed.deadline = time.monotonic() + self.head_timeout
        try:
            try:
                request = read_request(reader)
            except TimeoutError:
                raise HTTPError(408, 'request head not received in time', close=True) from None
            finally:
                timed.deadline = None
            if request is None:
                return False
            timed.timeout = self.body_timeout
            body = request.body = open_body(request, reader, self.continuer(request, sock))
            response = self.app(request)
        except HTTPError as error:
            response = error_response(error)
        except TimeoutError:
            response = error_response(HTTPError(408, 'request body stalled', close=True))
        except ConnectionError:
            raise      # the connection failed: nobody to answer
        except Exception:
            # A bug of ours: the client gets a 500, the log gets the traceback.
            say(f'error answering {self.peer(conn)}:\n{traceback.format_exc().rstrip()}',
                err=True)
            response = error_response(HTTPError(500, 'internal server error', close=True))
        keep = (request is not None and request.keep_alive and not conn.stopping
                and self.can_keep(body, response))
        try:
            framing, chunks, sent, keep = write_response(
                sock, request.method if request else 'GET', response,
                chunked_ok=request is not None and request.version == 'HTTP/1.1',
                keep_alive=keep, now=now,
                announce_keep_alive=request is not None and request.version == 'HTTP/1.0')
        except HTTPError as error:
            # The request body failed while its echo was being streamed: the
            # response head is gone already, so the only honest signal left
            # is to cut the connection before the response's end.
            self.log(conn, request, error.status, 0, now)
            if self.trace:
                say(f'trace {self.peer(conn)}: aborted mid-response: {error.reason}', err=True)
            return False
        if keep and body is not None and not body.done:
            keep = self.drain(body)
        self.log(conn, request, response.status, sent, now)
        if self.trace:
            self.trace_line(conn, request, body, response, framing, chunks, sent)
        if not keep and (body is None or not body.done) and request is not None:
            self.linger(sock, timed)
        return keep

    @staticmethod
    def linger(sock, timed):
        """Close without destroying our own answer (RFC 9112 section 9.6).

        The client may still be sending a body we refused.  Closing with its
        bytes unread makes the kernel send a reset, which can discard our
        response before the client reads it.  So: send FIN first, then read
        and drop what still comes, for a bounded time and size.
        """
        try:
            sock.shutdown(socket.SHUT_WR)
            timed.timeout = LINGER_TIMEOUT
            deadline = time.monotonic() + LINGER_TIMEOUT
            scratch = bytearray(READ_BUFFER_SIZE)
            drained = 0
            while drained < MAX_LINGER and time.monotonic() < deadline:
                got = timed.recv_into(scratch)
                if not got:
                    break
                drained += got
        except OSError:
            pass

    @staticmethod
    def continuer(request, sock):
        """What to do before the first body byte is read, per the Expect field.

        RFC 9110 section 10.1.1: send 100 Continue only when about to read the
        body (so a refused upload is never sent); an HTTP/1.0 client's
        100-continue MUST be ignored; other expectations get 417.
        """
        expect = request.get('expect')
        if expect is None:
            return None
        if expect.strip().lower() != '100-continue':
            raise HTTPError(417, f'cannot meet the expectation {expect[:40]!r}', close=True)
        if request.version != 'HTTP/1.1':
            return None
        return lambda: write_all(sock, CONTINUE)

    @staticmethod
    def can_keep(body, response):
        """Can the next request be read after this response?

        Not if the body was never started while the client waits for 100
        Continue (it may or may not send the body now), nor if more is left
        unread than we are willing to drain.  A streaming response reads the
        body itself, so it is judged after it was written.
        """
        streaming = not isinstance(response.body, (bytes, bytearray)) and not hasattr(
            response.body, 'sendfile')
        if body is None or body.done or streaming:
            return True
        if not body.started:
            return False
        return body.framing == 'length' and body.length - body.received <= MAX_DRAIN

    @staticmethod
    def drain(body):
        """Read and discard what the handler left of the body, within MAX_DRAIN."""
        try:
            body.read_to(bounded(lambda piece: None, MAX_DRAIN))
        except (HTTPError, OSError):
            return False
        return True

    @staticmethod
    def peer(conn):
        return f'{conn.peer[0]}:{conn.peer[1]}'

    def log(self, conn, request, status, sent, now):
        """One Common Log Format line per request, to stderr."""
        if not self.access_log:
            return
        line = (f'{request.method} {request.target} {request.version}'
                if request is not None else '-')
        say(f'{conn.peer[0]} - - [{self._clock(now)}] "{line}" {status} {sent or "-"}', err=True)

    def trace_line(self, conn, request, body, response, framing, chunks, sent):
        """How this exchange was framed, in the words of chapter 5."""
        parts = []
        if request is not None:
            parts.append(f'head {request.head_size} B by CRLFCRLF')
            parts.append(f'body {body.describe()}' if body is not None else 'body unread')
        else:
            parts.append('head unreadable')
        if framing == 'chunked':
            how = f'chunked ({chunks} chunks, {sent} B)'
        elif framing == 'Content-Length':
            how = f'Content-Length ({sent} B)'
        elif framing == 'close':
            how = f'closing the connection ({sent} B)'
        else:
            how = 'no body'
        parts.append(f'response {response.status} by {how}')
        say(f'trace {self.peer(conn)}: ' + '; '.join(parts), err=True)

