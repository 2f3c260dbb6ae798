"""The application: which path answers which method, and how.

* ``/echo``     the request body, framed the way it came (POST, PUT);
* ``/headers``  the request's fields as received (any method);
* ``/_framing`` the server's recent framing records, as JSON, and
  ``/_framing/stream`` the same as they come (server-sent events);
* ``/uploads/`` the upload directory: GET a file or a folder's listing
  (HTML, or JSON), PUT and DELETE ``/uploads/<name>`` (a name may hold
  folders: ``a/b/c.txt``), PUT and DELETE ``/uploads/<folder>/`` (make an
  empty folder, remove one), POST a multipart/form-data form to a folder;
  a PUT or POST to ``/uploads/<name>`` with ``Upload-Complete`` creates a resumable
  upload (draft-ietf-httpbis-resumable-upload), announced by a ``104`` with its
  resumption URL, ``/_uploads/<ID>``: HEAD there says its offset, PATCH
  appends at that offset, DELETE cancels it;
* ``/_minihttp/`` the demo page, shipped in the package, whatever the root;
* anything else: a file or directory under the document root.

Method errors follow RFC 9110: an unknown method is 501 (section 15.6.2), a
known one on a path that does not take it 405 with Allow (section 15.5.6),
OPTIONS answers with Allow (section 9.3.7).
"""

import contextlib
import hmac
import html
import json
import os
from urllib.parse import parse_qs, quote, unquote

from . import digests, files, multipart
from .archives import KINDS, archive_pieces
from .browsers import CONTAINED, upload_fields
from .errors import HTTPError
from .grammar import KNOWN_METHODS, decimal
from .responses import Response
from .limits import EXPIRE_AFTER, MAX_RECORD_DIGITS, MAX_UPLOAD
from .records import EventStream, FramingLog
from .resumable import PartialStore, Rejected, gone, inconsistent_length, limit_field
from .transfer import CHUNKED, LENGTH, NONE
from .uploads import (Condition, UploadStore, check_name, folder_html, folder_json,
                      stored_spelling)

HTML = 'text/html; charset=utf-8'
JSON = 'application/json'

# Where /headers shows a chunked request's trailer section.
TRAILERS_HEADING = '\n# trailer section (after the last chunk)\n'

READ = ('GET', 'HEAD')
WRITE = ('PUT', 'POST', 'DELETE', 'PATCH')
UPLOADS = '/uploads/'
# Resumption URLs: /_uploads/<ID> (resumable.ID), one per upload resource.
PARTIALS = '/_uploads/'
# The media type of an append (the draft: a PATCH's content is this, or 415).
PARTIAL_UPLOAD = 'application/partial-upload'
# RFC 9530 for resumable uploads: a Content-Digest is of one request's content
# (a part), a Repr-Digest of the whole upload.
PART_DIGEST = ('content-digest',)
REPR_DIGEST = 'repr-digest'
# Upload-Draft-Interop-Version values served (the draft: no 104 for any other, nor
# for none).  6 (draft 04-05) to 9 (draft 13 on) differ in what this server does
# alike for all, except the lifetime's name in Upload-Limit (expires before 7,
# max-age since: resumable.limit_field says each its own).  6 is what Apple's
# URLSession sends; 3-5 had no Upload-Limit nor application/partial-upload.
INTEROP_VERSIONS = frozenset({6, 7, 8, 9})
# A Structured Field Integer has at most 15 digits (RFC 9651 section 3.3.1).
SF_INTEGER_DIGITS = 15
# The demo page is package data (minihttp/www, the repository's www/), served
# here whichever folder is the root: `minihttp` run anywhere still teaches.
PAGE_URL = '/_minihttp/'
PAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'www')


def request_framing(body):
    """The value of X-Request-Framing: how the request's body was delimited."""
    return str(body.framing)


def framing_summary(body):
    """How an upload's body was framed, for the JSON answer."""
    summary = {'framing': body.framing.kind}
    if body.framing.kind == CHUNKED:
        summary['chunks'] = body.chunks
    return summary


def json_response(status, data, headers=()):
    return Response(status, [('Content-Type', JSON), *headers],
                    (json.dumps(data, indent=1) + '\n').encode())


class Redirect:
    """The app of ``serve --redirect-port``: every request is answered 308 to the same
    target on the HTTPS port (RFC 9110 section 15.4.9: the method and body are kept), at
    the host the client named.  That host is checked first (a Host not ours is 421),
    so the redirect sends nobody elsewhere; ``host`` serves a request without one."""

    def __init__(self, https_port, browsers, host):
        self.port = https_port
        self.browsers = browsers
        self.host = host

    def __call__(self, request):
        self.browsers.check(request)
        host = request.get('host') or self.host
        name = host[:host.find(']') + 1] if host.startswith('[') else host.split(':', 1)[0]
        target = request.target if request.target.startswith('/') else '/'
        return Response(308, [('Location', f'https://{name}:{self.port}{target}')])


class App:
    """Maps a request to a handler; handlers take a Request and return a Response.

    ``token``: when set, PUT, POST and DELETE need ``Authorization: Bearer
    <token>``.  ``writes``: False refuses them all (403), for a server
    reachable beyond loopback without a token.  ``browsers``: the
    browsers.Browsers that checks each request's Host and Origin (the command
    line always gives one; None checks neither).
    """

    def __init__(self, root='www', uploads=None, max_upload=MAX_UPLOAD, token=None,
                 writes=True, records=None, block_port=None, browsers=None,
                 partial_expiry=EXPIRE_AFTER):
        self.root = root
        self.block_port = block_port
        self.browsers = browsers
        # The server's framing records, served by GET /_framing.
        self.records = FramingLog() if records is None else records
        self.store = UploadStore(uploads or os.path.join(root, 'uploads'), max_upload)
        self.store.prepare()
        # Resumable uploads: their state in the same folder (hidden files), so that
        # any worker, or another server sharing the folder, resumes any of them.
        self.partials = PartialStore(self.store.directory, max_upload, partial_expiry,
                                     uploads=self.store)
        self.partials.expire()
        # Files under the root that are uploads (the upload directory inside the
        # root, as by default) are served as uploads whichever URL reaches them.
        within = os.path.relpath(os.path.realpath(self.store.directory), os.path.realpath(root))
        self.root_fields = None
        if within != os.pardir and not within.startswith(os.pardir + os.sep):
            self.uploads_in_root = os.path.join(root, '' if within == os.curdir else within, '')
            self.root_fields = self.fields_if_upload
        self.token = token
        self.writes = writes
        self.routes = {'/echo': {'POST': self.echo, 'PUT': self.echo},
                       '/headers': None,     # None: any method
                       '/_framing': {'GET': self.framing, 'HEAD': self.framing},
                       '/_framing/stream': {'GET': self.framing_stream,
                                            'HEAD': self.framing_stream}}
        # What each method does to the other paths: a file under the root, an
        # upload, the upload directory.
        self.files = {'GET': self.get_file, 'HEAD': self.get_file}
        self.page = {'GET': self.get_page, 'HEAD': self.get_page}
        self.upload_file = {'GET': self.get_upload, 'HEAD': self.get_upload,
                            'PUT': self.put_upload, 'POST': self.post_upload,
                            'DELETE': self.delete_upload}
        self.upload_root = {'GET': self.get_upload, 'HEAD': self.get_upload,
                            'POST': self.post_form}
        self.upload_folder = {**self.upload_root, 'PUT': self.put_folder,
                              'DELETE': self.delete_folder}
        # An upload resource: its state (GET is HEAD's answer), an append, a cancel.
        self.partial = {'HEAD': self.head_partial, 'GET': self.head_partial,
                        'PATCH': self.patch_partial, 'DELETE': self.delete_partial}

    def __call__(self, request):
        if self.browsers is not None:
            self.browsers.check(request)
        method = request.method
        if method not in KNOWN_METHODS or method == 'CONNECT':
            # RFC 9110 section 9.3.6: CONNECT asks for a tunnel; we are no proxy.
            raise HTTPError(501, f'method {method[:20]} is not implemented')
        path = request.path
        if path == '*':
            return self.options('GET, HEAD, OPTIONS, POST, PUT, DELETE, PATCH', self.limits())
        if path in self.routes:
            handlers = self.routes[path]
            if handlers is None:
                return self.headers(request)
        elif path.startswith(UPLOADS):
            # A folder's URL ends with "/", as a directory's does (files.serve_path).
            handlers = (self.upload_root if path == UPLOADS else
                        self.upload_folder if path.endswith('/') else self.upload_file)
        elif path.startswith(PARTIALS):
            handlers = self.partial
        elif path.startswith(PAGE_URL):
            handlers = self.page
        else:
            handlers = self.files
        handler = handlers.get(method)
        if handler is None:
            allowed = ', '.join(sorted({*handlers, 'OPTIONS'}))
            if method == 'OPTIONS':
                # Where an upload resource is, or may be created: the draft's limits.
                uploads = handlers is self.upload_file or handlers is self.partial
                return self.options(allowed, self.limits() if uploads else ())
            raise HTTPError(405, f'{method} is not allowed on {path[:80]}',
                            headers=[('Allow', allowed)])
        if method in WRITE:
            self.authorize(request)
        return handler(request)

    def inline(self, request):
        """Whether a request without a body may be answered in the event loop.

        Reads are: a stat, an open, a small pread at most.  Writes are not:
        they fsync and rename, which may wait for the disk; nor is a read that
        asks for a digest (Want-Repr-Digest), which may read a whole file first;
        nor, with --workers, a read of /_framing, which waits for the other
        processes' answers (minihttp.hub, at most HUB_ASK_TIMEOUT).
        """
        return (request.method not in WRITE and not request.has('want-repr-digest')
                and not (request.path == '/_framing' and self.records.asks_others))

    def admit(self, request, framing):
        """Refuse, from the head alone and without I/O, what would be refused before a
        byte of its body is read: a write without its token or with writes off (401,
        403), an upload announced larger than --max-upload (413).  The server asks
        in the loop, so such a request is answered at once rather than after its
        body begins or a thread is free (a client may send a head and wait).
        True for a resumable upload's creation: its 104 goes before the body, which
        a client may wait for (the draft), so its thread starts at once."""
        if request.method not in WRITE:
            return False
        if self.browsers is not None:
            self.browsers.check(request)
        self.authorize(request)
        resumable = request.has('upload-complete')
        if request.method in ('PUT', 'PATCH') and request.path.startswith((UPLOADS, PARTIALS)):
            with self.limits_on_413(resumable or request.method == 'PATCH'):
                self.store.refuse_oversize(framing.length)
        return request.method in ('PUT', 'POST') and resumable

    @staticmethod
    def options(allowed, fields=()):
        return Response(204, [('Allow', allowed), *fields])

    @contextlib.contextmanager
    def limits_on_413(self, resumable=True):
        """The draft: a 413 of the upload limits says them (Upload-Limit)."""
        try:
            yield
        except HTTPError as error:
            if resumable and error.status == 413:
                error.headers.append(('Upload-Limit', limit_field(
                    self.partials.max_upload, self.partials.expire_after)))
            raise

    def limits(self, interop=None):
        """What OPTIONS says where uploads may be resumed: the PATCH media type (the
        draft before 13 asks for Accept-Patch) and Upload-Limit, the lifetime a new
        upload resource would have."""
        return [('Accept-Patch', PARTIAL_UPLOAD),
                ('Upload-Limit', limit_field(self.partials.max_upload,
                                             self.partials.expire_after, interop))]

    def authorize(self, request):
        """Writes need the token when one is set, and are refused when writes are off."""
        if not self.writes:
            raise HTTPError(403, 'writes are disabled: this server listens beyond loopback '
                                 'without --token')
        if self.token is None:
            return
        scheme, _, credentials = request.get('authorization', '').partition(' ')
        if scheme.lower() != 'bearer' or not hmac.compare_digest(
                credentials.strip().encode(), self.token.encode()):
            raise HTTPError(401, 'writing needs Authorization: Bearer <token>',
                            headers=[('WWW-Authenticate', 'Bearer realm="minihttp"')])

    # -- files --------------------------------------------------------------------

    def get_file(self, request):
        return files.serve_path(request, self.root, request.path, self.root_fields)

    @staticmethod
    def get_page(request):
        name = request.path[len(PAGE_URL):]
        if '/' in name:
            # In a checkout the page's folder may hold www/uploads: served from
            # here they would lack the uploads' sandbox fields.  The page is flat.
            raise HTTPError(404, f'no file at {request.path[:80]}')
        return files.serve_path(request, PAGE_DIR, '/' + name)

    def get_upload(self, request):
        """A file (files.serve_path, which redirects a folder named without its "/"), or
        a folder's listing: HTML, or JSON for a client that accepts it, or with
        ?archive=KIND the folder as one archive (``archive``).  Read on a pool
        thread, as the answer is sent: a large folder takes long to read, and the loop
        serves everyone meanwhile.  Never the folder's index.html: uploads are no site."""
        if not request.path.endswith('/'):
            if request.query and archive_kind(request.query) is not None:
                # Not silently the file: the client asked for an archive it would not get.
                raise HTTPError(400, f'?archive= is for folders, whose URL ends with "/": '
                                     f'{request.path[:80]} does not')
            return files.serve_path(request, self.store.directory,
                                    '/' + stored_spelling(request.path[len(UPLOADS):]),
                                    self.fields_of_upload)
        try:
            folder = folder_name(request)
        except HTTPError:
            raise HTTPError(404, f'no folder at {request.path[:80]}') from None
        kind = archive_kind(request.query) if request.query else None
        if kind is not None:
            return self.archive(folder, kind)
        if 'application/json' in request.get('accept', ''):
            shown = folder and folder + '/'
            return Response(200, [('Content-Type', JSON), ('Cache-Control', 'no-store')],
                            self.store.listing(folder, lambda fd: folder_json(fd, shown)))
        return Response(200, [('Content-Type', HTML)], self.store.listing(
            folder, lambda fd: folder_html(fd, unquote(request.path))))

    def archive(self, folder, kind):
        """The folder (a checked name, '' for the uploads folder) as one archive of
        ``kind``, made on a pool thread as it is sent: chunked, since its length is
        known only at its end (minihttp.archives); a
        tar's large files by sendfile, in their chunks (responses.FileRegion).

        Opened here, in the loop (an open per segment, each with O_NOFOLLOW), so
        that a folder not there is a 404 before any head; HEAD closes it unread.
        """
        segments = folder.split('/') if folder else []
        archive = archive_pieces(self.store.directory, segments, kind,
                                 segments[-1] if segments else 'uploads', regions=True)
        return Response(200, [*archive.headers(), ('Cache-Control', 'no-store'), *CONTAINED],
                        archive)

    @staticmethod
    def fields_of_upload(path):
        """What an upload is served with: never sniffed, sandboxed, active types as
        downloads (browsers.upload_fields), so that it cannot script this origin."""
        return upload_fields(files.content_type(files.extension(path)))

    def fields_if_upload(self, path):
        return self.fields_of_upload(path) if path.startswith(self.uploads_in_root) else ()

    # -- uploads ------------------------------------------------------------------

    def put_upload(self, request):
        """Store the body; a digest the client sent (RFC 9530, in the head or the
        trailers) is checked before the file takes its name: 400 on a mismatch.
        If-Match, If-None-Match (* too) and If-Unmodified-Since are checked before
        the body is read and again as the file takes its name: 412 (with the
        current ETag) when they fail, so a client never replaces by accident.
        With Upload-Complete, a resumable upload is created instead (create_upload).

        The answer's Repr-Digest and ETag are of what was stored: in a response
        to a state-changing request, representation metadata describe the new
        representation (RFC 9110 section 8.8), not the JSON summary sent.
        """
        name = upload_name(request.path)
        if request.has('upload-complete'):
            complete = sf_boolean(request.get('upload-complete'))
            if complete is not None:     # the draft: any other value, as if absent
                response = self.create_upload(request, name, complete)
                if response is not None:
                    return response
        checked = []
        summary, replaced, stored, etag = self.store.put(
            name, request.body, digests.upload_algorithms(request),
            lambda computed: checked.extend(digests.check_upload(request, computed)),
            Condition.of(request))
        summary.update(framing_summary(request.body))
        if checked:
            summary['digests_checked'] = checked
        fields = [('Repr-Digest', digests.serialize(stored)), ('ETag', etag)]
        if replaced:
            return json_response(200, summary, fields)
        return json_response(201, summary, [('Location', UPLOADS + quote(name)), *fields])

    def delete_upload(self, request):
        self.store.delete(upload_name(request.path), Condition.of(request))
        return Response(204)

    def put_folder(self, request):
        """Make the folder and its missing parents: 201, or 200 when it was there (412
        with If-None-Match: *, which mkdir(2) decides: it never makes one twice)."""
        name = folder_name(request)
        if request.body.length != 0:
            raise HTTPError(400, f'a folder is made by a PUT without a body: '
                                 f'{request.path[:80]} ends with "/"')
        made = self.store.make_folder(name)
        answer = {'folder': name + '/'}
        if not made:
            condition = Condition.of(request)
            if condition is not None and condition.exclusive:
                raise condition.failed(name + '/', None)
            return json_response(200, answer)
        return json_response(201, answer, [('Location', UPLOADS + quote(name) + '/')])

    def delete_folder(self, request):
        self.store.remove_folder(folder_name(request))
        return Response(204)

    def post_form(self, request):
        """Store every file part of a multipart/form-data body, all or nothing.

        Each file part goes to a temporary file that is finished (flushed to
        disk and closed) as the part ends, so that one at most is open at a
        time; all are renamed into place only once the whole form arrived.
        """
        boundary = multipart.boundary_of(request.get('content-type', ''))
        body = request.body
        self.store.refuse_oversize(body.length)
        incoming, fields = [], multipart.FormFields()
        receiving = []          # the upload whose part is being read, if any

        folder = folder_name(request)

        def on_part(part):
            if part.filename is None:
                return fields.sink(part.name)
            # A browser sends a picked folder's files named by their path in it
            # ("photos/2024/cat.jpg": Chromium's webkitRelativePath): kept as folders.
            name = check_name(f'{folder}/{part.filename}' if folder else part.filename)
            upload = self.store.incoming()
            incoming.append((name, upload))
            receiving.append(upload)
            return upload.write

        def on_end():
            if receiving:
                receiving.pop().finish()

        try:
            multipart.read_parts(body, boundary, on_part, self.store.max_upload, on_end)
            for name, _ in incoming:
                self.store.check_write(name)
            for name, upload in incoming:
                self.store.commit(name, upload)
        finally:
            for _, upload in incoming:
                upload.discard()
        stored = [upload.summary(name) for name, upload in incoming]
        if 'text/html' in request.get('accept', ''):
            return Response(200, [('Content-Type', HTML)], stored_page(stored).encode())
        answer = {'stored': stored, **framing_summary(body),
                  'fields': {name: bytes(value).decode('utf-8', 'replace')
                             for name, value in fields.items if name is not None}}
        return json_response(200, answer)

    # -- resumable uploads (draft-ietf-httpbis-resumable-upload) ---------------------

    def post_upload(self, request):
        """POST /uploads/<name> creates a resumable upload (with Upload-Complete);
        without it there is nothing to create: a plain upload is a PUT."""
        if not request.has('upload-complete'):
            raise HTTPError(400, 'POST /uploads/<name> creates a resumable upload: send '
                                 'Upload-Complete, or PUT a whole file')
        return self.put_upload(request)

    def create_upload(self, request, name, complete):
        """A creation: the upload resource made, announced by a 104 (with its URL, the
        interop version and the limits) when the client speaks a version served, then
        the content appended.  A client cut mid-body keeps what arrived (the append
        fsyncs it), to resume with HEAD and PATCH.  None: not resumable (a complete
        upload from a client that named no version served is a plain PUT; the draft:
        no 104 then, and the fields are ignored)."""
        version = sf_integer(request.get('upload-draft-interop-version'))
        if version not in INTEROP_VERSIONS or request.version != 'HTTP/1.1':
            # An HTTP/1.0 client gets no 104 (request.interim): cut, it would never
            # learn the upload's URL, whose bytes would lie on the disk until it
            # expired, one of MAX_PARTIALS.
            if complete:
                return None
            version = None       # nothing to announce: the 201 carries the URL
        length = declared_length(request, 0, complete)
        # The draft sends the whole upload's Repr-Digest with the creation: kept
        # with the upload, checked once it is complete (append's ``verify``).
        digest = digests.to_keep(request, REPR_DIGEST)
        self.partials.expire()
        with self.limits_on_413():
            partial = self.partials.create(name, length, condition=Condition.of(request),
                                           digest=digest)
        location = PARTIALS + partial.id
        limit = limit_field(self.partials.max_upload, partial.max_age(), version)
        # No 104 for a creation without content: nothing to resume, and the 201
        # says the same at once.  (nginx 1.22 passes a 104 on as if final, so that
        # behind it uploads are made this way: the careful creation of the draft.)
        if version is not None and request.body.framing.has_body:
            request.interim(104, [('Location', location),
                                  ('Upload-Draft-Interop-Version', str(version)),
                                  ('Upload-Limit', limit)])
        return self.append(request, partial.id, 0, complete, None,
                           [('Location', location), ('Upload-Limit', limit)], 201)

    def append(self, request, upload_id, offset, complete, length, fields, status):
        """Append the request's content at ``offset``.  Complete: the stored file's
        summary, as a PUT answers (201 new, 200 replaced), with Upload-Complete: ?1.
        Not: ``status`` (201 for a creation, 204 for an append) with ``fields``, the
        offset and Upload-Complete: ?0.

        Integrity (RFC 9530, the draft's "Integrity Digests"): a Content-Digest (head,
        or trailer) is of this request's content, hashed as it passes; on a mismatch
        the part is not appended (400, the offset where it was, to send it again).
        A Repr-Digest (the creation's, kept; the completing request's, head or
        trailer) is of the whole upload, checked before the file takes its name."""
        checked = []
        algorithms = digests.upload_algorithms(request, PART_DIGEST, always=())

        def part(sink):
            hashes = {name: digests.ALGORITHMS[name]() for name in algorithms}

            def hashing(piece):
                for one in hashes.values():
                    one.update(piece)
                sink(piece)

            request.body.read_to(hashing if hashes else sink)
            computed = {name: one.digest() for name, one in hashes.items()}
            try:
                checked.extend(digests.check_upload(request, computed, PART_DIGEST))
            except HTTPError as error:
                raise Rejected(error.status, f'{error.reason}: this part was not appended, '
                                             f'send it again', offset, fields) from None

        stored = {}

        def verify(path, partial):
            sections = [('', [(REPR_DIGEST, partial.digest)])] if partial.digest else []
            if request.method == 'PATCH':         # a creation's head is the one kept
                sections.append(('', request.fields))
            sections.append((' trailer', request.body.trailers))
            wanted = {digests.DEFAULT, *digests.named_algorithms(sections, (REPR_DIGEST,))}
            stored.update(digests.file_digests(path, wanted))
            checked.extend(digests.check_fields(sections, (REPR_DIGEST,), stored,
                                                'the upload stored'))

        with self.limits_on_413():
            state = self.partials.append(upload_id, offset, part, complete, length, verify,
                                         whole=bool(algorithms))
        if not state.complete:
            return Response(status, [*fields, ('Upload-Offset', str(state.offset)),
                                     ('Upload-Complete', '?0')])
        summary = {'name': state.name, 'bytes': state.offset,
                   'sha256': stored[digests.DEFAULT].hex(), 'resumable': True,
                   **framing_summary(request.body)}
        if checked:
            summary['digests_checked'] = checked
        answer = [('Upload-Complete', '?1'), ('Repr-Digest', digests.serialize(stored)),
                  ('ETag', state.etag)]
        if state.replaced:
            return json_response(200, summary, answer)
        return json_response(201, summary, [('Location', UPLOADS + quote(state.name)), *answer])

    def partial_id(self, request):
        return request.path[len(PARTIALS):]

    def head_partial(self, request):
        """The upload resource's state: what HEAD must say (Upload-Offset,
        Upload-Complete, Upload-Length when declared, Upload-Limit) and never from
        a cache.  No token: the unguessable ID is the key, and this reveals only
        an offset; every write (PATCH, DELETE) needs the token."""
        partial = self.partials.open(self.partial_id(request))
        if partial is None:
            raise gone(self.partial_id(request))
        version = sf_integer(request.get('upload-draft-interop-version'))
        fields = [('Upload-Offset', str(partial.offset)),
                  ('Upload-Complete', '?1' if partial.complete else '?0')]
        if partial.length is not None:
            fields.append(('Upload-Length', str(partial.length)))
        fields.append(('Upload-Limit', limit_field(self.partials.max_upload,
                                                   partial.max_age(), version)))
        fields.append(('Cache-Control', 'no-store'))
        return Response(204, fields)

    def patch_partial(self, request):
        """An append: application/partial-upload at exactly the upload's offset (409
        with the right one otherwise, or when another append holds the upload),
        framed by Content-Length or chunked alike."""
        media = request.get('content-type', '').partition(';')[0].strip().lower()
        if media != PARTIAL_UPLOAD:
            raise HTTPError(415, f'an append is {PARTIAL_UPLOAD}', close=True,
                            headers=[('Accept-Patch', PARTIAL_UPLOAD)])
        offset = sf_integer(request.get('upload-offset'))
        complete = sf_boolean(request.get('upload-complete'))
        if offset is None or complete is None:
            raise HTTPError(400, 'an append needs Upload-Offset (an integer) and '
                                 'Upload-Complete (?0 or ?1)', close=True)
        length = declared_length(request, offset, complete)
        return self.append(request, self.partial_id(request), offset, complete, length,
                           (), 204)

    def delete_partial(self, request):
        """Cancel: the upload resource and its bytes go; an append in progress
        stops at its next write (resumable.PartialStore.cancel)."""
        self.partials.cancel(self.partial_id(request))
        return Response(204)

    # -- diagnostics --------------------------------------------------------------

    @staticmethod
    def echo(request):
        """The body back, framed the way it came, streamed as it is read.

        A chunked body's trailer fields come back as the response's trailers:
        known only once the last chunk is read, which is when the writer asks
        for them.  Those a trailer section may not carry (RFC 9110 section
        6.5.1, transfer.NOT_TRAILERS) the body reader has left out already.
        """
        body = request.body
        fields = [('Content-Type', request.get('content-type', 'application/octet-stream')),
                  ('X-Request-Framing', request_framing(body))]
        if body.framing.kind == NONE:
            return Response(200, fields, b'')
        body.start()   # 100 Continue, if asked for, before the response head
        return Response(200, fields, body.pieces(), length=body.length,
                        trailers=lambda: body.trailers)

    def framing(self, request):
        """The recent framing records as JSON, oldest first; ?after=N: those numbered above N.

        With them, the block server's port (None when it is off), for the page's
        commands.  Each record is made JSON once (records.FramingLog.as_json);
        the answer only joins them.
        """
        log = self.records
        records = b','.join([log.as_json(record) for record in log.kept(after(request))])
        return Response(200, [('Content-Type', JSON), ('Cache-Control', 'no-store')],
                        b'{"records":[%s],"block_port":%s}\n' % (
                            records, json.dumps(self.block_port).encode()))

    @staticmethod
    def framing_stream(request):
        """The records as they come, as server-sent events, after those kept numbered
        above ?after=N (or a reconnecting browser's Last-Event-ID)."""
        return Response(200, [('Content-Type', 'text/event-stream'),
                              ('Cache-Control', 'no-store')], EventStream(after(request)))

    @staticmethod
    def headers(request):
        """The request's fields exactly as received, one per line, in order.

        A chunked request's trailer fields follow as they came after the last
        chunk, below a blank line and a heading, so that none passes for a
        header field (RFC 9110 section 6.5: they are another section).
        """
        body = request.body
        body.read_to(lambda piece: None)
        lines = [f'{name}: {value}\n' for name, value in request.fields]
        if body.trailers:
            lines.append(TRAILERS_HEADING)
            lines.extend(f'{name}: {value}\n' for name, value in body.trailers)
        text = ''.join(lines)
        return Response(200, [('Content-Type', 'text/plain; charset=latin-1')],
                        text.encode('latin-1'))


def upload_name(path, folder=False):
    """The checked name of the file (or ``folder``) at ``path`` under /uploads/
    (uploads.check_name)."""
    try:
        return check_name(unquote(path[len(UPLOADS):], errors='strict'), folder)
    except UnicodeDecodeError:
        raise HTTPError(400, 'upload name is not UTF-8') from None


def archive_kind(query):
    """The kind an ``archive=`` query parameter asks for (None: none asked); unknown
    kinds are archive_pieces' 400, which names the kinds there are."""
    kinds = parse_qs(query, keep_blank_values=True).get('archive')
    if kinds is None:
        return None
    if len(kinds) > 1:
        raise HTTPError(400, f'archive= given {len(kinds)} times: one of {", ".join(KINDS)}')
    return kinds[0]


def folder_name(request):
    """The checked name of the folder at the request's path, without its "/" ('' for
    /uploads/ itself)."""
    return '' if request.path == UPLOADS else upload_name(request.path[:-1], folder=True)


def sf_boolean(value):
    """A Structured Field Boolean (RFC 9651 section 3.3.6) with no parameters: True,
    False, or None for anything else (the draft: the field is then ignored)."""
    if value is None:
        return None
    return {'?1': True, '?0': False}.get(value.strip(' '))


def sf_integer(value):
    """A non-negative Structured Field Integer (RFC 9651 section 3.3.1), or None."""
    if value is None:
        return None
    return decimal(value.strip(' '), SF_INTEGER_DIGITS)


def declared_length(request, offset, complete):
    """The upload's length as a request declares it (the draft's two ways: Upload-Length,
    and with Upload-Complete: ?1 the offset plus Content-Length), or None; 400 when
    the two disagree."""
    length = sf_integer(request.get('upload-length'))
    framing = request.body.framing
    if complete and framing.kind == LENGTH:
        whole = offset + framing.length
        if length is not None and length != whole:
            raise inconsistent_length(f'Upload-Length {length}, but the content ends at {whole}')
        length = whole
    return length


def after(request):
    """The record number a client has seen: ?after=N, else Last-Event-ID, else 0."""
    value = parse_qs(request.query).get('after', [request.get('last-event-id', '0')])[0]
    number = decimal(value.strip(), MAX_RECORD_DIGITS)
    if number is None:
        raise HTTPError(400, f'{value[:20]!r} is not a record number')
    return number


def stored_page(stored):
    rows = ''.join(f'<li><a href="{UPLOADS}{html.escape(quote(s["name"]))}">'
                   f'{html.escape(s["name"])}</a>: {s["bytes"]} bytes, sha256 '
                   f'<code>{s["sha256"]}</code></li>\n' for s in stored)
    return (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>Uploaded</title>'
            f'</head>\n<body><h1>Uploaded</h1>\n<ul>\n{rows}</ul>\n'
            f'<p><a href="{UPLOADS}">All uploads</a> · <a href="/">Home</a></p>\n'
            '</body></html>\n')
