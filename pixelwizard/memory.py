"""Stage offload: components wait in CPU memory and visit the GPU one stage at a time.

The memory plan of docs/performance.md: at 4K the detail model must run with the text encoder
and the anchor model off the GPU. Each managed module keeps a CPU copy of its weights, so putting
it on the GPU is one host-to-device copy and taking it off is free (the GPU copy is dropped;
inference never changes weights). The copies are not pinned: pinning 33 GB took 42 s on the
benchmark machine, far more than the copies it speeds up (docs/performance.md).
Hand-written rather than diffusers' ``enable_model_cpu_offload``: its hooks offload a component
only when the next one in ``model_cpu_offload_seq`` runs, which assumes one ``__call__`` in that
order. The stage calls here run in other orders (a worker decodes, then starts the next prompt's
text encoder; a cache miss runs the anchor model inside the detail stage), which would leave the
VAE or the anchor model on the GPU during a 4K detail forward; here each stage's exit frees it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch

Offload = Literal["none", "model"]
OFFLOAD_CHOICES: tuple[str, ...] = ("none", "model")


class StageOffloader:
    """Moves whole modules between host memory and ``device``, one stage at a time."""

    def __init__(self, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self._host: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._loaded: set[int] = set()

    def add(self, module: torch.nn.Module) -> None:
        """Take ``module`` under management: its tensors move to host memory."""
        pairs = []
        for tensor in itertools.chain(module.parameters(), module.buffers()):
            host = tensor.data.to("cpu")
            tensor.data = host
            pairs.append((tensor, host))
        self._host[id(module)] = pairs
        self._loaded.discard(id(module))

    def load(self, module: torch.nn.Module) -> bool:
        """Copy ``module`` to the device; False if it is unmanaged or already there."""
        key = id(module)
        if key not in self._host or key in self._loaded:
            return False
        for tensor, host in self._host[key]:
            tensor.data = host.to(self.device, non_blocking=True)
        self._loaded.add(key)
        return True

    def unload(self, module: torch.nn.Module) -> None:
        """Point ``module`` back at its host copy, freeing its GPU memory."""
        key = id(module)
        if key in self._loaded:
            for tensor, host in self._host[key]:
                tensor.data = host
            self._loaded.discard(key)

    @contextmanager
    def resident(self, module: torch.nn.Module) -> Iterator[None]:
        """``module`` on the device for the block; taken off again only if this block put it there."""
        loaded = self.load(module)
        try:
            yield
        finally:
            if loaded:
                self.unload(module)
