"""Re-estimating BatchNorm statistics (``stabletrain.evaluation.bn_adapt``): against
``torch.optim.swa_utils.update_bn``, a direct computation from the conv outputs, and the invariance that a
brightness/contrast shift must have."""

import copy
import logging

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, TensorDataset

from stabletrain.checks import StableTrainError
from stabletrain.data import ImageDataset
from stabletrain.evaluation.bn_adapt import BatchNormReport, batchnorm_layers, reestimate_batchnorm
from stabletrain.models import SmallCNN


def bn_net(seed: int = 0, channels: int = 1, eps: float = 1e-5) -> nn.Sequential:
    """conv → BN2d → ReLU → conv → BN2d → pool → linear → BN1d → linear; no padding, no bias before a BN."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, bias=False), nn.BatchNorm2d(4, eps=eps), nn.ReLU(),
        nn.Conv2d(4, 6, 3, bias=False), nn.BatchNorm2d(6, eps=eps), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5, bias=False), nn.BatchNorm1d(5, eps=eps),
        nn.Linear(5, 3))


def images(n: int, seed: int = 1, channels: int = 1, side: int = 8) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    return ImageDataset(torch.rand(n, channels, side, side, generator=g), torch.randint(0, 3, (n,), generator=g))


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def trained_stats(model: nn.Module, seed: int = 5) -> nn.Module:
    """Running statistics as left by training: a few momentum updates on other data."""
    model.train()
    with torch.no_grad():
        for step in range(3):
            model(images(16, seed=seed + step).x * 0.5)
    return model.eval()


@pytest.mark.parametrize("examples, batch_size", [(None, 16), (37, 16), (48, 16), (50, 64), (1000, 12)])
def test_equals_update_bn_on_the_same_batches(examples, batch_size):
    data = images(50)
    model = trained_stats(bn_net())
    reference = copy.deepcopy(model)
    n = len(data) if examples is None else min(examples, len(data))
    update_bn([data.x[s:min(s + batch_size, n)] for s in range(0, n, batch_size)], reference)

    adapted, report = reestimate_batchnorm(model, data, examples=examples, batch_size=batch_size,
                                           return_report=True)
    assert_same_state(adapted, reference)
    assert not torch.equal(adapted[1].running_mean, model[1].running_mean)  # the statistics did change
    assert report == BatchNormReport(layers=3, images=n, batches=-(-n // batch_size))
    assert report.as_dict() == {"images": n, "layers": 3, "batches": report.batches}
    assert adapted.training is reference.training is False


def test_the_whole_model_is_in_train_mode_as_in_update_bn():
    """Dropout before a BN layer is active during the pass, as in update_bn (same random stream)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Dropout(0.5), nn.BatchNorm2d(4), nn.Flatten(),
                          nn.Linear(144, 3)).eval()
    data = images(24)
    reference = copy.deepcopy(model)
    torch.manual_seed(1)
    update_bn([data.x[s:s + 8] for s in range(0, 24, 8)], reference)
    torch.manual_seed(1)
    assert_same_state(reestimate_batchnorm(model, data, batch_size=8), reference)


def test_every_kind_of_source_gives_the_same_statistics():
    data = images(40)
    model = trained_stats(bn_net())
    expected = reestimate_batchnorm(model, data, batch_size=8)
    as_uint8 = (data.x * 255).round().to(torch.uint8)
    expected_uint8 = reestimate_batchnorm(model, ImageDataset(as_uint8, data.y), batch_size=8)
    sources = {
        "dataset": (TensorDataset(data.x, data.y), expected),
        "loader": (DataLoader(TensorDataset(data.x, data.y), batch_size=8), expected),
        "uint8 dataset": (TensorDataset(as_uint8, data.y), expected_uint8),
    }
    for name, (source, reference) in sources.items():
        assert_same_state(reestimate_batchnorm(model, source, batch_size=8), reference)
    assert not torch.equal(expected[1].running_mean, expected_uint8[1].running_mean)  # uint8 really is rounded


def test_the_first_layer_holds_the_mean_of_its_conv_outputs_over_the_data():
    data = images(48, seed=3)
    model = trained_stats(bn_net(seed=2))
    adapted = reestimate_batchnorm(model, data, batch_size=16)
    with torch.no_grad():
        conv = model[0](data.x)  # B×4×6×6
    mean = conv.mean(dim=(0, 2, 3))
    per_batch_var = torch.stack([c.transpose(0, 1).flatten(1).var(dim=1, unbiased=True) for c in conv.split(16)])
    bn = adapted[1]
    assert torch.allclose(bn.running_mean, mean, atol=1e-6, rtol=1e-5)
    assert torch.allclose(bn.running_var, per_batch_var.mean(0), atol=1e-6, rtol=1e-5)
    assert int(bn.num_batches_tracked) == 3
    assert not torch.allclose(model[1].running_mean, mean, atol=1e-3)  # the trained statistics were elsewhere


def test_the_input_model_is_untouched_unless_inplace():
    data = images(32)
    model = trained_stats(bn_net())
    before = copy.deepcopy(model.state_dict())
    adapted = reestimate_batchnorm(model, data, batch_size=16)
    assert adapted is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(model.parameters(), adapted.parameters()))

    same = reestimate_batchnorm(model, data, batch_size=16, inplace=True)
    assert same is model
    assert_same_state(model, adapted)
    assert not torch.equal(before["1.running_mean"], model.state_dict()["1.running_mean"])


@pytest.mark.parametrize("top_level_training", [False, True])
def test_momentum_and_the_mode_of_every_module_are_restored(top_level_training):
    model = trained_stats(bn_net())
    model.train(top_level_training)
    model[4].train(not top_level_training)  # one layer in the other mode: update_bn would lose this
    model[1].momentum, model[4].momentum, model[9].momentum = 0.3, None, 0.01
    modes = [m.training for m in model.modules()]
    for inplace in (False, True):
        adapted = reestimate_batchnorm(model, images(20), batch_size=8, inplace=inplace)
        assert [m.training for m in adapted.modules()] == modes
        assert (adapted[1].momentum, adapted[4].momentum, adapted[9].momentum) == (0.3, None, 0.01)
    # momentum None during the pass: the result is the cumulative average whatever the layer's momentum
    reference = bn_net()
    reference.load_state_dict(model.state_dict())
    update_bn([images(20).x[s:s + 8] for s in range(0, 20, 8)], reference)
    assert torch.allclose(adapted[1].running_mean, reference[1].running_mean)


def test_a_model_without_batchnorm_is_returned_unchanged_with_a_warning(caplog):
    models = {
        "group norm": SmallCNN(in_channels=1, num_classes=3, width=4, norm="group"),
        "untracked BN": nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False),
                                      nn.Flatten(), nn.LazyLinear(3)),
    }
    for label, model in models.items():
        model.eval()
        model(images(2).x)  # materialize lazy layers
        before = copy.deepcopy(model.state_dict())
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="stabletrain.evaluation"):
            adapted, report = reestimate_batchnorm(model, images(8), return_report=True, name=f"model {label}")
        assert report == BatchNormReport(layers=0, images=0, batches=0)
        assert batchnorm_layers(model) == []
        assert adapted is not model and not adapted.training
        assert all(torch.equal(before[k], v) for k, v in adapted.state_dict().items())
        assert [r.getMessage() for r in caplog.records if r.name == "stabletrain.evaluation"] == [
            f"model {label} has no BatchNorm layers with running statistics; nothing to re-estimate, "
            f"the model is unchanged"]
    model = models["group norm"]
    assert reestimate_batchnorm(model, images(8), inplace=True) is model


@settings(max_examples=15, deadline=None)
@given(scale=st.floats(0.5, 1.5), position=st.floats(0.0, 1.0))
def test_statistics_follow_a_brightness_and_contrast_shift(scale, position):
    """Data A trains the statistics; B = scale·A + offset. The first conv has no padding and no bias, so
    re-estimating on B must move its BN statistics to B's (mean scale·μ + offset·Σw, variance scale²·σ²) and
    make the model's outputs on B what they are on A after re-estimating on A."""
    torch.manual_seed(0)
    model = bn_net(seed=4, eps=1e-12)
    source = ImageDataset(0.1 + 0.5 * images(32, seed=7).x, torch.zeros(32, dtype=torch.long))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(5):  # train on A: the running statistics are a momentum average of A's batches
        optimizer.zero_grad()
        model(source.x).logsumexp(1).mean().backward()
        optimizer.step()
    model.eval()
    offset = -0.1 * scale + position * (1 - 0.5 * scale)
    shifted = ImageDataset((scale * source.x + offset).clamp(0, 1), source.y)
    with torch.no_grad():
        target_mean = model[0](shifted.x).mean(dim=(0, 2, 3))
    on_source = reestimate_batchnorm(model, source, batch_size=16)
    on_shifted = reestimate_batchnorm(model, shifted, batch_size=16)
    before = (model[1].running_mean - target_mean).abs().max()
    after = (on_shifted[1].running_mean - target_mean).abs().max()
    assert after <= 1e-5 + 1e-5 * target_mean.abs().max()
    assert after < before or before < 1e-4
    assert torch.allclose(on_shifted[1].running_var, scale ** 2 * on_source[1].running_var, rtol=1e-3, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(on_shifted(shifted.x), on_source(source.x), atol=2e-3, rtol=1e-3)
        # later layers see the same activations, so their statistics do not move
        for index in (4, 9):
            assert torch.allclose(on_shifted[index].running_mean, on_source[index].running_mean, atol=1e-3)


def test_a_failed_pass_leaves_the_model_as_it_was():
    model = trained_stats(bn_net())
    before = copy.deepcopy(model.state_dict())
    bad = images(32)
    bad.x[20] = 2.0  # out of [0, 1], in the second batch
    with pytest.raises(StableTrainError, match=r"must be in \[0, 1\]"):
        reestimate_batchnorm(model, bad, batch_size=16, inplace=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model[1].momentum == 0.1 and not any(m.training for m in model.modules())
    with pytest.raises(StableTrainError, match="no batch holds a single image"):  # BN1d on a batch of 1
        reestimate_batchnorm(model, images(17), batch_size=16, inplace=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("kwargs, message", [
    ({"examples": 0}, "examples must be an integer >= 1, got 0"),
    ({"examples": -3}, "examples must be an integer >= 1, got -3"),
    ({"examples": 2.5}, "examples must be an integer >= 1, got 2.5"),
    ({"examples": True}, "examples must be an integer >= 1, got True"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"workers": -1}, "workers must be an integer >= 0, got -1"),
    ({"data": None}, "reestimate_batchnorm needs data"),
    ({"data": [1, 2, 3]}, "cannot evaluate on list"),
    ({"data": ImageDataset(torch.rand(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))}, "holds no images"),
    ({"data": DataLoader(TensorDataset(torch.rand(8, 1, 8, 8), torch.zeros(8)), batch_size=4, shuffle=True)},
     "does not shuffle"),
    ({"data": ImageDataset(torch.rand(4, 1, 8, 8) * 255, torch.zeros(4, dtype=torch.long))}, r"in \[0, 1\]"),
    ({"model": "resnet"}, "needs a torch.nn.Module, got str"),
])
def test_bad_inputs_are_one_line_errors(kwargs, message):
    arguments = {"model": bn_net(), "data": images(8), **kwargs}
    model, data = arguments.pop("model"), arguments.pop("data")
    with pytest.raises(StableTrainError, match=message) as info:
        reestimate_batchnorm(model, data, **arguments)
    assert "\n" not in str(info.value)
