#!/usr/bin/env bash
# Counts the instructions of one coroutine round trip (and the other `switch_count` shapes) on
# x86_64, aarch64 and riscv64, each backend, under qemu-user, and writes the "Other CPUs"
# section of BENCHMARKS.md (replacing it if present; everything else is left alone).
#
#   scripts/cross-insns.sh            # needs `scripts/cross.sh install` first
#   CROSS_INSNS_OUT=- scripts/cross-insns.sh   # print the section instead of writing it
#
# Method: `switch_count IMPL N` (crates/costack-bench/src/bin/switch_count.rs) runs under
# `qemu-ARCH -d in_asm,exec,nochain`, which logs each translated block's disassembly and every
# execution of a block; scripts/qemu-insns.py multiplies them out for N and 2N operations and
# prints (I(2N) - I(N)) / N, plus the disassembly of one operation's path. On x86_64 the same
# binary also runs under callgrind, whose count the qemu count must equal: that checks the
# method. Emulated time means nothing, so no time is given for aarch64 or riscv64.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
n=${CROSS_INSNS_N:-1000}
work=$root/target/cross-insns
mkdir -p "$work"

source scripts/cross-env.sh

# build ARCH FEATURES -> prints the switch_count binary's path
build() {
  local arch=$1 features=$2 args=()
  if [ -n "$features" ]; then args+=(--features "$features"); fi
  (
    if [ "$arch" = x86_64 ]; then
      export CARGO_TARGET_DIR=$root/target/cross-bench-x86_64${features:+-$features}
      CROSS_TRIPLE=x86_64-unknown-linux-gnu
      CROSS_FLAGS=()
    else
      CROSS_TARGET_DIR=$root/target/cross-bench-$arch${features:+-$features} cross_env "$arch"
    fi
    cargo build -q --profile bench -p costack-bench --bin switch_count --target "$CROSS_TRIPLE" \
      "${CROSS_FLAGS[@]}" "${args[@]}" >&2
    echo "$CARGO_TARGET_DIR/$CROSS_TRIPLE/release/switch_count"
  )
}

emulator() {
  if [ "$1" = x86_64 ]; then
    echo qemu-x86_64
  else
    (cross_env "$1" && echo "${CROSS_RUNNER#timeout 600 }")
  fi
}

# count ARCH BINARY IMPL LABEL -> appends a table row; keeps the path listing
rows=()
listings=()
count() {
  local arch=$1 bin=$2 impl=$3 label=$4 k out
  for k in "$n" $((2 * n)); do
    # shellcheck disable=SC2046
    $(emulator "$arch") -d in_asm,exec,nochain -D "$work/$label-$k.log" "$bin" "$impl" "$k" \
      >/dev/null
  done
  out=$(python3 scripts/qemu-insns.py "$work/$label-$n.log" "$work/$label-$((2 * n)).log" "$n")
  rm -f "$work/$label-$n.log" "$work/$label-$((2 * n)).log"
  local per
  per=$(sed -n '1s/.*: \([0-9.]*\) instructions per operation/\1/p' <<<"$out")
  rows+=("$arch|$label|$impl|$per")
  listings+=("$label $impl"$'\n'"$(tail -n +3 <<<"$out")")
  echo "$arch $label $impl: $per" >&2
}

shapes=(costack costack-create costack-cost costack-handoff costack-generator)
for arch in x86_64 aarch64 riscv64; do
  asm=$(build "$arch" "")
  uc=$(build "$arch" ucontext)
  for s in "${shapes[@]}"; do count "$arch" "$asm" "$s" "$arch-asm"; done
  count "$arch" "$uc" costack "$arch-ucontext"
  count "$arch" "$asm" corosensei "$arch-corosensei"
done

# The cross-check: callgrind on the native x86_64 binary, same shapes, N and 2N.
x86=$(build x86_64 "")
cg_rows=()
for s in "${shapes[@]}"; do
  cg=()
  for k in "$n" $((2 * n)); do
    cg+=("$(valgrind --tool=callgrind --callgrind-out-file="$work/cg-$k.out" "$x86" "$s" "$k" \
      2>&1 >/dev/null | sed -n 's/.*I *refs: *//p' | tr -d ,)")
  done
  cg_rows+=("$(python3 -c 'import sys; a, b, n = map(int, sys.argv[1:]); print(f"{(a - b) / n:g}")' "${cg[1]}" "${cg[0]}" "$n")")
done

value() { # arch label impl
  local r
  for r in "${rows[@]}"; do
    IFS='|' read -r a l i v <<<"$r"
    if [ "$a" = "$1" ] && [ "$l" = "$2" ] && [ "$i" = "$3" ]; then echo "$v"; return; fi
  done
  echo "?"
}

# Whether callgrind and qemu agree on every x86_64 shape, as a sentence for the report.
agreement() {
  local i same=1 pairs=()
  for i in "${!shapes[@]}"; do
    local q
    q=$(value x86_64 x86_64-asm "${shapes[$i]}")
    pairs+=("${shapes[$i]} ${cg_rows[$i]} (qemu $q)")
    [ "$q" = "${cg_rows[$i]}" ] || same=0
  done
  if [ "$same" = 1 ]; then
    echo "gives exactly the qemu count for every costack shape in the table: $(IFS=,; echo "${pairs[*]}" | sed 's/,/, /g')"
  else
    echo "does **not** agree with qemu on every shape: $(IFS=,; echo "${pairs[*]}" | sed 's/,/, /g')"
  fi
}

listing() { # label impl
  local l
  for l in "${listings[@]}"; do
    if [ "${l%%$'\n'*}" = "$1 $2" ]; then echo "${l#*$'\n'}"; return; fi
  done
}

section() {
  cat <<EOF
## Other CPUs: instructions per operation (qemu-user)

Written by \`scripts/cross-insns.sh\` on $(date -u +%Y-%m-%dT%H:%MZ) (N = $n and $((2 * n))),
$(/usr/bin/rustc --version) for aarch64 and riscv64, $(rustc --version) for x86_64, $(qemu-aarch64 --version | head -1).

These CPUs are emulated here, so there are no times: wall-clock figures for aarch64 and riscv64
need real hardware. Instead, each operation's instructions are counted from the disassembly of
the path it executes: qemu-user logs every translated block's instructions and every execution
of a block (\`-d in_asm,exec,nochain\`), and \`scripts/qemu-insns.py\` gives
(I(2N) − I(N)) / N. The method is checked on x86_64, where the same binary under callgrind
$(agreement).
Guest instructions only: the ucontext backend's two \`rt_sigprocmask\` system calls per switch
cost far more in the kernel than these counts show. The callgrind table above comes from the last
\`scripts/bench.sh\` run; where it and this section disagree, compare their dates.

| operation | x86_64 | aarch64 | riscv64 |
|---|--:|--:|--:|
| round trip, \`asm\` backend | $(value x86_64 x86_64-asm costack) | $(value aarch64 aarch64-asm costack) | $(value riscv64 riscv64-asm costack) |
| round trip, \`ucontext\` backend | $(value x86_64 x86_64-ucontext costack) | $(value aarch64 aarch64-ucontext costack) | $(value riscv64 riscv64-ucontext costack) |
| round trip, corosensei | $(value x86_64 x86_64-corosensei corosensei) | $(value aarch64 aarch64-corosensei corosensei) | $(value riscv64 riscv64-corosensei corosensei) |
| create + run + drop, pooled (\`asm\`) | $(value x86_64 x86_64-asm costack-create) | $(value aarch64 aarch64-asm costack-create) | $(value riscv64 riscv64-asm costack-create) |
| create, enter, yield, enter, end (QEMU's /perf/cost), pooled (\`asm\`) | $(value x86_64 x86_64-asm costack-cost) | $(value aarch64 aarch64-asm costack-cost) | $(value riscv64 riscv64-asm costack-cost) |
| \`CoMutex\` hand-off (\`asm\`) | $(value x86_64 x86_64-asm costack-handoff) | $(value aarch64 aarch64-asm costack-handoff) | $(value riscv64 riscv64-asm costack-handoff) |
| generator, one value (\`asm\`) | $(value x86_64 x86_64-asm costack-generator) | $(value aarch64 aarch64-asm costack-generator) | $(value riscv64 riscv64-asm costack-generator) |

Of a round trip, the switch itself (\`src/arch/<cpu>.rs\`: enter, the coroutine's resume code,
yield, the enterer's continuation) is 15 instructions on aarch64 and 25 on riscv64 (RISC-V has
no paired loads and stores, and forms the resume address in two instructions); the rest is the
same bookkeeping on every CPU (the current-coroutine pointer, the state byte, the cancel and
deferred wake-up checks).

<details><summary>aarch64, one round trip on the asm backend (as executed)</summary>

\`\`\`text
$(listing aarch64-asm costack)
\`\`\`
</details>

<details><summary>riscv64, one round trip on the asm backend (as executed)</summary>

\`\`\`text
$(listing riscv64-asm costack)
\`\`\`
</details>
EOF
}

out=${CROSS_INSNS_OUT:-BENCHMARKS.md}
if [ "$out" = - ]; then
  section
  exit 0
fi
heading="## Other CPUs: instructions per operation (qemu-user)"
section >"$work/section.md"
python3 - "$out" "$heading" "$work/section.md" <<'PY'
import sys
path, heading, section = sys.argv[1], sys.argv[2], sys.argv[3]
new = open(section).read().rstrip("\n") + "\n"
try:
    text = open(path).read()
except FileNotFoundError:
    text = ""
lines = text.splitlines(keepends=True)
out, skipping = [], False
for line in lines:
    if line.rstrip("\n") == heading:
        skipping = True
        continue
    if skipping and line.startswith("## "):
        skipping = False
    if not skipping:
        out.append(line)
body = "".join(out).rstrip("\n")
open(path, "w").write((body + "\n\n" if body else "") + new)
PY
echo "cross-insns: wrote the section to $out" >&2
