"""The generated emt-alloy data: determinism, EMT targets recomputed independently, options, cache, coverage."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from hydradgl.configio import load_config, parse_options
from hydradgl.data.packing import composition
from hydradgl.data.pipeline import load_dataset
from hydradgl.errors import ConfigError
from hydradgl.plugins import DatasetContext
from hydradgl_plugins.datasets.emt_alloy import (EMTAlloyOptions, compositions, generate_structures, load_emt_alloy,
                                                 reference)

SMALL = dict(elements=["Cu", "Au"], supercell=(1, 1, 2), per_composition=2)  # 8 sites, 9 compositions


def emt_energy_per_atom(element: str, a: float) -> float:
    atoms = bulk(element, "fcc", a=a, cubic=True)
    atoms.calc = EMT()
    return atoms.get_potential_energy() / len(atoms)


def test_deterministic_and_seeded():
    one = generate_structures(EMTAlloyOptions(**SMALL))
    two = generate_structures(EMTAlloyOptions(**SMALL))
    other = generate_structures(EMTAlloyOptions(**SMALL, seed=1))
    assert len(one) == 9 * 2
    for a, b in zip(one, two):
        assert (a.numbers == b.numbers).all() and np.array_equal(a.positions, b.positions)
        assert a.info["energy"] == b.info["energy"]
    assert not np.allclose(one[5].positions, other[5].positions)


def test_references_are_the_emt_minimum():
    for element in ("Cu", "Au"):
        a, e = reference(element)
        assert e == pytest.approx(emt_energy_per_atom(element, a), abs=1e-9)
        assert emt_energy_per_atom(element, a * 1.002) > e and emt_energy_per_atom(element, a * 0.998) > e


def test_targets_match_an_independent_emt_calculation(tmp_path):
    options = EMTAlloyOptions(**SMALL, forces=True, stress=True, seed=3)
    raw = load_emt_alloy(options, DatasetContext(cache_dir=tmp_path))
    assert set(raw.targets) == {"energy", "mixing_energy", "atom_energy", "force_norm", "forces", "stress"}
    assert (raw.targets["stress"].level, raw.targets["stress"].dim, raw.targets["stress"].unit) == ("graph", 6, "eV/A^3")
    assert raw.targets["energy"].extensive is True and raw.targets["mixing_energy"].extensive is False
    refs = {29: reference("Cu")[1], 79: reference("Au")[1]}
    for s in raw.structures[::4]:  # read back from the extxyz cache
        atoms = Atoms(numbers=s.numbers, positions=s.positions, cell=s.cell, pbc=True)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        assert s.pbc == (True, True, True)
        assert s.targets["energy"][0] == pytest.approx(energy, abs=1e-6)
        np.testing.assert_allclose(s.targets["atom_energy"][:, 0], atoms.get_potential_energies(), atol=1e-6)
        assert s.targets["atom_energy"].sum() == pytest.approx(energy, abs=1e-5)
        np.testing.assert_allclose(s.targets["force_norm"][:, 0], np.linalg.norm(forces, axis=1), atol=1e-6)
        np.testing.assert_allclose(s.targets["forces"], forces, atol=1e-6)
        np.testing.assert_allclose(s.targets["stress"], atoms.get_stress(), atol=1e-9)  # ASE's Voigt order
        expected_mix = (energy - sum(refs[int(z)] for z in s.numbers)) / len(s.numbers)
        assert s.targets["mixing_energy"][0] == pytest.approx(expected_mix, abs=1e-7)


def test_unstrained_unrattled_pure_metal_is_the_reference():
    """No strain, no rattle: ideal fcc at the element's EMT lattice constant, zero forces and mixing energy."""
    frames = generate_structures(EMTAlloyOptions(elements=["Ni", "Pd"], supercell=(1, 1, 1), per_composition=1,
                                                 strain=0.0, rattle=0.0))
    pure_pd, pure_ni = frames[0], frames[-1]  # counts (0 Ni, 4 Pd) first, (4 Ni, 0 Pd) last
    assert set(pure_pd.get_chemical_symbols()) == {"Pd"} and set(pure_ni.get_chemical_symbols()) == {"Ni"}
    for atoms, element in ((pure_pd, "Pd"), (pure_ni, "Ni")):
        np.testing.assert_allclose(np.diag(atoms.cell[:]), [reference(element)[0]] * 3)
        assert abs(atoms.info["mixing_energy"]) < 1e-9
        assert atoms.arrays["force_norm"].max() < 1e-9
    mixed = frames[2]  # 2 Ni, 2 Pd: Vegard's law
    np.testing.assert_allclose(mixed.cell[0, 0], (reference("Ni")[0] + reference("Pd")[0]) / 2)


def test_every_composition_covered():
    frames = generate_structures(EMTAlloyOptions(elements=["Ag", "Pd", "Pt"], supercell=(1, 1, 1), per_composition=3))
    counts = Counter(composition(a.numbers) for a in frames)
    assert len(counts) == math.comb(4 + 2, 2) and set(counts.values()) == {3}  # all (nAg, nPd, nPt) summing to 4
    assert compositions(2, 32, 1)[0] == (0, 32) and len(compositions(2, 32, 1)) == 33
    assert compositions(3, 32, 8) == [c for c in compositions(3, 32, 1) if all(n % 8 == 0 for n in c)]
    frames = generate_structures(EMTAlloyOptions(elements=["Cu", "Au"], per_composition=1, composition_step=16,
                                                 strain=0.0, rattle=0.0))
    assert [len(a) for a in frames] == [32, 32, 32]
    assert [int((a.numbers == 29).sum()) for a in frames] == [0, 16, 32]


@pytest.mark.parametrize("options, key, allowed", [
    ({"elements": ["Fe", "Pt"]}, "dataset.options.elements", "Al, Ni, Cu, Pd, Ag, Pt, Au"),
    ({"elements": ["Cu", "O"]}, "dataset.options.elements", "Al, Ni, Cu, Pd, Ag, Pt, Au"),
    ({"lattice": "bcc"}, "dataset.options.lattice", "fcc"),
    ({"composition_step": 3}, "dataset.options.composition_step", "does not divide the 32 sites"),
    ({"supercell": [2, 0, 2]}, "dataset.options.supercell", ">= 1"),
    ({"elments": ["Cu"]}, "dataset.options.elments", ""),
])
def test_unsupported_options_name_the_key_and_the_allowed_values(options, key, allowed):
    with pytest.raises(ConfigError) as info:
        parse_options(EMTAlloyOptions, options, "dataset.options", plugin="emt-alloy")
    header, *errors = str(info.value).splitlines()
    assert "emt-alloy" in header and len(errors) == 1  # one line for the one bad option
    assert errors[0].strip().startswith(key + ":") and allowed in errors[0]


def test_cache_round_trip(tmp_path):
    cfg = load_config(None, {"dataset.name": "emt-alloy", "dataset.options": SMALL, "dataset.cache_dir": str(tmp_path),
                             "graph.periodic": True, "graph.radius": 4.0})
    first = load_dataset(cfg)
    assert any("generated now" in note for note in first.log)
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files
    raw_files = list((tmp_path / "raw").iterdir())
    assert len(raw_files) == 1 and raw_files[0].suffix == ".xyz"
    second = load_dataset(cfg)
    assert any("read from cache" in note for note in second.log)
    np.testing.assert_array_equal(first.graphs.numbers, second.graphs.numbers)
    for name in first.graphs.graph_targets:
        np.testing.assert_array_equal(first.graphs.graph_targets[name], second.graphs.graph_targets[name])
    # the raw file is reused when only the graph options change (no regeneration)
    again = load_dataset(cfg.model_copy(update={"graph": cfg.graph.model_copy(update={"radius": 3.0})}))
    assert not any("generated now" in note for note in again.log)
    assert again.graphs.num_edges.sum() < first.graphs.num_edges.sum()
