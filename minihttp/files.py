"""Static files: safe paths, validators, ranges, and zero-copy bodies.

RFC 9110 sections 8.8 (validators), 13 (conditional requests) and 14 (range
requests) decide what is sent; ``os.sendfile`` sends it.
"""

import errno
import functools
import html
import mimetypes
import os
import re
import secrets
import stat
import sys
import threading
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import quote, unquote

from .digests import ALGORITHMS, digest_of, serialize, wanted_algorithm
from .errors import HTTPError, ResponseError
from .grammar import CRLF, HEAD_END, decimal
from .responses import MSG_MORE, Response, send_range
from .limits import (DIGEST_CACHE_BUDGET, DIGEST_PIECE, MAX_DIGEST_AHEAD, MAX_HTTP_DATE,
                     MAX_RANGE_DIGITS, MAX_RANGES, PATH_CACHE_BUDGET, SMALL_FILE,
                     SMALL_FILES_BUDGET)

LISTING_BATCH = 64   # directory entries per chunk of a listing


class FileBody:
    """A byte range of an open file, sent with ``os.sendfile`` (zero copy).

    Not ``socket.sendfile``: on a socket with a timeout it polls before every
    call and also fstats and seeks the file, which for a small file costs more
    than the copy.  Here the kernel is asked at once, on a blocking socket whose
    kernel timeouts bound the wait.
    """

    def __init__(self, fd, offset, length, st=None):
        self.fd = fd
        self.offset = offset
        self.length = length
        self.st = st          # the file as its head described it (validators, digest)

    def sendfile(self, sock):
        try:
            if self.length:
                send_range(sock, self.fd, self.offset, self.length - 1, self.length)
                self.send_last(sock, self.offset + self.length - 1, b'')
            return self.length
        finally:
            self.close()

    def send_last(self, sock, offset, after):
        """The body's last byte (at ``offset``; then ``after``), sent only if the file is
        still the one the head described: one rewritten in place while it was sent
        would otherwise reach the client whole under the old ETag and Repr-Digest, a
        mix of old and new bytes.  Held back, the client sees the response cut
        instead, and the record says why.  (An fstat per file answer.)"""
        if self.st is not None and not unchanged(self.fd, self.st):
            raise ResponseError('the file changed while it was sent')
        send_range(sock, self.fd, offset, 1)
        if after:
            sock.sendall(after)

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class MultiRangeBody(FileBody):
    """Several ranges of one file as multipart/byteranges (RFC 9110 section 14.6):
    each part's head written, its bytes sent with sendfile."""

    def __init__(self, fd, parts, closing, length, st=None):
        super().__init__(fd, 0, length, st)
        self.parts = parts          # [(part head, offset, length)]
        self.closing = closing

    def sendfile(self, sock):
        try:
            *whole, (head, offset, length) = self.parts
            for part_head, part_offset, part_length in whole:
                sock.sendall(part_head, MSG_MORE)
                send_range(sock, self.fd, part_offset, part_length)
            sock.sendall(head, MSG_MORE)
            send_range(sock, self.fd, offset, length - 1, length)     # a part is never empty
            self.send_last(sock, offset + length - 1, self.closing)
            return self.length
        finally:
            self.close()


# -- paths --------------------------------------------------------------------

def url_segments(url_path):
    """The path segments of a URL path, or None when it tries to leave its root.

    Percent-decoding happens once, then every spelling of escape is refused:
    '..' segments, backslashes, NUL, and names starting with a dot (which
    also hides the upload directory's temporary files).
    """
    try:
        decoded = unquote(url_path, errors='strict')
    except UnicodeDecodeError:
        return None
    if '\0' in decoded or '\\' in decoded or not decoded.startswith('/'):
        return None
    parts = [p for p in decoded.split('/') if p]
    if any(p.startswith('.') for p in parts):
        return None
    return parts


_UNKNOWN = object()


class Remembered:
    """A dict bounded in bytes: each entry is charged what it holds, and when the
    next one would pass the budget, all are forgotten at once.

    Crude, and rare: it happens under an attack (many large, distinct keys),
    when forgetting is what we want; the entries asked for most come back at
    their next use.  An entry costing more than an eighth of the budget is
    never kept (one such would empty the rest).
    """

    def __init__(self, budget):
        self.budget = budget
        self.entries = {}       # read by anyone; changed under the lock, so counted exactly
        self.size = 0
        self._lock = threading.Lock()

    def put(self, key, value, cost):
        if cost > self.budget // 8:
            return
        with self._lock:
            if key in self.entries:
                return        # put by another thread meanwhile: counted once
            if self.size + cost > self.budget:
                self.entries.clear()
                self.size = 0
            self.entries[key] = value
            self.size += cost

    def pop(self, key, cost):
        with self._lock:
            if self.entries.pop(key, _UNKNOWN) is not _UNKNOWN:
                self.size -= cost


# What one remembered entry holds besides its strings: the dict's slot, the
# key and value tuples.
ENTRY_COST = 256
_LOCAL_PATHS = Remembered(PATH_CACHE_BUDGET)


def local_path(root, url_path):
    """(segments, path under root) of a URL path, or None: url_segments, remembered
    within PATH_CACHE_BUDGET for the paths asked for most (it depends on
    nothing but its arguments)."""
    key = (root, url_path)
    local = _LOCAL_PATHS.entries.get(key, _UNKNOWN)
    if local is _UNKNOWN:
        parts = url_segments(url_path)
        cost = ENTRY_COST + sys.getsizeof(url_path)
        if parts is None:
            local = None
        else:
            local = tuple(parts), os.path.join(root, *parts)
            cost += sys.getsizeof(local[1]) + sum(map(sys.getsizeof, parts)) + 8 * len(parts)
        _LOCAL_PATHS.put(key, local, cost)
    return local


_REAL_ROOTS = {}     # keyed by the roots the application serves (two), never by a client


def real_root(root, refresh=False):
    """The root with every symlink resolved: computed once, and again on request
    (when a file seems to lie outside it, the root may have been re-pointed)."""
    known = _REAL_ROOTS.get(root)
    if known is None or refresh:
        known = _REAL_ROOTS[root] = os.path.realpath(root)
    return known


def where(fd, path):
    """Where an open file really is: the kernel's answer, or realpath without /proc."""
    try:
        return os.readlink(f'/proc/self/fd/{fd}')
    except OSError:
        return os.path.realpath(path)


def open_inside(root, parts):
    """Open ``root/parts...`` and return (fd, stat), or None when it is not there.

    The file is opened first, following symlinks, and then the kernel is
    asked where the open file really is: a path whose real place is outside
    the root is closed unread, as if it did not exist (there is no window in
    which a symlink swapped after the check could be followed).  O_NONBLOCK:
    a FIFO placed under the root cannot stall the thread in open().
    """
    # Through the root as given, so that a root symlink re-pointed to a new
    # release (a common deploy) is followed at once.
    path = os.path.join(root, *parts)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENAMETOOLONG):
            return None       # a loop, or longer than any path there can be: not there
        raise HTTPError(403, 'not readable') from None
    real = where(fd, path)
    if not inside(real, real_root(root)) and not inside(real, real_root(root, refresh=True)):
        os.close(fd)
        return None
    return fd, os.fstat(fd)


def inside(real, top):
    return real == top or real.startswith(top + os.sep)


# -- validators (RFC 9110 section 8.8) --------------------------------------------

def etag_of(st):
    """A strong validator: changes whenever the file's identity, size or mtime does."""
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


# entity-tag = [ weak ] opaque-tag; opaque-tag = DQUOTE *etagc DQUOTE (RFC 9110
# section 8.8.3), found anywhere in the list; possessive, so that an unclosed
# quote is scanned once.
ENTITY_TAG = re.compile(r'(W/)?+("[^"]*+")')


def etag_matches(header, etag, weak):
    """Does an If-Match / If-None-Match list name this ETag (RFC 9110 section 8.8.3.2)?"""
    if header.strip() == '*':
        return True
    for candidate in ENTITY_TAG.findall(header):
        if candidate[1] == etag and (weak or not candidate[0]):
            return True
    return False


def http_time(header):
    """An HTTP-date as a POSIX timestamp, or None when it is not one (RFC 9110 section 5.6.7).

    A value longer than any HTTP-date is none, and is not parsed: the parser
    would convert its numbers, however long (int() is quadratic in digits).
    """
    if len(header) > MAX_HTTP_DATE:
        return None
    try:
        return parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


CONDITIONAL_FIELDS = frozenset(
    ['if-match', 'if-unmodified-since', 'if-none-match', 'if-modified-since'])


def precondition(request, st, etag):
    """The status a conditional request gets instead of the file, or None.

    In RFC 9110 section 13.2.2's order: If-Match, If-Unmodified-Since,
    If-None-Match, If-Modified-Since (the date fields only when the ETag field
    of the pair is absent).  ``st`` None: there is no current representation
    (a PUT that would make it): If-Match names none of it and fails, "*"
    included (section 13.1.1); If-None-Match holds; a date has nothing to be
    compared with.
    """
    if not request.has_any(CONDITIONAL_FIELDS):
        return None
    if st is None:
        return 412 if request.has('if-match') else None
    mtime = int(st.st_mtime)
    if_match = request.get('if-match')
    if if_match is not None:
        if not etag_matches(if_match, etag, weak=False):
            return 412
    else:
        since = request.get('if-unmodified-since')
        when = http_time(since) if since else None
        if when is not None and mtime > when:
            return 412
    if_none_match = request.get('if-none-match')
    if if_none_match is not None:
        if etag_matches(if_none_match, etag, weak=True):
            return 304 if request.method in ('GET', 'HEAD') else 412
    elif request.method in ('GET', 'HEAD'):
        since = request.get('if-modified-since')
        when = http_time(since) if since else None
        if when is not None and mtime <= when:
            return 304
    return None


# -- ranges (RFC 9110 section 14) ---------------------------------------------------

# range-spec = int-range / suffix-range (section 14.1.1), with optional whitespace
# around its parts.  The runs are possessive: whitespace and digits never
# overlap, and without them a long run of blanks would be split every way.
RANGE_SPEC = re.compile(r'\s*+([0-9]*+)\s*+-\s*+([0-9]*+)\s*+')


def parse_range(header, size):
    """[(first, last)] satisfiable ranges, [] when none is, None to ignore the field.

    A field we cannot parse is ignored, as section 14.2 allows; so is one with
    a numeral longer than MAX_RANGE_DIGITS, which no file's size needs.
    """
    unit, eq, specs = header.partition('=')
    if not eq or unit.strip().lower() != 'bytes':
        return None
    ranges = []
    for spec in specs.split(','):
        match = RANGE_SPEC.fullmatch(spec)
        if match is None or match.groups() == ('', ''):
            return None
        first, last = [decimal(digits, MAX_RANGE_DIGITS) if digits else ''
                       for digits in match.groups()]
        if None in (first, last):
            return None                       # a numeral longer than any byte position
        if first == '':                       # suffix: the last n bytes
            if last and size:
                ranges.append((max(0, size - last), size - 1))
            continue
        if last != '' and last < first:
            return None                       # invalid (section 14.1.1): ignore the field
        # 'first-' from at or past the end is unsatisfiable, not invalid (416).
        last = size - 1 if last == '' else last
        if first < size:
            ranges.append((first, min(last, size - 1)))
    return ranges


def range_applies(request, etag, st):
    """If-Range (section 13.1.5): the range only if the representation is unchanged."""
    if_range = request.get('if-range')
    if if_range is None:
        return True
    if_range = if_range.strip()
    if if_range.startswith('"') or if_range.startswith('W/'):
        return if_range == etag                 # strong comparison
    return if_range == last_modified(int(st.st_mtime))


# -- responses --------------------------------------------------------------------

# Remembered by count, and bounded in bytes all the same: only the extensions of
# files that exist come here (at most NAME_MAX bytes each: under 300 KB for all),
# and only mtimes (integers) for the dates (about 150 KB).
@functools.lru_cache(maxsize=256)
def content_type(extension):
    kind, encoding = mimetypes.guess_type('x' + extension)
    if kind is None or encoding is not None:
        return 'application/octet-stream'
    if kind.startswith('text/') or kind in ('application/javascript', 'application/json'):
        return f'{kind}; charset=utf-8'
    return kind


@functools.lru_cache(maxsize=1024)
def last_modified(mtime):
    return formatdate(mtime, usegmt=True)


class SmallFiles:
    """Small files kept in memory after their first read, checked by one stat per use.

    A small file costs more in system calls than in bytes: open, the kernel's
    word on where it is, fstat, sendfile and close, each of which lets other
    threads take the interpreter.  A file of at most SMALL_FILE bytes is read
    once (after the same safety checks as any other) and then served from
    memory while a stat of its path shows the same file unchanged (device,
    inode, size, mtime and ctime, which no one can set back by hand).
    Anything else, or anything larger, goes by sendfile.
    """

    def __init__(self, budget=SMALL_FILES_BUDGET):
        self._entries = Remembered(budget)    # path -> (identity, bytes, header fields)
        # An entry as it was when last checked, no stat (Held, within a turn of the
        # loop): the dict's own get, not a call of ours in front of it.
        self.entry = self._entries.entries.get

    @staticmethod
    def identity(st):
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns

    @staticmethod
    def cost(path, data):
        """What an entry holds: the bytes, the path, and about 1 KiB of fields and tuples."""
        return len(data) + sys.getsizeof(path) + 4 * ENTRY_COST

    def get(self, path):
        """(stat, bytes, header fields) of an unchanged cached file, or None."""
        entry = self._entries.entries.get(path)
        if entry is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if st is None or self.identity(st) != entry[0]:
            self._entries.pop(path, self.cost(path, entry[1]))
            return None
        return st, entry[1], entry[2]

    def put(self, path, st, data, headers):
        self._entries.put(path, (self.identity(st), data, headers), self.cost(path, data))


small_files = SmallFiles()


def serve_path(request, root, url_path, fields=None):
    """The file at ``url_path`` under ``root``: a file, a directory (its index.html
    or a listing), or 404.

    ``fields(path)``, when given, names more fields for the answer of a file
    (never of a listing or a redirect): what uploads are served with.  They
    depend on the file's path alone, and are remembered with a small file.
    """
    local = local_path(root, url_path)
    if local is None:
        raise HTTPError(404, f'no file at {request.path[:80]}')
    parts, path = local
    wanted = os.path.join(path, 'index.html') if request.path.endswith('/') else path
    hit = small_files.get(wanted)
    if hit is not None:
        st, data, _ = hit
        return with_digest(request, cached_file(request, wanted, *hit), st, data)
    opened = open_inside(root, parts)
    if opened is None:
        raise HTTPError(404, f'no file at {request.path[:80]}')
    fd, st = opened
    if stat.S_ISREG(st.st_mode) and not request.path.endswith('/'):
        return serve_file(request, fd, st, path, fields)
    if stat.S_ISDIR(st.st_mode) and request.path.endswith('/'):
        try:
            index = open_inside(root, [*parts, 'index.html'])
        except BaseException:
            os.close(fd)
            raise
        if index is not None:
            index_fd, index_st = index
            if stat.S_ISREG(index_st.st_mode):
                os.close(fd)
                return serve_file(request, index_fd, index_st, wanted, fields)
            os.close(index_fd)
        return listing(request, root, fd, path)      # the listing owns fd from here
    os.close(fd)
    if stat.S_ISREG(st.st_mode):
        # 'file/' names a directory, and there is none (open(2) says ENOTDIR);
        # served there, the file's relative links would resolve below it.
        raise HTTPError(404, f'not a directory: {request.path[:80]}')
    if not stat.S_ISDIR(st.st_mode):
        raise HTTPError(404, f'not a regular file: {request.path[:80]}')
    # A directory named without its "/" (with it, it is served above).  One leading
    # slash: '//name/' would be a network-path reference (RFC 3986 section 4.2), a
    # redirect to the host 'name'.
    location = quote('/' + request.path.lstrip('/') + '/', safe="/%:@!$&'()*+,;=~-._")
    if request.query:
        location += '?' + request.query
    return Response(301, [('Location', location), ('Content-Type', 'text/plain; charset=utf-8')],
                    f'moved to {location}\n'.encode())


def extension(name):
    return os.path.splitext(name)[1].lower()


def serve_file(request, fd, st, path, fields=None):
    """A regular file already open as ``fd``: 200, 206, 304, 412 or 416."""
    if st.st_size <= SMALL_FILE:
        try:
            data = os.pread(fd, st.st_size, 0)
        finally:
            os.close(fd)
        if len(data) != st.st_size:
            raise HTTPError(503, 'the file changed while it was read; try again')
        headers = file_headers(st, path, fields)
        small_files.put(path, st, data, headers)
        return with_digest(request, cached_file(request, path, st, data, headers), st, data)
    try:
        response = with_digest(request, file_response(request, st, file_headers(st, path, fields)),
                               st, fd=fd)
    except BaseException:
        os.close(fd)
        raise
    plan = response.body
    if plan is None:                    # 304: no body, nothing to send
        os.close(fd)
        response.body = b''
    elif not isinstance(plan, Plan):     # a HashedFile: with_digest gave it the fd
        pass
    elif plan.closing is None:
        (_, first, length), = plan.parts
        response.body = FileBody(fd, first, length, st)
    else:
        response.body = MultiRangeBody(fd, plan.parts, plan.closing, response.length, st)
    return response


# -- Repr-Digest (RFC 9530 section 3) ----------------------------------------------------

_DIGESTS = Remembered(DIGEST_CACHE_BUDGET)


def with_digest(request, response, st, data=None, fd=-1):
    """The response with Repr-Digest when the request asks for one (Want-Repr-Digest).

    The digest is of the whole file, also in a 206 and in the answer to HEAD:
    a representation's, whatever part of it a message carries (RFC 9530
    section 3; appendix B.2 shows HEAD, B.3 a range).  It comes from memory
    (a small file's bytes, or a digest remembered for this very file); or, to
    a GET of the whole file from a client that reads trailers, it is computed
    as the file is sent, chunked, and goes in the trailer section; or the file
    is read once ahead of the answer, up to MAX_DIGEST_AHEAD; beyond that none
    is sent (a preference is only a hint, section 4).
    """
    if not request.has('want-repr-digest') or response.status not in (200, 206):
        return response
    response.source = None        # its fields depend on more than the file's bytes
    wanted = request.get('want-repr-digest')
    algorithm = wanted_algorithm(wanted)
    if algorithm is None:
        return response
    key = (*SmallFiles.identity(st), algorithm)
    digest = _DIGESTS.entries.get(key)
    if digest is None:
        if data is not None:
            digest = digest_of(algorithm, data)
        elif response.status == 200 and accepts_trailers(request):
            response.body = HashedFile(fd, st, algorithm, key)
            response.length = None        # chunked, for the trailer section
            response.trailers = response.body.trailers
            response.trailer_names = ('Repr-Digest',)
            return response
        elif st.st_size <= MAX_DIGEST_AHEAD:
            digest = hash_file(fd, st, algorithm)
        else:
            return response
        remember_digest(key, digest)
    response.headers.append(('Repr-Digest', serialize({algorithm: digest})))
    return response


def accepts_trailers(request):
    """Whether the response may be chunked with a trailer section the client reads:
    HTTP/1.1, and ``TE: trailers`` (RFC 9110 section 10.1.4)."""
    return (request.method == 'GET' and request.version == 'HTTP/1.1'
            and 'trailers' in request.tokens('te'))


def remember_digest(key, digest):
    _DIGESTS.put(key, digest, ENTRY_COST + len(digest))


class HashedFile:
    """A whole file sent as pieces read from its start, hashed on the way, its digest
    a trailer: one pass, and no read ahead of the first byte (nor sendfile).

    It owns ``fd`` from the start: iterated to the end or not, ``close`` closes it.
    """

    def __init__(self, fd, st, algorithm, key):
        self.fd = fd
        self.st = st
        self.algorithm = algorithm
        self.key = key
        self.digest = None

    def __iter__(self):
        try:
            hashing = Hashing(ALGORITHMS[self.algorithm])
            for piece in hashed_pieces(self.fd, self.st, hashing):
                yield piece
            if hashing.read != self.st.st_size or not unchanged(self.fd, self.st):
                # The bytes sent are not the representation the head described.
                raise ResponseError(f'the file changed while it was sent ({hashing.read} of '
                                    f'{self.st.st_size} bytes read)')
            self.digest = hashing.digest()
            remember_digest(self.key, self.digest)
        finally:
            self.close()

    def trailers(self):
        return [('Repr-Digest', serialize({self.algorithm: self.digest}))]

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def hash_file(fd, st, algorithm):
    """The digest of the open file ``fd`` as ``st`` describes it, read once from its start.

    503 when it changed meanwhile (shorter, or another size or mtime after):
    the digest would describe bytes no one will be sent.
    """
    hashing = Hashing(ALGORITHMS[algorithm])
    for _ in hashed_pieces(fd, st, hashing):
        pass
    if hashing.read != st.st_size or not unchanged(fd, st):
        raise HTTPError(503, 'the file changed while it was read; try again')
    return hashing.digest()


class Hashing:
    """A hashlib object that also counts what it was given."""

    def __init__(self, make):
        self._hash = make()
        self.read = 0

    def update(self, piece):
        self._hash.update(piece)
        self.read += len(piece)

    def digest(self):
        return self._hash.digest()


def hashed_pieces(fd, st, hashing):
    """The file's bytes from its start, at most st.st_size, in pieces of DIGEST_PIECE,
    each given to ``hashing`` before it is yielded; fewer when the file ended sooner."""
    size = st.st_size
    while hashing.read < size:
        piece = os.pread(fd, min(DIGEST_PIECE, size - hashing.read), hashing.read)
        if not piece:
            return
        hashing.update(piece)
        yield piece


def unchanged(fd, st):
    """Whether the open file is still the one ``st`` described (SmallFiles.identity).

    A file replaced while it is sent (an upload's commit renames the new one over
    its name) or deleted keeps its bytes: its inode is only unlinked, and the one
    change that makes is its link count, so its ctime.  Unlinked since (no link
    left, though it had one), it is unchanged when all but its ctime is."""
    now = os.fstat(fd)
    if SmallFiles.identity(now) == SmallFiles.identity(st):
        return True
    return (now.st_nlink == 0 < st.st_nlink
            and SmallFiles.identity(now)[:-1] == SmallFiles.identity(st)[:-1])


def file_headers(st, path, fields):
    """representation_headers, and then what ``fields(path)`` adds (serve_path)."""
    headers = representation_headers(st, extension(path))
    if fields is not None:
        headers.extend(fields(path))
    return headers


# Fields that can make a file's answer other than 200 with the whole file.
SELECTING_FIELDS = CONDITIONAL_FIELDS | {'range'}


def cached_file(request, path, st, data, headers):
    """The response for a small file held in memory (SmallFiles, at ``path``).

    In the common case (the whole file, 200: no field that selects another answer)
    the answer depends on the request's head and on that file alone: its
    ``source`` says so (Held), and the server may give the same head the same
    answer again while the file is held unchanged.
    """
    if not request.has_any(SELECTING_FIELDS):
        response = Response(200, headers, data)           # the common case, at once
        response.source = Held(path, data)
        return response
    response = file_response(request, st, headers)
    plan = response.body
    if plan is None:
        response.body = b''
    elif plan.closing is None and response.length == len(data):
        response.body = data
    else:
        pieces = [piece for head, first, length in plan.parts
                  for piece in (head, data[first:first + length])]
        response.body = b''.join([*pieces, plan.closing or b''])
    return response


class Held:
    """What an answer made from a small file held in memory depends on, besides the
    request's head: the SmallFiles entry at ``path``, holding ``data``.  It ``holds()``
    while that entry is there with these very bytes, its file unchanged (the stat of
    SmallFiles.get): a file changed, replaced or gone, or read again, does not."""

    __slots__ = ('path', 'data', 'turn')

    def __init__(self, path, data):
        self.path = path
        self.data = data
        self.turn = None          # the loop's turn in which a stat last showed it held

    def holds(self, turn):
        """Whether it holds for a request answered in the event loop's ``turn``
        (EventLoop.turn): a stat at most once a turn, in the loop's thread only.

        Why once a turn is enough: the requests a turn answers were received
        after its poll returned, and the first stat of the turn came after that
        too.  A request whose bytes were all in the kernel when the poll
        returned (every one a client sends and then waits for) arrived before
        the stat, so the stat sees the file as new as it was then, or newer:
        the answer shows the file as it was at some moment between the
        request's arrival and its answer, as one stat per request would.  The
        one exception is a request pipelined after another on a connection
        the poll reported, its bytes arriving in the microseconds between the
        turn's stat and that connection's receive: it may be answered from the
        file as it was up to one turn before it arrived, never from older.  A
        connection a pool thread gives back begins a turn (EventLoop._take_returns):
        a request pipelined after a write sees the write.
        A file seen changed by anyone (small_files.get, on any thread) is
        forgotten at once, not at the turn's end: no answer older than one
        given already follows it."""
        if turn == self.turn:
            entry = small_files.entry(self.path)
            return entry is not None and entry[1] is self.data
        hit = small_files.get(self.path)
        if hit is None or hit[1] is not self.data:
            return False
        self.turn = turn
        return True

    def cost(self):
        """What keeping it holds: the file's bytes (shared with SmallFiles while it keeps
        them, counted all the same: a Held can outlive its entry) and its path."""
        return len(self.data) + sys.getsizeof(self.path)


class Plan:
    """What of a file a response carries: [(part head, offset, length)], and the
    closing delimiter of multipart/byteranges (None for a single range)."""

    def __init__(self, parts, closing=None):
        self.parts = parts
        self.closing = closing


def representation_headers(st, extension):
    """The fields that describe a file, whatever part of it is sent (RFC 9110 section 8)."""
    return [('Content-Type', content_type(extension)),
            ('Last-Modified', last_modified(int(st.st_mtime))),
            ('ETag', etag_of(st)), ('Accept-Ranges', 'bytes')]


def file_response(request, st, headers):
    """The response for a file, with a Plan of its bytes as a placeholder body.

    ``headers`` are representation_headers(st, ...), not changed here.
    """
    headers = list(headers)
    kind = headers[0][1]
    etag = headers[2][1]
    status = precondition(request, st, etag)
    if status == 304:
        return Response(304, headers[1:3], None, length=0)
    if status == 412:
        raise HTTPError(412, 'precondition failed', headers=headers[2:3])
    size = st.st_size
    range_header = request.get('range')
    ranges = None
    if range_header is not None and request.method == 'GET' and range_applies(request, etag, st):
        ranges = parse_range(range_header, size)
        if ranges == []:
            raise HTTPError(416, f'no satisfiable range in {range_header[:60]!r} for '
                                 f'{size} bytes', headers=[('Content-Range', f'bytes */{size}')])
    if ranges is None or not worth_parts(ranges):
        return Response(200, headers, Plan([(b'', 0, size)]), length=size)
    if len(ranges) == 1:
        (first, last), = ranges
        headers.append(('Content-Range', f'bytes {first}-{last}/{size}'))
        return Response(206, headers, Plan([(b'', first, last - first + 1)]),
                        length=last - first + 1)
    # Several ranges: multipart/byteranges, the parts in the order asked for.
    boundary = secrets.token_hex(16)
    parts = [((CRLF if n else b'') + CRLF.join([f'--{boundary}'.encode(),
                                                 f'Content-Type: {kind}'.encode(),
                                                 f'Content-Range: bytes {first}-{last}/{size}'
                                                 .encode()]) + HEAD_END,
              first, last - first + 1)
             for n, (first, last) in enumerate(ranges)]
    closing = CRLF + f'--{boundary}--'.encode() + CRLF
    length = sum(len(head) + part for head, _, part in parts) + len(closing)
    headers[0] = ('Content-Type', f'multipart/byteranges; boundary={boundary}')
    return Response(206, headers, Plan(parts, closing), length=length)


def worth_parts(ranges):
    """Serve these ranges as asked, or (False) ignore them and send the whole file.

    RFC 9110 section 14.2 lets a server ignore a Range field, and section 15.3.7.2
    warns of many small or overlapping ranges as a denial of service: more than
    MAX_RANGES, or any two that overlap, get the whole file instead.
    """
    if len(ranges) > MAX_RANGES:
        return False
    ordered = sorted(ranges)
    return all(ordered[i][1] < ordered[i + 1][0] for i in range(len(ordered) - 1))


def listing(request, root, fd, path):
    """An HTML directory listing of the directory open as ``fd`` (at ``path``), streamed
    in chunks since its length is not known.

    Read through the descriptor open_inside checked, never by its path again: a
    folder on the way swapped for a symlink meanwhile cannot turn the listing to
    another directory.  Reading, sorting and describing its entries, long for a
    large directory, is the body's work, which the server does on a pool thread,
    not in its loop; the body owns the descriptor (FolderBody) whether it is sent,
    cut or never read.
    """
    here = where(fd, path)

    def entries(fd):
        top = real_root(root)
        try:
            with os.scandir(fd) as found:
                entries = sorted(found, key=lambda e: e.name)
        except OSError:
            entries = []      # gone or closed to us since it was opened: an empty listing
        for entry in entries:
            if entry.name.startswith('.'):
                continue
            try:
                if entry.is_symlink() and not inside(
                        os.path.realpath(os.path.join(here, entry.name)), top):
                    continue    # never served, so not listed: not even its size
                is_dir = entry.is_dir()
                size = None if is_dir else entry.stat().st_size
            except OSError:
                continue
            yield entry.name, is_dir, size

    return Response(200, [('Content-Type', 'text/html; charset=utf-8')],
                    FolderBody(fd, lambda fd: listing_pieces(unquote(request.path), entries(fd))))


class FolderBody:
    """A response body made from an open folder: ``make(fd)`` yields the pieces.

    Owns the descriptor from the start: iterated to the end or not, ``close``
    (called on a body never sent, as for HEAD, and on one cut) releases it.
    """

    def __init__(self, fd, make):
        self._fd = fd
        self._make = make
        self._pieces = None

    def __iter__(self):
        if self._pieces is not None or self._fd < 0:
            raise ValueError('a FolderBody is iterated once')
        self._pieces = self._run()
        return self._pieces

    def _run(self):
        try:
            yield from self._make(self._fd)
        finally:
            self._close_fd()

    def close(self):
        pieces, self._pieces = self._pieces, False
        if pieces:
            pieces.close()
        self._close_fd()

    def _close_fd(self):
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def listing_pieces(title, entries):
    """The HTML of a listing titled ``title`` (a URL path, decoded), its rows made from
    ``entries``, (name, is a directory, size or None), in pieces of LISTING_BATCH rows:
    made as they are sent, so a large directory is never held whole."""
    title = html.escape(title)
    yield (f'<!doctype html>\n<html><head><meta charset="utf-8">'
           f'<title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n'
           '<table>\n<tr><th>Name</th><th>Size</th></tr>\n'
           '<tr><td><a href="../">../</a></td><td></td></tr>\n').encode()
    rows = []
    for name, is_dir, size in entries:
        name += '/' if is_dir else ''
        rows.append(f'<tr><td><a href="{html.escape(quote(name))}">{html.escape(name)}'
                    f'</a></td><td>{"" if size is None else size}</td></tr>\n')
        if len(rows) == LISTING_BATCH:
            yield ''.join(rows).encode()
            rows = []
    rows.append('</table>\n</body></html>\n')
    yield ''.join(rows).encode()
