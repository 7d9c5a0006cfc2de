"""Batched, differentiable Umeyama Sim(3) alignment: the scale, rotation and translation that best map
one point set onto another with known point-to-point correspondence.

PM-Loss aligns the teacher's pointmap X to the predicted Gaussian centres Y (pixel i of X pairs with
pixel i of Y) and lets the gradient flow through the alignment into Y, SVD included.

Following Umeyama (1991), with (optionally weighted) means over the N points:

    μx, μy        means of X and Y
    σ²            mean squared distance of X from μx  (= tr Σx)
    Σxy           (Y − μy)(X − μx)ᵀ / n                           [3, 3]
    U D Vᵀ        SVD of Σxy;  S = diag(1, 1, −1) if det(U) det(V) < 0, else I
    c = tr(DS) / σ²,   R = U S Vᵀ,   t = μy − c R μx

The SVD runs in float32 (float64 for float64 inputs) whatever the input dtype. Its gradient is not
the one ``torch.linalg.svd`` backpropagates: that one goes through U and V separately and is NaN or inf
whenever two singular values coincide, which is common here (a fronto-parallel plane seen by a square
image has d1 = d2), although R itself is smooth there. We backpropagate through R = U S Vᵀ directly
(the derivative of the orthogonal polar factor, which only divides by sums of singular values) and
through tr(DS) (whose derivative is R); see :class:`_Procrustes`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch.autograd.function import once_differentiable

__all__ = ["Sim3", "umeyama_sim3"]


class Sim3(NamedTuple):
    """A batch of similarity transforms p ↦ s·R·p + t.

    Attributes:
        scale: [B] (≥ 0 from :func:`umeyama_sim3`).
        rotation: [B, 3, 3] proper rotations (det = +1).
        translation: [B, 3].
    """

    scale: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        """Transform points [B, N, 3] -> [B, N, 3]: s·R·p + t, differentiable in the transform and the points.

        Computed in the dtype of ``points`` (the transform is cast to it).
        """
        batch = self.scale.shape[0]
        _check_points("points", points)
        if points.shape[0] != batch:
            raise ValueError(
                f"points must have the Sim3's batch size {batch} in dim 0, got shape {list(points.shape)}"
            )
        if points.device != self.scale.device:
            raise ValueError(f"points is on {points.device} but the Sim3 is on {self.scale.device}")
        rotation = self.rotation.to(points.dtype)
        scale = self.scale.to(points.dtype)[:, None, None]
        translation = self.translation.to(points.dtype)[:, None, :]
        return scale * (points @ rotation.transpose(-1, -2)) + translation


def _check_points(name: str, points: object) -> torch.Tensor:
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [B, N, 3], got {type(points).__name__}")
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"{name} must have shape [B, N, 3], got {list(points.shape)}")
    if not points.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {points.dtype}")
    return points


def _check_weights(weights: object, src: torch.Tensor) -> torch.Tensor:
    if not isinstance(weights, torch.Tensor):
        raise TypeError(f"weights must be a torch.Tensor [B, N] or None, got {type(weights).__name__}")
    if tuple(weights.shape) != tuple(src.shape[:2]):
        raise ValueError(f"weights must have shape [B, N] = {list(src.shape[:2])}, got {list(weights.shape)}")
    if weights.device != src.device:
        raise ValueError(f"weights is on {weights.device} but src is on {src.device}")
    if weights.dtype != torch.bool and not weights.is_floating_point():
        raise TypeError(f"weights must be bool or floating point, got {weights.dtype}")
    if weights.is_floating_point() and not bool(torch.all(weights >= 0)):  # also catches NaN
        raise ValueError("weights must be non-negative and not NaN")
    return weights


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class _Procrustes(torch.autograd.Function):
    """cov [B, 3, 3] -> (R [B, 3, 3], tr(DS) [B]) with a backward that is finite at repeated singular values.

    Write the SVD with signed singular values, cov = U' D' Vᵀ with U' = U S and D' = S D, so that
    R = U' Vᵀ and M = Rᵀ cov = V D' Vᵀ is symmetric. Differentiating cov = R M and taking the skew part
    gives, with Ω = Vᵀ Rᵀ dR V and Ã = U'ᵀ dcov V:  Ω_ij = (Ã_ij − Ã_ji) / (d'_i + d'_j). Hence for an
    upstream gradient G_R, with G = U'ᵀ G_R V:

        dL/dcov = U' [(G − Gᵀ) ∘ F] Vᵀ + g_tr · R,   F_ij = 1 / (d'_i + d'_j)  (i ≠ j), F_ii = 0

    (d tr(DS) = tr(Rᵀ dcov): the optimal value's derivative is the optimiser). d'_i + d'_j ≥ 0; it is 0
    only where R is genuinely not unique (two zero singular values, or d2 = d3 with a reflection), and
    there it is floored so that the gradient stays finite. Items whose cov is not finite give NaN
    outputs and a zero gradient.
    """

    @staticmethod
    def forward(ctx: Any, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        finite = torch.isfinite(cov).all(dim=-1).all(dim=-1)
        u, d, vh = torch.linalg.svd(torch.where(finite[:, None, None], cov, 0.0))
        reflect = torch.linalg.det(u) * torch.linalg.det(vh) < 0
        signs = torch.ones_like(d)
        signs[:, 2] = torch.where(reflect, -1.0, 1.0)
        u_signed = u * signs[:, None, :]
        rotation = u_signed @ vh
        trace = (d * signs).sum(dim=-1)
        nan = torch.tensor(float("nan"), dtype=cov.dtype, device=cov.device)
        rotation = torch.where(finite[:, None, None], rotation, nan)
        trace = torch.where(finite, trace, nan)
        ctx.save_for_backward(u_signed, d * signs, vh, rotation, finite)
        return rotation, trace

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_rotation: torch.Tensor | None, grad_trace: torch.Tensor | None
    ) -> torch.Tensor:
        u_signed, d_signed, vh, rotation, finite = ctx.saved_tensors
        grad = torch.zeros_like(rotation)
        if grad_rotation is not None:
            g = u_signed.transpose(-1, -2) @ grad_rotation @ vh.transpose(-1, -2)
            denominator = d_signed[:, :, None] + d_signed[:, None, :]
            info = torch.finfo(denominator.dtype)
            floor = d_signed[:, :1, None].abs() * info.eps + info.tiny**0.5
            f = 1.0 / torch.maximum(denominator, floor)
            f = f * (1.0 - torch.eye(3, dtype=f.dtype, device=f.device))
            grad = grad + u_signed @ ((g - g.transpose(-1, -2)) * f) @ vh
        if grad_trace is not None:
            grad = grad + grad_trace[:, None, None] * rotation
        return torch.where(finite[:, None, None], grad, 0.0)


def umeyama_sim3(
    src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor | None = None, *, eps: float = 1e-12
) -> Sim3:
    """The Sim(3) that best maps ``src`` onto ``dst`` in the least-squares sense (Umeyama 1991), batched.

    Minimises Σ_i w_i |dst_i − (s·R·src_i + t)|² over s ≥ 0, R ∈ SO(3) (never a reflection), t.
    Differentiable in ``src`` and ``dst``, SVD included (see the module docstring for how the SVD's
    gradient is kept finite).

    Args:
        src: [B, N, 3] points X to transform (the teacher's pointmap in PM-Loss).
        dst: [B, N, 3] points Y to map onto (the predicted centres); point i of src pairs with point i of dst.
            src and dst may differ in floating dtype (the result takes the promoted one).
        weights: optional [B, N], bool or non-negative float: per-point weights of the means, σ² and Σxy
            (normalised per item, so only ratios matter). A zero weight removes the pair entirely, even when
            its points are NaN or inf: masking with bool weights equals dropping those points. None weighs
            every point equally (then non-finite points give a NaN transform for their item).
        eps: floor of σ² in c = tr(DS)/σ². Where src collapses to one point (σ² = 0, or every weight of
            an item is zero) the result is c = 0, R from the SVD of a zero matrix (identity), t = μy: every
            point maps to the weighted centroid of dst, with finite (zero) gradients.

    Returns:
        :class:`Sim3` with scale [B], rotation [B, 3, 3], translation [B, 3] in the inputs' (promoted) dtype.
        The statistics and the SVD are computed in float32, or float64 for float64 inputs.
    """
    _check_points("src", src)
    _check_points("dst", dst)
    if src.shape != dst.shape:
        raise ValueError(
            f"src and dst must have the same shape [B, N, 3] (point i of src pairs with point i of dst), "
            f"got {list(src.shape)} and {list(dst.shape)}"
        )
    if src.device != dst.device:
        raise ValueError(f"dst is on {dst.device} but src is on {src.device}; they must share a device")
    if src.shape[1] == 0:
        raise ValueError("src and dst must hold at least one point (dim 1 > 0)")
    out_dtype = torch.promote_types(src.dtype, dst.dtype)
    dtype = _compute_dtype(out_dtype)
    x, y = src.to(dtype), dst.to(dtype)

    if weights is None:
        w = torch.full(x.shape[:2], 1.0 / x.shape[1], dtype=dtype, device=x.device)
    else:
        weights = _check_weights(weights, src)
        w = weights.to(dtype)
        w = w / w.sum(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        used = (w > 0)[..., None]
        x, y = torch.where(used, x, 0.0), torch.where(used, y, 0.0)
    w3 = w[..., None]  # [B, N, 1]

    mean_x = (w3 * x).sum(dim=1)  # [B, 3]
    mean_y = (w3 * y).sum(dim=1)
    xc = x - mean_x[:, None, :]
    yc = y - mean_y[:, None, :]
    variance = (w3 * xc.square()).sum(dim=(1, 2))  # [B]
    cov = (w3 * yc).transpose(-1, -2) @ xc  # [B, 3, 3] = Σ w (y − μy)(x − μx)ᵀ

    rotation, trace = _Procrustes.apply(cov)
    scale = trace / variance.clamp_min(eps)
    translation = mean_y - scale[:, None] * (rotation @ mean_x[..., None]).squeeze(-1)
    return Sim3(scale.to(out_dtype), rotation.to(out_dtype), translation.to(out_dtype))
