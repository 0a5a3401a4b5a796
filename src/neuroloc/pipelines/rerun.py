"""`neuroloc rerun OUT/manifest.json`: the config a manifest records, ready to run again."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import NeurolocError
from ..runner import StudyConfig
from . import DEPRECATED_COMMANDS, STUDIES, study_config

__all__ = ["config_from_manifest"]


def config_from_manifest(path: str | Path) -> StudyConfig:
    """The study config of the run `path` (a manifest.json, or the folder holding one) describes."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise NeurolocError(f"{path}: no such manifest; give an output folder's manifest.json") from None
    except (OSError, ValueError) as error:
        raise NeurolocError(f"{path}: not a readable manifest ({error})") from None
    command = DEPRECATED_COMMANDS.get(manifest.get("command"), manifest.get("command"))
    if command not in STUDIES:
        raise NeurolocError(f"{path}: command {manifest.get('command')!r} is not a study this neuroloc can rerun "
                            f"({', '.join(STUDIES)})")
    return study_config(command).from_dict(manifest.get("parameters", {}), where=str(path))
