"""Where a model runs and how big it is: small helpers every stage that loads a model uses."""

from __future__ import annotations

import torch


def pick_device(device: str) -> torch.device:
    """``auto`` means the first GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


TRAIN_ONLY = "distilflow_l2s."  # a head attached for training (Distill-L2S), never saved


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once), without a training-only head
    attached for a loss (Distill-L2S's ``distilflow_l2s``: never saved with the model)."""
    served = {id(p): p for n, p in model.named_parameters() if not n.startswith(TRAIN_ONLY)}
    return sum(p.numel() for p in served.values())
