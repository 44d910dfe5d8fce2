"""Operations: ``config show`` (the effective settings, secrets masked), ``config runtime`` (what a model runs on) and
``report`` (an HTML page)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..config import Settings
from ..errors import InputError
from . import main
from .settings_options import lander_from_settings, settings_options


@main.group()
def config() -> None:
    """Inspect settings (flags > QLANDER_* environment > TOML file from --config / $QLANDER_CONFIG)."""


@config.command("show")
@settings_options(*Settings.model_fields)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of aligned lines.")
def config_show(settings: Settings, as_json: bool) -> None:
    """Print the settings a command would run with, the API key masked."""
    data = settings.public()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    _aligned(data)


def _aligned(data: dict) -> None:
    width = max(map(len, data))
    for name, value in data.items():
        click.echo(f"{name:<{width}}  {'-' if value is None else value}")


@config.command("runtime")
@settings_options("model", "device", "threads")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of aligned lines.")
def config_runtime(settings: Settings, as_json: bool) -> None:
    """Load the model the settings name and say what it runs on: onnxruntime build, providers, the one in use.

    With onnxruntime-gpu, `provider` is CUDAExecutionProvider when the GPU is really used (the list of available
    providers names CUDA even on machines without one).
    """
    from ..runtime import runtime_info

    info = runtime_info(lander_from_settings(settings).scorer, settings.device, settings.threads)
    if as_json:
        click.echo(info.model_dump_json(indent=2))
        return
    data = info.model_dump()
    data["packages"] = ", ".join(f"{name} {version}" for name, version in info.packages.items())
    data["available_providers"] = ", ".join(info.available_providers)
    _aligned(data)


@main.command()
@click.argument("collection")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="HTML file to write.")
@click.option("--label-field", default=None,
              help="Payload key with true labels (nested: a.b): adds Fp/Fb/NMI and each cluster's main label.")
@click.option("--fields", default=None, help="Comma-separated payload keys shown for example members [default: all but lander].")
@click.option("--top", default=20, show_default=True, type=click.IntRange(1), help="How many of the largest clusters to list.")
@click.option("--examples", default=5, show_default=True, type=click.IntRange(1), help="Example members per listed cluster.")
@settings_options("url", "api_key", "path", "vector", "batch_size")
def report(collection: str, out: Path, label_field: str | None, fields: str | None, top: int, examples: int,
           settings: Settings) -> None:
    """Write a self-contained HTML report of COLLECTION's clustering.

    \b
    It shows cluster sizes, the hierarchy (clusters per level), the largest clusters with a few
    members' payload, and quality figures when --label-field names a payload key with true labels.
    Needs the `report` extra (matplotlib). Example:
      qdrant-lander report docs --out report.html --label-field intent --fields text
    """
    from ..report import read_collection, require_extra, write_report
    from .collection_cmds import clustered_from_settings
    from .inputs import check_outputs

    require_extra()  # fail before reading a large collection
    check_outputs(out)
    with clustered_from_settings(settings, collection) as coll:
        data = read_collection(coll, label_field=label_field, top=top, examples=examples,
                               batch_size=settings.batch_size)
    shown = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
    members = [p for ps in data.examples.values() for p in ps]
    if shown and members and not any(f in p for p in members for f in shown):  # a misspelt key: a page of "(none)"
        raise InputError(f"no example member has any of the --fields {shown}; keys they have: "
                         f"{sorted({k for p in members for k in p} - {'lander'})}")
    write_report(data, str(out), fields=shown, top=top)
    click.echo(f"wrote {out}", err=True)
