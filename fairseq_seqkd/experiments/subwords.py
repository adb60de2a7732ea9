"""The demo's raw text into subwords: a user's corpus checked, a joint sentencepiece model
trained on its training split, and every split encoded."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from ..atomic import atomic_write_text
from ..errors import SeqKDError
from ..textfiles import count_lines, read_text_lines
from .corpus import SPLITS
from .demo_models import SRC, TGT

__all__ = ["RICH_SCRIPT_COVERAGE", "RICH_SCRIPT_SHARE", "check_raw_corpus",
           "distinct_characters", "train_sentencepiece"]

# sentencepiece's advice for scripts with a rich character set (Japanese, Chinese): cover
# 99.95 % of the characters rather than all of them; chosen when the training text has more
# distinct characters than this share of the vocabulary
RICH_SCRIPT_COVERAGE = 0.9995
RICH_SCRIPT_SHARE = 0.5


def check_raw_corpus(directory: Path) -> dict[str, int]:
    """Validate a user's ``train/valid/test.{src,tgt}``; return line counts per split."""
    if not directory.is_dir():
        raise SeqKDError(f"--corpus: {directory} is not a directory")
    counts = {}
    for split in SPLITS:
        sizes = {}
        for lang in (SRC, TGT):
            path = directory / f"{split}.{lang}"
            if not path.is_file():
                raise SeqKDError(
                    f"--corpus: {path} not found (expected train/valid/test.{{src,tgt}}, raw "
                    "parallel text, one sentence a line)"
                )
            sizes[lang] = count_lines(path)
        if sizes[SRC] != sizes[TGT]:
            raise SeqKDError(
                f"--corpus: {directory / split}.src has {sizes[SRC]} lines but "
                f"{directory / split}.tgt has {sizes[TGT]}"
            )
        if sizes[SRC] == 0:
            raise SeqKDError(f"--corpus: {directory / split}.src is empty")
        counts[split] = sizes[SRC]
    return counts


def distinct_characters(paths: Iterable[Path]) -> int:
    """How many different characters (whitespace aside) the UTF-8 files hold together."""
    chars: set[str] = set()
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            while block := handle.read(1 << 20):
                chars.update(block)
    return len({c for c in chars if not c.isspace()})


def train_sentencepiece(raw: Path, spm_dir: Path, splits: Sequence[str], opts: dict[str, Any],
                        log: TextIO, portable: Callable[[Any], Any]) -> None:
    """Train the joint model ``spm_dir/spm.model`` with ``opts`` and encode every split of
    ``raw`` into ``spm_dir``, each file written atomically; ``portable`` names the paths in
    the log.

    The character coverage is 1.0, or :data:`RICH_SCRIPT_COVERAGE` when the training text
    has more distinct characters than :data:`RICH_SCRIPT_SHARE` of the vocabulary; a
    vocabulary that still cannot hold the characters is a one-line error.
    """
    import sentencepiece as spm

    spm_dir.mkdir(parents=True, exist_ok=True)
    train = [raw / f"train.{lang}" for lang in (SRC, TGT)]
    chars = distinct_characters(train)
    vocab = opts["vocab_size"]
    rich = chars > RICH_SCRIPT_SHARE * vocab
    opts = {**opts, "character_coverage": RICH_SCRIPT_COVERAGE if rich else 1.0}
    log.write(f"# {chars} distinct characters in the training text\n"
              f"sentencepiece.SentencePieceTrainer.train({portable(opts)})\n")
    log.flush()
    try:
        spm.SentencePieceTrainer.train(**opts, minloglevel=1)
    except RuntimeError as exc:
        reason = str(exc).rsplit("] ", 1)[-1].strip()
        raise SeqKDError(
            f"sentencepiece cannot build a {vocab}-piece vocabulary from {train[0]} and "
            f"{train[1].name} ({chars} distinct characters, character coverage "
            f"{opts['character_coverage']}): {reason}; set a larger --vocab-size"
        ) from None
    processor = spm.SentencePieceProcessor(model_file=str(spm_dir / "spm.model"))
    for split in splits:
        for lang in (SRC, TGT):
            src = raw / f"{split}.{lang}"
            pieces = processor.encode(read_text_lines(str(src)), out_type=str)
            atomic_write_text(spm_dir / f"{split}.{lang}",
                              "".join(" ".join(p) + "\n" for p in pieces))
            log.write(portable(f"encoded {src} -> {spm_dir / f'{split}.{lang}'}\n"))
