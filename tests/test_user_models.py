"""Your own model class from a .py file: trained, resumed, inspected, embedded and searched like a built-in;
every way a model file can be wrong is one clear line before anything trains."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from engine.config import TrainConfig, arch_label
from engine.errors import ConfigError, ModelError
from engine.ml import inspection
from engine.ml.embed import load_embeddings
from engine.ml.models import build_model, count_parameters
from engine.ml.projection import Method, ProjectionParams, run_projection
from engine.ml.retrieval import evaluate_run, search_run
from engine.ml.train import check_config, load_trained, preflight
from engine.ml.user_models import FeatureReader, build_user_model, constructor_kwargs, find_model_classes
from engine.model_files import file_change, locate, pin
from engine.runs.embedding import compute_embeddings, embedder_for_run
from engine.runs.jobs import retry
from engine.runs.records import RunState
from engine.runs.runner import run_training
from engine.runs.sweeps import submit

pytestmark = pytest.mark.usefixtures("one_thread")

# A learner's CNN with batch norm, built from the sizes Lensboard passes, no features() method.
MYNET = """
import torch
from torch import nn
import torch.nn.functional as F


class MyNet(nn.Module):
    def __init__(self, in_channels, num_classes, image_size=28):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc1 = nn.Linear(4 * (image_size // 2) ** 2, 24)
        self.fc2 = nn.Linear(24, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class WithFeatures(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU())
        self.head = nn.Linear(16, num_classes)

    def features(self, x):
        return self.body(x) * 2  # not the head's input as it is: tells the two paths apart

    def forward(self, x):
        return self.head(self.body(x))


def helper():
    return 1
"""

QUICK = dict(dataset="mnist_sample", batch_size=50, train_limit=200, seed=0)


def write(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def mynet(tmp_path) -> Path:
    return write(tmp_path / "models", "mynet.py", MYNET)


def test_a_custom_model_trains_resumes_embeds_and_is_searched_like_a_built_in(store, mynet):
    config = TrainConfig(arch=f"{mynet}:MyNet", epochs=2, **QUICK)
    run_id = submit(store, config)  # what `submit` and the Train page do: the file is pinned
    recorded = store.get_run(run_id).train_config()
    assert recorded.arch == f"{mynet.resolve()}:MyNet" and len(recorded.arch_sha256) == 64
    assert json.loads((store.run_dir(run_id) / "config.json").read_text())["arch_sha256"] == recorded.arch_sha256

    seen = []
    state, message = run_training(
        store, run_id, on_batch=lambda e, b, n: seen.append(e), should_stop=lambda: seen[-1] >= 2
    )  # a cancel during epoch 2
    assert state == RunState.CANCELLED and [r["epoch"] for r in store.metrics(run_id)] == [1]
    state, message = run_training(store, run_id)  # a worker picks it up again: it resumes
    assert state == RunState.DONE, message
    rows = store.metrics(run_id)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["test_acc"] > 0.2  # chance is 0.1

    record = store.get_run(run_id)
    model, ds = load_trained(record.path, record.train_config(), torch.device("cpu"))
    assert type(model).__name__ == "MyNet" and count_parameters(model) == 40 + 8 + 784 * 24 + 24 + 250
    trace = inspection.shape_trace(model, ds.shape)
    assert [r.shape for r in trace][-2:] == [(24,), (10,)]
    assert inspection.conv_filters(model) is not None and inspection.feature_maps(model, ds.test.inputs(0))[
        0
    ].shape == (4, 28, 28)

    meta = compute_embeddings(store, run_id, device=torch.device("cpu"))
    assert meta["dim"] == 24 and meta["source"] == "mynet.py:MyNet trained run"  # the input of fc2
    test = load_embeddings(record.path, "test")
    result = search_run(record.path, test.vectors[:3], k=5)
    assert result.ids.shape == (3, 5)
    assert evaluate_run(record.path, k=5).metrics.precision_at_k > 0.2
    projection, _ = run_projection(record.path, ProjectionParams(Method.TSNE, perplexity=5, max_points=60))
    assert projection.coords.shape == (60, 2)


def test_the_embedding_is_the_models_own_features_when_it_has_them(mynet):
    model = build_user_model(f"{mynet}:WithFeatures", (1, 28, 28), 10)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(FeatureReader(model, (1, 28, 28)).features(x), model.features(x))


def test_without_features_the_embedding_is_the_input_of_the_last_linear_layer(mynet):
    model = build_user_model(f"{mynet}:MyNet", (1, 28, 28), 10).eval()
    x = torch.rand(3, 1, 28, 28)
    seen = []
    model.fc2.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    model(x)
    assert torch.equal(FeatureReader(model, (1, 28, 28)).features(x), seen[0])


def test_a_submodule_named_features_is_not_taken_for_the_method(tmp_path):
    path = write(
        tmp_path,
        "vgg.py",
        """
        from torch import nn

        class Tiny(nn.Module):
            def __init__(self, in_channels, num_classes):
                super().__init__()
                self.features = nn.Sequential(nn.Conv2d(in_channels, 2, 3), nn.Flatten())
                self.classifier = nn.Linear(2 * 26 * 26, num_classes)

            def forward(self, x):
                return self.classifier(self.features(x))
        """,
    )
    model = build_user_model(f"{path}:Tiny", (1, 28, 28), 10)
    assert FeatureReader(model, (1, 28, 28)).features(torch.rand(2, 1, 28, 28)).shape == (2, 2 * 26 * 26)


def test_the_constructor_gets_only_the_sizes_it_names():
    class Square(nn.Module):
        def __init__(self, num_classes, image_size, hidden=8):
            super().__init__()

    class Wants(nn.Module):
        def __init__(self, in_channels, depth):
            super().__init__()

    assert constructor_kwargs(Square, (3, 32, 32), 10) == {"num_classes": 10, "image_size": 32}
    assert constructor_kwargs(Square, (1, 20, 30), 4) == {"num_classes": 4, "image_size": (20, 30)}
    with pytest.raises(
        ModelError,
        match=r"Wants\(\) needs depth, which Lensboard cannot give: it passes only "
        r"in_channels, num_classes, image_size",
    ):
        constructor_kwargs(Wants, (1, 28, 28), 10)


BAD_MODELS = [
    (
        "broken.py",
        "import torch\nclass Net(torch.nn.Module:\n    pass\n",
        "Net",
        r"model file .*broken\.py does not import: SyntaxError",
    ),
    (
        "missing_package.py",
        "import no_such_package_here\n",
        "Net",
        r"does not import: ModuleNotFoundError: No module named 'no_such_package_here'",
    ),
    (
        "raises.py",
        "raise RuntimeError('downloading weights failed')\n",
        "Net",
        r"does not import: RuntimeError: downloading weights failed",
    ),
    ("exits.py", "import sys\nsys.exit(3)\n", "Net", r"does not import: SystemExit: 3"),
    ("mynet.py", MYNET, "Nope", r"no class 'Nope' in .*mynet\.py; its nn.Module classes: MyNet, WithFeatures"),
    ("mynet.py", MYNET, "helper", r"'helper' in mynet\.py is a function, not a class"),
    (
        "plain.py",
        "class Net:\n    def __init__(self, num_classes):\n        pass\n",
        "Net",
        r"class Net in plain\.py is not an nn.Module; it must subclass torch.nn.Module",
    ),
    (
        "ctor.py",
        "from torch import nn\nclass Net(nn.Module):\n    def __init__(self, num_classes):\n"
        "        super().__init__()\n        raise ValueError('num_classes must be even')\n",
        "Net",
        r"Net\(num_classes=10\) raised ValueError: num_classes must be even",
    ),
    (
        "wants.py",
        "from torch import nn\nclass Net(nn.Module):\n    def __init__(self, hidden_units):\n"
        "        super().__init__()\n",
        "Net",
        r"Net\(\) needs hidden_units",
    ),
    (
        "columns.py",
        "from torch import nn\nclass Net(nn.Module):\n    def __init__(self, in_channels):\n"
        "        super().__init__()\n        self.fc = nn.Linear(784 * in_channels, 5)\n"
        "    def forward(self, x):\n        return self.fc(x.flatten(1))\n",
        "Net",
        r"gives output of shape \(2, 5\) for 2 images of 1x28x28; it must be \(batch, num_classes\) = \(2, 10\)",
    ),
    (
        "shape.py",
        "from torch import nn\nclass Net(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.fc = nn.Linear(3072, 10)\n"
        "    def forward(self, x):\n        return self.fc(x.flatten(1))\n",
        "Net",
        r"Net\(\) cannot take a batch of 1x28x28 images: RuntimeError: mat1 and mat2 shapes cannot be multiplied",
    ),
    (
        "tuple.py",
        "from torch import nn\nclass Net(nn.Module):\n    def __init__(self, num_classes):\n"
        "        super().__init__()\n        self.fc = nn.Linear(784, num_classes)\n"
        "    def forward(self, x):\n        y = self.fc(x.flatten(1))\n        return y, x\n",
        "Net",
        r"returns a tuple; forward\(x\) must return one tensor of class scores, \(batch, 10\)",
    ),
]


@pytest.mark.parametrize("name, source, cls, message", BAD_MODELS, ids=[m[0] + ":" + m[2] for m in BAD_MODELS])
def test_each_bad_model_is_one_clear_error_before_anything_trains(store, tmp_path, name, source, cls, message):
    path = write(tmp_path, name, source)
    with pytest.raises(ModelError, match=message) as info:
        submit(store, TrainConfig(arch=f"{path}:{cls}", epochs=1, **QUICK))
    assert "\n" not in str(info.value)
    assert store.list_runs() == []  # nothing queued


@pytest.mark.parametrize(
    "arch, message",
    [
        ("nowhere/mynet.py:MyNet", r"model file .*nowhere/mynet\.py does not exist"),
        ("mynet.py:", r"is not FILE\.py:ClassName"),
        ("mynet.txt:MyNet", r"unknown arch 'mynet\.txt:MyNet'.*or FILE\.py:ClassName"),
    ],
)
def test_a_malformed_arch_or_a_missing_file_is_a_config_error(tmp_path, monkeypatch, arch, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message):
        check_config(TrainConfig(arch=arch))


def test_the_cli_trains_a_model_file_and_a_bad_one_is_one_line(tmp_path, mynet, capsys):
    from engine.cli.main import main

    results = str(tmp_path / "results")
    code = main(["train", "--arch", f"{mynet}:MyNet", "--epochs", "1", "--train-limit", "100", "--results", results])
    out = capsys.readouterr().out
    assert code == 0 and f"{mynet.resolve()}:MyNet on mnist_sample" in out
    assert main(["train", "--arch", f"{mynet}:Gone", "--results", results]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no class 'Gone'") and err.count("\n") == 1
    assert main(["list", "--results", results]) == 0
    assert "mynet.py:MyNet" in capsys.readouterr().out


def test_a_sweep_pins_each_model_file_and_trains_it_beside_a_built_in(store, mynet):
    from engine.runs.sweeps import plan_sweep, sweep_grid

    grid = sweep_grid(TrainConfig(epochs=1, **QUICK), arch=[f"{mynet}:MyNet", "basic_nn"])
    plan = plan_sweep(store, grid)
    assert [p.config.arch_sha256 is not None for p in plan] == [True, False]


def test_a_changed_file_is_said_and_refused_on_resume_and_a_retry_trains_the_new_one(store, mynet):
    run_id = submit(store, TrainConfig(arch=f"{mynet}:MyNet", epochs=2, **QUICK))
    seen = []
    run_training(store, run_id, on_batch=lambda e, b, n: seen.append(e), should_stop=lambda: seen[-1] >= 2)
    mynet.write_text(MYNET.replace("nn.Linear(24, num_classes)", "nn.Linear(24, num_classes, bias=False)"))
    config = store.get_run(run_id).train_config()
    assert "changed since this run was made" in file_change(config)

    state, message = run_training(store, run_id)
    assert state == RunState.FAILED
    assert message.startswith("ModelError: cannot resume: the model file") and "retry" in message
    assert [r["epoch"] for r in store.metrics(run_id)] == [1]  # what it trained is kept

    again = retry(store, run_id)
    assert store.get_run(again).train_config().arch_sha256 != config.arch_sha256
    assert run_training(store, again)[0] == RunState.DONE


def test_weights_that_no_longer_fit_the_edited_class_say_why(store, mynet):
    run_id = submit(store, TrainConfig(arch=f"{mynet}:MyNet", epochs=1, **QUICK))
    assert run_training(store, run_id)[0] == RunState.DONE
    mynet.write_text(MYNET.replace("nn.Linear(24, num_classes)", "nn.Linear(24, num_classes, bias=False)"))
    record = store.get_run(run_id)
    with pytest.raises(ModelError, match=r"changed since this run was made .*weights no longer fit the class"):
        embedder_for_run(record, torch.device("cpu"))


def test_a_run_queued_before_its_file_changed_refuses_to_start(store, mynet):
    run_id = submit(store, TrainConfig(arch=f"{mynet}:MyNet", epochs=1, **QUICK))
    mynet.write_text(MYNET + "\n# edited\n")
    state, message = run_training(store, run_id)
    assert state == RunState.FAILED and "queue it again" in message


def test_pin_makes_the_path_absolute_and_leaves_built_ins_alone(mynet, monkeypatch):
    monkeypatch.chdir(mynet.parent.parent)
    pinned = pin(TrainConfig(arch="models/mynet.py:MyNet"))
    assert pinned.arch == f"{mynet.resolve()}:MyNet" and arch_label(pinned.arch) == "mynet.py:MyNet"
    assert pin(TrainConfig(arch="basic_nn")) == TrainConfig(arch="basic_nn")
    assert locate("models/mynet.py:MyNet").class_name == "MyNet"


def test_an_edited_file_is_imported_again_and_an_unchanged_one_is_not(tmp_path):
    path = write(
        tmp_path,
        "counter.py",
        """
        import builtins
        from torch import nn
        builtins.lensboard_imports = getattr(builtins, "lensboard_imports", 0) + 1

        class Net(nn.Module):
            def __init__(self, num_classes):
                super().__init__()
                self.fc = nn.Linear(784, num_classes)

            def forward(self, x):
                return self.fc(x.flatten(1))
        """,
    )
    import builtins

    builtins.lensboard_imports = 0
    for _ in range(3):
        build_model(f"{path}:Net", (1, 28, 28), 10)
    assert builtins.lensboard_imports == 1
    path.write_text(path.read_text().replace("784, num_classes", "784, num_classes, bias=False"))
    assert build_model(f"{path}:Net", (1, 28, 28), 10).fc.bias is None and builtins.lensboard_imports == 2
    del builtins.lensboard_imports


def test_a_model_file_can_import_the_files_beside_it(tmp_path):
    write(tmp_path, "blocks.py", "from torch import nn\ndef block(n):\n    return nn.Linear(784, n)\n")
    path = write(
        tmp_path,
        "net.py",
        """
        from torch import nn
        from blocks import block

        class Net(nn.Module):
            def __init__(self, num_classes):
                super().__init__()
                self.fc = block(num_classes)

            def forward(self, x):
                return self.fc(x.flatten(1))
        """,
    )
    assert preflight(TrainConfig(arch=f"{path}:Net", **QUICK)) == 200


def test_the_models_folder_lists_module_classes_without_running_any_file(tmp_path):
    folder = tmp_path / "models"
    write(folder, "mynet.py", MYNET)
    write(
        folder,
        "train_script.py",
        "raise SystemExit('this file must never run')\n"
        "import torch.nn as nn\nclass Deep(nn.Module):\n    pass\n"
        "class Deeper(Deep):\n    pass\nclass Config:\n    pass\n",
    )
    write(folder, "broken.py", "class (:\n")
    found = find_model_classes(folder)
    assert [arch_label(a) for a in found] == [
        "mynet.py:MyNet",
        "mynet.py:WithFeatures",
        "train_script.py:Deep",
        "train_script.py:Deeper",
    ]
    assert all(Path(a.rpartition(":")[0]).is_absolute() for a in found)
    assert find_model_classes(tmp_path / "no-such-folder") == []
