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
# The buffer of a connection that streams a large body (an upload), or reads
# exact messages of LARGE_READ bytes or more (blocks, body pieces), grows to
# this once: a quarter of the receives, and chunks of 64 KiB seldom straddle
# two fills.  Bounds the memory of such a connection.
STREAM_BUFFER_SIZE = 256 * KiB
LARGE_READ = READ_BUFFER_SIZE // 2
# The first buffer of an HTTP connection's reader: a request head of a usual
# size (a browser's is 0.5-2 KiB) in one receive.  A longer head grows it,
# doubling, up to MAX_HEAD; a body read on a pool thread has READ_BUFFER_SIZE
# (STREAM_BUFFER_SIZE for a large one); the loop gives it up as soon as
# nothing is buffered (a request read, an answer queued).  Bounds the memory
# of a connection reading small requests: 5,000 active ones once held 64 KiB
# each.
CONNECTION_BUFFER_SIZE = 4 * KiB
# Buffers kept for reuse after connections gave them up, in bytes: saves an
# allocation per request under load.  Only buffers of a reader's first size
# are kept (a grown one goes back to the allocator).
SPARE_BUFFER_BYTES = 1 * MiB

# Default address of both servers (and of the block client's server): loopback,
# so that a server started without --host is reachable from this machine only.
HOST = '127.0.0.1'

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
# How long the client waits, after its empty block, for the server to close the
# connection: it closes once the stream is kept (a saved file fsynced and named),
# and a reset instead says it refused or lost the stream.
BLOCK_CLIENT_WAIT = 120.0

# --- every listener ---------------------------------------------------------
# listen() backlog: the standard library's 5 makes clients retransmit their
# SYNs during a burst of connects (a 1 s or 3 s stall each).
LISTEN_BACKLOG = 1024
# Default --max-connections of the HTTP server, per process: the event loop
# holds a waiting connection for a few hundred bytes (its buffer is given up
# while it idles), so this bounds descriptors more than memory.  Beyond it a
# new connection gets 503 with Retry-After and is closed.
MAX_CONNECTIONS = 10_000
# Default --threads: the pool that runs blocking work (request bodies,
# uploads, large files), per process.  Uploads each hold one while they run;
# more requests than threads wait in the loop, not in the kernel's backlog.
POOL_THREADS = 32
# Default --max-connections of the block server: streams held at once.  It
# waits in an event loop as HTTP does (a silent connection costs a descriptor,
# no thread, and goes at its deadline), so this bounds descriptors.  Beyond it
# a connection is closed at once, with a line in the log.
MAX_BLOCK_CONNECTIONS = 1024
# Threads reading block payloads, per process: streams whose blocks are on
# their way (a quiet stream waits in the loop).  More such streams wait their
# turn.
BLOCK_THREADS = 8
# Connections the loop accepts in one pass: as many as the events it serves in
# that pass, at least ACCEPT_MIN (an idle loop lets a burst in at once) and at
# most ACCEPT_MAX.  A burst of N newcomers so takes a few passes, not N (one
# accept a pass, each pass serving every busy connection, made N newcomers
# cost N squared: 1,000 waited 3 to 6 s under 200 busy ones), and accepting
# never takes much more of a pass than the connections already held get.
# With --workers, each worker accepts from a listening socket of its own
# (SO_REUSEPORT: the kernel spreads new connections evenly), so a batch never
# takes another worker's share.
ACCEPT_MIN = 64
ACCEPT_MAX = 1024
# Answers to pipelined requests queued on one connection before the loop
# stops reading its requests until the client has taken them: bounds the
# memory a client that pipelines and never reads can make us hold.
PIPELINE_QUEUE = 256 * KiB
# Entries of closed (or rescheduled) connections the loop's deadline heap may
# hold before it is rebuilt without them: bounds the memory that many short
# connections leave behind until their deadlines.
STALE_TIMERS = 1024
# What idle TLS connections may keep in OpenSSL's buffers, per process.
# OpenSSL's memory BIOs keep the largest buffer they ever held for the
# connection's life (300 BIOs after one 256 KiB write each held 76 MiB): one
# upload's receive (TLS_RECEIVE_SIZE) or one download's sealed piece
# (TLS_SEND_SIZE) stays with a connection that then idles, ~320 KiB, where a
# fresh idle one costs ~23 KiB; at MAX_CONNECTIONS that would be ~3 GB chosen
# by clients.  A connection whose BIOs were given more than TLS_IDLE_LEAN
# counts that (TLSConnection.grown) while it idles; past TLS_IDLE_BUDGET in
# all, the one idle longest is closed (RFC 9112 section 9.5: a server may close
# an idle connection at any time; it asked for nothing, so nothing is lost).
# OpenSSL allocates up to a third more than it was given (BUF_MEM's growth).
TLS_IDLE_LEAN = 32 * KiB
TLS_IDLE_BUDGET = 64 * MiB
# Refused connections (beyond --max-connections) linger this long at most,
# reading what the client still sends so that it gets our 503, not a reset;
# at most this many at once, the rest are closed at once.
REFUSAL_TIMEOUT = 1.0
MAX_REFUSING = 256
# The Retry-After of that 503, in seconds.
RETRY_AFTER = 1
# Descriptors beyond --max-connections that the process needs (listening
# sockets, the wake-up pair, files being sent or uploaded, log files).
SPARE_DESCRIPTORS = 256
# Default --grace: after Ctrl-C or SIGTERM, how long in-flight work may take
# before its connections are cut.
SHUTDOWN_GRACE = 5.0
# With --workers: a worker that dies is replaced at once, unless workers keep
# dying young (a crash at start, say).  One that ran less than WORKER_STEADY
# seconds died young; from the second such death in a row, each doubles the
# wait before the next replacement, from RESPAWN_DELAY up to RESPAWN_DELAY_MAX.
# Bounds what a crash loop costs: a few forks a minute, not thousands.
WORKER_STEADY = 10.0
RESPAWN_DELAY = 0.5
RESPAWN_DELAY_MAX = 30.0
# A worker whose parent is gone (even by SIGKILL) stops, giving in-flight
# requests this long: bounds how long orphans hold the port.
ORPHAN_GRACE = 1.0
# On SIGTERM the parent waits --grace and this long for its workers to stop,
# then kills them: a stuck worker cannot keep the parent (and the port) forever.
WORKER_STOP_SLACK = 5.0

# --- HTTP/1.1 (RFC 9112) ----------------------------------------------------
# Default ports and root of `minihttp serve`.
HTTP_PORT = 8000
# The default root when the current folder has one (the repository: its demo
# page); elsewhere the current folder itself, as `python -m http.server` serves.
DOCUMENT_ROOT = 'www'
# Longest request line (method, target, version): beyond it, 414.  Bounds
# the memory a client can make us hold before we know what it wants.
MAX_REQUEST_LINE = 8 * KiB
# The longest method this server implements (OPTIONS, CONNECT): a longer one
# makes an over-long request line 501, not 414 (RFC 9112 section 3).
MAX_METHOD = 7
# Longest head (request line and fields) and most field lines: beyond them,
# 431.  Bound the memory and the parsing work of one request head.
MAX_HEAD = 64 * KiB
MAX_FIELDS = 100
# Most empty lines skipped before a request line (RFC 9112 section 2.2 asks
# us to tolerate at least one); more is a client talking nonsense.
MAX_EMPTY_LINES = 8
# A Content-Length longer than this many digits cannot be honest (10**18
# bytes) and would overflow any fixed-size integer a peer might use.
MAX_CONTENT_LENGTH_DIGITS = 18
# A chunk-size line: at most 16 hex digits (2**64 - 1) and this many bytes in
# all, extensions included (they are read and ignored).
MAX_CHUNK_SIZE_DIGITS = 16
MAX_CHUNK_LINE = 4 * KiB
# The trailer section of a chunked body: bytes and field lines.
MAX_TRAILER = 16 * KiB
MAX_TRAILER_FIELDS = 100
# A request body the handler did not read is read and thrown away, up to
# this much, so the connection can be kept; a longer one closes it instead.
MAX_DRAIN = 1 * MiB
# After refusing a body, how long and how much of it we read and drop
# before closing, so that our response is not destroyed by a TCP reset.
LINGER_TIMEOUT = 2.0
MAX_LINGER = 16 * MiB
# Pieces in which bodies are handed to the application (and echoed).
BODY_PIECE = 64 * KiB
# Seconds to wait for the next request on an idle keep-alive connection.
KEEPALIVE_TIMEOUT = 15.0
# Seconds a started request head may go without a byte before it gets 408.
HEAD_TIMEOUT = 10.0
# Seconds a body (or a response being sent) may stall before the
# connection is dropped.
BODY_TIMEOUT = 30.0
# Default --min-rate and --rate-window: a request body read on the pool, or
# a response sent from it (a file, ranges, a listing, an echo), must move at
# least MIN_RATE bytes a second, averaged over each RATE_WINDOW seconds that
# the pool thread waits on the peer; slower, it is cut (408 for a body, a
# logged close for a response).  BODY_TIMEOUT stays the bound between bytes.
# Protects the pool: without it one byte every 29 s holds a thread for ever,
# and --threads such clients hold them all.  The same holds for a block
# stream's payloads.
MIN_RATE = 1 * KiB
RATE_WINDOW = 10.0

# --- framing made visible ---------------------------------------------------
# Framing records kept per process for GET /_framing (the most recent; each
# is a few hundred bytes of facts, never a body).
RECORDS_KEPT = 200
# Chunk or block sizes one record lists: the first RECORDED_CHUNKS and the
# last RECORDED_LAST, and how many between (records.Sizes).  Bounds the bytes
# of one record whatever the count: 10,000 chunks cost no more than 68.
RECORDED_CHUNKS = 64
RECORDED_LAST = 4
# The first characters of a request-target a record keeps (its query values
# shown as *): with the above, what bounds the bytes of one record, and so of
# the ring (a few hundred bytes each, and as much again as JSON once read).
RECORDED_TARGET = 200
# The bytes of trailer fields (names and values) a record keeps: a value that
# does not fit is cut (ending in '...'), and the fields after it are left out
# (the record still counts them).  A trailer section may be MAX_TRAILER long.
RECORDED_TRAILER = 512
# Interim (1xx) responses a record keeps of one exchange, and fields of each:
# a handler sends a few (100 Continue, a 104 for an upload); the bound holds
# whatever one does.
RECORDED_INTERIMS = 8
RECORDED_INTERIM_FIELDS = 8
# With --workers, the shortest time between two questions of one worker for the
# other processes' records (minihttp.hub: asked by a read of /_framing, and this
# often while the worker holds a /_framing/stream): a client reading in a loop
# costs the others a few answers a second per worker, whatever its request rate.
HUB_BATCH_INTERVAL = 0.1
# How long a read of the records waits for every other process's answer (they
# take a few milliseconds, more on a loaded machine; a worker being replaced
# never answers).  The wait holds a pool thread, never the loop (App.inline).
HUB_ASK_TIMEOUT = 1.0
# How often at most an exchange's live record is republished while its body
# arrives (a clock reading before each receive, nothing per piece): a few
# updates a second per upload, whatever its speed; a stream coalesces the
# updates of one record that its client has not read yet.
UPDATE_INTERVAL = 0.25
# The shortest time between two sweeps of the loop over the exchanges on the pool
# (to publish their live records), whatever a server's update_interval (0 in tests:
# at every wait of the body's reader): the loop never spins on them.
LIVE_TICK = 0.05
# Records waiting to be sent on one GET /_framing/stream whose client reads
# slowly: beyond them the oldest are dropped (and the stream says how many),
# so a stuck reader costs bounded memory.
STREAM_QUEUE = 256
# A record number a client sends (?after=N, Last-Event-ID) longer than this
# many digits is refused with 400 before it is converted (int() refuses more
# than 4300 digits and is quadratic below); no process numbers that many.
MAX_RECORD_DIGITS = 18

# --- files and uploads ------------------------------------------------------
# Files up to this size are served from memory once read (each use checked
# by a stat): fewer system calls, each of which lets other threads run.
SMALL_FILE = 64 * KiB
# Memory all such files may take together, per process: their bytes, paths
# and fields (an empty file costs its bookkeeping, not nothing).
SMALL_FILES_BUDGET = 32 * MiB
# The URL paths of recent requests, remembered with the segments and local
# path they decode to (a few hundred bytes for a short path, up to hundreds of
# KB for 8 KiB of short segments): memory for all of them, per process.  A
# path that would take more than an eighth of it is never remembered.
PATH_CACHE_BUDGET = 2 * MiB
# The answers a server gives again to a request head seen before, byte for byte
# (server.Answer): memory for all of them, per server, counting each one's head,
# answer head and file bytes (shared with the small files' though they may be).
# Distinct heads beyond it (a client varying a field) empty it, never grow it.
ANSWERS_BUDGET = 8 * MiB
# Most ranges one request may ask for before it gets the whole file instead
# (many tiny ranges cost far more to send than the bytes they carry).
MAX_RANGES = 16
# A Range numeral longer than this many digits (10**18 bytes, beyond any
# file) makes the field ignored (RFC 9110 section 14.2) before it is converted.
MAX_RANGE_DIGITS = 18
# An If-Modified-Since or If-Unmodified-Since value longer than this is no
# HTTP-date (the longest form, rfc850-date, has 33 characters): it is ignored
# unparsed, so its numbers, however long, are never converted.
MAX_HTTP_DATE = 40
# Default --max-upload: the largest body one upload may store (413 beyond),
# so that one client cannot fill the disk in one request.
MAX_UPLOAD = 1 * GiB
# A large upload is flushed to disk in the background after every this many
# bytes, so that the fsync after its last byte waits for about one step, not
# for all of it (by default the kernel starts writing at 10% of memory dirty).
WRITEBACK_STEP = 64 * MiB
# An upload's bytes past the first HANDOFF_AFTER are written by a thread of
# its own (uploads.Handoff; the receiving thread hashes them: uploads.Incoming), in blocks of HANDOFF_BLOCK, at most
# HANDOFF_BLOCKS of them held (the memory one upload takes for it); smaller
# uploads cost no thread.  A block is one write to the kernel, whose cost per
# byte falls with the write's size (1 GiB into the page cache here: 0.46-0.60 s
# of CPU in 256 KiB writes, 0.35-0.39 s in 1 MiB ones), and one turn of the
# interpreter lock from one thread to the other: with blocks of 1 MiB, not
# 256 KiB, a chunked upload over TLS took 3.2 s of server CPU per GiB, not 3.7.
# Three: one filled, one hashed and written, one spare between them.  Both
# are multiples of a page, so the handoff's blocks can go to the disk directly
# (O_DIRECT: no copy into the page cache, and no page taken for it).
HANDOFF_AFTER = 1 * MiB
HANDOFF_BLOCK = 1 * MiB
HANDOFF_BLOCKS = 3
# A multipart part's head (Content-Disposition and friends): bytes and lines.
MAX_PART_HEAD = 16 * KiB
MAX_PART_FIELDS = 32
# A non-file multipart field is kept in memory to report it: at most this.
MAX_FORM_FIELD = 64 * KiB
# All of a form's non-file fields together (names and values), all kept in
# memory until the form is complete: the memory one form can take (413 beyond).
MAX_FORM_FIELDS = 256 * KiB
# Parts of one multipart form (413 beyond): each file part is a temporary file
# kept (closed) until the whole form is verified, and some bookkeeping; bounds
# the files and inodes one request can take, and its CPU: a file costs the
# kernel about 0.2-0.5 ms to create, sync and rename whatever its size, so
# 1,000 empty parts took 480 ms of server CPU for a 100 KB request.  A form is
# what curl -F or an HTML form sends; many files go by PUT, one each.
MAX_FORM_PARTS = 100
# The longest upload name, in bytes of UTF-8: what Linux file systems store
# in one name (NAME_MAX); a longer one gets 400, not an error from the disk.
MAX_UPLOAD_NAME = 255
# Folders above an upload ("a/b/c.txt" has two), at most: every request that
# reaches it opens each folder in turn (one openat per level, some in the
# event loop, for a listing), and an archive of the uploads holds a descriptor
# per level; archives walk as deep (archives.MAX_DEPTH), so every folder made
# here can be downloaded whole.  Real trees (source, photos, node_modules)
# stay well within it.
MAX_FOLDER_DEPTH = 32
# The longest upload path ("a/b/c.txt"), in bytes of UTF-8: with the uploads
# folder's own path it stays under Linux's PATH_MAX (4096), which tools that
# copy or back up the folder need; percent-encoded (up to 3 bytes per byte) it
# still fits in a request line (MAX_REQUEST_LINE); and it bounds what a name
# costs to check and to keep in a form's list of parts.
MAX_UPLOAD_PATH = 1024
# The names of one folder held in memory to sort its listing (each costing its
# length and archives.NAME_COST): a larger folder is listed in the order the
# file system gives, so listing 100,000 entries takes bounded memory, and time
# linear in them.
LISTING_SORT_BUDGET = 4 * MiB

# --- resumable uploads (minihttp.resumable) ------------------------------------
# Default lifetime of an upload resource, counted from its creation (not from
# its last append: a client trickling a byte an hour could otherwise keep one
# forever, the draft's Slowloris concern).  Announced as max-age; serve
# --partial-expiry sets it.
EXPIRE_AFTER = 24 * 3600
# Uploads in progress in the folder (completed ones, remembered until they
# expire, hold no bytes and are not counted): each may hold up to --max-upload
# on the disk, so this bounds the disk that unfinished uploads can take.
MAX_PARTIALS = 256
# Uploads removed by one call of expire(): the work one sweep may do (a sweep
# runs at each creation, and at start).
EXPIRE_BATCH = 32
# How long an append waits for another to let go of the upload before its 409:
# an append says its last offset (what HEAD reads) a moment before it lets go,
# and the draft says an offset HEAD gave MUST be accepted by the next PATCH.
# A real race (a client resuming while its old request still sends) waits
# this long for its 409.  Polled every APPEND_LOCK_POLL seconds.
APPEND_LOCK_WAIT = 1.0
APPEND_LOCK_POLL = 0.005
# A resumable upload's conditional fields (If-Match, If-None-Match, If-Unmodified-
# Since), kept in its .meta to be checked again when it completes: each at most
# this many characters (an ETag of ours is about 30; a date 29), 400 beyond.
MAX_KEPT_CONDITION = 256
# A .meta file is a couple of KiB at most (a name is at most MAX_UPLOAD_PATH bytes
# of UTF-8, doubled at worst by JSON's escapes, and the kept conditions); one
# larger than this is not ours, and is never read whole.
MAX_META = 8 * KiB

# --- integrity digests (RFC 9530) ---------------------------------------------
# A file's Repr-Digest is read ahead of the answer (the whole file, on a pool
# thread) only up to this size; a larger one gets it as a trailer when the
# client accepts trailers (TE: trailers), computed as it is sent, and
# otherwise none (Want-Repr-Digest is a hint, RFC 9530 section 4): one
# request cannot make a thread read gigabytes before its first byte.
MAX_DIGEST_AHEAD = 64 * MiB
# The digests of files computed so far, keyed by the file's identity (device,
# inode, size, mtime, ctime) and algorithm: memory for all, per process.
DIGEST_CACHE_BUDGET = 1 * MiB
# Bytes of a file hashed per read (one buffer per reading thread, reused).
DIGEST_PIECE = 256 * KiB
