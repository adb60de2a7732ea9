"""On-policy distillation: GKD (Agarwal et al., ICLR 2024) for fairseq encoder-decoders.

Each update is on-policy with probability ``--gkd-lambda``: the student decodes the batch's
sources itself (sampled at ``--gkd-temperature``, or greedy), then student and teacher are both
teacher-forced on that output and the loss is ``alpha * JSD(beta)(teacher || student)`` summed
over its non-padding tokens. Otherwise the update is off-policy: the batch's own targets (gold
or distilled), and the loss is word_kd's ``(1 - alpha) * NLL + alpha * JSD(beta)``. With
``--gkd-lambda 0 --gkd-beta 0`` this criterion is ``word_kd`` (forward KL) exactly.

Choices, and why:

* The on/off-policy draw is per update, a hash of fairseq's per-update seed
  (``--seed`` + number of updates, which the trainer installs with ``torch.manual_seed`` before
  every step and ``torch.initial_seed()`` returns): reproducible, identical on every rank and on
  every micro-batch of an update (``--update-freq``), and unchanged by a resume.
* The student samples in eval mode (dropout off), under ``no_grad``, with fairseq's incremental
  decoder state, as GKD does: the samples are the model's own test-time distribution. The loss
  is then taken in the mode the trainer set (dropout on). A lean loop (one decoder step per
  token, ancestral sampling) instead of fairseq's ``SequenceGenerator`` (beam 1): on CPU it
  measured 1.4x to 2.3x faster (``benchmarks/word_kd_step.py`` prints both), and it draws from
  its own generator, seeded by the per-update seed, the rank and the micro-batch, so the
  step's dropout masks do not depend on it. Greedy, it gives the generator's tokens exactly.
* Under DDP each rank decodes its own batch; nothing is exchanged besides fairseq's gradients.
* Validation is always off-policy, on the split's targets, so validation losses compare with
  ``word_kd``'s.
"""

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.distributed as dist
from fairseq import utils
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterionConfig,
)
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics
from torch import Tensor

from ..divergences import generalized_jsd_full, generalized_jsd_topk
from ..errors import SeqKDError
from .word_kd import WordKDConfig, WordKDCriterion

SAMPLINGS = ("sample", "greedy")


def _as_in_word_kd(name: str) -> Any:
    """word_kd's option of that name: same default, same help."""
    word_kd_field = WordKDConfig.__dataclass_fields__[name]
    return field(default=word_kd_field.default, metadata=dict(word_kd_field.metadata))


@dataclass
class GKDConfig(LabelSmoothedCrossEntropyCriterionConfig):
    teacher_path: Optional[str] = _as_in_word_kd("teacher_path")
    teacher_data: Optional[str] = _as_in_word_kd("teacher_data")
    kd_topk: int = _as_in_word_kd("kd_topk")
    kd_alpha: float = field(
        default=0.5,
        metadata={"help": "weight of the divergence term; off-policy updates add (1 - alpha) "
                  "times the label-smoothed NLL of the batch's own targets"},
    )
    gkd_lambda: float = field(
        default=0.5,
        metadata={"help": "fraction of updates whose targets the student generates itself "
                  "(0 = word_kd with JSD(beta), 1 = always on-policy)"},
    )
    gkd_beta: float = field(
        default=0.5,
        metadata={"help": "beta of the generalized JSD: 0 = forward KL(teacher || student), "
                  "1 = reverse KL, 0.5 = Jensen-Shannon"},
    )
    gkd_sampling: ChoiceEnum(SAMPLINGS) = field(  # type: ignore[valid-type]
        default="sample",
        metadata={"help": "how the student decodes on-policy batches: ancestral sampling or "
                  "greedy (eval mode, no dropout)"},
    )
    gkd_temperature: float = field(
        default=1.0,
        metadata={"help": "softmax temperature of the student's sampling"},
    )
    gkd_max_len_a: float = field(
        default=1.2,
        metadata={"help": "the student's samples have at most a * source length + b tokens "
                  "before </s>"},
    )
    gkd_max_len_b: int = field(
        default=10,
        metadata={"help": "see --gkd-max-len-a"},
    )


def check_gkd_options(
    lam: float, beta: float, temperature: float, max_len_a: float, max_len_b: int
) -> None:
    for option, value in (("--gkd-lambda", lam), ("--gkd-beta", beta)):
        if not 0.0 <= value <= 1.0:
            raise SeqKDError(f"{option} must be in [0, 1], got {value}")
    if not temperature > 0:
        raise SeqKDError(f"--gkd-temperature must be > 0, got {temperature}")
    if not (max_len_a >= 0 and max_len_b >= 0):
        raise SeqKDError(
            f"--gkd-max-len-a and --gkd-max-len-b must be >= 0, got {max_len_a} and {max_len_b}"
        )


def update_is_on_policy(update_seed: int, lam: float) -> bool:
    """The per-update draw: a uniform number from a hash of the update's seed, below lambda."""
    digest = hashlib.sha256(f"gkd-on-policy:{update_seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < lam


@torch.no_grad()
def sample_student(
    model: Any,
    net_input: dict[str, Tensor],
    max_lens: Tensor,
    eos: int,
    pad: int,
    temperature: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Decode every source once, token by token, with the decoder's incremental state.

    ``generator`` None means greedy. Returns ``(batch, 1 + length)`` tokens: </s> (fairseq's
    start symbol), the output, its </s>, then padding. Row ``i`` has at least one token and at
    most ``max_lens[i]`` before its </s>. The model is decoded in eval mode and left in the
    mode it was in.
    """
    was_training = model.training
    model.eval()
    try:
        encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
        bsz = net_input["src_tokens"].size(0)
        longest = int(max_lens.max())
        tokens = net_input["src_tokens"].new_full((bsz, longest + 2), pad)
        tokens[:, 0] = eos
        done = torch.zeros(bsz, dtype=torch.bool, device=tokens.device)
        incremental_state: dict[str, dict[str, Optional[Tensor]]] = {}
        for step in range(longest + 1):
            logits = model.decoder(
                tokens[:, : step + 1], encoder_out=encoder_out, incremental_state=incremental_state
            )[0][:, -1, :].float()
            logits[:, pad] = -math.inf
            if step == 0:
                logits[:, eos] = -math.inf  # no empty output (fairseq's --min-len 1)
            if generator is None:
                nxt = logits.argmax(-1)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            nxt = nxt.masked_fill(max_lens.le(step), eos).masked_fill(done, pad)
            tokens[:, step + 1] = nxt
            done |= nxt.eq(eos)
            if bool(done.all()):
                return tokens[:, : step + 2]
        return tokens
    finally:
        model.train(was_training)


@register_criterion("gkd", dataclass=GKDConfig)
class GKDCriterion(WordKDCriterion):
    """word_kd's teacher and off-policy loss with JSD(beta), plus on-policy updates."""

    def __init__(
        self,
        task: Any,
        sentence_avg: bool,
        label_smoothing: float,
        teacher_path: Optional[str] = None,
        teacher_data: Optional[str] = None,
        kd_alpha: float = 0.5,
        kd_topk: int = 0,
        gkd_lambda: float = 0.5,
        gkd_beta: float = 0.5,
        gkd_sampling: str = "sample",
        gkd_temperature: float = 1.0,
        gkd_max_len_a: float = 1.2,
        gkd_max_len_b: int = 10,
        ignore_prefix_size: int = 0,
        report_accuracy: bool = False,
    ):
        check_gkd_options(gkd_lambda, gkd_beta, gkd_temperature, gkd_max_len_a, gkd_max_len_b)
        if str(gkd_sampling) not in SAMPLINGS:
            raise SeqKDError(
                f"--gkd-sampling must be one of {', '.join(SAMPLINGS)}, got {gkd_sampling!r}"
            )
        cache_dir = getattr(getattr(task, "cfg", None), "teacher_cache", None)
        if gkd_lambda > 0:
            if cache_dir:
                raise SeqKDError(
                    f"--teacher-cache {cache_dir} cannot score the student's own outputs; "
                    f"with --gkd-lambda {gkd_lambda} > 0 give --teacher-path instead"
                )
            if not kd_alpha > 0:
                raise SeqKDError(
                    f"--gkd-lambda {gkd_lambda} > 0 needs --kd-alpha > 0: on-policy updates "
                    f"have the divergence term only"
                )
            if ignore_prefix_size > 0:
                raise SeqKDError("--ignore-prefix-size is not supported with --gkd-lambda > 0")
        if kd_alpha > 0 and not teacher_path and not cache_dir:
            raise SeqKDError("--criterion gkd with --kd-alpha > 0 needs --teacher-path")
        super().__init__(
            task, sentence_avg, label_smoothing, teacher_path=teacher_path,
            teacher_data=teacher_data, kd_alpha=kd_alpha, kd_topk=kd_topk,
            ignore_prefix_size=ignore_prefix_size, report_accuracy=report_accuracy,
        )
        self.eos = task.target_dictionary.eos()
        self.lam = gkd_lambda
        self.beta = gkd_beta
        self.greedy = str(gkd_sampling) == "greedy"
        self.sampling_temperature = gkd_temperature
        self.max_len_a = gkd_max_len_a
        self.max_len_b = gkd_max_len_b
        self._micro_batch = (None, 0)  # (update seed, micro-batches seen in that update)

    def forward(self, model: Any, sample: dict[str, Any], reduce: bool = True):
        update_seed = torch.initial_seed()
        if not (model.training and self.lam > 0 and update_is_on_policy(update_seed, self.lam)):
            loss, sample_size, logging_output = super().forward(model, sample, reduce)
            logging_output.update(gkd_batches=1, nll_tokens=sample["ntokens"])
            return loss, sample_size, logging_output
        tokens = sample_student(
            model, sample["net_input"], self.max_lens(model, sample["net_input"]),
            self.eos, self.padding_idx, self.sampling_temperature,
            None if self.greedy else self.generator(update_seed, sample["target"].device),
        )
        target = tokens[:, 1:].contiguous()
        prev_output_tokens = tokens[:, :-1].masked_fill(target.eq(self.padding_idx),
                                                        self.padding_idx)
        ntokens = int(target.ne(self.padding_idx).sum())
        on_policy = {
            "net_input": {**sample["net_input"], "prev_output_tokens": prev_output_tokens},
            "target": target,
            "ntokens": ntokens,
        }
        teacher_lprobs = self.teacher_log_probs(model, on_policy)
        net_output = model(**on_policy["net_input"])
        lprobs, flat_target = self.get_lprobs_and_target(model, net_output, on_policy)
        kd = self.token_kd(lprobs, teacher_lprobs)
        kd = kd.masked_fill(flat_target.eq(self.padding_idx), 0.0)
        kd_loss = kd.sum() if reduce else kd
        loss = self.alpha * kd_loss
        sample_size = target.size(0) if self.sentence_avg else ntokens
        logging_output = {
            "loss": loss.data,
            "nll_loss": torch.zeros_like(loss.data),
            "kd_loss": kd_loss.data,
            "ntokens": ntokens,
            "nsentences": target.size(0),
            "sample_size": sample_size,
            "gkd_batches": 1,
            "on_policy": 1,
            "sample_tokens": ntokens,
            "sample_sentences": target.size(0),
            "nll_tokens": 0,
        }
        if self.report_accuracy:
            n_correct, total = self.compute_accuracy(model, net_output, on_policy)
            logging_output["n_correct"] = utils.item(n_correct.data)
            logging_output["total"] = utils.item(total.data)
        return loss, sample_size, logging_output

    def max_lens(self, model: Any, net_input: dict[str, Tensor]) -> Tensor:
        """a * source length + b per sentence, within the decoder's positions."""
        lengths = net_input["src_lengths"].float() * self.max_len_a + self.max_len_b
        limit = max(1, model.max_decoder_positions() - 1)
        return lengths.floor().long().clamp(1, limit)

    def generator(self, update_seed: int, device: torch.device) -> torch.Generator:
        """The sampling stream of this update, rank and micro-batch."""
        seen_seed, count = self._micro_batch
        count = count + 1 if seen_seed == update_seed else 0
        self._micro_batch = (update_seed, count)
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        digest = hashlib.sha256(f"gkd-sample:{update_seed}:{rank}:{count}".encode()).digest()
        return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "big") >> 1)

    def token_kd(self, student_lprobs: Tensor, teacher: Tensor | tuple) -> Tensor:
        if isinstance(teacher, tuple):
            return generalized_jsd_topk(student_lprobs, *teacher, self.beta)
        return generalized_jsd_full(student_lprobs, teacher, self.beta)

    @classmethod
    def reduce_metrics(cls, logging_outputs: list[dict[str, Any]]) -> None:
        """word_kd's metrics with the NLL over off-policy tokens, the on-policy share of the
        batches and the mean length of the student's samples (tokens with </s>)."""
        keys = {key for log in logging_outputs for key in log}
        sums = {key: utils.item(sum(log.get(key, 0) for log in logging_outputs)) for key in keys}
        if sums.get("nll_tokens", 0) > 0:  # the NLL has the off-policy tokens as denominator
            super().reduce_metrics([{**sums, "ntokens": sums["nll_tokens"]}])
        elif sums.get("sample_size", 0) > 0:  # on-policy only: no targets of the batch's own
            for key in ("loss", "kd_loss"):
                metrics.log_scalar(key, sums[key] / sums["sample_size"] / math.log(2),
                                   sums["sample_size"], round=3)
        batches, on_policy = sums.get("gkd_batches", 0), sums.get("on_policy", 0)
        if batches > 0:
            metrics.log_scalar("on_policy", on_policy / batches, batches, round=3)
        if on_policy > 0:
            metrics.log_scalar("sample_len", sums["sample_tokens"] / sums["sample_sentences"],
                               sums["sample_sentences"], round=2)
