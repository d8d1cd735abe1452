"""Mutation score of ouro's numerical core with cosmic-ray (issue #33).

A mutant is the source with one small change (a number off by one, ``+`` for ``-``, ``<`` for
``<=`` ...); it is *killed* when the tests covering its module fail, and *survives* when they pass.
A survivor is either a gap in the tests or an equivalent mutant (no observable change), and
``tools/mutation_equivalents.toml`` lists the ones we judged equivalent, with the reason.

    pip install -e ".[mutation]"                  # cosmic-ray, pinned in constraints.txt
    python tools/mutation.py list                 # modules, their tests, mutant counts
    python tools/mutation.py run ouro/geometry/rays.py [MODULE ...]   # or --all
    python tools/mutation.py report               # killed / total / timeouts / survivors per module
    python tools/mutation.py survivors ouro/geometry/rays.py          # their diffs
    python tools/mutation.py run --rerun-survivors MODULE   # after adding tests: re-test only its survivors
    python tools/mutation.py run --sample 150 MODULE         # a random sample of its mutants (big modules)

**cosmic-ray edits the module files in place** (and restores them after each mutant): run this in
a clone or worktree of your own, never in a tree that other processes import from while it runs.
Sessions, logs and summaries go to ``.mutation/`` (git-ignored).

Operators: a focused set for "one wrong constant silently changes results" (see ``OPERATORS``).
Tests: per module, the fast tests that cover it (``MODULES``), run as ``pytest -x -q -p
no:cacheprovider -m "not slow"``.

A finished session can be brought up to date after tests were *added* with ``--rerun-survivors``:
the killed mutants stay killed (the module's text must be unchanged, checked by its SHA-256), the
survivors are tested again with the current tests. ``--sample N`` tests a random sample of N mutants
(seeded, ``--sample-seed``); the report then says "N of M sampled", and the score estimates the
module's with a binomial standard error of about ``sqrt(s (1 - s) / N)``.

Speed: each mutant needs a fresh interpreter that imports the mutated module, and importing torch
and diffusers costs 5-15 s per process on a loaded 2-core machine, more than most tests. By
default cosmic-ray's test command is therefore a small client of a *fork server*: this script
imports the third-party modules the tests use once (found by a first, unmutated run), then forks a
child per mutant that imports ouro fresh from the mutated file and runs pytest in-process. Only
third-party code is preloaded, never ouro's, and no torch op runs in the parent before it forks.
``--plain`` runs the same pytest command as a normal subprocess instead (slower, same verdicts).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".mutation"
EQUIVALENTS = ROOT / "tools" / "mutation_equivalents.toml"


# ------------------------------------------------------------------------------------------ setup

#: The focused operator set. Each realistic one-line slip in numerical code is one of: a wrong
#: number (an index, a constant, a default), a flipped sign or a reciprocal, a comparison off at
#: its boundary, reversed or negated, or a boolean/unary slip. Left out, and why:
#: * the other binary swaps (``+`` -> ``*``, ``**``, ``//``, ``%``, ``<<``, ``|`` ..., 12 per
#:   operator): mostly type errors or absurd values that any test kills; they multiply the run
#:   time and the score without saying anything about the tests;
#: * comparisons that change kind (``<`` -> ``==``, ``is``/``is not``): the same, plus None checks;
#: * ``-x`` -> ``+x`` duplicates deleting the ``-``; ``~`` appears nowhere in the core;
#: * structural operators (exception, break/continue, zero-iteration loop, decorator removal,
#:   variable replacement/insertion): not "one wrong constant", and combinatorial.
OPERATORS = (
    # a number +1 / -1 (every int and float literal)
    "core/NumberReplacer",
    # a sign or a reciprocal
    "core/ReplaceBinaryOperator_Add_Sub",
    "core/ReplaceBinaryOperator_Sub_Add",
    "core/ReplaceBinaryOperator_Mul_Div",
    "core/ReplaceBinaryOperator_Div_Mul",
    # a comparison off at the boundary, reversed, or negated
    "core/ReplaceComparisonOperator_Lt_LtE",
    "core/ReplaceComparisonOperator_Lt_Gt",
    "core/ReplaceComparisonOperator_Lt_GtE",
    "core/ReplaceComparisonOperator_LtE_Lt",
    "core/ReplaceComparisonOperator_LtE_GtE",
    "core/ReplaceComparisonOperator_LtE_Gt",
    "core/ReplaceComparisonOperator_Gt_GtE",
    "core/ReplaceComparisonOperator_Gt_Lt",
    "core/ReplaceComparisonOperator_Gt_LtE",
    "core/ReplaceComparisonOperator_GtE_Gt",
    "core/ReplaceComparisonOperator_GtE_LtE",
    "core/ReplaceComparisonOperator_GtE_Lt",
    "core/ReplaceComparisonOperator_Eq_NotEq",
    "core/ReplaceComparisonOperator_NotEq_Eq",
    # booleans and unary operators
    "core/ReplaceTrueWithFalse",
    "core/ReplaceFalseWithTrue",
    "core/ReplaceAndWithOr",
    "core/ReplaceOrWithAnd",
    "core/AddNot",
    "core/ReplaceUnaryOperator_Delete_Not",
    "core/ReplaceUnaryOperator_Delete_USub",
    "core/ReplaceUnaryOperator_UAdd_USub",
)


@dataclass(frozen=True)
class Target:
    """A module to mutate and the fast tests that cover it (paths relative to the repository root)."""

    tests: tuple[str, ...]
    #: a pytest ``-k`` expression narrowing the tests to those that reach the module ("" = all)
    select: str = ""
    markers: str = "not slow"
    note: str = ""

    def pytest_args(self) -> list[str]:
        args = ["-x", "-q", "-p", "no:cacheprovider"]
        if self.markers:
            args += ["-m", self.markers]
        if self.select:
            args += ["-k", self.select]
        return args + list(self.tests)


#: Modules whose one wrong constant silently changes results (issue #33), with their tests.
MODULES: dict[str, Target] = {
    "ouro/geometry/cameras.py": Target(("tests/test_cameras.py", "tests/test_rays_and_ccm.py")),
    "ouro/geometry/rays.py": Target(("tests/test_rays_and_ccm.py", "tests/test_cameras.py")),
    "ouro/geometry/coordinate_maps.py": Target(("tests/test_rays_and_ccm.py",)),
    "ouro/models/plucker_embedding.py": Target(("tests/test_mv_unet.py",)),
    "ouro/models/reconstructor.py": Target(("tests/test_lgm.py",)),
    "ouro/gaussians/ply.py": Target(("tests/test_ply.py", "tests/test_export.py")),
    "ouro/gaussians/gaussians.py": Target(("tests/test_ply.py", "tests/test_rasterize.py")),
    "ouro/gaussians/_torch_impl.py": Target(("tests/test_rasterize.py",)),
    "ouro/metrics/image.py": Target(("tests/test_metrics.py",), select="psnr or ssim or white_image or identical or refuse"),
    "pipelines/train_step.py": Target(("tests/test_train_step.py",)),
    "ouro/diffusion/edm.py": Target(("tests/test_diffusion.py",)),
    "ouro/diffusion/sampler.py": Target(("tests/test_diffusion.py", "tests/test_samplers.py", "tests/test_sample.py")),
    "ouro/diffusion/heun.py": Target(("tests/test_samplers.py",)),
    "ouro/diffusion/dpm_solver.py": Target(("tests/test_samplers.py",)),
    "ouro/diffusion/samplers.py": Target(("tests/test_samplers.py", "tests/test_sample_speed.py")),
    "pipelines/sample.py": Target(("tests/test_sample.py", "tests/test_sample_speed.py")),
}


def slug(module: str) -> str:
    return module.replace("/", "__").removesuffix(".py")


def _session_dir(module: str) -> Path:
    return OUT / slug(module)


# ----------------------------------------------------------------------------------- fork server


#: Where the repository's own modules live: never preloaded by the fork server.
SOURCE_DIRS = tuple(ROOT / d for d in ("ouro", "pipelines", "cli", "tests", "tools"))


def _repo_file(mod) -> bool:
    f = getattr(mod, "__file__", None)
    return bool(f) and any(Path(f).resolve().is_relative_to(d) for d in SOURCE_DIRS)


def _child_pytest(args: list[str], out_fd: int, modules_file: str | None = None) -> None:
    """In a forked child: run pytest in-process with output to ``out_fd``, then ``os._exit``."""
    code = 99
    try:
        os.setpgrp()  # its own process group, so that a timeout kills anything it started
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.chdir(ROOT)
        import pytest

        code = int(pytest.main(args))
        if modules_file is not None:
            names = sorted(n for n, m in list(sys.modules.items()) if m is not None and not _repo_file(m)
                           and not n.startswith(("ouro", "conftest", "test_", "__main__")))
            Path(modules_file).write_text("\n".join(names))
    except BaseException:  # noqa: BLE001 - report anything, then exit without running the parent's code
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _run_forked(args: list[str], timeout: float, modules_file: str | None = None) -> tuple[int | None, str, float]:
    """Fork, run pytest in the child; ``(exit code or None on timeout, output, seconds)``."""
    with tempfile.TemporaryFile() as out:
        sys.stdout.flush()
        sys.stderr.flush()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child_pytest(args, out.fileno(), modules_file)
        code: int | None = None
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() - t0 > timeout:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.05)
        seconds = time.monotonic() - t0
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    return code, text, seconds


TIMEOUT_MARK = "mutation fork server: timeout"


class ForkServer:
    """Serves "run the tests" requests on a Unix socket, one forked pytest per request."""

    def __init__(self, args: list[str], timeout: float, sock_path: Path):
        self.args, self.timeout, self.sock_path = args, timeout, sock_path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
        self.sock.bind(str(sock_path))
        self.sock.listen(1)
        self.sock.settimeout(0.5)

    def serve_until(self, proc: subprocess.Popen) -> None:
        while proc.poll() is None:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(None)
                code, text, seconds = _run_forked(self.args, self.timeout)
                if code is None:
                    text = f"{TIMEOUT_MARK} after {seconds:.0f} s\n" + text
                    code = 124
                with contextlib.suppress(OSError):
                    conn.sendall(f"{code}\n".encode() + text.encode("utf-8", "replace"))

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.sock_path.unlink()


def _client(sock_path: str) -> int:
    """cosmic-ray's test command with the fork server: ask for one test run, relay its output and code."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock_path)
        chunks = []
        while chunk := s.recv(1 << 16):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\n")
    sys.stdout.write(body.decode("utf-8", "replace"))
    return int(head or 99)


def _preload(names: list[str]) -> int:
    """Import the third-party modules the tests used (no ouro module, no torch op)."""
    import importlib

    n = 0
    for name in names:
        with contextlib.suppress(BaseException):
            importlib.import_module(name)
            n += 1
    return n


# ------------------------------------------------------------------------------------------- run


def _cosmic(*args: str, log) -> None:
    cmd = [sys.executable, "-m", "cosmic_ray.cli", *args]
    log.write(f"$ {shlex.join(cmd)}\n")
    log.flush()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def _exclude_regex() -> str:
    """The operators-filter pattern that skips every operator outside :data:`OPERATORS`."""
    return "(?!(?:" + "|".join(re.escape(o) for o in OPERATORS) + ")$)"


def _write_config(path: Path, module: str, test_command: str, timeout: float) -> None:
    import toml

    cfg = {
        "cosmic-ray": {
            "module-path": module,
            "timeout": timeout,
            "excluded-modules": [],
            "test-command": test_command,
            "distributor": {"name": "local"},
            "filters": {"operators-filter": {"exclude-operators": [_exclude_regex()]}},
        }
    }
    path.write_text(toml.dumps(cfg))


def _skip_signature_markers(db_path: Path, log) -> None:
    """Skip the "binary" mutants of a bare ``*`` or ``/`` in a parameter list.

    cosmic-ray 8.7 takes the keyword-only marker of ``def f(a, *, b)`` for a multiplication and
    turns it into the positional-only marker ``/``: a change of which call forms are accepted, not
    of any value, and not among the slips this run is about.
    """
    import parso
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    trees: dict[str, object] = {}
    skipped = 0
    with use_db(str(db_path), WorkDB.Mode.open) as db:
        for item in list(db.pending_work_items):
            m = item.mutations[0]
            if not m.operator_name.startswith("core/ReplaceBinaryOperator_"):
                continue
            path = str(m.module_path)
            if path not in trees:
                trees[path] = parso.parse((ROOT / path).read_text())
            leaf = trees[path].get_leaf_for_position(tuple(m.start_pos))
            if leaf is not None and leaf.value in ("*", "/") and leaf.parent.type in ("parameters", "lambdef"):
                db.set_result(item.job_id, WorkResult(output="a parameter-list marker, not an operator",
                                                      worker_outcome=WorkerOutcome.SKIPPED))
                skipped += 1
    log.write(f"skipped {skipped} parameter-list markers\n")


NOT_SAMPLED = "not in the random sample"


def _keep_sample(db_path: Path, n: int, seed: int, log) -> None:
    """Skip all pending mutants but a seeded random sample of ``n`` (sorted by job id before drawing)."""
    import random

    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    with use_db(str(db_path), WorkDB.Mode.open) as db:
        pending = sorted(db.pending_work_items, key=lambda item: item.job_id)
        keep = {item.job_id for item in random.Random(seed).sample(pending, min(n, len(pending)))}
        for item in pending:
            if item.job_id not in keep:
                db.set_result(item.job_id, WorkResult(output=NOT_SAMPLED, worker_outcome=WorkerOutcome.SKIPPED))
    log.write(f"sampled {len(keep)} of {len(pending)} mutants (seed {seed})\n")


def _reopen_survivors(db_path: Path, log) -> int:
    """Forget the survivors' results, so that ``cosmic-ray exec`` tests them again."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(db_path)) as con, con:
        n = con.execute("DELETE FROM work_results WHERE worker_outcome = 'NORMAL' AND test_outcome = 'SURVIVED'").rowcount
    log.write(f"re-testing {n} survivors of the previous session\n")
    return n


def run_module(module: str, plain: bool, timeout_factor: float, min_timeout: float,
               sample: int | None = None, sample_seed: int = 0, rerun_survivors: bool = False) -> dict:
    """One cosmic-ray session over ``module``: init, operators filter, baseline, exec; returns the summary.

    ``rerun_survivors``: keep the previous session (same module text) and test only its survivors again.
    """
    target = MODULES[module]
    src = ROOT / module
    before = src.read_bytes()
    sdir = _session_dir(module)
    sdir.mkdir(parents=True, exist_ok=True)
    db, cfg, logf = sdir / "session.sqlite", sdir / "cosmic-ray.toml", sdir / "log.txt"
    previous = json.loads((sdir / "summary.json").read_text()) if (sdir / "summary.json").exists() else {}
    if rerun_survivors:
        if not db.exists() or previous.get("source_sha256") != hashlib.sha256(before).hexdigest():
            raise SystemExit(f"{module}: no finished session of this text of the module to update; run it in full")
        sample = None
    else:
        db.unlink(missing_ok=True)
    pytest_args = target.pytest_args()
    t_start = time.monotonic()
    with open(logf, "a" if rerun_survivors else "w") as log:
        log.write(f"module {module}\ntests: pytest {shlex.join(pytest_args)}\n")
        # the baseline: the unmutated tests must pass; the fork server learns what to preload
        if plain:
            t0 = time.monotonic()
            r = subprocess.run([sys.executable, "-m", "pytest", *pytest_args], cwd=ROOT, capture_output=True, text=True)
            code, text, baseline = r.returncode, r.stdout + r.stderr, time.monotonic() - t0
        else:
            with tempfile.NamedTemporaryFile("r", suffix=".txt") as names:
                code, text, cold = _run_forked(pytest_args, 3600.0, names.name)
                preload = Path(names.name).read_text().split()
            log.write(f"cold baseline {cold:.1f} s, exit {code}; preloading {len(preload)} modules\n")
            if code == 0:
                import threading

                n = _preload(preload)
                log.write(f"preloaded {n} modules; {threading.active_count()} thread(s) in the server\n")
                code, text, baseline = _run_forked(pytest_args, 3600.0)
        log.write(f"baseline {baseline if code == 0 else float('nan'):.1f} s, exit {code}\n{text[-2000:]}\n")
        log.flush()
        if code != 0:
            raise SystemExit(f"{module}: the unmutated tests fail (exit {code}); see {logf}")
        timeout = max(min_timeout, timeout_factor * baseline)
        sock = Path(tempfile.gettempdir()) / f"ouro-mutation-{os.getpid()}.sock"
        if plain:
            test_command = shlex.join([sys.executable, "-m", "pytest", *pytest_args])
            cr_timeout = timeout
        else:
            test_command = shlex.join([sys.executable, str(Path(__file__).resolve()), "_client", str(sock)])
            cr_timeout = timeout + 60.0  # the server enforces `timeout`; this only guards the client
        _write_config(cfg, module, test_command, cr_timeout)
        if rerun_survivors:
            _reopen_survivors(db, log)
        else:
            _cosmic("init", str(cfg), str(db), log=log)
            subprocess.run([sys.executable, "-m", "cosmic_ray.tools.filters.operators_filter", str(db), str(cfg)],
                           check=True, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            _skip_signature_markers(db, log)
            if sample:
                _keep_sample(db, sample, sample_seed, log)
        log.write(f"per-mutant timeout {timeout:.0f} s\n$ cosmic-ray exec {cfg} {db}\n")
        log.flush()
        cmd = [sys.executable, "-m", "cosmic_ray.cli", "exec", str(cfg), str(db)]
        try:
            if plain:
                subprocess.run(cmd, check=True, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            else:
                server = ForkServer(pytest_args, timeout, sock)
                try:
                    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
                    server.serve_until(proc)
                    if proc.returncode != 0:
                        raise SystemExit(f"cosmic-ray exec failed ({proc.returncode}); see {logf}")
                finally:
                    server.close()
        finally:
            if src.read_bytes() != before:  # cosmic-ray restores each mutant; make sure of it
                src.write_bytes(before)
                log.write("restored the module's original text\n")
    summary = summarise(module)
    wall = time.monotonic() - t_start + (previous.get("wall_s", 0.0) if rerun_survivors else 0.0)
    summary.update(wall_s=round(wall, 1), baseline_s=round(baseline, 1), reruns=previous.get("reruns", 0) + 1 if rerun_survivors else 0,
                   timeout_s=round(timeout), runner="plain" if plain else "fork server",
                   tests=pytest_args, source_sha256=hashlib.sha256(before).hexdigest())
    (sdir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


# ---------------------------------------------------------------------------------------- report


@dataclass
class Mutant:
    operator: str
    line: int
    before: str  # the source line
    after: str  # the mutated line
    outcome: str  # killed / timeout / survived / incompetent
    equivalent: str = ""  # the reason, when listed in mutation_equivalents.toml
    diff: str = field(default="", repr=False)


def _load_equivalents() -> dict[tuple[str, str, str], str]:
    if not EQUIVALENTS.exists():
        return {}
    import toml

    data = toml.loads(EQUIVALENTS.read_text())
    return {(e["module"], _squash(e["line"]), _squash(e["mutant"])): e["why"] for e in data.get("equivalent", [])}


def _squash(code: str) -> str:
    """A line without its whitespace: how equivalents are matched (cosmic-ray adds spaces, e.g. ``( -1.0``)."""
    return "".join(code.split())


def _not_sampled(module: str) -> int:
    import sqlite3

    db_path = _session_dir(module) / "session.sqlite"
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as con:
        return con.execute("SELECT count(*) FROM work_results WHERE output = ?", (NOT_SAMPLED,)).fetchone()[0]


def _mutants(module: str) -> list[Mutant]:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    db_path = _session_dir(module) / "session.sqlite"
    equivalents = _load_equivalents()
    out = []
    with use_db(str(db_path), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            m = item.mutations[0]
            before, after = _changed_line(result.diff or "")
            if result.worker_outcome != WorkerOutcome.NORMAL:
                outcome = "incompetent"
            elif result.test_outcome == TestOutcome.SURVIVED:
                outcome = "survived"
            elif result.test_outcome == TestOutcome.KILLED and (result.output == "timeout" or TIMEOUT_MARK in (result.output or "")[:200]):
                outcome = "timeout"
            elif result.test_outcome == TestOutcome.KILLED:
                outcome = "killed"
            else:
                outcome = "incompetent"
            eq = equivalents.get((module, _squash(before), _squash(after)), "") if outcome == "survived" else ""
            out.append(Mutant(m.operator_name, m.start_pos[0], before, after, outcome, eq, result.diff or ""))
    return sorted(out, key=lambda x: (x.line, x.operator))


def _changed_line(diff: str) -> tuple[str, str]:
    minus = [ln[1:] for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    plus = [ln[1:] for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    return " / ".join(minus), " / ".join(plus)


def summarise(module: str) -> dict:
    ms = _mutants(module)
    count = lambda o: sum(m.outcome == o for m in ms)  # noqa: E731
    survivors = [m for m in ms if m.outcome == "survived"]
    equivalent = [m for m in survivors if m.equivalent]
    total, killed, timeouts = len(ms), count("killed"), count("timeout")
    return {
        "module": module,
        "total": total,
        "population": total + _not_sampled(module),  # mutants of the module; > total when sampled
        "killed": killed + timeouts,
        "timeouts": timeouts,
        "survived": len(survivors),
        "equivalent": len(equivalent),
        "incompetent": count("incompetent"),
        "score": round((killed + timeouts) / total, 4) if total else None,
        "score_without_equivalents": round((killed + timeouts) / (total - len(equivalent)), 4) if total > len(equivalent) else None,
        "open_survivors": [f"{m.line}: {m.before.strip()}  ->  {m.after.strip()}" for m in survivors if not m.equivalent],
    }


def _print_table(rows: list[dict]) -> None:
    print(f"{'module':36s} {'killed':>7s} {'total':>6s} {'of':>5s} {'score':>6s} {'timeouts':>8s} {'survived':>8s} {'equiv.':>6s} {'open':>5s} {'w/o eq.':>7s}")
    for r in rows:
        of = r.get("population", r["total"])
        print(f"{r['module']:36s} {r['killed']:7d} {r['total']:6d} {of:5d} {100 * (r['score'] or 0):5.1f}% {r['timeouts']:8d} "
              f"{r['survived']:8d} {r['equivalent']:6d} {len(r['open_survivors']):5d} {100 * (r['score_without_equivalents'] or 0):6.1f}%")


def _markdown(rows: list[dict]) -> str:
    """The report as Markdown: one table row per module, then each module's equivalents and open survivors."""
    out = ["| module | killed / tested | of | score | timeouts | equivalent | open | score w/o equivalents | wall |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        of = r.get("population", r["total"])
        sampled = f"{of} (sample)" if of > r["total"] else f"{of}"
        out.append(f"| {r['module']} | {r['killed']} / {r['total']} | {sampled} | {100 * (r['score'] or 0):.1f} % | {r['timeouts']} | "
                   f"{r['equivalent']} | {len(r['open_survivors'])} | {100 * (r['score_without_equivalents'] or 0):.1f} % | "
                   f"{r.get('wall_s', 0) / 60:.0f} min |")
    for r in rows:
        out += ["", f"#### {r['module']}", "", f"Tests: `pytest {shlex.join(r.get('tests', []))}`" if r.get("tests") else ""]
        eq = [m for m in _mutants(r["module"]) if m.outcome == "survived" and m.equivalent]
        if eq:
            out += ["", "Equivalent (tools/mutation_equivalents.toml):", ""]
            out += [f"- line {m.line}: `{m.before.strip()}` -> `{m.after.strip()}`: {m.equivalent}" for m in eq]
        if r["open_survivors"]:
            out += ["", "Open survivors:", ""] + [f"- line {m.line}: `{m.before.strip()}` -> `{m.after.strip()}`" for m in _mutants(r["module"])
                                                 if m.outcome == "survived" and not m.equivalent]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------- cli


def _count(module: str) -> int:
    """Mutants of :data:`OPERATORS` in ``module`` (before skipping parameter-list markers)."""
    from cosmic_ray.commands.init import _all_work_items

    return sum(item.mutations[0].operator_name in OPERATORS for item in _all_work_items([ROOT / module], {}))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_client"]:
        return _client(argv[1])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="modules, their test commands and mutant counts")
    run = sub.add_parser("run", help="run cosmic-ray over modules, one at a time")
    run.add_argument("modules", nargs="*")
    run.add_argument("--all", action="store_true", help="every module in MODULES")
    run.add_argument("--plain", action="store_true", help="plain pytest subprocess per mutant instead of the fork server")
    run.add_argument("--timeout-factor", type=float, default=5.0, help="per-mutant timeout = this x the baseline (default 5)")
    run.add_argument("--min-timeout", type=float, default=60.0, help="per-mutant timeout floor, s (default 60)")
    run.add_argument("--sample", type=int, metavar="N", help="test a random sample of N mutants per module")
    run.add_argument("--sample-seed", type=int, default=0, help="seed of --sample (default 0)")
    run.add_argument("--rerun-survivors", action="store_true",
                     help="keep each module's finished session and test only its survivors again (after adding tests)")
    rep = sub.add_parser("report", help="killed / total / timeouts / survivors of the finished sessions")
    rep.add_argument("modules", nargs="*")
    rep.add_argument("--json", type=Path, help="also write the rows to this file")
    rep.add_argument("--markdown", type=Path, help="also write the table, equivalents and open survivors as Markdown")
    sur = sub.add_parser("survivors", help="the surviving mutants of a module (equivalents marked)")
    sur.add_argument("module")
    sur.add_argument("--all", action="store_true", help="include the listed equivalents")
    a = p.parse_args(argv)

    if a.cmd == "list":
        for module, target in MODULES.items():
            n = _count(module) if (ROOT / module).exists() else 0
            print(f"{module:36s} {n:4d} mutants   pytest {shlex.join(target.pytest_args())}")
        return 0
    if a.cmd == "run":
        modules = list(MODULES) if a.all else a.modules
        unknown = [m for m in modules if m not in MODULES]
        if unknown or not modules:
            p.error(f"modules must be among: {', '.join(MODULES)}" + (f" (got {unknown})" if unknown else ""))
        for module in modules:
            s = run_module(module, a.plain, a.timeout_factor, a.min_timeout, a.sample, a.sample_seed, a.rerun_survivors)
            _print_table([s])
            print(f"  wall {s['wall_s']:.0f} s, baseline {s['baseline_s']:.1f} s, timeout {s['timeout_s']} s, {s['runner']}", flush=True)
        return 0
    if a.cmd == "report":
        modules = a.modules or [m for m in MODULES if (_session_dir(m) / "session.sqlite").exists()]
        rows = []
        for m in modules:
            r = summarise(m)
            old = _session_dir(m) / "summary.json"
            if old.exists():
                r.update({k: v for k, v in json.loads(old.read_text()).items() if k in ("wall_s", "baseline_s", "timeout_s", "runner", "reruns", "tests")})
            rows.append(r)
        _print_table(rows)
        for r in rows:
            for s in r["open_survivors"]:
                print(f"  {r['module']}:{s}")
        if a.json:
            a.json.write_text(json.dumps(rows, indent=1))
        if a.markdown:
            a.markdown.write_text(_markdown(rows))
        return 0
    if a.cmd == "survivors":
        for m in _mutants(a.module):
            if m.outcome == "survived" and (a.all or not m.equivalent):
                print(f"--- {a.module}:{m.line} {m.operator}" + (f"  [equivalent: {m.equivalent}]" if m.equivalent else ""))
                print(f"  - {m.before.strip()}\n  + {m.after.strip()}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
