"""Model sizes and training budgets of ``seqkd-demo`` (``--preset``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..errors import SeqKDError
from .corpus import CorpusSpec

__all__ = ["PRESETS", "Arch", "Preset", "preset_for"]


@dataclass(frozen=True)
class Arch:
    """A fairseq ``transformer`` with shared embeddings; ``decoder_layers`` defaults to
    ``layers`` (a deep-encoder, shallow-decoder student sets it lower). ``pre_norm`` puts layer
    normalisation before each sublayer, which trains more stably at a high learning rate."""

    dim: int
    layers: int
    heads: int
    ffn: int
    decoder_layers: int | None = None
    pre_norm: bool = False

    @property
    def decoder_depth(self) -> int:
        return self.layers if self.decoder_layers is None else self.decoder_layers

    def args(self) -> list[str]:
        return [
            "--arch", "transformer", "--share-all-embeddings",
            "--encoder-layers", str(self.layers), "--decoder-layers", str(self.decoder_depth),
            "--encoder-embed-dim", str(self.dim), "--decoder-embed-dim", str(self.dim),
            "--encoder-ffn-embed-dim", str(self.ffn), "--decoder-ffn-embed-dim", str(self.ffn),
            "--encoder-attention-heads", str(self.heads),
            "--decoder-attention-heads", str(self.heads),
        ] + (["--encoder-normalize-before", "--decoder-normalize-before"]
             if self.pre_norm else [])  # fmt: skip

    def describe(self) -> str:
        return f"d={self.dim}, {self.layers}+{self.decoder_depth} layers"

    def deep_shallow(self, encoder_layers: int = 4, decoder_layers: int = 1) -> Arch:
        """The same width with a deep encoder and a shallow decoder (Kasai et al. 2021):
        decoding cost sits in the decoder, which runs once per output token."""
        return replace(self, layers=encoder_layers, decoder_layers=decoder_layers)


@dataclass(frozen=True)
class Preset:
    """Model sizes and training budget. ``corpus`` sizes the built-in corpus only, its
    monolingual source text (``corpus.mono``) included."""

    name: str
    corpus: CorpusSpec
    vocab_size: int  # joint sentencepiece BPE vocabulary
    teacher: Arch
    student: Arch
    teacher_epochs: int
    student_epochs: int
    prune_epochs: int
    teacher_lr: float
    student_lr: float
    prune_lr: float
    warmup: int
    max_tokens: int
    teacher_dropout: float = 0.1
    # the teacher every later stage reads: the average of its last N epoch checkpoints
    # (seqkd-export --average-last N); 0: its best checkpoint by validation loss
    teacher_average_last: int = 0
    student_dropout: float = 0.1
    label_smoothing: float = 0.1
    kd_alpha: float = 0.5
    # Word-KD reads the teacher's top-k distributions from a cache (seqkd-cache-teacher)
    kd_topk: int = 8
    cache_max_tokens: int = 4096
    beam: int = 5  # teacher beam for seqkd-build and the "beam" column
    inter_nbest: int = 5  # n-best size scored against the reference by Seq-Inter
    # seqkd-build --max-repeats: a distilled target caught in a decoding loop (a phrase more
    # than this many times in a row) is replaced by the reference; None keeps every target
    max_repeats: int | None = None
    prune_ratio: float = 0.8
    prune_warmup: int = 20  # retraining starts from a trained model: short warmup
    # fine-tuning a trained model: the demo's GKD row, the benchmark's "X + Seq-Inter" rows
    finetune_lr: float = 0.0005
    gkd_updates: int = 100  # the demo's GKD row: on-policy updates are several times dearer
    # the demo's Seq-KD + mono row (built-in corpus with ``corpus.mono`` sentences): epochs of
    # its student over the parallel and the monolingual distilled pairs; None: student_epochs
    mono_student_epochs: int | None = None
    eval_batch_size: int = 64
    build_batch_size: int = 128


PRESETS: dict[str, Preset] = {
    # seconds, for the test suite: the pipeline runs, the numbers mean little
    "ci": Preset(
        name="ci",
        corpus=CorpusSpec(train=1200, valid=100, test=100, mono=400),
        vocab_size=300,
        teacher=Arch(32, 1, 2, 64),
        student=Arch(16, 1, 2, 32),
        teacher_epochs=5, student_epochs=3, prune_epochs=1, mono_student_epochs=3,
        teacher_average_last=2,
        teacher_lr=0.01, student_lr=0.01, prune_lr=0.003, warmup=20,
        max_tokens=1000, eval_batch_size=50, build_batch_size=200, gkd_updates=10,
        max_repeats=2,
    ),
    # the default: `make demo` in under 10 minutes on 2 CPU cores
    "tiny": Preset(
        name="tiny",
        # mono: the teacher's translations of 8,000 more source sentences, half the parallel
        # source, for the Seq-KD + mono row
        corpus=CorpusSpec(train=16000, valid=300, test=500, mono=8000),
        vocab_size=1000,
        # pre-norm: measured over two seeds, the post-norm teacher's greedy output ranged
        # 65-73 BLEU (loops) where the pre-norm one on twice the data gave 72-73, within
        # 0.5-2 BLEU of its beam 5
        teacher=Arch(128, 2, 4, 256, pre_norm=True),
        # 9 epochs, the last 3 averaged: over seeds 1-3 the teacher's test greedy / beam 5 BLEU
        # was 74.38/74.21, 73.09/74.32, 73.56/74.16 (the baseline student's 69.8-70.6 /
        # 70.6-71.7). Its best checkpoint by validation loss was not robust: after 6 epochs
        # 73.30/73.76, 72.13/74.11 but 63.45/68.49 (seed 3, loops and lexical errors); after
        # 9, 71.37/70.55 for seed 1 (epoch 8 chosen on the 300 validation sentences)
        teacher_average_last=3,
        student=Arch(64, 1, 4, 128),
        # 1024-token batches: ~200 updates an epoch (1,800 for the teacher, 1,000 a student);
        # teacher dropout keeps it from memorising which training sentence had which
        # register, so its beam output (the Seq-KD data) is the canonical register
        teacher_epochs=9, student_epochs=5, prune_epochs=5,
        teacher_lr=0.005, student_lr=0.005, prune_lr=0.005, warmup=120,
        max_tokens=1024, teacher_dropout=0.2, student_dropout=0.0,
        # GKD fine-tuning: ~0.5 CPU-s an update (half of them sampled)
        gkd_updates=60,
        # the teacher can loop (a phrase 3+ times in a row until the length cap; none of the
        # references does); a Seq-KD student trained on such targets loops too
        max_repeats=2,
    ),
    # the shape of the hand-made Multi30k baseline (../shared/PEERS.md), for --corpus with real
    # data; not timed in this project yet (expect well over an hour on 2 cores)
    "small": Preset(
        name="small",
        corpus=CorpusSpec(train=30000, valid=1000, test=1000, mono=60000),
        vocab_size=8000,
        teacher=Arch(256, 3, 4, 1024),
        student=Arch(128, 2, 4, 512),
        teacher_epochs=12, student_epochs=15, prune_epochs=5, mono_student_epochs=15,
        teacher_lr=0.002, student_lr=0.002, prune_lr=0.001, warmup=400,
        max_tokens=4096, student_dropout=0.2, teacher_dropout=0.3,
    ),
}


def preset_for(name: str, **overrides: Any) -> Preset:
    """A preset by name, with fields replaced (e.g. ``teacher_epochs=4``)."""
    if name not in PRESETS:
        raise SeqKDError(f"--preset must be one of {', '.join(PRESETS)}, got {name!r}")
    return replace(PRESETS[name], **overrides)
