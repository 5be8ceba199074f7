"""Hub repo ids wherever a checkpoint is expected: ``USER/NAME[@REV]`` -> its snapshot folder in the
Hugging Face Hub cache, through ``huggingface_hub.snapshot_download``, so the Hub cache, ``HF_HOME``,
``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE=1`` behave as in every other Hub library. A path that exists
locally always wins over a repo id of the same spelling. (Writing and uploading a model folder is
:mod:`iccld.hub`.)
"""

from __future__ import annotations

import re
from pathlib import Path

from .. import __version__
from ..errors import CheckpointError

LIBRARY_NAME = "iccld"
# USER/NAME or USER/NAME@REVISION (a branch, a tag or a commit hash), as the Hub spells them
_REPO_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[\w./-]+))?$")


def parse_repo_id(text: str) -> tuple[str, str | None] | None:
    """``"user/name@rev"`` -> ``("user/name", "rev")``; None when ``text`` cannot be a repo id."""
    match = _REPO_ID.match(text)
    if match is None or text.endswith((".ckpt", ".safetensors", ".bin", ".pt", ".pth")):
        return None
    return match["repo"], match["rev"]


def resolve_model_source(source: str | Path) -> Path:
    """A local file or folder as given; else a Hub repo id (``USER/NAME[@REV]``) -> its snapshot
    folder in the Hub cache (downloaded when online). Anything else is returned unchanged, for the
    caller to report as missing."""
    path = Path(source)
    if path.exists():
        return path
    parsed = parse_repo_id(str(source))
    if parsed is None:
        return path
    repo_id, revision = parsed
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    try:
        return Path(snapshot_download(repo_id, revision=revision, library_name=LIBRARY_NAME,
                                      library_version=__version__))
    except LocalEntryNotFoundError:
        why = ("HF_HUB_OFFLINE=1 is set" if constants.is_offline_mode() else "the Hub could not be reached")
        raise CheckpointError(f"{source}: no such file or folder, and the Hub model {repo_id} is not in the "
                              f"cache {constants.HF_HUB_CACHE} ({why}); download it once online, or name a "
                              "local run folder") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{source}: the Hub model {repo_id} has no revision '{revision}'") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"{source}: no such file or folder, and no Hub model {repo_id} (or it is "
                              "private: log in with `hf auth login`)") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise CheckpointError(f"{source}: could not fetch the Hub model {repo_id} "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
