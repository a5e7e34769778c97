"""Folder datasets (engine/ml/folders.py): layout checks, a fixed image size, bounded memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli.main import main
from engine.errors import DatasetError
from engine.ml import folders
from engine.ml.data import load_dataset, load_raw
from tests.disk_layouts import write_image_folder

ROOT = Path(__file__).resolve().parents[1]


def test_an_empty_class_folder_is_named_instead_of_becoming_a_class_without_images(tmp_path):
    root = write_image_folder(tmp_path / "pets")
    (root / "train" / "bird").mkdir()
    (root / "test" / "bird").mkdir()
    with pytest.raises(DatasetError, match=r"no images found in the class folder train/bird .*remove the folder"):
        folders.scan(root)


def test_a_single_class_is_refused_instead_of_training_to_a_meaningless_100_percent(tmp_path):
    root = write_image_folder(tmp_path / "cats", classes=("cat",))
    with pytest.raises(DatasetError, match=r"only one class \(cat\): a classifier needs at least two classes"):
        load_raw(f"folder:{root}", "unused")


def test_every_image_gets_the_fixed_size_whatever_the_first_file_looks_like(tmp_path):
    root = tmp_path / "shapes"
    for split in ("train", "test"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            half = Image.new("L", (40, 40), 0)
            half.paste(255, (20, 0, 40, 40))  # right half white
            half.save(root / split / label / "1.png")
        Image.new("L", (4, 60), 128).save(root / split / "a" / "0.png")  # an odd first file
    train_x, train_y, test_x, _, classes = load_raw(f"folder:{root}", "unused")
    side = folders.FOLDER_IMAGE_SIDE
    assert train_x.shape == (3, 1, side, side) and test_x.shape == (3, 1, side, side)
    second = train_x[1, 0]  # the 40x40 half-white image, not squashed to the first file's 4x60
    assert second[:, : side // 2 - 2].max() < 30 and second[:, side // 2 + 2 :].min() > 225


def test_sixteen_bit_pngs_are_scaled_properly_instead_of_clipped_to_white(tmp_path):
    root = tmp_path / "scans"
    ramp = (np.arange(40 * 40, dtype=np.uint32).reshape(40, 40) * 40).astype(np.uint16)  # 0..63960
    for split in ("train", "test"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            Image.fromarray(ramp).save(root / split / label / "0.png")
    train_x, *_ = load_raw(f"folder:{root}", "unused")
    assert train_x.shape[1] == 1  # grey
    assert (train_x == 255).mean() < 0.05 and 100 < train_x.mean() < 150  # was 99.7% white


def test_an_unreadable_class_folder_is_one_clear_line_on_the_command_line(tmp_path, monkeypatch, capsys):
    root = write_image_folder(tmp_path / "pets")
    locked = root / "train" / "dog"
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)  # root can read anything, so chmod cannot show it
    code = main(["train", "--dataset", f"folder:{root}", "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: ") and "permission denied" in err[0] and str(locked) in err[0]


def test_a_thin_strip_in_a_folder_is_refused_naming_the_file(tmp_path):
    root = write_image_folder(tmp_path / "pets")
    Image.new("RGB", (2000, 10)).save(root / "train" / "cat" / "strip.png")
    with pytest.raises(DatasetError, match=r"strip.png \(unreadable image: .*at most 20:1"):
        load_raw(f"folder:{root}", "unused")


def test_describe_reads_the_layout_and_a_few_headers_without_loading_the_images(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "pets", classes=("cat", "dog", "fox"), mode="L")
    monkeypatch.setattr(folders.images, "decode_square", lambda *a, **k: pytest.fail("an image was decoded"))
    assert folders.describe(root) == ((1, 32, 32), 3)


def test_a_folder_of_big_photos_costs_about_its_final_array_not_the_photos(tmp_path):
    """24 JPEG photos of 2000x2000 decode to 288 MB at full size; straight to 32x32, to almost nothing."""
    root = tmp_path / "photos"
    x = np.linspace(0, 255, 2000, dtype=np.float32)
    photo = np.stack(
        [
            np.broadcast_to(x, (2000, 2000)),
            np.broadcast_to(x[:, None], (2000, 2000)),
            np.full((2000, 2000), 90, np.float32),
        ],
        axis=2,
    ).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=85)
    for split, n in (("train", 16), ("test", 8)):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(n // 2):
                (root / split / label / f"{i}.jpg").write_bytes((tmp_path / "photo.jpg").read_bytes())
    script = (
        "import resource, sys\n"
        "from engine.ml.data import load_raw\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"train_x, *_ = load_raw('folder:{root}', 'unused')\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(train_x.shape, (after - before) // 1024)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    shape, grew_mb = proc.stdout.rsplit(" ", 1)
    assert shape.startswith("(16, 3, 32, 32)")
    assert int(grew_mb) < 60, f"peak memory grew by {grew_mb} MB while loading"


def test_the_dataset_cache_key_of_an_unreadable_folder_is_a_dataset_error(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "pets")

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refuse)
    with pytest.raises(DatasetError, match="permission denied"):
        load_dataset(f"folder:{root}")
