"""One way to write a file so that a killed run never leaves it half-written.

Every writer of the project (SAE weights and configs, training checkpoints, harvest progress and
manifests, the build record, store tables) goes through :func:`atomic_write`: the content is written
to ``<name>.tmp`` beside the target, flushed and fsync'ed, then renamed over the target (``os.replace``
is atomic on POSIX). A reader sees either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any, Callable


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[IO[bytes]], Any]) -> Path:
    """Write ``data`` (text, bytes, or a function that writes into a binary file) to ``path`` atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        if isinstance(data, str):
            f.write(data.encode())
        elif isinstance(data, (bytes, bytearray)):
            f.write(data)
        else:
            data(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any, default: Callable[[Any], Any] = str, indent: int = 2) -> Path:
    """``json.dumps(obj, sort_keys=True)`` written with :func:`atomic_write`."""
    return atomic_write(path, json.dumps(obj, indent=indent, sort_keys=True, default=default))
