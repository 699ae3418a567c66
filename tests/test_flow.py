"""The Prefect flow, run for real on the ephemeral API, produces what the plain runner produces."""

import pandas as pd
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
