"""Models named by spec: timm, torchvision, a user's file or module; normalization from the pretrained config."""

import sys

import pytest
import timm
import torch
import torchvision
from torch import nn

from stabletrain.checks import StableTrainError
from stabletrain.models import (Embedder, NormalizedClassifier, build_model, classifier_layer, create_model,
                                model_factory, parse_model_spec)
from stabletrain.models.specs import check_spec_source, spec_source


@pytest.mark.parametrize("spec, kind, target, attribute", [
    ("small_cnn", "registered", "small_cnn", None),
    ("timm:resnet18", "timm", "resnet18", None),
    ("torchvision:mobilenet_v3_small", "torchvision", "mobilenet_v3_small", None),
    ("models/net.py:build", "file", "models/net.py", "build"),
    ("my_pkg.nets:wide", "module", "my_pkg.nets", "wide"),
])
def test_specs_parse_into_kind_target_and_factory(spec, kind, target, attribute):
    parsed = parse_model_spec(spec)
    assert (parsed.kind, parsed.target, parsed.attribute) == (kind, target, attribute)


@pytest.mark.parametrize("spec, message", [
    ("timm:", "names no timm model"),
    ("timm:resnet_nonexistent", "timm has no model 'resnet_nonexistent'"),
    ("torchvision:resnet_nonexistent", "torchvision has no model"),
    ("no_such_model", "unknown model 'no_such_model'.*timm:NAME"),
    ("/nonexistent/net.py:build", "model file not found"),
    ("stabletrain_no_such_module_x:build", "cannot import module"),
    ("stabletrain.models:no_such_factory", "has no 'no_such_factory'"),
    ("net.py:not-a-name", "must end in ':factory'"),
])
def test_a_spec_that_names_nothing_is_one_clear_error(spec, message):
    with pytest.raises(StableTrainError, match=message):
        model_factory(spec)


def test_timm_model_takes_unit_images_and_normalizes_with_its_pretrained_config():
    """test_resnet's pretrained config has mean = std = 0.5, unlike ImageNet's; the wrapper must use it."""
    model = create_model("timm:test_resnet", num_classes=3).eval()
    assert isinstance(model, NormalizedClassifier)
    assert model.normalize.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    reference = timm.create_model("test_resnet", num_classes=3).eval()
    reference.load_state_dict(model.model.state_dict())
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model(x), reference((x - 0.5) / 0.5))
    # given statistics replace the pretrained ones
    other = create_model("timm:test_resnet", num_classes=3, mean=[0.1, 0.2, 0.3], std=[0.2, 0.2, 0.2])
    assert other.normalize.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])


def test_torchvision_model_uses_imagenet_statistics_and_repeats_grayscale():
    model = create_model("torchvision:resnet18", num_classes=4, in_channels=1).eval()
    assert model.normalize.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    reference = torchvision.models.resnet18(num_classes=4).eval()
    reference.load_state_dict(model.model.state_dict())
    gray = torch.rand(2, 1, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(model(gray), reference((gray.expand(-1, 3, -1, -1) - mean) / std))
    with pytest.raises(StableTrainError, match=r"B×1×H×W"):
        model(torch.rand(2, 3, 32, 32))


def test_keyword_arguments_pass_through_to_the_library():
    model = build_model("timm:test_resnet", num_classes=3, in_channels=3, drop_rate=0.25)
    assert model.model.drop_rate == 0.25
    with pytest.raises(StableTrainError, match="does not take these options"):
        build_model("timm:test_resnet", num_classes=3, in_channels=3, not_an_option=1)


def test_features_are_pooled_penultimate_activations():
    """timm: forward_head(pre_logits=True); torchvision: the input of fc. The head applied to them gives the logits."""
    for spec in ("timm:test_resnet", "torchvision:resnet18"):
        model = create_model(spec, num_classes=5).eval()
        x = torch.rand(2, 3, 32, 32)
        features = model.features(x)
        assert features.shape == (2, model.feature_dim)
        name, head = classifier_layer(model.model)
        torch.testing.assert_close(head(features), model(x))


def test_embedder_pools_a_bare_timm_backbone_and_projects_with_num_features():
    backbone = timm.create_model("test_resnet", num_classes=0)
    embedder = Embedder(backbone, embedding_dim=7)
    out = embedder(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 7)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    wrapped = Embedder(create_model("torchvision:resnet18", num_classes=3), l2_normalize=False).eval()
    assert wrapped.embedding_dim == 512 and wrapped(torch.rand(2, 3, 32, 32)).shape == (2, 512)


def write_factory(path, body):
    path.write_text("import torch\nfrom torch import nn\n\n" + body)
    return path


def test_file_factory_gets_the_options_it_takes_and_is_wrapped(tmp_path):
    file = write_factory(tmp_path / "net.py", (
        "def build(num_classes, hidden=4):\n"
        "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(hidden), nn.ReLU(), nn.Linear(hidden, num_classes))\n"))
    model = build_model(f"{file}:build", num_classes=3, in_channels=1, mean=[0.5], std=[0.25], hidden=6)
    assert isinstance(model, NormalizedClassifier) and model(torch.rand(2, 1, 8, 8)).shape == (2, 3)
    assert model.model[1].out_features == 6
    with pytest.raises(StableTrainError, match="unknown option.*'depth'.*hidden"):
        build_model(f"{file}:build", num_classes=3, in_channels=1, mean=[0.5], std=[0.25], depth=2)
    with pytest.raises(StableTrainError, match="needs the input mean and std"):
        build_model(f"{file}:build", num_classes=3, in_channels=1)


def test_a_factory_that_raises_or_returns_no_module_is_one_line(tmp_path):
    file = write_factory(tmp_path / "bad.py", (
        "def boom(num_classes):\n    raise ValueError('width must be even')\n\n"
        "def nothing(num_classes):\n    return 3\n"))
    with pytest.raises(StableTrainError, match="raised ValueError: width must be even"):
        build_model(f"{file}:boom", num_classes=3, in_channels=1, mean=[0.5], std=[0.25])
    with pytest.raises(StableTrainError, match="returned int, not a torch nn.Module"):
        build_model(f"{file}:nothing", num_classes=3, in_channels=1, mean=[0.5], std=[0.25])
    broken = tmp_path / "syntax.py"
    broken.write_text("def f(:\n")
    with pytest.raises(StableTrainError, match="importing .*syntax.py failed: SyntaxError"):
        model_factory(f"{broken}:f")


def test_module_factory_and_self_normalizing_factories(tmp_path, monkeypatch):
    package = tmp_path / "user_nets_for_test"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "def wide(num_classes, in_channels):\n"
        "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))\n\n"
        "def ready(num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))\n"
        "ready.stabletrain_normalized = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("user_nets_for_test:wide", num_classes=2, in_channels=3, mean=[0.5] * 3, std=[0.2] * 3)
    assert isinstance(model, NormalizedClassifier)
    ready = build_model("user_nets_for_test:ready", num_classes=2, in_channels=3)
    assert not isinstance(ready, NormalizedClassifier)
    sys.modules.pop("user_nets_for_test", None)


def test_a_changed_model_file_is_reported(tmp_path):
    file = write_factory(tmp_path / "net.py", "def build(num_classes):\n    return nn.Linear(4, num_classes)\n")
    source = spec_source(f"{file}:build")
    assert source["file"] == str(file.resolve()) and len(source["sha256"]) == 64
    assert check_spec_source(f"{file}:build", source, "checkpoint c.pt") == []
    file.write_text(file.read_text() + "# edited\n")
    [line] = check_spec_source(f"{file}:build", source, "checkpoint c.pt")
    assert "changed since checkpoint c.pt was written" in line
    file.unlink()
    with pytest.raises(StableTrainError, match="no longer exists"):
        check_spec_source(f"{file}:build", source, "checkpoint c.pt")


def test_classifier_layer_finds_the_head_of_common_architectures():
    assert classifier_layer(torchvision.models.resnet18())[0] == "fc"
    assert classifier_layer(torchvision.models.mobilenet_v3_small())[0] == "classifier.3"
    assert classifier_layer(timm.create_model("test_vit", num_classes=3))[0] == "head"
    assert classifier_layer(timm.create_model("test_efficientnet", num_classes=3))[0] == "classifier"
    assert classifier_layer(nn.Sequential(nn.Conv2d(1, 1, 1))) is None
