#!/usr/bin/env bash
# Multi30k en-de, a deployed student at its teacher's BLEU (preset multi30k-mono): two teachers
# and their ensemble, Seq-KD with and without the 115,548 English captions of the monolingual
# set (same updates, and to convergence), Seq-KD + mono from the ensemble, GKD fine-tuning,
# student sizes, CTranslate2 deployment, seeds and paired bootstrap p-values. Writes
# docs/results/multi30k.md and its archive (multi30k-logs/: stage logs, stamps,
# hypotheses), from which a later part on a fresh machine keeps the earlier parts' rows.
#
#   examples/multi30k/run.sh [CORPUS_DIR] [seqkd-benchmark options...]
#
# CORPUS_DIR: raw train/valid/test.{src,tgt} (+ test_*.{src,tgt}), default
# ../shared/data/multi30k-en-de beside the repository. Environment: MONO (the monolingual
# source, default ../shared/data/multi30k-en-mono/train.src), OUT (working directory, default
# runs/multi30k-mono; not committed), DOC (results page, default
# docs/results/multi30k.md). Three resumable parts, in order (CPU seconds estimated in
# the preset, fairseq_seqkd/experiments/benchmark_presets.py; ~53,000 in all):
#
#   examples/multi30k/run.sh --only teacher --threads 2   # the teacher first, both cores
#   examples/multi30k/run.sh --part core      # Seq-KD, Seq-KD + mono (3 seeds), converged
#   examples/multi30k/run.sh --part ensemble  # second teacher, ensemble, its mono data and rows
#   examples/multi30k/run.sh --part final     # GKD, sizes, deployment, best row's seeds
#
# Stop a run at any time and run it again to continue (training stages resume at any
# --threads; the deployment measurement holds its thread count, so a rerun with another
# --threads measures it again: `--only NAME --threads 2` runs one training stage faster).
# Commit the page and its -logs/ folder after each part: a part run on a fresh machine
# retrains the teachers and data it needs and reads the earlier rows from there.
set -euo pipefail
DOC=${DOC:-docs/results/multi30k.md}
source "$(dirname "$0")/benchmark_env.sh"  # REPO, CORPUS, BENCH, ANALYSIS
MONO=${MONO:-$REPO/../shared/data/multi30k-en-mono/train.src}
exec "$BENCH" --preset multi30k-mono --corpus "$CORPUS" --mono-source "$MONO" \
    --out "${OUT:-runs/multi30k-mono}" --doc "$DOC" "${ANALYSIS[@]}" "$@"
