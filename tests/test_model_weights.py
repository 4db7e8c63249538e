"""Pretrained weights saved by other tools: containers, prefixes, head replacement, and clear errors."""

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from stabletrain.checks import StableTrainError
from stabletrain.models import create_model, load_pretrained, read_weights


def outputs_equal(a, b, x):
    a.eval(), b.eval()
    torch.testing.assert_close(a(x), b(x))


@pytest.fixture(scope="module")
def timm_net():
    torch.manual_seed(1)
    return timm.create_model("test_resnet", num_classes=3).eval()


def test_plain_timm_state_dict_loads_into_the_wrapped_model(tmp_path, timm_net):
    file = tmp_path / "w.pth"
    torch.save(timm_net.state_dict(), file)
    model = create_model("timm:test_resnet", num_classes=3)
    report = load_pretrained(model, file)
    assert report.missing == [] and report.unexpected == [] and report.replaced_head is None
    x = torch.rand(2, 3, 32, 32)
    # the wrapper normalizes with the pretrained config (0.5, 0.5), then runs exactly the loaded network
    torch.testing.assert_close(model.eval()(x), timm_net((x - 0.5) / 0.5))


@pytest.mark.parametrize("container", ["state_dict", "model", "state_dict_ema"])
def test_training_checkpoints_of_other_tools_with_ddp_prefixes(tmp_path, timm_net, container):
    file = tmp_path / "ckpt.pth.tar"
    torch.save({container: {f"module.{k}": v for k, v in timm_net.state_dict().items()}, "epoch": 90,
                "arch": "test_resnet"}, file)
    model = create_model("timm:test_resnet", num_classes=3)
    assert load_pretrained(model, file).loaded == len(timm_net.state_dict())
    for key, value in timm_net.state_dict().items():
        torch.testing.assert_close(model.model.state_dict()[key], value)


def test_safetensors_weights(tmp_path, timm_net):
    file = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in timm_net.state_dict().items()}, str(file))
    model = create_model("timm:test_resnet", num_classes=3)
    load_pretrained(model, file)
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), timm_net((x - 0.5) / 0.5))


def test_a_head_of_another_class_count_is_replaced_and_reported(tmp_path):
    torch.manual_seed(0)
    imagenet = torchvision.models.resnet18(num_classes=1000)
    file = tmp_path / "r18.pth"
    torch.save(imagenet.state_dict(), file)
    torch.manual_seed(5)
    model = create_model("torchvision:resnet18", num_classes=10)
    head_before = model.model.fc.weight.detach().clone()
    report = load_pretrained(model, file)
    assert report.replaced_head == "replaced the classifier head fc: the file has 1000 classes, the model 10"
    torch.testing.assert_close(model.model.layer4[1].conv2.weight, imagenet.layer4[1].conv2.weight)
    torch.testing.assert_close(model.model.fc.weight, head_before)  # the new head keeps its own initialization
    with pytest.raises(StableTrainError, match="classifier head fc has another class count"):
        load_pretrained(create_model("torchvision:resnet18", num_classes=10), file, replace_head=False)


def test_timm_resnet_loads_torchvision_weights_with_the_same_key_names(tmp_path):
    """timm's ResNet-18 and torchvision's share parameter names: weights move between them, outputs agree."""
    torch.manual_seed(2)
    reference = torchvision.models.resnet18(num_classes=7).eval()
    file = tmp_path / "tv.pth"
    torch.save(reference.state_dict(), file)
    model = create_model("timm:resnet18", num_classes=7, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    load_pretrained(model, file)
    x = torch.rand(2, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(model.eval()(x), reference((x - mean) / std), atol=1e-5, rtol=1e-4)


def test_a_stabletrain_checkpoint_restores_the_normalization_too(tmp_path):
    from stabletrain.training import TrainConfig, train

    result = train(TrainConfig(data="digits", image_size=16, width=4, epochs=1, method="plain", batch_size=256),
                   tmp_path / "run", progress=False)
    model = create_model("small_cnn", num_classes=10, in_channels=1, mean=[0.0], std=[1.0], width=4)
    load_pretrained(model, result.checkpoint)
    torch.testing.assert_close(model.normalize.mean, result.model.normalize.mean.cpu())
    outputs_equal(model, result.model.cpu(), torch.rand(3, 1, 16, 16))


@pytest.mark.parametrize("make, message", [
    (lambda: torchvision.models.resnet18().state_dict(), r"do not fit the model: layer1.0.conv1.weight is \(64, 64, 3, 3\)"),
    (lambda: {"encoder.w": torch.zeros(3)}, "none of its 1 keys"),
    (lambda: {k: v for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith("layer4")},
     r"parameter\(s\) layer4.0.bn1.bias.* are not in the file \(260 of 320 keys matched\)"),
    (lambda: [1, 2, 3], "holds no state dict of tensors"),
])
def test_weights_whose_keys_do_not_match_are_one_clear_error(tmp_path, make, message):
    file = tmp_path / "w.pth"
    torch.save(make(), file)
    with pytest.raises(StableTrainError, match=message):
        load_pretrained(create_model("torchvision:resnet50", num_classes=1000), file)


def test_unexpected_keys_are_reported_not_fatal(tmp_path, timm_net):
    file = tmp_path / "w.pth"
    torch.save({**timm_net.state_dict(), "aux_head.weight": torch.zeros(2)}, file)
    report = load_pretrained(create_model("timm:test_resnet", num_classes=3), file)
    assert report.unexpected == ["aux_head.weight"]
    assert any("ignored: aux_head.weight" in line for line in report.lines())


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(StableTrainError, match="weights file not found"):
        read_weights(tmp_path / "absent.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(StableTrainError, match="bad.pth"):
        read_weights(bad)
    bad_safetensors = tmp_path / "bad.safetensors"
    bad_safetensors.write_bytes(b"\x00" * 20)
    with pytest.raises(StableTrainError, match="cannot read .*bad.safetensors as safetensors"):
        read_weights(bad_safetensors)
