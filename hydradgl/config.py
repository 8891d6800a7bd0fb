"""The typed run configuration: one pydantic model per section, unknown keys rejected.

Plugin options (``dataset.options``, ``model.conv_options``, ``heads[i].options``) are plain dicts
here and validated against the plugin's own options model by :func:`hydradgl.configio.resolve`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatasetConfig(Section):
    name: str = Field("fept", description="Dataset plugin name (see `hydradgl list-plugins`).")
    options: dict[str, Any] = Field(default_factory=dict, description="Options of the dataset plugin.")
    cache_dir: Path | None = Field(
        None, description="Where raw generated files and processed graphs are cached "
        "(default: $HYDRADGL_CACHE or ~/.cache/hydradgl).")
    skip_bad_files: bool = Field(False, description="Skip malformed input files (reported) instead of failing.")


class GraphConfig(Section):
    radius: float = Field(7.0, gt=0, description="Neighbour cutoff radius in Angstrom (paper: 7).")
    periodic: bool = Field(False, description="Include periodic images along the structure's periodic axes.")
    max_neighbours: int | None = Field(None, ge=1, description="Keep at most this many nearest neighbours per atom.")


class SplitConfig(Section):
    method: Literal["stratified", "random"] = Field(
        "stratified", description="Stratify by composition (paper) or split at random.")
    fractions: tuple[float, float, float] = Field((0.7, 0.15, 0.15), description="Train, validation, test fractions.")
    seed: int = Field(0, description="Seed of the split (independent of the training seed).")

    @field_validator("fractions")
    @classmethod
    def _sum_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"fractions must be non-negative and sum to 1, got {v}")
        return v


class ModelConfig(Section):
    conv: str = Field("pna", description="Conv layer plugin name.")
    conv_options: dict[str, Any] = Field(default_factory=dict, description="Options of the conv plugin.")
    hidden: int = Field(20, ge=1, description="Width of every conv layer (paper: 20).")
    layers: int = Field(6, ge=1, description="Number of conv layers (paper: 6).")
    norm: Literal["batch", "layer", "none"] = Field("batch", description="Normalization after each conv layer.")
    activation: Literal["relu", "silu", "softplus", "tanh", "gelu"] = Field("relu", description="Activation function.")
    edge_features: Literal["none", "distance", "gaussian"] = Field(
        "gaussian", description="Edge features passed to the convs: none, raw distance, or a Gaussian expansion.")
    edge_basis: int = Field(16, ge=1, description="Number of Gaussians in the distance expansion.")
    edge_envelope: Literal["cosine", "none"] = Field(
        "cosine", description="Multiply the Gaussian edge features by a cosine cutoff envelope, so they go "
                              "smoothly to 0 at the cutoff radius (none: plain Gaussians).")


class HeadConfig(Section):
    name: str = Field(description="Head name, also the target name unless `target` is set (e.g. H, C, M).")
    target: str | None = Field(None, description="Dataset target this head predicts (default: the head name).")
    kind: str | None = Field(None, description="Head plugin name (default: graph-head or node-head by the target's level).")
    layers: list[int] = Field(default_factory=lambda: [50, 25], description="Hidden FC widths (paper: 50, 25).")
    alpha: float = Field(1.0, ge=0, description="Weight of this head's loss in the total loss.")
    loss: Literal["mse", "mae", "huber"] = Field("mse", description="Loss function of this head.")
    options: dict[str, Any] = Field(default_factory=dict, description="Options of the head plugin.")

    @property
    def target_name(self) -> str:
        return self.target or self.name


class TrainingConfig(Section):
    epochs: int = Field(200, ge=1, description="Maximum number of epochs (paper: 200).")
    batch_size: int = Field(64, ge=1, description="Graphs per batch (per process under DDP; paper: 64).")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="Optimizer.")
    lr: float = Field(1e-3, gt=0, description="Learning rate (paper: 1e-3).")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay.")
    patience: int | None = Field(20, ge=1, description="Early-stopping patience in epochs (null: off).")
    lr_schedule: Literal["none", "plateau"] = Field("none", description="Learning-rate schedule.")
    plateau_factor: float = Field(0.5, gt=0, lt=1, description="Reduce-on-plateau factor.")
    plateau_patience: int = Field(5, ge=1, description="Reduce-on-plateau patience in epochs.")
    grad_clip: float | None = Field(None, gt=0, description="Clip the gradient norm to this value (null: off).")
    precise_bn_graphs: int | None = Field(
        2048, ge=1, description="Before each evaluation, recompute batch-norm statistics with the current weights "
                                "over this many training graphs (null: keep the running averages, which are noisy).")
    seed: int = Field(0, description="Seed of parameter init and batch order.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads per process (default: torch's).")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")


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
    output_dir: Path = Field(Path("runs/latest"), description="Run directory (config, checkpoints, metrics, plots).")

    @model_validator(mode="after")
    def _unique_heads(self) -> "RunConfig":
        names = [h.name for h in self.heads]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"head names must be unique, repeated: {', '.join(dupes)}")
        return self
