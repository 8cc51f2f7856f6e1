"""``python -m napari_dlbio``: the same as the ``napari-dlbio`` command."""

import sys

from .cli import main

sys.exit(main())
