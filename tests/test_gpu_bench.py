"""bench/gpu.py's CPU dry run: the tiny configuration through the same code path a GPU machine runs (every memory
mode, the FLOP count, diffusers' recipe on the same modules), so the benchmark is ready when a GPU is lent."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_gpu_benchmark_dry_run_writes_its_table(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--dry-run", "--json", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {(r["case"], r["mode"]) for r in report["rows"]}
    assert rows == {(case, mode) for case in ("distilled", "two-stage")
                    for mode in ("resident", "release", "fp8", "stream")}
    for row in report["rows"]:
        assert row["seconds"]["total"] > 0 and row["planned_bytes"] > 0
        assert set(row["step_seconds"]) == {"stage1", "stage2"} and row["tflops"]["stage1"] > 0
    assert report["diffusers"]["two-stage"]["total"] > 0
    assert "shot | mode | total s" in proc.stdout and "two-stage: ours" in proc.stdout


def test_gpu_benchmark_without_a_gpu_says_how_to_run_it(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device here" in proc.stderr and "Traceback" not in proc.stderr
