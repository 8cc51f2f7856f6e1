"""Where jobs run: in this process (the CLI, tests) or in a job process (napari's docks).

Importing this package loads neither torch nor a backend.
"""

from .base import Call, Executor, InProcessExecutor, JobCallbacks, JobHandle
from .process import ProcessExecutor, death_message, shutdown_all

__all__ = ["Call", "Executor", "InProcessExecutor", "JobCallbacks", "JobHandle", "ProcessExecutor",
           "death_message", "shutdown_all"]
