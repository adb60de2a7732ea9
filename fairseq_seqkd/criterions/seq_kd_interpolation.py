"""Sequence-level interpolation, the naive form (Kim & Rush 2016, section 3.3).

loss = (1 - alpha) * NLL(gold) + alpha * NLL(teacher's target), both label-smoothed and summed
over their non-padding tokens, normalised by the gold batch's ``sample_size`` exactly as
``label_smoothed_cross_entropy`` does, so ``--kd-alpha 0`` is that criterion to the last digit.
Both terms are sentence-level log-likelihood sums, as in the paper's equation.

The teacher's targets come from ``--task translation_kd --distilled-data DIR`` (``seqkd-build``),
as ``sample["distilled"]``. The gold pass is the model's own ``forward`` (so DDP wrappers see
it); the encoder output of that pass is reused for the decoder pass on the distilled target, so
the encoder runs once per batch. Validation batches carry no distilled target: there the loss is
the gold term alone.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from fairseq import utils
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from fairseq.logging import metrics

from ..errors import SeqKDError

NEEDS = "needs --task translation_kd --distilled-data DIR (a data-bin from seqkd-build)"


@dataclass
class SeqKDInterpolationConfig(LabelSmoothedCrossEntropyCriterionConfig):
    kd_alpha: float = field(
        default=0.5,
        metadata={"help": "weight of the NLL of the teacher's target; 0 = gold NLL only "
                  "(label_smoothed_cross_entropy), 1 = teacher's target only (Seq-KD)"},
    )


@register_criterion("seq_kd_interpolation", dataclass=SeqKDInterpolationConfig)
class SeqKDInterpolationCriterion(LabelSmoothedCrossEntropyCriterion):
    def __init__(
        self,
        task: Any,
        sentence_avg: bool,
        label_smoothing: float,
        kd_alpha: float = 0.5,
        ignore_prefix_size: int = 0,
        report_accuracy: bool = False,
    ):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        if not 0.0 <= kd_alpha <= 1.0:
            raise SeqKDError(f"--kd-alpha must be in [0, 1], got {kd_alpha}")
        if not getattr(getattr(task, "cfg", None), "distilled_data", None):
            raise SeqKDError(f"--criterion seq_kd_interpolation {NEEDS}")
        self.alpha = kd_alpha

    def forward(self, model: Any, sample: dict[str, Any], reduce: bool = True):
        distilled = sample.get("distilled")
        if distilled is None and model.training:
            raise SeqKDError(
                f"--criterion seq_kd_interpolation: the training batch has no distilled "
                f"targets; it {NEEDS}"
            )
        use_distilled = distilled is not None and self.alpha > 0
        encoder_outs: list[Any] = []
        hook = _capture_encoder_out(model, encoder_outs) if use_distilled else None
        try:
            net_output = model(**sample["net_input"])
        finally:
            if hook is not None:
                hook.remove()
        loss, nll_loss = self.compute_loss(model, net_output, sample, reduce=reduce)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data,
            "nll_loss": nll_loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
        }
        if use_distilled:
            d_output = self.distilled_forward(model, sample, distilled, encoder_outs)
            d_loss, d_nll = self.compute_loss(
                model, d_output, {"target": distilled["target"]}, reduce=reduce
            )
            if not reduce:  # per-token losses of different lengths: concatenate
                loss = torch.cat([(1.0 - self.alpha) * loss, self.alpha * d_loss])
            else:
                loss = (1.0 - self.alpha) * loss + self.alpha * d_loss
            logging_output["loss"] = loss.data
            logging_output["distilled_nll_loss"] = d_nll.data
            logging_output["distilled_ntokens"] = distilled["ntokens"]
        if self.report_accuracy:
            n_correct, total = self.compute_accuracy(model, net_output, sample)
            logging_output["n_correct"] = utils.item(n_correct.data)
            logging_output["total"] = utils.item(total.data)
        return loss, sample_size, logging_output

    def distilled_forward(
        self, model: Any, sample: dict[str, Any], distilled: dict[str, Any],
        encoder_outs: list[Any],
    ) -> Any:
        """The decoder on the teacher's target, from the gold pass's encoder output."""
        net_input = sample["net_input"]
        if len(encoder_outs) == 1:
            return model.decoder(
                distilled["prev_output_tokens"],
                encoder_out=encoder_outs[0],
                src_lengths=net_input.get("src_lengths"),
            )
        # not an encoder-decoder model with a hookable encoder: a second full forward
        return model(**{**net_input, "prev_output_tokens": distilled["prev_output_tokens"]})

    @classmethod
    def reduce_metrics(cls, logging_outputs: list[dict[str, Any]]) -> None:
        super().reduce_metrics(logging_outputs)
        d_tokens = sum(log.get("distilled_ntokens", 0) for log in logging_outputs)
        if d_tokens > 0:
            d_sum = sum(log.get("distilled_nll_loss", 0) for log in logging_outputs)
            metrics.log_scalar(
                "distilled_nll_loss", d_sum / d_tokens / math.log(2), d_tokens, round=3
            )


def _capture_encoder_out(model: Any, into: list[Any]) -> Any:
    """Record what ``model.encoder`` returns during the next forward (through DDP wrappers)."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, torch.nn.Module) or not hasattr(model, "decoder"):
        return None

    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        into.append(output)

    return encoder.register_forward_hook(hook)
