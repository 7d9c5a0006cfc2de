import json

import pytest
import torch

from fpsattention.models import get_pipeline, load_components, save_components
from fpsattention.pipeline import build_tiny_pipeline


def test_shipped_models_load_and_differ() -> None:
    from fpsattention.adapters import get_adapters

    base = get_pipeline("tiny-wan")
    full = get_pipeline("tiny-wan-qat-full")
    assert base.vae.config.latents_std != [1.0] * 4  # the trained VAE's statistics
    weights = dict(base.transformer.named_parameters())
    assert any(not torch.equal(p, weights[n]) for n, p in full.transformer.named_parameters())
    assert all(torch.equal(p, dict(full.vae.named_parameters())[n]) for n, p in base.vae.named_parameters())
    # tiny-wan-qat: tiny-wan's own weights plus trained adapters for the two sparse phases.
    adapted = get_pipeline("tiny-wan-qat")
    adapters = get_adapters(adapted.transformer)
    assert adapters is not None and adapters.config.phases == ("early", "late")
    assert all(p.detach().abs().max() > 0 for n, p in adapters.named_parameters() if n.endswith(".up"))
    own = {n: p for n, p in adapted.transformer.named_parameters() if not n.startswith("fps_adapters.")}
    assert own.keys() == weights.keys() and all(torch.equal(p, weights[n]) for n, p in own.items())
    assert get_adapters(base.transformer) is None


def test_save_and_load_round_trip(tmp_path) -> None:
    pipe = build_tiny_pipeline(seed=3)
    save_components(pipe, tmp_path)
    for part in ("transformer", "vae"):
        assert "_name_or_path" not in json.loads((tmp_path / part / "config.json").read_text())
    loaded = load_components(build_tiny_pipeline(seed=4), tmp_path)
    for (name, a), (_, b) in zip(
        pipe.transformer.named_parameters(), loaded.transformer.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match="neither transformer/ nor adapters/"):
        load_components(pipe, tmp_path / "nothing")
