#!/usr/bin/env bash
# Seq-KD + Seq-Inter, as the paper does it: train the student on the Seq-KD data, then fine-tune
# it on the Seq-Inter data (the K-best hypothesis closest to the reference, K = 35 in the paper).
#
#   K=35 examples/seq_kd_inter.sh [CORPUS_DIR] [--quick]    (settings: examples/common.sh)
source "$(dirname "$0")/common.sh"

prepare_data
train_teacher
train_baseline
build_seq_kd
build_seq_inter
student "seq-kd-b$BEAM" "$SEQ_KD" "${LS[@]}"
finetune "seq-inter-k$K" "seq-kd-b$BEAM" "$SEQ_INTER" "${LS[@]}"
report
