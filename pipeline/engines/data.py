"""A data loader wrapper whose order and random augmentations are seeded per pass and whose position is saved.

Resuming a run killed mid-epoch must see the same batches the uninterrupted run would have seen. Each
pass over the loader (``p`` = 0, 1, ...) reseeds everything that decides the batches: the sampler
(``RandomSampler.generator``, ``DistributedSampler.set_epoch``), the loader's generator (which seeds
the workers, hence MONAI's random transforms when ``num_workers > 0``) and, with ``num_workers == 0``,
the dataset's random transforms (MONAI ``set_rnd``). The state is ``(seed, pass, batches consumed)``;
after :meth:`ResumableLoader.load_state_dict` the next pass replays the saved pass and drops the
batches already consumed (they are loaded again, so random augmentations stay in step).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from monai.data.utils import set_rnd
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

__all__ = ["ResumableLoader"]

_MIX = 1_000_003


class ResumableLoader:
    """Iterable over ``loader`` that reseeds each pass from ``seed`` and can resume mid-pass.

    Args:
        loader: a ``torch``/MONAI ``DataLoader`` (or any iterable; then only the position is tracked).
        seed: base seed; ``None`` tracks the position without reseeding (resume is then not exact).
    """

    def __init__(self, loader: Iterable, seed: int | None = 0) -> None:
        if isinstance(loader, ResumableLoader):
            raise TypeError("ResumableLoader: loader is already a ResumableLoader")
        self.loader = loader
        self.seed = seed
        self.pass_index = 0  # passes started so far; the current pass is pass_index - 1
        self.consumed = 0  # batches yielded in the current pass
        self._resume: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    @property
    def sampler(self):
        """The underlying loader's sampler (so code that inspects ``loader.sampler`` keeps working)."""
        return getattr(self.loader, "sampler", None)

    @property
    def dataset(self):
        return getattr(self.loader, "dataset", None)

    def _seed_pass(self, p: int) -> None:
        if self.seed is None:
            return
        seed = (int(self.seed) * _MIX + p) % (2**63 - 1)
        loader = self.loader
        samplers = [getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)]
        for sampler in {id(s): s for s in samplers if s is not None}.values():
            if isinstance(sampler, DistributedSampler) or hasattr(sampler, "set_epoch"):
                sampler.set_epoch(p)
            if isinstance(sampler, RandomSampler):
                sampler.generator = torch.Generator().manual_seed(seed)
        if isinstance(loader, DataLoader):
            loader.generator = torch.Generator().manual_seed(seed + 1)
            if loader.num_workers == 0:
                set_rnd(loader.dataset, seed + 2)

    def __iter__(self) -> Iterator:
        if self._resume is not None:
            p, skip = self._resume
            self._resume = None
            try:
                if skip >= len(self):
                    p, skip = p + 1, 0
            except TypeError:
                pass
        else:
            p, skip = self.pass_index, 0
        self.pass_index, self.consumed = p + 1, skip
        self._seed_pass(p)
        it = iter(self.loader)
        for _ in range(skip):
            next(it)
        for batch in it:
            self.consumed += 1
            yield batch

    def state_dict(self) -> dict:
        """``{"seed", "pass_index", "consumed"}``: enough to replay the current pass from the next batch."""
        return {"seed": self.seed, "pass_index": self.pass_index, "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        """Make the next ``iter()`` continue the saved pass after its consumed batches."""
        if state.get("seed") != self.seed:
            import warnings

            warnings.warn(
                f"ResumableLoader: checkpoint data seed {state.get('seed')} differs from {self.seed}; using the checkpoint's",
                stacklevel=2,
            )
            self.seed = state.get("seed")
        current = max(int(state["pass_index"]) - 1, 0)
        self.pass_index = current
        self.consumed = int(state["consumed"])
        self._resume = (current, int(state["consumed"])) if int(state["pass_index"]) > 0 else None
