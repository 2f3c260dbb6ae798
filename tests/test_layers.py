"""The package's layers: minihttp/__init__.py lists every module, lowest layer first,
and no module imports one listed after it (STYLE.md: the dependency direction is one way)."""

import ast
import re
from pathlib import Path

import pytest

import minihttp

pytestmark = pytest.mark.timeout(30)

PACKAGE = Path(minihttp.__file__).parent
LISTED = re.findall(r'^    ([a-z0-9_]+) ', minihttp.__doc__, re.M)


def imports_of(module):
    """The package modules ``module`` imports, by name."""
    tree = ast.parse((PACKAGE / f'{module}.py').read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split('.')[0])
            else:
                found.update(alias.name for alias in node.names if alias.name != '__version__')
        elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('minihttp.'):
            found.add(node.module.split('.')[1])
    return found


def test_the_docstring_lists_every_module_once():
    modules = {path.stem for path in PACKAGE.glob('*.py')} - {'__init__', '__main__'}
    assert sorted(LISTED) == sorted(modules)
    assert len(LISTED) == len(set(LISTED))


@pytest.mark.parametrize('module', LISTED)
def test_no_module_imports_one_above_it(module):
    above = set(LISTED[LISTED.index(module):])
    assert imports_of(module) & above == set()
