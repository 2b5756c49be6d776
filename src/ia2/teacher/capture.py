"""Forward hooks that read the activation sites: used by the teacher (no gradients) and by the IA2
objective on the student (gradients kept)."""

from __future__ import annotations

import torch

from ..errors import IA2Error


def _first(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


class Capture:
    """Context manager recording each module's output ([B, S, H]) on every forward.

    `outputs[m]` is module m's output from the latest forward. `positions` selects positions as
    they are captured, to save memory: an index tensor [B, P] (gathered per row, giving [B, P, H]),
    or an int i (giving [B, 1, H], position i; -1 is the last). With `accumulate=True` every
    forward's selection is also appended to `history` (one list per module), which is how the
    teacher reads the prefill and each decode step of `generate` without an extra pass.

    An output that carries gradients is selected when `outputs` is read, not inside the hook:
    under gradient checkpointing the module's forward is recomputed without the hook, and the
    selection's autograd must live outside the checkpointed layer.
    """

    def __init__(self, modules: list[torch.nn.Module], positions=None, detach: bool = False,
                 accumulate: bool = False):
        if not modules:
            raise IA2Error("Capture needs at least one module")
        self.modules = list(modules)
        self.positions = positions
        self.detach = detach
        self.accumulate = accumulate
        self._latest: list[torch.Tensor | None] = [None] * len(self.modules)
        self._deferred = [False] * len(self.modules)  # selection still to apply on read
        self.history: list[list[torch.Tensor]] = [[] for _ in self.modules]
        self._handles = []

    @property
    def outputs(self) -> list[torch.Tensor | None]:
        for k, x in enumerate(self._latest):
            if self._deferred[k]:
                self._latest[k], self._deferred[k] = self._select(x), False
        return list(self._latest)

    def _select(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.positions
        if pos is None:
            return x
        if isinstance(pos, int):
            i = pos if pos >= 0 else x.shape[1] + pos
            return x[:, i:i + 1]
        index = pos.to(x.device).long().unsqueeze(-1).expand(-1, -1, x.shape[-1])
        return torch.gather(x, 1, index)

    def _hook(self, k: int):
        def hook(module, args, output):
            x = _first(output)
            if self.detach:
                x = x.detach()
            if x.requires_grad and not self.accumulate:
                self._latest[k], self._deferred[k] = x, True
                return
            x = self._select(x)
            self._latest[k], self._deferred[k] = x, False
            if self.accumulate:
                self.history[k].append(x)
        return hook

    def clear(self) -> None:
        self._latest = [None] * len(self.modules)
        self._deferred = [False] * len(self.modules)
        self.history = [[] for _ in self.modules]

    def __enter__(self) -> "Capture":
        self._handles = [m.register_forward_hook(self._hook(k)) for k, m in enumerate(self.modules)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
