import pytest
import torch
from torch import nn

from stabletrain.attacks import build_attack, fgsm, pgd, robustness_curve, sparse_l0
from stabletrain.checks import StableTrainError
from stabletrain.training import TrainConfig, train


def _linear(seed=0, features=12, classes=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, classes))


def _batch(n=16, shape=(3, 2, 2), classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_fgsm_equals_closed_form_on_a_linear_model():
    model = _linear()
    x, y = _batch()
    eps = 0.05
    W, b = model[1].weight.detach(), model[1].bias.detach()
    p = torch.softmax(x.flatten(1) @ W.T + b, dim=1)
    grad = (p - nn.functional.one_hot(y, 3).float()) @ W      # ∇ₓ CE for logits = Wx + b
    expected = (x + eps * grad.sign().view_as(x)).clamp(0, 1)
    result = fgsm(model, x, y, eps)
    torch.testing.assert_close(result.adversarial, expected)
    targeted = fgsm(model, x, y, eps, target=(y + 1) % 3)
    grad_t = (p - nn.functional.one_hot((y + 1) % 3, 3).float()) @ W
    torch.testing.assert_close(targeted.adversarial, (x - eps * grad_t.sign().view_as(x)).clamp(0, 1))


@pytest.mark.parametrize("norm, eps", [("linf", 0.03), ("l2", 0.5)])
def test_pgd_respects_the_ball_and_the_box(norm, eps):
    model = _linear()
    x, y = _batch()
    x[0] = 0.0
    x[1] = 1.0
    result = pgd(model, x, y, eps, norm=norm, steps=7, restarts=2, generator=torch.Generator().manual_seed(0))
    delta = result.adversarial - x
    if norm == "linf":
        assert float(delta.abs().max()) <= eps + 1e-6
    else:
        assert float(delta.flatten(1).norm(dim=1).max()) <= eps + 1e-5
    assert float(result.adversarial.min()) >= 0.0 and float(result.adversarial.max()) <= 1.0
    with torch.no_grad():
        assert torch.equal(model(result.adversarial).argmax(1), result.predictions)
    assert torch.equal(result.success, result.predictions != y)


@pytest.fixture(scope="module")
def trained_cnn(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("cnn")
    result = train(TrainConfig(data="digits", image_size=16, width=8, epochs=3, batch_size=128, method="plain"),
                   out, progress=False, data=None)
    return result.model, result.data


def test_pgd_succeeds_at_large_epsilon_and_never_at_zero(trained_cnn):
    model, data = trained_cnn
    x, y = data.test.x[:64], data.test.y[:64]
    clean_pred = model(x).argmax(1)
    correct = clean_pred == y
    zero = pgd(model, x, y, 0.0, steps=5)
    assert torch.equal(zero.adversarial, x) and torch.equal(zero.success, ~correct)
    strong = pgd(model, x, y, 0.3, steps=10, generator=torch.Generator().manual_seed(0))
    assert float(strong.success.float().mean()) > 0.95
    targets = (y + 1) % 10
    targeted = pgd(model, x, y, 0.3, steps=20, target=targets, generator=torch.Generator().manual_seed(0))
    assert float((targeted.predictions == targets).float().mean()) > 0.8
    assert torch.equal(targeted.success, targeted.predictions == targets)


def test_attacks_restore_model_mode_and_leave_no_parameter_gradients(trained_cnn):
    model, data = trained_cnn
    for p in model.parameters():
        p.grad = None
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pgd(model, data.test.x[:8], data.test.y[:8], 0.1, steps=2)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # eval mode: batch-norm statistics untouched
    model.eval()


def test_l0_attack_changes_at_most_k_pixels(trained_cnn):
    model, data = trained_cnn
    x, y = data.test.x[:32], data.test.y[:32]
    for k in (1, 5, 20):
        result = sparse_l0(model, x, y, k, steps=10, generator=torch.Generator().manual_seed(0))
        changed = ((result.adversarial - x).abs().sum(dim=1) > 0).flatten(1).sum(1)
        assert int(changed.max()) <= k
    many = sparse_l0(model, x, y, 60, steps=20, restarts=2, generator=torch.Generator().manual_seed(0))
    assert float(many.success.float().mean()) > 0.5


def test_robustness_curve_in_one_call(trained_cnn):
    model, data = trained_cnn
    x, y = data.test.x[:64], data.test.y[:64]
    model.eval()
    curve = robustness_curve(model, x, y, [0.0, 0.05, 0.3], steps=5, batch_size=20,
                             generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    assert curve[0]["robust_accuracy"] == pytest.approx(clean) and curve[0]["success_rate"] == 0.0
    accs = [row["robust_accuracy"] for row in curve]
    assert accs[0] >= accs[1] >= accs[2] and accs[2] < 0.1


class TupleModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(12, 3)

    def forward(self, x):
        return self.linear(x.flatten(1)), x


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: pgd(m, x, y, -0.1), "epsilon must be a finite number >= 0"),
    (lambda m, x, y: pgd(m, x * 2, y, 0.1), r"\[0, 1\]"),
    (lambda m, x, y: pgd(m, x, y, 0.1, norm="l1"), "norm"),
    (lambda m, x, y: sparse_l0(m, x, y, -1), "k must be"),
    (lambda m, x, y: fgsm(TupleModel(), x, y, 0.1), "B×K logits"),
    (lambda m, x, y: fgsm(lambda t: t, x, y, 0.1), "nn.Module"),
    (lambda m, x, y: build_attack("cw"), "unknown attack"),
])
def test_bad_attack_inputs(call, message):
    model = _linear()
    x, y = _batch()
    with pytest.raises(StableTrainError, match=message):
        call(model, x, y)
