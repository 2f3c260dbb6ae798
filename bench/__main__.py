"""`python -m bench [NAME [OPTIONS...]]`: every benchmark in turn, or the one named with its options.

A benchmark is any module of this package with ``main(argv) -> exit status``;
``python -m bench NAME --help`` shows its options.  The figures it records go to
bench/results.md and bench/results.png (the chart needs matplotlib: make bench-deps),
which a run overwrites with its own.
"""

import importlib
import pkgutil
import sys
from pathlib import Path

from bench import _results

# First the framing core, then what stands on it, then the peers; any other after these.
ORDER = ('blocks', 'http', 'files', 'peers')
HERE = Path(__file__).parent


def benchmarks():
    names = {module.name for module in pkgutil.iter_modules([str(Path(__file__).parent)])
             if not module.name.startswith('_')}
    return sorted(names, key=lambda name: (ORDER.index(name) if name in ORDER else len(ORDER),
                                           name))


def run(name, argv):
    """Run one benchmark; one that gives up says why, and the figures so far are kept."""
    try:
        return importlib.import_module(f'bench.{name}').main(argv)
    except SystemExit as stop:
        if stop.code in (None, 0) or isinstance(stop.code, int):
            raise          # --help, or an argument error: argparse has said it
        print(f'{name}: {stop.code}', file=sys.stderr)
        _results.note(f'{name} stopped early: {str(stop.code).splitlines()[0]}')
        return 1


def main(argv):
    names = benchmarks()
    if argv and argv[0] in ('-h', '--help'):
        print(__doc__.strip() + f'\n\nbenchmarks: {", ".join(names)}')
        return 0
    if argv and argv[0] not in names:
        print(f'python -m bench: no benchmark {argv[0]!r} (try: {", ".join(names)})',
              file=sys.stderr)
        return 2
    _results.reset()
    if argv:
        status = run(argv[0], argv[1:])
    else:
        status = 0
        for name in names:
            status = run(name, []) or status
            print()
    if _results.ROWS or _results.NOTES:
        _results.write(HERE / 'results.md', HERE / 'results.png', argv)
    return status


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
