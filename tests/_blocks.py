"""Helpers of the blockwise tests: label comparisons, a counting runner, a cancelling context."""

from __future__ import annotations

import numpy as np

from napari_dlbio.blockwise import SerialRunner
from napari_dlbio.blocktasks import predict_block
from napari_dlbio.jobs import JobContext


def same_up_to_renumbering(a: np.ndarray, b: np.ndarray) -> bool:
    """One-to-one correspondence of ids (0 to 0)."""
    pairs = np.unique(np.stack([np.ravel(a), np.ravel(b)]).astype(np.int64), axis=1)
    return (len(pairs[0]) == len(np.unique(a)) == len(np.unique(b))
            and not ((pairs[0] == 0) ^ (pairs[1] == 0)).any())


def consecutive(labels: np.ndarray) -> bool:
    """Ids are 0, 1, ..., n with none missing."""
    ids = np.unique(labels)
    return np.array_equal(ids, np.arange(len(ids)))


class Counting(SerialRunner):
    """A SerialRunner counting the blocks it predicts."""

    def __init__(self) -> None:
        self.predicted = 0

    def map(self, fn, tasks, ctx, name=str):
        for task, res in super().map(fn, tasks, ctx, name):
            self.predicted += fn is predict_block
            yield task, res


def cancel_after(message: str) -> JobContext:
    """A context whose user presses Stop when a progress report says ``message``."""
    box: list[JobContext] = []
    ctx = JobContext(lambda p: box[0].cancel() if p.message == message else None)
    box.append(ctx)
    return ctx
