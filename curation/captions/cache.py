"""The answer cache: one JSON file per request key, written atomically the moment an answer arrives, so a
re-run (also after a crash) never pays twice. The key holds everything that shapes the answer: the
server, the model, the prompt's text, the answer's schema, both frames, the image settings, the answer
length and the grounding text. Limits, budgets and timeouts are not in it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from schemas.captions import answer_json_schema

from ..config import CaptionConfig
from ..store import write_json
from .client import server_url
from .prompts import CaptionJob, Prompt, grounding


def schema_sha256(schema: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()


def request_key(parts: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:32]


def cache_key(job: CaptionJob, cfg: CaptionConfig, prompt: Prompt) -> str:
    """The caption request's key (see the module's doc)."""
    return request_key(
        (
            server_url(cfg),
            job.pair.pair_id,
            hashlib.sha256(job.before_jpg).hexdigest(),
            hashlib.sha256(job.after_jpg).hexdigest(),
            cfg.model or "",
            prompt.sha256,
            schema_sha256(answer_json_schema()),
            cfg.image_detail,
            str(cfg.image_max_side),
            str(cfg.max_tokens),
            grounding(job.pair),
        )
    )


class CaptionCache:
    """One JSON file per request key, written atomically as soon as the answer arrives."""

    def __init__(self, directory: Path):
        self.dir = directory

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, key: str, record: dict[str, Any]) -> None:
        write_json(self._path(key), record)
