"""sdpa_math against a naive softmax(QK^T)V, and AttentionInputs validation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from accel_shared.patching import AttentionInputs, causal_mask, sdpa_math


def naive_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    scale: float,
) -> torch.Tensor:
    """float64 softmax(QK^T * scale + mask) V with bottom-right causal alignment; empty rows -> 0."""
    q, k, v = q.double(), k.double(), v.double()
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = q @ k.transpose(-1, -2) * scale
    sq, sk = q.shape[2], k.shape[2]
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask.double()
    if is_causal:
        allowed = torch.tensor([[j <= i + sk - sq for j in range(sk)] for i in range(sq)])
        scores = scores.masked_fill(~allowed, -math.inf)
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows without any key: all -inf -> nan -> 0
    return probs @ v


def make_qkv(b: int, hq: int, hkv: int, sq: int, sk: int, d: int = 16, dv: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, sq, d, generator=gen)
    k = torch.randn(b, hkv, sk, d, generator=gen)
    v = torch.randn(b, hkv, sk, dv, generator=gen)
    return q, k, v


CASES = [
    # (Hq, Hkv, Sq, Sk, is_causal, mask kind)
    (4, 4, 5, 5, False, None),
    (6, 2, 5, 5, True, None),  # GQA, square causal (SDPA's own is_causal)
    (6, 2, 3, 7, True, None),  # GQA, bottom-right causal, Sq < Sk (chunked prefill)
    (4, 1, 7, 3, True, None),  # Sq > Sk: the first 4 rows see no key
    (6, 3, 5, 9, False, "bool"),
    (6, 3, 5, 9, False, "float"),
    (6, 2, 4, 6, True, "bool"),  # mask and causal combined
    (6, 2, 4, 6, True, "float"),
]


@pytest.mark.parametrize(("hq", "hkv", "sq", "sk", "is_causal", "mask_kind"), CASES)
def test_sdpa_math_matches_naive(hq: int, hkv: int, sq: int, sk: int, is_causal: bool, mask_kind: str | None):
    q, k, v = make_qkv(2, hq, hkv, sq, sk)
    gen = torch.Generator().manual_seed(1)
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(2, 1, sq, sk, generator=gen) > 0.3
        mask[..., -1] = True  # every row keeps one key, so no row is empty
    elif mask_kind == "float":
        mask = torch.randn(2, hq, sq, sk, generator=gen)
    inputs = AttentionInputs(q, k, v, attn_mask=mask, is_causal=is_causal, scale=0.3)
    out = sdpa_math(inputs)
    assert out.shape == (2, hq, sq, v.shape[-1])
    torch.testing.assert_close(
        out.double(), naive_attention(q, k, v, mask, is_causal, 0.3), rtol=1e-5, atol=1e-5
    )


def test_bottom_right_differs_from_sdpa_top_left():
    q, k, v = make_qkv(1, 2, 2, 3, 7)
    ours = sdpa_math(AttentionInputs(q, k, v, is_causal=True))
    top_left = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert not torch.allclose(ours, top_left)
    # The last query row sees every key under bottom-right alignment.
    full = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(ours[:, :, -1], full[:, :, -1])


def test_causal_mask_alignment():
    assert causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]
    assert causal_mask(3, 2).tolist() == [[False, False], [True, False], [True, True]]


def test_default_scale_and_gqa_groups():
    q, k, v = make_qkv(1, 6, 2, 3, 3, d=16)
    inputs = AttentionInputs(q, k, v)
    assert inputs.scale == pytest.approx(0.25)
    assert inputs.num_kv_groups == 3
    torch.testing.assert_close(
        sdpa_math(inputs).double(), naive_attention(q, k, v, None, False, 0.25), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        (((1, 4, 3, 16), (1, 4, 3), (1, 4, 3, 16)), "key must be a 4-D"),
        (((1, 4, 3, 16), (1, 3, 3, 16), (1, 3, 3, 16)), "multiple of key/value heads"),
        (((1, 4, 3, 16), (1, 2, 3, 8), (1, 2, 3, 8)), "head dim"),
        (((1, 4, 3, 16), (1, 2, 3, 16), (1, 2, 5, 16)), "must agree"),
    ],
)
def test_attention_inputs_rejects_bad_shapes(shapes, match):
    q, k, v = (torch.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        AttentionInputs(q, k, v)


def test_attention_inputs_rejects_bad_dropout():
    q, k, v = make_qkv(1, 2, 2, 3, 3)
    with pytest.raises(ValueError, match="dropout_p"):
        AttentionInputs(q, k, v, dropout_p=1.5)
