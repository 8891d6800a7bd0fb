"""Prediction input: new structure files read by a dataset plugin's reader, graphs built by the model's contract.

Which reader reads a file: the saved run's own dataset plugin (with the run's dataset options, so LSMS
files get the training lattice), unless the file's name ends with a suffix that only another
plugin claims (``DatasetSpec.suffixes``: endings of the file name, e.g. ``.xyz`` for extxyz, ``OUTCAR``
for ase). Core knows no reader by name.
"""

from __future__ import annotations

from pathlib import Path

from hydradgl.config import DatasetConfig
from hydradgl.configio import parse_options
from hydradgl.data.graphset import GraphSet
from hydradgl.data.packing import assign_species, pack
from hydradgl.data.records import DatasetInfo, Structure
from hydradgl.errors import DataError
from hydradgl.plugins import DatasetSpec, Registry, get_registry


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return [p for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")]
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder")
    return [path]


def _claims(spec: DatasetSpec, path: Path) -> bool:
    """Whether ``spec`` claims ``path`` (its name ends with one of ``spec.suffixes``)."""
    return any(path.name.endswith(suffix) for suffix in spec.suffixes)


def _reader(path: Path, own: DatasetSpec, registry: Registry) -> DatasetSpec | None:
    """The plugin that reads ``path``: the run's own unless another one claims the file's name ending."""
    if own.read_structures is not None and (not own.suffixes or _claims(own, path)):
        return own
    claims = [registry.dataset(n) for n in registry.names("dataset")]
    claims = [s for s in claims if s.read_structures is not None and _claims(s, path)]
    return claims[0] if claims else (own if own.read_structures is not None else None)


def read_for_prediction(paths: list[Path], dataset: DatasetConfig, registry: Registry | None = None) -> list[Structure]:
    """Structures (no targets needed) from files or folders, each read by the plugin that claims it."""
    registry = registry or get_registry()
    own = registry.dataset(dataset.name)
    own_options = parse_options(own.options, dataset.options, "dataset.options", plugin=own.name)
    structures: list[Structure] = []
    for path in (p for given in paths for p in _files(Path(given))):
        spec = _reader(path, own, registry)
        read = spec.read_structures if spec is not None else None
        if read is None:
            raise DataError(f"{path}: the model's dataset plugin {own.name!r} has no reader for single files "
                            "(DatasetSpec.read_structures) and no other plugin claims this file name's suffix")
        structures.extend(read(path, own_options if spec is own else None))
    if not structures:
        raise DataError(f"no structures found in {', '.join(map(str, paths))}")
    return structures


def graphs_for_prediction(paths: list[Path], info: DatasetInfo, dataset: DatasetConfig,
                          registry: Registry | None = None) -> GraphSet:
    """Graphs of new structures, built by the model's contract: its graph settings and species table."""
    if info.graph is None:
        raise DataError("the model's data contract has no graph settings (load it with load_run, which fills them in)")
    structures = read_for_prediction(paths, dataset, registry)
    for s in structures:
        missing = [k for k in info.node_inputs if k not in s.node_inputs]
        if missing:
            raise DataError(f"{s.source}: this model needs the per-atom inputs {', '.join(missing)}, which the "
                            "reader did not give for this file")
    graphs = pack(structures, {}, info.node_inputs, info.graph)
    return assign_species(graphs, info.species)
