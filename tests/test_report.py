"""The HTML report: figures and numbers from plain data, read from a real store, rendered in Chromium."""

import base64
import html
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from qdrant_lander.cli import main
from qdrant_lander.errors import InputError, MissingExtraError
from qdrant_lander.metrics import score
from qdrant_lander.payload import SYNC_META
from qdrant_lander.report import ReportData, build_report, read_collection
from qdrant_lander.stores.edge import EdgeStore

SIZES = [30, 15, 10, 4, 1]  # cluster sizes; then 5 unclustered points
N_LOOSE = 5


def sample() -> tuple[list[int], list[list[int]], list[str], list[dict]]:
    """Cluster ids (peak point ids), 2-level paths, labels and payloads for 65 points."""
    clusters, paths, labels, payloads = [], [], [], []
    pid = 0
    for c, size in enumerate(SIZES):
        peak = pid
        for j in range(size):
            sub = peak if j < size // 2 else peak + size // 2  # two level-1 supernodes per cluster
            clusters.append(peak)
            paths.append([sub, peak])
            labels.append(f"intent{c}" if j < size - 1 else "intent0")  # one stray label per cluster
            payloads.append({"text": f"<b>query {pid}</b> of cluster {c}", "source": "test"})
            pid += 1
    for _ in range(N_LOOSE):
        clusters.append(-1)
        paths.append([])
        labels.append("intent9")
        payloads.append({"text": f"new point {pid}"})
        pid += 1
    return clusters, paths, labels, payloads


def data_from_sample() -> ReportData:
    clusters, paths, labels, payloads = sample()
    depth = 2
    arr = np.array([p if p else [-1] * depth for p in paths])
    by_cluster: dict[int, list[dict]] = {}
    for c, p in zip(clusters, payloads):
        if c >= 0 and len(by_cluster.setdefault(c, [])) < 3:
            by_cluster[c].append(p)
    return ReportData(title="docs <test>", clusters=clusters, paths=arr, truth=labels, examples=by_cluster,
                      info={"model": "default", "generation": "4"})


def images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)]


def test_page_is_self_contained_and_shows_the_numbers():
    page = build_report(data_from_sample(), fields=["text"])
    pngs = images(page)
    assert len(pngs) == 2 and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)  # sizes + hierarchy
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", page)  # nothing loaded from elsewhere
    assert "docs &lt;test&gt;" in page and "<b>query" not in page  # titles and payloads escaped
    assert "&lt;b&gt;query 0&lt;/b&gt; of cluster 0" in page
    assert ">60<" in page and ">5<" in page and ">30<" in page  # clustered, clusters, largest
    # hierarchy table: 65 points, 10 level-1 supernodes over 60 points, 5 clusters
    assert "<td>1</td><td>9</td><td>6.7</td>" in page  # the size-1 cluster has one level-1 node: 9
    assert "<td>2</td><td>5</td><td>12.0</td>" in page
    # largest first, with its main label and its share of members
    rows = re.findall(r"<tr><td>(\d+)</td><td>(\d+)</td>", page.split("Largest clusters")[1])
    assert [int(s) for _, s in rows] == SIZES


def test_quality_counts_unclustered_points_as_singletons():
    d = data_from_sample()
    page = build_report(d)
    _, y = np.unique(d.truth.astype(str), return_inverse=True)
    pred = d.clusters.copy()
    pred[pred < 0] = 1000 + np.arange(N_LOOSE)
    s = score(y, pred)
    assert f"<td>{s.fp:.3f}</td>" in page and f"<td>{s.fb:.3f}</td>" in page and f"<td>{s.nmi:.3f}</td>" in page
    assert "5 unclustered points count as singletons" in page
    assert "intent0<br><span class=muted>100.0% of members" in page  # cluster 0: all intent0


def test_without_labels_or_paths_the_sections_are_left_out():
    page = build_report(ReportData(title="t", clusters=[3, 3, 3, 7]))
    assert "Quality" not in page and "Hierarchy" not in page and len(images(page)) == 1
    assert "no payload fetched" in page


def test_bad_data_is_rejected():
    with pytest.raises(ValidationError, match="integer"):
        ReportData(title="t", clusters=[0.5, 1.0])
    with pytest.raises(ValidationError, match="truth has 1 rows"):
        ReportData(title="t", clusters=[0, 0], truth=["a"])
    with pytest.raises(ValidationError, match="2-D"):
        ReportData(title="t", clusters=[0, 0], paths=[0, 0])


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import of it raises ImportError
    with pytest.raises(MissingExtraError, match=r"qdrant-lander\[report\]"):
        build_report(ReportData(title="t", clusters=[0, 0]))


def fill(coll) -> None:
    clusters, paths, labels, payloads = sample()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(clusters), 8)).astype(np.float32)
    for p, c, path, label in zip(payloads, clusters, paths, labels):
        p["intent"] = label
        if c >= 0:
            p["lander"] = {"cluster": c, "path": path if c != 45 else path[-1:], "density": 0.5, "peak": False,
                           "model": "default", "generation": 1}  # cluster 45's points: a 1-level path
    coll.upsert(np.arange(len(clusters)), x, payloads)


def test_read_collection_gets_clusters_paths_labels_and_examples(store):
    coll = store.create("docs", 8)
    fill(coll)
    d = read_collection(coll, label_field="intent", top=3, examples=2, batch_size=16)
    clusters, paths, labels, payloads = sample()
    assert d.clusters.tolist() == clusters
    assert d.truth.tolist() == labels
    assert d.paths.shape == (65, 2) and (d.paths[clusters.index(45)] == [45, 45]).all()  # padded with its last id
    assert sorted(d.examples) == [0, 30, 45]  # the three largest
    assert [p["text"] for p in d.examples[30]] == [payloads[30]["text"], payloads[31]["text"]]
    assert d.examples[0][0]["intent"] == "intent0"  # full payloads for the examples
    with pytest.raises(InputError, match="no point of 'docs' has a value under the payload key 'intnet'"):
        read_collection(coll, label_field="intnet")  # a misspelt key: said, not a page without its quality section
    for bad in ("", "my label", "<k>"):  # Qdrant reads the key as a JSON path: these were tracebacks (exit 1)
        with pytest.raises(InputError, match="is not a payload key lander can read"):
            read_collection(coll, label_field=bad)


def test_read_collection_reads_nested_and_list_labels(store):
    """A label under a nested key (meta.intent) read as missing; equal-length list labels made a 2-D array that
    crashed the quality section."""
    coll = store.create("docs", 4)
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    coll.upsert(np.arange(6), x, [{"meta": {"intent": i % 2}, "tags": ["a", str(i % 2)],
                                   "lander": {"cluster": i % 2, "path": [i % 2], "density": 0.5, "peak": i < 2,
                                              "model": "m", "generation": 1}} for i in range(6)])
    assert read_collection(coll, label_field="meta.intent").truth.tolist() == [0, 1, 0, 1, 0, 1]
    tags = read_collection(coll, label_field="tags")
    assert tags.truth.shape == (6,) and tags.truth[1] == ["a", "1"]
    assert "Pairwise F" in build_report(tags)  # one class per distinct list: clusters match them exactly


def test_report_command_writes_the_page(tmp_path):
    with EdgeStore(tmp_path / "qd") as s:
        fill(s.create("docs", 8))
    out = tmp_path / "r.html"
    r = CliRunner().invoke(main, ["report", "docs", "--out", str(out), "--path", str(tmp_path / "qd"),
                                  "--label-field", "intent", "--fields", "text", "--top", "2"])
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert "Largest clusters (top 2 of 5)" in page and "Pairwise F" in page
    missing = CliRunner().invoke(main, ["report", "nope", "--out", str(tmp_path / "x.html"),
                                        "--path", str(tmp_path / "qd")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    assert not (tmp_path / "x.html").exists()
    nowhere = CliRunner().invoke(main, ["report", "docs", "--out", str(tmp_path / "no" / "r.html"),
                                        "--path", str(tmp_path / "qd")])
    assert nowhere.exit_code == 2 and "the directory" in nowhere.output and "no does not exist" in nowhere.output
    typo = CliRunner().invoke(main, ["report", "docs", "--out", str(tmp_path / "t.html"), "--path", str(tmp_path / "qd"),
                                     "--fields", "txet"])
    assert typo.exit_code == 2 and "no example member has any of the --fields ['txet']" in typo.output
    assert "'text'" in typo.output and not (tmp_path / "t.html").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_page_renders_in_headless_chromium(tmp_path):
    html = tmp_path / "report.html"
    html.write_text(build_report(data_from_sample(), fields=["text"]), encoding="utf-8")
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
           html.as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[:2] == (1600, 1200)
    # a rendered page, not a blank or error page: text and both figures' blue bars are on screen
    blue = (np.abs(img[..., 0] - 0x3B / 255) < 0.02) & (np.abs(img[..., 2] - 0xB6 / 255) < 0.02)
    assert blue.sum() > 5000
    assert (img[..., :3].mean(axis=2) < 0.3).sum() > 5000  # dark text


def test_report_of_a_real_sync(tmp_path):
    """What `sync` really writes (shipped model, Qdrant Edge) is what the report reads."""
    import json
    from pathlib import Path

    from qdrant_lander import Lander
    from qdrant_lander.sync import full_sync, import_points

    demo = Path(__file__).resolve().parents[1] / "qdrant_lander" / "demo_data"
    x = np.load(demo / "clinc_sample.npz")["embeddings"].astype(np.float32)
    rows = [json.loads(line) for line in (demo / "clinc_sample.jsonl").read_text().splitlines()]
    keep = np.flatnonzero(np.isin([r["intent"] for r in rows], sorted({r["intent"] for r in rows})[:4]))
    with EdgeStore(tmp_path / "qd") as store:
        col = import_points(store, "docs", x[keep], [rows[i] for i in keep], progress=False)
        rep = full_sync(col, Lander(), progress=False)
        d = read_collection(col, label_field="intent", top=5, examples=2)
        col.set_meta(SYNC_META, {**col.get_meta(SYNC_META), "state": "writing"})  # a sync killed mid-write
        unfinished = read_collection(col, top=1, examples=1).info
    assert unfinished["last full sync"].endswith("(did not finish: run qdrant-lander sync again)")
    assert "vector" not in d.info and "partitioned by" not in d.info  # the unnamed vector, no key: nothing to name
    assert (d.clusters >= 0).all() and len(np.unique(d.clusters)) == rep.clusters
    assert d.paths.shape == (len(keep), rep.levels) and (d.paths[:, -1] == d.clusters).all()
    assert d.info["model"] == rep.model and d.info["generation"] == str(rep.generation)
    assert d.info["domain"] == rep.domain
    page = build_report(d, fields=["text"])
    assert "Pairwise F" in page
    shown = [p["text"] for ex in d.examples.values() for p in ex]
    assert len(shown) == 2 * min(5, rep.clusters) - sum(len(e) < 2 for e in d.examples.values())
    assert all(html.escape(t) in page for t in shown)
