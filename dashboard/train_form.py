"""The Train page's forms: the dataset picker (a built-in dataset or a folder of images), your own model's
picker, the single-run form, the grid form and the seeds input, as Streamlit widgets that return checked
TrainConfigs (the page queues them; the search form is dashboard/search_form.py)."""

from __future__ import annotations

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from dashboard.forms import (
    BATCH_CHOICES,
    DATASET_BLURBS,
    KNOWN_SHAPES,
    LR_CHOICES,
    arch_caption,
    folder_under_root,
    grid_size,
    parse_float,
    parse_list,
)
from dashboard.runs_table import configs_frame
from dashboard.state import data_dir, models_dir
from engine.config import DEVICES, MAX_VAL_SPLIT, OPTIMIZERS, PRECISIONS, TrainConfig, arch_label
from engine.errors import ConfigError, DatasetError
from engine.ml import folders
from engine.ml.data import available_datasets
from engine.ml.models import MODELS
from engine.ml.train import check_config
from engine.ml.user_models import find_model_classes
from engine.runs.seeds import MAX_SEEDS, RECOMMENDED_SEEDS, with_seeds
from engine.runs.sweeps import sweep_grid

MAX_GRID = 100  # more runs than this in one sweep is almost surely a typo on a CPU
FOLDER = "folder:…"
OWN_MODEL = "your own model…"  # the Architecture choice for a class in your own .py file
OTHER_FILE = "another file (type its path)"
SEEDS_HELP = (
    f"Train the configuration several times with consecutive seeds. Runs that differ only in the seed "
    f"land a few tenths of a point apart by luck alone; with {RECOMMENDED_SEEDS} seeds or more, Compare "
    "draws their spread and tells a real difference from that noise (Welch's t-test). 1 = a single run; "
    f"{RECOMMENDED_SEEDS} is recommended."
)


@st.cache_data(show_spinner="Reading your image folder…", max_entries=16, ttl=30)
def folder_shape(name: str, data_root: str) -> tuple[tuple[int, int, int], int]:
    """Cheap: the folder listing and a few image headers; the dataset is never loaded here."""
    return folders.describe(name[len(folders.FOLDER_PREFIX) :])


def dataset_picker() -> tuple[str, tuple | None, int | None]:
    """The dataset name, its image shape and class count (None when it cannot be read)."""
    names = available_datasets(data_dir())
    left, right = st.columns([2, 3])
    choice = left.selectbox(
        "Dataset",
        names + [FOLDER],
        key="dataset",
        format_func=lambda n: "your own images (folder:PATH)" if n == FOLDER else n,
        help="Only datasets found on this machine are listed; mnist_sample is bundled. "
        f"Others go under `{data_dir()}` (set LENSBOARD_DATA to change it).",
    )
    if choice != FOLDER:
        right.caption(" ")
        right.caption(DATASET_BLURBS.get(choice, ""))
        shape, classes = KNOWN_SHAPES[choice]
        return choice, shape, classes
    path = right.text_input(
        "Image folder",
        key="folder_path",
        placeholder="/path/to/images",
        help="A folder under the data root with train/<class>/*.png and test/<class>/*.png "
        "(jpg works too); every image becomes 32x32.",
    )
    if not path.strip():
        st.info(
            f"Type the path of a folder inside the data root `{data_dir()}` with `train/<class>/` and "
            "`test/<class>/` subfolders of images."
        )
        return "folder:", None, None
    try:
        name = f"folder:{folder_under_root(path, data_dir())}"
    except ConfigError as exc:
        st.error(str(exc))
        return "folder:", None, None
    try:
        shape, classes = folder_shape(name, str(data_dir()))
    except (DatasetError, OSError, ValueError) as exc:
        st.error(str(exc))
        return name, None, None
    right.caption(f"{classes} classes, images {shape[1]}x{shape[2]} with {shape[0]} channel(s)")
    return name, shape, classes


def architectures_picker(column: DeltaGenerator, key: str) -> list[str]:
    """Several architectures for a grid or a search: the built-in ones, then your own model classes."""
    return column.multiselect(
        "Architectures",
        list(MODELS) + find_model_classes(models_dir()),
        default=["basic_nn", "simple_cnn"],
        key=key,
        format_func=arch_label,
        help=f"Your own model classes from `{models_dir()}` are listed after the built-in ones.",
    )


def own_model_picker(column: DeltaGenerator) -> str | None:
    """The arch "FILE.py:Class" of your own model: a class found in the models folder, or a typed path."""
    found = find_model_classes(models_dir())
    choice = OTHER_FILE
    if found:
        choice = column.selectbox(
            "Model class",
            found + [OTHER_FILE],
            key="own_model",
            format_func=lambda a: a if a == OTHER_FILE else arch_label(a),
            help=f"The nn.Module classes defined in the .py files of `{models_dir()}` "
            "(set LENSBOARD_MODELS to list another folder).",
        )
    if choice != OTHER_FILE:
        return choice
    typed = column.text_input(
        "Model file and class",
        key="own_path",
        placeholder="path/to/mynet.py:MyNet",
        help="A .py file on this machine and the nn.Module class in it, after a colon.",
    )
    column.caption(
        "Built with the arguments its constructor names among in_channels, num_classes and "
        "image_size. Loading a model file runs its code: name only files you trust."
    )
    return typed.strip() or None


def single_form(dataset: str, shape: tuple[int, int, int] | None, classes: int | None) -> TrainConfig | None:
    c1, c2, c3 = st.columns(3)
    arch = c1.selectbox(
        "Architecture",
        list(MODELS) + [OWN_MODEL],
        index=list(MODELS).index("simple_cnn"),
        key="arch",
        help="The model. basic_nn is a plain MLP; the others are convolutional "
        "networks; or train your own nn.Module class from a .py file.",
    )
    if arch == OWN_MODEL:
        arch = own_model_picker(c1)
    if arch:
        c1.caption(arch_caption(arch, shape, classes))
    epochs = c2.number_input(
        "Epochs",
        1,
        1000,
        3,
        key="epochs",
        help="Full passes over the training images. More epochs: more learning, and more risk of overfitting.",
    )
    batch_size = c3.select_slider(
        "Batch size",
        BATCH_CHOICES,
        value=64,
        key="batch_size",
        help="Images per optimiser step. Small batches: noisier, more steps per "
        "epoch; large batches: smoother, faster per epoch on a GPU.",
    )
    c1, c2, c3 = st.columns(3)
    lr_choice = c1.select_slider(
        "Learning rate",
        LR_CHOICES,
        value=1e-3,
        key="lr_choice",
        format_func=lambda v: f"{v:g}",
        help="How big each step is (log scale). Too big diverges, too small crawls. "
        "Adam usually likes 1e-3, SGD 1e-2 to 1e-1.",
    )
    lr_text = c1.text_input(
        "…or type one",
        key="lr_text",
        placeholder="e.g. 5e-4",
        help="When filled in, this value is used instead of the slider.",
    )
    optimizer = c2.radio(
        "Optimizer",
        OPTIMIZERS,
        horizontal=True,
        key="optimizer",
        help="adam and adamw adapt the step per weight; sgd uses the learning rate as is.",
    )
    momentum = 0.9
    if optimizer == "sgd":
        momentum = c2.slider(
            "Momentum",
            0.0,
            0.99,
            0.9,
            0.01,
            key="momentum",
            help="SGD keeps this fraction of the previous step: smoother, faster descent.",
        )
    wd_text = c3.text_input(
        "Weight decay",
        "0",
        key="weight_decay",
        help="A pull of every weight towards zero (L2); 1e-4 to 5e-4 fights overfitting.",
    )
    with st.expander("Validation, seed, data size, device and precision"):
        c1, c2, c3, c4, c5 = st.columns(5)
        val_split = c1.slider(
            "Validation split",
            0.0,
            MAX_VAL_SPLIT,
            0.1,
            0.05,
            key="val_split",
            help="Fraction of the training images held out to watch overfitting (the test set stays untouched).",
        )
        seed = c2.number_input(
            "Seed", 0, 2**31 - 1, 0, key="seed", help="Same seed, same config: same weights, batches and result."
        )
        limit = c3.number_input(
            "Train limit (0 = all)",
            0,
            10_000_000,
            0,
            step=100,
            key="train_limit",
            help="Train on only the first N images (every class kept): quick experiments.",
        )
        device = c4.selectbox(
            "Device", DEVICES, key="device", help="auto uses a CUDA GPU when there is one, else the CPU."
        )
        precision = c5.selectbox(
            "Precision",
            PRECISIONS,
            key="precision",
            help="auto computes in bf16 (16-bit, same range as fp32) where the CPU or GPU "
            "does it natively, which is faster at the same accuracy, and in fp32 "
            "elsewhere; the run's page says which one it used.",
        )
    try:
        if not arch:
            raise ConfigError("type your model's file and class, e.g. models/mynet.py:MyNet")
        lr = parse_float(lr_text, "learning rate") if lr_text.strip() else lr_choice
        config = TrainConfig(
            dataset=dataset,
            data_root=str(data_dir()),
            arch=arch,
            epochs=int(epochs),
            batch_size=int(batch_size),
            lr=lr,
            optimizer=optimizer,
            momentum=float(momentum),
            weight_decay=parse_float(wd_text, "weight decay"),
            val_split=float(val_split),
            seed=int(seed),
            train_limit=int(limit) or None,
            device=device,
            precision=precision,
        )
        return check_config(config)
    except ConfigError as exc:
        st.error(f"Not ready to queue: {exc}", icon=":material/error:")
        return None


def sweep_form(dataset: str) -> list[TrainConfig] | None:
    st.caption(
        "Give several values per field, separated by commas: every combination becomes one run. "
        "Three learning rates x two batch sizes x two architectures = 12 runs."
    )
    c1, c2, c3 = st.columns(3)
    archs = architectures_picker(c1, key="sw_arch")
    lrs = c2.text_input("Learning rates", "1e-3, 1e-2", key="sw_lr", help="e.g. 1e-4, 1e-3, 1e-2")
    sizes = c3.text_input("Batch sizes", "64", key="sw_bs", help="e.g. 32, 128")
    c1, c2, c3 = st.columns(3)
    optimizers = c1.multiselect("Optimizers", OPTIMIZERS, default=["adam"], key="sw_opt")
    epochs = c2.text_input("Epochs", "3", key="sw_epochs")
    seeds = c3.text_input("Seeds", "0", key="sw_seed", help="Several seeds show how much luck is involved.")
    repeats = c3.number_input(
        "Runs per configuration (seeds)",
        1,
        MAX_SEEDS,
        1,
        key="sw_repeats",
        help=SEEDS_HELP + " Each seed S listed above then runs as S, S+1, …",
    )
    with st.expander("Shared by every run in the grid"):
        c1, c2, c3 = st.columns(3)
        val_split = c1.slider("Validation split", 0.0, MAX_VAL_SPLIT, 0.1, 0.05, key="sw_val")
        limit = c2.number_input("Train limit (0 = all)", 0, 10_000_000, 0, step=100, key="sw_limit")
        wd = c3.text_input("Weight decay", "0", key="sw_wd")
    try:
        if not archs:
            raise ConfigError("pick at least one architecture")
        if not optimizers:
            raise ConfigError("pick at least one optimizer")
        lists = dict(
            arch=archs,
            lr=parse_list(lrs, "learning rates", float),
            batch_size=parse_list(sizes, "batch sizes", int),
            epochs=parse_list(epochs, "epochs", int),
            optimizer=optimizers,
            seed=parse_list(seeds, "seeds", int),
        )
        if grid_size(**lists) * int(repeats) > MAX_GRID:
            raise ConfigError(
                f"that grid has {grid_size(**lists) * int(repeats)} runs; at most {MAX_GRID} can be queued at once"
            )
        base = TrainConfig(
            dataset=dataset,
            data_root=str(data_dir()),
            val_split=float(val_split),
            train_limit=int(limit) or None,
            weight_decay=parse_float(wd, "weight decay"),
        )
        grid = with_seeds(sweep_grid(base, **lists), int(repeats))
        for config in grid:
            check_config(config)
    except ConfigError as exc:
        st.error(f"Not ready to queue: {exc}", icon=":material/error:")
        return None
    st.markdown(f"**{len(grid)} run{'s' if len(grid) != 1 else ''}** in this grid:")
    st.dataframe(configs_frame(grid), width="stretch", height="auto")
    return grid


def seeds_input() -> int:
    """How many seeds to train the single run's configuration with (seeds S..S+K-1 from its seed)."""
    c1, c2 = st.columns([1, 3])
    k = c1.number_input("Seeds", 1, MAX_SEEDS, 1, key="seeds", help=SEEDS_HELP)
    if k > 1:
        c2.caption(
            f"{k} runs of this configuration, one per seed, queued together; Compare shows them as "
            "one group with its spread."
        )
    return int(k)
