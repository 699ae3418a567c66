"""Captions: offline (from the poses), LLM (request/parse, cache, run-wide limits, Batch API), the checks
of LLM captions against the keypoints, the caption stage of a build, and safe subset filters."""

from .offline import CAPTIONER, VERSION, OfflineCaptioner, describe

__all__ = ["CAPTIONER", "VERSION", "OfflineCaptioner", "describe"]
