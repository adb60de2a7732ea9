"""Load a teacher (or an ensemble) and run it frozen beside the student.

The teacher is deliberately a plain Python object, not a ``torch.nn.Module``: fairseq's trainer
hands ``criterion.parameters()`` to the optimizer and saves ``criterion.state_dict()`` in every
checkpoint, so a teacher registered as a submodule would be trained and saved with the student.
"""

import logging
import os
import pickle
import re
import zipfile
from collections.abc import Sequence
from typing import Any

import torch
from fairseq import checkpoint_utils
from fairseq.data import Dictionary
from torch import Tensor

from .divergences import ensemble_log_probs, tempered_log_probs
from .errors import SeqKDError

logger = logging.getLogger(__name__)


def split_paths(path_spec: str, option: str = "--teacher-path") -> list[str]:
    """``a.pt:b.pt`` -> ``["a.pt", "b.pt"]``, fairseq's ensemble syntax (every tool's)."""
    paths = [p for p in path_spec.split(":") if p]
    if not paths:
        raise SeqKDError(f"{option} is empty; give a checkpoint, or several joined by ':'")
    return paths


def load_checkpoint_state(path: str, option: str = "--teacher-path") -> dict[str, Any]:
    """fairseq's own checkpoint reader, with one-line errors naming the file.

    A file that is not a fairseq checkpoint (not what ``torch.save`` writes, truncated, refused
    by the safe unpickler, or without a ``model`` and a ``cfg``) is the user's error; a
    well-formed checkpoint that fairseq or torch fails to read is not, and keeps its traceback.
    """
    if not os.path.isfile(path):
        raise SeqKDError(f"{option}: {path} does not exist")
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(path)
    except PermissionError as exc:
        raise SeqKDError(f"{option}: cannot read {path} ({exc.strerror})") from exc
    except Exception as exc:  # torch and fairseq raise many types; the file itself decides
        reason = why_not_a_checkpoint(path)
        if reason is None:
            raise
        raise SeqKDError(f"{option}: {path} is not a fairseq checkpoint ({reason})") from exc
    if not isinstance(state, dict) or "model" not in state or state.get("cfg") is None:
        raise SeqKDError(f"{option}: {path} is not a fairseq checkpoint (no 'model'/'cfg' entry)")
    return state


_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = b"\x80"  # torch's legacy format starts with a pickle of its magic number


def why_not_a_checkpoint(path: str) -> str | None:
    """Why ``path`` is not a fairseq checkpoint, or None when it looks like one.

    Called after a failed load: the file is read again with torch's safe unpickler and no
    fairseq code, so an error that a well-formed checkpoint raises (a fairseq or torch version
    problem) is not mistaken for a bad file.
    """
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        return "empty file"
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTOCOL)):
        return "not a file torch.save wrote"
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            return "truncated or corrupt zip archive"
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("/data.pkl") for name in archive.namelist()):
                return "a zip archive without the data.pkl of torch.save"
    try:
        # memory-mapped when it can be: tensors are not read, only the pickled structure
        state = torch.load(path, map_location="cpu", weights_only=True,
                           mmap=head.startswith(_ZIP_MAGIC))
    except pickle.UnpicklingError as exc:
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if refused:
            return f"it pickles {refused.group(1)}, which torch's safe unpickler refuses"
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))
        return ("torch's safe unpickler refuses it: "
                f"{detail.group(1) if detail else _first_line(exc)}")
    except EOFError:
        return "truncated file"
    has_cfg = isinstance(state, dict) and (state.get("cfg") is not None
                                           or state.get("args") is not None)
    if not has_cfg or "model" not in state:
        return f"a {type(state).__name__} without 'model' and 'cfg' entries"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_dictionary(path: str, what: str) -> Dictionary:
    """fairseq's ``Dictionary.load``, its errors for a malformed file (bad line, duplicate
    symbol, not UTF-8) as one line naming ``what`` and the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            return Dictionary.load(handle)
    except UnicodeDecodeError as exc:
        raise SeqKDError(f"{what}: {path} is not UTF-8 text (byte {exc.start})") from exc
    except (ValueError, RuntimeError) as exc:  # fairseq's bad-line and duplicate-symbol errors
        raise SeqKDError(f"{what}: {path} is not a fairseq dictionary ({_first_line(exc)})"
                         ) from exc


def first_difference(a: Dictionary, b: Dictionary) -> tuple[int, str, str] | None:
    """Index and symbols of the first position where two dictionaries differ."""
    for i in range(max(len(a), len(b))):
        sa = a.symbols[i] if i < len(a) else "<none>"
        sb = b.symbols[i] if i < len(b) else "<none>"
        if sa != sb:
            return i, sa, sb
    return None


def check_same_dictionary(
    side: str, teacher: Dictionary, teacher_name: str, student: Dictionary, student_name: str
) -> None:
    diff = first_difference(teacher, student)
    if diff is not None:
        i, st, ss = diff
        raise SeqKDError(
            f"{side} dictionaries differ: {teacher_name} has {len(teacher)} symbols, "
            f"{student_name} has {len(student)}; first difference at index {i}: "
            f"{st!r} vs {ss!r}. Binarize the student's data with the teacher's dictionaries "
            f"(fairseq-preprocess --srcdict/--tgtdict)"
        )


def recorded_data_dir(state: dict[str, Any]) -> str:
    """The (first) data directory a checkpoint's training read, as recorded in it."""
    task_cfg = state["cfg"].get("task") or {}
    return str(task_cfg.get("data") or "").split(":")[0]


def teacher_dictionaries(
    path: str, state: dict[str, Any], data_dir: str | None, src_lang: str, tgt_lang: str
) -> tuple[Dictionary, Dictionary] | None:
    """The dictionaries a teacher was trained with, or None when their files are gone."""
    task_cfg = state["cfg"].get("task") or {}
    directory = data_dir or recorded_data_dir(state)
    src = task_cfg.get("source_lang") or src_lang
    tgt = task_cfg.get("target_lang") or tgt_lang
    files = [os.path.join(directory, f"dict.{lang}.txt") for lang in (src, tgt)]
    if not directory or not all(os.path.isfile(f) for f in files):
        return None
    what = "--teacher-data" if data_dir else f"teacher {path}"
    return load_dictionary(files[0], what), load_dictionary(files[1], what)


def embedding_rows(state: dict[str, Any], side: str) -> int | None:
    names = {
        "source": ["encoder.embed_tokens.weight"],
        "target": ["decoder.output_projection.weight", "decoder.embed_tokens.weight"],
    }[side]
    for name in names:
        weight = state["model"].get(name)
        if weight is not None:
            return int(weight.shape[0])
    return None


def check_teacher_dictionaries(
    path: str,
    state: dict[str, Any],
    dictionaries: Sequence[Dictionary | None],
    data_name: str | Sequence[str],
    data_dir: str | None = None,
    langs: tuple[str, str] = ("src", "tgt"),
) -> tuple[Dictionary, Dictionary]:
    """Refuse a teacher trained with other (source, target) dictionaries than the data's.

    Compares the teacher's ``dict.*.txt`` symbol by symbol, read from ``data_dir``
    (``--teacher-data``) or else from the data directory recorded in the checkpoint, and returns
    them. When neither holds them the teacher's symbols are unknown: equal vocabulary sizes would
    not show a reordered dictionary, so that is an error asking for ``--teacher-data``.
    ``None`` in ``dictionaries``: side unused. ``data_name`` names the data in errors, once or
    per side.
    """
    sides = ("source", "target")
    names = (data_name, data_name) if isinstance(data_name, str) else tuple(data_name)
    found = teacher_dictionaries(path, state, data_dir, *langs)
    if found is None:
        for side, ours, name in zip(sides, dictionaries, names):
            rows = embedding_rows(state, side)
            if ours is not None and rows is not None and rows != len(ours):
                raise SeqKDError(
                    f"{side} dictionaries differ: teacher {path} has {rows} symbols, "
                    f"{name} has {len(ours)}"
                )
        where = (f"--teacher-data {data_dir}" if data_dir else
                 f"{recorded_data_dir(state) or '?'} (the data directory recorded in it)")
        raise SeqKDError(
            f"teacher {path}: its dict.*.txt files are not in {where}, so its dictionaries "
            f"cannot be compared with {names[-1]} symbol by symbol; pass --teacher-data DIR, the "
            f"directory holding the dictionaries it was trained with"
        )
    for side, theirs, ours, name in zip(sides, found, dictionaries, names):
        if ours is not None:
            check_same_dictionary(side, theirs, f"teacher {path}", ours, name)
    return found


class FrozenTeacher:
    """One or more fairseq models in eval mode, never trained, moved to the student lazily."""

    def __init__(self, models: Sequence[torch.nn.Module], paths: Sequence[str]):
        self.models = list(models)
        self.paths = list(paths)
        for model in self.models:
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
        self._placement: tuple[torch.device, torch.dtype] | None = None

    @classmethod
    def load(cls, path_spec: str, task: Any, data_dir: str | None = None) -> "FrozenTeacher":
        """Load and check every member against the student's task dictionaries."""
        paths = split_paths(path_spec)
        src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
        src_lang = getattr(task.cfg, "source_lang", None) or "src"
        tgt_lang = getattr(task.cfg, "target_lang", None) or "tgt"
        models, first = [], None
        for path in paths:
            state = load_checkpoint_state(path)
            if first is not None:  # members disagreeing with each other: say that first
                dicts = teacher_dictionaries(path, state, data_dir, src_lang, tgt_lang)
                for side, a, b in zip(("source", "target"), first[1], dicts or ()):
                    check_same_dictionary(f"ensemble member {side}", b, path, a, first[0])
            dicts = check_teacher_dictionaries(
                path, state, (src_dict, tgt_dict), "the student's data", data_dir,
                (src_lang, tgt_lang),
            )
            if first is None:
                first = (path, dicts)
            model = task.build_model(state["cfg"]["model"], from_checkpoint=True)
            model.load_state_dict(state["model"], strict=True, model_cfg=state["cfg"]["model"])
            models.append(model)
        logger.info("loaded teacher %s (%d parameters)", path_spec, _num_params(models))
        return cls(models, paths)

    def to(self, device: torch.device, dtype: torch.dtype) -> None:
        if self._placement != (device, dtype):
            for model in self.models:
                model.to(device=device, dtype=dtype)
            self._placement = (device, dtype)

    def follow(self, student: torch.nn.Module) -> None:
        """Move to the student's device and floating dtype (``--fp16``/``--bf16``)."""
        p = next(student.parameters())
        self.to(p.device, p.dtype)

    def log_probs(self, net_input: dict[str, Tensor], temperature: float = 1.0) -> Tensor:
        """Teacher-forced log-probabilities at temperature T, averaged over the ensemble."""
        with torch.no_grad():
            members = []
            for model in self.models:
                model.eval()
                logits = model(**net_input)[0]
                members.append(tempered_log_probs(logits, temperature))
                del logits
            return ensemble_log_probs(members)


def _num_params(models: Sequence[torch.nn.Module]) -> int:
    return sum(p.numel() for m in models for p in m.parameters())
