"""reduce_to_anchors: every per-view tensor of a context gathered to the anchors, the rest untouched."""

from __future__ import annotations

import pytest
import torch

from zpressor import reduce_to_anchors


def make_context(b: int = 2, v: int = 5, size: int = 4) -> dict[str, object]:
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.rand(b, v, 3, size, size, generator=g),
        "extrinsics": torch.randn(b, v, 4, 4, generator=g),
        "intrinsics": torch.randn(b, v, 3, 3, generator=g),
        "near": torch.rand(b, v, generator=g),
        "far": 1 + torch.rand(b, v, generator=g),
        "depth": torch.rand(b, v, size, size, generator=g),
        "pointmap": torch.randn(b, v, size, size, 3, generator=g),
        "index": torch.arange(v).repeat(b, 1) + 10 * torch.arange(b)[:, None],
        "valid": torch.rand(b, v, size, size, generator=g) > 0.5,
        "scale": torch.rand(b, generator=g),  # per scene: not per view
        "scene": ["a", "b"],
    }


def test_gathers_every_per_view_tensor() -> None:
    context = make_context()
    anchors = torch.tensor([[3, 0], [1, 4]])
    reduced = reduce_to_anchors(context, anchors)
    assert list(reduced) == list(context)
    for key in ("image", "extrinsics", "intrinsics", "near", "far", "depth", "pointmap", "index", "valid"):
        value = context[key]
        assert isinstance(value, torch.Tensor)
        assert reduced[key].shape == (2, 2, *value.shape[2:]) and reduced[key].dtype == value.dtype, key
        for i in range(2):
            for j in range(2):
                assert torch.equal(reduced[key][i, j], value[i, anchors[i, j]]), key
    assert reduced["index"].tolist() == [[3, 0], [11, 14]]
    assert reduced["scale"] is context["scale"] and reduced["scene"] is context["scene"]


def test_selected_keys_and_num_views() -> None:
    context = make_context()
    anchors = torch.tensor([[2], [2]])
    reduced = reduce_to_anchors(context, anchors, keys=["image", "near"])
    assert reduced["image"].shape[1] == 1 and reduced["near"].shape == (2, 1)
    assert reduced["far"] is context["far"]
    plain = reduce_to_anchors({"depth": torch.rand(2, 5, 3)}, anchors, num_views=5)
    assert plain["depth"].shape == (2, 1, 3)


def test_errors() -> None:
    context = make_context()
    with pytest.raises(TypeError, match="anchor_index"):
        reduce_to_anchors(context, torch.tensor([[0, 1], [0, 1]], dtype=torch.int32))
    with pytest.raises(ValueError, match="outside"):
        reduce_to_anchors(context, torch.tensor([[0, 5], [0, 1]]))
    with pytest.raises(ValueError, match="scale"):
        reduce_to_anchors(context, torch.tensor([[0], [1]]), keys=["scale"])
    with pytest.raises(ValueError, match="num_views"):
        reduce_to_anchors({"depth": torch.rand(2, 5, 3)}, torch.tensor([[0], [1]]))
    with pytest.raises(TypeError, match="context"):
        reduce_to_anchors([1, 2], torch.tensor([[0], [1]]))  # type: ignore[arg-type]
