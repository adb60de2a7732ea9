"""The demo's results: score fairseq-generate output, print a table and draw a plot.

Everything here works on files that stock ``fairseq-generate`` wrote, so the numbers in the
table are exactly what a user re-running the logged commands would get: the files are read
and scored by :mod:`fairseq_seqkd.distill.evaluate` (sacrebleu's corpus BLEU of the
detokenized ``D-`` lines against the raw references; fairseq's own timing line).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_open

__all__ = [
    "COLUMNS",
    "DIAGNOSTIC_COLUMNS",
    "ModelResult",
    "format_table",
    "plot_results",
    "results_markdown",
]


@dataclass
class ModelResult:
    """One row of the results table. ``None`` means "not measured" and prints as ``-``."""

    name: str
    params: int
    nonzero: int
    bleu_greedy: float
    bleu_beam: float
    tps_greedy: float  # decoded tokens per second
    tps_beam: float
    speedup_greedy: float = math.nan  # against the teacher with beam search
    speedup_beam: float = math.nan
    mixing_greedy: float | None = None  # fraction of greedy outputs mixing registers
    mixing_beam: float | None = None
    multi_bleu_greedy: float | None = None  # BLEU against every correct reference
    multi_bleu_beam: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


#: (header, ModelResult attribute, format). The table shows them in this order.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("model", "name", "s"),
    ("params", "params", "count"),
    ("non-zero", "nonzero", "count"),
    ("BLEU greedy", "bleu_greedy", ".2f"),
    ("BLEU beam {beam}", "bleu_beam", ".2f"),
    ("tok/s greedy", "tps_greedy", ",.0f"),
    ("tok/s beam {beam}", "tps_beam", ",.0f"),
    ("speed-up greedy", "speedup_greedy", "x"),
    ("speed-up beam {beam}", "speedup_beam", "x"),
    ("mixed greedy", "mixing_greedy", "%"),
)

#: The built-in corpus's diagnostics: BLEU against all registers, mixing with beam search.
DIAGNOSTIC_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("model", "name", "s"),
    ("BLEU greedy, all registers", "multi_bleu_greedy", ".2f"),
    ("BLEU beam {beam}, all registers", "multi_bleu_beam", ".2f"),
    ("mixed greedy", "mixing_greedy", "%"),
    ("mixed beam {beam}", "mixing_beam", "%"),
)


def _cell(value: object, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if fmt == "s":
        return str(value)
    if fmt == "count":
        return _human_count(int(value))  # type: ignore[call-overload]
    if fmt == "x":
        return f"{value:.1f}x"
    if fmt == "%":
        return f"{100 * value:.1f}%"  # type: ignore[operator]
    return format(value, fmt)


def _human_count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 10_000:
        return f"{n / 1e3:.0f}k"
    return f"{n:,}"


def format_table(rows: Iterable[ModelResult], beam: int = 5, mixing: bool = True,
                 columns: Sequence[tuple[str, str, str]] = COLUMNS) -> str:
    """A Markdown table (also readable in a terminal) with one row per model.

    Numbers are right-aligned and padded so the columns line up in plain text too.
    """
    columns = [c for c in columns if mixing or c[1] != "mixing_greedy"]
    header = [h.format(beam=beam) for h, _, _ in columns]
    body = [[_cell(getattr(r, attr), fmt) for _, attr, fmt in columns] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(
        "-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)
    ) + "|"
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])


def results_markdown(
    rows: Sequence[ModelResult],
    *,
    title: str,
    signature: str,
    beam: int,
    mixing: bool,
    notes: Sequence[str] = (),
    findings: Sequence[str] = (),
    plot_name: str | None = None,
    diagnostics: str = "",
) -> str:
    """The whole ``results.md``: table, what it shows, how it was measured."""
    parts = [f"# {title}", "", format_table(rows, beam=beam, mixing=mixing), ""]
    if findings:
        parts += ["## What this run shows", "", *(f"- {f}" for f in findings), ""]
    if diagnostics:
        parts += [diagnostics, ""]
    if plot_name:
        parts += [f"![BLEU against decoding speed]({plot_name})", ""]
    parts += ["## How it was measured", "", f"- BLEU: sacrebleu `{signature}`", *notes, ""]
    return "\n".join(parts)


def plot_results(rows: Sequence[ModelResult], path: str | os.PathLike, beam: int = 5,
                 title: str = "") -> None:
    """Scatter BLEU against decoded tokens/s (log scale), one point per model and beam.

    Written with matplotlib's Agg backend (no display needed), through ``atomic_open``.
    """
    # fairseq / hydra leave the root logger at DEBUG; matplotlib would log every font it tries
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    cmap = plt.get_cmap("tab10")
    for i, row in enumerate(rows):
        color = cmap(i % 10)
        points = [(row.tps_greedy, row.bleu_greedy, "o", "greedy"),
                  (row.tps_beam, row.bleu_beam, "s", f"beam {beam}")]
        points = [p for p in points if math.isfinite(p[0]) and p[0] > 0]
        if len(points) == 2:
            ax.plot([p[0] for p in points], [p[1] for p in points], "-", color=color,
                    alpha=0.35, linewidth=1)
        for x, y, marker, _ in points:
            ax.plot(x, y, marker, color=color, markersize=8,
                    markerfacecolor="none" if marker == "s" else color)
        if points:
            short = re.sub(r" \(.*?\)", "", row.name)  # sizes are in the table
            ax.annotate(short, (points[0][0], points[0][1]), textcoords="offset points",
                        xytext=(6, 4), fontsize=8, color=color)
    ax.set_xscale("log")
    ax.set_xlabel("decoding speed, target tokens/s (log scale; fairseq-generate --cpu)")
    ax.set_ylabel("test BLEU (sacrebleu)")
    ax.set_title(title or "BLEU against decoding speed")
    ax.plot([], [], "o", color="gray", label="greedy (beam 1)")
    ax.plot([], [], "s", color="gray", markerfacecolor="none", label=f"beam {beam}")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_open(path, "wb") as handle:
            fig.savefig(handle, format="png")
    finally:
        plt.close(fig)
