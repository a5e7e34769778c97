"""`python -m engine delete RUN` (engine/cli/delete.py): the Runs page's Delete, on the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from engine.cli.main import main
from engine.config import TrainConfig
from engine.errors import RunNotFound
from engine.runs.records import RunState
from engine.runs.store import Store

ROOT = Path(__file__).resolve().parents[1]


def test_delete_removes_a_run_named_by_a_prefix_with_its_folder(tmp_path, capsys):
    store = Store(tmp_path)
    keep = store.create_run(TrainConfig(), RunState.DONE, now=1_700_000_000.0)
    gone = store.create_run(TrainConfig(), RunState.DONE, now=1_800_000_000.0)
    assert main(["delete", gone[:8], "--results", str(tmp_path)]) == 0
    assert f"deleted run {gone}" in capsys.readouterr().out
    assert not store.run_dir(gone).exists() and [r.id for r in store.list_runs()] == [keep]
    store.close()


def test_delete_cancels_a_queued_run_first(tmp_path, capsys):
    from engine.runs import jobs, sweeps

    store = Store(tmp_path)
    run_id = sweeps.submit(store, TrainConfig(arch="basic_nn", epochs=1, train_limit=100))
    assert main(["delete", run_id, "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "removed queued train job" in out and f"deleted run {run_id}" in out
    assert jobs.queue_length(store) == 0
    store.close()


def test_delete_of_a_row_with_a_path_for_an_id_removes_only_the_row(tmp_path, capsys):
    results = tmp_path / "a" / "results"
    store = Store(results)
    victim = tmp_path / "a" / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    store.conn.execute(
        "INSERT INTO runs (id, created, updated, state, dataset, arch, config, epochs)"
        " VALUES ('../../victim', 0, 0, 'done', 'mnist_sample', 'basic_nn', ?, 1)",
        (json.dumps(TrainConfig().to_dict()),),
    )
    assert main(["delete", "../../victim", "--results", str(results)]) == 0
    assert "no file was touched" in capsys.readouterr().out
    assert (victim / "precious.txt").exists() and store.invalid_rows() == []
    store.close()


def test_delete_of_an_unknown_run_is_one_line_and_the_command_never_imports_torch(tmp_path):
    script = (
        "import sys\n"
        "from engine.cli.delete import COMMANDS\n"
        "import argparse\n"
        f"args = argparse.Namespace(run='nope', results={str(tmp_path)!r})\n"
        "try:\n"
        "    COMMANDS['delete'][0](args)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()
    assert first.startswith(RunNotFound.__name__) and "no run 'nope'" in first
    assert second == "False"
