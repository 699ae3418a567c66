"""Prefect flow `build_dataset`: wraps curation.runner's plan / process_unit / finalize as tasks.

All the work is plain Python in `curation/`; tasks receive small things (config JSON, a work unit)
and no task input is hashed for caching (cache_policy=NONE: configs and clips are not cache keys).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from curation.config import BuildConfig, load_config
from curation.pipeline import ClipResult
from curation.runner import (
    BuildPlan,
    WorkUnit,
    check_stop,
    current_stats,
    finalize,
    get_processor,
    nothing_to_do,
    plan_build,
    process_unit,
    start_caption_stage,
    writer_lock,
)
from schemas.records import Clip

# curation's INFO logs (model loaded, unit committed, ...) reach the run logs when Prefect attaches its
# handlers to the "curation" logger (PREFECT_LOGGING_EXTRA_LOGGERS=curation); the root logger's WARNING
# level would otherwise drop them first.
if logging.getLogger("curation").level == logging.NOTSET:
    logging.getLogger("curation").setLevel(logging.INFO)

# In-process progress hooks, keyed by output folder: the CLI registers one to draw its progress bar.
# A flow run started elsewhere (a deployment) has none and reports through its logs only.
PROGRESS_HOOKS: dict[str, Callable[[ClipResult], None]] = {}


def _sources(unit: WorkUnit) -> str:
    return "+".join(sorted({c.source for c in unit.clips}))


def _config(cfg_json: str) -> BuildConfig:
    return BuildConfig.model_validate_json(cfg_json)


@task(name="plan", cache_policy=NONE)
def plan_task(cfg_json: str) -> BuildPlan:
    plan = plan_build(_config(cfg_json))
    get_run_logger().info(
        "%d clips listed (%d ignored files), %d already done, %d to process in %d units",
        len(plan.listing.clips),
        len(plan.listing.ignored),
        len(plan.done),
        plan.pending_clips,
        len(plan.units),
    )
    return plan


@task(
    name="process-unit",
    task_run_name="unit {unit.unit_id}: {n_clips} clips from {sources}",
    cache_policy=NONE,
    retries=1,
    retry_delay_seconds=5,
)
def unit_task(
    cfg_json: str,
    unit: WorkUnit,
    n_clips: int,
    sources: str,
    upcoming: list[Clip] | None = None,
    ticket: dict | None = None,
) -> dict[str, Any]:
    cfg = _config(cfg_json)
    logger = get_run_logger()
    hook = PROGRESS_HOOKS.get(cfg.output)

    def on_clip(res: ClipResult) -> None:
        outcome = f"{len(res.pairs)} pairs" if res.accepted else ", ".join(r.reason.value for r in res.rejects)
        logger.info("%s: %s", res.clip.clip_id, outcome)
        if hook is not None:
            hook(res)

    record = process_unit(cfg, unit, on_clip=on_clip, upcoming=upcoming, ticket=ticket)
    logger.info("unit %s committed: %d samples in %d shards", unit.unit_id, record["samples"], len(record["shards"]))
    return record


@task(name="finalize", cache_policy=NONE)
def finalize_task(cfg_json: str, plan: BuildPlan) -> dict[str, Any]:
    return finalize(_config(cfg_json), plan)


@flow(name="build_dataset", flow_run_name="build {output}")
def build_dataset(
    output: str,
    input: str | None = None,
    config_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    parallel: bool = False,
    wait: float | None = None,
) -> dict[str, Any]:
    """Build (or resume) a dataset: folder `input` (or the config's sources) -> shards under `output`.
    With `parallel` the work units are submitted to the flow's task runner (see `with_dask`); each
    worker process loads the pose model once. Otherwise they run one after another in this process.
    The run holds the output's writer lock (`wait`: seconds to wait for another writer; default: fail);
    a unit on a Dask worker commits only while the lock's holder (its ticket) still holds the output."""
    extra: dict[str, Any] = dict(overrides or {})
    if input is not None:
        extra["sources"] = [{"kind": "folder", "root": input}]
    cfg = load_config(config_path, output=output, **extra)
    cfg_json = cfg.model_dump_json()
    with writer_lock(cfg, "build (prefect flow)", wait) as out:  # one writer per output, also for scheduled runs
        plan = plan_task(cfg_json)
        if nothing_to_do(cfg, plan):
            get_run_logger().info("nothing new: %s is up to date", output)
            out.repair()  # copies an interrupted upload left out of step
            return current_stats(cfg)
        if plan.units:
            get_processor(cfg)  # a model that cannot load stops the run before any clip is marked
        from flows.captions import resolve_api_key

        stage = start_caption_stage(cfg, out, plan, resolve_api_key(cfg.caption))  # LLM captions, beside the units
        try:
            if parallel:
                ticket = out.ticket()
                futures = []
                try:
                    for unit in plan.units:
                        check_stop()
                        futures.append(unit_task.submit(cfg_json, unit, len(unit.clips), _sources(unit), ticket=ticket))
                    for f in futures:
                        record = f.result()  # a unit that failed after its retries fails the run, visibly
                        if stage is not None:
                            stage.submit(record)
                finally:
                    for f in futures:  # the lock is held until no unit of this run is still writing
                        f.wait()
            else:
                for k, unit in enumerate(plan.units):
                    check_stop()
                    upcoming = list(plan.units[k + 1].clips) if k + 1 < len(plan.units) else None
                    record = unit_task(cfg_json, unit, len(unit.clips), _sources(unit), upcoming)
                    if stage is not None:
                        stage.submit(record)
            if stage is not None:
                summary = stage.finish()
                get_run_logger().info("captions: %s", summary)
        except BaseException:
            if stage is not None:
                stage.abort()
            raise
        stats = finalize_task(cfg_json, plan)
    report_artifact(output, stats)
    logging.getLogger(__name__).info("build finished: %s pairs from %s clips", stats["pairs"], stats["clips_in"])
    return stats


def report_artifact(output: str, stats: dict[str, Any]) -> None:
    """The build's summary and the path of its QA report as a markdown artifact on the flow run."""
    from prefect.artifacts import create_markdown_artifact

    report = stats.get("report", {})
    reasons = "\n".join(f"| {k} | {v} |" for k, v in stats.get("rejects_by_reason", {}).items())
    markdown = (
        f"# motionpairs build: {output}\n\n"
        f"clips in {stats['clips_in']}, accepted {stats['clips_accepted']}, rejected {stats['clips_rejected']}; "
        f"**{stats['pairs']} pairs** in {stats['shards']} shards; near-duplicates dropped "
        f"{stats.get('near_duplicates', 0)}\n\n"
        f"| stage/reason | clips |\n|---|---:|\n{reasons}\n\n"
        f"QA report: `{report.get('path', 'not written: ' + str(report.get('error')))}`\n"
    )
    create_markdown_artifact(markdown=markdown, key="motionpairs-build-report", description=f"build of {output}")


def with_dask(workers: int = 2, address: str | None = None):
    """build_dataset on Dask: a LocalCluster of `workers` processes (one thread each), or the
    scheduler at `address` (e.g. tcp://10.0.0.5:8786). Output is identical to the sequential run."""
    from prefect_dask import DaskTaskRunner

    runner = (
        DaskTaskRunner(address=address)
        if address
        else DaskTaskRunner(
            cluster_class=local_cluster,
            cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True},
        )
    )
    return build_dataset.with_options(task_runner=runner)


def local_cluster(**kwargs):
    """A Dask LocalCluster whose worker processes are not daemonic, so each can start its decode
    workers (the streaming build's decode stage). A cluster of your own needs the same setting:
    `distributed.worker.daemon: false` (e.g. DASK_DISTRIBUTED__WORKER__DAEMON=False for `dask worker`);
    otherwise its workers decode in-process, and say so in their log."""
    import dask
    import distributed

    dask.config.set({"distributed.worker.daemon": False})  # read by the nannies whenever a worker (re)starts
    return distributed.LocalCluster(**kwargs)
