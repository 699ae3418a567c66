"""motionpairs: before/after motion pairs for instruction-based image editors, from videos of people.
Commands: build, inspect, report, eval, verify, gc, recaption, publish, train, evaluate, edit, demo-clip,
config-reference (each has --help).

Argument parsing and printing only: each command calls one function of curation/ or training/. A
problem of the run (curation.errors.RunError) is one line on stderr and exit 2. The light modules
(settings, sources, argument definitions) are imported at the top; each command imports its heavy
module itself (the store loads torch through webdataset, the build ultralytics, `--engine prefect`
Prefect and Dask, train/edit/evaluate diffusers: seconds each), so `--help` and a bad flag answer at
once and a command pays only for what it runs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from curation import configref
from curation.config import ConfigError, load_config
from curation.errors import RunError
from curation.sources import SOURCES, check_root, source_flags
from flows.server import EphemeralAPI  # standard library only: --help stays quick
from training.config import add_arguments as add_train_arguments
from training.config import add_edit_arguments, add_evaluate_arguments

# Offline-safe defaults, set before prefect or ultralytics are imported (user settings win).
for _k, _v in {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "curation",  # curation's logs appear in the flow run's logs
    # the model set-up's lines, logged before the flow run starts (curation.build.PlanAhead), reach the
    # console only: not a warning that they have no flow run to go to
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "false",
}.items():
    os.environ.setdefault(_k, _v)

log = logging.getLogger("motionpairs")


def _fail(msg: str) -> int:
    _stop_workers()  # decode workers still starting would print a traceback when this process is gone
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


def _add_wait_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=0,
        metavar="SECONDS",
        help="when another writer holds the output, wait (SECONDS, or as long as it takes) instead of exiting 2",
    )


def _stop_on_signals(stop) -> None:
    """SIGTERM/SIGINT: set `stop` (the build's: finish nothing new, stop at the next unit boundary;
    committed units stand). A second signal stops at once."""

    def handler(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("motionpairs: stopping after the current unit (again to stop now)", file=sys.stderr)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def cmd_build(args: argparse.Namespace) -> int:
    sources = source_flags(args.input, args.source, args.root, args.annotations)
    cfg = load_config(args.config, output=args.output, **_overrides(args), **({"sources": sources} if sources else {}))
    if not cfg.sources:
        raise ConfigError("no input: pass --input DIR or list sources in --config")
    for s in cfg.sources:
        check_root(s.root)  # a missing input is an error before the output is touched
    # the Prefect engine's API starts now, in its own process (seconds), while this one imports and sets up
    api = EphemeralAPI().start() if args.engine != "local" else None
    try:
        from curation.build import STOP, BuildStopped, build_with_progress, writer_lock

        console = Console(stderr=True)
        _stop_on_signals(STOP)
        try:
            on_wait = api.stop if api is not None else None  # waiting for another writer: no idle API meanwhile
            with writer_lock(cfg, "motionpairs build", _wait(args), on_wait), _progress(console) as progress:
                if args.engine == "local":
                    stats = build_with_progress(cfg, progress)
                else:
                    from flows.build import build_on_prefect

                    stats = build_on_prefect(cfg, progress, api=api)
        except BuildStopped as e:
            _stop_workers()  # decoding the next unit's clips ahead, for nothing now: the exit would wait for it
            print(f"motionpairs: stopped: {e}", file=sys.stderr)
            return 130
    finally:
        if api is not None:
            api.stop()  # stopped already after a flow run; here when the run ended before it
    print_summary(cfg.output, console)
    return 0 if not stats["unaccounted_clips"] else 1


class _progress:
    """The build's progress bar (clips done, elapsed, ETA), shown from `plan(plan)` (the work about to
    run, once every check that can stop the run has passed); `clip(result)` advances it."""

    def __init__(self, console: Console):
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[last]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )

        self.started = False

    def __enter__(self) -> _progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.started:
            self.bar.__exit__(*exc)

    def plan(self, plan) -> None:
        self.bar.__enter__()
        self.started = True
        self.task = self.bar.add_task("clips", total=plan.pending_clips, last="")

    def clip(self, res) -> None:
        note = f"{len(res.pairs)} pairs" if res.accepted else res.rejects[-1].reason.value
        self.bar.update(self.task, advance=1, last=f"{res.clip.clip_id[:40]}: {note}")


def print_summary(out: Path | str, console: Console | None = None) -> None:
    """Counts, rejects by stage and reason, pairs by source, caption versions and timings of a build."""
    from curation.report.summary import COUNTS, build_summary

    console = console or Console(width=None if sys.stdout.isatty() else 200)  # a pipe: no wrapped cells
    s = build_summary(out)
    t = Table(title=f"motionpairs build: {out}", caption=f"generation {s.generation}, {s.tars} tars")
    t.add_column("what")
    t.add_column("count", justify="right")
    for k in COUNTS:
        t.add_row(k.replace("_", " "), str(s.stats[k]))
    t.add_row("shard MB", f"{s.stats['shard_bytes'] / 1e6:.1f}")
    if s.stats.get("unaccounted_clips"):
        t.add_row("[red]unaccounted clips", str(len(s.stats["unaccounted_clips"])))
    console.print(t)
    _table(console, "rejected clips by stage and reason", ("stage", "reason", "clips", "examples"),
           [(st, r, str(n), ", ".join(ex)) for st, r, n, ex in s.rejected], right=("clips",))  # fmt: skip
    _table(console, "pairs by source (first captions)", ("source", "clips", "pairs", "example caption"),
           [(src, str(c), str(n), cap) for src, c, n, cap in s.by_source])  # fmt: skip
    if s.caption_versions:
        _table(
            console,
            "caption versions (agreement: the LLM's named changes against the keypoints)",
            ("version", "pairs with it", "failed / not visible", "published", "agree", "contradict", "unchecked"),
            s.caption_versions,
            left=("version",),
        )
    _table(
        console,
        "caption runs: requests, tokens and estimated cost",
        ("run", "version", "requests", "cached", "tokens in", "tokens out", "cost USD", "failures"),
        s.caption_runs,
        left=("run", "version", "failures"),
    )
    secs = s.stats.get("seconds", {})
    if secs:
        timings = ", ".join(f"{k} {v}" for k, v in secs.items())
        console.print(f"time (s): {timings}; frames decoded {s.stats['frames_decoded']}")


def _table(console, title, columns, rows, right=(), left=None) -> None:
    """A rich table of `rows` (nothing when there are none); `left`: the only left-aligned columns."""
    if not rows:
        return
    t = Table(title=title)
    for c in columns:
        align = ("left" if c in left else "right") if left is not None else ("right" if c in right else "left")
        t.add_column(c, justify=align)
    for row in rows:
        t.add_row(*row)
    console.print(t)


def cmd_recaption(args: argparse.Namespace) -> int:
    from curation.captions.recaption import recaption

    extra = _overrides(args)
    extra.setdefault("caption", {})["captioner"] = "openai"
    cfg = load_config(args.config, output=args.output, **extra)
    summary, run_id = recaption(args.output, cfg.caption, where=args.where, wait=_wait(args))
    print(json.dumps({"run_id": run_id, **summary.__dict__}, indent=2))
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from curation.captions.recaption import publish

    agreement = "require" if args.require_agreement else "prefer" if args.prefer_agreement else "any"
    summary = publish(args.output, caption_version=args.caption_version, wait=_wait(args), agreement=agreement)
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
    print_summary(args.output.rstrip("/"))
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
    from curation.generation import collect_garbage

    print(json.dumps(collect_garbage(args.output, keep=args.keep, wait=_wait(args)), indent=2))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from curation.report.page import write_report

    summary = write_report(args.output.rstrip("/"), max_pairs=args.max_pairs)
    note = " (no finished build: the page says so)" if summary["empty"] else ""
    print(f"{summary['path']}: {summary['pairs_shown']} of {summary['pairs']} pairs, {summary['pages']} pages{note}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """The build's decisions against a labelled list of its inputs: confusion table, accuracy, and the
    accepted pairs of clips labelled as rejects. Exit 0 (the figures are the result)."""
    from curation.report.summary import evaluate_labels

    ev = evaluate_labels(args.output.rstrip("/"), args.labels, args.pair_labels)
    result = ev.result
    console = Console(width=None if sys.stdout.isatty() else 200)
    rows = [(exp, got if exp == got else f"[red]{got}", str(n)) for (exp, got), n in sorted(result.confusion.items())]
    _table(console, f"decisions against {args.labels}", ("expected", "got", "clips"), rows, right=("clips",))
    for r in result.wrong:
        console.print(f"[red]WRONG[/red] {r['file']}: expected {r['expected']}, got {r['got']}  ({r['note']})")
        if r["got"].startswith("accept"):
            for clip_id, pair_id, caption in ev.accepted.get(r["file"], []):
                console.print(f"    accepted pair {clip_id}/{pair_id}: {caption}")
    print(f"accuracy {result.accuracy:.3f} ({len(result.rows) - len(result.wrong)} of {len(result.rows)} labels hold)")
    if ev.pairs is not None:
        pp = ev.pairs
        for d in pp["dropped"]:
            console.print(f"[red]DROP[/red] pair {d['clip_id']}/{d['pair_id']}: {d['why']}")
        precision = "n/a" if pp["precision"] is None else f"{pp['precision']:.3f}"
        print(
            f"pair precision {precision} ({pp['keep']} of {pp['labelled']} labelled accepted pairs kept; "
            f"{len(pp['unlabelled'])} of {pp['accepted']} accepted pairs unlabelled)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(ev.as_json(), indent=2))
    return 0


def cmd_demo_clip(args: argparse.Namespace) -> int:
    from curation.demo import write_demo_clip

    print(write_demo_clip(Path(args.folder)))
    return 0


def cmd_config_reference(args: argparse.Namespace) -> int:
    return configref.main((["--check"] if args.check else []) + ([f"--write={args.write}"] if args.write else []))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="motionpairs", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks for errors of the run")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build (or resume) a dataset of before/after motion pairs")
    b.add_argument("--input", help="folder of videos (searched recursively); same as --source folder --root DIR")
    b.add_argument(
        "--source",
        choices=tuple(SOURCES),
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

    t = sub.add_parser("train", help="finetune an InstructPix2Pix editor on the shards (see training/train.py)")
    add_train_arguments(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("edit", help="run a trained checkpoint on an image and an instruction")
    add_edit_arguments(e)
    e.set_defaults(func=cmd_edit)

    ev = sub.add_parser("evaluate", help="score a checkpoint's edits of held-out pairs against the real after-frames")
    add_evaluate_arguments(ev)
    ev.set_defaults(func=cmd_evaluate)

    d = sub.add_parser("demo-clip", help="write the self-made demo clip (a moving astronaut) into FOLDER")
    d.add_argument("folder")
    d.set_defaults(func=cmd_demo_clip)

    cr = sub.add_parser("config-reference", help="print docs/configuration.md, made from the settings' descriptions")
    cr.add_argument("--write", metavar="PATH", help="write it to PATH instead")
    cr.add_argument("--check", action="store_true", help="exit 1 when docs/configuration.md is not current")
    cr.set_defaults(func=cmd_config_reference)
    return p


def _stop_workers() -> None:
    """Stop this process's worker processes now: a stopped build's decode workers (they ignore Ctrl-C)
    would otherwise finish the clip in hand, a long one for minutes, before the exit could join them."""
    import multiprocessing

    for child in multiprocessing.active_children():
        child.terminate()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except RunError as e:  # a problem of the run itself (bad config, unreadable source, locked output, ...)
        if args.verbose:
            raise
        return _fail(str(e))
    except KeyboardInterrupt:  # Ctrl-C in any command (publish, gc, recaption, ...): what is committed stands
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the exit (lock release) short
        _stop_workers()
        print("motionpairs: stopped: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, read-only or vanished output: a problem of the run, one line
        if args.verbose:
            raise
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        return _fail(f"{e.strerror or type(e).__name__}{where}")


if __name__ == "__main__":
    sys.exit(main())
