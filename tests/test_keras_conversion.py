"""Keras -> stream_guard model contract (tools/keras_to_contract.py), end to end.

TensorFlow lives in its own virtual environment, ``.venv-keras`` (made by tools/run_tests.sh),
never in the main one: the Keras models are built, saved and run there (a helper script writes
their outputs to .npy files), the converter runs there as a subprocess, and the converted
folders are then loaded here, in the main environment, by the real scorer and pipeline.
"""
from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from stream_guard.config import ModelOptions, RunConfig, SourceOptions
from stream_guard.model.contract import load_model_spec
from stream_guard.model.scorer import FaceScorer
from stream_guard.pipeline import Pipeline

REPO = Path(__file__).resolve().parent.parent
KERAS_PY = REPO / ".venv-keras" / "bin" / "python"
SIZE, T, N = 64, 6, 4
TOL = 1e-4

pytestmark = pytest.mark.skipif(
    not KERAS_PY.exists(),
    reason=".venv-keras not found: tools/run_tests.sh creates it (TensorFlow + tf2onnx, kept out of .venv)",
)

# Runs in .venv-keras: builds two small untrained Keras models, saves them, and writes the
# uint8 test crops and Keras' probabilities for them (input x / 255, i.e. mean 0 std 1).
BUILD_SCRIPT = textwrap.dedent(f"""
    import os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import keras
    from keras import layers

    out = sys.argv[1]
    keras.utils.set_random_seed(0)
    S, T, N = {SIZE}, {T}, {N}

    # test crops: a flat colour per crop plus noise, so that the models' outputs differ between crops
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (N, T, 1, 1, 3))
    crops = np.clip(base + rng.normal(0, 40, (N, T, S, S, 3)), 0, 255).astype(np.uint8)
    pix = crops.astype(np.float32) / 255.0  # what a model taking [0, 1] input sees
    frames = pix.reshape(N * T, S, S, 3)

    def spread(model, inputs):
        # rescale the untrained last layer so that its logits on the test crops have mean 0 and
        # std 2: probabilities spread over (0.1, 0.9) instead of all sitting near 0.5 (or 1)
        features = np.asarray(keras.Model(model.inputs[0], model.layers[-2].output)(inputs, training=False))
        kernel, bias = model.layers[-1].get_weights()
        z = features @ kernel + bias
        scale = 2.0 / max(float(z.std()), 1e-6)
        model.layers[-1].set_weights([kernel * scale, (bias - z.mean()) * scale])

    def meso_block(x, filters, k, pool):
        x = layers.Conv2D(filters, k, padding="same", activation="relu")(x)
        x = layers.BatchNormalization()(x)
        return layers.MaxPooling2D(pool, padding="same")(x)

    # a small Meso4-like frame classifier: [N, S, S, 3] in [0, 1] -> sigmoid [N, 1]
    inp = keras.Input((S, S, 3))
    x = meso_block(inp, 8, 3, 2)
    x = meso_block(x, 8, 5, 2)
    x = meso_block(x, 16, 5, 2)
    x = meso_block(x, 16, 5, 4)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Dense(16)(x)
    x = layers.LeakyReLU(negative_slope=0.1)(x)
    x = layers.Dropout(0.5)(x)
    frame = keras.Model(inp, layers.Dense(1, activation="sigmoid")(x), name="meso_like")
    spread(frame, frames)
    frame.save(os.path.join(out, "meso_like.h5"))  # the legacy HDF5 format MesoNet's weights use

    # a frame classifier taking [-1, 1] input whose output is not a plain sigmoid (hard_sigmoid):
    # the converter must append log(p / (1 - p)), and --mean/--std 0.5 must reach model.json
    inp = keras.Input((S, S, 3))
    x = layers.Conv2D(8, 3, strides=4, activation="relu")(inp)
    x = layers.GlobalAveragePooling2D()(x)
    hard = keras.Model(inp, layers.Dense(1, activation="hard_sigmoid")(x), name="hard_sigmoid")
    spread(hard, (frames - 0.5) / 0.5)
    hard.save(os.path.join(out, "hard_sigmoid.keras"))

    # a small CNN + LSTM: TimeDistributed(CNN) over [N, T, S, S, 3] -> LSTM -> sigmoid [N, 1]
    cnn = keras.Sequential([
        keras.Input((S, S, 3)),
        layers.Conv2D(8, 3, strides=2, activation="relu"),
        layers.BatchNormalization(),
        layers.Conv2D(16, 3, strides=2, activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(12, activation="relu"),
    ], name="frame_cnn")
    clip = keras.Sequential([
        keras.Input((T, S, S, 3)),
        layers.TimeDistributed(cnn),
        layers.LSTM(10),
        layers.Dense(1, activation="sigmoid"),
    ], name="cnn_lstm")
    spread(clip, pix)
    clip.save(os.path.join(out, "cnn_lstm.keras"))

    # a functional model with one TimeDistributed layer per CNN layer, a variable T, and a branch
    # after them (GRU output + skip connection): cut at the last TimeDistributed output
    inp = keras.Input((None, S, S, 3))
    f = layers.TimeDistributed(layers.Conv2D(8, 3, strides=2, activation="relu"))(inp)
    f = layers.TimeDistributed(layers.MaxPooling2D(2))(f)
    f = layers.TimeDistributed(layers.GlobalAveragePooling2D())(f)
    g = layers.GRU(8, return_sequences=True)(f)
    g = layers.GlobalAveragePooling1D()(layers.Add()([g, f]))
    branchy = keras.Model(inp, layers.Dense(1, activation="sigmoid")(g), name="td_gru")
    spread(branchy, pix)
    branchy.save(os.path.join(out, "td_gru.keras"))

    np.save(os.path.join(out, "crops.npy"), crops)
    np.save(os.path.join(out, "branchy_p.npy"), np.asarray(branchy(pix, training=False)))
    np.save(os.path.join(out, "frame_p.npy"), np.asarray(frame(frames, training=False)))
    np.save(os.path.join(out, "clip_p.npy"), np.asarray(clip(pix, training=False)))
    np.save(os.path.join(out, "hard_p.npy"), np.asarray(hard((frames - 0.5) / 0.5, training=False)))
""")


def _keras_run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([str(KERAS_PY), *args], check=False, capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env)


@pytest.fixture(scope="module")
def keras_side(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The saved Keras models, the test crops and Keras' probabilities, and both converted folders."""
    work = tmp_path_factory.mktemp("keras")
    script = work / "build_models.py"
    script.write_text(BUILD_SCRIPT)
    built = _keras_run(str(script), str(work))
    assert built.returncode == 0, built.stderr[-3000:]
    for src, out, options in (("meso_like.h5", "frame_model", ["--kind", "frame"]),
                              ("hard_sigmoid.keras", "hard_model",
                               ["--kind", "frame", "--mean", "0.5", "0.5", "0.5", "--std", "0.5", "0.5", "0.5"]),
                              ("cnn_lstm.keras", "clip_model", ["--kind", "cnn-rnn"]),
                              ("td_gru.keras", "branchy_model", ["--kind", "cnn-rnn", "--window", "10"])):
        conv = _keras_run("-m", "tools.keras_to_contract", str(work / src), str(work / out), *options,
                          "--name", out)
        assert conv.returncode == 0, conv.stderr[-3000:]
        assert "parity vs Keras: max |p_keras - p_onnx| = " in conv.stdout, conv.stdout
        print(conv.stdout)
    return work


def _scorer(folder: Path) -> FaceScorer:
    return FaceScorer(load_model_spec(folder), ["CPUExecutionProvider"])


def test_frame_classifier_converts_to_the_contract(keras_side: Path) -> None:
    spec = load_model_spec(keras_side / "frame_model")
    assert spec.trained and "meso_like.h5" in spec.description
    assert (spec.input_size, spec.embedding_dim, spec.window) == (SIZE, 1, 8)
    assert spec.mean == (0.0, 0.0, 0.0) and spec.std == (1.0, 1.0, 1.0)
    scorer = _scorer(keras_side / "frame_model")
    assert scorer.encoder.get_inputs()[0].shape[1:] == [3, SIZE, SIZE]
    crops = np.load(keras_side / "crops.npy").reshape(N * T, SIZE, SIZE, 3)
    logits = scorer.encode(crops)  # the scorer's own normalisation and NCHW layout
    assert logits.shape == (N * T, 1)
    keras_p = np.load(keras_side / "frame_p.npy").reshape(-1)
    # one frame at a time: the head's mean over T = 1 is the frame's own probability
    p = scorer.probabilities([row[None, :] for row in logits])
    assert np.max(np.abs(p - keras_p)) <= TOL
    assert keras_p.min() < 0.2 and keras_p.max() > 0.8  # the test crops do spread the outputs
    # a window of frames: the video score is the sigmoid of the mean frame logit
    windows = logits.reshape(N, T, 1)
    p_video = scorer.probabilities(list(windows))
    assert np.allclose(p_video, 1 / (1 + np.exp(-windows.mean(axis=(1, 2)))), atol=1e-6)


def test_non_sigmoid_output_and_normalisation(keras_side: Path) -> None:
    """hard_sigmoid output: the converter appends log(p / (1 - p)); its input is (x / 255 - 0.5) / 0.5."""
    spec = load_model_spec(keras_side / "hard_model")
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.5, 0.5, 0.5)
    scorer = _scorer(keras_side / "hard_model")
    crops = np.load(keras_side / "crops.npy").reshape(N * T, SIZE, SIZE, 3)
    p = scorer.probabilities([row[None, :] for row in scorer.encode(crops)])
    keras_p = np.load(keras_side / "hard_p.npy").reshape(-1)
    assert keras_p.min() < 0.05 and keras_p.max() > 0.9  # saturated outputs are covered too
    assert np.max(np.abs(p - keras_p)) <= TOL


def test_wrong_kind_is_a_clear_error(keras_side: Path, tmp_path: Path) -> None:
    conv = _keras_run("-m", "tools.keras_to_contract", str(keras_side / "meso_like.h5"), str(tmp_path / "m"),
                      "--kind", "cnn-rnn")
    assert conv.returncode == 1
    assert "error: cnn-rnn: expected input [N, T, S, S, 3]" in conv.stderr
    assert not (tmp_path / "m" / "model.json").exists()


def test_cnn_rnn_is_split_into_encoder_and_temporal_head(keras_side: Path) -> None:
    spec = load_model_spec(keras_side / "clip_model")
    assert spec.trained and "cnn_lstm.keras" in spec.description
    assert (spec.input_size, spec.embedding_dim, spec.window) == (SIZE, 12, T)
    scorer = _scorer(keras_side / "clip_model")
    assert [i.shape[1:] for i in scorer.temporal.get_inputs()] == [["T", 12]]
    crops = np.load(keras_side / "crops.npy")
    emb = scorer.encode(crops.reshape(N * T, SIZE, SIZE, 3))
    assert emb.shape == (N * T, 12)
    p = scorer.probabilities(list(emb.reshape(N, T, 12)))
    keras_p = np.load(keras_side / "clip_p.npy").reshape(-1)
    assert np.max(np.abs(p - keras_p)) <= TOL
    # shorter windows (a face's first samples) run as well
    assert scorer.probabilities([emb[:1], emb[:3]]).shape == (2,)


def test_functional_cnn_rnn_with_branches_and_variable_t(keras_side: Path) -> None:
    spec = load_model_spec(keras_side / "branchy_model")
    assert (spec.embedding_dim, spec.window) == (8, 10)
    scorer = _scorer(keras_side / "branchy_model")
    crops = np.load(keras_side / "crops.npy")
    emb = scorer.encode(crops.reshape(N * T, SIZE, SIZE, 3)).reshape(N, T, 8)
    keras_p = np.load(keras_side / "branchy_p.npy").reshape(-1)
    assert keras_p.min() < 0.3 and keras_p.max() > 0.7
    assert np.max(np.abs(scorer.probabilities(list(emb)) - keras_p)) <= TOL


@pytest.mark.parametrize("folder", ["frame_model", "clip_model"])
def test_converted_model_runs_in_the_pipeline(keras_side: Path, two_faces_clip: Path, folder: str) -> None:
    scored: list[float] = []

    def collect(result) -> None:
        scored.extend(f.score for f in result.faces if f.scored and f.score is not None)

    config = RunConfig(source=SourceOptions(str(two_faces_clip)), model=ModelOptions(model_dir=keras_side / folder))
    summary = Pipeline(config, on_result=collect).run()
    assert summary.frames_processed == 90
    assert summary.provenance.model_trained
    assert len(scored) >= 40 and all(0.0 <= s <= 1.0 for s in scored)


# Runs in .venv-keras: Meso-4 from the converter's own builder, its last layer spread as above,
# saved as a weights-only legacy .h5 (how MesoNet publishes its weights), plus Keras' probabilities.
MESO4_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import h5py, keras, numpy as np
    from keras.src.legacy.saving import legacy_h5_format
    from tools.keras_to_contract import build_meso4

    out = sys.argv[1]
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(2)
    crops = np.clip(rng.integers(0, 256, (6, 1, 1, 3)) + rng.normal(0, 40, (6, 256, 256, 3)), 0, 255)
    crops = crops.astype(np.uint8)
    model = build_meso4()
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 27977  # the paper's count
    features = np.asarray(keras.Model(model.inputs[0], model.layers[-2].output)(crops / 255.0, training=False))
    kernel, bias = model.layers[-1].get_weights()
    z = features @ kernel + bias
    scale = 2.0 / max(float(z.std()), 1e-6)
    model.layers[-1].set_weights([kernel * scale, (bias - z.mean()) * scale])
    with h5py.File(os.path.join(out, "meso4_weights.h5"), "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    np.save(os.path.join(out, "meso4_crops.npy"), crops)
    np.save(os.path.join(out, "meso4_p.npy"), np.asarray(model(crops / 255.0, training=False)))
""")


def test_weights_only_meso4_converts_with_arch(keras_side: Path, tmp_path: Path) -> None:
    script = tmp_path / "meso4.py"
    script.write_text(MESO4_SCRIPT)
    built = _keras_run(str(script), str(tmp_path))
    assert built.returncode == 0, built.stderr[-3000:]
    conv = _keras_run("-m", "tools.keras_to_contract", str(tmp_path / "meso4_weights.h5"), str(tmp_path / "m"),
                      "--arch", "meso4")
    assert conv.returncode == 0, conv.stderr[-3000:]
    spec = load_model_spec(tmp_path / "m")
    assert (spec.input_size, spec.embedding_dim) == (256, 1) and "--arch meso4" in spec.description
    scorer = _scorer(tmp_path / "m")
    crops = np.load(tmp_path / "meso4_crops.npy")
    p = scorer.probabilities([row[None, :] for row in scorer.encode(crops)])
    keras_p = np.load(tmp_path / "meso4_p.npy").reshape(-1)
    assert keras_p.min() < 0.2 and keras_p.max() > 0.8  # so freshly initialised weights could not match
    assert np.max(np.abs(p - keras_p)) <= TOL, "the file's weights were loaded"

    # a whole 64 px model is not Meso-4 weights; a cnn-rnn kind contradicts the architecture
    wrong = _keras_run("-m", "tools.keras_to_contract", str(keras_side / "meso_like.h5"), str(tmp_path / "w"),
                       "--arch", "meso4")
    assert wrong.returncode == 1 and "error: could not load" in wrong.stderr and "as meso4 weights" in wrong.stderr
    assert "Traceback" not in wrong.stderr and not (tmp_path / "w" / "model.json").exists()
    both = _keras_run("-m", "tools.keras_to_contract", str(tmp_path / "meso4_weights.h5"), str(tmp_path / "b"),
                      "--arch", "meso4", "--kind", "cnn-rnn")
    assert both.returncode == 2 and "--arch meso4 is a frame classifier" in both.stderr
