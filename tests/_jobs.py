"""Small jobs for the executor tests; importable in the job process (tests/ is on its path)."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import numpy as np

from napari_dlbio.jobs import JobContext


@dataclass
class Sleep:
    """Reports every 20 ms for ``seconds``; honours Cancel at each report."""

    seconds: float

    def run(self, ctx: JobContext) -> float:
        t0 = time.monotonic()
        k = 0
        while time.monotonic() - t0 < self.seconds:
            k += 1
            ctx.report(k, None, f"tick {k}", kind="info" if k == 1 else "step")
            ctx.check()
            time.sleep(0.02)
        return time.monotonic() - t0


@dataclass
class Stubborn:
    """A long library call that never looks at Cancel."""

    seconds: float

    def run(self, ctx: JobContext) -> str:
        ctx.report(1, None, "inside a long call", kind="info")
        time.sleep(self.seconds)
        return "finished"


@dataclass
class Crash:
    """Reports, then dies of ``sig`` (SIGSEGV as a library crash, SIGKILL as the OOM killer)."""

    sig: int

    def run(self, ctx: JobContext) -> None:
        ctx.report(1, 2, "about to crash", kind="info")
        time.sleep(0.05)
        os.kill(os.getpid(), self.sig)
        time.sleep(5)


@dataclass
class Echo:
    """Doubles an array and says how the job saw it (a read-only map of the exchange file)."""

    image: np.ndarray

    def run(self, ctx: JobContext) -> dict:
        return {"double": self.image * 2, "writeable": bool(self.image.flags.writeable),
                "kind": type(self.image).__name__, "pid": os.getpid()}


@dataclass
class Yields:
    n: int

    def run(self, ctx: JobContext):
        for k in range(self.n):
            yield np.full((600, 600), k, np.float32)   # over 1 MB: travels as a file
        return self.n


@dataclass
class Fail:
    kind: str = "runtime"

    def run(self, ctx: JobContext) -> None:
        if self.kind == "value":
            raise ValueError("the image has 7 channels; choose 1")
        raise RuntimeError("boom inside a library")


SIGNALS = {"segv": signal.SIGSEGV, "kill": signal.SIGKILL}
