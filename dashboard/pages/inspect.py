"""Inspect: look inside one trained model, from its curves down to its filters and its mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st
import torch

from dashboard.inspect_figures import (confusion_figure, enlarge, mistake_caption, per_class_figure,
                                       per_class_frame, single_run_curves, top_confusions, top_k_figure,
                                       trace_frame, trace_path)
from dashboard.readings import precision_note
from dashboard.state import first_run_message, open_store, run_metrics
from dashboard.tables import metrics_long, run_label, runs_frame
from engine import analysis
from engine.config import TrainConfig
from engine.data import DatasetError
from engine.models import count_parameters
from engine.store import RunState
from engine.train import load_trained

GALLERY = 48  # misclassified images kept for the gallery
UPLOAD_TYPES = ["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff"]

st.title("Inspect")
st.caption("Look inside one trained model: how it learned, where it goes wrong, how an image changes shape "
           "on its way through the layers, what its first filters look for, and what it says about your "
           "own picture.")


# ---------------------------------------------------------------- cached computations (keyed by run id)


@st.cache_resource(max_entries=4, show_spinner="Loading the model and its dataset…")
def load(run_id: str, run_dir: str, config_json: str):
    config = TrainConfig.from_dict(json.loads(config_json))
    return load_trained(Path(run_dir), config, torch.device("cpu"))


@st.cache_data(max_entries=16, show_spinner="Classifying the test set…")
def test_report(run_id: str, run_dir: str, config_json: str) -> analysis.TestReport:
    model, ds = load(run_id, run_dir, config_json)
    return analysis.analyse_test_set(model, ds, limit=GALLERY)


@st.cache_data(max_entries=16, show_spinner=False)
def gallery_images(run_id: str, run_dir: str, config_json: str, indices: tuple[int, ...]) -> list:
    _, ds = load(run_id, run_dir, config_json)
    return [enlarge(analysis.display_image(ds, ds.test.x[i]), 84) for i in indices]


@st.cache_data(max_entries=16, show_spinner=False)
def layers(run_id: str, run_dir: str, config_json: str) -> tuple[list[analysis.TraceRow], int]:
    model, ds = load(run_id, run_dir, config_json)
    return analysis.shape_trace(model, ds.shape), count_parameters(model)


@st.cache_data(max_entries=16, show_spinner=False)
def filters(run_id: str, run_dir: str, config_json: str) -> analysis.Filters | None:
    model, _ = load(run_id, run_dir, config_json)
    return analysis.conv_filters(model)


@st.cache_data(max_entries=64, show_spinner="Computing feature maps…")
def maps_of(run_id: str, run_dir: str, config_json: str, index: int):
    model, ds = load(run_id, run_dir, config_json)
    x = ds.test.inputs(index)  # the normalised model input
    top = analysis.top_k(model, x, ds.classes, k=1)[0]
    return analysis.display_image(ds, x), ds.classes[int(ds.test.y[index])], top, analysis.feature_maps(model, x)


# ---------------------------------------------------------------- choose a run

store = open_store()
try:
    done = store.list_runs(states=[RunState.DONE], kind="train")
finally:
    store.close()
done = [r for r in reversed(done) if (r.path / "model.pt").exists()]  # newest first
if not done:
    first_run_message("inspect")
    st.caption("Inspect shows finished runs only: as soon as a run is **done**, it appears here.")
    st.stop()

by_id = {r.id: r for r in done}
wanted = st.query_params.get("run")
if wanted and wanted not in by_id:
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


run_id = st.selectbox("Finished run", list(by_id), key="inspect_run", format_func=describe_run,
                      help="Every run that finished training, newest first. Links from other pages "
                           "open a run here with ?run=<id>.")
if st.query_params.get("run") != run_id:
    st.query_params["run"] = run_id  # the address now points at this run: shareable, reload-safe
    st.session_state["inspect_from_url"] = run_id
record = by_id[run_id]
key = (record.id, str(record.path), json.dumps(record.config, sort_keys=True))
rows = run_metrics(record)

try:
    model, ds = load(*key)
except (DatasetError, FileNotFoundError, RuntimeError, ValueError) as exc:
    st.error(f"This run's model cannot be loaded: {exc}", icon=":material/error:")
    st.stop()

trace, total_params = layers(*key)
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
    left.dataframe({"setting": list(record.config), "value": [str(v) for v in record.config.values()]},
                   hide_index=True, width="stretch", height=36 * (len(record.config) + 1) + 3)
    model_file = record.path / "model.pt"
    left.download_button(f"Download model.pt ({model_file.stat().st_size / 1e6:.1f} MB)", model_file.read_bytes,
                         f"{record.id}-model.pt", "application/octet-stream", icon=":material/download:",
                         on_click="ignore", key="dl_model",
                         help="The final weights (a state_dict), read only when you click: load them with "
                              "torch.load(path, weights_only=True) into engine.models.build_model(arch, shape, classes).")
    if rows:
        long = metrics_long({record.id: rows})
        frame = runs_frame([record])
        with right:
            a, b = st.columns(2)
            a.plotly_chart(single_run_curves(long, frame, "loss"), key="curve_loss")
            b.plotly_chart(single_run_curves(long, frame, "acc"), key="curve_acc")
            st.caption("Dotted: training images, dashed: validation, solid: test. Loss should fall and accuracy "
                       "rise; a held-out curve turning up while training keeps improving means overfitting.")

mistakes_tab, shapes_tab, filters_tab, upload_tab = st.tabs(
    [":material/grid_on: Mistakes", ":material/account_tree: Layers and shapes",
     ":material/filter: Filters and feature maps", ":material/upload: Try your own image"])

# ---------------------------------------------------------------- mistakes

with mistakes_tab:
    report = test_report(*key)
    st.markdown(f"On the **{report.total:,}** test images the model is right **{100 * report.accuracy:.2f}%** of "
                f"the time: **{report.wrong:,}** mistakes.")
    left, right = st.columns([3, 2])
    left.plotly_chart(confusion_figure(report.confusion, ds.classes), key="confusion")
    right.plotly_chart(per_class_figure(report.per_class), key="per_class")
    pairs = top_confusions(report.confusion, ds.classes)
    if pairs:
        st.markdown("**Most frequent mix-ups:** " + "; ".join(
            f"a true **{t}** taken for **{p}** {n} time{'s' if n != 1 else ''}" for t, p, n in pairs) + ".")
        st.caption("Read a row of the matrix as: of all test images of this true class, where did the "
                   "predictions go? The diagonal is right; everything else is a mistake.")
    with st.expander("Per-class table"):
        st.dataframe(per_class_frame(report.per_class), hide_index=True, width="stretch")

    st.subheader("Misclassified test images")
    if not report.mistakes:
        st.success("No test image is misclassified. Nothing to show here.", icon=":material/celebration:")
    else:
        names = sorted({m.true_name for m in report.mistakes}, key=ds.classes.index)
        only = st.selectbox("True class", ["all classes"] + names, key="gallery_class")
        shown = [m for m in report.mistakes if only == "all classes" or m.true_name == only]
        st.caption(f"The model's most confident mistakes first ({len(shown)} shown"
                   f"{f' of {report.wrong:,}' if only == 'all classes' else ''}); the percentage is how sure "
                   "it was of its wrong answer.")
        images = gallery_images(*key, tuple(m.index for m in shown))
        st.image(images, caption=[mistake_caption(m.true_name, m.pred_name, m.confidence) for m in shown],
                 width=112)

# ---------------------------------------------------------------- layers and shapes

with shapes_tab:
    c, h, w = ds.shape
    st.markdown(f"One **{c}x{h}x{w}** image on its way through `{record.arch}`:")
    st.code(trace_path(trace), language=None)
    st.dataframe(trace_frame(trace), hide_index=True, width="stretch", height=min(800, 36 * (len(trace) + 1) + 3),
                 column_config={
                     "parameters": st.column_config.NumberColumn(format="localized"),
                     "output shape": st.column_config.TextColumn(
                         help="channels x height x width, or one number after flatten")})
    biggest = max(trace, key=lambda r: r.params)
    st.markdown(f"**{total_params:,} parameters in total.** The largest layer, {biggest.layer}, holds "
                f"{biggest.params:,} of them ({biggest.params / max(1, total_params):.0%}).")
    st.caption("A convolution has out x (in x k x k) weights plus one bias per filter, whatever the image size; "
               "a fully connected layer has one weight per input and output pair, which is why flattening a "
               "large feature map makes the next layer big. Pooling, ReLU and flatten have no parameters.")

# ---------------------------------------------------------------- filters and feature maps

with filters_tab:
    f = filters(*key)
    if f is None:
        st.info(f"`{record.arch}` has no convolution layers, so it has no filters or feature maps: it looks at "
                "the flattened image all at once. Pick a CNN run to see them.", icon=":material/info:")
    else:
        st.markdown(f"**The {len(f.images)} filters of the first convolution layer**, {f.layer}")
        st.image([enlarge(img, 72) for img in f.images], caption=[f"#{i}" for i in range(len(f.images))], width=72)
        st.caption("Each filter is a small grid of weights slid over the image; bright cells are large positive "
                   "weights, dark ones negative (each filter scaled on its own). "
                   + ("Shown in colour: the filters see red, green and blue." if f.colour else
                      "Edge and stroke detectors often look like a bright band next to a dark one."))
        st.divider()
        st.markdown("**Feature maps of one test image after each convolutional block**")
        index = st.columns([1, 3])[0].number_input(f"Test image (0 to {len(ds.test) - 1})", 0, len(ds.test) - 1, 0, key="fmap_index",
                                help="Pick any test image by its position in the test set.")
        image, true_name, top, blocks = maps_of(*key, int(index))
        left, right = st.columns([1, 5])
        left.image(enlarge(image, 112), caption=f"true {true_name}, predicted {top.name} ({100 * top.probability:.0f}%)")
        with right:
            for block in blocks:
                cc, hh, ww = block.shape
                shown = f" (first {len(block.maps)} shown)" if len(block.maps) < cc else ""
                st.markdown(f"{block.name} → **{cc}x{hh}x{ww}**{shown}")
                st.image([enlarge(m, 64) for m in block.maps], width=64)
        st.caption("Bright = strong activation. Early blocks respond to edges and strokes at full resolution; "
                   "later blocks are smaller and more abstract, as pooling halves the size at each step.")

# ---------------------------------------------------------------- upload

with upload_tab:
    c, h, w = ds.shape
    st.markdown(f"Upload a picture and see what this model makes of it. It is converted to what the model was "
                f"trained on: **{'colour (RGB)' if c == 3 else 'greyscale'}**, **{w}x{h}** pixels, normalised with "
                f"the {ds.name} training mean and standard deviation.")
    upload = st.file_uploader("Image (PNG, JPEG, GIF, BMP, WEBP or TIFF, up to 10 MB)", type=UPLOAD_TYPES,
                              max_upload_size=10, key="upload")
    invert_choice = st.radio("Invert colours", ["automatic", "yes", "no"], horizontal=True, key="invert",
                             help="MNIST digits are white on black. Automatic inverts a greyscale picture with "
                                  "a light background so a dark digit on white paper looks like the training data. "
                                  "A small drawing on a big page is also cropped and centred, as MNIST digits are.")
    if upload is not None:
        try:
            image = analysis.open_upload(upload.getvalue())
            prepared = analysis.prepare_image(image, ds, invert={"automatic": None, "yes": True, "no": False}[invert_choice])
        except analysis.UploadError as exc:
            st.error(f"{upload.name}: {exc}", icon=":material/block:")
            prepared = None
        except Exception as exc:  # an image Pillow opened but cannot convert: say so, never a traceback
            st.error(f"{upload.name}: this image could not be converted to the model's input "
                     f"({type(exc).__name__}: {exc}); try saving it as PNG or JPEG", icon=":material/block:")
            prepared = None
        if prepared is not None:
            top = analysis.top_k(model, prepared.x, ds.classes, k=3)
            yours, seen, chart = st.columns([1, 1, 2])
            yours.image(image.convert("RGB"), caption=f"your image ({image.width}x{image.height})", width=160)
            seen.image(enlarge(prepared.display, 160), caption=f"as the model sees it ({w}x{h})", width=160)
            chart.plotly_chart(top_k_figure(top), key="topk")
            st.markdown(f"The model says **{top[0].name}** with {100 * top[0].probability:.1f}% probability.")
            st.caption(prepared.note + ".")
