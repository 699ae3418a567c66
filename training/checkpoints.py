"""A training run's checkpoints on disk: RUN/checkpoint-N folders written whole or not at all (train.py
saves into checkpoint-N.partial, writes trainer_state.json last and renames), which of them can be
resumed from or evaluated, and why the others cannot."""

from __future__ import annotations

import json
import re
from pathlib import Path

from curation.store.files import atomic_write

TRAINER_STATE = "trainer_state.json"  # written last into a checkpoint: its presence marks it complete
PARTIAL = ".partial"  # the suffix of a checkpoint folder being written
_CHECKPOINT = re.compile(r"checkpoint-(\d+)(\.partial)?")


def step_of(path: Path) -> int:
    return int(_CHECKPOINT.fullmatch(path.name).group(1))


def incomplete(path: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from (None when it can)."""
    if not path.is_dir():
        return "no such folder"
    if path.name.endswith(PARTIAL):
        return "a save that never finished"
    try:
        state = json.loads((path / TRAINER_STATE).read_text())
        int(state["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"no readable {TRAINER_STATE} (a save that never finished)"
    if not any(path.glob("model*.safetensors")):
        return "no model weights"
    return None


def complete_checkpoints(run: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """A run's checkpoints that can be resumed from (oldest first), and the folders that cannot, with
    why: .partial folders of saves that were cut short, and checkpoint-N folders without their trainer
    state (written in place by versions before saves were atomic)."""
    done, skipped = [], []
    found = [p for p in run.glob("checkpoint-*") if _CHECKPOINT.fullmatch(p.name) and p.is_dir()]
    for p in sorted(found, key=lambda p: (step_of(p), p.name)):
        why = incomplete(p)
        if why is None:
            done.append(p)
        else:
            skipped.append((p, why))
    return done, skipped


def describe_skipped(skipped: list[tuple[Path, str]]) -> str:
    return "; ".join(f"{p.name} ({why})" for p, why in skipped)


def write_durably(path: Path, text: str) -> None:
    """Write a file whole or not at all (the store's atomic write: temp file, fsync, rename, folder fsync)."""
    atomic_write(path, lambda f: f.write(text.encode()))
