"""Prefect flows `recaption` and `publish`, for manual runs from the Prefect UI. They wrap
curation.captions.recaption; the API key comes from the environment or, when caption.api_key_secret names one,
from a Prefect Secret block (it is passed to the client only, never logged or stored)."""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger

from curation.captions.recaption import publish as publish_captions
from curation.captions.recaption import recaption as recaption_subset
from curation.config import CaptionConfig, load_config


def resolve_api_key(cfg: CaptionConfig) -> str | None:
    """The key from the environment (the captioner reads it itself: None here), else from the Prefect
    Secret block `caption.api_key_secret` (builds, scheduled deployments and recaption alike)."""
    if cfg.captioner != "openai" or os.environ.get(cfg.api_key_env):
        return None
    if cfg.api_key_secret:
        from prefect.blocks.system import Secret

        return Secret.load(cfg.api_key_secret).get()
    return None


@flow(name="recaption", flow_run_name="recaption {output}")
def recaption(
    output: str,
    where: str | None = None,
    model: str | None = None,
    prompt_version: str | None = None,
    config_path: str | None = None,
) -> dict[str, Any]:
    """Caption the samples of `output` that `where` selects (a DuckDB SQL boolean expression over
    samples.parquet, with no file or code access); appends a caption version."""
    caption = {"captioner": "openai"} | {
        k: v for k, v in {"model": model, "prompt_version": prompt_version}.items() if v
    }
    cfg = load_config(config_path, output=output, caption=caption)
    summary, run_id = recaption_subset(output, cfg.caption, where=where, api_key=resolve_api_key(cfg.caption))
    get_run_logger().info("caption run %s: %s", run_id, summary)
    return {"run_id": run_id, **summary.__dict__}


@flow(name="publish", flow_run_name="publish {output}")
def publish(output: str, caption_version: str | None = None, agreement: str = "any") -> dict[str, Any]:
    """A new generation of `output` with the chosen caption per sample (`agreement`: any, prefer, require)."""
    summary = publish_captions(output, caption_version=caption_version, agreement=agreement)
    get_run_logger().info("published %s", summary)
    return summary
