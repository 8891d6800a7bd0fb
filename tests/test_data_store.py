"""Processed cache: round trips against in-memory packing, streamed statistics against direct
computation, views against copies, split files, the schema's table in docs/data.md."""

from __future__ import annotations

import os
from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from hydradgl.configio import load_config
from hydradgl.data import store, store_build
from hydradgl.data.graphset import GraphView
from hydradgl.data.loader import BatchLoader, collate
from hydradgl.data.npyio import FileArray
from hydradgl.data.normalize import Normalizer
from hydradgl.data.pipeline import pack, pack_checked, prepare_data
from hydradgl.data.records import Structure, TargetInfo
from hydradgl.data.splitfile import load_split, save_split
from hydradgl.data.splits import stratified_split
from hydradgl.errors import DataError
from tests.conftest import small_config

TARGETS = {"E": TargetInfo(level="graph", dim=2), "q": TargetInfo(level="node")}


def structures(n: int, seed: int = 0) -> list[Structure]:
    """Random molecules of 2-6 atoms (H, C, O), different sizes so offsets matter."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        atoms = int(rng.integers(2, 7))
        out.append(Structure(numbers=rng.choice([1, 6, 8], atoms), positions=rng.random((atoms, 3)) * 3,
                             targets={"E": rng.normal(size=2), "q": rng.normal(size=(atoms, 1))}, source=f"mol{i}.xyz"))
    return out


def build(tmp_path, items, workers=1, chunk_size=3, name="s"):
    cfg = load_config(None, {"graph.radius": 2.0})
    pack_chunk = partial(pack_checked, targets=TARGETS, node_inputs={}, graph=cfg.graph)
    chunks = store_build.packed_chunks(items, pack_chunk, chunk_size=chunk_size, workers=workers)
    return store_build.build_store(tmp_path / name, chunks, TARGETS, {}, ["note"]), cfg


@pytest.mark.parametrize("workers", [1, 2])
def test_store_round_trip_equals_in_memory_pack(tmp_path, workers):
    items = structures(20)
    stored, cfg = build(tmp_path, (s for s in items), workers=workers)  # a generator, consumed once
    whole = pack(items, TARGETS, {}, cfg.graph)
    g = stored.graphs
    assert isinstance(g.src, FileArray)  # read on demand, not loaded
    for name in ("numbers", "node_ptr", "src", "dst", "vec", "dist", "edge_ptr", "cell"):
        np.testing.assert_array_equal(np.asarray(getattr(g, name)), getattr(whole, name), err_msg=name)
    for name in TARGETS:
        arrays = g.graph_targets if name == "E" else g.node_targets
        expected = whole.graph_targets if name == "E" else whole.node_targets
        np.testing.assert_array_equal(arrays[name], expected[name])
    assert list(g.compositions) == list(whole.compositions) and list(g.sources) == [s.source for s in items]
    counts = stored.manifest["counts"]
    assert (counts["graphs"], counts["nodes"], counts["edges"]) == (20, len(whole.numbers), len(whole.src))
    assert stored.species == [1, 6, 8] and stored.manifest["log"] == ["note"]
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temporary folder left


def test_file_array_indexing_equals_numpy(tmp_path):
    rng = np.random.default_rng(0)
    for shape in [(1000,), (500, 3), (0, 2)]:
        a = rng.normal(size=shape).astype(np.float32)
        np.save(tmp_path / "a.npy", a)
        f = FileArray(tmp_path / "a.npy")
        assert f.shape == a.shape and f.dtype == a.dtype and len(f) == len(a)
        np.testing.assert_array_equal(np.asarray(f), a)
        if not len(a):
            continue
        for idx in ([5, 3, 4, 4, 100, 6, 0], np.arange(10, 50), rng.integers(0, len(a), 300), [[1, 2], [3, 3]]):
            np.testing.assert_array_equal(f[np.array(idx)], a[np.array(idx)])
        np.testing.assert_array_equal(f[-1], a[-1])
        np.testing.assert_array_equal(f[3:9], a[3:9])
        np.testing.assert_array_equal(f[::7], a[::7])
        np.testing.assert_array_equal(f[np.array([4, 1]), ...], a[[4, 1], ...])
        with pytest.raises(IndexError):
            f[np.array([len(a)])]


def test_parallel_build_writes_identical_files(tmp_path):
    items = structures(25)
    one, _ = build(tmp_path, items, workers=1, name="one")
    two, _ = build(tmp_path, items, workers=2, name="two")
    for file in sorted(one.folder.iterdir()):
        assert file.read_bytes() == (two.folder / file.name).read_bytes(), file.name


def test_streamed_statistics_equal_direct_computation(tmp_path):
    stored, cfg = build(tmp_path, structures(30), chunk_size=4)
    rows = np.array([3, 17, 4, 29, 11, 0])
    lo, hi = stored.target_range(rows, chunk=2)
    sub = stored.graphs.subset(rows)
    np.testing.assert_array_equal(lo["E"], sub.graph_targets["E"].min(axis=0))
    np.testing.assert_array_equal(hi["q"], sub.node_targets["q"].max(axis=0))
    # in-degree: count incoming edges of every atom directly
    degree = []
    for g in rows:
        n = stored.graphs.node_ptr[g + 1] - stored.graphs.node_ptr[g]
        dst = stored.graphs.dst[stored.graphs.edge_ptr[g]:stored.graphs.edge_ptr[g + 1]]
        degree.extend(int((dst == a).sum()) for a in range(n))
    np.testing.assert_array_equal(stored.degree_histogram(rows, chunk=4), np.bincount(degree))
    whole = stored.manifest["statistics"]
    assert whole["target_min"]["q"] == [float(np.min(stored.graphs.node_targets["q"]))]
    assert sum(whole["degree_histogram"]) == stored.manifest["counts"]["nodes"]


def test_view_batches_equal_batches_of_a_normalized_copy(tmp_path):
    stored, _ = build(tmp_path, structures(12))
    stored.graphs.species_lookup = np.full(119, -1)
    stored.graphs.species_lookup[[1, 6, 8]] = [0, 1, 2]
    norm = Normalizer({"E": [-1.0, 0.0], "q": [-2.0]}, {"E": [1.0, 3.0], "q": [2.0]})
    view = GraphView(stored.graphs, np.array([7, 2, 9, 4]), norm)
    copy = view.materialize()
    idx = np.array([3, 0, 2])
    a, b = collate(view, idx), collate(copy, idx)
    for name in ("species", "node_inputs", "edge_dist", "edge_vec"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.graph.src, b.graph.src) and torch.equal(a.graph.dst, b.graph.dst)
    assert torch.equal(a.graph_targets["E"], b.graph_targets["E"]) and torch.equal(a.node_targets["q"], b.node_targets["q"])
    assert a.graph_ids.tolist() == [4, 7, 9]
    expected = (stored.graphs.graph_targets["E"][[4, 7, 9]] - [-1.0, 0.0]) / [2.0, 3.0]
    np.testing.assert_allclose(a.graph_targets["E"].numpy(), expected, rtol=1e-6)
    assert view.subset(np.array([1, 3])).ids.tolist() == [2, 4]


def test_loader_rank_reads_only_its_shard(tmp_path):
    stored, _ = build(tmp_path, structures(16))
    stored.graphs.species_lookup = np.zeros(119, dtype=np.int64)
    view = GraphView(stored.graphs, np.arange(3, 16))
    read: list[np.ndarray] = []
    original = stored.graphs.graph_targets["E"]

    class Recording:  # records which rows of the graph-level array a batch reads
        def __getitem__(self, rows):
            read.append(np.asarray(rows))
            return original[rows]

    stored.graphs.graph_targets = {"E": Recording()}
    loader = BatchLoader(view, 4, shuffle=True, seed=5, rank=1, world_size=2, pad=False)
    ids = np.concatenate([b.graph_ids.numpy() for b in loader])
    assert sorted(np.concatenate(read).tolist()) == sorted(ids.tolist())
    assert set(ids) == set(view.rows[loader.indices()])


def test_failed_build_leaves_nothing(tmp_path):
    def chunks():
        yield pack(structures(3), TARGETS, {}, load_config(None, {"graph.radius": 2.0}).graph)
        raise DataError("mol3.xyz: broken")

    with pytest.raises(DataError, match="mol3.xyz"):
        store_build.build_store(tmp_path / "s", chunks(), TARGETS, {}, [])
    assert list(tmp_path.iterdir()) == []


def test_chunk_missing_a_target_is_named(tmp_path):
    items = structures(4)
    del items[2].targets["q"]
    with pytest.raises(DataError, match=r"1 structure\(s\) lack target 'q': mol2.xyz"):
        build(tmp_path, items)


def _reference_stratified(labels, fractions, seed):
    """The split as first written (lists and a dict), to pin the vectorized one to the same result."""
    rng = np.random.default_rng(seed)
    groups = defaultdict(list)
    for i, label in enumerate(labels):
        groups[label].append(i)
    parts = ([], [], [])
    for label in sorted(groups):
        members = rng.permutation(groups[label])
        n = len(members)
        n_val, n_test = int(round(fractions[1] * n)), int(round(fractions[2] * n))
        if n >= 3:
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        else:
            n_val = n_test = 0
        parts[0].extend(members[:n - n_val - n_test])
        parts[1].extend(members[n - n_val - n_test:n - n_test])
        parts[2].extend(members[n - n_test:])
    return [sorted(p) for p in parts]


def test_stratified_split_unchanged_and_coded_labels_agree():
    rng = np.random.default_rng(1)
    table = ["Fe2Pt30", "Fe10Pt22", "Pt32", "Fe1Pt31"]
    codes = rng.integers(0, 4, 500)
    codes[:2] = 3  # "Fe1Pt31": all but two are re-coded below, a group of two stays in training
    codes[2:][codes[2:] == 3] = 0
    labels = [table[c] for c in codes]
    plain = stratified_split(labels, (0.7, 0.15, 0.15), seed=4)
    coded = stratified_split(store.CodedStrings(codes, table), (0.7, 0.15, 0.15), seed=4)
    reference = _reference_stratified(labels, (0.7, 0.15, 0.15), 4)
    for a, b, c in zip(plain, coded, reference):
        assert a.tolist() == b.tolist() == c


def test_split_file_round_trip_and_checks(tmp_path):
    parts = (np.array([5, 1, 3]), np.array([0]), np.array([2, 4]))
    save_split(tmp_path / "split.npz", parts, 6)
    back = load_split(tmp_path / "split.npz", 6)
    assert [p.tolist() for p in back] == [[1, 3, 5], [0], [2, 4]]
    with pytest.raises(DataError, match="dataset of 6 graphs, the configured one has 7"):
        load_split(tmp_path / "split.npz", 7)
    save_split(tmp_path / "bad.npz", (np.array([0, 1]), np.array([1]), np.array([])), 3)
    with pytest.raises(DataError, match="more than one split"):
        load_split(tmp_path / "bad.npz", 3)
    (tmp_path / "junk.npz").write_text("no zip")
    with pytest.raises(DataError, match="junk.npz: not a readable split file"):
        load_split(tmp_path / "junk.npz", 3)


def test_prepare_data_with_a_split_file_reuses_it(tmp_path, small_prepared):
    d = small_prepared
    mixed = (np.concatenate([d.train.rows[5:], d.test.rows]), d.val.rows, d.train.rows[:5])
    save_split(tmp_path / "split.npz", mixed, len(d.train.base))
    again = prepare_data(small_config(), split=tmp_path / "split.npz")
    assert again.test.rows.tolist() == sorted(d.train.rows[:5].tolist())
    assert any("split (read from" in n for n in again.log)
    h = np.asarray(d.train.base.graph_targets["H"])[np.sort(mixed[0])]  # statistics follow the file's train part
    assert again.info.target_min["H"] == [float(h.min())] and again.info.target_max["H"] == [float(h.max())]


def test_a_second_writer_uses_the_cache_published_first(tmp_path):
    items = structures(6)
    first, _ = build(tmp_path, items)
    second, _ = build(tmp_path, items)  # as a DDP rank that lost the race to build the same cache
    assert second.folder == first.folder and [p.name for p in tmp_path.iterdir()] == ["s"]
    np.testing.assert_array_equal(second.graphs.src, first.graphs.src)


def test_a_killed_builds_folder_is_removed_by_the_next_build(tmp_path):
    from tests.test_reliability import _dead_pid

    stale = tmp_path / f".s.{_dead_pid()}.build.tmp"  # the temp folder a killed build would leave
    fresh = tmp_path / f".t.{_dead_pid()}.build.tmp"  # ... recently touched: maybe a writer on another host
    for folder in (stale, fresh):
        folder.mkdir()
        (folder / "src.npy").write_bytes(b"partial")
    os.utime(stale, (0, 0))
    stored, _ = build(tmp_path, structures(3))
    assert not stale.exists() and fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [fresh.name, "s"] and len(stored.graphs) == 3


def test_in_memory_batches_equal_batches_read_from_the_files(monkeypatch):
    from hydradgl.data import pipeline
    from hydradgl.data.loader import collate
    from hydradgl.data.pipeline import load_dataset
    from tests.conftest import small_config

    on_disk = load_dataset(small_config(**{"dataset.in_memory": False}))
    resident = load_dataset(small_config(**{"dataset.in_memory": True}))
    assert isinstance(on_disk.graphs.src, FileArray) and not on_disk.store.in_memory
    assert isinstance(resident.graphs.src, np.ndarray) and resident.store.in_memory
    assert any("read into memory" in note for note in resident.log)
    for graphs in (on_disk.graphs, resident.graphs):
        graphs.species_lookup = np.arange(119)
    idx = np.array([5, 0, 17, 3])
    a, b = collate(on_disk.graphs, idx), collate(resident.graphs, idx)
    assert torch.equal(a.graph.src, b.graph.src) and torch.equal(a.graph.dst, b.graph.dst)
    assert torch.equal(a.edge_vec, b.edge_vec) and torch.equal(a.species, b.species)

    # default: in memory when 4x the arrays (per torchrun process on the node) fit in what is available
    size = on_disk.store.nbytes
    monkeypatch.setattr(pipeline, "memory_available", lambda: 4 * size)
    assert load_dataset(small_config()).store.in_memory
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert not load_dataset(small_config()).store.in_memory
    monkeypatch.setattr(pipeline, "memory_available", lambda: None)  # unknown: stay on disk
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert not load_dataset(small_config()).store.in_memory


def test_docs_cache_table_is_the_schema():
    text = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    start = text.index("-->\n", text.index("<!-- cache-schema:start")) + 4
    end = text.index("<!-- cache-schema:end -->")
    assert text[start:end] == store.schema_markdown(), "regenerate with hydradgl.data.store.schema_markdown()"


def test_opening_checks_the_arrays_against_the_schema(tmp_path):
    import json

    stored, _ = build(tmp_path, structures(5))
    for name, array in stored.arrays.items():  # resident columns read whole, the others by rows
        assert isinstance(array, np.ndarray if store.column_of(name)[0].resident else FileArray), name
    folder = stored.folder
    manifest = json.loads((folder / store.MANIFEST).read_text())

    def reopened(edit):
        changed = json.loads(json.dumps(manifest))
        edit(changed)
        changed["checksum"] = store._manifest_checksum(changed)
        (folder / store.MANIFEST).write_text(json.dumps(changed))
        return store.open_store(folder)

    assert "arrays ['degree_count'] do not fit" in reopened(lambda m: m["arrays"].pop("degree_count"))
    assert "E is <f4 [5, 3], expected float32 rows of (2,)" in reopened(
        lambda m: m["arrays"]["graph_target.E"].update(shape=[5, 3]))
    count = np.load(folder / "degree_count.npy")
    np.save(folder / "degree_count.npy", count[:-1])
    assert "inconsistent (degree_count has" in reopened(
        lambda m: m["arrays"]["degree_count"].update(shape=[len(count) - 1]))
