"""The Prefect flow, run for real on the ephemeral API, produces what the plain runner produces."""

import shutil
import threading
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import ACCEPTED, make_bad_inputs, video
from prefect.client.orchestration import get_client

from curation.build import build
from curation.config import load_config
from flows.build import build_dataset


def test_build_dataset_flow_matches_the_plain_runner(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "tai_chi.mp4").symlink_to(video(ACCEPTED["tai_chi_forest"]))
    make_bad_inputs(folder)
    state = build_dataset(
        output=str(tmp_path / "flow"), input=str(folder), overrides={"shards": {"clips_per_unit": 2}}, return_state=True
    )
    assert state.is_completed()
    stats = state.result()
    assert stats["clips_in"] == 5 and stats["clips_accepted"] == 1 and stats["units"] == 3

    cfg = load_config(None, output=str(tmp_path / "plain"), sources=[{"root": str(folder)}])
    build(cfg)
    cols = ["pair_id", "clip_id", "before_index", "after_index", "caption"]
    a = pd.read_parquet(tmp_path / "flow" / "samples.parquet")[cols]
    b = pd.read_parquet(tmp_path / "plain" / "samples.parquet")[cols]
    pd.testing.assert_frame_equal(a, b)
    ra = pd.read_parquet(tmp_path / "flow" / "rejects.parquet")[["clip_id", "stage", "reason"]]
    rb = pd.read_parquet(tmp_path / "plain" / "rejects.parquet")[["clip_id", "stage", "reason"]]
    pd.testing.assert_frame_equal(ra, rb)

    # the API saw the flow run and its named tasks
    import anyio
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    run_id = state.state_details.flow_run_id

    async def task_names():
        async with get_client() as client:
            flow_run = await client.read_flow_run(run_id)
            assert flow_run.name == f"build {tmp_path / 'flow'}"
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
            return sorted(r.name for r in runs)

    async def artifacts():
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )

    # the summary and the QA report's path as a markdown artifact on the flow run
    (report,) = [a for a in anyio.run(artifacts) if a.key == "motionpairs-build-report"]
    assert report.type == "markdown" and "pairs" in report.data
    assert str(tmp_path / "flow" / "report" / "index.html") in report.data
    assert (tmp_path / "flow" / "report" / "index.html").is_file()

    names = anyio.run(task_names)
    assert any(n.startswith("plan") for n in names) and any(n.startswith("finalize") for n in names)
    assert sum(n.startswith("unit u") and n.endswith("clips from folder") for n in names) == 3


def test_the_cli_engine_plans_and_sets_the_model_up_while_its_prefect_api_starts(tmp_path, monkeypatch):
    """build_on_prefect (the CLI's default engine) plans, and when there is work loads the pose model and
    starts the decode workers, in a thread while its Prefect API starts; the flow's plan task takes that
    plan (its config, rebuilt from the CLI's, is the same key) and its units that processor, and the
    result is the plain build's. A re-run with nothing to do loads no model."""
    from conftest import REJECTED

    import curation.build as cb
    import flows.build as fb
    from curation.pipeline import ClipProcessor

    setups, plans = [], []
    real_setup, real_plan = ClipProcessor.setup, fb.plan_build

    def setup(self):
        setups.append(threading.current_thread().name)
        return real_setup(self)

    def plan_build(cfg):
        plans.append(threading.current_thread().name)
        return real_plan(cfg)

    monkeypatch.setattr(ClipProcessor, "setup", setup)
    monkeypatch.setattr(cb, "plan_build", plan_build)
    monkeypatch.setattr(fb, "plan_build", plan_build)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bunny.mp4").symlink_to(video(REJECTED["big_buck_bunny"][0]))
    (folder / "tai_chi.mp4").symlink_to(video(ACCEPTED["tai_chi_forest"]))
    cfg = load_config(None, output=str(tmp_path / "out"), sources=[{"root": str(folder)}], shards={"clips_per_unit": 1})
    seen = []

    class Watch:
        def plan(self, plan):
            seen.append(("plan", plan.pending_clips))

        def clip(self, res):
            seen.append((res.clip.clip_id, res.accepted))

    before = cb._processor_for.cache_info()
    with cb.writer_lock(cfg):  # as the CLI runs it: the early plan is made under the held lock
        stats = fb.build_on_prefect(cfg, Watch())
    after = cb._processor_for.cache_info()
    assert plans == ["plan-ahead"]  # planned once, early; the flow's plan task took that plan
    assert setups == ["plan-ahead"]  # set up once, early
    assert after.misses - before.misses == 1
    assert after.hits - before.hits >= 2  # the flow's check before the units and each unit found it
    assert stats["clips_in"] == 2 and stats["clips_accepted"] == 1
    assert seen[0] == ("plan", 2) and sorted(seen[1:]) == [("bunny", False), ("tai_chi", True)]
    assert not fb.EARLY_PLANS

    cb.get_processor(cfg)._decoder.close()
    cb._processor_for.cache_clear()  # a fresh process would have none
    with cb.writer_lock(cfg):
        again = fb.build_on_prefect(cfg, Watch())
    assert plans == ["plan-ahead"] * 2 and setups == ["plan-ahead"]  # nothing to do: no model loaded
    assert again["generation"] == stats["generation"] and again["pairs"] == stats["pairs"] == 2

    # without the output's lock held (a library caller) nothing is planned early: the flow plans
    shutil.rmtree(tmp_path / "out")
    fresh = fb.build_on_prefect(cfg, Watch())
    assert plans == ["plan-ahead"] * 2 + [plans[-1]] and plans[-1] != "plan-ahead"
    assert fresh["pairs"] == 2


def test_a_set_up_that_fails_early_is_reported_not_tried_again(tmp_path, monkeypatch):
    """The early set-up (PlanAhead) fails: the build raises that failure (a problem of the run: exit 2
    at the CLI) without loading the model a second time, and records no unit."""
    import curation.build as cb
    import flows.build as fb
    from curation.pipeline import ClipProcessor

    tries = []

    def setup(self):
        tries.append(threading.current_thread().name)
        raise RuntimeError("weights unreadable")

    monkeypatch.setattr(ClipProcessor, "setup", setup)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "tai_chi.mp4").symlink_to(video(ACCEPTED["tai_chi_forest"]))
    cfg = load_config(None, output=str(tmp_path / "out"), sources=[{"root": str(folder)}])
    quiet = SimpleNamespace(plan=lambda plan: None, clip=lambda res: None)
    with cb.writer_lock(cfg), pytest.raises(cb.SetupError, match="weights unreadable"):
        fb.build_on_prefect(cfg, quiet)
    assert tries == ["plan-ahead"]
    assert not cb._EARLY_FAILED and not fb.EARLY_PLANS
    assert not (tmp_path / "out" / "current").exists()
