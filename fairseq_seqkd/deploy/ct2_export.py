"""A CTranslate2 model directory for serving a student on CPU (``seqkd-export --format
ctranslate2``).

The weights are converted by CTranslate2's own ``FairseqConverter``; we write no weight mapping.
Its input is the stock checkpoint of :mod:`fairseq_seqkd.deploy.stock` (so trained, pruned,
averaged and already-exported checkpoints all take one path), saved with ``cfg.model`` as the
``argparse.Namespace`` the converter reads attributes from.

The directory is self-contained: the CTranslate2 model (``model.bin``, ``config.json``, the
vocabularies), the fairseq dictionaries, the sentencepiece model if given, and
``seqkd-export.json``: the source checkpoint(s) with their sha256, the quantization and the
architecture. It is built in a temporary directory beside the target and renamed into place,
so an interrupted export leaves the old directory or the new one, never half of one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..atomic import umask
from ..checkpoints import fmt_count, parameter_counts, save_atomic
from ..digests import file_sha256
from ..errors import SeqKDError
from ..spm import open_spm
from .stock import load_export_state

QUANTIZATIONS: tuple[str, ...] = ("int8", "int8_float32", "int16", "float16", "float32")
MANIFEST = "seqkd-export.json"
SPM_MODEL = "spm.model"
FORMAT = "ctranslate2"
CT2_FILES: tuple[str, ...] = ("model.bin", "config.json")
_UNSUPPORTED = "The model you are trying to convert is not supported by CTranslate2"
_ARCH_FIELDS = (
    "arch", "encoder_layers", "decoder_layers", "encoder_embed_dim", "decoder_embed_dim",
    "encoder_ffn_embed_dim", "decoder_ffn_embed_dim", "encoder_attention_heads",
    "decoder_attention_heads", "share_all_embeddings", "share_decoder_input_output_embed",
    "encoder_normalize_before", "decoder_normalize_before", "activation_fn",
    "max_source_positions", "max_target_positions",
)  # fmt: skip


@dataclass
class Manifest:
    """``seqkd-export.json``: what a CTranslate2 directory holds and where it came from."""

    source_checkpoints: list[str]
    source_sha256: list[str]
    quantization: str
    architecture: dict[str, Any]
    source_lang: str
    target_lang: str
    parameters: int
    nonzero: int
    ctranslate2_version: str
    spm_model: str | None = None
    format: str = FORMAT
    changes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        a = self.architecture
        return (
            f"{', '.join(self.source_checkpoints)} -> CTranslate2 {self.quantization} "
            f"({a.get('arch')}, {a.get('encoder_layers')}+{a.get('decoder_layers')} layers, "
            f"{fmt_count(self.parameters, self.nonzero)}"
            f"{', sentencepiece ' + self.spm_model if self.spm_model else ''})"
        )


def read_manifest(directory: str) -> Manifest:
    """The manifest of an export directory; one-line error when it is not one."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isdir(directory):
        raise SeqKDError(f"{directory} is not a directory (expected a seqkd-export "
                         "--format ctranslate2 output)")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        manifest = Manifest(**data)
    except FileNotFoundError as exc:
        raise SeqKDError(f"{directory} has no {MANIFEST}: not a seqkd-export --format "
                         "ctranslate2 directory") from exc
    except (ValueError, TypeError) as exc:
        raise SeqKDError(f"{path} is not a valid seqkd-export manifest ({exc})") from exc
    if manifest.format != FORMAT:
        raise SeqKDError(f"{path}: format {manifest.format!r}, expected {FORMAT!r}")
    return manifest


def _check_output_dir(output: str, force: bool) -> None:
    if os.path.isfile(output):
        raise SeqKDError(f"--output {output} is a file; --format ctranslate2 writes a directory")
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise SeqKDError(f"--output {output}: directory {parent} does not exist")
    earlier = os.path.isfile(os.path.join(output, MANIFEST))
    if os.path.isdir(output) and os.listdir(output) and not force and not earlier:
        raise SeqKDError(f"--output {output} is a non-empty directory that is not an "
                             "earlier seqkd-export; choose another or pass --force")


def _languages(task: dict[str, Any], *data_dirs: str) -> tuple[str, str]:
    """The checkpoint's language pair, else the one the data directories' files name."""
    src, tgt = task.get("source_lang"), task.get("target_lang")
    if src is not None and tgt is not None:
        return src, tgt
    from fairseq.data.data_utils import infer_language_pair

    for directory in data_dirs:
        if directory and os.path.isdir(directory):
            src, tgt = infer_language_pair(directory)
            if src is not None and tgt is not None:
                return src, tgt
    raise SeqKDError(f"--data {data_dirs[0]}: cannot tell the language pair (the checkpoint "
                     "names none and no train.SRC-TGT.* files are there); binarize with "
                     "--source-lang/--target-lang or pass the training data directory")


def _dictionaries(data: str, src: str, tgt: str, option: str) -> list[str]:
    paths = [os.path.join(data, f"dict.{lang}.txt") for lang in (src, tgt)]
    for path in paths:
        if not os.path.isfile(path):
            raise SeqKDError(f"{option} {data}: {os.path.basename(path)} is missing (the "
                             "model's dictionaries are needed; pass --data DIR)")
    return paths


def _convert(checkpoint: str, data: str, src: str, tgt: str, target: str,
             quantization: str, source: str) -> None:
    """CTranslate2's FairseqConverter, its unsupported-model error as one line."""
    try:
        from ctranslate2.converters import FairseqConverter
    except ImportError as exc:
        raise SeqKDError("--format ctranslate2 needs the ctranslate2 package: "
                         "pip install 'fairseq-seqkd[deploy]'") from exc
    converter = FairseqConverter(checkpoint, data, source_lang=src, target_lang=tgt)
    try:
        converter.convert(target, quantization=quantization)
    except ValueError as exc:
        if _UNSUPPORTED not in str(exc):
            raise
        reasons = [ln[2:].strip() for ln in str(exc).splitlines() if ln.startswith("- ")]
        raise SeqKDError(f"{source}: CTranslate2 cannot convert this model: "
                         f"{'; '.join(reasons)}") from exc


def _replace_dir(staging: str, output: str) -> None:
    """Move ``staging`` to ``output``; an older ``output`` is removed only after the move."""
    old = None
    if os.path.lexists(output):
        old = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(output)),
                               prefix=f".{os.path.basename(output)}.old.")
        os.rmdir(old)
        os.rename(output, old)
    os.rename(staging, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_ctranslate2(
    paths: Sequence[str],
    output: str,
    quantization: str = "int8",
    spm_model: str | None = None,
    data: str | None = None,
    force: bool = False,
) -> Manifest:
    """Convert the checkpoint(s) ``paths`` (averaged when several) into the directory
    ``output``; returns its manifest."""
    if quantization not in QUANTIZATIONS:
        raise SeqKDError(f"--quantization must be one of {', '.join(QUANTIZATIONS)}; "
                         f"got {quantization!r}")
    _check_output_dir(output, force)
    if spm_model is not None:
        open_spm(spm_model)
    option = "--input" if len(paths) == 1 else "--checkpoint-dir"
    state, changes = load_export_state(paths, option)
    cfg = state["cfg"]
    model_cfg = dict(cfg.get("model") or {})
    data_option = "--data" if data else f"{paths[0]}: training data directory"
    recorded = str(model_cfg.get("data") or (cfg.get("task") or {}).get("data") or "")
    recorded = recorded.split(os.pathsep)[0]
    data = data or recorded
    if not data or not os.path.isdir(data):
        raise SeqKDError(f"{data_option} {data or '(none recorded)'} is not a directory; "
                         "pass --data DIR with the model's dict.*.txt")
    src, tgt = _languages(cfg.get("task") or model_cfg, data, recorded)
    dictionaries = _dictionaries(data, src, tgt, data_option)
    total, nonzero = parameter_counts(state["model"])

    staging = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(output)),
                               prefix=f".{os.path.basename(output)}.")
    try:
        for path in dictionaries:
            shutil.copyfile(path, os.path.join(staging, os.path.basename(path)))
        # the converter reads cfg.model by attribute; the plugin allow-lists the Namespace
        source = os.path.join(staging, ".source.pt")
        state["cfg"]["model"] = argparse.Namespace(**{**model_cfg, "data": staging})
        save_atomic(state, source)
        converted = os.path.join(staging, "ct2")
        _convert(source, staging, src, tgt, converted, quantization, paths[0])
        os.unlink(source)
        for name in os.listdir(converted):
            os.rename(os.path.join(converted, name), os.path.join(staging, name))
        os.rmdir(converted)
        if spm_model is not None:
            shutil.copyfile(spm_model, os.path.join(staging, SPM_MODEL))
        import ctranslate2

        manifest = Manifest(
            source_checkpoints=[os.path.abspath(p) for p in paths],
            source_sha256=[file_sha256(p) for p in paths],
            quantization=quantization,
            architecture={k: model_cfg[k] for k in _ARCH_FIELDS if k in model_cfg},
            source_lang=src, target_lang=tgt, parameters=total, nonzero=nonzero,
            ctranslate2_version=ctranslate2.__version__,
            spm_model=SPM_MODEL if spm_model is not None else None, changes=changes,
        )
        with open(os.path.join(staging, MANIFEST), "w", encoding="utf-8") as handle:
            json.dump(asdict(manifest), handle, indent=2)
            handle.write("\n")
        for name in os.listdir(staging):
            with open(os.path.join(staging, name), "rb") as handle:
                os.fsync(handle.fileno())
        os.chmod(staging, 0o777 & ~umask())
        _replace_dir(staging, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staging)
        raise
    return manifest

