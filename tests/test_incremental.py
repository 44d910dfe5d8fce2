"""Incremental passes on real stores (Qdrant Edge and qdrant-client local mode) with the shipped model.

Data: a few whole CLINC150 test intents arriving in random order; local mode is brute force, so the
collections stay at a few hundred points. ``LANDER_TEST_MODEL`` may name another model file.
"""

import json
import logging
import os
import shutil
import threading
import time
from collections import Counter

import numpy as np
import pytest
from qdrant_client import models

from benchmarks.tasks import clinc_75_75, subsample_classes
from qdrant_lander import Lander
from qdrant_lander.daemon import EXIT_INPUT, EXIT_OK, Daemon, DaemonOptions
from qdrant_lander.domains import load_presets
from qdrant_lander.knn import knn_graph, rows_of
from qdrant_lander.decode import decode_level
from qdrant_lander.caches import Label, LabelCache, NeighbourCache
from qdrant_lander.incremental import (FRESH_ID_START, INCREMENTAL_META, IncrementalState, NeedsFullSync, _absorb_new,
                                       _check_cached, _fresh_ids, _Groups, _ids_in_use, _score_parents, incremental_pass,
                                       replay_journal)
from qdrant_lander.metrics import score
from qdrant_lander.model_card import CARD_FILE, ONNX_FILE
from qdrant_lander.payload import CLUSTER_FIELD, KEY, SYNC_META, LanderPayload, cluster_filter, unclustered_filter
from qdrant_lander.stable_ids import stable_ids
from qdrant_lander.validate import check_embeddings
from qdrant_lander.stores.edge import EdgeStore
from qdrant_lander.sync import full_sync, import_points, read_labels, read_vectors


@pytest.fixture(scope="module")
def data():
    part = subsample_classes(clinc_75_75().test, 3, seed=2)  # 450 points, 3 intents
    perm = np.random.RandomState(0).permutation(len(part.x))
    return part.x[perm], part.y[perm]


@pytest.fixture(scope="module")
def lander(data):
    """Resolved for the data (``auto`` -> text) so that the tests' own cards are the ones the syncs use."""
    return Lander(os.environ.get("LANDER_TEST_MODEL"), device="cpu", threads=1).for_data(data[0])


def payloads(col) -> dict[int, dict]:
    return {int(i): p for b in col.scroll(vectors=False, payload=True) for i, p in zip(b.ids, b.payloads)}


def check_consistent(col) -> dict[int, LanderPayload]:
    """Every label is a whole ``lander`` object; the hierarchy nests: points sharing a supernode at any level
    share every coarser one and the cluster."""
    out = {}
    for pid, p in payloads(col).items():
        if KEY in p:
            out[pid] = LanderPayload(**p[KEY])  # raises on a half-written payload
    for level in range(max((len(lp.path) for lp in out.values()), default=0)):
        above: dict[int, set[tuple[int, ...]]] = {}
        for lp in out.values():
            above.setdefault(lp.path[level], set()).add((*lp.path[level + 1:], lp.cluster))
        assert all(len(c) == 1 for c in above.values()), level
    peaks = Counter(lp.cluster for lp in out.values() if lp.peak)
    assert max(peaks.values(), default=1) == 1, {c: n for c, n in peaks.items() if n > 1}  # one peak per cluster
    return out


def test_stream_labels_every_point_and_keeps_the_quality(store, data, lander):
    x, y = data
    base = 100  # a small first sync leaves fragments that later arrivals bridge: the passes must merge
    user = [{"text": f"q{i}"} for i in range(len(x))]
    col = import_points(store, "docs", x[:base], user[:base], progress=False)
    full_sync(col, lander, progress=False)
    fp_base = score(y[:base], read_labels(col)[1]).fp
    cache = NeighbourCache(lander.card.k)
    reports = []
    for s in range(base, len(x), 50):
        import_points(store, "docs", x[s:s + 50], user[s:s + 50], start_id=s, progress=False)
        reports.append(incremental_pass(col, lander.scorer, lander.card, cache=cache))
    assert sum(r.new for r in reports) == len(x) - base
    assert all(r.attached + r.created <= r.new for r in reports)
    assert all(r.relabelled >= r.merged for r in reports) and any(r.merged for r in reports)
    assert col.count(unclustered_filter()) == 0
    labels = check_consistent(col)
    for pid, p in payloads(col).items():
        assert p["text"] == f"q{pid}"  # the user's payload is untouched
        assert labels[pid].generation == 1 and labels[pid].model == lander.card.name
    ids, inc = read_labels(col)
    full = lander.predict(x[ids]).labels
    fp_inc, fp_full = score(y[ids], inc).fp, score(y[ids], full).fp
    # passes attach and merge, never split: they keep what the base sync got right (the daemon's
    # growth rule re-clusters when the base was too small; benchmarks/RESULTS.md, Incremental)
    assert fp_inc >= 0.9 * min(fp_base, fp_full), (fp_inc, fp_base, fp_full)
    assert incremental_pass(col, lander.scorer, lander.card, cache=cache).new == 0


def test_warm_cache_queries_only_the_new_points(tmp_path, data, lander):
    x, _ = data
    with EdgeStore(tmp_path / "d") as store:
        col = import_points(store, "docs", x[:400], progress=False)
        full_sync(col, lander, progress=False)
        cache = NeighbourCache(lander.card.k)
        import_points(store, "docs", x[400:420], start_id=400, progress=False)
        incremental_pass(col, lander.scorer, lander.card, cache=cache)
        queried = []
        knn = col.knn
        col.knn = lambda ids, v, k, **kw: queried.extend(ids.tolist()) or knn(ids, v, k, **kw)
        import_points(store, "docs", x[420:425], start_id=420, progress=False)
        cached = set(cache.ids())
        rep = incremental_pass(col, lander.scorer, lander.card, cache=cache)
        assert rep.new == 5 and rep.field > 5
        # the new points are queried; of the old ones only those whose lists were never fetched
        assert set(range(420, 425)) <= set(queried)
        assert not (set(queried) - set(range(420, 425))) & cached
        assert len(queried) < rep.field


def test_arrivals_enter_the_cached_lists_of_their_neighbours():
    rng = np.random.default_rng(0)
    k, n_old, n_new = 4, 60, 25
    x = rng.normal(size=(n_old + n_new, 6)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)

    def exact(rows, among):
        top = np.argsort(-sim[np.ix_(rows, among)], axis=1, kind="stable")[:, :k]
        return among[top], np.take_along_axis(sim[np.ix_(rows, among)], top, axis=1)

    old, everyone, new = np.arange(n_old), np.arange(n_old + n_new), np.arange(n_old, n_old + n_new)
    cache = NeighbourCache(k)
    fetched = np.arange(0, n_old, 2)  # some old lists were never fetched
    cache.put(fetched, *exact(fetched, old), x[fetched])
    late = np.array([1, 3])  # fetched after the arrivals were stored: they may name arrivals already
    cache.put(late, *exact(late, everyone), x[late])
    before = {q: cache.lists([q])[0][0] for q in cache.ids()}
    nbr, s = exact(new, everyone)
    cache.add_arrivals(new, x[new], nbr, s)
    assert set(cache.ids()) == set(before) | set(new.tolist())
    assert np.array_equal(cache.lists(new.tolist())[0], nbr) and np.array_equal(cache.gather(new.tolist())[2], x[new])
    for q, ids in before.items():
        # the reverse update: q's list + the arrivals that list q, k most similar, each id once
        cand = set(ids.tolist()) | {p for r, p in enumerate(new.tolist()) if q in nbr[r]}
        want = sorted(cand, key=lambda c: (-sim[q, c], c))[:k]
        got_ids, got_sim = cache.lists([q])
        assert got_ids[0].tolist() == want, q
        assert np.allclose(got_sim[0], sim[q, want])


def test_cache_rows_survive_growth_forget_and_reuse():
    """The cache's arrays grow, and rows of forgotten points are handed out again: every cached point
    must keep reading back the list and vector it was last given."""
    rng = np.random.default_rng(1)
    k, d = 3, 5
    cache, want = NeighbourCache(k), {}

    def put(ids):
        nbr = rng.integers(0, 10_000, size=(len(ids), k))
        sim, x = rng.random((len(ids), k), dtype=np.float32), rng.random((len(ids), d), dtype=np.float32)
        cache.put(np.asarray(ids), nbr, sim, x)
        want.update({i: (nbr[r], sim[r], x[r]) for r, i in enumerate(ids)})

    for s in range(0, 2500, 500):  # 1,024 rows, then grown twice
        put(list(range(s, s + 500)))
    put([5, 7, 2400])  # replaced in place
    gone = [11, 12]
    named = [i for i in cache.ids().tolist() if np.isin(want[i][0], gone).any()]
    cache.forget(np.asarray(gone))
    for i in [*gone, *named]:
        del want[i]
    put(list(range(5000, 5100)))  # takes the freed rows first
    assert sorted(cache.ids()) == sorted(want) and len(cache) == len(want)
    ids = list(want)
    nbr, sim = cache.lists(ids)
    assert np.array_equal(nbr, [want[i][0] for i in ids]) and np.array_equal(sim, [want[i][1] for i in ids])
    assert np.array_equal(cache.gather(ids)[2], [want[i][2] for i in ids])


def test_a_seeded_cache_lists_point_ids_not_rows():
    """A full pass seeds the daemon's cache from its graph, whose neighbours are rows of the scroll: the cache
    must hold the point ids of those rows (ids are rarely 0..N-1 in a real collection: deletes, chosen ids)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 6)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(30, dtype=np.int64)[::-1] * 10 + 7  # scroll order need not be id order either
    graph = knn_graph(x, 4)
    cache = NeighbourCache(4)
    cache.seed(ids, x, graph)
    assert sorted(cache.ids().tolist()) == sorted(ids.tolist())
    nbr, sim, vec = cache.gather(ids)
    np.testing.assert_array_equal(nbr, ids[graph.nbr])
    np.testing.assert_array_equal(sim, graph.sim)
    np.testing.assert_array_equal(vec, x)


def test_a_reupserted_peak_with_its_vector_unchanged_stays_its_clusters_peak(store, data, lander):
    """An app that re-sends points with their own payload replaces lander's: a peak then has no denser neighbour.
    It started a cluster of one (7 of 16 peaks, review helper) and left its old cluster with no peak to merge from."""
    x, _ = data
    col = import_points(store, "docs", x[:400], progress=False)
    full_sync(col, lander, progress=False)
    before = check_consistent(col)
    peaks = sorted(pid for pid, lp in before.items() if lp.peak and lp.cluster == pid)
    assert len(peaks) >= 2
    col.upsert(np.asarray(peaks), check_embeddings(x[peaks]), [{"text": "edited"}] * len(peaks))
    rep = incremental_pass(col, lander.scorer, lander.card, cache=NeighbourCache(lander.card.k))
    after = check_consistent(col)
    assert rep.new == len(peaks) and rep.created == 0
    assert {lp.cluster for lp in after.values()} == {lp.cluster for lp in before.values()}
    assert all(after[p].cluster == p for p in peaks)
    assert any(after[p].peak for p in peaks)  # one that is still its cluster's densest point is its peak again


def test_a_reupserted_member_that_names_its_cluster_rejoins_it_without_a_second_peak(store, data, lander):
    """A full pass's stable ids can name a cluster after a member that is not its peak; re-sent with its vector
    unchanged and no denser neighbour, that member rejoins the cluster named after it, but not as a second peak."""
    x, _ = data
    col = import_points(store, "docs", x[:400], progress=False)
    full_sync(col, lander, progress=False)
    before = check_consistent(col)
    sizes = Counter(lp.cluster for lp in before.values())
    cluster = max(sizes, key=sizes.get)
    member = next(pid for pid, lp in before.items() if lp.cluster == cluster and not lp.peak)
    col.set_payload_by_filter(cluster_filter(cluster), {"cluster": member}, key=KEY)  # as a stable-id rename leaves it
    col.upsert(np.asarray([member]), x[[member]], [{"text": "edited"}])  # its vector unchanged
    no_links = lander.card.model_copy(update={"tau": 1.0})  # no denser neighbour: it would start a cluster of its own
    incremental_pass(col, lander.scorer, no_links, cache=NeighbourCache(lander.card.k))
    after = check_consistent(col)
    assert after[member].cluster == member and not after[member].peak


def test_merges_relabel_only_into_ids_the_store_already_holds(store, data, lander, monkeypatch):
    """A cluster a pass starts never gives its id to old points: were they relabelled to it and the pass killed
    before its new points were written, the replayed relabel left them under an id the next pass handed
    elsewhere, with no peak (review helper, session 33)."""
    import qdrant_lander.incremental as incremental

    x, _ = data
    col = import_points(store, "docs", x[:30], progress=False)
    full_sync(col, lander, progress=False)
    cache, targets = NeighbourCache(lander.card.k), []
    relabel = incremental.relabel
    monkeypatch.setattr(incremental, "relabel", lambda c, absorbed, survivor: (
        targets.append((survivor, {lp.cluster for lp in check_consistent(c).values()})), relabel(c, absorbed, survivor)))
    for s in range(30, len(x), 60):  # batches that outgrow the first sync: the old code relabelled 120 -> 189, new
        import_points(store, "docs", x[s:s + 60], start_id=s, progress=False)
        incremental_pass(col, lander.scorer, lander.card, cache=cache)
    assert targets and all(survivor in held for survivor, held in targets)


def test_a_merge_relabels_the_smaller_cluster_and_the_larger_keeps_its_id(store, data, lander):
    """Of two old clusters a pass merges, the one with fewer points (stored, plus the new points that attached to
    it) is relabelled: the larger keeps the id users stored, and a merge rewrites as few payloads as it can."""
    x, _ = data
    col = import_points(store, "docs", x[:30], progress=False)
    full_sync(col, lander, progress=False)
    cache, moves = NeighbourCache(lander.card.k), []
    for s in range(30, len(x), 60):
        before = check_consistent(col)
        cluster_of_group = {lp.path[-1]: lp.cluster for lp in before.values()}  # a path's top names one cluster
        import_points(store, "docs", x[s:s + 60], start_id=s, progress=False)
        rep = incremental_pass(col, lander.scorer, lander.card, cache=cache)
        after = check_consistent(col)
        size = Counter(lp.cluster for lp in before.values())
        stored = dict(size)
        size.update(cluster_of_group[lp.path[-1]] for pid, lp in after.items()  # new points attached to an old point
                    if pid not in before and lp.path[-1] in cluster_of_group)
        merged = {(before[p].cluster, after[p].cluster) for p in before if before[p].cluster != after[p].cluster}
        assert rep.merged == len(merged) and rep.relabelled == sum(stored[a] for a, _ in merged)
        for absorbed, survivor in merged:
            assert survivor in stored and size[absorbed] <= size[survivor], (s, absorbed, survivor, size)
        moves += merged
    assert moves


def _delete(store, col, ids) -> None:
    if isinstance(store, EdgeStore):
        import qdrant_edge as qe
        col.shard.update(qe.UpdateOperation.delete_points([int(i) for i in ids]))
    else:
        col.client.delete(col.name, points_selector=models.PointIdsList(points=[int(i) for i in ids]), wait=True)


def _stale_entries(col, cache) -> list[tuple[int, int]]:
    """(list owner, neighbour) pairs of the cache whose similarity is not today's, or whose neighbour is gone."""
    all_ids, xv = read_vectors(col, progress=False)
    cached = all_ids[cache.has(all_ids)]
    nbr, sim = cache.lists(cached)
    at = np.searchsorted(all_ids, nbr).clip(max=len(all_ids) - 1)
    alive = all_ids[at] == nbr
    true = np.einsum("rd,rkd->rk", xv[np.searchsorted(all_ids, cached)], xv[at])
    bad = ~alive | (np.abs(true - sim) > 1e-4)
    return [(int(q), int(p)) for q, p in zip(np.repeat(cached, nbr.shape[1])[bad.ravel()], nbr[bad])]


def test_deleted_and_reupserted_points(store, data, lander):
    x, _ = data
    col = import_points(store, "docs", x[:350], progress=False)
    full_sync(col, lander, progress=False)
    cache = NeighbourCache(lander.card.k)
    import_points(store, "docs", x[350:380], start_id=350, progress=False)
    incremental_pass(col, lander.scorer, lander.card, cache=cache, hops=2)
    labels = check_consistent(col)
    # delete points the cache lists next to point 355 (ring 1 of the next arrival: its list is ring 2), and re-upsert
    # a cluster's peak with a new vector
    victims = [int(q) for q in cache.lists([355])[0][0, :3] if q < 350]
    peak = next(pid for pid, lp in labels.items() if lp.peak and pid not in victims)
    _delete(store, col, victims)
    arrivals = np.concatenate([x[[355]] * 0.95 + x[[380]] * 0.05, x[381:400]])
    import_points(store, "docs", arrivals, start_id=380, progress=False)
    import_points(store, "docs", x[[peak]] * 0.9 + x[[400]] * 0.1, start_id=peak, progress=False)
    assert _ids_in_use(col, [peak, 10_000]) == {peak}  # its old cluster/supernode id is still in use
    rep = incremental_pass(col, lander.scorer, lander.card, cache=cache, hops=2)  # deleted ids matter from ring 2 on
    assert victims and rep.new == 21 and rep.deleted_seen >= 1
    assert col.count(unclustered_filter()) == 0
    after = check_consistent(col)
    assert not set(victims) & set(after)
    lp = after[peak]
    if lp.path[0] != labels[peak].path[0]:  # a new group of its own: never the id its old cluster still uses
        assert lp.path[0] >= FRESH_ID_START or lp.path[0] not in {v.cluster for v in labels.values()}


def test_label_cache_gives_the_passes_the_store_would(store, data, lander):
    """Two copies of one stream: passes with a daemon's label cache (seeded after the full sync) and
    passes that read every label from the store must write the same labels, through merges, deletes,
    re-upserts and a replayed journal; and the cache must hold what the store holds."""
    x, _ = data
    cols = [import_points(store, name, x[:100], progress=False) for name in ("warm", "cold")]
    for col in cols:
        full_sync(col, lander, progress=False)
    labels = LabelCache()
    labels.load(cols[0])
    caches = [NeighbourCache(lander.card.k), NeighbourCache(lander.card.k)]
    merged, reads_per_pass = 0, {}
    for s in range(100, 400, 50):
        for col in cols:
            import_points(store, col.name, x[s:s + 50], start_id=s, progress=False)
            if s == 250:  # a labelled point deleted, another re-upserted with a new vector (payload replaced)
                col.delete_payload([10], [KEY])  # what a re-upsert that replaces the payload leaves
                _delete(store, col, [11])
            if s == 300:  # a pass that journaled a merge and died before relabelling (one process: the warm cache
                # is the one of the process that died, so it is stale)
                clusters = sorted({lp.cluster for lp in check_consistent(col).values()})
                col.set_meta(INCREMENTAL_META, IncrementalState(pending_merges=[(clusters[0], clusters[-1])]).model_dump())
        retrieve = cols[0].retrieve
        reads = []
        cols[0].retrieve = lambda ids, **kw: reads.extend(ids if kw.get("payload") else []) or retrieve(ids, **kw)
        rep = incremental_pass(cols[0], lander.scorer, lander.card, cache=caches[0], labels=labels)
        del cols[0].retrieve
        incremental_pass(cols[1], lander.scorer, lander.card, cache=caches[1])
        merged += rep.merged
        reads_per_pass[s] = len(reads)
        warm, cold = payloads(cols[0]), payloads(cols[1])
        assert warm == cold, s
        for pid in labels.ids().tolist():  # a deleted point's label stays until a pass meets it: unused
            assert pid not in warm or labels.get(pid) == Label.of(warm[pid][KEY]), (s, pid)
    assert merged
    # every label the passes needed was cached, until the replayed journal emptied the cache
    assert reads_per_pass[150] == reads_per_pass[200] == 0 and reads_per_pass[300] > 0


def test_cached_labels_the_store_lost_are_dropped(store, data, lander):
    x, _ = data
    col = import_points(store, "docs", x[:100], progress=False)
    full_sync(col, lander, progress=False)
    labels = LabelCache()
    labels.load(col)
    _check_cached(col, labels, np.arange(100))
    assert len(labels) == 100  # all still labelled: kept
    col.delete_payload([7], [KEY])
    _check_cached(col, labels, np.arange(50, 100))
    assert len(labels) == 100  # point 7 not among the ids the pass uses
    _check_cached(col, labels, np.arange(50))
    assert 7 not in labels and 8 not in labels and len(labels) == 50  # dropped, read again when needed


def test_journaled_merge_is_replayed(store, data, lander):
    x, _ = data
    col = import_points(store, "docs", x[:300], progress=False)
    full_sync(col, lander, progress=False)
    before = check_consistent(col)
    sizes = sorted({lp.cluster for lp in before.values()}, key=lambda c: col.count(cluster_filter(c)))
    small, large = sizes[0], sizes[-1]
    # a pass that journaled a merge and died before relabelling
    col.set_meta(INCREMENTAL_META, IncrementalState(pending_merges=[(small, large)]).model_dump())
    assert replay_journal(col) == 1
    after = check_consistent(col)
    for pid, lp in before.items():
        want = large if lp.cluster == small else lp.cluster
        assert after[pid].cluster == want and after[pid].path == lp.path
        assert after[pid].peak == (lp.peak and lp.cluster != small)
    assert IncrementalState(**col.get_meta(INCREMENTAL_META)).pending_merges == []
    assert replay_journal(col) == 0


@pytest.mark.parametrize("chosen_per_dataset", [{"tau_bias": 0.0}, {"tau_by_spread": [(0.1, 0.2), (0.3, 0.8)]}])
def test_passes_reuse_the_full_syncs_tau_only_when_it_was_chosen_for_the_collection(store, data, lander,
                                                                                     chosen_per_dataset):
    x, _ = data
    col = import_points(store, "docs", x[:300], progress=False)
    full_sync(col, lander, progress=False)
    assert col.get_meta(SYNC_META)["tau"] == lander.card.tau  # a card without tau_bias: its own tau
    col.set_meta(SYNC_META, {**col.get_meta(SYNC_META), "tau": 1.0})  # as if chosen for this collection
    import_points(store, "docs", x[300:330], start_id=300, progress=False)
    # A card without tau_bias decodes with its own tau (e.g. after switching --domain): links above it attach.
    assert incremental_pass(col, lander.scorer, lander.card, max_new=10).attached > 0
    per_dataset = lander.card.model_copy(update=chosen_per_dataset)
    col.set_meta(SYNC_META, {**col.get_meta(SYNC_META), "model": "another-model"})  # synced by another model:
    assert incremental_pass(col, lander.scorer, per_dataset, max_new=10).attached > 0  # its tau is not ours
    col.set_meta(SYNC_META, {**col.get_meta(SYNC_META), "model": lander.card.name})
    rep = incremental_pass(col, lander.scorer, per_dataset)  # the tau chosen for the collection: 1.0
    assert rep.new == 10 and rep.attached == 0 and rep.created == 10  # no link is above 1.0


def test_clusters_a_pass_starts_are_absorbed_as_the_full_sync_absorbed(store, tmp_path, data, lander):
    x, y = data
    (tmp_path / "m").mkdir()  # the shipped weights with a card that absorbs fragments, as `calibrate` writes one
    shutil.copyfile(lander.scorer.path, tmp_path / "m" / ONNX_FILE)
    card = lander.card.model_copy(update={"absorb_share": 0.3})
    (tmp_path / "m" / CARD_FILE).write_text(card.model_dump_json())
    absorbing = Lander(tmp_path / "m", device="cpu", threads=1)
    col = import_points(store, "docs", x[:300], progress=False)
    full_sync(col, absorbing, progress=False)
    assert col.get_meta(SYNC_META)["absorb_size"] >= 1  # the share, resolved in points for the passes
    ids, old = read_labels(col)
    import_points(store, "docs", x[300:320], start_id=300, progress=False)
    # tau 1.0: no link attaches, so every new point starts a cluster of one, which joins a larger one
    rep = incremental_pass(col, absorbing.scorer, card.model_copy(update={"tau": 1.0}))
    assert (rep.new, rep.attached, rep.created, rep.absorbed) == (20, 0, 0, 20)
    labels = {pid: lp for pid, lp in check_consistent(col).items() if pid >= 300}
    assert all(lp.cluster in set(old.tolist()) and not lp.peak for lp in labels.values())
    # each joins the cluster that holds most of its intent (links favour it): nearly all of them
    main = {c: int(np.bincount(np.unique(old, return_inverse=True)[1][y[ids] == c]).argmax()) for c in np.unique(y)}
    main = {c: int(np.unique(old)[i]) for c, i in main.items()}
    assert sum(labels[pid].cluster == main[y[pid]] for pid in labels) >= 18
    # a card that does not absorb starts them as clusters, whatever the sync recorded
    import_points(store, "docs", x[320:330], start_id=320, progress=False)
    plain = incremental_pass(col, absorbing.scorer, card.model_copy(update={"tau": 1.0, "absorb_share": 0.0}))
    assert (plain.created, plain.absorbed) == (10, 0)


def test_a_pass_never_attaches_to_points_still_waiting_for_a_label(store, data, lander):
    """Points beyond ``max_new`` (or arrived during the pass) sit unlabelled in the new points' lists: a new point
    must not take a label through one of them (it took whatever label the cache's first row held)."""
    x, y = data
    col = import_points(store, "docs", x[:100], progress=False)
    full_sync(col, lander, progress=False)
    _, old = read_labels(col)
    intent = {c: Counter(y[:100][old == c].tolist()).most_common(1)[0][0] for c in set(old.tolist())}
    import_points(store, "docs", x[100:], start_id=100, progress=False)  # 350 arrivals, 30 labelled by this pass
    rep = incremental_pass(col, lander.scorer, lander.card, max_new=30)
    assert rep.new == 30 and col.count(unclustered_filter()) == len(x) - 130
    ids, lab = read_labels(col)
    joined = [(int(y[pid]), intent[c]) for pid, c in zip(ids.tolist(), lab.tolist()) if pid >= 100 and c in intent]
    assert len(joined) >= 20 and sum(a == b for a, b in joined) >= 0.9 * len(joined), joined


def test_a_pass_absorbs_only_the_small_clusters_it_started_into_larger_ones():
    """Old clusters were judged by the full pass: only clusters a pass starts (no old member) of at most the resolved
    size move, each into the larger cluster its new points' links favour, never into one of equal size."""
    groups = _Groups()
    # new rows 0-2: row 0 attached to old cluster 100, rows 1 and 2 start clusters (-2, -3); old rows 3 (cluster 100)
    # and 4 (cluster 200); stored sizes 100: 2 points, 200: 50
    group = np.array([100, -2, -3, 100, 200])
    for g in group[:3].tolist():
        groups.find(g)
    nbr = np.array([[3, 4], [4, 0], [1, 3]])
    link = np.array([[0.9, 0.8], [0.9, 0.1], [0.9, 0.2]], dtype=np.float32)  # row 2's best link: row 1, same size
    moved, _ = _absorb_new(groups, group, np.ones(5, dtype=bool), nbr, link, Counter(group[:3].tolist()), 1,
                           lambda clusters: {c: {100: 2, 200: 50}[c] for c in clusters})
    assert moved == 2
    assert groups.find(-2) == groups.find(200) and groups.find(-3) == groups.find(100)
    assert groups.find(100) != groups.find(200)  # 100 took one new point, but it is old: it stays


def test_needs_a_complete_full_sync(store, data, lander):
    x, _ = data
    col = import_points(store, "docs", x[:50], progress=False)
    with pytest.raises(NeedsFullSync, match="never been synced"):
        incremental_pass(col, lander.scorer, lander.card)
    full_sync(col, lander, progress=False)
    meta = col.get_meta(SYNC_META)
    col.set_meta(SYNC_META, {**meta, "state": "writing"})
    with pytest.raises(NeedsFullSync, match="did not finish"):
        incremental_pass(col, lander.scorer, lander.card)


def test_auto_domain_is_resolved_by_the_full_sync_and_kept_by_later_passes(tmp_path, data):
    """``auto`` picks the preset at the full sync, from every vector; the passes after it, and daemons
    started later, decode the way it did instead of guessing again from a handful of new points."""
    x, _ = data
    auto = Lander(device="cpu", threads=1)
    presets = load_presets()
    with EdgeStore(tmp_path / "d") as store:
        col = import_points(store, "docs", x[:300], progress=False)
        daemon = Daemon(col, auto, DaemonOptions(lease_ttl=5, growth=0))
        assert daemon.lander.domain == "auto"  # nothing synced yet: the first pass is full and decides
        assert daemon.once().full
        assert daemon.lander.domain == col.get_meta(SYNC_META)["domain"] == "text"
        assert daemon.run_pass().log_line().endswith(" domain=text")  # the daemon's line names it
        assert daemon.cache.k == daemon.lander.card.k == presets["text"].k
        col.set_meta(SYNC_META, {**col.get_meta(SYNC_META), "domain": "faces"})  # as if it were a face collection
        later = Daemon(col, auto, DaemonOptions(lease_ttl=5, growth=0))
        assert later.lander.domain == "faces" and later.lander.card.tau == presets["faces"].tau
        import_points(store, "docs", x[300:330], start_id=300, progress=False)
        rep = later.once()
        assert not rep.full and rep.new == 30
        assert later.once(full=True).full and later.lander.domain == "text"  # a full pass decides again
        col.set_meta(SYNC_META, {**col.get_meta(SYNC_META), "domain": None})  # synced before auto existed
        assert Daemon(col, auto).lander.domain == "any"  # the decoding such a sync used
        col.set_meta(SYNC_META, {**col.get_meta(SYNC_META), "domain": "text"})
        (tmp_path / "m").mkdir()  # a model of one's own (as `calibrate` writes one), after the default synced
        shutil.copyfile(auto.scorer.path, tmp_path / "m" / ONNX_FILE)
        (tmp_path / "m" / CARD_FILE).write_text(auto.card.model_copy(update={"tau": 0.7}).model_dump_json())
        own = Daemon(col, Lander(tmp_path / "m", device="cpu", threads=1), DaemonOptions(lease_ttl=5, growth=0))
        assert own.lander.domain == "any" and own.lander.card.tau == 0.7  # its own card, not the default's preset
        import_points(store, "docs", x[330:340], start_id=330, progress=False)
        assert own.once().new == 10


def test_watch_waits_for_points_and_stops_on_vectors_it_cannot_cluster(tmp_path, data, caplog):
    """A daemon started before the data waits (an empty collection is no failure, however many passes find
    it so); stored vectors that no pass can cluster stop it at once with the input exit code (2), which
    the systemd unit does not restart, instead of failing pass after pass until it gives up (4)."""
    x, _ = data
    caplog.set_level("INFO", logger="qdrant_lander")
    lander = Lander(device="cpu", threads=1)
    opts = DaemonOptions(interval=0.05, lease_ttl=30, max_failures=2)
    with EdgeStore(tmp_path / "d") as store:
        col = store.create("docs", x.shape[1])
        daemon, stop, codes = Daemon(col, lander, opts), threading.Event(), []
        runner = threading.Thread(target=lambda: codes.append(daemon.watch(stop)))
        runner.start()
        try:
            deadline = time.monotonic() + 30
            while "waiting for points: collection 'docs' is empty" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # ~10 more intervals on the empty collection, max_failures 2
            assert runner.is_alive() and daemon.passes == 0
            import_points(store, "docs", x[:100], progress=False)
            while daemon.passes == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            runner.join(30)
        assert codes == [EXIT_OK] and col.count(unclustered_filter()) == 0
        assert caplog.text.count("waiting for points") == 1 and "pass failed" not in caplog.text
        bad = store.create("bad", 4)
        v = np.ones((30, 4), dtype=np.float32) + np.arange(30)[:, None] * np.eye(4)[0]
        v[7] = np.nan
        bad.upsert(np.arange(30), v)  # written past import's checks, as another tool could
        assert Daemon(bad, lander, opts).watch(threading.Event()) == EXIT_INPUT


def test_stable_ids_greedy_by_overlap():
    old = np.array([7, 7, 7, 7, 3, 3, 3, -1, 9, 9])
    new = np.array([0, 0, 0, 4, 4, 4, 4, 4, 8, 8])
    # 0 overlaps 7 by 3; 4 overlaps 3 by 3 and 7 by 1; 8 overlaps 9 by 2
    np.testing.assert_array_equal(stable_ids(old, new), [7, 7, 7, 3, 3, 3, 3, 3, 9, 9])
    # a split: the larger part keeps the id, the other gets a fresh one that no old cluster had
    got = stable_ids(np.array([5, 5, 5, 5, 5]), np.array([1, 1, 1, 2, 2]))
    assert got[:3].tolist() == [5, 5, 5] and got[3] == got[4] and got[3] not in (5, 1)
    # an unmapped cluster keeps its own id when no old cluster used it
    assert stable_ids(np.array([-1, -1]), np.array([4, 4])).tolist() == [4, 4]


def test_stable_ids_never_hand_one_id_to_two_groups_nor_revive_a_vanished_one():
    # cluster id 0 (point 0's cluster) is an id like any other: inherited
    assert stable_ids(np.array([0, 0, 0, -1]), np.array([2, 2, 2, 3])).tolist() == [0, 0, 0, 3]
    # old 9 vanished (its point joined 3's heir): a new group whose peak is 9 must not take a name users stored for 9
    got = stable_ids(np.array([3, 3, 3, 9, -1]), np.array([0, 0, 0, 0, 9]))
    assert got[:4].tolist() == [3] * 4 and got[4] not in (3, 9)
    # two unmapped groups whose own ids are taken each get a fresh id of their own
    got = stable_ids(np.array([1, 1, 2, 2, -1, -1]), np.array([7, 7, 8, 8, 1, 2]))
    assert got[:4].tolist() == [1, 1, 2, 2] and got[4] != got[5] and not {got[4], got[5]} & {1, 2, 7, 8}
    # equal overlaps: the smaller old id, then the smaller new cluster, wins
    assert stable_ids(np.array([4, 4, 6, 6]), np.array([1, 1, 1, 1])).tolist() == [4] * 4
    assert stable_ids(np.array([5, 5, 5, 5]), np.array([1, 1, 2, 2])).tolist() == [5, 5, 2, 2]


def test_full_pass_keeps_ids(tmp_path, data, lander):
    x, _ = data
    with EdgeStore(tmp_path / "d") as store:
        col = import_points(store, "docs", x[:400], progress=False)
        daemon = Daemon(col, lander, DaemonOptions(lease_ttl=5, growth=0))
        assert daemon.once().full  # never synced: a full pass
        assert len(daemon.cache) == 400  # seeded with the full sync's kNN lists
        assert len(daemon.labels) == 400  # and with its labels: the next passes read none from the store
        import_points(store, "docs", x[400:], start_id=400, progress=False)
        assert not daemon.once().full
        ids1, lab1 = read_labels(col)
        rep = daemon.once(full=True)
        assert rep.full
        ids2, lab2 = read_labels(col)
        assert np.array_equal(ids1, ids2)
        # ids survive the re-clustering: each new cluster takes the old id it overlaps most (greedy), i.e.
        # exactly what stable_ids gives for this collection's own fresh clustering (exact kNN: deterministic)
        ids, vectors = read_vectors(col, progress=False)
        fresh = lander.predict(vectors).labels
        np.testing.assert_array_equal(lab2, stable_ids(lab1, ids[fresh]))
        old_ids, old_sizes = np.unique(lab1, return_counts=True)
        biggest = old_ids[np.argmax(old_sizes)]
        assert (lab2[lab1 == biggest] == biggest).any()  # the largest old cluster's id lives on in its points
        assert check_consistent(col)
        all_paths_end_in_cluster = all(lp.path[-1] == lp.cluster for lp in check_consistent(col).values())
        assert all_paths_end_in_cluster  # a full pass rewrites whole paths


def test_growth_triggers_a_full_pass(tmp_path, data, lander):
    x, _ = data
    with EdgeStore(tmp_path / "d") as store:
        col = import_points(store, "docs", x[:200], progress=False)
        daemon = Daemon(col, lander, DaemonOptions(lease_ttl=5, growth=0.25))
        assert daemon.once().full
        import_points(store, "docs", x[200:240], start_id=200, progress=False)
        assert not daemon.once().full  # 240 < 1.25 * 200
        import_points(store, "docs", x[240:260], start_id=240, progress=False)
        rep = daemon.once()
        assert rep.full and rep.new == 20 and rep.waiting == 0  # 260 >= 250
        col.delete_payload(list(range(30)), [KEY])  # cleared by another client: 30 < 0.25 * 230
        assert not daemon.once().full
        col.delete_payload(list(range(60)), [KEY])  # 60 >= 0.25 * 200: no growth, yet as new as if it had grown
        rep = daemon.once()
        assert rep.full and rep.new == 60


def test_status_counts_no_cluster_that_a_merge_emptied(tmp_path):
    """Edge's payload index keeps a relabelled value with count 0 until its segment is rebuilt."""
    from qdrant_lander.sync import status

    with EdgeStore(tmp_path / "d") as store:
        col = store.create("c", 4)
        col.upsert(np.arange(6), np.random.RandomState(0).rand(6, 4).astype(np.float32),
                   [{KEY: {"cluster": 1 if i < 3 else 2}} for i in range(6)])
        col.create_index("lander.cluster", models.PayloadSchemaType.INTEGER)
        col.set_payload_by_filter(cluster_filter(1), {"cluster": 2}, key=KEY)
        assert col.facet("lander.cluster", limit=10) == [(2, 6)]  # was [(2, 6), (1, 0)]
        assert status(col).clusters == 1


def test_a_full_pass_counts_as_new_only_points_it_labelled_first(tmp_path, data, lander):
    """Points another client deletes while a full pass runs must not fail its write, nor make ``new`` negative
    (it was: labelled-before + synced - read-before, and the pass reads labels before it reads vectors)."""
    import qdrant_edge as qe

    class DeletingCollection:
        """The collection as another client sees it: ``victims`` go once the pass starts reading vectors."""

        def __init__(self, col):
            self.col, self.victims = col, []

        def __getattr__(self, name):
            return getattr(self.col, name)

        def scroll(self, **kw):
            if kw.get("vectors", True) and self.victims:
                self.col.shard.update(qe.UpdateOperation.delete_points(self.victims))
                self.victims = []
            return self.col.scroll(**kw)

    x, _ = data
    with EdgeStore(tmp_path / "d") as store:
        col = DeletingCollection(import_points(store, "docs", x[:300], progress=False))
        daemon = Daemon(col, lander, DaemonOptions(lease_ttl=5, growth=0))
        assert daemon.once().new == 300  # the first full pass: every point is new
        import_points(store, "docs", x[300:310], start_id=300, progress=False)
        col.victims = list(range(40))  # 40 labelled points go
        rep = daemon.once(full=True)
        assert rep.full and rep.new == 10 and col.count() == 270 and col.count(unclustered_filter()) == 0


def test_pass_reports_the_points_left_waiting(tmp_path, data, lander):
    x, _ = data
    with EdgeStore(tmp_path / "d") as store:
        col = import_points(store, "docs", x[:200], progress=False)
        daemon = Daemon(col, lander, DaemonOptions(lease_ttl=5, growth=0, max_new=15))
        assert daemon.once().waiting == 0
        import_points(store, "docs", x[200:240], start_id=200, progress=False)
        reports = [daemon.once() for _ in range(3)]
        assert [(r.new, r.waiting) for r in reports] == [(15, 25), (15, 10), (10, 0)]
        assert " waiting=25 " in reports[0].log_line()


def test_cli_once_and_full(tmp_path, data):
    from click.testing import CliRunner

    from qdrant_lander.cli import main

    x, _ = data
    np.save(tmp_path / "a.npy", x[:300])
    np.save(tmp_path / "b.npy", x[300:360])
    store = ["--path", str(tmp_path / "d")] + (["--model", os.environ["LANDER_TEST_MODEL"]]
                                               if os.environ.get("LANDER_TEST_MODEL") else [])
    run = CliRunner().invoke
    assert run(main, ["import", "docs", str(tmp_path / "a.npy"), "--path", str(tmp_path / "d")]).exit_code == 0
    first = run(main, ["sync", "docs", "--once", *store])
    assert first.exit_code == 0 and first.output.startswith("full pass: new=300")  # never synced: a full pass
    assert " clusters=" in first.output and "generation=1" in first.output
    assert run(main, ["import", "docs", str(tmp_path / "b.npy"), "--start-id", "300",
                      "--path", str(tmp_path / "d")]).exit_code == 0
    inc = run(main, ["sync", "docs", "--once", "--json", *store])
    assert inc.exit_code == 0, inc.output
    rep = json.loads(inc.stdout)
    assert rep["new"] == 60 and not rep["full"] and rep["attached"] + rep["created"] == 60
    full = run(main, ["sync", "docs", "--full", "--json", *store])
    rep = json.loads(full.stdout)
    # a full pass also says what the full sync found, as a plain `sync --json` does
    assert full.exit_code == 0 and rep["full"] and rep["sync"]["points"] == 360 and rep["sync"]["generation"] == 2
    assert rep["sync"]["clusters"] >= 1 and json.loads(inc.stdout)["sync"] is None
    missing = run(main, ["sync", "nope", "--once", *store])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_a_collection_with_nothing_labelled_gets_a_full_pass_whatever_the_growth_rule(store, data, lander):
    """Every lander key removed (or the collection made again): with growth 0 a pass would attach the points to
    nothing and decode one level; it is a full pass instead."""
    x, _ = data
    col = import_points(store, "docs", x[:300], progress=False)
    daemon = Daemon(col, lander, DaemonOptions(lease_ttl=30, growth=0))
    daemon.once(full=True)
    col.delete_payload(list(range(300)), [KEY])
    rep = daemon.once()
    assert rep.full and rep.new == 300 and col.count(unclustered_filter()) == 0


def test_a_dropped_cluster_index_is_made_again_by_the_daemon(tmp_path, data, lander):
    """Edge facets only an indexed field: without the index status and every pass failed (a traceback; watch mode
    exited 4 and was restarted forever). The read says what to run; the daemon makes the index again."""
    import qdrant_edge as qe

    from qdrant_lander.errors import StoredDataError
    from qdrant_lander.sync import status

    x, _ = data
    with EdgeStore(tmp_path / "d") as store:
        col = import_points(store, "docs", x[:300], progress=False)
        full_sync(col, lander, progress=False)
        col.shard.update(qe.UpdateOperation.delete_field_index(CLUSTER_FIELD))
        with pytest.raises(StoredDataError, match="--once"):
            status(col)
        import_points(store, "docs", x[300:350], start_id=300, progress=False)
        rep = Daemon(col, lander, DaemonOptions(lease_ttl=30, growth=0)).once()
        assert rep.new == 50 and status(col).clustered == 350


def test_fresh_ids_skip_ids_the_payloads_already_use(store):
    """The fresh-id counter lives in a meta record that can be lost (or be older than the payloads): ids handed
    out must still be unused, else two unrelated clusters share one."""
    x = np.eye(4, 8, dtype=np.float32)
    col = store.create("docs", 8)
    col.upsert(np.arange(4), x)
    col.set_payloads([([0, 1], {KEY: {"cluster": FRESH_ID_START, "path": [FRESH_ID_START]}}),
                      ([2], {KEY: {"cluster": 7, "path": [FRESH_ID_START + 2]}})])
    col.create_index(CLUSTER_FIELD, models.PayloadSchemaType.INTEGER)
    assert _fresh_ids(col, FRESH_ID_START, 2) == ([FRESH_ID_START + 1, FRESH_ID_START + 3], FRESH_ID_START + 4)
    assert _fresh_ids(col, FRESH_ID_START + 4, 0) == ([], FRESH_ID_START + 4)


def test_a_daemon_with_another_model_than_the_last_full_sync_says_so(store, data, lander, caplog):
    """A --model left off the daemon's command line decoded new points with the default model, silently."""
    x, _ = data
    col = import_points(store, "docs", x[:300], progress=False)
    full_sync(col, lander, progress=False)
    caplog.clear()  # the sync's own INFO lines, where an earlier test left the loggers at INFO
    with caplog.at_level("WARNING", logger="qdrant_lander"):
        Daemon(col, lander, DaemonOptions(growth=0))
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        col.set_meta(SYNC_META, {**col.get_meta(SYNC_META), "model": "my-model+cal-k20-tau0.9"})
        Daemon(col, lander, DaemonOptions(growth=0))
    assert "last fully synced with model my-model+cal-k20-tau0.9" in caplog.text


def test_growth_is_a_setting(tmp_path, data):
    """The growth rule comes from the environment or a TOML file like every daemon setting, not only a flag."""
    from click.testing import CliRunner

    from qdrant_lander.cli import main

    x, _ = data
    np.save(tmp_path / "a.npy", x[:300])
    np.save(tmp_path / "b.npy", x[300:360])
    path = ["--path", str(tmp_path / "d")]
    run = CliRunner().invoke
    assert run(main, ["import", "docs", str(tmp_path / "a.npy"), *path]).exit_code == 0
    assert run(main, ["sync", "docs", *path]).exit_code == 0
    assert run(main, ["import", "docs", str(tmp_path / "b.npy"), *path]).exit_code == 0
    grown = run(main, ["sync", "docs", "--once", "--json", *path], env={"QLANDER_GROWTH": "0.1"})  # 20% > 10%
    assert grown.exit_code == 0 and json.loads(grown.stdout)["full"], grown.output


@pytest.mark.parametrize("seed", range(5))
def test_scoring_only_possible_parents_gives_the_decoders_parents(seed):
    """A pass scores its rows' neighbours only until it meets a denser one; the parents must be those
    of decoding with every density known, and far fewer rows may be scored than all."""
    rng = np.random.RandomState(seed)
    n, k, tau = 400, 10, 0.5
    nbr = np.array([rng.choice(np.delete(np.arange(n), i), k, replace=False) for i in range(n)])
    link = rng.rand(n, k).astype(np.float32)
    link[:, :3] = np.round(link[:, :3], 1)  # ties in link, broken by position as decode_level does
    truth = rng.rand(n).astype(np.float32)
    rows = np.sort(rng.choice(n, 60, replace=False))
    density = np.full(n, np.nan, np.float32)
    density[rows] = truth[rows]
    scored = []

    def score(r):
        assert np.isnan(density[r]).all()  # never twice
        density[r] = truth[r]
        scored.extend(r.tolist())

    _score_parents(score, nbr[rows], link[rows], density, rows, tau)
    masked = np.zeros_like(link)
    masked[rows] = link[rows]
    np.testing.assert_array_equal(decode_level(nbr, masked, density, tau)[rows],
                                  decode_level(nbr, masked, truth, tau)[rows])
    assert len(scored) < len(np.setdiff1d(nbr[rows][link[rows] > tau], rows))


def test_a_neighbour_as_dense_as_the_row_is_no_parent_and_the_search_goes_on():
    nbr, link = np.array([[1, 2], [0, 2], [0, 1]]), np.array([[0.9, 0.8], [0.1, 0.1], [0.1, 0.1]], dtype=np.float32)
    truth = np.array([0.5, 0.5, 0.7], dtype=np.float32)  # row 0's best link is to an equally dense neighbour
    density = np.array([0.5, np.nan, np.nan], dtype=np.float32)
    _score_parents(lambda r: density.__setitem__(r, truth[r]), nbr[:1], link[:1], density, np.array([0]), 0.5)
    assert decode_level(nbr, link, density, 0.5)[0] == 2


def test_incremental_passes_keep_the_arrivals_indexed_on_the_embedded_store(tmp_path, lander):
    """Edge has no background optimizer: unless a pass indexes the arrivals once they pass Edge's indexing
    threshold (~10 MB of vectors: 2,500 of 1,024 dimensions), every later query scans all of them."""
    x = np.random.default_rng(0).standard_normal((5200, 1024)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with EdgeStore(tmp_path / "d") as store:
        col = import_points(store, "docs", x[:2600], progress=False)
        daemon = Daemon(col, lander, DaemonOptions(lease_ttl=5, growth=0))
        assert daemon.once().full
        import_points(store, "docs", x[2600:3000], start_id=2600, progress=False)
        assert daemon.once().new == 400
        info = col.shard.info()
        assert info.indexed_vectors_count < info.points_count  # below the threshold: left to the scan
        import_points(store, "docs", x[3000:], start_id=3000, progress=False)
        rep = daemon.once()
        info = col.shard.info()
        assert not rep.full and rep.new == 2200 and info.indexed_vectors_count == info.points_count == 5200


def test_arrivals_deleted_while_a_pass_reads_them_are_skipped(store, data, lander, monkeypatch):
    """The user deletes fresh points right after the pass read them and their neighbours: the pass labels
    the others (it used to re-find the deleted ones on every retry and fail)."""
    import qdrant_lander.incremental as incremental

    x, _ = data
    col = import_points(store, "docs", x[:200], progress=False)
    full_sync(col, lander, progress=False)
    for arrivals, victims in ((x[200:203], [201]), (x[203:205], [203, 204])):
        start = 200 if len(arrivals) == 3 else 203
        import_points(store, "docs", arrivals, start_id=start, progress=False)
        knn_without = incremental._knn_without

        def read_then_delete(*args, **kwargs):
            out = knn_without(*args, **kwargs)
            _delete(store, col, victims)
            return out

        monkeypatch.setattr(incremental, "_knn_without", read_then_delete)
        rep = incremental_pass(col, lander.scorer, lander.card, cache=NeighbourCache(lander.card.k))
        monkeypatch.undo()
        assert rep.new == len(arrivals) - len(victims) and rep.deleted_seen >= len(victims)
        assert col.count(unclustered_filter()) == 0
    check_consistent(col)


def test_a_re_upserted_vector_leaves_no_stale_similarity_in_the_daemons_lists(store, data, lander):
    """Points moved to another intent's vectors: the warm daemon's cached lists must hold today's similarities
    (they feed the features and the peak re-checks that decide merges)."""
    x, _ = data
    col = import_points(store, "docs", x[:300], progress=False)
    daemon = Daemon(col, lander, DaemonOptions(lease_ttl=30, growth=0))
    daemon.once()
    ids, lab = read_labels(col)
    big = np.unique(lab, return_counts=True)
    first, second = big[0][np.argsort(-big[1])[:2]]
    movers, targets = ids[lab == first][:30], ids[lab == second][:30]
    col.upsert(movers, x[targets] + 0.01)  # payload replaced: clustered again as new, at another place
    daemon.once()
    all_ids, xv = read_vectors(col, progress=False)
    cached = all_ids[daemon.cache.has(all_ids)]
    nbr, sim = daemon.cache.lists(cached)
    true = np.einsum("rd,rkd->rk", xv[np.searchsorted(all_ids, cached)], xv[np.searchsorted(all_ids, nbr)])
    assert len(cached) > 100 and np.abs(true - sim).max() < 1e-4


def test_a_point_moved_after_its_own_list_was_dropped_leaves_no_stale_similarity(store, data, lander):
    """P's list goes when its nearest neighbour Q moves; when P moves next, the lists naming P must go too (the
    cache still knows P's old vector although it no longer holds P's list)."""
    x, _ = data
    col = import_points(store, "docs", x[:300], progress=False)
    daemon = Daemon(col, lander, DaemonOptions(lease_ttl=30, growth=0))
    daemon.run_pass(full=True)
    p = 257
    q = int(daemon.cache.lists([p])[0][0, 0])
    col.upsert(np.asarray([q]), x[[400]])
    daemon.run_pass()
    assert not daemon.cache.has(np.asarray([p]))[0]  # P's list named Q: dropped
    col.upsert(np.asarray([p]), x[[401]])
    daemon.run_pass()
    assert _stale_entries(col, daemon.cache) == []


def test_deleted_points_named_by_the_outermost_rings_lists_are_dropped(store, data, lander):
    """Points deleted just outside the field (named only by the outermost ring's lists, whose similarities feed
    that ring's features) are noticed, and the lists naming them fetched again."""
    x, _ = data
    col = import_points(store, "docs", x[:300], progress=False)
    daemon = Daemon(col, lander, DaemonOptions(lease_ttl=30, growth=0))
    daemon.run_pass(full=True)
    new = np.arange(300, 320)
    ring1 = np.unique(np.argsort(-(x[new] @ x[:300].T), axis=1)[:, :daemon.cache.k])
    ring2 = np.setdiff1d(np.unique(daemon.cache.lists(ring1)[0]), ring1)
    victims = np.random.default_rng(0).choice(ring2, 15, replace=False)
    _delete(store, col, victims)
    col.upsert(new, x[new])
    rep = daemon.run_pass()
    assert rep.new == 20 and rep.deleted_seen >= 1
    assert not np.isin(daemon.cache.lists(ring1)[0], victims).any()


def test_a_pass_that_fails_while_writing_leaves_no_stale_label_in_the_daemons_cache(store, data, lander,
                                                                                   second_write_fails):
    """A re-upserted point's new label is written, then a later payload batch fails: the daemon's next pass must
    not trust the old label it cached (here an exact copy of the point's new vector would take the old cluster)."""
    x, y = data
    col = import_points(store, "docs", x[:300], progress=False)
    daemon = Daemon(col, lander, DaemonOptions(lease_ttl=30, growth=0, batch_size=4))
    daemon.run_pass(full=True)  # caches every label
    p = 5
    far = next(i for i in range(300, len(x)) if y[i] != y[p])
    col.upsert(np.asarray([p]), x[[far]], [{"text": "edited"}])  # re-embedded: payload replaced
    col.upsert(np.arange(300, 308), x[300:308])
    with second_write_fails(col), pytest.raises(ConnectionError):
        daemon.run_pass()
    col.upsert(np.asarray([2000]), x[[far]])
    daemon.run_pass()
    stored = payloads(col)
    assert stored[2000][KEY]["cluster"] == stored[p][KEY]["cluster"]
    assert all(daemon.labels.get(pid).cluster == v[KEY]["cluster"] for pid, v in stored.items() if pid in daemon.labels)


def test_a_journal_of_an_earlier_generation_is_dropped_not_replayed(store, data, lander):
    """A pass died with a merge journaled; then a plain full sync renamed every cluster. Replaying the old journal
    would merge two clusters of the new generation that share the old ids."""
    x, _ = data
    col = import_points(store, "docs", x[:250], progress=False)
    full_sync(col, lander, progress=False)
    ids, lab = read_labels(col)
    u, c = np.unique(lab, return_counts=True)
    small, large = int(u[np.argmin(c)]), int(u[np.argmax(c)])
    gen = col.get_meta(SYNC_META)["generation"]
    col.set_meta(INCREMENTAL_META, IncrementalState(pending_merges=[(small, large)], generation=gen).model_dump())
    full_sync(col, lander, progress=False)  # the same clusters, named by their peaks again, in generation gen + 1
    _, before = read_labels(col)
    import_points(store, "docs", x[250:252], start_id=250, progress=False)
    rep = incremental_pass(col, lander.scorer, lander.card)
    _, after = read_labels(col)
    assert {small, large} <= set(before[:250].tolist()) and rep.merged == 0
    np.testing.assert_array_equal(after[:250], before[:250])
    assert IncrementalState(**col.get_meta(INCREMENTAL_META)).pending_merges == []


def test_the_fresh_id_counter_passes_every_id_a_full_pass_hands_out_before_it_writes(store, data, lander, monkeypatch):
    """A full pass gives a fresh id to a new group whose own id an old cluster holds; the counter must be past
    it before the payloads are written, or a crash before the pass ends lets the next pass reuse it."""
    import qdrant_lander.daemon as daemon
    from qdrant_lander.incremental import load_state, relabel

    x, _ = data
    col = import_points(store, "docs", x[:200], progress=False)
    full_sync(col, lander, progress=False)
    ids, lab = read_labels(col)
    a, b = np.unique(lab)[:2]
    relabel(col, int(a), FRESH_ID_START)  # a cluster named by an earlier pass's fresh id
    col.set_meta(INCREMENTAL_META, IncrementalState(next_fresh_id=FRESH_ID_START + 1).model_dump())
    new = lab.copy()
    # The smaller half of a's members becomes a group named b; b's own points (renamed) inherit b, the other half
    # of a inherits the fresh id: the group named b inherits nothing and its own id is taken, so it gets a fresh one.
    new[np.flatnonzero(lab == a)[1::2]] = b
    new[lab == b] = b + 10**6
    handed_out = []

    def crash_before_writing(col, lander, *, rename, **kwargs):
        handed_out.extend(rename(ids, new).tolist())
        raise RuntimeError("killed before the first payload write")

    monkeypatch.setattr(daemon, "full_sync", crash_before_writing)
    with pytest.raises(RuntimeError, match="killed"):
        daemon.stable_full_sync(col, lander)
    assert max(handed_out) >= FRESH_ID_START + 1
    assert load_state(col).next_fresh_id > max(handed_out)


def test_a_full_pass_finishes_while_points_keep_arriving(store, data, lander):
    """A feeder upserts during the full pass's scroll and kNN stage (lists then name points the scroll did not
    read): the pass clusters what it read, and the next incremental pass labels the arrivals. It used to fail on
    every try, so a daemon with a feeder never got past a due full pass."""
    x, y = data
    col = import_points(store, "docs", x[:200], progress=False)
    daemon = Daemon(col, lander, DaemonOptions(lease_ttl=30, growth=0))
    daemon.once()
    arrivals = iter(range(200, 300, 4))
    scroll, knn = col.scroll, col.knn

    def feed():
        if (s := next(arrivals, None)) is not None:
            import_points(store, "docs", x[s:s + 4] * 0.99 + x[s + 100:s + 104] * 0.01, start_id=s, progress=False)

    def scroll_feeding(**kw):
        feed()  # after the count the sync sized its arrays by: the scroll reads more points than that
        yield from scroll(**kw)

    col.scroll = scroll_feeding
    col.knn = lambda *a, **kw: feed() or knn(*a, **kw)
    try:
        rep = daemon.once(full=True)
    finally:
        del col.scroll, col.knn
    assert rep.full and rep.field >= 200
    assert daemon.once().new == col.count() - rep.field  # the arrivals the full pass did not read
    assert col.count(unclustered_filter()) == 0
    check_consistent(col)


def test_a_malformed_lander_payload_stops_the_pass_with_a_clear_error(store, data, lander):
    """A user's own ``lander`` key (or a damaged one) is bad stored data: exit 2 in watch mode, not 5 retries."""
    from qdrant_lander.errors import StoredDataError

    x, _ = data
    col = import_points(store, "docs", x[:150], progress=False)
    full_sync(col, lander, progress=False)
    col.set_payloads([(list(range(150)), {KEY: {"cluster": "x"}})])
    import_points(store, "docs", x[150:160], start_id=150, progress=False)
    with pytest.raises(StoredDataError, match="not one qdrant-lander wrote.*sync --full"):
        LabelCache().load(col)
    stop = threading.Event()
    threading.Timer(30, stop.set).start()  # a daemon that retried instead would return 0 here
    try:
        assert Daemon(col, lander, DaemonOptions(interval=0.05, lease_ttl=30, growth=0)).watch(stop) == EXIT_INPUT
    finally:
        stop.set()


def test_a_sync_record_that_names_no_vector_clusters_any_one():
    """A record written before the vector was recorded (None) must keep working after an upgrade; one that names
    a vector refuses another."""
    from datetime import datetime, timezone

    from qdrant_lander.errors import InputError
    from qdrant_lander.payload import SyncState

    rec = SyncState(state="complete", generation=1, model="m", points=1, clusters=1, started_at=datetime.now(timezone.utc))
    rec.check_vector("docs", "text")
    rec.check_vector("docs", "")
    rec.model_copy(update={"vector": "text"}).check_vector("docs", "text")
    with pytest.raises(InputError, match="clustered on vector 'text', not the unnamed vector"):
        rec.model_copy(update={"vector": "text"}).check_vector("docs", "")


def _two_vectors(store, x):
    """A collection another tool made with two named vectors, 'a' and 'b', both set on every point."""
    dim, b = x.shape[1], x[::-1]
    if isinstance(store, EdgeStore):
        import qdrant_edge as qe

        from qdrant_lander.stores.edge import SHARD_DIR

        p = qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)
        shard = qe.EdgeShard.create(str(store.path / "two" / SHARD_DIR), qe.EdgeConfig(vectors={"a": p, "b": p}))
        shard.update(qe.UpdateOperation.upsert_points(
            [qe.Point(i, {"a": x[i].tolist(), "b": b[i].tolist()}, None) for i in range(len(x))]))
        shard.close()
    else:
        vp = models.VectorParams(size=dim, distance=models.Distance.COSINE)
        store.client.create_collection("two", vectors_config={"a": vp, "b": vp})
        store.client.upsert("two", points=[models.PointStruct(id=i, vector={"a": x[i].tolist(), "b": b[i].tolist()})
                                           for i in range(len(x))])


def test_a_second_named_vector_never_replaces_the_first_ones_clustering_silently(store, data, lander):
    """The ``lander`` payload holds one clustering: syncing vector 'b' of a collection clustered on 'a' is refused
    (full sync, daemon pass) with the way to switch, and switching is explicit."""
    from qdrant_lander.daemon import stable_full_sync
    from qdrant_lander.errors import InputError

    x = data[0][:200]
    _two_vectors(store, x)
    a, b = store.open("two", vector="a"), store.open("two", vector="b")
    stable_full_sync(a, lander, progress=False)
    before = payloads(a)
    for attempt in (lambda: stable_full_sync(b, lander, progress=False),
                    lambda: Daemon(b, lander, DaemonOptions(growth=0)).once()):
        with pytest.raises(InputError, match="clustered on vector 'a', not vector 'b'.*--vector b --switch-vector"):
            attempt()
    assert payloads(a) == before and a.get_meta(SYNC_META)["vector"] == "a"
    assert Daemon(a, lander, DaemonOptions(growth=0)).once().new == 0  # the clustered vector goes on as before
    stable_full_sync(b, lander, progress=False, switch_vector=True)
    assert a.get_meta(SYNC_META)["vector"] == "b"
    with pytest.raises(InputError, match="clustered on vector 'b'"):
        Daemon(a, lander, DaemonOptions(growth=0)).once()


def test_importing_one_named_vector_never_replaces_existing_points(store, data, lander):
    """An upsert writes whole points: `import --vector b` onto existing ids (which an error message recommended)
    dropped their vector 'a', the user's payload and the clustering."""
    from qdrant_lander.daemon import stable_full_sync
    from qdrant_lander.errors import InputError

    x = data[0][:200]
    _two_vectors(store, x)
    a = store.open("two", vector="a")
    stable_full_sync(a, lander, progress=False)
    before = payloads(a)
    with pytest.raises(InputError, match=r"points \[195, 196, 197, 198\] of collection 'two' exist.*update_vectors"):
        import_points(store, "two", x[:10], vector="b", start_id=195, batch_size=4, progress=False)
    assert payloads(a) == before and store.open("two", vector="a").info().points == 200
    import_points(store, "two", x[:10], vector="b", start_id=200, progress=False)  # new points: fine
    assert store.open("two", vector="b").info().points == 210


def test_cli_reads_a_clustering_on_its_own_vector_and_refuses_mixed_modes(tmp_path, data, lander):
    """status / labels need no --vector on a named-vector collection: they read the vector the clustering was
    made on; naming another one is an error. Two modes of sync at once are refused, not 'last flag wins'."""
    from click.testing import CliRunner

    from qdrant_lander.cli import main
    from qdrant_lander.daemon import stable_full_sync

    with EdgeStore(tmp_path / "d") as store:
        _two_vectors(store, data[0][:200])
        stable_full_sync(store.open("two", vector="b"), lander, progress=False)
    path = ["--path", str(tmp_path / "d")]
    run = CliRunner().invoke
    st = run(main, ["status", "two", "--json", *path])
    assert st.exit_code == 0, st.output
    assert json.loads(st.stdout)["vector"] == "b" and json.loads(st.stdout)["clustered"] == 200
    wrong = run(main, ["labels", "two", "--vector", "a", "--out", str(tmp_path / "l.npy"), *path])
    assert wrong.exit_code == 2 and "clustered on vector 'b', not vector 'a'" in wrong.output
    for flags, message in ((["--once", "--watch"], "--once and --watch cannot be combined"),
                           (["--full", "--switch-vector"], "--switch-vector replaces the clustering with a plain sync")):
        res = run(main, ["sync", "two", "--vector", "a", *flags, *path])
        assert res.exit_code == 2 and message in res.output, res.output
    switched = run(main, ["sync", "two", "--vector", "a", "--switch-vector", *path])
    assert switched.exit_code == 0, switched.output
    assert json.loads(run(main, ["status", "two", "--json", *path]).stdout)["vector"] == "a"


def test_sparse_point_ids_cluster_as_ids_0_to_n(store, data, lander):
    """Every other stream here imports ids 0..N-1 in arrival order, where a row of a scroll and a point id are one
    number. Real collections have gaps and ids the app chose: the same stream (copies included) with sparse ids,
    arriving out of id order, through the daemon's full pass, its seeded cache, its passes and a stable re-sync,
    clusters the same partition of the rows. (A cache seeded with rows instead of ids is not caught here: the
    passes find its lists name unknown points and query them again; test_a_seeded_cache_lists_point_ids_not_rows.)"""
    x, _ = data
    x = np.concatenate([x, x[:20]])  # copies: their graph is built among distinct rows
    rng = np.random.default_rng(3)
    sparse = rng.choice(10**12, len(x), replace=False)
    partitions = []
    for name, ids in (("dense", np.arange(len(x))), ("sparse", sparse)):
        col = store.create(name, x.shape[1])
        col.upsert(ids[:150], x[:150])
        daemon = Daemon(col, lander, DaemonOptions(growth=0))
        daemon.run_pass(full=True)
        for s in range(150, len(x), 60):
            col.upsert(ids[s:s + 60], x[s:s + 60])
            assert daemon.run_pass().new == len(x[s:s + 60])
        got, streamed = read_labels(col)
        daemon.run_pass(full=True)
        resynced = read_labels(col)[1]
        rows = np.argsort(rows_of(ids, got))  # the points in arrival order
        partitions.append((streamed[rows], resynced[rows]))
        daemon.lease.release()
    for dense, sparse_ in zip(*partitions):
        assert score(dense, sparse_).fp == 1.0


class _FlakyCollection:
    """The collection behind a connection that drops every other pass (each pass first renews the lease), or
    every pass once ``down``."""

    def __init__(self, col):
        self.col, self.lease_reads, self.down = col, 0, False

    def __getattr__(self, name):
        return getattr(self.col, name)

    def get_record(self, key, model):
        self.lease_reads += key == "lease"
        return self.col.get_record(key, model)

    def count(self, filter=None):
        if self.down or self.lease_reads % 2:
            raise ConnectionError("connection reset by peer")
        return self.col.count(filter)


def test_watch_gives_up_only_after_max_failures_passes_in_a_row(store, data, lander, caplog):
    """A pass that fails now and then (a flaky network) is retried for ever; ``max_failures`` failures in a row
    end watch mode with exit 4, the code a supervisor restarts on."""
    from qdrant_lander.daemon import EXIT_STORE

    x, _ = data
    col = import_points(store, "docs", x[:150], progress=False)
    full_sync(col, lander, progress=False)
    flaky = _FlakyCollection(col)
    daemon, stop, codes = Daemon(flaky, lander, DaemonOptions(interval=0.01, max_failures=2, growth=0)), \
        threading.Event(), []
    runner = threading.Thread(target=lambda: codes.append(daemon.watch(stop)))
    caplog.set_level("WARNING", logger="qdrant_lander.daemon")
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while daemon.passes < 4 and runner.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert daemon.passes >= 4 and codes == []  # four failures, never two in a row: still watching
        flaky.down = True
        runner.join(20)
    finally:
        stop.set()
        runner.join(20)
    assert codes == [EXIT_STORE]
    assert caplog.text.count("pass failed (2 in a row)") == 1 and "pass failed (3 in a row)" not in caplog.text
    assert "giving up after 2 failed passes" in caplog.text


def test_watch_rebuilds_after_rebuild_every_passes_that_labelled_points(store, data, lander, caplog):
    """``rebuild_every`` counts the passes that labelled points: idle passes (most of them, on a quiet collection)
    never trigger a full re-clustering, and the N-th labelling pass is followed by one."""
    x, _ = data
    col = import_points(store, "docs", x[:150], progress=False)
    full_sync(col, lander, progress=False)
    daemon = Daemon(col, lander, DaemonOptions(interval=0.01, rebuild_every=2, growth=0))
    caplog.set_level("INFO", logger="qdrant_lander.daemon")
    stop, codes = threading.Event(), []
    runner = threading.Thread(target=lambda: codes.append(daemon.watch(stop)))
    runner.start()

    def passes_after(n: int) -> None:
        deadline, start = time.monotonic() + 20, daemon.passes
        while daemon.passes < start + n and runner.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)

    try:
        passes_after(10)  # idle
        assert "full pass" not in caplog.text
        for s in (150, 160):
            import_points(store, "docs", x[s:s + 10], start_id=s, progress=False)
            passes_after(3)
            assert caplog.text.count("incremental pass: new=10 ") == (s - 140) // 10
        assert caplog.text.count("full pass: new=0 ") == 1  # after the second pass that labelled points
    finally:
        stop.set()
        runner.join(20)
    assert codes == [EXIT_OK]


def test_a_daemons_full_pass_names_each_cluster_by_its_peaks_point_id(store, data, lander):
    """Cluster ids are point ids (the peak's) after the daemon's full pass too, where stable ids rename the
    clusters: ids that are not 0..N-1 tell a point id from a row."""
    x, _ = data
    col = store.create("docs", x.shape[1])
    col.upsert(np.arange(150) * 7 + 10**6, x[:150])
    Daemon(col, lander, DaemonOptions(growth=0)).once()
    labels = check_consistent(col)
    peaks = {pid for pid, lp in labels.items() if lp.peak}
    assert {lp.cluster for lp in labels.values()} == peaks and all(labels[p].cluster == p for p in peaks)
