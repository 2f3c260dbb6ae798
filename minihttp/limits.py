"""Every limit and default of minihttp, in one place.

Each constant says what it protects.  Command-line options override the ones
marked "default"; the others are fixed properties of the wire formats.
"""

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# --- the framing core -------------------------------------------------------
# Size of the reused receive buffer of every StreamReader: one recv_into per
# fill, so it bounds both the syscall count and the memory of a connection.
READ_BUFFER_SIZE = 64 * KiB

# --- the block transport (Listing 5-2) --------------------------------------
# Default port of the block server, as in the book.
BLOCK_PORT = 1060
# Default --max-block: a 4-byte length could announce 4 GiB; anything above
# this is refused before a single payload byte is read.
MAX_BLOCK = 64 * MiB
# Blocks up to this size are read whole (and printed); larger ones are
# streamed in READ_BUFFER_SIZE pieces so the server never holds them.
BLOCK_STREAM_THRESHOLD = 1 * MiB
# Default --block-size of the client when it sends a file.
CLIENT_BLOCK_SIZE = 64 * KiB
# How much of a block `Block says:` shows before it abbreviates.
BLOCK_PREVIEW = 64

# --- every listener ---------------------------------------------------------
# listen() backlog: the standard library's 5 makes clients retransmit their
# SYNs during a burst of connects (a 1 s or 3 s stall each).
LISTEN_BACKLOG = 1024
# Default --max-connections: threads are the unit of concurrency, so this
# caps the threads (and their buffers) a flood of clients can make us hold.
MAX_CONNECTIONS = 512
# Default --grace: after Ctrl-C or SIGTERM, how long in-flight work may take
# before its connections are cut.
SHUTDOWN_GRACE = 5.0
