"""The public checkpoint's temporal cross-attention context order (diffusers 0.25), on any diffusers.

In SVD's ``TransformerSpatioTemporalModel`` the temporal blocks attend, per pixel, to the image
embedding of frame 0 (the ``time_context``). Their hidden states are laid out batch-major,
``[B * S, F, C]`` with row ``b * S + s`` for item ``b`` at pixel ``s`` (``S = h * w``).

* diffusers >= 0.27 (PR #7268, "Fix SVD bug (shape of time_context)"), and ouro with
  ``compat=None``: the context is built batch-major too, so row ``b * S + s`` reads item ``b``'s
  embedding.
* diffusers 0.25, which the public Ouroboros3D code ran: the context was built pixel-major /
  batch-minor (row ``s * B + b'`` holds item ``b'``), so row ``r = b * S + s`` reads the embedding
  of item ``r mod B``. With classifier-free guidance (``B = 2``: unconditional, conditional) the two
  halves read mixed contexts. Batch-1 calls are unaffected.

:func:`mixed_time_context` reproduces the 0.25 order on the installed (fixed) diffusers, for the
duration of a ``with`` block: a forward pre-hook on every ``TemporalBasicTransformerBlock``
re-orders the context it is handed. Temporal blocks are never gradient-checkpointed in diffusers,
so no recomputation runs outside the block.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from diffusers.models.attention import TemporalBasicTransformerBlock
from torch import Tensor, nn

__all__ = ["mixed_time_context", "mix_time_context"]


def mix_time_context(context: Tensor, batch: int) -> Tensor:
    """Batch-major context rows -> diffusers 0.25's order.

    Args:
        context: ``[B * S, L, D]``, row ``b * S + s`` holding item ``b``'s context (the same for every ``s``).
        batch: ``B``.

    Returns:
        ``[B * S, L, D]`` whose row ``r`` is item ``r mod B``'s context.
    """
    rows = context.shape[0]
    assert rows % batch == 0, (context.shape, batch)
    items = context.unflatten(0, (batch, rows // batch))[:, 0]  # [B, L, D]
    return items[torch.arange(rows, device=context.device) % batch]


def _reorder(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Forward pre-hook of a TemporalBasicTransformerBlock: ``(hidden_states [B * F, S, C], num_frames,
    encoder_hidden_states [B * S, L, D])`` -> the same with the context in 0.25's order."""
    names = ("hidden_states", "num_frames", "encoder_hidden_states")
    values = dict(zip(names, args)) | kwargs
    context = values.get("encoder_hidden_states")
    if context is None:
        return args, kwargs
    batch = values["hidden_states"].shape[0] // values["num_frames"]
    if batch > 1:
        values["encoder_hidden_states"] = mix_time_context(context, batch)
    return (), values


@contextmanager
def mixed_time_context(model: nn.Module) -> Iterator[None]:
    """Within the block, every temporal transformer block of ``model`` reads diffusers 0.25's context order."""
    handles = [
        m.register_forward_pre_hook(_reorder, with_kwargs=True)
        for m in model.modules()
        if isinstance(m, TemporalBasicTransformerBlock)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
