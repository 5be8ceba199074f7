"""Small helpers shared across the package: atomic writes, seeding, config switches."""

from __future__ import annotations

import glob
import os
import random
import tempfile
import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Any, Callable

import numpy as np

TMP_SUFFIX = ".tmp"
OFF_BY_DEFAULT = "off_by_default"  # dataclass field metadata: see :func:`switch`


def switch(default: Any = None, *, factory: Callable[[], Any] | None = None) -> Any:
    """A config dataclass field for a component or setting added after runs were saved.

    At its default the key is left out of the resolved config (:func:`iccld.config.to_dict`), so a
    run with it at the default has the same ``config.yaml``, cache keys and run folder as one saved
    before it existed; loading fills the default back in. A whole section (a dataclass) is a switch
    with ``factory`` (its class): left out while it equals a fresh default instance."""
    if factory is not None:
        return field(default_factory=factory, metadata={OFF_BY_DEFAULT: True})
    return field(default=default, metadata={OFF_BY_DEFAULT: True})


def switch_default(f: dataclasses.Field) -> Any:
    """The default of a :func:`switch` field as plain data (a section's as a dict)."""
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def asdict_without_switches(obj: Any) -> dict:
    """``dataclasses.asdict(obj)`` with every :func:`switch` at its default left out, in any section."""
    data = dataclasses.asdict(obj)
    _drop_switch_defaults(obj, data)
    return data


def _drop_switch_defaults(section: Any, data: dict) -> None:
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if f.metadata.get(OFF_BY_DEFAULT) and data.get(f.name) == switch_default(f):
            del data[f.name]
        elif dataclasses.is_dataclass(value) and isinstance(data.get(f.name), dict):
            _drop_switch_defaults(value, data[f.name])


def _atomic_write(path: Path, fill) -> None:
    """Write ``path`` through a temporary file in the same folder and a rename, so a kill at any moment
    leaves either the old file or the new one, never a half-written one; ``fill(fh)`` writes the
    content into the open temporary file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as exc:  # name the file meant, not a parent or a temporary name
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`_atomic_write`)."""
    _atomic_write(path, lambda fh: fh.write(data))


def atomic_copy(source: Path, path: Path) -> None:
    """Copy the file ``source`` to ``path`` atomically, without holding it in memory."""
    import shutil

    def fill(fh) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, fh, 1 << 20)

    _atomic_write(path, fill)


def remove_stale_temporaries(folder: Path, names) -> list[Path]:
    """Remove the temporary files that :func:`atomic_write_bytes` leaves when killed mid-write
    (``.<name>.<8 random characters>.tmp``), for the given file names only. Call it only while no
    other process writes ``folder`` (under its run lock)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for name in names:
        for tmp in folder.glob(f".{glob.escape(name)}.*{TMP_SUFFIX}"):
            middle = tmp.name[len(name) + 2: -len(TMP_SUFFIX)]
            if len(middle) == 8 and tmp.is_file():  # mkstemp's random part; anything else is not ours
                tmp.unlink()
                removed.append(tmp)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
