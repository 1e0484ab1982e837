"""UNet: presets build, accept their documented sizes, are deterministic in eval mode; parameter counts pinned."""

import pytest
import torch

from dreamsr.errors import ConfigError
from dreamsr.families.sr3.unet import PRESETS, UNet, UNetConfig, preset

# Pinned so an accidental architecture change is noticed (the sr3 presets are the paper's ~98 M SR3 UNet).
PARAMS = {"tiny": 10_111, "small": 2_633_955, "base": 5_917_011, "sr3-div2k": 97_807_491, "sr3-face": 97_807_491}


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_builds_and_runs_at_documented_sizes(name):
    cfg = preset(name)
    model = UNet(cfg).eval()
    assert model.num_parameters() == PARAMS[name]
    m = cfg.size_multiple
    # smallest legal size and a non-square one; the sr3 presets only at their minimum to keep CPU time low
    sizes = [(m, m)] if name.startswith("sr3") else [(m, m), (2 * m, 3 * m), (160 // m * m, 160 // m * m)]
    for h, w in sizes:
        y_t = torch.randn(2, 3, h, w)
        x0 = torch.randn(2, 3, h, w)
        gamma = torch.tensor([0.1, 0.9])
        with torch.no_grad():
            out = model(y_t, x0, gamma)
            again = model(y_t, x0, gamma)
        assert out.shape == (2, 3, h, w)
        assert torch.isfinite(out).all()
        assert torch.equal(out, again)  # eval mode is deterministic


def test_size_not_multiple_is_rejected():
    model = UNet(preset("small"))
    with pytest.raises(ValueError, match="multiple of 4"):
        model(torch.zeros(1, 3, 10, 12), torch.zeros(1, 3, 10, 12), torch.ones(1))


def test_paper_presets_match_sr3_shape():
    for name in ("sr3-div2k", "sr3-face"):
        c = preset(name)
        assert (c.inner_channels, c.channel_mults, c.res_blocks, c.dropout) == (64, (1, 2, 4, 8, 8), 2, 0.2)
        assert c.size_multiple == 16 and 160 % c.size_multiple == 0 and 128 % c.size_multiple == 0
        # attention at 16 px for a 128 px face input: level 3 (128 / 2**3 = 16)
        assert [128 // 2 ** lvl for lvl in c.attention_levels] == [16]


def test_gamma_changes_the_output_and_embed_scale_matters():
    torch.manual_seed(0)
    cfg = preset("tiny")
    model = UNet(cfg).eval()
    y, x = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        a = model(y, x, torch.tensor([0.2]))
        b = model(y, x, torch.tensor([0.8]))
    assert (a - b).abs().max() > 1e-4
    # the embedding's input is embed_scale * gamma: scale 2 at gamma 0.2 equals scale 1 at gamma 0.4
    emb1 = model.noise_embed(torch.tensor([0.4]))
    model.noise_embed.embed_scale = 2.0
    emb2 = model.noise_embed(torch.tensor([0.2]))
    torch.testing.assert_close(emb1, emb2)


def test_config_round_trip_and_validation():
    cfg = preset("small")
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown keys"):
        UNetConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ConfigError, match="norm_groups"):
        UNetConfig(inner_channels=10, norm_groups=4)
    with pytest.raises(ConfigError, match="attention level"):
        UNetConfig(channel_mults=(1, 2), attention_levels=(2,), norm_groups=4, inner_channels=8)
    with pytest.raises(ConfigError, match="unknown UNet preset"):
        preset("huge")


def test_dropout_active_only_in_training():
    cfg = UNetConfig(inner_channels=8, channel_mults=(1, 2), res_blocks=1, attention_levels=(1,), dropout=0.5,
                     norm_groups=4)
    model = UNet(cfg)
    y, x, g = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8), torch.tensor([0.5])
    model.train()
    a, b = model(y, x, g), model(y, x, g)
    assert not torch.equal(a, b)
    model.eval()
    assert torch.equal(model(y, x, g), model(y, x, g))
