# gdb support for costack: list the live coroutines of the stopped thread and print the
# backtrace of suspended ones (as QEMU's `qemu coroutine` does for its coroutines).
#
#   (gdb) source scripts/costack-gdb.py
#   (gdb) costack list          # address, id, state of each live coroutine of this thread
#   (gdb) costack bt ADDRESS    # backtrace of the suspended coroutine whose control block is there
#   (gdb) costack bt-all        # backtraces of every suspended coroutine of this thread
#
# It needs a live process (on x86_64 it finds the thread's live list from the executable's TLS
# segment and $fs_base; elsewhere, or if that fails, it calls costack_gdb_live_head() in it; a
# process under qemu-user's gdb stub works too) and a costack built with the assembly backend.
# The switch context sits at offset COSTACK_GDB_LAYOUT[0] of a coroutine's control block; its
# first word is the suspended coroutine's saved stack pointer `sp`. The registers as they were
# at the yield are rebuilt from it as each CPU's switch left them (src/arch/<cpu>.rs), with the
# program counter just past the resume code that the next enter runs, where the compiler's
# unwind information is right again:
#
#   x86_64   resume address at [sp]; rip = it + 4 instructions, rsp = sp + 24,
#            rbx = [sp + 8], rbp = [sp + 16]
#   aarch64  resume address at ctx + 8; pc = it + 4 instructions, sp = sp + 16,
#            x29 = [sp], x19 = [sp + 8]
#   riscv64  resume address at ctx + 8; pc = it + 6 instructions, sp = sp + 16,
#            s0 = [sp], s1 = [sp + 8]
#
# The command loads those into the selected frame, runs `bt`, and puts the real registers back.

import struct

import gdb

STATES = {0: "ready", 1: "suspended", 2: "entered", 3: "finished"}


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


def _elf_tls_live_head_address():
    """x86_64: the address of this thread's live-list head, read from the executable's ELF file
    (the thread-local's offset in the TLS segment) and the thread pointer ($fs_base), without
    running code in the process; None if that is not possible (another CPU, a stripped binary,
    costack in a shared library).

    Why not just call costack_gdb_live_head(): gdb 13 cannot call a function in the process on
    CPUs whose extended register state is larger than it knows (AMX): restoring the registers
    after the call fails with "Couldn't write extended state status: Bad address"."""
    if gdb.selected_frame().architecture().name() != "i386:x86-64":
        return None
    path = gdb.current_progspace().filename
    if not path:
        return None
    with open(path, "rb") as f:
        elf = f.read()
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return None
    phoff, shoff = struct.unpack_from("<QQ", elf, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", elf, 0x36)
    tls = None
    for i in range(phnum):
        p_type, _, _, p_vaddr, _, _, p_memsz, p_align = struct.unpack_from(
            "<IIQQQQQQ", elf, phoff + i * phentsize)
        if p_type == 7:  # PT_TLS
            tls = (p_vaddr, p_memsz, max(p_align, 1))
    if tls is None:
        return None
    for i in range(shnum):
        sh = struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize)
        if sh[1] != 2:  # SHT_SYMTAB
            continue
        sym_off, sym_size, link, entsize = sh[4], sh[5], sh[6], sh[9]
        str_off = struct.unpack_from("<IIQQQQIIQQ", elf, shoff + link * shentsize)[4]
        for j in range(sym_size // entsize):
            st_name, st_info, _, _, st_value, _ = struct.unpack_from(
                "<IBBHQQ", elf, sym_off + j * entsize)
            if st_info & 0xF != 6:  # STT_TLS
                continue
            start = str_off + st_name
            name = elf[start:elf.index(b"\0", start)]
            if b"costack" not in name or b"LIVE_HEAD" not in name:
                continue
            # The executable's TLS block ends at the thread pointer (x86_64's TLS variant II),
            # placed as glibc's _dl_determine_tlsoffset places it.
            vaddr, memsz, align = tls
            firstbyte = (-(vaddr & (align - 1))) & (align - 1)
            offset = (memsz - firstbyte + align - 1) // align * align + firstbyte
            tp = int(gdb.parse_and_eval("$fs_base")) & 0xFFFFFFFFFFFFFFFF
            return tp - offset + st_value
    return None


def _live_head():
    try:
        addr = _elf_tls_live_head_address()
    except (gdb.error, OSError, ValueError, struct.error):
        addr = None
    if addr is not None:
        return _u64(addr)
    with _CLanguage():
        return int(gdb.parse_and_eval("((unsigned long long (*)(void))costack_gdb_live_head)()"))


def _live():
    sp_off, next_off, id_off, state_off = _layout()
    head = _live_head()
    out = []
    while head:
        cid = _u64(head + id_off)
        state = _u8(head + state_off)
        out.append((head, "co%d.%d" % (cid >> 40, cid & ((1 << 40) - 1)), state))
        head = _u64(head + next_off)
    return out


def _after(pc, count):
    """The address just past `count` instructions from `pc` (their lengths vary on x86_64 and
    with RISC-V's compressed instructions)."""
    insns = gdb.selected_frame().architecture().disassemble(pc, count=count)
    return insns[-1]["addr"] + insns[-1]["length"]


def _yield_registers(ctx):
    """The registers of the suspended coroutine whose switch context is at `ctx`."""
    arch = gdb.selected_frame().architecture().name()
    sp = _u64(ctx)
    if "x86-64" in arch:
        return {
            "rip": _after(_u64(sp), 4),  # mov [rdi+8], rsp; lea rsp, [rax+8]; pop rbx; pop rbp
            "rsp": sp + 24,
            "rbx": _u64(sp + 8),
            "rbp": _u64(sp + 16),
        }
    if arch.startswith("aarch64"):
        return {
            "pc": _after(_u64(ctx + 8), 4),  # mov; stp (link); mov sp, x9; ldp x29, x19
            "sp": sp + 16,
            "x29": _u64(sp),
            "x19": _u64(sp + 8),
        }
    if arch.startswith("riscv"):
        return {
            "pc": _after(_u64(ctx + 8), 6),  # sd; sd (link); mv sp, t0; ld s0; ld s1; addi sp
            "sp": sp + 16,
            "s0": _u64(sp),
            "s1": _u64(sp + 8),
        }
    raise gdb.GdbError("costack: no register layout for architecture %s" % arch)


def _bt(hdr):
    regs = _yield_registers(hdr + _layout()[0])
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
