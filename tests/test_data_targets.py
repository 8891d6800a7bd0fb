"""TargetInfo.extensive: which readout fits a graph target, declared by datasets and reader options."""

from __future__ import annotations

import pytest

from hydradgl.configio import parse_options
from hydradgl.data.records import TargetInfo
from hydradgl_plugins.datasets.extxyz import ExtxyzOptions
from hydradgl_plugins.datasets.lsms import LSMSOptions, derived_targets


@pytest.mark.parametrize("info, readout", [
    (TargetInfo(level="graph", extensive=True), "sum"),
    (TargetInfo(level="graph", extensive=False), "mean"),
    (TargetInfo(level="graph"), None),
    (TargetInfo(level="node", extensive=True), None),
])
def test_readout_follows_extensivity(info, readout):
    assert info.readout == readout


def test_reader_options_declare_extensivity():
    options = parse_options(ExtxyzOptions, {"path": "x.xyz", "targets": {
        "E": {"key": "energy", "level": "graph", "unit": "eV", "extensive": True},
        "e": {"key": "e_per_atom", "level": "graph", "extensive": False},
        "q": {"key": "charges", "level": "node"}}}, "dataset.options")
    infos = {name: t.info() for name, t in options.targets.items()}
    assert [infos[n].readout for n in ("E", "e", "q")] == ["sum", "mean", None]
    assert derived_targets(LSMSOptions(path="x"))["H"].extensive is True  # LSMS/FePt mixing enthalpy: per cell, in Ry
