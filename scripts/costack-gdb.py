# gdb support for costack: list the live coroutines of the stopped thread and print the
# backtrace of suspended ones (as QEMU's `qemu coroutine` does for its coroutines).
#
#   (gdb) source scripts/costack-gdb.py
#   (gdb) costack list          # address, id, state of each live coroutine of this thread
#   (gdb) costack bt ADDRESS    # backtrace of the suspended coroutine whose control block is there
#   (gdb) costack bt-all        # backtraces of every suspended coroutine of this thread
#
# It needs a live process (it calls costack_gdb_live_head() in it) and a costack built with the
# assembly backend. A suspended coroutine's saved stack pointer `sp` (at offset
# COSTACK_GDB_LAYOUT[0] of its control block) points at its resume address, with the saved rbx
# and rbp above it; the registers as they were at the yield are rip = resume + 10 (past the four
# resume instructions), rsp = sp + 24, rbx = [sp + 8], rbp = [sp + 16]. The command loads those
# into the selected frame, runs `bt`, and puts the real registers back.

import gdb

STATES = {0: "ready", 1: "suspended", 2: "entered", 3: "finished"}
RESUME_CODE_LEN = 10  # mov [rdi+8], rsp; lea rsp, [rax+8]; pop rbx; pop rbp


class _CLanguage(object):
    """Evaluates expressions in C, where the exported symbols are found by their plain names."""

    def __enter__(self):
        self.old = gdb.parameter("language")
        gdb.execute("set language c", to_string=True)

    def __exit__(self, *exc):
        gdb.execute("set language %s" % self.old, to_string=True)


def _u64(addr):
    return int.from_bytes(bytes(gdb.selected_inferior().read_memory(addr, 8)), "little")


def _u8(addr):
    return bytes(gdb.selected_inferior().read_memory(addr, 1))[0]


def _layout():
    with _CLanguage():
        base = int(gdb.parse_and_eval("(unsigned long long)&COSTACK_GDB_LAYOUT"))
    return [_u64(base + 8 * i) for i in range(4)]


def _live():
    sp_off, next_off, id_off, state_off = _layout()
    with _CLanguage():
        head = int(gdb.parse_and_eval("((unsigned long long (*)(void))costack_gdb_live_head)()"))
    out = []
    while head:
        cid = _u64(head + id_off)
        state = _u8(head + state_off)
        out.append((head, "co%d.%d" % (cid >> 40, cid & ((1 << 40) - 1)), state))
        head = _u64(head + next_off)
    return out


def _bt(hdr):
    sp_off = _layout()[0]
    sp = _u64(hdr + sp_off)
    regs = {
        "rip": _u64(sp) + RESUME_CODE_LEN,
        "rsp": sp + 24,
        "rbx": _u64(sp + 8),
        "rbp": _u64(sp + 16),
    }
    gdb.execute("select-frame 0")
    frame = gdb.selected_frame()
    saved = {r: int(frame.read_register(r)) & 0xFFFFFFFFFFFFFFFF for r in regs}
    try:
        for r, v in regs.items():
            gdb.execute("set $%s = %d" % (r, v))
        # Frames past the trampoline would be those of whoever entered the coroutine last, which
        # has moved on since: print the coroutine's own frames only.
        lines = gdb.execute("bt", to_string=True).splitlines()
        for line in lines:
            print(line)
            if "costack_trampoline" in line:
                break
    finally:
        for r, v in saved.items():
            gdb.execute("set $%s = %d" % (r, v))


class Costack(gdb.Command):
    """costack list | costack bt ADDRESS | costack bt-all"""

    def __init__(self):
        super(Costack, self).__init__("costack", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        args = gdb.string_to_argv(arg)
        if not args or args[0] == "list":
            for hdr, cid, state in _live():
                s = STATES[state & 3] + (" scheduled" if state & 4 else "")
                print("%s  control block 0x%x  %s" % (cid, hdr, s))
        elif args[0] == "bt" and len(args) == 2:
            _bt(int(gdb.parse_and_eval(args[1])))
        elif args[0] == "bt-all":
            for hdr, cid, state in _live():
                if state & 3 == 1:
                    print("--- %s (suspended), control block 0x%x" % (cid, hdr))
                    _bt(hdr)
        else:
            raise gdb.GdbError("usage: costack list | costack bt ADDRESS | costack bt-all")


Costack()
