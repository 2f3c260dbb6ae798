"""The grammar of HTTP/1.1 messages (RFC 9110 section 5.6, RFC 9112 sections 2, 3, 5, 7).

Every pattern that is applied to a client's bytes lives here, beside the ABNF
it came from, and so do the byte strings that delimit a message: CRLF, the
blank line that ends a head, the last chunk.  tests/test_cost.py times each.
"""

import re

from .limits import MAX_CHUNK_SIZE_DIGITS

CRLF = b'\r\n'
# The last chunk with an empty trailer section: the end of a chunked body (section 7.1).
LAST_CHUNK = b'0\r\n\r\n'
HEAD_END = b'\r\n\r\n'

# Methods this server knows (RFC 9110 section 9).  Anything else is 501.
KNOWN_METHODS = frozenset(
    ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'])


# -- grammar (RFC 9110 section 5.6, RFC 9112 sections 3 and 5) -----------------
# Matched on the head decoded as Latin-1, so every byte is one character.
#
# Every pattern here runs on client bytes, so each is written to take time
# linear in its input: Python's re backtracks, and two runs that can match the
# same characters (optional whitespace before and after an optional value, or
# an outer repetition that can retry its earlier rounds) make a failed match
# try every way of splitting them, polynomial or exponential in the length.
# Possessive quantifiers (*+, ++, ?+) and atomic groups (?>...) give back
# nothing once matched; each is used only where giving back could never have
# helped (the next character cannot be one the run takes), so the grammar is
# unchanged.  Digits are [0-9]: in a str pattern \d is any script's digit.

# token = 1*tchar (RFC 9110 section 5.6.2)
TOKEN = r"[-!#$%&'*+.^_`|~0-9A-Za-z]++"

# request-line = method SP request-target SP HTTP-version (RFC 9112 section 3).
# Single spaces only: section 3 lets a server split on other whitespace, and we
# choose not to, since lenient splitting is how request smuggling starts.  The
# target is checked loosely here, as visible ASCII (VCHAR): its finer RFC 3986
# grammar is only a SHOULD for recipients (section 3.2), and real clients send
# characters such as | and {} unescaped.
REQUEST_LINE = re.compile(rf'({TOKEN}) ([\x21-\x7e]++) (HTTP/[0-9]\.[0-9])')
HTTP_VERSION = re.compile(r'HTTP/[0-9]\.[0-9]')

# field-line = field-name ":" OWS field-value OWS (RFC 9112 section 5)
# field-value = *field-content; field-content = field-vchar
#               [ 1*( SP / HTAB / field-vchar ) field-vchar ] (RFC 9110 section 5.5)
# No whitespace before the colon (section 5.1: a server MUST reject it with
# 400).  field-vchar is VCHAR or obs-text; CR, LF and NUL MUST be rejected
# or replaced (RFC 9110 section 5.5) and we reject them, along with the other
# control characters, which that section lets a recipient refuse.
# The leading OWS is possessive (a value starts with a field-vchar, never with
# whitespace), the value is atomic (it gives back its trailing whitespace once,
# inside the group, and is not retried shorter) and the trailing OWS is
# possessive: a line is matched one way, whatever follows it.
FIELD = (rf'({TOKEN}):[ \t]*+'
         r'((?>[\x21-\x7e\x80-\xff](?:[ \t\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?+)'
         r'[ \t]*+')
FIELD_LINE = re.compile(FIELD)
# A field name alone: what a handler gives us to send as a trailer is checked
# (as field-name, then as a whole FIELD_LINE) before it goes out.
FIELD_NAME = re.compile(TOKEN)
# The same grammar for a whole field section after the request line: one
# fullmatch checks every line in C, one findall takes them apart.  The
# repetition is possessive: a line that fails does not make it retry the
# lines before.
FIELD_SECTION = re.compile(rf'(?:\r\n{FIELD})*+')
FIELD_LINES = re.compile(rf'\r\n{FIELD}')

# Host = uri-host [ ":" port ] (RFC 9110 section 7.2): a reg-name or an IPv4
# address, or an IPv6 literal in brackets.
HOST = re.compile(r"(?:[-A-Za-z0-9._~%!$&'()*+,;=]*+|\[[0-9A-Fa-f:.]++\])(?::[0-9]*+)?+")

# chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF (RFC 9112 section 7.1)
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
# The extensions are bounded by MAX_CHUNK_LINE and ignored, as section 7.1.1
# requires of a recipient that does not understand them.
CHUNK_LINE = re.compile(rf'([0-9A-Fa-f]{{1,{MAX_CHUNK_SIZE_DIGITS}}})(.*)', re.S)
# quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE (RFC 9110 section 5.6.4):
# no control characters inside the quotes either, so a bare CR or LF there is
# refused (RFC 9112 section 2.2), not hidden from us while a proxy splits on it.
# qdtext and quoted-pair start with different characters, so the repetition
# can be possessive.
QUOTED_STRING = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*+"'
# Whitespace (BWS) only where the grammar puts it: around ";" and "=".  After
# the size or an extension, right before the CRLF, it is not chunk-ext, and a
# size line that a proxy might read differently is refused.
CHUNK_EXT = re.compile(
    rf'(?:[ \t]*+;[ \t]*+{TOKEN}(?:[ \t]*+=[ \t]*+(?:{TOKEN}|{QUOTED_STRING}))?+)*+')

LEADING_CRLFS = re.compile(rb'(?:\r\n)*+')

# The authority ends at the first "/", "?" or "#" and the rest is the path and
# query: each run possessive, so that a target ending in a stray "#" is not
# split again at every earlier character.
ABSOLUTE_FORM = re.compile(r'[A-Za-z][A-Za-z0-9+.-]*+://[^/?#]*+([^#]*+)')


def decimal(text, max_digits):
    """The value of ``1*DIGIT`` (DIGIT is ASCII 0-9, RFC 5234 appendix B.1), or None.

    None for anything else, and for a numeral longer than ``max_digits``,
    which is never converted: int() refuses more than 4300 digits
    (sys.get_int_max_str_digits) and is quadratic below that.  str.isdigit()
    alone would take '²', which int() refuses, and digits of other scripts,
    which int() takes.
    """
    if len(text) > max_digits or not text.isdigit() or not text.isascii():
        return None
    return int(text)
