"""Block throughput: 1 GiB as 64 KiB blocks over loopback, against two references in the same run.

    python -m bench blocks [--total SIZE] [--block SIZE] [--rounds N] [--only NAME...]

A sender process and a receiver process talk over 127.0.0.1; the receiver
times from accept to the end of the stream and checks it got every byte.
Receivers compared (every framed one is fed by the same sender, minihttp's
put_block, so only the reading side differs):

    ceiling      no framing at all: sendall of 64 KiB, recv_into one reused buffer
    Listing 5-2  the book's recvall: recv into new bytes objects, a list, a join
    get_block    minihttp's framing core, each payload returned as bytes
    get_block_to minihttp's streamed form, each payload handed to a sink in pieces
                 (the sink discards them: this measures framing, not a disk)

Each is run ``--rounds`` times, interleaved so that a noisy moment hurts all
alike; the best round is the figure (the median is shown beside it).  The
receiver's and the sender's CPU seconds per GiB (user + system, least of the
rounds) are shown too, as a rough guide: on loopback the kernel's delivery work
is charged to whichever of the two happens to be running.  About 20 seconds in
all with the defaults.
"""

import argparse
import multiprocessing
import socket
import statistics
import sys
import time
from pathlib import Path

from bench import _results
from minihttp.blocks import get_block, get_block_to, get_length, put_block
from minihttp.cli import size
from minihttp.framing import StreamReader

# The book's side lives beside the tests that check interoperability with it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'tests'))
import listing52  # noqa: E402

KiB, GiB = 1 << 10, 1 << 30
MB = 1e6
TARGET = 0.7             # minihttp's framing should keep this share of the ceiling
RUN_TIMEOUT = 60.0       # one transfer; 1 GiB takes about a second


# -- receivers: a connected socket in, the payload bytes received out ----------------

def receive_plain(sock, block):
    view = memoryview(bytearray(block))
    total = 0
    while got := sock.recv_into(view):
        total += got
    return total


def receive_listing52(sock, block):
    total = 0
    while payload := listing52.get_block(sock):
        total += len(payload)
    return total


def receive_get_block(sock, block):
    reader = StreamReader(sock)
    total = 0
    while payload := get_block(reader):
        total += len(payload)
    return total


def discard(piece):
    pass


def receive_get_block_to(sock, block):
    reader = StreamReader(sock)
    total = 0
    while length := get_length(reader):
        total += get_block_to(reader, discard, length)
    return total


# -- senders ------------------------------------------------------------------

def send_plain(sock, total, block):
    payload = bytes(block)
    for _ in range(total // block):
        sock.sendall(payload)


def send_blocks(sock, total, block):
    payload = bytes(block)
    for _ in range(total // block):
        put_block(sock, payload)
    put_block(sock, b'')


# name: (what it is, receiver, sender)
VARIANTS = {
    'ceiling': ('plain sendall/recv_into, no framing', receive_plain, send_plain),
    'listing52': ("Listing 5-2's list-and-join recvall", receive_listing52, send_blocks),
    'get_block': ('minihttp get_block (returns bytes)', receive_get_block, send_blocks),
    'get_block_to': ('minihttp get_block_to (streamed)', receive_get_block_to, send_blocks),
}


# -- one transfer, two processes ------------------------------------------------

def receiver_process(variant, block, results):
    receive = VARIANTS[variant][1]
    with socket.create_server(('127.0.0.1', 0)) as listening:
        results.send(listening.getsockname()[1])
        sock, _ = listening.accept()
    with sock:
        started, cpu = time.perf_counter(), time.process_time()
        total = receive(sock, block)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    results.send((total, elapsed, cpu))


def sender_process(variant, port, total, block, results):
    send = VARIANTS[variant][2]
    with socket.create_connection(('127.0.0.1', port)) as sock:
        cpu = time.process_time()
        send(sock, total, block)
        results.send(time.process_time() - cpu)


def transfer(context, variant, total, block):
    """(MB/s, receiver and sender CPU seconds per GiB) of one transfer of ``total`` bytes."""
    results, child_end = context.Pipe(duplex=False)
    sent, sender_end = context.Pipe(duplex=False)
    receiver = context.Process(target=receiver_process, args=(variant, block, child_end))
    receiver.start()
    sender = None
    try:
        if not results.poll(RUN_TIMEOUT):
            raise SystemExit(f'{variant}: the receiver did not start')
        port = results.recv()
        sender = context.Process(target=sender_process,
                                 args=(variant, port, total, block, sender_end))
        sender.start()
        if not results.poll(RUN_TIMEOUT):
            raise SystemExit(f'{variant}: no result within {RUN_TIMEOUT} s')
        received, elapsed, cpu = results.recv()
        if not sent.poll(RUN_TIMEOUT):
            raise SystemExit(f'{variant}: the sender did not finish')
        sender_cpu = sent.recv()
    finally:
        for process in (sender, receiver):
            if process is not None:
                process.join(RUN_TIMEOUT)
                if process.is_alive():
                    process.kill()
                    process.join()
    if received != total:
        raise SystemExit(f'{variant}: received {received} bytes of {total}')
    return total / elapsed / MB, cpu * GiB / total, sender_cpu * GiB / total


def run(total, block, rounds, names):
    context = multiprocessing.get_context('spawn')
    print(f'Block throughput: {total / GiB:g} GiB as {block // KiB} KiB blocks over loopback, '
          f'sender and receiver in separate processes; best of {rounds} (median)')
    print(f'  {"receiver":<40} {"MB/s":>12} {"median":>8} {"ratio":>6}'
          f'  CPU s/GiB: receiver sender')
    rates = {name: [] for name in names}
    cpus = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            rate, *cpu = transfer(context, name, total, block)
            rates[name].append(rate)
            cpus[name].append(cpu)
    ceiling = max(rates['ceiling']) if 'ceiling' in rates else None
    below = []
    for name in names:
        best = max(rates[name])
        ratio = best / ceiling if ceiling else float('nan')
        if name.startswith('get_block') and ratio < TARGET:
            below.append(name)
        print(f'  {VARIANTS[name][0]:<40} {best:7.0f} MB/s {statistics.median(rates[name]):8.0f}'
              f' {ratio:6.2f}  {" " * 10}{min(c[0] for c in cpus[name]):8.2f}'
              f' {min(c[1] for c in cpus[name]):6.2f}')
        if ceiling and name != 'ceiling':
            _results.record(f'block transport, {total / GiB:g} GiB as {block // KiB} KiB blocks',
                            VARIANTS[name][0], best, 'MB/s', peer='loopback ceiling',
                            peer_value=ceiling,
                            target=TARGET if name.startswith('get_block') else None)
    if ceiling:
        print(f'  target: minihttp at least {TARGET} of the ceiling: '
              + (f'below it: {", ".join(below)}' if below else 'met'))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m bench blocks', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--total', type=size, default=GiB, help='bytes per transfer (1G)')
    parser.add_argument('--block', type=size, default=64 * KiB, help='payload per block (64K)')
    parser.add_argument('--rounds', type=int, default=5, help='transfers per receiver (5)')
    parser.add_argument('--only', nargs='+', choices=VARIANTS, default=list(VARIANTS),
                        metavar='NAME', help=f'receivers to run: {", ".join(VARIANTS)}')
    args = parser.parse_args(argv)
    if args.total % args.block:
        parser.error('--total must be a whole number of blocks')
    return run(args.total, args.block, args.rounds, args.only)


if __name__ == '__main__':
    sys.exit(main())
