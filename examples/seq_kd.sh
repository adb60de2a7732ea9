#!/usr/bin/env bash
# Sequence-level KD (Kim & Rush 2016, section 3.2): the student is trained, with the ordinary
# NLL, on the teacher's beam-search output instead of the references.
#
#   examples/seq_kd.sh [CORPUS_DIR] [--quick]        (settings: examples/common.sh)
source "$(dirname "$0")/common.sh"

prepare_data
train_teacher
train_baseline
build_seq_kd  # teacher beam $BEAM, its best hypothesis per sentence -> $SEQ_KD
student "seq-kd-b$BEAM" "$SEQ_KD" "${LS[@]}"
report
