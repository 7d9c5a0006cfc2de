"""ZPressor: parity with the per-cluster reference (values and gradients), argument errors, the
ViewCompressor extension point of FeedForwardGS, official weights, and a many-view forward."""

from __future__ import annotations

import time

import pytest
import torch

from accel_shared.gs.model import FeedForwardGS, GSModelConfig, ViewCompressor
from zpressor import ZPressor, convert_official_state_dict, kmeans_clusters
from zpressor.reference import reference_compress, reference_forward


def make_module(embed_dim: int = 16, num_heads: int = 2, num_layers: int = 3, **kwargs: object) -> ZPressor:
    """A ZPressor whose LayerNorms are not the identity (so the norms take part in the comparison)."""
    torch.manual_seed(0)
    module = ZPressor(embed_dim, num_heads, num_layers, **kwargs)  # type: ignore[arg-type]
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return module


def random_extrinsics(b: int, v: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    extrinsics = torch.eye(4).repeat(b, v, 1, 1)
    extrinsics[..., :3, 3] = torch.randn(b, v, 3, generator=g)
    return extrinsics


def features(b: int, v: int, c: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, v, c, h, w, generator=torch.Generator().manual_seed(seed))


# Uneven hand-made clusters: item 0 has supports of 2, 1 and 0 views; item 1 has 3, 0 and 0.
ANCHORS = torch.tensor([[4, 0, 2], [1, 5, 3]])
CLUSTERS = torch.tensor([[1, 0, 2, 0, 0, 1], [0, 0, 0, 2, 0, 1]])


@pytest.mark.parametrize("num_anchors", [1, 2, 3, 5, 7])
def test_forward_matches_reference(num_anchors: int) -> None:
    module = make_module()
    x, extrinsics = features(2, 7, 16, 3, 5), random_extrinsics(2, 7)  # h·w = 15
    out, index = module(x, extrinsics, num_anchors=num_anchors)
    ref, ref_index = reference_forward(module, x, extrinsics, num_anchors=num_anchors)
    assert out.shape == (2, num_anchors, 16, 3, 5) and index.shape == (2, num_anchors)
    assert index.dtype == torch.int64 and torch.equal(index, ref_index)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("num_heads", "self_attention"), [(1, True), (4, True), (2, False)])
def test_uneven_clusters_match_reference_with_gradients(num_heads: int, self_attention: bool) -> None:
    module = make_module(num_heads=num_heads, self_attention=self_attention)
    x = features(2, 6, 16, 3, 3).requires_grad_(True)
    weights = torch.randn(2, 3, 16, 3, 3, generator=torch.Generator().manual_seed(5))

    names, params = zip(*module.named_parameters(), strict=True)
    out = module.compress(x, ANCHORS, CLUSTERS)
    grads = torch.autograd.grad((out * weights).sum(), [x, *params])
    ref = reference_compress(module, x, ANCHORS, CLUSTERS)
    ref_grads = torch.autograd.grad((ref * weights).sum(), [x, *params])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for name, grad, ref_grad in zip(("x", *names), grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-4, msg=name)


def test_anchor_without_support_is_left_unchanged() -> None:
    # Without self-attention the only update is the cross-attention (+ MLP), which such anchors skip.
    module = make_module(self_attention=False)
    x = features(2, 6, 16, 2, 3)
    out = module.compress(x, ANCHORS, CLUSTERS)
    assert torch.equal(out[0, 2], x[0, 2]) and torch.equal(out[1, 1], x[1, 5])
    assert not torch.allclose(out[0, 0], x[0, 4])
    # every anchor alone: nothing to attend to, no NaN, the input comes back
    alone = module.compress(x, ANCHORS, torch.tensor([[1, 0, 2, 0, 0, 0], [0, 0, 0, 2, 0, 1]]).clamp(max=2))
    assert torch.isfinite(alone).all()
    solo = module.compress(x[:, :3], torch.tensor([[0, 1, 2]] * 2), torch.tensor([[0, 1, 2]] * 2))
    assert torch.equal(solo, x[:, :3])


def test_all_views_as_anchors_only_self_attention() -> None:
    module = make_module()
    x, extrinsics = features(2, 4, 16, 2, 2), random_extrinsics(2, 4)
    out, index = module(x, extrinsics, num_anchors=4)
    assert sorted(index[0].tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(out, reference_forward(module, x, extrinsics, num_anchors=4)[0])


def test_pose_free_mode_uses_kmeans_on_class_tokens() -> None:
    module = make_module()
    x = features(2, 6, 16, 2, 3)
    tokens = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(3))
    out, index = module(x, None, num_anchors=2, class_tokens=tokens)
    anchors, cluster = kmeans_clusters(tokens, 2)
    assert torch.equal(index, anchors)
    torch.testing.assert_close(out, reference_compress(module, x, anchors, cluster), atol=1e-5, rtol=1e-5)
    # class tokens take precedence over extrinsics
    with_poses, index_poses = module(x, random_extrinsics(2, 6), num_anchors=2, class_tokens=tokens)
    assert torch.equal(index_poses, anchors) and torch.equal(with_poses, out)


def test_argument_errors() -> None:
    module = make_module()
    x, extrinsics = features(2, 5, 16, 2, 2), random_extrinsics(2, 5)
    for bad in (0, 6):
        with pytest.raises(ValueError, match="num_anchors"):
            module(x, extrinsics, num_anchors=bad)
    with pytest.raises(ValueError, match=r"extrinsics .* or class_tokens"):
        module(x, None, num_anchors=2)
    with pytest.raises(ValueError, match="x must have shape"):
        module(features(2, 5, 8, 2, 2), extrinsics, num_anchors=2)
    with pytest.raises(TypeError, match="x must be float32"):
        module(x.double(), extrinsics, num_anchors=2)
    with pytest.raises(ValueError, match="extrinsics must have shape"):
        module(x, extrinsics[:, :4], num_anchors=2)
    with pytest.raises(ValueError, match="class_tokens must have shape"):
        module(x, None, num_anchors=2, class_tokens=torch.randn(2, 5))
    with pytest.raises(ValueError, match="cluster"):
        module.compress(x, torch.tensor([[0, 1], [2, 3]]), torch.full((2, 5), 2))
    with pytest.raises(ValueError, match="num_heads"):
        ZPressor(16, num_heads=3)
    with pytest.raises(ValueError, match="num_layers"):
        ZPressor(16, num_layers=0)


def context_on_a_line(b: int, v: int, size: int) -> dict[str, torch.Tensor]:
    """Cameras at x = 0, 0.1, 0.2, ..., and the last at x = 1, looking down +z; random images."""
    extrinsics = torch.eye(4).repeat(b, v, 1, 1)
    extrinsics[..., 0, 3] = 0.1 * torch.arange(v, dtype=torch.float32)
    extrinsics[..., -1, 0, 3] = 1.0
    intrinsics = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]]).repeat(b, v, 1, 1)
    return {
        "image": torch.rand(b, v, 3, size, size, generator=torch.Generator().manual_seed(0)),
        "extrinsics": extrinsics,
        "intrinsics": intrinsics,
        "near": torch.full((b, v), 0.5),
        "far": torch.full((b, v), 8.0),
    }


@torch.no_grad()
def test_view_compressor_in_feed_forward_gs() -> None:
    config = GSModelConfig(
        feature_dim=32,
        transformer_layers=1,
        num_heads=2,
        num_depth_candidates=8,
        depth_hidden=16,
        head_hidden=8,
    )
    torch.manual_seed(0)
    compressor = ZPressor(32, num_heads=2, num_layers=2)
    assert isinstance(compressor, ViewCompressor)
    model = FeedForwardGS(config, compressor=compressor).eval()
    context = context_on_a_line(2, 5, 16)
    out = model(context, num_anchors=2)
    assert out.depth.shape == (2, 2, 16, 16) and out.gaussians.means.shape == (2, 2 * 16 * 16, 3)
    assert out.context_index.tolist() == [[4, 0]] * 2  # the far camera, then the other end
    per_view = model.encoder(context["image"].flatten(0, 1)).unflatten(0, (2, 5))
    _, index = compressor(per_view, context["extrinsics"], num_anchors=2)
    assert torch.equal(out.context_index, index)
    assert torch.isfinite(out.gaussians.means).all()


def test_official_state_dict_loads() -> None:
    source = make_module(num_heads=2)
    official = {
        f"encoder.zipmatch.{group}.0.{rest}": value
        for key, value in source.state_dict().items()
        for group, _, rest in [key.partition(".")]
    }
    official["encoder.other.weight"] = torch.zeros(1)
    target = ZPressor(16, 2, 3)
    target.load_state_dict(convert_official_state_dict(official, prefix="encoder.zipmatch."))
    x, extrinsics = features(1, 5, 16, 2, 2), random_extrinsics(1, 5)
    assert torch.equal(target(x, extrinsics, num_anchors=2)[0], source(x, extrinsics, num_anchors=2)[0])
    assert "self_attn_layers.0.to_out.0.weight" in target.state_dict()  # the official name
    assert not any("to_out" in k for k in ZPressor(16, 1, 1).state_dict())  # one head: no projection
    with pytest.raises(ValueError, match="feature level 1"):
        convert_official_state_dict({"cross_attn_layers.1.0.proj.bias": torch.zeros(1)})
    with pytest.raises(ValueError, match="no ZPressor weights"):
        convert_official_state_dict(official, prefix="decoder.")


def test_many_views_forward_and_backward() -> None:
    module = make_module(embed_dim=32, num_heads=1, num_layers=6)
    x = features(1, 24, 32, 8, 12).requires_grad_(True)
    start = time.perf_counter()
    out, index = module(x, random_extrinsics(1, 24), num_anchors=6)
    out.square().mean().backward()
    assert time.perf_counter() - start < 20
    assert out.shape == (1, 6, 32, 8, 12) and len(set(index[0].tolist())) == 6
    assert torch.isfinite(out).all() and x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad[0, index[0]].abs().sum() > 0
