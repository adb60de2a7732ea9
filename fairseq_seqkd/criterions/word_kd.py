"""Word-level knowledge distillation (Kim & Rush 2016, eq. 3 and 4).

loss = (1 - alpha) * NLL(gold, label-smoothed) + alpha * T^2 * D(p_teacher^T || p_student^T),
summed over non-padding target tokens and normalised exactly as
``label_smoothed_cross_entropy`` does, so ``--kd-alpha 0`` is that criterion to the last digit.
"""

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from fairseq import utils
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
    label_smoothed_nll_loss,
)
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics
from torch import Tensor

from ..data.teacher_cache import read_meta
from ..distributed import all_gather_1d
from ..divergences import (
    DIVERGENCES,
    divergence_full,
    divergence_topk,
    tempered_log_probs,
    truncate_topk,
)
from ..errors import SeqKDError
from ..selection import (
    SELECTIONS,
    CrossEntropyQueue,
    batch_selection,
    check_rate,
    global_selection,
)
from ..teacher import FrozenTeacher


@dataclass
class WordKDConfig(LabelSmoothedCrossEntropyCriterionConfig):
    teacher_path: Optional[str] = field(
        default=None,
        metadata={
            "help": "teacher checkpoint; several joined by ':' form an ensemble whose "
            "probabilities are averaged"
        },
    )
    teacher_data: Optional[str] = field(
        default=None,
        metadata={
            "help": "directory holding the teacher's dict.*.txt, to check them against the "
            "student's (default: the data directory recorded in the teacher checkpoint)"
        },
    )
    kd_alpha: float = field(
        default=0.5,
        metadata={"help": "weight of the distillation term; 0 = gold NLL only, 1 = KD only"},
    )
    kd_temperature: float = field(
        default=1.0,
        metadata={"help": "softmax temperature T of teacher and student in the KD term "
                  "(the term is scaled by T^2)"},
    )
    kd_topk: int = field(
        default=0,
        metadata={"help": "0 = full vocabulary; k > 0 = the teacher's k most probable tokens, "
                  "renormalised (saves memory)"},
    )
    kd_divergence: ChoiceEnum(DIVERGENCES) = field(  # type: ignore[valid-type]
        default="kl",
        metadata={"help": "kl (forward KL, the paper), reverse_kl, js (Jensen-Shannon) or "
                  "tvd (total variation), after Wen et al. 2023"},
    )
    kd_selection: ChoiceEnum(SELECTIONS) = field(  # type: ignore[valid-type]
        default="none",
        metadata={"help": "selective distillation (Wang et al. 2021): apply the KD term only to "
                  "the tokens with the highest student cross-entropy, chosen in the batch or "
                  "against a global queue shared by all ranks (training only)"},
    )
    kd_selection_rate: float = field(
        default=0.5,
        metadata={"help": "fraction of target tokens that get the KD term with --kd-selection"},
    )
    kd_selection_queue_size: int = field(
        default=30000,
        metadata={"help": "length of the FIFO of recent token cross-entropies for "
                  "--kd-selection global"},
    )


def check_kd_options(alpha: float, temperature: float, topk: int, vocab_size: int) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise SeqKDError(f"--kd-alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise SeqKDError(f"--kd-temperature must be > 0, got {temperature}")
    if topk < 0 or topk > vocab_size:
        raise SeqKDError(
            f"--kd-topk must be 0 (full vocabulary) or in [1, {vocab_size}] "
            f"(the target vocabulary size), got {topk}"
        )


@register_criterion("word_kd", dataclass=WordKDConfig)
class WordKDCriterion(LabelSmoothedCrossEntropyCriterion):
    def __init__(
        self,
        task: Any,
        sentence_avg: bool,
        label_smoothing: float,
        teacher_path: Optional[str] = None,
        teacher_data: Optional[str] = None,
        kd_alpha: float = 0.5,
        kd_temperature: float = 1.0,
        kd_topk: int = 0,
        kd_divergence: str = "kl",
        kd_selection: str = "none",
        kd_selection_rate: float = 0.5,
        kd_selection_queue_size: int = 30000,
        ignore_prefix_size: int = 0,
        report_accuracy: bool = False,
    ):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        check_kd_options(kd_alpha, kd_temperature, kd_topk, len(task.target_dictionary))
        if str(kd_divergence) not in DIVERGENCES:
            raise SeqKDError(
                f"--kd-divergence must be one of {', '.join(DIVERGENCES)}, got {kd_divergence!r}"
            )
        if str(kd_selection) not in SELECTIONS:
            raise SeqKDError(
                f"--kd-selection must be one of {', '.join(SELECTIONS)}, got {kd_selection!r}"
            )
        try:
            check_rate(kd_selection_rate)
            self.queue = (
                CrossEntropyQueue(kd_selection_queue_size)
                if str(kd_selection) == "global" else None
            )
        except ValueError as exc:
            raise SeqKDError(str(exc)) from exc
        self.selection = str(kd_selection)
        self.selection_rate = kd_selection_rate
        self.alpha = kd_alpha
        self.temperature = kd_temperature
        self.topk = kd_topk
        self.divergence = str(kd_divergence)
        self.teacher: FrozenTeacher | None = None
        cache_dir = getattr(getattr(task, "cfg", None), "teacher_cache", None)
        self.cached = bool(cache_dir) and kd_alpha > 0
        if self.cached:
            if teacher_path:
                raise SeqKDError("give --teacher-path or --teacher-cache, not both")
            meta = read_meta(cache_dir, task.cfg.train_subset)
            if kd_topk != meta.k:
                raise SeqKDError(
                    f"--kd-topk is {kd_topk}, but --teacher-cache {cache_dir} holds "
                    f"the teacher's top {meta.k}; pass --kd-topk {meta.k}"
                )
        elif kd_alpha > 0:
            if not teacher_path:
                raise SeqKDError(
                    "--criterion word_kd with --kd-alpha > 0 needs --teacher-path "
                    "(or --task translation_kd --teacher-cache DIR)"
                )
            self.teacher = FrozenTeacher.load(teacher_path, task, data_dir=teacher_data)

    def forward(self, model: Any, sample: dict[str, Any], reduce: bool = True):
        teacher_lprobs = self.teacher_log_probs(model, sample)
        net_output = model(**sample["net_input"])
        lprobs, target = self.get_lprobs_and_target(model, net_output, sample)
        gold_loss, nll_loss = label_smoothed_nll_loss(
            lprobs, target, self.eps, ignore_index=self.padding_idx, reduce=reduce
        )
        if teacher_lprobs is None:
            loss, kd_loss = gold_loss, torch.zeros_like(gold_loss)
        else:
            student_lprobs = self.student_log_probs(lprobs, net_output)
            keep = self.kd_tokens(lprobs, target, training=model.training)
            kd = self.token_kd(student_lprobs, teacher_lprobs).masked_fill(~keep, 0.0)
            kd_loss = (self.temperature**2) * (kd.sum() if reduce else kd)
            if not reduce:
                gold_loss = gold_loss.view(-1)
            loss = (1.0 - self.alpha) * gold_loss + self.alpha * kd_loss.to(gold_loss.dtype)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data,
            "nll_loss": nll_loss.data,
            "kd_loss": kd_loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
        }
        if self.report_accuracy:
            n_correct, total = self.compute_accuracy(model, net_output, sample)
            logging_output["n_correct"] = utils.item(n_correct.data)
            logging_output["total"] = utils.item(total.data)
        return loss, sample_size, logging_output

    def teacher_log_probs(self, model: Any, sample: dict[str, Any]) -> Tensor | tuple | None:
        """The teacher's tempered distribution, flattened like the student's lprobs.

        Runs before the student's forward so that, with top-k, the teacher's full-vocabulary
        activations are freed before the student's peak.
        """
        cached = sample.get("teacher_topk")
        if cached is not None:
            lprobs, ids = cached
            if self.ignore_prefix_size > 0:
                lprobs = lprobs[:, self.ignore_prefix_size :]
                ids = ids[:, self.ignore_prefix_size :]
            # softmax(z / T) restricted to the top k and renormalised, from the T = 1 log-probs
            lprobs = torch.log_softmax(lprobs.float() / self.temperature, dim=-1)
            return lprobs.reshape(-1, self.topk), ids.reshape(-1, self.topk)
        if self.cached:  # never score a split on gold alone (translation_kd refuses such splits)
            kind = "training" if model.training else "validation"
            raise SeqKDError(f"--teacher-cache: a {kind} batch without cached teacher entries")
        if self.teacher is None:
            return None
        self.teacher.follow(model)
        lprobs = self.teacher.log_probs(sample["net_input"], self.temperature)
        if self.ignore_prefix_size > 0:
            lprobs = lprobs[:, self.ignore_prefix_size :, :]
        lprobs = lprobs.reshape(-1, lprobs.size(-1))
        return truncate_topk(lprobs, self.topk) if self.topk > 0 else lprobs

    def student_log_probs(self, lprobs: Tensor, net_output: Any) -> Tensor:
        """The student's distribution at temperature T (at T = 1, the NLL's own lprobs)."""
        if self.temperature == 1.0:
            return lprobs
        logits = net_output[0]
        if self.ignore_prefix_size > 0:
            logits = logits[:, self.ignore_prefix_size :, :]
        return tempered_log_probs(logits.reshape(-1, logits.size(-1)), self.temperature)

    def kd_tokens(self, lprobs: Tensor, target: Tensor, training: bool) -> Tensor:
        """Tokens that get the KD term: all non-padding ones, or the selected ones."""
        valid = target.ne(self.padding_idx)
        if self.selection == "none" or not training:
            return valid
        with torch.no_grad():
            ce = -lprobs.detach().gather(-1, target.unsqueeze(-1)).squeeze(-1)
            if self.selection == "batch":
                return batch_selection(ce, valid, self.selection_rate)
            assert self.queue is not None
            self.queue.push(all_gather_1d(ce[valid].float()))
            return global_selection(ce, valid, self.queue.threshold(self.selection_rate))

    def token_kd(self, student_lprobs: Tensor, teacher: Tensor | tuple) -> Tensor:
        if isinstance(teacher, tuple):
            return divergence_topk(student_lprobs, *teacher, self.divergence)
        return divergence_full(student_lprobs, teacher, self.divergence)

    @classmethod
    def reduce_metrics(cls, logging_outputs: list[dict[str, Any]]) -> None:
        super().reduce_metrics(logging_outputs)
        kd_sum = sum(log.get("kd_loss", 0) for log in logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        if sample_size > 0:
            metrics.log_scalar(
                "kd_loss", kd_sum / sample_size / math.log(2), sample_size, round=3
            )
