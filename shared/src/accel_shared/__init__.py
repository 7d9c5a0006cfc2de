"""Shared building blocks for the method packages.

Submodules (imported on demand; none of them pulls in transformers or diffusers at import time):

- ``accel_shared.patching``: route the attention of transformers / diffusers models through your own math.
- ``accel_shared.tiny_models``: tiny, documented configs of the model classes the packages target.
- ``accel_shared.bench``: timing, machine description and benchmark reports.
- ``accel_shared.cli``: the command-line conventions every package follows.
"""

import kernels_core
from accel_shared._version import __version__

# The kernels-core range accel-shared was built against lives in shared/pyproject.toml; a mismatch
# fails here with the fix, rather than later with a missing op or a wrong signature.
kernels_core.check_compatibility("accel-shared")

__all__ = ["__version__"]
