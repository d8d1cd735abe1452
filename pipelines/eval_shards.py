"""``ouro eval-gso --shard I/N`` and ``--merge``: one evaluation split over several GPUs or machines.

Shard ``I`` of ``N`` (``I`` counted from 0) scores every N-th object of the list, starting with
object ``I`` (after ``--limit``), as an ordinary evaluation into its own folder
``<output>/shard-I-of-N/`` (run.json, objects/, summary.json, ...): a rerun of the same shard
resumes it like any evaluation. The shards share ``<output>/gt`` (ground-truth renders, each
object rendered once) unless ``--gt-dir`` says otherwise. ``shard.json`` in each shard folder
records the whole object list and the shard's part.

``--merge`` then writes the one ``metrics.csv``, ``summary.json`` and ``report.md`` of the whole
list into ``<output>``, computed from the shards' per-object ``result.json`` with the same tables
code as an unsharded run (:func:`ouro.pipelines.eval_report.summarise`), and links
``<output>/objects/<name>`` to the shard folders, so ``<output>`` reads as an unsharded run
(report links included; a later unsharded run there would resume from it). The merged summary
equals an unsharded run's except for ``run`` (what the invocations did: the counts and seconds of
each shard's last run, summed, plus ``shards``). Machines without a shared file system copy their
``shard-I-of-N/`` folders into one ``<output>`` first.

Every shard must have finished at least once (its ``shard.json`` written) and all must agree on the
object list, the run settings (``run.json``) and the table options (``--count-input``,
``--lpips-net``); otherwise the merge names what differs and writes nothing.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ouro.io.files import read_json, write_text_atomic

from .eval_report import CSV_FILE, REPORT, SUMMARY, report_markdown, summarise, write_csv
from .eval_settings import settings_line

__all__ = ["SHARD_FILE", "Shard", "ShardError", "MergeResult", "parse_shard", "shard_names", "shard_folder", "check_shard_info",
           "write_shard_info", "merge_shards"]

SHARD_FILE = "shard.json"
SHARD_FORMAT = "ouro-eval-gso-shard/1"
_FOLDER = re.compile(r"^shard-(\d+)-of-(\d+)$")
_OBJECTS, _RESULT, _RUN = "objects", "result.json", "run.json"


class ShardError(ValueError):
    """Shards that cannot be used as asked (one line; the CLI exits 2)."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (from 0) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"I/N"`` -> :class:`Shard`; ``0 <= I < N``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise ShardError(f"--shard {text!r}: expected I/N, e.g. 0/4 (shard I of N, counted from 0)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 0 <= index < count:
        raise ShardError(f"--shard {text}: need 0 <= I < N (shards are counted from 0: 0/{max(count, 1)} .. {max(count, 1) - 1}/{max(count, 1)})")
    return Shard(index, count)


def shard_names(names: Sequence[str], shard: Shard) -> list[str]:
    """The shard's objects: every ``count``-th name from ``index`` (balanced; the list's order kept)."""
    if shard.count > len(names):
        raise ShardError(f"--shard {shard}: {shard.count} shards for {len(names)} objects; use at most {len(names)} shards")
    return list(names[shard.index :: shard.count])


def shard_folder(output: Path, shard: Shard) -> Path:
    """Where shard ``I`` of ``N`` writes: ``<output>/shard-I-of-N``."""
    return Path(output) / f"shard-{shard.index}-of-{shard.count}"


def check_shard_info(folder: Path, shard: Shard, names: Sequence[str]) -> None:
    """Refuse to resume a shard folder that was made for another object list."""
    info = read_json(folder / SHARD_FILE)
    if info is not None and list(info.get("objects", [])) != list(names):
        raise ShardError(f"{folder} holds shard {shard} of another object list ({len(info.get('objects', []))} objects, "
                         f"now {len(names)}); use the same --objects and --limit for every shard, or another --output")


def write_shard_info(folder: Path, shard: Shard, names: Sequence[str]) -> Path:
    """``shard.json``: the whole object list and this shard's part (after the shard's run)."""
    data = {"format": SHARD_FORMAT, "index": shard.index, "count": shard.count, "objects": list(names),
            "shard_objects": shard_names(names, shard)}
    path = folder / SHARD_FILE
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")
    return path


@dataclass
class MergeResult:
    """What :func:`merge_shards` wrote."""

    output: Path
    shards: int
    names: list[str]
    summary: dict = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def merge_shards(output: Path) -> MergeResult:
    """Write ``<output>/{metrics.csv, summary.json, report.md}`` of all shards found in ``output``.

    Raises:
        ShardError: no shards, missing or unfinished shards, or shards that disagree (object
            list, run settings, table options); nothing is written then.
    """
    output = Path(output)
    count, folders = _find_shards(output)
    shards = _read_shards(output, count, folders)
    results, failed, owner = _shard_results(shards, folders)
    first = shards.summaries[0]
    extra = {
        "method": first.get("method"),
        "settings": _merged_settings([s.get("settings", {}) for s in shards.summaries]),
        "run": _merged_run([s.get("run", {}) for s in shards.summaries], count),
        "missing_message": _merged_missing_message([s.get("missing_message") for s in shards.summaries], shards.names, failed),
        "ouro_version": first.get("ouro_version"),
    }
    thresholds = tuple(first["fscore_thresholds"])
    summary, rows = summarise(shards.names, results, failed, first["count_input"], first["lpips_net"], thresholds,
                              first["psnr_cap_db"], extra)
    _link_objects(output, folders, owner)
    if shards.top is None:
        merged_from = [folders[i].name for i in range(count)]
        write_text_atomic(output / _RUN, json.dumps({**shards.runs[0], "merged_from": merged_from}, indent=1) + "\n")
    write_csv(output / CSV_FILE, rows, thresholds)
    write_text_atomic(output / SUMMARY, json.dumps(summary, indent=1, allow_nan=False) + "\n")
    settings = summary["settings"]
    write_text_atomic(output / REPORT, report_markdown(summary, rows, summary["method"], settings["resolution"],
                                                        settings_line(settings), _OBJECTS))
    return MergeResult(output, count, shards.names, summary, failed)


def _find_shards(output: Path) -> tuple[int, dict[int, Path]]:
    """N and the ``shard-I-of-N`` folders by I, of the one split in ``output``, all finished."""
    found: dict[int, dict[int, Path]] = {}
    for entry in sorted(output.iterdir()) if output.is_dir() else []:
        match = _FOLDER.match(entry.name)
        if match and entry.is_dir():
            found.setdefault(int(match.group(2)), {})[int(match.group(1))] = entry
    if not found:
        raise ShardError(f"{output}: no shard-I-of-N folders; run `ouro eval-gso --shard I/N -o {output}` for I = 0 .. N-1 first")
    if len(found) > 1:
        raise ShardError(f"{output}: shards of different splits ({', '.join(f'N={n}' for n in sorted(found))}); "
                         "keep the folders of one split")
    count, folders = next(iter(found.items()))
    missing = [i for i in range(count) if i not in folders or not (folders[i] / SHARD_FILE).is_file()]
    if missing:
        raise ShardError(f"{output}: shard(s) {', '.join(f'{i}/{count}' for i in missing)} not finished yet; "
                         f"run `ouro eval-gso --shard {missing[0]}/{count} -o {output}` (same options as the others)")
    return count, folders


@dataclass
class _Shards:
    """The shards' records (entry i: shard i's shard.json, run.json, summary.json), the whole object list and
    ``output``'s own run.json (None before the first merge)."""

    infos: list[dict]
    runs: list[dict]
    summaries: list[dict]
    names: list[str]
    top: dict | None


def _read_shards(output: Path, count: int, folders: dict[int, Path]) -> _Shards:
    """Every shard's records, checked to agree with shard 0's and with ``output``'s."""
    infos = [read_json(folders[i] / SHARD_FILE) or {} for i in range(count)]
    runs = [read_json(folders[i] / _RUN) for i in range(count)]
    summaries = [read_json(folders[i] / SUMMARY) for i in range(count)]
    names = list(infos[0].get("objects", []))
    for i in range(count):
        where = folders[i]
        if list(infos[i].get("objects", [])) != names or infos[i].get("index") != i:
            raise ShardError(f"{where}: made for another object list than shard 0/{count}; rerun it with the same --objects and --limit")
        if runs[i] is None or summaries[i] is None:
            raise ShardError(f"{where}: no {_RUN if runs[i] is None else SUMMARY}; rerun `ouro eval-gso --shard {i}/{count} -o {output}`")
        if runs[i].get("key") != runs[0].get("key"):
            diff = sorted(k for k in set(runs[i]["key"]) | set(runs[0]["key"]) if runs[i]["key"].get(k) != runs[0]["key"].get(k))
            raise ShardError(f"{where}: evaluated with other settings than shard 0/{count} ({', '.join(diff[:3])}); "
                             "every shard needs the same model and options")
        for option in ("count_input", "lpips_net", "psnr_cap_db", "fscore_thresholds"):
            if summaries[i].get(option) != summaries[0].get(option):
                raise ShardError(f"{where}: its tables use {option} = {summaries[i].get(option)!r}, shard 0/{count} "
                                 f"{summaries[0].get(option)!r}; rerun the shards with the same table options")
    objects = output / _OBJECTS
    conflicts = [p for p in objects.iterdir() if not p.is_symlink()] if objects.is_dir() else []
    if conflicts:
        raise ShardError(f"{objects}: holds results of an unsharded run ({conflicts[0].name}, ...); merge into another --output")
    top = read_json(output / _RUN)
    if top is not None and top.get("key") != runs[0].get("key"):
        raise ShardError(f"{output / _RUN}: another evaluation's settings; merge into another --output")
    return _Shards(infos, runs, summaries, names, top)


def _shard_results(shards: _Shards, folders: dict[int, Path]) -> tuple[dict[str, dict], dict[str, str], dict[str, int]]:
    """The per-object results and failure reasons as an unsharded run would have them, and each object's shard."""
    results: dict[str, dict] = {}
    failed: dict[str, str] = {}
    owner: dict[str, int] = {}
    for i, (info, summary) in enumerate(zip(shards.infos, shards.summaries)):
        reasons = {f["object"]: f["reason"] for f in summary.get("failed", [])}
        for name in info.get("shard_objects", []):
            owner[name] = i
            result = read_json(folders[i] / _OBJECTS / name / _RESULT)
            if name in summary.get("scored", []) and result is not None:
                results[name] = result
            else:
                failed[name] = reasons.get(name, "not scored")
    return results, failed, owner


def _link_objects(output: Path, folders: dict[int, Path], owner: dict[str, int]) -> None:
    """``<output>/objects/<name>``: a relative link to the object's folder in its shard (the report's links resolve)."""
    objects = output / _OBJECTS
    objects.mkdir(exist_ok=True)
    for name, i in owner.items():
        link = objects / name
        if link.is_symlink():
            link.unlink()
        if (folders[i] / _OBJECTS / name).is_dir():
            os.symlink(Path("..") / folders[i].name / _OBJECTS / name, link, target_is_directory=True)


def _merged_settings(all_settings: list[dict]) -> dict:
    merged = dict(all_settings[0])
    gts = sorted({s.get("ground_truth") for s in all_settings})
    merged["ground_truth"] = gts[0] if len(gts) == 1 else gts  # one cache shared by the shards, or each its own
    return merged


def _merged_run(runs: list[dict], count: int) -> dict:
    merged: dict = {"shards": count}
    for run in runs:
        for key, value in run.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                merged[key] = merged.get(key, 0) + value
    if "seconds" in merged:
        merged["seconds"] = round(merged["seconds"], 1)  # summed over the shards: compute time, not wall time
    return merged


def _merged_missing_message(messages: list[str | None], names: list[str], failed: dict[str, str]) -> str | None:
    """The shards' "k of n GSO objects are not in ..." lines as one for the whole list."""
    given = [m for m in messages if m]
    if not given:
        return None
    counts = [re.match(r"^(\d+) of (\d+) GSO objects", m) for m in given]
    firsts = [re.search(r"\(first missing: ([^)]*)\)", m) for m in given]
    if not all(counts) or not all(firsts):
        return " | ".join(given)
    missing = {f.group(1) for f in firsts}
    first = next((n for n in names if n in missing), firsts[0].group(1))
    text = re.sub(r"^\d+ of \d+ GSO objects", f"{sum(int(c.group(1)) for c in counts)} of {len(names)} GSO objects", given[0])
    return re.sub(r"\(first missing: [^)]*\)", f"(first missing: {first})", text)
