"""The network's defining properties (LEAF_SPEC.md sections 3-8)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from leaf_sk.nn import LeafConfig, LeafModel, STRPretrainer, Tokenizer, Tower, remove_band
from leaf_sk.nn.losses import draw_token_mask


@pytest.fixture
def tiny():
    return LeafConfig.from_size("tiny", d_text=12)


def test_base_parameter_counts_match_spec():
    model = LeafModel(LeafConfig.from_size("base", d_text=768))
    tower = sum(p.numel() for p in model.tower.parameters())
    iqf = sum(p.numel() for p in model.qformer.parameters())
    spec_tower, spec_iqf = 20_230_288, 6_193_920
    assert abs(tower - spec_tower) / spec_tower < 0.05
    assert abs(iqf - spec_iqf) / spec_iqf < 0.05
    # The release's layout is reproduced exactly, not only within 5 %.
    assert (tower, iqf) == (spec_tower, spec_iqf)
    assert sum(p.numel() for p in QFormer384().parameters()) == 5_210_496


def QFormer384():
    return LeafModel(LeafConfig.from_size("base", d_text=384)).qformer


def test_release_key_layout():
    model = LeafModel(LeafConfig.from_size("base", d_text=768))
    keys = model.state_dict().keys()
    assert len(keys) == 396
    assert sum(k.startswith("tower.") for k in keys) == 316
    for key in ["tower.tokenizer.enc_conv.0.weight", "tower.tokenizer.enc_conv.2.num_batches_tracked",
                "tower.mask_inProj.weight", "tower.next_transformer.layers.11.self_attn.in_proj_weight",
                "tower.next_outProj.3.weight", "tower.causal_mask", "qformer.output_embed.2.weight",
                "qformer.layers.3.norm3.bias", "qformer.film.weight"]:
        assert key in keys


def test_fused_tokenizer_equals_two_convolutions(tiny):
    torch.manual_seed(0)
    tok = Tokenizer(tiny).eval()
    x = torch.randn(3, 65, 400)
    fused = tok(x)
    windows = x.reshape(3, 65, 4, 100).permute(0, 2, 1, 3).reshape(12, 1, 65, 100)
    ref = tok.enc_conv(windows).reshape(3, 4, -1)
    assert fused.shape == (3, 4, tiny.token_dim)
    torch.testing.assert_close(fused, ref, rtol=1e-4, atol=1e-5)


def test_causal_branch_ignores_the_future(tiny):
    torch.manual_seed(0)
    tower = Tower(tiny).eval()
    x = torch.randn(2, 65, 600)
    changed = x.clone()
    changed[..., 300:] = torch.randn(2, 65, 300)
    with torch.no_grad():
        a = tower.causal(tower.tokenizer(x))
        b = tower.causal(tower.tokenizer(changed))
        ctx_a = tower.contextual(tower.tokenizer(x))
        ctx_b = tower.contextual(tower.tokenizer(changed))
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:])
    assert not torch.allclose(ctx_a[:, :3], ctx_b[:, :3])  # the contextual branch looks ahead


def test_inference_output_has_2n_tokens(tiny):
    tower = Tower(tiny).eval()
    with torch.no_grad():
        out = tower(torch.randn(2, 65, 800))
    assert out.shape == (2, 16, tiny.d_model)


def test_spectral_perturbation_zeroes_exactly_the_band():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 2000, dtype=torch.float64)
    out = remove_band(x, 10, band_width=6.0, sfreq=200.0)
    freqs = torch.fft.rfftfreq(2000, 1 / 200)
    spec_in, spec_out = torch.fft.rfft(x), torch.fft.rfft(out)
    band = (freqs >= 10) & (freqs < 16)
    assert band.sum() == 60  # 0.1-Hz bins
    # The FFT runs in float32 (as in the release): exact up to float32 rounding.
    assert spec_out[..., band].abs().max() < 1e-4 * spec_in[..., band].abs().mean()
    torch.testing.assert_close(spec_out[..., ~band], spec_in[..., ~band], rtol=1e-4, atol=1e-3)


def test_per_trial_bands():
    x = torch.randn(2, 1, 200, dtype=torch.float64)
    out = remove_band(x, torch.tensor([5.0, 30.0]), band_width=6.0)
    spec = torch.fft.rfft(out).abs()
    assert spec[0, 0, 5:11].max() < 1e-4 and spec[0, 0, 30:36].min() > 1e-3
    assert spec[1, 0, 30:36].max() < 1e-4 and spec[1, 0, 5:11].min() > 1e-3


def test_mask_replaces_the_expected_fraction():
    gen = torch.Generator().manual_seed(0)
    mask = draw_token_mask((4000, 20), 0.5, generator=gen)
    assert abs(mask.float().mean().item() - 0.5) < 0.01
    assert 0 < mask.sum(1).min() and mask.sum(1).max() < 20  # Bernoulli, not a fixed count


def test_masked_tokens_become_the_mask_token(tiny):
    tower = Tower(tiny).eval()
    tokens = torch.randn(1, 4, tiny.token_dim)
    mask = torch.tensor([[True, False, True, False]])
    with torch.no_grad():
        tower.mask_token.fill_(3.0)
        out_a = tower.contextual(tokens, mask)
        tokens_b = tokens.clone()
        tokens_b[0, 0] = torch.randn(tiny.token_dim)  # a masked token's content is never seen
        out_b = tower.contextual(tokens_b, mask)
    torch.testing.assert_close(out_a, out_b)


def test_str_losses_fall_below_zero_prediction_on_a_learnable_signal(tiny):
    torch.manual_seed(0)
    module = STRPretrainer(tiny.replace(dropout=0.0, tokenizer_dropout=0.0))
    t = torch.arange(800) / 200
    x = torch.sin(2 * torch.pi * 3 * t).repeat(8, 65, 1) * torch.linspace(0.5, 1.5, 8)[:, None, None]
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        losses = module(x)
        first = losses.detach() if first is None else first
        opt.zero_grad()
        (losses[0] + losses[1]).backward()
        opt.step()
    assert losses[0] < 0.5 * losses[2] and losses[1] < 0.5 * losses[3]
    assert losses[0] < first[0]


def test_qformer_output_is_unit_and_depends_on_instruction(tiny):
    torch.manual_seed(0)
    model = LeafModel(tiny).eval()
    x = torch.randn(3, 65, 400)
    with torch.no_grad():
        a = model(x, torch.nn.functional.normalize(torch.randn(12), dim=0))
        b = model(x, torch.nn.functional.normalize(torch.randn(12), dim=0))
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3))
    assert not torch.allclose(a, b)


def test_iqf_positions(tiny):
    model = LeafModel(tiny)
    assert model.qformer.positions(3).tolist() == [0, 1, 2, 20, 21, 22]
    contiguous = LeafModel(tiny.replace(iqf_positions="contiguous"))
    assert contiguous.qformer.positions(3).tolist() == [0, 1, 2, 3, 4, 5]


def test_first_position_reads_the_positional_tables_from_there(tiny):
    """A shifted model equals one whose position tables were moved to start at the shift."""
    import copy

    model = LeafModel(tiny).eval()
    assert model.qformer.positions(3, first_position=2).tolist() == [2, 3, 4, 22, 23, 24]
    moved = copy.deepcopy(model)
    with torch.no_grad():
        moved.tower.pos_embedding[:, :3] = model.tower.pos_embedding[:, 2:5]
        moved.qformer.pos_embedding[:, model.qformer.positions(3)] = \
            model.qformer.pos_embedding[:, model.qformer.positions(3, first_position=2)]
    x, instruction = torch.randn(2, 65, 300), torch.nn.functional.normalize(torch.randn(12), dim=0)
    with torch.no_grad():
        shifted = model(x, instruction, first_position=2)
        torch.testing.assert_close(shifted, moved(x, instruction))
        assert not torch.allclose(shifted, model(x, instruction))
    with pytest.raises(ValueError, match="1 to 2 windows of 100 samples \\(from position 18\\)"):
        model(x, instruction, first_position=18)


def test_batches_of_different_lengths_embed_as_each_alone_and_share_batchnorm(tiny):
    """A list of batches gives each batch's rows as a call of its own would (eval mode); in
    training, its windows are one BatchNorm batch, as one call on all the trials is."""
    torch.manual_seed(0)
    model = LeafModel(tiny.replace(tokenizer_dropout=0.0, dropout=0.0, iqf_dropout=0.0))
    x1, x2 = torch.randn(3, 65, 600), torch.randn(2, 65, 300)
    i1, i2 = (torch.nn.functional.normalize(torch.randn(n, 12), dim=1) for n in (3, 2))
    with torch.no_grad():
        model.eval()
        parts = model([x1, x2], [i1, i2], first_position=[0, 1])
        torch.testing.assert_close(parts, torch.cat([model(x1, i1), model(x2, i2, 1)]),
                                   rtol=0, atol=1e-6)
        model.train()
        y2 = torch.randn(2, 65, 600)
        together = model.tower.tokenizer.tokenize_together([x1, y2])
        torch.testing.assert_close(torch.cat(together),
                                   model.tower.tokenizer(torch.cat([x1, y2])), rtol=0, atol=1e-6)
        assert [t.shape[1] for t in model.tower.tokenizer.tokenize_together([x1, x2])] == [6, 3]


def test_too_many_windows_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match="1 to 20 windows.*crop or segment"):
        Tower(tiny)(torch.randn(1, 65, 2100))


@pytest.mark.parametrize("bad", [dict(d_model=30, n_heads=4), dict(n_layers=0), dict(mask_prob=1.5),
                                 dict(iqf_positions="other")])
def test_config_validation(bad):
    with pytest.raises(ValueError, match="LeafConfig"):
        LeafConfig.from_size("tiny", **bad)


def test_unknown_size():
    with pytest.raises(ValueError, match="choose one of"):
        LeafConfig.from_size("huge")


def test_nn_imports_no_sklearn_skorch_or_mne():
    code = ("import sys, leaf_sk.nn; bad = [m for m in ('sklearn', 'skorch', 'mne') if m in sys.modules];"
            "print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_log_power_is_the_log_variance_of_the_fused_filters(tiny):
    torch.manual_seed(0)
    tok = Tokenizer(tiny).eval()
    x = torch.randn(2, 65, 300)
    with torch.no_grad():
        power = tok.log_power(x)
        temporal, spatial = tok.enc_conv[0], tok.enc_conv[1]
        window = x[1, :, 100:200].reshape(1, 1, 65, 100)
        ref = spatial(temporal(window))[0, :, 0]             # (F, 101), the unfused pair
    assert power.shape == (2, 3, tiny.n_filters)
    torch.testing.assert_close(power[1, 1], torch.log(ref.var(dim=-1) + 1e-6), rtol=1e-4, atol=1e-4)
    # Scaling the input by a scales each filter's variance by a**2 (the bias aside).
    with torch.no_grad():
        tok.enc_conv[0].bias.zero_(), tok.enc_conv[1].bias.zero_()
        diff = tok.log_power(3 * x) - tok.log_power(x)
    torch.testing.assert_close(diff, torch.full_like(diff, float(np.log(9.0))), rtol=1e-3, atol=1e-3)


def test_window_log_spectrum_peaks_at_the_stimulus_bin():
    from leaf_sk.nn.spectral import spectral_bins, window_log_spectrum

    t = torch.arange(400) / 200.0
    x = torch.zeros(2, 3, 400)
    x[0, 1] = torch.sin(2 * np.pi * 14.0 * t)        # 14 Hz: bin 7 of a 0.5-s window
    x[1, 2] = torch.sin(2 * np.pi * 30.0 * t + 0.3)  # 30 Hz: bin 15
    spectrum = window_log_spectrum(x, 100)
    bins = list(spectral_bins(100))
    assert bins == list(range(2, 23))  # 4 to 44 Hz in 2-Hz steps
    assert spectrum.shape == (2, 4, 3 * len(bins))
    per_channel = spectrum.reshape(2, 4, 3, len(bins))
    assert (per_channel[0, :, 1].argmax(-1) == bins.index(7)).all()
    assert (per_channel[1, :, 2].argmax(-1) == bins.index(15)).all()
    assert per_channel[0, :, 0].max() < per_channel[0, :, 1].max() - 10  # silent channel


def test_spectral_memory_is_an_option_off_for_release_layouts(tiny):
    plain = LeafModel(tiny)
    assert not any("spectral_embed" in k for k in plain.state_dict())
    config = tiny.replace(spectral_memory=True)
    model = LeafModel(config).eval()
    assert LeafConfig.from_dict(config.to_dict()).spectral_memory
    x, instruction = torch.randn(3, 65, 300), torch.randn(12)
    out = model(x, instruction)
    assert out.shape == (3, 12)
    # The spectral tokens reach the output.
    assert torch.allclose(out[1:2], model(x[1:2], instruction), atol=1e-5)
    assert model.spectral(x).shape == (3, 3, config.spectral_dim)
    with torch.no_grad():
        model.spectral.spatial.weight.add_(torch.randn_like(model.spectral.spatial.weight))
    assert not torch.allclose(out, model(x, instruction))
    with pytest.raises(ValueError, match="spectral_memory"):
        model.qformer(model.tower(x), instruction)
    with pytest.raises(ValueError, match="spectral_memory must be True or False"):
        LeafConfig.from_size("tiny", spectral_memory="yes")


def test_spectral_memory_reads_only_its_sites(tiny):
    config = tiny.replace(spectral_memory=True, spectral_sites=["O1", "Oz", "O2"])
    model = LeafModel(LeafConfig.from_dict(config.to_dict())).eval()
    assert model.spectral.spatial.weight.shape == (config.spectral_filters, 3)
    x, instruction = torch.randn(2, 65, 200), torch.randn(12)
    elsewhere = x.clone()
    elsewhere[:, :8] += 5 * torch.randn(2, 8, 200)  # midline rows Fpz..POz: not read
    assert torch.equal(model.spectral(x), model.spectral(elsewhere))
    assert not torch.equal(model.spectral(x), model.spectral(x * torch.linspace(1, 2, 65)[:, None]))
    with pytest.raises(ValueError, match="spectral_sites"):
        tiny.replace(spectral_sites=["Q1"])


def test_tower_memory_off_leaves_the_tower_out_of_the_instruction_path(tiny):
    config = tiny.replace(power_memory=True, spectral_memory=True, tower_memory=False)
    model = LeafModel(LeafConfig.from_dict(config.to_dict())).eval()
    x, instruction = torch.randn(3, 65, 300), torch.randn(12)
    with torch.no_grad():
        out = model(x, instruction)
        assert out.shape == (3, 12)
        for layer in model.tower.mask_transformer.layers:
            layer.linear1.weight.add_(1.0)
        assert torch.equal(out, model(x, instruction))
        model.spectral.spatial.weight.add_(torch.randn_like(model.spectral.spatial.weight))
        assert not torch.allclose(out, model(x, instruction))
    assert LeafModel(tiny).config.tower_memory  # the paper's path is the default
    with pytest.raises(ValueError, match="nothing to read"):
        tiny.replace(tower_memory=False)
    with pytest.raises(ValueError, match="tower_memory must be True or False"):
        tiny.replace(power_memory=True, tower_memory=0)


def test_trial_spectral_token_is_the_log_of_the_window_averaged_power():
    from leaf_sk.nn.spectral import window_log_spectrum

    x = torch.randn(2, 3, 400, dtype=torch.float64)
    windows = window_log_spectrum(x, 100)
    trial = window_log_spectrum(x, 100, tokens="trial")
    both = window_log_spectrum(x, 100, tokens="both")
    assert windows.shape == (2, 4, 3 * 21) and trial.shape == (2, 1, 3 * 21)
    torch.testing.assert_close(trial[:, 0], torch.log((windows.exp() - 1e-6).mean(dim=1) + 1e-6))
    torch.testing.assert_close(both, torch.cat([windows, trial], dim=1))
    # Averaging power before the log steadies it: less spread over trials of white noise.
    noise = window_log_spectrum(torch.randn(200, 1, 400, dtype=torch.float64), 100, tokens="both")
    assert noise[:, -1].std(dim=0).mean() < 0.7 * noise[:, 0].std(dim=0).mean()
    with pytest.raises(ValueError, match="spectral_tokens"):
        LeafConfig.from_size("tiny", spectral_memory=True, spectral_tokens="mean")


def test_spectral_tokens_reach_the_model_in_every_form(tiny):
    for tokens, count in (("window", 3), ("trial", 1), ("both", 4)):
        config = tiny.replace(spectral_memory=True, spectral_tokens=tokens)
        model = LeafModel(LeafConfig.from_dict(config.to_dict())).eval()
        x = torch.randn(2, 65, 300)
        assert model.spectral(x).shape[1] == count
        assert model(x, torch.randn(12)).shape == (2, 12)


def test_crop_averaging_means_the_whole_trial_and_its_shifted_crops():
    from leaf_sk.nn import crop_averaged

    x = torch.randn(3, 2, 450)  # 4 whole windows and a remainder

    def first_sample(batch):
        return batch[..., 0]

    averaged = crop_averaged(first_sample, x, 5)
    starts = [0, 0, 25, 50, 75, 100]  # the whole trial, then the crops
    torch.testing.assert_close(averaged, torch.stack([x[..., s] for s in starts]).mean(0))
    seen = []
    crop_averaged(lambda b: seen.append(b.shape[-1]) or b.sum(-1), x, 5)
    assert seen == [400] + [300] * 5
    assert torch.equal(crop_averaged(first_sample, x, 0), x[..., 0])
    assert torch.equal(crop_averaged(first_sample, x[..., :150], 5), x[..., 0])  # one window
    torch.testing.assert_close(crop_averaged(first_sample, x, 1), x[..., 0])


def test_phase_randomized_keeps_each_frequency_s_cross_spectrum_and_changes_the_time_course():
    from leaf_sk.nn import phase_randomized

    torch.manual_seed(0)
    x = torch.randn(3, 4, 400, dtype=torch.float64)
    phases = torch.rand(3, 201, dtype=torch.float64) * 2 * torch.pi
    surrogate = phase_randomized(x, phases)
    before, after = torch.fft.rfft(x), torch.fft.rfft(surrogate)
    cross = lambda s: s[:, :, None] * s[:, None, :].conj()  # noqa: E731
    assert torch.allclose(cross(after), cross(before), atol=1e-9)
    assert surrogate.dtype == x.dtype and (surrogate - x).abs().mean() > 0.5
    assert torch.allclose(phase_randomized(x, torch.zeros_like(phases)), x, atol=1e-12)
    with pytest.raises(ValueError, match="phases must have shape"):
        phase_randomized(x, phases[:, :-1])
