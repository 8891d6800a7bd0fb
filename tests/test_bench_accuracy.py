"""benchmarks/bench_accuracy.py --quick: runs end to end; its baselines are computed on the runs' own split."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from hydradgl.data.normalize import Normalizer
from hydradgl.data.pipeline import prepare_data

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_accuracy.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def table_row(text: str, dataset: str, label: str) -> list[str]:
    section = text.split(f"### {dataset}")[1].split("###")[0]
    line = next(l for l in section.splitlines() if l.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_quick_benchmark_table(tmp_path):
    bench = load_script()
    markdown = tmp_path / "accuracy.md"
    argv = ["--quick", "--convs", "pna", "--output-dir", str(tmp_path / "runs"), "--markdown", str(markdown)]
    text = bench.main(argv)
    assert markdown.read_text() == text
    for dataset, first_head in (("emt-alloy", "energy"), ("fept", "H")):
        for label in ("pna (no edges)", "pna (edges)"):  # pna has use_edge_features: both variants run
            row = table_row(text, dataset, label)
            assert row[1] == "2" and float(row[2]) > 0 and float(row[3]) > 0  # epochs, s/epoch, graphs/s
            assert np.isfinite(float(row[4].split()[0]))
            run = tmp_path / "runs" / dataset / label.replace(" ", "_").replace("(", "").replace(")", "")
            assert (run / "test_metrics.json").exists()
        # the training-mean baseline, recomputed independently on the same split as the runs
        args = bench.argparse.Namespace(quick=True, threads=2, device="cpu", output_dir=str(tmp_path / "runs"))
        data = prepare_data(bench.dataset_config(dataset, args))
        norm = Normalizer.from_info(data.info)
        train, test = norm.restore(data.train), norm.restore(data.test)
        values_train, values_test = train.graph_targets[first_head], test.graph_targets[first_head]
        expected = np.sqrt(np.mean((values_test - values_train.mean()) ** 2))
        assert float(table_row(text, dataset, "training mean")[4]) == pytest.approx(expected, rel=1e-3)


def test_unknown_conv_is_refused():
    bench = load_script()
    with pytest.raises(SystemExit, match=re.escape("--convs: unknown conv nope")):
        bench.main(["--quick", "--convs", "nope", "--datasets", "fept"])
