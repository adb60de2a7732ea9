#!/usr/bin/env bash
# Word-level KD (Kim & Rush 2016, section 3.1): the student matches the teacher's distribution at
# every target position of the gold data, loss = (1 - ALPHA) NLL + ALPHA KL(teacher || student).
#
#   examples/word_kd.sh [CORPUS_DIR] [--quick]       (settings: examples/common.sh)
source "$(dirname "$0")/common.sh"

prepare_data
train_teacher
train_baseline
student "word-kd-a$ALPHA" "$BIN" "${WORD_KD[@]}"
report
