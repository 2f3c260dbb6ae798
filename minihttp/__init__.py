"""minihttp: a small, strict HTTP/1.1 server that makes message framing visible.

The modules follow chapter 5 of Foundations of Python Network Programming,
lowest layer first:

    limits       every limit and default, each saying what it protects
    report       whole lines to the console from any thread; failures with their traceback
    framing      the framing core: exact reads, streamed exact reads, delimiter reads
    grammar      the RFC 9110/9112 grammar: every pattern applied to client bytes, CRLF
    errors       HTTPError: what a client got wrong, and its status; SizeLimit: every 413;
                 ResponseError: a response of our own that cannot be sent as framed;
                 PEER_GONE: the errors that mean the peer went away
    tls          TLS: contexts, certificate facts, the record layer's framing, TLS over a socket
    browsers     what a page of another site may do: Host (421), Origin (403), uploads' fields
    atomic       files that appear whole or not at all: a temporary file, fsynced, renamed into place
    digests      RFC 9530 integrity digests: parsed strictly, checked, made
    transfer     how a message is framed: one vocabulary, decided once per direction
    records      framing records: the --trace lines, GET /_framing and its live stream
    blocks       Listing 5-2's length-prefixed blocks, on the framing core
    sockets      listening sockets
    processes    serving until a signal, alone or as supervised workers
    deadlines    every waiting connection's deadline in one lazy heap
    eventloop    one loop per process for waiting connections, a thread pool for blocking work
    request      the request head: one delimiter read, parsed
    multipart    multipart/form-data, streamed on the framing core
    bodies       request bodies: a reader per framing (Content-Length, chunked)
    responses    responses: what a handler returns, and the writer
    files        static files: safe paths, validators, ranges, sendfile, listings, digests
    archives     folders out as one tar, tar.gz or zip, made while it is sent
    uploads      uploads that appear whole and verified, or not at all
    resumable    partial uploads that survive a dropped connection: state in the uploads folder
    app          the routes: files, uploads, /echo, /headers, /_framing
    server       the HTTP protocol on the loop: heads and small answers inline, bodies on the pool
    blockserver  the block protocol on the loop: headers there, payloads on the pool
    hub          every worker's records in any worker that reads them, asked for as blocks
    cli          the command line
"""

__version__ = '0.1.0'
