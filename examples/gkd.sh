#!/usr/bin/env bash
# On-policy distillation (GKD, Agarwal et al. 2024): the Seq-KD student is fine-tuned with the
# gkd criterion. On a fraction LAMBDA of the updates it decodes the batch itself (sampling, dropout
# off) and the teacher scores every token of that output with the generalized JSD(beta); the
# other updates are word_kd on the Seq-KD targets with JSD(beta). Beta 0.1 (best for translation
# in the paper) and 0.5, against Seq-KD + Word-KD fine-tuned for the same number of epochs.
#
#   examples/gkd.sh [CORPUS_DIR] [--quick]           (settings: examples/common.sh)
#   LAMBDA  fraction of on-policy updates [0.5]
source "$(dirname "$0")/common.sh"
LAMBDA=${LAMBDA:-0.5}

prepare_data
train_teacher
train_baseline
build_seq_kd
student "seq-kd-b$BEAM" "$SEQ_KD" "${LS[@]}"
finetune "word-kd-a$ALPHA" "seq-kd-b$BEAM" "$SEQ_KD" "${WORD_KD[@]}"
for beta in 0.1 0.5; do
    finetune "gkd-beta$beta-l$LAMBDA-a$ALPHA" "seq-kd-b$BEAM" "$SEQ_KD" --criterion gkd \
        --teacher-path "$TEACHER" --kd-alpha "$ALPHA" --label-smoothing 0.1 \
        --gkd-lambda "$LAMBDA" --gkd-beta "$beta"
done
report
