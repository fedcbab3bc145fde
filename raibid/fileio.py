"""Writing files that hold secrets: private (0600) from the first byte, replaced atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from raibid.errors import UsageError


def write_private(path: Path, text: str, *, what: str = "the file") -> None:
    """Write ``text`` to ``path`` with mode 0600, through a temp file renamed into place.

    The temp file is created 0600 (``mkstemp``), so the secret is never readable by
    others, not even for a moment, and an existing file (or a hard link to it) keeps
    its old content instead of being truncated and rewritten in place. A path that
    cannot be created is a UsageError (exit 2) naming ``what``.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise UsageError(f"{what}: cannot write {path}: {e.strerror or e}",
                         hint="choose a path whose folder exists or can be created, and that you may write") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
