"""Built-in head plugins: graph-level (readout + FC) and node-level (per-atom FC)."""
