"""The Weights & Biases backend, a trackkit plugin (entry point ``wandb``).

``backend`` holds the adapter (``WandbBackend``), ``keys`` where trackkit's data sits in a W&B
run, ``records`` the reader of W&B's offline records, ``query`` the translation of a search
into W&B's filter and order, ``registry`` the W&B Registry. None imports wandb at module level.
See docs/wandb.md.
"""

from __future__ import annotations

from trackkit import hookimpl
from trackkit.backend import Backend
from trackkit.backends.wandb.backend import WandbBackend
from trackkit.backends.wandb.query import to_wandb_filter, to_wandb_order

__all__ = ["WandbBackend", "to_wandb_filter", "to_wandb_order", "trackkit_register_backends"]


@hookimpl
def trackkit_register_backends() -> list[type[Backend]]:
    return [WandbBackend]
