"""The conv variants the benchmarks compare in one run: config overrides on top of the paper model."""

from __future__ import annotations

VARIANTS: dict[str, dict] = {
    "pna (edge features)": {"model.conv_options": {"use_edge_features": True}},
    "pna (edge features, also in min/max)": {"model.conv_options": {"use_edge_features": True,
                                                                     "edge_features_in_extrema": True}},
    "pna (no edge features)": {"model.conv_options": {"use_edge_features": False}},  # the paper's PNA
    "cgcnn": {"model.conv": "cgcnn"},
    "schnet": {"model.conv": "schnet"},
    "egnn": {"model.conv": "egnn"},
}
BASELINE = "pna (no edge features)"
