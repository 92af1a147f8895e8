#!/usr/bin/env bash
# A long run of costack-nbd's protocol fuzzer against a release build of the server: several
# connections at once send handshake garbage and mixes of valid and invalid requests while a
# checker client writes patterns to its own region and verifies every byte it reads back. The
# run fails if the server dies, the checker's data is ever wrong, a fuzzer gets a reply to a
# cookie it did not send (or twice), the server's open descriptors do not come back to their
# number before the run, or a fresh client is not served at the end.
#
#   scripts/nbd-fuzz.sh                      # 10 minutes per export, a seed from the clock
#   scripts/nbd-fuzz.sh 3600                 # an hour per export
#   scripts/nbd-fuzz.sh 600 0x15f022         # replay a seed (CI's short runs use 0x15f022)
#   scripts/nbd-fuzz.sh 600 0x15f022 file    # only the file export (or: memory)
#   NBD_FUZZ_CONNS=16 NBD_FUZZ_THREADS=4 scripts/nbd-fuzz.sh 600   # more of both
#
# Arguments: DURATION in seconds (default 600), SEED (decimal or 0x hex; default: from the
# clock, printed), EXPORT (`memory`: a 64 MiB in-memory disk; `file`: a 64 MiB sparse file
# served with --writes aio; default: both, one after the other). The environment sets the rest:
# NBD_FUZZ_CONNS (fuzzing connections at once, default 4) and NBD_FUZZ_THREADS (the server's
# --threads, default 2). The fuzzer itself is crates/costack-nbd/tests/common/fuzz.rs, run
# through tests/fuzz.rs (the same tests as in `cargo test`, with these parameters); the server
# is the `costack-nbd` binary of the same release build, in its own process. A failure prints
# the seed and the parameters to replay it.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
secs=${1:-600}
seed=${2:-$(date +%s%N)}
kind=${3:-}
[[ $secs =~ ^[0-9]+$ ]] || { echo "nbd-fuzz: DURATION must be a number of seconds, not '$secs'" >&2; exit 2; }
[[ $seed =~ ^(0x[0-9a-fA-F]+|[0-9]+)$ ]] || { echo "nbd-fuzz: SEED must be a number, not '$seed'" >&2; exit 2; }
case $kind in
  ''|memory|file) ;;
  *) echo "nbd-fuzz: EXPORT must be memory or file, not '$kind'" >&2; exit 2 ;;
esac

echo "nbd-fuzz: ${secs} s per export (${kind:-memory, then file}), seed ${seed}," \
  "${NBD_FUZZ_CONNS:-4} connections, ${NBD_FUZZ_THREADS:-2} server threads"
NBD_FUZZ_SECS=$secs NBD_FUZZ_SEED=$seed \
  cargo test --release -p costack-nbd --test fuzz -- --nocapture --test-threads=1 \
  "fuzzing_a_${kind}"
