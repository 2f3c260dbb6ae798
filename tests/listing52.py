"""The wire behaviour of Listing 5-2 (Foundations of Python Network Programming), written afresh.

A reference to hold minihttp against, not a part of it: the interoperability
tests run this client and server against minihttp's, and the benchmark uses
its list-and-join ``recvall`` as the "as in the book" figure.

What matters is what the book puts on the wire and how it reads it: a 4-byte
'!I' length, the payload, an empty block to end; the server shuts down its
sending side, the client its receiving side; each exact read collects the
pieces recv returns in a list and joins them.
"""

import socket
import struct

LENGTH = struct.Struct('!I')

LINES = (b'Beautiful is better than ugly.',
         b'Explicit is better than implicit.',
         b'Simple is better than complex.')


def recvall(sock, length):
    """Exactly ``length`` bytes, the book's way: a list of recv results, joined at the end."""
    parts = []
    while length:
        part = sock.recv(length)
        if not part:
            raise EOFError(f'socket closed with {length} bytes of the block missing')
        parts.append(part)
        length -= len(part)
    return b''.join(parts)


def get_block(sock):
    (length,) = LENGTH.unpack(recvall(sock, LENGTH.size))
    return recvall(sock, length)


def put_block(sock, payload):
    """The header, then the payload: two writes, as the book makes them."""
    sock.sendall(LENGTH.pack(len(payload)))
    sock.sendall(payload)


def serve_once(listening):
    """Accept one connection on ``listening`` and return its blocks, the empty one excluded."""
    conn, _ = listening.accept()
    with conn:
        conn.settimeout(listening.gettimeout())
        conn.shutdown(socket.SHUT_WR)
        blocks = []
        while True:
            block = get_block(conn)
            if not block:
                return blocks
            blocks.append(block)


def send_lines(address, lines=LINES, timeout=30.0):
    """The book's client: connect, stop receiving, send each line as a block, then the empty one."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.shutdown(socket.SHUT_RD)
        for line in lines:
            put_block(sock, line)
        put_block(sock, b'')
