"""The conv variants the benchmarks compare in one run: config overrides on top of the paper model."""

from __future__ import annotations

VARIANTS: dict[str, dict] = {
    "pna (edge features)": {"model.conv_options": {"use_edge_features": True}},
    "pna (no edge features)": {},  # the default: the paper's PNA
    "cgcnn": {"model.conv": "cgcnn"},
    "schnet": {"model.conv": "schnet"},
    "egnn": {"model.conv": "egnn"},
}
BASELINE = "pna (no edge features)"
