"""``ouro render``: orbit renders of 3D objects with BlenderProc, one worker process per object.

Output, the render folder every later command reads (cameras: docs/OFFICIAL.md 12.3)::

    <out>/<uid>/meta.json               cameras + our fields (below)
    <out>/<uid>/<orbit>/<frame>.png     RGBA, 8-bit, transparent background; "000/000.png" ...
    <out>/<uid>/depth/<orbit>/<frame>.png   with depth: 16-bit z-depth, value * depth.scale = object units, 0 = background
    <out>/<uid>/xyz/<orbit>/<frame>.png     with depth: 16-bit RGBA world XYZ (ouro frame), (X / bound + 1) / 2 * 65535, alpha = foreground
    <out>/failures.jsonl                one JSON line per failed attempt: uid, source, reason, ...
                                        (an object's lines are dropped once it renders)
    <out>/.staging/                     objects being rendered (renamed into place when complete)

Per object: the mesh is normalised so that its bounding box is centred at the origin with a
diagonal of 1 (``normalize="diagonal"``, so it fits the unit box ``[-0.5, 0.5]^3`` and the default
camera always sees all of it) or a longest side of 1 (``"extent"``, the Zero123-style unit box, whose
corners can leave the frame at the default camera). ``orbits`` orbits of ``frames`` frames are
rendered; each orbit's elevation is uniform in ``[elevation_min, elevation_max]`` degrees, drawn from
``seed`` and the uid (same seed, same cameras), and its azimuths are ``360 * k / frames`` from 0 (the
condition view looks along -z, as ``ouro.geometry.orbit_cameras``). Radius and field of view default
to the public checkpoint's cameras (``OFFICIAL_RADIUS`` = 1.741697, ``OFFICIAL_FOV_DEG`` = 39.598).

meta.json: the public Objaverse-orbit layout read by Ouroboros3D's ``MultiViewDataset``
(``camera_angle_x`` in radians; ``locations[i].transform_matrix`` = Blender camera-to-world, i.e. Blender
world +z up with OpenGL camera axes; ``locations[i].frames[0].name`` = image path relative to the
object folder), with ``locations`` listing all orbits one after the other (orbit-major; each entry
has ``orbit``, ``frame``, ``elevation`` and ``azimuth`` in degrees). ``ouro.geometry.blender_to_ours``
turns ``transform_matrix`` into ouro's OpenCV c2w (+y up). Our fields: ``uid``, ``source`` (kind,
path, Objaverse uid and cached annotations, ``sha256`` of the mesh file), ``resolution``, ``fov_deg``,
``radius``, ``orbits`` (elevation and azimuths per orbit), ``seed``, ``normalization`` (``x_norm =
scale * x_file + offset`` in the file's own +y-up frame, which is ouro's world frame), ``mesh``
(faces, vertices, animation, textures, vertex colours, distinct base colours), ``renderer`` (BlenderProc
and Blender versions, backend, engine, samples, lighting), ``depth`` (encodings), timings.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

import ouro
from ouro.conventions import check_seed
from ouro.data.objaverse import ObjaverseCache
from ouro.geometry.cameras import (
    BLENDER_TO_OURS,
    OFFICIAL_FOV_DEG,
    OFFICIAL_RADIUS,
    intrinsics_from_fov,
    orbit_cameras,
    ours_to_blender,
)
from ouro.geometry.coordinate_maps import unproject_depth
from ouro.data.ids import is_safe_id
from ouro.io.files import (
    STAGING,
    clean_stale_staging,
    file_sha256,
    host_name,
    remove_staging_area,
    staging_folder,
    write_text_atomic,
)
from ouro.paths import cache_dir

from .choices import ENGINES, NORMALIZE_MODES
from .render_inputs import ObjectSource, collect_sources, parse_shard, select_shard, shard_index

__all__ = [
    "ENGINES",
    "ObjectResult",
    "RenderSettings",
    "RenderSummary",
    "collect_sources",
    "finished_uids",
    "orbit_elevations",
    "parse_shard",
    "plan_cameras",
    "render_objects",
    "select_shard",
    "shard_index",
]

DATA_DIR = Path(ouro.__file__).resolve().parent / "data"
WORKER = DATA_DIR / "blender_worker.py"
LAUNCHER = DATA_DIR / "bproc_launcher.py"
FAILURES = "failures.jsonl"
META = "meta.json"
#: XYZ maps encode ``[-XYZ_BOUND, XYZ_BOUND]^3`` (object units) onto 0..65535.
XYZ_BOUND = 1.0
_BACKGROUND_DEPTH = 1e5  # Blender's Z pass holds 1e10 where no surface was hit


@dataclass(frozen=True)
class RenderSettings:
    """How every object is rendered.

    Attributes:
        engine: ``"cycles"`` (CPU path tracing, ``samples`` spp, no denoiser, uniform white world
            light) or ``"workbench"`` (Blender's fast preview engine, studio light).
        resolution: square image size, pixels.
        orbits, frames: orbits per object and frames per orbit.
        elevation_min, elevation_max: range of the per-orbit elevation, degrees.
        radius: camera distance from the origin, in normalised object units.
        fov_deg: horizontal (= vertical) field of view, degrees.
        depth: also write depth and world-XYZ maps.
        seed: with the uid, seeds the orbit elevations.
        samples: Cycles samples per pixel.
        normalize: ``"diagonal"`` (bounding-box diagonal 1) or ``"extent"`` (longest side 1).
        timeout: seconds per object (load + render) before its worker is killed.
        workers: objects rendered in parallel.
        threads: render threads per worker; None = all cores for one worker, else cores / workers.
        blender: a Blender 4.2 executable or folder, run through ``blenderproc run``; None = the
            ``bpy`` wheel in this Python.
    """

    engine: str = "cycles"
    resolution: int = 512
    orbits: int = 2
    frames: int = 16
    elevation_min: float = -5.0
    elevation_max: float = 30.0
    radius: float = OFFICIAL_RADIUS
    fov_deg: float = OFFICIAL_FOV_DEG
    depth: bool = False
    seed: int = 0
    samples: int = 16
    normalize: str = "diagonal"
    gso_up_axis: str = "z"
    timeout: float = 900.0
    workers: int = 1
    threads: int | None = None
    blender: Path | None = None

    def check(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        if self.engine not in ENGINES:
            raise ValueError(f"engine {self.engine!r}: choose one of {', '.join(ENGINES)}")
        if self.normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize {self.normalize!r}: choose one of {', '.join(NORMALIZE_MODES)}")
        if self.gso_up_axis not in ("y", "z"):
            raise ValueError(f"gso_up_axis {self.gso_up_axis!r}: choose z (Google Scanned Objects) or y")
        for name in ("resolution", "orbits", "frames", "samples", "workers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not -90 < self.elevation_min <= self.elevation_max < 90:
            raise ValueError(
                f"elevation range [{self.elevation_min}, {self.elevation_max}]: need -90 < min <= max < 90 degrees"
            )
        if not self.radius > 0:
            raise ValueError(f"radius must be positive, got {self.radius}")
        if not 0 < self.fov_deg < 180:
            raise ValueError(f"fov must lie in (0, 180) degrees, got {self.fov_deg}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")
        check_seed(self.seed)

    @property
    def threads_per_worker(self) -> int:
        if self.threads is not None:
            return max(0, int(self.threads))
        if self.workers == 1:
            return 0
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores // self.workers)


@dataclass
class ObjectResult:
    """What happened to one object: ``status`` is ``"rendered"``, ``"skipped"`` or ``"failed"``."""

    uid: str
    source: str
    status: str
    reason: str | None = None
    seconds: float = 0.0
    folder: Path | None = None


@dataclass
class RenderSummary:
    """Counts of one ``render_objects`` call and the failed objects."""

    total: int = 0
    rendered: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[ObjectResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 if nothing failed, 1 otherwise."""
        return 1 if self.failed else 0


ProgressCallback = Callable[[ObjectResult, int, int], None]


# -- cameras ------------------------------------------------------------------------------------
def orbit_elevations(uid: str, settings: RenderSettings) -> list[float]:
    """Per-orbit elevations (deg), uniform in the settings' range, from ``seed`` and ``uid`` only."""
    digest = hashlib.sha256(f"{settings.seed}:{uid}".encode("utf-8")).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    return [rng.uniform(settings.elevation_min, settings.elevation_max) for _ in range(settings.orbits)]


def plan_cameras(uid: str, settings: RenderSettings) -> tuple[list[float], list[float], torch.Tensor, torch.Tensor]:
    """Cameras of one object.

    Returns:
        ``(elevations [orbits] deg, azimuths [frames] deg, c2w [orbits * frames, 4, 4] ouro
        convention (OpenCV axes, +y up), c2w_blender [orbits * frames, 4, 4] Blender matrix_world)``,
        float64, orbit-major.
    """
    elevations = orbit_elevations(uid, settings)
    azimuths = [360.0 * k / settings.frames for k in range(settings.frames)]
    c2w = torch.cat(
        [orbit_cameras(settings.frames, el, 0.0, settings.radius, dtype=torch.float64) for el in elevations]
    )
    return elevations, azimuths, c2w, ours_to_blender(c2w)


def up_axis_of(src: ObjectSource, settings: RenderSettings) -> str:
    """The mesh file's up axis: ``settings.gso_up_axis`` for GSO folders (+z, Gazebo's), else +y (glTF, OBJ)."""
    return settings.gso_up_axis if src.kind == "gso" else "y"


def frame_name(orbit: int, frame: int) -> str:
    """Relative path of an RGBA frame: ``"<orbit:03d>/<frame:03d>.png"``."""
    return f"{orbit:03d}/{frame:03d}.png"


# -- bookkeeping --------------------------------------------------------------------------------
def finished_uids(out: Path) -> set[str]:
    """Uids with a complete folder (``<uid>/meta.json``) under ``out``."""
    if not out.is_dir():
        return set()
    return {p.name for p in out.iterdir() if not p.name.startswith(".") and (p / META).is_file()}


@contextmanager
def _failures_lock(out: Path):
    """An exclusive ``flock`` on the render folder itself, held while ``failures.jsonl`` is appended
    to or rewritten (shards and workers of one folder serialise on it; no lock file is left)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: appends stay atomic, a rewrite may race
        yield
        return
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def append_failure(out: Path, record: dict) -> None:
    """Append one JSON line to ``failures.jsonl`` (one ``write`` with O_APPEND, under the folder lock)."""
    line = (json.dumps(record, ensure_ascii=True) + "\n").encode("utf-8")
    with _failures_lock(out):
        fd = os.open(out / FAILURES, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def forget_failures(out: Path, uid: str) -> int:
    """Drop the ``failures.jsonl`` records of ``uid`` (it has rendered since); returns how many.

    The file is rewritten atomically under the folder lock, and removed when no record is left.
    Lines that are not JSON records are kept as they are.
    """
    path = out / FAILURES
    with _failures_lock(out):
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return 0

        def is_of_uid(line: str) -> bool:
            try:
                record = json.loads(line)
            except ValueError:
                return False
            return isinstance(record, dict) and record.get("uid") == uid

        keep = [line for line in lines if not is_of_uid(line)]
        if len(keep) == len(lines):
            return 0
        if any(line.strip() for line in keep):
            write_text_atomic(path, "".join(line + "\n" for line in keep))
        else:
            path.unlink()
        return len(lines) - len(keep)


def _tail(path: Path, lines: int = 8) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line[:300] for line in text.strip().splitlines()[-lines:]]


# -- the worker process -------------------------------------------------------------------------
def blenderproc_dir() -> Path:
    """Where the fake Blender folder for the bpy wheel lives (``<ouro cache>/blenderproc-bpy``)."""
    return cache_dir() / "blenderproc-bpy"


def resolve_blender(path: Path) -> Path:
    """The folder of a Blender 4.x install (holding ``blender`` and a ``4.N/`` folder).

    Raises ``ValueError`` with the fix when ``path`` is not one.
    """
    path = Path(path).expanduser()
    folder = path if path.is_dir() else path.parent
    if not (folder / "blender").is_file():
        raise ValueError(f"--blender {path}: no `blender` executable there; pass a Blender 4.2 executable or its folder")
    versions = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.replace(".", "").isdigit() and "." in p.name)
    if not versions:
        raise ValueError(f"--blender {path}: no version folder (e.g. 4.2/) next to `blender`; pass a Blender 4.2 release folder")
    if not versions[-1].startswith("4."):
        raise ValueError(f"--blender {path}: Blender {versions[-1]} found, but BlenderProc 2.8 needs Blender 4.2")
    return folder


def worker_command(job_path: Path, work: Path, settings: RenderSettings) -> list[str]:
    """The worker's argv (a list: no shell)."""
    temp = work / "bproc-tmp"
    if settings.blender is None:
        return [sys.executable, str(LAUNCHER), "--blender-dir", str(blenderproc_dir()), str(WORKER), str(temp),
                str(job_path)]
    folder = resolve_blender(settings.blender)
    return [sys.executable, "-m", "blenderproc", "run", "--custom-blender-path", str(folder), "--temp-dir", str(work),
            str(WORKER), str(job_path)]


class _Processes:
    """Worker processes alive now, so that an interrupt can end them (their whole process group)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self.stopping = False

    def add(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.add(proc)

    def remove(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def kill_all(self) -> None:
        with self._lock:
            self.stopping = True
            for proc in self._procs:
                _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def run_worker(job: dict, work: Path, settings: RenderSettings, processes: _Processes) -> dict:
    """Run one worker process; returns its result dict, or ``{"ok": False, "error": ...}``."""
    job_path = work / "job.json"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    log = work / "worker.log"
    env = dict(os.environ)
    (work / "tmp").mkdir(exist_ok=True)
    env["TMPDIR"] = str(work / "tmp")  # bpy.app.tempdir and BlenderProc's temp files stay in staging
    if settings.blender is not None:
        # lets `python -m blenderproc run` start (BlenderProc otherwise insists on its console script)
        env["OUTSIDE_OF_THE_INTERNAL_BLENDER_PYTHON_ENVIRONMENT_BUT_IN_RUN_SCRIPT"] = "1"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(worker_command(job_path, work, settings), stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True, cwd=str(work))
        processes.add(proc)
        try:
            code = proc.wait(timeout=settings.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
            return {"ok": False, "error": f"timed out after {settings.timeout:g} s", "log_tail": _tail(log)}
        finally:
            processes.remove(proc)
    if processes.stopping:
        return {"ok": False, "error": "interrupted", "interrupted": True}
    try:
        result = json.loads((work / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"ok": False, "error": f"worker ended ({_exit_reason(code)}) without a result", "log_tail": _tail(log)}
    if not result.get("ok"):
        result.setdefault("error", f"worker failed ({_exit_reason(code)})")
        result["log_tail"] = _tail(log)
    elif code != 0:
        return {"ok": False, "error": f"worker reported success but ended with {_exit_reason(code)}", "log_tail": _tail(log)}
    return result


# -- depth and XYZ ------------------------------------------------------------------------------
def depth_scale(settings: RenderSettings) -> float:
    """Object units per count of the 16-bit depth PNGs: 1e-4, coarser for far cameras."""
    return max(1e-4, (settings.radius + 1.0) / 65535.0)


def write_depth_maps(staging: Path, work: Path, names: Sequence[str], c2w: torch.Tensor, settings: RenderSettings) -> None:
    """Turn the worker's float depth into 16-bit depth PNGs and world-XYZ PNGs (ouro frame)."""
    import cv2

    K = intrinsics_from_fov(settings.fov_deg, dtype=torch.float64)
    scale = depth_scale(settings)
    for i, name in enumerate(names):
        depth = np.load(work / f"depth_{i:04d}.npy").astype(np.float64)
        alpha = cv2.imread(str(staging / name), cv2.IMREAD_UNCHANGED)[..., 3]
        mask = (depth < _BACKGROUND_DEPTH) & (alpha > 0)
        depth = np.where(mask, depth, 0.0)
        xyz = unproject_depth(torch.from_numpy(depth), c2w[i], K).numpy()
        depth16 = np.where(mask, np.clip(np.round(depth / scale), 1, 65535), 0).astype(np.uint16)
        code = np.clip(np.round((xyz / XYZ_BOUND + 1.0) * 0.5 * 65535), 0, 65535)
        xyz16 = np.concatenate([code, np.full(mask.shape + (1,), 65535.0)], axis=-1) * mask[..., None]
        for folder, image in (("depth", depth16), ("xyz", xyz16.astype(np.uint16)[..., [2, 1, 0, 3]])):
            path = staging / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), image):
                raise OSError(f"cannot write {path}")


# -- meta.json ----------------------------------------------------------------------------------
def build_meta(src: ObjectSource, mesh_path: Path, settings: RenderSettings, result: dict,
               elevations: list[float], azimuths: list[float], c2w_blender: torch.Tensor,
               annotations: dict | None, sha256: str) -> dict:
    """meta.json: the public Objaverse-orbit layout plus our fields (see the module docstring)."""
    names, locations = [], []
    for o, el in enumerate(elevations):
        for f, az in enumerate(azimuths):
            i = o * settings.frames + f
            frame = {"name": frame_name(o, f)}
            if settings.depth:
                frame["depth"] = f"depth/{frame_name(o, f)}"
                frame["xyz"] = f"xyz/{frame_name(o, f)}"
            names.append(frame["name"])
            locations.append({
                "index": f"{o:03d}_{f:03d}", "orbit": o, "frame": f, "elevation": el, "azimuth": az,
                "transform_matrix": c2w_blender[i].tolist(), "frames": [frame],
            })
    rot = BLENDER_TO_OURS[:3, :3].numpy()
    scale = float(result["scale"])
    centre_blender = (np.array(result["bbox_min_blender"]) + np.array(result["bbox_max_blender"])) / 2
    lo_n, hi_n = np.array(result["normalized_bbox_min_blender"]), np.array(result["normalized_bbox_max_blender"])
    corners = np.stack([rot @ lo_n, rot @ hi_n])
    renderer = {"name": "BlenderProc", "version": result.get("blenderproc_version"),
                "blender": result.get("blender_version"),
                "backend": "bpy wheel (in-process)" if settings.blender is None else f"blender: {settings.blender}"}
    renderer.update(result.get("render", {}))
    return {
        "camera_angle_x": float(np.deg2rad(settings.fov_deg)),
        "locations": locations,
        "format": "ouro-render/1",
        "uid": src.uid,
        "source": {"kind": src.kind, "input": src.source, "path": str(mesh_path),
                   "objaverse_uid": src.uid if src.kind == "objaverse" else None,
                   "sha256": sha256, "annotations": annotations},
        "resolution": settings.resolution,
        "fov_deg": settings.fov_deg,
        "radius": settings.radius,
        "frames_per_orbit": settings.frames,
        "orbits": [{"index": o, "elevation": el, "azimuths": azimuths} for o, el in enumerate(elevations)],
        "elevation_range": [settings.elevation_min, settings.elevation_max],
        "seed": settings.seed,
        "normalization": {
            "mode": settings.normalize,
            "scale": scale,
            "offset": (-scale * (rot @ centre_blender)).tolist(),
            "up_axis": up_axis_of(src, settings),
            "frame": "x_norm = scale * R x_file + offset in ouro's world (+y up); R = identity for +y-up files "
                     "(glTF, OBJ), (x, y, z) -> (x, z, -y) for +z-up files (GSO folders)",
            "bbox_min": corners.min(0).tolist(),
            "bbox_max": corners.max(0).tolist(),
        },
        "mesh": {"faces": result.get("faces"), "vertices": result.get("vertices"),
                 "objects": result.get("mesh_objects"), "animated": result.get("animated"),
                 **result.get("appearance", {})},
        "renderer": renderer,
        "depth": ({"depth_scale": depth_scale(settings), "depth_encoding": "uint16 PNG, z-depth = value * depth_scale (object units), 0 = background",
                   "xyz_bound": XYZ_BOUND, "xyz_encoding": "uint16 RGBA PNG, X = (value / 65535 * 2 - 1) * xyz_bound in ouro's world frame (+y up), alpha 65535 = foreground"}
                  if settings.depth else None),
        "conventions": "transform_matrix: Blender camera matrix_world (world +z up, camera +x right, +y up, looking along -z); "
                       "ouro.geometry.blender_to_ours gives ouro's c2w (OpenCV axes, world +y up)",
        "timing": {"import_seconds": result.get("import_seconds"), "render_seconds": result.get("render_seconds")},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "ouro_version": ouro.__version__,
    }


# -- one object ---------------------------------------------------------------------------------
def render_object(src: ObjectSource, out: Path, settings: RenderSettings, cache: ObjaverseCache | None,
                  processes: _Processes | None = None) -> ObjectResult:
    """Render one object into ``out/<uid>`` atomically; never raises for a bad object."""
    start = time.time()
    processes = processes or _Processes()
    safe = is_safe_id(src.uid)  # the uid names folders: no path is built from an unsafe one
    staging: Path | None = None  # out/.staging/<uid>.<host>.<pid> once the uid is known to be safe

    def failed(reason: str, log_tail: list[str] | None = None) -> ObjectResult:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        seconds = time.time() - start
        record = {"uid": src.uid, "source": src.source, "kind": src.kind, "reason": reason, "seconds": round(seconds, 2),
                  "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": host_name()}
        if log_tail:
            record["log_tail"] = log_tail
        append_failure(out, record)
        return ObjectResult(src.uid, src.source, "failed", reason, seconds)

    if not safe:
        return failed(f"uid {src.uid[:80]!r} is not a safe folder name (letters, digits, '.', '_', '-')")
    if src.error is not None:
        return failed(src.error)
    try:
        if src.kind == "objaverse":
            if cache is None:
                return failed("no Objaverse cache configured")
            try:
                mesh_path = cache.fetch(src.uid)
            except (LookupError, ValueError) as e:
                return failed(str(e))
            annotations = cache.annotations(src.uid)
        else:
            mesh_path, annotations = Path(src.path), None
            if not mesh_path.is_file():
                return failed(f"no such file: {mesh_path}")
        sha256 = file_sha256(mesh_path)
        elevations, azimuths, c2w, c2w_blender = plan_cameras(src.uid, settings)
        names = [frame_name(o, f) for o in range(settings.orbits) for f in range(settings.frames)]

        staging = staging_folder(out, src.uid)
        work = staging / ".work"
        work.mkdir()
        job = {
            "source": str(mesh_path.resolve()), "texture_dirs": [str(p.resolve()) for p in src.texture_dirs],
            "frames_dir": str(staging.resolve()), "frame_names": names, "work_dir": str(work.resolve()),
            "cameras": c2w_blender.tolist(), "fov_deg": settings.fov_deg, "resolution": settings.resolution,
            "engine": settings.engine, "samples": settings.samples, "threads": settings.threads_per_worker,
            "depth": settings.depth, "normalize": settings.normalize, "up_axis": up_axis_of(src, settings),
        }
        result = run_worker(job, work, settings, processes)
        if result.get("interrupted"):  # Ctrl-C: not the object's fault, so no failure record
            shutil.rmtree(staging, ignore_errors=True)
            return ObjectResult(src.uid, src.source, "failed", "interrupted", time.time() - start)
        if not result.get("ok"):
            return failed(str(result.get("error", "worker failed")), result.get("log_tail"))
        missing = [n for n in names if not (staging / n).is_file()]
        if missing:
            return failed(f"{len(missing)} of {len(names)} frames missing after rendering, e.g. {missing[0]}")
        if settings.depth:
            write_depth_maps(staging, work, names, c2w, settings)
        meta = build_meta(src, mesh_path, settings, result, elevations, azimuths, c2w_blender, annotations, sha256)
        shutil.rmtree(work)
        (staging / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        target = out / src.uid
        try:
            os.rename(staging, target)
        except OSError:
            if (target / META).is_file():  # another process finished it first
                shutil.rmtree(staging, ignore_errors=True)
                forget_failures(out, src.uid)
                return ObjectResult(src.uid, src.source, "skipped", "finished by another process", time.time() - start, target)
            raise
        forget_failures(out, src.uid)  # an earlier failed attempt is no longer a failure
        return ObjectResult(src.uid, src.source, "rendered", None, time.time() - start, target)
    except Exception as e:  # noqa: BLE001  (one object's trouble must not stop the others)
        return failed(f"{type(e).__name__}: {e}")


# -- many objects -------------------------------------------------------------------------------
def render_objects(sources: Sequence[ObjectSource], out: Path | str, settings: RenderSettings,
                   cache: ObjaverseCache | None = None, progress: ProgressCallback | None = None) -> RenderSummary:
    """Render every source not finished yet into ``out``, ``settings.workers`` at a time.

    Finished objects (``<out>/<uid>/meta.json``) are skipped. ``progress(result, done, todo)`` is
    called after each object. Ctrl-C kills the running workers and leaves no partial folder.
    """
    settings.check()
    out = Path(out).absolute()  # workers run in their own folder: a relative path would point elsewhere
    out.mkdir(parents=True, exist_ok=True)
    (out / STAGING).mkdir(exist_ok=True)
    clean_stale_staging(out)
    start = time.time()
    done_before = finished_uids(out)
    todo = [s for s in sources if s.uid not in done_before or s.error is not None]
    summary = RenderSummary(total=len(sources), skipped=len(sources) - len(todo))
    processes = _Processes()
    try:
        with ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="ouro-render") as pool:
            pending = {pool.submit(render_object, s, out, settings, cache, processes) for s in todo}
            try:
                count = 0
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        result = future.result()
                        count += 1
                        if result.status == "rendered":
                            summary.rendered += 1
                        elif result.status == "skipped":
                            summary.skipped += 1
                        else:
                            summary.failed += 1
                            summary.failures.append(result)
                        if progress is not None:
                            progress(result, count, len(todo))
            except BaseException:
                processes.kill_all()
                for future in pending:
                    future.cancel()
                raise
    finally:
        remove_staging_area(out)  # only when empty: other shards may be working
    summary.seconds = time.time() - start
    return summary


def summary_dict(summary: RenderSummary) -> dict:
    """A JSON-friendly summary (for scripts and benchmarks)."""
    data = asdict(summary)
    data["failures"] = [{"uid": f.uid, "source": f.source, "reason": f.reason} for f in summary.failures]
    return data
