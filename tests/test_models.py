import pytest
import torch
from torch import nn

from stabletrain.checks import StableTrainError
from stabletrain.models import Normalize, NormalizedClassifier, SmallCNN, build_model


def test_normalization_lives_inside_the_model():
    model = SmallCNN(in_channels=3, num_classes=4, width=4, mean=[0.2, 0.4, 0.6], std=[0.1, 0.2, 0.3])
    x = torch.rand(2, 3, 16, 16)
    expected = (x - torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)) / torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    torch.testing.assert_close(model.normalize(x), expected)
    assert "normalize.mean" in model.state_dict()


def test_wrapping_any_classifier():
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    wrapped = NormalizedClassifier(backbone, mean=[0.5] * 3, std=[0.5] * 3)
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(wrapped(x), backbone(x * 2 - 1))


def test_small_cnn_shapes_and_features():
    model = SmallCNN(1, 10, width=8)
    assert model(torch.rand(3, 1, 32, 32)).shape == (3, 10)
    assert model.features(torch.rand(3, 1, 24, 24)).shape == (3, 32)
    with pytest.raises(StableTrainError, match="at least 8×8"):
        model(torch.rand(1, 1, 4, 4))


def test_bad_model_arguments():
    with pytest.raises(StableTrainError, match="std must be positive"):
        Normalize([0.5], [0.0])
    with pytest.raises(StableTrainError, match="unknown model 'resnet9000'"):
        build_model("resnet9000")


from stabletrain.models import Embedder, small_embedder  # noqa: E402


def test_classifier_serves_as_embedder_through_its_penultimate_layer():
    classifier = SmallCNN(3, 5, width=4)
    embedder = Embedder(classifier, l2_normalize=False)
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(embedder(x), classifier.features(x))
    normalized = Embedder(classifier)(x)
    torch.testing.assert_close(normalized.norm(dim=1), torch.ones(2))
    projected = Embedder(classifier, embedding_dim=7)(x)
    assert projected.shape == (2, 7)
    assert small_embedder(1, 3, width=4)(torch.rand(2, 1, 8, 8)).shape == (2, 16)
    with pytest.raises(StableTrainError, match="no features"):
        Embedder(nn.Linear(3, 3))
