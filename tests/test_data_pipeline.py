"""Pipeline pieces: splits, normalization, cache life cycle, batching against dgl.batch."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from hydradgl.data import store
from hydradgl.data.loader import BatchLoader, collate
from hydradgl.data.normalize import Normalizer
from hydradgl.data.pipeline import load_dataset, prepare_data
from hydradgl.data.splits import random_split, stratified_split
from hydradgl.dglcompat import dgl
from tests.conftest import small_config


def test_stratified_split_proportions_and_coverage():
    labels = [f"c{i % 7}" for i in range(700)] + ["rare"] * 2
    train, val, test = stratified_split(labels, (0.7, 0.15, 0.15), seed=3)
    assert len(train) + len(val) + len(test) == len(labels)
    assert len(set(train) | set(val) | set(test)) == len(labels)
    for part, frac in ((train, 0.7), (val, 0.15), (test, 0.15)):
        counts = Counter(labels[i] for i in part)
        for c in (f"c{i}" for i in range(7)):
            assert counts[c] == pytest.approx(100 * frac, abs=1)
    assert Counter(labels[i] for i in train)["rare"] == 2  # fewer than 3: all kept for training
    again = stratified_split(labels, (0.7, 0.15, 0.15), seed=3)
    assert all((a == b).all() for a, b in zip(again, (train, val, test)))


def test_small_group_of_three_lands_in_every_split():
    train, val, test = stratified_split(["x"] * 3, (0.7, 0.15, 0.15), seed=0)
    assert (len(train), len(val), len(test)) == (1, 1, 1)


def test_random_split_sizes():
    parts = random_split(100, (0.7, 0.15, 0.15), seed=0)
    assert [len(p) for p in parts] == [70, 15, 15]
    assert len(np.unique(np.concatenate(parts))) == 100


def test_prepared_data_normalized_on_train_only(small_prepared):
    d = small_prepared
    for name, values in {**d.train.graph_targets, **d.train.node_targets}.items():
        assert values.min() == pytest.approx(0, abs=1e-6) and values.max() == pytest.approx(1, abs=1e-6)
    assert len(d.train) + len(d.val) + len(d.test) == 157
    comps_val = set(d.val.compositions)
    assert all(c in comps_val for c, n in Counter(d.train.compositions + d.val.compositions + d.test.compositions).items() if n >= 3)


def test_normalization_round_trip(small_prepared):
    norm = Normalizer.from_info(small_prepared.info)
    x = torch.tensor([[-0.3], [0.0], [0.44]], dtype=torch.float64)
    back = norm.denormalize("C", norm.normalize("C", x))
    torch.testing.assert_close(back, x)
    lo, hi = small_prepared.info.target_min["C"][0], small_prepared.info.target_max["C"][0]
    assert float(norm.normalize("C", torch.tensor([hi], dtype=torch.float64))) == pytest.approx(1.0)
    assert float(norm.normalize("C", torch.tensor([lo], dtype=torch.float64))) == pytest.approx(0.0)


def test_constant_target_does_not_divide_by_zero():
    norm = Normalizer({"x": [2.0]}, {"x": [2.0]})
    assert float(norm.normalize("x", torch.tensor([2.0]))) == 0.0


def test_cache_hit_then_corrupt_and_stale_rebuilt(tmp_path):
    cfg = small_config(**{"dataset.cache_dir": str(tmp_path)})
    first = load_dataset(cfg)
    assert any("written to cache" in n for n in first.log)
    second = load_dataset(cfg)
    assert any("read from cache" in n for n in second.log)
    np.testing.assert_array_equal(first.graphs.src, second.graphs.src)
    np.testing.assert_array_equal(first.graphs.node_targets["M"], second.graphs.node_targets["M"])
    folder = next(p for p in (tmp_path / "processed").iterdir() if p.is_dir())
    path = folder / "src.npy"
    path.write_bytes(path.read_bytes()[:1000])  # truncated, as after a crash of another writer
    third = load_dataset(cfg)
    assert any("truncated" in n and "rebuilding" in n for n in third.log)
    np.testing.assert_array_equal(first.graphs.dst, third.graphs.dst)
    manifest = folder / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"edges": ', '"edges": 1'))  # edited by hand: checksum fails
    assert any("checksum" in n and "rebuilding" in n for n in load_dataset(cfg).log)
    other = load_dataset(small_config(**{"dataset.cache_dir": str(tmp_path), "graph.radius": 3.0}))
    assert other.graphs.num_edges.sum() < first.graphs.num_edges.sum()  # different key, not stale data
    assert [p.name for p in (tmp_path / "processed").iterdir() if "tmp" in p.name] == []


def test_store_format_version_mismatch(tmp_path, monkeypatch):
    cfg = small_config(**{"dataset.cache_dir": str(tmp_path)})
    folder = load_dataset(cfg).store.folder
    assert isinstance(store.open_store(folder), store.Store)
    monkeypatch.setattr(store, "FORMAT_VERSION", store.FORMAT_VERSION + 1)
    assert "format version" in store.open_store(folder)


def _single_graph(graphs, g):
    one = graphs.subset(np.array([g])).materialize()
    graph = dgl.graph((torch.from_numpy(one.src), torch.from_numpy(one.dst)), num_nodes=int(one.node_ptr[-1]))
    graph.edata["dist"] = torch.from_numpy(one.dist)
    graph.ndata["species"] = torch.from_numpy(one.species)
    return graph


def test_collated_batch_equals_dgl_batch(small_prepared):
    graphs = small_prepared.train
    idx = np.array([5, 0, 17, 3])
    batch = collate(graphs, idx)
    reference = dgl.batch([_single_graph(graphs, g) for g in idx])
    assert batch.graph.batch_num_nodes.tolist() == reference.batch_num_nodes().tolist()
    assert batch.graph.batch_num_edges.tolist() == reference.batch_num_edges().tolist()
    for a, b in zip((batch.graph.src, batch.graph.dst), reference.edges()):
        assert torch.equal(a, b)
    assert torch.equal(batch.edge_dist, reference.edata["dist"])
    assert torch.equal(batch.species, reference.ndata["species"])
    torch.testing.assert_close(batch.edge_vec.norm(dim=1), batch.edge_dist)
    assert batch.graph_targets["H"].shape == (4, 1) and batch.node_targets["C"].shape == (batch.graph.num_nodes, 1)
    assert batch.graph_ids.tolist() == graphs.ids[idx].tolist()


def test_loader_shards_are_disjoint_and_cover(small_prepared):
    graphs = small_prepared.train
    seen = []
    for rank in range(2):
        loader = BatchLoader(graphs, 8, shuffle=True, seed=1, rank=rank, world_size=2, pad=False)
        loader.set_epoch(3)
        seen.append(np.concatenate([b.graph_ids.numpy() for b in loader]))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(np.concatenate(seen)) == sorted(graphs.ids)
    padded = [len(BatchLoader(graphs, 8, rank=r, world_size=2)) for r in range(2)]
    assert padded[0] == padded[1]


def test_shuffle_is_seeded_per_epoch(small_prepared):
    loader = BatchLoader(small_prepared.train, 8, shuffle=True, seed=0)
    loader.set_epoch(0)
    a = loader.indices()
    loader.set_epoch(1)
    b = loader.indices()
    loader.set_epoch(0)
    assert not np.array_equal(a, b) and np.array_equal(a, loader.indices())


def test_unknown_species_in_prediction_is_named(tmp_path, small_prepared):
    from hydradgl.data.prediction import graphs_for_prediction
    from hydradgl.errors import DataError

    (tmp_path / "cu.lsms").write_text("-1\n29 0 0 0 0 29 0\n26 1 2 0 0 26 2\n")
    with pytest.raises(DataError, match=r"cu.lsms: element Cu \(Z=29\) is not among"):
        graphs_for_prediction([tmp_path / "cu.lsms"], small_prepared.info, small_config(**{"dataset.name": "lsms",
                              "dataset.options": {"path": str(tmp_path)}}).dataset)


def test_extxyz_dataset(tmp_path):
    from ase import Atoms
    from ase.io import write

    frames = []
    for i in range(4):
        a = Atoms("FePt", positions=[[0, 0, 0], [1.5 + 0.1 * i, 0, 0]], cell=np.eye(3) * 4, pbc=True)
        a.info["energy"] = -1.0 - i
        a.arrays["q"] = np.array([0.1, -0.1]) * i
        frames.append(a)
    write(tmp_path / "x.xyz", frames, format="extxyz")
    cfg = small_config(**{"dataset.name": "extxyz", "dataset.options": {
        "path": str(tmp_path / "x.xyz"), "targets": {"E": {"key": "energy", "level": "graph"},
                                                     "q": {"key": "q", "level": "node"}}},
        "split.method": "random", "graph.periodic": True, "graph.radius": 3.0})
    data = load_dataset(cfg)
    assert data.graphs.graph_targets["E"][:, 0].tolist() == [-1.0, -2.0, -3.0, -4.0]
    np.testing.assert_allclose(data.graphs.node_targets["q"][:2, 0], [0.0, 0.0])
    assert data.targets["q"].level == "node"
    prepared = prepare_data(cfg)
    assert prepared.info.species == [26, 78]


def test_prediction_lsms_files_get_the_dataset_lattice(tmp_path, small_prepared):
    from hydradgl.config import GraphConfig
    from hydradgl.data.prediction import graphs_for_prediction
    from hydradgl_plugins.datasets.fept import lattice

    pos, _ = lattice(2.76, 3.74)
    lines = ["-1.0"] + [f"{26 if i % 2 else 78} {i} {x} {y} {z} 26 2" for i, (x, y, z) in enumerate(pos)]
    (tmp_path / "new.lsms").write_text("\n".join(lines) + "\n")
    info = small_prepared.info
    dataset = small_config().dataset
    flat = graphs_for_prediction([tmp_path / "new.lsms"], info.model_copy(update={"graph": GraphConfig(radius=3.0)}),
                                 dataset)
    periodic = graphs_for_prediction([tmp_path / "new.lsms"],
                                     info.model_copy(update={"graph": GraphConfig(radius=3.0, periodic=True)}), dataset)
    assert len(flat) == 1 and flat.species.tolist() == [1 if i % 2 == 0 else 0 for i in range(32)]
    assert periodic.num_edges[0] == 32 * 12  # bulk BCT within 3 A: 8 + 4 neighbours for every atom
    assert flat.num_edges[0] < 32 * 12  # without images the slab's surface atoms lose neighbours


def test_bad_dataset_option_names_its_key(tmp_path):
    from hydradgl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"dataset\.options\.max_per_composition"):
        prepare_data(small_config(**{"dataset.options": {"max_per_composition": 0}}))
    with pytest.raises(ConfigError, match=r"dataset\.options\.colour"):
        prepare_data(small_config(**{"dataset.options": {"colour": 1}}))


def test_cache_with_mismatched_arrays_is_rebuilt(tmp_path):
    cfg = small_config(**{"dataset.cache_dir": str(tmp_path)})
    first = load_dataset(cfg)
    folder = first.store.folder
    src = np.load(folder / "src.npy")  # a copy: the file is rewritten in place below
    (folder / "src.npy").unlink()
    np.save(folder / "src.npy", src[:-5])  # a valid file, manifest updated to match: still not a valid dataset
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["arrays"]["src"]["shape"] = [len(src) - 5]
    manifest["checksum"] = store._manifest_checksum(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    again = load_dataset(cfg)
    assert any("inconsistent (src has" in n and "rebuilding" in n for n in again.log)
    np.testing.assert_array_equal(again.graphs.src, src)
    assert any("read from cache" in n for n in load_dataset(cfg).log)


def test_old_single_file_cache_is_rebuilt_and_removed(tmp_path):
    cfg = small_config(**{"dataset.cache_dir": str(tmp_path)})
    folder = load_dataset(cfg).store.folder
    shutil.rmtree(folder)
    old = folder.with_suffix(".npz")
    np.savez(old, src=np.arange(3))
    notes = load_dataset(cfg).log
    assert any("old single-file format" in n for n in notes) and not old.exists() and folder.is_dir()


def test_periodic_graphs_without_a_lattice_are_refused(tmp_path):
    from hydradgl.errors import DataError

    (tmp_path / "pt.lsms").write_text("-2\n78 0 0 0 0 78 0\n78 1 2 0 0 78 0\n")
    cfg = small_config(**{"dataset.name": "lsms", "dataset.options": {"path": str(tmp_path)},
                          "dataset.cache_dir": str(tmp_path / "cache"), "graph.periodic": True})
    with pytest.raises(DataError, match=r"pt.lsms: graph.periodic is set but this structure has no lattice"):
        load_dataset(cfg)


def toy_registry(factory, fingerprint=None):
    from hydradgl.plugins import DatasetSpec, Registry

    registry = Registry()
    registry.specs["dataset"]["toy"] = DatasetSpec(name="toy", description="test", factory=factory,
                                                   fingerprint=fingerprint)
    return registry


def toy_raw(fingerprint="raw-v1", drop_target_from=()):
    from hydradgl.data.records import RawDataset, Structure, TargetInfo

    structures = [Structure(numbers=np.array([26, 78]), positions=np.array([[0, 0, 0], [2.0 + 0.1 * i, 0, 0]]),
                            targets={} if i in drop_target_from else {"E": np.array([float(i)])}, source=f"toy#{i}")
                  for i in range(6)]
    return RawDataset(structures=structures, targets={"E": TargetInfo(level="graph")}, fingerprint=fingerprint)


def test_plugin_without_fingerprint_reuses_the_cache_by_raw_fingerprint(tmp_path, monkeypatch):
    from hydradgl.data import pipeline

    calls = []
    registry = toy_registry(lambda options, context: calls.append(1) or toy_raw())
    cfg = small_config(**{"dataset.name": "toy", "dataset.options": {}, "dataset.cache_dir": str(tmp_path)})
    first = load_dataset(cfg, registry)
    assert any("written to cache" in n for n in first.log) and len(list((tmp_path / "processed").glob("*/manifest.json"))) == 1
    packed = []
    monkeypatch.setattr(pipeline, "pack_checked", lambda *a, **k: packed.append(1))  # must not be needed now
    again = load_dataset(cfg, registry)
    assert len(calls) == 2 and packed == []  # raw data read again (no cheap fingerprint), graphs not rebuilt
    assert any("read from cache" in n and "no cheap fingerprint" in n for n in again.log)
    np.testing.assert_array_equal(again.graphs.src, first.graphs.src)


def test_plugin_without_any_fingerprint_writes_no_cache(tmp_path):
    registry = toy_registry(lambda options, context: toy_raw(fingerprint=""))
    cfg = small_config(**{"dataset.name": "toy", "dataset.options": {}, "dataset.cache_dir": str(tmp_path)})
    loaded = load_dataset(cfg, registry)
    assert any("not cached" in n for n in loaded.log) and not (tmp_path / "processed").exists()


def test_structures_lacking_a_target_are_named_or_skipped_with_a_count(tmp_path):
    from hydradgl.errors import DataError

    registry = toy_registry(lambda options, context: toy_raw(drop_target_from=(1, 4)))
    cfg = small_config(**{"dataset.name": "toy", "dataset.options": {}, "dataset.cache_dir": str(tmp_path)})
    with pytest.raises(DataError, match=r"2 structure\(s\) lack target 'E': toy#1, toy#4; .*skip_incomplete"):
        load_dataset(cfg, registry)
    cfg = small_config(**{"dataset.name": "toy", "dataset.options": {}, "dataset.cache_dir": str(tmp_path),
                          "dataset.skip_incomplete": True})
    loaded = load_dataset(cfg, registry)
    assert len(loaded.graphs) == 4 and loaded.graphs.graph_targets["E"][:, 0].tolist() == [0, 2, 3, 5]
    assert any("skipped 2 structure(s) lacking a target (E: 2)" in n for n in loaded.log)


def test_dataset_factory_is_told_which_targets_the_heads_need(tmp_path):
    seen = []
    registry = toy_registry(lambda options, context: seen.append(context.targets) or toy_raw(fingerprint=""))
    cfg = small_config(**{"dataset.name": "toy", "dataset.options": {}, "dataset.cache_dir": str(tmp_path),
                          "heads": [{"name": "energy", "target": "E"}]})
    load_dataset(cfg, registry)
    assert seen == [frozenset({"E"})]


def test_packed_compositions_match_per_structure_labels():
    from hydradgl.data.packing import composition, compositions

    rng = np.random.default_rng(0)
    sizes = rng.integers(0, 6, 60)  # empty structures included
    numbers = rng.choice([1, 8, 26, 78], int(sizes.sum()))
    ptr = np.concatenate([[0], np.cumsum(sizes)])
    expected = [composition(numbers[ptr[g]:ptr[g + 1]]) for g in range(len(sizes))]
    assert compositions(numbers, ptr) == expected
    assert compositions(np.array([26, 78, 78]), np.array([0, 3])) == ["Fe1Pt2"]
