"""motionpairs: before/after motion pairs for instruction-based image editors, from videos of people.
Commands: build, inspect, report, eval, verify, gc, recaption, publish, train, evaluate, edit, demo-clip
(each has --help)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

# Offline-safe defaults, set before prefect or ultralytics are imported (user settings win).
for _k, _v in {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "curation",  # curation's logs appear in the flow run's logs
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "false",
}.items():
    os.environ.setdefault(_k, _v)

log = logging.getLogger("motionpairs")


def _fail(msg: str) -> int:
    print(f"motionpairs: error: {msg}", file=sys.stderr)
    return 2


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "device", None):
        out["pose"] = {"device": args.device}
    if getattr(args, "pose_engine", None):
        out.setdefault("pose", {})["engine"] = args.pose_engine
    caption = {
        k: v
        for k, v in {
            "captioner": getattr(args, "captioner", None),
            "model": getattr(args, "model", None),
            "base_url": getattr(args, "base_url", None),
            "prompt_version": getattr(args, "prompt_version", None),
            "max_requests": getattr(args, "max_requests", None),
            "max_cost_usd": getattr(args, "max_cost_usd", None),
            "batch": getattr(args, "batch", None) or None,
        }.items()
        if v is not None
    }
    if caption:
        out["caption"] = caption
    return out


def _add_caption_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model name on the OpenAI-compatible server")
    p.add_argument("--base-url", help="server URL (default: $OPENAI_BASE_URL, else OpenAI); key: $OPENAI_API_KEY")
    p.add_argument("--prompt-version", help="prompt file curation/prompts/<version>.md (default v1)")
    p.add_argument("--max-requests", type=int, help="budget: stop cleanly after this many paid requests")
    p.add_argument("--max-cost-usd", type=float, help="budget: stop cleanly at this estimated cost")
    p.add_argument("--batch", action="store_true", help="use the Batch API (upload, submit, poll, ingest)")


def _wait(args: argparse.Namespace) -> float | None:
    w = getattr(args, "wait", None)
    return None if w is None else (float("inf") if w == 0 else w)


def _stop_on_signals() -> None:
    """SIGTERM/SIGINT: finish nothing new, stop at the next unit boundary (committed units stand). A
    second signal stops at once."""
    import signal

    from curation.runner import STOP

    def handler(signum, frame) -> None:
        if STOP.is_set():
            raise KeyboardInterrupt
        STOP.set()
        print("motionpairs: stopping after the current unit (again to stop now)", file=sys.stderr)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def _add_wait_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=0,
        metavar="SECONDS",
        help="when another writer holds the output, wait (SECONDS, or as long as it takes) instead of exiting 2",
    )


def cmd_build(args: argparse.Namespace) -> int:
    from rich.console import Console

    from curation.captions.llm import CaptionSetupError, LLMCaptioner
    from curation.config import ConfigError, load_config
    from curation.ingest import SourceError, check_root
    from curation.runner import BuildStopped, SetupError, get_processor, open_output, plan_build, run_build
    from curation.store import StoreError

    extra = _overrides(args)
    try:
        if args.input is not None and args.root is not None:
            raise ConfigError("give --input DIR (a folder of videos) or --source KIND --root DIR, not both")
        if args.input is not None or args.root is not None:
            src: dict[str, Any] = {"kind": args.source, "root": args.input or args.root}
            if args.annotations:
                src["annotations"] = args.annotations
            extra["sources"] = [src]
        elif args.annotations:
            raise ConfigError("--annotations needs --source KIND --root DIR")
        cfg = load_config(args.config, output=args.output, **extra)
        if not cfg.sources:
            raise ConfigError("no input: pass --input DIR or list sources in --config")
        for s in cfg.sources:
            check_root(s.root)  # a missing input is an error before the output is touched
    except (ConfigError, SourceError) as e:
        return _fail(str(e))

    console = Console(stderr=True)
    _stop_on_signals()
    try:
        out = open_output(cfg)
        with out.lock("motionpairs build", _wait(args)):  # the one lock of this run (the flow nests in it)
            plan = plan_build(cfg)  # fails fast on a missing input folder, before any model loads
            if cfg.caption.captioner == "openai":
                LLMCaptioner(cfg.caption, out.root).setup()  # no key or model: say so before any work
            if plan.units:
                get_processor(cfg)  # the model must load on the device before any clip is tried
            stats = _run_build(args, cfg, plan, console, run_build)
    except (ConfigError, SourceError, CaptionSetupError, StoreError, SetupError) as e:
        return _fail(str(e))
    except (BuildStopped, KeyboardInterrupt) as e:
        print(f"motionpairs: stopped: {e or 'interrupted'}", file=sys.stderr)
        return 130
    print_summary(cfg.output, console)
    return 0 if not stats["unaccounted_clips"] else 1


def _run_build(args, cfg, plan, console, run_build) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    with progress:
        bar = progress.add_task("clips", total=plan.pending_clips, last="")

        def on_clip(res) -> None:
            note = f"{len(res.pairs)} pairs" if res.accepted else res.rejects[-1].reason.value
            progress.update(bar, advance=1, last=f"{res.clip.clip_id[:40]}: {note}")

        if args.engine == "local":
            return run_build(cfg, on_clip=on_clip)
        from prefect.exceptions import TerminationSignal

        from curation.runner import BuildStopped
        from flows.build import PROGRESS_HOOKS, build_dataset
        from flows.server import ephemeral_api

        PROGRESS_HOOKS[cfg.output] = on_clip
        try:
            with ephemeral_api():  # a Prefect API that dies with this process, however it dies
                return build_dataset(output=cfg.output, config_path=None, overrides=_as_overrides(cfg))
        except TerminationSignal as e:  # Prefect owns SIGTERM during a flow run: the unit in progress is dropped
            raise BuildStopped("terminated; committed units stand, run the build again to resume") from e
        finally:
            PROGRESS_HOOKS.pop(cfg.output, None)


def _as_overrides(cfg) -> dict[str, Any]:
    data = cfg.model_dump(mode="json")
    data.pop("output")
    return data


def print_summary(out: Path | str, console=None) -> None:
    """Counts, rejects by stage and reason, and timings of a build (a folder or an fsspec URL)."""
    import fsspec
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from curation.store import committed, is_remote
    from schemas.manifest import REJECTS_FILE, SAMPLES_FILE, STATS_FILE

    console = console or Console(width=None if sys.stdout.isatty() else 200)  # a pipe: no wrapped cells
    base = str(out).rstrip("/")
    gen = committed(base)  # read through the pointer: one generation, whatever a writer does meanwhile
    with fsspec.open(gen.file_url(STATS_FILE), "rb") as f:
        stats = json.loads(f.read())
    t = Table(title=f"motionpairs build: {out}")
    t.add_column("what")
    t.add_column("count", justify="right")
    for k in ("clips_in", "clips_accepted", "clips_rejected", "pairs", "shards", "candidate_rejects", "ignored_files"):
        t.add_row(k.replace("_", " "), str(stats[k]))
    t.add_row("shard MB", f"{stats['shard_bytes'] / 1e6:.1f}")
    if stats.get("unaccounted_clips"):
        t.add_row("[red]unaccounted clips", str(len(stats["unaccounted_clips"])))
    console.print(t)

    rejects = pd.read_parquet(gen.file_url(REJECTS_FILE))
    clip_level = rejects[rejects["level"] == "clip"]
    if len(clip_level):
        r = Table(title="rejected clips by stage and reason")
        for c in ("stage", "reason", "clips", "examples"):
            r.add_column(c, justify="right" if c == "clips" else "left")
        for (stage, reason), g in clip_level.groupby(["stage", "reason"], sort=True):
            r.add_row(stage, reason, str(len(g)), ", ".join(g["clip_id"].head(3)))
        console.print(r)
    samples = pd.read_parquet(gen.file_url(SAMPLES_FILE), columns=["source", "clip_id", "caption"])
    if len(samples):
        s = Table(title="pairs by source (first captions)")
        for c in ("source", "clips", "pairs", "example caption"):
            s.add_column(c)
        for source, g in samples.groupby("source", sort=True):
            s.add_row(source, str(g["clip_id"].nunique()), str(len(g)), str(g["caption"].iloc[0]))
        console.print(s)
    if not is_remote(base):  # caption rows are read from a local output
        _print_caption_versions(Path(base), console)
    t.caption = f"generation {gen.generation}, {len(gen.shards)} tars"
    secs = stats.get("seconds", {})
    if secs:
        timings = ", ".join(f"{k} {v}" for k, v in secs.items())
        console.print(f"time (s): {timings}; frames decoded {stats['frames_decoded']}")


def _print_caption_versions(out: Path, console) -> None:
    """The caption versions a build holds (what `publish --caption-version` and `train --caption-version`
    choose from): pairs with a usable caption of each, pairs whose attempts failed, pairs publishing it."""
    import pandas as pd
    from rich.table import Table

    from curation.recaption import read_caption_rows
    from schemas.captions import CaptionStatus
    from schemas.manifest import SAMPLES_FILE
    from schemas.records import OFFLINE_VERSION, caption_version

    cols = ["caption_captioner", "caption_model", "caption_prompt_version"]
    samples = pd.read_parquet(out / SAMPLES_FILE, columns=cols)
    published = [
        OFFLINE_VERSION if c == OFFLINE_VERSION else caption_version(m, p)
        for c, m, p in samples.itertuples(index=False)
    ]
    rows = read_caption_rows(out)
    v = Table(title="caption versions (agreement: the LLM's named changes against the keypoints)")
    for c in ("version", "pairs with it", "failed / not visible", "published", "agree", "contradict", "unchecked"):
        v.add_column(c, justify="left" if c == "version" else "right")
    v.add_row(OFFLINE_VERSION, str(len(samples)), "0", str(published.count(OFFLINE_VERSION)), "", "", "")
    for version, g in rows.groupby("caption_version", sort=True):
        ok_rows = g[g.status == CaptionStatus.OK].drop_duplicates("pair_id", keep="last")
        ok = set(ok_rows.pair_id)
        bad = set(g[g.status != CaptionStatus.OK].pair_id) - ok
        agreement = ok_rows.pose_agreement.fillna("not_checkable").value_counts()
        v.add_row(
            version,
            str(len(ok)),
            str(len(bad)),
            str(published.count(version)),
            *(str(int(agreement.get(k, 0))) for k in ("agree", "contradict", "not_checkable")),
        )
    console.print(v)
    if len(rows):
        r = Table(title="caption runs: requests, tokens and estimated cost")
        for c in ("run", "version", "requests", "cached", "tokens in", "tokens out", "cost USD", "failures"):
            r.add_column(c, justify="left" if c in ("run", "version", "failures") else "right")
        for (run, version), g in rows.groupby(["run_id", "caption_version"], sort=True):
            paid = g[~g.cached.fillna(False).astype(bool)]
            fails = g[g.status == CaptionStatus.FAILED].reason.value_counts()
            r.add_row(
                run,
                version,
                str(len(paid)),
                str(len(g) - len(paid)),
                str(int(paid.tokens_in.fillna(0).sum())),
                str(int(paid.tokens_out.fillna(0).sum())),
                f"{paid.cost_usd.fillna(0).sum():.4f}",
                ", ".join(f"{k} {n}" for k, n in fails.items()) or "-",
            )
        console.print(r)


def cmd_recaption(args: argparse.Namespace) -> int:
    from curation.captions.llm import CaptionSetupError
    from curation.config import ConfigError, load_config
    from curation.recaption import RecaptionError, recaption
    from curation.store import StoreError

    extra = _overrides(args)
    extra.setdefault("caption", {})["captioner"] = "openai"
    try:
        cfg = load_config(args.config, output=args.output, **extra)
        summary, run_id = recaption(args.output, cfg.caption, where=args.where, wait=_wait(args))
    except (ConfigError, CaptionSetupError, RecaptionError, StoreError) as e:
        return _fail(str(e))
    print(json.dumps({"run_id": run_id, **summary.__dict__}, indent=2))
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from curation.recaption import RecaptionError, publish
    from curation.store import StoreError

    try:
        agreement = "require" if args.require_agreement else "prefer" if args.prefer_agreement else "any"
        summary = publish(args.output, caption_version=args.caption_version, wait=_wait(args), agreement=agreement)
    except (RecaptionError, StoreError) as e:
        return _fail(str(e))
    print(json.dumps(summary, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from training.train import main as train_main

    return train_main(args)


def cmd_edit(args: argparse.Namespace) -> int:
    from training.edit import main as edit_main

    return edit_main(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import main as evaluate_main

    return evaluate_main(args)


def cmd_inspect(args: argparse.Namespace) -> int:
    from curation.store import Output, StoreError

    out = args.output.rstrip("/")
    try:
        Output.open(out).committed()
    except StoreError as e:
        return _fail(f"{out} holds no finished build ({e})")
    print_summary(out)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from curation.store import Output

    faults = Output.open(args.output).verify()
    for f in faults:
        print(f"FAULT {f}")
    if faults:
        print(f"motionpairs: {args.output}: {len(faults)} faults", file=sys.stderr)
        return 1
    print(f"{args.output}: every committed tar, manifest and record agrees; nothing left over")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from curation.store import Output, StoreError

    try:
        out = Output.open(args.output)
        if out.current() is None:
            return _fail(f"{args.output} holds no finished build")
        with out.lock("motionpairs gc", _wait(args)):  # cleans what a dead writer left first
            summary = out.gc(keep=args.keep)
    except StoreError as e:
        return _fail(str(e))
    print(json.dumps(summary, indent=2))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from curation.report.page import ReportError, write_report
    from curation.store import StoreError

    try:
        summary = write_report(args.output.rstrip("/"), max_pairs=args.max_pairs)
    except (ReportError, StoreError) as e:
        return _fail(str(e))
    note = " (no finished build: the page says so)" if summary["empty"] else ""
    print(f"{summary['path']}: {summary['pairs_shown']} of {summary['pairs']} pairs, {summary['pages']} pages{note}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """The build's decisions against a labelled list of its inputs: confusion table, accuracy, and the
    accepted pairs of clips labelled as rejects. Exit 0 (the figures are the result)."""
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from curation.report.labels import LabelError, check_labels, pair_precision, read_labels, read_pair_labels
    from curation.store import StoreError, committed
    from schemas.manifest import REJECTS_FILE, SAMPLES_FILE

    out = args.output.rstrip("/")
    try:
        labels = read_labels(args.labels)
        pair_labels = None
        for f in reversed(args.pair_labels or []):  # the first file named wins where two label a pair
            pair_labels = (pair_labels or {}) | read_pair_labels(f)
        gen = committed(out)
    except LabelError as e:
        return _fail(str(e))
    except StoreError as e:
        return _fail(f"{out} holds no finished build ({e})")
    samples = pd.read_parquet(gen.file_url(SAMPLES_FILE), columns=["uri", "clip_id", "pair_id", "caption"])
    rejects = pd.read_parquet(gen.file_url(REJECTS_FILE))
    result = check_labels(samples, rejects, labels, pair_labels)
    console = Console(width=None if sys.stdout.isatty() else 200)
    t = Table(title=f"decisions against {args.labels}")
    for c in ("expected", "got", "clips"):
        t.add_column(c, justify="right" if c == "clips" else "left")
    for (exp, got), n in sorted(result.confusion.items()):
        t.add_row(exp, got if exp == got else f"[red]{got}", str(n))
    console.print(t)
    for r in result.wrong:
        console.print(f"[red]WRONG[/red] {r['file']}: expected {r['expected']}, got {r['got']}  ({r['note']})")
        if r["got"].startswith("accept"):
            names = samples[samples.uri.map(lambda u: u.rstrip("/").rsplit("/", 1)[-1]) == r["file"]]
            for row in names.itertuples():
                console.print(f"    accepted pair {row.clip_id}/{row.pair_id}: {row.caption}")
    print(f"accuracy {result.accuracy:.3f} ({len(result.rows) - len(result.wrong)} of {len(result.rows)} labels hold)")
    doc: dict = {"accuracy": result.accuracy, "rows": result.rows}
    if pair_labels is not None:
        pp = pair_precision(samples, pair_labels)
        for d in pp["dropped"]:
            console.print(f"[red]DROP[/red] pair {d['clip_id']}/{d['pair_id']}: {d['why']}")
        precision = "n/a" if pp["precision"] is None else f"{pp['precision']:.3f}"
        print(
            f"pair precision {precision} ({pp['keep']} of {pp['labelled']} labelled accepted pairs kept; "
            f"{len(pp['unlabelled'])} of {pp['accepted']} accepted pairs unlabelled)"
        )
        doc["pairs"] = pp
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0


def cmd_demo_clip(args: argparse.Namespace) -> int:
    from curation.demo import write_demo_clip

    path = write_demo_clip(Path(args.folder))
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="motionpairs", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks for errors of the run")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build (or resume) a dataset of before/after motion pairs")
    b.add_argument("--input", help="folder of videos (searched recursively); same as --source folder --root DIR")
    b.add_argument(
        "--source",
        choices=("folder", "kinetics", "ntu", "epic"),
        default="folder",
        help="dataset kind of --root (several sources: list them under `sources:` in --config)",
    )
    b.add_argument("--root", help="the dataset's video folder")
    b.add_argument(
        "--annotations",
        action="append",
        metavar="FILE",
        help="annotation file, repeatable: Kinetics CSVs; NTU class TSV and missing-skeleton lists; EPIC CSVs",
    )
    b.add_argument(
        "--output", required=True, help="output folder or fsspec URL such as s3://bucket/prefix (shards/, *.parquet)"
    )
    b.add_argument("--config", help="YAML config file (see README); keys not known are an error")
    b.add_argument("--device", help="pose model device: auto (default), cpu, cuda, cuda:1")
    b.add_argument(
        "--pose-engine",
        choices=("auto", "torch", "openvino", "onnx", "tensorrt"),
        help="pose inference engine (default auto: OpenVINO on CPU, PyTorch on CUDA); exported once, cached",
    )
    b.add_argument(
        "--engine",
        choices=("prefect", "local"),
        default="prefect",
        help="prefect: run as the Prefect flow build_dataset (default; ephemeral API unless PREFECT_API_URL "
        "is set); local: the same steps in this process without Prefect",
    )
    b.add_argument("--captioner", choices=("offline", "openai"), help="default: offline (no network)")
    _add_wait_flag(b)
    _add_caption_flags(b)
    b.set_defaults(func=cmd_build)

    rc = sub.add_parser("recaption", help="caption a subset of a finished build again (appends a caption version)")
    rc.add_argument("output")
    rc.add_argument(
        "--where",
        help="SQL boolean expression over samples.parquet's columns (DuckDB; no file access), "
        "e.g. \"source = 'kinetics' and split = 'val' and pose_change > 0.5\"",
    )
    rc.add_argument("--config", help="YAML config; its caption section sets limits, prices, image size")
    _add_wait_flag(rc)
    _add_caption_flags(rc)
    rc.set_defaults(func=cmd_recaption)

    pb = sub.add_parser("publish", help="rewrite the shards with the chosen caption per sample (atomic swap)")
    pb.add_argument("output")
    pb.add_argument(
        "--caption-version",
        help="'<model>@<prompt version>' (its newest prompt text) or a full '<model>@v1-<hash>'; "
        "default: the newest usable caption",
    )
    agree = pb.add_mutually_exclusive_group()
    agree.add_argument(
        "--require-agreement",
        action="store_true",
        help="publish only LLM captions whose named changes agree with the keypoints (others keep the offline one)",
    )
    agree.add_argument(
        "--prefer-agreement", action="store_true", help="prefer agreeing captions, contradicting ones last"
    )
    _add_wait_flag(pb)
    pb.set_defaults(func=cmd_publish)

    v = sub.add_parser(
        "verify", help="check every committed tar (size, sha256, samples) and the manifests; exit 1 on a fault"
    )
    v.add_argument("output")
    v.set_defaults(func=cmd_verify)

    g = sub.add_parser("gc", help="delete old generations and the tars only they used (readers of them are done)")
    g.add_argument("output")
    g.add_argument("--keep", type=int, default=1, help="older generations to keep besides the current (default 1)")
    _add_wait_flag(g)
    g.set_defaults(func=cmd_gc)

    i = sub.add_parser("inspect", help="counts of a finished build: clips in, pairs out, rejects by reason")
    i.add_argument("output")
    i.set_defaults(func=cmd_inspect)

    rp = sub.add_parser(
        "report", help="write OUT/report/index.html: funnel, rejects with examples, gallery, histograms"
    )
    rp.add_argument("output")
    rp.add_argument("--max-pairs", type=int, default=3000, help="pairs drawn in the gallery at most (spread evenly)")
    rp.set_defaults(func=cmd_report)

    el = sub.add_parser("eval", help="a build's accept/reject decisions against a labelled list of its input files")
    el.add_argument("output")
    el.add_argument(
        "--labels",
        required=True,
        help="CSV: file, expected (accept|reject|ignored|avoid: pairs clear of a hazard, each labelled keep, or a "
        "reject), reasons (a|b), note",
    )
    el.add_argument(
        "--pair-labels",
        action="append",
        help="CSV: pair_id, keep (yes|no), why: pair precision of the accepted pairs (repeatable; the first wins)",
    )
    el.add_argument("--json", metavar="FILE", help="also write the per-file results as JSON")
    el.set_defaults(func=cmd_eval)

    from training.config import add_arguments as add_train_arguments
    from training.config import add_edit_arguments

    t = sub.add_parser("train", help="finetune an InstructPix2Pix editor on the shards (see training/train.py)")
    add_train_arguments(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("edit", help="run a trained checkpoint on an image and an instruction")
    add_edit_arguments(e)
    e.set_defaults(func=cmd_edit)

    from training.evaluate import add_arguments as add_evaluate_arguments

    ev = sub.add_parser("evaluate", help="score a checkpoint's edits of held-out pairs against the real after-frames")
    add_evaluate_arguments(ev)
    ev.set_defaults(func=cmd_evaluate)

    d = sub.add_parser("demo-clip", help="write the self-made demo clip (a moving astronaut) into FOLDER")
    d.add_argument("folder")
    d.set_defaults(func=cmd_demo_clip)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C in any command (publish, gc, recaption, ...): what is committed stands
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the exit (lock release) short
        print("motionpairs: stopped: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, read-only or vanished output: a problem of the run, one line
        if args.verbose:
            raise
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        return _fail(f"{e.strerror or type(e).__name__}{where}")


if __name__ == "__main__":
    sys.exit(main())
