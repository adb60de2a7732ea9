#!/usr/bin/env bash
# Pruning the distilled student (Kim & Rush 2016, section 5.3; See et al. 2016): remove the
# smallest-magnitude weights (class-blind by default), retrain a few epochs with the pruned weights
# held at exactly zero, export a plain fairseq checkpoint, and compare BLEU, parameter counts and
# file size against the unpruned student, like the paper's pruning table.
#
#   examples/prune.sh DATA_BIN STUDENT.pt REFERENCE [--quick]
#
# DATA_BIN is the fairseq data-bin the student was trained on (the distilled data for a Seq-KD
# student); its valid split is used for model selection, its test split for BLEU. REFERENCE is the
# raw reference text of that test split, one sentence a line: BLEU is seqkd-evaluate's, sacrebleu
# on the detokenized output against it, as the demo and the benchmark score. STUDENT.pt is any
# fairseq transformer checkpoint; its architecture options are read from the checkpoint. --quick
# retrains 1 epoch instead of EPOCHS.
#
# Run it again and it resumes: retraining goes on from its checkpoint_last.pt (a finished one does
# no training), pruning and export are redone (seconds), BLEU is measured again. The folders are
# named by what changes their contents: OUT by the student's name and content digest, then
# SCHEME-pPCT (the pruned checkpoint), then retrain-eEPOCHS-<digest of the data-bin's train and
# valid splits and dictionaries, LR, MAX_TOKENS, CRITERION and the architecture options> (the
# retrained one).
#
# Environment (defaults in brackets):
#   OUT          working folder [prune-out/<name of STUDENT.pt>-<its content digest>]
#   RATIOS       prune percentages [50 80 90]
#   SCHEME       class-blind, class-uniform or class-distribution [class-blind]
#   EPOCHS       retraining epochs [3; 1 with --quick]
#   LR           retraining learning rate, fixed schedule [the student's first --lr]
#   MAX_TOKENS   retraining batch size [the student's --max-tokens, else 4096]
#   CRITERION    retraining criterion options [label_smoothed_cross_entropy, smoothing 0.1]
#   MODEL_ARGS   override the architecture options read from STUDENT.pt
#   POST_PROCESS subword scheme removed before scoring, e.g. sentencepiece [none]
#   DEVICE       cpu or cuda [cuda if torch sees a GPU, else cpu]
set -euo pipefail

usage() { echo "usage: $0 DATA_BIN STUDENT.pt REFERENCE [--quick]" >&2; exit 2; }
QUICK=0
ARGS=()
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h|--help) usage ;;
        *) ARGS+=("$arg") ;;
    esac
done
[[ ${#ARGS[@]} -eq 3 ]] || usage
DATA=${ARGS[0]}
STUDENT=${ARGS[1]}
REFERENCE=${ARGS[2]}
compgen -G "$DATA/dict.*.txt" > /dev/null \
    || { echo "prune.sh: error: $DATA is not a fairseq data-bin (no dict.*.txt)" >&2; exit 1; }
[[ -f "$STUDENT" ]] || { echo "prune.sh: error: $STUDENT does not exist" >&2; exit 1; }
[[ -f "$REFERENCE" ]] || { echo "prune.sh: error: $REFERENCE does not exist" >&2; exit 1; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PLUGIN=$REPO/fairseq_seqkd
if [[ -x "$REPO/.venv/bin/fairseq-train" ]]; then PATH=$REPO/.venv/bin:$PATH; fi
PY=$(command -v python)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# digest PATH...: the first 12 hex digits of the content digest of files and directories
digest() {
    "$PY" -c 'import hashlib, sys
from fairseq_seqkd.stages import content_digest
h = hashlib.sha256("\n".join(content_digest(p) for p in sys.argv[1:]).encode())
print(h.hexdigest()[:12])' "$@"
}

OUT=${OUT:-prune-out/$(basename "$STUDENT" .pt)-$(digest "$STUDENT")}
RATIOS=${RATIOS:-50 80 90}
SCHEME=${SCHEME:-class-blind}
if [[ $QUICK == 1 ]]; then EPOCHS=${EPOCHS:-1}; else EPOCHS=${EPOCHS:-3}; fi
POST_PROCESS=${POST_PROCESS:-none}
if [[ -z "${DEVICE:-}" ]]; then
    DEVICE=$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
fi
CPU=(); [[ $DEVICE == cpu ]] && CPU=(--cpu)
mkdir -p "$OUT"

# --- architecture and training settings of the student, read from its checkpoint
read_student() {
    "$PY" - "$STUDENT" "$1" <<'EOF'
import argparse, shlex, sys
import torch
import fairseq_seqkd  # noqa: F401  (allow-lists argparse.Namespace for weights_only)
from fairseq.models import ARCH_MODEL_REGISTRY

state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
cfg = state["cfg"]
what = sys.argv[2]
if what == "lr":
    print(cfg["optimization"]["lr"][0])
elif what == "max_tokens":
    print(cfg["dataset"].get("max_tokens") or 4096)
else:
    model = cfg["model"]
    model = vars(model) if isinstance(model, argparse.Namespace) else dict(model)
    arch = model.get("arch") or model["_name"]
    parser = argparse.ArgumentParser()
    ARCH_MODEL_REGISTRY[arch].add_args(parser)
    flags = ["--arch", arch]
    for action in parser._actions:
        value = model.get(action.dest)
        if not action.option_strings or action.dest == "help" or value is None:
            continue
        option = action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            flags += [option] if value else []
        elif isinstance(action, argparse._StoreFalseAction):
            flags += [] if value else [option]
        elif not isinstance(value, (list, dict)):
            flags += [option, str(value)]
    print(shlex.join(flags))
EOF
}
if [[ -n "${MODEL_ARGS:-}" ]]; then read -r -a MODEL <<< "$MODEL_ARGS"
else eval "MODEL=($(read_student model))"; fi
LR=${LR:-$(read_student lr)}
MAX_TOKENS=${MAX_TOKENS:-$(read_student max_tokens)}
read -r -a CRIT <<< "${CRITERION:---criterion label_smoothed_cross_entropy --label-smoothing 0.1}"
# what the retraining reads of DATA_BIN: dictionaries, train and valid splits
DATA_DIGEST=$(digest "$DATA"/dict.*.txt "$DATA"/train*.* "$DATA"/valid*.*)
SETTINGS=$("$PY" -c 'import hashlib, sys
print(hashlib.sha256("\n".join(sys.argv[1:]).encode()).hexdigest()[:10])' \
    "$DATA_DIGEST" "$LR" "$MAX_TOKENS" "${CRIT[*]}" "${MODEL[*]}")
RETRAIN=retrain-e$EPOCHS-$SETTINGS

echo "== unpruned student: $STUDENT -> $OUT"
seqkd-export --input "$STUDENT" --output "$OUT/student.pt" > "$OUT/student.export.txt"
BEFORE=(--model "student=$OUT/student.pt")  # greedy BLEU right after pruning
AFTER=(--model "student=$OUT/student.pt")   # BLEU after retraining
REPORTS=("student=$OUT/student.export.txt")

for pct in $RATIOS; do
    ratio=$("$PY" -c "print($pct / 100)")
    dir=$OUT/$SCHEME-p$pct
    run=$dir/$RETRAIN
    mkdir -p "$run"
    echo "== prune $pct % ($SCHEME), retrain $EPOCHS epoch(s) -> $run"
    seqkd-prune --input "$STUDENT" --output "$dir/pruned.pt" --prune-ratio "$ratio" \
        --prune-scheme "$SCHEME" > "$dir/prune.log"
    # pruned without retraining (a stock checkpoint too), for the "before" column
    seqkd-export --input "$dir/pruned.pt" --output "$dir/pruned-export.pt" > /dev/null
    # --finetune-from-model on first launch only: fairseq-train resumes from checkpoint_last;
    # the task rebuilds the masks from the pruned zeros and keeps them through Adam
    fairseq-train "$DATA" --user-dir "$PLUGIN" --task translation_kd \
        --prune-ratio "$ratio" --prune-scheme "$SCHEME" \
        --finetune-from-model "$dir/pruned.pt" "${MODEL[@]}" "${CRIT[@]}" \
        --optimizer adam --lr "$LR" --max-tokens "$MAX_TOKENS" --max-epoch "$EPOCHS" \
        --save-dir "$run" --no-epoch-checkpoints --no-progress-bar --log-interval 50 \
        --seed 1 --num-workers 0 "${CPU[@]}" >> "$run/train.log" 2>&1 \
        || { tail -5 "$run/train.log" >&2; exit 1; }
    seqkd-export --input "$run/checkpoint_best.pt" --output "$run/retrained.pt" \
        > "$run/retrained.export.txt"
    BEFORE+=(--model "p$pct=$dir/pruned-export.pt")
    AFTER+=(--model "p$pct=$run/retrained.pt")
    REPORTS+=("p$pct=$run/retrained.export.txt")
done

echo "== BLEU on the test split of $DATA (seqkd-evaluate)"
EVAL=(seqkd-evaluate "$DATA" --subset test --reference "$REFERENCE" --remove-bpe "$POST_PROCESS"
      "${CPU[@]}")
TABLE=$OUT/table-$SCHEME-$RETRAIN
"${EVAL[@]}" --beams 1 "${BEFORE[@]}" --json "$TABLE.pruned.json" > /dev/null
"${EVAL[@]}" --beams 1 5 "${AFTER[@]}" --json "$TABLE.retrained.json" > /dev/null

echo
echo "Pruning the student ($SCHEME; BLEU on the test split of $DATA, seqkd-evaluate; size of the"
echo "exported checkpoint; 'pruned' = BLEU greedy right after pruning, before retraining)"
"$PY" - "$TABLE" "${REPORTS[@]}" <<'EOF' | tee "$TABLE.txt"
import json, os, re, sys

table, reports = sys.argv[1], dict(r.split("=", 1) for r in sys.argv[2:])
def scores(suffix):
    with open(f"{table}.{suffix}.json", encoding="utf-8") as f:
        return {(s["model"], s["beam"]): s for s in json.load(f)}
before, after = scores("pruned"), scores("retrained")
line = "{:<10} {:>6} {:>10} {:>10} {:>8} {:>8} {:>8} {:>10}"
print(line.format("model", "prune%", "params", "non-zero", "pruned", "greedy", "beam5", "size"))
for name, report in reports.items():
    with open(report, encoding="utf-8") as f:
        text = f.read()
    params, nonzero = re.search(r"^  output: ([\d,]+) parameters, ([\d,]+) non-zero", text,
                                re.M).groups()
    path = re.search(r"-> (\S+)$", text.splitlines()[0]).group(1)
    pruned = "-" if name == "student" else f"{before[(name, 1)]['bleu']:.2f}"
    print(line.format("student" if name == "student" else "pruned",
                      "0" if name == "student" else name[1:], params, nonzero, pruned,
                      f"{after[(name, 1)]['bleu']:.2f}", f"{after[(name, 5)]['bleu']:.2f}",
                      f"{os.path.getsize(path) // 1024}K"))
EOF
