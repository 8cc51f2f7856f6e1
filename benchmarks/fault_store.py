"""Kill -9 model saves at random moments and check what the store shows afterwards.

    PYTHONPATH=src python benchmarks/fault_store.py --kills 20 --seed 0

Each kill: a child process (this file with ``--child``) saves a model whose weights
are a few MB written in fsync'd chunks with small pauses; the parent SIGKILLs it at a
random offset, notes from the disk what the kill interrupted, then looks the model up
(or calls ``store.clean_partial``) and checks the rules of ``store.save``: no visible
model is half-written, an interrupted overwrite leaves the previous version byte for
byte, a completed save shows the new one, and no hidden folder is left. Prints the
phases hit and what was found; exits 1 when any kill broke a rule.

``run_kills`` is what tests/test_store_crash.py calls with a small ``n``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from napari_dlbio import store

WEIGHTS = "weights.bin"
CHUNK = 512 * 1024
CHUNKS = 8
PAUSE_S = 0.04  # per chunk: the write takes ~0.35 s, long enough to be hit at random
SWAP_PAUSE_S = 0.08  # after each rename in the child, so kills also land between the two
KILL_WINDOW_S = 0.7  # offsets span the whole save and a little after it


@dataclass
class KillOutcome:
    name: str
    offset_s: float
    phase: str  # what the kill interrupted, read from the disk before any recovery
    found: str  # after recovery: "new", "old", "none" or "broken"
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def run_kills(n: int, seed: int, home: Path, overwrite: bool) -> list[KillOutcome]:
    """Kill ``n`` saves into the store under ``home`` (what ``NAPARI_DLBIO_HOME`` names),
    each of a fresh name; ``overwrite``: each name first holds a complete "old" version.
    Offsets are spread over the save (one random offset in each of ``n`` equal slices)."""
    rng = random.Random(seed)
    kind = "over" if overwrite else "fresh"
    with _store_home(Path(home)):
        return [
            _one_kill(f"{kind}-{i}", (i + rng.random()) * KILL_WINDOW_S / n, overwrite, by_lookup=i % 2 == 0)
            for i in range(n)
        ]


@contextlib.contextmanager
def _store_home(home: Path):
    before = os.environ.get("NAPARI_DLBIO_HOME")
    os.environ["NAPARI_DLBIO_HOME"] = str(home)
    try:
        yield
    finally:
        if before is None:
            del os.environ["NAPARI_DLBIO_HOME"]
        else:
            os.environ["NAPARI_DLBIO_HOME"] = before


def _one_kill(name: str, offset: float, overwrite: bool, by_lookup: bool) -> KillOutcome:
    root = store.store_root()
    if overwrite:
        store.save(_info("old"), _writer("old", 0.0), name)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", name],
        env=env, stdout=subprocess.PIPE, text=True,
    )
    ready = proc.stdout.readline().strip() == "ready"
    time.sleep(offset)
    proc.kill()
    proc.wait(timeout=30)
    saved = "saved" in proc.stdout.read()
    proc.stdout.close()
    outcome = KillOutcome(name, round(offset, 3), _phase(root, name), "none")
    if not ready:
        outcome.problems.append("the child did not start")
        return outcome
    # Recovery by the next lookup, or by the call a job runner makes for a process it killed.
    if not by_lookup:
        store.clean_partial(root, dead_pid=proc.pid)
    outcome.found = _found(root, name)
    outcome.problems += _problems(root, outcome, overwrite, saved)
    return outcome


def _problems(root: Path, out: KillOutcome, overwrite: bool, saved: bool) -> list[str]:
    previous = "old" if overwrite else "none"
    problems = []
    if out.found == "broken":
        problems.append("a half-written model is visible under the name")
    elif out.found not in ("new", previous):
        problems.append(f"found {out.found!r}; expected 'new' or {previous!r}")
    if (saved or out.phase in ("removing old", "done")) and out.found != "new":
        problems.append(f"the save completed but {out.found!r} is found")
    if out.phase in ("not started", "writing", "written", "between renames") and out.found != previous:
        problems.append(f"an unfinished save shows {out.found!r} instead of the previous {previous!r}")
    listed = out.name in [i.name for i in store.list_models()]
    if listed != (out.found in ("new", "old")):
        problems.append(f"list_models {'lists' if listed else 'misses'} it while {out.found!r} is found")
    left = _hidden(root, out.name)
    if left:
        problems.append(f"hidden folders left after recovery: {left}")
    return problems


def _phase(root: Path, name: str) -> str:
    """What the kill interrupted, from plain file reads (store calls would recover)."""
    hidden = _hidden(root, name)
    temps = [h for h in hidden if ".tmp-" in h]
    has_old = f".{name}.old" in hidden
    if has_old:
        return "removing old" if (root / name).exists() else "between renames"
    if temps:
        return "written" if (root / temps[0] / store.META_FILE).is_file() else "writing"
    try:
        version = json.loads((root / name / store.META_FILE).read_text())["settings"]["version"]
    except (OSError, ValueError, KeyError):
        version = None
    return "done" if version == "new" else "not started"


def _found(root: Path, name: str) -> str:
    """The version the store shows under ``name`` (looking it up recovers), checked byte for byte."""
    try:
        info = store.read_info(store.resolve(name))
    except store.ModelError:
        return "broken" if (root / name).exists() else "none"
    version = info.settings.get("version")
    if version not in ("old", "new") or info.path != root / name:
        return "broken"
    data = (info.path / WEIGHTS).read_bytes() if (info.path / WEIGHTS).is_file() else b""
    config = (info.path / "config.txt").read_text() if (info.path / "config.txt").is_file() else ""
    intact = hashlib.sha256(data).digest() == hashlib.sha256(b"".join(_chunks(version))).digest()
    return version if intact and config == version else "broken"


def _hidden(root: Path, name: str) -> list[str]:
    try:
        return sorted(e for e in os.listdir(root) if e.startswith(f".{name}."))
    except OSError:
        return []


def _info(version: str) -> store.ModelInfo:
    return store.ModelInfo(path=Path("."), name="x", backend="toy", settings={"version": version})


def _chunks(version: str) -> list[bytes]:
    """Distinct chunks per version and position: any mix or truncation changes the bytes."""
    out = []
    for k in range(CHUNKS):
        block = hashlib.sha256(f"{version}-{k}".encode()).digest()
        out.append(block * (CHUNK // len(block)))
    return out


def _writer(version: str, pause: float):
    def write(folder: Path) -> None:
        (folder / "config.txt").write_text(version)
        with open(folder / WEIGHTS, "wb") as fh:
            for chunk in _chunks(version):
                fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
                time.sleep(pause)

    return write


def _child(name: str) -> None:
    """Save the "new" version of ``name``; the parent kills this process at some point."""
    real_rename = Path.rename

    def slow_rename(self, target):
        # The swap's renames are microseconds apart: widen the gap so random kills hit it.
        out = real_rename(self, target)
        time.sleep(SWAP_PAUSE_S)
        return out

    Path.rename = slow_rename
    print("ready", flush=True)
    store.save(_info("new"), _writer("new", PAUSE_S), name)
    print("saved", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="kills per kind (fresh save, overwrite)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child)
        return 0
    bad = 0
    for overwrite in (False, True):
        with tempfile.TemporaryDirectory() as home:
            outcomes = run_kills(args.kills, args.seed, Path(home), overwrite)
        counts = collections.Counter((o.phase, o.found) for o in outcomes)
        print(f"{'overwrite' if overwrite else 'fresh save'}: {len(outcomes)} kills")
        for (phase, found), count in sorted(counts.items()):
            print(f"  killed {phase:<16} -> found {found:<6} x{count}")
        for o in outcomes:
            if not o.ok:
                bad += 1
                print(f"  FAIL {o.name} at {o.offset_s}s ({o.phase}): {'; '.join(o.problems)}")
    print("all kills left a consistent store" if not bad else f"{bad} kills broke a rule")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
