"""Step-indexed batches of unlabeled images, split across processes like a DistributedSampler.

Step ``t`` of a run with seed ``s`` uses positions ``[t * G, (t + 1) * G)`` of an endless
sequence of per-epoch permutations (epoch ``e`` permuted by ``default_rng([s, e])``), where
``G = batch_size * world_size``; process ``r`` takes the ``r``-th slice of ``batch_size``.
So N processes with batch B see exactly the images one process with batch N*B sees, and a
run resumed at step ``t`` continues with the same images.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from densevlm.data.images import ImageSource
from densevlm.errors import DenseVLMError
from densevlm.imaging import check_image_size, normalize_array, plan_letterbox
from densevlm.model import DenseModel

__all__ = ["StepBatchSampler", "ContentDataset", "make_loader", "model_batch", "normalise_content"]

log = logging.getLogger(__name__)


class StepBatchSampler(Sampler[list[int]]):
    """Yields, for steps ``start .. steps - 1``, this process's list of image indices."""

    def __init__(self, n: int, batch_size: int, steps: int, seed: int, rank: int = 0, world: int = 1, start: int = 0) -> None:
        self.n, self.batch_size, self.steps, self.seed = n, batch_size, steps, seed
        self.rank, self.world, self.start = rank, world, start
        self._perm: dict[int, np.ndarray] = {}

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        if epoch not in self._perm:
            self._perm = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return int(self._perm[epoch][offset])

    def indices(self, step: int) -> list[int]:
        first = step * self.batch_size * self.world + self.rank * self.batch_size
        return [self._index(p) for p in range(first, first + self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.steps - self.start)


class ContentDataset(Dataset):
    """Image ``i`` letterboxed to longest side ``size``: ``{"index", "content": uint8 [3, h, w], "plan"}``
    (``plan``: the :class:`~densevlm.imaging.Letterbox` from original to content pixels).

    An unreadable image yields ``{"index", "error"}`` instead of raising.
    """

    def __init__(self, source: ImageSource, size: int) -> None:
        self.source, self.size = source, size

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            image = self.source.load(index)
        except DenseVLMError as e:
            return {"index": index, "error": str(e)}
        from PIL import Image

        try:
            check_image_size(image.width, image.height, self.size)
        except DenseVLMError as e:
            return {"index": index, "error": f"{self.source.name(index)}: {e}"}
        plan = plan_letterbox(image.width, image.height, self.size, 1)
        if (plan.width, plan.height) != image.size:
            image = image.resize((plan.width, plan.height), Image.BICUBIC)
        array = np.array(image, dtype=np.uint8)
        return {"index": index, "content": torch.from_numpy(array).permute(2, 0, 1).contiguous(), "plan": plan}


def make_loader(source: ImageSource, size: int, sampler: StepBatchSampler, workers: int = 0) -> DataLoader:
    """A DataLoader that decodes (in ``workers`` processes) the images of each step."""
    return DataLoader(
        ContentDataset(source, size),
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=list,  # a batch stays the list of item dicts
        persistent_workers=workers > 0,
    )


def normalise_content(content: torch.Tensor, mean, std, side: int, multiple: int) -> torch.Tensor:
    """uint8 ``[3, h, w]`` -> normalised float ``[3, S, S]``, zero-padded right/bottom, where
    ``S`` is ``side`` rounded up to ``multiple``."""
    s = ((side + multiple - 1) // multiple) * multiple
    out = torch.zeros(3, s, s)
    x = normalize_array(content.permute(1, 2, 0).numpy(), mean, std)
    out[:, : x.shape[1], : x.shape[2]] = torch.from_numpy(x)
    return out


def model_batch(model: DenseModel, contents: list[torch.Tensor], side: int, device: torch.device) -> torch.Tensor:
    """uint8 ``[3, h, w]`` contents -> ``[B, 3, S, S]`` on ``device``, normalised with ``model``'s
    mean/std and padded to its patch size (see :func:`normalise_content`)."""
    m, sd, p = model.spec.mean, model.spec.std, model.patch_size
    return torch.stack([normalise_content(c, m, sd, side, p) for c in contents]).to(device)
