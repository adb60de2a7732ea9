#!/usr/bin/env bash
# Seq-KD + Word-KD: the word_kd criterion (teacher distribution at every position) on the
# Seq-KD data instead of the references.
#
#   examples/seq_kd_word_kd.sh [CORPUS_DIR] [--quick]    (settings: examples/common.sh)
source "$(dirname "$0")/common.sh"

prepare_data
train_teacher
train_baseline
build_seq_kd
student "seq-kd-b$BEAM+word-kd-a$ALPHA" "$SEQ_KD" "${WORD_KD[@]}"
report
