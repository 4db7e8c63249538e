"""Where generated data is cached: ``$STABLETRAIN_CACHE``, else ``$XDG_CACHE_HOME/stabletrain``, else ``~/.cache/stabletrain``.

Example:
    >>> import os
    >>> os.environ["STABLETRAIN_CACHE"] = "/tmp/stabletrain-cache-doctest"
    >>> str(cache_dir())
    '/tmp/stabletrain-cache-doctest'
    >>> del os.environ["STABLETRAIN_CACHE"]
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(sub: str | None = None) -> Path:
    """The cache folder (created on demand by callers), or its sub-folder ``sub``."""
    root = os.environ.get("STABLETRAIN_CACHE")
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "stabletrain"
    return base / sub if sub else base
