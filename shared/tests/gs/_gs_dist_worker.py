"""One rank of the 2-process DDP test (run by test_distributed.py through torchrun)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from _gs_model_fixtures import PlaneScenes, tiny_config

from accel_shared.gs.model import FeedForwardGS
from accel_shared.gs.train import TrainConfig, train


def main() -> None:
    out_dir = Path(sys.argv[1])
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
    model = FeedForwardGS(tiny_config())
    config = TrainConfig(
        steps=8,
        batch_size=1,
        lr=2e-3,
        warmup_steps=2,
        ckpt_every=4,
        log_every=1,
        out_dir=out_dir / "run",
        show_progress=False,
        lambda_lpips=0.0,
        device="cpu",
    )
    result = train(model, PlaneScenes(count=4), config)
    torch.save(model.state_dict(), out_dir / f"weights-rank{rank}.pt")
    (out_dir / f"losses-rank{rank}.json").write_text(json.dumps(result.losses))


if __name__ == "__main__":
    main()
