"""The Train page's search form: ranges and lists, trials, sampler, early stopping and objective, as
Streamlit widgets that return a checked SearchSpec (the page queues it)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.state import data_dir
from dashboard.train_form import architectures_picker
from engine.config import MAX_VAL_SPLIT, OPTIMIZERS, TrainConfig
from engine.errors import ConfigError
from engine.ml.train import check_config
from engine.runs.search import RULE_NAMES
from engine.runs.search_space import (
    DEFAULT_VAL_SPLIT,
    MAX_TRIALS,
    OBJECTIVES,
    RULES,
    SearchSpec,
    build_spec,
    corner_configs,
    parse_field,
)


def search_form(dataset: str) -> SearchSpec | None:
    """The Sweep tab's search mode: ranges and lists, trials, sampler, early stopping, objective; a checked
    SearchSpec, or None after showing what is wrong."""
    st.caption(
        "Give **ranges** for the continuous hyperparameters (`LOW:HIGH`, add `:log` to sample on a log "
        "scale) and lists for the rest. The search tries a number of trials from that space, learns from "
        "each result (TPE) and can stop bad trials early. It judges trials on a validation split, never on "
        "the test set."
    )
    c1, c2, c3 = st.columns(3)
    archs = architectures_picker(c1, key="se_arch")
    lr = c2.text_input(
        "Learning rate",
        "1e-4:1e-1:log",
        key="se_lr",
        help="A range LOW:HIGH (add :log for a log scale), a list such as 1e-3, 1e-2, or one value",
    )
    sizes = c3.text_input("Batch sizes", "32, 64, 128", key="se_bs", help="A list, e.g. 32, 128")
    c1, c2, c3 = st.columns(3)
    optimizers = c1.multiselect("Optimizers", OPTIMIZERS, default=["adam"], key="se_opt")
    wd = c2.text_input("Weight decay", "0", key="se_wd", help="One value, a list, or a range such as 1e-6:1e-3:log")
    momentum = c3.text_input("Momentum (sgd only)", "0.9", key="se_mom", help="e.g. 0.9, or a range 0.8:0.99")
    c1, c2, c3, c4 = st.columns(4)
    trials = c1.number_input("Trials", 1, MAX_TRIALS, 12, key="se_trials", help="How many runs the search makes")
    sampler = c2.radio(
        "Sampler",
        ["tpe", "random"],
        horizontal=True,
        key="se_sampler",
        format_func={"tpe": "TPE", "random": "random"}.get,
        help="Random samples the space blindly; TPE (Bayesian) samples near what worked so far.",
    )
    prune = c3.selectbox(
        "Early stopping",
        RULES,
        index=RULES.index("asha"),
        key="se_prune",
        format_func=lambda r: RULE_NAMES[r][:1].upper() + RULE_NAMES[r][1:],
        help="Stop trials that fall behind after an epoch, to spend the epochs on better ones.",
    )
    objective = c4.radio(
        "Choose on",
        list(OBJECTIVES),
        key="se_objective",
        format_func={"val_acc": "validation accuracy", "val_loss": "validation loss"}.get,
    )
    with st.expander("Budget, data and seeds"):
        c1, c2, c3, c4, c5 = st.columns(5)
        epochs = c1.number_input("Epochs per trial", 1, 1000, 3, key="se_epochs", help="Each trial's budget")
        val_split = c2.slider("Validation split", 0.05, MAX_VAL_SPLIT, DEFAULT_VAL_SPLIT, 0.05, key="se_val")
        limit = c3.number_input("Train limit (0 = all)", 0, 10_000_000, 0, step=100, key="se_limit")
        seeds = c4.text_input("Training seeds", "0", key="se_seeds", help="Several seeds: one more dimension")
        search_seed = c5.number_input(
            "Search seed",
            0,
            2**31 - 1,
            0,
            key="se_search_seed",
            help="Seeds the sampler: the same seed asks for the same trials.",
        )
    try:
        if not archs or not optimizers:
            raise ConfigError("pick at least one architecture and one optimizer")
        fields = {
            "arch": archs,
            "lr": parse_field("lr", lr, "learning rate"),
            "batch_size": parse_field("batch_size", sizes, "batch sizes"),
            "optimizer": optimizers,
            "weight_decay": parse_field("weight_decay", wd, "weight decay"),
            "momentum": parse_field("momentum", momentum, "momentum"),
            "seed": parse_field("seed", seeds, "training seeds"),
        }
        base = TrainConfig(
            dataset=dataset,
            data_root=str(data_dir()),
            epochs=int(epochs),
            val_split=float(val_split),
            train_limit=int(limit) or None,
        )
        spec = build_spec(
            base, fields, sampler=sampler, trials=int(trials), prune=prune, objective=objective, seed=int(search_seed)
        )
        for config in corner_configs(spec):
            check_config(config)
    except ConfigError as exc:
        st.error(f"Not ready to start: {exc}", icon=":material/error:")
        return None
    st.markdown(
        f"**{spec.trials} trials** of up to {spec.base.epochs} epoch(s) each (at most "
        f"{spec.trials * spec.base.epochs} epochs), searching:"
    )
    st.dataframe(
        pd.DataFrame({"hyperparameter": spec.names, "values": [d.describe() for d in spec.dimensions]}),
        hide_index=True,
        width="content",
    )
    return spec
