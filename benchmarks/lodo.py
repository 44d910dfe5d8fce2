"""Leave-one-domain-out quality: cluster a domain that no method saw labels of.

\b
    OMP_NUM_THREADS=1 python -m benchmarks.lodo [--domains text,faces] [--methods ours,leiden-cpm]
        [--save-models DIR | --models DIR] [--decode JSON] [--json] [--quick]

The situation of a user with no labels in their own embedding space. For each left-out domain D (text,
characters, faces), with nothing chosen on D:

\b
- ``ours``: one structure-only LANDER model meta-trained on the train parts of the *other* domains'
  tasks at once (tau, k and early stop chosen on their held-out classes, as the trainer does), then
  each test part of D clustered once with the card's settings.
- every baseline: the setting with the best *mean* pairwise F over the other domains' train parts
  (each cut to ``--max-tune-points`` whole-class points, as the quality runner does), then each test
  part of D clustered once with it.

A baseline's grid is scored once per train part and shared by the two left-out domains that tune on it;
``tune s`` is still the sum over the parts a row was tuned on, i.e. what that row alone would cost.
``--save-models`` keeps the three models so that ``--models`` can re-score them (say after a decoder
change) without retraining; ``--decode`` replaces fields of their cards when clustering, e.g.
``'{"tau_by_spread": null}'`` to compare a spread-read τ with the card's one τ on the same weights.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
from pydantic import BaseModel, ValidationError
from tqdm import tqdm

from benchmarks.baselines import BASELINES, Baseline, Grid, Tuned, grid_fps, grid_settings
from benchmarks.quality import (Clock, RunInfo, _describe, _names, _params, machine, quick_task, shrink, timed,
                                vs_best_baseline)
from benchmarks.tasks import TASKS, Part, Task
from qdrant_lander.decode import ClusterResult, DecodeSettings, cluster_hierarchy
from qdrant_lander.errors import LanderError
from qdrant_lander.knn import knn_graph
from qdrant_lander.metrics import score
from qdrant_lander.model_card import ModelCard
from qdrant_lander.validate import check_embeddings

if TYPE_CHECKING:
    from qdrant_lander.training.trainer import TrainedModel

log = logging.getLogger(__name__)

# The task whose train part a domain contributes when it is a training domain, and the tasks whose
# test parts are clustered when it is left out.
TRAIN_TASK = {"text": "clinc75", "characters": "omniglot", "faces": "lfw"}
TEST_TASKS = {"text": ["clinc75", "clinc2banking"], "characters": ["omniglot"], "faces": ["lfw"]}
DOMAINS = list(TRAIN_TASK)
METHODS = [*BASELINES, "ours"]
CHOSEN_DECODING = set(DecodeSettings.model_fields) - {"node_mode", "max_levels"}  # what the trainer chose for ours
IN_DOMAIN_ROWS = Path(__file__).with_name("quality_rows.json")  # the quality runner's rows, for reference


class LodoRow(BaseModel):
    """One method on one test part of a left-out domain."""

    left_out: str
    task: str
    test_part: str
    method: str
    params: dict[str, Any]
    tuned_on: str
    tune_fp: float | None  # baselines: mean Fp over the tuning parts; ours: the card's held-out Fp
    fp: float
    fb: float
    nmi: float
    n_clusters: int
    n_classes: int
    tune_s: float | None  # None for a model loaded with --models whose card has no training time
    tune_cpu_s: float | None
    cluster_s: float
    cluster_cpu_s: float
    in_domain_fp: float | None = None  # the same method tuned / trained on D's own train part (quality runner)
    in_domain_fb: float | None = None


class GridScores:
    """Fp of every setting of a baseline's grid on each tuning part, computed once per (method, part)."""

    def __init__(self) -> None:
        self._done: dict[tuple[str, str], tuple[list[float], Clock]] = {}

    def on(self, method: type[Baseline], part: Part, grid: Grid) -> tuple[list[float], Clock]:
        key = (method.name, part.name)
        if key not in self._done:
            with timed() as clock:
                fps = grid_fps(method, part.x, part.y, grid)
            self._done[key] = (fps, clock)
        return self._done[key]


def tune_mean(method: type[Baseline], parts: list[Part], grid: Grid | None = None,
              scores: GridScores | None = None) -> tuple[Tuned, Clock]:
    """The setting with the best mean Fp over ``parts`` (first one on ties), and the grid searches' cost."""
    grid = method.grid if grid is None else grid
    scores = scores or GridScores()
    per_part = [scores.on(method, part, grid) for part in parts]
    mean = np.mean([fps for fps, _ in per_part], axis=0)
    best = int(np.argmax(mean))
    cost = Clock(sum(c.wall for _, c in per_part), sum(c.cpu for _, c in per_part))
    return Tuned(params=grid_settings(grid)[best], fp=float(mean[best]), n_settings=len(mean)), cost


def _tuned_on(parts: list[Part]) -> str:
    return " + ".join(f"{p.name} ({_describe(p)})" for p in parts)


def _row(left_out: str, task: Task, method: str, labels: np.ndarray, **fields: Any) -> LodoRow:
    s = score(task.test.y, labels)
    return LodoRow(left_out=left_out, task=task.name, test_part=task.test.name, method=method, fp=s.fp, fb=s.fb,
                   nmi=s.nmi, n_clusters=s.n_clusters, n_classes=s.n_classes, **fields)


def baseline_rows(left_out: str, method: type[Baseline], tune_parts: list[Part], tests: list[Task],
                  max_tune_points: int, scores: GridScores) -> list[LodoRow]:
    shrunk = [shrink(p, max_tune_points) for p in tune_parts]
    tuned, cost = tune_mean(method, shrunk, scores=scores)
    rows = []
    for task in tests:
        with timed() as clustering:
            labels = method(**tuned.params).fit_predict(task.test.x)
        rows.append(_row(left_out, task, method.name, labels, params=tuned.params, tuned_on=_tuned_on(shrunk),
                         tune_fp=tuned.fp, tune_s=cost.wall, tune_cpu_s=cost.cpu, cluster_s=clustering.wall,
                         cluster_cpu_s=clustering.cpu))
    return rows


def model_dir(root: Path, left_out: str) -> Path:
    return root / f"without-{left_out}"


def lander_rows(left_out: str, train_parts: list[Part], tests: list[Task], config: dict[str, Any],
                save: Path | None, load: Path | None, decode: dict[str, Any] | None = None) -> list[LodoRow]:
    """Train (or load) the structure-only model of the other domains and cluster each test part once (with
    ``decode``'s fields in place of the card's)."""
    from qdrant_lander.training.trainer import TrainConfig, load_trained, train  # torch: the train extra

    if load is not None:
        model, tune = load_trained(model_dir(load, left_out)), None
    else:
        with timed() as tune:
            model = train([p.x for p in train_parts], [p.y for p in train_parts],
                          TrainConfig(**{**config, "node_mode": "structure"}), name=f"lodo-without-{left_out}",
                          trained_on=[p.name for p in train_parts])
        if save is not None:
            model.save(model_dir(save, left_out))  # with model.onnx: calibrate_bench --model and the CLI load it
    card = model.card.model_copy(update=decode or {})
    trained_s = card.notes.get("train_seconds", 0.0) + card.notes.get("choose_seconds", 0.0) or None
    rows = []
    for task in tests:
        with timed() as clustering:
            result = cluster_with_card(model, card, task.test.x)
        # The tau actually used: the card's, or the one its tau_bias / tau_by_spread chose for this test part.
        params = {**card.model_dump(include=CHOSEN_DECODING), "tau": result.tau}
        rows.append(_row(left_out, task, "ours", result.labels, params=params,
                         tuned_on=_tuned_on(train_parts), tune_fp=card.notes.get("heldout_fp"),
                         tune_s=tune.wall if tune else trained_s, tune_cpu_s=tune.cpu if tune else None,
                         cluster_s=clustering.wall, cluster_cpu_s=clustering.cpu))
    return rows


def check_decoding(decode: dict[str, Any]) -> dict[str, Any]:
    """``decode``'s fields checked as DecodeSettings checks them (before minutes of training, not after)."""
    unknown = set(decode) - CHOSEN_DECODING
    if unknown:
        raise click.BadParameter(f"not a decoding field: {', '.join(sorted(unknown))} (one of "
                                 f"{', '.join(sorted(CHOSEN_DECODING))})", param_hint="--decode")
    try:
        checked = DecodeSettings.model_validate({"node_mode": "structure", **decode})
    except ValidationError as err:
        raise click.BadParameter(str(err), param_hint="--decode") from None
    return checked.model_dump(include=set(decode))


def cluster_with_card(model: TrainedModel, card: ModelCard, x: np.ndarray) -> ClusterResult:
    """One clustering of ``x`` with ``model``'s weights and ``card``'s settings (torch scorer, exact kNN)."""
    x = check_embeddings(x)
    return cluster_hierarchy(x, knn_graph(x, card.k), model.scorer(), card)


def in_domain(rows: list[LodoRow], path: Path = IN_DOMAIN_ROWS) -> list[LodoRow]:
    """``rows`` with the full (non-quick) quality runner's in-domain scores of the same (task, method) added."""
    if not path.exists():
        return rows
    ref = {(r["task"], r["method"]): r for r in json.loads(path.read_text()) if not r["run"]["quick"]}
    return [r.model_copy(update={"in_domain_fp": ref[key]["fp"], "in_domain_fb": ref[key]["fb"]})
            if (key := (r.task, r.method)) in ref else r for r in rows]


def run_all(domains: list[str], methods: list[str], info: RunInfo, config: dict[str, Any],
            save: Path | None, load: Path | None, decode: dict[str, Any] | None = None) -> list[LodoRow]:
    needed = {TRAIN_TASK[d] for d in DOMAINS} | {t for d in domains for t in TEST_TASKS[d]}
    tasks = {name: TASKS[name]() for name in sorted(needed)}
    if info.quick:
        tasks = {name: quick_task(task) for name, task in tasks.items()}
    scores = GridScores()
    rows: list[LodoRow] = []
    for d in domains:
        train_parts = [tasks[TRAIN_TASK[other]].train for other in DOMAINS if other != d]
        tests = [tasks[t] for t in TEST_TASKS[d]]
        for name in tqdm(methods, desc=f"without {d}", file=sys.stderr, leave=False):
            new = (lander_rows(d, train_parts, tests, config, save, load, decode) if name == "ours" else
                   baseline_rows(d, BASELINES[name], train_parts, tests, info.max_tune_points, scores))
            for r in new:
                log.info("without %s: %s on %s Fp %.3f Fb %.3f (%s)", d, name, r.task, r.fp, r.fb, _params(r.params))
            rows += new
    return rows if info.quick else in_domain(rows)


def _f(v: float | None, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def table(rows: list[LodoRow]) -> str:
    head = ("| left out | test part | method | chosen settings | tuned / trained on | tune Fp | test Fp | test Fb "
            "| Fp / Fb vs best tuned baseline | test NMI | clusters / classes | in-domain Fp / Fb | tune s (cpu) "
            "| cluster s (cpu) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    ratio = vs_best_baseline(rows, lambda r: (r.left_out, r.task))
    return head + "\n".join(
        f"| {r.left_out} | {r.task} | {r.method} | {_params(r.params)} | {r.tuned_on} | {_f(r.tune_fp)} | "
        f"{r.fp:.3f} | {r.fb:.3f} | {ratio(r)} | {r.nmi:.3f} | {r.n_clusters} / {r.n_classes} | "
        f"{_f(r.in_domain_fp)} / {_f(r.in_domain_fb)} | {_f(r.tune_s, '.1f')} ({_f(r.tune_cpu_s, '.1f')}) | "
        f"{r.cluster_s:.1f} ({r.cluster_cpu_s:.1f}) |" for r in rows) + "\n"


@click.command(help=__doc__)
@click.option("--domains", "domains_opt", default=None, help=f"Comma-separated domains to leave out (default all: "
              f"{', '.join(DOMAINS)}).")
@click.option("--methods", "methods_opt", default=None, help=f"Comma-separated methods (default all: {', '.join(METHODS)}).")
@click.option("--quick", is_flag=True, help="Cut every part to about 800 points (whole classes): a smoke run.")
@click.option("--max-tune-points", default=6000, show_default=True,
              help="Baselines tune on a whole-class subset of a train part with more points than this (as "
                   "benchmarks.quality).")
@click.option("--config", "config_json", default="{}", show_default=True,
              help="TrainConfig fields for ours as JSON, e.g. '{\"steps\": 50}' (node_mode is always 'structure').")
@click.option("--save-models", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Save each trained model under DIR/without-<domain>.")
@click.option("--models", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Load the models from DIR/without-<domain> (written by --save-models) instead of training.")
@click.option("--decode", "decode_json", default="{}", show_default=True,
              help="Decoding fields that replace the card's when ours clusters, as JSON: '{\"tau_by_spread\": null}' "
                   "decodes at the card's one tau, '{\"tau\": 0.9}' at another.")
@click.option("--json", "as_json", is_flag=True, help="Print the run and its rows as JSON instead of markdown.")
def main(domains_opt: str | None, methods_opt: str | None, quick: bool, max_tune_points: int, config_json: str,
         save_models: Path | None, models: Path | None, decode_json: str, as_json: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if save_models is not None and models is not None:
        raise click.UsageError("--save-models trains new models and --models loads saved ones: give one of them")
    config, decode = _json_option(config_json, "--config"), _json_option(decode_json, "--decode")
    decode = check_decoding(decode)
    domains = _names(domains_opt, TRAIN_TASK, "domains") or DOMAINS
    methods = _names(methods_opt, dict.fromkeys(METHODS), "methods") or METHODS
    options = {"--domains": domains_opt, "--methods": methods_opt, "--config": None if config == {} else config_json,
               "--save-models": save_models, "--models": models, "--decode": None if decode == {} else decode_json}
    command = " ".join(["python -m benchmarks.lodo", *(["--quick"] if quick else []),
                        *(f"{key} {value}" for key, value in options.items() if value is not None)])
    info = RunInfo(measured=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), command=command,
                   machine=machine(), quick=quick, max_tune_points=max_tune_points)
    try:
        rows = run_all(domains, methods, info, config, save_models, models, decode)
    except LanderError as err:  # e.g. --models DIR without a model for one of the domains
        raise click.ClickException(str(err)) from None
    if as_json:
        click.echo(json.dumps({"run": info.model_dump(), "rows": [r.model_dump() for r in rows]}, indent=1))
    else:
        click.echo(f"Run: {info.measured}, `{info.command}`; machine: {info.machine}.\n\n{table(rows)}")


def _json_option(text: str, name: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"not JSON: {err}", param_hint=name) from None
    if not isinstance(value, dict):
        raise click.BadParameter("a JSON object of fields, e.g. '{\"tau\": 0.9}'", param_hint=name)
    return value


if __name__ == "__main__":
    main()
