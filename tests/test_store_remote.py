"""The store owns remote outputs (issue 23): the CLI builds to a real S3-compatible server on loopback
(moto, the `s3` fixture) as it builds to a folder; kill -9 and a double Ctrl-C at every store step,
local and on the bucket, leave an output that verifies and resumes to what an uninterrupted build makes,
with no committed unit's tar ever missing; a writer paused past its lease is fenced off; two machines
with their own staging folders share one output; publish drops the near-duplicates the build drops;
clean() and gc keep the generations of an output whose `current` is a plain folder."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import cv2
import fsspec
import numpy as np
import pandas as pd
import pytest
from conftest import ACCEPTED, video

from curation.config import load_config
from curation.store import Output

MP = [sys.executable, "-m", "flows.cli"]
REPO = Path(__file__).resolve().parents[1]
FAST = "decode:\n  max_frames: 16\nshards:\n  clips_per_unit: 1\n  max_samples: 1\n"
BUCKET = "s3://motionpairs-test"


def cli(args, env=None, timeout=600):
    e = os.environ.copy() | (env or {})
    return subprocess.run(MP + args, capture_output=True, text=True, timeout=timeout, env=e, cwd=REPO)


def _sigint_as_in_a_terminal() -> None:
    # A pytest-xdist worker ignores SIGINT, and an ignored signal is inherited across exec: the CLI would
    # never see the Ctrl-C a terminal sends (Python installs its KeyboardInterrupt handler only where
    # SIGINT is not ignored at start). The child gets SIGINT's default, as from a shell prompt.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen(args, env=None):
    e = os.environ.copy() | (env or {})
    return subprocess.Popen(
        MP + args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=e,
        cwd=REPO,
        preexec_fn=_sigint_as_in_a_terminal,
    )


def build_args(inp: Path, out: str, cfg: Path, *extra: str) -> list[str]:
    return ["build", "--input", str(inp), "--output", str(out), "--config", str(cfg), "--engine", "local", *extra]


@pytest.fixture(scope="module")
def small_input(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("remote-in")
    (folder / "tai_chi.mp4").symlink_to(video(ACCEPTED["tai_chi_glass"]))
    (folder / "dribbler.mp4").symlink_to(video(ACCEPTED["dribbler"]))
    (folder / "zero.mp4").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def fast_cfg(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "fast.yaml"
    p.write_text(FAST)
    return p


def same(a: dict, b: dict) -> bool:
    """Snapshots equal; where not, print what differs (pytest shows the first items only)."""
    if a == b:
        return True
    for k in a:
        if a[k] != b[k]:
            if isinstance(a[k], dict):
                for key in sorted(set(a[k]) | set(b[k])):
                    if a[k].get(key) != b[k].get(key):
                        print("differs:", k, key, a[k].get(key), "!=", b[k].get(key))
            else:
                print("differs:", k, a[k], "!=", b[k])
    return False


def snapshot(url: str) -> dict:
    """What a reader gets through the store's listing, local or remote: pair ids, captions, reject
    rows, and every sample's image and record bytes."""
    out = Output.open(url)
    samples = pd.read_parquet(io.BytesIO(out.read_generation_file("samples.parquet")))
    rejects = pd.read_parquet(io.BytesIO(out.read_generation_file("rejects.parquet")))
    content = {}
    for entry in out.committed().shards:
        with fsspec.open(entry.url, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tf:
            members: dict[str, dict[str, bytes]] = {}
            for m in tf:
                key, _, ext = m.name.partition(".")
                members.setdefault(key, {})[ext] = tf.extractfile(m).read()
        for key, raw in members.items():
            meta = json.loads(raw["json"])
            meta["caption"].pop("created_at", None)
            for c in meta.get("captions", []):
                c.pop("created_at", None)
            content[key] = (hashlib.sha256(raw["before.jpg"] + raw["after.jpg"]).hexdigest(), json.dumps(meta))
    return {
        "pairs": sorted(samples.pair_id),
        "captions": sorted(zip(samples.pair_id, samples.caption, strict=True)),
        "rejects": sorted(map(tuple, rejects[["clip_id", "level", "stage", "reason"]].values.tolist())),
        "samples": content,
    }


def committed_tars_present(url: str) -> list[str]:
    """Tars that a committed unit record names but the pool lacks (must be none, whatever happened)."""
    fs, root = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    root = root.rstrip("/")
    pool = f"{root}/shards" if url.startswith("s3://") else f"{root}/tars"
    missing = []
    for p in fs.glob(f"{root}/parts/*.json"):
        rec = json.loads(fs.cat_file(p))
        missing += [n for n in rec.get("files", {}) if not fs.exists(f"{pool}/{n}")]
    return missing


def objects(fs, prefix: str) -> dict[str, str]:
    """Every object under a prefix with its ETag, less the lease (renewed while a writer runs)."""
    fs.invalidate_cache()
    return {
        p: info.get("ETag", "")
        for p, info in fs.find(prefix, detail=True).items()
        if not p.endswith("/LOCK") and "/leases/" not in p
    }


def code_digest() -> str:
    """The code a build runs, as it is now (the working tree may change between tests)."""
    h = hashlib.sha256()
    for top in ("curation", "flows", "schemas", "training"):
        for p in sorted((REPO / top).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


_ONCE: dict[tuple[str, str], object] = {}  # (what, code_digest()) -> what an uninterrupted run made


@pytest.fixture()
def reference(tmp_path_factory, small_input, fast_cfg) -> dict:
    """An uninterrupted local build, what every resumed build must equal (local or remote). Made from
    the code as it is when the test starts: built once per state of the code (a CLI build takes ~15 s
    and some 35 tests compare against it) and given to each test as a private copy."""
    key = ("reference", code_digest())
    if key not in _ONCE:
        out = tmp_path_factory.mktemp("reference") / "out"
        r = cli(build_args(small_input, out, fast_cfg))
        assert r.returncode == 0, r.stderr[-3000:]
        _ONCE[key] = snapshot(str(out))
    return copy.deepcopy(_ONCE[key])


# ---- the scheduled-S3-build path, from the CLI ---------------------------------------------------


def test_cli_build_to_s3_completes_reruns_as_a_no_op_verifies_and_trains(
    s3, s3_env, tmp_path, small_input, fast_cfg, reference
):
    url = f"{BUCKET}/cli/out"
    env = s3_env | {"MOTIONPAIRS_STAGING": str(tmp_path / "staging")}
    r = cli(build_args(small_input, url, fast_cfg), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert same(snapshot(url), reference)  # the bucket holds what a local build holds
    before = objects(s3, "motionpairs-test/cli/out")
    r = cli(build_args(small_input, url, fast_cfg), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert objects(s3, "motionpairs-test/cli/out") == before  # a no-op: not one object rewritten
    assert not s3.exists("motionpairs-test/cli/out/LOCK")  # released
    r = cli(["verify", url], env=env)
    assert r.returncode == 0 and "agrees" in r.stdout, r.stdout + r.stderr[-2000:]
    from training.data import open_shards

    got = list(open_shards(url))
    assert sorted(s.pair.pair_id for s in got) == reference["pairs"]
    # the store's reader gives the same samples by pair id
    got = {s.pair.pair_id for s in Output.open(url).samples(reference["pairs"])}
    assert got == set(reference["pairs"])


def test_top_level_copies_a_cut_upload_left_out_are_put_back_by_the_next_run(
    s3, s3_env, tmp_path, small_input, fast_cfg
):
    url = f"{BUCKET}/repair/out"
    env = s3_env | {"MOTIONPAIRS_STAGING": str(tmp_path / "staging")}
    assert cli(build_args(small_input, url, fast_cfg), env=env).returncode == 0
    root = "motionpairs-test/repair/out"
    good = s3.cat_file(f"{root}/stats.json")
    s3.rm(f"{root}/samples.parquet")
    s3.pipe_file(f"{root}/stats.json", b"{")
    s3.rm(f"{root}/README.md")
    r = cli(build_args(small_input, url, fast_cfg), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    s3.invalidate_cache()
    gen = s3.cat_file(f"{root}/CURRENT").decode()
    assert s3.cat_file(f"{root}/stats.json") == good
    assert s3.cat_file(f"{root}/samples.parquet") == s3.cat_file(f"{root}/generations/{gen}/samples.parquet")
    assert s3.exists(f"{root}/README.md")


# ---- crash matrix --------------------------------------------------------------------------------

# (where, point, how): kill -9 at the point, or two SIGINTs while the writer is paused there
BUILD_CASES = [
    ("local", "after_tar", "kill"),
    ("local", "before_record", "kill"),
    ("local", "record_fsync:2", "kill"),
    ("local", "after_record:2", "kill"),
    ("local", "finalize", "kill"),
    ("local", "before_pointer", "kill"),
    ("local", "after_pointer", "kill"),
    ("local", "after_tar", "sigint2"),
    ("local", "after_record", "sigint2"),
    ("local", "record_fsync", "sigint2"),
    ("local", "before_pointer", "sigint2"),
    ("s3", "after_tar", "kill"),
    ("s3", "after_record", "kill"),
    ("s3", "record_fsync:2", "kill"),
    ("s3", "push_unit:2", "kill"),
    ("s3", "finalize", "kill"),
    ("s3", "before_pointer", "kill"),
    ("s3", "after_pointer", "kill"),
    ("s3", "after_tar", "sigint2"),
    ("s3", "after_record", "sigint2"),
    ("s3", "record_fsync", "sigint2"),
    ("s3", "push_unit", "sigint2"),
    ("s3", "before_pointer", "sigint2"),
]


def _interrupt(args, env, point: str, flag: Path, how: str) -> int:
    """Run the CLI and stop it at `point`: SIGKILL there, or two SIGINTs while it waits there."""
    if how == "kill":
        r = cli(args, env=env | {"MOTIONPAIRS_CRASH_AT": point})
        assert r.returncode == -signal.SIGKILL, (point, r.returncode, r.stderr[-2000:])
        return r.returncode
    p = popen(args, env=env | {"MOTIONPAIRS_PAUSE_AT": f"{point}:60", "MOTIONPAIRS_PAUSE_FLAG": str(flag)})
    deadline = time.monotonic() + 300
    while not flag.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.exists(), p.communicate()[1][-2000:]
    p.send_signal(signal.SIGINT)
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, (p.returncode, err[-2000:])
    return p.returncode


@pytest.mark.parametrize("where,point,how", BUILD_CASES)
def test_crash_at_a_store_step_then_resume_equals_an_uninterrupted_build(
    where, point, how, request, tmp_path, small_input, fast_cfg, reference
):
    env = {"MOTIONPAIRS_STAGING": str(tmp_path / "staging")}
    if where == "s3":
        env |= request.getfixturevalue("s3_env")
        url = f"{BUCKET}/crash/out"
    else:
        url = str(tmp_path / "out")
    args = build_args(small_input, url, fast_cfg)
    _interrupt(args, env, point, tmp_path / "paused", how)
    assert committed_tars_present(url) == []  # committed means kept, whatever stopped the writer
    r = cli(args, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert same(snapshot(url), reference)
    assert Output.open(url).verify() == []
    assert committed_tars_present(url) == []


def _caption_rows(pairs: list[str]) -> list[dict]:
    from schemas.captions import CAPTION_ROWS_SCHEMA
    from schemas.records import caption_version

    rows = [
        {
            "pair_id": pid,
            "run_id": "r1",
            "caption_version": caption_version("m1", "v1"),
            "captioner": "openai",
            "model": "m1",
            "prompt_version": "v1",
            "status": "ok",
            "text": f"raise your arm {i}",
            "created_at": "2026-11-23T00:00:00+00:00",
        }
        for i, pid in enumerate(pairs)
    ]
    return [{f.name: r.get(f.name) for f in CAPTION_ROWS_SCHEMA} for r in rows]


def _add_caption_rows(url: str, pairs: list[str], tmp_path: Path) -> None:
    """Caption rows of a recaption run, on the output (written as the store writes them)."""
    from curation.captions.rows import write_caption_rows

    local = tmp_path / "rows"
    path = write_caption_rows(local, "r1", _caption_rows(pairs))
    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(f"{root}/captions", exist_ok=True)
    fs.put_file(str(path), f"{root}/captions/{path.name}")


@pytest.fixture()
def published_reference(tmp_path_factory, small_input, fast_cfg, reference) -> dict:
    """An uninterrupted build with a recaption run's rows, published: made as `reference` is."""
    key = ("published_reference", code_digest())
    if key not in _ONCE:
        tmp = tmp_path_factory.mktemp("pubref")
        out = tmp / "pubref"
        assert cli(build_args(small_input, out, fast_cfg)).returncode == 0
        _add_caption_rows(str(out), reference["pairs"], tmp / "pubref-rows")
        r = cli(["publish", str(out)])
        assert r.returncode == 0, r.stderr[-2000:]
        _ONCE[key] = snapshot(str(out))
    return copy.deepcopy(_ONCE[key])


def _copy_tree(src: Path, dest: Path) -> None:
    """A faithful copy of an output or staging folder: symlinks as links, hard links (a generation's
    tars are links into the pool) as links, modes and times kept."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", "--", str(src), str(dest)], check=True)


def _all_objects(fs, prefix: str) -> dict[str, str]:
    """Every object under a prefix (leases and LOCK too): its key under the prefix -> its ETag (the MD5
    of its bytes)."""
    fs.invalidate_cache()
    return {p[len(prefix) + 1 :]: info.get("ETag", "") for p, info in fs.find(prefix, detail=True).items()}


def _fresh_build(where, url, env, small_input, fast_cfg, request, tmp_path_factory) -> None:
    """The output at `url` (and its writer's staging folder, env's MOTIONPAIRS_STAGING) as an
    uninterrupted CLI build leaves it. The first case to ask (per state of the code, per `where`) runs
    that build and keeps a copy: the folder; on S3 every object, leases included, and the staging
    folder. The later cases start from that copy, checked to be the same objects byte for byte (the
    cases interrupt publish or gc, never the build)."""
    staging = Path(env["MOTIONPAIRS_STAGING"])
    prefix = url.removeprefix("s3://")
    key = (f"fresh_build-{where}", code_digest())
    saved = _ONCE.get(key)
    if saved is None:
        r = cli(build_args(small_input, url, fast_cfg), env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        saved = tmp_path_factory.mktemp(f"fresh-{where}")
        if where == "local":
            _copy_tree(Path(url), saved / "out")
        else:
            s3 = request.getfixturevalue("s3")
            etags = _all_objects(s3, prefix)
            assert "LOCK" not in etags and etags, sorted(etags)  # released
            for rel in etags:
                (saved / "objects" / rel).parent.mkdir(parents=True, exist_ok=True)
                s3.get_file(f"{prefix}/{rel}", str(saved / "objects" / rel))
            (saved / "etags.json").write_text(json.dumps(etags))
            _copy_tree(staging, saved / "staging")
        _ONCE[key] = saved
    elif where == "local":
        _copy_tree(saved / "out", Path(url))
    else:
        s3 = request.getfixturevalue("s3")
        etags = json.loads((saved / "etags.json").read_text())
        for rel in etags:
            s3.put_file(str(saved / "objects" / rel), f"{prefix}/{rel}")
        assert _all_objects(s3, prefix) == etags  # the same objects, byte for byte
        _copy_tree(saved / "staging", staging)


@pytest.mark.parametrize("how", ["kill", "sigint2"])
@pytest.mark.parametrize("where", ["local", "s3"])
@pytest.mark.parametrize("step", ["publish", "gc"])
def test_crash_in_publish_or_gc_then_rerun_keeps_a_whole_output(
    how, where, step, request, tmp_path, tmp_path_factory, small_input, fast_cfg, reference, published_reference
):
    env = {"MOTIONPAIRS_STAGING": str(tmp_path / "staging")}
    if where == "s3":
        env |= request.getfixturevalue("s3_env")
        url = f"{BUCKET}/pub/out"
    else:
        url = str(tmp_path / "out")
    _fresh_build(where, url, env, small_input, fast_cfg, request, tmp_path_factory)
    assert same(snapshot(url), reference)  # a whole build's output, what publish and gc start from
    _add_caption_rows(url, reference["pairs"], tmp_path)
    if step == "publish":
        _interrupt(["publish", url], env, "publish", tmp_path / "paused", how)
        assert same(snapshot(url), reference) and committed_tars_present(url) == []  # the old generation, whole
        r = cli(["publish", url], env=env)
        assert r.returncode == 0, r.stderr[-2000:]
    else:
        assert cli(["publish", url], env=env).returncode == 0
        _interrupt(["gc", url, "--keep", "0"], env, "gc", tmp_path / "paused", how)
        assert same(snapshot(url), published_reference) and committed_tars_present(url) == []
        r = cli(["gc", url, "--keep", "0"], env=env)
        assert r.returncode == 0, r.stderr[-2000:]
    assert same(snapshot(url), published_reference)
    assert Output.open(url).verify() == [] and committed_tars_present(url) == []
    r = cli(build_args(small_input, url, fast_cfg), env=env)  # a build after it: nothing new to do
    assert r.returncode == 0 and same(snapshot(url), published_reference), r.stderr[-2000:]


def test_an_error_after_the_record_keeps_the_units_tars(tmp_path, small_input, monkeypatch):
    """An OSError from the folder's fsync after a unit's record is written: the abort path must not
    delete the committed unit's tars (the next generation would link to nothing)."""
    import curation.store.files as files
    from curation.build import build

    cfg = load_config(None, output=str(tmp_path / "out"), sources=[{"root": str(small_input)}], **_fast())
    real = files.fsync_dir

    def failing(path):
        if Path(path).name == "parts" and list(Path(path).glob("*.json")):
            raise OSError(5, "Input/output error")
        real(path)

    monkeypatch.setattr(files, "fsync_dir", failing)
    with pytest.raises(OSError):
        build(cfg)
    monkeypatch.setattr(files, "fsync_dir", real)
    assert committed_tars_present(str(tmp_path / "out")) == []
    recs = Output(tmp_path / "out").records()
    assert recs and all((tmp_path / "out" / "tars" / n).is_file() for r in recs for n in r["files"])
    build(cfg)
    assert Output(tmp_path / "out").verify() == []


def _fast() -> dict:
    import yaml

    return yaml.safe_load(FAST)


# ---- fencing -------------------------------------------------------------------------------------


def test_a_writer_paused_past_its_lease_is_fenced_off(s3, s3_env, tmp_path, small_input, fast_cfg, reference):
    url = f"{BUCKET}/fence/out"
    root = "motionpairs-test/fence/out"
    env = s3_env | {"MOTIONPAIRS_LEASE_TTL": "3"}
    a = popen(
        build_args(small_input, url, fast_cfg),
        env=env | {"MOTIONPAIRS_STAGING": str(tmp_path / "a"), "MOTIONPAIRS_PAUSE_AT": "push_unit:2"},
    )
    deadline = time.monotonic() + 300
    while not s3.glob(f"{root}/shards/*.tar") and a.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        s3.invalidate_cache()
    assert a.poll() is None, a.communicate()[1][-2000:]
    a.send_signal(signal.SIGSTOP)  # A stalls (a long GC pause, a partitioned machine) holding its lease
    try:
        time.sleep(4)  # past A's lease
        b = cli(
            build_args(small_input, url, fast_cfg, "--wait", "60"),
            env=env | {"MOTIONPAIRS_STAGING": str(tmp_path / "b")},
        )
        assert b.returncode == 0, b.stderr[-3000:]
        after_b = objects(s3, root)
        lease_b = json.loads(s3.cat_file(f"{root}/leases/{max(p.rsplit('/', 1)[-1] for p in s3.ls(f'{root}/leases'))}"))
    finally:
        a.send_signal(signal.SIGCONT)
    _, err = a.communicate(timeout=120)
    assert a.returncode == 2, (a.returncode, err[-3000:])
    last = err.strip().splitlines()[-1]
    assert "taken over" in last and "Traceback" not in err, err[-3000:]
    assert lease_b["fence"] >= 2  # B's takeover numbered after A's
    assert objects(s3, root) == after_b  # A wrote nothing after it lost the output
    assert same(snapshot(url), reference) and Output.open(url).verify() == []


# ---- several machines ----------------------------------------------------------------------------


@pytest.mark.parametrize("second", ["refused", "waits"])
def test_two_processes_with_their_own_staging_share_one_bucket_output(
    s3, s3_env, tmp_path, small_input, fast_cfg, reference, second
):
    url = f"{BUCKET}/two/out"
    first = popen(
        build_args(small_input, url, fast_cfg),
        env=s3_env | {"MOTIONPAIRS_STAGING": str(tmp_path / "m1"), "MOTIONPAIRS_PAUSE_AT": "after_record:5",
                      "MOTIONPAIRS_PAUSE_FLAG": str(tmp_path / "paused")},
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not (tmp_path / "paused").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    env2 = s3_env | {"MOTIONPAIRS_STAGING": str(tmp_path / "m2")}
    if second == "refused":
        r = cli(build_args(small_input, url, fast_cfg), env=env2)
        assert r.returncode == 2 and "held by motionpairs build" in r.stderr.strip().splitlines()[-1], r.stderr
        assert first.wait(300) == 0, first.communicate()[1][-2000:]
        r = cli(build_args(small_input, url, fast_cfg), env=env2)  # afterwards: the other machine's work stands
        assert r.returncode == 0, r.stderr[-2000:]
    else:
        r = cli(build_args(small_input, url, fast_cfg, "--wait"), env=env2)
        assert r.returncode == 0, r.stderr[-2000:]
        assert first.wait(300) == 0, first.communicate()[1][-2000:]
    assert same(snapshot(url), reference) and Output.open(url).verify() == []
    stats = json.loads(Output.open(url).read_generation_file("stats.json"))
    assert stats["clips_in"] == 3 and stats["unaccounted_clips"] == [] and stats["double_counted_clips"] == []


def test_units_from_machines_with_their_own_staging_commit_to_one_output(s3, tmp_path, small_input, reference):
    """Dask workers on other machines: each unit is built in its own staging folder with the lock
    holder's ticket; the holder's finalize and the caption stage read what the store lists."""
    from curation.build import finalize, open_output, plan_build, process_unit

    url = f"{BUCKET}/multi/out"
    cfg = load_config(
        None, output=url, staging_dir=str(tmp_path / "holder"), sources=[{"root": str(small_input)}], **_fast()
    )
    holder = open_output(cfg)
    with holder.lock("build (test holder)"):
        plan = plan_build(cfg)
        ticket = holder.ticket()
        assert len(plan.units) == 3 and ticket["fence"] >= 1
        for k, unit in enumerate(plan.units):  # each on "another machine": its own staging folder
            worker = cfg.model_copy(update={"staging_dir": str(tmp_path / f"worker{k}")})
            process_unit(worker, unit, ticket=ticket)
        assert not list((tmp_path / "holder" / "tars").glob("*.tar"))  # nothing was built here
        stats = finalize(cfg, plan)
        pairs = sorted(s.pair.pair_id for s in holder.samples(reference["pairs"]))
    assert stats["pairs"] == len(reference["pairs"]) and pairs == reference["pairs"]
    assert same(snapshot(url), reference) and Output.open(url).verify() == []
    # a ticket of a holder that is gone is refused at commit
    worker = cfg.model_copy(update={"staging_dir": str(tmp_path / "late")})
    from curation.store import LeaseLost

    with pytest.raises(LeaseLost):
        process_unit(worker, plan.units[0], ticket=ticket | {"fence": ticket["fence"] - 1})


# ---- publish and generations ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "s3"])
def test_publish_keeps_the_near_duplicates_the_build_dropped(where, request, tmp_path):
    """A build whose second clip is a re-encode of the first drops its pairs as near-duplicates; a
    publish makes its generation the same way: the duplicates stay out, and samples.parquet, stats.json
    and the shards agree."""
    from curation.build import build
    from curation.captions.recaption import publish

    src = tmp_path / "in"
    src.mkdir()
    (src / "a_dribbler.mp4").symlink_to(video(ACCEPTED["dribbler"]))
    cap = cv2.VideoCapture(str(video(ACCEPTED["dribbler"])))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    wr = cv2.VideoWriter(str(src / "b_copy.avi"), cv2.VideoWriter_fourcc(*"MJPG"), fps, frames[0].shape[1::-1])
    wr.set(cv2.VIDEOWRITER_PROP_QUALITY, 100)  # a near-lossless re-encode: other bytes, the same pictures
    for f in frames:
        wr.write(np.ascontiguousarray(f))
    wr.release()
    if where == "s3":
        request.getfixturevalue("s3")
        out = f"{BUCKET}/dups/out"
    else:
        out = str(tmp_path / "out")
    cfg = load_config(
        None,
        output=out,
        staging_dir=str(tmp_path / "staging-a"),
        sources=[{"root": str(src)}],
        decode={"max_frames": 16},
    )
    built = build(cfg)
    assert built["near_duplicates"] >= 1
    before = snapshot(out)
    _add_caption_rows(out, before["pairs"], tmp_path)
    summary = publish(out, staging_dir=str(tmp_path / "staging-b"))  # on S3: from another machine
    after = snapshot(out)
    store = Output.open(out)
    samples = pd.read_parquet(io.BytesIO(store.read_generation_file("samples.parquet")))
    rejects = pd.read_parquet(io.BytesIO(store.read_generation_file("rejects.parquet")))
    stats = json.loads(store.read_generation_file("stats.json"))
    dups = set(rejects[(rejects.reason == "duplicate") & (rejects.level == "candidate")].pair_id)
    assert dups and not dups & set(samples.pair_id)  # the duplicates stay out
    assert after["pairs"] == before["pairs"] and after["rejects"] == before["rejects"]
    assert stats["pairs"] == len(samples) == len(after["samples"]) == summary["samples"] == built["pairs"]
    assert sorted(k.split("/", 1)[1] for k in after["samples"]) == sorted(samples.pair_id)
    assert {c for _, c in after["captions"]} == {f"raise your arm {i}" for i in range(len(samples))}
    for k in ("clips_in", "clips_accepted", "clips_rejected", "rejects_by_reason", "candidate_rejects"):
        assert stats[k] == built[k], k
    assert stats["near_duplicates"] == built["near_duplicates"]
    assert stats["yield"] == built["yield"]
    assert store.verify() == []


def test_clean_and_gc_keep_the_generations_of_an_output_whose_current_is_a_folder(tmp_path, small_input):
    from curation.build import build
    from curation.captions.recaption import publish
    from training.data import open_shards

    out = tmp_path / "out"
    cfg = load_config(None, output=str(out), sources=[{"root": str(small_input)}], **_fast())
    build(cfg)
    _add_caption_rows(str(out), snapshot(str(out))["pairs"], tmp_path)
    publish(out)  # a second generation
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, symlinks=False)  # cp -rL: every link becomes a plain file or folder
    assert (copy / "current").is_dir() and not (copy / "current").is_symlink()
    want = snapshot(str(out))
    store = Output(copy)
    gens = store.generation_names()
    assert len(gens) == 2 and store.current() == gens[-1]
    store.clean()
    assert store.generation_names() == gens
    summary = store.gc(keep=0)
    assert summary["generations_kept"] == [gens[-1]] and store.generation_names() == [gens[-1]]
    assert same(snapshot(str(copy)), want) and store.verify() == []
    assert sorted(s.pair.pair_id for s in open_shards(str(copy))) == want["pairs"]
    # an output whose current generation cannot be told: clean() leaves every generation alone
    shutil.rmtree(copy / "current")
    (copy / "current").mkdir()
    (copy / "generations" / "g000009").mkdir()
    assert store.clean() == [] and store.generation_names() == [gens[-1], "g000009"]


def test_remote_is_the_stores_concern_only():
    for name in ("curation/build.py", "curation/captions/recaption.py"):
        assert "mirror" not in (REPO / name).read_text(), name
