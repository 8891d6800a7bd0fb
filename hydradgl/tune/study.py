"""``hydradgl tune``: an Optuna study over ``tune.space``, stored in SQLite in the tune directory.

Tune directory: ``tune.yaml`` (the base config, read again by ``--resume``), ``study.db`` (Optuna's RDB
storage; several processes may run trials against it), ``trials/trial-NNNN/`` (one run directory per
trial), and at the end ``best.yaml``, ``trials.csv`` and ``plots/``. Data is prepared once per set of
dataset/graph/split settings and shared by the trials.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from hydradgl.config import RunConfig
from hydradgl.configio import save_config
from hydradgl.data.pipeline import PreparedData, prepare_data
from hydradgl.errors import ConfigError, DataError, TrainingError
from hydradgl.plugins import Registry, get_registry
from hydradgl.train.report import LineReporter
from hydradgl.train.run import check_output_dir, train_run
from hydradgl.tune import space as search
from hydradgl.tune.report import write_report

STUDY_NAME = "hydradgl"
BASE_CONFIG = "tune.yaml"
STUDY_DB = "study.db"
HEARTBEAT_S = 10  # a running trial's heartbeat; one silent for GRACE_S (its process was killed) is retried
GRACE_S = 40
DATA_CACHE_SIZE = 3


def import_optuna():
    """Optuna, or a ConfigError that says how to install it (it is an optional dependency)."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("hydradgl tune needs Optuna: pip install 'hydradgl[tune]' (or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial is reported by hydradgl itself
    # Heartbeats (how a killed worker's trial is retried) are marked experimental; the warning is noise here.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


class DataCache:
    """Prepared data per dataset/graph/split settings (a trial that changes graph.radius needs its own);
    the least recently used entry goes when more than ``size`` are held."""

    def __init__(self, registry: Registry, log: Callable[[str], None], size: int = DATA_CACHE_SIZE):
        self.registry, self.log, self.size = registry, log, size
        self.entries: OrderedDict[str, PreparedData] = OrderedDict()

    @staticmethod
    def key(cfg: RunConfig) -> str:
        return json.dumps(cfg.model_dump(mode="json", include={"dataset", "graph", "split"}), sort_keys=True)

    def get(self, cfg: RunConfig) -> PreparedData:
        key = self.key(cfg)
        if key not in self.entries:
            data = prepare_data(cfg, self.registry, log=self.log)
            if len(data.val) == 0:
                raise DataError(f"dataset {cfg.dataset.name!r} split {tuple(cfg.split.fractions)} leaves no "
                                "validation graphs; a search needs some (more data or a larger split.fractions[1])")
            self.entries[key] = data
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        self.entries.move_to_end(key)
        return self.entries[key]


def objective_value(row: dict[str, float], objective: str) -> float:
    """The minimized number in a metrics.csv row: ``val_loss`` or ``val_<head>_rmse``."""
    return row["val_loss"] if objective == "val_loss" else row[f"val_{objective.split(':', 1)[1]}_rmse"]


def _interrupted(exc: BaseException) -> bool:
    """A TrainingError raised because the user pressed Ctrl-C (train_run turns it into one)."""
    return isinstance(exc.__context__, KeyboardInterrupt)


def make_pruner(optuna, cfg: RunConfig):
    tune = cfg.tune
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials, n_warmup_steps=tune.warmup_epochs)
    if tune.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, tune.warmup_epochs))
    return optuna.pruners.NopPruner()


def make_sampler(optuna, cfg: RunConfig, study) -> Any:
    """Seeded by ``tune.seed`` plus the trials already stored (a resumed search does not repeat itself);
    a worker joining a study with running trials adds its process id so workers sample differently."""
    trials = study.get_trials(deepcopy=False)
    seed = cfg.tune.seed + len(trials)
    if any(t.state == optuna.trial.TrialState.RUNNING for t in trials):
        seed += os.getpid()
    if cfg.tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # TPE's random start: a quarter of the budget (2 to 10 trials), so short searches still get to model.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, cfg.tune.trials // 4)))


def open_study(optuna, cfg: RunConfig, out_dir: Path):
    """The study in ``out_dir/study.db``, created on first use; trials of killed workers are retried."""
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)  # Optuna >= 4.9
    stale = ({"heartbeat_stale_trial_callback": retry(max_retry=1)} if retry is not None
             else {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1)})
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{(out_dir / STUDY_DB).resolve()}", heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
        engine_kwargs={"connect_args": {"timeout": 60}}, **stale)  # parallel workers wait for SQLite's lock
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, direction="minimize", load_if_exists=True)
    study.sampler = make_sampler(optuna, cfg, study)
    study.pruner = make_pruner(optuna, cfg)
    return study


def prepare_tune_dir(cfg: RunConfig, out_dir: Path, resume: bool) -> None:
    """Write ``tune.yaml`` (on resume too: a raised ``--trials`` then holds for later workers); a new search
    refuses a directory that already holds a study, a resumed one needs it."""
    if resume and not (out_dir / STUDY_DB).exists():
        raise ConfigError(f"{out_dir}: no {STUDY_DB} to resume; start a search with `hydradgl tune -o {out_dir}`")
    if not resume and (out_dir / STUDY_DB).exists():
        raise ConfigError(f"{out_dir} already holds a study ({STUDY_DB}): continue it with "
                          f"`hydradgl tune --resume {out_dir}`, or choose another --output")
    check_output_dir(out_dir)
    save_config(cfg, out_dir / BASE_CONFIG)


def trial_line(trial, space: dict, objective: str) -> str:
    """One line per finished trial: its values and its result."""
    values = "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in search.decode(space, trial.params).items())
    seconds = f"({trial.duration.total_seconds():.1f} s)" if trial.duration else ""
    state = trial.state.name
    if state == "COMPLETE":
        result = f"{objective} {trial.value:.4e}"
    elif state == "PRUNED":
        result = f"pruned after epoch {trial.last_step}" if trial.last_step is not None else "pruned"
    else:
        result = "failed" + (f": {trial.user_attrs['error']}" if "error" in trial.user_attrs else "")
    return f"trial {trial.number:>3}  {result}  {values}  {seconds}"


@dataclass
class TuneResult:
    out_dir: Path
    study: Any  # optuna.Study
    best_config: RunConfig | None


def run_tune(cfg: RunConfig, out_dir: Path, resume: bool = False, registry: Registry | None = None,
             console: Console | None = None, quiet: bool = False, results: Console | None = None) -> TuneResult:
    """Run trials until the study holds ``tune.trials`` finished ones (or ``tune.timeout`` passes), then
    report: the best trials, ``best.yaml``, ``trials.csv``, plots. Progress goes to ``console`` (stderr),
    the table of best trials to ``results`` (stdout)."""
    optuna = import_optuna()
    registry = registry or get_registry()
    console = console or Console(stderr=True)
    say = (lambda msg: None) if quiet else (lambda msg: console.print(msg, highlight=False))
    out_dir = Path(out_dir)
    cfg = cfg.model_copy(update={"output_dir": out_dir})
    search.check_space(cfg)
    prepare_tune_dir(cfg, out_dir, resume)
    study = open_study(optuna, cfg, out_dir)
    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    finished = len(study.get_trials(deepcopy=False, states=counted))
    if not study.trials and cfg.tune.baseline:
        values, why = search.baseline_values(cfg)
        if values:
            study.enqueue_trial(values, user_attrs={"baseline": True})
        else:
            say(f"the config as given is not run as a trial: {why}")
    data = DataCache(registry, say)
    space, objective_name = cfg.tune.space, cfg.tune.objective

    def objective(trial) -> float:
        values = search.suggest(trial, space)
        run_cfg = search.apply_values(cfg, values, out_dir / "trials" / f"trial-{trial.number:04d}")
        trial.set_user_attr("run_dir", str(run_cfg.output_dir))

        def report(row: dict[str, float]) -> None:
            epoch = int(row["epoch"])
            trial.report(objective_value(row, objective_name), epoch)
            if epoch < run_cfg.training.epochs and trial.should_prune():  # a finished trial is kept
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        try:
            result = train_run(run_cfg, registry, reporter=LineReporter(console.file), quiet=True,
                               data=data.get(run_cfg), plots_enabled=False, on_epoch=report)
        except TrainingError as exc:
            if _interrupted(exc):
                raise KeyboardInterrupt from None
            trial.set_user_attr("error", str(exc))
            return float("nan")  # Optuna marks the trial failed; the search goes on
        best = min(result.history, key=lambda row: row["val_loss"])  # the epoch whose weights were kept
        trial.set_user_attr("best_epoch", int(best["epoch"]))
        return objective_value(best, objective_name)

    def announce(study_, trial) -> None:
        say(trial_line(trial, space, objective_name))

    remaining = cfg.tune.trials - finished
    if remaining > 0:
        say(f"tuning {len(space)} key(s) over {remaining} more trial(s) (study {out_dir / STUDY_DB}, "
            f"{finished} finished before), objective {objective_name}, pruner {cfg.tune.pruner}")
        try:
            study.optimize(objective, n_trials=remaining, timeout=cfg.tune.timeout, catch=(),
                           callbacks=[optuna.study.MaxTrialsCallback(cfg.tune.trials, states=counted), announce])
        except KeyboardInterrupt:
            raise TrainingError(f"tuning interrupted; the finished trials are in {out_dir / STUDY_DB}: "
                                f"continue with `hydradgl tune --resume {out_dir}`") from None
    else:
        say(f"the study already holds {finished} finished trial(s) (tune.trials = {cfg.tune.trials}); "
            "raise --trials to run more")
    best_config = write_report(study, cfg, out_dir, console, results or Console(), quiet)
    return TuneResult(out_dir, study, best_config)
