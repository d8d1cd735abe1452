"""Training on several machines: which machine this is, and where the main process listens.

``ouro train --gpus 8 --num-machines 2 --machine-rank R --main-process-ip HOST`` runs the same
command on every machine (``R`` = 0 on the machine whose address is ``HOST``); each starts its
``--gpus`` processes through ``accelerate launch`` with accelerate's own multi-node arguments
(``--num_machines``, ``--machine_rank``, ``--main_process_ip``, ``--main_process_port``; DeepSpeed
with ``--deepspeed_multinode_launcher standard``: each machine launches its own processes, no
SSH). The world size is ``gpus x num_machines``; ranks ``R * gpus .. R * gpus + gpus - 1`` run here.

Unset options are read from the environment a cluster scheduler sets, explicit options first:

* number of machines: ``$SLURM_NNODES``, else ``$NNODES`` (the variable torchrun's examples use);
* this machine's rank: ``$SLURM_NODEID``, else ``$NODE_RANK``;
* the main process: ``$MASTER_ADDR`` and ``$MASTER_PORT`` (port default 29500).

The run folder (``--output``) must be one folder that every machine sees (a shared file system):
the main process writes config.json, metrics and ``final/``, and every rank writes its part of each
checkpoint into it. :func:`check_shared_folder` verifies that at the start of a run.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_PORT", "Machines", "resolve_machines", "check_shared_folder"]

DEFAULT_PORT = 29500  #: accelerate's and torchrun's default


@dataclass(frozen=True)
class Machines:
    """This launch's place among the machines of a run."""

    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None  #: address of machine 0 (needed when num_machines > 1)
    main_process_port: int | None = None  #: its port (the same on every machine); None: a free one (one machine)

    @property
    def multi(self) -> bool:
        return self.num_machines > 1


def _int_env(env: Mapping[str, str], *names: str) -> tuple[int | None, str | None]:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            try:
                return int(value), name
            except ValueError:
                raise ValueError(f"${name}={value!r} is not a whole number") from None
    return None, None


def resolve_machines(
    num_machines: int | None = None,
    machine_rank: int | None = None,
    main_process_ip: str | None = None,
    main_process_port: int | None = None,
    env: Mapping[str, str] | None = None,
    default_num_machines: int = 1,
) -> Machines:
    """The options given, completed from ``env`` (default ``os.environ``; see the module docstring),
    else ``default_num_machines`` (a stored run's) and rank 0.

    Raises:
        ValueError: one line naming the option (or variable) that is missing or out of range.
    """
    env = os.environ if env is None else env
    source = {"num": "--num-machines", "rank": "--machine-rank"}
    if num_machines is None:
        num_machines, name = _int_env(env, "SLURM_NNODES", "NNODES")
        source["num"] = f"${name}" if name else source["num"]
    if machine_rank is None:
        machine_rank, name = _int_env(env, "SLURM_NODEID", "NODE_RANK")
        source["rank"] = f"${name}" if name else source["rank"]
    num_machines = default_num_machines if num_machines is None else num_machines
    machine_rank = 0 if machine_rank is None else machine_rank
    if num_machines < 1:
        raise ValueError(f"{source['num']} {num_machines}: need at least 1 machine")
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"{source['rank']} {machine_rank}: the machine rank must be 0 .. {num_machines - 1} "
                         f"for {num_machines} machine(s)")
    if num_machines == 1:
        return Machines(1, 0, main_process_ip, main_process_port)
    main_process_ip = main_process_ip or env.get("MASTER_ADDR", "").strip() or None
    if main_process_ip is None:
        raise ValueError(f"{num_machines} machines need the main machine's address: pass --main-process-ip HOST "
                         "(machine 0's address, the same on every machine) or set $MASTER_ADDR")
    if main_process_port is None:
        port, _ = _int_env(env, "MASTER_PORT")
        main_process_port = port if port is not None else DEFAULT_PORT
    if not 0 < main_process_port < 65536:
        raise ValueError(f"--main-process-port {main_process_port}: not a TCP port")
    return Machines(num_machines, machine_rank, main_process_ip, main_process_port)


def check_shared_folder(accelerator, folder: Path) -> None:
    """Make sure every rank sees the same ``folder`` (a shared file system); all ranks call this.

    The main process writes a random token into ``folder``; each rank reads it back; if any rank
    does not find it, every rank raises the same ``ValueError`` (no rank is left waiting).
    """
    from accelerate.utils import broadcast_object_list, gather_object

    folder = Path(folder)
    marker = folder / ".shared-folder-check"
    token = [secrets.token_hex(16) if accelerator.is_main_process else None]
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(token[0], encoding="utf-8")
    broadcast_object_list(token, from_process=0)
    accelerator.wait_for_everyone()
    try:
        seen = marker.read_text(encoding="utf-8") == token[0]
    except OSError:
        seen = False
    views = gather_object([(accelerator.process_index, seen)])
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        marker.unlink(missing_ok=True)
    blind = sorted(rank for rank, ok in views if not ok)
    if blind:
        raise ValueError(f"{folder}: rank(s) {', '.join(map(str, blind))} do not see the run folder the main process "
                         "writes; with several machines --output must be on a file system all of them share")
