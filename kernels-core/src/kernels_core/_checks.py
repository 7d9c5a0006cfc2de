"""Input checks shared by the ops: each error names the argument and what was expected."""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
DEVICE_TYPES = ("cpu", "cuda")


def check_tensor(name: str, x: object, ndim: int, layout: str) -> torch.Tensor:
    """``x`` is a tensor of rank ``ndim``; ``layout`` (e.g. "[B, H, S, D]") goes in the message."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions {layout}, got shape {list(x.shape)}")
    return x


def check_float_dtype(name: str, x: torch.Tensor) -> None:
    if x.dtype not in FLOAT_DTYPES:
        allowed = ", ".join(str(d) for d in FLOAT_DTYPES)
        raise TypeError(f"{name} must have dtype {allowed}; got {x.dtype}")


def check_same_dtype(reference_name: str, reference: torch.Tensor, **others: torch.Tensor) -> None:
    for name, x in others.items():
        if x.dtype != reference.dtype:
            raise TypeError(
                f"{name} has dtype {x.dtype} but {reference_name} has {reference.dtype}; they must share a dtype"
            )


def check_same_device(reference_name: str, reference: torch.Tensor, **others: torch.Tensor) -> None:
    if reference.device.type not in DEVICE_TYPES:
        raise ValueError(
            f"{reference_name} is on {reference.device}; kernels-core runs on cpu and cuda tensors"
        )
    for name, x in others.items():
        if x.device != reference.device:
            raise ValueError(
                f"{name} is on {x.device} but {reference_name} is on {reference.device}; "
                "all inputs must be on the same device"
            )


def check_dim(name: str, actual: int, expected: int, what: str) -> None:
    if actual != expected:
        raise ValueError(f"{name}: {what} must be {expected}, got {actual}")


CUDA_MAX_HEAD_DIM = 256


def check_cuda_head_dim(name: str, x: torch.Tensor) -> None:
    """The CUDA kernels keep a row of the head dimension in registers: at most 256."""
    if x.device.type == "cuda" and x.shape[-1] > CUDA_MAX_HEAD_DIM:
        raise ValueError(
            f"{name}: the cuda kernel supports head dimensions up to {CUDA_MAX_HEAD_DIM}, got {x.shape[-1]}"
        )


def has_repeated_entries(values: torch.Tensor, used: torch.Tensor) -> bool:
    """True when some row of ``values`` [..., L] repeats a value among the entries ``used`` marks."""
    width = values.shape[-1]
    if width < 2:
        return False
    # Unused entries get distinct negative keys so they never look like repeats.
    filler = -1 - torch.arange(width, device=values.device, dtype=values.dtype)
    ordered = torch.where(used, values, filler).sort(dim=-1).values
    return bool((ordered[..., 1:] == ordered[..., :-1]).any())


def check_block_size(block_size: object) -> tuple[int, int]:
    """``block_size`` is a pair of positive ints (query block, key block)."""
    if (
        not isinstance(block_size, Sequence)
        or len(block_size) != 2
        or not all(isinstance(b, int) and not isinstance(b, bool) for b in block_size)
    ):
        raise TypeError(f"block_size must be a pair of ints (block_q, block_k), got {block_size!r}")
    if block_size[0] <= 0 or block_size[1] <= 0:
        raise ValueError(f"block_size must be positive, got {tuple(block_size)}")
    return int(block_size[0]), int(block_size[1])
