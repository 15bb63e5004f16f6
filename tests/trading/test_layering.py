"""The import-linter contracts (``pyproject.toml``) hold on the tree, and a violating import in
the trading core fails them, naming the contract it breaks.

Why a copy: the contracts are checked as ``make lint`` checks them, but on a copy of the source
packages with one module added to ``trading/core``, so the real tree is never touched. The copy
comes first on ``PYTHONPATH``, so import-linter builds its graph from it, not from the editable
install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("trading", "torghut", "dataflows", "operators", "api")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CORE_CONTRACT = "trading.core imports no adapter, storage, broker, ClickHouse, HTTP, stream"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("layering")
    keep_sources = shutil.ignore_patterns("__pycache__", "*.so", "*.c", "*.html")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package, ignore=keep_sources)
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_tree_keeps_every_contract(source_copy: Path) -> None:
    result = lint_imports(source_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        ("import sqlalchemy", "sqlalchemy"),
        ("from trading.adapters.store import TradingStore", "trading.adapters.store"),
        ("from alpaca.trading.client import TradingClient", "alpaca"),
        ("import clickhouse_connect", "clickhouse_connect"),
        ("import bytewax.operators", "bytewax"),
        ("import requests", "requests"),
        ("from torghut.sim.broker import BrokerSimulator", "torghut.sim"),
    ],
)
def test_a_violating_import_in_the_core_breaks_the_core_contract(
    source_copy: Path, statement: str, forbidden: str
) -> None:
    bad = source_copy / "trading" / "core" / "bad_import.py"
    bad.write_text(f'"""Imports what the core must not."""\n\n{statement}\n')
    try:
        result = lint_imports(source_copy)
    finally:
        bad.unlink()
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)
    assert len(broken) == 2, result.stdout
    assert CORE_CONTRACT in " ".join(broken[1].split()), result.stdout
    assert f"trading.core.bad_import -> {forbidden}" in result.stdout, result.stdout
