"""A form's file name is stored as the same bytes a PUT of that name stores.

RFC 7578 section 4.2: the filename parameter carries the name in UTF-8; the
RFC 5987/8187 filename* form (charset'language'percent-encoded), which senders
must not use but some do, is honoured too and preferred when both are given.
"""

import os
from urllib.parse import quote

import pytest

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
