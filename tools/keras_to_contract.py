"""Convert a trained Keras model into a stream_guard model folder (see models/README.md).

Runs in a separate virtual environment with TensorFlow and tf2onnx (never the main one):

    .venv-keras/bin/python -m tools.keras_to_contract MODEL.keras|MODEL.h5 OUT_DIR --kind frame|cnn-rnn
        [--input-size N] [--mean M M M] [--std S S S] [--window T] [--sample-hz H]
        [--threshold P] [--crop-margin C] [--name NAME] [--output-is-logit]

(from the repository root, or with ``PYTHONPATH`` pointing at it).

``--kind frame``: a per-frame classifier ``[N, S, S, 3] -> [N, 1]`` sigmoid probability (MesoNet's
Meso4, say). Its logit becomes a 1-D embedding and the temporal head is the mean logit over the
window, so the video score is the mean frame logit.

``--kind cnn-rnn``: a model ``[N, T, S, S, 3] -> [N, 1]`` whose leading ``TimeDistributed`` layers
hold the per-frame CNN, followed by the recurrent part and the head. The CNN becomes the encoder
(``[N, S, S, 3] -> [N, D]``, run once per sampled crop) and the rest the temporal head
(``[N, T, D] -> [N, 1]``, ``T`` dynamic), so no per-frame unrolling is needed.

In both cases the encoder takes NCHW input (a transpose is added at its input), a final sigmoid is
cut off so the graph outputs a logit (or, when the output is not a sigmoid node, ``log(p / (1 - p))``
is appended; ``--output-is-logit`` skips that for models that already output logits), and the result
is checked against Keras in ONNX Runtime on random input before ``model.json`` is written.
``--mean``/``--std`` describe how the Keras model's input derives from the pixels: it must be
``(x / 255 - mean) / std`` (the default, mean 0 and std 1, means the model takes RGB in [0, 1]).
Whole saved models load as they are (``.keras``, or ``.h5`` written by ``model.save``). A
weights-only ``.h5`` needs its architecture: ``--arch meso4`` builds Meso-4 (Afchar et al.,
"MesoNet: a Compact Facial Video Forgery Detection Network", WIFS 2018; written from the
paper's description: 27,977 trainable parameters, 256 px RGB input in [0, 1]) and loads the
weights into it, as published for that network; it implies ``--kind frame``. Any other
architecture must be built and saved with ``model.save`` in Keras first.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from stream_guard.errors import ModelError
from stream_guard.model.contract import ModelSpec, load_model_spec

OPSET = 17
PARITY_TOL = 1e-4  # max abs difference of probabilities, Keras vs ONNX Runtime


class ConversionError(Exception):
    pass


# --------------------------------------------------------------------------- ONNX graph surgery

def _logit_output(model, output_is_logit: bool):
    """Make the single output of ``model`` a logit: cut a final Sigmoid, else append log(p/(1-p))."""
    from onnx import helper, numpy_helper

    graph = model.graph
    if len(graph.output) != 1:
        raise ConversionError(f"expected one output, the graph has {len(graph.output)}")
    out_name = graph.output[0].name
    by_output = {o: n for n in graph.node for o in n.output}
    node = by_output.get(out_name)
    while node is not None and node.op_type == "Identity":  # tf2onnx often ends with Identity nodes
        node = by_output.get(node.input[0])
    readers = [n for n in graph.node if node is not None and node.output[0] in n.input]
    if output_is_logit:
        if node is not None and node.op_type == "Sigmoid":
            raise ConversionError("the model ends in a sigmoid, so its output is a probability: "
                                  "drop --output-is-logit")
        return model
    if node is not None and node.op_type == "Sigmoid" and len(readers) <= 1:
        node.op_type = "Identity"  # exact: the pre-sigmoid tensor flows to the output
        return model
    eps = np.float32(1e-7)
    graph.initializer.extend([
        numpy_helper.from_array(np.array(eps, np.float32), "sg_eps_lo"),
        numpy_helper.from_array(np.array(1 - eps, np.float32), "sg_eps_hi"),
        numpy_helper.from_array(np.array(1, np.float32), "sg_one"),
    ])
    prob = out_name + "_prob"
    for n in graph.node:
        _replace(n.output, {out_name: prob})
    graph.node.extend([
        helper.make_node("Clip", [prob, "sg_eps_lo", "sg_eps_hi"], ["sg_p"]),
        helper.make_node("Sub", ["sg_one", "sg_p"], ["sg_q"]),
        helper.make_node("Div", ["sg_p", "sg_q"], ["sg_odds"]),
        helper.make_node("Log", ["sg_odds"], [out_name]),
    ])
    return model


def _replace(names, mapping: dict) -> None:
    """Rename entries of a protobuf repeated string field in place."""
    new = [mapping.get(x, x) for x in names]
    del names[:]
    names.extend(new)


def _rename_io(model, inp: str, out: str):
    """Give the graph's single input and output stable names."""
    graph = model.graph
    old_in, old_out = graph.input[0].name, graph.output[0].name
    for n in graph.node:
        _replace(n.input, {old_in: inp, old_out: out})
        _replace(n.output, {old_out: out})
    graph.input[0].name, graph.output[0].name = inp, out
    return model


def _fix_dims(value_info, names: list[str | None]) -> None:
    """Set symbolic names for dynamic dims (``None`` leaves the dim as it is)."""
    dims = value_info.type.tensor_type.shape.dim
    for d, name in zip(dims, names):
        if name is not None:
            d.Clear()
            d.dim_param = name


def mean_logit_head(dim: int = 1):
    """The temporal head of a frame classifier: ``[N, T, 1]`` logits -> their mean ``[N, 1]``."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["embeddings"], ["logits"], axes=[1], keepdims=0)],
        "mean_logit_head",
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", "T", dim])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", dim])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------- Keras side

def build_meso4():
    """Meso-4 as the MesoNet paper describes it: four conv blocks (8 3x3, 8 5x5, 16 5x5, 16 5x5 filters,
    ReLU, batch norm, max pooling 2, 2, 2, 4), then dropout 0.5, dense 16 with leaky ReLU 0.1, dropout
    0.5 and a sigmoid output. Input ``[N, 256, 256, 3]``, RGB in [0, 1]."""
    import keras
    from keras import layers

    x = inputs = keras.Input((256, 256, 3))
    for filters, kernel, pool in ((8, 3, 2), (8, 5, 2), (16, 5, 2), (16, 5, 4)):
        x = layers.Conv2D(filters, kernel, padding="same", activation="relu")(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(pool, padding="same")(x)
    x = layers.Dropout(0.5)(layers.Flatten()(x))
    x = layers.Dropout(0.5)(layers.LeakyReLU(negative_slope=0.1)(layers.Dense(16)(x)))
    return keras.Model(inputs, layers.Dense(1, activation="sigmoid")(x), name="meso4")


ARCHITECTURES = {"meso4": build_meso4}  # --arch: builders for weights-only files


def _load_keras(path: Path, arch: str | None = None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    if arch is not None:
        model = ARCHITECTURES[arch]()
        try:
            model.load_weights(str(path))
        except Exception as e:  # Keras raises many types: report them as one
            raise ConversionError(f"could not load {path} as {arch} weights ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''})") from e
        return model
    try:
        return keras.models.load_model(str(path), compile=False)
    except Exception as e:  # Keras raises many types: report them as one
        raise ConversionError(f"could not load {path} as a whole Keras model ({type(e).__name__}: {e}); "
                              "a weights-only .h5 needs the architecture: --arch meso4 for Meso-4, "
                              "else build it, load_weights, model.save") from e


def _to_onnx(fn, signature, nchw_input: bool):
    import tensorflow as tf
    import tf2onnx

    tf_fn = tf.function(fn, input_signature=[tf.TensorSpec(signature, tf.float32, name="x")])
    kwargs = {"inputs_as_nchw": ["x:0"]} if nchw_input else {}
    model, _ = tf2onnx.convert.from_function(tf_fn, input_signature=tf_fn.input_signature, opset=OPSET, **kwargs)
    return model


def _apply(layers, x):
    for layer in layers:
        x = layer(x, training=False)
    return x


def _model_layers(model) -> list:
    import keras

    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def split_cnn_rnn(model):
    """Leading TimeDistributed layers -> (a callable per-frame CNN, a callable temporal part).

    The TimeDistributed layers must form a chain from the input. After them, a Sequential model's
    layers are applied in order; a functional model is cut at the last TimeDistributed output, so
    branches (skip connections, several heads merged) after it are kept.
    """
    import keras

    layers = _model_layers(model)
    n_td = 0
    while n_td < len(layers) and isinstance(layers[n_td], keras.layers.TimeDistributed):
        n_td += 1
    if n_td == 0:
        raise ConversionError("cnn-rnn: the model does not start with a TimeDistributed layer "
                              f"(first layers: {[type(x).__name__ for x in layers[:3]]})")
    if n_td == len(layers):
        raise ConversionError("cnn-rnn: nothing follows the TimeDistributed layers")
    tds, rest = layers[:n_td], layers[n_td:]
    cnn_layers = [td.layer for td in tds]

    def cnn(x):
        return _apply(cnn_layers, x)

    if isinstance(model, keras.Sequential):
        def temporal(x):
            return _apply(rest, x)
        return cnn, temporal
    previous = model.inputs[0]
    for td in tds:
        if len(td._inbound_nodes) != 1 or td.input is not previous:
            raise ConversionError(f"cnn-rnn: TimeDistributed layer '{td.name}' is not part of one chain "
                                  "from the model's input (or is shared)")
        previous = td.output
    head = keras.Model(previous, model.outputs[0])

    def temporal_head(x):
        return head(x, training=False)
    return cnn, temporal_head


def _input_shape(model) -> tuple:
    shape = model.inputs[0].shape if getattr(model, "inputs", None) else model.input_shape
    return tuple(shape)


# --------------------------------------------------------------------------- conversion

def convert(model_path: Path, out_dir: Path, kind: str, input_size: int | None, mean, std, window: int | None,
            sample_hz: float, threshold: float, crop_margin: float, name: str | None,
            output_is_logit: bool, seed: int = 0, arch: str | None = None) -> tuple[ModelSpec, float]:
    import onnx
    import onnxruntime as ort

    model = _load_keras(model_path, arch)
    shape = _input_shape(model)
    rank = 4 if kind == "frame" else 5
    if len(shape) != rank or shape[-1] != 3:
        raise ConversionError(f"{kind}: expected input [N{', T' if rank == 5 else ''}, S, S, 3], model takes {shape}")
    h, w = shape[-3], shape[-2]
    if h is not None and w is not None and h != w:
        raise ConversionError(f"input must be square, model takes {h}x{w}")
    size = input_size or h
    if size is None:
        raise ConversionError("the model's input size is dynamic: pass --input-size")
    if h is not None and size != h:
        raise ConversionError(f"--input-size {size} does not match the model's input {h}")
    out_shape = tuple(model.outputs[0].shape) if getattr(model, "outputs", None) else ()
    if len(out_shape) != 2 or out_shape[1] != 1:
        raise ConversionError(f"expected one output [N, 1] (the fake probability), model gives {out_shape}")
    model_t = shape[1] if kind == "cnn-rnn" else None
    window = window or model_t or 8

    if kind == "frame":
        def frame_model(x):
            return model(x, training=False)
        encoder = _to_onnx(frame_model, [None, size, size, 3], nchw_input=True)
        encoder = _logit_output(encoder, output_is_logit)
        temporal = mean_logit_head(1)
    else:
        cnn, rest = split_cnn_rnn(model)
        encoder = _to_onnx(cnn, [None, size, size, 3], nchw_input=True)
        dim = encoder.graph.output[0].type.tensor_type.shape.dim
        if len(dim) != 2 or not dim[1].dim_value:
            raise ConversionError(f"cnn-rnn: the CNN's output must be [N, D], got {dim}")
        try:
            temporal = _to_onnx(rest, [None, None, int(dim[1].dim_value)], nchw_input=False)
        except (ValueError, TypeError) as e:
            raise ConversionError(f"cnn-rnn: the part after the TimeDistributed layers does not take a variable "
                                  f"number of frames T ({type(e).__name__}: {str(e).splitlines()[0]})") from e
        temporal = _logit_output(temporal, output_is_logit)
        _rename_io(temporal, "embeddings", "logits")
        _fix_dims(temporal.graph.input[0], ["N", "T", None])
        _fix_dims(temporal.graph.output[0], ["N", None])
    _rename_io(encoder, "crops", "embeddings")
    _fix_dims(encoder.graph.input[0], ["N", None, None, None])
    _fix_dims(encoder.graph.output[0], ["N", None])
    embedding_dim = int(encoder.graph.output[0].type.tensor_type.shape.dim[1].dim_value)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.json").unlink(missing_ok=True)  # written last, only once the graphs pass the check
    for fname, graph in (("encoder.onnx", encoder), ("temporal.onnx", temporal)):
        onnx.checker.check_model(graph)
        onnx.save(graph, str(out_dir / fname))

    # parity: Keras probabilities vs encoder + temporal in ONNX Runtime on the same random pixels
    rng = np.random.default_rng(seed)
    n, t = 3, (model_t or window)  # a Keras model with a fixed T is checked at that T
    pixels = rng.random((n, t, size, size, 3), dtype=np.float32)  # x / 255
    x = (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    enc = ort.InferenceSession(str(out_dir / "encoder.onnx"), providers=["CPUExecutionProvider"])
    tmp = ort.InferenceSession(str(out_dir / "temporal.onnx"), providers=["CPUExecutionProvider"])
    frames = np.ascontiguousarray(x.reshape(n * t, size, size, 3).transpose(0, 3, 1, 2))
    emb = enc.run(None, {"crops": frames})[0].reshape(n, t, -1)
    if kind == "frame":
        keras_p = np.asarray(model(x.reshape(n * t, size, size, 3), training=False)).reshape(-1)
        onnx_logit = tmp.run(None, {"embeddings": emb.reshape(n * t, 1, -1)})[0].reshape(-1)
        # and the video score: the mean frame logit over the window
        video = tmp.run(None, {"embeddings": emb})[0].reshape(-1)
        expected = emb.reshape(n, t).mean(axis=1)
        if not np.allclose(video, expected, atol=1e-5):
            raise ConversionError("temporal head does not average the frame logits")
    else:
        keras_p = np.asarray(model(x, training=False)).reshape(-1)
        onnx_logit = tmp.run(None, {"embeddings": emb})[0].reshape(-1)
        for length in (1, window):  # a face's first sample, and a full window
            tmp.run(None, {"embeddings": np.resize(emb, (n, length, emb.shape[2])).astype(np.float32)})
    keras_p = keras_p.astype(np.float64)
    if output_is_logit:
        keras_p = 1.0 / (1.0 + np.exp(-keras_p))
    onnx_p = 1.0 / (1.0 + np.exp(-onnx_logit.astype(np.float64)))
    diff = float(np.max(np.abs(keras_p - onnx_p)))
    if diff > PARITY_TOL:
        hint = (" (cnn-rnn needs the layers to form one chain: the TimeDistributed layers, then the rest)"
                if kind == "cnn-rnn" else "")
        raise ConversionError(f"parity check failed: max |p_keras - p_onnx| = {diff:.3g} > {PARITY_TOL}{hint}")

    folder = out_dir.resolve()
    spec = ModelSpec(
        folder=folder, name=name or model_path.stem, version="1", trained=True,
        description=(f"converted from Keras model {model_path.name} (--kind {kind}"
                     f"{f', --arch {arch}' if arch else ''}) by tools/keras_to_contract.py"),
        encoder_path=folder / "encoder.onnx", temporal_path=folder / "temporal.onnx",
        input_size=int(size), mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std),
        crop_margin=crop_margin, embedding_dim=embedding_dim, window=int(window), sample_hz=sample_hz,
        threshold=threshold, calibration_a=1.0, calibration_b=0.0,
    )
    spec.save()
    try:
        load_model_spec(folder)  # the same validation the pipeline applies
    except ModelError as e:
        (folder / "model.json").unlink()
        raise ConversionError(str(e)) from e
    return spec, diff


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a whole saved Keras model (.keras or .h5), or weights with --arch")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--kind", choices=("frame", "cnn-rnn"), help="required unless --arch says it")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES),
                        help="MODEL is a weights-only .h5 for this built-in architecture (meso4: a frame classifier)")
    parser.add_argument("--input-size", type=int, help="crop side S (default: the model's input size)")
    parser.add_argument("--mean", type=float, nargs=3, default=(0.0, 0.0, 0.0), help="of x/255, RGB")
    parser.add_argument("--std", type=float, nargs=3, default=(1.0, 1.0, 1.0), help="of x/255, RGB")
    parser.add_argument("--window", type=int, help="embeddings the head sees (default: the model's T, else 8)")
    parser.add_argument("--sample-hz", type=float, default=10.0)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--crop-margin", type=float, default=0.25)
    parser.add_argument("--name", help="model name (default: the file's stem)")
    parser.add_argument("--output-is-logit", action="store_true",
                        help="the model outputs a logit, not a sigmoid probability")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        parser.error(f"no such file: {args.model}")
    if args.arch is not None:
        if args.kind not in (None, "frame"):
            parser.error(f"--arch {args.arch} is a frame classifier: use --kind frame or leave --kind out")
        args.kind = "frame"
    elif args.kind is None:
        parser.error("--kind is required (frame or cnn-rnn) unless --arch names a built-in architecture")
    try:
        spec, diff = convert(args.model, args.out_dir, args.kind, args.input_size, args.mean, args.std, args.window,
                             args.sample_hz, args.threshold, args.crop_margin, args.name, args.output_is_logit,
                             arch=args.arch)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"parity vs Keras: max |p_keras - p_onnx| = {diff:.2e} (limit {PARITY_TOL:.0e})")
    print(f"wrote {spec.folder} (encoder [N,3,{spec.input_size},{spec.input_size}] -> [N,{spec.embedding_dim}], "
          f"window {spec.window})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
