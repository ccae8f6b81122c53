"""The one-shot device check keeps running: its CPU dry run (tiny weights, every phase short)
reports every row, and the rows that check correctness pass."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
ROWS = {
    "device",
    "parity_fp32",
    "parity_bf16",
    "weights",
    "engine_load",
    "first_frame",
    "generated_fps",
    "block_time",
    "memory_per_session",
    "decode_overlap",
    "capacity",
    "nvenc",
    "vae_decode",
    "live_sessions",
    "compile",
}


def test_dry_run_reports_every_row_and_parity_passes():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--json"], capture_output=True, text=True, timeout=240
    )
    assert done.stdout.strip(), done.stderr[-3000:]
    report = json.loads(done.stdout)
    rows = {row["key"]: row for row in report["rows"]}
    assert set(rows) == ROWS
    assert report["dry_run"] is True
    skipped = [key for key, row in rows.items() if row["status"] == "skipped"]
    assert not skipped, (skipped, done.stderr[-3000:])
    failed = {key: row["result"] for key, row in rows.items() if row["status"] == "FAIL"}
    assert not failed, (failed, done.stderr[-3000:])
    assert done.returncode == 0, done.stderr[-3000:]
    for key in ("parity_fp32", "parity_bf16"):
        assert rows[key]["status"] == "pass", rows[key]
        assert rows[key]["figures"]["latent_max"] <= rows[key]["figures"]["tolerances"]["latent_max"]
    assert rows["parity_fp32"]["figures"]["latent_max"] == 0.0  # CPU against itself
    assert all(s["av_match"] and s["frames"] > 0 for s in rows["live_sessions"]["figures"]["sessions"])
    assert rows["compile"]["status"] == "n/a"
