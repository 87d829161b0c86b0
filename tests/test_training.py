"""SBI training end to end on synthetic faces: train --smoke -> export -> ONNX Runtime parity."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_crop_face_geometry() -> None:
    from stream_guard.faces.crop import crop_face, crop_matrix, transform_points

    img = np.zeros((100, 200, 3), np.uint8)
    img[40:60, 90:110] = 255  # a 20 px white square
    box = np.array([90.0, 40.0, 110.0, 60.0])
    crop = crop_face(img, box, 40, 0.5)  # side 40 px -> scale 1
    assert crop.shape == (40, 40, 3)
    assert crop[10:30, 10:30].min() == 255 and crop[:9].max() == 0
    corners = transform_points(box.reshape(2, 2), crop_matrix(box, 40, 0.5))
    np.testing.assert_allclose(corners, [[10, 10], [30, 30]], atol=1e-4)
    edge = crop_face(img, np.array([-20.0, -20.0, 20.0, 20.0]), 32, 0.0)  # off the image: replicated
    assert edge.shape == (32, 32, 3)


def test_self_blend_changes_only_the_face() -> None:
    from stream_guard.synth.self_blend import blend_frame, sample_clip_blend
    from tools.sbi.data import synthetic_clips

    clip = synthetic_clips(1)[0]
    rng = np.random.default_rng(0)
    fake, mask = blend_frame(clip.frames[0], clip.landmarks[0], sample_clip_blend(rng), rng)
    assert fake.shape == clip.frames[0].shape and fake.dtype == np.uint8
    assert 0.0 < mask.max() <= 1.0
    outside = mask == 0
    assert np.array_equal(fake[outside], clip.frames[0][outside])


@pytest.mark.slow
def test_smoke_train_export_parity(tmp_path: Path) -> None:
    import onnxruntime as ort

    from stream_guard.model.contract import load_model_spec

    run = tmp_path / "run"
    _run("tools.sbi.train", "--smoke", "--out", str(run))
    assert (run / "final.pt").is_file() and (run / "last.pt").is_file()
    assert "done" in (run / "train.log").read_text()
    out = tmp_path / "model"
    proc = _run("tools.sbi.export", "--smoke", "--ckpt", str(run / "final.pt"), "--out", str(out))
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert max(report["parity_max_abs"].values()) <= 1e-4

    spec = load_model_spec(out)
    assert spec.trained and spec.embedding_dim == 1280 and spec.window == 4
    enc = ort.InferenceSession(str(spec.encoder_path), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(spec.temporal_path), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = np.random.default_rng(n).normal(size=(n, 3, spec.input_size, spec.input_size)).astype(np.float32)
        emb = enc.run(None, {enc.get_inputs()[0].name: x})[0]
        assert emb.shape == (n, spec.embedding_dim)
        for t in (1, spec.window):
            seq = np.repeat(emb[:, None], t, axis=1)
            logits = head.run(None, {head.get_inputs()[0].name: seq})[0]
            assert logits.shape == (n, 1) and np.isfinite(logits).all()


def test_smoke_fit_head_cross_validates_and_exports(tmp_path: Path) -> None:
    """Region-statistics model: grouped CV report, calibrated threshold, dynamic batch, parity."""
    import onnxruntime as ort

    from stream_guard.model.contract import load_model_spec
    from tools.sbi.folds import identity_groups

    out = tmp_path / "model"
    proc = _run("tools.sbi.fit_head", "--smoke", "--out", str(out), "--leave-family-out", "--repeats", "2",
                "--real-video-fpr", "0")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert max(summary["parity_max_abs"].values()) <= 1e-4

    cv = json.loads((out / "crossval.json").read_text())
    files = sorted(cv["scores"])
    assert {f for fold in cv["folds"] for f in fold} == set(files)
    labels = ["fake" if f.startswith("fake/") else "real" for f in files]
    group = dict(zip(files, identity_groups(files, labels)))
    a, b = ({group[f] for f in fold} for fold in cv["folds"])
    assert not a & b, "an identity group is on both sides of the split"
    assert set(cv["families"]) == {"synA", "synB"} and cv["auc"] is not None
    assert set(cv["leave_family_out"]) == {"synA", "synB"}
    assert len(cv["repeats"]["runs"]) == 2
    assert {"pooled", "pooled+realvid", "lofo:synA"} <= set(cv["repeats"]["mean"]) <= set(cv["repeats"]["std"])
    ext = cv["with_real_videos"]  # the smoke reals' 3 synthetic videos, scored out of fold
    assert ext["real_videos"] == 3 and ext["auc"] is not None
    assert ext["real_videos_flagged"] == 0  # --real-video-fpr 0: the threshold sits above every real video
    assert cv["threshold"] >= max(v for f, v in cv["scores"].items() if f.startswith("realvid"))

    spec = load_model_spec(out)
    assert spec.trained and spec.embedding_dim == 415 and 0.5 <= spec.threshold <= 1
    # operating points named from the same out-of-fold scores, the real videos among the reals
    from tools.sbi.metrics import measure_points

    assert spec.operating_points == measure_points([int(f.startswith("fake/")) for f in files],
                                                   [cv["scores"][f] for f in files], spec.threshold)
    assert [p.name for p in spec.operating_points] == ["default", "quiet", "sensitive"]
    enc = ort.InferenceSession(str(spec.encoder_path), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(spec.temporal_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(3, 3, spec.input_size, spec.input_size)).astype(np.float32)
    emb = enc.run(None, {enc.get_inputs()[0].name: x})[0]
    assert emb.shape == (3, 415) and np.isfinite(emb).all()
    logits = head.run(None, {head.get_inputs()[0].name: np.repeat(emb[:, None], spec.window, axis=1)})[0]
    assert logits.shape == (3, 1) and np.isfinite(logits).all()


def test_region_encoder_feature_groups_extend_the_default_statistics() -> None:
    """Extra groups append columns: the default 415 statistics stay first and unchanged."""
    import torch

    from tools.sbi.model import ALL_REGION_GROUPS, RegionStatsEncoder

    x = torch.rand(2, 3, 64, 64) * 2 - 1
    base = RegionStatsEncoder(64, 0.25, pretrained=False).eval()
    full = RegionStatsEncoder(64, 0.25, pretrained=False, groups=("parts", "corr", "stats")).eval()
    full.load_state_dict(base.state_dict(), strict=False)
    assert full.groups == ALL_REGION_GROUPS
    with torch.no_grad():
        b, f = base(x), full(x)
    assert f.shape == (2, full.dim) and full.group_slices["stats"] == slice(0, base.dim)
    assert torch.equal(f[:, :base.dim], b) and torch.isfinite(f).all()
    corr = f[:, full.group_slices["corr"]]
    half = corr.shape[1] // 2
    assert corr[:, :half].abs().max() <= 1 + 1e-4  # inner-face correlations
    with pytest.raises(ValueError):
        RegionStatsEncoder(64, 0.25, pretrained=False, groups=("gram",))


@pytest.mark.parametrize(("option", "dim", "described"), [
    (("--features", "stats,corr,parts"), 415 + 798 + 332, "feature groups: stats, corr, parts"),
    (("--views", "colour,greystd"), 2 * 415, "contrast-standardised"),
    (("--views", "colour,greystd", "--landmark-regions"), 2 * 415 + 332, "face-mesh landmarks"),
])
def test_fit_head_exports_extra_encoder_outputs(tmp_path: Path, option: tuple[str, ...], dim: int,
                                                described: str) -> None:
    """Extra feature groups, views or landmark regions reach the exported graph, with ORT parity,
    and the model says so."""
    from stream_guard.model.contract import REGION_NAMES
    from stream_guard.model.contract import load_model_spec

    out = tmp_path / "model"
    proc = _run("tools.sbi.fit_head", "--smoke", "--out", str(out), *option)
    assert max(json.loads(proc.stdout.strip().splitlines()[-1])["parity_max_abs"].values()) <= 1e-4
    spec = load_model_spec(out)
    assert spec.embedding_dim == dim and described in spec.description
    assert spec.regions == (REGION_NAMES if "--landmark-regions" in option else ())


def test_grey_standardised_view_drops_exposure_contrast_and_colour_cast() -> None:
    """The greystd view of a crop is the same after an exposure, contrast or colour-cast change,
    and RegionStatsEncoder puts its statistics after the colour view's."""
    import torch

    from tools.sbi.model import MEAN, STD, GreyStandardise, RegionStatsEncoder

    def normalised(rgb: torch.Tensor) -> torch.Tensor:
        return (rgb - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)

    grey = torch.rand(2, 1, 64, 64) * 0.6 + 0.2
    crop = grey.repeat(1, 3, 1, 1)
    view = GreyStandardise()
    ref = view(normalised(crop))
    assert torch.equal(ref[:, 0], ref[:, 1]) and torch.equal(ref[:, 1], ref[:, 2])
    z = (ref[:, 0] * STD[0] + MEAN[0]) * 255
    assert abs(float(z.mean()) - 128) < 1 and abs(float(z.std()) - 48) < 2
    darker = crop * 0.6 + 0.05
    cast = crop * torch.tensor([1.15, 1.0, 0.8]).view(1, 3, 1, 1)
    for changed in (darker, cast):
        assert (normalised(changed) - normalised(crop)).abs().max() > 0.1
        assert (view(normalised(changed)) - ref).abs().max() < 0.02  # +1 in the std: not exactly

    x = torch.rand(2, 3, 64, 64) * 2 - 1
    colour = RegionStatsEncoder(64, 0.25, pretrained=False).eval()
    both = RegionStatsEncoder(64, 0.25, pretrained=False, views=("greystd", "colour")).eval()
    both.load_state_dict(colour.state_dict())
    assert both.views == ("colour", "greystd") and both.dim == 2 * colour.dim
    with torch.no_grad():
        f = both(x)
        assert torch.equal(f[:, :colour.dim], colour(x))
        assert torch.allclose(f[:, colour.dim:], colour(view(x)), atol=1e-5)
    with pytest.raises(ValueError):
        RegionStatsEncoder(64, 0.25, pretrained=False, views=("sepia",))


def test_small_face_pairs_are_shrunk_and_h264_reencoded() -> None:
    """``small_faces`` pairs lose detail as a 60-105 px face in a re-encoded video does, real and fake alike."""
    import cv2

    from tools.sbi.augment import SMALL_FACE_CRF, SMALL_FACE_DOWN, sample_aug, small_face_aug
    from tools.sbi.data import SampleOptions, sample_pair, synthetic_clips

    rng = np.random.default_rng(0)
    for _ in range(50):
        plain = sample_aug(rng)
        small = small_face_aug(plain, rng)
        assert SMALL_FACE_DOWN[0] <= small.down <= SMALL_FACE_DOWN[1] and small.codec == "h264"
        assert SMALL_FACE_CRF[0] <= small.quality <= SMALL_FACE_CRF[1]
        assert (small.flip, small.gamma, small.hue) == (plain.flip, plain.gamma, plain.hue)

    clip = synthetic_clips(1, seed=3)[0]
    detail = {}
    for small_faces in (False, True):
        opts = SampleOptions(size=128, margin=0.25, aug_strength=0.0, jitter=0.0, small_faces=small_faces)
        reals, fakes = sample_pair(clip, 4, opts, np.random.default_rng(1))
        detail[small_faces] = [np.mean([cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
                                        for f in frames]) for frames in (reals, fakes)]
    assert all(s < 0.7 * p for s, p in zip(detail[True], detail[False])), detail


def test_tight_face_pairs_are_cut_down_to_the_face_with_the_edge_repeated_beyond() -> None:
    """``tight_faces`` pairs look as the pipeline's crop of a frame cut to 1-1.35 times the face box
    does: the crop's centre kept, its edge repeated beyond, real and fake alike."""
    from tools.sbi.augment import TIGHT_FACE_BOX_SCALE, sample_aug, tight_face_aug
    from tools.sbi.data import SampleOptions, sample_pair, synthetic_clips

    rng = np.random.default_rng(0)
    for _ in range(50):
        plain = sample_aug(rng)
        tight = tight_face_aug(plain, rng, margin=0.25)
        assert TIGHT_FACE_BOX_SCALE[0] / 1.5 <= tight.cut <= TIGHT_FACE_BOX_SCALE[1] / 1.5
        assert (tight.flip, tight.codec, tight.quality) == (plain.flip, plain.codec, plain.quality)

    clip = synthetic_clips(1, seed=3)[0]
    size = 128
    plain_opts = SampleOptions(size=size, margin=0.25, aug_strength=0.0, jitter=0.0)
    reals, fakes = sample_pair(clip, 4, replace(plain_opts, tight_faces=True), np.random.default_rng(1))
    for real, fake in zip(reals, fakes):
        assert real.shape == fake.shape == (size, size, 3)
        # the border beyond the kept square: every row repeats its pixel at the cut's left and right edge
        left = int(np.argmax(np.any(real[:, 1:] != real[:, :-1], axis=(0, 2))))
        assert size * (1 - TIGHT_FACE_BOX_SCALE[1] / 1.5) / 2 - 1 <= left <= size * (1 - 1 / 1.5) / 2 + 1
        for img in (real, fake):
            assert (img[:, :left + 1] == img[:, left:left + 1]).all()
            assert (img[:, size - left - 1:] == img[:, size - left - 1:size - left]).all()
        # inside it, the face, the fake's blend within
        inner = slice(left + 1, size - left - 1)
        assert real[inner, inner].std() > 10
        assert not np.array_equal(fake[inner, inner], real[inner, inner])


def _sbi_frame_count(proc: subprocess.CompletedProcess) -> int:
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("features:"))
    return int(line.split(" SBI frames")[0].rsplit(" ", 1)[1])


def test_fit_head_adds_small_face_tight_face_and_face_swap_pairs_to_the_pseudo_fakes(tmp_path: Path) -> None:
    counts = {}
    for name, extra in (("plain", ()), ("small", ("--sbi-small-face-draws", "1")),
                        ("swaps", ("--swap-draws", "1", "--swap-small-face-draws", "1")),
                        ("tight", ("--sbi-tight-face-draws", "1", "--swap-tight-face-draws", "1"))):
        counts[name] = _sbi_frame_count(_run("tools.sbi.fit_head", "--smoke", "--out", str(tmp_path / name), *extra))
    assert counts["small"] == counts["plain"] * 3 // 2 > 0  # 2 default passes + 1 small-face pass
    assert counts["swaps"] == counts["plain"] * 2  # + 1 swap pass + 1 small-face swap pass
    description = json.loads((tmp_path / "swaps" / "model.json").read_text())["description"]
    assert "face-swap pseudo-fakes" in description
    assert counts["tight"] == counts["plain"] * 2  # + 1 tight self-blended pass + 1 tight swap pass
    assert "cut down to the face" in json.loads((tmp_path / "tight" / "model.json").read_text())["description"]


def test_fit_head_adds_rerendered_pairs_to_the_pseudo_fakes(tmp_path: Path) -> None:
    from tools.sbi.fit_head import smoke_clips

    reals = smoke_clips()[1]
    proc = _run("tools.sbi.fit_head", "--smoke", "--out", str(tmp_path), "--sbi-draws", "1",
                "--rerender-draws", "1", "--rerender-small-face-draws", "1")
    assert _sbi_frame_count(proc) == 3 * len(reals) * 4 * 2  # 3 passes, 4 frames a clip, real + fake
    assert "re-rendered pseudo-fakes" in json.loads((tmp_path / "model.json").read_text())["description"]


def _fold_fixture() -> tuple:
    """Labelled DFL-style clips, real videos of ``--real`` and their SBI pairs, as frame features."""
    from tools.sbi.fit_head import FeatureSet, real_video_key

    rng = np.random.default_rng(0)
    videos = [real_video_key(f) for f in ("videos/grid_a.mpg", "videos/grid_b.mpg", "videos/vox_c.mp4")]
    files = ([f"real/dfl_P{i}_0_L.mp4" for i in range(4)] + [f"fake/dfl_P{i}_0_R.mp4" for i in range(4)]
             + videos)
    rows = [(f, int(f.startswith("fake/"))) for f in files for _ in range(3)]
    lab = FeatureSet(rng.normal(size=(len(rows), 5)) + np.array([[y] for _, y in rows]),
                     np.array([f for f, _ in rows]), np.array([y for _, y in rows]))
    sources = videos + ["images/photo.jpg"]
    sbi_files = np.array(sources * 4)
    sbi = FeatureSet(rng.normal(size=(len(sbi_files), 5)), sbi_files, np.r_[np.zeros(8, int), np.ones(8, int)])
    return lab, sbi, videos


def test_cross_validation_keeps_each_test_video_and_its_pseudo_fakes_out_of_training() -> None:
    """Real videos of --real are dealt into folds by source and scored out of fold; no pseudo-fake
    made from a test-fold video is trained on; the report counts them among the reals."""
    from tools.sbi.fit_head import FrameClassifier, cross_validate, folds_with_real_videos, report

    lab, sbi, videos = _fold_fixture()
    labels = {str(f): int(y) for f, y in zip(lab.files, lab.labels)}
    files = sorted(labels)
    folds = folds_with_real_videos(files, labels, 3)
    assert any({videos[0], videos[1]} <= fold for fold in folds), "one source's videos straddle two folds"

    seen: list[tuple[set, set]] = []

    class Spy(FrameClassifier):
        def fit(self, lab, keep, sbi, sbi_keep=None):
            used = sbi.files if sbi_keep is None else sbi.files[sbi_keep]
            seen.append((set(lab.files[keep]), set(used)))
            return super().fit(lab, keep, sbi, sbi_keep)

    scores = cross_validate(Spy(1.0, 1.0, 0.5), lab, sbi, folds, labels)
    assert set(scores) == set(files)
    for test, (trained, trained_sbi) in zip(folds, seen):
        assert not trained & test and not trained_sbi & test
        assert "images/photo.jpg" in trained_sbi
    pooled = report(scores, labels, 0.0)
    ext = pooled["with_real_videos"]
    assert ext["real_videos"] == 3 and ext["n_real"] == 7 and ext["n_fake"] == 4
    for m in (pooled, ext, ext["families"]["dfl"]):  # the model card quotes these intervals
        assert m["auc_ci"][0] <= m["auc"] <= m["auc_ci"][1]
    assert set(ext["families"]) == {"dfl"} and ext["families"]["dfl"]["n_real"] == 7


def test_zero_real_video_weight_fits_as_if_the_videos_were_absent() -> None:
    from tools.sbi.fit_head import FeatureSet, FrameClassifier, is_real_video

    lab, sbi, _ = _fold_fixture()
    everything = np.ones(len(lab.x), bool)
    keep = ~is_real_video(lab.files)
    without = FeatureSet(lab.x[keep], lab.files[keep], lab.labels[keep])
    a = FrameClassifier(1.0, 1.0, 0.0).fit(lab, everything, sbi).folded()
    b = FrameClassifier(1.0, 1.0, 0.0).fit(without, np.ones(len(without.x), bool), sbi).folded()
    np.testing.assert_allclose(a[0], b[0])
    assert a[1] == pytest.approx(b[1])
    c = FrameClassifier(1.0, 1.0, 2.0).fit(lab, everything, sbi).folded()
    assert not np.allclose(a[0], c[0]), "real videos with weight 2 should change the fit"


def test_family_balance_weighs_families_by_a_power_of_their_clip_count() -> None:
    from tools.sbi.fit_head import family_balanced

    # dfl: 4 fake clips (2 frames each), aniportrait: 1 fake clip (4 frames); dfl: 2 real clips (1 frame each)
    files = np.array(["fake/dfl_a_0_R.mp4"] * 2 + ["fake/dfl_a_1_R.mp4"] * 2 + ["fake/dfl_b_0_R.mp4"] * 2
                     + ["fake/dfl_b_1_R.mp4"] * 2 + ["fake/aniportrait_x_gen.mp4"] * 4
                     + ["real/dfl_a_0_L.mp4", "real/dfl_b_0_L.mp4"])
    labels = np.array([1] * 12 + [0] * 2)
    per_frame = np.r_[np.full(8, 0.5), np.full(4, 0.25), np.ones(2)]  # every clip weighs 1
    dfl_fake, ani = slice(0, 8), slice(8, 12)

    def total(w: np.ndarray, rows: slice) -> float:
        return float(w[rows].sum())

    same = family_balanced(per_frame, files, labels, 1.0)
    np.testing.assert_allclose(same, per_frame)
    equal = family_balanced(per_frame, files, labels, 0.0)
    assert total(equal, dfl_fake) == pytest.approx(total(equal, ani))  # one family, one share
    root = family_balanced(per_frame, files, labels, 0.5)
    assert total(root, dfl_fake) / total(root, ani) == pytest.approx(2.0)  # sqrt(4) : sqrt(1)
    for w in (equal, root):
        assert w.sum() == pytest.approx(per_frame.sum())
        np.testing.assert_allclose(w[0:2], w[2:4])  # within a family, clips keep their relative weights


def test_feature_cache_builds_only_the_views_it_lacks(tmp_path: Path) -> None:
    """fit_head makes each set of crops once for every view not yet cached, and keeps each view's file."""
    from tools.sbi.fit_head import FeatureSet, cached
    calls: list[list[str]] = []

    def build(views: list[str]) -> dict[str, FeatureSet]:
        calls.append(list(views))
        return {v: FeatureSet(np.full((2, 3), float(len(v))), np.array(["a", "b"]), np.array([0, 1])) for v in views}

    first = cached(tmp_path, {"colour": "k1"}, build)
    both = cached(tmp_path, {"greystd": "k2", "colour": "k1"}, build)
    assert calls == [["colour"], ["greystd"]]
    assert list(both) == ["greystd", "colour"] and np.array_equal(both["colour"].x, first["colour"].x)
    assert cached(tmp_path, {"colour": "k1", "greystd": "k2"}, build).keys() == {"colour", "greystd"}
    assert len(calls) == 2  # both read back
    cached(None, {"colour": "k1"}, build)
    assert calls[-1] == ["colour"]  # no cache folder: always built
