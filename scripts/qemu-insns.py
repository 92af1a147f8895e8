#!/usr/bin/env python3
"""Counts the instructions a program executed under qemu-user, from its execution log.

    qemu-ARCH -d in_asm,exec,nochain -D LOG PROGRAM ARGS...
    scripts/qemu-insns.py LOG                 prints the number of guest instructions executed
    scripts/qemu-insns.py LOG_N LOG_2N N      prints instructions per operation, (I(2N) - I(N)) / N,
                                              and the disassembly of one operation's path

`in_asm` logs each translation block once, with its disassembly (one instruction per line);
`exec` with `nochain` logs every execution of a block by its guest address. Their product is the
dynamic instruction count, as callgrind's `Ir` is on x86_64 (run `qemu-x86_64` on an x86_64
build to check one against the other). Timing under emulation means nothing; counts do.
"""

import re
import sys

TRACE = re.compile(r"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/")
INSN = re.compile(r"^0x([0-9a-f]+):\s+(.*)$")
# The bytes of an instruction too long for one line continue on the next line, with its own
# address but no mnemonic; such a line is not an instruction.
BYTES = re.compile(r"^(?:[0-9a-f]{2}|[0-9a-f]{4}|[0-9a-f]{8})$")


def parse(path):
    """Returns (blocks: pc -> [instruction lines], executed: [pc, ...])."""
    blocks = {}
    executed = []
    current = None
    with open(path, errors="replace") as f:
        for line in f:
            m = TRACE.match(line)
            if m:
                executed.append(int(m.group(1), 16))
                current = None
                continue
            if line.startswith("IN:"):
                current = []
                continue
            m = INSN.match(line)
            if m is not None and all(BYTES.match(t) for t in m.group(2).split()):
                continue
            if m is not None and current is not None:
                if not current:
                    blocks[int(m.group(1), 16)] = current
                current.append(line.rstrip())
                continue
            if not line.strip() or line.startswith("---"):
                current = None
    return blocks, executed


def count(blocks, executed):
    missing = {pc for pc in executed if pc not in blocks}
    if missing:
        sys.exit(f"qemu-insns: {len(missing)} executed blocks have no disassembly in the log")
    return sum(len(blocks[pc]) for pc in executed)


def main(argv):
    if len(argv) == 2:
        blocks, executed = parse(argv[1])
        print(count(blocks, executed))
        return
    if len(argv) != 4:
        sys.exit(__doc__)
    n = int(argv[3])
    b1, e1 = parse(argv[1])
    b2, e2 = parse(argv[2])
    i1, i2 = count(b1, e1), count(b2, e2)
    per = (i2 - i1) / n
    print(f"I(N) = {i1}, I(2N) = {i2}, N = {n}: {per:g} instructions per operation")
    # One operation's path: the blocks executed per operation repeat with this period. The two
    # runs execute the same blocks until the shorter one leaves its loop; list one period ending
    # there, which lies in the steady state of the loop.
    period = (len(e2) - len(e1)) // n
    if period <= 0 or (len(e2) - len(e1)) % n:
        return
    same = next((i for i, (x, y) in enumerate(zip(e1, e2)) if x != y), len(e1))
    start = same - period
    if start < 0 or any(e2[i] != e2[i + period] for i in range(start, same)):
        return
    total = sum(len(b2[pc]) for pc in e2[start : start + period])
    print(f"\none operation's path ({period} blocks, {total} instructions):")
    for pc in e2[start : start + period]:
        for line in b2[pc]:
            print("  " + line)


if __name__ == "__main__":
    main(sys.argv)
