"""Prefect flow `build_dataset`: curation.build's one loop with its units run as Prefect tasks.

All the work is plain Python in `curation/`; this file only says where the steps run (`PrefectTasks`,
an executor for curation.build.build). Tasks receive small things (config JSON, a work unit) and no
task input is hashed for caching (cache_policy=NONE: configs and clips are not cache keys).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import dask
import distributed
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.exceptions import CancelledRun, TerminationSignal
from prefect.states import Cancelled, State
from prefect_dask import DaskTaskRunner

from curation.build import BuildStopped, PlanAhead, Watcher, build, check_stop, finalize, open_output, process_unit
from curation.config import BuildConfig, load_config
from curation.pipeline import ClipResult
from curation.plan import BuildPlan, WorkUnit, plan_build
from schemas.records import Clip

from .captions import resolve_api_key
from .server import EphemeralAPI

# curation's INFO logs (model loaded, unit committed, ...) reach the run logs when Prefect attaches its
# handlers to the "curation" logger (PREFECT_LOGGING_EXTRA_LOGGERS=curation); the root logger's WARNING
# level would otherwise drop them first.
if logging.getLogger("curation").level == logging.NOTSET:
    logging.getLogger("curation").setLevel(logging.INFO)

# In-process progress hooks, keyed by output folder: the CLI registers its progress bar's ("plan": the
# plan made, "clip": a clip done). A flow run started elsewhere (a deployment) reports through its logs.
PROGRESS_HOOKS: dict[str, dict[str, Callable[[Any], None]]] = {}

# The SIGTERM handler of the process that started a flow run in-process (the CLI's: stop at the next unit
# boundary), keyed by output folder. Prefect swaps SIGTERM for its own during a flow run (a runner's
# cancel: TerminationSignal raised wherever the main thread is); one landing while Prefect creates a task
# run fails inside its task engine ("Task run is not set") and the flow ends Failed with a traceback. The
# flow's body puts the starter's handler back, so the CLI's runs stop as its local engine does; a flow run
# started by a deployment's runner keeps Prefect's.
SIGTERM_HANDLERS: dict[str, Any] = {}


def _sources(unit: WorkUnit) -> str:
    return "+".join(sorted({c.source for c in unit.clips}))


def _config(cfg_json: str) -> BuildConfig:
    return BuildConfig.model_validate_json(cfg_json)


# Plans the CLI made while its Prefect API started (PlanAhead), keyed by the config's JSON: the flow's
# plan task takes its own config's from here instead of planning again (the CLI holds the writer lock
# from that plan to the flow's end, so nothing can have committed in between).
EARLY_PLANS: dict[str, PlanAhead] = {}


@task(name="plan", cache_policy=NONE)
def plan_task(cfg_json: str) -> BuildPlan:
    early = EARLY_PLANS.pop(cfg_json, None)
    plan = early.plan.result() if early is not None else plan_build(_config(cfg_json))
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
    hook = PROGRESS_HOOKS.get(cfg.output, {}).get("clip")

    def on_clip(res: ClipResult) -> None:
        outcome = f"{len(res.pairs)} pairs" if res.accepted else ", ".join(r.reason.value for r in res.rejects)
        logger.info("%s: %s", res.clip.clip_id, outcome)
        if hook is not None:
            hook(res)

    record = process_unit(cfg, unit, on_clip=on_clip, upcoming=upcoming, ticket=ticket)
    logger.info("unit %s committed: %d samples in %d shards", unit.unit_id, record["samples"], len(record["shards"]))
    return record


@task(name="finalize", cache_policy=NONE)
def finalize_task(cfg_json: str, plan: BuildPlan, run_seconds: float | None = None) -> dict[str, Any]:
    return finalize(_config(cfg_json), plan, run_seconds)


class PrefectTasks:
    """curation.build's executor as Prefect tasks: plan and finalize as a task each, each unit a task
    (retried once). `parallel`: units submitted to the flow's task runner (Dask: `with_dask`), their
    records taken in order; otherwise one after another in this process, the next unit's clips
    decoded ahead."""

    def __init__(self, parallel: bool = False):
        self.parallel = parallel

    def plan(self, cfg: BuildConfig) -> BuildPlan:
        return plan_task(cfg.model_dump_json())

    def run_units(self, cfg: BuildConfig, plan: BuildPlan, ticket: dict | None) -> Iterator[dict[str, Any]]:
        cfg_json = cfg.model_dump_json()
        if not self.parallel:
            for k, unit in enumerate(plan.units):
                check_stop()
                upcoming = list(plan.units[k + 1].clips) if k + 1 < len(plan.units) else None
                yield unit_task(cfg_json, unit, len(unit.clips), _sources(unit), upcoming)
            return
        futures = []
        try:
            for unit in plan.units:
                check_stop()
                futures.append(unit_task.submit(cfg_json, unit, len(unit.clips), _sources(unit), ticket=ticket))
            for f in futures:
                yield f.result()  # a unit that failed after its retries fails the run, visibly
        finally:
            for f in futures:  # the lock is held until no unit of this run is still writing
                f.wait()

    def finalize(self, cfg: BuildConfig, plan: BuildPlan, run_seconds: float) -> dict[str, Any]:
        return finalize_task(cfg.model_dump_json(), plan, run_seconds)


@flow(name="build_dataset", flow_run_name="build {output}")
def build_dataset(
    output: str,
    input: str | None = None,
    config_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    parallel: bool = False,
    wait: float | None = None,
) -> dict[str, Any] | State:
    """Build (or resume) a dataset: folder `input` (or the config's sources) -> shards under `output`.
    With `parallel` the work units are submitted to the flow's task runner (see `with_dask`); each
    worker process loads the pose model once. Otherwise they run one after another in this process.
    The run holds the output's writer lock (`wait`: seconds to wait for another writer; default: fail);
    a unit on a Dask worker commits only while the lock's holder (its ticket) still holds the output.
    A build stopped on request (curation.build.STOP) ends the run Cancelled, with the reason as its
    message and no traceback: what it committed stands and the next run resumes. (Called directly, the
    flow then raises prefect's CancelledRun; `build_on_prefect` turns it into BuildStopped.)"""
    starter = SIGTERM_HANDLERS.get(output)
    if starter is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, starter)  # Prefect puts back this same handler when the run ends
    extra: dict[str, Any] = dict(overrides or {})
    if input is not None:
        extra["sources"] = [{"kind": "folder", "root": input}]
    cfg = load_config(config_path, output=output, **extra)
    try:
        stats = build(  # one writer per output, also for scheduled runs
            cfg,
            PrefectTasks(parallel),
            api_key=resolve_api_key(cfg.caption),  # LLM captions, beside the units
            wait=wait,
            command="build (prefect flow)",
            on_plan=PROGRESS_HOOKS.get(output, {}).get("plan"),
        )
    except BuildStopped as e:  # stopped on request: the run is Cancelled (committed units stand), not Failed
        return Cancelled(message=str(e))
    report_artifact(output, stats)
    logging.getLogger(__name__).info("build finished: %s pairs from %s clips", stats["pairs"], stats["clips_in"])
    return stats


def build_on_prefect(
    cfg: BuildConfig, watcher: Watcher, wait: float | None = None, api: EphemeralAPI | None = None
) -> dict[str, Any]:
    """The CLI's default engine: the flow `build_dataset` for `cfg` on a Prefect API that dies with
    this process (`api`, started earlier by the caller, or one started here; or PREFECT_API_URL's), its
    progress told to `watcher`."""
    PROGRESS_HOOKS[cfg.output] = {"plan": watcher.plan, "clip": watcher.clip}
    if callable(handler := signal.getsignal(signal.SIGTERM)):  # a Python handler (the CLI's), not SIG_DFL
        SIGTERM_HANDLERS[cfg.output] = handler
    overrides = cfg.model_dump(mode="json", exclude={"output"})
    api = (api or EphemeralAPI()).start()  # from the main thread: the parent-death signal is tied to the forking one
    ahead = None
    if not os.environ.get("PREFECT_API_URL") and open_output(cfg).held_token() is not None:
        # this process holds the output (the CLI): plan, and load the pose model, while the API starts
        ahead = EARLY_PLANS[cfg.model_dump_json()] = PlanAhead(cfg)
    try:
        with api.serve():  # a Prefect API that dies with this process, however it dies
            return build_dataset(output=cfg.output, config_path=None, overrides=overrides, wait=wait)
    except CancelledRun as e:  # the run ended Cancelled (stopped on request): one line, exit 130
        raise BuildStopped(str(e) or "stopped; committed units stand, run the build again to resume") from None
    except TerminationSignal as e:  # SIGTERM before the flow's body took it back: the run ends Crashed
        raise BuildStopped("terminated; committed units stand, run the build again to resume") from e
    except Exception as e:
        # a signal raised inside Prefect's own machinery can come out as another error (its task engine,
        # interrupted while creating a task run: "Task run is not set"): still a stop, not a failure
        cause = _signal_behind(e)
        if isinstance(cause, KeyboardInterrupt):  # the CLI's second signal: stop at once
            raise KeyboardInterrupt from None
        if cause is not None:
            raise BuildStopped("terminated; committed units stand, run the build again to resume") from None
        raise
    finally:
        PROGRESS_HOOKS.pop(cfg.output, None)
        SIGTERM_HANDLERS.pop(cfg.output, None)
        EARLY_PLANS.pop(cfg.model_dump_json(), None)
        if ahead is not None:
            ahead.close()


def _signal_behind(e: BaseException) -> BaseException | None:
    """The KeyboardInterrupt or TerminationSignal that `e` was raised while handling, if any."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, (KeyboardInterrupt, TerminationSignal)):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def report_artifact(output: str, stats: dict[str, Any]) -> None:
    """The build's summary and the path of its QA report as a markdown artifact on the flow run."""
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
    dask.config.set({"distributed.worker.daemon": False})  # read by the nannies whenever a worker (re)starts
    return distributed.LocalCluster(**kwargs)
