#!/usr/bin/env bash
# Sequence-level interpolation (Kim & Rush 2016, section 3.3): the student is trained on the
# hypothesis of the teacher's K-best (the paper: beam K = 35) closest to the reference by
# sentence BLEU.
#
# NAIVE=1 also trains the naive interpolation the paper starts from: each batch holds the gold
# and the teacher's Seq-KD target, loss = (1 - ALPHA) NLL(gold) + ALPHA NLL(teacher)
# (--task translation_kd --distilled-data --criterion seq_kd_interpolation).
#
#   K=35 examples/seq_inter.sh [CORPUS_DIR] [--quick]    (settings: examples/common.sh)
source "$(dirname "$0")/common.sh"

prepare_data
train_teacher
train_baseline
build_seq_inter  # beam K, K-best, closest to the reference -> $SEQ_INTER
student "seq-inter-k$K" "$SEQ_INTER" "${LS[@]}"
if [[ ${NAIVE:-0} == 1 ]]; then
    build_seq_kd  # aligned with the gold data (--fallback gold), so it is --distilled-data
    student "naive-inter-b$BEAM-a$ALPHA" "$BIN" --task translation_kd --distilled-data "$SEQ_KD" \
        --criterion seq_kd_interpolation --kd-alpha "$ALPHA" --label-smoothing 0.1
fi
report
