"""graphc.onnx: import (PyTorch, scikit-learn, onnx.helper models), export to ONNX Runtime, bad files.

Oracles: PyTorch's own outputs and input gradients (torch installed), ONNX Runtime (onnxruntime
installed), scikit-learn's predict_proba (skl2onnx installed); each skips cleanly when missing.
"""
import io
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import graphc as gc  # noqa: E402
import graphc.onnx  # noqa: E402,F401
from graphc import nn  # noqa: E402

RNG = np.random.default_rng(0)
F32 = TensorProto.FLOAT


def _quiet_load(f, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gc.onnx.ImportNote)
        return gc.onnx.load(f, **kw)


def _rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


# -- models exported from PyTorch --------------------------------------------------------------------
def _torch_export(model, x, dynamic=True, opset=17, **kw):
    torch = pytest.importorskip("torch")
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), f, dynamo=False, opset_version=opset, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}} if dynamic else None, **kw)
    return f.getvalue()


def _check_against_torch(tmodel, data, opset=17, dynamic=True, **kw):
    """graphc's imported logits and cross-entropy input gradients vs PyTorch's."""
    torch = pytest.importorskip("torch")
    blob = _torch_export(tmodel, torch.from_numpy(data[:2]), dynamic=dynamic, opset=opset, **kw)
    model = _quiet_load(blob)
    labels = np.arange(len(data)) % 3
    x = torch.from_numpy(data).requires_grad_()
    logits = tmodel(x)
    torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels)).backward()
    ours = gc.predict_logits(model, data)
    assert ours.dtype == np.float32
    assert _rel(ours, logits.detach().numpy()) <= 1e-5
    grad, _ = gc.attacks.input_gradient(model, data, labels)  # per-example: mean-loss gradient x batch size
    assert _rel(grad / len(data), x.grad.numpy()) <= 1e-4
    return model


@pytest.mark.parametrize("dynamic", [True, False])
def test_a_pytorch_mlp_matches_logits_and_input_gradients(dynamic):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 12), torch.nn.LeakyReLU(),
                              torch.nn.Linear(12, 10), torch.nn.Tanh(), torch.nn.Linear(10, 8), torch.nn.Sigmoid(),
                              torch.nn.Linear(8, 3)).eval()
    model = _check_against_torch(mlp, RNG.standard_normal((9, 6)).astype(np.float32), dynamic=dynamic)
    # PyTorch's names, shapes and (out, in) layout: its state_dict loads into graphc's MLP too
    assert [n for n, _ in model.named_parameters()] == list(mlp.state_dict())
    assert all(p.shape == tuple(mlp.state_dict()[n].shape) for n, p in model.named_parameters())


def _lenet():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(6 * 2 * 2, 3))
    with torch.no_grad():  # non-trivial running statistics, so the folded affine is really tested
        bn = net[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.3, 0.3)
    return net.eval()


@pytest.mark.parametrize("opset,dynamic", [(9, True), (13, False), (17, True), (20, False)])
def test_a_pytorch_lenet_with_batchnorm_matches(opset, dynamic):
    # do_constant_folding=False keeps BatchNormalization as a node (folding would merge it into the conv)
    model = _check_against_torch(_lenet(), RNG.random((5, 1, 8, 8)).astype(np.float32), opset=opset,
                                 dynamic=dynamic, do_constant_folding=False)
    ops = {n.op_type for n in model.proto.graph.node}
    assert {"Conv", "BatchNormalization", "MaxPool", "AveragePool", "Gemm"} <= ops


def test_a_flatten_written_as_view_shape_gather_concat_reshape_imports():
    torch = pytest.importorskip("torch")

    class View(torch.nn.Module):
        def forward(self, x):
            return x.view(x.size(0), -1)  # exported as Shape -> Gather -> Unsqueeze -> Concat -> Reshape
    net = _lenet()
    net[7] = View()
    model = _check_against_torch(net, RNG.random((4, 1, 8, 8)).astype(np.float32), opset=11)
    assert {"Shape", "Gather", "Concat", "Reshape"} <= {n.op_type for n in model.proto.graph.node}


def test_a_trailing_softmax_is_cut_and_said():
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3),
                              torch.nn.Softmax(dim=1)).eval()
    blob = _torch_export(net, torch.zeros(2, 4))
    with pytest.warns(gc.onnx.ImportNote, match=r"cut the trailing Softmax .* the logits"):
        model = gc.onnx.load(blob)
    X = RNG.standard_normal((6, 4)).astype(np.float32)
    logits = net[:3](torch.from_numpy(X)).detach().numpy()
    assert _rel(gc.predict_logits(model, X), logits) <= 1e-5
    assert any("Softmax" in n for n in model.notes)
    probs = _quiet_load(blob, logits=False)
    assert _rel(gc.predict_logits(probs, X), net(torch.from_numpy(X)).detach().numpy()) <= 1e-5


# -- scikit-learn through skl2onnx ---------------------------------------------------------------------
@pytest.mark.parametrize("zipmap", [True, False])
def test_a_sklearn_mlp_classifier_matches_predict_proba(zipmap):
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.datasets import load_iris
    from sklearn.neural_network import MLPClassifier
    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier((10,), max_iter=300, random_state=0).fit(X, y)
        proto = skl2onnx.to_onnx(clf, X[:1], options={id(clf): {"zipmap": zipmap}})
    with pytest.warns(gc.onnx.ImportNote) as notes:
        model = gc.onnx.load(proto)
    text = " ".join(str(w.message) for w in notes)
    assert "cut the trailing Softmax" in text and "label" in text
    probs = gc.softmax(gc.placeholder("z", (None, 3)), axis=1)
    got = gc.compile(probs)(z=gc.predict_logits(model, X))
    np.testing.assert_allclose(got, clf.predict_proba(X), rtol=1e-4, atol=1e-6)


# -- models built with onnx.helper, every listed op, against ONNX Runtime ------------------------------
def _model(nodes, inputs, outputs, inits=(), opset=18):
    graph = helper.make_graph(nodes, "t", inputs, outputs, initializer=[numpy_helper.from_array(v, k)
                                                                        for k, v in dict(inits).items()])
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    # outputs declared without a shape get the one ONNX infers (the checker wants it written out)
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)
             if v.type.tensor_type.HasField("shape")}
    for k, out in enumerate(model.graph.output):
        if not out.type.tensor_type.HasField("shape") and out.name in known:
            model.graph.output[k].CopyFrom(known[out.name])
    return model


def _vi(name, shape, t=F32):
    return helper.make_tensor_value_info(name, t, shape)


def _against_ort(model, feeds, rtol=1e-5, atol=1e-6):
    ort = pytest.importorskip("onnxruntime")
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    rep = gc.onnx.backend.prepare(model)
    got = rep.run([feeds[i.name] for i in model.graph.input if i.name in feeds])
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.dtype == r.dtype and g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol)
    return got


def _image_net(opset):
    """A CNN touching the conv/pool/normalisation family and the shape plumbing exporters emit."""
    c = lambda *s: (RNG.standard_normal(s) * 0.3).astype(np.float32)  # noqa: E731
    n = helper.make_node
    inits = {"w1": c(6, 3, 3, 3), "b1": c(6), "wd": c(6, 1, 3, 3), "wg": c(4, 3, 1, 1), "bn_s": c(4) + 1,
             "bn_b": c(4), "bn_m": c(4), "bn_v": np.abs(c(4)) + 0.5, "slope": np.full((4, 1, 1), 0.2, np.float32),
             "fc": c(3, 4 * 6 * 4), "fc_b": c(3)}
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 0, 2, 1], strides=[1, 2]),                    # asymmetric pads
        n("Conv", ["c1", "wd"], ["c2"], group=6, auto_pad="SAME_UPPER"),                          # depthwise, SAME
        n("Conv", ["c2", "wg"], ["c3"], group=2),                                                 # grouped
        n("BatchNormalization", ["c3", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"], epsilon=1e-3),
        n("PRelu", ["bn", "slope"], ["pr"]),
        n("LRN", ["pr"], ["lrn"], size=3, alpha=1e-2, beta=0.75, bias=1.5),
        n("MaxPool", ["lrn"], ["mp"], kernel_shape=[2, 2], pads=[0, 0, 1, 1], strides=[1, 1]),
        n("AveragePool", ["mp"], ["ap"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),   # excl. pad
        n("AveragePool", ["ap"], ["ap2"], kernel_shape=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
        n("Shape", ["ap2"], ["shp"]),
        n("Gather", ["shp", "zero"], ["batch"], axis=0),
        n("Unsqueeze", ["batch", "zero1d"] if opset >= 13 else ["batch"], ["batch1"],
          **({} if opset >= 13 else {"axes": [0]})),
        n("Concat", ["batch1", "minus1"], ["target"], axis=0),
        n("Reshape", ["ap2", "target"], ["flat"]),
        n("Gemm", ["flat", "fc", "fc_b"], ["logits"], transB=1, alpha=0.5, beta=2.0),
        n("GlobalAveragePool", ["ap2"], ["gap"]),
        n("Flatten", ["gap"], ["gapf"], axis=1),
    ]
    inits.update(zero=np.asarray(0, np.int64), minus1=np.array([-1], np.int64))
    if opset >= 13:
        inits["zero1d"] = np.zeros(1, np.int64)
    return _model(nodes, [_vi("x", ["N", 3, 9, 10])], [_vi("logits", ["N", 3]), _vi("gapf", None)], inits, opset)


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_a_helper_built_cnn_matches_onnx_runtime(opset):
    model = _image_net(opset)
    x = RNG.standard_normal((2, 3, 9, 10)).astype(np.float32)
    _against_ort(model, {"x": x}, rtol=1e-4, atol=1e-5)
    # the same file through load(): a Module with trainable initializers, gradients checked
    imported = _quiet_load(model.SerializeToString(), output="logits")
    assert _rel(gc.predict_logits(imported, x), _against_ort(model, {"x": x}, 1e-4, 1e-5)[0]) <= 1e-5
    xp, yp = gc.placeholder("x", (None, 3, 9, 10)), gc.placeholder("y", (None,), "int64")
    loss = gc.softmax_cross_entropy(imported(xp), yp)
    report = gc.gradcheck(loss, {xp: x, yp: np.array([0, 2])})
    assert report, report


def _elementwise_net(opset):
    n = helper.make_node
    a = RNG.uniform(0.5, 2.0, (3, 4)).astype(np.float32)
    nodes = [
        n("Add", ["x", "a"], ["s1"]), n("Sub", ["s1", "x2"], ["s2"]), n("Mul", ["s2", "a"], ["s3"]),
        n("Div", ["s3", "a"], ["s4"]), n("Neg", ["s4"], ["s5"]), n("Abs", ["s5"], ["s6"]),
        n("Sqrt", ["s6"], ["s7"]), n("Log", ["a"], ["la"]), n("Exp", ["s4"], ["ex"]), n("Pow", ["s7", "three"], ["pw"]),
        n("Pow", ["a", "x"], ["pw2"]),
        n("Relu", ["s4"], ["r"]), n("LeakyRelu", ["s4"], ["lr"]), n("Sigmoid", ["s4"], ["sg"]),
        n("Tanh", ["s4"], ["th"]),
        n("Sum", ["r", "lr", "sg"], ["sum3"]), n("Max", ["th", "r", "pw"], ["max3"]), n("Min", ["th", "la"], ["min2"]),
        n("Softmax", ["sum3"], ["sm"], axis=0), n("LogSoftmax", ["max3"], ["lsm"], axis=1),
        n("MatMul", ["sm", "bt"], ["mm"]), n("Gemm", ["lsm", "b", "c"], ["gm"], transA=1, beta=0.5),
        n("Transpose", ["gm"], ["tr"], perm=[1, 0]),
        n("Clip", ["ex", "lo", "hi"] if opset >= 11 else ["ex"], ["cl"], **({} if opset >= 11 else
                                                                           {"min": 0.5, "max": 2.0})),
        n("Cast", ["cl"], ["c64"], to=TensorProto.DOUBLE), n("Cast", ["c64"], ["c32"], to=F32),
        n("Identity", ["c32"], ["idt"]), n("Dropout", ["idt"], ["dr"], **({"ratio": 0.3} if opset < 12 else {})),
        n("Constant", [], ["k"], value=numpy_helper.from_array(np.full((1, 4), 0.25, np.float32))),
        n("Mul", ["dr", "k"], ["dk"]),
        n("ConstantOfShape", ["shape24"], ["fill"], value=numpy_helper.from_array(np.array([1.5], np.float32))),
        n("Reshape", ["dk", "shape0m1"], ["rs"]),
        n("Unsqueeze", ["rs", "ax0"] if opset >= 13 else ["rs"], ["us"], **({} if opset >= 13 else {"axes": [0]})),
        n("Squeeze", ["us", "ax0"] if opset >= 13 else ["us"], ["sq"], **({} if opset >= 13 else {"axes": [0]})),
        n("Concat", ["sq", "fill"], ["cat"], axis=0),
        n("ReduceMean", ["cat"] + (["ax1"] if opset >= 18 else []), ["rm"], keepdims=1,
          **({} if opset >= 18 else {"axes": [1]})),
        n("ReduceSum", ["cat"] + (["ax0"] if opset >= 13 else []), ["rsum"], keepdims=0,
          **({} if opset >= 13 else {"axes": [0]})),
        n("ReduceMax", ["cat"], ["rmax"], keepdims=0),
        n("Add", ["rm", "rsum"], ["out"]),
    ]
    inits = {"a": a, "three": np.array(3.0, np.float32), "b": RNG.standard_normal((3, 5)).astype(np.float32),
             "c": RNG.standard_normal((1, 5)).astype(np.float32),
             "bt": RNG.standard_normal((4, 4)).astype(np.float32), "lo": np.array(0.5, np.float32),
             "hi": np.array(2.0, np.float32), "shape24": np.array([2, 4], np.int64),
             "shape0m1": np.array([0, -1], np.int64), "ax0": np.array([0], np.int64), "ax1": np.array([1], np.int64)}
    if opset < 11:
        del inits["lo"], inits["hi"]
    if opset < 13:
        del inits["ax0"]
    if opset < 18:
        del inits["ax1"]
    outs = [_vi("out", None), _vi("rmax", None), _vi("tr", None), _vi("pw2", None)]
    return _model(nodes, [_vi("x", [3, 4]), _vi("x2", [3, 4])], outs, inits, opset)


@pytest.mark.parametrize("opset", [10, 13, 18])
def test_a_helper_built_elementwise_and_shape_model_matches_onnx_runtime(opset):
    x = RNG.uniform(-1, 1, (3, 4)).astype(np.float32)
    _against_ort(_elementwise_net(opset), {"x": x, "x2": RNG.uniform(-1, 1, (3, 4)).astype(np.float32)},
                 rtol=1e-5, atol=1e-6)


def test_softmax_before_opset_13_normalises_the_flattened_trailing_block():
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    for opset, op in [(11, "Softmax"), (11, "LogSoftmax"), (13, "Softmax")]:
        node = helper.make_node(op, ["x"], ["y"], axis=1)
        _against_ort(_model([node], [_vi("x", [2, 3, 4])], [_vi("y", None)], opset=opset), {"x": x})


def test_onnx_defaults_that_differ_from_graphcs_are_onnxs():
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    leaky = _model([helper.make_node("LeakyRelu", ["x"], ["y"])], [_vi("x", [3, 4])], [_vi("y", None)])
    got = _against_ort(leaky, {"x": x})[0]
    np.testing.assert_allclose(got[x < 0], 0.01 * x[x < 0], rtol=1e-6)  # ONNX's 0.01, not graphc's 0.1
    pool = _model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], pads=[1, 1, 1, 1])],
                  [_vi("x", [1, 1, 3, 4])], [_vi("y", None)])
    got = _against_ort(pool, {"x": x.reshape(1, 1, 3, 4)})[0]
    assert got[0, 0, 0, 0] == x[0, 0]  # the corner window has one real element: padding not counted


@pytest.mark.parametrize("op", ["Elu", "Softplus", "Gelu"])
def test_activations_from_the_registry(op):
    fn = {"Elu": "elu", "Softplus": "softplus", "Gelu": "gelu"}[op]
    if not hasattr(gc, fn):
        pytest.skip(f"gc.{fn} has not landed in this graphc yet")
    x = np.linspace(-4, 4, 24, dtype=np.float32).reshape(4, 6)
    variants = [{}] if op != "Gelu" else [{}, {"approximate": "tanh"}]
    for attrs in variants + ([{"alpha": 0.5}] if op == "Elu" else []):
        node = helper.make_node(op, ["x"], ["y"], **attrs)
        _against_ort(_model([node], [_vi("x", [4, 6])], [_vi("y", None)], opset=20), {"x": x})


# -- export to ONNX Runtime ------------------------------------------------------------------------------
def _demo_models():
    models = {"mlp": (nn.MLP([64, 32, 10], seed=0), (None, 64)),
              "cnn (flat input)": (nn.SmallCNN(1, 8, 10, seed=0, flat_input=True), (None, 64)),
              "cnn (images)": (nn.SmallCNN(1, 8, 10, channels=(4, 6), seed=1), (None, 1, 8, 8)),
              "logistic regression": (nn.LogisticRegression(5, seed=0), (None, 5)),
              "softmax regression": (nn.SoftmaxRegression(5, 3, seed=0), (None, 5)),
              "tanh mlp (moons)": (nn.MLP([2, 32, 32, 2], activation="tanh", seed=0), (None, 2))}
    rng = np.random.default_rng(3)
    for m, _ in models.values():
        for p in m.parameters():
            p.value = rng.standard_normal(p.shape).astype(p.dtype) * 0.5
    return models


@pytest.mark.parametrize("name", list(_demo_models()))
def test_saved_models_run_in_onnx_runtime_with_any_batch_size(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model, shape = _demo_models()[name]
    path = tmp_path / "model.onnx"
    proto = gc.onnx.save(model, path, input_shape=shape)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5, 17):
        X = RNG.random((n,) + shape[1:]).astype(np.float32)
        ours = gc.predict_logits(model, X)
        assert _rel(session.run(None, {"x": X})[0], ours) <= 1e-5
        # and back: load(save(m)) gives the same logits
        assert _rel(gc.predict_logits(_quiet_load(path), X), ours) <= 1e-6


def test_save_graph_writes_placeholders_as_inputs_and_parameters_as_initializers():
    ort = pytest.importorskip("onnxruntime")
    x = gc.placeholder("x", (None, 3), "float64")
    w = gc.parameter(RNG.standard_normal((3, 2)), name="w")
    y = gc.maximum(gc.softmax(x @ w, axis=1), 0.3) + gc.sum(x, axis=1, keepdims=True)
    f = io.BytesIO()
    proto = gc.onnx.save_graph([y, gc.mean(x, axis=0)], f, output_names=["y", "m"])
    assert [i.name for i in proto.graph.input] == ["x"] and [t.name for t in proto.graph.initializer][0] == "w"
    X = RNG.standard_normal((4, 3))
    got = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"x": X})
    for g, ref in zip(got, gc.compile([y, gc.mean(x, axis=0)])(x=X)):
        np.testing.assert_allclose(g, ref, rtol=1e-12)


def test_what_cannot_be_exported_is_refused_clearly():
    model = nn.MLP([4, 8, 3], dropout=0.5, seed=0)
    x = gc.placeholder("x", (None, 4))
    seed = gc.placeholder("seed", (), "int64")
    with pytest.raises(gc.GraphError, match=r"cannot export op 'dropout' to ONNX: dropout is a training op"):
        gc.onnx.save_graph(model(x, training=True, seed=seed), io.BytesIO())
    loss = gc.softmax_cross_entropy(model(x), gc.placeholder("y", (None,), "int64"))
    with pytest.raises(gc.GraphError, match=r"cannot export op 'sum_to'|cannot export op 'softmax_cross_entropy"):
        gc.onnx.save_graph(gc.grad(loss, [x]), io.BytesIO())
    with pytest.raises(gc.GraphError, match="exports opsets 13 to 21"):
        gc.onnx.save(model, io.BytesIO(), (None, 4), opset=9)
    gc.onnx.save(model, io.BytesIO(), (None, 4))  # the inference graph (dropout off) exports fine


# -- the imported Module behaves like any graphc Module ------------------------------------------------------
def test_an_imported_model_trains_saves_and_loads(tmp_path):
    proto = gc.onnx.save(nn.MLP([4, 8, 3], seed=0), io.BytesIO(), (None, 4))
    model = _quiet_load(proto)
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    X = RNG.standard_normal((60, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    before = model.state_dict()
    hist = gc.train(model, X, y, epochs=30, optimizer=gc.optim.Adam(0.05), progress=False)
    assert hist.rows[-1]["loss"] < hist.rows[0]["loss"] and hist.rows[-1]["train_acc"] > 0.8
    assert not np.array_equal(before["0.weight"], model.state_dict()["0.weight"])
    path = model.save(tmp_path / "imported.npz")
    again = nn.Module.load(path)
    assert isinstance(again, gc.onnx.OnnxModel)
    np.testing.assert_array_equal(gc.predict_logits(again, X), gc.predict_logits(model, X))
    assert "parameters: 67" in model.summary() and "Gemm x2" in model.summary()


def test_an_imported_models_input_gradient_passes_gradcheck():
    proto = gc.onnx.save(nn.SmallCNN(1, 8, 3, channels=(2, 3), seed=0), io.BytesIO(), (None, 1, 8, 8))
    model = _quiet_load(proto)
    x, y = gc.placeholder("x", (None, 1, 8, 8)), gc.placeholder("y", (None,), "int64")
    loss = gc.softmax_cross_entropy(model(x), y)
    report = gc.gradcheck(loss, {x: RNG.random((2, 1, 8, 8)), y: np.array([0, 2])}, mode="fast")
    assert report, report
    x_adv = gc.attacks.pgd(model, RNG.random((3, 1, 8, 8)).astype(np.float32), np.array([0, 1, 2]), eps=0.1,
                           steps=3)
    assert x_adv.shape == (3, 1, 8, 8)


# -- bad files ------------------------------------------------------------------------------------------------
def _small_model():
    return gc.onnx.save(nn.MLP([4, 5, 3], seed=0), io.BytesIO(), (None, 4)).SerializeToString()


def test_bad_files_are_graph_errors(tmp_path):
    blob = _small_model()
    with pytest.raises(gc.GraphError, match="not an ONNX model"):
        gc.onnx.load(blob[: len(blob) // 2])
    text = tmp_path / "notes.onnx"
    text.write_text("this is not an ONNX model\n" * 20)
    with pytest.raises(gc.GraphError, match="not an ONNX model"):
        gc.onnx.load(text)
    png = tmp_path / "image.onnx"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(gc.GraphError, match="not an ONNX model"):
        gc.onnx.load(png)
    with pytest.raises(gc.GraphError, match="takes a path, bytes or an onnx.ModelProto"):
        gc.onnx.load(42)
    with pytest.raises(FileNotFoundError):
        gc.onnx.load(tmp_path / "missing.onnx")


def test_unsupported_ops_attributes_and_dtypes_name_the_node():
    x = [_vi("x", ["N", 1, 5, 5])]
    w = {"w": np.ones((2, 1, 3, 3), np.float32)}
    cases = [
        (helper.make_node("Det", ["x"], ["y"], name="my_det"), {},
         r"'my_det' \(Det-11, opset 18.*op Det is not supported"),
        (helper.make_node("Conv", ["x", "w"], ["y"], name="dil", dilations=[2, 2]), w,
         r"'dil' \(Conv-11, opset 18.*dilations=\[2, 2\]"),
        (helper.make_node("MaxPool", ["x"], ["y"], name="ceil", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1), {},
         r"'ceil' \(MaxPool-12, opset 18.*ceil_mode=1"),
        (helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode="reflect"),
         {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}, r"'pad' \(Pad-18, opset 18.*mode='reflect'"),
    ]
    for node, inits, pattern in cases:
        model = _model([node], x, [_vi("y", None)], inits)
        with pytest.raises(gc.GraphError, match=pattern):
            _quiet_load(model, logits=False)
        with pytest.raises(gc.GraphError, match=pattern):
            gc.onnx.backend.prepare(model)
    half = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2, 3], TensorProto.FLOAT16)],
                  [_vi("y", None, TensorProto.FLOAT16)])
    with pytest.raises(gc.GraphError, match="element type float16"):
        gc.onnx.backend.prepare(half)


def test_a_model_with_two_inputs_is_refused_by_load_and_runs_in_the_backend():
    model = _model([helper.make_node("Add", ["a", "b"], ["y"])], [_vi("a", ["N", 3]), _vi("b", ["N", 3])],
                   [_vi("y", None)])
    with pytest.raises(gc.GraphError, match=r"2 inputs \['a', 'b'\]"):
        gc.onnx.load(model)
    a, b = RNG.random((2, 3)).astype(np.float32), RNG.random((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(gc.onnx.backend.run_model(model, [a, b])[0], a + b)


def test_run_node_and_supports_device():
    node = helper.make_node("Gemm", ["a", "b"], ["y"], transB=1, alpha=2.0)
    a, b = RNG.random((2, 3)).astype(np.float32), RNG.random((4, 3)).astype(np.float32)
    (y,) = gc.onnx.backend.run_node(node, [a, b])
    np.testing.assert_allclose(y, 2 * a @ b.T, rtol=1e-6)
    assert gc.onnx.backend.supports_device("CPU") and not gc.onnx.backend.supports_device("CUDA")
