"""The output store under the conditions it is used in: two writers at once, kill -9 at chosen points,
corrupted tars, moved inputs, bad flags, a full or read-only disk, bad annotation rows, and the
ephemeral Prefect API of a killed build. Builds run as the CLI does, in subprocesses, on real clips."""

from __future__ import annotations

import contextlib
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

import pandas as pd
import pytest
import webdataset as wds
from conftest import ACCEPTED, REJECTED, video

from curation.build import build, plan_build
from curation.config import load_config
from curation.plan import fingerprint
from curation.store import Output, verify
from training.data import ShardIntegrityError, open_shards

MP = [sys.executable, "-m", "flows.cli"]
REPO = Path(__file__).resolve().parents[1]
# small and quick: few frames per clip, one clip per unit, one pair per tar (several tars per unit)
FAST = "decode:\n  max_frames: 16\nshards:\n  clips_per_unit: 1\n  max_samples: 1\n"


def cli(args, env=None, timeout=600, **kw):
    e = os.environ.copy() | (env or {})
    return subprocess.run(MP + args, capture_output=True, text=True, timeout=timeout, env=e, cwd=REPO, **kw)


def popen(args, env=None, **kw):
    e = os.environ.copy() | (env or {})
    return subprocess.Popen(MP + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e, cwd=REPO, **kw)


@pytest.fixture(scope="module")
def small_input(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("store-in")
    (folder / "tai_chi.mp4").symlink_to(video(ACCEPTED["tai_chi_glass"]))
    (folder / "dribbler.mp4").symlink_to(video(ACCEPTED["dribbler"]))
    (folder / "zero.mp4").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def fast_cfg(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "fast.yaml"
    p.write_text(FAST)
    return p


def build_args(inp: Path, out: Path, cfg: Path, *extra: str) -> list[str]:
    return ["build", "--input", str(inp), "--output", str(out), "--config", str(cfg), "--engine", "local", *extra]


def snapshot(out: Path) -> dict:
    """What a reader gets: pair ids, reject rows, tar sample keys, image and record bytes."""
    samples = pd.read_parquet(out / "samples.parquet")
    rejects = pd.read_parquet(out / "rejects.parquet")
    content = {}
    for raw in wds.WebDataset(sorted(str(p) for p in (out / "shards").glob("*.tar")), shardshuffle=False):
        meta = json.loads(raw["json"])
        meta["caption"].pop("created_at", None)
        for c in meta.get("captions", []):
            c.pop("created_at", None)
        digest = hashlib.sha256(raw["before.jpg"] + raw["after.jpg"]).hexdigest()
        content[raw["__key__"]] = (digest, json.dumps(meta, sort_keys=True))
    return {
        "pairs": sorted(samples.pair_id),
        "captions": sorted(zip(samples.pair_id, samples.caption, strict=True)),
        "rejects": sorted(map(tuple, rejects[["clip_id", "level", "stage", "reason"]].values.tolist())),
        "samples": content,
    }


def leftovers(out: Path) -> list[str]:
    return [str(p.relative_to(out)) for p in out.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_input, fast_cfg):
    out = tmp_path_factory.mktemp("ref") / "out"
    r = cli(build_args(small_input, out, fast_cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.parametrize("point", ["after_tar", "before_record", "after_record:2", "finalize"])
def test_sigkill_at_a_chosen_point_then_rerun_equals_an_uninterrupted_build(
    point, tmp_path, small_input, fast_cfg, reference
):
    out = tmp_path / "out"
    r = cli(build_args(small_input, out, fast_cfg), env={"MOTIONPAIRS_CRASH_AT": point})
    assert r.returncode == -signal.SIGKILL, (point, r.returncode, r.stderr[-2000:])
    r = cli(build_args(small_input, out, fast_cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    assert snapshot(out) == snapshot(reference)
    assert leftovers(out) == [] and verify(str(out)) == []


def test_sigkill_after_a_settings_change_keeps_the_old_generation_then_completes(
    tmp_path, small_input, fast_cfg, reference
):
    out = tmp_path / "out"
    other = tmp_path / "other.yaml"
    other.write_text(FAST + "pairing:\n  pairs_per_clip: 1\n")
    assert cli(build_args(small_input, out, other)).returncode == 0
    old = snapshot(out)
    r = cli(build_args(small_input, out, fast_cfg), env={"MOTIONPAIRS_CRASH_AT": "after_record"})
    assert r.returncode == -signal.SIGKILL
    assert snapshot(out) == old and verify(str(out)) == []  # readers still see one whole generation
    r = cli(build_args(small_input, out, fast_cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    assert snapshot(out) == snapshot(reference) and leftovers(out) == [] and verify(str(out)) == []


def _fast_overrides() -> dict:
    import yaml

    return yaml.safe_load(FAST)


def test_sigkill_inside_publish_then_rerun(tmp_path, reference, small_input):
    out = tmp_path / "out"
    shutil.copytree(reference, out, symlinks=True)
    # a caption version to publish: rows as a recaption run writes them
    from curation.captions.recaption import write_caption_rows
    from schemas.records import caption_version

    samples = pd.read_parquet(out / "samples.parquet")
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
        for i, pid in enumerate(samples.pair_id)
    ]
    write_caption_rows(out, "r1", _complete_rows(rows))
    ref_pub = tmp_path / "ref-pub"
    shutil.copytree(out, ref_pub, symlinks=True)
    assert cli(["publish", str(ref_pub)]).returncode == 0
    r = cli(["publish", str(out)], env={"MOTIONPAIRS_CRASH_AT": "publish"})
    assert r.returncode == -signal.SIGKILL
    assert snapshot(out) == snapshot(reference)  # the old generation, whole
    r = cli(["publish", str(out)])
    assert r.returncode == 0, r.stderr[-2000:]
    got = snapshot(out)
    assert got == snapshot(ref_pub)
    assert {c for _, c in got["captions"]} == {f"raise your arm {i}" for i in range(len(samples))}
    assert leftovers(out) == [] and verify(str(out)) == []
    # a build after a publish keeps the choice and, with nothing new, is a no-op
    gen = Output(out).current()
    cfg_out = load_config(None, output=str(out), sources=[{"root": str(small_input)}], **_fast_overrides())
    assert build(cfg_out)["generation"] == gen and Output(out).current() == gen


def _complete_rows(rows):
    """Fill the caption-row columns these tests do not care about."""
    from schemas.captions import CAPTION_ROWS_SCHEMA

    return [{f.name: r.get(f.name) for f in CAPTION_ROWS_SCHEMA} for r in rows]


HOLDER = """
import sys, time
from curation.store import Output
with Output(sys.argv[1]).lock("holder-for-test"):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _hold(out: Path, seconds: float) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out), str(seconds)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert p.stdout.readline().strip() == "locked"
    return p


def test_one_writer_at_a_time(tmp_path, small_input, fast_cfg, reference):
    out = tmp_path / "out"
    shutil.copytree(reference, out, symlinks=True)
    holder = _hold(out, 120)
    try:
        for args in (build_args(small_input, out, fast_cfg), ["publish", str(out)], ["gc", str(out)]):
            r = cli(args)
            assert r.returncode == 2, (args, r.stderr[-2000:])
            line = r.stderr.strip()
            assert "\n" not in line and "locked by holder-for-test (pid" in line and str(holder.pid) in line, line
        r = cli(["inspect", str(out)])  # readers never need the lock
        assert r.returncode == 0
    finally:
        holder.send_signal(signal.SIGKILL)  # a holder that dies: its lock is taken over
        holder.wait()
    r = cli(build_args(small_input, out, fast_cfg))
    assert r.returncode == 0 and "locked" not in r.stderr
    # --wait: the second writer waits for the first instead of failing
    holder = _hold(out, 3)
    t0 = time.monotonic()
    r = cli(["publish", str(out), "--wait"])
    assert r.returncode == 0 and time.monotonic() - t0 >= 1.5, r.stderr[-2000:]
    holder.wait()


def _processes() -> dict[int, tuple[int, int, str, bytes]]:
    """Every process now: pid -> (parent pid, process group, state, command line)."""
    found = {}
    for d in Path("/proc").iterdir():
        try:
            fields = (d / "stat").read_text().rpartition(")")[2].split()
            found[int(d.name)] = (int(fields[1]), int(fields[3]), fields[0], (d / "cmdline").read_bytes())
        except (OSError, ValueError, IndexError):
            pass
    return found


def _running(pids) -> list[int]:
    """Those of `pids` still running (a zombie, exited and not yet reaped, runs no more)."""
    now = _processes()
    return [p for p in pids if p in now and now[p][2] not in "ZX"]


def _api_children(pid: int) -> list[int]:
    """The Prefect API processes (uvicorn) that process `pid` started."""
    return [p for p, (ppid, _, _, cmd) in _processes().items() if ppid == pid and b"uvicorn" in cmd]


def test_a_build_waiting_for_another_writer_runs_no_idle_prefect_api(tmp_path, small_input, fast_cfg):
    """`--wait` on the default engine: the CLI starts its Prefect API at once (beside its own set-up)
    and stops it when another writer holds the output, so that nothing idles while it waits (minutes,
    or hours for a scheduled build behind a long one); when the output is free it starts one again and
    the build runs as usual."""
    out = tmp_path / "out"
    holder = _hold(out, 600)
    err = tmp_path / "stderr.txt"
    args = build_args(small_input, out, fast_cfg)[:-2] + ["--wait"]  # the default engine: prefect
    with err.open("w") as sink:
        p = subprocess.Popen(MP + args, stdout=subprocess.DEVNULL, stderr=sink, text=True, cwd=REPO)
    seen: set[int] = set()  # every API process the CLI started
    try:
        deadline = time.monotonic() + 120
        while "waiting for" not in err.read_text() and p.poll() is None and time.monotonic() < deadline:
            seen.update(_api_children(p.pid))
            time.sleep(0.2)
        assert "waiting for" in err.read_text() and p.poll() is None, err.read_text()[-2000:]
        deadline = time.monotonic() + 150  # the API still starting is let come up, then it stops
        while _running(seen | set(_api_children(p.pid))) and time.monotonic() < deadline:
            seen.update(_api_children(p.pid))
            time.sleep(0.2)
        for _ in range(10):  # while it waits: no API process, and none started again
            assert _running(seen | set(_api_children(p.pid))) == [], "a Prefect API idles while the build waits"
            time.sleep(0.5)
        holder.send_signal(signal.SIGKILL)  # the other writer dies: its lock is taken over
        holder.wait()
        while p.poll() is None:
            seen.update(_api_children(p.pid))
            time.sleep(0.2)
        assert p.returncode == 0, err.read_text()[-3000:]
    finally:
        holder.kill()
        p.kill()
    assert "Traceback" not in err.read_text() and "uvicorn.error" not in err.read_text(), err.read_text()[-3000:]
    assert verify(str(out)) == [] and len(Output(out).records()) == 3
    assert seen and _running(seen) == []  # it ran one again for the build, and stopped it


def test_two_real_builds_at_once(tmp_path, small_input, fast_cfg):
    out = tmp_path / "out"
    # the first build holds the output for a while after its first unit commits
    first = popen(build_args(small_input, out, fast_cfg), env={"MOTIONPAIRS_PAUSE_AT": "after_record:20"})
    deadline = time.monotonic() + 120
    while not list(out.glob("parts/*.json")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert first.poll() is None
    second = cli(build_args(small_input, out, fast_cfg))
    assert second.returncode == 2 and "locked by motionpairs build" in second.stderr, second.stderr[-2000:]
    assert first.wait(300) == 0, first.stderr.read()[-2000:]
    assert verify(str(out)) == []


def test_verify_finds_every_kind_of_damage_and_the_reader_refuses_a_short_tar(tmp_path, reference, caplog):
    out = tmp_path / "out"
    shutil.copytree(reference, out, symlinks=True)
    assert verify(str(out)) == []
    r = cli(["verify", str(out)])
    assert r.returncode == 0 and "agrees" in r.stdout
    tars = sorted((out / "shards").glob("*.tar"))
    assert len(tars) >= 3
    # a tar cut at a member boundary (after its first member): it still opens, just short
    cut = tars[0]
    data = cut.read_bytes()
    cut.unlink()  # the generation's link; write a new file in its place
    cut.write_bytes(data[: _members_offset(data, 1)])
    # one flipped byte
    flip = tars[1]
    b = bytearray(flip.read_bytes())
    b[len(b) // 2] ^= 0xFF
    flip.unlink()
    flip.write_bytes(bytes(b))
    # a missing tar, and an orphan in the pool
    tars[2].unlink()
    (out / "tars" / "u000000000000-0000.tar").write_bytes(b"\0" * 1024)
    faults = verify(str(out))
    text = "\n".join(faults)
    assert f"{cut.name}: " in text and "truncated" in text
    assert f"{flip.name}: sha256 differs" in text
    assert f"{tars[2].name}: missing" in text
    assert "orphan tar u000000000000-0000.tar" in text
    r = cli(["verify", str(out)])
    assert r.returncode == 1 and "FAULT" in r.stdout
    # readers: through the listing the short tar is refused before a sample is read
    with pytest.raises(ShardIntegrityError, match="bytes, recorded"):
        list(open_shards(out, decode_images=False))
    # plain paths with sizes.json beside them: 3 samples in a tar, cut after the second sample
    three = tmp_path / "three"
    three.mkdir()
    with wds.TarWriter(str(three / "t.tar")) as w:
        for raw in wds.WebDataset(
            [str(p) for p in sorted((reference / "shards").glob("*.tar"))[:3]], shardshuffle=False
        ):
            w.write({k: v for k, v in raw.items() if not k.startswith("__") or k == "__key__"})
    (three / "sizes.json").write_text(json.dumps({"t.tar": 3}))
    assert len(list(open_shards(str(three / "t.tar"), decode_images=False))) == 3
    data = (three / "t.tar").read_bytes()
    (three / "t.tar").write_bytes(data[: _members_offset(data, 6)])
    with pytest.raises(ShardIntegrityError, match="yielded 2 samples, sizes.json says 3"):
        list(open_shards(str(three / "t.tar"), decode_images=False))
    with caplog.at_level("WARNING", logger="training.data"):
        got = list(open_shards(str(three / "t.tar"), decode_images=False, integrity="warn"))
    assert len(got) == 2 and "yielded 2 samples, sizes.json says 3" in caplog.text


def _members_offset(data: bytes, k: int) -> int:
    """Byte offset of the k-th member header of a tar held in memory (0-based)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getmembers()[k].offset


def test_moving_the_input_root_is_a_no_op_and_a_replaced_video_is_redone(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    (a / "tai_chi.mp4").write_bytes(video(ACCEPTED["tai_chi_glass"]).read_bytes())
    (a / "bunny.mp4").write_bytes(video(REJECTED["helmet_cam"][0]).read_bytes())
    out = tmp_path / "out"
    cfg = load_config(
        None, output=str(out), sources=[{"root": str(a)}], decode={"max_frames": 16}, shards={"clips_per_unit": 1}
    )
    stats = build(cfg)
    gen = Output(out).current()
    b = tmp_path / "b"
    a.rename(b)  # the videos moved (a remount, another machine)
    moved = cfg.model_copy(update={"sources": load_config(None, output=str(out), sources=[{"root": str(b)}]).sources})
    plan = plan_build(moved)
    assert plan.units == [] and plan.stale_units == []
    assert build(moved)["pairs"] == stats["pairs"] and Output(out).current() == gen  # nothing rewritten
    # a different video under the same name: that clip's unit (only) is redone
    (b / "bunny.mp4").write_bytes(video(ACCEPTED["dribbler"]).read_bytes())
    plan = plan_build(moved)
    assert [c.clip_id for u in plan.units for c in u.clips] == ["bunny"]
    stats2 = build(moved)
    assert stats2["clips_accepted"] == 2 and verify(str(out)) == []


def test_copies_and_symlinks_of_one_video_are_one_clip(tmp_path):
    from curation.sources import list_sources

    folder = tmp_path / "in"
    folder.mkdir()
    src = video(ACCEPTED["dribbler"])
    (folder / "a.mp4").symlink_to(src)
    (folder / "b.mp4").write_bytes(src.read_bytes())
    (folder / "c.mp4").symlink_to(folder / "b.mp4")
    cfg = load_config(None, output=str(tmp_path / "o"), sources=[{"root": str(folder), "val_fraction": 0.5}])
    listing = list_sources(cfg.sources)
    assert [c.clip_id for c in listing.clips] == ["a"]
    assert sorted((r.clip_id, r.reason.value, r.detail) for r in listing.rejects) == [
        ("b", "duplicate", "same video as a"),
        ("c", "duplicate", "same video as a"),
    ]


def test_a_device_this_machine_lacks_is_a_one_line_error_and_nothing_is_committed(tmp_path, small_input, fast_cfg):
    out = tmp_path / "out"
    r = cli(build_args(small_input, out, fast_cfg, "--device", "cuda"), env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr[-2000:]
    assert "no usable CUDA GPU" in r.stderr
    assert not list(out.glob("parts/*.json")) and Output(out).current() is None


def test_output_under_a_file_and_bad_settings_are_one_line_errors(tmp_path, small_input, fast_cfg):
    f = tmp_path / "file"
    f.write_text("x")
    r = cli(build_args(small_input, f / "out", fast_cfg))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "not writable" in r.stderr, r.stderr
    mp4_cfg = video(ACCEPTED["dribbler"])
    r = cli(["build", "--input", str(small_input), "--output", str(tmp_path / "o"), "--config", str(mp4_cfg)])
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "not a YAML text file" in r.stderr
    r = cli(build_args(small_input, tmp_path / "o", fast_cfg), env={"MOTIONPAIRS_MOTION__REQUIRED_KEYPOINTS": "a,b"})
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "MOTIONPAIRS_" in r.stderr, r.stderr


@pytest.fixture()
def tiny_mount(tmp_path):
    """A real small filesystem (tmpfs) to fill up or mount read-only: needs root, as CI and setup have."""
    mounts = []

    def make(size: str, ro: bool = False) -> Path:
        d = tmp_path / f"mnt{len(mounts)}"
        d.mkdir()
        opts = f"size={size}" + (",ro" if ro else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounts.append(d)
        return d

    yield make
    for d in mounts:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_full_and_read_only_disks_are_one_line_errors_leaving_nothing_half_written(
    tmp_path, small_input, fast_cfg, tiny_mount
):
    full = tiny_mount("160k")
    out = full / "out"
    r = cli(build_args(small_input, out, fast_cfg))
    assert r.returncode == 2, r.stderr[-3000:]
    # one error line (after the progress bar), no traceback
    assert r.stderr.strip().splitlines()[-1] == "motionpairs: error: No space left on device", r.stderr[-3000:]
    assert "Traceback" not in r.stderr and r.stderr.count("error") == 1
    assert leftovers(out) == []
    claimed = {n for rec in Output(out).records() for n in rec["files"]}
    assert {p.name for p in (out / "tars").glob("*.tar")} <= claimed  # no tar of an uncommitted unit
    ro = tiny_mount("1m", ro=True)
    r = cli(build_args(small_input, ro / "out", fast_cfg))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "not writable" in r.stderr, r.stderr


def test_bad_kinetics_rows_are_one_reject_each_and_the_build_completes(tmp_path):
    root = tmp_path / "k"
    root.mkdir()
    (root / "Kop0sDqOn-c_000253_000263.mp4").symlink_to(video(ACCEPTED["tai_chi_glass"]))
    ann = tmp_path / "val.csv"
    ann.write_bytes(
        b"label,youtube_id,time_start,time_end,split\n"
        b'"tai chi",Kop0sDqOn-c,253,263,val\n'
        b"abseiling,abc.def,1,11,val\n"  # a dot in the id
        b"caf\xe9,xyzXYZ12345,1,11,val\n"  # a Latin-1 byte
        b'"unterminated,q1q1q1q1q1q,1,11,val\n'  # a quote never closed
        b"abseiling,okokokokoko,5,15,val\n"
        b"abseiling,okokokokok2,5,15,val\n"
    )
    out = tmp_path / "out"
    cfg = load_config(
        None, output=str(out), decode={"max_frames": 16},
        sources=[{"kind": "kinetics", "root": str(root), "annotations": [str(ann)]}],
    )  # fmt: skip
    stats = build(cfg)
    rj = pd.read_parquet(out / "rejects.parquet")
    bad = rj[rj.reason == "bad_annotation"].sort_values("clip_id")
    assert bad.clip_id.tolist() == ["val_line3", "val_line4", "val_line5"]
    assert "abc.def" in bad.detail.iloc[0] and "UTF-8" in bad.detail.iloc[1] and "malformed" in bad.detail.iloc[2]
    assert sorted(rj[rj.reason == "missing_file"].clip_id) == ["okokokokok2_000005_000015", "okokokokoko_000005_000015"]
    assert stats["unaccounted_clips"] == [] and stats["clips_accepted"] == 1


def _children(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_prefect_build_stops_cleanly_on_sigterm_and_leaves_no_server_after_sigkill(tmp_path, small_input, fast_cfg):
    import psutil

    out = tmp_path / "out"
    args = build_args(small_input, out, fast_cfg)[:-2]  # the default engine: prefect, ephemeral API
    p = popen(args, env={"PREFECT_LOGGING_LEVEL": "INFO"}, start_new_session=True)
    deadline = time.monotonic() + 240
    while not list(out.glob("parts/*.json")) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    servers = [c for c in _children(p.pid) if "uvicorn" in " ".join(c.cmdline())]
    assert servers, "no Prefect API child while the build ran"
    assert list(out.glob("parts/*.json")) and p.poll() is None, "no unit committed while the build ran"
    p.send_signal(signal.SIGTERM)  # while the flow runs units as task runs (Prefect's own SIGTERM bridge
    rc = p.wait(120)  # raised wherever its engine was, a task run's creation included: "Task run is not set")
    err = p.stderr.read()
    # the CLI's handler, as on the local engine: the unit in progress finishes, the run ends Cancelled
    assert rc == 130 and "motionpairs: stopped: stopped on request" in err, (rc, err[-2000:])
    assert "Traceback" not in err and "Finished in state Cancelled('stopped on request" in err, err[-2000:]
    assert "Failed(" not in err and "Crashed(" not in err, err[-2000:]
    assert Output(out).records() and leftovers(out) == []  # committed units stand
    for s in servers:
        assert not s.is_running() or s.status() == psutil.STATUS_ZOMBIE
    # kill -9 while it runs: the API child goes with it
    p = popen(args, start_new_session=True)
    deadline = time.monotonic() + 240
    servers = []
    while not servers and p.poll() is None and time.monotonic() < deadline:
        servers = [c for c in _children(p.pid) if "uvicorn" in " ".join(c.cmdline())]
        time.sleep(0.2)
    assert servers
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.monotonic() + 30
    while any(s.is_running() and s.status() != psutil.STATUS_ZOMBIE for s in servers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(s.is_running() and s.status() != psutil.STATUS_ZOMBIE for s in servers)
    r = cli(args)  # and the next run resumes
    assert r.returncode == 0, r.stderr[-2000:]
    assert verify(str(out)) == []


def test_a_stop_asked_during_the_last_unit_stops_before_finalize(tmp_path, small_input, fast_cfg):
    """SIGTERM/Ctrl-C set curation.build.STOP; the build stops at the next unit boundary, and the end of
    the last unit is one too: finalize (minutes at Kinetics scale) is left to the next run, which makes
    the generation from the committed units without building them again."""
    from curation import build as mp_build

    source = {"kind": "folder", "root": str(small_input)}
    cfg = load_config(str(fast_cfg), output=str(tmp_path / "out"), sources=[source])
    plan = plan_build(cfg)
    seen: list[str] = []

    class LastClipStops:
        def plan(self, p) -> None:
            pass

        def clip(self, result) -> None:
            seen.append(result.clip.clip_id)
            if len(seen) == sum(len(u.clips) for u in plan.units):
                mp_build.STOP.set()  # as the CLI's handler does, while the last unit runs

    try:
        with pytest.raises(mp_build.BuildStopped):
            mp_build.build_with_progress(cfg, LastClipStops())
    finally:
        mp_build.STOP.clear()
    out = Output(cfg.output)
    assert len(out.records()) == len(plan.units) and out.current() is None
    assert leftovers(tmp_path / "out") == []
    stats = build(cfg)  # the next run: nothing to build again, only the generation to make
    assert stats["clips_in"] == len(seen) and verify(cfg.output) == [] and Output(cfg.output).current()


def test_an_error_raised_while_handling_a_stop_signal_is_read_as_a_stop():
    """A second signal can land inside Prefect's task-run creation, which then raises its own error
    (ValueError 'Task run is not set') while handling the TerminationSignal: the CLI reads that as a
    stop (exit 130), not a failure; an error with no signal behind it stays an error."""
    from prefect.exceptions import TerminationSignal

    from flows.build import _signal_behind

    try:
        try:
            raise TerminationSignal(signal.SIGTERM)
        except TerminationSignal:
            raise ValueError("Task run is not set")  # noqa: B904 - as Prefect's task engine raises it
    except ValueError as e:
        assert isinstance(_signal_behind(e), TerminationSignal)
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("teardown failed")  # noqa: B904
    except RuntimeError as e:
        assert isinstance(_signal_behind(e), KeyboardInterrupt)
    assert _signal_behind(ValueError("a failure")) is None


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a pytest-xdist worker ignores SIGINT, and children inherit it


@pytest.mark.parametrize("engine", ["prefect", "local"])
def test_ctrl_c_in_a_terminal_stops_after_the_unit_without_a_traceback(tmp_path, small_input, fast_cfg, engine):
    """Ctrl-C as a terminal sends it, to every process of the group (the decode workers too): the unit in
    progress finishes, the CLI says so in one line and exits 130, no traceback from anything (a decode
    worker's KeyboardInterrupt, Prefect's engine), and the Prefect flow run ends Cancelled, not Failed or
    Crashed; the next run resumes."""
    out = tmp_path / "out"
    args = build_args(small_input, out, fast_cfg)
    if engine == "prefect":
        args = args[:-2]  # the default engine: prefect, ephemeral API
    p = popen(args, env={"PREFECT_LOGGING_LEVEL": "INFO"}, start_new_session=True, preexec_fn=_sigint_as_in_a_terminal)
    deadline = time.monotonic() + 240
    while not list(out.glob("parts/*.json")) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(out.glob("parts/*.json")) and p.poll() is None, "no unit committed while the build ran"
    os.killpg(p.pid, signal.SIGINT)  # the CLI leads its own process group (start_new_session)
    _, err = p.communicate(timeout=240)
    assert p.returncode == 130, (p.returncode, err[-3000:])
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert "motionpairs: stopped: stopped on request" in err, err[-3000:]
    if engine == "prefect":  # the run's final state, as Prefect's engine logs it
        assert "Finished in state Cancelled('stopped on request" in err, err[-3000:]
        assert "Failed(" not in err and "Crashed(" not in err, err[-3000:]
    done = Output(out).records()
    assert 1 <= len(done) <= 3 and leftovers(out) == []  # 3 units of a clip each: a stop during the last one stops too
    r = cli(args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert verify(str(out)) == []


def test_a_second_ctrl_c_stops_at_once_even_mid_decode(tmp_path, small_input, fast_cfg):
    """A second Ctrl-C stops now: a decode worker busy on a long clip (held here for 120 s) does not
    keep the CLI waiting for it, and no process of its group is left running; one line, exit 130, no
    traceback, the output as it was (nothing half-written), and the next run completes."""
    out = tmp_path / "out"
    args = build_args(small_input, out, fast_cfg)
    flag = tmp_path / "decoding"
    env = {"MOTIONPAIRS_PAUSE_AT": "decode_worker:120", "MOTIONPAIRS_PAUSE_FLAG": str(flag)}
    p = popen(args, env=env, start_new_session=True, preexec_fn=_sigint_as_in_a_terminal)
    group = lambda: [q for q, (_, pgid, _, _) in _processes().items() if pgid == p.pid]  # noqa: E731
    try:
        deadline = time.monotonic() + 240
        while not flag.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert flag.exists() and p.poll() is None, "the decode worker never started on a clip"
        assert [q for q in group() if q != p.pid], "no decode worker in the CLI's process group"
        os.killpg(p.pid, signal.SIGINT)
        time.sleep(1.0)
        os.killpg(p.pid, signal.SIGINT)
        t0 = time.monotonic()
        _, err = p.communicate(timeout=240)
        waited = time.monotonic() - t0
        deadline = time.monotonic() + 10
        while _running(group()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _running(group()) == [], "a process of the CLI's group outlived it"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, (p.returncode, err[-3000:])
    assert waited < 60, f"the CLI waited {waited:.0f} s for the held decode"  # the hold is 120 s
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert "motionpairs: stopped: interrupted" in err, err[-3000:]
    assert Output(out).records() == [] and leftovers(out) == []
    r = cli(args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert verify(str(out)) == []


def test_files_are_readable_by_other_users(reference):
    for p in [reference / "samples.parquet", reference / "rejects.parquet", reference / "stats.json"]:
        assert os.stat(p).st_mode & 0o044 == 0o044, p
    for p in (reference / "parts").iterdir():
        assert os.stat(p).st_mode & 0o044 == 0o044, p


def test_tuning_settings_leave_the_fingerprint_and_a_results_version_change_redoes_units(tmp_path, monkeypatch):
    import curation.plan as config

    base = load_config(None, output=str(tmp_path / "o"))
    fp = fingerprint(base)
    for tuning in ({"decode": {"batch_frames": 4}}, {"shards": {"max_samples": 7, "clips_per_unit": 2}},
                   {"pose": {"device": "cpu"}}, {"output": str(tmp_path / "elsewhere")}):  # fmt: skip
        assert fingerprint(load_config(None, **({"output": str(tmp_path / "o")} | tuning))) == fp, tuning
    assert fingerprint(load_config(None, output=str(tmp_path / "o"), shards={"jpeg_quality": 80})) != fp
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "tai_chi.mp4").symlink_to(video(ACCEPTED["tai_chi_glass"]))
    cfg = load_config(None, output=str(tmp_path / "o"), sources=[{"root": str(folder)}], decode={"max_frames": 16})
    build(cfg)
    monkeypatch.setattr(config, "RESULTS_VERSION", config.RESULTS_VERSION + 1)  # a code change that alters results
    plan = plan_build(cfg)
    assert plan.stale_units and [c.clip_id for u in plan.units for c in u.clips] == ["tai_chi"]
    stats = build(cfg)
    old, new = str(config.RESULTS_VERSION - 1), str(config.RESULTS_VERSION)
    assert stats["changed_versions"] == {"results": [old, new]} and verify(str(tmp_path / "o")) == []


def test_the_manifest_streamed_in_many_row_groups_is_the_manifest_in_one(reference, tmp_path, monkeypatch):
    """samples.parquet is written a row group at a time from runs the parts are sorted out into
    (generation.StreamedSamples): with a row group of one row, each part's rows go to as many runs as
    it has rows, and what comes back is the same table, in the spine's order."""
    import pyarrow as pa

    from curation import generation
    from schemas.manifest import samples_table

    out = Output(reference)
    paths = out.local_parts([r["unit_id"] for r in out.records()], "samples")
    schema = samples_table([]).schema
    spine, offsets = generation.read_spine(paths, schema)
    assert spine.num_rows >= 2 and len(paths) >= 2  # rows from more than one part
    streamed = {}
    for rows in (generation.ROWS_PER_GROUP, 1):
        monkeypatch.setattr(generation, "ROWS_PER_GROUP", rows)
        (tmp_path / str(rows)).mkdir()
        samples = generation.StreamedSamples(paths, offsets, spine, schema, tmp_path / str(rows), {}, 0.5)
        assert len(samples.runs) == (1 if rows > 1 else spine.num_rows)
        streamed[rows] = pa.concat_tables(list(samples))
    one, many = streamed.values()
    assert many.equals(one) and one.column("pair_id").to_pylist() == spine.column("pair_id").to_pylist()
