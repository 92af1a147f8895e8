#!/usr/bin/env python3
"""Checks that no two source files of a crate import each other in a circle.

Usage: python3 scripts/import-cycles.py [CRATE_DIR...]   (default: every crate under crates/)

For each crate it reads src/ and finds, per file, the modules of the crate that the file names
in code: `use crate::a::b`, `use super::x`, `use self::x` (also inside braces) and paths like
`crate::a::f()` anywhere outside comments and string literals. A name is followed through the
`pub use` re-exports of the module it is taken from, so `use crate::File` counts as an import of
the file that defines `File`, not of lib.rs. A `mod x;` declaration is not an import. Files are
the nodes; a circle of two or more files (or a file reaching itself) is reported with the names
that tie it, and the exit status is 1. Prints the floors (longest import chain below each file)
when all is well.
"""
import os
import re
import sys
from collections import defaultdict


def strip(src):
    """Source without comments, string and char literals (their contents can look like paths)."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', src[i:i + 10]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            m = re.match(r'r(#*)"', src[i:])
            end = src.find('"' + m.group(1), i + len(m.group(0)))
            i = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and src[i] != '"':
                i += 2 if src[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", src[i:i + 4] + "   "):
            m = re.match(r"'(\\[^']*|[^\\'])'", src[i:])
            i += len(m.group(0)) if m else 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def block_end(code, open_brace):
    """Index just past the brace that closes the one at `open_brace`."""
    depth = 0
    for i in range(open_brace, len(code)):
        depth += (code[i] == "{") - (code[i] == "}")
        if depth == 0:
            return i + 1
    return len(code)


def without_tests(code):
    """The code minus `#[cfg(test)]` items (unit tests may import anything of their file)."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([\w:]+\))?\s+)?(mod\s+\w+\s*\{|(?:fn|use|impl|struct|const|static)\b)", code)
        if not m:
            return code
        if m.group(1).startswith("mod"):
            end = block_end(code, m.end() - 1)
        else:
            semi = code.find(";", m.end())
            brace = code.find("{", m.end())
            end = semi + 1 if brace < 0 or (0 <= semi < brace) else block_end(code, brace)
        code = code[:m.start()] + code[end:]


def inline_modules(code, path):
    """(module path, code) for the file's own code and each inline `mod x { ... }` in it."""
    out, rest, pos = [], [], 0
    for m in re.finditer(r"\bmod\s+(\w+)\s*\{", code):
        if m.start() < pos:
            continue
        end = block_end(code, m.end() - 1)
        rest.append(code[pos:m.start()])
        out.extend(inline_modules(code[m.end():end - 1], path + (m.group(1),)))
        pos = end
    rest.append(code[pos:])
    return [(path, "".join(rest))] + out


def modules(src_dir):
    """Maps module path (tuple) -> file, for lib.rs/main.rs and every module file under src/."""
    mods = {}
    for root, _, files in os.walk(src_dir):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src_dir)[:-3].split(os.sep)
            if rel[0] == "bin" or rel == ["main"]:
                continue
            if rel[-1] in ("mod", "lib"):
                rel = rel[:-1]
            mods[tuple(rel)] = os.path.join(root, f)
    return mods


def use_trees(code):
    """Every path named in `use` trees and in expressions, as lists of segments."""
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", code):
        paths.extend(expand(m.group(1).replace("\n", " ")))
    code = re.sub(r"\buse\s+[^;]+;", "", code)
    for m in re.finditer(r"(?<![\w:])(\w+(?:::\w+)+)", code):
        paths.append(m.group(1).split("::"))
    return paths


def expand(tree):
    """`a::{b, c::{d, e as f}}` -> [[a, b], [a, c, d], [a, c, e]]."""
    tree = re.sub(r"\s+", "", tree)
    m = re.match(r"^([\w:]*?)(::)?\{(.*)\}$", tree)
    if m:
        prefix = [p for p in m.group(1).split("::") if p]
        out, depth, cur = [], 0, ""
        for ch in m.group(3) + ",":
            if ch == "," and depth == 0:
                if cur:
                    out.extend(prefix + sub for sub in expand(cur))
                cur = ""
                continue
            depth += (ch == "{") - (ch == "}")
            cur += ch
        return out
    tree = re.sub(r"as\w+$", "", tree.split(" as ")[0]) if "as" in tree and re.search(r"\bas\b", tree) else tree
    tree = re.sub(r"\bas\b.*$", "", tree)
    return [[p for p in tree.split("::") if p]]


def absolute(path, here):
    """Resolves crate::/super::/self:: against the module `here`; None for other crates."""
    if not path:
        return None
    mod = list(here)
    if path[0] == "crate":
        mod, path = [], path[1:]
    elif path[0] in ("super", "self"):
        while path and path[0] in ("super", "self"):
            if path[0] == "super" and mod:
                mod.pop()
            path = path[1:]
    else:
        return None
    return tuple(mod + path)


def main():
    crates = sys.argv[1:] or sorted(
        os.path.join("crates", c) for c in os.listdir("crates") if os.path.isdir(os.path.join("crates", c, "src")))
    bad = False
    for crate in crates:
        mods = modules(os.path.join(crate, "src"))
        codes = {m: without_tests(strip(open(f).read())) for m, f in mods.items()}
        # Re-exports: module -> name -> absolute path it stands for.
        reexports = defaultdict(dict)
        for m, code in codes.items():
            for u in re.finditer(r"\bpub(?:\([\w:]+\))?\s+use\s+([^;]+);", code):
                for p in expand(u.group(1)):
                    target = absolute(p, m) or (tuple(list(m) + p) if p and p[0] != "std" and tuple(list(m) + p[:1]) in mods else None)
                    if target:
                        reexports[m][p[-1]] = target

        def file_of(path, seen=0):
            """The module file an absolute path lands in, following re-exports."""
            for k in range(len(path), -1, -1):
                prefix = path[:k]
                if prefix in mods:
                    rest = path[k:]
                    if rest and rest[0] in reexports[prefix] and seen < 20:
                        return file_of(reexports[prefix][rest[0]] + tuple(rest[1:]), seen + 1)
                    return prefix
            return None

        edges = defaultdict(lambda: defaultdict(set))
        for m, code in codes.items():
            for scope, part in inline_modules(code, m):
                for p in use_trees(part):
                    if p and p[0] not in ("crate", "super", "self"):
                        if tuple(list(scope) + p[:1]) not in mods:
                            continue  # another crate, a type's associated item, a local name
                        p = ["self"] + p  # `child::x` from the parent
                    a = absolute(p, scope)
                    t = None if a is None else file_of(a)
                    if t is not None and t != m:
                        edges[m][t].add(a[-1])
        # Tarjan's strongly connected components.
        index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

        def visit(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in edges[v]:
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                sccs.append(comp)

        sys.setrecursionlimit(10000)
        for v in mods:
            if v not in index:
                visit(v)
        name = lambda m: os.path.relpath(mods[m], crate)
        cycles = [c for c in sccs if len(c) > 1]
        for c in cycles:
            bad = True
            print(f"{crate}: import circle of {len(c)} files:")
            for a in c:
                for b in edges[a]:
                    if b in c:
                        print(f"  {name(a)} -> {name(b)}: {', '.join(sorted(edges[a][b]))}")
        if not cycles:
            depth = {}

            def floor(v):
                if v not in depth:
                    depth[v] = 0
                    depth[v] = 1 + max((floor(w) for w in edges[v]), default=-1)
                return depth[v]

            for v in mods:
                floor(v)
            print(f"{crate}: no import circle among {len(mods)} files; floors (0 = imports no sibling):")
            for d in sorted(set(depth.values())):
                print(f"  {d}: " + ", ".join(sorted(name(v) for v in mods if depth[v] == d)))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
