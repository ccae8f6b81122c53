"""`avatar-node serve` in a process of its own: real signals, a real log, its own CPU time; it
can be stopped, killed and restarted on the same port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

#: Every node started here; `kill_leftovers` ends those a failing test left running.
RUNNING: list[NodeProcess] = []


class NodeProcess:
    """`NodeProcess("--max-sessions", "6")`: extra `serve` options as arguments, on loopback
    at `port` (0: any free port). Its output is read as it comes (`stdout`, `stderr`: lists of
    lines), so the node never blocks on a full pipe."""

    def __init__(self, *args: str, port: int = 0, env: dict[str, str] | None = None, timeout: float = 60.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "avatar_node.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        RUNNING.append(self)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        ready = threading.Event()

        def pump(pipe, lines: list[str], watch: bool) -> None:  # type: ignore[no-untyped-def]
            for line in pipe:
                lines.append(line)
                if watch and "ready on" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=pump, args=(self.proc.stdout, self.stdout, True), daemon=True).start()
        threading.Thread(target=pump, args=(self.proc.stderr, self.stderr, False), daemon=True).start()
        found = None
        if ready.wait(timeout) and self.proc.poll() is None:
            found = next((re.search(r"ready on (\S+):(\d+)", line) for line in self.stdout if "ready on" in line), None)
        if found is None:
            self.kill()
            raise RuntimeError(f"node did not start: {''.join(self.stdout + self.stderr)}")
        self.port = int(found.group(2))
        self.target = f"{found.group(1)}:{self.port}"

    @property
    def log(self) -> str:
        return "".join(self.stderr)

    def assert_clean_log(self) -> None:
        bad = [line for line in self.stderr if any(w in line for w in ("Traceback", "ERROR", "Task was destroyed",
                                                                          "Exception", "exception"))]
        assert not bad, "".join(self.stderr[-60:])

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; a node that does not exit in time is killed (and reported as -9)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped node could not act on SIGTERM
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return -9

    def close(self) -> None:
        """Stop it however it is (running, stopped by SIGSTOP, already gone)."""
        self.terminate(10.0)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


def loopback_node(port: int = 0) -> NodeProcess:
    """The node the client-side tests run against: 4 sessions, a 1 s drain grace."""
    return NodeProcess("--max-sessions", "4", "--grace", "1", port=port)


def kill_leftovers() -> None:
    """Kill every node still running (whatever a test did, none outlives the test run)."""
    for node in RUNNING:
        if node.proc.poll() is None:
            node.proc.kill()
