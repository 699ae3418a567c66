"""Stream motionpairs shards with webdataset. Sample layout and validation come from schemas.shard:
nothing here parses a sample a second way. An output (folder or URL) is read through its committed
listing (curation.store): exactly the tars of its current generation, never a tar under construction
or superseded, each checked against its recorded size and sample count.

    from training.data import open_shards
    for s in open_shards("OUT"):             # an output folder, a glob, a brace pattern or a list
        s.before, s.after                    # HxWx3 uint8 RGB arrays
        s.pair.caption.text, s.pair.after_pose.keypoints
"""

from __future__ import annotations

import glob
import json
import logging
import multiprocessing
import os
from collections.abc import Iterable
from pathlib import Path

import fsspec
import torch
import webdataset as wds
from webdataset.gopen import gopen_schemes

from curation.store import StoreError, committed, current_generation
from curation.store.layout import is_remote
from schemas.shard import SIZES_FILE, ShardFormatError, ShardSample, decode_sample

log = logging.getLogger(__name__)


class ShardIntegrityError(RuntimeError):
    """A tar is shorter than its record, or yielded fewer samples than sizes.json says."""


# url -> (samples, bytes) from an output's committed listing (filled by shard_urls)
_RECORDED: dict[str, tuple[int, int]] = {}


def _committed_urls(text: str) -> list[str] | None:
    """The tars of an output's current generation, or None when `text` is not an output."""
    try:
        if current_generation(text) is None:
            return None
        c = committed(text)
    except (StoreError, OSError):
        return None
    for e in c.shards:
        _RECORDED[e.url] = (e.samples, e.bytes)
    if not c.shards:
        raise FileNotFoundError(f"{text}: its current generation ({c.generation}) holds no shards")
    return [e.url for e in c.shards]


def _fsspec_opener(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
    return fsspec.open(url, mode).open()


def _register(url: str) -> None:
    """Let webdataset open this URL's protocol (s3://, gs://, ...) through fsspec."""
    protocol = fsspec.core.split_protocol(url)[0]
    if protocol and protocol not in gopen_schemes:
        gopen_schemes[protocol] = _fsspec_opener


def _remote_urls(text: str) -> list[str]:
    """A glob or a single tar at an fsspec URL (an output is read through its listing instead)."""
    fs, root = fsspec.core.url_to_fs(text)
    protocol = fsspec.core.split_protocol(text)[0]
    if not (root.endswith(".tar") or any(c in root for c in "*?[")):
        raise FileNotFoundError(f"{text} holds no committed build (and is not a tar or a glob)")
    urls = sorted(f"{protocol}://{p}" for p in fs.glob(root))
    if not urls:
        raise FileNotFoundError(f"no shards match {text}")
    return urls


def shard_urls(spec: str | os.PathLike | Iterable[str]) -> list[str]:
    """An output (its committed listing: the current generation's tars), a folder of tars, a glob, a
    brace pattern ("a-{0000..0009}.tar") or a list; local, or at any fsspec URL (s3://bucket/out)."""
    if not isinstance(spec, (str, os.PathLike)):
        return [str(s) for s in spec]
    text = str(spec).rstrip("/")
    if "{" not in text and not any(ch in text for ch in "*?["):
        urls = _committed_urls(text)
        if urls is not None:
            return urls
    if is_remote(text) and "{" not in text:
        return _remote_urls(text)
    p = Path(text)
    if p.is_dir():
        if (p / "shards").exists():  # an output: only its committed listing is read
            raise FileNotFoundError(f"{text} holds no committed build")
        urls = sorted(str(x) for x in p.glob("*.tar"))  # a plain folder of tars
        if not urls:
            raise FileNotFoundError(f"no .tar shards in {p}")
        return urls
    if any(ch in text for ch in "*?["):
        urls = sorted(glob.glob(text))
        if not urls:
            raise FileNotFoundError(f"no shards match {text}")
        return urls
    if "{" in text:
        import braceexpand

        return list(braceexpand.braceexpand(text))
    return [text]


def dataset_size(urls: list[str]) -> int | None:
    """Sample count from the committed listing, else the sizes.json beside the shards (None when they do
    not cover them all)."""
    expected = _expected(urls)
    if any(u not in expected for u in urls):
        return None
    return sum(expected[u][0] for u in urls)


class SkipCounter:
    """webdataset handler that skips a bad sample or shard, logs it, and counts it. The count lives in
    shared memory, so skips inside DataLoader worker processes count in the training process too."""

    def __init__(self) -> None:
        self._count = multiprocessing.Value("q", 0)
        self.last = ""  # the last error seen in this process

    @property
    def count(self) -> int:
        return int(self._count.value)

    def __call__(self, exn: Exception) -> bool:
        with self._count.get_lock():
            self._count.value += 1
            n = self._count.value
        self.last = f"{type(exn).__name__}: {str(exn)[:300]}"
        log.warning("skipped bad sample #%d: %s", n, self.last)
        return True  # keep going


def decode_image(data: bytes, device: str = "cpu") -> torch.Tensor:
    """JPEG bytes -> 3 x H x W uint8 tensor (torchvision's libjpeg decoder; nvjpeg on a CUDA device)."""
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg

    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    with warnings.catch_warnings():  # torchvision 0.29 points at TorchCodec; its decoder is the one asked for
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(raw, mode=ImageReadMode.RGB, device=device)


class Decode:
    """Raw webdataset sample -> validated ShardSample with decoded images: H x W x 3 uint8 arrays, or
    with `tensors` 3 x H x W uint8 tensors (on `device`), what the training transforms take as they are."""

    def __init__(self, tensors: bool = False, device: str = "cpu"):
        self.tensors = tensors
        self.device = device

    def __call__(self, sample: dict) -> ShardSample:
        s = decode_sample(sample)
        try:
            before, after = decode_image(s.before, self.device), decode_image(s.after, self.device)
        except Exception as e:
            raise ShardFormatError(f"sample {s.key!r}: image does not decode: {e}") from e
        if self.tensors:
            s.before, s.after = before, after
        else:
            s.before, s.after = before.permute(1, 2, 0).cpu().numpy(), after.permute(1, 2, 0).cpu().numpy()
        return s


decode = Decode()


def validate_only(sample: dict) -> ShardSample:
    """Raw sample -> validated ShardSample, images left as JPEG bytes."""
    return decode_sample(sample)


def _expected(urls: list[str]) -> dict[str, tuple[int, int | None]]:
    """url -> (samples, bytes or None): from the committed listing, else sizes.json beside the tars."""
    out: dict[str, tuple[int, int | None]] = {}
    sizes_cache: dict[str, dict[str, int]] = {}
    for u in urls:
        if u in _RECORDED:
            out[u] = _RECORDED[u]
            continue
        d = u.rsplit("/", 1)[0]
        if d not in sizes_cache:
            try:
                with fsspec.open(f"{d}/{SIZES_FILE}", "rb") as f:
                    sizes_cache[d] = json.loads(f.read())
            except (FileNotFoundError, OSError, json.JSONDecodeError):
                sizes_cache[d] = {}
        n = sizes_cache[d].get(os.path.basename(u))
        if n is not None:
            out[u] = (n, None)
    return out


def _complain(policy: str, msg: str) -> None:
    if policy == "raise":
        raise ShardIntegrityError(msg)
    log.warning("SHARD INTEGRITY: %s", msg)


def check_sizes(urls: list[str], policy: str = "raise") -> None:
    """Each tar against its recorded byte size (a stat, or a HEAD on object stores)."""
    for u in urls:
        rec = _RECORDED.get(u)
        if rec is None:
            continue
        fs, path = fsspec.core.url_to_fs(u)
        try:
            size = fs.size(path)
        except FileNotFoundError:
            _complain(policy, f"{u}: missing (recorded {rec[1]} bytes, {rec[0]} samples)")
            continue
        if size != rec[1]:
            _complain(policy, f"{u}: {size} bytes, recorded {rec[1]} (truncated or replaced)")


def _count_stage(expected: dict[str, tuple[int, int | None]], policy: str):
    """A pipeline stage that counts samples per tar and complains when a tar yields fewer than recorded
    (a tar cut at a member boundary reads back cleanly, just short)."""

    def finish(url: str, n: int) -> None:
        want = expected.get(url, (None, None))[0]
        if want is not None and n < want:
            _complain(policy, f"{url}: yielded {n} samples, sizes.json says {want}")

    def stage(src):
        url, n = None, 0
        for sample in src:
            u = sample.get("__url__")
            if u != url:
                if url is not None:
                    finish(url, n)
                url, n = u, 0
            n += 1
            yield sample
        if url is not None:
            finish(url, n)

    return stage


def open_shards(
    spec: str | os.PathLike | Iterable[str],
    *,
    shuffle: int = 0,
    resampled: bool = False,
    decode_images: bool = True,
    skip_bad: SkipCounter | None = None,
    seed: int = 0,
    integrity: str | None = None,
    skip_batches: int = 0,
    batch_size: int = 1,
    image_tensors: bool = False,
    decode_device: str = "cpu",
) -> wds.WebDataset:
    """A webdataset pipeline of ShardSamples. `shuffle` > 0 shuffles shards and a buffer of that many
    samples; `resampled` draws shards with replacement (endless). Shards are split across nodes and
    DataLoader workers. With `skip_bad`, bad samples (and unreadable shards) are counted and skipped;
    without it the first bad sample raises. `integrity` ("raise" or "warn"; default: raise, or warn
    with `skip_bad`): what a tar shorter than its record, or one yielding fewer samples than recorded,
    does; never fewer samples in silence. `skip_batches` of `batch_size` (a resumed run) are dropped in
    each DataLoader worker before their images are decoded: worker w of W skips the batches k < n with
    k % W == w, as the DataLoader takes batches from its workers in turn. `image_tensors`: images as
    3 x H x W uint8 tensors (decoded on `decode_device`) instead of arrays."""
    policy = integrity or ("warn" if skip_bad is not None else "raise")
    if policy not in ("raise", "warn"):
        raise ValueError(f"integrity must be 'raise' or 'warn', not {policy!r}")
    urls = shard_urls(spec)
    check_sizes(urls, policy)
    expected = _expected(urls)
    for u in urls:
        _register(u)
    handler = skip_bad if skip_bad is not None else wds.reraise_exception
    ds = wds.WebDataset(
        urls,
        shardshuffle=(100 if shuffle else False) if not resampled else True,
        detshuffle=bool(shuffle),
        resampled=resampled,
        nodesplitter=wds.split_by_node,
        workersplitter=wds.split_by_worker,
        handler=handler,
        seed=seed,
        empty_check=False,
    )
    if not resampled:
        ds = ds.compose(_count_stage(expected, policy))
    if shuffle:
        ds = ds.shuffle(shuffle, seed=seed)
    if skip_batches:
        ds = ds.compose(_skip_stage(skip_batches, batch_size))
    fn = Decode(image_tensors, decode_device) if decode_images else validate_only
    return ds.map(fn, handler=handler)


def _skip_stage(batches: int, batch_size: int):
    def stage(src):
        info = torch.utils.data.get_worker_info()
        w, n = (info.id, info.num_workers) if info is not None else (0, 1)
        drop = len(range(w, batches, n)) * batch_size
        for i, sample in enumerate(src):
            if i >= drop:
                yield sample

    return stage
