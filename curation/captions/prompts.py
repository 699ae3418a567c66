"""What the LLM is asked: the prompt files (prompts/<version>.md, a system and a user part) and the
grounding text the pipeline already has for a pair (label or narration, measured pose change, the
offline instruction). Editing a prompt file makes a new version (its text's hash is in the tag)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from schemas.records import FramePair, caption_version

from ..config import CaptionConfig
from ..errors import RunError
from .offline import describe

PROMPTS_DIR = Path(__file__).parent / "prompts"


class CaptionSetupError(RunError, RuntimeError):
    """The caption run cannot start (no key, no model, unknown prompt): one line for the user."""


@dataclass
class CaptionJob:
    pair: FramePair
    before_jpg: bytes
    after_jpg: bytes


@dataclass(frozen=True)
class Prompt:
    version: str
    system: str
    user: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(f"{self.system}\0{self.user}".encode()).hexdigest()

    @property
    def tagged_version(self) -> str:
        """'v1-3fa2b1c9': the prompt's name and its text's hash (an edited file is a new version)."""
        return f"{self.version}-{self.sha256[:8]}"

    @classmethod
    def load(cls, version: str) -> Prompt:
        path = PROMPTS_DIR / f"{version}.md"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in PROMPTS_DIR.glob("*.md")))
            raise CaptionSetupError(f"unknown prompt version {version!r}; known: {known}")
        text = path.read_text()
        parts = text.split("# user")
        return cls(version=version, system=parts[0].replace("# system", "", 1).strip(), user=parts[1].strip())


def current_version(cfg: CaptionConfig) -> str:
    """The caption version a run with these settings makes (reads the prompt file)."""
    return caption_version(cfg.model or "?", Prompt.load(cfg.prompt_version).tagged_version)


def grounding(pair: FramePair) -> str:
    """What the pipeline already knows, as text for the model (and for the server to check)."""
    lines = [f"pair: {pair.pair_id}"]
    if pair.clip.label:
        kind = "narration" if pair.clip.source == "epic" else "action label"
        lines.append(f"{kind}: {pair.clip.label}")
    m = pair.motion
    lines.append(f"time between frames: {pair.after_time_s - pair.before_time_s:.2f} s")
    if m.pose_change is not None:
        lines.append(
            f"measured pose change: {m.pose_change:.2f} torso lengths (largest joint {m.max_joint_change:.2f}, "
            f"body moved {m.translation:.2f})"
        )
    if pair.before_pose is not None and pair.after_pose is not None:
        guess = describe(pair.before_pose, pair.after_pose)  # None: no body-relative description
        lines.append(f"pose-based guess: {guess if guess is not None else 'none (the pose is hard to describe)'}")
    return "\n".join(lines)
