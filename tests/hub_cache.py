"""A Hugging Face Hub cache written by hand, in the layout ``snapshot_download`` leaves behind:

    CACHE/models--USER--NAME/refs/<branch or tag>       the commit hash, no newline
    CACHE/models--USER--NAME/blobs/<etag>               file contents; etag = git blob sha1, or the
                                                         sha256 for files the Hub keeps in LFS
    CACHE/models--USER--NAME/snapshots/<commit>/<path>  relative symlinks ../../blobs/<etag>

so tests resolve repo ids offline (HF_HUB_OFFLINE=1) exactly as a user's cache would.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt")  # as the Hub's default .gitattributes


def etag(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix in LFS_SUFFIXES:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_to_cache(folder: Path, cache: Path, repo_id: str, commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Put every file of ``folder`` into ``cache`` as the snapshot ``commit`` (40 hex digits) of
    ``repo_id``, pointed to by ``refs``; returns the snapshot folder."""
    assert len(commit) == 40
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for file in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        rel = file.relative_to(folder)
        tag = etag(file)
        blob = repo / "blobs" / tag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(file.read_bytes())
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot
