#!/usr/bin/env bash
# Distilling translations made by another system (an NLLB or OPUS-MT model, an LLM, a commercial
# service): its output on the training sources is the student's training target, and no teacher
# runs in this plugin (seqkd-build --translations).
#
#   TRANSLATIONS=train.hyp examples/external_translations.sh [CORPUS_DIR] [--quick]
#
# TRANSLATIONS holds one raw (detokenized) translation per line of CORPUS_DIR/train.src, in
# order. Without it the recipe makes a stand-in for the other system: the recipes' teacher,
# exported to CTranslate2 and run by seqkd-translate (beam $BEAM) on the raw training sources.
# MONO (raw source-language text) and MONO_TRANSLATIONS (one translation per line of MONO) add
# monolingual text and its translations after the parallel pairs. The text is segmented with
# the recipes' sentencepiece model. Settings: examples/common.sh.
source "$(dirname "$0")/common.sh"

prepare_data

if [[ -z "${TRANSLATIONS:-}" ]]; then
    train_teacher
    TRANSLATIONS=$KD/external-b$BEAM.train.hyp
    if [[ ! -f $TRANSLATIONS ]]; then
        log "stand-in for another system: the teacher in CTranslate2 translates $RAW/train.src"
        seqkd-export --input "$TEACHER" --format ctranslate2 --spm-model "$SPM/spm.model" \
            --output "$KD/teacher-ct2" --force >&2
        seqkd-translate "$KD/teacher-ct2" --input "$RAW/train.src" --beam "$BEAM" \
            --no-progress-bar --output "$TRANSLATIONS.partial"
        mv "$TRANSLATIONS.partial" "$TRANSLATIONS"
    fi
fi
train_baseline

EXTRA=()
if [[ -n "${MONO:-}" ]]; then
    EXTRA=(--mono-source "$MONO"
           --mono-translations "${MONO_TRANSLATIONS:?MONO needs MONO_TRANSLATIONS}")
fi
# the data and the student are named by the translations' content: other translations, other
# folders (seqkd-build itself redoes what their content changes)
NAME=external-$(cat "$TRANSLATIONS" ${MONO:+"$MONO" "$MONO_TRANSLATIONS"} | sha256sum | cut -c1-10)
EXTERNAL=$KD/data-$NAME
log "$(basename "$EXTERNAL"): seqkd-build --translations $TRANSLATIONS ${EXTRA[*]}"
seqkd-build --data "$BIN" --output "$EXTERNAL" --strategy seq-kd --translations "$TRANSLATIONS" \
    --spm-model "$SPM/spm.model" "${EXTRA[@]}" 2>>"$EXTERNAL.build.log" \
    || { tail -5 "$EXTERNAL.build.log" >&2; exit 1; }
student "$NAME" "$EXTERNAL" "${LS[@]}"
report
