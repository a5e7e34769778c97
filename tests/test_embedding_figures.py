"""The pure builders behind the Embeddings and Search pages, without Streamlit."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from dashboard.embedding_figures import (
    HIT,
    MISS,
    compare_frame,
    embedding_map,
    hit_caption,
    metric_cards,
    nearest_in_map,
    per_class_frame,
    results_table,
    scale_for,
    selected_rows,
    selection_summary,
    tile,
)
from engine.ml.retrieval import retrieval_metrics


def test_the_map_is_a_webgl_scatter_with_one_trace_per_class_carrying_test_rows():
    coords = np.arange(12, dtype=np.float32).reshape(6, 2)
    labels = np.array([0, 1, 0, 2, 1, 0])
    rows = np.array([10, 11, 12, 13, 14, 15])
    fig = embedding_map(coords, labels, rows, ["zero", "one", "two"])
    assert isinstance(fig, go.Figure) and all(isinstance(t, go.Scattergl) for t in fig.data)
    assert [t.name for t in fig.data] == ["zero", "one", "two"]
    assert list(fig.data[0].customdata) == [10, 12, 15]
    assert fig.layout.xaxis.title.text == "t-SNE 1" and fig.layout.xaxis.showticklabels is False


def test_the_map_highlights_the_chosen_point_and_its_neighbours():
    coords = np.random.default_rng(0).normal(size=(5, 2))
    fig = embedding_map(
        coords, np.zeros(5, int), np.arange(5), ["a"], method="pca", focus=2, neighbours=[0, 4], explained=(0.5, 0.25)
    )
    names = [t.name for t in fig.data]
    assert names == ["a", "nearest neighbours", "chosen image"]
    assert list(fig.data[1].customdata) == [0, 4] and list(fig.data[2].x) == [coords[2, 0]]
    assert fig.layout.xaxis.title.text == "PC 1 (50% of variance)"


def test_nearest_in_map_ranks_by_cosine_and_leaves_out_the_point_itself():
    v = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0], [0.5, 0.5]], dtype=np.float32)
    pos, sims = nearest_in_map(v, 0, 3)
    assert pos.tolist() == [1, 4, 2]
    assert sims[0] == pytest.approx(0.9 / np.hypot(0.9, 0.1))
    assert len(nearest_in_map(v, 0, 100)[0]) == 4


def test_selected_rows_reads_customdata_from_clicks_boxes_and_lassos_once_each():
    event = {"selection": {"points": [{"customdata": 7}, {"customdata": [3]}, {"customdata": 7}, {"x": 1}]}}
    assert selected_rows(event) == [7, 3]
    assert selected_rows(None) == [] and selected_rows({}) == []


def test_a_tile_is_enlarged_with_sharp_pixels_and_a_coloured_border():
    img = np.array([[0.0, 1.0], [1.0, 0.0]])
    out = tile(img, HIT, scale=3, width=2)
    assert out.shape == (6 + 4, 6 + 4, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [0x2E, 0x9D, 0x49]
    assert out[2:5, 2:5].max() == 0 and out[2:5, 5:8].min() == 255
    assert tile(np.ones((4, 4, 3)), None, 2).shape == (8, 8, 3)
    assert scale_for(28, 84) == 3 and scale_for(224, 84) == 1


def test_results_are_marked_hit_or_miss_by_the_query_label_and_not_for_uploads():
    labels = np.array([5, 3, 5])
    hits = results_table(np.array([2, 1]), np.array([0.9, 0.8]), labels, [str(i) for i in range(10)], 5)
    assert [(h.rank, h.index, h.name, h.hit) for h in hits] == [(1, 2, "5", True), (2, 1, "3", False)]
    assert hit_caption(hits[0]) == "#1 · class 5 · cos 0.900 ✓" and hit_caption(hits[1]).endswith("✗")
    upload = results_table(np.array([0]), np.array([1.5]), labels, [str(i) for i in range(10)], None)
    assert upload[0].hit is None and hit_caption(upload[0], "l2") == "#1 · class 5 · dist 1.50"
    assert MISS != HIT


def test_metric_cards_and_tables_name_k_and_keep_the_numbers():
    m = retrieval_metrics(np.array([[0, 2], [3, 1]]), np.array([0, 0, 1, 1]), np.array([0, 1]), ["a", "b"])
    cards = metric_cards(m)
    assert [c[0] for c in cards] == ["precision@2", "recall@2", "mAP@2", "1-NN accuracy"]
    assert cards[0][1] == f"{m.precision_at_k:.3f}"
    frame = per_class_frame(m)
    assert frame["class"].tolist() == ["a", "b", "all"] and frame.iloc[-1]["queries"] == 2
    better = retrieval_metrics(np.array([[0, 1], [3, 2]]), np.array([0, 0, 1, 1]), np.array([0, 1]))
    table = compare_frame({"mlp": m, "cnn": better})
    assert table["run"].tolist() == ["cnn", "mlp"]


def test_a_selection_is_summarised_by_class_most_common_first():
    assert (
        selection_summary(np.array([1, 7, 7, 7]), [str(i) for i in range(10)]) == "4 images: 3 of class 7, 1 of class 1"
    )
    assert selection_summary(np.array([], int), ["a"]) == "no images"
