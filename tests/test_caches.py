"""The daemon's array-backed caches against plain dicts: same answers for large sparse ids, rows reused."""

import numpy as np

from qdrant_lander.caches import Label, LabelCache, Labels, RowIndex


def test_row_index_finds_sparse_ids_and_reuses_dropped_rows():
    at = RowIndex()
    assert at.find(np.asarray([1, 2])).tolist() == [-1, -1]
    big = np.asarray([2**62, 7, 2**40, 0], dtype=np.int64)
    rows = at.place(big)
    assert sorted(rows.tolist()) == [0, 1, 2, 3] and at.high == 4
    assert at.find(big).tolist() == rows.tolist()
    assert at.find(np.asarray([[8, 2**40], [2**62 - 1, 2**63 - 1]])).tolist() == [[-1, rows[2]], [-1, -1]]
    assert at.place(np.asarray([7, 2**62])).tolist() == [rows[1], rows[0]]  # placed ids keep their rows
    at.drop(np.asarray([7, 0]))
    again = at.place(np.asarray([5, 9, 11]))
    assert sorted(again[:2].tolist()) == sorted([rows[1], rows[3]]) and again[2] == 4  # freed rows first
    assert at.ids.tolist() == sorted([5, 9, 11, 2**40, 2**62]) and at.high == 5
    assert at.find(np.asarray([7, 0])).tolist() == [-1, -1]


def test_label_cache_matches_a_dict_through_puts_relabels_and_forgets():
    rng = np.random.default_rng(0)
    cache, want = LabelCache(), {}
    assert cache.get(3) is None and not cache.find(np.asarray([3])).known[0]
    for step in range(30):
        ids = rng.choice(2**50, size=int(rng.integers(1, 40)), replace=False) if step % 3 else \
            rng.choice(list(want) or [1], size=min(len(want), 5) or 1, replace=False)
        depth = int(rng.integers(1, 5))  # paths of varied width: the cache widens its path array
        labels = [Label(int(rng.integers(0, 6)), bool(rng.integers(0, 2)),
                        tuple(int(v) for v in rng.integers(0, 100, size=int(rng.integers(1, depth + 1)))))
                  for _ in ids]
        cache.put(ids, Labels.of(labels))
        want.update(zip(ids.tolist(), labels))
        if step % 5 == 4:
            cache.relabel(absorbed=2, survivor=5)
            want = {p: lb._replace(cluster=5, peak=False) if lb.cluster == 2 else lb for p, lb in want.items()}
        if step % 7 == 6:
            drop = rng.choice(list(want), size=len(want) // 4, replace=False)
            cache.forget(drop)
            for p in drop.tolist():
                del want[p]
    assert len(cache) == len(want) and cache.ids().tolist() == sorted(want)
    assert all(cache.get(p) == lb for p, lb in want.items())
    assert cache.clusters().tolist() == [want[p].cluster for p in sorted(want)]
    probe = np.asarray([*list(want)[:10], 2**60, 12345], dtype=np.int64)
    found = cache.find(probe)
    assert found.known.tolist() == [True] * 10 + [False, False]
    for r, p in enumerate(probe[:10].tolist()):
        assert tuple(found.path[r, :found.depth[r]].tolist()) == want[p].path and found.cluster[r] == want[p].cluster


def test_label_cache_takes_more_points_at_once_than_its_arrays_grow_by():
    """A first load, or a pass's field, can bring thousands of labels at once: more rows than growing by half."""
    cache = LabelCache()
    ids = np.arange(3000, dtype=np.int64) * 7
    cache.put(ids, Labels.of([Label(int(i) % 5, False, (int(i),)) for i in ids]))
    more = np.arange(3000, 8000, dtype=np.int64) * 7
    cache.put(more, Labels.of([Label(1, True, (2, 3)) for _ in more]))
    assert len(cache) == 8000 and cache.get(2999 * 7) == Label(2999 * 7 % 5, False, (2999 * 7,))
    assert cache.get(7999 * 7) == Label(1, True, (2, 3))
