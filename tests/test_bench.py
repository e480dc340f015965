"""bench/gpu_check.sh's smoke mode: the GPU check's code path (random-weight shapes, the memory planner's K,
the policy step) on a tiny shape on CPU, so a broken script is found before a GPU is spent on it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_gpu_check_smoke_runs_every_part(tmp_path, shared_data):
    done = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh"), "--smoke", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stopped" not in done.stdout, done.stdout[-2000:]
    report = json.loads((tmp_path / "inner_loop-llama-3.2-1b.json").read_text())
    assert report["tiny"] and [r["mode"] for r in report["rows"]] == ["baseline", "engine"]
    planned = report["rows"][1]
    assert planned["planned"] and 1 <= planned["k"] <= 4 and planned["slot_plan"]["slots"] == planned["k"]
    assert json.loads((tmp_path / "policy_sft.json").read_text())[0]["steps"] == 1
    assert "planner:" in done.stdout
