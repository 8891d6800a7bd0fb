"""LSMS reader: round trip, derived targets checked by hand, every bad-input case named by file and line."""

from __future__ import annotations

import numpy as np
import pytest

from hydradgl.errors import DataError
from hydradgl.plugins import DatasetContext
from hydradgl_plugins.datasets.lsms import LSMSOptions, load_lsms, read_lsms, write_lsms

POS = np.array([[0.0, 0.0, 0.0], [1.38, 1.38, 1.87], [2.76, 0.0, 0.0]])


def write(folder, name, energy, numbers, charges, moments, positions=POS):
    write_lsms(folder / name, energy, np.array(numbers), positions[: len(numbers)], np.array(charges), np.array(moments))


def test_round_trip(tmp_path):
    write(tmp_path, "a.lsms", -1234.5678901234, [26, 78, 26], [25.9, 78.2, 25.9], [2.5, 0.1, 2.4])
    graph, table = read_lsms(tmp_path / "a.lsms")
    assert graph[0] == pytest.approx(-1234.5678901234, abs=1e-9)
    np.testing.assert_allclose(table[:, 0], [26, 78, 26])
    np.testing.assert_allclose(table[:, 2:5], POS, atol=1e-6)
    np.testing.assert_allclose(table[:, 5], [25.9, 78.2, 25.9])
    np.testing.assert_allclose(table[:, 6], [2.5, 0.1, 2.4])


def test_charge_transfer_and_mixing_enthalpy_by_hand(tmp_path):
    # pure Fe: -100 Ry for 3 atoms -> e_Fe = -33.333..; pure Pt: -900 for 3 -> e_Pt = -300
    write(tmp_path, "fe.lsms", -100.0, [26, 26, 26], [26, 26, 26], [2.2, 2.2, 2.2])
    write(tmp_path, "pt.lsms", -900.0, [78, 78, 78], [78, 78, 78], [0, 0, 0])
    write(tmp_path, "mix.lsms", -366.0, [26, 78, 26], [25.8, 78.4, 25.8], [2.5, 0.1, 2.4])
    raw = load_lsms(LSMSOptions(path=tmp_path, pattern="*.lsms"), DatasetContext(cache_dir=tmp_path))
    mix = next(s for s in raw.structures if s.source.endswith("mix.lsms"))
    expected_h = -366.0 - (2 * (-100.0 / 3) + (-300.0))
    assert mix.targets["H"][0] == pytest.approx(expected_h)
    np.testing.assert_allclose(mix.targets["C"][:, 0], [-0.2, 0.4, -0.2], atol=1e-9)
    np.testing.assert_allclose(mix.targets["M"][:, 0], [2.5, 0.1, 2.4])
    assert any("pure-element" in note for note in raw.log)
    given = load_lsms(LSMSOptions(path=tmp_path / "mix.lsms", reference_energies={26: -30.0, 78: -310.0}),
                      DatasetContext(cache_dir=tmp_path))
    assert given.structures[0].targets["H"][0] == pytest.approx(-366.0 - (-60.0 - 310.0))
    assert any("from the config" in note for note in given.log)


def test_missing_reference_energy_is_explained(tmp_path):
    write(tmp_path, "mix.lsms", -366.0, [26, 78, 26], [25.8, 78.4, 25.8], [2.5, 0.1, 2.4])
    with pytest.raises(DataError, match=r"no reference energy for element\(s\) \[26, 78\]"):
        load_lsms(LSMSOptions(path=tmp_path), DatasetContext(cache_dir=tmp_path))


GOOD = "-10.0\n26 0 0 0 0 26 2\n78 1 1.4 1.4 1.9 78 0.1\n"
BAD_CASES = {
    "empty": ("", r"empty file"),
    "columns": ("-10.0\n26 0 0 0 0 26 2\n78 1 1.4 1.4 1.9 78\n", r":3: expected 7 columns"),
    "too_few": ("-10.0\n26 0 0 0 0 26\n", r":2: expected at least 7 columns"),
    "non_numeric": ("-10.0\n26 0 0 0 0 26 2\n78 1 1.4 abc 1.9 78 0.1\n", r":3: expected a number, got 'abc'"),
    "nan": ("-10.0\n26 0 0 0 0 26 nan\n", r":2: value 'nan' is not finite"),
    "inf_energy": ("inf\n26 0 0 0 0 26 2\n", r":1: value 'inf' is not finite"),
    "element": ("-10.0\n26 0 0 0 0 26 2\n130 1 1.4 1.4 1.9 78 0.1\n", r":3: unknown element, proton number 130"),
    "index": ("-10.0\n26 0 0 0 0 26 2\n78 5 1.4 1.4 1.9 78 0.1\n", r":3: atom index 5, expected 1"),
    "same_position": ("-10.0\n26 0 0 0 0 26 2\n78 1 0 0 0 78 0.1\n", r"lines 2 and 3 sit at the same position"),
    "no_atoms": ("-10.0\n", r"no atom lines"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_names_file_and_line(tmp_path, case):
    text, pattern = BAD_CASES[case]
    path = tmp_path / f"{case}.lsms"
    path.write_text(text)
    with pytest.raises(DataError, match=pattern) as err:
        read_lsms(path)
    assert str(path) in str(err.value)


def test_atom_count_mismatch(tmp_path):
    (tmp_path / "a.lsms").write_text(GOOD)
    with pytest.raises(DataError, match="expected 32 atoms, found 2"):
        read_lsms(tmp_path / "a.lsms", num_atoms=32)


def test_skip_bad_files_reports_them(tmp_path):
    write(tmp_path, "fe.lsms", -100.0, [26, 26, 26], [26, 26, 26], [2.2, 2.2, 2.2])
    (tmp_path / "broken.lsms").write_text("-1\n26 0 0 0 0 x 1\n")
    with pytest.raises(DataError, match="broken.lsms:2"):
        load_lsms(LSMSOptions(path=tmp_path), DatasetContext(cache_dir=tmp_path))
    raw = load_lsms(LSMSOptions(path=tmp_path), DatasetContext(cache_dir=tmp_path, skip_bad_files=True))
    assert len(raw.structures) == 1 and len(raw.skipped) == 1 and "broken.lsms:2" in raw.skipped[0]
    assert any("1 file(s) skipped; most common reason (1 of them): expected a number, got 'x'" in n for n in raw.log)


def test_nan_target_in_pipeline_is_refused(tmp_path):
    from hydradgl.data.packing import check_finite
    from hydradgl.data.records import RawDataset, Structure

    s = Structure(numbers=np.array([26]), positions=np.zeros((1, 3)), targets={"M": np.array([[np.nan]])},
                  source="x.lsms")
    with pytest.raises(DataError, match="x.lsms: target 'M' has NaN"):
        check_finite(RawDataset(structures=[s], targets={}))


def test_declared_atom_count_header(tmp_path):
    path = tmp_path / "a.lsms"
    path.write_text("# atoms: 2\n" + GOOD)
    assert read_lsms(path)[1].shape[0] == 2
    path.write_text("-10.0\n# atoms: 3\n26 0 0 0 0 26 2\n78 1 1.4 1.4 1.9 78 0.1\n")
    with pytest.raises(DataError, match=r"a.lsms:2: header declares 3 atoms, found 2 atom lines"):
        read_lsms(path)
    path.write_text("# atoms: many\n" + GOOD)
    with pytest.raises(DataError, match=r"a.lsms:1: '# atoms:' header must give a whole number, got 'many'"):
        read_lsms(path)


def test_column_mapping_and_extra_inputs(tmp_path):
    # graph line: energy in column 1; atoms: charge in column 7, moment in 5, an extra input in column 6
    (tmp_path / "a.lsms").write_text("7.5 -10.0\n26 0 0 0 0 2.5 0.3 25.9\n78 1 1.4 1.4 1.9 0.2 0.7 78.1\n")
    options = LSMSOptions(path=tmp_path / "a.lsms", energy_column=1, charge_column=7, moment_column=5,
                          reference_energies={26: -2.0, 78: -3.0}, input_columns={"spin": 6},
                          extra_targets={"X": {"column": 0, "level": "graph", "unit": "u"}})
    raw = load_lsms(options, DatasetContext(cache_dir=tmp_path))
    s = raw.structures[0]
    assert s.targets["H"].tolist() == [pytest.approx(-5.0)] and s.targets["X"].tolist() == [7.5]
    np.testing.assert_allclose(s.targets["C"][:, 0], [-0.1, 0.1], atol=1e-12)
    np.testing.assert_allclose(s.targets["M"][:, 0], [2.5, 0.2])
    np.testing.assert_allclose(s.node_inputs["spin"][:, 0], [0.3, 0.7])
    assert raw.node_inputs == {"spin": 1} and raw.targets["X"].unit == "u"
    with pytest.raises(DataError, match=r"a.lsms: dataset.options.moment_column = 9 but the file has 8 atom-line"):
        load_lsms(options.model_copy(update={"moment_column": 9}), DatasetContext(cache_dir=tmp_path))


def test_comment_lines_mentioning_atoms_are_comments(tmp_path):
    """Only ``# atoms: N`` (a number) declares the count; ``# atoms listed below`` is a plain comment."""
    (tmp_path / "a.lsms").write_text("# atoms listed below\n-1\n26 0 0 0 0 26 2\n78 1 2 0 0 78 0\n")
    assert read_lsms(tmp_path / "a.lsms")[1].shape == (2, 7)
    (tmp_path / "b.lsms").write_text("# atoms 3\n-1\n26 0 0 0 0 26 2\n78 1 2 0 0 78 0\n")
    with pytest.raises(DataError, match="b.lsms:1: header declares 3 atoms, found 2"):
        read_lsms(tmp_path / "b.lsms")


def test_type_indices_map_to_species_in_order(tmp_path):
    (tmp_path / "t.lsms").write_text("-1\n0 0 0 0 0 26.1 2\n1 1 2 0 0 77.8 0\n")
    _, table = read_lsms(tmp_path / "t.lsms", species_by_type=[26, 78])
    assert table[:, 0].tolist() == [26, 78]
    raw = load_lsms(LSMSOptions(path=tmp_path, species_by_type=[26, 78], derived=["C"]),
                    DatasetContext(cache_dir=tmp_path))
    np.testing.assert_allclose(raw.structures[0].targets["C"][:, 0], [0.1, -0.2], atol=1e-9)
    with pytest.raises(DataError, match=r"t.lsms:3: type index 1, expected 0..0"):
        read_lsms(tmp_path / "t.lsms", species_by_type=[26])


def test_reference_energies_only_when_h_is_requested(tmp_path):
    write(tmp_path, "mix.lsms", -366.0, [26, 78, 26], [25.8, 78.4, 25.8], [2.5, 0.1, 2.4])
    with pytest.raises(DataError, match="no reference energy for element"):
        load_lsms(LSMSOptions(path=tmp_path), DatasetContext(cache_dir=tmp_path, targets=frozenset({"H", "C"})))
    raw = load_lsms(LSMSOptions(path=tmp_path), DatasetContext(cache_dir=tmp_path, targets=frozenset({"C", "M"})))
    assert set(raw.targets) == {"C", "M"} and "H" not in raw.structures[0].targets
    assert any("H not derived" in note for note in raw.log)
    given = load_lsms(LSMSOptions(path=tmp_path, reference_energies={26: -33.0, 78: -300.0}),
                      DatasetContext(cache_dir=tmp_path, targets=frozenset({"C"})))
    assert given.structures[0].targets["H"][0] == pytest.approx(-366.0 + 366.0)  # derived when it can be


def test_units_and_derived_targets_are_options(tmp_path):
    write(tmp_path, "fe.lsms", -100.0, [26, 26, 26], [26, 26, 26], [2.2, 2.2, 2.2])
    raw = load_lsms(LSMSOptions(path=tmp_path, energy_unit="eV", moment_unit="muB", derived=["H", "M"]),
                    DatasetContext(cache_dir=tmp_path))
    assert set(raw.targets) == {"H", "M"} and raw.targets["H"].unit == "eV" and raw.targets["M"].unit == "muB"
    assert raw.targets["H"].description.startswith("derived:") and any("(eV/atom)" in n for n in raw.log)


def test_all_files_skipped_names_the_most_common_reason(tmp_path):
    for i in range(3):
        (tmp_path / f"t{i}.lsms").write_text("-1\n0 0 0 0 0 26 2\n1 1 2 0 0 78 0\n")
    (tmp_path / "x.lsms").write_text("-1\n26 0 0 0 0 x 1\n")
    with pytest.raises(DataError, match=r"4 file\(s\) skipped; most common reason \(3 of them\): unknown element, "
                                        r"proton number 0"):
        load_lsms(LSMSOptions(path=tmp_path), DatasetContext(cache_dir=tmp_path, skip_bad_files=True))
