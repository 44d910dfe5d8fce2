"""The quality table as a picture: per dev task, the shipped model (no labels), a model meta-trained on the
task's train part, and the best tuned baseline, on Fp and Fb.

    python -m benchmarks.quality_chart [--rows benchmarks/quality_rows.json] [--out benchmarks/quality.png]

``python -m benchmarks.quality --out FILE`` redraws it beside FILE after each run, so the picture shows the
table's numbers and no others. Needs matplotlib (the ``report`` extra, in ``dev`` too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import click
import numpy as np

from benchmarks.baselines import BASELINES

SHOWN = {"default-model": "shipped model, no labels (auto)", "ours": "meta-trained on the task's train part"}
TITLES = {"clinc75": "CLINC150\n75 → 75 intents", "clinc2banking": "CLINC150\n→ Banking77", "omniglot": "Omniglot\ncharacters",
          "lfw": "LFW faces\nA → B", "orl2lfw": "ORL faces\n→ LFW B"}
# The shipped model trained on LFW identities A, beside orl2lfw's test part: its row there is not that zero-shot task.
NOT_THE_TASK = {("orl2lfw", "default-model")}
BASELINE = "best tuned baseline (named on its bar)"
COLORS = dict(zip([*SHOWN.values(), BASELINE], ("#3b6fb6", "#7fa6dc", "#b0b0b0")))


@dataclass(frozen=True)
class Bar:
    """One bar of the chart in each panel: its series, its test Fp / Fb, and the baseline's name on its bar."""

    series: str
    fp: float
    fb: float
    name: str = ""


def bars(rows: Sequence) -> dict[str, list[Bar]]:
    """Per task (in the rows' order) the bars to draw: the ``SHOWN`` methods it has, then the tuned baseline with
    the best test Fp (baselines are tuned by Fp, so that is the one a user would have picked up), named."""
    out: dict[str, list[Bar]] = {}
    for task in dict.fromkeys(r.task for r in rows):
        mine = [r for r in rows if r.task == task]
        group = [Bar(series, r.fp, r.fb) for method, series in SHOWN.items() for r in mine
                 if r.method == method and (task, method) not in NOT_THE_TASK]
        tuned = [r for r in mine if r.method in BASELINES]
        if tuned:
            best = max(tuned, key=lambda r: r.fp)
            group.append(Bar(BASELINE, best.fp, best.fb, best.method))
        out[task] = group
    return out


def draw(rows: Sequence, out: Path) -> None:
    """Two panels (Fp, Fb) of grouped bars, each bar labelled with its score and each baseline with its name."""
    from matplotlib.figure import Figure  # the OO API: no pyplot, no global backend

    from qdrant_lander.report import style_axes

    groups = bars(rows)
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    width = 0.27
    for ax, metric in zip(fig.subplots(1, 2, sharey=True), ("fp", "fb")):
        for x, group in enumerate(groups.values()):
            for j, bar in enumerate(group):
                pos, value = x + (j - (len(group) - 1) / 2) * width, getattr(bar, metric)
                ax.bar(pos, value, width * 0.95, color=COLORS[bar.series], label=bar.series)
                ax.text(pos, value + 0.01, f"{value:.2f}", ha="center", fontsize=7)
                ax.text(pos, 0.02, bar.name, rotation=90, ha="center", va="bottom", fontsize=7, color="#333333")
        ax.set_xticks(np.arange(len(groups)), [TITLES.get(t, t) for t in groups], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"test {'pairwise' if metric == 'fp' else 'BCubed'} F ({'Fp' if metric == 'fp' else 'Fb'})",
                     fontsize=11)
        style_axes(ax)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))  # one legend entry per series, not per bar
    fig.legend(unique.values(), unique.keys(), loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.savefig(out, format="png", dpi=100)


@click.command()
@click.option("--rows", "rows_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=Path(__file__).with_name("quality_rows.json"), show_default=True,
              help="The quality benchmark's stored rows.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path(__file__).with_name("quality.png"), show_default=True, help="PNG to write.")
def main(rows_path: Path, out: Path) -> None:
    """Draw the quality table's chart from its stored rows (no clustering is run)."""
    from benchmarks.quality import stored_rows

    draw(stored_rows(rows_path), out)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
