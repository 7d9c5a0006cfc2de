"""Two CPU processes on gloo under torchrun: identical weights on both ranks, the loss goes down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("_gs_dist_worker.py")


@pytest.mark.slow
def test_two_process_gloo_training(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*command, str(WORKER), str(tmp_path)], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    weights = [torch.load(tmp_path / f"weights-rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name

    losses = [json.loads((tmp_path / f"losses-rank{r}.json").read_text()) for r in (0, 1)]
    assert len(losses[0]) == len(losses[1]) == 8
    assert losses[0][0] != losses[1][0]  # the DistributedSampler gave the ranks different scenes

    run = tmp_path / "run"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 9))  # rank 0 alone wrote the log
    for r in log:  # logged losses are the mean over the ranks
        step = r["step"] - 1
        assert r["loss"] == pytest.approx((losses[0][step] + losses[1][step]) / 2, rel=1e-6)
    assert sum(r["loss"] for r in log[-2:]) < sum(r["loss"] for r in log[:2])
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "latest",
        "step-00000004.pt",
        "step-00000008.pt",
    ]
    checkpoint = torch.load(run / "checkpoints" / "step-00000008.pt", weights_only=True)
    assert len(checkpoint["rng"]) == 2  # every rank's RNG state
    for name, value in checkpoint["model"].items():
        assert torch.equal(value, weights[0][name]), name
