"""TLS: chapter 5 one level down.

A TLS record is a 5-byte header (content type, version, a 2-byte length) and
then exactly that many bytes: Listing 5-2's length-prefix framing, beneath
HTTP's.  This module holds what the servers and the block client need of TLS,
standard library ``ssl`` only:

``server_context`` / ``client_context``
    TLS 1.2 at least, ALPN ``http/1.1``, no renegotiation, the default
    ciphers.  Every problem with the certificate or key files is one
    TLSConfigError whose message names the file and what is wrong with it.
``certificate_facts``
    the subject, names, dates and SHA-256 fingerprint of a PEM certificate,
    read by a small bounded DER reader (what the server prints at start).
``RecordScanner``
    the record framing made visible: fed one direction's raw bytes in any
    pieces, it reads only the 5-byte headers and skips the lengths, and
    tallies the records (and the handshake messages while they are in clear).
``TLSConnection``
    a socket-like object over a plain socket: an ``ssl.SSLObject`` between
    two memory BIOs, so that every byte on the wire passes where a scanner
    can see it, and a non-blocking socket keeps a plain one's semantics.
``looks_like_tls``, ``plain_http_error``
    telling a TLS hello from plain HTTP on the first bytes of a connection.
"""

import datetime
import errno
import hashlib
import ipaddress
import os
import ssl
import struct
from typing import NamedTuple

from .errors import HTTPError
from .framing import FramingError
from .limits import KiB, MiB, RECORDED_CHUNKS, TLS_IDLE_LEAN

# --- limits (the lead may move them into limits.py) ---------------------------
# The largest record a peer may send: RFC 8446 section 5.2, TLSCiphertext
# "MUST NOT exceed 2^14 + 256 bytes" (TLS 1.2, RFC 5246 section 6.2.3, allowed
# 2^14 + 2048; OpenSSL never sends more than the former).  A longer header is
# malformed: the scanner would otherwise skip an attacker's 64 KiB of anything.
MAX_RECORD_LENGTH = 2 ** 14 + 256
# How much of a certificate, key or password file is read: a PEM chain of a
# few certificates is a few KiB; a path naming /dev/zero or a huge file is
# refused instead of read.
MAX_PEM_FILE = 1 * MiB
MAX_PASSWORD_FILE = 4 * KiB
# The ciphertext one receive takes from the socket: up to sixteen full records.  Held
# by a connection only while a pool thread reads it (in the loop every connection
# shares one); a 256 MiB upload over TLS took 12% less server CPU than with 64 KiB.
# The same scratch takes what one send_file reads of a file.
TLS_RECEIVE_SIZE = 256 * KiB
# The plaintext one send encrypts: bounds the ciphertext held for a
# non-blocking socket that cannot take it yet (a record's overhead is ~29 bytes),
# and what the outgoing memory BIO keeps: it holds on to the largest write it took.
TLS_SEND_SIZE = 64 * KiB
# Pieces of one send that together fit in a record (a head and a small body) are
# joined and encrypted once: one record, one encryption, not one per piece.
TLS_JOIN_SIZE = 2 ** 14
# Ciphertext pieces one sendmsg gathers (Linux's IOV_MAX is 1024).
TLS_IOV_MAX = 512
# Handshake message types a tally lists (a handshake has about a dozen).
RECORDED_HANDSHAKE = 32

ALPN = ['http/1.1']

# RFC 8446 section 5.1 (ContentType) and RFC 6520 (heartbeat).
CONTENT_TYPES = {20: 'change_cipher_spec', 21: 'alert', 22: 'handshake',
                 23: 'application_data', 24: 'heartbeat'}
CHANGE_CIPHER_SPEC, HANDSHAKE, APPLICATION_DATA = 20, 22, 23
# legacy_record_version of every record after the hellos, TLS 1.2 and 1.3 alike
# (RFC 8446 section 5.1).
TLS_1_2 = 0x0303
# RFC 8446 section 4 and RFC 5246 section 7.4 (HandshakeType).
HANDSHAKE_TYPES = {0: 'hello_request', 1: 'client_hello', 2: 'server_hello',
                   4: 'new_session_ticket', 5: 'end_of_early_data',
                   8: 'encrypted_extensions', 11: 'certificate', 12: 'server_key_exchange',
                   13: 'certificate_request', 14: 'server_hello_done',
                   15: 'certificate_verify', 16: 'client_key_exchange', 20: 'finished',
                   24: 'key_update', 254: 'message_hash'}

RECORD_HEADER = struct.Struct('!BHH')      # type, legacy_record_version, length
RECORD_HEADER_SIZE = RECORD_HEADER.size
_unpack_header = RECORD_HEADER.unpack_from
HANDSHAKE_HEADER_SIZE = 4                  # msg_type, a 3-byte length
_LARGEST_RECORD = RECORD_HEADER_SIZE + MAX_RECORD_LENGTH     # a whole record, header included

# What nginx answers plain HTTP on an HTTPS port (400, and the connection closes).
PLAIN_HTTP_LINE = 'The plain HTTP request was sent to HTTPS port'
# What a TLS hello on a plain port is told (in clear: a person reading the log,
# or openssl s_client's output, sees it; a TLS client just fails its handshake).
TLS_ON_PLAIN_LINE = 'a TLS handshake on the plain HTTP port: use http://, or serve with --tls-cert'


class TLSConfigError(Exception):
    """A certificate, key or password file the server cannot use; the message
    names the file and the problem (the CLI prints it and exits with status 2)."""


class MalformedRecord(FramingError):
    """A TLS record header no peer may send."""


# --- telling TLS from plain HTTP ----------------------------------------------

def looks_like_tls(first):
    """Whether a connection's first bytes begin a TLS handshake record.

    A ClientHello's record starts 0x16 (handshake) then 0x03 (the version's
    major byte); an HTTP request starts with a method, a token of letters,
    which never holds 0x16.  One byte is enough to decide; a second confirms.
    """
    return len(first) >= 1 and first[0] == HANDSHAKE and (len(first) < 2 or first[1] == 3)


def plain_http_error():
    """The 400 for plain HTTP on a TLS port (sent in clear, then closed), as nginx does."""
    return HTTPError(400, PLAIN_HTTP_LINE, close=True)


def tls_on_plain_error():
    """The 400 for a TLS hello on a plain port (logged, sent in clear, then closed)."""
    return HTTPError(400, TLS_ON_PLAIN_LINE, close=True)


# --- contexts -----------------------------------------------------------------

def _common(context):
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN)
    # Client-initiated renegotiation of TLS 1.2 lets one client make the server
    # redo its expensive half of a handshake at will; OpenSSL refuses it with
    # this option (Python 3.7+ on OpenSSL 1.1.0h+).
    context.options |= getattr(ssl, 'OP_NO_RENEGOTIATION', 0)
    return context


def client_context(cafile=None):
    """A client's context: the system's CAs, or only ``cafile``'s when given."""
    if cafile is None:
        return _common(ssl.create_default_context())
    text = _read_pem(cafile, 'CA file')
    if CERT_BEGIN not in text:
        raise TLSConfigError(f'CA file {cafile}: holds no PEM certificate')
    try:
        # Given data, create_default_context trusts it alone (no system CAs).
        return _common(ssl.create_default_context(cadata=text))
    except ssl.SSLError as exc:
        raise TLSConfigError(f'CA file {cafile}: cannot be loaded '
                             f'({failure_reason(exc)})') from None


def server_context(cert, key, password_file=None, ask=None, now=None):
    """A server's context for the certificate file ``cert`` and key file ``key``.

    An encrypted key's password is the first line of ``password_file``, else
    what ``ask()`` returns (a getpass prompt), asked only when the key is
    encrypted.  Raises TLSConfigError naming the file for anything that would
    keep a client from completing a handshake.
    """
    facts = certificate_facts(cert)
    check_dates(cert, facts, now)
    text = _read_pem(key, 'key file')
    if 'PRIVATE KEY-----' not in text:
        raise TLSConfigError(f'key file {key}: holds no PEM private key')
    encrypted = 'ENCRYPTED PRIVATE KEY' in text or 'Proc-Type: 4,ENCRYPTED' in text
    password = None
    if encrypted:
        if password_file is not None:
            password = _read_password(password_file)
        elif ask is not None:
            password = ask()
        else:
            raise TLSConfigError(f'key file {key}: is encrypted, and no password was given'
                                 ' (--tls-password-file)')
    context = _common(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    # A client's TCP end without close_notify (RFC 8446 section 6.1 asks for one first)
    # is read as the end it is, not answered with a fatal alert: OpenSSL 3 sends
    # decode_error then, and a client that half-closed after its request, still reading
    # its answer, would meet that alert after the answer's last byte.  Nothing cut short
    # passes for whole: the framing above TLS (a head's blank line, Content-Length,
    # chunks, the block stream's empty block) finds every message the end cut.
    context.options |= getattr(ssl, 'OP_IGNORE_UNEXPECTED_EOF', 0)

    def no_prompt():
        # Never OpenSSL's own terminal prompt: a key we judged unencrypted
        # that asks anyway is refused.
        raise TLSConfigError(f'key file {key}: asks for a password')
    try:
        context.load_cert_chain(cert, key, password if password is not None else no_prompt)
    except ssl.SSLError as exc:
        if exc.reason == 'KEY_VALUES_MISMATCH':
            raise TLSConfigError(f'key file {key}: does not match the certificate in'
                                 f' {cert}') from None
        if encrypted:
            said = f'password file {password_file}' if password_file else 'password given'
            raise TLSConfigError(f'key file {key}: cannot be decrypted with the {said}'
                                 ' (wrong password?)') from None
        raise TLSConfigError(f'key file {key}: is not a usable PEM private key for {cert}'
                             f' ({failure_reason(exc)})') from None
    except OSError as exc:
        raise TLSConfigError(f'{cert} or {key}: {exc.strerror or exc}') from None
    return context


def failure_reason(exc):
    """What a failure of TLS (an ssl.SSLError, or the OSError of a peer gone) says in a
    line: OpenSSL's reason when it gives one."""
    return getattr(exc, 'reason', None) or exc.strerror or str(exc) or type(exc).__name__


def _read_bounded(path, what, limit):
    try:
        with open(path, 'rb') as file:
            data = file.read(limit + 1)
    except OSError as exc:
        raise TLSConfigError(f'{what} {path}: cannot be read ({exc.strerror or exc})') from None
    if len(data) > limit:
        raise TLSConfigError(f'{what} {path}: larger than {limit} bytes, too large for a {what}')
    return data


def _read_pem(path, what):
    # latin-1: any bytes decode, so a binary file fails below as "no PEM", not here.
    return _read_bounded(path, what, MAX_PEM_FILE).decode('latin-1')


def _read_password(path):
    data = _read_bounded(path, 'password file', MAX_PASSWORD_FILE)
    line = data.split(b'\n', 1)[0].rstrip(b'\r')
    if not line:
        raise TLSConfigError(f'password file {path}: its first line is empty')
    return line


def check_dates(path, facts, now=None):
    """TLSConfigError when the certificate is not valid at ``now`` (UTC, default: now)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if now < facts.not_before:
        raise TLSConfigError(f'certificate file {path}: not valid until {_utc(facts.not_before)}')
    if now > facts.not_after:
        raise TLSConfigError(f'certificate file {path}: expired on {_utc(facts.not_after)}')


def _utc(moment):
    return moment.strftime('%Y-%m-%d %H:%M:%S UTC')


# --- certificate facts: a small DER reader ------------------------------------

CERT_BEGIN = '-----BEGIN CERTIFICATE-----'
CERT_END = '-----END CERTIFICATE-----'

# RFC 5280 appendix A: the attribute types a subject usually holds.
NAMES = {'2.5.4.3': 'CN', '2.5.4.6': 'C', '2.5.4.7': 'L', '2.5.4.8': 'ST', '2.5.4.10': 'O',
         '2.5.4.11': 'OU', '1.2.840.113549.1.9.1': 'emailAddress'}
SUBJECT_ALT_NAME = '2.5.29.17'
SEQUENCE, SET, OID, OCTETS, BOOLEAN, UTC_TIME, GENERALIZED_TIME = \
    0x30, 0x31, 0x06, 0x04, 0x01, 0x17, 0x18
# A DER length of more than 4 bytes would announce more than 4 GiB in a file
# of at most MAX_PEM_FILE: refused as malformed.
MAX_LENGTH_BYTES = 4
# The longest object identifier read, in bytes (the ones named here have 3 to
# 9): each arc is an int built 7 bits at a time, and one arc of a million
# continuation bytes would cost quadratic time.
MAX_OID = 64


class CertificateFacts(NamedTuple):
    subject: tuple          # ((name, value), ...) in the certificate's order
    names: tuple            # subjectAltName: ('DNS:localhost', 'IP:127.0.0.1', ...)
    not_before: datetime.datetime
    not_after: datetime.datetime
    fingerprint: str        # SHA-256 of the DER, 'AB:CD:...' as openssl prints it

    @property
    def subject_text(self):
        return ', '.join(f'{name}={value}' for name, value in self.subject)

    def describe(self):
        """The line the server prints at start."""
        names = f' ({", ".join(self.names)})' if self.names else ''
        return (f'certificate {self.subject_text}{names}, valid {_utc(self.not_before)}'
                f' to {_utc(self.not_after)}, SHA-256 {self.fingerprint}')


class DERError(ValueError):
    """Bytes that are not the DER a certificate is made of."""


def _tlv(data, pos, end):
    """The element at ``pos``: (tag, first content byte, one past the last), within end."""
    if pos + 2 > end:
        raise DERError(f'element cut short at byte {pos}')
    tag, length = data[pos], data[pos + 1]
    if tag & 0x1f == 0x1f:
        raise DERError(f'multi-byte tag at byte {pos}')
    pos += 2
    if length & 0x80:
        count = length & 0x7f
        if not 1 <= count <= MAX_LENGTH_BYTES or pos + count > end:
            raise DERError(f'bad length at byte {pos - 1}')
        length = int.from_bytes(data[pos:pos + count], 'big')
        pos += count
    if pos + length > end:
        raise DERError(f'element at byte {pos} runs past its container')
    return tag, pos, pos + length


def _expect(data, pos, end, tag, what):
    got, start, stop = _tlv(data, pos, end)
    if got != tag:
        raise DERError(f'{what}: expected tag {tag:#04x}, found {got:#04x} at byte {pos}')
    return start, stop


def _oid(data):
    """The dotted text of an OBJECT IDENTIFIER's content bytes."""
    if len(data) > MAX_OID:
        raise DERError(f'object identifier of {len(data)} bytes')
    parts, value = [], 0
    for byte in data:
        value = (value << 7) | (byte & 0x7f)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    if not parts:
        raise DERError('empty object identifier')
    first = min(parts[0] // 40, 2)
    return '.'.join(map(str, [first, parts[0] - 40 * first, *parts[1:]]))


def _time(data, tag):
    text = bytes(data).decode('ascii', 'replace')
    try:
        if tag == UTC_TIME:    # RFC 5280 4.1.2.5.1: YY >= 50 is 19YY
            moment = datetime.datetime.strptime(text, '%y%m%d%H%M%SZ')
            if moment.year >= 2050:
                moment = moment.replace(year=moment.year - 100)
        elif tag == GENERALIZED_TIME:
            moment = datetime.datetime.strptime(text, '%Y%m%d%H%M%SZ')
        else:
            raise DERError(f'a time of tag {tag:#04x}')
    except ValueError:
        raise DERError(f'unreadable time {text!r}') from None
    return moment.replace(tzinfo=datetime.timezone.utc)


def _name(data, pos, end):
    """A Name: SEQUENCE OF SET OF (type, value), as ((name, value), ...)."""
    out = []
    while pos < end:
        _, set_start, set_end = _tlv(data, pos, end)
        pos = set_end
        inner = set_start
        while inner < set_end:
            start, stop = _expect(data, inner, set_end, SEQUENCE, 'attribute')
            inner = stop
            oid_start, oid_stop = _expect(data, start, stop, OID, 'attribute type')
            kind = _oid(data[oid_start:oid_stop])
            _, value_start, value_stop = _tlv(data, oid_stop, stop)
            value = bytes(data[value_start:value_stop]).decode('utf-8', 'replace')
            out.append((NAMES.get(kind, kind), value))
    return tuple(out)


def _alt_names(data, pos, end):
    """GeneralNames (RFC 5280 4.2.1.6): the DNS names and IP addresses."""
    names = []
    start, stop = _expect(data, pos, end, SEQUENCE, 'subjectAltName')
    while start < stop:
        tag, value_start, value_stop = _tlv(data, start, stop)
        start = value_stop
        value = bytes(data[value_start:value_stop])
        if tag == 0x82:                                  # [2] dNSName
            names.append('DNS:' + value.decode('ascii', 'replace'))
        elif tag == 0x87 and len(value) == 4:            # [7] iPAddress, v4
            names.append('IP:' + '.'.join(map(str, value)))
        elif tag == 0x87 and len(value) == 16:
            names.append('IP:' + str(ipaddress.IPv6Address(value)))
    return tuple(names)


def parse_certificate(der):
    """CertificateFacts of a DER certificate; DERError for anything else.

    Walks the TBSCertificate once (RFC 5280 section 4.1), reading every
    element's header and skipping what it does not need: time linear in the
    certificate's length, memory that of its names.
    """
    data = memoryview(der)
    start, stop = _expect(data, 0, len(data), SEQUENCE, 'certificate')
    pos, end = _expect(data, start, stop, SEQUENCE, 'tbsCertificate')
    tag, _, after = _tlv(data, pos, end)
    if tag == 0xa0:                                      # [0] version
        pos = after
    _, _, pos = _tlv(data, pos, end)                     # serialNumber
    _, _, pos = _tlv(data, pos, end)                     # signature
    _, _, pos = _tlv(data, pos, end)                     # issuer
    valid_start, pos = _expect(data, pos, end, SEQUENCE, 'validity')
    tag, time_start, time_stop = _tlv(data, valid_start, pos)
    not_before = _time(data[time_start:time_stop], tag)
    tag, time_start, time_stop = _tlv(data, time_stop, pos)
    not_after = _time(data[time_start:time_stop], tag)
    subject_start, pos = _expect(data, pos, end, SEQUENCE, 'subject')
    subject = _name(data, subject_start, pos)
    _, _, pos = _tlv(data, pos, end)                     # subjectPublicKeyInfo
    names = ()
    while pos < end:
        tag, inner, pos = _tlv(data, pos, end)
        if tag != 0xa3:                                  # [1], [2]: unique IDs
            continue
        extensions, extensions_end = _expect(data, inner, pos, SEQUENCE, 'extensions')
        while extensions < extensions_end:
            field, field_end = _expect(data, extensions, extensions_end, SEQUENCE, 'extension')
            extensions = field_end
            oid_start, oid_stop = _expect(data, field, field_end, OID, 'extension id')
            if _oid(data[oid_start:oid_stop]) != SUBJECT_ALT_NAME:
                continue
            tag, value_start, value_stop = _tlv(data, oid_stop, field_end)
            if tag == BOOLEAN:                           # critical
                tag, value_start, value_stop = _tlv(data, value_stop, field_end)
            if tag == OCTETS:
                names = _alt_names(data, value_start, value_stop)
    digest = hashlib.sha256(der).hexdigest().upper()
    fingerprint = ':'.join(digest[i:i + 2] for i in range(0, len(digest), 2))
    return CertificateFacts(subject, names, not_before, not_after, fingerprint)


def certificate_facts(path):
    """The facts of the first certificate in the PEM file ``path``; TLSConfigError
    naming the file when it cannot be read or holds no certificate."""
    text = _read_pem(path, 'certificate file')
    begin = text.find(CERT_BEGIN)
    end = text.find(CERT_END, begin)
    if begin < 0 or end < 0:
        found = ' (it holds a private key)' if 'PRIVATE KEY-----' in text else ''
        raise TLSConfigError(f'certificate file {path}: holds no PEM certificate{found}')
    try:
        der = ssl.PEM_cert_to_DER_cert(text[begin:end + len(CERT_END)])
        return parse_certificate(der)
    except (ValueError, UnicodeError) as exc:     # binascii.Error and DERError are ValueErrors
        raise TLSConfigError(f'certificate file {path}: not a readable certificate'
                             f' ({exc})') from None


# --- the record layer ---------------------------------------------------------

class RecordTally:
    """What one direction's records were, since the tally began, as RecordScanner.take
    said it: how many and how many bytes of each content type, the first RECORDED_CHUNKS
    records as (type, version, length) as their headers said them (numbers: named when
    shown, by ``type_name`` and ``version_text``), and the handshake messages seen in
    clear.  A snapshot: ``facts`` is take's tuple, the rest its parts to read."""

    __slots__ = ('facts', 'records', 'bytes', 'types', 'sizes', 'handshake', 'malformed')

    def __init__(self, facts):
        self.facts = facts
        self.records, self.bytes, types, sizes, handshake, self.malformed = facts
        self.types = dict(types)        # content type -> records
        self.sizes = list(sizes)        # (content type, version, length), the first few
        self.handshake = list(handshake)    # handshake message names, the first few

    def as_dict(self):
        return {'records': self.records, 'bytes': self.bytes,
                'types': {type_name(kind): n for kind, n in self.types.items()},
                'sizes': [[type_name(kind), version_text(version), length]
                          for kind, version, length in self.sizes],
                'more': self.records - len(self.sizes), 'handshake': list(self.handshake),
                **({'malformed': self.malformed} if self.malformed else {})}

    def __repr__(self):
        return f'RecordTally({self.as_dict()})'


def type_name(kind):
    """A record's content type as RFC 8446 names it."""
    return CONTENT_TYPES.get(kind) or str(kind)


def version_text(version):
    """A record header's legacy_record_version as 'major.minor' (0x0303: '3.3')."""
    return f'{version >> 8}.{version & 0xff}'


# A tally's content types when they are n application_data records and nothing else
# (every exchange after a handshake, n small): made once, not per exchange.
DATA_KINDS = ((),) + tuple(((APPLICATION_DATA, n),) for n in range(1, 9))


# The facts of a tally that is one whole application_data record, by its size (the
# request or answer that repeats, each exchange): made once per size, shared by
# every record that has them; and the header such a record begins with.  At most
# ONE_FACTS_KEPT sizes of each (a few hundred bytes a size) are kept; past that the
# cache begins again.
ONE_FACTS_KEPT = 64
_ONE_FACTS = {}
_ONE_HEADERS = {}


def _one_header(size):
    """The header of one whole application_data record of ``size`` bytes (its header
    included), made and kept in _ONE_HEADERS; None for a size no record has."""
    if not RECORD_HEADER_SIZE <= size <= _LARGEST_RECORD:
        return None
    if len(_ONE_HEADERS) >= ONE_FACTS_KEPT:
        _ONE_HEADERS.clear()
    header = _ONE_HEADERS[size] = RECORD_HEADER.pack(APPLICATION_DATA, TLS_1_2,
                                                      size - RECORD_HEADER_SIZE)
    return header


def _one_facts(size):
    """RecordScanner.take's facts for one whole application_data record of ``size`` bytes
    (its header included), made and kept in _ONE_FACTS."""
    facts = (1, size, DATA_KINDS[1], ((APPLICATION_DATA, TLS_1_2, size - RECORD_HEADER_SIZE),),
             (), None)
    if len(_ONE_FACTS) >= ONE_FACTS_KEPT:
        _ONE_FACTS.clear()
    _ONE_FACTS[size] = facts
    return facts


class RecordScanner:
    """One direction's TLS records, from its raw bytes fed in any pieces.

    Push-style, as waitress's receivers are (the bytes belong to OpenSSL; the
    scanner only watches them go by): it keeps the 5-byte header being read
    and how many payload bytes of the current record are left to skip.  Each
    piece costs one step per record header in it, never a copy of a payload.
    While a direction is in clear (before its change_cipher_spec: TLS 1.2's
    handshake, TLS 1.3's hellos) the handshake records' payloads are read the
    same way one level further down: a 4-byte header (type, a 3-byte length)
    and that many bytes, so each handshake message is named.

    The tally is kept here, as two ints and small lists reused for every exchange
    (``take`` makes it a tuple in one step): ``records``, ``bytes`` (headers
    included), ``sizes`` (the first records' headers), ``handshake`` (message
    names), ``malformed`` (why scanning stopped).  Records of the usual kind,
    application_data (every one after a handshake), are counted in ``records``
    alone; ``_types`` counts the others, with the application_data before them
    folded in first (``_fold``), so that the content types keep the order in which
    they came.  A tally that is one whole application_data record and nothing else
    (each direction of an exchange of a small request and a small answer) is kept as
    that record's size alone (``_one``), and taken as facts made once per size
    (``_one_facts``): no counts, list or tuples touched per exchange.
    """

    __slots__ = ('records', 'bytes', 'sizes', 'handshake', 'malformed', '_types', '_header',
                 '_have', '_left', '_type', '_clear', '_hs_header', '_hs_have', '_hs_left',
                 '_one', '_rest', '_size_seen', '_header_seen')

    def __init__(self):
        self.records = 0
        self.bytes = 0
        self.sizes = []
        self.handshake = []
        self.malformed = None
        self._types = {}            # content type -> records, once any but application_data
        self._header = bytearray(RECORD_HEADER.size)
        self._have = 0              # header bytes read of the next record
        self._left = 0              # payload bytes of the current record not yet seen
        self._type = 0
        self._clear = True          # no change_cipher_spec yet: handshake payloads readable
        self._hs_header = bytearray(HANDSHAKE_HEADER_SIZE)
        self._hs_have = 0
        self._hs_left = 0
        # The tally's one whole application_data record, by its size (0: the tally is
        # in the counts above); ``_rest``: the tally is empty and the stream at a record
        # boundary, scanning not stopped, so a piece that is one whole record may
        # become ``_one``.  Never both: ``_rest`` implies ``_one`` is 0.
        self._one = 0
        self._rest = False       # (the handshake comes first: its records are counted)
        # The header of one whole record of the size last looked at that way (None: no
        # record has that size): each direction's pieces are mostly of one size, so a
        # piece asks no dict for it.
        self._size_seen = 0
        self._header_seen = None

    @property
    def tally(self):
        """The tally so far, as a RecordTally (it goes on)."""
        return RecordTally(self.take(restart=False))

    def cut(self):
        """The tally so far as a RecordTally, and a fresh one from here."""
        return RecordTally(self.take())

    def take(self, restart=True):
        """The tally in one step, as numbers: (records, bytes, (content type, count)
        pairs in the order they came, the first records' (content type, version,
        length), the handshake messages seen in clear, why scanning stopped or None).
        ``restart``: and begin it afresh, in place.  A stopped scanner stays stopped."""
        one = self._one
        if one:
            # One whole record and nothing else: the usual exchange's, each direction.
            if restart:
                self._one = 0
                self._rest = True
            facts = _ONE_FACTS.get(one)
            return facts if facts is not None else _one_facts(one)
        records, sizes, handshake, types = self.records, self.sizes, self.handshake, self._types
        if not handshake and not types:
            # application_data alone, or nothing: every exchange after a handshake.
            facts = (records, self.bytes,
                     DATA_KINDS[records] if records < len(DATA_KINDS)
                     else ((APPLICATION_DATA, records),),
                     tuple(sizes), (), self.malformed)
            if restart:
                if records:
                    self.records = self.bytes = 0
                    sizes.clear()
                self._rest = not self._left and not self._have and self.malformed is None
            return facts
        if types:
            self._fold()
            kinds = tuple(types.items())
        elif records < len(DATA_KINDS):
            kinds = DATA_KINDS[records]
        else:
            kinds = ((APPLICATION_DATA, records),)
        facts = (records, self.bytes, kinds, tuple(sizes), tuple(handshake), self.malformed)
        if restart:
            self.records = self.bytes = 0
            sizes.clear()
            types.clear()
            handshake.clear()
            self._rest = not self._left and not self._have and self.malformed is None
        return facts

    def partial(self):
        """Whether part of a record has come and not yet the rest."""
        return bool(self._have or self._left) and self.malformed is None

    def _fold(self):
        """Count the application_data records counted in ``records`` alone into ``_types``."""
        types = self._types
        unfolded = self.records - sum(types.values())
        if unfolded:
            types[APPLICATION_DATA] = types.get(APPLICATION_DATA, 0) + unfolded

    def feed(self, data):
        """Scan a piece of the stream (bytes or a memoryview); MalformedRecord on a
        header no peer may send, after which the scanner ignores what follows.

        The usual piece (every receive and send of a TLS connection after its
        handshake) is application_data records: here each costs one unpack of its
        header and a jump over its payload, with the counts added once per piece;
        a record that runs on into the next piece is left to skip there.  Anything
        else (a header cut between pieces, a handshake record in clear, an alert, a
        malformed header) goes the general way, ``_feed``."""
        size = len(data)
        if self._rest:
            # The tally empty, at a record boundary: a piece that is one whole record is
            # kept as its size alone (``_one``; a request, a small answer).
            self._rest = False
            # (Its first five bytes compared with the header made once per size: no
            # unpacking, no tuple per piece.)
            if size != self._size_seen:
                self._size_seen = size
                self._header_seen = _ONE_HEADERS.get(size) or _one_header(size)
            if data[:RECORD_HEADER_SIZE] == self._header_seen:
                self._one = size
                return
        elif self._one:
            self._unfold()
        elif self.malformed:
            return
        pos = self._left
        if not pos and not self._have and size >= RECORD_HEADER_SIZE:
            # The most usual piece of all: one whole record (a request, a small answer),
            # which leaves nothing to skip in the next piece.
            header = _unpack_header(data, 0)
            # (All three fields in one comparison of tuples.)
            if (header == (APPLICATION_DATA, TLS_1_2, size - RECORD_HEADER_SIZE)
                    and size <= MAX_RECORD_LENGTH + RECORD_HEADER_SIZE):
                self.records = records = self.records + 1
                self.bytes += size
                if records <= RECORDED_CHUNKS:      # sizes holds the first records'
                    self.sizes.append(header)
                return
        if pos:
            if self._clear and self._type == HANDSHAKE:
                return self._feed(data, 0)      # its messages are read too
            if pos >= size:                 # all of it inside the current record
                self._left = pos - size
                return
        elif self._have:
            return self._feed(data, 0)
        start, count, sizes = pos, 0, self.sizes
        room = RECORDED_CHUNKS - len(sizes)
        unpack = _unpack_header
        while pos + RECORD_HEADER_SIZE <= size:
            header = unpack(data, pos)
            kind, version, length = header
            if kind != APPLICATION_DATA or version != TLS_1_2 or length > MAX_RECORD_LENGTH:
                break
            if count < room:
                sizes.append(header)
            count += 1
            pos += RECORD_HEADER_SIZE + length
        if count:
            self.records += count
            self.bytes += pos - start
            self._type = APPLICATION_DATA
        if pos >= size:
            self._left = pos - size
        else:
            self._left = 0
            self._feed(data, pos)

    def _unfold(self):
        """A second piece came after a tally's one whole record (``_one``): count that
        record as any other, and go on counting."""
        one, self._one = self._one, 0
        self.records, self.bytes, self._type = 1, one, APPLICATION_DATA
        self.sizes.append((APPLICATION_DATA, TLS_1_2, one - RECORD_HEADER_SIZE))

    def _feed(self, data, pos):
        """The general way from ``pos``: one step per header, any header, any cut."""
        types = self._types
        if self.records:
            self._fold()            # the content types in the order they came
        size = len(data)
        left = self._left
        while pos < size:
            if left:
                end = pos + left if pos + left < size else size
                if self._clear and self._type == HANDSHAKE:
                    self._handshake(data, pos, end)
                left -= end - pos
                pos = end
                continue
            if not self._have and pos + RECORD_HEADER.size <= size:
                kind, version, length = RECORD_HEADER.unpack_from(data, pos)     # no copy
                pos += RECORD_HEADER.size
            else:
                pos = self._header_piece(data, pos, size)
                if self._have:
                    break                   # the header goes on in the next piece
                kind, version, length = RECORD_HEADER.unpack_from(self._header)
            if kind != APPLICATION_DATA or version != TLS_1_2 or length > MAX_RECORD_LENGTH:
                self._unusual(kind, version, length)
            self.records += 1
            self.bytes += RECORD_HEADER.size + length
            types[kind] = types.get(kind, 0) + 1
            if len(self.sizes) < RECORDED_CHUNKS:
                self.sizes.append((kind, version, length))
            self._type = kind
            left = length
        self._left = left

    def _header_piece(self, data, pos, size):
        """A header split across pieces: keep its bytes until all five are here
        (``_have`` is 0 again once they are)."""
        have = self._have
        take = min(RECORD_HEADER.size - have, size - pos)
        self._header[have:have + take] = data[pos:pos + take]
        self._have = (have + take) % RECORD_HEADER.size
        return pos + take

    def _unusual(self, kind, version, length):
        """A header that is not TLS 1.2/1.3 application data: malformed (raises), or a
        handshake's record (change_cipher_spec ends the clear text)."""
        if kind not in CONTENT_TYPES or length > MAX_RECORD_LENGTH or version >> 8 != 3:
            self.malformed = (f'record header type {kind}, version {version:#06x},'
                              f' length {length}')
            raise MalformedRecord(f'not a TLS record: {self.malformed}')
        if kind == CHANGE_CIPHER_SPEC:
            self._clear = False

    def _handshake(self, data, pos, end):
        """Handshake messages within a clear handshake record's payload bytes."""
        while pos < end:
            if self._hs_left:
                take = min(self._hs_left, end - pos)
                self._hs_left -= take
                pos += take
                continue
            have = self._hs_have
            take = min(HANDSHAKE_HEADER_SIZE - have, end - pos)
            self._hs_header[have:have + take] = data[pos:pos + take]
            pos += take
            self._hs_have = have = have + take
            if have < HANDSHAKE_HEADER_SIZE:
                return
            self._hs_have = 0
            kind = self._hs_header[0]
            self._hs_left = int.from_bytes(self._hs_header[1:], 'big')
            handshake = self.handshake
            if len(handshake) < RECORDED_HANDSHAKE:
                handshake.append(HANDSHAKE_TYPES.get(kind, str(kind)))


# --- TLS over a plain socket --------------------------------------------------

class WantRead(BlockingIOError):
    """A non-blocking TLS connection must wait until its socket is readable."""


class WantWrite(BlockingIOError):
    """A non-blocking TLS connection must wait until its socket is writable."""


def _want_read():
    return WantRead(errno.EAGAIN, 'TLS: waiting for the peer\'s bytes')


def _want_write():
    return WantWrite(errno.EAGAIN, 'TLS: waiting for the socket to take our bytes')


class TLSConnection:
    """TLS over a plain socket, with the socket's own interface and semantics.

    An ``ssl.SSLObject`` reads from one memory BIO and writes to another; this
    object moves the ciphertext between them and the socket (through a
    RecordScanner each way when ``scan``), so the wire's bytes are visible.

    ``transport`` is what the ciphertext goes through: the socket itself, or
    (``use``) an object with its ``recv_into``/``sendall`` such as the pool's
    TimedSocket.  Non-blocking, every call keeps a plain socket's contract:
    BlockingIOError (WantRead / WantWrite, which say which event to wait for)
    when it must wait, 0 / b'' on a clean close, OSError on a reset.  A send
    that must wait after its bytes were encrypted raises WantWrite and keeps
    the ciphertext; the caller asks again with the same bytes (as it would on
    a plain socket, and as OpenSSL's SSL_write requires) and is then told
    they went.  ``pending()`` is the plaintext already decrypted: a loop must
    not wait for the socket while there is some.
    """

    # The handshake's (received, sent) tallies, cut by do_handshake when scanning:
    # kept for whoever shows them (records.tls_facts takes them with the connection's
    # first exchange).
    handshake = None
    # (version, ALPN protocol), asked of OpenSSL once the handshake is done: every
    # exchange's record says them.
    negotiated = None

    def __init__(self, sock, context, server_side, server_hostname=None, scan=False):
        self.sock = sock
        self._transport = sock
        self._blocking = sock.gettimeout() != 0.0
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                     server_hostname=server_hostname)
        # What reads, writes and pending go to on the hot paths: the C object behind
        # the SSLObject (its read, write and pending only call this one's, with the
        # same arguments and errors), one Python frame less each; the SSLObject
        # where an interpreter has no such attribute.
        self._sslobj = getattr(self._ssl, '_sslobj', self._ssl)
        self.received = RecordScanner() if scan else None
        self.sent = RecordScanner() if scan else None
        # The scratch a receive fills with ciphertext and send_file with a file's
        # bytes (either is copied into a BIO at once): one the event loop shares
        # among its connections (``use``), or, on a pool thread, one of its own
        # taken at the first receive or file.
        self._buffer = None
        # Ciphertext the socket has not taken yet, in order: what a send could not
        # send, and what ``seal`` encrypted for the next ``flush``.  Whatever OpenSSL
        # writes later (an alert, a close_notify) goes after it.
        self._unsent = []
        self._sealed = 0            # its bytes
        self._owed = 0              # plaintext encrypted into _unsent, not yet reported sent
        # Scanning, do_handshake's ciphertext is held until OpenSSL has taken it:
        # what it has not taken when the handshake ends (TLS 1.3 lets a client send
        # its request with its Finished) is the first exchange's, not the handshake's.
        self._held = None
        self.first = b''            # the connection's first bytes (up to 5): TLS or not?
        self.handed = 0             # plaintext bytes sent (as a TimedSocket's ``handed``)
        # Whether the last read filled the buffer it was given: only then may OpenSSL
        # hold plaintext.  It returns one record's at most, and a read that returned
        # less took all that was left of its record (SSL_read(3): what "was not
        # retrieved at the last read call" is what stays buffered).  So the usual
        # receive, a request smaller than the reader's buffer, asks nothing of
        # SSL_pending (a release and a take of the interpreter lock, each time).
        self._filled = False
        # Whether nothing is held to read, neither ciphertext in the incoming BIO nor
        # plaintext in OpenSSL, as known without asking: a read returned less than
        # asked and the BIO was empty then; every receive into the BIO clears it.  The
        # usual keep-alive request leaves it set, and the next receive and the loop's
        # look at ``pending`` read no BIO attribute (a C getter's call each); the loop
        # reads it before it asks ``pending`` (True: pending() is 0).
        self.drained = False
        # Whether OpenSSL may have written to the outgoing BIO by itself since it was
        # last read (an alert, a session ticket, a KeyUpdate's answer): set before every
        # call into it that may (a read, a handshake step, a close, a send's write),
        # cleared when ``seal`` has taken what it held or ``flush`` found it empty.  The
        # usual exchange, a read and then an answer sealed, asks ``_outgoing.pending``
        # (a C getter's call) of neither the next receive nor the flush.
        self._wrote = True
        # Whether a read met close_notify after the bytes it returned (_read_held): the
        # next read says the end without the socket, and ``pending`` says it is there
        # to read, so that no one waits on a socket the client may leave open for ours.
        self._ended = False
        # Whether the TCP stream ended without the peer's close_notify (a client's
        # context; a server's reads that end as a clean one): anyone on the path can end
        # TCP, only the peer can send close_notify.
        self.ragged = False
        # What OpenSSL's memory BIOs keep for the connection's life (a BIO never
        # shrinks its buffer), counted once one was given more than TLS_IDLE_LEAN:
        # the largest receive, the largest ciphertext sealed at once, and ``grown``,
        # their sum (0 while both are lean), which the event loop bounds for its
        # idle connections (limits.TLS_IDLE_BUDGET).
        self._received_most = self._sealed_most = self.grown = 0
        # (received size, sent size, facts) of the last usual exchange (exchange_facts;
        # no sizes yet: none matches).
        self._last_facts = (0, 0, None)
        self.closed = False

    # -- the socket's face ------------------------------------------------------

    def fileno(self):
        return self.sock.fileno()

    def setblocking(self, flag):
        self.sock.setblocking(flag)
        self._blocking = bool(flag)

    def settimeout(self, timeout):
        self.sock.settimeout(timeout)
        self._blocking = timeout != 0.0

    def gettimeout(self):
        return self.sock.gettimeout()

    def getpeername(self):
        return self.sock.getpeername()

    def use(self, transport, buffer=None):
        """Move ciphertext through ``transport`` (recv_into, sendall) from now on;
        ``use(conn.sock)`` goes back to the socket itself.

        ``buffer``: the scratch, a writable memoryview shared by every connection
        one thread serves (an idle connection then holds none); None: one of its
        own, taken at the next receive or send_file.
        """
        self._transport = transport
        self._buffer = buffer

    def selected_alpn_protocol(self):
        return self._ssl.selected_alpn_protocol()

    def version(self):
        return self._ssl.version()

    def cipher(self):
        return self._ssl.cipher()

    def getpeercert(self, binary_form=False):
        return self._ssl.getpeercert(binary_form)

    def pending(self):
        """Bytes that may be readable without the socket: plaintext decrypted and not
        yet read (only ever after a read that filled its buffer: ``_filled``), and
        ciphertext received and not yet decrypted (a receive takes
        several records; OpenSSL decrypts one per read).  A loop must try a read
        before it waits for the socket while this is not 0; the read may still
        raise WantRead, when what is held is part of a record."""
        if self.drained:
            return 0
        return ((self._sslobj.pending() if self._filled else 0) + self._incoming.pending
                + self._ended)

    def receiving(self):
        """Whether part of a record has come and not yet the rest: over TLS, the first
        bytes of a head (known only when scanning, as the event loop does)."""
        return self.received is not None and self.received.partial()

    @property
    def unsent(self):
        """Ciphertext bytes held for the socket."""
        return self._sealed

    def records(self):
        """(received, sent) tallies since the last call (or since do_handshake cut the
        handshake's into ``handshake``), or None when not scanning: each HTTP
        exchange's."""
        if self.received is None:
            return None
        return self.received.cut(), self.sent.cut()

    def exchange_facts(self, final=True):
        """records.tls_facts of this connection (that function says what they are and
        when they are cut); None when not scanning.

        The usual exchange after the first (a request and its answer each one whole
        application_data record, the handshake shown already) takes both tallies here
        in one step: the facts are those of the connection's last such exchange when
        the sizes are the same (a keep-alive client asking again), one tuple kept per
        connection, or made from the facts shared per size (_one_facts)."""
        received = self.received
        if received is None:
            return None
        handshake = self.handshake
        negotiated = self.negotiated
        if handshake is None and final and negotiated is not None:
            sent = self.sent
            one_in = received._one
            one_out = sent._one
            if one_in and one_out:
                # Both tallies taken and begun afresh, as RecordScanner.take does.
                received._one = sent._one = 0
                received._rest = sent._rest = True
                last = self._last_facts
                if last[0] == one_in and last[1] == one_out:
                    return last[2]
                facts = (negotiated[0], negotiated[1], None,
                         _ONE_FACTS.get(one_in) or _one_facts(one_in),
                         _ONE_FACTS.get(one_out) or _one_facts(one_out))
                self._last_facts = (one_in, one_out, facts)
                return facts
        elif handshake is not None:
            if final:
                self.handshake = None        # taken: the next exchanges show none
            handshake = (handshake[0].facts, handshake[1].facts)
        # Each direction's tally made its tuple in one step (RecordScanner.take), and
        # begun afresh in place when final: no new tallies or lists per exchange.
        version, alpn = negotiated or (self.version(), self.selected_alpn_protocol())
        return version, alpn, handshake, received.take(final), self.sent.take(final)

    # -- moving ciphertext ------------------------------------------------------

    def flush(self):
        """Send the ciphertext held and what OpenSSL wrote: True once none is left,
        False when a non-blocking socket cannot take it all (the rest is kept, in
        order, for the next call).  A blocking socket takes it all.

        Reads may make alerts and session tickets: they go with this, never worth a
        wait of their own.  One call for the loop's usual flush: one record sealed, one
        send that takes it."""
        if self._wrote:
            if self._outgoing.pending:
                self.seal(())
            else:
                self._wrote = False
        unsent = self._unsent
        if not unsent:
            return True
        transport = self._transport
        if self._blocking:
            while unsent:
                transport.sendall(unsent[0])
                self._sealed -= len(unsent.pop(0))
            return True
        while unsent:
            try:
                sent = (transport.send(unsent[0]) if len(unsent) == 1
                        else transport.sendmsg(unsent[:TLS_IOV_MAX]))
            except BlockingIOError:
                return False
            self._sealed -= sent
            if not self._sealed:
                unsent.clear()          # the usual case: the kernel took it all
                return True
            while sent >= len(unsent[0]):
                sent -= len(unsent.pop(0))
            if sent:
                unsent[0] = memoryview(unsent[0])[sent:]
        return True

    def _flush(self):
        """``flush``, raising WantWrite when the socket cannot take it all."""
        if not self.flush():
            raise _want_write()

    def _receive(self):
        """One receive of ciphertext into the incoming BIO; False at the socket's EOF."""
        buffer = self._buffer
        if buffer is None:
            buffer = self._buffer = memoryview(bytearray(TLS_RECEIVE_SIZE))
        try:
            got = self._transport.recv_into(buffer)
        except BlockingIOError:
            raise _want_read() from None
        self.drained = False               # the BIO is given bytes, or its end
        if not got:
            self._incoming.write_eof()
            return False
        if got > TLS_IDLE_LEAN:
            # The incoming BIO grows to hold it (and less than a record besides: a
            # receive comes only when OpenSSL cannot read a record from what it has).
            self._grew(got, 0)
        piece = buffer[:got]
        received = self.received
        if self.negotiated is None:         # the handshake's: its first bytes, held
            if len(self.first) < RECORD_HEADER_SIZE:
                self.first += bytes(piece[:RECORD_HEADER_SIZE - len(self.first)])
            if self._held is not None:
                self._held += piece
            elif received is not None:
                self._scan(received, piece)
        elif received is not None:          # every later receive: scanned in place
            try:
                received.feed(piece)
            except MalformedRecord:
                pass        # the tally says so; OpenSSL decides what becomes of the connection
        self._incoming.write(piece)
        return True

    def _grew(self, received, sealed):
        """A memory BIO was given more than TLS_IDLE_LEAN: ``grown`` says what they keep."""
        self._received_most = max(self._received_most, received)
        self._sealed_most = max(self._sealed_most, sealed)
        self.grown = self._received_most + self._sealed_most

    @staticmethod
    def _scan(scanner, piece):
        try:
            scanner.feed(piece)
        except MalformedRecord:
            pass        # the tally says so; OpenSSL decides what becomes of the connection

    # -- the handshake ----------------------------------------------------------

    def do_handshake(self):
        """Complete the handshake; non-blocking, WantRead/WantWrite until it is done.

        Ask again (once the socket is ready for what it said) until it returns.
        An ssl.SSLError is the peer's failure (plain HTTP: see ``plain_http``),
        ssl.SSLEOFError or ConnectionResetError its going away mid-handshake.
        """
        if self._held is None and self.received is not None and self.handshake is None:
            self._held = bytearray()
        while True:
            self._flush()
            try:
                self._wrote = True
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                self._scan_taken()
                self._receive()
                continue
            except ssl.SSLError:
                self.flush()          # the alert saying why, if the socket takes it
                if self._held is not None:     # what came, for whoever looks (plain HTTP?)
                    held, self._held = self._held, None
                    self._scan(self.received, held)
                raise
            self._flush()                  # the last flight (TLS 1.3: session tickets)
            self.negotiated = (self._ssl.version(), self._ssl.selected_alpn_protocol())
            if self.received is not None and self.handshake is None:
                self._scan_taken()
                self.handshake = self.records()
                held, self._held = self._held, None
                self._scan(self.received, held)     # the first exchange's early records
            return

    def _scan_taken(self):
        """Scan the held ciphertext OpenSSL has taken from the incoming BIO, and let it
        go (what is held is then at most the BIO's own: one receive)."""
        held = self._held
        if held:
            taken = len(held) - self._incoming.pending
            self._scan(self.received, held[:taken])      # a copy: a few KiB, once
            del held[:taken]

    def plain_http(self):
        """Whether the peer's first bytes were not a TLS record (plain HTTP, say)."""
        return bool(self.first) and not looks_like_tls(self.first)

    # -- reading ----------------------------------------------------------------

    def recv_into(self, buffer, nbytes=0):
        size = nbytes or len(buffer)
        if not size:
            return 0
        sslobj, incoming = self._sslobj, self._incoming
        if self.drained or not (incoming.pending or self._ended
                                or self._filled and sslobj.pending()):
            # Nothing held: a read would only fail (an exception, a few microseconds)
            # and send us to the socket, so go there first.
            if self._unsent or self._wrote and self._outgoing.pending:
                self.flush()
            self._receive()       # at the socket's EOF, the read below says what it was
        self._wrote = True        # (a read may make OpenSSL write: see _wrote)
        while True:
            try:
                got = sslobj.read(size, buffer)
                if got < size:
                    if incoming.pending:
                        got = self._read_held(buffer, got, size)
                    elif got:
                        self.drained = True    # its record read to its end, none after it
                    else:
                        self._ended = True     # close_notify: the end, at every read
                self._filled = got == size      # (and the last read with it: _read_held)
                return got
            except ssl.SSLWantReadError:
                if not self._unsent:
                    self.flush()
                # At the socket's EOF the BIO is told, and OpenSSL decides: a
                # clean close or a truncation (below).
                self._receive()
            except ssl.SSLZeroReturnError:
                # close_notify: a clean end (and, for a server's context, the TCP
                # stream's end without one: OP_IGNORE_UNEXPECTED_EOF, server_context)
                return 0
            except ssl.SSLEOFError:
                # The TCP stream ended without close_notify (a client's context).  As
                # SSLSocket's suppress_ragged_eofs: an end, as on a plain socket; a
                # message cut short shows as one to the framing readers above.  Where
                # the close itself is the message (the block client's word that its
                # stream was kept), ``ragged`` says it was not the peer's.
                self.ragged = True
                return 0

    def _read_held(self, buffer, got, size):
        """After a read of ``got`` bytes: more of the records already received, up to
        ``size`` (OpenSSL decrypts one record a read; a receive takes several, so a
        64 KiB read of a body is one call, not four).  Stops at a record not all here,
        or at close_notify (the next call meets it again, and says 0)."""
        view = memoryview(buffer)
        read, incoming = self._sslobj.read, self._incoming   # (one lookup, not one a record)
        try:
            while got < size and incoming.pending:
                more = read(size - got, view[got:size])
                if not more:
                    # close_notify (ssl's read says 0 for it, while ours is not sent):
                    # the next read says it again, and ``pending`` that it is here.
                    self._ended = True
                    break
                got += more
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            self._ended = True
        return got

    def recv(self, size):
        buffer = bytearray(size)
        got = self.recv_into(buffer)
        del buffer[got:]
        return bytes(buffer)

    # -- writing ----------------------------------------------------------------

    def send(self, data, flags=0):
        """Encrypt and send up to TLS_SEND_SIZE bytes of ``data``; how many went."""
        return self.sendmsg((data,))

    def sendall(self, data, flags=0):
        view = memoryview(data).cast('B')
        sent = 0
        while sent < len(view):
            sent += self.sendmsg((view[sent:],))

    def sendmsg(self, buffers):
        """Send from several buffers, as socket.sendmsg: how many bytes of them went.

        Up to TLS_SEND_SIZE bytes of them are encrypted (small pieces joined into
        one record: _write) and go in one send: answers queued together leave
        together.
        """
        if self._owed:
            # Asked again after WantWrite: these bytes were encrypted then.
            self._flush()
            owed, self._owed = self._owed, 0
            self.handed += owed
            return owed
        self._flush()
        written = self._write(buffers)
        if written:
            try:
                self._flush()
            except BlockingIOError:
                self._owed = written
                raise
        self.handed += written
        return written

    def seal(self, buffers):
        """Encrypt all of ``buffers`` now and hold the ciphertext for ``flush``, after
        what OpenSSL wrote by itself (an alert, a session ticket: ``seal(())`` holds
        only that), counting its records; how many plaintext bytes that was.

        The event loop queues answers this way: their records cross the scanner
        (``records``) when the answer is queued, so each exchange's tally has its
        own response without a send per exchange, and the answers of one pass of the
        loop still leave together in one send.
        """
        # One write of them all: records as full as they can be, one for a head and
        # a small body.  (The loop bounds what it queues: limits.PIPELINE_QUEUE.)
        data = buffers[0] if len(buffers) == 1 else b''.join(buffers)
        size = len(data)
        if size:
            self._sslobj.write(data)      # a memory BIO takes all of it, and holds records
            self.handed += size
        elif not self._outgoing.pending:
            return 0
        data = self._outgoing.read()
        self._wrote = False               # all it held is taken
        sent = self.sent
        if sent is not None:
            try:
                sent.feed(data)
            except MalformedRecord:
                pass        # the tally says so (ours are never malformed)
        length = len(data)
        if length > TLS_IDLE_LEAN:        # what the outgoing BIO held at once
            self._grew(0, length)
        self._unsent.append(data)
        self._sealed += length
        return size

    def _write(self, buffers):
        """Encrypt up to TLS_SEND_SIZE bytes of ``buffers`` into the outgoing BIO; how
        many.  Pieces that fit in one record together are joined first: one record
        for a head and its small body, not one each."""
        self._wrote = True
        if len(buffers) > 1:
            total = 0
            for buffer in buffers:
                total += len(buffer)
                if total > TLS_JOIN_SIZE:
                    break
            else:
                return self._sslobj.write(b''.join(buffers)) if total else 0
        written = 0
        for buffer in buffers:
            view = memoryview(buffer).cast('B')
            if view:
                written += self._sslobj.write(view[:TLS_SEND_SIZE - written])
                if written >= TLS_SEND_SIZE:
                    break
        return written

    def send_file(self, fd, offset, count):
        """Up to ``count`` bytes of file ``fd`` from ``offset``, encrypted and sent, on a
        blocking connection (the pool's); how many went (0: the file ended).

        No sendfile (Python's ssl has no kernel TLS): one read of up to
        TLS_RECEIVE_SIZE into the scratch, then ``seal`` and ``flush`` for each
        TLS_SEND_SIZE of it, records counted as every send's are (each piece a
        whole number of full records, so as few as before).  Not ``send``'s way
        (sendmsg, _write, two _flush): nine Python calls fewer per 64 KiB, and a
        read four times as long (200 MiB from the page cache, the socket left
        out: 0.52-0.55 -> 0.49-0.51 s of CPU per GiB).
        """
        buffer = self._buffer
        if buffer is None:
            buffer = self._buffer = memoryview(bytearray(TLS_RECEIVE_SIZE))
        got = os.preadv(fd, [buffer[:count]], offset)
        view = buffer[:got]
        for start in range(0, got, TLS_SEND_SIZE):
            self.seal((view[start:start + TLS_SEND_SIZE],))
            self.flush()
        return got

    # -- the end ----------------------------------------------------------------

    def unwrap(self):
        """Send close_notify (best effort, never waiting) and return the plain socket."""
        self._wrote = True
        try:
            self._ssl.unwrap()
        except (ssl.SSLError, ValueError):
            pass
        self._try_flush_quietly()
        return self.sock

    def _try_flush_quietly(self):
        try:
            self.flush()
        except OSError:
            pass

    def close(self):
        """Close the socket (a close_notify is ``unwrap``'s business: a reset peer or a
        timeout should not cost a send)."""
        if not self.closed:
            self.closed = True
            self._buffer = self._held = None
            self._unsent, self._sealed = [], 0
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
