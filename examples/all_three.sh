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
student seq-kd+word-kd "$SEQ_KD" "${WORD_KD[@]}"
finetune "seq-kd+seq-inter-k$K+word-kd" seq-kd+word-kd "$SEQ_INTER" "${WORD_KD[@]}"
report teacher baseline seq-kd+word-kd "seq-kd+seq-inter-k$K+word-kd"
