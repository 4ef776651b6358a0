"""Which optimizer group each parameter belongs to: the names `TrainConfig` chooses from
(`final_norm_group`, `decay_params`) and what they mean; `optim.py` builds the optimizer from them."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

ENCODER_ROOTS = ("embeddings", "encoder", "query_encoder")
FINAL_NORM = "layernorm"  # the encoder's final LayerNorm (a top-level parameter root)


class NormGroup(NamedTuple):
    encoder: bool  # follows the encoder schedule (and `freeze_backbone`)
    factor: Callable[[float, int], float]  # (layer decay, encoder layers L) -> LR factor


# TrainConfig.final_norm_group -> the final LayerNorm's group. The authors' layer-decay loop walks
# their backbone's parameters in reverse and gives a non-block parameter the factor of the last
# block it passed: timm's DINOv2 lists the norm after the blocks (it is met first: factor 1); their
# DINOv3 (an HF DINOv3ViTModel re-labelled as timm) lists it before the re-labelled blocks, so it
# gets block 0's factor, decay^(L-1), like the embeddings.
FINAL_NORM_GROUPS: dict[str, NormGroup] = {
    "encoder": NormGroup(True, lambda decay, layers: 1.0),
    "encoder_block0": NormGroup(True, lambda decay, layers: decay ** (layers - 1)),
    "heads": NormGroup(False, lambda decay, layers: 1.0),
}
# TrainConfig.decay_params -> whether the leaf at a parameter path (its key names) is weight-decayed.
DECAY_PARAMS: dict[str, Callable[[tuple[str, ...]], bool]] = {
    "all": lambda names: True,  # torch AdamW over every parameter (theirs)
    "kernels": lambda names: names[-1] == "kernel",  # not norms, biases, tokens or layer scales
}


def path_names(path: tuple) -> tuple[str, ...]:
    """The key names of a pytree path (jax.tree_util key entries)."""
    return tuple(getattr(k, "key", getattr(k, "name", str(k))) for k in path)
