"""Atomistic data: records, graph construction, normalization, splits, cache and batching."""
