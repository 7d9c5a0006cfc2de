"""Nearest-neighbour search and Chamfer distance against their references."""

import pytest
import torch

import kernels_core
from kernels_core import reference

# (batch, N, M): single points, sizes that are not vector multiples, N != M.
POINT_SHAPES = [(1, 1, 1), (2, 17, 5), (1, 100, 333), (3, 257, 64), (2, 1000, 999)]


def _points(shape, generator, dtype=torch.float32):
    b, n, m = shape
    return torch.randn(b, n, 3, generator=generator).to(dtype), torch.randn(b, m, 3, generator=generator).to(
        dtype
    )


@pytest.mark.parametrize("shape", POINT_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_nearest_neighbor_matches_reference(cpu_isa, shape, generator):
    x, y = _points(shape, generator)
    dist, index = kernels_core.nearest_neighbor(x, y)
    ref_dist, ref_index = reference.nearest_neighbor(x, y)
    assert dist.dtype == torch.float32 and index.dtype == torch.int64 and dist.shape == x.shape[:2]
    assert torch.equal(index, ref_index)
    torch.testing.assert_close(dist, ref_dist, atol=1e-5, rtol=1e-5)


def test_ties_take_the_lowest_index_and_strided_inputs_work(generator):
    y = torch.randn(2, 40, 3, generator=generator)
    y[:, 30] = y[:, 7]  # an exact duplicate of point 7
    x = y[:, [7, 30, 3]] + 0.0
    _, index = kernels_core.nearest_neighbor(x, y)
    assert (
        index[:, 0].tolist() == [7, 7] and index[:, 1].tolist() == [7, 7] and index[:, 2].tolist() == [3, 3]
    )
    # [B, 3, N] storage viewed as [B, N, 3]; half-precision inputs are computed in float32.
    xt = torch.randn(2, 3, 50, generator=generator).transpose(1, 2)
    assert not xt.is_contiguous()
    expected = reference.nearest_neighbor(xt, y)[1]
    assert torch.equal(kernels_core.nearest_neighbor(xt, y)[1], expected)
    assert kernels_core.nearest_neighbor(xt.bfloat16(), y.bfloat16())[0].dtype == torch.float32


@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("single_directional", [False, True])
def test_chamfer_loss_and_gradients_match_reference(single_directional, squared, generator):
    x, y = _points((3, 120, 90), generator)
    x.requires_grad_()
    y.requires_grad_()
    result = kernels_core.chamfer_distance(x, y, single_directional=single_directional, squared=squared)
    expected = reference.chamfer_distance(x, y, single_directional=single_directional, squared=squared)
    torch.testing.assert_close(result.loss, expected[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(result.index_xy, expected[1])
    assert (result.index_yx is None) == single_directional
    if not single_directional:
        assert torch.equal(result.index_yx, expected[2])
    weights = torch.randn(3, generator=generator)
    grads = torch.autograd.grad((result.loss * weights).sum(), (x, y))
    expected_grads = torch.autograd.grad((expected[0] * weights).sum(), (x, y))
    for a, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(a, e, atol=1e-6, rtol=1e-5)


def test_chamfer_distance_pulls_points_onto_the_target(generator):
    """Gradient descent on the Chamfer loss moves a noisy copy back onto the target set."""
    target = torch.randn(1, 200, 3, generator=generator)
    x = (target + 0.3 * torch.randn(1, 200, 3, generator=generator)).requires_grad_()
    optimizer = torch.optim.Adam([x], lr=0.02)
    first = kernels_core.chamfer_distance(x, target).loss.item()
    for _ in range(100):
        optimizer.zero_grad()
        loss = kernels_core.chamfer_distance(x, target).loss.sum()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first


def test_point_input_errors():
    x = torch.randn(2, 10, 3)
    with pytest.raises(ValueError, match=r"x must hold 3-D points \[B, N, 3\]"):
        kernels_core.nearest_neighbor(torch.randn(2, 10, 2), x)
    with pytest.raises(ValueError, match=r"y: the batch size \(dim 0\) of y, as in x, must be 2, got 1"):
        kernels_core.nearest_neighbor(x, x[:1])
    with pytest.raises(ValueError, match="y must hold at least one point"):
        kernels_core.nearest_neighbor(x, x[:, :0])
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        kernels_core.chamfer_distance(x.long(), x)
    with pytest.raises(ValueError, match="at least one point each"):
        kernels_core.chamfer_distance(x[:, :0], x)


def test_nearest_neighbor_opcheck(generator):
    x, y = _points((2, 33, 20), generator)
    torch.library.opcheck(torch.ops.kernels_core.nearest_neighbor.default, (x, y))
