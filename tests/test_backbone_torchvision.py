"""Our truncated WideResNet-50-2 computes what torchvision's wide_resnet50_2 computes at
layer2 and layer3, with the same weights."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torchvision.models import wide_resnet50_2
from torchvision.models.feature_extraction import create_feature_extractor

from fedpatch_app.model.backbone import build_backbone

#: Parameters our backbone never holds (it stops after layer3).
DROPPED = ("layer4.", "fc.")


def _random_weights(net: torch.nn.Module, seed: int) -> None:
    """Every weight up to layer3 drawn at random (He-scaled convolutions; batch norms with
    running statistics and affine parameters away from their identity defaults, so that a
    batch norm or activation skipped changes the outputs). Built on the meta device and
    filled here: torchvision's own initialisation of all 69M parameters takes seconds."""
    g = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=g)
        elif isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            module.running_var.copy_(0.5 + torch.rand(n, generator=g))
            module.weight.copy_(0.5 + torch.rand(n, generator=g))
            module.bias.copy_(0.1 * torch.randn(n, generator=g))


def test_layer_outputs_equal_torchvision_wide_resnet50_2(tmp_path: Path) -> None:
    with torch.device("meta"):
        reference = wide_resnet50_2(weights=None)
    del reference.layer4, reference.fc  # never run below: no weights needed
    reference.layer4 = reference.fc = torch.nn.Identity()
    reference.to_empty(device="cpu")
    with torch.no_grad():
        _random_weights(reference, seed=3)
    reference.eval()
    path = tmp_path / "wrn50_2.pth"
    torch.save(reference.state_dict(), path)
    ours = build_backbone("wide_resnet50_2", weights=path)

    layers = create_feature_extractor(reference, return_nodes=["layer2", "layer3"])
    x = torch.randn(1, 3, 48, 64, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        expected = layers(x)
        layer2, layer3 = ours(x)
    assert layer2.shape == expected["layer2"].shape == (1, 512, 6, 8)
    assert layer3.shape == expected["layer3"].shape == (1, 1024, 3, 4)
    torch.testing.assert_close(layer2, expected["layer2"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer3, expected["layer3"], rtol=1e-5, atol=1e-5)
    assert layer3.abs().mean() > 1e-2, "the case must carry signal to layer3"
