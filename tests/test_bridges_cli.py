"""timm and torchvision through the command line: train on a generated image folder, evaluate in a fresh process.

These run for real in CI (timm and torchvision are test dependencies), never skipped.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image

from stabletrain.cli import main


def make_folder(root, classes=3, per_class=10, size=32, seed=0):
    """Class folders of coloured PNGs: each class its own hue and stripe direction, with noise."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            image = np.zeros((size, size, 3))
            image[..., c % 3] = 0.7
            stripes = (np.arange(size) // 4 % 2).astype(float)
            image += 0.3 * (stripes[None, :, None] if c % 2 else stripes[:, None, None])
            image += rng.normal(0, 0.08, image.shape)
            Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("bridges") / "images")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fresh_process(*argv):
    return subprocess.run([sys.executable, "-m", "stabletrain", *map(str, argv)], capture_output=True, text=True,
                          timeout=300)


COMMON = ["--epochs", "1", "--batch-size", "10", "--image-size", "32", "--quiet", "--method", "stability"]


@pytest.mark.parametrize("spec", ["timm:test_resnet", "torchvision:mobilenet_v3_small"])
def test_train_then_evaluate_in_a_fresh_process(tmp_path, folder, capsys, spec):
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", "--model", spec, "--data", folder, "--out", out, *COMMON)
    assert code == 0, err
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["model"]["name"] == spec
    done = fresh_process("evaluate", out, "--quiet", "--distortions", "jpeg-50,crop-4")
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "evaluation" / "results.json").read_text())
    rows = results["models"]["stability"]
    assert set(rows["distortions"]) == {"jpeg-50", "crop-4"}
    # the fresh process rebuilt the same network: its clean accuracy is the one training reported
    assert rows["clean_accuracy"] == pytest.approx(checkpoint["history"][-1]["test_accuracy"])


def test_fine_tuning_replaces_the_head_of_weights_saved_by_timm(tmp_path, folder, capsys):
    torch.manual_seed(0)
    imagenet_like = timm.create_model("test_resnet", num_classes=1000)
    weights = tmp_path / "pretrained.pth"
    torch.save(imagenet_like.state_dict(), weights)
    out = tmp_path / "finetune"
    code, _, err = run(capsys, "train", "--model", "timm:test_resnet", "--weights", weights, "--data", folder,
                       "--out", out, "--backbone-lr-scale", "0.1", "--warmup-epochs", "0.5", "--optimizer", "sgd",
                       "--lr", "0.01", *COMMON[:-2], "--method", "plain")
    assert code == 0, err
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["weights"]["replaced_head"] == ("replaced the classifier head fc: the file has 1000 "
                                                      "classes, the model 3")
    assert checkpoint["weights"]["sha256"] and checkpoint["config"]["weights"] == str(weights)


def test_evaluate_a_torchvision_model_with_its_weights_on_a_folder(tmp_path, folder, capsys):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3)
    weights = tmp_path / "r18.pth"
    torch.save({"model": net.state_dict(), "epoch": 10}, weights)
    out = tmp_path / "eval"
    done = fresh_process("evaluate", "--model", "torchvision:resnet18", "--weights", weights, "--data", folder,
                         "--out", out, "--quiet", "--distortions", "jpeg-50", "--suite", "paper,smoothing",
                         "--smoothing-n", "20", "--smoothing-examples", "6")
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    model = results["models"]["torchvision:resnet18"]
    assert model["distortions"]["jpeg-50"]["n"] == 30  # with --model, every image of the folder
    # the same network, built by hand, gives the same clean accuracy
    from stabletrain.data import load_image_folder

    data = load_image_folder(folder, 32)
    x = torch.cat([data.train.x, data.test.x])
    y = torch.cat([data.train.y, data.test.y])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = float((net.eval()((x - mean) / std).argmax(1) == y).double().mean())
    assert model["clean_accuracy"] == pytest.approx(expected)
    assert len(model["smoothing"]) == 5


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "timm:not_a_model"], "timm has no model 'not_a_model'"),
    (["train", "--model", "nothing_at_all"], "unknown model 'nothing_at_all'"),
    (["evaluate", "--model", "torchvision:resnet18"], "--model needs --data"),
    (["evaluate", "--model", "torchvision:resnet18", "--data", "digits"], "--model needs --out"),
])
def test_bad_specs_are_one_line(tmp_path, capsys, argv, message):
    code, _, err = run(capsys, *argv, "--out" if argv[0] == "train" else "--quiet",
                       *([tmp_path / "o"] if argv[0] == "train" else []))
    assert code == 2
    assert err.startswith("stabletrain: error: ") and message in err and "Traceback" not in err


def test_a_factory_that_raises_and_mismatched_weights_are_one_line(tmp_path, folder, capsys):
    factory = tmp_path / "net.py"
    factory.write_text("def build(num_classes):\n    raise RuntimeError('out of ideas')\n")
    code, _, err = run(capsys, "train", "--model", f"{factory}:build", "--data", folder, "--out", tmp_path / "a",
                       *COMMON)
    assert code == 2 and "raised RuntimeError: out of ideas" in err
    weights = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(num_classes=3).state_dict(), weights)
    code, _, err = run(capsys, "train", "--model", "torchvision:resnet18", "--weights", weights, "--data", folder,
                       "--out", tmp_path / "b", *COMMON)
    assert code == 2 and "do not fit the model" in err and err.count("\n") == 1
    head = tmp_path / "head1000.pth"
    torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), head)
    code, _, err = run(capsys, "evaluate", "--model", "torchvision:resnet18", "--weights", head, "--data", folder,
                       "--out", tmp_path / "c", "--quiet")
    assert code == 2 and "classifier head fc has another class count" in err


def test_an_unreadable_image_in_a_folder_is_one_line(tmp_path, capsys):
    root = make_folder(tmp_path / "broken", classes=2, per_class=4)
    (root / "class_1" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    code, _, err = run(capsys, "train", "--model", "timm:test_resnet", "--data", root, "--out", tmp_path / "o",
                       *COMMON)
    assert code == 2 and "not a readable image file" in err and "truncated.jpg" in err


def test_streaming_bad_input_is_one_line(tmp_path, capsys):
    import tarfile

    root = make_folder(tmp_path / "images", classes=2, per_class=6)
    (root / "class_0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    code, _, err = run(capsys, "train", "--model", "timm:test_resnet", "--data", root, "--stream", "--workers", "2",
                       "--out", tmp_path / "o", *COMMON)
    assert code == 2 and "not a readable image file" in err and "broken.jpg" in err
    assert "Traceback" not in err and err.count("\n") == 1
    empty = tmp_path / "empty-0000.tar"
    with tarfile.open(empty, "w"):
        pass
    code, _, err = run(capsys, "evaluate", "--model", "timm:test_resnet", "--data", f"shards:{empty}|{empty}",
                       "--out", tmp_path / "e", "--quiet")
    assert code == 2 and "empty" in err.lower() and "Traceback" not in err
    code, _, err = run(capsys, "evaluate", "--model", "timm:test_resnet", "--data", str(tmp_path / "none-{0..3}.tar"),
                       "--out", tmp_path / "e2", "--quiet")
    assert code == 2 and err.startswith("stabletrain: error: ")


def test_similarity_embeds_a_timm_model_by_its_pooled_features(tmp_path, capsys):
    """The similarity task must train the pooled penultimate features of a spec model, never its logits."""
    out = tmp_path / "classifier"
    code, _, err = run(capsys, "train", "--model", "timm:test_resnet", "--data", "photos", "--epochs", "1",
                       "--method", "plain", "--batch-size", "64", "--quiet", "--out", out)
    assert code == 0, err
    code, _, err = run(capsys, "train", "--task", "similarity", "--model", "timm:test_resnet", "--data", "photos",
                       "--init", out / "checkpoint.pt", "--epochs", "1", "--batch-size", "64", "--quiet",
                       "--out", tmp_path / "embedder")
    assert code == 0, err
    checkpoint = torch.load(tmp_path / "embedder" / "checkpoint.pt", weights_only=True)
    assert checkpoint["model"]["name"] == "embed:timm:test_resnet"
    from stabletrain.training import load_model

    embedder, _ = load_model(tmp_path / "embedder" / "checkpoint.pt")
    features = embedder(torch.rand(2, 3, 32, 32))
    assert features.shape == (2, embedder.backbone.model.num_features)  # not the 19 logits
    torch.testing.assert_close(features.norm(dim=1), torch.ones(2))
    done = fresh_process("evaluate", tmp_path / "embedder", "--quiet")
    assert done.returncode == 0, done.stderr
