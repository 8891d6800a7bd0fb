"""Ensemble training: N members (seeds, optional bootstrap of the training split) on one data set.

The members are ordinary run directories under one folder beside its manifest
(:func:`hydradgl.train.rundir.write_manifest`); :func:`hydradgl.load` loads the folder as one model and
:func:`hydradgl.api.evaluate_ensemble` judges its uncertainty.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from hydradgl.config import RunConfig
from hydradgl.data.pipeline import PreparedData, prepare_data
from hydradgl.errors import TrainingError
from hydradgl.plugins import Registry, get_registry
from hydradgl.train.report import LineReporter, Reporter
from hydradgl.train.run import train_run
from hydradgl.train.rundir import write_manifest


def bootstrap(data: PreparedData, seed: int) -> PreparedData:
    """The same data with the training split resampled with replacement (validation and test untouched)."""
    idx = np.random.default_rng(seed).integers(0, len(data.train), len(data.train))
    return replace(data, train=data.train.subset(np.sort(idx)))


def train_ensemble(cfg: RunConfig, members: int, use_bootstrap: bool = False, registry: Registry | None = None,
                   reporter: Reporter | None = None, quiet: bool = False, plots_enabled: bool = True,
                   overwrite: bool = False) -> Path:
    """Train ``members`` runs (seeds ``seed .. seed+members-1``) into ``output_dir/member-k`` on one data set.

    ``reporter`` gets one line per member and the members' warnings (default: plain lines on stderr);
    ``quiet`` passes it only the warnings."""
    if members < 2:
        raise TrainingError(f"--ensemble {members}: an ensemble needs at least 2 members")
    registry = registry or get_registry()
    reporter = reporter or LineReporter()
    say = (lambda msg: None) if quiet else reporter.message
    root = Path(cfg.output_dir)
    data = prepare_data(cfg, registry, log=None if quiet else reporter.message)
    names, seeds = [], []
    for k in range(members):
        member = cfg.model_copy(deep=True)
        member.training.seed = cfg.training.seed + k
        member.output_dir = root / f"member-{k}"
        member_data = bootstrap(data, member.training.seed) if use_bootstrap else data
        result = train_run(member, registry, reporter=reporter, quiet=True, data=member_data,
                           plots_enabled=plots_enabled, overwrite=overwrite)
        names.append(f"member-{k}")
        seeds.append(member.training.seed)
        scores = "  ".join(f"{h} {m['rmse']:.3e}" for h, m in result.test.items())
        say(f"member {k} (seed {member.training.seed}): test RMSE (norm.) {scores}  ({result.seconds:.1f} s)")
    write_manifest(root, names, seeds, use_bootstrap)
    say(f"ensemble of {members} written to {root} (load it with hydradgl.load({str(root)!r}))")
    return root
