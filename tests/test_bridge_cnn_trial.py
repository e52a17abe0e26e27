"""The EfficientNet-Lite0 trial's architecture and weight port (experiments/bridge_cnn_trial.py), without its weights:
a state dict in the EfficientNet-PyTorch key layout is written by hand from the B0 stage table, and must land
on the right modules; TensorFlow's "same" padding gives ceil(size / stride) outputs."""

import pytest
import torch

from experiments.bridge_cnn_trial import LITE0_STAGES, EfficientNetLite0, SamePad, port_state_dict


def bn(prefix: str, c: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": torch.randn(c), f"{prefix}.bias": torch.randn(c),
            f"{prefix}.running_mean": torch.randn(c), f"{prefix}.running_var": torch.rand(c) + 0.5,
            f"{prefix}.num_batches_tracked": torch.tensor(0)}


def ported_layout(num_classes: int) -> dict[str, torch.Tensor]:
    """The file's layout: _conv_stem/_bn0, _blocks.i.{_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2},
    _conv_head/_bn1, _fc (the expand pair is absent where the expansion is 1)."""
    sd = {"_conv_stem.weight": torch.randn(32, 3, 3, 3), **bn("_bn0", 32)}
    i, cin = 0, 32
    for expansion, kernel, _, cout, n in LITE0_STAGES:
        for _ in range(n):
            mid = cin * expansion
            b = f"_blocks.{i}"
            if expansion != 1:  # bn before conv here: the port must not depend on the file's key order
                sd.update(bn(f"{b}._bn0", mid))
                sd[f"{b}._expand_conv.weight"] = torch.randn(mid, cin, 1, 1)
            sd[f"{b}._depthwise_conv.weight"] = torch.randn(mid, 1, kernel, kernel)
            sd.update(bn(f"{b}._bn1", mid))
            sd[f"{b}._project_conv.weight"] = torch.randn(cout, mid, 1, 1)
            sd.update(bn(f"{b}._bn2", cout))
            i, cin = i + 1, cout
    sd.update({"_conv_head.weight": torch.randn(1280, 320, 1, 1), **bn("_bn1", 1280),
               "_fc.weight": torch.randn(num_classes, 1280), "_fc.bias": torch.randn(num_classes)})
    return sd


@pytest.mark.parametrize("tf_pad", [False, True])
def test_port_puts_every_tensor_on_its_module(tf_pad):
    model = EfficientNetLite0(num_classes=10, tf_pad=tf_pad)
    sd = ported_layout(10)
    model.load_state_dict(port_state_dict(sd, model))  # strict: every key and shape matches
    state = model.state_dict()
    block3 = model.features[4]  # features[0] is the stem: _blocks.3 is features[4] (stage 3's first, 5 x 5)
    convs = [m for m in block3.body if isinstance(m, torch.nn.Conv2d)]
    assert convs[1].kernel_size == (5, 5) and convs[1].stride == (2, 2)
    assert torch.equal(convs[0].weight, sd["_blocks.3._expand_conv.weight"])
    assert torch.equal(convs[1].weight, sd["_blocks.3._depthwise_conv.weight"])
    assert torch.equal(convs[2].weight, sd["_blocks.3._project_conv.weight"])
    bns = [m for m in block3.body if isinstance(m, torch.nn.BatchNorm2d)]
    assert torch.equal(bns[1].running_var, sd["_blocks.3._bn1.running_var"])
    assert torch.equal(state["classifier.1.weight"], sd["_fc.weight"])
    head_bn = [m for m in model.features[-1] if isinstance(m, torch.nn.BatchNorm2d)][0]
    assert torch.equal(head_bn.running_mean, sd["_bn1.running_mean"])
    # 16 blocks; residuals exactly where stride is 1 and the width is unchanged
    blocks = list(model.features)[1:-1]
    assert len(blocks) == 16 and [b.skip for b in blocks].count(True) == 9


def test_a_file_with_other_tensors_is_refused():
    model = EfficientNetLite0(num_classes=10)
    sd = ported_layout(10)
    del sd["_blocks.0._depthwise_conv.weight"]
    with pytest.raises(ValueError, match="tensors in the file"):
        port_state_dict(sd, model)


@pytest.mark.parametrize("size,kernel,stride,out", [(224, 3, 2, 112), (7, 5, 2, 4), (14, 5, 1, 14), (15, 3, 2, 8)])
def test_tf_same_padding_gives_ceil_size_over_stride(size, kernel, stride, out):
    x = torch.randn(1, 1, size, size)
    y = torch.nn.functional.conv2d(SamePad(kernel, stride)(x), torch.ones(1, 1, kernel, kernel), stride=stride)
    assert y.shape[-2:] == (out, out)


def test_lite0_gives_logits_and_a_grid_of_size_over_32():
    model = EfficientNetLite0(num_classes=10, tf_pad=True).eval()
    x = torch.randn(2, 3, 96, 96)
    assert model.features(x).shape == (2, 1280, 3, 3)
    assert model(x).shape == (2, 10)
