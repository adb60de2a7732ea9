"""Per-step cost of word-level KD against its floor, measured side by side in one run.

For one student and a teacher about 4x its size, on the same batches, this times one training
step (forward, backward) of
  (a) label_smoothed_cross_entropy,
  (b) the teacher's no-grad forward alone,
  (c) word_kd over the full vocabulary,
  (d) word_kd with the teacher's top-8,
  (e) word_kd with the teacher's top-8 read from a teacher cache (seqkd-cache-teacher's format,
      built in a temporary directory from the same teacher on the same batches, read back with
      ``TeacherCache`` and collated by ``CachedTeacherDataset.collater``, as in training; the
      reading and collating happen before the timed step, as in fairseq's DataLoader),
  (f) gkd off-policy update (word_kd's step with JSD(0.5) instead of KL),
  (g) gkd on-policy update (the student samples the batch's outputs, then student and teacher
      are teacher-forced on them),
and the peak memory each allocates during the step (torch profiler memory events, CPU, or the
CUDA allocator's peak). gkd draws whole updates on-policy with probability lambda, so its mean
step time is (1 - lambda) f + lambda g: lambda 0.5 is reported as (f + g) / 2, lambda 1.0 as g,
each as a ratio to a (plain CE) and c (word_kd). Two more rows time the student's sampling
alone: gkd's lean incremental loop and fairseq's SequenceGenerator (beam 1, sampling), the
alternative it was measured against. The floor for word-KD is a + b: a student step plus a
teacher forward. Configurations run interleaved, round after round, and the median is reported,
so machine noise hits all of them alike. Without a teacher in the step, e's floor is a itself:
its target is e/a <= 1.10 in time and in peak memory.

    python benchmarks/word_kd_step.py [--vocab 8000] [--tokens 2048] [--rounds 7]
"""

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from types import SimpleNamespace

import torch
from fairseq import search
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
from fairseq.data import Dictionary
from fairseq.models.transformer import TransformerModel, base_architecture
from fairseq.sequence_generator import SequenceGenerator

from fairseq_seqkd.criterions.gkd import GKDCriterion, sample_student
from fairseq_seqkd.criterions.word_kd import WordKDCriterion
from fairseq_seqkd.data.teacher_cache import (
    CACHE_FORMAT,
    CachedTeacherDataset,
    CacheMeta,
    TeacherCache,
    assemble,
    target_checksum,
    write_chunk,
)
from fairseq_seqkd.teacher import FrozenTeacher


def make_dictionary(size: int) -> Dictionary:
    d = Dictionary()
    for i in range(size - len(d)):
        d.add_symbol(f"w{i}")
    return d


def make_model(task: SimpleNamespace, dim: int, layers: int) -> TransformerModel:
    args = argparse.Namespace(
        encoder_embed_dim=dim, decoder_embed_dim=dim, encoder_ffn_embed_dim=4 * dim,
        decoder_ffn_embed_dim=4 * dim, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=4, decoder_attention_heads=4, share_all_embeddings=True,
        dropout=0.1, max_source_positions=256, max_target_positions=256,
    )
    base_architecture(args)
    return TransformerModel.build_model(args, task)


def make_batches(d: Dictionary, n: int, sentences: int, length: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        src = torch.randint(d.nspecial, len(d), (sentences, length), generator=g)
        tgt = torch.randint(d.nspecial, len(d), (sentences, length), generator=g)
        tgt[:, -1] = d.eos()
        prev = torch.cat([torch.full((sentences, 1), d.eos()), tgt[:, :-1]], dim=1)
        batches.append({
            "net_input": {"src_tokens": src, "src_lengths": torch.full((sentences,), length),
                          "prev_output_tokens": prev},
            "target": tgt, "ntokens": sentences * length, "nsentences": sentences,
        })
    return batches


class _Rows:
    """The minimum of a fairseq dataset that ``CachedTeacherDataset.collater`` needs."""

    def __init__(self, batch: dict):
        self.batch = batch

    def collater(self, samples: list[dict]) -> dict:
        return {**self.batch, "id": torch.tensor([s["id"] for s in samples])}


def attach_cached_topk(batches: list[dict], teacher: FrozenTeacher, k: int, vocab: int,
                       directory: str) -> None:
    """Build a real cache of the batches' targets, then collate each batch's entries from it."""
    entries, rows = [], batches[0]["target"].size(0)
    for batch in batches:
        values, ids = teacher.log_probs(batch["net_input"]).topk(k, dim=-1)
        for r, target in enumerate(batch["target"].cpu()):
            entries.append((ids[r].cpu(), values[r].cpu(), target_checksum(target)))
    chunk = os.path.join(directory, "chunk")
    os.makedirs(chunk)
    write_chunk(chunk, entries, "float16")
    meta = CacheMeta(format=CACHE_FORMAT, split="bench", k=k, dtype="float16",
                     size=len(entries), vocab_size=vocab, teacher="<in memory>")
    assemble(directory, meta, [chunk])
    cache = TeacherCache(directory, "bench", len(entries), k=k, vocab_size=vocab)
    for b, batch in enumerate(batches):
        device = batch["target"].device
        samples = []
        for r, target in enumerate(batch["target"].cpu()):
            index = b * rows + r
            samples.append({"id": index, "target": target,
                            "teacher_topk": cache.entry(index, target)})
        collated = CachedTeacherDataset(_Rows(batch), cache).collater(samples)
        batch["teacher_topk"] = tuple(t.to(device) for t in collated["teacher_topk"])


def peak_bytes(fn: Callable[[], None], device: torch.device) -> int:
    """Peak bytes allocated during ``fn`` above what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # each op's own allocations and frees (self_), plus frees outside any op ([memory])
    events = sorted(
        (e.time_range.start, e.cpu_memory_usage if e.name == "[memory]" else
         e.self_cpu_memory_usage)
        for e in prof.events()
    )
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--student-dim", type=int, default=128)
    parser.add_argument("--student-layers", type=int, default=2)
    parser.add_argument("--teacher-dim", type=int, default=256)
    parser.add_argument("--teacher-layers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--topk", type=int, default=8)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)

    d = make_dictionary(args.vocab)
    task = SimpleNamespace(source_dictionary=d, target_dictionary=d)
    student = make_model(task, args.student_dim, args.student_layers).to(device).train()
    teacher_model = make_model(task, args.teacher_dim, args.teacher_layers)
    teacher = FrozenTeacher([teacher_model], ["<in memory>"])
    batches = [
        {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in b.items()}
        for b in make_batches(d, args.rounds, args.sentences, args.length, seed=1)
    ]
    for b in batches:
        b["net_input"] = {k: v.to(device) for k, v in b["net_input"].items()}

    lsce = LabelSmoothedCrossEntropyCriterion(task, sentence_avg=False, label_smoothing=0.1)

    def word_kd(topk: int) -> WordKDCriterion:
        crit = WordKDCriterion(task, sentence_avg=False, label_smoothing=0.1, kd_alpha=0.0,
                               kd_topk=topk)
        crit.alpha, crit.teacher = 0.5, teacher  # an in-memory teacher instead of a file
        return crit

    def gkd(lam: float) -> GKDCriterion:
        crit = GKDCriterion(task, sentence_avg=False, label_smoothing=0.1, kd_alpha=0.0,
                            gkd_lambda=0.0)
        crit.alpha, crit.teacher, crit.lam = 0.5, teacher, lam
        return crit

    def student_step(criterion: torch.nn.Module) -> Callable[[dict], None]:
        def step(batch: dict) -> None:
            student.zero_grad(set_to_none=True)
            loss, _, _ = criterion(student, batch)
            loss.backward()
        return step

    def teacher_forward(batch: dict) -> None:
        teacher.follow(student)
        teacher.log_probs(batch["net_input"])

    # e: the same batches with the cached top-k attached (the other criteria ignore the key)
    cached_batches = [dict(b) for b in batches]
    with tempfile.TemporaryDirectory() as tmp:
        teacher.follow(student)
        attach_cached_topk(cached_batches, teacher, args.topk, len(d), tmp)
    cached_crit = WordKDCriterion(task, sentence_avg=False, label_smoothing=0.1, kd_alpha=0.0,
                                  kd_topk=args.topk)
    cached_crit.alpha = 0.5  # no teacher: sample["teacher_topk"] is used
    cached_name = f"e word_kd cached top-{args.topk}"

    def cached_step(batch: dict) -> None:
        student_step(cached_crit)(cached_batches[batch_index[id(batch)]])

    batch_index = {id(b): i for i, b in enumerate(batches)}
    sampler = gkd(1.0)
    generator = torch.Generator(device=device).manual_seed(0)
    fairseq_sampler = SequenceGenerator([student], d, beam_size=1, max_len_a=sampler.max_len_a,
                                        max_len_b=sampler.max_len_b,
                                        search_strategy=search.Sampling(d))

    def lean_sampling(batch: dict) -> None:
        net_input = batch["net_input"]
        sample_student(student, net_input, sampler.max_lens(student, net_input), d.eos(),
                       d.pad(), generator=generator)

    def fairseq_sampling(batch: dict) -> None:
        student.eval()
        fairseq_sampler.generate([student], batch)
        student.train()

    configs = {
        "a label_smoothed_cross_entropy": student_step(lsce),
        "b teacher forward (no grad)": teacher_forward,
        "c word_kd full vocabulary": student_step(word_kd(0)),
        f"d word_kd top-{args.topk}": student_step(word_kd(args.topk)),
        cached_name: cached_step,
        "f gkd off-policy update": student_step(gkd(0.0)),
        "g gkd on-policy update": student_step(gkd(1.0)),
        "sampling: gkd lean loop": lean_sampling,
        "sampling: SequenceGenerator": fairseq_sampling,
    }
    for fn in configs.values():  # warm-up, and teacher placement
        fn(batches[0])
    times: dict[str, list[float]] = {name: [] for name in configs}
    for batch in batches:
        for name, fn in configs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    peaks = {name: peak_bytes(lambda f=fn: f(batches[0]), device) for name, fn in configs.items()}
    med = {name: statistics.median(ts) for name, ts in times.items()}

    n_student = sum(p.numel() for p in student.parameters())
    n_teacher = sum(p.numel() for p in teacher_model.parameters())
    print(f"device {device}, threads {torch.get_num_threads()}, vocab {args.vocab}, "
          f"batch {args.sentences}x{args.length} tokens, rounds {args.rounds}")
    print(f"student {n_student:,} params, teacher {n_teacher:,} params "
          f"({n_teacher / n_student:.1f}x)")
    print(f"{'configuration':34s} {'ms/step':>9s} {'peak MiB':>9s}")
    for name in configs:
        print(f"{name:34s} {1000 * med[name]:9.1f} {peaks[name] / 2**20:9.1f}")
    a, b = med["a label_smoothed_cross_entropy"], med["b teacher forward (no grad)"]
    c, dk = med["c word_kd full vocabulary"], med[f"d word_kd top-{args.topk}"]
    pa = peaks["a label_smoothed_cross_entropy"]
    print(f"time   c/(a+b) = {c / (a + b):.3f}   d/(a+b) = {dk / (a + b):.3f}   (target <= 1.10)")
    print(f"memory c/a = {peaks['c word_kd full vocabulary'] / pa:.3f}   "
          f"d/a = {peaks[f'd word_kd top-{args.topk}'] / pa:.3f}   (target for d <= 1.30)")
    print(f"cached e/a: time {med[cached_name] / a:.3f}   memory {peaks[cached_name] / pa:.3f}   "
          f"(targets <= 1.10; the cache is float16, read and collated outside the step)")
    f, g = med["f gkd off-policy update"], med["g gkd on-policy update"]
    for lam, t in ((0.5, (f + g) / 2), (1.0, g)):
        print(f"gkd lambda {lam}: {1000 * t:.1f} ms/step = {t / a:.2f} x CE step (a), "
              f"{t / c:.2f} x word_kd step (c)")
    lean, stock = med["sampling: gkd lean loop"], med["sampling: SequenceGenerator"]
    print(f"student sampling: lean loop {1000 * lean:.1f} ms, SequenceGenerator "
          f"{1000 * stock:.1f} ms ({stock / lean:.2f}x)")


if __name__ == "__main__":
    main()
