"""Task ``translation_kd``: stock translation plus distilled targets and pruning.

With neither ``--distilled-data`` nor ``--prune-ratio`` it behaves exactly like ``translation``.
"""

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from ..errors import SeqKDError
from ..pruning import DEFAULT_PRUNE_PARAMS, SCHEMES

PRUNE_SCHEDULES = ("one-shot", "gradual")


@dataclass
class TranslationKDConfig(TranslationConfig):
    # --- sequence-level interpolation (distilled targets beside the gold ones)
    distilled_data: Optional[str] = field(
        default=None,
        metadata={
            "help": "data-bin directory (from seqkd-build) holding the teacher's targets for "
            "the training split, aligned with the gold data by sentence index (seqkd-build "
            "--fallback gold; a --fallback drop build is refused); they are delivered in each "
            "batch as sample['distilled']. Several joined by ':' follow the epoch shards of DATA"
        },
    )
    # --- word-level KD from an offline teacher cache (seqkd-cache-teacher)
    teacher_cache: Optional[str] = field(
        default=None,
        metadata={
            "help": "directory written by seqkd-cache-teacher: the teacher's top-k per target "
            "token, delivered in each batch as sample['teacher_topk'] for --criterion word_kd "
            "(which then loads no teacher; --kd-topk must equal the cache's k). Every split "
            "loaded (train and valid) must have a cache: a validation split scored on gold "
            "alone would choose checkpoint_best on another loss. Checked against "
            "the data at load time (size, dictionary, per-sentence target checksum)"
        },
    )
    # --- magnitude pruning during (re)training (See et al. 2016; Zhu & Gupta 2017)
    prune_ratio: float = field(
        default=0.0,
        metadata={"help": "fraction of the prunable weights set to zero (0 = no pruning)"},
    )
    prune_scheme: ChoiceEnum(SCHEMES) = field(  # type: ignore[valid-type]
        default="class-blind",
        metadata={"help": "class-blind: one global magnitude threshold (the paper's default); "
                  "class-uniform: the same fraction in each weight matrix; class-distribution: "
                  "per matrix, threshold = lambda x its standard deviation"},
    )
    prune_params: str = field(
        default=DEFAULT_PRUNE_PARAMS,
        metadata={"help": "regex choosing the prunable parameters by name (never biases or "
                  "layer norms); default: every weight matrix incl. embeddings and output "
                  "projection; a tied tensor (--share-all-embeddings) is pruned once"},
    )
    prune_at_update: int = field(
        default=0,
        metadata={"help": "update at which pruning starts; 0 = before the first update (for "
                  "retraining a checkpoint given with --restore-file/--finetune-from-model)"},
    )
    prune_schedule: ChoiceEnum(PRUNE_SCHEDULES) = field(  # type: ignore[valid-type]
        default="one-shot",
        metadata={"help": "one-shot: prune to --prune-ratio at --prune-at-update; gradual: raise "
                  "sparsity along Zhu & Gupta's cubic schedule until --prune-end-update "
                  "(checkpoint_best.pt may then predate the target sparsity: take "
                  "checkpoint_last.pt after --prune-end-update)"},
    )
    prune_end_update: int = field(
        default=0,
        metadata={"help": "with --prune-schedule gradual: update at which --prune-ratio is "
                  "reached"},
    )
    prune_interval: int = field(
        default=100,
        metadata={"help": "with --prune-schedule gradual: updates between two mask updates"},
    )


def uncached_split_message(cache_dir: str, split: str) -> str:
    """Why a split without a teacher cache is refused rather than scored on gold alone."""
    return (
        f"--teacher-cache {cache_dir} has no cache for the {split} split: its loss would be "
        f"the gold loss alone, not the training loss, and checkpoint_best would be chosen on "
        f"it; run seqkd-cache-teacher DATA --path TEACHER --gen-subset {split} --kd-topk K "
        f"--output {cache_dir}, or pass --disable-validation"
    )


@register_task("translation_kd", dataclass=TranslationKDConfig)
class TranslationKDTask(TranslationTask):
    cfg: TranslationKDConfig

    def __init__(self, cfg: TranslationKDConfig, src_dict: Any, tgt_dict: Any):
        super().__init__(cfg, src_dict, tgt_dict)
        from ..pruning_hook import PruningHook

        # validates every --prune-* option here, before any model or data is built
        self.pruning = PruningHook.from_config(cfg)  # None when --prune-ratio is 0
        if cfg.teacher_cache and cfg.distilled_data:
            raise SeqKDError(
                "--teacher-cache cannot be combined with --distilled-data; to distil on the "
                "teacher's targets, train on the distilled data-bin and build the cache on it"
            )

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs: Any):
        super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        if self.cfg.distilled_data and split == self.cfg.train_subset:
            from ..data.distilled import attach_distilled_targets

            self.datasets[split] = attach_distilled_targets(
                self.datasets[split], self.cfg, split, self.src_dict, self.tgt_dict,
                epoch=epoch,
            )
        if self.cfg.teacher_cache:
            self._attach_teacher_cache(split)

    def _attach_teacher_cache(self, split: str) -> None:
        from ..data.teacher_cache import attach_teacher_cache, meta_path, read_meta

        directory = self.cfg.teacher_cache
        if not os.path.isdir(directory):
            raise SeqKDError(f"--teacher-cache {directory} is not a directory")
        if split != self.cfg.train_subset and not os.path.exists(meta_path(directory, split)):
            raise SeqKDError(uncached_split_message(directory, split))
        k = read_meta(directory, self.cfg.train_subset).k  # every split: the train cache's k
        self.datasets[split] = attach_teacher_cache(
            self.datasets[split], directory, split, len(self.tgt_dict), k=k
        )

    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        if self.pruning is not None:
            # checks --prune-params against the model after --restore-file, before an update
            self.pruning.attach(model)

    @property
    def uses_ema(self) -> bool:
        """With pruning, fairseq hands ``train_step`` its ``--store-ema`` model, to refuse it."""
        return self.pruning is not None

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False,
                   ema_model=None):
        if self.pruning is not None:
            if ema_model is not None:
                raise SeqKDError(
                    "--store-ema cannot be combined with --prune-ratio: fairseq's EMA copy of "
                    "the weights would not be pruned (its pruned weights only decay); train "
                    "without --store-ema"
                )
            self.pruning.before_train_step(model, update_num, optimizer)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def valid_step(self, sample, model, criterion, ema_model=None):
        return super().valid_step(sample, model, criterion)

    def optimizer_step(self, optimizer, model, update_num):
        super().optimizer_step(optimizer, model, update_num)
        if self.pruning is not None:
            # pruned weights stay exactly zero under Adam's momentum
            self.pruning.after_optimizer_step(model, update_num, optimizer)
