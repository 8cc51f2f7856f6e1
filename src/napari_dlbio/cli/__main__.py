"""``python -m napari_dlbio.cli``: the same as the ``napari-dlbio`` command."""

import sys

from . import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
