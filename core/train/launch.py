"""`graftlab train --nproc N`: start torchrun for the user, with the same run on N processes.

torchrun does the work (rendezvous, one process per rank, ending all ranks when one fails);
this module only builds its command line. Single machine: ``--standalone`` (a free local port).
Several machines: ``--nnodes``, ``--node-rank`` and ``--rdzv-endpoint`` pass through unchanged,
with torchrun's static rendezvous (node 0's address and a port as the endpoint), the same line
run on every machine with its own ``--node-rank``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass

from graftlab.core.errors import UserError


@dataclass(frozen=True)
class Launch:
    nproc: int
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None

    @property
    def wanted(self) -> bool:
        """More than one process in all: torchrun is needed."""
        return self.nproc * self.nnodes > 1


def check_launch(launch: Launch) -> None:
    """One sentence for flags torchrun would refuse with a traceback."""
    if launch.nproc < 1:
        raise UserError(f"--nproc is {launch.nproc}; use 1 or more processes per machine.")
    if launch.nnodes < 1:
        raise UserError(f"--nnodes is {launch.nnodes}; use 1 or more machines.")
    if launch.nnodes > 1 and not launch.rdzv_endpoint:
        raise UserError("--nnodes above 1 needs --rdzv-endpoint HOST:PORT (the first machine's "
                        "address and a free port), the same on every machine.")
    if not 0 <= launch.node_rank < launch.nnodes:
        raise UserError(f"--node-rank is {launch.node_rank}; use 0 to {launch.nnodes - 1} (one "
                        "number per machine, 0 on the machine at --rdzv-endpoint).")
    if getattr(sys, "frozen", False) and launch.wanted:
        raise UserError("several processes need Graftlab installed with pip (torchrun runs "
                        "Python); this packaged build trains in one process.")
    if launch.rdzv_endpoint and ":" not in launch.rdzv_endpoint:
        raise UserError(f"--rdzv-endpoint is {launch.rdzv_endpoint!r}; write HOST:PORT, e.g. "
                        "10.0.0.1:29500.")


def torchrun_command(launch: Launch, train_args: list[str]) -> list[str]:
    """The torchrun line that runs `graftlab train_args...` on every rank."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(launch.nproc)]
    if launch.nnodes > 1:
        cmd += ["--nnodes", str(launch.nnodes), "--node-rank", str(launch.node_rank),
                "--rdzv-endpoint", str(launch.rdzv_endpoint)]
    else:
        cmd.append("--standalone")
    return [*cmd, "-m", "graftlab.core.cli", *train_args]


def run_torchrun(launch: Launch, train_args: list[str]) -> int:
    """Run the job to its end and return torchrun's exit code. Ctrl+C reaches the ranks through
    torchrun (each stops after its step, with a save); this process only waits."""
    proc = subprocess.Popen(torchrun_command(launch, train_args))
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return proc.wait()
    finally:
        signal.signal(signal.SIGINT, old)
