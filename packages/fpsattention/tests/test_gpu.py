"""FPSAttention on CUDA: FP8 tensor cores and tile-sparse attention in a Wan transformer (runs wherever CUDA is)."""

import pytest
import torch

import fpsattention
from fpsattention import FPSSchedule, Phase, fps_attention

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("video", [(4, 16, 16), (3, 10, 13)], ids=str)  # the second is padded
def test_fps_attention_on_cuda_is_close_to_exact(video) -> None:
    g = torch.Generator().manual_seed(0)
    tokens = video[0] * video[1] * video[2]
    q, k, v = (torch.randn(1, 4, tokens, 64, generator=g) for _ in range(3))
    for phase, bound in [
        (Phase(fp8=True, window=(1, 2, 2)), 0.08),
        (Phase(fp8=False, window=(1, 2, 2)), 0.01),
        (Phase(fp8=True), 0.08),
    ]:
        # float32 attention under the same mask (a full-precision phase on the CPU is exact)
        exact = fps_attention(q, k, v, video, (1, 8, 8), Phase(fp8=False, window=phase.window))
        gpu = fps_attention(*(x.cuda().bfloat16() for x in (q, k, v)), video, (1, 8, 8), phase).float().cpu()
        assert ((gpu - exact).norm() / exact.norm()).item() < bound


def test_wan_transformer_with_fp8_tiles_on_cuda() -> None:
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=64, in_channels=4, out_channels=4,
        text_dim=32, freq_dim=32, ffn_dim=256, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=64,
    ).cuda().bfloat16()  # fmt: skip
    g = torch.Generator().manual_seed(1)
    inputs = {
        "hidden_states": torch.randn(1, 4, 4, 32, 32, generator=g).cuda().bfloat16(),
        "timestep": torch.tensor([500.0]).cuda(),
        "encoder_hidden_states": torch.randn(1, 16, 32, generator=g).cuda().bfloat16(),
    }
    with torch.no_grad():
        dense = model(**inputs).sample.float()
    schedule = FPSSchedule(
        tile=(1, 8, 8), early=Phase(window=(3, 1, 1)), middle=Phase(quant_group=16), late=Phase()
    )
    state = fpsattention.apply(model, schedule)
    state.set_step(0, 8)
    with torch.no_grad():
        fps = model(**inputs).sample.float()
    assert ((fps - dense).norm() / dense.norm()).item() < 0.3
    state.set_step(3, 8)
    out = model(**inputs).sample.float()
    out.square().mean().backward()  # the QAT path: FP8 forward, straight-through backward on the GPU
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    fpsattention.remove(model)
