"""Integrity digests (RFC 9530): Content-Digest and Repr-Digest checked, made and asked for.

A digest field is a Structured Fields Dictionary (RFC 8941 section 3.2) of
hashing algorithms to Byte Sequences: ``sha-256=:base64:``.  Uploads check
the one a client sends (in the head, or in the trailers of a chunked body)
before the file becomes visible; GET of a file answers ``Want-Repr-Digest``
(section 4) with the digest of the whole file.

The parser reads only what these fields need and nothing else: one pass of
possessive patterns over a value whose length the head and trailer limits
already bound (tests/test_cost.py times it).  A value that is not a
dictionary is ignored whole, as RFC 8941 section 4.2 requires of every
Structured Field (it may not be loosened); a known algorithm whose value is
not a digest of the right size is an error, since the client asked for a
check we cannot do.
"""

import base64
import binascii
import hashlib
import hmac
import re

from .errors import HTTPError
from .limits import DIGEST_PIECE

# The algorithms computed here, in the order we prefer them: the two of RFC 9530
# section 5's registry that are not marked insecure.  Every other key is
# ignored, as section 2 lets a recipient ignore any digest.
ALGORITHMS = {'sha-256': hashlib.sha256, 'sha-512': hashlib.sha512}
DEFAULT = 'sha-256'          # computed for every upload (its JSON has the hex as well)
SIZES = {name: make().digest_size for name, make in ALGORITHMS.items()}

# -- Structured Fields (RFC 8941), as much as a Dictionary needs ----------------------
# key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )  (section 3.1.2)
KEY = r'[a-z*][a-z0-9_.*-]*+'
# bare-item (section 3.3): decimal, integer, string, token, byte sequence, boolean.
# Each alternative starts with characters the others cannot, and each run is
# possessive; the two numerals are bounded, so the group retries at most 12 digits.
BARE_ITEM = (r'(?>-?[0-9]{1,12}\.[0-9]{1,3}|-?[0-9]{1,15}'
             r'|"(?:[ !\x23-\x5b\x5d-\x7e]|\\[\\"])*+"'
             r"|[A-Za-z*][-!#$%&'*+.^_`|~0-9A-Za-z:/]*+"
             r'|:[A-Za-z0-9+/=]*+:'
             r'|\?[01])')
PARAMETERS = rf'(?:;[ ]*+{KEY}(?:={BARE_ITEM})?+)*+'
# inner-list = "(" *SP [ sf-item *( 1*SP sf-item ) *SP ] ")" parameters (section 3.1.1)
INNER_LIST = rf'\([ ]*+(?:{BARE_ITEM}{PARAMETERS}(?:[ ]++{BARE_ITEM}{PARAMETERS})*+[ ]*+)?+\)'
# dict-member = member-key ( parameters / ( "=" member-value ))   (section 3.2)
MEMBER = re.compile(rf'({KEY})(?:=({BARE_ITEM}|{INNER_LIST}))?+{PARAMETERS}')
# Between members: OWS "," OWS.
SEPARATOR = re.compile(r'[ \t]*+,[ \t]*+')


def parse_dictionary(text):
    """{key: the member's value as written ('' for a bare key)}, or None when ``text``
    is not a Dictionary (then the whole field is ignored, RFC 8941 section 4.2).

    A key given twice keeps its last value (section 4.2.2).
    """
    members = {}
    text = text.strip(' ')
    at, end = 0, len(text)
    while at < end:
        match = MEMBER.match(text, at)
        if match is None:
            return None
        members[match.group(1)] = match.group(2) or ''
        at = match.end()
        if at == end:
            break
        separator = SEPARATOR.match(text, at)
        if separator is None or separator.end() == end:
            return None                  # no comma, or a trailing one
        at = separator.end()
    return members


def byte_sequence(value):
    """The bytes of a Byte Sequence value (``:base64:``), or None for any other item.

    Padding is not insisted on, as RFC 8941 section 3.3.5 asks of parsers.
    """
    if len(value) < 2 or value[0] != ':' or value[-1] != ':':
        return None
    encoded = value[1:-1].rstrip('=')
    try:
        return base64.b64decode(encoded + '=' * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        return None


def serialize(digests):
    """``{algorithm: digest}`` as a Dictionary of Byte Sequences, in our order."""
    return ', '.join(f'{name}=:{base64.b64encode(digests[name]).decode()}:'
                     for name in ALGORITHMS if name in digests)


# -- what a request asks for -----------------------------------------------------------

# The fields that carry a digest of what a request sends.  For an upload both
# describe the same bytes: the content is the whole representation (no range,
# and a content coding is stored as sent, so it is part of both).
INTEGRITY_FIELDS = ('content-digest', 'repr-digest')


def field_value(fields, name):
    """The value of ``name`` in [(name, value)] (several lines joined), or None."""
    values = [value for field, value in fields if field.lower() == name]
    return ', '.join(values) if values else None


def announced_in_trailers(request, names=INTEGRITY_FIELDS):
    """Whether the head says one of ``names`` follows in the trailers (RFC 9110 section 6.6.2)."""
    return any(name in names for name in request.tokens('trailer'))


def upload_algorithms(request, names=INTEGRITY_FIELDS, always=(DEFAULT,)):
    """The algorithms to compute while an upload is received, in the same pass.

    ``always`` (sha-256 for a whole upload, whose JSON shows it); those of a
    digest field in ``names`` the head carries; every one when the head
    announces (with ``Trailer``) such a field in the trailers, where it may be.
    """
    wanted = set(always)
    for name in names:
        value = request.get(name)
        members = parse_dictionary(value) if value is not None else None
        if members:
            wanted.update(key for key in members if key in ALGORITHMS)
    if announced_in_trailers(request, names):
        wanted.update(ALGORITHMS)
    return wanted


def check_upload(request, computed, names=INTEGRITY_FIELDS, head=True):
    """Compare every digest field in ``names`` the client sent (in the head unless
    ``head`` is false, and in the trailers) with ``computed``.

    ``computed`` maps algorithm names to digests of the bytes received.
    Returns what was checked, e.g. ['content-digest sha-256'], [] when the
    client sent none we know.  A mismatch, a malformed digest of a known
    algorithm, or one we did not compute is HTTPError 400: nothing is stored.
    """
    sections = [(' trailer', request.body.trailers)]
    if head:
        sections.insert(0, ('', request.fields))
    return check_fields(sections, names, computed)


def named_algorithms(sections, names):
    """Our algorithms that a field in ``names`` names in ``sections`` (as check_fields)."""
    wanted = set()
    for _, fields in sections:
        for name in names:
            value = field_value(fields, name)
            members = parse_dictionary(value) if value is not None else None
            wanted.update(key for key in members or () if key in ALGORITHMS)
    return wanted


def check_fields(sections, names, computed, of='the content received'):
    """check_upload's comparison over ``sections``: [(where, [(name, value)])];
    ``of`` says in a mismatch's reason what ``computed`` is the digest of."""
    checked = []
    for where, fields in sections:
        for name in names:
            value = field_value(fields, name)
            members = parse_dictionary(value) if value is not None else None
            for algorithm, item in (members or {}).items():
                if algorithm not in ALGORITHMS:
                    continue
                what = f'{name}{where} {algorithm}'
                expected = digest_value(what, algorithm, item)
                if algorithm not in computed:
                    raise HTTPError(400, f'{what} cannot be checked: announce it with '
                                         f'"Trailer: {name}" to have {algorithm} computed')
                # Constant time: how much of a digest matched says nothing to the client.
                if not hmac.compare_digest(expected, computed[algorithm]):
                    raise HTTPError(400, f'{what} does not match {of}')
                checked.append(what)
    return checked


def digest_value(what, algorithm, item):
    """The digest a member's ``item`` holds; 400 naming ``what`` when it is not one of
    ``algorithm``'s size (the client asked for a check we cannot do)."""
    expected = byte_sequence(item)
    if expected is None or len(expected) != SIZES[algorithm]:
        raise HTTPError(400, f'{what} is not a {SIZES[algorithm]}-byte Byte Sequence (:base64:)')
    return expected


def to_keep(request, name):
    """The digests of the known algorithms in the head's field ``name``, checked for
    form and serialized again (at most a few hundred characters whatever was sent),
    for a resumable upload to check once it is complete; None when there are none.
    400 for a known algorithm whose value is not a digest of its size."""
    value = request.get(name)
    members = parse_dictionary(value) if value is not None else None
    kept = {}
    for algorithm, item in (members or {}).items():
        if algorithm in ALGORITHMS:
            kept[algorithm] = digest_value(f'{name} {algorithm}', algorithm, item)
    return serialize(kept) if kept else None


def file_digests(path, algorithms):
    """{algorithm: digest} of the file at ``path``, every algorithm in one pass."""
    hashes = {name: ALGORITHMS[name]() for name in algorithms}
    buffer = bytearray(DIGEST_PIECE)
    view = memoryview(buffer)
    with open(path, 'rb', buffering=0) as file:
        while True:
            got = file.readinto(buffer)
            if not got:
                break
            for one in hashes.values():
                one.update(view[:got])
    return {name: one.digest() for name, one in hashes.items()}


# Want-Repr-Digest preferences are Integers from 0 ("not acceptable") to 10
# (RFC 9530 section 4).
MAX_PREFERENCE = 10


def wanted_algorithm(value):
    """The algorithm to answer a ``Want-*-Digest`` value with, or None for none.

    The highest preference among ours that the client did not mark 0; ours it
    did not name come after those it named (RFC 9530 appendix C.2: a server
    may answer with an algorithm the client did not ask for); ties go to our
    order.  A value that is not a Dictionary of Integers 0 to 10 is ignored.
    """
    members = parse_dictionary(value)
    if members is None:
        return None
    ranked = []
    for order, name in enumerate(ALGORITHMS):
        item = members.get(name)
        if item is None:
            ranked.append((0, -order, name))
            continue
        if not item.isdigit() or int(item) > MAX_PREFERENCE:
            return None
        if int(item):
            ranked.append((int(item), -order, name))
    return max(ranked)[2] if ranked else None


def digest_of(algorithm, data):
    return ALGORITHMS[algorithm](data).digest()
