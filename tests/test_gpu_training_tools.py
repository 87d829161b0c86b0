"""The tools that carry training to a lent GPU machine: packed caches, batch streams from worker
processes, time-boxed training, end-to-end fine-tuning scored out of fold (all run here on CPU)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")


def _write_cache(folder: Path, clips) -> None:
    (folder / "clips").mkdir(parents=True)
    with open(folder / "index.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["clip", "file", "label", "kind", "frames"])
        for c in clips:
            np.savez(folder / "clips" / f"{c.clip_id}.npz", frames=c.frames, boxes=c.boxes, landmarks=c.landmarks,
                     keypoints=np.zeros((len(c), 6, 2), np.float32))
            w.writerow([c.clip_id, c.file, c.label, c.kind, len(c)])


def test_packed_cache_keeps_spaced_frames_and_drops_excluded_sources(tmp_path: Path) -> None:
    from tools.sbi.data import load_cache, synthetic_clips
    from tools.sbi.pack_faces import main as pack

    clips = synthetic_clips(4)
    _write_cache(tmp_path / "raw", clips)
    (tmp_path / "skip.txt").write_text(clips[0].file + "\n")
    assert pack([str(tmp_path / "raw"), str(tmp_path / "packed"), "--max-frames", "5", "--quality", "95",
                 "--exclude-files", str(tmp_path / "skip.txt")]) == 0
    packed = {c.file: c for c in load_cache(tmp_path / "packed")}
    assert clips[0].file not in packed and len(packed) == 3
    video = clips[1]  # 12 frames -> 5, first and last kept, boxes and landmarks follow the frames
    got = packed[video.file]
    assert len(got) == 5 and got.frames.shape[1:] == video.frames.shape[1:]
    np.testing.assert_array_equal(got.boxes[[0, -1]], video.boxes[[0, -1]])
    np.testing.assert_array_equal(got.landmarks[-1], video.landmarks[-1])
    err = np.abs(got.frames[-1].astype(int) - video.frames[-1].astype(int)).mean()
    assert err < 4, f"JPEG quality 95 should be close to the raw frame, mean abs error {err:.1f}"


def test_pack_rejects_a_folder_without_an_index(tmp_path: Path, capsys) -> None:
    from tools.sbi.pack_faces import main as pack

    assert pack([str(tmp_path), str(tmp_path / "out")]) == 2
    assert "index.tsv" in capsys.readouterr().err


def test_batch_stream_from_workers_gives_distinct_batches() -> None:
    from tools.sbi.data import PairSampler, SampleOptions, synthetic_clips
    from tools.sbi.train import FramePairs, batch_stream

    make = FramePairs(PairSampler(synthetic_clips(4), SampleOptions(size=64, aug_strength=0.0)), pairs=2)
    stream = batch_stream(make, seed=3, workers=2)
    batches = [next(stream) for _ in range(4)]
    for x, y in batches:
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == (4, 1, 64, 64, 3) and x.dtype == np.uint8
        np.testing.assert_array_equal(y, [0, 0, 1, 1])
    firsts = {np.asarray(x).tobytes() for x, _ in batches}
    assert len(firsts) == 4, "each worker must draw from its own random stream"


def test_time_budget_ends_stage_one_early(tmp_path: Path) -> None:
    from tools.sbi.train import main as train

    assert train(["--smoke", "--out", str(tmp_path), "--steps", "500", "--time-budget", "0.01", "--no-pretrained"]) == 0
    log = (tmp_path / "train.log").read_text()
    assert "time budget of 0s spent at step 1" in log
    final = json.loads((tmp_path / "final.json").read_text())
    assert final["step"] == 1
    assert (tmp_path / "weights.pt").is_file()


def test_lr_schedule_follows_the_clock_when_it_runs_ahead_of_the_steps() -> None:
    from tools.sbi.train import lr_at

    assert lr_at(500, 1000, 1.0, warmup=0) == pytest.approx(0.525)
    assert lr_at(500, 1000, 1.0, warmup=0, progress=1.0) == pytest.approx(0.05)
    assert lr_at(10, 1000, 1.0, warmup=100, progress=0.9) == pytest.approx(0.11)  # warm-up first


def test_finetune_cv_scores_every_file_out_of_fold_and_writes_a_loadable_model(tmp_path: Path) -> None:
    from tools.sbi.finetune_cv import main as finetune
    from tools.sbi.fit_head import smoke_clips
    from tools.sbi.model import load_checkpoint

    labelled, reals = smoke_clips()
    n_videos = sum(c.kind == "video" for c in reals)
    for arch in ("lite0", "regionstats"):
        out = tmp_path / arch
        assert finetune(["--smoke", "--out", str(out), "--arch", arch, "--final", "--no-pretrained"]) == 0
        oof = json.loads((out / "oof.json").read_text())
        assert len(oof) == len({c.file for c in labelled}) + n_videos
        assert {v["fold"] for v in oof.values()} == {0, 1}
        assert all(np.isfinite(v["logit"]) for v in oof.values())
        report = json.loads((out / "report.json").read_text())
        assert report["with_real_videos"]["real_videos"] == n_videos
    enc, head, state = load_checkpoint(str(tmp_path / "lite0" / "weights.pt"))
    assert state["config"]["arch"] == "lite0" and state["stage"] == "finetune"


def test_finetune_cv_never_trains_on_a_fold_it_tests(tmp_path: Path, monkeypatch) -> None:
    import tools.sbi.finetune_cv as ft

    seen = []
    real_train_one = ft.train_one

    def spy(args, make_batch, device, log, tag):
        files = {c.file for c in make_batch.reals + make_batch.videos}
        files |= {c.file for fam in make_batch.by_family.values() for c in fam}
        files_sbi = {c.file for c in make_batch.sbi.clips}
        seen.append((tag, files, files_sbi))
        return real_train_one(args, make_batch, device, log, tag)

    monkeypatch.setattr(ft, "train_one", spy)
    assert ft.main(["--smoke", "--out", str(tmp_path), "--no-pretrained"]) == 0
    oof = json.loads((tmp_path / "oof.json").read_text())
    from tools.sbi.fit_head import real_video_key

    for tag, files, files_sbi in seen:
        k = int(tag.removeprefix("fold"))
        tested = {f for f, v in oof.items() if v["fold"] == k}
        assert not {f for f in files if f in tested or real_video_key(f) in tested}
        assert not {f for f in files_sbi if real_video_key(f) in tested}


def test_finetune_cv_keeps_each_finished_fold_and_resumes_from_them(tmp_path: Path, monkeypatch) -> None:
    import tools.sbi.finetune_cv as ft

    assert ft.main(["--smoke", "--out", str(tmp_path), "--no-pretrained"]) == 0
    oof = json.loads((tmp_path / "oof.json").read_text())
    fold0 = {f: v for f, v in oof.items() if v["fold"] == 0}
    (tmp_path / "oof.json").write_text(json.dumps(fold0))  # as if cut off while fold 1 trained
    (tmp_path / "report.json").unlink()
    trained = []
    real_train_one = ft.train_one

    def spy(args, make_batch, device, log, tag):
        trained.append(tag)
        return real_train_one(args, make_batch, device, log, tag)

    monkeypatch.setattr(ft, "train_one", spy)
    assert ft.main(["--smoke", "--out", str(tmp_path), "--no-pretrained", "--resume"]) == 0
    assert trained == ["fold1"]
    resumed = json.loads((tmp_path / "oof.json").read_text())
    assert resumed.keys() == oof.keys()
    assert all(resumed[f] == v for f, v in fold0.items())
    assert (tmp_path / "report.json").is_file()


def test_joined_model_scores_the_standardised_mix_of_its_parts(tmp_path: Path) -> None:
    import onnxruntime as ort
    import torch

    from stream_guard.model.contract import load_model_spec
    from tools.sbi.finetune_cv import main as finetune
    from tools.sbi.fit_head import main as fit_head
    from tools.sbi.model import load_checkpoint

    assert finetune(["--smoke", "--out", str(tmp_path / "cnn"), "--final", "--no-pretrained"]) == 0
    assert fit_head(["--smoke", "--out", str(tmp_path / "region")]) == 0
    assert fit_head(["--smoke", "--out", str(tmp_path / "joined"), "--e2e", str(tmp_path / "cnn" / "weights.pt"),
                     "--e2e-oof", str(tmp_path / "cnn" / "oof.json"), "--e2e-weight", "0.4"]) == 0
    cv = json.loads((tmp_path / "joined" / "crossval.json").read_text())
    mix = cv["parts"]["mix"]
    assert mix["weight"] == 0.4 and cv["parts"]["e2e_cnn"]["n_fake"] == cv["n_fake"]

    def frame_logits(folder: Path, x: np.ndarray) -> np.ndarray:
        spec = load_model_spec(folder)
        enc = ort.InferenceSession(str(spec.encoder_path), providers=["CPUExecutionProvider"])
        head = ort.InferenceSession(str(spec.temporal_path), providers=["CPUExecutionProvider"])
        emb = enc.run(None, {enc.get_inputs()[0].name: x})[0]
        return head.run(None, {head.get_inputs()[0].name: emb[:, None]})[0][:, 0]

    x = np.random.default_rng(0).normal(size=(3, 3, 64, 64)).astype(np.float32)
    assert load_model_spec(tmp_path / "joined").embedding_dim == load_model_spec(tmp_path / "region").embedding_dim + 1
    cnn, cnn_head, _ = load_checkpoint(str(tmp_path / "cnn" / "weights.pt"))
    with torch.no_grad():
        z_cnn = cnn_head.frame_logits(cnn(torch.from_numpy(x))).numpy()
    z_region = frame_logits(tmp_path / "region", x)
    expected = ((1 - mix["weight"]) * (z_region - mix["mean_a"]) / mix["std_a"]
                + mix["weight"] * (z_cnn - mix["mean_b"]) / mix["std_b"])
    np.testing.assert_allclose(frame_logits(tmp_path / "joined", x), expected, atol=1e-3)


def test_joined_leave_family_out_scores_each_family_with_the_cnn_trained_without_it(tmp_path: Path) -> None:
    from stream_guard.scoring import family_of
    from tools.sbi.finetune_cv import main as finetune
    from tools.sbi.fit_head import main as fit_head
    from tools.sbi.metrics import auc

    assert finetune(["--smoke", "--out", str(tmp_path / "cnn"), "--final", "--no-pretrained"]) == 0
    for fam in ("synA", "synB"):
        assert finetune(["--smoke", "--out", str(tmp_path / fam), "--no-pretrained", "--exclude-family", fam]) == 0
    joined = ["--smoke", "--leave-family-out", "--e2e", str(tmp_path / "cnn" / "weights.pt"),
              "--e2e-oof", str(tmp_path / "cnn" / "oof.json")]
    lofo = [a for fam in ("synA", "synB") for a in ("--e2e-lofo", f"{fam}={tmp_path / fam / 'oof.json'}")]
    # all weight on the CNN: each family's figure is exactly that of the CNN trained without it
    assert fit_head(joined + lofo + ["--out", str(tmp_path / "w1"), "--e2e-weight", "1"]) == 0
    cv = json.loads((tmp_path / "w1" / "crossval.json").read_text())
    for fam in ("synA", "synB"):
        oof = json.loads((tmp_path / fam / "oof.json").read_text())
        files = [f for f, v in oof.items() if not v["label"] or family_of(f) == fam]
        expected = auc(np.array([oof[f]["logit"] for f in files]), np.array([oof[f]["label"] for f in files]))
        assert cv["leave_family_out"][fam]["auc"] == pytest.approx(expected)
        stored = cv["leave_family_out_scores"][fam]  # what tools.sbi.compare_releases pairs
        assert set(stored) == set(files)
        assert auc(np.array([stored[f] for f in files]), np.array([oof[f]["label"] for f in files])) == \
            pytest.approx(expected)
    assert set(cv["parts"]["regionstats"]["leave_family_out"]) == {"synA", "synB"}
    # no weight on the CNN: the region part's own figures
    assert fit_head(joined + lofo + ["--out", str(tmp_path / "w0"), "--e2e-weight", "0"]) == 0
    cv = json.loads((tmp_path / "w0" / "crossval.json").read_text())
    for fam in ("synA", "synB"):
        assert cv["leave_family_out"][fam]["auc"] == pytest.approx(
            cv["parts"]["regionstats"]["leave_family_out"][fam]["auc"])
    with pytest.raises(SystemExit) as failed:  # a family without its CNN run is refused
        fit_head(joined + lofo[:2] + ["--out", str(tmp_path / "partial")])
    assert failed.value.code == 2
    with pytest.raises(SystemExit) as failed:  # without --leave-family-out it would have nothing to do
        fit_head([a for a in joined if a != "--leave-family-out"] + lofo + ["--out", str(tmp_path / "no_lofo")])
    assert failed.value.code == 2


def test_joining_refuses_a_cnn_scored_on_other_folds(tmp_path: Path, capsys) -> None:
    from tools.sbi.finetune_cv import main as finetune
    from tools.sbi.fit_head import main as fit_head

    assert finetune(["--smoke", "--out", str(tmp_path / "cnn"), "--final", "--no-pretrained"]) == 0
    oof = json.loads((tmp_path / "cnn" / "oof.json").read_text())
    first = sorted(oof)[0]
    oof[first]["fold"] = 1 - oof[first]["fold"]
    (tmp_path / "cnn" / "oof.json").write_text(json.dumps(oof))
    with pytest.raises(SystemExit) as e:
        fit_head(["--smoke", "--out", str(tmp_path / "joined"), "--e2e", str(tmp_path / "cnn" / "weights.pt"),
                  "--e2e-oof", str(tmp_path / "cnn" / "oof.json")])
    assert e.value.code == 2 and "folds differ" in capsys.readouterr().err


def test_without_pyav_h264_augmentation_falls_back_to_jpeg_of_similar_loss(monkeypatch) -> None:
    import tools.sbi.augment as augment
    from tools.sbi.data import synthetic_clips

    frame = synthetic_clips(1, size=96)[0].frames[0]
    a = augment.sample_aug(np.random.default_rng(0), 0.0)
    a = type(a)(**{**vars(a), "codec": "h264", "quality": 35})
    monkeypatch.setattr(augment, "H264_AVAILABLE", False)
    out = augment.apply_aug([frame], a, seed=1)[0]
    np.testing.assert_array_equal(out, augment.jpeg(frame, augment.crf_as_jpeg_quality(35)))
    assert augment.crf_as_jpeg_quality(18) == 95 and augment.crf_as_jpeg_quality(35) == 41


def test_training_can_start_from_a_saved_half_precision_encoder(tmp_path: Path) -> None:
    import torch

    from tools.sbi.model import Encoder, load_checkpoint
    from tools.sbi.train import main as train

    start = Encoder(pretrained=False).state_dict()
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in start.items()}, tmp_path / "init.pt")
    assert train(["--smoke", "--out", str(tmp_path / "run"), "--steps", "1", "--init-encoder",
                  str(tmp_path / "init.pt"), "--lr", "0"]) == 0
    enc, _, _ = load_checkpoint(str(tmp_path / "run" / "weights.pt"))
    key = "net._conv_stem.weight"
    torch.testing.assert_close(enc.state_dict()[key], start[key].half().float())


def test_fp16_weight_storage_halves_the_encoder_and_barely_moves_its_scores(tmp_path: Path) -> None:
    import onnxruntime as ort

    from tools.sbi.fit_head import main as fit_head

    assert fit_head(["--smoke", "--out", str(tmp_path / "f32")]) == 0
    assert fit_head(["--smoke", "--out", str(tmp_path / "f16"), "--fp16-weights"]) == 0
    size32 = (tmp_path / "f32" / "encoder.onnx").stat().st_size
    size16 = (tmp_path / "f16" / "encoder.onnx").stat().st_size
    assert size16 < 0.6 * size32
    cv = json.loads((tmp_path / "f16" / "crossval.json").read_text())
    assert 0 < cv["fp16_weights"]["max_frame_logit_change"] <= cv["fp16_weights"]["tolerance"]
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    out = [ort.InferenceSession(str(tmp_path / d / "encoder.onnx"), providers=["CPUExecutionProvider"])
           .run(None, {"crops": x})[0] for d in ("f32", "f16")]
    np.testing.assert_allclose(out[1], out[0], rtol=0.05, atol=0.02)
