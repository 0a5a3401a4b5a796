"""An output folder belongs to one run: claimed before any work, replaced as a whole when the run ends.

`prepare` runs before the model loads: `--out` must be a folder we can write; stale staging folders of
earlier runs of the same output (their process gone) are removed; a folder holding another run — its
manifest, or the `.checkpoints/run.json` of an unfinished run, describes another config — or files that
are not a neuroloc output is refused unless `overwrite`; an unfinished run of the same config is resumed.
`commit` writes every file of the result (its children in sub-folders, each with a manifest and a report)
into a staging folder beside the output, then swaps it in with two renames, so no file of an old run is
left and an interrupted write leaves the old folder as it was.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from ..errors import NeurolocError
from ..io import atomic_write_json, build_manifest
from ..record.checkpoint import CHECKPOINT_DIR
from ..report.html import write_report
from .study import StudyResult

__all__ = ["OutputFolder", "write_result"]

RUN_FILE = "run.json"
MANIFEST = "manifest.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def manifest_identity(manifest: dict) -> dict | None:
    """The run identity recorded in a manifest (parameters with the result-changing run settings)."""
    parameters = manifest.get("parameters")
    if not isinstance(parameters, dict):
        return None
    settings = parameters.get("settings")
    if isinstance(settings, dict):
        parameters = {**parameters, "settings": {k: settings.get(k) for k in ("bos", "max_tokens", "dtype")}}
    return {"command": manifest.get("command"), "parameters": parameters}


class OutputFolder:
    """The output folder of one run of `command` with `identity` (`StudyConfig.identity()`)."""

    def __init__(self, path: str | Path, command: str, identity: dict[str, Any]) -> None:
        self.path = Path(path)
        self.command = command
        self.identity = {"command": command, "parameters": identity}
        self.resuming = False
        self._created = False

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINT_DIR

    # -- before any work ------------------------------------------------------------------------------
    def prepare(self, *, overwrite: bool = False, resume: bool = False) -> None:
        """Check, clean and claim the folder (see the module docstring); raises a one-line error naming
        `--out` and the way out."""
        out = self.path
        if out.exists() and not out.is_dir():
            raise NeurolocError(f"--out {out} is a file; give a folder (new or empty, or an earlier output of "
                                "the same command)")
        self._check_writable()
        self._remove_stale()
        run_file = self.checkpoints / RUN_FILE
        unfinished = _read_json(run_file)
        finished = _read_json(out / MANIFEST)
        if overwrite:
            run_file.unlink(missing_ok=True)  # checkpoints are keyed by content: another run's are never resumed
        elif unfinished is not None:
            if unfinished.get("identity") != self.identity:
                what = unfinished.get("identity", {}).get("command", "another command")
                raise NeurolocError(f"--out {out} holds an unfinished run of `neuroloc {what}` with other settings"
                                    f"{' (so --resume cannot continue it)' if resume else ''}; rerun that command to "
                                    "resume it, give --overwrite to replace it, or choose another --out")
            self.resuming = True
        elif finished is not None:
            if manifest_identity(finished) != self.identity:
                raise NeurolocError(f"--out {out} holds the results of another run (`neuroloc "
                                    f"{finished.get('command', '?')}` with other settings); give --overwrite to "
                                    "replace them, or choose another --out")
        elif out.is_dir() and any(out.iterdir()):
            raise NeurolocError(f"--out {out} is not empty and holds no neuroloc output; give --overwrite to "
                                "replace its contents, or choose another --out")
        if resume and not self.resuming:
            raise NeurolocError(f"--resume: {out} holds no unfinished run to resume; leave --resume out to start")
        self._created = not out.exists()
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        if not self.resuming:
            atomic_write_json(run_file, {"identity": self.identity, "pid": os.getpid()})

    def _check_writable(self) -> None:
        """Create (and remove) a file where the run will write, so a read-only --out fails before work."""
        probe_dir = self.path if self.path.is_dir() else self.path.parent
        try:
            probe_dir.mkdir(parents=True, exist_ok=True)
            probe = probe_dir / f".neuroloc-write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise NeurolocError(f"--out {self.path}: cannot write there ({error.strerror or error}); choose a "
                                "writable folder") from None

    def _staging_names(self) -> list[Path]:
        parent, name = self.path.parent, self.path.name
        return sorted(parent.glob(f".{name}.staging-*")) + sorted(parent.glob(f".{name}.old-*"))

    def _remove_stale(self) -> None:
        """Staging folders of earlier runs of this output whose process is gone (killed mid-write)."""
        for stale in self._staging_names():
            try:
                pid = int(stale.name.rsplit("-", 2)[-2])
            except (ValueError, IndexError):
                pid = -1
            if pid != os.getpid() and (pid < 0 or not _pid_alive(pid)):
                shutil.rmtree(stale, ignore_errors=True)

    # -- after the work -------------------------------------------------------------------------------
    def commit(self, result: StudyResult, *, keep_checkpoints: bool = False) -> None:
        """Write `result` into a staging folder and swap it in for the output folder."""
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        staging = self.path.parent / f".{self.path.name}.staging-{token}"
        old = self.path.parent / f".{self.path.name}.old-{token}"
        try:
            write_result(result, staging)
            if keep_checkpoints and self.checkpoints.is_dir():
                (self.checkpoints / RUN_FILE).unlink(missing_ok=True)
                shutil.move(str(self.checkpoints), str(staging / CHECKPOINT_DIR))
            if self.path.exists():
                os.rename(self.path, old)
            os.rename(staging, self.path)
        except OSError as error:  # a full disk, a quota, a folder made read-only meanwhile
            kept = "the recordings are checkpointed; " if self.holds_checkpoints() else ""
            raise NeurolocError(f"--out {self.path}: cannot write the results ({error.strerror or error}); {kept}make "
                                "room (or choose another --out) and run the same command again") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)

    def abandon(self) -> None:
        """After a failure that saved nothing worth resuming: remove the claim (and the folder, if this run
        created it and nothing else is in it)."""
        (self.checkpoints / RUN_FILE).unlink(missing_ok=True)
        for folder in (self.checkpoints, self.path):
            try:
                if folder == self.checkpoints or self._created:
                    folder.rmdir()  # only when empty
            except OSError:
                pass

    def holds_checkpoints(self) -> bool:
        """Whether anything but the claim was checkpointed (worth resuming)."""
        return self.checkpoints.is_dir() and any(p.name != RUN_FILE for p in self.checkpoints.iterdir())


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_result(result: StudyResult, folder: Path) -> None:
    """Every file of `result` in `folder`: its own files, its children's folders, manifest.json, report.html."""
    folder.mkdir(parents=True, exist_ok=True)
    result.write(folder)
    for name, child in result.children.items():
        write_result(child, folder / name)
    config = result.config
    manifest = build_manifest(config.command, config.to_dict(), model=result.model, results=result.summary,
                              timings=result.timings, **result.manifest_sections())
    atomic_write_json(folder / MANIFEST, manifest)
    write_report(folder / "report.html", result.title(), result.sections(), manifest=manifest)
