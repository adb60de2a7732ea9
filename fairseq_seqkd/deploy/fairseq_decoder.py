"""fairseq's own generation pipeline in this process: a checkpoint loaded once, decoded at any beam.

``fairseq-generate`` spends seconds importing fairseq and loading before it decodes a sentence;
timing many models one process each spends that start-up again for every model and beam, and a
measurement that must run alone on the machine holds it meanwhile. :class:`FairseqDecoder` runs
what ``fairseq-generate`` runs (its parser and options, ``checkpoint_utils.load_model_ensemble``,
``task.build_generator``, ``task.get_batch_iterator`` in its order, ``task.inference_step``) and
times it with the same clock: the inference step of each batch only. Hypotheses are the
``D-`` lines ``fairseq-generate`` prints (``--remove-bpe`` applied), by sentence index; tokens
are counted as it counts them (with each sentence's ``</s>``).
"""

from __future__ import annotations

import ast
import time
from collections.abc import Sequence
from typing import Any

from ..distill.evaluate import Decoding
from ..errors import SeqKDError

__all__ = ["FairseqDecoder"]


class FairseqDecoder:
    """``fairseq-generate DATA --path CHECKPOINT --gen-subset SUBSET OPTIONS --beam K``, with the
    model and the splits loaded once for every ``decode(K, SUBSET)``."""

    def __init__(self, data: str, checkpoint: str, subsets: Sequence[str] = ("test",),
                 options: Sequence[str] = ()):
        from fairseq import checkpoint_utils, tasks, utils

        from ..teacher import load_checkpoint_state

        cfg = self._config([data, "--path", checkpoint, "--gen-subset", subsets[0], *options])
        if cfg.dataset.max_tokens is None and cfg.dataset.batch_size is None:
            cfg.dataset.max_tokens = 12000  # fairseq-generate's default
        self.cfg, self.checkpoint = cfg, checkpoint
        state = load_checkpoint_state(checkpoint, "--path")  # one-line errors naming the file
        self.task = tasks.setup_task(cfg.task)
        self.models, saved_cfg = checkpoint_utils.load_model_ensemble(
            [checkpoint], arg_overrides=ast.literal_eval(cfg.common_eval.model_overrides),
            task=self.task, state=state)
        for subset in subsets:
            self.task.load_dataset(subset, task_cfg=saved_cfg.task)
        for model in self.models:
            model.prepare_for_inference_(cfg)
        self.subsets = tuple(subsets)
        self._max_positions = utils.resolve_max_positions(
            self.task.max_positions(), *(m.max_positions() for m in self.models))

    @staticmethod
    def _config(argv: Sequence[str]) -> Any:  # an omegaconf DictConfig
        from fairseq import options
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf

        parser = options.get_generation_parser(default_task="translation")
        return convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, list(argv)))

    def decode(self, beam: int, subset: str | None = None) -> Decoding:
        """Every sentence of ``subset`` (default: the first loaded), hypotheses in index order,
        timed as fairseq-generate's ``Translated N sentences (M tokens) in Xs`` line."""
        subset = self.subsets[0] if subset is None else subset
        cfg = self.cfg  # parsed once (half a second a parse); only the beam differs
        cfg.generation.beam = beam
        generator = self.task.build_generator(self.models, cfg.generation)
        strip = getattr(generator, "symbols_to_strip_from_output", None) or {generator.eos}
        batches = self.task.get_batch_iterator(
            dataset=self.task.dataset(subset), max_tokens=cfg.dataset.max_tokens,
            max_sentences=cfg.dataset.batch_size, max_positions=self._max_positions,
            ignore_invalid_inputs=cfg.dataset.skip_invalid_size_inputs_valid_test,
            required_batch_size_multiple=cfg.dataset.required_batch_size_multiple,
            seed=cfg.common.seed, num_workers=cfg.dataset.num_workers,
        ).next_epoch_itr(shuffle=False)
        tgt_dict, post_process = self.task.target_dictionary, cfg.common_eval.post_process
        hypotheses: dict[int, str] = {}
        tokens, seconds = 0, 0.0
        for sample in batches:
            if "net_input" not in sample:
                continue
            begin = time.perf_counter()
            hypos = self.task.inference_step(generator, self.models, sample)
            seconds += time.perf_counter() - begin
            tokens += sum(len(h[0]["tokens"]) for h in hypos)
            for i, index in enumerate(sample["id"].tolist()):
                hypotheses[index] = tgt_dict.string(
                    hypos[i][0]["tokens"].int().cpu(), post_process,
                    extra_symbols_to_ignore=strip)
        size = len(self.task.dataset(subset))
        if sorted(hypotheses) != list(range(size)):
            raise SeqKDError(f"{self.checkpoint}: decoded {len(hypotheses)} of the {size} "
                             f"sentences of {subset} (too long for the model?)")
        return Decoding([hypotheses[i] for i in range(size)], size, tokens, seconds)
