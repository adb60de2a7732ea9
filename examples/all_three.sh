#!/usr/bin/env bash
# Seq-KD + Seq-Inter + Word-KD, the paper's best student: word_kd on the Seq-KD data, then
# fine-tuned with word_kd on the Seq-Inter data (K-best closest to the reference).
#
#   K=35 examples/all_three.sh [CORPUS_DIR] [--quick]    (settings: examples/common.sh)
source "$(dirname "$0")/common.sh"

prepare_data
train_teacher
train_baseline
build_seq_kd
build_seq_inter
student "seq-kd-b$BEAM+word-kd-a$ALPHA" "$SEQ_KD" "${WORD_KD[@]}"
finetune "seq-inter-k$K+word-kd-a$ALPHA" "seq-kd-b$BEAM+word-kd-a$ALPHA" "$SEQ_INTER" \
    "${WORD_KD[@]}"
report
