"""Anchor selection: farthest point sampling, nearest-anchor clusters, pose-free k-means."""

from __future__ import annotations

import pytest
import torch

from zpressor import assign_views, camera_positions, kmeans_anchors, kmeans_clusters, select_anchors
from zpressor.reference import reference_assign_views, reference_farthest_point_sample


def brute_force_fps(points: list[list[float]], k: int) -> list[int]:
    """Farthest point sampling in plain Python: first the point farthest from the barycentre, then the
    point farthest from its nearest chosen one (lowest index on ties)."""
    n = len(points)
    centre = [sum(p[d] for p in points) / n for d in range(3)]

    def sq(a: list[float], b: list[float]) -> float:
        return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))

    first = max(range(n), key=lambda i: (sq(points[i], centre), -i))
    chosen = [first]
    while len(chosen) < k:
        rest = [i for i in range(n) if i not in chosen]
        chosen.append(max(rest, key=lambda i: (min(sq(points[i], points[c]) for c in chosen), -i)))
    return chosen


def test_fps_matches_brute_force_and_official_loop() -> None:
    g = torch.Generator().manual_seed(0)
    positions = torch.randn(4, 11, 3, generator=g, dtype=torch.float64)
    for k in (1, 2, 5, 11):
        index = select_anchors(positions, k)
        assert index.shape == (4, k) and index.dtype == torch.int64
        assert torch.equal(index, reference_farthest_point_sample(positions, k))
        for i in range(4):
            assert index[i].tolist() == brute_force_fps(positions[i].tolist(), k)
            assert len(set(index[i].tolist())) == k


def test_fps_first_anchor_is_farthest_from_barycentre() -> None:
    positions = torch.zeros(1, 5, 3)
    positions[0, :, 0] = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0])
    assert select_anchors(positions, 1).tolist() == [[4]]
    # then the camera farthest from it, then the one farthest from both
    assert select_anchors(positions, 3).tolist() == [[4, 0, 3]]


def test_fps_anchors_distinct_with_duplicate_cameras() -> None:
    positions = torch.zeros(2, 4, 3)
    positions[1, 2] = 1.0
    index = select_anchors(positions, 4)
    assert all(sorted(row) == [0, 1, 2, 3] for row in index.tolist())
    # the official loop re-selects a chosen camera here
    assert len(set(reference_farthest_point_sample(positions, 4)[0].tolist())) < 4


def test_assignment_is_nearest_anchor() -> None:
    g = torch.Generator().manual_seed(1)
    positions = torch.randn(3, 9, 3, generator=g)
    anchors = select_anchors(positions, 3)
    cluster = assign_views(positions, anchors)
    assert cluster.shape == (3, 9) and cluster.dtype == torch.int64
    assert torch.equal(cluster, reference_assign_views(positions, anchors))
    for i in range(3):
        for view in range(9):
            d = [float(((positions[i, view] - positions[i, a]) ** 2).sum()) for a in anchors[i].tolist()]
            assert cluster[i, view] == min(range(3), key=lambda j: d[j])
        assert cluster[i, anchors[i]].tolist() == [0, 1, 2]


def test_anchor_keeps_its_own_slot_at_a_shared_position() -> None:
    positions = torch.zeros(1, 3, 3)
    anchors = torch.tensor([[0, 1]])
    assert assign_views(positions, anchors).tolist() == [[0, 1, 0]]


def test_camera_positions_are_the_translation_column() -> None:
    extrinsics = torch.eye(4).repeat(2, 3, 1, 1)
    extrinsics[..., :3, 3] = torch.arange(18.0).view(2, 3, 3)
    assert torch.equal(camera_positions(extrinsics), torch.arange(18.0).view(2, 3, 3))


def blobs(seed: int) -> tuple[torch.Tensor, list[int]]:
    """Tokens [2, 12, 8] in three tight, well-separated groups (shuffled), and the group of each view."""
    g = torch.Generator().manual_seed(seed)
    centres = 10 * torch.randn(3, 8, generator=g)
    groups = torch.randperm(12, generator=g) % 3
    tokens = centres[groups] + 0.1 * torch.randn(12, 8, generator=g)
    return torch.stack([tokens, tokens.flip(0)]), groups.tolist()


def test_kmeans_is_deterministic_and_recovers_groups() -> None:
    tokens, groups = blobs(0)
    anchors, cluster = kmeans_clusters(tokens, 3)
    again_anchors, again_cluster = kmeans_clusters(tokens.clone(), 3)
    assert torch.equal(anchors, again_anchors) and torch.equal(cluster, again_cluster)
    assert torch.equal(kmeans_anchors(tokens, 3), anchors)
    for i, truth in enumerate((groups, groups[::-1])):
        labels = cluster[i].tolist()
        # same partition as the groups (slot numbers are arbitrary)
        assert len({(a, t) for a, t in zip(labels, truth, strict=True)}) == 3
        assert cluster[i, anchors[i]].tolist() == [0, 1, 2]
        for j, anchor in enumerate(anchors[i].tolist()):
            members = [v for v in range(12) if labels[v] == j]
            mean = tokens[i, members].mean(0)
            assert anchor == min(members, key=lambda v: float((tokens[i, v] - mean).norm()))


def test_kmeans_keeps_anchors_distinct_with_fewer_distinct_tokens() -> None:
    tokens = torch.tensor([[0.0], [0.0], [5.0], [5.0], [5.0]])[None].expand(2, -1, -1)
    anchors, cluster = kmeans_clusters(tokens, 4)
    for i in range(2):
        assert len(set(anchors[i].tolist())) == 4
        assert cluster[i, anchors[i]].tolist() == [0, 1, 2, 3]


def test_argument_errors() -> None:
    positions = torch.randn(2, 5, 3)
    for bad in (0, 6):
        with pytest.raises(ValueError, match="num_anchors"):
            select_anchors(positions, bad)
    with pytest.raises(TypeError, match="num_anchors"):
        select_anchors(positions, True)
    with pytest.raises(ValueError, match="positions"):
        select_anchors(torch.randn(2, 5, 2), 2)
    with pytest.raises(TypeError, match="positions"):
        select_anchors(torch.zeros(2, 5, 3, dtype=torch.int64), 2)
    with pytest.raises(TypeError, match="anchor_index"):
        assign_views(positions, torch.tensor([[0, 1], [2, 3]], dtype=torch.int32))
    with pytest.raises(ValueError, match="distinct"):
        assign_views(positions, torch.tensor([[0, 0], [2, 3]]))
    with pytest.raises(ValueError, match="outside"):
        assign_views(positions, torch.tensor([[0, 5], [2, 3]]))
    with pytest.raises(ValueError, match="class_tokens"):
        kmeans_clusters(torch.randn(2, 5), 2)
    with pytest.raises(ValueError, match="iters"):
        kmeans_clusters(torch.randn(2, 5, 4), 2, iters=-1)
    with pytest.raises(ValueError, match="extrinsics"):
        camera_positions(torch.randn(2, 5, 3, 4))
