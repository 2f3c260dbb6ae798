"""Installed as Python tools are, `minihttp` runs from any folder.

The package is installed into a fresh virtual environment from a copy of the
source (so the build leaves nothing in the repository) and its command is run
in an empty folder: it serves that folder, the demo page (package data) at
/_minihttp/, and takes an upload into ./uploads, as its banner says.
"""

import os
import shutil
import subprocess
import sys

import pytest

from support import HTTP_LISTENING, REPO, WAIT, MinihttpProcess, exchange

# Creating the environment and building the wheel, each; generous for a loaded machine.
STEP_TIMEOUT = 120


def run(*command, **options):
    return subprocess.run([str(part) for part in command], capture_output=True,
                          timeout=STEP_TIMEOUT, **options)


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """A fresh virtual environment with minihttp installed (no dependencies): its bin/."""
    base = tmp_path_factory.mktemp('install')
    source = base / 'src'
    source.mkdir()
    for name in ('pyproject.toml', 'README.md'):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns('__pycache__', 'uploads')
    shutil.copytree(REPO / 'www', source / 'www', ignore=ignore)
    shutil.copytree(REPO / 'minihttp', source / 'minihttp', symlinks=True, ignore=ignore)
    venv = base / 'venv'
    made = run(sys.executable, '-m', 'venv', venv)
    if made.returncode != 0:
        pytest.skip(f'cannot create a virtual environment: {made.stderr.decode()[-300:]}')
    pip = [venv / 'bin' / 'python', '-m', 'pip', 'install', '--quiet', '--no-deps']
    # Offline first, with the setuptools the environment came with; else the build
    # backend pyproject.toml names, from the configured index.
    done = run(*pip, '--no-build-isolation', source)
    if done.returncode != 0:
        done = run(*pip, source)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return venv / 'bin'


@pytest.mark.timeout(2 * STEP_TIMEOUT + 60)
def test_the_installed_command_serves_an_empty_folder_the_page_and_uploads(installed, tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    where = run(installed / 'python', '-c', 'import minihttp; print(minihttp.__file__)',
                cwd=empty)
    assert str(installed.parent) in where.stdout.decode()     # not the repository's copy
    server = MinihttpProcess(['--port', 0, '--block-port', 0],
                             command=[installed / 'minihttp'], cwd=empty,
                             env={'XDG_DATA_HOME': str(tmp_path / 'data')})
    try:
        port = server.wait_listening(HTTP_LISTENING)
        server.wait_for_line(rf'^serving files from {empty} at /')
        server.wait_for_line(rf'^uploads stored in {empty / "uploads"} \(created now\)')

        listing = exchange(port, 'GET', '/')
        assert listing.status == 200 and b'uploads' in listing.body
        for name in os.listdir(REPO / 'www'):     # the page and what it loads
            if os.path.isfile(REPO / 'www' / name):
                page = exchange(port, 'GET', f'/_minihttp/{name}')
                assert page.status == 200, name
                assert page.body == (REPO / 'www' / name).read_bytes()
        assert exchange(port, 'GET', '/_minihttp/').status == 200
        put = exchange(port, 'PUT', '/uploads/hello.txt', body=b'hello')
        assert put.status == 201
        assert (empty / 'uploads' / 'hello.txt').read_bytes() == b'hello'
        assert exchange(port, 'GET', '/uploads/hello.txt').body == b'hello'
    finally:
        assert server.stop(timeout=WAIT) == 0
    assert sorted(os.listdir(empty)) == ['uploads']
