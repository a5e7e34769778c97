"""The Compare page with groups of seeds, in Streamlit's AppTest, on tiny runs made by the real training code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.config import TrainConfig
from engine.runs.compare import build, load_runs
from engine.runs.records import RunState
from engine.runs.runner import run_training
from engine.runs.store import Store
from engine.runs.verdicts import Call, verdict

PAGE = str(Path(__file__).resolve().parents[1] / "dashboard" / "pages" / "compare.py")
TINY = dict(dataset="mnist_sample", epochs=1, batch_size=32, train_limit=300)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def seeds_root(tmp_path_factory, one_thread):
    """Three seeds each of basic_nn and simple_cnn, one epoch on 300 images."""
    root = tmp_path_factory.mktemp("seeds") / "results"
    store = Store(root)
    for arch in ("basic_nn", "simple_cnn"):
        for seed in range(3):
            run_id = store.create_run(TrainConfig(arch=arch, seed=seed, **TINY))
            state, message = run_training(store, run_id)
            assert state == RunState.DONE, message
    store.close()
    return root


def page(env, root) -> AppTest:
    env(root)
    return AppTest.from_file(PAGE, default_timeout=60).run()


def chart(at: AppTest) -> dict:
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def readings(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("success", "info", "warning") for e in getattr(at, kind))


def test_seeds_of_one_config_are_one_group_with_a_band_a_row_and_the_engines_verdict(env, seeds_root):
    at = page(env, seeds_root)
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox(key="cmp_group_True").value == "config"  # seeds found: grouped by default
    assert "Welch's t-test" in at.selectbox(key="cmp_group_True").help
    bands = [t["name"] for t in chart(at)["data"] if t.get("fill") == "toself"]
    assert bands == [
        "basic_nn · train · band",
        "basic_nn · test · band",
        "simple_cnn · train · band",
        "simple_cnn · test · band",
    ]
    table = at.dataframe[0].value
    assert list(table["group"]) == ["basic_nn", "simple_cnn"] and list(table["n"]) == [3, 3]
    assert list(table["seeds"]) == ["seeds 0-2", "seeds 0-2"]
    store = Store(seeds_root)
    runs = load_runs(store, [r.id for r in store.list_runs()])
    mlp, cnn = build(runs).groups
    said = verdict(cnn, mlp, "test_acc") if cnn.mean >= mlp.mean else verdict(mlp, cnn, "test_acc")
    assert said.call in (Call.REAL, Call.NOISE)
    assert f"on final test accuracy: {said.text}." in readings(at)  # the engine's wording, not a copy
    assert table.set_index("group")["mean"].to_dict() == pytest.approx(
        {"basic_nn": 100 * mlp.mean, "simple_cnn": 100 * cnn.mean}
    )
    assert "Welch's t-test" in "\n".join(c.value for c in at.caption)


def test_the_curve_tools_band_range_smoothing_and_log_y_redraw_the_chart(env, seeds_root):
    at = page(env, seeds_root)
    at.radio(key="cmp_band").set_value("range")
    at.slider(key="cmp_smoothing").set_value(0.5)
    at.toggle(key="cmp_log_y").set_value(True).run()
    assert not at.exception, [e.message for e in at.exception]
    figure = chart(at)
    assert figure["layout"]["yaxis"]["type"] == "log"
    assert "min to max" in figure["layout"]["title"]["text"]
    assert any(t.get("name") == "raw" and t["opacity"] < 0.5 for t in figure["data"])


def test_one_seed_per_config_says_the_noise_is_unknown_instead_of_a_verdict(env, seeds_root):
    at = page(env, seeds_root)
    store = Store(seeds_root)
    firsts = [r.id for r in store.list_runs() if r.config["seed"] == 0]
    at.multiselect(key="cmp_runs_mnist_sample").set_value(firsts).run()
    assert not at.exception and at.selectbox(key="cmp_group_False").value == "none"
    assert "With one run each the seed noise is unknown" in readings(at)
    at.selectbox(key="cmp_group_False").set_value("config").run()
    text = readings(at)
    assert "**Noise unknown**" in text and "with one seed each the seed noise is unknown" in text
    assert "beyond seed noise" not in text and "within seed noise" not in text
