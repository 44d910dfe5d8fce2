"""Commands on arrays: train, calibrate, cluster, eval, export."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

from . import main
from ..config import Settings
from ..errors import InputError, MissingExtraError
from ..validate import check_embeddings, check_labels, check_rows
from .inputs import check_outputs, load_npy, parse_set_options, parse_try_option, save_npy
from .settings_options import lander_from_settings, settings_options

_MODEL = ("model", "domain", "device", "threads")  # the settings of every command that runs a model


def _predict_timed(embeddings: Path, settings: Settings, knn: str, labels: np.ndarray | None = None):
    """Load, cluster and time; ``labels`` are checked against the rows before any work starts."""
    from ..arrays import cluster_array, searches_index

    x = load_npy(embeddings, "embeddings", mapped=True)  # read as needed: an index run never copies it whole
    if labels is not None:
        check_rows(x, min_points=0)  # a wrong shape named before the labels are counted against its rows
        check_labels(labels, len(x))
    lander = lander_from_settings(settings)
    start = time.perf_counter()
    result = cluster_array(x, lander, knn=knn, progress=True)
    return lander, result, time.perf_counter() - start, "index" if searches_index(x.shape, knn) else "exact"


_KNN = click.option("--knn", type=click.Choice(["auto", "exact", "index"]), default="auto", show_default=True,
                    help="How neighbours are found: exact = in memory (cost grows with N^2: a million 384-d rows would "
                         "take hours), index = Qdrant's HNSW index in a temporary embedded store (what `sync` uses; "
                         "approximate), auto = exact up to ~50,000 rows of 384-d (N^2 x dimension <= 1e12), else index.")


@main.command()
@click.argument("embeddings", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("labels", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model directory to write (torch weights, model.onnx, card).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Training option (a TrainConfig field; values in JSON), e.g. --set steps=300 --set head=paper --set "
                   "taus=[0.3,0.5]. Repeatable. On a large text set (CLINC's 11,250 labeled queries), --set init=default "
                   "--set steps=1600 (start from the shipped model's weights, train 4x as long) scored best; on 1,000 "
                   "it did not: docs/model.md.")
@click.option("--try", "tries", multiple=True, metavar="'KEY=VALUE ...'",
              help="Also train this variant (TrainConfig fields on top of --set, space-separated, values in JSON) and "
                   "keep whichever model clusters the held-out training classes best, e.g. --try confusable_share=0.5 "
                   "or --try 'taus=[0.3, 0.5] steps=800'. Repeatable; each variant is one more training run.")
@click.option("--adapt-to", "adapt_to", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Unlabeled embeddings (.npy) of the space you will cluster: train a second time with the first "
                   "model's clusters of them as extra classes (twice the time; helped faces and characters, not text: "
                   "docs/model.md).")
@click.option("--name", default=None, help="Model name written into payloads.")
@click.option("--json", "as_json", is_flag=True, help="Print the model card as JSON.")
def train(embeddings: Path, labels: Path, out_dir: Path, settings: tuple[str, ...], tries: tuple[str, ...],
          adapt_to: Path | None, name: str | None, as_json: bool) -> None:
    """Meta-train a LANDER model on labeled embeddings.

    EMBEDDINGS is a float32 .npy [N, D], LABELS an int .npy [N]. The classes you train on should be
    disjoint from the ones you will cluster: the model learns how to draw cluster boundaries, not the
    classes themselves. tau and the stopping rule are chosen on held-out training classes and stored
    in the model, so clustering needs no tuning. Under 5,000 labeled points the classes are cut in 4
    folds and every class is held out once (4 short trainings; --set folds=1 for one split).
    """
    options = parse_set_options(settings)
    candidates = [parse_try_option(t) for t in tries]
    from ..lander import Lander

    try:
        from ..training.trainer import TrainConfig
    except ImportError:
        pass  # Lander.fit names the extra to install
    else:  # e.g. --set name=x would reach Lander.fit as a second 'name' argument
        unknown = sorted({key for given in (options, *candidates) for key in given} - set(TrainConfig.model_fields))
        if unknown:
            raise InputError(f"not training options: {', '.join(unknown)} (--set and --try take TrainConfig fields, "
                             "docs/model.md; the model's name is --name)")

    lander = Lander(device="cpu").fit(load_npy(embeddings, "embeddings"), load_npy(labels, "labels"),
                                             out_dir=out_dir, name=name or "lander-custom",
                                             trained_on=[embeddings.name], candidates=candidates,
                                             adapt_to=load_npy(adapt_to, "embeddings") if adapt_to else None, **options)
    card = lander.card
    if as_json:
        click.echo(card.model_dump_json(indent=2))
    else:
        tau = f"tau={card.tau:.3f}" if card.tau_bias is None else f"tau chosen per dataset (bias {card.tau_bias})"
        click.echo(f"model '{card.name}' written to {out_dir} ({tau}, k={card.k}, max_levels={card.max_levels})")
        if "heldout_fp_fb_per_recipe" in card.notes:
            click.echo(f"held-out Fp/Fb per recipe (1 = the --set options, then each --try): "
                       f"{card.notes['heldout_fp_fb_per_recipe']}; kept recipe {int(card.notes['recipe_chosen']) + 1}")
        if "pseudo_classes" in card.notes:
            click.echo(f"adapted: {int(card.notes['pseudo_class_points'])} of {int(card.notes['adapted_to_points'])} "
                       f"unlabeled vectors trained on as {int(card.notes['pseudo_classes'])} extra classes")


@main.command()
@click.argument("embeddings", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("labels", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model directory to write (model.onnx + the calibrated card.json); pass it as --model.")
@click.option("--json", "as_json", is_flag=True, help="Print the calibrated model card as JSON.")
@settings_options(*_MODEL)
def calibrate(embeddings: Path, labels: Path, out_dir: Path, as_json: bool, settings: Settings) -> None:
    """Fit a model's tau (and k, merge support) to your embedding space with a few labeled points.

    EMBEDDINGS is a float32 .npy [N, D] from the space you will cluster, LABELS an int .npy [N]: a
    few dozen classes are enough. The model's weights stay as they are; only its decoding settings
    are chosen, on your labels, and written with a copy of the model to --out. Use it when the model
    (e.g. the default one) was not trained on your kind of data: its links usually transfer, its tau
    often does not. Needs no torch.
    """
    y, x = load_npy(labels, "labels"), load_npy(embeddings, "embeddings")
    before = lander_from_settings(settings).for_data(check_embeddings(x))
    after = before.calibrate(x, y, out_dir=out_dir)
    card = after.card
    if as_json:
        click.echo(card.model_dump_json(indent=2))
    else:
        absorb = (f"clusters under {card.absorb_share:.0%} of the typical size absorbed" if card.absorb_share
                  else "no small clusters absorbed")
        click.echo(f"model '{card.name}' calibrated on {int(card.notes['calibrated_points'])} points of "
                   f"{int(card.notes['calibrated_classes'])} classes: tau {before.card.tau} -> {card.tau}, "
                   f"k {before.card.k} -> {card.k}, merge support {card.min_support}, {absorb} (Fp on the sample "
                   f"{card.notes['calibrated_fp']:.3f}); written to {out_dir}, use --model {out_dir}")


@main.command()
@click.argument("embeddings", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the cluster id of each row (int64 .npy).")
@click.option("--levels-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the supernode id of each row at every level (int64 .npy [N, levels]).")
@_KNN
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@settings_options(*_MODEL)
def cluster(embeddings: Path, out: Path, levels_out: Path | None, knn: str, as_json: bool, settings: Settings) -> None:
    """Cluster an array of embeddings into a hierarchy.

    Cluster ids are the row index of each cluster's peak (its densest point), so they are stable
    and meaningful: row i's cluster is represented by row labels[i].
    """
    check_outputs(out, levels_out, inputs=[embeddings])
    lander, result, seconds, knn = _predict_timed(embeddings, settings, knn)
    save_npy(out, result.labels)
    if levels_out is not None:
        save_npy(levels_out, result.paths)
    summary = {"points": int(len(result.labels)), "clusters": result.n_clusters, "levels": result.n_levels,
               "tau": result.tau, "domain": result.domain, "seconds": round(seconds, 3), "model": lander.card.name,
               "provider": lander.scorer.provider, "knn": knn}
    click.echo(json.dumps(summary) if as_json else
               f"{summary['points']} points -> {summary['clusters']} clusters in {summary['levels']} levels at tau "
               f"{result.tau} ({seconds:.2f}s, {knn} kNN, model {summary['model']} on {summary['provider']}, domain "
               f"{result.domain}); labels written to {out}")


@main.command(name="eval")
@click.argument("embeddings", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("labels", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_KNN
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
@settings_options(*_MODEL)
def evaluate(embeddings: Path, labels: Path, knn: str, as_json: bool, settings: Settings) -> None:
    """Cluster labeled embeddings and score the result against the labels.

    Prints pairwise F (Fp), BCubed F (Fb), NMI, their precision/recall, the number of clusters and
    the clustering time. Use classes the model was not trained on to measure it honestly.
    """
    from ..metrics import score

    y = load_npy(labels, "labels")
    lander, result, seconds, knn = _predict_timed(embeddings, settings, knn, labels=y)
    s = score(y, result.labels)
    report = {**s.model_dump(), "levels": result.n_levels, "tau": result.tau, "seconds": round(seconds, 3),
              "model": lander.card.name, "domain": result.domain, "knn": knn}
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"Fp {s.fp:.4f} (P {s.pairwise_precision:.4f} R {s.pairwise_recall:.4f})  "
               f"Fb {s.fb:.4f} (P {s.bcubed_precision:.4f} R {s.bcubed_recall:.4f})  NMI {s.nmi:.4f}")
    click.echo(f"{s.n_clusters} clusters for {s.n_classes} classes, {result.n_levels} levels at tau {result.tau}, "
               f"{seconds:.2f}s ({knn} kNN, model {lander.card.name}, domain {result.domain})")


# --- export (issue 3) ---------------------------------------------------------------------------

@main.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="ONNX file to write (e.g. model.onnx).")
@click.option("--json", "as_json", is_flag=True, help="Print the model card stored in the file as JSON.")
def export(model_dir: Path, out: Path, as_json: bool) -> None:
    """Export a trained model directory to one self-contained ONNX file.

    MODEL_DIR is what `qdrant-lander train` writes (it already contains model.onnx; use this to
    re-export, e.g. after upgrading, or after `calibrate --out` into the same directory: the directory's
    card.json is the card exported). The file carries the model card (k, tau, levels, what it was
    trained on, source revision) in its metadata, so `--model FILE` is all serving needs: onnxruntime,
    no torch. Exporting needs the `train` extra.
    """
    try:
        from onnx_export import export_onnx

        from ..training.trainer import load_trained
    except ImportError as e:
        raise MissingExtraError(f'export needs torch and onnx ({e.name} is missing): pip install torch==2.13.0 '
                                '"qdrant-lander[cpu,train]"') from e
    check_outputs(out)
    trained = load_trained(model_dir)
    card = export_onnx(trained.net, trained.card, out)  # the directory's card in force: a calibration is kept
    click.echo(card.model_dump_json(indent=2) if as_json else
               f"model '{card.name}' (k={card.k}, tau={card.tau:.3f}, revision {card.revision}) exported to {out}")
