"""Train: set up one run, a grid of runs or a search, queue them, and watch them learn."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.figures import curves_figure
from dashboard.forms import (
    BATCH_CHOICES,
    DATASET_BLURBS,
    KNOWN_SHAPES,
    LR_CHOICES,
    folder_under_root,
    grid_size,
    human_count,
    parameter_count,
    parse_float,
    parse_list,
)
from dashboard.readings import precision_note
from dashboard.runs_table import any_active, configs_frame, run_label, runs_frame
from dashboard.search_form import search_form
from dashboard.state import (
    REFRESH_SECONDS,
    data_dir,
    link,
    metrics_for,
    models_dir,
    open_store,
    refuse_when_read_only,
    runs_by_id,
    settings,
    writable,
)
from dashboard.tables import metrics_long
from engine.config import (
    DEVICES,
    MAX_VAL_SPLIT,
    OPTIMIZERS,
    PRECISIONS,
    ConfigError,
    TrainConfig,
    arch_label,
    is_user_arch,
)
from engine.ml import folders
from engine.ml.data import DatasetError, available_datasets
from engine.ml.models import MODELS, ModelError, describe
from engine.ml.train import check_config
from engine.ml.user_models import find_model_classes
from engine.runs.seeds import MAX_SEEDS, RECOMMENDED_SEEDS, expand_seeds, with_seeds
from engine.runs.sweeps import start_search, submit, submit_sweep, sweep_grid

MAX_GRID = 100  # more runs than this in one sweep is almost surely a typo on a CPU
FOLDER = "folder:…"
OWN_MODEL = "your own model…"  # the Architecture choice for a class in your own .py file
OTHER_FILE = "another file (type its path)"
USER_ERRORS = (ConfigError, DatasetError, ModelError)
SEEDS_HELP = (f"Train the configuration several times with consecutive seeds. Runs that differ only in the seed "
              f"land a few tenths of a point apart by luck alone; with {RECOMMENDED_SEEDS} seeds or more, Compare "
              "draws their spread and tells a real difference from that noise (Welch's t-test). 1 = a single run; "
              f"{RECOMMENDED_SEEDS} is recommended.")

st.title("Train")
st.caption("Pick the data and a model, set the hyperparameters and press **Queue run**. A background "
           "worker trains it (this page never blocks); the progress and the learning curves appear below "
           "as soon as it starts.")


@st.cache_data(show_spinner="Reading your image folder…", max_entries=16, ttl=30)
def folder_shape(name: str, data_root: str) -> tuple[tuple[int, int, int], int]:
    """Cheap: the folder listing and a few image headers; the dataset is never loaded here."""
    return folders.describe(name[len(folders.FOLDER_PREFIX):])


def dataset_picker() -> tuple[str, tuple | None, int | None]:
    """The dataset name, its image shape and class count (None when it cannot be read)."""
    names = available_datasets(data_dir())
    left, right = st.columns([2, 3])
    choice = left.selectbox("Dataset", names + [FOLDER], key="dataset",
                            format_func=lambda n: "your own images (folder:PATH)" if n == FOLDER else n,
                            help="Only datasets found on this machine are listed; mnist_sample is bundled. "
                                 f"Others go under `{data_dir()}` (set LENSBOARD_DATA to change it).")
    if choice != FOLDER:
        right.caption(" ")
        right.caption(DATASET_BLURBS.get(choice, ""))
        shape, classes = KNOWN_SHAPES[choice]
        return choice, shape, classes
    path = right.text_input("Image folder", key="folder_path", placeholder="/path/to/images",
                            help="A folder under the data root with train/<class>/*.png and test/<class>/*.png "
                                 "(jpg works too); every image becomes 32x32.")
    if not path.strip():
        st.info(f"Type the path of a folder inside the data root `{data_dir()}` with `train/<class>/` and "
                "`test/<class>/` subfolders of images.")
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


def own_model_picker(column) -> str | None:
    """The arch "FILE.py:Class" of your own model: a class found in the models folder, or a typed path."""
    found = find_model_classes(models_dir())
    choice = OTHER_FILE
    if found:
        choice = column.selectbox("Model class", found + [OTHER_FILE], key="own_model",
                                  format_func=lambda a: a if a == OTHER_FILE else arch_label(a),
                                  help=f"The nn.Module classes defined in the .py files of `{models_dir()}` "
                                       "(set LENSBOARD_MODELS to list another folder).")
    if choice != OTHER_FILE:
        return choice
    typed = column.text_input("Model file and class", key="own_path", placeholder="path/to/mynet.py:MyNet",
                              help="A .py file on this machine and the nn.Module class in it, after a colon.")
    column.caption("Built with the arguments its constructor names among in_channels, num_classes and "
                   "image_size. Loading a model file runs its code: name only files you trust.")
    return typed.strip() or None


def arch_caption(arch: str, shape, classes) -> str:
    try:
        text = describe(arch)
    except ConfigError as exc:  # your own model: the path is not FILE.py:Class, or no such file
        return f"**cannot be used**: {exc}"
    if shape is not None:
        try:
            count = parameter_count(arch, shape, classes)
        except (ModelError, ConfigError) as exc:
            if is_user_arch(arch):  # the file does not import, no such class, a wrong output, ...
                return f"**cannot be used**: {exc}"
            return f"{text} · **cannot be built for these images**: {exc}"  # e.g. a folder's small images
        text += f" · **{human_count(count)} parameters** for {shape[1]}x{shape[2]} images"
    return text


def single_form(dataset: str, shape, classes) -> TrainConfig | None:
    c1, c2, c3 = st.columns(3)
    arch = c1.selectbox("Architecture", list(MODELS) + [OWN_MODEL], index=list(MODELS).index("simple_cnn"),
                        key="arch", help="The model. basic_nn is a plain MLP; the others are convolutional "
                                         "networks; or train your own nn.Module class from a .py file.")
    if arch == OWN_MODEL:
        arch = own_model_picker(c1)
    if arch:
        c1.caption(arch_caption(arch, shape, classes))
    epochs = c2.number_input("Epochs", 1, 1000, 3, key="epochs",
                             help="Full passes over the training images. More epochs: more learning, "
                                  "and more risk of overfitting.")
    batch_size = c3.select_slider("Batch size", BATCH_CHOICES, value=64, key="batch_size",
                                  help="Images per optimiser step. Small batches: noisier, more steps per "
                                       "epoch; large batches: smoother, faster per epoch on a GPU.")
    c1, c2, c3 = st.columns(3)
    lr_choice = c1.select_slider("Learning rate", LR_CHOICES, value=1e-3, key="lr_choice",
                                 format_func=lambda v: f"{v:g}",
                                 help="How big each step is (log scale). Too big diverges, too small crawls. "
                                      "Adam usually likes 1e-3, SGD 1e-2 to 1e-1.")
    lr_text = c1.text_input("…or type one", key="lr_text", placeholder="e.g. 5e-4",
                            help="When filled in, this value is used instead of the slider.")
    optimizer = c2.radio("Optimizer", OPTIMIZERS, horizontal=True, key="optimizer",
                         help="adam and adamw adapt the step per weight; sgd uses the learning rate as is.")
    momentum = 0.9
    if optimizer == "sgd":
        momentum = c2.slider("Momentum", 0.0, 0.99, 0.9, 0.01, key="momentum",
                             help="SGD keeps this fraction of the previous step: smoother, faster descent.")
    wd_text = c3.text_input("Weight decay", "0", key="weight_decay",
                            help="A pull of every weight towards zero (L2); 1e-4 to 5e-4 fights overfitting.")
    with st.expander("Validation, seed, data size, device and precision"):
        c1, c2, c3, c4, c5 = st.columns(5)
        val_split = c1.slider("Validation split", 0.0, MAX_VAL_SPLIT, 0.1, 0.05, key="val_split",
                              help="Fraction of the training images held out to watch overfitting "
                                   "(the test set stays untouched).")
        seed = c2.number_input("Seed", 0, 2**31 - 1, 0, key="seed",
                               help="Same seed, same config: same weights, batches and result.")
        limit = c3.number_input("Train limit (0 = all)", 0, 10_000_000, 0, step=100, key="train_limit",
                                help="Train on only the first N images (every class kept): quick experiments.")
        device = c4.selectbox("Device", DEVICES, key="device",
                              help="auto uses a CUDA GPU when there is one, else the CPU.")
        precision = c5.selectbox("Precision", PRECISIONS, key="precision",
                                 help="auto computes in bf16 (16-bit, same range as fp32) where the CPU or GPU "
                                      "does it natively, which is faster at the same accuracy, and in fp32 "
                                      "elsewhere; the run's page says which one it used.")
    try:
        if not arch:
            raise ConfigError("type your model's file and class, e.g. models/mynet.py:MyNet")
        lr = parse_float(lr_text, "learning rate") if lr_text.strip() else lr_choice
        config = TrainConfig(dataset=dataset, data_root=str(data_dir()), arch=arch, epochs=int(epochs),
                             batch_size=int(batch_size), lr=lr, optimizer=optimizer, momentum=float(momentum),
                             weight_decay=parse_float(wd_text, "weight decay"), val_split=float(val_split),
                             seed=int(seed), train_limit=int(limit) or None, device=device, precision=precision)
        return check_config(config)
    except ConfigError as exc:
        st.error(f"Not ready to queue: {exc}", icon=":material/error:")
        return None


def sweep_form(dataset: str) -> list[TrainConfig] | None:
    st.caption("Give several values per field, separated by commas: every combination becomes one run. "
               "Three learning rates x two batch sizes x two architectures = 12 runs.")
    c1, c2, c3 = st.columns(3)
    archs = c1.multiselect("Architectures", list(MODELS) + find_model_classes(models_dir()),
                           default=["basic_nn", "simple_cnn"], key="sw_arch", format_func=arch_label,
                           help=f"Your own model classes from `{models_dir()}` are listed after the built-in ones.")
    lrs = c2.text_input("Learning rates", "1e-3, 1e-2", key="sw_lr", help="e.g. 1e-4, 1e-3, 1e-2")
    sizes = c3.text_input("Batch sizes", "64", key="sw_bs", help="e.g. 32, 128")
    c1, c2, c3 = st.columns(3)
    optimizers = c1.multiselect("Optimizers", OPTIMIZERS, default=["adam"], key="sw_opt")
    epochs = c2.text_input("Epochs", "3", key="sw_epochs")
    seeds = c3.text_input("Seeds", "0", key="sw_seed", help="Several seeds show how much luck is involved.")
    repeats = c3.number_input("Runs per configuration (seeds)", 1, MAX_SEEDS, 1, key="sw_repeats",
                              help=SEEDS_HELP + " Each seed S listed above then runs as S, S+1, …")
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
        lists = dict(arch=archs, lr=parse_list(lrs, "learning rates", float),
                     batch_size=parse_list(sizes, "batch sizes", int), epochs=parse_list(epochs, "epochs", int),
                     optimizer=optimizers, seed=parse_list(seeds, "seeds", int))
        if grid_size(**lists) * int(repeats) > MAX_GRID:
            raise ConfigError(f"that grid has {grid_size(**lists) * int(repeats)} runs; "
                              f"at most {MAX_GRID} can be queued at once")
        base = TrainConfig(dataset=dataset, data_root=str(data_dir()), val_split=float(val_split),
                           train_limit=int(limit) or None, weight_decay=parse_float(wd, "weight decay"))
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
        c2.caption(f"{k} runs of this configuration, one per seed, queued together; Compare shows them as "
                   "one group with its spread.")
    return int(k)


def queue(action) -> None:
    """Run a submit action; show its error next to the button, or remember what was launched."""
    try:
        run_ids = action()
    except USER_ERRORS as exc:
        st.error(f"Not queued: {exc}", icon=":material/error:")
        return
    st.session_state["launched"] = run_ids
    st.toast(f"Queued {len(run_ids)} run{'s' if len(run_ids) != 1 else ''}", icon=":material/check:")


def live_view(run_ids: list[str], polling: bool) -> None:
    records = runs_by_id(run_ids)
    if not records:
        st.caption("The runs launched from here were deleted.")
        return
    df = runs_frame(records)
    for _, run in df.iterrows():
        text = f"{run['label']} · **{run['state']}** · epoch {run['epoch']}/{run['epochs']}"
        if pd.notna(run["final_test_acc"]):
            text += f" · test accuracy {100 * run['final_test_acc']:.1f} %"
        st.progress(float(run["progress"]), text=text)
        if run["state"] in ("failed", "diverged") and run["error"]:
            st.error(run["error"])
    metrics = metrics_for(records)
    for record in records:
        note = precision_note(record.config, metrics.get(record.id, []))
        if note:
            st.caption(f"{run_label(record.arch, record.config, record.id)}: {note}")
    long = metrics_long(metrics)
    if long.empty:
        st.caption("Curves appear after the first epoch.")
    else:
        left, right = st.columns(2)
        left.plotly_chart(curves_figure(long, df, metric="loss", splits=("train", "val", "test")))
        right.plotly_chart(curves_figure(long, df, metric="acc", splits=("train", "val", "test")))
        st.caption("Dotted: training images, dashed: validation, solid: test. Loss should fall and "
                   "accuracy rise; a held-out curve turning up while training keeps improving means overfitting.")
    if polling and not any_active(df):
        st.rerun()  # everything finished: a full rerun stops the refreshing


store = open_store()
can_queue = writable(store)
dataset, shape, classes = dataset_picker()
single, sweep = st.tabs(["Single run", "Sweep (grid or search)"])
with single:
    config = single_form(dataset, shape, classes)
    k = seeds_input()
    if not can_queue:
        st.caption(":material/lock: Read-only: runs cannot be queued here.")
    elif st.button("Queue run" if k == 1 else f"Queue {k} runs", type="primary", disabled=config is None,
                   key="queue_single", icon=":material/play_arrow:") and not refuse_when_read_only(store):
        download = settings().download
        queue(lambda: [submit(store, config, download=download)] if k == 1
              else submit_sweep(store, expand_seeds(config, k), download=download)[1])
with sweep:
    searching = st.toggle("Search ranges instead of a grid (random or TPE trials, with early stopping)",
                          key="sw_search")
    spec = search_form(dataset) if searching else None
    if searching and not can_queue:
        st.caption(":material/lock: Read-only: a search cannot be started here.")
    elif searching and st.button("Start the search", type="primary", disabled=spec is None, key="start_search",
                                 icon=":material/play_arrow:") and not refuse_when_read_only(store):
        def start() -> list[str]:
            sweep_id, run_ids = start_search(store, spec, download=settings().download)
            st.session_state["sweep"] = st.session_state["launched_search"] = sweep_id  # Sweeps opens on it
            return run_ids
        queue(start)
    if not searching:
        st.session_state.pop("launched_search", None)
        grid = sweep_form(dataset)
        if not can_queue:
            st.caption(":material/lock: Read-only: runs cannot be queued here.")
        else:
            reuse = st.checkbox("Reuse finished runs with an identical config instead of training them again",
                                key="sw_reuse")
            if st.button(f"Queue {len(grid) if grid else 0} runs", type="primary", disabled=not grid,
                         key="queue_sweep", icon=":material/play_arrow:") and not refuse_when_read_only(store):
                queue(lambda: submit_sweep(store, grid, reuse=reuse, download=settings().download)[1])

launched = st.session_state.get("launched")
if launched:
    st.divider()
    st.subheader("What you launched")
    active = any_active(runs_frame(runs_by_id(launched)))
    st.fragment(run_every=REFRESH_SECONDS if active else None)(live_view)(launched, active)
    c1, c2, c3, _ = st.columns([1, 1, 1, 2])
    with c1:
        link("runs.py", "All runs", ":material/list_alt:")
    with c2:
        link("compare.py", "Compare runs", ":material/compare_arrows:")
    with c3:
        if st.session_state.get("launched_search"):
            link("sweeps.py", "Watch the search", ":material/tune:")
