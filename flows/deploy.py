"""Scheduled builds: serve a Prefect deployment of `build_dataset` with a cron schedule.

    prefect server start --host 127.0.0.1                      # the API and UI (http://127.0.0.1:4200)
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m flows.deploy --name nightly --cron "0 3 * * *" --output /data/motionpairs \\
        --config build.yaml [--workers 4 | --dask-address tcp://scheduler:8786]

The process registers the deployment and keeps running: it starts the scheduled runs (and the ones
triggered from the UI or `prefect deployment run build_dataset/nightly`). Each run builds only what is
new (see curation.build); a clip that fails is a reject row, a unit that fails is retried, and a run
that fails shows as Failed in the UI.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

# logs from curation/ show in each flow run's log view (set before Prefect configures logging)
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "curation")

from prefect import serve  # noqa: E402

from flows.build import build_dataset, with_dask  # noqa: E402


def make_deployment(
    name: str,
    cron: str,
    output: str,
    input: str | None = None,
    config_path: str | None = None,
    workers: int = 0,
    dask_address: str | None = None,
):
    parallel = bool(workers or dask_address)
    flow = with_dask(workers or 2, dask_address) if parallel else build_dataset
    parameters: dict[str, Any] = {"output": output, "input": input, "config_path": config_path, "parallel": parallel}
    return flow.to_deployment(
        name=name,
        cron=cron,
        parameters=parameters,
        tags=["motionpairs"],
        description=f"scheduled motionpairs build into {output}",
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows.deploy", description=__doc__.split("\n")[0])
    ap.add_argument("--name", default="scheduled-build", help="deployment name")
    ap.add_argument("--cron", default="0 3 * * *", help="cron schedule (default: daily at 03:00)")
    ap.add_argument("--output", required=True, help="output folder")
    ap.add_argument("--input", help="folder of videos (or sources in --config)")
    ap.add_argument("--config", help="YAML build config")
    ap.add_argument("--workers", type=int, default=0, help="Dask LocalCluster processes (0: none)")
    ap.add_argument("--dask-address", help="an existing Dask scheduler")
    a = ap.parse_args(argv)
    serve(make_deployment(a.name, a.cron, a.output, a.input, a.config, a.workers, a.dask_address))


if __name__ == "__main__":
    main()
