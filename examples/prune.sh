#!/usr/bin/env bash
# Pruning the distilled student (Kim & Rush 2016, section 5.3; See et al. 2016): remove the
# smallest-magnitude weights (class-blind), retrain a few epochs with the pruned weights held at
# exactly zero, export a plain fairseq checkpoint, and compare BLEU, parameter counts and file
# size against the unpruned student, like the paper's pruning table.
#
#   examples/prune.sh DATA_BIN STUDENT.pt [--quick]
#
# DATA_BIN is the fairseq data-bin the student was trained on (the distilled data for a Seq-KD
# student); its valid split is used for model selection, its test split for BLEU. STUDENT.pt is
# any fairseq transformer checkpoint; its architecture options are read from the checkpoint.
# --quick retrains 1 epoch instead of EPOCHS. Each finished step is skipped when the recipe is
# run again, and an interrupted retraining resumes from its checkpoint_last.pt.
#
# Environment (defaults in brackets):
#   OUT          working folder [prune-out/<name of STUDENT.pt>]
#   RATIOS       prune percentages [50 80 90]
#   SCHEME       class-blind, class-uniform or class-distribution [class-blind]
#   EPOCHS       retraining epochs [3; 1 with --quick]
#   LR           retraining learning rate, fixed schedule [the student's first --lr]
#   MAX_TOKENS   retraining batch size [the student's --max-tokens, else 4096]
#   CRITERION    retraining criterion options [label_smoothed_cross_entropy, smoothing 0.1]
#   MODEL_ARGS   override the architecture options read from STUDENT.pt
#   POST_PROCESS fairseq-generate --post-process, e.g. sentencepiece [none]
#   DEVICE       cpu or cuda [cuda if torch sees a GPU, else cpu]
set -euo pipefail

usage() { echo "usage: $0 DATA_BIN STUDENT.pt [--quick]" >&2; exit 2; }
QUICK=0
ARGS=()
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h|--help) usage ;;
        *) ARGS+=("$arg") ;;
    esac
done
[[ ${#ARGS[@]} -eq 2 ]] || usage
DATA=${ARGS[0]}
STUDENT=${ARGS[1]}
compgen -G "$DATA/dict.*.txt" > /dev/null \
    || { echo "prune.sh: error: $DATA is not a fairseq data-bin (no dict.*.txt)" >&2; exit 1; }
[[ -f "$STUDENT" ]] || { echo "prune.sh: error: $STUDENT does not exist" >&2; exit 1; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PLUGIN=$REPO/fairseq_seqkd
if [[ -x "$REPO/.venv/bin/fairseq-train" ]]; then PATH=$REPO/.venv/bin:$PATH; fi
PY=$(command -v python)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

name=$(basename "$STUDENT" .pt)
OUT=${OUT:-prune-out/$name}
RATIOS=${RATIOS:-50 80 90}
SCHEME=${SCHEME:-class-blind}
if [[ $QUICK == 1 ]]; then EPOCHS=${EPOCHS:-1}; else EPOCHS=${EPOCHS:-3}; fi
POST_PROCESS=${POST_PROCESS:-}
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

# --- BLEU of one exported checkpoint with stock fairseq-generate (no --user-dir) and sacrebleu
bleu() {  # bleu CKPT BEAM -> prints BLEU, caches it beside CKPT
    local ckpt=$1 beam=$2 cache=${1%.pt}.beam$2.bleu
    if [[ ! -s $cache ]]; then
        local gen=${1%.pt}.beam$2.gen
        local post=(); [[ -n $POST_PROCESS ]] && post=(--post-process "$POST_PROCESS")
        fairseq-generate "$DATA" --path "$ckpt" --gen-subset test --beam "$beam" \
            --batch-size 64 "${CPU[@]}" "${post[@]}" > "$gen.tmp" 2> "$gen.log"
        mv "$gen.tmp" "$gen"
        grep '^D-' "$gen" | sort -t- -k2 -n | cut -f3 > "$gen.hyp"
        grep '^T-' "$gen" | sort -t- -k2 -n | cut -f2 > "$gen.ref"
        sacrebleu "$gen.ref" -i "$gen.hyp" -b -w 2 > "$cache.tmp"
        mv "$cache.tmp" "$cache"
    fi
    cat "$cache"
}

# --- one table row: name, prune %, exported checkpoint, BLEU before retraining
ROWS=()
row() {  # row LABEL PCT EXPORT.pt REPORT BLEU_PRUNED
    local params nonzero size
    params=$(sed -n 's/^  output: \([0-9,]*\) parameters.*/\1/p' "$4")
    nonzero=$(sed -n 's/^  output: .* parameters, \([0-9,]*\) non-zero.*/\1/p' "$4")
    size=$(stat -c %s "$3")
    ROWS+=("$(printf '%-10s %6s %10s %10s %8s %8s %8s %10s' "$1" "$2" "$params" "$nonzero" \
        "$5" "$(bleu "$3" 1)" "$(bleu "$3" 5)" "$((size / 1024))K")")
}

echo "== unpruned student: $STUDENT"
if [[ ! -s $OUT/student.export ]]; then
    seqkd-export --input "$STUDENT" --output "$OUT/student.pt" > "$OUT/student.export.tmp"
    mv "$OUT/student.export.tmp" "$OUT/student.export"
fi
row student 0 "$OUT/student.pt" "$OUT/student.export" -

for pct in $RATIOS; do
    ratio=$("$PY" -c "print($pct / 100)")
    dir=$OUT/p$pct
    mkdir -p "$dir"
    echo "== prune $pct % ($SCHEME), retrain $EPOCHS epoch(s)"
    if [[ ! -s $dir/pruned.pt ]]; then
        seqkd-prune --input "$STUDENT" --output "$dir/pruned.pt" --prune-ratio "$ratio" \
            --prune-scheme "$SCHEME" > "$dir/prune.log"
    fi
    # pruned without retraining (a stock checkpoint too), for the "before" column
    if [[ ! -s $dir/pruned.export ]]; then
        seqkd-export --input "$dir/pruned.pt" --output "$dir/pruned-export.pt" \
            > "$dir/pruned.export.tmp"
        mv "$dir/pruned.export.tmp" "$dir/pruned.export"
    fi
    before=$(bleu "$dir/pruned-export.pt" 1)
    if [[ ! -s $dir/retrained.export ]]; then
        # --finetune-from-model on first launch only: a killed run resumes from checkpoint_last
        # the task rebuilds the masks from the pruned zeros and keeps them through Adam
        fairseq-train "$DATA" --user-dir "$PLUGIN" --task translation_kd \
            --prune-ratio "$ratio" --prune-scheme "$SCHEME" \
            --finetune-from-model "$dir/pruned.pt" "${MODEL[@]}" "${CRIT[@]}" \
            --optimizer adam --lr "$LR" --max-tokens "$MAX_TOKENS" --max-epoch "$EPOCHS" \
            --save-dir "$dir/ckpt" --no-epoch-checkpoints --no-progress-bar --log-interval 50 \
            --seed 1 --num-workers 0 "${CPU[@]}" > "$dir/train.log" 2>&1 \
            || { tail -5 "$dir/train.log" >&2; exit 1; }
        seqkd-export --input "$dir/ckpt/checkpoint_best.pt" --output "$dir/retrained.pt" \
            > "$dir/retrained.export.tmp"
        mv "$dir/retrained.export.tmp" "$dir/retrained.export"
    fi
    row "pruned" "$pct" "$dir/retrained.pt" "$dir/retrained.export" "$before"
done

echo
echo "Pruning the student ($SCHEME; BLEU on the test split of $DATA, sacrebleu; size of the"
echo "exported checkpoint; 'pruned' = BLEU greedy right after pruning, before retraining)"
printf '%-10s %6s %10s %10s %8s %8s %8s %10s\n' model prune% params non-zero pruned \
    greedy beam5 size
for r in "${ROWS[@]}"; do echo "$r"; done | tee "$OUT/table.txt"
