"""Per-coordinate radii and box limits in APGD, Square and AutoAttack: the same numbers as one radius where the
radii are all equal, every coordinate in its own box, the exact worst case of a linear model, clear errors."""

import pytest
import torch
from torch import nn

from _attack_models import digits_cnn
from stabletrain.attacks import apgd, apgd_targeted, autoattack, pgd, robustness_curve, square
from stabletrain.checks import StableTrainError
from stabletrain.seeding import ExampleRNG


def _streams(n, *parts):
    return ExampleRNG.for_examples(range(n), 0, *parts)


RUNS = {
    "apgd-ce": lambda m, x, y, e, g, **kw: apgd(m, x, y, e, steps=6, generator=g, **kw),
    "apgd-dlr": lambda m, x, y, e, g, **kw: apgd(m, x, y, e, loss="dlr", steps=6, generator=g, **kw),
    "apgd-t": lambda m, x, y, e, g, **kw: apgd_targeted(m, x, y, e, steps=4, target_classes=2, generator=g, **kw),
    "square": lambda m, x, y, e, g, **kw: square(m, x, y, e, queries=30, generator=g, **kw),
    "autoattack": lambda m, x, y, e, g, **kw: autoattack(m, x, y, e, steps=4, target_classes=2, queries=20,
                                                         generator=g, **kw),
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_equal_radii_give_exactly_the_one_radius_attack(name):
    model, x, y = digits_cnn()
    x, y = x[:24], y[:24]
    one = RUNS[name](model, x, y, 0.06, _streams(24, name))
    per = RUNS[name](model, x, y, torch.full_like(x, 0.06), _streams(24, name))
    broadcast = RUNS[name](model, x, y, torch.tensor(0.06), _streams(24, name))
    for other in (per, broadcast):
        assert torch.equal(one.success, other.success)
        assert torch.equal(one.adversarial, other.adversarial)
    explicit = RUNS[name](model, x, y, 0.06, _streams(24, name), limits=(torch.zeros_like(x), torch.ones_like(x)))
    assert torch.equal(one.adversarial, explicit.adversarial)  # the default box is [0, 1]


@pytest.mark.parametrize("name", sorted(RUNS))
def test_every_coordinate_stays_in_its_own_box(name):
    model, x, y = digits_cnn()
    x, y = x[:24], y[:24]
    gen = torch.Generator().manual_seed(3)
    radius = torch.rand(x.shape, generator=gen) * 0.2
    radius[:, :, :3] = 0.0  # some coordinates may not move at all
    low = (x - 0.05).clamp_min(0.0) * (torch.rand(x.shape, generator=gen) < 0.5)
    high = torch.maximum(x, torch.full_like(x, 0.9))
    out = RUNS[name](model, x, y, radius, _streams(24, name), limits=(low, high))
    delta = out.adversarial - x
    assert bool((delta.abs() <= radius + 1e-6).all())
    assert bool((out.adversarial >= low - 1e-7).all()) and bool((out.adversarial <= high + 1e-7).all())
    assert torch.equal(out.adversarial[:, :, :3], x[:, :, :3])
    assert out.success.float().mean() >= (model(x).argmax(1) != y).float().mean()  # clean errors stay broken


@pytest.mark.parametrize("name", ["apgd-ce", "square", "autoattack"])
def test_per_coordinate_results_do_not_depend_on_the_batch(name):
    model, x, y = digits_cnn()
    x, y = x[:30], y[:30]
    radius = torch.linspace(0.0, 0.15, x[0].numel()).view(x[0].shape).expand_as(x)
    whole = RUNS[name](model, x, y, radius, _streams(30, "b"))
    streams = _streams(30, "b")
    parts = [RUNS[name](model, x[a:b], y[a:b], radius[a:b], ExampleRNG(streams.seeds[a:b])) for a, b in
             ((0, 7), (7, 30))]
    assert torch.equal(whole.success, torch.cat([p.success for p in parts]))
    assert torch.allclose(whole.adversarial, torch.cat([p.adversarial for p in parts]))


def test_apgd_and_square_find_the_exact_worst_case_of_a_linear_model_in_the_box():
    """For logits ``Wx``, the lowest margin in a box is reached at a vertex that is known in closed form: the
    examples whose worst-case margin is negative must all be broken, the others never. The last row and column
    have radius 0: Square draws window positions in ``[0, h − s)`` as the reference code does, so a 1-cell window
    never lands there."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 2))
    x = torch.rand(200, 1, 4, 5) * 0.8 + 0.1
    y = (model(x).argmax(1)).clone()  # every example clean-correct
    radius = torch.rand(x.shape) * 0.08
    radius[:, :, -1], radius[:, :, :, -1] = 0.0, 0.0
    low, high = torch.zeros_like(x), torch.full_like(x, 0.95)
    w = model[1].weight.detach()
    sign = torch.where(y == 1, 1.0, -1.0).view(-1, 1)  # the margin's gradient is sign · (w1 − w0)
    direction = (sign * (w[1] - w[0])).view(-1, 1, 4, 5)
    worst = torch.where(direction > 0, torch.maximum(x - radius, low), torch.minimum(x + radius, high))
    margin = (model(worst)[:, 1] - model(worst)[:, 0]) * sign.flatten()
    breakable = margin < 0
    assert 0.2 < breakable.float().mean() < 0.8  # the test means something either way
    out = apgd(model, x, y, radius, steps=10, generator=_streams(200, "lin"), limits=(low, high))
    assert torch.equal(out.success, breakable)
    found = square(model, x, y, radius, queries=1000, generator=_streams(200, "lin"), limits=(low, high))
    assert torch.equal(found.success, breakable)


def test_autoattack_reports_each_component_and_refuses_what_a_binary_model_cannot_run():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    x, y = torch.rand(10, 1, 4, 4), torch.arange(10) % 2
    with pytest.raises(StableTrainError, match=r"apgd-t need\(s\) at least 4 classes and the model has 2; run "
                                               r"components=\('apgd-ce', 'square'\)"):
        autoattack(model, x, y, 0.1, steps=2, queries=5)
    lines = []
    out = autoattack(model, x, y, 0.1, steps=2, queries=5, components=("apgd-ce", "square"), progress=lines.append)
    assert list(out.components) == ["apgd-ce", "square"]
    assert [line.split(":")[0] for line in lines] == ["apgd-ce", "square"]
    assert lines[-1].startswith(f"square: {int((~out.success).sum())} of 10 still robust")


def test_the_curve_reports_progress_per_epsilon_and_component():
    model, x, y = digits_cnn()
    lines = []
    robustness_curve(model, x[:40], y[:40], [0.0, 0.05], attack="autoattack", batch_size=25, steps=2,
                     target_classes=2, queries=5, generator=_streams(40, "p"), progress=lines.append)
    assert any(line.startswith("autoattack ε=0.05 batch 1/2: apgd-ce:") for line in lines)
    assert any(line.startswith("autoattack ε=0.05 batch 2/2: square:") for line in lines)
    assert lines[-1].startswith("autoattack ε=0.05: ") and "robust accuracy" in lines[-1]


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: pgd(m, x, y, torch.full_like(x, 0.1)), "this attack takes one number as epsilon"),
    (lambda m, x, y: apgd(m, x, y, torch.full((3,), 0.1)), "does not broadcast to the images' shape"),
    (lambda m, x, y: apgd(m, x, y, -torch.ones_like(x)), "must be >= 0 in every coordinate"),
    (lambda m, x, y: square(m, x, y, torch.full_like(x, float("nan"))), "must be finite in every coordinate"),
    (lambda m, x, y: apgd(m, x, y, torch.full_like(x, 0.1), norm="l2"), "need norm='linf'"),
    (lambda m, x, y: apgd(m, x, y, 0.1, limits=(0.5, 1.0)), "must lie inside the limits"),
    (lambda m, x, y: square(m, x, y, 0.1, limits=(torch.ones_like(x), torch.zeros_like(x))),
     "lower limit is above the upper limit"),
    (lambda m, x, y: apgd(m, x, y, 0.1, limits=(0.0,)), r"limits must be a \(low, high\) pair"),
    (lambda m, x, y: apgd(m, x, y, 0.1, limits=(0.0, float("inf"))), "the upper limit must be a finite number"),
])
def test_bad_radii_and_limits_are_one_clear_error(call, message):
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(4, 1, 4, 4) * 0.4 + 0.3, torch.tensor([0, 1, 2, 0])
    with pytest.raises(StableTrainError, match=message) as error:
        call(model, x, y)
    assert "\n" not in str(error.value)
