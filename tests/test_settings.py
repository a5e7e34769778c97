"""Settings: flags over the environment over the defaults, read in one module, and an engine import that
leaves the environment alone."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.settings import Settings, wait_variables

ROOT = Path(__file__).resolve().parents[1]


def test_results_root_comes_from_the_flag_then_the_environment_then_dot_results(tmp_path, monkeypatch):
    env = {"LENSBOARD_RESULTS": str(tmp_path / "env")}
    assert Settings.from_env(env, results=tmp_path / "flag").results == tmp_path / "flag"
    assert Settings.from_env(env).results == tmp_path / "env"
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}).results == tmp_path / "results"


def test_data_root_offline_and_worker_switch_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = Settings.from_env({})
    assert (default.data_root, default.offline, default.download, default.start_worker, default.device) == (
        tmp_path / "data",
        False,
        True,
        True,
        "auto",
    )
    env = {
        "LENSBOARD_DATA": "~/datasets",
        "LENSBOARD_OFFLINE": "1",
        "LENSBOARD_NO_WORKER": "1",
        "LENSBOARD_DEVICE": "cpu",
    }
    s = Settings.from_env(env)
    assert s.data_root == Path("~/datasets").expanduser().resolve()
    assert (s.offline, s.download, s.start_worker, s.device) == (True, False, False, "cpu")
    assert Settings.from_env({"LENSBOARD_NO_WORKER": "0"}).start_worker  # "0" keeps the worker on
    assert Settings.from_env(env, data_root=tmp_path / "flag").data_root == tmp_path / "flag"


def test_paths_are_absolute_so_a_worker_started_elsewhere_finds_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({}, results="rel/results", data_root="rel/data")
    assert s.results.is_absolute() and s.data_root.is_absolute()
    assert s.with_results("other").results == tmp_path / "other" and s.with_results(None) is s


def test_importing_every_engine_module_changes_no_environment_variable():
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "engine").rglob("*.py")
        if p.name != "__main__.py"
    )
    code = (
        "import importlib, json, os, sys; before = dict(os.environ); "
        f"[importlib.import_module(m) for m in {modules!r}]; "
        "print(json.dumps({k: v for k, v in os.environ.items() if before.get(k) != v}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {}


def test_only_the_settings_module_reads_the_environment():
    readers = []
    for path in (ROOT / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("environ", "getenv", "putenv")
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
            ):
                readers.append(str(path.relative_to(ROOT)))
    assert set(readers) == {"engine/settings.py"}, readers


def test_the_registry_commands_answer_without_importing_torch(tmp_path):
    for command in (["list", "--json"], ["show", "nope"], ["cancel", "nope"], ["retry", "nope"]):
        code = (
            "import sys; from engine.cli.main import main; code = main(sys.argv[1:]); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, *command, "--results", str(tmp_path / "r")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.stdout.strip().splitlines()[-1].startswith("NO-TORCH"), (command, out.stdout, out.stderr)


@pytest.mark.parametrize(
    ("env", "exported"),
    [
        ({}, {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000"}),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "ACTIVE"}),
        ({"GOMP_SPINCOUNT": "0"}, {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0"}),
        (
            {"OMP_WAIT_POLICY": "passive", "GOMP_SPINCOUNT": "20"},
            {"OMP_WAIT_POLICY": "passive", "GOMP_SPINCOUNT": "20"},
        ),
    ],
)
def test_idle_threads_spin_briefly_then_sleep_unless_the_user_chose_how(env, exported):
    assert wait_variables(env) == exported
    settings = Settings.from_env(env)
    assert settings.wait_variables() == exported
