"""``ouro filter``: keep or drop each rendered object, with the reasons, and write the kept list.

Reads a render folder written by ``ouro render`` (``<uid>/meta.json`` + frames, ``failures.jsonl``)
and judges every object on

* metadata, where present (``meta.json`` ``source.annotations`` from the Objaverse cache, or an
  ``annotations`` file/folder in the Objaverse metadata layout ``{uid: annotation}``): licence
  allow-list, face count (``faceCount``, else the renderer's ``mesh.faces``), animation
  (``animationCount`` > 0, else ``mesh.animated``);
* the scene the renderer saw (``meta.json`` ``mesh``): texture-less = no loaded image texture, no
  varying vertex colours and at most one material colour (missing texture files count as none);
* the renders: missing or unreadable frames; empty or tiny alpha (mean foreground fraction per
  frame below ``min_alpha``); clipped (foreground on the 1-pixel image border, worst frame, above
  ``max_border_alpha``); near-constant colour (mean per-frame standard deviation of the foreground
  RGB, 0-1 scale, below ``min_color_std``);
* failures: uids in ``failures.jsonl`` with no finished folder are reported as dropped.

Outputs: the kept uids, one per line, sorted (``ouro train --kept``), and a CSV report with one row
per object: ``uid, keep, reasons, frames, alpha_mean, border_max, color_std, faces, license,
animated, image_textures``. Foreground = alpha > 0.5.

Held-out split (``--holdout``): an object is held out when a salted SHA-256 of its **mesh hash**
(``meta.json`` ``source.sha256``, the hash of the file that was rendered; the uid where it is
missing) falls in the lowest ``fraction`` of the hash range. Copies of one mesh under different
uids therefore land on the same side, and the split of an object never changes when objects are
added or removed.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ouro.data.ids import is_safe_id
from ouro.io.files import atomic_write, write_text_atomic

__all__ = [
    "FilterSettings",
    "ObjectReport",
    "filter_renders",
    "find_objects",
    "holdout_uids",
    "judge_object",
    "load_annotations",
    "read_failures",
    "unsafe_folders",
    "write_kept",
    "write_report",
    "write_uids",
]

REPORT_COLUMNS = ("uid", "keep", "reasons", "frames", "alpha_mean", "border_max", "color_std", "faces", "license",
                  "animated", "image_textures")


@dataclass(frozen=True)
class FilterSettings:
    """Thresholds; ``None`` or 0 switches a metadata rule off.

    Attributes:
        min_alpha: drop if the mean foreground fraction per frame is below this.
        min_color_std: drop if the foreground colour standard deviation (0-1) is below this.
        max_border_alpha: drop if, in the worst frame, this fraction of the border pixels is foreground.
        licenses: licence allow-list (Objaverse slugs such as ``by``, ``by-sa``, ``cc0``), applied
            where the metadata has a licence; None = any licence.
        max_faces: drop objects with more faces; None or 0 = no limit.
        drop_animated: drop objects with animations.
        drop_untextured: drop objects with no image texture, no vertex colours and one colour.
    """

    min_alpha: float = 0.01
    min_color_std: float = 0.02
    max_border_alpha: float = 0.01
    licenses: tuple[str, ...] | None = None
    max_faces: int | None = 1_000_000
    drop_animated: bool = True
    drop_untextured: bool = True


@dataclass
class ObjectReport:
    """The verdict on one object (``reasons`` empty when kept)."""

    uid: str
    keep: bool
    reasons: list[str] = field(default_factory=list)
    frames: int = 0
    alpha_mean: float | None = None
    border_max: float | None = None
    color_std: float | None = None
    faces: int | None = None
    license: str | None = None
    animated: bool | None = None
    image_textures: int | None = None

    def row(self) -> dict:
        data = asdict(self)
        data["keep"] = int(self.keep)
        data["reasons"] = "; ".join(self.reasons) if self.reasons else "ok"
        for key in ("alpha_mean", "border_max", "color_std"):
            if data[key] is not None:
                data[key] = f"{data[key]:.5f}"
        return {k: ("" if data[k] is None else data[k]) for k in REPORT_COLUMNS}


# -- inputs -------------------------------------------------------------------------------------
def find_objects(render_dir: Path) -> list[Path]:
    """Finished object folders (``<uid>/meta.json``), sorted by uid; names that are not valid uids
    (:func:`ouro.data.ids.is_safe_id`) are left out (:func:`unsafe_folders` lists them)."""
    return sorted(p for p in Path(render_dir).iterdir()
                  if p.is_dir() and is_safe_id(p.name) and (p / "meta.json").is_file())


def unsafe_folders(render_dir: Path) -> list[str]:
    """Names of object folders (with a meta.json) that are not valid uids, so cannot be trained on."""
    return sorted(p.name for p in Path(render_dir).iterdir()
                  if p.is_dir() and not p.name.startswith(".") and not is_safe_id(p.name) and (p / "meta.json").is_file())


def read_failures(render_dir: Path) -> dict[str, str]:
    """``{uid: last reason}`` from ``failures.jsonl`` (malformed lines are ignored)."""
    path = Path(render_dir) / "failures.jsonl"
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("uid"), str):
            out[record["uid"]] = str(record.get("reason", "unknown"))
    return out


def load_annotations(path: Path) -> dict[str, dict]:
    """Objaverse annotations ``{uid: record}`` from a ``.json``/``.json.gz`` file or a folder of them.

    The layout of the objaverse cache's ``metadata/000-XXX.json.gz`` shards.
    """
    from ouro.data.objaverse import summarize_annotation

    path = Path(path)
    files = sorted(path.glob("*.json*")) if path.is_dir() else [path]
    out: dict[str, dict] = {}
    for file in files:
        opener = gzip.open if file.name.endswith(".gz") else open
        with opener(file, "rt", encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise ValueError(f"{file}: expected a JSON object {{uid: annotation}}")
        out.update({k: summarize_annotation(v) for k, v in data.items() if isinstance(v, dict)})
    return out


def _frame_paths(folder: Path, meta: dict) -> list[tuple[str, Path | None]]:
    """``(name, path)`` of every RGBA frame meta.json lists; path None if it points outside the folder."""
    root = folder.resolve()
    out = []
    for location in meta.get("locations", []):
        for frame in location.get("frames", [])[:1]:
            name = str(frame.get("name", ""))
            path = (folder / name).resolve()
            out.append((name, path if path.is_relative_to(root) and name else None))
    return out


# -- statistics ---------------------------------------------------------------------------------
def frame_stats(rgba: np.ndarray) -> tuple[float, float, float | None]:
    """``(foreground fraction, border foreground fraction, foreground colour std)`` of one RGBA uint8 frame.

    The colour std is ``sqrt(mean over RGB of the variance)`` of the foreground pixels in [0, 1],
    None with fewer than 16 foreground pixels.
    """
    fg = rgba[..., 3] > 127
    border = np.concatenate([fg[0], fg[-1], fg[1:-1, 0], fg[1:-1, -1]])
    pixels = rgba[..., :3][fg].astype(np.float64) / 255.0
    std = float(np.sqrt(pixels.var(axis=0).mean())) if len(pixels) >= 16 else None
    return float(fg.mean()), float(border.mean()), std


def _read_rgba(path: Path) -> np.ndarray | None:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 3 or image.shape[2] != 4 or image.dtype != np.uint8:
        return None
    return image[..., [2, 1, 0, 3]]


def judge_object(folder: Path | str, settings: FilterSettings, annotation: dict | None = None) -> ObjectReport:
    """Keep or drop one rendered object; every failed rule adds a reason."""
    folder = Path(folder)
    report = ObjectReport(uid=folder.name, keep=True)
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        report.keep, report.reasons = False, [f"unreadable meta.json ({type(e).__name__})"]
        return report
    problem = _malformed(meta)
    if problem is not None:
        report.keep, report.reasons = False, [f"malformed meta.json: {problem}"]
        return report
    mesh = meta.get("mesh") or {}
    source = meta.get("source") or {}
    annotation = annotation if isinstance(annotation, dict) else (source.get("annotations") or {})
    reasons = report.reasons

    # metadata
    report.license = annotation.get("license")
    report.faces = annotation.get("faceCount") if annotation.get("faceCount") is not None else mesh.get("faces")
    animation_count = annotation.get("animationCount")
    report.animated = bool(animation_count) if animation_count is not None else mesh.get("animated")
    report.image_textures = mesh.get("image_textures")
    if settings.licenses and report.license is not None:
        allowed = {x.strip().lower() for x in settings.licenses}
        if str(report.license).lower() not in allowed:
            reasons.append(f"licence {report.license} not in the allow-list")
    if settings.max_faces and report.faces is not None and int(report.faces) > settings.max_faces:
        reasons.append(f"too many faces ({int(report.faces):,} > {settings.max_faces:,})")
    if settings.drop_animated and report.animated:
        reasons.append("animated")
    if settings.drop_untextured and mesh and mesh.get("image_textures", 1) == 0 and not mesh.get("vertex_colors", True) \
            and mesh.get("base_colors", 2) <= 1:
        missing = mesh.get("missing_textures") or 0
        reasons.append("texture-less: no image texture, no vertex colours, one material colour"
                       + (f" ({missing} texture file(s) missing)" if missing else ""))

    # renders
    frames = _frame_paths(folder, meta)
    expected = len(meta.get("orbits", [])) * int(meta.get("frames_per_orbit", 0) or 0)
    if not frames or (expected and len(frames) != expected):
        reasons.append(f"meta.json lists {len(frames)} frames, expected {expected}")
    resolution = meta.get("resolution")
    fractions, borders, stds, bad = [], [], [], []
    for name, path in frames:
        image = _read_rgba(path) if path is not None and path.is_file() else None
        if image is None or (resolution and image.shape[:2] != (resolution, resolution)):
            bad.append(name)
            continue
        fraction, border, std = frame_stats(image)
        fractions.append(fraction)
        borders.append(border)
        if std is not None:
            stds.append(std)
    report.frames = len(fractions)
    if bad:
        reasons.append(f"missing or unreadable frames: {len(bad)} of {len(frames)} (e.g. {bad[0]})")
    if fractions:
        report.alpha_mean = float(np.mean(fractions))
        report.border_max = float(np.max(borders))
        report.color_std = float(np.mean(stds)) if stds else 0.0
        if report.alpha_mean < settings.min_alpha:
            reasons.append(f"empty or tiny render (mean foreground {report.alpha_mean:.4f} < {settings.min_alpha})")
        if report.border_max > settings.max_border_alpha:
            reasons.append(f"clipped by the frame border ({report.border_max:.4f} of the border is foreground)")
        if report.alpha_mean >= settings.min_alpha and report.color_std < settings.min_color_std:
            reasons.append(f"near-constant colour (foreground std {report.color_std:.4f} < {settings.min_color_std})")
    report.keep = not reasons
    return report


def _type(value) -> str:
    return "null" if value is None else type(value).__name__


def _malformed(meta) -> str | None:
    """What makes a meta.json unusable for judging (the JSON types ``ouro render`` writes), or None."""
    if not isinstance(meta, dict):
        return f"holds {_type(meta)}, not a JSON object"
    for key in ("mesh", "source"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            return f"{key!r} is {_type(meta[key])}, not an object"
    annotations = (meta.get("source") or {}).get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        return f"'source.annotations' is {_type(annotations)}, not an object"
    locations = meta.get("locations", [])
    if not isinstance(locations, list) or not all(
            isinstance(loc, dict) and isinstance(loc.get("frames", []), list)
            and all(isinstance(f, dict) for f in loc.get("frames", [])) for loc in locations):
        return "'locations' is not a list of {frames: [{name}]} objects"
    if not isinstance(meta.get("orbits", []), list):
        return f"'orbits' is {_type(meta['orbits'])}, not a list"
    for key in ("frames_per_orbit", "resolution"):
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{key!r} is {_type(value)}, not a whole number"
    for key in ("faces", "image_textures", "base_colors", "missing_textures"):
        value = (meta.get("mesh") or {}).get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"'mesh.{key}' is {_type(value)}, not a number"
    return None


def _judge_star(args: tuple) -> ObjectReport:
    """:func:`judge_object`, with anything it did not foresee recorded as that object's reason."""
    try:
        return judge_object(*args)
    except Exception as e:  # noqa: BLE001  (one object's trouble must not stop the others)
        return ObjectReport(uid=Path(args[0]).name, keep=False, reasons=[f"cannot be judged ({type(e).__name__}: {e})"])


def filter_renders(
    render_dir: Path | str,
    settings: FilterSettings = FilterSettings(),
    annotations: dict[str, dict] | None = None,
    workers: int = 1,
    progress: Callable[[ObjectReport, int, int], None] | None = None,
) -> list[ObjectReport]:
    """Judge every finished object of ``render_dir`` and every failed one; sorted by uid.

    Raises:
        FileNotFoundError: ``render_dir`` is not a folder.
    """
    render_dir = Path(render_dir)
    if not render_dir.is_dir():
        raise FileNotFoundError(f"{render_dir} is not a folder")
    folders = find_objects(render_dir)
    annotations = annotations or {}
    jobs = [(folder, settings, annotations.get(folder.name)) for folder in folders]
    reports: list[ObjectReport] = []
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results: Iterable[ObjectReport] = pool.map(_judge_star, jobs, chunksize=8)
            for i, report in enumerate(results, start=1):
                reports.append(report)
                if progress:
                    progress(report, i, len(jobs))
    else:
        for i, job in enumerate(jobs, start=1):
            reports.append(_judge_star(job))
            if progress:
                progress(reports[-1], i, len(jobs))
    for name in unsafe_folders(render_dir):
        reports.append(ObjectReport(uid=name, keep=False, reasons=["folder name is not a valid uid (letters, digits, "
                                                                   "'.', '_' and '-'); rename or re-render it"]))
    finished = {folder.name for folder in folders}
    for uid, reason in read_failures(render_dir).items():
        if uid not in finished:
            reports.append(ObjectReport(uid=uid, keep=False, reasons=[f"render failed: {reason}"]))
    return sorted(reports, key=lambda r: r.uid)


def write_kept(reports: Sequence[ObjectReport], path: Path | str, exclude: Iterable[str] = ()) -> Path:
    """The kept uids not in ``exclude`` (the held-out ones), one per line, sorted (atomic write)."""
    exclude = set(exclude)
    return write_uids((r.uid for r in reports if r.keep and r.uid not in exclude), path)


def write_report(reports: Sequence[ObjectReport], path: Path | str) -> Path:
    """The CSV report, one row per object (atomic write)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=REPORT_COLUMNS)
        writer.writeheader()
        for report in reports:
            writer.writerow(report.row())
    return path


#: Salt of the held-out split (changing it changes every split; keep it fixed).
HOLDOUT_SALT = b"ouro-holdout-v1:"


def mesh_hash(folder: Path | str) -> str:
    """``source.sha256`` of ``<folder>/meta.json`` (the rendered file's hash), else the folder name."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        digest = (meta.get("source") or {}).get("sha256")
    except (OSError, ValueError, AttributeError):
        digest = None
    return digest if isinstance(digest, str) and digest else f"uid:{folder.name}"


def holdout_uids(render_dir: Path | str, uids: Iterable[str], fraction: float) -> set[str]:
    """The uids of ``uids`` held out for evaluation: salted mesh hash in the lowest ``fraction`` of its range.

    Deterministic, independent of the other objects, and equal for objects sharing a mesh.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"holdout fraction must lie in [0, 1), got {fraction}")
    held = set()
    for uid in uids:
        digest = hashlib.sha256(HOLDOUT_SALT + mesh_hash(Path(render_dir) / uid).encode()).digest()
        if int.from_bytes(digest[:8], "big") < fraction * 2**64:
            held.add(uid)
    return held


def write_uids(uids: Iterable[str], path: Path | str) -> Path:
    """``uids`` sorted, one per line (atomic write)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, "".join(f"{uid}\n" for uid in sorted(uids)))
