"""Inspect: look inside one trained model, from its curves down to its filters and its mistakes."""

from __future__ import annotations

import streamlit as st

from dashboard import loaders
from dashboard.inspect_figures import (
    confusion_figure,
    enlarge,
    mistake_caption,
    per_class_figure,
    per_class_frame,
    single_run_curves,
    top_confusions,
    top_k_figure,
    trace_frame,
    trace_path,
)
from dashboard.readings import precision_note
from dashboard.runs_table import run_label, runs_frame
from dashboard.state import damage_notes, first_run_message, open_store, run_metrics, writable
from dashboard.tables import metrics_long
from engine.config import arch_label
from engine.errors import UploadError
from engine.ml.images import MAX_IMAGE_BYTES
from engine.model_files import file_change
from engine.runs.records import RunKind, RunState

UPLOAD_TYPES = ["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff"]
MAX_UPLOAD_MB = MAX_IMAGE_BYTES // (1024 * 1024)  # the engine's limit, also the server's (config.toml)

st.title("Inspect")
st.caption(
    "Look inside one trained model: how it learned, where it goes wrong, how an image changes shape "
    "on its way through the layers, what its first filters look for, and what it says about your "
    "own picture."
)


# ---------------------------------------------------------------- choose a run

store = open_store()
try:
    done = store.list_runs(states=[RunState.DONE], kind="train")
    can_upload = writable(store)  # uploads are off in read-only mode
    tracked = {r.id for r in store.list_runs(kind=RunKind.TRACKED)}
finally:
    store.close()
done = [r for r in reversed(done) if r.paths.model.exists()]  # newest first
if not done:
    first_run_message("inspect")
    st.caption("Inspect shows finished runs only: as soon as a run is **done**, it appears here.")
    st.stop()

by_id = {r.id: r for r in done}
wanted = st.query_params.get("run")
if wanted in tracked:
    st.info(
        f"Run `{wanted}` was recorded by a script with `engine.track`: Lensboard has no model for it, so there "
        "is nothing to look inside here. Its curves and settings are on the Compare and Runs pages.",
        icon=":material/info:",
    )
elif wanted and wanted not in by_id:
    st.warning(f"Run `{wanted}` is not a finished run in this results root; showing the latest one instead.")
if wanted in by_id and st.session_state.get("inspect_from_url") != wanted:
    st.session_state["inspect_run"] = wanted  # a link from another page picks the run
    st.session_state["inspect_from_url"] = wanted
if st.session_state.get("inspect_run") not in by_id:
    st.session_state["inspect_run"] = done[0].id


def describe_run(run_id: str) -> str:
    r = by_id[run_id]
    acc = f" · {100 * r.final_test_acc:.2f}%" if r.final_test_acc is not None else ""
    return f"{run_label(r.arch, r.config, r.id)} · {r.dataset}{acc}"


run_id = st.selectbox(
    "Finished run",
    list(by_id),
    key="inspect_run",
    format_func=describe_run,
    help="Every run that finished training, newest first. Links from other pages open a run here with ?run=<id>.",
)
if st.query_params.get("run") != run_id:
    st.query_params["run"] = run_id  # the address now points at this run: shareable, reload-safe
    st.session_state["inspect_from_url"] = run_id
record = by_id[run_id]
rows = run_metrics(record)
change = file_change(record.train_config())  # your own model's file, edited since this run trained
if change:
    st.warning(
        f"{change[0].upper()}{change[1:]}: what is shown below runs the file as it is now, with the weights this "
        "run saved.",
        icon=":material/warning:",
    )

for note in damage_notes([record]):
    st.warning(note, icon=":material/report:")
_, ds = loaders.model(record)  # a model that cannot be loaded is one line from the router
trace, total_params = loaders.layers(record)
last = rows[-1] if rows else {}
c1, c2, c3, c4, c5 = st.columns(5)
c1.metric("Test accuracy", f"{100 * last['test_acc']:.2f}%" if last else "–")
c2.metric("Test loss", f"{last['test_loss']:.4f}" if last else "–")
c3.metric("Epochs", len(rows))
c4.metric("Seconds per epoch", f"{sum(r['seconds'] for r in rows) / len(rows):.2f}" if rows else "–")
c5.metric("Parameters", f"{total_params:,}")
if precision_note(record.config, rows):
    st.caption(precision_note(record.config, rows))

with st.expander("Configuration and learning curves", expanded=True, icon=":material/tune:"):
    left, right = st.columns([1.4, 3])
    left.dataframe(
        {"setting": list(record.config), "value": [str(v) for v in record.config.values()]},
        hide_index=True,
        width="stretch",
        height=36 * (len(record.config) + 1) + 3,
    )
    model_file = record.paths.model
    left.download_button(
        f"Download model.pt ({model_file.stat().st_size / 1e6:.1f} MB)",
        model_file.read_bytes,
        f"{record.id}-model.pt",
        "application/octet-stream",
        icon=":material/download:",
        on_click="ignore",
        key="dl_model",
        help="The final weights (a state_dict), read only when you click: load them with "
        "torch.load(path, weights_only=True) into engine.ml.models.build_model(arch, shape, classes).",
    )
    if rows:
        long = metrics_long({record.id: rows})
        frame = runs_frame([record])
        with right:
            a, b = st.columns(2)
            a.plotly_chart(single_run_curves(long, frame, "loss"), key="curve_loss")
            b.plotly_chart(single_run_curves(long, frame, "acc"), key="curve_acc")
            st.caption(
                "Dotted: training images, dashed: validation, solid: test. Loss should fall and accuracy "
                "rise; a held-out curve turning up while training keeps improving means overfitting."
            )

mistakes_tab, shapes_tab, filters_tab, upload_tab = st.tabs(
    [
        ":material/grid_on: Mistakes",
        ":material/account_tree: Layers and shapes",
        ":material/filter: Filters and feature maps",
        ":material/upload: Try your own image",
    ]
)

# ---------------------------------------------------------------- mistakes

with mistakes_tab:
    report = loaders.test_report(record)
    st.markdown(
        f"On the **{report.total:,}** test images the model is right **{100 * report.accuracy:.2f}%** of "
        f"the time: **{report.wrong:,}** mistakes."
    )
    left, right = st.columns([3, 2])
    left.plotly_chart(confusion_figure(report.confusion, ds.classes), key="confusion")
    right.plotly_chart(per_class_figure(report.per_class), key="per_class")
    pairs = top_confusions(report.confusion, ds.classes)
    if pairs:
        st.markdown(
            "**Most frequent mix-ups:** "
            + "; ".join(f"a true **{t}** taken for **{p}** {n} time{'s' if n != 1 else ''}" for t, p, n in pairs)
            + "."
        )
        st.caption(
            "Read a row of the matrix as: of all test images of this true class, where did the "
            "predictions go? The diagonal is right; everything else is a mistake."
        )
    with st.expander("Per-class table"):
        st.dataframe(per_class_frame(report.per_class), hide_index=True, width="stretch")

    st.subheader("Misclassified test images")
    if not report.mistakes:
        st.success("No test image is misclassified. Nothing to show here.", icon=":material/celebration:")
    else:
        names = sorted({m.true_name for m in report.mistakes}, key=ds.classes.index)
        only = st.selectbox("True class", ["all classes"] + names, key="gallery_class")
        shown = [m for m in report.mistakes if only == "all classes" or m.true_name == only]
        st.caption(
            f"The model's most confident mistakes first ({len(shown)} shown"
            f"{f' of {report.wrong:,}' if only == 'all classes' else ''}); the percentage is how sure "
            "it was of its wrong answer."
        )
        images = loaders.gallery_images(record, tuple(m.index for m in shown))
        st.image(images, caption=[mistake_caption(m.true_name, m.pred_name, m.confidence) for m in shown], width=112)

# ---------------------------------------------------------------- layers and shapes

with shapes_tab:
    c, h, w = ds.shape
    st.markdown(f"One **{c}x{h}x{w}** image on its way through `{arch_label(record.arch)}`:")
    st.code(trace_path(trace), language=None)
    st.dataframe(
        trace_frame(trace),
        hide_index=True,
        width="stretch",
        height=min(800, 36 * (len(trace) + 1) + 3),
        column_config={
            "parameters": st.column_config.NumberColumn(format="localized"),
            "output shape": st.column_config.TextColumn(help="channels x height x width, or one number after flatten"),
        },
    )
    biggest = max(trace, key=lambda r: r.params)
    st.markdown(
        f"**{total_params:,} parameters in total.** The largest layer, {biggest.layer}, holds "
        f"{biggest.params:,} of them ({biggest.params / max(1, total_params):.0%})."
    )
    st.caption(
        "A convolution has out x (in x k x k) weights plus one bias per filter, whatever the image size; "
        "a fully connected layer has one weight per input and output pair, which is why flattening a "
        "large feature map makes the next layer big. Pooling, ReLU and flatten have no parameters."
    )

# ---------------------------------------------------------------- filters and feature maps

with filters_tab:
    f = loaders.filters(record)
    if f is None:
        st.info(
            f"`{arch_label(record.arch)}` has no convolution layers, so it has no filters or feature maps: it looks at "
            "the flattened image all at once. Pick a CNN run to see them.",
            icon=":material/info:",
        )
    else:
        st.markdown(f"**The {len(f.images)} filters of the first convolution layer**, {f.layer}")
        st.image([enlarge(img, 72) for img in f.images], caption=[f"#{i}" for i in range(len(f.images))], width=72)
        st.caption(
            "Each filter is a small grid of weights slid over the image; bright cells are large positive "
            "weights, dark ones negative (each filter scaled on its own). "
            + (
                "Shown in colour: the filters see red, green and blue."
                if f.colour
                else "Edge and stroke detectors often look like a bright band next to a dark one."
            )
        )
        st.divider()
        st.markdown("**Feature maps of one test image after each convolutional block**")
        index = st.columns([1, 3])[0].number_input(
            f"Test image (0 to {len(ds.test) - 1})",
            0,
            len(ds.test) - 1,
            0,
            key="fmap_index",
            help="Pick any test image by its position in the test set.",
        )
        maps = loaders.feature_maps(record, int(index))
        left, right = st.columns([1, 5])
        left.image(
            enlarge(maps.image, 112),
            caption=f"true {maps.true_name}, predicted {maps.top.name} ({100 * maps.top.probability:.0f}%)",
        )
        with right:
            for block in maps.blocks:
                cc, hh, ww = block.shape
                shown = f" (first {len(block.maps)} shown)" if len(block.maps) < cc else ""
                st.markdown(f"{block.name} → **{cc}x{hh}x{ww}**{shown}")
                st.image([enlarge(m, 64) for m in block.maps], width=64)
        st.caption(
            "Bright = strong activation. Early blocks respond to edges and strokes at full resolution; "
            "later blocks are smaller and more abstract, as pooling halves the size at each step."
        )

# ---------------------------------------------------------------- upload

with upload_tab:
    if not can_upload:
        st.info("Uploads are off: this dashboard is read-only.", icon=":material/lock:")
    else:
        c, h, w = ds.shape
        st.markdown(
            f"Upload a picture and see what this model makes of it. It is converted to what the model was "
            f"trained on: **{'colour (RGB)' if c == 3 else 'greyscale'}**, **{w}x{h}** pixels, normalised with "
            f"the {ds.name} training mean and standard deviation."
        )
        upload = st.file_uploader(
            f"Image (PNG, JPEG, GIF, BMP, WEBP or TIFF, up to {MAX_UPLOAD_MB} MB)",
            type=UPLOAD_TYPES,
            max_upload_size=MAX_UPLOAD_MB,
            key="upload",
        )
        invert_choice = st.radio(
            "Invert colours",
            ["automatic", "yes", "no"],
            horizontal=True,
            key="invert",
            help="MNIST digits are white on black. Automatic inverts a greyscale picture with "
            "a light background so a dark digit on white paper looks like the training data. "
            "A small drawing on a big page is also cropped and centred, as MNIST digits are.",
        )
        if upload is not None:
            invert = {"automatic": None, "yes": True, "no": False}[invert_choice]
            try:
                answer = loaders.classify_upload(record, upload.getvalue(), invert)
            except UploadError as exc:
                st.error(f"{upload.name}: {exc}", icon=":material/block:")
            else:
                top, image, prepared = answer.top, answer.image, answer.prepared
                yours, seen, chart = st.columns([1, 1, 2])
                width, height = image.info.get("original_size", image.size)
                yours.image(image.convert("RGB"), caption=f"your image ({width}x{height})", width=160)
                seen.image(enlarge(prepared.display, 160), caption=f"as the model sees it ({w}x{h})", width=160)
                chart.plotly_chart(top_k_figure(top), key="topk")
                st.markdown(f"The model says **{top[0].name}** with {100 * top[0].probability:.1f}% probability.")
                st.caption(prepared.note + ".")
