"""What a page from another site may do through a browser that can reach this server.

A person runs minihttp on their machine and, meanwhile, visits other sites.
Their browser can reach the server, so any page it shows can try three things:

* write: a cross-origin POST of a form (even multipart/form-data) needs no
  CORS preflight, so the browser sends it, body and all.  Unsafe methods
  that name another origin are refused with 403 (``check_origin``);
* read and write through DNS rebinding: a name the page's site controls is
  made to resolve to 127.0.0.1, so that the browser takes the server for the
  page's own origin.  The request still says the page's name in Host: a
  loopback server answers only to its own names (``check_host``), else 421;
* run script as this server: an uploaded .html or .svg served inline would
  run with the server's origin (and so could read and write everything).
  Uploads are served with ``upload_fields``: never sniffed, always
  sandboxed, and active types as downloads.

``Browsers.check(request)`` makes the first two decisions, once per request.
"""

import ipaddress
import re

from .errors import HTTPError

# RFC 9110 section 9.2.1: the methods whose semantics are read-only.  Every
# other method is unsafe, and a foreign page's unsafe request is refused.
SAFE_METHODS = frozenset(['GET', 'HEAD', 'OPTIONS', 'TRACE'])
# The port an origin of each scheme leaves out (RFC 6454 section 4).  A server's
# own pages have its own scheme: http, or https with --tls-cert.  Behind a proxy
# that speaks TLS for it, the page's origin is https://...: name it with
# --allow-origin.
DEFAULT_PORTS = {'http': ':80', 'https': ':443'}

# Host names that always mean this machine: localhost and its subdomains
# (RFC 6761 section 6.3), 127.0.0.0/8 and ::1.  The common ones are matched
# as they are; the rest by loopback_name.
LOOPBACK_NAMES = frozenset(['localhost', '127.0.0.1', '[::1]'])
IPV4_LOOPBACK = re.compile(r'127(?:\.[0-9]{1,3}){3}')
# An origin as --allow-origin takes it: scheme://host[:port], nothing after.
ORIGIN = re.compile(r'([A-Za-z][A-Za-z0-9+.-]*)://(\[[0-9A-Fa-f:.]+\]|[^/?#@:\[\]\s]+)'
                    r'(?::([0-9]{1,5}))?/?')


def host_name(authority):
    """The host of ``host[:port]`` as compared: lower-case, without the port or a
    final dot (``localhost.`` names the same host), an IPv6 literal in brackets."""
    authority = authority.lower()
    if authority.startswith('['):
        return authority[:authority.find(']') + 1]
    name = authority.partition(':')[0]
    return name[:-1] if name.endswith('.') else name


def loopback_name(name):
    """Whether a host name (as host_name gives it) can only mean this machine."""
    if name in LOOPBACK_NAMES or name.endswith('.localhost'):
        return True
    if IPV4_LOOPBACK.fullmatch(name):
        return all(int(byte) < 256 for byte in name.split('.'))
    if name.startswith('['):
        try:
            address = ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            return False
        # ::ffff:127.0.0.1 reaches an IPv4 loopback socket too; Python before
        # 3.13 does not count such an address as loopback.
        return address.is_loopback or bool(address.ipv4_mapped and
                                           address.ipv4_mapped.is_loopback)
    return False


def authority(request):
    """Where the client sent the request: the authority of an absolute-form target
    (RFC 9112 section 3.2.2: a server MUST then ignore Host), else Host; None
    when there is neither (HTTP/1.0 without Host)."""
    target = request.target
    if target[0] != '/' and '://' in target:
        rest = target.partition('://')[2]
        for end in '/?#':
            rest = rest.partition(end)[0]
        return rest.rpartition('@')[2]
    return request.get('host')


def same_authority(one, other, scheme='http'):
    """``host[:port]`` pairs compared as origins of ``scheme`` are: case-blind, its
    default port implied."""
    one, other = one.lower(), other.lower()
    default = DEFAULT_PORTS[scheme]
    if one.endswith(default):
        one = one[:-len(default)]
    if other.endswith(default):
        other = other[:-len(default)]
    return one == other


def normal_origin(text):
    """An origin as a browser serialises it (lower case, no default port), or
    ValueError: what ``--allow-origin`` takes."""
    match = ORIGIN.fullmatch(text.strip())
    if match is None:
        raise ValueError(f'not an origin: {text!r} (try http://localhost:3000)')
    scheme, host, port = match.groups()
    scheme, host = scheme.lower(), host.lower()
    if port is not None:
        if int(port) > 65535:
            raise ValueError(f'not a port number in {text!r}')
        if (scheme, int(port)) in (('http', 80), ('https', 443)):
            port = None       # as browsers serialise it: the default port left out
    return f'{scheme}://{host}' + (f':{port}' if port else '')


def normal_host(text):
    """A host name as ``--allow-host`` takes it (a name or an address, no port),
    or ValueError."""
    text = text.strip()
    if ':' in text and not text.startswith('['):
        try:
            text = f'[{ipaddress.IPv6Address(text)}]'     # ::1 as a Host says it: [::1]
        except ValueError:
            raise ValueError(f'not a host name: {text!r} (a name or an address, '
                             'without a port)') from None
    if not text or not re.fullmatch(r"[-A-Za-z0-9._~%!$&'()*+,;=]+\.?|\[[0-9A-Fa-f:.]+\]", text):
        raise ValueError(f'not a host name: {text!r} (a name or an address, without a port)')
    return host_name(text)


class Browsers:
    """The Host and Origin a request may carry, decided once per request.

    ``bound``: the address or name the server listens on; ``loopback``:
    whether that is loopback only.  On loopback, Host must be a loopback name,
    the bound name or one of ``hosts``.  Beyond loopback the server's names
    are not ours to know: Host is checked only when ``hosts`` are given (then
    against them, the bound name and the loopback names).  ``origins``: pages
    (scheme://host[:port]) besides the server's own that may use unsafe methods.
    ``scheme``: the server's own ('https' when it serves TLS), its pages' origins'.
    """

    def __init__(self, bound=None, loopback=True, hosts=(), origins=(), scheme='http'):
        self.scheme = scheme
        names = {normal_host(name) for name in hosts}
        try:
            names.add(normal_host(bound or 'localhost'))
        except ValueError:
            pass          # no name a Host could say: the listener refuses it anyway
        self.hosts = frozenset(names | LOOPBACK_NAMES)
        self.exact = self.hosts
        self.check_hosts = loopback or bool(hosts)
        self.origins = frozenset(normal_origin(origin) for origin in origins)

    def listening(self, port):
        """The port is known (bound): each name as a browser's Host says it, port
        included, is accepted by one set lookup."""
        self.exact = self.hosts | {f'{name}:{port}' for name in self.hosts}

    def check(self, request):
        """HTTPError 421 for a Host not ours, 403 for a foreign page's unsafe request.

        Every request comes here (small GETs included): the common case is a
        field and a set lookup.
        """
        if self.check_hosts:
            where = request.get('host') if request.target[0] == '/' else authority(request)
            if where is not None and where not in self.exact:
                self.check_host(host_name(where))
        if request.method not in SAFE_METHODS:
            self.check_origin(request)

    def check_host(self, name):
        """A Host not spelled as expected: its name as compared, among ours or 421."""
        if name not in self.hosts and not loopback_name(name):
            # RFC 9110 section 15.5.20: not a name this server answers for.
            raise HTTPError(421, f'this server does not answer for the host {name[:60]!r} '
                                 '(see --allow-host)')

    def check_origin(self, request):
        """Origin, sent by browsers with every unsafe request (RFC 6454 section 7.3),
        must be this server's own or an allowed one; ``null`` (a sandboxed or
        opaque page) never is.  Without Origin, Sec-Fetch-Site (Fetch Metadata)
        still tells a cross-site or same-site request from a same-origin one."""
        origin = request.get('origin')
        if origin is None:
            site = request.get('sec-fetch-site')
            if site is not None and site.strip().lower() in ('cross-site', 'same-site'):
                raise HTTPError(403, f'{request.method} from a {site.strip().lower()} page '
                                     'is refused (Sec-Fetch-Site)')
            return
        origin = origin.strip()
        scheme, sep, rest = origin.partition('://')
        where = authority(request)
        if sep and scheme.lower() == self.scheme and where is not None and same_authority(
                rest, where, self.scheme):
            return        # the page is this server's own
        if origin.lower() not in self.origins:
            raise HTTPError(403, f'{request.method} from a page of another origin '
                                 f'({origin[:80]!r}) is refused (see --allow-origin)')


# The media types whose documents cannot run script, shown inline; every other
# upload (html, xhtml, svg, xml, js, pdf, anything unknown) is a download.
PASSIVE_TYPES = frozenset([
    'text/plain', 'text/csv', 'application/json', 'application/zip', 'application/gzip',
    'image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/avif', 'image/bmp'])
PASSIVE_PREFIXES = ('audio/', 'video/')

# Every upload: never sniffed into another type (a .txt that holds HTML stays
# text), and a sandbox (an opaque origin, no script) should it be shown as a page.
CONTAINED = (('X-Content-Type-Options', 'nosniff'),
             ('Content-Security-Policy', 'sandbox'))
DOWNLOAD = (*CONTAINED, ('Content-Disposition', 'attachment'))


def upload_fields(content_type):
    """The fields an upload of this Content-Type is served with."""
    media = content_type.partition(';')[0]
    if media in PASSIVE_TYPES or media.startswith(PASSIVE_PREFIXES):
        return CONTAINED
    return DOWNLOAD
