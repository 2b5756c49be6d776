"""Where ia2 reads data and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import IA2Error


def cache_dir() -> Path:
    """`IA2_CACHE`, else `$XDG_CACHE_HOME/ia2`, else `~/.cache/ia2`."""
    if os.environ.get("IA2_CACHE"):
        return Path(os.environ["IA2_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ia2"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The benchmark data directory: the explicit option, then `IA2_DATA_DIR`, then a
    `shared/data` folder next to the checkout (or its parent)."""
    if explicit is not None:
        chosen = Path(explicit).expanduser()
    elif os.environ.get("IA2_DATA_DIR"):
        chosen = Path(os.environ["IA2_DATA_DIR"]).expanduser()
    else:
        here = Path(__file__).resolve()
        candidates = [p / "shared" / "data" for p in here.parents]
        chosen = next((c for c in candidates if c.is_dir()), None)
        if chosen is None:
            raise IA2Error("no data directory: pass --data-dir or set IA2_DATA_DIR")
    if not chosen.is_dir() or not os.access(chosen, os.R_OK | os.X_OK):
        raise IA2Error(f"data directory {chosen} is not a readable directory")
    return chosen
