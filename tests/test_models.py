import math

import pytest
import torch
from torch import nn

from samplecnn import models

SEG = models.SEGMENT_SAMPLES


def test_seed_has_the_notebooks_exact_parameter_counts():
    trainable, running = models.count_parameters(models.build("seed"))
    assert trainable == 1_869_874
    assert running == 5_888
    assert trainable + running == 1_875_762  # the Keras notebook's model.summary() total


def test_seed_layer_list_matches_the_notebook():
    m = models.build("seed")
    conv, bn, relu, pool = m.stem
    assert (conv.kernel_size, conv.stride, conv.padding) == ((3,), (1,), (1,))
    assert isinstance(pool, nn.MaxPool1d) and pool.kernel_size == 3
    assert [b.conv.out_channels for b in m.blocks] == [128, 128, 256, 256, 256, 256, 256, 256, 512]
    assert all(b.conv.padding == (1,) and b.pool.kernel_size == 3 and b.se is None for b in m.blocks)
    assert m.head[0].kernel_size == (1,) and m.head[0].out_channels == 512
    assert m.dropout.p == 0.1
    assert bn.eps == 1e-3  # Keras' BatchNormalization default, needed to reproduce imported Keras models


def test_paper_model_uses_a_strided_first_conv_without_pooling_and_he_uniform_init():
    torch.manual_seed(0)
    m = models.build("samplecnn")
    assert len(m.stem) == 3
    conv = m.stem[0]
    assert (conv.kernel_size, conv.stride, conv.padding) == ((3,), (3,), (0,))
    assert m.dropout.p == 0.5
    assert models.count_parameters(m) == (1_869_874, 5_888)
    w = m.blocks[4].conv.weight  # fan_in = 256 * 3
    bound = math.sqrt(6 / (256 * 3))  # Keras he_uniform limit
    assert w.abs().max() <= bound
    assert w.abs().max() > 0.95 * bound
    assert torch.all(m.blocks[4].conv.bias == 0)


@pytest.mark.parametrize("name,multi_level,embed_dim", [
    ("seed", False, 512), ("samplecnn", False, 512),
    ("se", False, 512), ("se", True, 1024), ("rese2", False, 512), ("rese2", True, 1024),
])
def test_every_architecture_maps_segments_to_logits_and_embeddings(name, multi_level, embed_dim):
    torch.manual_seed(0)
    m = models.build(name, n_tags=7, **({"multi_level": True} if multi_level else {})).eval()
    x = torch.randn(2, 1, SEG)
    with torch.no_grad():
        logits, emb = m(x), m.embed(x)
    assert logits.shape == (2, 7)
    assert emb.shape == (2, embed_dim) and m.embed_dim == embed_dim
    assert torch.isfinite(logits).all()
    assert not torch.allclose(logits[0], logits[1])  # the two inputs give different outputs


def test_se_and_rese2_blocks_follow_kim_et_al():
    se = models.build("se")
    block = se.blocks[8]
    assert block.se is not None
    assert block.se.excite[0].out_features == 512 * 16  # the amplifying ratio expands
    rese = models.build("rese2")
    block = rese.blocks[2]  # 128 -> 256: the shortcut needs a 1x1 conv + BN
    assert isinstance(block.shortcut, nn.Sequential) and block.shortcut[0].kernel_size == (1,)
    assert isinstance(rese.blocks[1].shortcut, nn.Identity)
    assert block.drop.p == 0.2


def test_rese2_residual_block_adds_its_shortcut():
    torch.manual_seed(0)
    block = models.ReSEBlock(4, 4, 1e-3, ratio=2).eval()
    x = torch.randn(1, 4, 27)
    with torch.no_grad():
        y = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
        expected = block.pool(torch.relu(block.se(y) + x))
        assert torch.allclose(block(x), expected)


def test_multi_level_concatenates_the_last_three_blocks():
    m = models.build("rese2", multi_level=True).eval()
    feats = []
    hooks = [b.register_forward_hook(lambda mod, i, o: feats.append(o)) for b in m.blocks[-3:]]
    with torch.no_grad():
        emb = m.embed(torch.randn(1, 1, SEG))
    for h in hooks:
        h.remove()
    pooled = torch.cat([f.amax(-1) for f in feats], dim=1)
    assert pooled.shape == (1, 1024)
    assert torch.allclose(emb, m.head(pooled))


def test_build_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="unknown architecture"):
        models.build("vgg")
    with pytest.raises(ValueError, match="unknown option"):
        models.build("samplecnn", colour="red")
    with pytest.raises(ValueError, match="multi-level"):
        models.build("samplecnn", multi_level=True)


def test_segment_gflop_counts_the_3_9_models_convolutions():
    # by hand: stem 1->128 (k3, stride 3) on 19683 outputs, then conv3 blocks on 19683, 6561, ... 3 positions, the
    # 1x1 head and the classifier; 2 FLOPs per multiply-add
    blocks = [(128, 128), (128, 128), (128, 256)] + [(256, 256)] * 5 + [(256, 512)]
    lengths = [3**9 // 3**i for i in range(9)]
    expected = 2 * (19683 * 128 * 3 + sum(n * cin * cout * 3 for (cin, cout), n in zip(blocks, lengths))
                    + 512 * 512 + 512 * 50)
    assert models.segment_gflop(models.build("samplecnn").eval()) == pytest.approx(expected / 1e9, rel=1e-9)
    assert expected / 1e9 == pytest.approx(3.456, abs=1e-3)
