"""The learned face-swap generator (tools.swapgen): smoke training, the swapper, fit_head's learned-swap passes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=240)
    if ok:
        assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("swapgen")
    _run("tools.swapgen.train", "--smoke", "--out", str(out))
    return out


def test_smoke_training_writes_generator_preview_and_log(generator: Path) -> None:
    import cv2

    from tools.swapgen.model import FaceSwapper

    assert "done: 20 steps" in (generator / "train.log").read_text()
    swapper = FaceSwapper.load(generator / "swapgen.pt")
    assert swapper.identities[-1] == "(everyone else)" and len(swapper.identities) == 4
    preview = cv2.imread(str(generator / "preview.png"))
    assert preview.shape[:2] == (6 * 32, (2 + 3) * 32)  # 6 faces; input, reconstruction, 3 swaps


def test_resume_continues_from_the_last_step(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run("tools.swapgen.train", "--smoke", "--out", str(out), "--steps", "10")
    _run("tools.swapgen.train", "--smoke", "--out", str(out), "--steps", "25", "--resume")
    log = (out / "train.log").read_text()
    assert "resumed at step 10" in log and "done: 25 steps" in log


def test_swapper_redraws_the_face_in_the_crop_geometry_and_never_as_its_own_identity(generator: Path) -> None:
    from tools.sbi.data import synthetic_clips
    from tools.swapgen.model import FaceSwapper

    swapper = FaceSwapper.load(generator / "swapgen.pt")
    clip = synthetic_clips(2, seed=5)[1]
    out = swapper.swap(clip.frames[0], clip.landmarks[0], 0)
    assert out.shape == clip.frames[0].shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - clip.frames[0]).mean() > 1.0  # redrawn by a barely trained decoder
    rng = np.random.default_rng(0)
    own = swapper.identities[0]
    picks = {swapper.target_identity(own, rng) for _ in range(50)}
    assert picks == set(range(1, len(swapper.identities) - 1))  # not its own, not "everyone else"


def test_learned_swap_pairs_differ_only_inside_the_face(generator: Path) -> None:
    from tools.sbi.data import SampleOptions, sample_learned_swap_pair_with_landmarks, synthetic_clips
    from tools.swapgen.model import FaceSwapper

    swapper = FaceSwapper.load(generator / "swapgen.pt")
    clip = synthetic_clips(2, seed=3)[1]
    reals, fakes, marks = sample_learned_swap_pair_with_landmarks(
        clip, swapper, 4, SampleOptions(size=96, margin=0.25, aug_strength=0.0, jitter=0.0), np.random.default_rng(1))
    assert len(reals) == len(fakes) == len(marks) == 4
    diff = np.abs(np.stack(fakes).astype(int) - np.stack(reals)).mean(-1).mean(0)
    assert diff[40:60, 40:60].mean() > 2 * diff[:8].mean()  # the face changed, the top border barely


def test_fit_head_adds_learned_swap_passes(generator: Path, tmp_path: Path) -> None:
    from tools.sbi.fit_head import smoke_clips

    reals = smoke_clips()[1]
    proc = _run("tools.sbi.fit_head", "--smoke", "--out", str(tmp_path), "--sbi-draws", "1",
                "--learned-swaps", str(generator / "swapgen.pt"), "--learned-swap-draws", "1",
                "--learned-swap-small-face-draws", "1")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("features:"))
    assert int(line.split(" SBI frames")[0].rsplit(" ", 1)[1]) == 3 * len(reals) * 4 * 2
    assert "learned face swaps" in json.loads((tmp_path / "model.json").read_text())["description"]


@pytest.mark.parametrize("args,message", [
    (("--learned-swap-draws", "1"), "need --learned-swaps"),
    (("--learned-swaps", "no/such/swapgen.pt", "--learned-swap-draws", "1"), "--learned-swaps no/such/swapgen.pt"),
])
def test_fit_head_rejects_learned_swaps_without_a_generator(tmp_path: Path, args: tuple, message: str) -> None:
    proc = _run("tools.sbi.fit_head", "--smoke", "--out", str(tmp_path), *args, ok=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_swapgen_train_rejects_a_size_not_a_multiple_of_16(tmp_path: Path) -> None:
    proc = _run("tools.swapgen.train", "--cache", str(tmp_path), "--out", str(tmp_path / "o"), "--size", "100",
                ok=False)
    assert proc.returncode == 2 and "multiple of 16" in proc.stderr and "Traceback" not in proc.stderr


def test_sheet_shows_learned_swaps(generator: Path, tmp_path: Path) -> None:
    import cv2

    out = tmp_path / "sheet.png"
    proc = _run("tools.make_sbi_sheet", "synthetic", str(out), "--n", "4", "--size", "64",
                "--learned-swaps", str(generator / "swapgen.pt"))
    assert "4 real / fake / mask triplets" in proc.stdout
    assert cv2.imread(str(out)).shape == (2 * 64, 2 * 3 * 64 + 8, 3)


def test_aligned_faces_travel_as_one_file_and_train_the_same_way(tmp_path: Path) -> None:
    from tools.swapgen.train import load_faces

    faces = tmp_path / "faces.npz"
    _run("tools.swapgen.train", "--smoke", "--out", str(tmp_path / "prep"), "--save-faces", str(faces))
    sets, template, names = load_faces(faces)
    assert [len(s) for s in sets] == [12, 12, 12, 16] and sets[0].shape[1:] == (32, 32, 3)
    assert template.shape == (468, 2) and names[-1] == "(everyone else)"
    _run("tools.swapgen.train", "--smoke", "--faces", str(faces), "--out", str(tmp_path / "run"), "--steps", "5")
    assert "done: 5 steps" in (tmp_path / "run" / "train.log").read_text()


def test_swapgen_train_needs_videos_of_two_files(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "clips").mkdir(parents=True)
    (cache / "index.tsv").write_text("clip\tfile\tlabel\tkind\n")
    proc = _run("tools.swapgen.train", "--cache", str(cache), "--out", str(tmp_path / "o"), ok=False)
    assert proc.returncode == 2 and "at least 2 files" in proc.stderr and "Traceback" not in proc.stderr
