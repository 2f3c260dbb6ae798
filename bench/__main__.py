"""`python -m bench [NAME [OPTIONS...]]`: every benchmark in turn, or the one named with its options.

A benchmark is any module of this package with ``main(argv) -> exit status``;
``python -m bench NAME --help`` shows its options.
"""

import importlib
import pkgutil
import sys
from pathlib import Path

# First the framing core, then what stands on it; any other benchmark after these, by name.
ORDER = ('blocks', 'http', 'files')


def benchmarks():
    names = {module.name for module in pkgutil.iter_modules([str(Path(__file__).parent)])
             if not module.name.startswith('_')}
    return sorted(names, key=lambda name: (ORDER.index(name) if name in ORDER else len(ORDER),
                                           name))


def main(argv):
    names = benchmarks()
    if argv and argv[0] in ('-h', '--help'):
        print(__doc__.strip() + f'\n\nbenchmarks: {", ".join(names)}')
        return 0
    if argv and argv[0] not in names:
        print(f'python -m bench: no benchmark {argv[0]!r} (try: {", ".join(names)})',
              file=sys.stderr)
        return 2
    if argv:
        return importlib.import_module(f'bench.{argv[0]}').main(argv[1:])
    status = 0
    for name in names:
        status = importlib.import_module(f'bench.{name}').main([]) or status
        print()
    return status


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
