import pytest
import torch
from scipy.stats import beta, norm
from torch import nn

from stabletrain.checks import StableTrainError
from stabletrain.evaluation.smoothing_suite import SMOOTHING_COLUMNS, smoothing_rows

ROW_KEYS = ("model", "distortion", "family", "param", "accuracy", "mean_kl", "flip_rate", "n")


class Linear(nn.Module):
    """A fixed linear classifier: its noisy predictions vary, so certificates differ between examples."""

    def __init__(self, pixels: int = 16, classes: int = 3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(classes, pixels, generator=g) * 0.5, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T


class Constant(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[3.0, 0.0, 1.0]]).expand(x.shape[0], 3)


def data(count: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(count, 1, 4, 4, generator=g), torch.randint(0, 3, (count,), generator=g)


def linear_data(count: int = 9) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The linear model and images labelled with its clean predictions, so that some examples certify."""
    model = Linear()
    x, _ = data(count)
    return model, x, model(x).argmax(1)


def test_rows_do_not_depend_on_the_batch_size():
    model, x, y = linear_data()
    kwargs = dict(sigma=0.25, n0=16, n=96, radii=(0, 0.1, 0.3), seed=3, name="lin")
    one = smoothing_rows(model, x, y, batch_size=1, **kwargs)
    seven = smoothing_rows(model, x, y, batch_size=7, **kwargs)
    assert one == seven
    assert one[0]["average_certified_radius"] > 0
    # and the noise is the model's own: another name draws other noise
    other = smoothing_rows(model, x, y, batch_size=7, **{**kwargs, "name": "other"})
    assert [r["average_certified_radius"] for r in other] != [r["average_certified_radius"] for r in one]


def test_splitting_the_test_set_with_start_index_gives_the_same_totals():
    model, x, y = linear_data(8)
    kwargs = dict(sigma=0.25, n0=16, n=64, radii=(0, 0.1), seed=0, name="lin")
    whole = smoothing_rows(model, x, y, **kwargs)
    first = smoothing_rows(model, x[:3], y[:3], start_index=0, **kwargs)
    rest = smoothing_rows(model, x[3:], y[3:], start_index=3, **kwargs)
    assert whole[1]["certified_accuracy"] > 0
    for w, a, b in zip(whole, first, rest):
        counts = [round(k * r["certified_accuracy"]) for k, r in ((8, w), (3, a), (5, b))]
        assert counts[0] == counts[1] + counts[2]
        assert 8 * w["average_certified_radius"] == pytest.approx(
            3 * a["average_certified_radius"] + 5 * b["average_certified_radius"], rel=1e-12)


def test_certified_accuracy_never_rises_with_the_radius():
    model, x, y = linear_data(12)
    rows = smoothing_rows(model, x, y, sigma=0.25, n0=16, n=128, radii=(1.0, 0, 0.05, 0.5, 0.1, 0.05, 0.2))
    radii = [r["radius"] for r in rows]
    assert radii == sorted(set(radii)) == [0.0, 0.05, 0.1, 0.2, 0.5, 1.0]
    accuracies = [r["certified_accuracy"] for r in rows]
    assert all(a >= b for a, b in zip(accuracies, accuracies[1:]))
    assert accuracies[0] <= 1 - rows[0]["abstain_rate"]
    assert accuracies[0] > accuracies[3] > accuracies[-1] == 0  # the check is not vacuous


def test_a_constant_model_is_certified_at_the_clopper_pearson_radius():
    x, y = data(10)
    y[:4] = 0
    share = float((y == 0).double().mean())
    sigma, n, alpha = 0.3, 200, 0.001
    # every noisy copy is class 0: k = n, one-sided Clopper–Pearson bound Beta(alpha; n, 1), radius σ·Φ⁻¹(bound)
    p_lower = beta.ppf(alpha, n, 1)
    radius = sigma * norm.ppf(p_lower)
    assert 0.5 < radius < 0.8
    rows = smoothing_rows(Constant(), x, y, sigma=sigma, n0=20, n=n, alpha=alpha,
                          radii=(0, radius - 1e-6, radius + 1e-6, 1.0))
    assert [r["certified_accuracy"] for r in rows] == [pytest.approx(share)] * 2 + [0.0, 0.0]
    assert rows[0]["average_certified_radius"] == pytest.approx(share * radius, rel=1e-9)
    assert rows[0]["abstain_rate"] == 0.0


def test_rows_have_the_evaluation_row_format():
    x, y = data(4)
    rows = smoothing_rows(Constant(), x, y, sigma=0.25, n0=10, n=50, radii=(0, 0.5), name="const")
    for row, radius in zip(rows, (0.0, 0.5)):
        assert set(row) == set(ROW_KEYS) | set(SMOOTHING_COLUMNS)
        assert row["model"] == "const" and row["family"] == "smoothing" and row["param"] == radius
        assert row["accuracy"] is None and row["mean_kl"] is None and row["flip_rate"] is None
        assert row["n"] == 4 and row["sigma"] == 0.25 and row["noise_samples"] == 50 and row["n0"] == 10
    assert [r["distortion"] for r in rows] == ["smoothing-σ0.25-r0", "smoothing-σ0.25-r0.5"]


@pytest.mark.parametrize("change, message", [
    ({"sigma": 0.0}, "sigma must be"),
    ({"radii": ()}, "radii is empty"),
    ({"radii": (0, -0.5)}, "every radius"),
    ({"n": 0}, "n must be an integer"),
    ({"alpha": 1.5}, "alpha must be"),
    ({"start_index": -1}, "start_index"),
    ({"name": ""}, "name must be"),
])
def test_bad_arguments_are_clear_errors(change, message):
    x, y = data(3)
    kwargs = {"sigma": 0.25, "n0": 4, "n": 8, **change}
    with pytest.raises(StableTrainError, match=message):
        smoothing_rows(Constant(), x, y, **kwargs)


def test_bad_data_is_a_clear_error():
    x, y = data(3)
    with pytest.raises(StableTrainError, match="3 examples but y has 2"):
        smoothing_rows(Constant(), x, y[:2], sigma=0.25)
    with pytest.raises(StableTrainError, match="integer labels"):
        smoothing_rows(Constant(), x, y.float(), sigma=0.25)
    with pytest.raises(StableTrainError, match=r"\[0, 1\]"):
        smoothing_rows(Constant(), x * 3 + 1, y, sigma=0.25, n0=4, n=8)
