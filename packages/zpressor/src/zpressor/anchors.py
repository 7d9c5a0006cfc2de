"""Anchor views and clusters: farthest point sampling on camera positions, or k-means on class tokens.

Every function is batched over the leading b dimension and works on detached values (the choice of
anchors is discrete; gradients flow through the features only).

- :func:`select_anchors`: K anchors by farthest point sampling, the first one the camera farthest from
  the barycentre of all cameras (the official ``ZPressor.farthest_point_sample``).
- :func:`assign_views`: each view joins its nearest anchor (``ZPressor.assign_points_to_clusters``).
- :func:`kmeans_clusters` / :func:`kmeans_anchors`: the pose-free mode, k-means on per-view class
  tokens with the anchor of each cluster the member nearest its centroid (``ZPressor.clust_token_kmeans``).
"""

from __future__ import annotations

import torch

__all__ = ["assign_views", "camera_positions", "kmeans_anchors", "kmeans_clusters", "select_anchors"]


def _check_points(name: str, points: object, dim: int | None) -> torch.Tensor:
    layout = f"[b, v, {dim if dim is not None else 'C'}]"
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(points).__name__}")
    if points.dim() != 3 or (dim is not None and points.shape[-1] != dim):
        raise ValueError(f"{name} must have shape {layout}, got {list(points.shape)}")
    if not points.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {points.dtype}")
    if points.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one view, got shape {list(points.shape)}")
    return points


def check_num_anchors(num_anchors: object, num_views: int) -> int:
    """``num_anchors`` is an int in [1, num_views]; returns it."""
    if isinstance(num_anchors, bool) or not isinstance(num_anchors, int):
        raise TypeError(f"num_anchors must be an int, got {type(num_anchors).__name__}")
    if not 1 <= num_anchors <= num_views:
        raise ValueError(f"num_anchors must be in [1, {num_views}] (the number of views), got {num_anchors}")
    return num_anchors


def _working_copy(points: torch.Tensor) -> torch.Tensor:
    """Detached, and at least float32 (half-precision distances would create spurious ties)."""
    points = points.detach()
    return points if points.dtype in (torch.float32, torch.float64) else points.float()


def _squared_distances(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """points [b, v, D], centres [b, K, D] -> [b, v, K], as Σ (p − c)² (the official arithmetic)."""
    return ((points[:, :, None, :] - centres[:, None, :, :]) ** 2).sum(-1)


def _farthest_point_sampling(points: torch.Tensor, num_samples: int) -> torch.Tensor:
    """points [b, v, D] -> [b, num_samples] int64 distinct indices (see :func:`select_anchors`)."""
    b, v, _ = points.shape
    batch = torch.arange(b, device=points.device)
    barycentre = points.sum(1, keepdim=True) / v  # sum / v as the official code (not mean)
    farthest = ((points - barycentre) ** 2).sum(-1).argmax(1)  # ties: the first index
    distance = torch.full((b, v), float("inf"), dtype=points.dtype, device=points.device)
    index = torch.empty(b, num_samples, dtype=torch.int64, device=points.device)
    for i in range(num_samples):
        index[:, i] = farthest
        centre = points[batch, farthest][:, None]  # [b, 1, D]
        distance = torch.minimum(distance, ((points - centre) ** 2).sum(-1))
        # Chosen points can never be chosen again (the official code sets them to 0, which re-selects
        # a chosen point only when every unchosen point coincides with a chosen one).
        distance[batch, farthest] = float("-inf")
        farthest = distance.argmax(1)
    return index


def camera_positions(extrinsics: torch.Tensor) -> torch.Tensor:
    """Camera centres [b, v, 3] of camera-to-world extrinsics [b, v, 4, 4] (the translation column)."""
    if not isinstance(extrinsics, torch.Tensor):
        raise TypeError(f"extrinsics must be a torch.Tensor [b, v, 4, 4], got {type(extrinsics).__name__}")
    if extrinsics.dim() != 4 or tuple(extrinsics.shape[2:]) != (4, 4):
        raise ValueError(f"extrinsics must have shape [b, v, 4, 4], got {list(extrinsics.shape)}")
    return extrinsics[:, :, :3, 3]


def select_anchors(positions: torch.Tensor, num_anchors: int) -> torch.Tensor:
    """K anchor views by farthest point sampling on camera positions.

    The first anchor is the camera farthest (squared Euclidean distance) from the barycentre of all
    cameras; each next one is the camera whose distance to its nearest chosen anchor is largest. Ties go
    to the lowest view index (``argmax``), as in the official ``farthest_point_sample``.

    Args:
        positions: [b, v, 3] camera centres (see :func:`camera_positions`).
        num_anchors: K in [1, v].

    Returns:
        anchor_index [b, K] int64, distinct view indices in selection order.
    """
    positions = _check_points("positions", positions, 3)
    k = check_num_anchors(num_anchors, positions.shape[1])
    return _farthest_point_sampling(_working_copy(positions), k)


def _check_anchor_index(anchor_index: object, b: int, v: int) -> torch.Tensor:
    if not isinstance(anchor_index, torch.Tensor):
        raise TypeError(f"anchor_index must be a torch.Tensor [b, K], got {type(anchor_index).__name__}")
    if anchor_index.dtype != torch.int64:
        raise TypeError(f"anchor_index must have dtype torch.int64, got {anchor_index.dtype}")
    if anchor_index.dim() != 2 or anchor_index.shape[0] != b or not 1 <= anchor_index.shape[1] <= v:
        raise ValueError(
            f"anchor_index must have shape [{b}, K] with 1 <= K <= {v}, got {list(anchor_index.shape)}"
        )
    if bool(((anchor_index < 0) | (anchor_index >= v)).any()):
        raise ValueError(f"anchor_index holds view indices outside [0, {v})")
    ordered = anchor_index.sort(dim=1).values
    if bool((ordered[:, 1:] == ordered[:, :-1]).any()):
        raise ValueError("anchor_index repeats a view within a batch item; anchors must be distinct")
    return anchor_index


def assign_views(positions: torch.Tensor, anchor_index: torch.Tensor) -> torch.Tensor:
    """Each view's cluster: the slot (0..K−1) of its nearest anchor in Euclidean distance.

    Ties go to the lowest slot (``argmin``), as in the official ``assign_points_to_clusters``. An anchor
    always belongs to its own slot, even when another anchor sits at the same position (the official
    code would give it the lower slot).

    Args:
        positions: [b, v, 3] camera centres.
        anchor_index: [b, K] int64 distinct anchor views, e.g. from :func:`select_anchors`.

    Returns:
        cluster [b, v] int64 in [0, K): ``cluster[i, anchor_index[i, j]] == j``.
    """
    positions = _check_points("positions", positions, 3)
    b, v, _ = positions.shape
    anchor_index = _check_anchor_index(anchor_index, b, v)
    points = _working_copy(positions)
    anchors = torch.gather(points, 1, anchor_index[..., None].expand(-1, -1, 3))
    cluster = _squared_distances(points, anchors).argmin(-1)
    slots = torch.arange(anchor_index.shape[1], device=cluster.device).expand_as(anchor_index)
    return cluster.scatter(1, anchor_index, slots)


def kmeans_clusters(
    class_tokens: torch.Tensor, num_anchors: int, *, iters: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose-free clustering: k-means on per-view class tokens, anchor = the member nearest its centroid.

    Deterministic (no random state): the K initial centroids are the tokens picked by farthest point
    sampling in token space (the first the token farthest from the mean token; the deterministic,
    greedy form of k-means++), then at most ``iters`` Lloyd iterations (assign every view to its
    nearest centroid, move each centroid to the mean of its views; a centroid that loses all its views
    stays where it is), stopping early once no assignment changes. The final clusters are the views'
    nearest centroids. For slot j in order, the anchor is the view of cluster j nearest centroid j; a
    cluster left empty takes the nearest view to its centroid that is not yet an anchor (that view
    moves to cluster j), so the K anchors are always distinct and each is in its own cluster.

    Args:
        class_tokens: [b, v, C] one token per view (e.g. a DINO class token, or the spatial mean of the
            features).
        num_anchors: K in [1, v].
        iters: the most Lloyd iterations, >= 0.

    Returns:
        (anchor_index [b, K] int64, cluster [b, v] int64 in [0, K), with
        ``cluster[i, anchor_index[i, j]] == j``).
    """
    tokens = _working_copy(_check_points("class_tokens", class_tokens, None))
    b, v, _ = tokens.shape
    k = check_num_anchors(num_anchors, v)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be a non-negative int, got {iters!r}")
    init = _farthest_point_sampling(tokens, k)
    centroids = torch.gather(tokens, 1, init[..., None].expand(-1, -1, tokens.shape[-1]))
    labels = _squared_distances(tokens, centroids).argmin(-1)
    for _ in range(iters):
        members = torch.nn.functional.one_hot(labels, k).to(tokens.dtype)  # [b, v, K]
        counts = members.sum(1)[..., None]  # [b, K, 1]
        means = members.transpose(1, 2) @ tokens / counts.clamp_min(1)
        centroids = torch.where(counts > 0, means, centroids)
        updated = _squared_distances(tokens, centroids).argmin(-1)
        if torch.equal(updated, labels):
            break
        labels = updated

    distance = _squared_distances(tokens, centroids)  # [b, v, K]
    batch = torch.arange(b, device=tokens.device)
    taken = torch.zeros(b, v, dtype=torch.bool, device=tokens.device)
    anchor_index = torch.empty(b, k, dtype=torch.int64, device=tokens.device)
    inf = torch.tensor(float("inf"), dtype=distance.dtype, device=distance.device)
    for j in range(k):
        free = torch.where(taken, inf, distance[..., j])  # [b, v]
        member = labels == j
        in_cluster = torch.where(member, free, inf)
        choice = torch.where(member.any(1), in_cluster.argmin(1), free.argmin(1))
        anchor_index[:, j] = choice
        taken[batch, choice] = True
        labels[batch, choice] = j
    return anchor_index, labels


def kmeans_anchors(class_tokens: torch.Tensor, num_anchors: int, *, iters: int = 100) -> torch.Tensor:
    """The anchor views [b, K] int64 of :func:`kmeans_clusters` (the pose-free mode)."""
    return kmeans_clusters(class_tokens, num_anchors, iters=iters)[0]
