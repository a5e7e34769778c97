"""The embed, tsne, search and retrieval-eval commands: JSON shapes, results, one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from engine.cli.main import main
from engine.ml.data import load_dataset
from engine.ml.embed import load_embeddings
from engine.runs.store import Store


@pytest.fixture(scope="module")
def cli_root(finished_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "results"
    shutil.copytree(finished_root, root)
    store = Store(root)
    run_id = next(r.id for r in store.list_runs() if r.arch == "simple_cnn")
    store.close()
    return root, run_id


def run_json(capsys, *argv) -> object:
    code = main(list(argv))
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_embed_writes_the_embeddings_and_reports_them_as_json(cli_root, capsys):
    root, run_id = cli_root
    out = run_json(capsys, "embed", run_id, "--results", str(root), "--json")
    assert out["run"] == run_id and out["dim"] == 128 and out["train"] == 4000 and out["test"] == 1000
    assert load_embeddings(root / "runs" / run_id, "test").vectors.shape == (1000, 128)


def test_search_json_is_a_best_first_list_of_train_rows_with_label_and_score(cli_root, capsys):
    root, run_id = cli_root
    rows = run_json(capsys, "search", run_id, "--query-index", "7", "--k", "5", "--results", str(root), "--json")
    assert isinstance(rows, list) and len(rows) == 5
    assert all(set(r) == {"index", "label", "score"} for r in rows)
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    run_dir = root / "runs" / run_id
    train, test = load_embeddings(run_dir, "train"), load_embeddings(run_dir, "test")
    sims = (train.vectors / np.linalg.norm(train.vectors, axis=1, keepdims=True)) @ (
        test.vectors[7] / np.linalg.norm(test.vectors[7])
    )
    assert [r["index"] for r in rows] == np.argsort(-sims)[:5].tolist()
    assert [r["label"] for r in rows] == train.labels[[r["index"] for r in rows]].tolist()


def test_search_by_an_image_file_finds_the_same_images_as_by_its_test_index(cli_root, capsys, tmp_path):
    root, run_id = cli_root
    ds = load_dataset("mnist_sample")
    raw = ds.test.x[7, 0].numpy()  # as stored (uint8)
    path = tmp_path / "digit.png"
    Image.fromarray(raw).save(path)
    by_file = run_json(capsys, "search", run_id, "--image", str(path), "--k", "3", "--results", str(root), "--json")
    by_index = run_json(capsys, "search", run_id, "--query-index", "7", "--k", "3", "--results", str(root), "--json")
    assert [r["index"] for r in by_file] == [r["index"] for r in by_index]


def test_retrieval_eval_json_names_the_metrics_and_k(cli_root, capsys):
    root, run_id = cli_root
    out = run_json(capsys, "retrieval-eval", run_id, "--k", "5", "--results", str(root), "--json")
    for key in ("precision_at_k", "recall_at_k", "map_at_k", "knn_accuracy"):
        assert 0.0 <= out[key] <= 1.0
    assert out["k"] == 5 and out["queries"] == 1000 and len(out["per_class"]) == 10
    assert out["knn_accuracy"] > 0.5  # a trained CNN's nearest neighbour is mostly the right digit
    approx = run_json(capsys, "retrieval-eval", run_id, "--index", "hnsw", "--results", str(root), "--json")
    assert 0.0 <= approx["recall_vs_exact"] <= 1.0 and approx["index"] == "hnsw"


def test_tsne_json_names_the_coordinates_and_the_test_rows_they_stand_for(cli_root, capsys):
    root, run_id = cli_root
    argv = ["tsne", run_id, "--perplexity", "10", "--max-points", "200", "--results", str(root), "--json"]
    out = run_json(capsys, *argv)
    coords, indices = np.load(out["path"]), np.load(out["indices"])
    assert coords.shape == (200, 2) and indices.shape == (200,) and indices.max() < 1000
    assert not out["cached"]
    assert run_json(capsys, *argv)["cached"]  # the second time comes from the cache


def test_bad_requests_are_one_line_errors_with_exit_code_2(cli_root, capsys, tmp_path):
    root, run_id = cli_root
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    cases = [
        (["search", run_id, "--query-index", "5000", "--results", str(root)], "--query-index must be from 0 to 999"),
        (["search", run_id, "--image", str(bad), "--results", str(root)], "not an image"),
        (["search", run_id, "--query-index", "1", "--k", "0", "--results", str(root)], "k must be an integer"),
        (["tsne", run_id, "--perplexity", "500", "--results", str(root)], "perplexity must be"),
        (["retrieval-eval", "no-such-run", "--results", str(root)], "no run 'no-such-run'"),
        (["embed", "--results", str(root)], "give a RUN"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.startswith("error: ") and err.count("\n") == 1, err


def test_search_image_refuses_a_folder_a_device_and_a_huge_file_in_one_line_without_reading_them(
    cli_root, capsys, tmp_path
):
    root, run_id = cli_root
    sparse = tmp_path / "huge.png"
    with open(sparse, "wb") as f:
        f.truncate(3 * 1024**3)  # read whole, this took 3.9 GB
    cases = [
        (tmp_path, "is a folder"),
        ("/dev/zero", "not a regular file"),  # /dev/zero: killed by the OOM killer
        (sparse, "huge.png is 3.2 GB; the limit is 10 MB"),
        (tmp_path / "none.png", "no such file"),
    ]
    for path, message in cases:
        assert main(["search", run_id, "--image", str(path), "--results", str(root)]) == 2, path
        err = capsys.readouterr().err
        assert message in err and err.startswith("error: ") and err.count("\n") == 1, err


def test_a_truncated_model_or_embeddings_file_is_one_line_in_every_command(finished_root, tmp_path, capsys):
    root = tmp_path / "results"
    shutil.copytree(finished_root, root)
    store = Store(root)
    run_id = next(r.id for r in store.list_runs() if r.arch == "basic_nn")
    store.close()
    run_dir = root / "runs" / run_id
    model = (run_dir / "model.pt").read_bytes()
    (run_dir / "model.pt").write_bytes(model[: len(model) // 2])
    shutil.rmtree(run_dir / "embeddings", ignore_errors=True)
    for argv in (
        ["embed", run_id],
        ["tsne", run_id, "--method", "pca"],
        ["search", run_id, "--query-index", "0"],
        ["retrieval-eval", run_id],
    ):
        assert main([*argv, "--results", str(root)]) == 2, argv
        err = capsys.readouterr().err.splitlines()  # after "computing the embeddings of run ..." when missing
        assert err[-1].startswith("error: ") and "model.pt cannot be read" in err[-1], err
        assert "Traceback" not in "".join(err)
    (run_dir / "model.pt").write_bytes(model)
    assert main(["embed", run_id, "--results", str(root)]) == 0
    capsys.readouterr()
    vectors = run_dir / "embeddings" / "train.npy"
    vectors.write_bytes(vectors.read_bytes()[:1000])
    for argv in (["search", run_id, "--query-index", "0"], ["retrieval-eval", run_id]):
        assert main([*argv, "--results", str(root)]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "train embeddings of run" in err and "are damaged" in err, err
        assert f"python -m engine embed {run_id}" in err
