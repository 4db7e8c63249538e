"""Fine-tuning options: optimizer, warm-up and schedule, backbone/head learning rates, frozen batch norm.

Each option must take effect (or be rejected), checked on what training actually did.
"""

import math

import pytest
import torch
from torch import nn

from stabletrain.checks import StableTrainError
from stabletrain.training import TrainConfig, train
from stabletrain.training.optim import build_optimizer, build_scheduler, freeze_batchnorm, lr_factor, parameter_groups

TINY = dict(data="digits", image_size=16, width=4, batch_size=256, method="plain")


def test_lr_factor_matches_torch_warmup_then_cosine():
    """The schedule equals torch's LinearLR warm-up followed by CosineAnnealingLR, step by step."""
    total, warmup = 20, 5
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup)], milestones=[warmup])
    ours = []
    theirs = []
    for step in range(total + 1):
        ours.append(lr_factor(step, total, warmup, "cosine"))
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        reference.step()
    assert ours == pytest.approx(theirs, abs=1e-9)
    assert [lr_factor(s, 10, 0, "constant") for s in range(10)] == [1.0] * 10


def test_backbone_and_head_get_their_own_learning_rates():
    from stabletrain.models import create_model

    model = create_model("torchvision:resnet18", num_classes=3)
    groups = {g["name"]: g for g in parameter_groups(model, 0.1, 0.01, 1e-4)}
    assert groups["head"]["lr"] == 0.1 and groups["backbone"]["lr"] == pytest.approx(0.001)
    head_ids = {id(p) for p in model.model.fc.parameters()}
    assert {id(p) for p in groups["head"]["params"]} == head_ids
    assert len(groups["backbone"]["params"]) + 2 == len(list(model.parameters()))


def test_sgd_and_adamw_are_built_with_their_settings():
    from stabletrain.models import SmallCNN

    model = SmallCNN(1, 3, width=4)
    sgd = build_optimizer(model, TrainConfig(optimizer="sgd", momentum=0.5, lr=0.2, **TINY).validated())
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.5
    adamw = build_optimizer(model, TrainConfig(lr=0.2, **TINY).validated())
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 5e-4
    with pytest.raises(StableTrainError, match="momentum has no effect with optimizer 'adamw'"):
        TrainConfig(momentum=0.5, **TINY).validated()
    with pytest.raises(StableTrainError, match="optimizer must be one of adamw, sgd"):
        TrainConfig(optimizer="adam", **TINY).validated()
    with pytest.raises(StableTrainError, match="warmup_epochs must be in"):
        TrainConfig(warmup_epochs=3, epochs=2, **TINY).validated()


def test_warmup_and_constant_schedule_show_in_the_learning_rate_of_each_epoch(tmp_path):
    config = TrainConfig(epochs=3, warmup_epochs=2, schedule="constant", lr=1e-3, **TINY)
    result = train(config, tmp_path / "run", progress=False)
    steps = math.ceil(1437 / 256) - (1 if 1437 % 256 < 2 else 0)
    lrs = [row["lr"] for row in result.history]
    # after epoch 1 of a 2-epoch warm-up: lr × (steps + 1) / (2 steps); afterwards the constant lr
    assert lrs[0] == pytest.approx(1e-3 * (steps + 1) / (2 * steps))
    assert lrs[1:] == pytest.approx([1e-3, 1e-3])


def test_zero_backbone_scale_freezes_the_backbone_and_trains_the_head(tmp_path):
    torch.manual_seed(0)
    result = train(TrainConfig(epochs=1, backbone_lr_scale=0.0, seed=3, **TINY), tmp_path / "frozen",
                   progress=False)
    fresh = train(TrainConfig(epochs=1, backbone_lr_scale=0.0, seed=3, **TINY), tmp_path / "again", progress=False)
    initial = _initial_model(seed=3)
    trained = result.model.state_dict()
    conv = "body.0.0.weight"
    torch.testing.assert_close(trained[conv].cpu(), initial[conv])
    assert not torch.equal(trained["head.1.weight"].cpu(), initial["head.1.weight"])
    torch.testing.assert_close(trained["head.1.weight"], fresh.model.state_dict()["head.1.weight"])


def _initial_model(seed):
    from stabletrain.models import SmallCNN

    torch.manual_seed(seed)
    return SmallCNN(1, 10, width=4).state_dict()


def test_freeze_bn_keeps_running_statistics_while_weights_train(tmp_path):
    plain = train(TrainConfig(epochs=1, seed=1, **TINY), tmp_path / "plain", progress=False)
    frozen = train(TrainConfig(epochs=1, seed=1, freeze_bn=True, **TINY), tmp_path / "frozen", progress=False)
    initial = _initial_model(seed=1)
    key = "body.0.1.running_mean"
    torch.testing.assert_close(frozen.model.state_dict()[key].cpu(), initial[key])
    assert not torch.equal(plain.model.state_dict()[key].cpu(), initial[key])
    assert not torch.equal(frozen.model.state_dict()["body.0.0.weight"].cpu(), initial["body.0.0.weight"])
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.BatchNorm1d(2)).train()
    assert freeze_batchnorm(net) == 2 and not net[1].training and net[0].training


def test_default_options_reproduce_a_single_group_adamw_cosine_run():
    """backbone_lr_scale 1 keeps one parameter group, as 0.1 checkpoints stored it, so they resume."""
    from stabletrain.models import SmallCNN

    model = SmallCNN(1, 3, width=4)
    config = TrainConfig(**TINY).validated()
    optimizer = build_optimizer(model, config)
    assert len(optimizer.param_groups) == 1
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=10)
    for _ in range(60):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(config.lr * 0.5 * (1 + math.cos(math.pi * 60 / 120)))


def test_fine_tuning_runs_get_the_fine_tuning_defaults_and_given_values_win(tmp_path):
    from stabletrain.training.config import FINETUNE_LR, FINETUNE_WARMUP_EPOCHS, SCRATCH_LR

    weights = tmp_path / "w.pth"
    torch.save({"x": torch.zeros(1)}, weights)
    scratch = TrainConfig(**TINY).validated()
    assert (scratch.lr, scratch.warmup_epochs) == (SCRATCH_LR, 0.0)
    tuned = TrainConfig(weights=str(weights), **TINY).validated()
    assert (tuned.lr, tuned.warmup_epochs) == (FINETUNE_LR, FINETUNE_WARMUP_EPOCHS)
    assert TrainConfig(init="ckpt.pt", **TINY).validated().lr == FINETUNE_LR
    given = TrainConfig(weights=str(weights), lr=1e-4, warmup_epochs=0, **TINY).validated()
    assert (given.lr, given.warmup_epochs) == (1e-4, 0.0)
    assert TrainConfig(weights=str(weights), epochs=1, **{k: v for k, v in TINY.items()}).validated() \
        .warmup_epochs == min(FINETUNE_WARMUP_EPOCHS, 1.0)
    # a missing file is found when the run starts (a resumed run no longer needs it)
    with pytest.raises(StableTrainError, match="weights file not found"):
        train(TrainConfig(weights=str(tmp_path / "absent.pth"), epochs=1, **TINY), tmp_path / "run", progress=False)
