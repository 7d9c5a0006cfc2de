"""Shared fixtures. Tiny models are built from configs; nothing is downloaded."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from accel_shared.patching import AttentionInputs, sdpa_math

# No hub is reachable from tests: fail fast instead of retrying network calls.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Recorder:
    """An attention math that records the inputs it got, then runs ``sdpa_math``."""

    def __init__(self, math: Callable[[AttentionInputs], object] = sdpa_math) -> None:
        self.calls: list[AttentionInputs] = []
        self.math = math

    def __call__(self, inputs: AttentionInputs) -> object:
        self.calls.append(inputs)
        return self.math(inputs)

    def names(self) -> list[str]:
        return [c.layer_name for c in self.calls]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
