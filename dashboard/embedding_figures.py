"""Pure builders for the Embeddings and Search pages: maps, image tiles, metric tables.

No Streamlit here: every function takes arrays or records and returns a plotly figure, a
numpy image or a data frame, so it is tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from engine.ml.retrieval import RetrievalMetrics

# 10 distinct, colour-blind-friendly colours first (Tableau 10), then more for datasets with many classes
PALETTE = [
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]
HIT, MISS, QUERY, NEUTRAL = "#2e9d49", "#d1343b", "#2f6fdf", "#9aa0a6"
METRIC_LABELS = {
    "precision_at_k": (
        "precision@{k}",
        "Of the top {k} results, the share with the query's class, averaged over every test image.",
    ),
    "recall_at_k": ("recall@{k}", "The share of test images with at least one image of their class in the top {k}."),
    "map_at_k": (
        "mAP@{k}",
        "Mean average precision: like precision@{k} but rewards hits near the top of the list more.",
    ),
    "knn_accuracy": (
        "1-NN accuracy",
        "The share of test images whose single most similar training image has "
        "their class: a classifier with no training beyond the embedding.",
    ),
}


def class_colour(label: int) -> str:
    return PALETTE[int(label) % len(PALETTE)]


def embedding_map(
    coords: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray,
    classes: list[str],
    *,
    method: str = "tsne",
    focus: int | None = None,
    neighbours: list[int] | None = None,
    explained: tuple[float, float] | None = None,
    height: int = 520,
) -> go.Figure:
    """A WebGL scatter of a 2-D map, one trace per class (click the legend to hide a class).

    rows: the test-split row of each point (carried as customdata, so a selection names the
    images); focus: a test row drawn as a star; neighbours: test rows drawn with rings.
    """
    coords = np.asarray(coords)
    labels = np.asarray(labels)
    rows = np.asarray(rows)
    fig = go.Figure()
    for label in np.unique(labels):
        mask = labels == label
        name = classes[label] if label < len(classes) else str(label)
        fig.add_trace(
            go.Scattergl(
                x=coords[mask, 0],
                y=coords[mask, 1],
                mode="markers",
                name=name,
                marker=dict(size=5, color=class_colour(label), opacity=0.75),
                customdata=rows[mask],
                hovertemplate=f"class {name}<br>test image %{{customdata}}<extra></extra>",
            )
        )
    position = {int(r): i for i, r in enumerate(rows)}
    if neighbours:
        idx = [position[r] for r in neighbours if r in position]
        fig.add_trace(
            go.Scattergl(
                x=coords[idx, 0],
                y=coords[idx, 1],
                mode="markers",
                name="nearest neighbours",
                marker=dict(size=13, color="rgba(0,0,0,0)", line=dict(color="#111111", width=2)),
                customdata=rows[idx],
                hovertemplate="neighbour: test image %{customdata}<extra></extra>",
            )
        )
    if focus is not None and int(focus) in position:
        i = position[int(focus)]
        fig.add_trace(
            go.Scattergl(
                x=[coords[i, 0]],
                y=[coords[i, 1]],
                mode="markers",
                name="chosen image",
                marker=dict(size=18, symbol="star", color=QUERY, line=dict(color="white", width=1.5)),
                customdata=[rows[i]],
                hovertemplate="chosen: test image %{customdata}<extra></extra>",
            )
        )
    if method == "pca" and explained is not None:
        xt, yt = f"PC 1 ({100 * explained[0]:.0f}% of variance)", f"PC 2 ({100 * explained[1]:.0f}% of variance)"
    elif method == "pca":
        xt, yt = "PC 1", "PC 2"
    else:
        xt, yt = "t-SNE 1", "t-SNE 2"
    fig.update_layout(
        # zoom, not lasso, by default: Streamlit turns click-to-select off while a selection tool is active
        height=height,
        margin=dict(l=10, r=10, t=30, b=10),
        dragmode="zoom",
        hovermode="closest",
        legend=dict(title="class", itemsizing="constant"),
        uirevision="keep",
        xaxis=dict(title=xt, showticklabels=method == "pca", zeroline=False),
        yaxis=dict(title=yt, showticklabels=method == "pca", zeroline=False),
    )
    return fig


def nearest_in_map(vectors: np.ndarray, row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k points most cosine-similar to point `row` (itself excluded): (positions, similarities)."""
    v = np.asarray(vectors, dtype=np.float32)
    unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit[row]
    sims[row] = -np.inf
    k = max(0, min(k, len(v) - 1))
    order = np.argsort(-sims, kind="stable")[:k]
    return order, sims[order]


def selected_rows(selection: dict | None) -> list[int]:
    """Test rows named by a plotly selection event (clicked, boxed or lassoed points), in order, once each."""
    points = (selection or {}).get("selection", {}).get("points", []) if selection else []
    out, seen = [], set()
    for p in points:
        data = p.get("customdata")
        if isinstance(data, (list, tuple)):
            data = data[0] if data else None
        if data is None:
            continue
        row = int(data)
        if row not in seen:
            seen.add(row)
            out.append(row)
    return out


def tile(image: np.ndarray, border: str | None = None, scale: int = 3, width: int = 3) -> np.ndarray:
    """An image in [0, 1] ((H, W) or (H, W, 3)) as uint8 RGB, enlarged `scale` times (pixels kept
    sharp) with a coloured border: green for a hit, red for a miss, blue for the query."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    img = img.repeat(scale, axis=0).repeat(scale, axis=1)
    if border is None:
        return img
    rgb = np.array([int(border[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)
    out = np.empty((img.shape[0] + 2 * width, img.shape[1] + 2 * width, 3), np.uint8)
    out[:] = rgb
    out[width:-width, width:-width] = img
    return out


def scale_for(side: int, target: int = 96) -> int:
    """How much to enlarge an image of this side so it shows at about `target` pixels."""
    return max(1, round(target / max(side, 1)))


@dataclass
class Hit:
    rank: int
    index: int  # row of the train split
    label: int
    name: str
    score: float
    hit: bool | None  # None when the query's label is unknown (an upload)


def results_table(
    ids: np.ndarray, scores: np.ndarray, database_labels: np.ndarray, classes: list[str], query_label: int | None
) -> list[Hit]:
    out = []
    for rank, (i, s) in enumerate(zip(ids, scores), start=1):
        label = int(database_labels[i])
        out.append(
            Hit(
                rank,
                int(i),
                label,
                classes[label] if label < len(classes) else str(label),
                float(s),
                None if query_label is None else label == query_label,
            )
        )
    return out


def hit_caption(h: Hit, metric: str = "cosine") -> str:
    score = f"cos {h.score:.3f}" if metric == "cosine" else f"dist {h.score:.2f}"
    mark = "" if h.hit is None else (" ✓" if h.hit else " ✗")
    return f"#{h.rank} · class {h.name} · {score}{mark}"


def metric_cards(m: RetrievalMetrics) -> list[tuple[str, str, str]]:
    """(label, value, help) for the four headline numbers."""
    return [
        (label.format(k=m.k), f"{getattr(m, key):.3f}", help.format(k=m.k))
        for key, (label, help) in METRIC_LABELS.items()
    ]


def per_class_frame(m: RetrievalMetrics) -> pd.DataFrame:
    """One row per class and an 'all' row: queries and the four metrics."""
    rows = [
        {
            "class": c.name,
            "queries": c.queries,
            f"precision@{m.k}": c.precision_at_k,
            f"recall@{m.k}": c.recall_at_k,
            f"mAP@{m.k}": c.map_at_k,
            "1-NN accuracy": c.knn_accuracy,
        }
        for c in m.per_class
    ]
    rows.append(
        {
            "class": "all",
            "queries": m.queries,
            f"precision@{m.k}": m.precision_at_k,
            f"recall@{m.k}": m.recall_at_k,
            f"mAP@{m.k}": m.map_at_k,
            "1-NN accuracy": m.knn_accuracy,
        }
    )
    return pd.DataFrame(rows)


def compare_frame(named: dict[str, RetrievalMetrics]) -> pd.DataFrame:
    """The headline metrics of several runs, one row each, best mAP first."""
    rows = []
    for name, m in named.items():
        rows.append(
            {
                "run": name,
                f"precision@{m.k}": m.precision_at_k,
                f"recall@{m.k}": m.recall_at_k,
                f"mAP@{m.k}": m.map_at_k,
                "1-NN accuracy": m.knn_accuracy,
            }
        )
    df = pd.DataFrame(rows)
    return df.sort_values(df.columns[3], ascending=False, ignore_index=True) if len(df) else df


def selection_summary(labels: np.ndarray, classes: list[str]) -> str:
    """'23 images: 20 of class 7, 3 of class 1' for the labels of a selection, most common class first."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return "no images"
    values, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    parts = [f"{counts[i]} of class {classes[values[i]] if values[i] < len(classes) else values[i]}" for i in order]
    return f"{len(labels)} image{'s' if len(labels) != 1 else ''}: " + ", ".join(parts)
