"""PM-Loss: pointmap-guided regularisation for feed-forward 3D Gaussian Splatting.

- :class:`PMLoss`: Umeyama Sim(3) alignment of a teacher pointmap to the predicted Gaussian centres, then
  a single-directional Chamfer loss from the centres to the aligned teacher points.
- :func:`umeyama_sim3` / :class:`Sim3`: the batched, differentiable alignment.
- :class:`PointmapTeacher`: the teacher pointmaps (a frozen model, files on disk, or ground truth).
- :func:`pointmaps_to_points`: [B, V, H, W, 3] -> [B, V·H·W, 3] in the order every piece uses.
"""

import accel_shared  # noqa: F401  (checks its own kernels-core range at import)
import kernels_core
from pmloss._version import __version__
from pmloss.alignment import Sim3, umeyama_sim3
from pmloss.loss import PMLoss, PMLossOutput, pointmaps_to_points
from pmloss.teacher import PointmapTeacher

# The kernels-core range pmloss was built against lives in packages/pmloss/pyproject.toml; a mismatch
# fails here with the fix, rather than later with a missing op or a wrong signature.
kernels_core.check_compatibility("pmloss")

__all__ = [
    "PMLoss",
    "PMLossOutput",
    "PointmapTeacher",
    "Sim3",
    "__version__",
    "pointmaps_to_points",
    "umeyama_sim3",
]
