"""Argument checks shared by the modules (TorchScript-compatible): every message names the
function, the argument and what was expected."""
from typing import List

import torch
from torch import Tensor


def shape_of(x: Tensor) -> List[int]:
    return [int(s) for s in x.shape]


def check_positive(where: str, name: str, value: int) -> None:
    if value <= 0:
        raise ValueError(f"{where}: {name} must be positive, got {value}")


def check_floating(where: str, name: str, x: Tensor) -> None:
    if not x.is_floating_point():
        raise TypeError(f"{where}: {name} must be floating point, got {x.dtype}")


def check_heads(where: str, name: str, x: Tensor, heads: int, dim: int) -> None:
    """x: (B, N, H, D) with the module's H and D, floating point."""
    if x.dim() != 4:
        raise ValueError(f"{where}: {name} must be 4-D (B, N, H, D), got shape {shape_of(x)}")
    if x.size(2) != heads or x.size(3) != dim:
        raise ValueError(f"{where}: {name} must be (B, N, H, D) with H = {heads}, D = {dim}, "
                         f"got shape {shape_of(x)}")
    check_floating(where, name, x)


def check_same_dtype(where: str, name: str, x: Tensor, other_name: str, other: Tensor) -> None:
    if x.dtype != other.dtype:
        raise TypeError(f"{where}: {name} must have the dtype of {other_name} ({other.dtype}), got {x.dtype}; "
                        f"convert one (e.g. module.to(torch.float64))")


def check_same_shape(where: str, name: str, x: Tensor, other_name: str, other: Tensor) -> None:
    if x.shape != other.shape:
        raise ValueError(f"{where}: {name} {shape_of(x)} and {other_name} {shape_of(other)} "
                         f"must have the same shape")


def fused_kernel_takes(x: Tensor) -> bool:
    """Whether spe's fused CPU ops (torch.ops.spe.*) take x: on CPU, float32 or float64."""
    return x.device.type == "cpu" and (x.dtype == torch.float32 or x.dtype == torch.float64)
