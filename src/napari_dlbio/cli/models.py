"""``napari-dlbio models``: the models in the store, as a table or JSON."""

from __future__ import annotations

import json

from .. import store


def cmd_models(args) -> int:
    infos = store.list_models()
    if args.json:
        rows = [{**i.to_json(), "path": str(i.path)} for i in infos]
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not infos:
        print(f"no models in {store.store_root()}")
        return 0
    rows = [("NAME", "BACKEND", "CREATED", "AP@0.5", "F1", "PATH")]
    for i in infos:
        created = i.created[:19].replace("T", " ")
        rows.append((i.name, i.backend, created, _num(i.metrics.get("ap50")), _num(i.metrics.get("f1")),
                     str(i.path)))
    # The path is last and not padded: it may be long, and the other columns stay aligned.
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1])
    return 0


def _num(v) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "-"
