"""Bookkeeping at Kinetics scale: what plan, no-op re-run, finalize, verify, report, publish, gc and the
training reader cost at 1k, 10k and 100k clips, locally and on an S3 server (moto on loopback).

    python bench/scale.py [--small] [--fork] [--json] [--sizes 1000,10000,100000] [--backends local,s3]
                          [--plan-rows 650000] [--no-build] [--work DIR]

Prints one JSON object (asserts nothing). Nothing is decoded: each size gets a synthetic Kinetics CSV
(label,youtube_id,time_start,time_end,split) and one tiny distinct file per row named the CVDF way,
and its units are committed through the store (`Output.shard_writer` + `Output.commit_unit`, exactly
the calls `process_unit` makes; `clips_per_unit` 8, the default) with 2 pairs of tiny JPEGs per clip,
one candidate reject per clip, every 4th clip rejected at clip level and a near-duplicate pair in one
clip of 500. Then, in this order: finalize (the first generation), plan, noop (lock + plan +
nothing_to_do + repair: the no-op re-run), on S3 also noop_new_machine (the same from an empty staging
folder), verify, report, publish, gc (keep 0) and train_open (training.data.open_shards to the first
sample).

How it is measured: every step runs in a fresh Python process (`python bench/scale.py --step ...`), so
its peak is its own. `seconds`: wall time of the step itself (imports and setup excluded); `cpu_seconds`:
user + system CPU of that process over the step (the moto server's work is not in it); `peak_rss_mb`:
the process's ru_maxrss at the end (imports included); `step_rss_mb`: ru_maxrss at the end less
ru_maxrss just before the step (what the step itself added to the peak). `growth` gives, per 10x clips,
the factor of seconds and of step_rss_mb (a step that does not grow has step_rss_mb near 0: the
factor is then noise) and of peak_rss_mb. With --fork (the default of --small, whose steps take
less than the imports) a size and backend's steps run in one fresh process that imports what they use
and forks a process a step: each step's process again starts from those imports alone (its peak
includes them) without paying for them again. A forked process maps only the pages it touches, so its
peak_rss_mb leaves out the imported libraries' pages it does not use (about 280 MB less than a fresh
process's on this machine) and its step_rss_mb counts those it touches again (some 10-25 MB more); each
step's `forked_from_rss_mb` is the RSS of the process it was forked from, which a fresh one starts at.

planning: plan_build alone over --plan-rows annotation rows (650k: Kinetics-700's train, val and test),
first with an empty output (every file's content identity read) and again (identities from the cache).

video_hours_per_core_hour and pairs_per_core_hour: a real build of ../shared/data/videos with the CLI
(`motionpairs build`, offline captions, a fresh output), video seconds (MANIFEST.csv's duration_s of the
files built) / (wall seconds x cores of this machine); also per CPU second actually used. --small and
--no-build report null with a note.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

CLIPS_PER_UNIT = 8
PAIRS_PER_CLIP = 2
BUCKET = "motionpairs-bench"
STEPS = ["commit", "finalize", "plan", "noop", "noop_new_machine", "verify", "report", "publish", "gc", "train_open"]
LABELS = [f"action {i:03d}" for i in range(700)]
VIDEOS = REPO.parent / "shared" / "data" / "videos"


# ---- the data --------------------------------------------------------------------------------------
def youtube_id(i: int) -> str:
    h = hashlib.sha1(str(i).encode()).hexdigest()
    return ("-" if i % 97 == 0 else "a") + h[:10]


def make_dataset(root: Path, n: int) -> Path:
    """n CSV rows (K700 style) and n tiny distinct files under root/videos; returns the CSV."""
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    path = root / "k700_synthetic.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        for i in range(n):
            yt, start = youtube_id(i), (i * 7) % 600
            split = "validate" if i % 20 == 0 else "train"
            w.writerow([LABELS[i % len(LABELS)], yt, start, start + 10, split])
            (videos / f"{yt}_{start:06d}_{start + 10:06d}.mp4").write_bytes(f"clip {i}\n".encode())
    return path


def config(work: Path, n: int, backend: str, staging: str = "staging"):
    from curation.config import load_config

    data = work / f"data-{n}"
    out = f"s3://{BUCKET}/out-{n}" if backend == "s3" else str(work / f"out-{n}")
    return load_config(
        output=out,
        staging_dir=str(work / f"{staging}-{n}") if backend == "s3" else None,
        sources=[{"kind": "kinetics", "root": str(data / "videos"), "annotations": [str(data / "k700_synthetic.csv")]}],
        shards={"clips_per_unit": CLIPS_PER_UNIT},
    )


def build_api():
    """The build's plan / finalize / no-op check (curation.build)."""
    from curation import build as b

    return b


def publish_api():
    from curation.captions.recaption import publish

    return publish


def settings_api():
    """(fingerprint(cfg), clip_keys(cfg, clips), result_versions(...)) of curation.plan."""
    from curation import plan

    return plan.fingerprint, plan.clip_keys, plan.result_versions


def tiny_jpeg(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buf, "JPEG", quality=70)
    return buf.getvalue()


def synthetic_unit(cfg, unit, versions: dict, jpegs: list[bytes]):
    """What process_unit commits for a unit, without decoding: (record, samples, rejects, items)."""
    from schemas.records import (
        Caption,
        FramePair,
        Level,
        MotionFigures,
        Pose17,
        QualityFigures,
        Reject,
        RejectReason,
        Stage,
        make_pair_id,
    )

    class Item:
        def __init__(self, pair, b, a):
            self.pair, self.before_jpg, self.after_jpg = pair, b, a

    def low_motion(c, **kw) -> Reject:
        """A low_motion reject of clip `c` (clip level, or as `kw` say)."""
        return Reject(
            clip_id=c.clip_id,
            source=c.source,
            uri=c.uri,
            stage=Stage.MOTION,
            reason=RejectReason.LOW_MOTION,
            label=c.label,
            split=c.split,
            video_id=c.video_id,
            extra=c.extra,
            **kw,
        )

    items, rejects = [], []
    for c in unit.clips:
        k = int(hashlib.sha1(c.clip_id.encode()).hexdigest()[:8], 16)
        if k % 4 == 0:
            rejects.append(low_motion(c))
            continue
        for j in range(PAIRS_PER_CLIP):
            bi, ai = 5 * j, 5 * j + 12
            pid = make_pair_id(c.clip_id, bi, ai)
            ph = hashlib.sha1(pid.encode()).hexdigest()
            if j and k % 500 == 1:  # a near-duplicate of the clip's first pair
                ph = hashlib.sha1(make_pair_id(c.clip_id, 0, 12).encode()).hexdigest()
            kps = [[10.0 + i + j, 5.0 + i, 0.9] for i in range(17)]
            pose = Pose17(keypoints=kps, frame_width=32, frame_height=24, box=[1, 1, 30, 23], score=0.9)
            pair = FramePair(
                pair_id=pid,
                clip=c,
                strategy="max_motion",
                before_time_s=bi / 10,
                after_time_s=ai / 10,
                before_index=bi,
                after_index=ai,
                frame_width=32,
                frame_height=24,
                before_pose=pose,
                after_pose=pose,
                motion=MotionFigures(
                    pose_change=0.5,
                    max_joint_change=1.0,
                    translation=0.1,
                    body_size_px=20,
                    camera_motion=0.0,
                    scene_similarity=0.99,
                    keypoints_compared=16,
                ),
                quality=QualityFigures(
                    person_height=0.9,
                    edge_margin=0.1,
                    other_person_score=None,
                    sharpness=1.0,
                    lr_margin=0.5,
                    background_match=0.9,
                    background_inliers=0.9,
                    before_phash=ph[:16],
                    after_phash=ph[16:32],
                ),
                caption=Caption(text="raise your right arm", captioner="offline"),
            )
            items.append(Item(pair, jpegs[(k + j) % len(jpegs)], jpegs[(k + j + 1) % len(jpegs)]))
        rejects.append(low_motion(c, level=Level.CANDIDATE, pair_id="0" * 16))
    return items, rejects


def commit_all(cfg) -> dict:
    """Every pending unit of the plan committed through the store, as process_unit does."""
    from datetime import datetime, timezone

    from schemas.manifest import reject_row, rejects_table, sample_row, samples_table

    api = build_api()
    fingerprint, clip_keys, result_versions = settings_api()
    versions = {"code": "bench", **result_versions(cfg.pose.weights, cfg.pose.engine, cfg.pose.device, cfg.pose.path)}
    jpegs = [tiny_jpeg(s) for s in range(8)]
    with api.writer_lock(cfg, "build"):
        plan = api.plan_build(cfg)
        out = api.open_output(cfg)
        for unit in plan.units:
            items, rejects = synthetic_unit(cfg, unit, versions, jpegs)
            shards = out.shard_writer(unit.unit_id, cfg.shards.max_samples, cfg.shards.max_bytes)
            rows = [sample_row(it.pair, shards.write(it), unit.unit_id) for it in items]
            files = shards.close()
            record = {
                "unit_id": unit.unit_id,
                "fingerprint": fingerprint(cfg),
                "versions": versions,
                "clip_keys": clip_keys(cfg, unit.clips),
                "retry": [],
                "files": files,
                "shards": {n: f["samples"] for n, f in files.items()},
                "shard_bytes": sum(f["bytes"] for f in files.values()),
                "samples": len(rows),
                "rejects": len(rejects),
                "frames_decoded": 30 * len(unit.clips),
                "funnel": {"clips_decoded": len(unit.clips), "frames": 30 * len(unit.clips)},
                "seconds": {"decode": 0.1, "pose": 0.2, "wall": 0.3},
                "committed_at": datetime.now(timezone.utc).isoformat(),
            }
            out.commit_unit(record, samples_table(rows), rejects_table([reject_row(r) for r in rejects]))
    return {"units": len(plan.units)}


def seed(cfg, local: Path) -> dict:
    """A remote output seeded with the units a local run committed (same dataset size: the same clip
    keys): its tars, parts and records uploaded in three batches (records last, as commit_unit orders
    them) and copied into the staging folder, as if this machine had committed them. What commit_unit
    leaves on the bucket, in minutes rather than the hours moto takes for one request at a time."""
    import fsspec

    from curation.store.layout import PARTS, REMOTE_POOL, TARS

    if not (local / PARTS).is_dir():
        raise SystemExit(f"--seed-from: {local} holds no committed units")
    stage = Path(cfg.staging_dir)
    fs, root = fsspec.core.url_to_fs(cfg.output)
    tars = sorted((local / TARS).glob("*.tar"))
    parquet = sorted((local / PARTS).glob("*.parquet"))
    records = sorted((local / PARTS).glob("*.json"))
    for group, dest in ((tars, REMOTE_POOL), (parquet, PARTS), (records, PARTS)):
        fs.put([str(p) for p in group], [f"{root}/{dest}/{p.name}" for p in group])
    for group, dest in ((tars, TARS), (parquet + records, PARTS)):
        (stage / dest).mkdir(parents=True, exist_ok=True)
        for p in group:
            shutil.copy2(p, stage / dest / p.name)
    return {"units": len(records), "seeded_from": str(local)}


def restamp(cfg) -> int:
    """Committed records made under other settings fingerprints (the code changed between steps: other
    people edit this tree as the benchmark runs) given the current fingerprint and clip keys, so a step
    measures the same output instead of redoing every unit. Not measured; returns the records changed."""
    import fsspec

    from curation.store import Output
    from curation.store.files import atomic_write, record_bytes

    try:
        from curation.sources import ContentIds, list_sources
    except ImportError:
        from curation.ingest import ContentIds, list_sources
    fingerprint, clip_keys, _ = settings_api()
    out = Output.open(cfg.output, cfg.staging_dir)
    out.pull()
    fp = fingerprint(cfg)
    records = out.records()
    if all(r.get("fingerprint") == fp for r in records):
        return 0
    identity = ContentIds()
    keys = clip_keys(cfg, list_sources(cfg.sources, identity).clips)
    for r in records:
        r["fingerprint"] = fp
        r["clip_keys"] = {c: keys[c] for c in r["clip_keys"]}
        data = record_bytes(r)
        atomic_write(out.record_path(r["unit_id"]), lambda f, data=data: f.write(data))
    if cfg.staging_dir:
        fs, root = fsspec.core.url_to_fs(cfg.output)
        paths = [out.record_path(r["unit_id"]) for r in records]
        fs.put([str(p) for p in paths], [f"{root}/parts/{p.name}" for p in paths])
    return len(records)


# ---- one step in this process ----------------------------------------------------------------------
def run_step(step: str, work: Path, n: int, backend: str, seed_from: str | None = None) -> dict:
    api = build_api()
    cfg = config(work, n, backend, "staging-new" if step == "noop_new_machine" else "staging")
    info: dict = {}

    def finalize():
        with api.writer_lock(cfg, "build"):
            plan = api.plan_build(cfg)
            t = time.perf_counter()
            api.finalize(cfg, plan)
            info["finalize_only_seconds"] = round(time.perf_counter() - t, 3)

    def noop():
        with api.writer_lock(cfg, "build") as out:
            plan = api.plan_build(cfg)
            info["nothing_to_do"] = api.nothing_to_do(cfg, plan)
            out.repair()

    def verify():
        from curation.store import Output

        faults = Output.open(cfg.output, cfg.staging_dir).verify()
        info["faults"] = len(faults)
        info["first_faults"] = faults[:3]

    def report():
        from curation.report.page import write_report

        write_report(cfg.output)

    def publish():
        pub = publish_api()
        info["samples"] = pub(cfg.output, staging_dir=cfg.staging_dir)["samples"]

    def gc():
        from curation.store import Output

        out = Output.open(cfg.output, cfg.staging_dir)
        with out.lock("gc"):
            info.update(out.gc(keep=0))
        info["generations_kept"] = len(info["generations_kept"])
        info["generations_removed"] = len(info["generations_removed"])

    def train_open():
        from training.data import open_shards

        ds = open_shards(cfg.output, decode_images=False)
        info["first_sample"] = next(iter(ds)).pair.pair_id

    def plan():
        p = api.plan_build(cfg)
        info["clips"], info["pending_units"] = len(p.listing.clips), len(p.units)

    fn = {
        "commit": lambda: info.update(commit_all(cfg)),
        "seed": lambda: info.update(seed(cfg, Path(seed_from) / f"out-{n}")),
        "finalize": finalize,
        "plan": plan,
        "noop": noop,
        "noop_new_machine": noop,
        "verify": verify,
        "report": report,
        "publish": publish,
        "gc": gc,
        "train_open": train_open,
    }[step]
    # imports the step needs, before the baseline (so step_rss_mb is the step's own)
    import curation.report.page  # noqa: F401

    publish_api()

    if step == "train_open":
        import training.data  # noqa: F401
    if step != "commit":
        restamped = restamp(config(work, n, backend))
        if restamped:
            info["restamped_records"] = restamped
    base = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    end = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": round(seconds, 3),
        "cpu_seconds": round(end.ru_utime + end.ru_stime - base.ru_utime - base.ru_stime, 3),
        "peak_rss_mb": round(end.ru_maxrss / 1024, 1),
        "step_rss_mb": round((end.ru_maxrss - base.ru_maxrss) / 1024, 1),
    } | info


def run_forked(steps: list[str], work: Path, n: int, backend: str) -> dict:
    """The steps of one size and backend, in order, each in a process forked from this one once it has
    imported what the steps use (as run_step does before its baseline), so that each starts as a fresh
    process would after its imports. Stops at the first step that fails."""
    import curation.report.page  # noqa: F401
    import training.data  # noqa: F401

    build_api()
    publish_api()
    status = Path("/proc/self/status").read_text().splitlines()
    rss = next((round(int(x.split()[1]) / 1024, 1) for x in status if x.startswith("VmRSS:")), None)
    sys.stdout.flush()
    sys.stderr.flush()
    got = {}
    for step in steps:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the step's process: its figures (or why it failed) down the pipe
            os.close(read)
            code = 0
            try:
                data = json.dumps(run_step(step, work, n, backend) | {"forked_from_rss_mb": rss}).encode()
            except BaseException:
                data, code = traceback.format_exc().encode(), 1
            with os.fdopen(write, "wb") as f:
                f.write(data)
            sys.stderr.flush()
            os._exit(code)
        os.close(write)
        with os.fdopen(read, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"step {step} failed: {data.decode(errors='replace')[-3000:]}")
        got[step] = json.loads(data)
    return got


def plan_rows_step(work: Path, rows: int, again: bool) -> dict:
    from curation.config import load_config

    data = work / f"plan-{rows}"
    out = data / "out"
    out.mkdir(parents=True, exist_ok=True)  # the content-id cache is kept in the output
    cfg = load_config(
        output=str(out),
        sources=[{"kind": "kinetics", "root": str(data / "videos"), "annotations": [str(data / "k700_synthetic.csv")]}],
    )
    api = build_api()
    base = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    plan = api.plan_build(cfg)
    seconds = time.perf_counter() - t0
    end = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "rows": rows,
        "identity_cache": "warm" if again else "cold",
        "clips": len(plan.listing.clips),
        "pending_units": len(plan.units),
        "seconds": round(seconds, 3),
        "cpu_seconds": round(end.ru_utime + end.ru_stime - base.ru_utime - base.ru_stime, 3),
        "peak_rss_mb": round(end.ru_maxrss / 1024, 1),
        "step_rss_mb": round((end.ru_maxrss - base.ru_maxrss) / 1024, 1),
    }


# ---- the driver ------------------------------------------------------------------------------------
class Moto:
    """The S3 server on loopback (moto in server mode), in its own process, as tests/conftest.py's."""

    def __init__(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        code = (
            "import time; from moto.server import ThreadedMotoServer; "
            f"s = ThreadedMotoServer(ip_address='127.0.0.1', port={self.port}, verbose=False); s.start(); "
            "time.sleep(10**9)"
        )
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "FSSPEC_S3_ENDPOINT_URL": self.endpoint,
        }
        import urllib.request

        for _ in range(300):
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=30)
        req = urllib.request.Request(f"{self.endpoint}/{BUCKET}", method="PUT")
        urllib.request.urlopen(req, timeout=30)

    def rss_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            return None
        return None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def child(args: list[str], env: dict | None = None, timeout: float | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure(steps: list[str], work: Path, n: int, backend: str, env: dict, fork: bool) -> Iterator[tuple[str, dict]]:
    """(step, its figures) for each step in order: each in a fresh process, or with `fork` each forked
    from one fresh process for them all (run_forked)."""
    where = ["--work", str(work), "--n", str(n), "--backend", backend]
    if fork:
        if steps:
            yield from child(["--forked-steps", ",".join(steps), *where], env).items()
        return
    for step in steps:
        yield step, child(["--step", step, *where], env)


def growth(per_size: dict[str, dict]) -> dict:
    """Per step, for each pair of consecutive sizes: the factor per 10x clips of seconds and RSS."""
    sizes = sorted(int(s) for s in per_size)
    out: dict[str, dict] = {}
    for a, b in zip(sizes, sizes[1:], strict=False):
        exp = 1 / math.log10(b / a)
        for step, fa in per_size[str(a)].items():
            fb = per_size[str(b)].get(step)
            if not isinstance(fa, dict) or not isinstance(fb, dict) or "seconds" not in fa:
                continue

            def f(key, fa=fa, fb=fb, exp=exp):
                x, y = fa.get(key), fb.get(key)
                if not x or y is None or x <= 0:
                    return None
                return round((max(y, 0.0) / x) ** exp, 2)

            out.setdefault(step, {})[f"{a}->{b}"] = {
                "seconds": f("seconds"),
                "cpu_seconds": f("cpu_seconds"),
                "step_rss_mb": f("step_rss_mb"),
                "peak_rss_mb": f("peak_rss_mb"),
            }
    return out


def bookkeeping(
    work: Path,
    sizes: list[int],
    backends: list[str],
    log,
    only: list[str] = STEPS,
    resume: bool = False,
    seed_from: str | None = None,
    fork: bool = False,
) -> dict:
    where = (
        "each step in a process forked from a fresh one (one a size and backend) that imported what the steps use"
        if fork
        else "each step in a fresh process"
    )
    result: dict = {
        "sizes": sizes,
        "clips_per_unit": CLIPS_PER_UNIT,
        "pairs_per_clip": PAIRS_PER_CLIP,
        "method": f"{where}: seconds = the step's wall time, cpu_seconds = its CPU time, "
        "peak_rss_mb = ru_maxrss of the process, step_rss_mb = ru_maxrss after less before the step",
    }
    moto = Moto() if "s3" in backends else None
    try:
        for n in sizes:
            data = work / f"data-{n}"
            if not data.is_dir():
                t = time.perf_counter()
                make_dataset(data, n)
                log(f"dataset {n}: {time.perf_counter() - t:.1f} s")
            for backend in backends:
                env = moto.env if backend == "s3" else {}
                figures = result.setdefault(backend, {}).setdefault(str(n), {})
                if seed_from and backend == "s3":  # the bucket from a local run's units (not commit_unit)
                    figures["seed"] = child(
                        [
                            "--step",
                            "seed",
                            "--work",
                            str(work),
                            "--n",
                            str(n),
                            "--backend",
                            backend,
                            "--seed-from",
                            seed_from,
                        ],
                        env,
                    )
                    log(f"{backend} {n} seed: {figures['seed']}")
                todo = []
                for step in STEPS:
                    if step == "noop_new_machine" and backend != "s3":
                        continue
                    saved = work / "figures" / f"{backend}-{n}-{step}.json"
                    if saved.is_file() and (step == "commit" or resume):  # done by an earlier run on this --work
                        figures[step] = json.loads(saved.read_text())
                        log(f"{backend} {n} {step}: {figures[step]}")
                    elif step == "commit" and seed_from and backend == "s3":
                        figures[step] = figures["seed"]
                    elif step in only or step == "commit":
                        figures[step] = {}  # measured below, in this order
                        todo.append(step)
                for step, got in measure(todo, work, n, backend, env, fork):
                    figures[step] = got
                    saved = work / "figures" / f"{backend}-{n}-{step}.json"
                    saved.parent.mkdir(exist_ok=True)
                    saved.write_text(json.dumps(got))
                    log(f"{backend} {n} {step}: {got}")
                figures["units"] = figures["commit"].get("units")
                if moto is not None and backend == "s3":
                    figures["moto_server_peak_rss_mb"] = moto.rss_mb()
        for backend in backends:
            result.setdefault("growth", {})[backend] = growth(result[backend])
    finally:
        if moto is not None:
            moto.stop()
    return result


def planning(work: Path, rows: int, log) -> dict:
    data = work / f"plan-{rows}"
    t = time.perf_counter()
    if not (data / "k700_synthetic.csv").is_file():
        make_dataset(data, rows)
    log(f"dataset {rows}: {time.perf_counter() - t:.1f} s")
    first = child(["--plan-step", str(rows), "--work", str(work)])
    log(f"plan {rows} cold: {first}")
    again = child(["--plan-step", str(rows), "--work", str(work), "--again"])
    log(f"plan {rows} warm: {again}")
    return {"first": first, "again": again}


def real_build(work: Path, log, device: str = "auto", videos: Path = VIDEOS, engine: str = "prefect") -> dict:
    """A real build of `videos` (../shared/data/videos) through the CLI, in a fresh output, the pose model on
    `device`, run by `engine` (prefect, the CLI's default, or local); on a GPU also video hours and pairs per
    GPU hour (the build's wall time on its one GPU)."""
    durations = {}
    with open(videos / "MANIFEST.csv", newline="") as f:
        for row in csv.DictReader(f):
            durations[row["file"]] = float(row["duration_s"] or 0)
    out = work / "real-build"
    shutil.rmtree(out, ignore_errors=True)
    exe = shutil.which("motionpairs", path=str(Path(sys.executable).parent))
    cli = [exe] if exe else [sys.executable, "-m", "flows.cli"]  # not installed (a GPU machine's own Python)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    argv = [*cli, "build", "--input", str(videos), "--output", str(out), "--device", device, "--engine", engine]
    r = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"real build failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    stats = json.loads((out / "stats.json").read_text())
    video_s = sum(d for name, d in durations.items() if (videos / name).exists())
    cores = os.cpu_count() or 1
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    log(f"real build: {wall:.1f} s wall, {cpu:.1f} s CPU, {stats['pairs']} pairs")
    gpu = {}
    if device.startswith("cuda"):
        gpu = {
            "video_hours_per_gpu_hour": round(video_s / wall, 3),
            "pairs_per_gpu_hour": round(stats["pairs"] / (wall / 3600), 1),
        }
    return {
        "input": str(videos),
        "device": device,
        "engine": engine,
        **gpu,
        "clips_in": stats["clips_in"],
        "pairs": stats["pairs"],
        "video_seconds": round(video_s, 1),
        "wall_seconds": round(wall, 1),
        "cores": cores,
        "cpu_seconds": round(cpu, 1),
        "video_hours_per_core_hour": round(video_s / (wall * cores), 3),
        "pairs_per_core_hour": round(stats["pairs"] / (wall * cores / 3600), 1),
        "video_hours_per_cpu_hour": round(video_s / cpu, 3) if cpu else None,
        "pairs_per_cpu_hour": round(stats["pairs"] / (cpu / 3600), 1) if cpu else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="20 and 200 clips, 2,000 planning rows, no real build, --fork")
    ap.add_argument("--json", action="store_true", help="print only the JSON object (no progress lines)")
    ap.add_argument(
        "--fork", action="store_true", help="a size and backend's steps forked from one process (default in --small)"
    )
    ap.add_argument("--sizes", help="clip counts, comma-separated (default 1000,10000,100000)")
    ap.add_argument("--backends", default="local,s3", help="local, s3 or both (default both; '' for none)")
    ap.add_argument("--plan-rows", type=int, help="annotation rows planned alone (default 650000; 0: skip)")
    ap.add_argument("--no-build", action="store_true", help="skip the real build of ../shared/data/videos")
    ap.add_argument("--device", default="auto", help="pose model device of the real build: auto, cpu, cuda")
    ap.add_argument(
        "--input", default=str(VIDEOS), help="the real build's clips, with a MANIFEST.csv giving duration_s per file"
    )
    ap.add_argument("--engine", default="prefect", choices=("prefect", "local"), help="the real build's runner")
    ap.add_argument("--steps", help="steps to run, comma-separated (default: all; commit is kept per --work)")
    ap.add_argument("--seed-from", help="S3: upload the units a local run (its --work) committed, not commit_unit")
    ap.add_argument("--resume", action="store_true", help="keep the figures of steps an earlier run on --work measured")
    ap.add_argument("--work", help="working folder (default: a temp folder, removed at the end)")
    ap.add_argument("--step", choices=[*STEPS, "seed"], help=argparse.SUPPRESS)
    ap.add_argument("--forked-steps", help=argparse.SUPPRESS)
    ap.add_argument("--plan-step", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--again", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        print(json.dumps(run_step(args.step, Path(args.work), args.n, args.backend, args.seed_from)))
        return
    if args.forked_steps:
        print(json.dumps(run_forked(args.forked_steps.split(","), Path(args.work), args.n, args.backend)))
        return
    if args.plan_step:
        print(json.dumps(plan_rows_step(Path(args.work), args.plan_step, args.again)))
        return

    def log(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    sizes = (
        [int(s) for s in args.sizes.split(",")] if args.sizes else ([20, 200] if args.small else [1000, 10000, 100000])
    )
    plan_rows = args.plan_rows if args.plan_rows is not None else (2000 if args.small else 650000)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="motionpairs-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MOTIONPAIRS_LEASE_TTL", "600")
    result: dict = {"mode": "small" if args.small else "full", "cores": os.cpu_count()}
    try:
        if args.small or args.no_build:
            result["video_hours_per_core_hour"] = None
            result["pairs_per_core_hour"] = None
            result["note"] = "no real build in this run (--small or --no-build): the throughput figures are null"
        else:
            build = real_build(work, log, args.device, Path(args.input).resolve(), args.engine)
            result["video_hours_per_core_hour"] = build["video_hours_per_core_hour"]
            result["pairs_per_core_hour"] = build["pairs_per_core_hour"]
            result["build"] = build
        only = args.steps.split(",") if args.steps else STEPS
        result["bookkeeping"] = (
            bookkeeping(work, sizes, backends, log, only, args.resume, args.seed_from, args.fork or args.small)
            if backends
            else {}
        )
        if plan_rows:
            result["bookkeeping"]["planning"] = planning(work, plan_rows, log)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
