"""The runbooks (``docs/runbooks/``) name alerts that exist and commands that exist.

* every ``Torghut…`` alert a page names is a rule of ``infra/prometheus/torghut-alerts.yml``,
  and every rule's ``runbook`` page names it;
* every command line of a ``bash`` block is checked by its program: ``python -m MOD`` — the
  module exists and runs (``--help`` answers) and knows the subcommand and the options used
  (``bytewax.run`` also: the flow module exists); ``make T`` — the target exists; ``alembic`` —
  installed, its config file exists; ``.venv/bin/X`` — the Makefile installs X; ``curl`` — the
  path is a route of the API (``python -m api``) or ``/metrics`` of a dataflow's
  ``METRICS_PORT``; ``kubectl`` — the named Deployment/StatefulSet/Service/Job/Secret/PVC is in
  ``infra/k8s/base``, and the command after ``exec … --`` is checked the same way; leading
  ``NAME=value`` assignments are settings of ``torghut/config.py``; repository paths exist;
* other programs are the standard tools an operator has (``jq``, ``grep``, ``clickhouse-client``).
"""

from __future__ import annotations

import functools
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from infra.k8s.check import known_settings
from tests.ops.references import REPO, RUNBOOKS, alerts

PAGES = sorted(p for p in RUNBOOKS.glob("*.md") if p.name != "README.md")
EXTERNAL = {"jq", "grep", "clickhouse-client", "df", "ls"}
"""Programs every operator machine or image has; not ours to check."""
K8S_BASE = REPO / "infra" / "k8s" / "base"
ALERT = re.compile(r"\bTorghut[A-Z][A-Za-z]+\b")
BASH = re.compile(r"```bash\n(.*?)```", re.DOTALL)
LINK = re.compile(r"\]\(([^)#]+\.md)\)")
KINDS = {"deploy", "deployment", "statefulset", "sts", "svc", "ksvc", "job", "secret", "pvc"}


def commands(page: Path) -> list[str]:
    return [
        line.strip()
        for block in BASH.findall(page.read_text())
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_every_scenario_of_the_design_has_a_page() -> None:
    names = {p.stem for p in PAGES}
    assert names == {
        "websocket-auth-and-connection-limit",
        "kafka-produce-consume",
        "checkpoint-stall",
        "clickhouse-disk-replicas",
        "trading-loop",
        "dashboard",
        "disaster-recovery",
    }
    for page in PAGES:
        text = page.read_text()
        for section in ("## Symptom" if page.stem != "disaster-recovery" else "## Alerts",
                        "## Diagnose", "## Recover", "## Verify"):  # fmt: skip
            assert section in text, f"{page.name}: no {section!r}"
        assert commands(page), f"{page.name} names no command"


def test_every_alert_named_exists_and_every_alert_is_named_by_its_runbook() -> None:
    rules = alerts()
    for page in [*PAGES, RUNBOOKS / "README.md"]:
        unknown = set(ALERT.findall(page.read_text())) - set(rules)
        assert unknown == set(), f"{page.name} names alerts that do not exist: {unknown}"
    for name, rule in rules.items():
        page = REPO / rule["annotations"]["runbook"]
        assert name in page.read_text(), f"{page.name} does not say what to do about {name}"


def test_links_between_pages_resolve() -> None:
    for page in [*PAGES, RUNBOOKS / "README.md"]:
        for target in LINK.findall(page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name}: broken link {target}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_every_command_exists(page: Path) -> None:
    problems = [f"{line!r}: {p}" for line in commands(page) for p in check_line(line)]
    assert problems == [], "\n".join(problems)


def test_the_checker_rejects_what_does_not_exist() -> None:
    """The command check can fail: each kind of wrong command is reported."""
    wrong = {
        "python -m trading.nothing status": "no module trading.nothing",
        "python -m trading.controls explode --reason x": "'explode'",
        "python -m torghut.recovery list --flows ta": "'--flows'",
        "python -m bytewax.run dataflows.nothing:flow": "no module dataflows.nothing",
        "make deploy-everything": "no make target",
        "curl -s http://torghut-api.x.svc/trading/nothing": "not a route",
        "kubectl -n x rollout restart deploy/torghut-nothing": "torghut-nothing",
        "kubectl -n x exec deploy/torghut-ingest -- python -m trading.nothing": "trading.nothing",
        "TA_NOTHING=1 python -m torghut.clickhouse": "TA_NOTHING",
        "python -m torghut.clickhouse --dir infra/nothing": "infra/nothing",
        "terraform apply": "unknown program",
    }
    for line, reason in wrong.items():
        found = check_line(line)
        assert any(reason in p for p in found), (line, found)


# --- the checker -----------------------------------------------------------------------------


def check_line(line: str) -> list[str]:
    problems: list[str] = []
    for segment in re.split(r"\s(?:\||&&)\s", line):
        problems += check_command(shlex.split(segment))
    return problems


def check_command(words: list[str]) -> list[str]:
    settings = known_settings()
    problems: list[str] = []
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        name = words.pop(0).split("=", 1)[0]
        if name not in settings:
            problems.append(f"{name} is not a setting of torghut/config.py")
    if not words:
        return problems
    program, args = words[0], words[1:]
    problems += [f"{a} does not exist" for a in args if _repo_path(a) and not (REPO / a).exists()]
    if program == "python":
        problems += _python(args)
    elif program == "make":
        problems += [f"no make target {t!r}" for t in args if t not in _make_targets()]
    elif program == "alembic":
        if not (Path(sys.executable).parent / "alembic").exists():
            problems.append("alembic is not installed in the venv")
    elif program.startswith(".venv/bin/"):
        if program.removeprefix(".venv/bin/") not in (REPO / "Makefile").read_text():
            problems.append(f"the Makefile does not install {program}")
    elif program == "curl":
        problems += _curl(args)
    elif program == "kubectl":
        problems += _kubectl(args)
    elif program not in EXTERNAL:
        problems.append(f"unknown program {program!r}")
    return problems


def _python(args: list[str]) -> list[str]:
    if len(args) < 2 or args[0] != "-m":
        return [f"python {' '.join(args)}: only `python -m MODULE` is documented"]
    module, rest = args[1], args[2:]
    if not _runnable(module):
        return [f"no module {module} with a __main__"]
    problems = []
    if module == "bytewax.run":
        flow_module = rest[0].split(":", 1)[0] if rest else ""
        if importlib.util.find_spec(flow_module) is None:
            problems.append(f"no module {flow_module}")
        rest = rest[1:]
    help_text = _help(module)
    if help_text is None:
        return [f"python -m {module} --help fails"]
    sub = rest[0] if rest and not rest[0].startswith("-") and module != "bytewax.run" else None
    if sub is not None and not re.search(rf"[{{,\s]{re.escape(sub)}[,}}\s]", help_text):
        problems.append(f"python -m {module} has no subcommand {sub!r}")
    if sub is not None and not problems:  # options are the subcommand's (argparse sub-parsers)
        help_text = _help(module, sub) or help_text
    for option in (a.split("=", 1)[0] for a in rest if a.startswith("-")):
        if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text):
            problems.append(f"python -m {module} has no option {option!r}")
    return problems


def _curl(args: list[str]) -> list[str]:
    urls = [a for a in args if a.startswith("http")]
    problems = []
    for url in urls:
        parsed = urlparse(url)
        if parsed.port == 3030:
            if parsed.path != "/metrics":
                problems.append(f"{url}: a dataflow serves only /metrics on METRICS_PORT")
        elif "torghut-api" in (parsed.hostname or "") and parsed.path not in _api_routes():
            problems.append(f"{url}: {parsed.path} is not a route of the API")
    return problems


def _kubectl(args: list[str]) -> list[str]:
    if "--" in args:
        at = args.index("--")
        return _kubectl(args[:at]) + check_command(args[at + 1 :])
    problems = []
    for i, arg in enumerate(args):
        kind, _, name = arg.partition("/")
        if not name and i > 0 and args[i - 1] in KINDS and not arg.startswith("-"):
            kind, name = args[i - 1], arg
        if kind in KINDS and name and name not in _k8s_text():
            problems.append(f"{kind} {name} is not in infra/k8s/base")
        if re.fullmatch(r"torghut-[a-z]+-\d+", arg) and arg.rsplit("-", 1)[0] not in _k8s_text():
            problems.append(f"pod {arg} belongs to no StatefulSet of infra/k8s/base")
    return problems


def _repo_path(arg: str) -> bool:
    return arg.startswith(("infra/", "docs/", "bench/", "dataflows/", "operators/", "torghut/"))


@functools.cache
def _runnable(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    if spec is None:
        return False
    if spec.submodule_search_locations is not None:
        return importlib.util.find_spec(f"{module}.__main__") is not None
    origin = Path(spec.origin or "")
    return origin.is_file() and "__main__" in origin.read_text()


@functools.cache
def _help(module: str, sub: str | None = None) -> str | None:
    done = subprocess.run(
        [sys.executable, "-m", module, *([sub] if sub else []), "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.stdout + done.stderr if done.returncode == 0 else None


@functools.cache
def _make_targets() -> frozenset[str]:
    text = (REPO / "Makefile").read_text()
    return frozenset(re.findall(r"^([a-z][\w-]*):", text, re.MULTILINE))


@functools.cache
def _k8s_text() -> str:
    return "\n".join(p.read_text() for p in K8S_BASE.glob("*.yaml"))


@functools.cache
def _api_routes() -> frozenset[str]:
    from api.app import create_app
    from torghut.config import Settings

    app = create_app(Settings())
    return frozenset(route.path for route in app.routes)
