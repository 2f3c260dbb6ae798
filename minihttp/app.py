"""The application: which path answers which method, and how.

Routes for now: ``/`` (a small page), ``/echo`` (the request body, framed the
way it came), ``/headers`` (the request's fields as received).  Method errors
follow RFC 9110: an unknown method is 501 (section 15.6.2), a known one on a
path that does not take it 405 with Allow (section 15.5.6), OPTIONS answers
with Allow (section 9.3.7).
"""

import html

from .http11 import KNOWN_METHODS, HTTPError, Response

TEXT = 'text/plain; charset=utf-8'
HTML = 'text/html; charset=utf-8'


def request_framing(body):
    """The value of X-Request-Framing: how the request's body was delimited."""
    if body.framing == 'chunked':
        return 'chunked'
    if body.framing == 'length':
        return f'content-length {body.length}'
    return 'none'


class App:
    """Maps (path, method) to a handler; handlers take a Request, return a Response."""

    def __init__(self):
        self.routes = {
            '/': {'GET': self.index, 'HEAD': self.index},
            '/echo': {'POST': self.echo, 'PUT': self.echo},
            '/headers': None,   # any method
        }

    def __call__(self, request):
        method = request.method
        if method not in KNOWN_METHODS or method == 'CONNECT':
            # RFC 9110 section 9.3.6: CONNECT asks for a tunnel; we are no proxy.
            raise HTTPError(501, f'method {method[:20]} is not implemented')
        path = request.path
        if path == '*':
            return self.options(self.all_methods())
        if path not in self.routes:
            raise HTTPError(404, f'nothing at {path[:80]}')
        handlers = self.routes[path]
        if handlers is None:
            return self.headers(request)
        handler = handlers.get(method)
        if handler is not None:
            return handler(request)
        allowed = self.allowed(handlers)
        if method == 'OPTIONS':
            return self.options(allowed)
        raise HTTPError(405, f'{method} is not allowed on {path[:80]}',
                        headers=[('Allow', allowed)])

    @staticmethod
    def allowed(handlers):
        return ', '.join(sorted({*handlers, 'OPTIONS'}))

    def all_methods(self):
        methods = {'OPTIONS'}
        for handlers in self.routes.values():
            methods.update(handlers if handlers is not None else ())
        return ', '.join(sorted(methods))

    @staticmethod
    def options(allowed):
        return Response(204, [('Allow', allowed)])

    # -- handlers ---------------------------------------------------------------

    def index(self, request):
        page = INDEX_PAGE.format(host=html.escape(request.get('host', 'localhost'))).encode()
        return Response(200, [('Content-Type', HTML)], page)

    @staticmethod
    def echo(request):
        """The body back, framed the way it came, streamed as it is read."""
        body = request.body
        fields = [('Content-Type', request.get('content-type', 'application/octet-stream')),
                  ('X-Request-Framing', request_framing(body))]
        if body.framing == 'none':
            return Response(200, fields, b'')
        body.start()   # 100 Continue, if asked for, before the response head
        return Response(200, fields, body.pieces(), length=body.length)

    @staticmethod
    def headers(request):
        """The request's fields exactly as received, one per line, in order."""
        request.body.read_to(lambda piece: None)
        text = ''.join(f'{name}: {value}\n' for name, value in request.fields)
        return Response(200, [('Content-Type', 'text/plain; charset=latin-1')],
                        text.encode('latin-1'))


INDEX_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>minihttp</title></head>
<body>
<h1>minihttp</h1>
<p>A small HTTP/1.1 server that shows how each message was framed.</p>
<ul>
<li><code>curl -i --data-binary 'hello' http://{host}/echo</code></li>
<li><code>curl -i -T file -H 'Transfer-Encoding: chunked' http://{host}/echo</code></li>
<li><code>curl -i http://{host}/headers</code></li>
</ul>
</body></html>
"""
