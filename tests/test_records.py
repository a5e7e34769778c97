"""A run as the registry describes it: its id, and its record as `list --json` and `show --json` print it."""

from __future__ import annotations

import json
import re

from engine.config import TrainConfig
from engine.runs.records import new_run_id


def test_run_ids_sort_by_creation_time_and_are_safe_folder_names():
    ids = [new_run_id(t) for t in (1_700_000_000.0, 1_700_000_000.25, 1_700_000_001.0, 1_800_000_000.5)]
    assert ids == sorted(ids)
    assert all(re.fullmatch(r"[0-9]{8}-[0-9]{6}-[0-9]{6}-[0-9a-f]{4}", i) for i in ids)


def test_run_record_json_carries_what_list_promises(store):
    run_id = store.create_run(TrainConfig(arch="tiny_cnn", batch_size=32, lr=0.1))
    store.record_epoch(run_id, {"epoch": 1, "test_acc": 0.5, "test_loss": 1.0, "seconds": 1.0})
    info = store.get_run(run_id).to_json()
    assert info["id"] == run_id and info["state"] == "queued" and info["path"] == str(store.run_dir(run_id))
    assert (info["arch"], info["dataset"], info["batch_size"], info["lr"], info["test_acc"]) == (
        "tiny_cnn",
        "mnist_sample",
        32,
        0.1,
        0.5,
    )
    json.dumps(info)  # serialisable as is
