#!/usr/bin/env bash
# Kim & Rush (2016) on Multi30k en-de (issue 6): every row of the paper's Table 1, word-level
# KD with reverse_kl / js / tvd, the Seq-KD student pruned 50/80/90 %, and CPU decoding speed.
# Writes docs/results/multi30k.md, its plot (.png) and the stage logs (multi30k-logs/).
#
#   examples/multi30k/run.sh [CORPUS_DIR] [seqkd-benchmark options...]
#
# CORPUS_DIR: raw train/valid/test.{src,tgt} (+ test_*.{src,tgt}), default
# ../shared/data/multi30k-en-de beside the repository. Environment: OUT (working directory,
# default runs/multi30k: data, checkpoints; not committed), DOC (results page, default
# docs/results/multi30k.md). About 2 hours on 2 CPU cores; stop it at any time and run it again
# to continue where it stopped (every stage is stamped; fairseq-train resumes its checkpoint).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CORPUS=$REPO/../shared/data/multi30k-en-de
if [[ $# -gt 0 && $1 != -* ]]; then CORPUS=$1; shift; fi
BENCH=$REPO/.venv/bin/seqkd-benchmark
[[ -x $BENCH ]] || BENCH=$(command -v seqkd-benchmark) \
    || { echo "run.sh: seqkd-benchmark not found: run 'make venv' first" >&2; exit 1; }
cd "$REPO"
DOC=${DOC:-docs/results/multi30k.md}
ANALYSIS=()  # the reasons behind the numbers, written after reading a run, if there are any
[[ -f ${DOC%.md}-analysis.md ]] && ANALYSIS=(--analysis "${DOC%.md}-analysis.md")
exec "$BENCH" --corpus "$CORPUS" --out "${OUT:-runs/multi30k}" --doc "$DOC" "${ANALYSIS[@]}" "$@"
