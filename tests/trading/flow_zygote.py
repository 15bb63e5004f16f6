"""A pre-imported parent that forks one ``python -m bytewax.run dataflows.trading:flow`` per run.

Why: importing alpaca-py, bytewax, chdb and SQLAlchemy costs seconds per process on the CI
machine, and the crash test starts the trading flow more than twenty times. The zygote imports
them once (opening nothing: no ClickHouse engine, no store, no threads) and ``fork``s a child per
run; the child runs ``bytewax.run`` exactly as the command line does, in its own process, which
the test then kills with SIGKILL.

Protocol on stdin/stdout, one line each: ``run <log path> <bytewax.run args...>`` → ``pid N``,
then ``exit CODE`` when the child ends (``-9`` when killed). ``quit`` ends the zygote.
"""

from __future__ import annotations

import os
import runpy
import sys
import traceback

import dataflows.trading  # noqa: F401 - the point: pay the import cost once, before forking


def _child(log_path: str, args: list[str]) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.argv = ["bytewax.run", *args]
    try:
        runpy.run_module("bytewax.run", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        os._exit(exc.code if isinstance(exc.code, int) else 1)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main() -> None:
    for line in sys.stdin:
        parts = line.split()
        if not parts or parts[0] == "quit":
            return
        pid = os.fork()
        if pid == 0:
            _child(parts[1], parts[2:])
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(f"exit {code}", flush=True)


if __name__ == "__main__":
    main()
