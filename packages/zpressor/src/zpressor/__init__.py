"""ZPressor: compress V context views into K anchor views for feed-forward 3D Gaussian Splatting.

- :class:`ZPressor`: the module, ``zpressor(features [b, v, C, h, w], extrinsics [b, v, 4, 4],
  num_anchors=K) -> (features [b, K, C, h, w], anchor_index [b, K])``; a
  :class:`accel_shared.gs.model.ViewCompressor`. Cross-attention from each anchor to its cluster runs as
  packed variable-length sequences through :func:`kernels_core.block_sparse_attention_varlen`.
- :func:`select_anchors` / :func:`assign_views`: farthest point sampling on camera centres and
  nearest-anchor clusters; :func:`kmeans_anchors` / :func:`kmeans_clusters`: the pose-free mode.
- :func:`reduce_to_anchors`: gather a context dict (images, cameras, near/far, depth, ...) to the anchors.
- :func:`convert_official_state_dict`: load weights of the official implementation.
- :mod:`zpressor.reference`: the official per-cluster loop in plain torch (parity tests, documentation).
"""

import accel_shared  # noqa: F401  (checks its own kernels-core range at import)
import kernels_core
from zpressor._version import __version__
from zpressor.anchors import assign_views, camera_positions, kmeans_anchors, kmeans_clusters, select_anchors
from zpressor.module import ZPressor, convert_official_state_dict
from zpressor.reduce import reduce_to_anchors

# The kernels-core range zpressor was built against lives in packages/zpressor/pyproject.toml; a mismatch
# fails here with the fix, rather than later with a missing op or a wrong signature.
kernels_core.check_compatibility("zpressor")

__all__ = [
    "ZPressor",
    "__version__",
    "assign_views",
    "camera_positions",
    "convert_official_state_dict",
    "kmeans_anchors",
    "kmeans_clusters",
    "reduce_to_anchors",
    "select_anchors",
]
