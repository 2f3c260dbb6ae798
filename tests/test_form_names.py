"""A form's file name is stored as the same bytes a PUT of that name stores.

RFC 7578 section 4.2: the filename parameter carries the name in UTF-8; the
RFC 5987/8187 filename* form (charset'language'percent-encoded), which senders
must not use but some do, is honoured too and preferred when both are given.
Whichever way a name comes, one check decides it (uploads.check_name): names
holding characters that draw nothing or reorder the rest are refused, and a
name is stored composed (NFC), so a Mac's decomposed "résumé.txt" is the same
file as everyone else's.
"""

import os
import unicodedata
from urllib.parse import quote

import pytest

from minihttp.errors import HTTPError
from minihttp.uploads import check_name
from support import exchange, request_bytes, RawClient

NAME = 'résumé.txt'
BOUNDARY = 'b0undary'


def form(disposition, content=b'content'):
    body = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"; '.encode()
            + disposition + b'\r\n\r\n' + content + f'\r\n--{BOUNDARY}--\r\n'.encode())
    return request_bytes('POST', '/uploads/', [
        f'Content-Type: multipart/form-data; boundary={BOUNDARY}', 'Connection: close'], body)


def post_form(port, disposition):
    with RawClient(port) as client:
        client.send(form(disposition))
        return client.reply('POST')


def put_name(port, name):
    return exchange(port, 'PUT', '/uploads/' + quote(name), body=b'content')


@pytest.mark.parametrize('disposition', [
    b'filename="' + NAME.encode() + b'"',                          # UTF-8, as browsers send
    b"filename*=UTF-8''r%C3%A9sum%C3%A9.txt",                      # RFC 8187's form
    b"filename*=utf-8'fr'r%C3%A9sum%C3%A9.txt",                    # with a language
    b"filename*=ISO-8859-1''r%E9sum%E9.txt",                       # the other charset
    b'filename="resume.txt"; filename*=UTF-8\'\'r%C3%A9sum%C3%A9.txt',   # both: filename* wins
], ids=['utf-8', 'filename*', 'filename* with language', 'filename* latin-1', 'both'])
def test_a_form_stores_the_name_as_a_put_does(in_process, disposition):
    reply = post_form(in_process.port, disposition)
    assert reply.status == 200, reply.body
    by_form = os.listdir(os.fsencode(in_process.directory))
    assert by_form == [NAME.encode()]
    os.unlink(os.path.join(os.fsencode(in_process.directory), by_form[0]))
    assert put_name(in_process.port, NAME).status == 201
    assert os.listdir(os.fsencode(in_process.directory)) == by_form


@pytest.mark.parametrize('disposition', [
    b"filename*=UTF-8''r%E9sum%E9.txt",      # not UTF-8
    b"filename*=koi8-r''abc",                # a charset RFC 8187 does not require
    b"filename*=r%C3%A9sum%C3%A9.txt",       # no charset
    b'filename="r\xe9sum\xe9.txt"',          # raw latin-1: not UTF-8
], ids=['bad utf-8', 'other charset', 'no charset', 'latin-1 bytes'])
def test_an_unreadable_name_is_400_and_stores_nothing(in_process, disposition):
    reply = post_form(in_process.port, disposition)
    assert reply.status == 400
    assert os.listdir(in_process.directory) == []


# Names that display as something they are not: each holds one character that
# draws nothing, or reorders what follows (U+202E shows "invoice\u202efdp.exe"
# as "invoiceexe.pdf").
INVISIBLE = ['invoice\u202efdp.exe', 'a\u202ab.txt', 'a\u2066b.txt', 'a\u2069b.txt',
             'report\u200b.txt', 'a\u200eb', 'a\u200fb', '\ufeffa.txt',
             'a\u00adb', 'a\u061cb', 'a\u0085b', 'a\u2028b', 'a\U000e0041b']


@pytest.mark.parametrize('name', INVISIBLE, ids=ascii)
def test_check_name_refuses_invisible_characters_naming_the_code_point(name):
    with pytest.raises(HTTPError) as refused:
        check_name(name)
    odd = next(char for char in name if unicodedata.category(char)[0] in 'CZ')
    assert refused.value.status == 400
    assert f'U+{ord(odd):04X}' in str(refused.value)


# What draws nothing without being a format character: a name of it alone is listed
# blank (U+3164 HANGUL FILLER); and the noncharacters, not meant for interchange.
BLANK = ['\u3164', 'a\u034fb.txt', '\u115f.txt', 'a\uffa0b', 'a\u17b4b', 'a\u180bb',
         '\ufffe', 'a\ufdd0b', 'a\U0010ffffb']


@pytest.mark.parametrize('name', BLANK, ids=ascii)
def test_check_name_refuses_what_draws_nothing_and_noncharacters(name):
    with pytest.raises(HTTPError) as refused:
        check_name(name)
    odd = next(char for char in name if char not in 'ab.txt')
    assert refused.value.status == 400
    assert f'contains U+{ord(odd):04X}' in str(refused.value)


def test_the_reason_for_u202e_says_what_it_is():
    with pytest.raises(HTTPError) as refused:
        check_name('invoice\u202efdp.exe')
    assert str(refused.value).endswith(
        'upload name contains U+202E (RIGHT-TO-LEFT OVERRIDE), an invisible format character')


@pytest.mark.parametrize('name', ['résumé.txt', 'naïve café.pdf', 'файл.txt', 'ملف.txt',
                                  '文件.txt', 'snowman \u2603.txt', 'a b.txt',
                                  'می\u200cخواهم.txt', 'family \U0001f468\u200d\U0001f469.txt',
                                  'heart \u2764\ufe0f.txt'],
                         ids=ascii)
def test_ordinary_names_pass_unchanged(name):
    assert check_name(name) == name


def test_a_decomposed_name_is_stored_composed():
    decomposed = unicodedata.normalize('NFD', NAME)
    assert decomposed != NAME
    assert check_name(decomposed) == NAME


@pytest.mark.parametrize('name, code_point', [
    ('invoice\u202efdp.exe', b'U+202E (RIGHT-TO-LEFT OVERRIDE)'),
    ('report\u200b.txt', b'U+200B (ZERO WIDTH SPACE)'),
], ids=['U+202E', 'U+200B'])
def test_a_put_or_a_form_with_an_invisible_character_is_400_naming_it(in_process, name,
                                                                       code_point):
    by_put = put_name(in_process.port, name)
    by_form = post_form(in_process.port, b'filename="' + name.encode() + b'"')
    for reply in by_put, by_form:
        assert reply.status == 400
        assert code_point + b', an invisible format character' in reply.body
    assert os.listdir(in_process.directory) == []


def test_decomposed_and_composed_names_are_one_file(in_process):
    """A Mac's PUT (NFD), then a form from Windows (NFC): one file, replaced;
    a DELETE by the decomposed name removes it."""
    decomposed = unicodedata.normalize('NFD', NAME)
    first = put_name(in_process.port, decomposed)
    assert first.status == 201
    assert first.headers['location'] == '/uploads/' + quote(NAME)
    assert os.listdir(os.fsencode(in_process.directory)) == [NAME.encode()]
    assert post_form(in_process.port, b'filename="' + NAME.encode() + b'"').status == 200
    assert put_name(in_process.port, NAME).status == 200          # replaced, not a second
    assert post_form(in_process.port, b'filename="' + decomposed.encode() + b'"').status == 200
    assert os.listdir(os.fsencode(in_process.directory)) == [NAME.encode()]
    got = exchange(in_process.port, 'GET', '/uploads/' + quote(decomposed))
    assert got.status == 200          # a GET by the name the Mac sent finds it too
    assert exchange(in_process.port, 'DELETE', '/uploads/' + quote(decomposed)).status == 204
    assert os.listdir(in_process.directory) == []
