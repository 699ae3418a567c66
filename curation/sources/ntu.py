"""NTU RGB+D 60/120: SsssCcccPpppRrrrAaaa names, 120 classes, standard splits, optional Kinect skeletons.

Files are `<name>_rgb.avi` anywhere under the root; a `<name>.skeleton` beside them (anywhere under
the root) adds the Kinect pose as a reference pose. Two-person (mutual) actions are skipped unless
`include_mutual`; the official missing-skeleton lists mark samples whose skeleton is unusable.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from schemas.records import KP, Clip, Pose17, RejectReason

from .base import (
    VIDEO_EXTENSIONS,
    Listing,
    RealPaths,
    SourceError,
    SourceSettings,
    check_root,
    index_videos,
    ingest_reject,
)

NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")
MUTUAL_DEFAULT = set(range(50, 61)) | set(range(106, 121))  # from the official README
# the standard evaluation protocols (Shahroudy et al. 2016; Liu et al. 2019)
XSUB60_TRAIN = {1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38}
XSUB120_TRAIN = XSUB60_TRAIN | {
    45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86, 89,
    91, 92, 93, 94, 95, 97, 98, 100, 103,
}  # fmt: skip


NTUProtocol = Literal["cross_subject", "cross_setup", "cross_view"]


class NTUSource(SourceSettings):
    kind: Literal["ntu"]
    annotations: list[str] = Field(
        default_factory=list,
        description="ntu120_action_classes.tsv (names, mutual flags) and the official missing-skeleton lists",
    )
    protocol: NTUProtocol = "cross_subject"
    include_mutual: bool = Field(False, description="two-person actions (A050-A060, A106-A120) are skipped unless set")
    licence: str | None = "NTU RGB+D: ROSE Lab release agreement, research and non-commercial use"

    def listing(self) -> Listing:
        return list_ntu(self)


@dataclass(frozen=True)
class NTUName:
    setup: int
    camera: int
    performer: int
    replication: int
    action: int

    @property
    def name(self) -> str:
        return f"S{self.setup:03d}C{self.camera:03d}P{self.performer:03d}R{self.replication:03d}A{self.action:03d}"


def parse_name(text: str) -> NTUName | None:
    m = NAME.search(text)
    return NTUName(*(int(g) for g in m.groups())) if m else None


def split_for(n: NTUName, protocol: str) -> str:
    if protocol == "cross_subject":
        return "train" if n.performer in XSUB120_TRAIN else "test"
    if protocol == "cross_setup":
        return "train" if n.setup % 2 == 0 else "test"
    return "train" if n.camera in (2, 3) else "test"  # cross_view (NTU60): camera 1 is the test view


@dataclass
class Annotations:
    labels: dict[int, str]
    mutual: set[int]
    missing_skeletons: set[str]


def read_annotations(files: list[str]) -> Annotations:
    """Recognises each file by content: the class TSV (action_id, label, in_ntu60, mutual_two_person)
    or an official missing-skeleton list (prose lines, then one sample name per line, CRLF)."""
    labels: dict[int, str] = {}
    mutual: set[int] = set()
    missing: set[str] = set()
    have_classes = False
    for f in files:
        p = Path(f).expanduser()
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise SourceError(f"cannot read {p}: {e.strerror}") from e
        first = text.splitlines()[0] if text else ""
        if first.startswith("action_id"):
            have_classes = True
            for row in csv.DictReader(text.splitlines(), delimiter="\t"):
                a = int(row["action_id"].lstrip("A"))
                labels[a] = row["label"].strip()
                if row.get("mutual_two_person", "0").strip() == "1":
                    mutual.add(a)
        else:
            names = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("S")]
            if not names or not all(NAME.fullmatch(n) for n in names):
                raise SourceError(f"{p} is neither ntu120_action_classes.tsv nor a missing-skeleton list")
            missing.update(names)
    return Annotations(labels=labels, mutual=mutual if have_classes else set(MUTUAL_DEFAULT), missing_skeletons=missing)


def list_ntu(cfg: NTUSource) -> Listing:
    root = check_root(cfg.root)
    ann = read_annotations(cfg.annotations)
    by_stem, other = index_videos(root, VIDEO_EXTENSIONS)
    skeletons = {Path(o).stem: root / o for o in other if o.endswith(".skeleton")}
    real = RealPaths()
    out = Listing(clips=[])
    for stem, paths in sorted(by_stem.items()):
        n = parse_name(stem)
        if n is None:
            out.unlisted += [str(p.relative_to(root)) for p in paths]
            continue
        uri = real(paths[0])
        if n.action in ann.mutual and not cfg.include_mutual:
            detail = f"A{n.action:03d} ({ann.labels.get(n.action, 'two-person action')}) is a mutual action"
            known = {"label": ann.labels.get(n.action), "split": split_for(n, cfg.protocol)}
            known["extra"] = {k: getattr(n, k) for k in ("setup", "camera", "performer", "replication", "action")}
            out.rejects.append(ingest_reject("ntu", n.name, uri, RejectReason.EXCLUDED, detail, **known))
            continue
        extra: dict[str, str | int | bool | None] = {
            "setup": n.setup,
            "camera": n.camera,
            "performer": n.performer,
            "replication": n.replication,
            "action": n.action,
            "mutual": n.action in ann.mutual,
            "skeleton_missing": n.name in ann.missing_skeletons,
        }
        if n.name in skeletons and n.name not in ann.missing_skeletons:
            extra["skeleton"] = real(skeletons[n.name])
        out.clips.append(
            Clip(
                source="ntu",
                clip_id=n.name,
                uri=uri,
                label=ann.labels.get(n.action),
                split=split_for(n, cfg.protocol),
                licence=cfg.licence,
                # the three cameras film one performance at once: they are one source video
                video_id=f"S{n.setup:03d}P{n.performer:03d}R{n.replication:03d}A{n.action:03d}",
                extra=extra,
            )
        )
    return out


# ---------------------------------------------------------------- .skeleton files

# Kinect v2 joints (1-indexed in the file) that have a COCO-17 counterpart; the subject's own left/right
KINECT_TO_COCO = {
    5: "left_shoulder",
    6: "left_elbow",
    7: "left_wrist",
    9: "right_shoulder",
    10: "right_elbow",
    11: "right_wrist",
    13: "left_hip",
    14: "left_knee",
    15: "left_ankle",
    17: "right_hip",
    18: "right_knee",
    19: "right_ankle",
}
TRACKING_CONF = {0: 0.0, 1: 0.5, 2: 1.0}  # not tracked / inferred / tracked


@dataclass
class Body:
    body_id: str
    color_xy: np.ndarray  # (25, 2) pixels in the 1920x1080 RGB frame
    tracking: np.ndarray  # (25,) 0 / 1 / 2


def read_skeleton(path: str | Path) -> list[list[Body]]:
    """Frames of bodies from the documented text format (Matlab/read_skeleton_file.m)."""
    tokens = Path(path).read_text().split("\n")
    lines = iter(ln.strip() for ln in tokens if ln.strip())
    try:
        frames: list[list[Body]] = []
        for _ in range(int(next(lines))):
            bodies = []
            for _ in range(int(next(lines))):
                body_id = next(lines).split()[0]
                n_joints = int(next(lines))
                xy = np.zeros((n_joints, 2))
                track = np.zeros(n_joints, dtype=int)
                for j in range(n_joints):
                    v = next(lines).split()
                    xy[j] = float(v[5]), float(v[6])
                    track[j] = int(v[11])
                bodies.append(Body(body_id, xy, track))
            frames.append(bodies)
    except (StopIteration, ValueError, IndexError) as e:
        raise ValueError(f"{path}: not a valid .skeleton file ({type(e).__name__})") from e
    return frames


def reference_pose(
    frames: list[list[Body]], index: int, width: int, height: int, sx: float, sy: float
) -> Pose17 | None:
    """The main body of skeleton frame `index` as a COCO-17 pose (uncovered joints NaN, confidence 0),
    scaled from colour-camera pixels to the stored frame by (sx, sy)."""
    if not 0 <= index < len(frames) or not frames[index]:
        return None
    body = max(frames[index], key=lambda b: int((b.tracking > 0).sum()))
    kps = [[math.nan, math.nan, 0.0] for _ in range(17)]
    for kinect, name in KINECT_TO_COCO.items():
        x, y = body.color_xy[kinect - 1]
        kps[KP[name]] = [float(x * sx), float(y * sy), TRACKING_CONF.get(int(body.tracking[kinect - 1]), 0.0)]
    pts = np.array([k[:2] for k in kps if k[2] > 0])
    if len(pts) == 0:
        return None
    box = [float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())]
    return Pose17(keypoints=kps, frame_width=width, frame_height=height, box=box, score=1.0)
