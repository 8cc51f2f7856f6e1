"""Deep learning for microscopy inside napari.

Importing this package loads no Qt, torch or backend: napari imports plugins at
start-up and must not pay for what the user has not opened yet.
"""

__version__ = "0.1.0"
