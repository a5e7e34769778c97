"""The Inspect page in Streamlit's AppTest: finished runs, no runs, a chosen run, uploads."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from engine.runs.store import Store

PAGE = str(Path(__file__).resolve().parents[1] / "dashboard" / "pages" / "inspect.py")


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("LENSBOARD_NO_WORKER", "1")
    monkeypatch.setenv("LENSBOARD_DATA", str(tmp_path / "data"))
    return monkeypatch


def page(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    return at.run()


def run_ids(root) -> dict[str, str]:
    store = Store(root)
    try:
        return {r.arch: r.id for r in store.list_runs()}
    finally:
        store.close()


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def texts(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [c.value for c in at.code])


def test_inspect_without_runs_says_where_to_start(env, tmp_path):
    env.setenv("LENSBOARD_RESULTS", str(tmp_path / "empty"))
    at = page()
    assert not at.exception
    assert any("No runs yet" in i.value for i in at.info)
    assert not at.selectbox


def test_inspect_shows_the_latest_run_with_trace_filters_and_mistakes(env, finished_root):
    env.setenv("LENSBOARD_RESULTS", str(finished_root))
    at = page()
    assert not at.exception and not at.error
    assert at.selectbox(key="inspect_run").value == run_ids(finished_root)["simple_cnn"]  # the newest
    shown = texts(at)
    assert "1x28x28 → 16x28x28 → 16x14x14 → 32x14x14 → 32x7x7 → 1568 → 128 → 10" in shown
    assert "206,922 parameters in total" in shown
    assert "The 16 filters of the first convolution layer" in shown
    assert "block 2: Conv2d(16→32, 3x3, pad 1) → ReLU → MaxPool2d(2x2) → **32x7x7**" in shown
    assert "Misclassified test images" in [s.value for s in at.subheader]
    assert {m.label for m in at.metric} >= {"Test accuracy", "Parameters"}
    assert any(b.label.startswith("Download model.pt") for b in at.get("download_button"))
    assert at.query_params["run"] in (run_ids(finished_root)["simple_cnn"], [run_ids(finished_root)["simple_cnn"]])


def test_the_run_query_parameter_picks_the_run(env, finished_root):
    env.setenv("LENSBOARD_RESULTS", str(finished_root))
    mlp = run_ids(finished_root)["basic_nn"]
    at = page({"run": mlp})
    assert not at.exception
    assert at.selectbox(key="inspect_run").value == mlp
    assert any("has no convolution layers" in i.value for i in at.info)  # an MLP has no filters
    assert "109,386 parameters in total" in texts(at)


def test_an_unknown_run_in_the_address_falls_back_with_a_warning(env, finished_root):
    env.setenv("LENSBOARD_RESULTS", str(finished_root))
    at = page({"run": "no-such-run"})
    assert not at.exception
    assert any("no-such-run" in w.value for w in at.warning)


def test_an_uploaded_digit_is_predicted_with_three_probabilities(env, finished_root):
    env.setenv("LENSBOARD_RESULTS", str(finished_root))
    at = page()
    image = Image.new("L", (60, 60), 255)
    image.paste(0, (26, 8, 34, 52))  # a dark "1" on white paper
    at.file_uploader(key="upload").set_value(("one.png", png(image), "image/png")).run()
    assert not at.exception and not at.error
    shown = texts(at)
    assert "The model says **" in shown and "inverted" in shown
    assert len(at.image) > 0


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("notes.png", b"just some text, not an image" * 20, "not an image Pillow can read"),
        ("huge.png", b"\x89PNG" + b"\0" * (10 * 1024 * 1024 + 10), "the limit is 10 MB"),
    ],
)
def test_a_bad_upload_gets_a_clear_message_not_a_traceback(env, finished_root, name, data, message):
    env.setenv("LENSBOARD_RESULTS", str(finished_root))
    at = page()
    at.file_uploader(key="upload").set_value((name, data, "image/png")).run()
    assert not at.exception
    assert any(message in e.value and name in e.value for e in at.error)


def test_a_decompression_bomb_upload_is_refused(env, finished_root):
    env.setenv("LENSBOARD_RESULTS", str(finished_root))
    data = png(Image.new("L", (1, 1)))
    i = data.index(b"IHDR")
    chunk = b"IHDR" + struct.pack(">II", 50_000, 50_000) + data[i + 12 : i + 17]
    bomb = data[:i] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[i + 21 :]
    at = page()
    at.file_uploader(key="upload").set_value(("bomb.png", bomb, "image/png")).run()
    assert not at.exception
    assert any("decompression bomb" in e.value for e in at.error)


def test_a_tracked_script_run_in_the_address_says_there_is_no_model_to_look_into(env, finished_root, tmp_path):
    import shutil

    from engine import track

    root = tmp_path / "results"
    shutil.copytree(finished_root, root)
    with track.run(config={"lr": 0.1}, results=root) as run:
        run.log(epoch=1, train_loss=1.0)
    env.setenv("LENSBOARD_RESULTS", str(root))
    at = page({"run": run.id})
    assert not at.exception
    assert any("recorded by a script with `engine.track`: Lensboard has no model" in i.value for i in at.info)
    assert not at.warning  # not taken for an unknown run


def test_your_own_model_is_inspected_and_a_change_to_its_file_is_said(env, tmp_path):
    from engine.config import TrainConfig
    from engine.runs.runner import run_training
    from engine.runs.sweeps import submit
    from tests.test_user_models import MYNET

    model_file = tmp_path / "mynet.py"
    model_file.write_text(MYNET)
    store = Store(tmp_path / "results")
    run_id = submit(store, TrainConfig(arch=f"{model_file}:MyNet", epochs=1, batch_size=50, train_limit=100))
    assert run_training(store, run_id)[0].value == "done"
    env.setenv("LENSBOARD_RESULTS", str(tmp_path / "results"))
    at = page()
    assert not at.exception and not at.warning
    shown = texts(at)
    assert "through `mynet.py:MyNet`" in shown and "1x28x28 → 4x28x28 → 4x28x28 → 24 → 10" in shown
    assert "block 1: Conv2d(1→4, 3x3, pad 1) → BatchNorm2d(4) → **4x28x28**" in shown
    model_file.write_text(MYNET + "\n# tidied up\n")
    at = page()
    assert not at.exception
    assert any(f"The model file {model_file} changed since this run was made" in w.value for w in at.warning)
