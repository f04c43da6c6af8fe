"""`graphc info --model x.onnx` and `graphc attack --model x.onnx` on exported files."""
import pytest

pytest.importorskip("onnx")

import graphc as gc  # noqa: E402
import graphc.onnx  # noqa: E402,F401
from graphc import nn  # noqa: E402
from graphc.tools.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    split = gc.data.load("digits", seed=0)
    mlp = nn.MLP([64, 32, 10], seed=0)
    gc.train(mlp, split.X_train, split.y_train, epochs=3, progress=False)
    cnn = nn.SmallCNN(1, 8, 10, channels=(4, 8), seed=0)
    images = split.X_train.reshape(-1, 1, 8, 8)
    gc.train(cnn, images, split.y_train, epochs=2, progress=False)
    paths = {"mlp": folder / "mlp.onnx", "cnn": folder / "cnn.onnx"}
    gc.onnx.save(mlp, paths["mlp"], (None, 64))
    gc.onnx.save(cnn, paths["cnn"], (None, 1, 8, 8))
    return paths, {"mlp": mlp, "cnn": cnn}, split


def test_info_prints_layers_parameters_and_what_was_cut(digits_files, capsys):
    paths, models, _ = digits_files
    assert main(["info", "--model", str(paths["cnn"])]) == 0
    out = capsys.readouterr().out
    assert f"parameters: {models['cnn'].num_parameters():,} in 6 tensors" in out
    assert "Conv x2" in out and "MaxPool x2" in out and "(None, 1, 8, 8)" in out


def test_info_says_when_a_softmax_is_cut(tmp_path, capsys):
    model = nn.Sequential(nn.Linear(4, 3, seed=0))
    x = gc.placeholder("x", (None, 4))
    gc.onnx.save_graph(gc.softmax(model(x), axis=1), tmp_path / "probs.onnx", output_names=["probs"])
    assert main(["info", "--model", str(tmp_path / "probs.onnx")]) == 0
    assert "note: cut the trailing Softmax" in capsys.readouterr().out


def test_info_on_a_bad_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert main(["info", "--model", str(bad)]) == 2
    assert "not an ONNX model" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_attack_an_onnx_model(digits_files, name, capsys):
    paths, models, split = digits_files
    code = main(["attack", "--model", str(paths[name]), "--data", "digits", "--attack", "fgsm,pgd", "--eps", "0.1",
                 "--steps", "3", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    X = split.X_test.reshape((len(split.X_test),) + ((64,) if name == "mlp" else (1, 8, 8)))
    clean = gc.accuracy(models[name], X, split.y_test)
    assert f"fgsm: clean accuracy {clean:.2%}" in out and f"pgd: clean accuracy {clean:.2%}" in out
    report = gc.attacks.evaluate(models[name], X, split.y_test, "fgsm", eps=[0.1])
    assert f"{report.rows[0]['robust_acc']:.2%}" in out.split("pgd:")[0]


def test_attack_refuses_data_that_does_not_fit_the_model(digits_files):
    paths, _, _ = digits_files
    with pytest.raises(SystemExit, match=r"takes inputs of shape \(64,\), but --data iris has \(4,\)"):
        main(["attack", "--model", str(paths["mlp"]), "--data", "iris", "--eps", "0.1"])
