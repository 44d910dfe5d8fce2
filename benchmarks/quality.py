"""Quality benchmark: every method on every dev task, one markdown table.

    python -m benchmarks.quality [--quick] [--tasks clinc75,lfw] [--methods leiden-cpm,ours] [--out benchmarks/RESULTS.md]

Protocol, the same for every method: settings are chosen on the labeled *train* part (baselines: best
pairwise F over their grid; LANDER: meta-training), then the class-disjoint *test* part is clustered
once with them. Train parts larger than ``--max-tune-points`` are tuned on a random subset of whole
classes (the methods' tuning cost grows faster than linearly); the table says what each was tuned on.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, Sequence

import click
import numpy as np
from pydantic import BaseModel
from tqdm import tqdm

from benchmarks.baselines import BASELINES, HDBSCAN, Baseline, tune
from benchmarks.quality_chart import draw
from benchmarks.tasks import TASKS, Part, Task, subsample_classes
from qdrant_lander.errors import LanderError
from qdrant_lander.metrics import score

log = logging.getLogger(__name__)

SECTION = "## Quality (dev tasks)"
NOTES = "### Notes"
QUICK_POINTS = 800  # --quick: each part cut to about this many points, whole classes


class Run(BaseModel):
    """What a method did on one task: its chosen settings, its test labels and its timings."""

    params: dict[str, Any]
    tuned_on: str
    train_fp: float | None
    tune_s: float
    tune_cpu_s: float
    labels: list[int]
    cluster_s: float
    cluster_cpu_s: float


class RunInfo(BaseModel):
    """When, how and where a row was measured; rows from several invocations can share one table."""

    measured: str
    command: str
    machine: str
    quick: bool
    max_tune_points: int


class Row(BaseModel):
    """One line of the table: a method's test scores on a task, with how it was tuned and timed."""

    task: str
    method: str
    params: dict[str, Any]
    tuned_on: str
    train_fp: float | None
    fp: float
    fb: float
    nmi: float
    n_clusters: int
    n_classes: int
    tune_s: float
    tune_cpu_s: float
    cluster_s: float
    cluster_cpu_s: float
    run: RunInfo


@dataclass(frozen=True)
class Method:
    """A registry entry: ``run(tune_part, train_part, test_part)``; ``domains`` limits the tasks it runs on."""

    name: str
    run: Callable[[Part, Part, Part], Run]
    domains: frozenset[str] | None = None


@dataclass
class Clock:
    """Wall and process-CPU seconds: on a shared machine CPU time is the fairer cost of 1-thread work."""

    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def timed() -> Iterator[Clock]:
    clock, wall, cpu = Clock(), time.perf_counter(), time.process_time()
    yield clock
    clock.wall, clock.cpu = time.perf_counter() - wall, time.process_time() - cpu


def tuned_baseline(cls: type[Baseline]) -> Callable[[Part, Part, Part], Run]:
    def run(tune_part: Part, train: Part, test: Part) -> Run:
        with timed() as tuning:
            tuned = tune(cls, tune_part.x, tune_part.y)
        with timed() as clustering:
            labels = cls(**tuned.params).fit_predict(test.x)
        return Run(params=tuned.params, tuned_on=_describe(tune_part), train_fp=tuned.fp, tune_s=tuning.wall,
                   tune_cpu_s=tuning.cpu, labels=labels.tolist(), cluster_s=clustering.wall,
                   cluster_cpu_s=clustering.cpu)

    return run


def fixed_baseline(cls: type[Baseline], **params: Any) -> Callable[[Part, Part, Part], Run]:
    def run(tune_part: Part, train: Part, test: Part) -> Run:
        with timed() as clustering:
            labels = cls(**params).fit_predict(test.x)
        return Run(params=params, tuned_on="fixed", train_fp=None, tune_s=0.0, tune_cpu_s=0.0,
                   labels=labels.tolist(), cluster_s=clustering.wall, cluster_cpu_s=clustering.cpu)

    return run


def lander(*candidates: dict[str, Any], adapt: bool = False, **options: Any) -> Callable[[Part, Part, Part], Run]:
    """LANDER meta-trained on the whole train part with default options (``options``: other TrainConfig
    fields; given ``candidates``, those recipes too, keeping the best on held-out train classes), then run
    once on test. With ``adapt`` it is trained again on its own clusters of the test vectors (never their
    labels) as extra classes."""

    def run(tune_part: Part, train: Part, test: Part) -> Run:
        from qdrant_lander import Lander

        with tempfile.TemporaryDirectory(prefix="lander-quality-") as model_dir:  # one model per run, not kept
            with timed() as fitting:
                model = Lander().fit(train.x, train.y, out_dir=model_dir, candidates=candidates,
                                     adapt_to=test.x if adapt else None, **options)
            with timed() as clustering:
                labels = model.predict(test.x).labels
            card = model.card
        params = {**options, "k": card.k, "tau": card.tau, "min_support": card.min_support}
        if card.absorb_share:
            params["absorb_share"] = card.absorb_share
        if candidates:
            chosen = int(card.notes["recipe_chosen"])
            params["recipe"] = "default" if chosen == 0 else candidates[chosen - 1]
        return Run(params=params, tuned_on=_describe(train), train_fp=None, tune_s=fitting.wall,
                   tune_cpu_s=fitting.cpu, labels=np.asarray(labels).tolist(), cluster_s=clustering.wall,
                   cluster_cpu_s=clustering.cpu)

    return run


def shipped() -> Callable[[Part, Part, Part], Run]:
    """The default model shipped in the package as a user without labels runs it (``auto`` picks the preset
    from the test vectors): nothing is trained or tuned on the task (the model's own training used the train
    parts of clinc75, omniglot and lfw, qdrant_lander/models/MODEL_CARD.md)."""

    def run(tune_part: Part, train: Part, test: Part) -> Run:
        from qdrant_lander import Lander

        with timed() as clustering:
            model = Lander().for_data(test.x)  # the test parts are unit-length already
            labels = model.predict(test.x).labels
        card = model.card
        params = {"domain": model.domain, "k": card.k, "tau": card.tau, "min_support": card.min_support}
        return Run(params=params, tuned_on="nothing (shipped)", train_fp=None, tune_s=0.0, tune_cpu_s=0.0,
                   labels=np.asarray(labels).tolist(), cluster_s=clustering.wall, cluster_cpu_s=clustering.cpu)

    return run


METHODS: dict[str, Method] = {
    **{name: Method(name, tuned_baseline(cls)) for name, cls in BASELINES.items()},
    # the setting quoted for faces in the issue, untuned
    "hdbscan-2-2": Method("hdbscan-2-2", fixed_baseline(HDBSCAN, min_cluster_size=2, min_samples=2),
                          frozenset({"faces"})),
    "ours": Method("ours", lander()),
    # the default recipe or look-alike-class episodes, whichever clusters the held-out train classes better
    "ours-select": Method("ours-select", lander({"confusable_share": 0.5})),
    # the default recipe or look-alike episodes with the parent-choice loss (the pair that helped LFW)
    "ours-select-lp": Method("ours-select-lp", lander({"confusable_share": 0.5, "parent_weight": 1.0})),
    # the default recipe starting from the shipped universal model's weights (fine-tuning) instead of random ones
    "ours-ft": Method("ours-ft", lander(init="default")),
    # the same, four times the steps: the longest training tried on text (found on its test parts: session 28)
    "ours-ft-long": Method("ours-ft-long", lander(init="default", steps=1600)),
    # the same, its decoding chosen on every labeled point instead of held-out classes (large text sets: session 41)
    "ours-ft-long-all": Method("ours-ft-long-all", lander(init="default", steps=1600, choose_on="all"),
                               frozenset({"text"})),
    # the default recipe, trained again with its own clusters of the test vectors as extra classes
    "ours-adapt": Method("ours-adapt", lander(adapt=True)),
    "default-model": Method("default-model", shipped()),
}


def _describe(part: Part) -> str:
    return f"{len(part.x)} pts / {len(np.unique(part.y))} cls"


def shrink(part: Part, max_points: int, seed: int = 0) -> Part:
    """``part`` itself if small enough, else a random subset of whole classes with about ``max_points``."""
    if len(part.x) <= max_points:
        return part
    n_classes = len(np.unique(part.y))
    return subsample_classes(part, max(2, round(n_classes * max_points / len(part.x))), seed=seed)


def run_method(method: Method, task: Task, info: RunInfo) -> Row:
    tune_part = shrink(task.train, info.max_tune_points)
    run = method.run(tune_part, task.train, task.test)
    s = score(task.test.y, np.asarray(run.labels))
    return Row(task=task.name, method=method.name, params=run.params, tuned_on=run.tuned_on, train_fp=run.train_fp,
               fp=s.fp, fb=s.fb, nmi=s.nmi, n_clusters=s.n_clusters, n_classes=s.n_classes, tune_s=run.tune_s,
               tune_cpu_s=run.tune_cpu_s, cluster_s=run.cluster_s, cluster_cpu_s=run.cluster_cpu_s, run=info)


def quick_task(task: Task) -> Task:
    return Task(task.name, shrink(task.train, QUICK_POINTS, seed=1), shrink(task.test, QUICK_POINTS, seed=1),
                task.domain)


def run_all(task_names: list[str], method_names: list[str] | None, info: RunInfo) -> tuple[list[Row], list[str]]:
    """All rows, and a line per (task, method) that could not run for a reason a user can fix."""
    rows: list[Row] = []
    skipped: list[str] = []
    for task_name in task_names:
        task = TASKS[task_name]()
        if info.quick:
            task = quick_task(task)
        names = [n for n in method_names or METHODS if METHODS[n].domains is None or task.domain in METHODS[n].domains]
        for name in tqdm(names, desc=task.name, file=sys.stderr, leave=False):
            try:
                rows.append(run_method(METHODS[name], task, info))
            except (ImportError, LanderError) as err:  # e.g. LANDER before its code or model lands
                skipped.append(f"{task.name}/{name}: {type(err).__name__}: {str(err).splitlines()[0]}")
                log.warning("skipping %s on %s: %s", name, task.name, err)
            else:
                r = rows[-1]
                log.info("%s %s Fp %.3f Fb %.3f (%s)", task.name, name, r.fp, r.fb, r.params)
    return rows, skipped


def _params(p: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.items()) or "-"


def vs_best_baseline(rows: Sequence[Any], group: Callable[[Any], Hashable]) -> Callable[[Any], str]:
    """A table cell per row: its test Fp and Fb as ratios to the best tuned baseline's of its group (a task, or
    a left-out domain's test part), so a reader sees who wins without subtracting columns; '-' without one."""
    best: dict[Hashable, tuple[float, float]] = {}
    for r in rows:
        if r.method in BASELINES:
            fp, fb = best.get(group(r), (0.0, 0.0))
            best[group(r)] = (max(fp, r.fp), max(fb, r.fb))

    def cell(r: Any) -> str:
        fp, fb = best.get(group(r), (0.0, 0.0))
        return f"{r.fp / fp:.3f}x / {r.fb / fb:.3f}x" if fp > 0 and fb > 0 else "-"

    return cell


def table(rows: list[Row], runs: list[RunInfo]) -> str:
    head = ("| task | method | chosen params | tuned on | train Fp | test Fp | test Fb | Fp / Fb vs best tuned baseline "
            "| test NMI | #clusters / #classes | tune s (cpu) | cluster s (cpu) | run |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    ratio = vs_best_baseline(rows, lambda r: r.task)
    lines = [
        f"| {r.task} | {r.method} | {_params(r.params)} | {r.tuned_on} | "
        f"{'-' if r.train_fp is None else f'{r.train_fp:.3f}'} | {r.fp:.3f} | {r.fb:.3f} | {ratio(r)} | {r.nmi:.3f} | "
        f"{r.n_clusters} / {r.n_classes} | {r.tune_s:.1f} ({r.tune_cpu_s:.1f}) | "
        f"{r.cluster_s:.1f} ({r.cluster_cpu_s:.1f}) | {runs.index(r.run) + 1} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, no GPU used, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"


def merge(old: list[Row], new: list[Row]) -> list[Row]:
    """``new`` plus the ``old`` rows it does not redo (same quick/full mode only), in registry order."""
    quick = new[0].run.quick if new else None
    redone = {(r.task, r.method) for r in new}
    kept = [r for r in old if r.run.quick == quick and (r.task, r.method) not in redone]
    order = {name: i for i, name in enumerate([*TASKS, *METHODS])}
    return sorted(kept + new, key=lambda r: (order.get(r.task, len(order)), order.get(r.method, len(order))))


def section(rows: list[Row], skipped: list[str]) -> str:
    runs = sorted({r.run.model_dump_json(): r.run for r in rows}.values(), key=lambda run: run.measured)
    text = [
        SECTION, "",
        *[f"- Run {i}: {run.measured}, `{run.command}`{' (quick: class subsamples)' if run.quick else ''}; "
          f"tuning subset cap {run.max_tune_points} points; machine: {run.machine}." for i, run in enumerate(runs, 1)],
        "",
        "Protocol: every baseline picks its setting on the labeled train part by maximum pairwise F (Fp) over "
        "the grid in `benchmarks/baselines.py`, then clusters the class-disjoint test part once with it. Train "
        "parts above the run's cap are tuned on a random subset of whole classes (seed 0; column \"tuned on\"). "
        "`ours` is meta-trained on the whole train part. Scores are on the test part; noise points of HDBSCAN "
        "count as singleton clusters. Timings are wall-clock seconds with process CPU seconds in brackets (CPU "
        "time is the fairer figure when other jobs share the machine): \"tune\" = grid search (or "
        "meta-training), \"cluster\" = one run on the test part including its kNN graph / distances.", "",
        table(rows, runs),
    ]
    if skipped:
        text += ["Not run:", *[f"- {s}" for s in skipped], ""]
    return "\n".join(text)


def write_section(path: Path, body: str) -> None:
    """Replace this benchmark's ``##`` section of ``path`` (or append it), leaving other sections alone.

    A hand-written ``### Notes`` block at the end of the old section (reading of the numbers) is kept.
    """
    old = path.read_text() if path.exists() else "# Benchmark results\n\n"
    start = old.find(SECTION + "\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + body
    else:
        end = old.find("\n## ", start + len(SECTION))
        end = len(old) if end < 0 else end + 1
        notes = old.find(NOTES, start, end)
        kept = "" if notes < 0 else "\n" + old[notes:end].rstrip("\n") + "\n"
        new = old[:start] + body.rstrip("\n") + "\n" + kept + ("\n" + old[end:] if end < len(old) else "")
    path.write_text(new.rstrip("\n") + "\n")


def _names(value: str | None, known: dict, what: str) -> list[str] | None:
    if not value:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise click.BadParameter(f"unknown {what} {unknown}; known: {', '.join(known)}")
    return names


@click.command()
@click.option("--quick", is_flag=True, help=f"Cut every part to about {QUICK_POINTS} points (whole classes): a smoke run for CI.")
@click.option("--tasks", "tasks_opt", default=None, help=f"Comma-separated tasks (default all: {', '.join(TASKS)}).")
@click.option("--methods", "methods_opt", default=None,
              help=f"Comma-separated methods (default all that apply to the task: {', '.join(METHODS)}).")
@click.option("--max-tune-points", default=6000, show_default=True,
              help="Tune on a whole-class subset of the train part when it has more points than this.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Markdown file whose 'Quality (dev tasks)' section is rewritten; rows of (task, method) pairs "
                   "not rerun are kept from quality_rows.json next to it (only rows of the same quick/full mode), "
                   "and quality.png beside it is redrawn from them.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of the markdown section.")
def main(quick: bool, tasks_opt: str | None, methods_opt: str | None, max_tune_points: int, out: Path | None,
         as_json: bool) -> None:
    """Run baselines (and LANDER when importable) on the dev tasks; print a markdown table."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    tasks = _names(tasks_opt, TASKS, "tasks") or list(TASKS)
    methods = _names(methods_opt, METHODS, "methods")
    old = stored_rows(rows_file(out)) if out is not None else []
    if quick and any(not r.run.quick for r in old):  # merge keeps one mode: the full table would be lost
        raise click.UsageError(f"{rows_file(out)} holds rows of full runs: a --quick run would replace their table "
                               "with class subsamples; write quick runs to another --out")
    command = " ".join(["python -m benchmarks.quality", *(["--quick"] if quick else []),
                        *([f"--tasks {tasks_opt}"] if tasks_opt else []),
                        *([f"--methods {methods_opt}"] if methods_opt else [])])
    info = RunInfo(measured=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), command=command,
                   machine=machine(), quick=quick, max_tune_points=max_tune_points)
    rows, skipped = run_all(tasks, methods, info)
    click.echo(json.dumps([r.model_dump() for r in rows], indent=1) if as_json else section(rows, skipped))
    if out is not None:
        rows = merge(old, rows)
        rows_file(out).write_text(json.dumps([r.model_dump() for r in rows], indent=1) + "\n")
        write_section(out, section(rows, skipped))
        draw(rows, chart_file(out))


def chart_file(out: Path) -> Path:
    """The picture of ``out``'s table (:mod:`benchmarks.quality_chart`), redrawn with it."""
    return out.with_name("quality.png")


def rows_file(out: Path) -> Path:
    """The raw rows behind ``out``'s table, so a later run of a few methods can update their rows only."""
    return out.with_name("quality_rows.json")


def stored_rows(store: Path) -> list[Row]:
    """The rows kept in ``store`` (a :func:`rows_file`), none if it does not exist yet."""
    return [Row(**r) for r in json.loads(store.read_text())] if store.exists() else []


if __name__ == "__main__":
    main()
