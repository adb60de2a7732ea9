# Shared setup of the recipes (sourced, not run): corpus, joint sentencepiece, fairseq-preprocess,
# teacher and baseline student, distilled data (seqkd-build), BLEU with sacrebleu.
#
#   examples/<recipe>.sh [CORPUS_DIR] [--quick]
#
# CORPUS_DIR (or CORPUS=...) is a raw parallel corpus: {train,valid,test}.{src,tgt}, one sentence
# a line; default ../shared/data/multi30k-en-de beside the repository. --quick writes the built-in
# synthetic corpus (fairseq_seqkd.experiments.corpus) at a small size and uses tiny models: a few minutes
# on a laptop CPU. Every step is skipped when its output is complete, so a killed recipe resumes
# and recipes sharing WORK reuse the teacher, the baseline and the distilled data.
#
# Environment (defaults in brackets; real corpus / --quick):
#   WORK            working folder [demo-out/recipes/<corpus name> | demo-out/recipes/quick]
#   PY              python of the environment [.venv/bin/python, else python3]
#   SPM_VOCAB       joint sentencepiece vocabulary [8000 | 800]
#   TEACHER_EPOCHS, STUDENT_EPOCHS, FINETUNE_EPOCHS      [12, 15, 5 | 15, 12, 4]
#   BEAM            teacher beam for Seq-KD data [5]
#   K               beam = n-best size for Seq-Inter data (the paper: 35) [35 | 8]
#   ALPHA           weight of the teacher term of word_kd / seq_kd_interpolation [0.5]
#   BASELINE        also train and report the student on gold data (1/0) [1]
#   WORKERS         processes for selection and preprocessing [nproc]
#   QUICK_TRAIN     sentences of the --quick training corpus [4000]
#   DEVICE          cpu or cuda [cuda if torch sees a GPU, else cpu]
set -euo pipefail

RECIPES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$RECIPES")
PLUGIN=$REPO/fairseq_seqkd
if [[ -z "${PY:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PY=$REPO/.venv/bin/python; else PY=python3; fi
fi
PYBIN=$(dirname "$(command -v "$PY")")
export PATH="$PYBIN:$PATH"  # fairseq-train, seqkd-build, ... beside that python

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}"; exit 0 ;;
        -*) echo "$(basename "$0"): unknown option $arg" >&2; exit 2 ;;
        *) CORPUS=$arg ;;
    esac
done

if [[ $QUICK == 1 ]]; then
    WORK=${WORK:-$REPO/demo-out/recipes/quick}
    SPM_VOCAB=${SPM_VOCAB:-800}
    TEACHER_EPOCHS=${TEACHER_EPOCHS:-15}
    STUDENT_EPOCHS=${STUDENT_EPOCHS:-12}
    FINETUNE_EPOCHS=${FINETUNE_EPOCHS:-4}
    K=${K:-8}
    TEACHER_ARCH=(--encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 64
                  --decoder-embed-dim 64 --encoder-ffn-embed-dim 256 --decoder-ffn-embed-dim 256
                  --encoder-attention-heads 4 --decoder-attention-heads 4)
    STUDENT_ARCH=(--encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 64
                  --decoder-embed-dim 64 --encoder-ffn-embed-dim 128 --decoder-ffn-embed-dim 128
                  --encoder-attention-heads 4 --decoder-attention-heads 4)
    OPTIM=(--lr 0.005 --warmup-updates 100 --dropout 0.1 --max-tokens 2048)
else
    CORPUS=${CORPUS:-$REPO/../shared/data/multi30k-en-de}
    WORK=${WORK:-$REPO/demo-out/recipes/$(basename "$CORPUS")}
    SPM_VOCAB=${SPM_VOCAB:-8000}
    TEACHER_EPOCHS=${TEACHER_EPOCHS:-12}
    STUDENT_EPOCHS=${STUDENT_EPOCHS:-15}
    FINETUNE_EPOCHS=${FINETUNE_EPOCHS:-5}
    K=${K:-35}
    # the sizes of the hand-made baseline in ../shared/PEERS.md: teacher 3+3 x 256, student 2+2 x 128
    TEACHER_ARCH=(--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256
                  --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024
                  --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4
                  --decoder-attention-heads 4)
    STUDENT_ARCH=(--encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 128
                  --decoder-embed-dim 128 --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512
                  --encoder-attention-heads 4 --decoder-attention-heads 4)
    OPTIM=(--lr 0.001 --warmup-updates 1000 --dropout 0.3 --max-tokens 4096)
fi
BEAM=${BEAM:-5}
ALPHA=${ALPHA:-0.5}
BASELINE=${BASELINE:-1}
WORKERS=${WORKERS:-$(nproc 2>/dev/null || echo 1)}
QUICK_TRAIN=${QUICK_TRAIN:-4000}
if [[ -z "${DEVICE:-}" ]]; then
    DEVICE=$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
fi
CPU=()
[[ $DEVICE == cpu ]] && CPU=(--cpu)

RAW=$WORK/raw
SPM=$WORK/spm
BIN=$WORK/bin
TEACHER=$WORK/teacher/checkpoint_best.pt
mkdir -p "$WORK"

log() { printf '\n=== %s: %s\n' "$(basename "$0" .sh)" "$*" >&2; }

# --------------------------------------------------------------------------- data

prepare_corpus() {
    if [[ $QUICK == 1 ]]; then
        log "synthetic corpus ($QUICK_TRAIN training pairs) -> $RAW"
        "$PY" -c "import sys
from fairseq_seqkd.experiments.corpus import CorpusSpec, write_corpus
write_corpus(sys.argv[1], CorpusSpec(train=int(sys.argv[2]), valid=300, test=300))" \
            "$RAW" "$QUICK_TRAIN"
    else
        for f in train.src train.tgt valid.src valid.tgt test.src test.tgt; do
            [[ -f $CORPUS/$f ]] || { echo "corpus: $CORPUS/$f not found (give a raw parallel"\
                "dir with {train,valid,test}.{src,tgt}, or --quick)" >&2; exit 1; }
        done
        RAW=$CORPUS
    fi
}

# Joint sentencepiece BPE model on both sides of train, then every split as subword tokens.
prepare_spm() {
    [[ -f $SPM/.done ]] && return 0
    log "sentencepiece: joint BPE, vocabulary $SPM_VOCAB -> $SPM"
    rm -rf "$SPM" && mkdir -p "$SPM"
    "$PY" - "$RAW" "$SPM" "$SPM_VOCAB" <<'EOF'
import sys
import sentencepiece as spm

raw, out, vocab = sys.argv[1], sys.argv[2], int(sys.argv[3])
spm.SentencePieceTrainer.train(
    input=[f"{raw}/train.src", f"{raw}/train.tgt"], model_prefix=f"{out}/spm",
    vocab_size=vocab, model_type="bpe", character_coverage=1.0, hard_vocab_limit=False,
    input_sentence_size=2_000_000, shuffle_input_sentence=True, minloglevel=2,
)
model = spm.SentencePieceProcessor(model_file=f"{out}/spm.model")
for split in ("train", "valid", "test"):
    for side in ("src", "tgt"):
        with open(f"{raw}/{split}.{side}", encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
        pieces = model.encode(lines, out_type=str)
        with open(f"{out}/{split}.{side}", "w", encoding="utf-8") as f:
            f.writelines(" ".join(p) + "\n" for p in pieces)
EOF
    touch "$SPM/.done"
}

prepare_bin() {
    [[ -f $BIN/.done ]] && return 0
    log "fairseq-preprocess (joined dictionary) -> $BIN"
    rm -rf "$BIN"
    fairseq-preprocess --source-lang src --target-lang tgt --trainpref "$SPM/train" \
        --validpref "$SPM/valid" --testpref "$SPM/test" --destdir "$BIN" \
        --joined-dictionary --workers "$WORKERS" >"$WORK/preprocess.log" 2>&1 \
        || { tail -5 "$WORK/preprocess.log" >&2; exit 1; }
    touch "$BIN/.done"
}

prepare_data() { prepare_corpus; prepare_spm; prepare_bin; }

# --------------------------------------------------------------------------- training

# train NAME DATA_BIN [fairseq-train options...]: WORK/NAME/checkpoint_best.pt, skipped when done.
# A killed run resumes from its checkpoint_last.pt (fairseq's own behaviour).
train() {
    local name=$1 data=$2
    shift 2
    local save=$WORK/$name
    [[ -f $save/.done ]] && { log "$name: trained ($save)"; return 0; }
    log "$name: fairseq-train $*"
    mkdir -p "$save"
    fairseq-train "$data" --user-dir "$PLUGIN" --save-dir "$save" --arch transformer \
        --share-all-embeddings --optimizer adam --adam-betas '(0.9, 0.98)' \
        --lr-scheduler inverse_sqrt --weight-decay 0.0001 --seed 1 --no-epoch-checkpoints \
        --no-progress-bar --log-format simple --log-interval 100 --num-workers 0 \
        "${CPU[@]}" "${OPTIM[@]}" "$@" >"$save/train.log" 2>&1 \
        || { tail -5 "$save/train.log" >&2; exit 1; }
    grep -E '\| (train|valid) \| epoch' "$save/train.log" | tail -2 | sed 's/^.*| INFO | //' >&2
    touch "$save/.done"
}

LS=(--criterion label_smoothed_cross_entropy --label-smoothing 0.1)
WORD_KD=(--criterion word_kd --teacher-path "$TEACHER" --kd-alpha "$ALPHA" --label-smoothing 0.1)

train_teacher() { train teacher "$BIN" "${TEACHER_ARCH[@]}" "${LS[@]}" --max-epoch "$TEACHER_EPOCHS"; }

train_baseline() {
    [[ $BASELINE == 1 ]] || return 0
    train baseline "$BIN" "${STUDENT_ARCH[@]}" "${LS[@]}" --max-epoch "$STUDENT_EPOCHS"
}

# a student, from scratch: student NAME DATA_BIN [fairseq-train options...]
student() {
    local name=$1 data=$2
    shift 2
    train "$name" "$data" "${STUDENT_ARCH[@]}" --max-epoch "$STUDENT_EPOCHS" "$@"
}

# fine-tune a trained student on other data: finetune NAME FROM DATA_BIN [options...]
finetune() {
    local name=$1 from=$2 data=$3
    shift 3
    train "$name" "$data" "${STUDENT_ARCH[@]}" --max-epoch "$FINETUNE_EPOCHS" \
        --finetune-from-model "$WORK/$from/checkpoint_best.pt" "$@"
}

# build NAME STRATEGY [seqkd-build options...]: the distilled data-bin WORK/NAME.
build() {
    local name=$1 strategy=$2
    shift 2
    log "$name: seqkd-build --strategy $strategy $*"
    seqkd-build --data "$BIN" --teacher "$TEACHER" --output "$WORK/$name" \
        --strategy "$strategy" --remove-bpe sentencepiece --workers "$WORKERS" \
        --batch-size 128 "${CPU[@]}" "$@" 2>"$WORK/$name.build.log" \
        || { tail -5 "$WORK/$name.build.log" >&2; exit 1; }
}

SEQ_KD=$WORK/data-seq-kd
SEQ_INTER=$WORK/data-seq-inter-k$K
build_seq_kd() { build "$(basename "$SEQ_KD")" seq-kd --beam "$BEAM"; }
build_seq_inter() {
    build "$(basename "$SEQ_INTER")" seq-inter --beam "$K" --nbest "$K" --sim bleu
}

# --------------------------------------------------------------------------- BLEU

# report NAME...: BLEU (greedy, beam 5) of WORK/NAME/checkpoint_best.pt on the test split,
# detokenized hypotheses vs the raw reference, with the sacreBLEU signature.
report() {
    local models=() name
    for name in "$@"; do
        [[ -f $WORK/$name/checkpoint_best.pt ]] && models+=(--model "$name=$WORK/$name/checkpoint_best.pt")
    done
    log "BLEU on test ($RAW/test.tgt), greedy and beam 5"
    seqkd-evaluate "$BIN" --subset test --reference "$RAW/test.tgt" \
        --beams 1 5 --remove-bpe sentencepiece "${CPU[@]}" "${models[@]}" \
        --json "$WORK/bleu-$(basename "$0" .sh).json"
}
