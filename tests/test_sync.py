"""Full sync on real stores with the shipped model, the collection commands end to end, and bad input.

Data: a few whole CLINC150 test intents (real text embeddings). qdrant-client's local mode is brute
force, so its collections stay at a few hundred points.
"""

import json
import threading
import re

import numpy as np
import pytest
import qdrant_edge as qe
from click.testing import CliRunner

from benchmarks.tasks import clinc_75_75, subsample_classes
from qdrant_lander import Lander
from qdrant_lander.cli import main
from qdrant_lander.decode import AUTO_TAUS, cluster_hierarchy
from qdrant_lander.errors import StoreError
from qdrant_lander.knn import knn_graph
from qdrant_lander.model_card import ModelCard
from qdrant_lander.payload import SYNC_META, LanderPayload, SyncState, cluster_filter
from qdrant_lander.stores.edge import SHARD_DIR, EdgeStore
from qdrant_lander.sync import check_fits, full_sync, import_points, read_labels, status


@pytest.fixture(scope="module")
def part():
    return subsample_classes(clinc_75_75().test, 2, seed=1)  # 300 points, 2 intents


@pytest.fixture(scope="module")
def lander(part):
    """Resolved for the data (``auto`` -> text), so ``lander.card`` is the decoding the syncs use."""
    return Lander(device="cpu", threads=1).for_data(part.x)


def snapshot(col) -> tuple[list, dict | None]:
    pts = [(int(i), p) for b in col.scroll(vectors=False, payload=True) for i, p in zip(b.ids, b.payloads)]
    return pts, col.get_meta(SYNC_META)


def test_sync_writes_one_lander_key_and_matches_predict(store, part, lander):
    user = [{"text": f"q{i}", "label": int(v), "lander_note": "mine"} for i, v in enumerate(part.y)]
    col = import_points(store, "docs", part.x, user, start_id=100, progress=False)
    rep = full_sync(col, lander, batch_size=64, progress=False)
    assert rep.points == len(part.x) and rep.generation == 1 and rep.knn == "exact"  # auto: small, full scan
    assert rep.peak_rss_mb > 50  # this process holds at least the model and the test data (Linux reports it)

    ids, labels = read_labels(col)
    np.testing.assert_array_equal(ids, np.arange(100, 100 + len(part.x)))
    direct = lander.predict(part.x)
    np.testing.assert_array_equal(labels, direct.labels + 100)  # store kNN here is exact: same clusters
    assert rep.clusters == direct.n_clusters

    pts, meta = snapshot(col)
    for (pid, p), u in zip(pts, user):
        lp = LanderPayload(**p.pop("lander"))
        assert p == u  # the user's keys are untouched
        assert lp.path[-1] == lp.cluster and lp.peak == (lp.cluster == pid) and lp.generation == 1
        assert lp.model == lander.card.name
    state = SyncState(**meta)
    assert state.state == "complete" and state.points == len(part.x) and state.finished_at is not None
    assert rep.domain == state.domain == "text"  # auto, resolved from the collection's vectors

    biggest = np.bincount(labels - 100).argmax() + 100
    hits = col.search(col.retrieve([int(biggest)], vectors=True).vectors[0], limit=20, filter=cluster_filter(biggest))
    assert hits and all(h.payload["lander"]["cluster"] == biggest for h in hits)

    st = status(col)
    assert (st.points, st.clustered, st.unclustered, st.clusters) == (len(part.x), len(part.x), 0, rep.clusters)
    assert st.largest[0] == (biggest, int((labels == biggest).sum())) and st.generation == 1 and st.domain == "text"
    # Edge indexes nothing below ~10 MB of vectors (searched by a scan); the client's local mode has no index to tell of
    assert st.unindexed == (len(part.x) if isinstance(store, EdgeStore) else None)

    assert full_sync(col, lander, progress=False).generation == 2
    assert all(p["lander"]["generation"] == 2 for _, p in snapshot(col)[0])


def test_stage_logs_leave_memory_out_where_the_os_does_not_report_it(store, part, lander, monkeypatch, caplog):
    """Windows has no ``resource``: a stage line must not read 'peak memory so far None MB'."""
    import qdrant_lander.sync as sync

    col = import_points(store, "nomem", part.x, start_id=1, progress=False)
    monkeypatch.setattr(sync, "peak_rss_mb", lambda: None)
    with caplog.at_level("INFO", logger="qdrant_lander.sync"):
        rep = full_sync(col, lander, batch_size=64, progress=False)
    stages = [r.getMessage() for r in caplog.records if " s CPU)" in r.getMessage()]
    assert stages and not any("None" in m or "memory" in m for m in stages)
    assert rep.peak_rss_mb is None

def test_interrupted_sync_is_visible_and_the_next_one_recovers(tmp_path, part, lander):
    """A sync that died mid-write leaves a 'writing' record; points hold the old or the new generation."""
    with EdgeStore(tmp_path) as store:
        col = import_points(store, "docs", part.x, progress=False)
        full_sync(col, lander, progress=False)
        crashed = SyncState(**col.get_meta(SYNC_META)).model_copy(update={"state": "writing", "generation": 2,
                                                                         "finished_at": None})
        col.set_meta(SYNC_META, crashed.model_dump(mode="json"))  # as left by a crash after step 1
        col.set_payloads([([0, 1], {"lander": {**snapshot(col)[0][0][1]["lander"], "generation": 2}})])
        st = status(col)
        assert (st.state, st.generation) == ("writing", 2)
        assert {p["lander"]["generation"] for _, p in snapshot(col)[0]} == {1, 2}
        assert full_sync(col, lander, progress=False).generation == 3
        pts, meta = snapshot(col)
        assert {p["lander"]["generation"] for _, p in pts} == {3} and SyncState(**meta).state == "complete"


def test_model_must_fit_the_collection(tmp_path, part):
    with EdgeStore(tmp_path) as store:
        col = import_points(store, "docs", part.x[:, :64], progress=False)
        card = ModelCard(name="m384", node_mode="structure", input_dim=384)
        with pytest.raises(StoreError, match="vectors of size 64, but model 'm384' takes size 384"):
            check_fits(col, card)
        assert check_fits(col, card.model_copy(update={"input_dim": "any"})) == len(part.x)


def test_bad_collections_fail_before_writing(tmp_path, part, lander):
    store = EdgeStore(tmp_path)
    empty = store.create("empty", 384)
    with pytest.raises(StoreError, match="'empty' is empty; import points first"):
        full_sync(empty, lander, progress=False)
    few = import_points(store, "few", part.x[:5], progress=False)
    with pytest.raises(StoreError, match="has 5 points; clustering needs more than k="):
        full_sync(few, lander, progress=False)
    nan = import_points(store, "nan", part.x, [{"text": "x"}] * len(part.x), progress=False)
    nan.upsert(np.array([7, 9]), np.full((2, 384), np.nan, dtype=np.float32), [{"text": "bad"}] * 2)  # Edge keeps NaN
    before = snapshot(nan)
    with pytest.raises(StoreError, match=r"2 vectors with NaN, inf or all zeros \(point ids \[7, 9\]\)"):
        full_sync(nan, lander, progress=False)
    assert snapshot(nan) == before and before[1] is None
    store.close()


def run(args: list[str]) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, args)
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def files(tmp_path, part):
    np.save(tmp_path / "x.npy", part.x)
    np.save(tmp_path / "y.npy", part.y)
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps({"text": f"query {i}"}) for i in range(len(part.x))))
    return tmp_path


def test_cli_import_sync_search_labels_status(files, part, lander):
    path = ["--path", str(files / "qd")]
    code, out, _ = run(["import", "docs", str(files / "x.npy"), "--labels", str(files / "y.npy"),
                        "--label-key", "intent", "--payload", str(files / "p.jsonl"), "--json", *path])
    assert code == 0 and json.loads(out)["points"] == len(part.x)
    code, out, err = run(["sync", "docs", "--json", "--threads", "1", "--knn", "index", *path])
    assert code == 0, err
    rep = json.loads(out)
    assert rep["points"] == len(part.x) and set(rep["seconds"]) == {"scroll", "index", "knn", "cluster", "write", "reindex"}
    assert rep["knn"] == "index" and rep["peak_rss_mb"] > 0

    code, out, _ = run(["labels", "docs", "--out", str(files / "l.npy"), "--json", *path])
    labels = np.load(files / "l.npy")
    assert code == 0 and json.loads(out)["clustered"] == len(part.x)
    np.testing.assert_array_equal(labels, lander.predict(part.x).labels)  # small: Edge scans, no HNSW

    cid = int(labels[0])
    code, out, _ = run(["search", "docs", "--cluster", str(cid), "--like", "0", "--limit", "5", "--json", *path])
    hits = json.loads(out)
    assert code == 0 and hits[0]["id"] == 0 and all(h["payload"]["lander"]["cluster"] == cid for h in hits)
    assert hits[0]["payload"]["text"] == "query 0" and hits[0]["payload"]["intent"] == int(part.y[0])

    code, out, _ = run(["status", "docs", "--json", *path])
    st = json.loads(out)
    assert code == 0 and st["clustered"] == len(part.x) and st["generation"] == 1 and st["state"] == "complete"
    code, out, _ = run(["status", "docs", *path])
    assert "generation   1" in out and "clusters" in out and "(domain text)" in out

    meta = files / "qd" / "docs" / "lander_meta.json"  # the sync record removed by hand: labels stay, and say so
    meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "sync"}))
    code, out, _ = run(["status", "docs", *path])
    assert code == 0 and f"not recorded ({len(part.x)} points carry labels" in out and "never" not in out


@pytest.mark.parametrize("key, says", [("text", "row 0 already has the key 'text'"), (" ", "--label-key is empty")])
def test_cli_import_labels_never_replace_payload(files, key, says):
    """--labels under a key the --payload rows already use would overwrite the user's values: refused, nothing written."""
    code, out, err = run(["import", "docs", str(files / "x.npy"), "--labels", str(files / "y.npy"), "--label-key", key,
                          "--payload", str(files / "p.jsonl"), "--path", str(files / "qd")])
    assert code == 2 and says in out + err and not (files / "qd").exists()


def _files(root) -> dict:
    """Every file's size and modification time (Edge files are large and sparse: reading them is slow)."""
    return {p.relative_to(root): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def odd_store(tmp_path_factory):
    """Collections made by other tools: two named vectors; sparse vectors only."""
    root = tmp_path_factory.mktemp("odd") / "qd"
    p = qe.EdgeVectorParams
    qe.EdgeShard.create(str(root / "named" / SHARD_DIR), qe.EdgeConfig(vectors={
        "a": p(size=4, distance=qe.Distance.Cosine), "b": p(size=4, distance=qe.Distance.Cosine)})).close()
    qe.EdgeShard.create(str(root / "sparse" / SHARD_DIR),
                        qe.EdgeConfig(sparse_vectors={"s": qe.EdgeSparseVectorParams()})).close()
    return root


@pytest.mark.parametrize("args, message", [
    (["sync", "nope"], "collection 'nope' does not exist in the embedded store at .* \\(existing: named, sparse\\)"),
    (["sync", "named"], "has named vectors \\['a', 'b'\\]: choose one with --vector NAME"),
    (["sync", "named", "--vector", "c"], "has no vector named 'c'"),
    (["sync", "sparse"], "has no dense vectors to cluster \\(it has only sparse vectors: s\\)"),
    (["search", "named", "--vector", "a", "--cluster", "1"], "give exactly one query"),
])
def test_cli_bad_collections(odd_store, args, message):
    before = _files(odd_store)
    code, _, err = run([*args, "--path", str(odd_store)])
    assert code == 2 and err.startswith("Error: ")
    assert re.search(message, err), err
    assert _files(odd_store) == before


@pytest.mark.parametrize("query, message", [(np.zeros(4), "1 rows are all zeros"), (np.full(4, np.nan), "NaN or inf"),
                                            (np.ones(3), "query vector has size 3, collection 'named' has 4"),
                                            (np.ones((2, 2)), "holds 2 vectors (shape (2, 2)); give one")])
def test_cli_search_refuses_a_query_vector_it_cannot_score(odd_store, tmp_path, query, message):
    np.save(tmp_path / "q.npy", query.astype(np.float32))
    code, _, err = run(["search", "named", "--vector", "a", "--cluster", "1", "--vector-file", str(tmp_path / "q.npy"),
                        "--path", str(odd_store)])
    assert code == 2 and message in err and "Traceback" not in err, err


def test_cli_import_rejects_nan_and_writes_nothing(files, part):
    x = part.x.copy()
    x[4, 1] = np.nan
    np.save(files / "bad.npy", x)
    code, _, err = run(["import", "docs", str(files / "bad.npy"), "--path", str(files / "qd")])
    assert code == 2 and "1 rows contain NaN or inf (first rows: [4])" in err
    assert not (files / "qd").exists()
    code, _, err = run(["import", "docs", str(files / "x.npy"), "--labels", str(files / "p.jsonl"),
                        "--path", str(files / "qd")])
    assert code == 2 and "p.jsonl is not a .npy file; save the labels" in err and not (files / "qd").exists()


class _PerDatasetTau:
    """The shipped model with a per-dataset tau (its own card keeps one fixed tau)."""

    domain = "any"

    def __init__(self, lander: Lander, bias: float):
        self.lander, self.card = lander, lander.card.model_copy(update={"tau_bias": bias})

    def for_data(self, x):
        return self

    def predict_graph(self, vectors, graph, groups=None):
        return cluster_hierarchy(vectors, graph, self.lander.scorer, self.card, groups)


def test_sync_records_the_tau_it_decoded_with(store, part, lander):
    col = import_points(store, "taus", part.x, progress=False)
    fixed = full_sync(col, lander, progress=False)
    assert fixed.tau == lander.card.tau == SyncState(**col.get_meta(SYNC_META)).tau
    auto = _PerDatasetTau(lander, bias=-1.0)
    chosen = full_sync(col, auto, progress=False)
    expected = auto.predict_graph(part.x, knn_graph(part.x, lander.card.k))  # exact kNN, as the sync's scan
    assert chosen.tau == expected.tau in AUTO_TAUS and chosen.clusters == expected.n_clusters
    assert chosen.tau != fixed.tau  # else the record below could not tell the two apart
    assert SyncState(**col.get_meta(SYNC_META)).tau == chosen.tau  # what incremental passes decode with


def test_cli_import_adds_a_second_batch_after_the_first(files, part):
    """A second `import` without --start-id used to overwrite points 0..N-1 silently; an explicit id still replaces."""
    path = ["--path", str(files / "qd")]
    np.save(files / "b.npy", part.x[:30])
    assert run(["import", "docs", str(files / "x.npy"), "--payload", str(files / "p.jsonl"), *path])[0] == 0
    code, out, _ = run(["import", "docs", str(files / "b.npy"), "--json", *path])
    n = len(part.x)
    assert code == 0 and json.loads(out) == {**json.loads(out), "first_id": n, "last_id": n + 29, "points": n + 30}
    code, out, _ = run(["import", "docs", str(files / "b.npy"), "--start-id", "0", "--json", *path])
    assert code == 0 and json.loads(out)["points"] == n + 30
    with EdgeStore(files / "qd") as store:
        kept = store.open("docs").retrieve([29, 30], payload=True).payloads
    assert kept[0] == {} and kept[1] == {"text": "query 30"}  # 0..29 replaced by the explicit ids, 30 untouched
    code, _, err = run(["import", "docs", str(files / "b.npy"), "--start-id", str(2**63 - 10), *path])
    assert code == 2 and "below 2^63" in err


def test_cli_resync_keeps_the_cluster_ids_users_stored(files, part):
    """A plain `sync` again (the README's command) must not rename clusters: it used to name every cluster by its
    peak again, so an id a user stored (here one an earlier pass handed out) pointed at nothing."""
    from qdrant_lander.incremental import relabel

    path = ["--path", str(files / "qd")]
    assert run(["import", "docs", str(files / "x.npy"), *path])[0] == 0
    assert run(["sync", "docs", "--threads", "1", *path])[0] == 0
    with EdgeStore(files / "qd") as store:
        col = store.open("docs")
        ids, before = read_labels(col)
        renamed = int(np.bincount(before).argmax())
        relabel(col, renamed, 10**9)  # the id users know this cluster by
    code, _, err = run(["sync", "docs", "--threads", "1", *path])
    assert code == 0, err
    with EdgeStore(files / "qd") as store:
        _, after = read_labels(store.open("docs"))
    assert (after[before == renamed] == 10**9).mean() > 0.9
    kept = before != renamed
    assert (after[kept] == before[kept]).mean() > 0.9


def test_cli_server_that_does_not_answer_is_one_line_and_exit_4():
    """A wrong --url (or a server that is down) gave a qdrant-client traceback and exit 1; a supervisor needs 4."""
    for cmd in (["status", "docs"], ["sync", "docs", "--watch"]):
        code, out, err = run([*cmd, "--url", "http://127.0.0.1:9"])  # the discard port: nothing listens
        assert code == 4 and err.startswith("Error: cannot reach the Qdrant server at http://127.0.0.1:9"), err
        assert "Traceback" not in err
    # qdrant-client takes 6333 when the URL names no port, https too: a server behind a TLS proxy on 443 is missed
    code, _, err = run(["status", "docs", "--url", "https://127.0.0.1"])
    assert code == 4 and err.startswith("Error: cannot reach the Qdrant server at https://127.0.0.1 (port 6333: "
                                        "the URL names none)"), err


@pytest.fixture
def refusing_server():
    """An HTTP server that answers every request as a Qdrant server answers a wrong API key: 401."""
    import http.server

    class Refuse(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            body = json.dumps({"status": {"error": "Must provide an API key or an Authorization bearer token"}})
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        do_GET = do_POST = do_PUT = answer

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_cli_a_refused_api_key_is_bad_configuration(refusing_server, files):
    """A wrong key gave a traceback and exit 1, which a systemd unit restarts forever; it is bad configuration (2)."""
    for cmd in (["status", "docs"], ["sync", "docs", "--watch"], ["import", "docs", str(files / "x.npy")]):
        code, _, err = run([*cmd, "--url", refusing_server, "--api-key", "wrong"])
        assert code == 2 and "refused the request (401 Unauthorized): check the API key" in err, err
        assert "Traceback" not in err


def test_cli_search_refuses_a_negative_point_id(tmp_path):
    """--like -1 reached the store's binding and died with a Rust conversion traceback."""
    code, _, err = run(["search", "docs", "--cluster", "1", "--like", "-1", "--path", str(tmp_path)])
    assert code == 2 and "-1 is not in the range x>=0" in err


def test_cli_read_commands_turn_bad_files_into_one_line(files, part):
    """labels --out where nothing can be written, and a --vector-file of strings, were tracebacks (exit 1); a search
    of a collection never synced says so rather than only "no points"."""
    path = ["--path", str(files / "qd")]
    assert run(["import", "docs", str(files / "x.npy"), *path])[0] == 0
    np.save(files / "q.npy", part.x[0])
    code, _, err = run(["search", "docs", "--cluster", "0", "--vector-file", str(files / "q.npy"), *path])
    assert code == 0 and "was never synced: run qdrant-lander sync first" in err
    np.save(files / "words.npy", np.array(["a"] * part.x.shape[1]))
    code, _, err = run(["search", "docs", "--cluster", "0", "--vector-file", str(files / "words.npy"), *path])
    assert code == 2 and "holds <U1 values: a query vector is real numbers" in err, err
    code, _, err = run(["labels", "docs", "--out", "/proc/lander-labels.npy", *path])  # a directory, not writable
    assert code == 2 and err.startswith("Error: cannot write /proc/lander-labels.npy"), err


def test_a_sync_that_fails_while_writing_leaves_the_writing_record(store, part, lander, second_write_fails):
    """The record must say 'writing' before the first payload of a new generation lands: a sync that dies between
    two payload batches leaves points of two generations, and only that record makes status say so and the next
    daemon pass a full one (an incremental pass would build on the half-written generation)."""
    from qdrant_lander.incremental import NeedsFullSync, incremental_pass

    col = import_points(store, "docs", part.x, progress=False)
    full_sync(col, lander, progress=False)
    with second_write_fails(col), pytest.raises(ConnectionError):
        full_sync(col, lander, batch_size=64, progress=False)
    st = status(col)
    assert (st.state, st.generation) == ("writing", 2)
    assert {p["lander"]["generation"] for _, p in snapshot(col)[0]} == {1, 2}
    with pytest.raises(NeedsFullSync, match="did not finish"):
        incremental_pass(col, lander.scorer, lander.card)
