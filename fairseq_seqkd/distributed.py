"""Collectives the criterions need beyond fairseq's all-reduce of logging outputs."""

import torch
import torch.distributed as dist
from torch import Tensor


def all_gather_1d(values: Tensor, group: object = None) -> Tensor:
    """Concatenate a 1-D tensor of any length from every rank, in rank order.

    Every rank receives the same tensor, which is what keeps a global selection threshold
    identical across ranks (the published selective-distillation code keeps one queue per GPU).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return values
    world = dist.get_world_size(group)
    if world == 1:
        return values
    count = torch.tensor([values.numel()], device=values.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count, group=group)
    longest = int(max(counts))
    padded = values.new_zeros(longest)
    padded[: values.numel()] = values
    gathered = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded, group=group)
    return torch.cat([g[: int(c)] for g, c in zip(gathered, counts)])
