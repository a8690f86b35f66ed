"""supervisord (PyPI `supervisor`) as a subprocess of a test, with supervisorctl beside it."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from support.procs import group_members, spawn_logged, wait_until

T = TypeVar("T")


class Supervisord:
    """``supervisord -n -c conf`` in its own process group, output collected (through a pipe,
    as in a container). On exit everything left in the group is killed."""

    def __init__(
        self,
        command: Sequence[str],
        conf: Path,
        env: Mapping[str, str],
        cwd: Path,
        ctl: Sequence[str] = ("supervisorctl",),
    ) -> None:
        self.command = [*command, "-n", "-c", str(conf)]
        self.ctl_command = [*ctl, "-c", str(conf)]
        self.env = dict(env)
        self.cwd = cwd
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Supervisord:
        self.proc, self._reader = spawn_logged(self.command, self.cwd, self.env, self.lines)
        return self

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def ctl(self, *args: str, timeout: float = 60) -> str:
        result = subprocess.run(
            [*self.ctl_command, *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return result.stdout + result.stderr

    def pid_of(self, program: str) -> int:
        out = self.ctl("pid", program).strip()
        assert out.isdigit() and out != "0", f"{program} has no pid: {out}\n{self.log}"
        return int(out)

    def wait(self, predicate: Callable[[], T], timeout: float, what: str) -> T:
        """``wait_until``, with supervisord's output in the failure."""
        try:
            return wait_until(predicate, timeout, what, 0.2)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.log}") from None

    def wait_running(self, *programs: str, timeout: float = 60) -> None:
        def running() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisord exited:\n{self.log}")
            status = self.ctl("status")
            return all(
                any(line.split()[:2] == [p, "RUNNING"] for line in status.splitlines())
                for p in programs
            )

        self.wait(running, timeout, f"{programs} RUNNING in supervisord")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        for pid in group_members(self.proc.pid):
            os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
