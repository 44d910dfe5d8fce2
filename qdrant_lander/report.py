"""A one-page HTML report of a clustering: something to *look at* after a sync.

The page is self-contained (CSS inline, figures as base64 PNG) so it can be mailed, attached to a
ticket or opened from a headless server's disk. It is rendered from plain data
(:class:`ReportData`), so it works the same for a collection, a ``.npy`` file or a test.
matplotlib is an optional extra (``report``): it is imported only here, and only when rendering.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from tqdm import tqdm

from .errors import InputError, MissingExtraError
from .metrics import Scores, score
from .payload import KEY
from .sync import last_sync

if TYPE_CHECKING:
    from .stores import Collection


def _int_array(v: Any, ndim: int, what: str) -> np.ndarray:
    a = np.asarray(v)
    if a.ndim != ndim or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{what}, got shape {a.shape} dtype {a.dtype}")
    return a.astype(np.int64)


class ReportData(BaseModel):
    """What one report shows. ``-1`` in ``clusters`` (or in ``paths``) means "not clustered yet"."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    title: str
    clusters: np.ndarray = Field(description="int64 [N]: final cluster id of every point")
    paths: np.ndarray | None = Field(None, description="int64 [N, L]: supernode id per level, -1 padded")
    truth: np.ndarray | None = Field(None, description="[N] ground-truth labels (any type), None = unknown")
    examples: dict[int, list[dict[str, Any]]] = Field(
        default_factory=dict, description="cluster id -> payloads of a few of its members"
    )
    info: dict[str, str] = Field(default_factory=dict, description="facts for the header (model, generation…)")

    @field_validator("clusters", mode="before")
    @classmethod
    def _ids(cls, v: Any) -> np.ndarray:
        return _int_array(v, 1, "cluster ids must be a 1-D integer array")

    @field_validator("paths", mode="before")
    @classmethod
    def _paths(cls, v: Any) -> np.ndarray | None:
        return None if v is None else _int_array(v, 2, "paths must be a 2-D integer array [N, L]")

    @field_validator("truth", mode="before")
    @classmethod
    def _truth(cls, v: Any) -> np.ndarray | None:
        if v is None:
            return None
        truth = np.empty(len(v), dtype=object)  # one label per point, even when labels are equal-length lists
        truth[:] = list(v)
        return truth

    @model_validator(mode="after")
    def _lengths(self) -> ReportData:
        n = len(self.clusters)
        for name in ("paths", "truth"):
            a = getattr(self, name)
            if a is not None and len(a) != n:
                raise ValueError(f"{name} has {len(a)} rows but there are {n} cluster ids")
        return self


def build_report(data: ReportData, *, fields: Sequence[str] | None = None, top: int = 20) -> str:
    """Render the page; ``fields`` = payload keys shown per example (None = all but ``lander``)."""
    Figure = require_extra()
    clustered = data.clusters >= 0
    ids, sizes = np.unique(data.clusters[clustered], return_counts=True)
    order = np.argsort(-sizes, kind="stable")
    ids, sizes = ids[order], sizes[order]
    levels = _clusters_per_level(data)
    quality = _quality(data)
    n = len(data.clusters)

    parts = [f"<h1>{_e(data.title)}</h1>", _info_table(data.info)]
    parts.append(
        _cards(
            [
                ("points", n),
                ("clustered " + _pct(clustered.sum(), n), int(clustered.sum())),
                ("clusters", len(ids)),
                ("singletons", int((sizes == 1).sum())),
                ("largest", int(sizes[0]) if len(sizes) else 0),
                ("median size", f"{np.median(sizes):g}" if len(sizes) else "–"),
                ("levels", len(levels) - 1),
            ]
        )
    )
    if len(sizes):
        parts.append("<h2>Cluster sizes</h2>")
        parts.append(_img(_size_figure(Figure, sizes), "cluster size distribution"))
    if len(levels) > 1:
        parts.append("<h2>Hierarchy: clusters per level</h2>")
        parts.append(_img(_level_figure(Figure, levels), "clusters per level"))
        parts.append(
            _table(
                ["level", "nodes", "mean members"],
                [["points" if lvl == 0 else lvl, c, f"{n_at / c:.1f}" if c else "–"] for lvl, (c, n_at) in enumerate(levels)],
            )
        )
    if quality is not None:
        parts.append(_quality_html(*quality))
    if len(ids):
        parts.append(f"<h2>Largest clusters (top {min(top, len(ids))} of {len(ids)})</h2>")
        parts.append(_largest_html(data, ids[:top], sizes[:top], n, fields))
    return _PAGE.format(title=_e(data.title), body="\n".join(parts))


def require_extra() -> type:
    """matplotlib's Figure class, or a :class:`MissingExtraError` naming the extra (call before slow work)."""
    try:
        from matplotlib.figure import Figure  # the OO API: no pyplot, no global backend switch
    except ImportError:
        raise MissingExtraError("the report needs matplotlib: pip install 'qdrant-lander[report]'") from None
    return Figure


BLUE, ORANGE, GRID = "#3b6fb6", "#e07b39", "#e3e8f0"


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def style_axes(ax: Any) -> None:
    """The look every figure of ours shares (the report's and the benchmarks'): a light grid behind, no box."""
    ax.grid(True, color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _size_figure(Figure: type, sizes: np.ndarray) -> bytes:
    """Left: how many clusters have each size (log bins). Right: share of points in the k largest."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax, cov = fig.subplots(1, 2)
    # power-of-two buckets (1, 2, 3-4, 5-8, ...) read better than a log-x histogram of integers
    hi = 1 << int(np.ceil(np.log2(sizes.max()))) if sizes.max() > 1 else 1
    edges = [0, 1] + [1 << i for i in range(1, hi.bit_length())]
    counts = [int(((sizes > a) & (sizes <= b)).sum()) for a, b in zip(edges[:-1], edges[1:])]
    names = [str(b) if b - a == 1 else f"{a + 1}–{b}" for a, b in zip(edges[:-1], edges[1:])]
    bars = ax.bar(range(len(counts)), counts, color=BLUE, width=0.75)
    ax.bar_label(bars, labels=[str(c) if c else "" for c in counts], padding=2, fontsize=8)
    ax.set_xticks(range(len(counts)), names, rotation=45 if len(names) > 8 else 0, fontsize=8)
    ax.margins(y=0.12)
    ax.set_xlabel("cluster size (points)")
    ax.set_ylabel("clusters")
    ax.set_title("Cluster size distribution", fontsize=11)
    style_axes(ax)
    share = np.cumsum(sizes) / sizes.sum() * 100
    rank = np.arange(1, len(sizes) + 1)
    cov.plot(rank, share, color=ORANGE, linewidth=2)
    cov.set_xscale("log")
    cov.set_ylim(0, 101)
    cov.set_xlabel("k largest clusters")
    cov.set_ylabel("% of clustered points")
    cov.set_title("Points covered by the largest clusters", fontsize=11)
    style_axes(cov)
    return _png(fig)


def _level_figure(Figure: type, levels: list[tuple[int, int]]) -> bytes:
    """Nodes per level of the hierarchy (level 0 = points), log scale, each bar labelled."""
    fig = Figure(figsize=(10, 2.4), layout="constrained")
    ax = fig.subplots()
    counts = [c for c, _ in levels]
    colors = [GRID] + [BLUE] * (len(counts) - 1)
    bars = ax.bar(range(len(counts)), counts, width=0.6, color=colors, edgecolor=BLUE)
    ax.bar_label(bars, labels=[f"{c:,}" for c in counts], padding=2, fontsize=9)
    ax.set_yscale("log")
    ax.set_xticks(range(len(counts)), ["points"] + [f"level {i}" for i in range(1, len(counts))])
    ax.set_ylabel("nodes")
    ax.margins(y=0.15)
    style_axes(ax)
    return _png(fig)


def _clusters_per_level(data: ReportData) -> list[tuple[int, int]]:
    """(nodes, points they cover) per level; level 0 is the points themselves."""
    rows = [(len(data.clusters), len(data.clusters))]
    if data.paths is not None:
        for col in data.paths.T:
            known = col[col >= 0]
            if known.size:
                rows.append((int(np.unique(known).size), int(known.size)))
    return rows


def _quality(data: ReportData) -> tuple[Scores, int, int] | None:
    """Scores on the points that have a label; unclustered points count as singletons (no free pass)."""
    if data.truth is None:
        return None
    has = np.array([t is not None and t == t for t in data.truth], dtype=bool)  # t == t drops NaN
    if has.sum() < 2:
        return None
    _, y = np.unique([str(t) for t in data.truth[has]], return_inverse=True)  # any label type, lists included
    pred = data.clusters[has].copy()
    loose = pred < 0
    pred[loose] = pred.max(initial=0) + 1 + np.arange(loose.sum())
    return score(y, pred), int(has.sum()), int(loose.sum())


def _quality_html(s: Scores, n_labeled: int, n_loose: int) -> str:
    rows = [
        ["Pairwise F (Fp)", f"{s.fp:.3f}", f"{s.pairwise_precision:.3f}", f"{s.pairwise_recall:.3f}"],
        ["BCubed F (Fb)", f"{s.fb:.3f}", f"{s.bcubed_precision:.3f}", f"{s.bcubed_recall:.3f}"],
        ["NMI", f"{s.nmi:.3f}", "", ""],
    ]
    note = (
        f"On {n_labeled} labeled points: {s.n_clusters} clusters for {s.n_classes} classes."
        + (f" {n_loose} unclustered points count as singletons." if n_loose else "")
    )
    return "<h2>Quality against the label field</h2>" + _table(["metric", "F", "precision", "recall"], rows) + (
        f"<p class=note>{_e(note)}</p>"
    )


def _largest_html(
    data: ReportData, ids: np.ndarray, sizes: np.ndarray, n: int, fields: Sequence[str] | None
) -> str:
    head = ["cluster", "size", "share"]
    if data.truth is not None:
        head.append("main label")
    head.append("examples")
    rows = []
    for cid, size in zip(ids.tolist(), sizes.tolist()):
        row: list[Any] = [cid, size, _pct(size, n)]
        if data.truth is not None:
            row.append(_RawHtml(_majority(data.truth[data.clusters == cid])))
        row.append(_RawHtml(_examples(data.examples.get(cid, []), fields)))
        rows.append(row)
    return _table(head, rows, cls="clusters")


def _majority(truth: np.ndarray) -> str:
    known = [str(t) for t in truth if t is not None and t == t]
    if not known:
        return "<span class=muted>no labels</span>"
    values, counts = np.unique(known, return_counts=True)
    i = int(np.argmax(counts))
    return f"{_e(values[i])}<br><span class=muted>{_pct(counts[i], len(truth))} of members</span>"


def _examples(payloads: list[dict[str, Any]], fields: Sequence[str] | None) -> str:
    if not payloads:
        return "<span class=muted>no payload fetched</span>"
    items = []
    for p in payloads:
        keys = list(fields) if fields else [k for k in p if k != "lander"]
        shown = [(k, p[k]) for k in keys if k in p]
        if not shown:
            items.append("<li class=muted>(none of the chosen fields)</li>")
            continue
        text = " · ".join(
            (f"<b>{_e(k)}</b> " if len(shown) > 1 or not fields else "") + _e(_short(v)) for k, v in shown
        )
        items.append(f"<li>{text}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def _short(v: Any, limit: int = 160) -> str:
    s = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
    return s if len(s) <= limit else s[: limit - 1] + "…"


class _RawHtml(str):
    """A table cell that is already HTML (everything else is escaped)."""


def _table(head: list[str], rows: list[list[Any]], cls: str = "") -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if isinstance(c, _RawHtml) else _e(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table class='{cls}'><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _info_table(info: dict[str, str]) -> str:
    if not info:
        return ""
    return "<p class=info>" + " &nbsp;·&nbsp; ".join(f"<b>{_e(k)}</b> {_e(v)}" for k, v in info.items()) + "</p>"


def _cards(items: list[tuple[str, Any]]) -> str:
    cards = "".join(f"<div class=card><div class=num>{_e(v)}</div><div class=lbl>{_e(k)}</div></div>" for k, v in items)
    return f"<div class=cards>{cards}</div>"


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def write_report(data: ReportData, out: str, **options: Any) -> None:
    """Render and write atomically enough for a report: the file appears only once fully rendered."""
    page = build_report(data, **options)
    try:
        with open(out, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as e:
        raise InputError(f"cannot write the report to {out}: {e.strerror}") from None


_PAGE = """<!doctype html>
<html lang=en><head><meta charset=utf-8><meta name=viewport content="width=device-width,initial-scale=1">
<title>{title} – qdrant-lander report</title>
<style>
body {{ font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2433;
       max-width: 1100px; margin: 24px auto; padding: 0 20px; background: #fff; }}
h1 {{ font-size: 26px; margin: 0 0 4px; }}
h2 {{ font-size: 19px; margin: 30px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #e3e8f0; }}
.info {{ color: #4a5568; margin: 0 0 14px; }}
.cards {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(115px, 1fr)); gap: 10px; }}
.card {{ background: #f4f7fb; border: 1px solid #e3e8f0; border-radius: 8px; padding: 10px 14px; }}
.num {{ font-size: 21px; font-weight: 600; }}
.lbl {{ color: #5a6578; font-size: 13px; text-transform: uppercase; letter-spacing: .04em; }}
img {{ max-width: 100%; display: block; margin: 6px 0; }}
table {{ border-collapse: collapse; margin: 8px 0; }}
th, td {{ text-align: left; padding: 6px 12px; border-bottom: 1px solid #e3e8f0; vertical-align: top; }}
th {{ background: #f4f7fb; font-weight: 600; }}
table.clusters {{ width: 100%; }}
table.clusters td:nth-child(-n+3) {{ white-space: nowrap; font-variant-numeric: tabular-nums; }}
ul {{ margin: 0; padding-left: 18px; }}
li {{ margin: 1px 0; }}
.muted {{ color: #8a94a6; font-size: 13px; }}
.note {{ color: #4a5568; }}
</style></head>
<body>
{body}
<p class=muted>Made by qdrant-lander report.</p>
</body></html>
"""


_PAYLOAD_PATH = re.compile(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*")  # what Qdrant's payload selector reads as a key path


def _nested(payload: dict[str, Any], path: str) -> Any:
    """The value at a dotted key path (Qdrant returns ``a.b`` as ``{"a": {"b": ...}}``); None where absent."""
    for key in path.split("."):
        if not isinstance(payload, dict):
            return None
        payload = payload.get(key)
    return payload


def read_collection(
    collection: Collection, *, label_field: str | None = None, top: int = 20, examples: int = 5, batch_size: int = 1024
) -> ReportData:
    """Everything one report needs from a collection: one payload-only scroll, then one retrieve.

    Only the ``lander`` key (and the label field) travels for every point; full payloads are fetched
    for ``examples`` members of each of the ``top`` largest clusters. Paths of different lengths
    (points clustered in different passes) are padded with their last id: a supernode that stopped
    merging is still itself at the levels above.
    """
    if label_field is not None and not _PAYLOAD_PATH.fullmatch(label_field):
        raise InputError(f"--label-field '{label_field}' is not a payload key lander can read: a key of letters, digits, "
                         "_ and -, or a nested one written a.b")
    keys = [KEY] + ([label_field] if label_field else [])
    total = collection.count()
    ids: list[int] = []
    clusters: list[int] = []
    paths: list[list[int]] = []
    truth: list[Any] = []
    with tqdm(total=total, desc=f"reading {collection.name}", unit="pt", file=sys.stderr, disable=None) as bar:
        for batch in collection.scroll(batch_size=batch_size, vectors=False, payload=keys):
            for pid, p in zip(batch.ids.tolist(), batch.payloads or []):
                lander = p.get(KEY) or {}
                ids.append(pid)
                clusters.append(int(lander.get("cluster", -1)))
                paths.append([int(s) for s in lander.get("path", [])])
                truth.append(_nested(p, label_field) if label_field else None)
            bar.update(len(batch.ids))
    if not ids:
        raise InputError(f"collection '{collection.name}' is empty: nothing to report")
    if label_field and all(t is None for t in truth):  # a misspelt key would silently drop the quality section
        raise InputError(f"no point of '{collection.name}' has a value under the payload key '{label_field}' (--label-field)")
    depth = max(map(len, paths))
    path_arr = np.full((len(ids), depth), -1, dtype=np.int64)
    for r, p in enumerate(paths):
        if p:
            path_arr[r] = p + [p[-1]] * (depth - len(p))
    cl = np.asarray(clusters, dtype=np.int64)
    cids, sizes = np.unique(cl[cl >= 0], return_counts=True)
    largest = cids[np.argsort(-sizes, kind="stable")[:top]]
    id_arr = np.asarray(ids, dtype=np.int64)
    wanted = {int(c): id_arr[cl == c][:examples].tolist() for c in largest}
    fetched = collection.retrieve([i for m in wanted.values() for i in m], payload=True) if wanted else None
    by_id = dict(zip(fetched.ids.tolist(), fetched.payloads or [])) if fetched else {}
    state = last_sync(collection)
    info: dict[str, str] = {}
    if state:
        info |= {"model": state.model, "domain": state.domain or "not recorded", "generation": str(state.generation),
                 "last full sync": f"{state.finished_at or state.started_at:%Y-%m-%d %H:%M %Z}"}
        if state.vector:
            info["vector"] = state.vector
        if state.partition_by:
            info["partitioned by"] = f"{state.partition_by} (no cluster holds points of two of its values)"
        if state.state != "complete":  # as `status` says it: points may hold two generations
            info["last full sync"] += " (did not finish: run qdrant-lander sync again)"
    return ReportData(
        title=collection.name,
        clusters=cl,
        paths=path_arr if depth else None,
        truth=truth if label_field else None,
        examples={c: [by_id[i] for i in m if i in by_id] for c, m in wanted.items()},
        info=info,
    )
