"""`make fuzz`: coverage-guided fuzzing of every target with atheris (libFuzzer), for a set time.

    python -m fuzz [SECONDS]          every target, SECONDS each (default 60)
    python -m fuzz TARGET [SECONDS]   one of: head, chunked, form, blocks, loop-head

Each target runs in a process of its own, grows a corpus in fuzz/corpus/TARGET
(ignored by git) from the seeds, and keeps any input that crashes it, or that
takes more than INPUT_TIMEOUT seconds (libFuzzer's -timeout: cost is part of
correctness), in fuzz/crashes/, where tests/test_fuzz.py replays it on every
`make test`: commit it with the fix.
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Seconds one input may take before libFuzzer stops and keeps it as TARGET-timeout-HASH
# (whole seconds: the least it takes).  A linear parser reads any input it makes in
# well under a millisecond.
INPUT_TIMEOUT = 1
SEEDS = {
    'head': b'POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n'
            b'5;a=1\r\nhello\r\n0\r\nX: 1\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n',
    'chunked': b'5;ext="q"\r\nhello\r\n10\r\n' + b'x' * 16 + b'\r\n0\r\nX-Sum: 21\r\n\r\n',
    'form': b'--b0undary\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n\r\n'
            b'hello\r\n--b0undary--\r\n',
    'blocks': b'\x00\x00\x00\x05hello\x00\x00\x00\x00',
    'loop-head': b'GET /a?b HTTP/1.1\r\nHost: h\r\nX: y\r\n\r\n',
}


def fuzz_one(name, seconds):
    """In this process: run atheris on one target (the first input byte picks the piece size)."""
    import atheris
    with atheris.instrument_imports():
        from fuzz.targets import TARGETS
    target = TARGETS[name]

    def one_input(data):
        if data:
            target(data[1:], data[0] or 1)

    corpus = HERE / 'corpus' / name
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / 'seed').write_bytes(b'\x07' + SEEDS[name])
    crashes = HERE / 'crashes'
    crashes.mkdir(exist_ok=True)
    atheris.Setup([sys.argv[0], f'-max_total_time={seconds}', '-rss_limit_mb=1024',
                   f'-timeout={INPUT_TIMEOUT}', f'-artifact_prefix={crashes}/{name}-',
                   str(corpus)], one_input)
    atheris.Fuzz()


def main(argv):
    if argv[:1] == ['--one']:
        return fuzz_one(argv[1], int(argv[2]))
    names = list(SEEDS)
    if argv and not (argv[0].isdigit() and argv[0].isascii()):   # '²' is a digit int() refuses
        names, argv = [argv[0]], argv[1:]
        if names[0] not in SEEDS:
            print(f'python -m fuzz: no target {names[0]!r} (try: {", ".join(SEEDS)})',
                  file=sys.stderr)
            return 2
    seconds = int(argv[0]) if argv else 60
    status = 0
    for name in names:
        print(f'fuzzing {name} for {seconds} s', flush=True)
        run = subprocess.run([sys.executable, '-m', 'fuzz', '--one', name, str(seconds)],
                             cwd=HERE.parent)
        if run.returncode:
            print(f'{name}: crashed or took longer than {INPUT_TIMEOUT} s; the input is in '
                  'fuzz/crashes/', flush=True)
            status = 1
    return status


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]) or 0)
