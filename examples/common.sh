# Shared setup of the recipes (sourced, not run): corpus, joint sentencepiece, fairseq-preprocess,
# teacher and baseline student, distilled data (seqkd-build), BLEU (seqkd-evaluate).
#
#   examples/<recipe>.sh [CORPUS_DIR] [--quick]
#
# CORPUS_DIR (or CORPUS=...) is a raw parallel corpus: {train,valid,test}.{src,tgt}, one sentence
# a line; default ../shared/data/multi30k-en-de beside the repository. --quick writes the built-in
# synthetic corpus (fairseq_seqkd.experiments.corpus) at a small size and uses tiny models: a few
# minutes on a laptop CPU.
#
# Run a recipe again and it resumes where it stopped: fairseq-train resumes from checkpoint_last.pt
# (a finished model's run does no training), seqkd-build from its stamps, and the sentencepiece
# and fairseq-preprocess folders appear only once complete. Each folder's name carries every
# setting that changes what is in it, so other settings never reuse these outputs, and recipes
# sharing WORK share what they have in common:
#   WORK/spmV/ (--quick: WORK/quick-nN-spmV/)  raw/ (--quick), spm/, bin/, teacher-eE/, baseline-eE/
#     kd-teacher-eE/        what that teacher made: data-seq-kd-bB/, data-seq-inter-kK/, students
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
        -h|--help) sed -n '2,30p' "${BASH_SOURCE[0]}"; exit 0 ;;
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
    # the sizes of the hand-made baseline in ../shared/PEERS.md: teacher 3+3 x 256,
    # student 2+2 x 128
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

DATA=$WORK/spm$SPM_VOCAB
[[ $QUICK == 1 ]] && DATA=$WORK/quick-n$QUICK_TRAIN-spm$SPM_VOCAB
RAW=$DATA/raw
SPM=$DATA/spm
BIN=$DATA/bin
TEACHER_NAME=teacher-e$TEACHER_EPOCHS
TEACHER=$DATA/$TEACHER_NAME/checkpoint_best.pt
KD=$DATA/kd-$TEACHER_NAME  # what the teacher made: distilled data and the students trained on it
mkdir -p "$KD"

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

# complete DIR STEP: run the function STEP, which writes into $STAGING, then rename $STAGING to
# DIR; DIR exists only once complete, and is kept when it does.
complete() {
    local dir=$1 step=$2
    [[ -d $dir ]] && return 0
    rm -rf "$dir".partial.*  # what an interrupted run left
    STAGING=$(mktemp -d "$dir.partial.XXXXXX")
    "$step"
    mv "$STAGING" "$dir"
}

# Joint sentencepiece BPE model on both sides of train, then every split as subword tokens.
spm_step() {
    log "sentencepiece: joint BPE, vocabulary $SPM_VOCAB -> $SPM"
    "$PY" - "$RAW" "$STAGING" "$SPM_VOCAB" <<'EOF'
import sys
import sentencepiece as spm

from fairseq_seqkd.textfiles import read_text_lines

raw, out, vocab = sys.argv[1], sys.argv[2], int(sys.argv[3])
spm.SentencePieceTrainer.train(
    input=[f"{raw}/train.src", f"{raw}/train.tgt"], model_prefix=f"{out}/spm",
    vocab_size=vocab, model_type="bpe", character_coverage=1.0, hard_vocab_limit=False,
    input_sentence_size=2_000_000, shuffle_input_sentence=True, minloglevel=2,
)
model = spm.SentencePieceProcessor(model_file=f"{out}/spm.model")
for split in ("train", "valid", "test"):
    for side in ("src", "tgt"):
        pieces = model.encode(read_text_lines(f"{raw}/{split}.{side}"), out_type=str)
        with open(f"{out}/{split}.{side}", "w", encoding="utf-8") as f:
            f.writelines(" ".join(p) + "\n" for p in pieces)
EOF
}

preprocess_step() {
    log "fairseq-preprocess (joined dictionary) -> $BIN"
    fairseq-preprocess --source-lang src --target-lang tgt --trainpref "$SPM/train" \
        --validpref "$SPM/valid" --testpref "$SPM/test" --destdir "$STAGING" \
        --joined-dictionary --workers "$WORKERS" >"$DATA/preprocess.log" 2>&1 \
        || { tail -5 "$DATA/preprocess.log" >&2; exit 1; }
}

prepare_data() { prepare_corpus; complete "$SPM" spm_step; complete "$BIN" preprocess_step; }

# --------------------------------------------------------------------------- training

MODELS=()  # NAME=CHECKPOINT of every model this run trained, in order, for report

# train NAME DIR DATA_BIN [fairseq-train options...]: DIR/checkpoint_best.pt. fairseq-train
# resumes from DIR/checkpoint_last.pt: a killed run goes on, a finished one trains no more.
train() {
    local name=$1 save=$2 data=$3
    shift 3
    log "$name: fairseq-train -> $save"
    mkdir -p "$save"
    fairseq-train "$data" --user-dir "$PLUGIN" --save-dir "$save" --arch transformer \
        --share-all-embeddings --optimizer adam --adam-betas '(0.9, 0.98)' \
        --lr-scheduler inverse_sqrt --weight-decay 0.0001 --seed 1 --no-epoch-checkpoints \
        --no-progress-bar --log-format simple --log-interval 100 --num-workers 0 \
        "${CPU[@]}" "${OPTIM[@]}" "$@" >>"$save/train.log" 2>&1 \
        || { tail -5 "$save/train.log" >&2; exit 1; }
    grep -E '\| (train|valid) \| epoch' "$save/train.log" | tail -2 | sed 's/^.*| INFO | //' >&2
    MODELS+=("$name=$save/checkpoint_best.pt")
}

LS=(--criterion label_smoothed_cross_entropy --label-smoothing 0.1)
WORD_KD=(--criterion word_kd --teacher-path "$TEACHER" --kd-alpha "$ALPHA" --label-smoothing 0.1)

train_teacher() {
    train teacher "$DATA/$TEACHER_NAME" "$BIN" "${TEACHER_ARCH[@]}" "${LS[@]}" \
        --max-epoch "$TEACHER_EPOCHS"
}

train_baseline() {
    [[ $BASELINE == 1 ]] || return 0
    train baseline "$DATA/baseline-e$STUDENT_EPOCHS" "$BIN" "${STUDENT_ARCH[@]}" "${LS[@]}" \
        --max-epoch "$STUDENT_EPOCHS"
}

# a student of the teacher, from scratch: student NAME DATA_BIN [fairseq-train options...];
# NAME carries the settings that its options and data have (e.g. seq-kd-b$BEAM)
student() {
    local name=$1 data=$2
    shift 2
    train "$name" "$KD/$name-e$STUDENT_EPOCHS" "$data" "${STUDENT_ARCH[@]}" \
        --max-epoch "$STUDENT_EPOCHS" "$@"
}

# fine-tune a student on other data: finetune NAME FROM DATA_BIN [options...], as FROM+NAME
finetune() {
    local name=$1 from=$2 data=$3
    shift 3
    train "$from+$name" "$KD/$from-e$STUDENT_EPOCHS+$name-ft$FINETUNE_EPOCHS" "$data" \
        "${STUDENT_ARCH[@]}" --max-epoch "$FINETUNE_EPOCHS" \
        --finetune-from-model "$KD/$from-e$STUDENT_EPOCHS/checkpoint_best.pt" "$@"
}

# build DIR STRATEGY [seqkd-build options...]: the distilled data-bin DIR. seqkd-build skips or
# resumes its own stages (their stamps hold the teacher's and the data's content).
build() {
    local dir=$1 strategy=$2
    shift 2
    log "$(basename "$dir"): seqkd-build --strategy $strategy $*"
    seqkd-build --data "$BIN" --teacher "$TEACHER" --output "$dir" \
        --strategy "$strategy" --remove-bpe sentencepiece --workers "$WORKERS" \
        --batch-size 128 "${CPU[@]}" "$@" 2>>"$dir.build.log" \
        || { tail -5 "$dir.build.log" >&2; exit 1; }
}

SEQ_KD=$KD/data-seq-kd-b$BEAM
SEQ_INTER=$KD/data-seq-inter-k$K
build_seq_kd() { build "$SEQ_KD" seq-kd --beam "$BEAM"; }
build_seq_inter() { build "$SEQ_INTER" seq-inter --beam "$K" --nbest "$K" --sim bleu; }

# --------------------------------------------------------------------------- BLEU

# report: BLEU (greedy, beam 5) on the test split of every model this run trained, detokenized
# hypotheses against the raw reference, with the sacreBLEU signature (seqkd-evaluate).
report() {
    local models=() model
    for model in "${MODELS[@]}"; do models+=(--model "$model"); done
    log "BLEU on test ($RAW/test.tgt), greedy and beam 5"
    seqkd-evaluate "$BIN" --subset test --reference "$RAW/test.tgt" \
        --beams 1 5 --remove-bpe sentencepiece "${CPU[@]}" "${models[@]}" \
        --json "$KD/bleu-$(basename "$0" .sh).json"
}
