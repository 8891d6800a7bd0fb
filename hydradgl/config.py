"""The typed run configuration: one pydantic model per section, unknown keys rejected.

Plugin options (``dataset.options``, ``model.conv_options``, ``heads[i].options``) are plain dicts
here and validated against the plugin's own options model by :func:`hydradgl.configio.parse_options`
(all at once, before any data is read, by :func:`hydradgl.configio.validate_plugin_options`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean (YAML reads yes/no/on/off/true/false as booleans)")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


Number = Annotated[float, BeforeValidator(_not_bool), AfterValidator(_finite)]
"""A finite float that refuses booleans (``lr: yes`` is a typo, not 1.0). Integer keys are strict ints."""


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatasetConfig(Section):
    name: str = Field("fept", description="Dataset plugin name (see `hydradgl list-plugins`).")
    options: dict[str, Any] = Field(default_factory=dict, description="Options of the dataset plugin.")
    cache_dir: Path | None = Field(
        None, description="Where raw generated files and processed graphs are cached "
        "(default: $HYDRADGL_CACHE or ~/.cache/hydradgl).")
    skip_bad_files: bool = Field(False, strict=True, description=
                                 "Skip malformed input files (reported) instead of failing.")
    skip_incomplete: bool = Field(
        False, strict=True, description="Leave out structures lacking one of the dataset's targets (counted in "
        "the log) instead of failing.")
    in_memory: bool | None = Field(
        None, strict=True, description="Read the processed graphs into memory when they are opened, so that "
        "batches are gathered from memory instead of read from the cache files (faster training). Default: "
        "when they take at most a quarter of the memory available, shared among the "
        "processes torchrun starts on the node; false: read each batch's rows from the files (memory "
        "bounded, for data larger than memory).")


class GraphConfig(Section):
    radius: Number = Field(7.0, gt=0, description="Neighbour cutoff radius in Angstrom (paper: 7).")
    periodic: bool = Field(False, strict=True, description=
                           "Include periodic images along the structure's periodic axes.")
    max_neighbours: int | None = Field(None, strict=True, ge=1, description=
                                       "Keep at most this many nearest neighbours per atom.")


class SplitConfig(Section):
    method: Literal["stratified", "random"] = Field(
        "stratified", description="Stratify by composition (paper) or split at random.")
    fractions: tuple[Number, Number, Number] = Field(
        (0.7, 0.15, 0.15), description="Train, validation, test fractions.")
    seed: int = Field(0, strict=True, description="Seed of the split (independent of the training seed).")

    @field_validator("fractions")
    @classmethod
    def _sum_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"fractions must be non-negative and sum to 1, got {v}")
        return v


class ModelConfig(Section):
    conv: str = Field("pna", description="Conv layer plugin name.")
    conv_options: dict[str, Any] = Field(default_factory=dict, description="Options of the conv plugin.")
    hidden: int = Field(20, strict=True, ge=1, description="Width of every conv layer (paper: 20).")
    layers: int = Field(6, strict=True, ge=1, description="Number of conv layers (paper: 6).")
    norm: Literal["batch", "layer", "none"] = Field("batch", description=(
        "Normalization after each conv layer (paper: batch). A potential (forces) takes layer or none: "
        "batch statistics would couple the structures of a training batch."))
    activation: Literal["relu", "silu", "softplus", "tanh", "gelu"] = Field("relu", description=(
        "Activation function (paper: relu). A potential's forces want a smooth one (silu, softplus): relu's "
        "kink makes them jump."))
    edge_features: Literal["none", "distance", "gaussian"] = Field(
        "gaussian", description="Edge features passed to the convs: none, raw distance, or a Gaussian expansion.")
    edge_basis: int = Field(16, strict=True, ge=1, description="Number of Gaussians in the distance expansion.")
    edge_envelope: Literal["cosine", "none"] = Field(
        "cosine", description="Multiply the Gaussian edge features by a cosine cutoff envelope, so they go "
                              "smoothly to 0 at the cutoff radius (none: plain Gaussians).")


class HeadConfig(Section):
    name: str = Field(description="Head name, also the target name unless `target` is set (e.g. H, C, M).")
    target: str | None = Field(None, description="Dataset target this head predicts (default: the head name).")
    kind: str | None = Field(
        None, description="Head plugin name (default: graph-head or node-head by the target's level).")
    layers: list[Annotated[int, Field(ge=1, strict=True)]] = Field(
        default_factory=lambda: [50, 25], description="Hidden FC widths, each >= 1 (paper: 50, 25).")
    alpha: Number = Field(1.0, ge=0, description="Weight of this head's loss in the total loss.")
    loss: Literal["mse", "mae", "huber"] = Field("mse", description="Loss function of this head.")
    options: dict[str, Any] = Field(default_factory=dict, description="Options of the head plugin.")

    @property
    def target_name(self) -> str:
        return self.target or self.name


class TrainingConfig(Section):
    epochs: int = Field(200, strict=True, ge=1, description="Maximum number of epochs (paper: 200).")
    max_minutes: Number | None = Field(None, gt=0, description="Training-time budget in minutes (the epochs' "
        "time, summed over resumes): training stops after the epoch that reaches it, best.pt and last.pt kept; "
        "a resume needs a larger budget (null: no budget).")
    batch_size: int = Field(64, strict=True, ge=1, description="Graphs per batch (per process under DDP; paper: 64).")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description=(
        "Optimizer (torch's fused implementation where torch has one for the device: one kernel for all parameters)."))
    lr: Number = Field(1e-3, gt=0, description="Learning rate (paper: 1e-3).")
    weight_decay: Number = Field(0.0, ge=0, description="Weight decay.")
    patience: int | None = Field(20, strict=True, ge=1, description="Early-stopping patience in epochs (null: off).")
    lr_schedule: Literal["none", "plateau", "cosine"] = Field(
        "none", description="Learning-rate schedule: none, plateau (reduce when the validation loss stalls) or "
        "cosine (from lr down to lr * cosine_final_factor over training.epochs, or over training.max_minutes "
        "when that budget ends first; per epoch).")
    plateau_factor: Number = Field(0.5, gt=0, lt=1, description="Reduce-on-plateau factor.")
    plateau_patience: int = Field(5, strict=True, ge=1, description="Reduce-on-plateau patience in epochs.")
    cosine_final_factor: Number = Field(0.01, ge=0, lt=1, description="Cosine schedule: the last epoch's learning "
                                        "rate as a fraction of lr.")
    grad_clip: Number | None = Field(None, gt=0, description="Clip the gradient norm to this value (null: off).")
    ema_decay: Number | None = Field(
        0.99, gt=0, lt=1, description="Validate, checkpoint, test and save an exponential moving average of the "
        "weights with this decay per optimizer step (0.99: about the last 100 steps; null: the trained weights "
        "themselves). Removes the step-to-step noise from validation curves, so early stopping and best.pt "
        "follow the trend.")
    precise_bn_graphs: int | None = Field(
        512, strict=True, ge=1, description="Before each evaluation, recompute batch-norm statistics with the "
        "current weights over this many training graphs (null: keep the running averages, which are noisy).")
    seed: int = Field(0, strict=True, description="Seed of parameter init and batch order.")
    device: str = Field("auto", description="auto (this process's GPU when torch sees one, else the CPU), cpu, cuda "
                        "or cuda:N.")
    kernels: Literal["auto", "dgl", "torch"] = Field(
        "auto", description="Message-passing kernels: dgl (DGL's fused sparse kernels), torch (plain torch, any "
        "device torch supports), or auto: dgl where the installed DGL supports the device, else torch.")
    threads: int | None = Field(None, strict=True, ge=1, description=
                                "torch CPU threads per process (default: torch's).")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")


class LoggerConfig(Section):
    name: str = Field(description="Logger plugin name (see `hydradgl list-plugins`).")
    options: dict[str, Any] = Field(default_factory=dict, description="Options of the logger plugin.")


class TrackingConfig(Section):
    """Where a run's metric stream goes besides metrics.csv: TensorBoard and logger plugins (rank 0 only)."""

    tensorboard: Literal["auto", "on", "off"] = Field(
        "auto", description="TensorBoard event files in the run directory: auto (when the tensorboard package "
        "is installed), on (required), off.")
    loggers: list[LoggerConfig] = Field(
        default_factory=list, description="Logger plugins that receive the same stream, e.g. [{name: mlflow}].")

    @field_validator("loggers", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        """``loggers: [mlflow]`` is short for ``loggers: [{name: mlflow}]``."""
        return [{"name": item} if isinstance(item, str) else item for item in v] if isinstance(v, list) else v


class ParamRange(Section):
    """One searched config key: a float or int range (optionally log-scaled or stepped) or a list of choices."""

    type: Literal["float", "int", "categorical"] = Field(description="float, int or categorical.")
    low: float | None = Field(None, description="Lower bound (float, int).")
    high: float | None = Field(None, description="Upper bound, inclusive (float, int).")
    log: bool = Field(False, description="Sample on a log scale (float, int).")
    step: float | None = Field(None, gt=0, description="Grid step (float, int); not with log.")
    choices: list[Any] | None = Field(None, description="The values to choose from (categorical).")

    @model_validator(mode="after")
    def _consistent(self) -> ParamRange:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty `choices` list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs `low` and `high`")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scaled range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("`log` and `step` cannot be combined")
        if self.type == "int" and any(v is not None and v != int(v) for v in (self.low, self.high, self.step)):
            raise ValueError("an int parameter needs whole-number low, high and step")
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        """``(low, high)`` of a float or int range (the validator makes sure both are set)."""
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter has no `low` and `high`")
        return self.low, self.high


class TuneConfig(Section):
    """The hyper-parameter search of `hydradgl tune` (ignored by `hydradgl train`)."""

    space: dict[str, ParamRange] = Field(
        default_factory=dict, description="Searched keys, dotted like --set (`model.hidden`, `training.lr`, "
        "`heads.0.alpha` or `heads.H.alpha`) -> a range or choices.")
    objective: str = Field(
        "val_loss", description="What is minimized: val_loss (weighted validation loss of the kept model) or "
        "val_rmse:HEAD (that head's normalized validation RMSE).")
    trials: int = Field(20, ge=1, description="Trials in the study in all (finished ones, pruned included).")
    timeout: float | None = Field(None, gt=0, description="Stop starting new trials after this many seconds.")
    pruner: Literal["median", "halving", "none"] = Field(
        "median", description="Stop unpromising trials early on their per-epoch validation value.")
    startup_trials: int = Field(2, ge=0, description="Trials that are never pruned (the pruner's baseline).")
    warmup_epochs: int = Field(1, ge=0, description="Epochs of a trial before the median pruner may stop it.")
    baseline: bool = Field(True, description="Trial 0 trains the config as given (its own values of the searched "
                           "keys): the yardstick the search has to beat.")
    sampler: Literal["tpe", "random"] = Field("tpe", description="How trial values are chosen.")
    seed: int = Field(0, description="Seed of the sampler.")

    @field_validator("objective")
    @classmethod
    def _objective(cls, v: str) -> str:
        if v == "val_loss" or (v.startswith("val_rmse:") and v[len("val_rmse:"):]):
            return v
        raise ValueError(f"objective must be val_loss or val_rmse:HEAD, got {v!r}")


def default_heads() -> list[HeadConfig]:
    """The paper's three heads on the FePt data: mixing enthalpy H, charge transfer C, magnetic moment M."""
    return [HeadConfig(name="H"), HeadConfig(name="C"), HeadConfig(name="M")]


class RunConfig(Section):
    """Everything one training run needs."""

    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    graph: GraphConfig = Field(default_factory=GraphConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    heads: list[HeadConfig] = Field(default_factory=default_heads, min_length=1)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    output_dir: Path = Field(Path("runs/latest"), description="Run directory (config, checkpoints, metrics, plots).")

    @model_validator(mode="after")
    def _unique_heads(self) -> RunConfig:
        names = [h.name for h in self.heads]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"head names must be unique, repeated: {', '.join(dupes)}")
        return self
