"""tests/bench/bench_gpu.py is ready for a GPU: its arguments, its peak table, and a clear skip
without CUDA (the GPU figures themselves need a GPU machine)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peak_table_and_override(bench):
    assert bench.peak_tflops("NVIDIA H200", None) == (989.0, "table (H200)")
    assert bench.peak_tflops("NVIDIA H100 PCIe", None)[0] == 756.0
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3", None)[0] == 989.0
    assert bench.peak_tflops("NVIDIA A100-SXM4-80GB", None)[0] == 312.0
    assert bench.peak_tflops("NVIDIA GeForce RTX 4090", None)[0] == 165.0
    assert bench.peak_tflops("Some New GPU", None) == (None, "unknown GPU: pass --peak-tflops")
    assert bench.peak_tflops("NVIDIA H200", 500.0) == (500.0, "--peak-tflops")


def test_arguments(bench):
    a = bench.parse_args(["--modes", "qlora", "--peak-tflops", "400", "--seq", "1024"])
    assert a.mode_list == ["qlora"] and a.peak_tflops == 400.0 and a.seq == 1024
    assert bench.parse_args([]).mode_list == ["lora", "qlora"]
    for bad in (["--modes", "fp8"], ["--steps", "0"], ["--checkpointing", "maybe"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


@pytest.mark.slow
def test_without_cuda_it_says_so_and_skips():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the benchmark would run for real")
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0
    assert "needs a CUDA GPU" in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"bench": "gpu",
                                                                "skipped": "no GPU"}
