"""What iccld may write where: the output-file policy, run-folder markers and the run lock.

Policy (one place, used by every command that writes):

- :func:`check_output_file` — a writer (``--json``, reports, figures, predictions, exports) refuses to
  replace an existing file unless the user passed ``--overwrite``, and never writes over a file that a
  marker lists as written by another iccld command (``evaluate --json RUN/last.ckpt`` is refused even
  with ``--overwrite``), nor over a file inside a marked folder that no marker lists (the user's own
  file in a run folder). :func:`claim_outputs` then lists what a command writes into a marked folder,
  so that its next ``--overwrite`` may replace it.
- :func:`check_output_dir` — an output folder is checked (not a file, not under a file, writable)
  before any heavy work, so a read-only disk fails in the first second, not after an evaluation.
- A folder iccld fills (a run folder, the demo folder) holds :data:`MARKER`, a JSON map from each file
  it wrote (relative path) to the command that wrote it. ``--overwrite`` removes only those files;
  a file the marker does not list is the user's and is never touched.
- :class:`RunLock` — one writer per run folder (``flock`` on :data:`LOCK`, holding the pid and host).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import tempfile
from pathlib import Path

from .errors import ICCLDError
from .utils import atomic_write_text

MARKER = ".iccld-run.json"
LOCK = ".iccld-run.lock"


class OutputError(ICCLDError):
    """An output path iccld must not, or cannot, write."""


# markers -------------------------------------------------------------------------------------

def read_marker(folder: Path) -> dict[str, str] | None:
    """``{relative path: command}`` of the files iccld wrote in ``folder``; None without a marker."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        files = data["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not a mapping")
    except (ValueError, KeyError, TypeError) as exc:
        raise OutputError(f"{path}: damaged iccld marker ({exc}); delete it only if nothing in "
                          f"{folder} is an iccld run") from None
    for name in files:
        if not is_inside(folder, name):
            raise OutputError(f"{path}: lists '{name}', which is not a file inside {folder}; iccld never "
                              "touches a path outside the folder a marker sits in, so this folder is refused")
    return {str(k): str(v) for k, v in files.items()}


def is_inside(folder: Path, name) -> bool:
    """Whether ``name`` is a plain relative path that stays inside ``folder``: not absolute, no ``..``,
    no NUL, and no symbolic link on the way that leads out of it."""
    if not isinstance(name, str) or not name or "\0" in name:
        return False
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or rel.parts in ((), (".",)):
        return False
    root = Path(os.path.realpath(folder))
    parent = Path(os.path.realpath((Path(folder) / rel).parent))  # the file itself may be a link: unlinking removes the link
    return parent == root or root in parent.parents


def record_outputs(folder: Path, paths, command: str) -> None:
    """Add ``paths`` (absolute, or relative to ``folder``) to the marker as written by ``command``.
    Called *before* a file is written, so a kill mid-write still leaves it claimed."""
    folder = Path(folder)
    files = read_marker(folder) or {}
    new = {_rel(folder, p): command for p in paths}
    if all(files.get(k) == v for k, v in new.items()) and (folder / MARKER).is_file():
        return
    files.update(new)
    atomic_write_text(folder / MARKER, json.dumps({"iccld": 1, "files": dict(sorted(files.items()))}, indent=1))


def forget_outputs(folder: Path, paths) -> None:
    folder = Path(folder)
    files = read_marker(folder) or {}
    for p in paths:
        files.pop(_rel(folder, p), None)
    atomic_write_text(folder / MARKER, json.dumps({"iccld": 1, "files": dict(sorted(files.items()))}, indent=1))


def _rel(folder: Path, path) -> str:
    try:
        return Path(path).relative_to(folder).as_posix()
    except ValueError:  # already relative to the folder
        return Path(path).as_posix()


def marked_folder(path: Path) -> Path | None:
    """The nearest of the three folders above ``path`` that holds an iccld marker, or None."""
    path = Path(os.path.abspath(path))
    return next((folder for folder in list(path.parents)[:3] if (folder / MARKER).is_file()), None)


def claim_outputs(paths, command: str) -> None:
    """List each of ``paths`` as ``command``'s in the marker of the folder it lies in, when it lies in
    one (a run or demo folder); called before the files are written. Elsewhere nothing is recorded."""
    by_folder: dict[Path, list[Path]] = {}
    for path in paths:
        folder = marked_folder(Path(path))
        if folder is not None:
            by_folder.setdefault(folder, []).append(Path(os.path.abspath(path)))
    for folder, mine in by_folder.items():
        record_outputs(folder, mine, command)


def written_by(path: Path) -> tuple[Path, str] | None:
    """(marker folder, command) when a marker in one of the three nearest folders lists ``path``."""
    path = Path(os.path.abspath(path))
    for folder in list(path.parents)[:3]:
        files = read_marker(folder)
        if files is not None:
            command = files.get(path.relative_to(folder).as_posix())
            if command is not None:
                return folder, command
    return None


# the writer policy ------------------------------------------------------------------------------

def check_output_file(path: str | Path, *, overwrite: bool, command: str, flag: str = "--overwrite",
                      replace_own: bool = False, check_dir: bool = True) -> Path:
    """Check, before any heavy work, that ``command`` may write the file ``path``; create its folder.

    Refused (OutputError): a folder at ``path``; a file listed in an iccld marker as written by another
    command, or an existing file in a marked folder that no marker lists (the user's: never, whatever
    ``overwrite``); an existing file, unless ``overwrite`` (or, with ``replace_own``, the marker lists
    it as ``command``'s own). The folder must be writable (checked unless ``check_dir`` is false, for a
    caller that checked it once for many files). A writer then calls :func:`claim_outputs`.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; name a file to write")
    owner = written_by(path) if path.exists() else None
    if owner is not None and owner[1] != command:
        raise OutputError(f"{path}: written by `iccld {owner[1]}` in {owner[0]}; iccld {command} never "
                          "writes over it; choose another path")
    if owner is None and path.exists() and overwrite and (folder := marked_folder(path)) is not None:
        raise OutputError(f"{path}: lies in the iccld folder {folder} but iccld did not write it; "
                          "--overwrite never replaces your files there; choose another path")
    if path.exists() and not overwrite and not (replace_own and owner is not None):
        raise OutputError(f"{path}: exists; pass {flag} to replace it, or choose another path")
    if check_dir:
        check_output_dir(path.parent)
    return path


def check_output_dir(folder: str | Path) -> Path:
    """Create ``folder`` if needed and check it takes files. OSErrors (read-only, no space, a file in
    the way) propagate with the path set, for the CLI's one line."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OSError(errno.ENOTDIR, "exists and is not a folder", str(folder))
    for parent in folder.parents:
        if parent.exists() and not parent.is_dir():
            raise OSError(errno.ENOTDIR, "is a file, so it cannot hold a folder", str(parent))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".iccld-probe.", suffix=".tmp")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(folder)) from None
    os.close(fd)
    os.unlink(probe)
    return folder


# the run lock ---------------------------------------------------------------------------------

class RunLock:
    """One writer per folder: an exclusive ``flock`` on ``folder/.iccld-run.lock``.

    The kernel releases the lock when its holder dies, so a lock left by a killed run is never in the
    way. The file holds ``{"pid", "host"}`` of the holder while it runs and is emptied (not removed: a
    removed lock file lets two processes lock two different files) on release; a non-empty file found
    unlocked is a stale lock of a dead process, taken over and reported in :attr:`stale`.
    """

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK
        self.fd: int | None = None
        self.stale: dict | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        try:  # O_NOFOLLOW: a link planted at the lock's name must not lead the truncation elsewhere
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OutputError(f"{self.path}: is a symbolic link; iccld never writes through a link it did "
                                  "not make; remove it") from None
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise OSError(exc.errno, exc.strerror, str(self.path)) from None
            who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}" if holder else "another process"
            raise OutputError(f"{self.path.parent}: in use by another iccld ({who}); wait for it to finish "
                              "or stop it, or choose another --out") from None
        self.stale = _holder(fd) or None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass  # a full or read-only disk: the kernel still drops the lock on close
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, OSError):
        return {}
