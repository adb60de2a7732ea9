"""The internals of other packages that the plugin relies on, one test each.

fairseq, sacrebleu and CTranslate2 have upper bounds in setup.py because the plugin uses names
they do not document (a leading underscore, an undocumented module, an error message it parses).
Each test here names the internal, the module of ours that uses it and what breaks without it,
so that a release that drops one fails here first, loudly, instead of somewhere downstream.
"""

from __future__ import annotations

import argparse
import inspect
import queue
import struct

import numpy as np
import pytest
import torch


def _require(obj: object, name: str, used_by: str) -> object:
    """``getattr(obj, name)``, or a failure naming the internal and who needs it."""
    if not hasattr(obj, name):
        owner = getattr(obj, "__name__", type(obj).__name__)
        pytest.fail(f"{owner}.{name} is gone: {used_by} relies on it; adapt that code, then "
                    "raise the upper bound in setup.py")
    return getattr(obj, name)


def _parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)


# ------------------------------------------------------------------------------- fairseq


def test_fairseq_background_consumer_max_len_and_queue():
    """clean_exit.stop_prefetch_threads ends fairseq's prefetch threads at exit through
    ``BackgroundConsumer._max_len`` and ``._queue``; without them fairseq-train exits 134."""
    from fairseq.data import iterators

    consumer_type = _require(iterators, "BackgroundConsumer", "fairseq_seqkd.clean_exit")
    items: queue.Queue = queue.Queue()
    consumer = consumer_type(items, iter(range(3)), 3, None)
    _require(consumer, "_max_len", "fairseq_seqkd.clean_exit.stop_prefetch_threads")
    assert _require(consumer, "_queue", "fairseq_seqkd.clean_exit.stop_prefetch_threads") \
        is items
    consumer._max_len = 0  # what clean_exit does: the thread stops after one item
    consumer.start()
    consumer.join(30)
    assert not consumer.is_alive() and items.get() == 0
    assert items.qsize() == 1  # fairseq's end-of-data marker, not the second item


def test_fairseq_mmap_builder_data_file(tmp_path):
    """distill.binarize closes an abandoned builder's ``_data_file`` before deleting it."""
    from fairseq.data import indexed_dataset

    builder = indexed_dataset.make_builder(str(tmp_path / "x.bin"), "mmap", vocab_size=100)
    handle = _require(builder, "_data_file", "fairseq_seqkd.distill.binarize (discard)")
    assert not handle.closed
    handle.close()


def test_fairseq_mmap_index_layout(tmp_path):
    """data.teacher_cache writes and checks its cache through ``MMapIndexedDatasetBuilder``
    (``add_item``, ``merge_file_``, ``finalize``) and ``MMapIndexedDataset.Index`` (``sizes``,
    ``dtype``), with ``data_file_path``/``index_file_path`` naming the files."""
    from fairseq.data import indexed_dataset as fi

    used_by = "fairseq_seqkd.data.teacher_cache"
    for name in ("MMapIndexedDataset", "MMapIndexedDatasetBuilder", "data_file_path",
                 "index_file_path", "infer_dataset_impl", "dataset_exists", "make_builder"):
        _require(fi, name, used_by)
    index_type = _require(fi.MMapIndexedDataset, "Index", used_by)
    prefix = str(tmp_path / "part")
    builder = fi.MMapIndexedDatasetBuilder(fi.data_file_path(prefix), dtype=np.int32)
    builder.add_item(torch.arange(6, dtype=torch.int32))
    builder.finalize(fi.index_file_path(prefix))
    whole = str(tmp_path / "whole")
    merged = fi.MMapIndexedDatasetBuilder(fi.data_file_path(whole), dtype=np.int32)
    _require(merged, "merge_file_", used_by)
    merged.merge_file_(prefix)
    merged.merge_file_(prefix)
    merged.finalize(fi.index_file_path(whole))
    index = index_type(fi.index_file_path(whole))
    assert list(index.sizes) == [6, 6] and np.dtype(index.dtype) == np.int32
    assert fi.infer_dataset_impl(whole) == "mmap" and fi.dataset_exists(whole, "mmap")


def test_fairseq_corrupt_index_errors(tmp_path):
    """data.distilled.CORRUPT_INDEX_ERRORS lists what fairseq raises for a foreign or
    truncated .idx; another type would reach the user as a traceback, not one line."""
    from fairseq.data import Dictionary, data_utils
    from fairseq.data import indexed_dataset as fi

    from fairseq_seqkd.data.distilled import CORRUPT_INDEX_ERRORS

    prefix = str(tmp_path / "x")
    builder = fi.make_builder(prefix + ".bin", "mmap", vocab_size=100)
    for _ in range(20):
        builder.add_item(torch.arange(1, 9))
    builder.finalize(prefix + ".idx")
    whole = (tmp_path / "x.idx").read_bytes()
    for broken in (b"", b"not an index" * 20, whole[:len(whole) // 2]):
        (tmp_path / "x.idx").write_bytes(broken)
        with pytest.raises(CORRUPT_INDEX_ERRORS):
            fi.MMapIndexedDataset.Index(prefix + ".idx")
        with pytest.raises(CORRUPT_INDEX_ERRORS):
            data_utils.load_indexed_dataset(prefix, Dictionary(), "mmap")
    assert struct.error in CORRUPT_INDEX_ERRORS


def test_fairseq_fp16_optimizer_master_copy_layout():
    """pruning_hook.master_copies finds the fp32 master copy of each weight in
    ``FP16Optimizer.fp32_params`` by mirroring ``_sync_fp32_params_to_fp16``; pruned weights
    would come back from a master copy laid out otherwise."""
    from fairseq.optim import fp16_optimizer

    from fairseq_seqkd.pruning_hook import master_copies

    mixin = _require(fp16_optimizer, "_FP16OptimizerMixin", "fairseq_seqkd.pruning_hook")
    _require(mixin, "_sync_fp32_params_to_fp16", "fairseq_seqkd.pruning_hook.master_copies")
    params = [torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.zeros(4))]
    for flat in (True, False):
        optimizer = type("Optimizer", (mixin,), {})()
        optimizer.fp16_params = params
        if flat:  # one flat buffer per device (index None on CPU)
            optimizer.fp32_params = {None: torch.nn.Parameter(torch.arange(10.0))}
        else:
            optimizer.fp32_params = [torch.nn.Parameter(torch.arange(6.0).view(2, 3)),
                                     torch.nn.Parameter(torch.arange(6.0, 10.0))]
        views = master_copies(optimizer, params)
        views[id(params[1])][0] = -1.0  # what pruning does to a master copy
        optimizer._sync_fp32_params_to_fp16()
        for p in params:
            assert torch.equal(p.data, views[id(p)]), f"flat={flat}"
        assert params[1].data[0] == -1.0


def test_fairseq_task_hooks_and_uses_ema():
    """tasks.translation_kd overrides these FairseqTask hooks with these arguments, and sets
    ``uses_ema`` so that fairseq's Trainer hands ``train_step`` its EMA model (refused with
    pruning); a renamed hook or argument would leave the pruned weights unmasked."""
    from fairseq import trainer
    from fairseq.tasks import FairseqTask

    expected = {
        "begin_epoch": ["self", "epoch", "model"],
        "optimizer_step": ["self", "optimizer", "model", "update_num"],
        "train_step": ["self", "sample", "model", "criterion", "optimizer", "update_num",
                       "ignore_grad"],
        "valid_step": ["self", "sample", "model", "criterion"],
    }
    for hook, names in expected.items():
        found = _parameters(_require(FairseqTask, hook, "fairseq_seqkd.tasks.translation_kd"))
        assert found[:len(names)] == names, f"FairseqTask.{hook}{tuple(found)}"
    assert "uses_ema" in inspect.getsource(trainer.Trainer), (
        "fairseq's Trainer no longer reads task.uses_ema: tasks.translation_kd cannot refuse "
        "--store-ema with pruning")


def test_fairseq_registries_and_config_names():
    """deploy.stock rewrites a checkpoint to stock fairseq through the registries and the
    ``_name`` key of each config group; ``quiet_logger`` silences fairseq_task's logger."""
    from fairseq import criterions, models, tasks
    from fairseq.tasks.translation import TranslationConfig

    used_by = "fairseq_seqkd.deploy.stock"
    for module, name in ((tasks, "TASK_REGISTRY"), (tasks, "TASK_DATACLASS_REGISTRY"),
                         (criterions, "CRITERION_REGISTRY"),
                         (criterions, "CRITERION_DATACLASS_REGISTRY"),
                         (models, "ARCH_MODEL_REGISTRY")):
        assert isinstance(_require(module, name, used_by), dict)
    assert "translation" in tasks.TASK_REGISTRY and "transformer" in models.ARCH_MODEL_REGISTRY
    assert "_name" in TranslationConfig.__dataclass_fields__
    from fairseq.tasks import fairseq_task

    assert fairseq_task.logger.name == "fairseq.tasks.fairseq_task"  # distill.runner


# ------------------------------------------------------------------------------ sacrebleu


@pytest.mark.parametrize("metric_name", ["CHRF", "TER"])
def test_sacrebleu_cached_reference_statistics(metric_name):
    """distill.similarity scores chrF and TER through the metrics' cached-reference path
    (``_cache_references``, ``_preprocess_segment``, ``_compute_segment_statistics``,
    ``_aggregate_and_compute``); without it Seq-Inter selection falls back to a ~10x slower
    path. The result must equal sacrebleu's sentence score."""
    import sacrebleu
    from sacrebleu import metrics

    metric = getattr(metrics, metric_name)()
    used_by = "fairseq_seqkd.distill.similarity.SentenceScorer"
    for name in ("_cache_references", "_preprocess_segment", "_compute_segment_statistics",
                 "_aggregate_and_compute"):
        _require(metric, name, used_by)
    hyp, ref = "the cat sat on a mat .", "the cat sat on the mat ."
    prepared = metric._cache_references([[ref]])[0]
    stats = metric._compute_segment_statistics(metric._preprocess_segment(hyp), prepared)
    fast = metric._aggregate_and_compute([stats]).score
    plain = getattr(sacrebleu, f"sentence_{metric_name.lower()}")(hyp, [ref]).score
    assert fast == plain


def test_sacrebleu_bleu_tokenizer_and_order():
    """distill.similarity re-implements sentence BLEU on cached n-grams: it takes the metric's
    ``tokenizer`` and ``max_ngram_order`` and mirrors ``BLEU._preprocess_segment``
    (``tokenizer(text.rstrip())``) and ``compute_bleu``."""
    import sacrebleu
    from sacrebleu.metrics import BLEU

    metric = BLEU(tokenize=BLEU.TOKENIZER_DEFAULT, effective_order=True)
    used_by = "fairseq_seqkd.distill.similarity.SentenceScorer"
    tokenize = _require(metric, "tokenizer", used_by)
    assert _require(metric, "max_ngram_order", used_by) == 4
    _require(BLEU, "compute_bleu", used_by)
    text = "Hello, world (again)!  "
    assert _require(metric, "_preprocess_segment", used_by)(text) == tokenize(text.rstrip())
    from fairseq_seqkd.distill.similarity import SentenceScorer

    scorer = SentenceScorer("bleu")
    for hyp, ref in (("a b c d e", "a b c d f"), ("x", "a b"), ("Er, ja!", "Er, ja.")):
        assert scorer.score(hyp, scorer.prepare(ref)) == sacrebleu.sentence_bleu(hyp, [ref]).score


# ---------------------------------------------------------------------------- CTranslate2


def test_ctranslate2_converter_interface_and_unsupported_message():
    """deploy.ct2_export calls ``FairseqConverter(model_path, data_dir, source_lang=,
    target_lang=)`` and turns its unsupported-model ValueError into one line by matching the
    message that ``converters.utils.raise_unsupported`` writes (reasons as '- ' lines)."""
    ct2 = pytest.importorskip("ctranslate2")
    from ctranslate2 import converters

    from fairseq_seqkd.deploy.ct2_export import _UNSUPPORTED

    used_by = "fairseq_seqkd.deploy.ct2_export"
    converter = _require(converters, "FairseqConverter", used_by)
    assert _parameters(converter.__init__)[:5] == ["self", "model_path", "data_dir",
                                                   "source_lang", "target_lang"]
    assert "quantization" in _parameters(converter.convert)
    from ctranslate2.converters import utils

    raise_unsupported = _require(utils, "raise_unsupported", used_by)
    with pytest.raises(ValueError) as info:
        raise_unsupported(["Option --foo is not supported", "Option --bar neither"])
    assert _UNSUPPORTED in str(info.value)
    reasons = [ln[2:] for ln in str(info.value).splitlines() if ln.startswith("- ")]
    assert reasons == ["Option --foo is not supported", "Option --bar neither"]
    assert ct2.__version__


# ---------------------------------------------------------------------- torch and stdlib


def test_torch_safe_unpickler_messages(tmp_path):
    """teacher.why_not_a_checkpoint quotes the global or opcode torch's safe unpickler refused,
    parsed from its message ('Unsupported global: GLOBAL x', 'WeightsUnpickler error: ...');
    without those the one-line error falls back to the message's first line."""
    path = tmp_path / "refused.pt"
    torch.save({"model": {}, "cfg": argparse.ArgumentParser}, path)
    with pytest.raises(Exception) as info:
        torch.load(path, weights_only=True)
    assert "Unsupported global: GLOBAL argparse.ArgumentParser" in str(info.value)
    assert "WeightsUnpickler error:" in str(info.value)
    assert callable(torch.serialization.add_safe_globals)  # safe_load's allow-list


def test_argparse_internals_of_prune_recipe():
    """examples/prune.sh turns a checkpoint's architecture back into flags through
    ``ArgumentParser._actions`` and ``argparse._StoreTrueAction``/``_StoreFalseAction``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--a", action="store_true")
    parser.add_argument("--b", action="store_false")
    actions = {a.dest: a for a in _require(parser, "_actions", "examples/prune.sh")}
    assert isinstance(actions["a"], _require(argparse, "_StoreTrueAction", "examples/prune.sh"))
    assert isinstance(actions["b"], _require(argparse, "_StoreFalseAction", "examples/prune.sh"))
