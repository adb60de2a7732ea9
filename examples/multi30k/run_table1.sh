#!/usr/bin/env bash
# Kim & Rush (2016) on Multi30k en-de: every row of the paper's Table 1 with each model
# trained until validation stops improving (--patience), last-5 checkpoint averaging, Seq-Inter
# from the 20-best, the Seq-KD student pruned gradually (class-blind 50/80/90 %, class-uniform
# and class-distribution at 80 %), 3 seeds of the baseline, Seq-KD and the best row, Seq-KD
# data from Teacher + Seq-Inter, the deployment (CTranslate2) and on-policy (GKD) rows, CPU
# decoding speed, and the preset's targets judged against the run. Writes
# docs/results/multi30k-v2.md, its plot (.png) and the stage logs (multi30k-v2-logs/).
#
#   examples/multi30k/run_table1.sh [CORPUS_DIR] [seqkd-benchmark options...]
#
# CORPUS_DIR: raw train/valid/test.{src,tgt} (+ test_*.{src,tgt}), default
# ../shared/data/multi30k-en-de beside the repository. Environment: OUT (working directory,
# default runs/multi30k: data, checkpoints; not committed), DOC (results page, default
# docs/results/multi30k-v2.md). The whole benchmark is two runs of about 3 and 4 hours on 2
# CPU cores (~20,000 and ~29,000 CPU-seconds at the epoch caps, from measured stage costs; the
# multi30k preset in fairseq_seqkd/experiments/benchmark_presets.py shows the per-stage
# estimate), in the same OUT:
#
#   examples/multi30k/run_table1.sh --part table1   # Table 1, averaging, pruning 80/90 %, speed
#   examples/multi30k/run_table1.sh --part extra    # stronger source, seeds, 20-best, pruning 50 %
#                                            # and schemes, deployment, GKD, filtered
#
# The teacher is alone in the table1 run until it is trained: train it first with both cores,
# `examples/multi30k/run_table1.sh --only teacher --threads 2` (stamps ignore thread and worker
# counts, so the 1-thread run that follows skips it).
#
# Without --part it runs both (about 7 hours). Each page section names the run that makes it;
# the page is rewritten after each run from whatever is done. Stop a run at any time and run it
# again to continue where it stopped (every stage is stamped; fairseq-train resumes its
# checkpoint).
set -euo pipefail
DOC=${DOC:-docs/results/multi30k-v2.md}
source "$(dirname "$0")/benchmark_env.sh"  # REPO, CORPUS, BENCH, ANALYSIS
exec "$BENCH" --corpus "$CORPUS" --out "${OUT:-runs/multi30k}" --doc "$DOC" "${ANALYSIS[@]}" "$@"
