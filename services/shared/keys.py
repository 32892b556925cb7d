"""Secret keys kept in files of their own (0600), made on first use by whichever process
needs one first, so every process of a machine (or every machine given the same file)
shares it."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path


def key_in_file(path: Path, size: int = 32) -> bytes:
    """The key in ``path``, made on first use: written to a unique 0600 file, then linked
    into place (``link`` fails if another process got there first, and then its key is read)."""
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(size))
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
    return bytes.fromhex(path.read_text().strip())
