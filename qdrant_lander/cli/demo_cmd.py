"""``qdrant-lander demo``: the whole product on a real sample, in the embedded store."""

from __future__ import annotations

import click

from . import main
from ..config import Settings
from .settings_options import lander_from_settings, settings_options


@main.command()
@click.option("--collection", "name", default="lander_demo", show_default=True, help="Collection to (re)fill.")
@click.option("--json", "as_json", is_flag=True, help="Print the demo's report as JSON.")
@settings_options("url", "api_key", "path", "model", "domain", "device", "threads")
def demo(name: str, as_json: bool, settings: Settings) -> None:
    """Cluster 2,000 real support queries (20 CLINC150 intents) inside Qdrant, then search one cluster.

    Imports the bundled sample with its text as payload into the embedded Qdrant Edge store at
    --path (no server needed), runs `sync` with the default model, scores the clusters against the
    true intents, and runs a search filtered by the largest cluster's id. Point it at a server with
    --url http://localhost:6333 to do the same there.
    """
    from ..demo import run_demo
    from .collection_cmds import store_from_settings

    lander = lander_from_settings(settings)
    with store_from_settings(settings) as store:
        r = run_demo(store, lander, collection=name, progress=not as_json)
        where = store.description
    if as_json:
        click.echo(r.model_dump_json(indent=2))
        return
    s = r.scores
    click.echo(f"\nImported {r.points} CLINC150 queries ({s.n_classes} intents) into '{r.collection}' ({where}).")
    click.echo(f"sync: {r.sync.clusters} clusters in {r.sync.levels} levels with model {r.sync.model} "
               f"(domain {r.sync.domain}).")
    click.echo(f"Quality against the true intents: Fp {s.fp:.3f}  Fb {s.fb:.3f}  NMI {s.nmi:.3f}")
    top = ", ".join(f"{k} ({v})" for k, v in sorted(r.cluster_intents.items(), key=lambda kv: -kv[1])[:3])
    click.echo(f"\nLargest cluster: id {r.cluster}, {r.cluster_size} points; intents: {top}")
    click.echo(f"Search inside it (filter lander.cluster == {r.cluster}), query = its peak point:")
    for h in r.hits:
        click.echo(f"  {h.id:>5}  {h.score:.3f}  cluster {h.cluster}  {h.text}")
    from ..config import DEFAULT_PATH

    where = f" --url {settings.url}" if settings.url else (
        f" --path {settings.path}" if str(settings.path) != str(DEFAULT_PATH) else "")  # the commands must find it
    click.echo(f"\nNext: qdrant-lander status {r.collection}{where}; qdrant-lander search {r.collection} --cluster "
               f"{r.cluster} --like {r.cluster}{where}\nOn a server: add --url http://localhost:6333 [--api-key ...] "
               "to any command.")
