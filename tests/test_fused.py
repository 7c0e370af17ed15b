"""The eval-mode tokenizer: one folded filter bank against the release's layers."""

import copy
import pickle

import numpy as np
import pytest
import torch

from leaf_sk.nn import LeafConfig, Tokenizer, Tower


def _tokenizer(size, seed=0):
    torch.manual_seed(seed)
    tok = Tokenizer(LeafConfig.from_size(size))
    norm = tok.enc_conv[2]
    with torch.no_grad():
        # Statistics and affine parameters away from their identity initial values, so that
        # a wrong fold of the BatchNorm shows.
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
    return tok.eval()


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
@pytest.mark.parametrize("n_trials", [1, 3, 20])
def test_folded_tokens_equal_the_two_convolutions(size, n_trials):
    tok = _tokenizer(size)
    x = torch.randn(n_trials, 65, 800) * 2
    with torch.inference_mode():
        folded, reference = tok(x), tok.unfused(x)
    assert folded.shape == reference.shape == (n_trials, 8, tok.config.token_dim)
    torch.testing.assert_close(folded, reference, rtol=1e-4, atol=1e-4)


def test_folded_tower_equals_the_unfused_tower():
    torch.manual_seed(0)
    tower = Tower(LeafConfig.from_size("small")).eval()
    x = torch.randn(4, 65, 1200)
    with torch.inference_mode():
        fused = tower(x)
        tokens = tower.tokenizer.unfused(x)
        reference = torch.cat([tower.contextual(tokens), tower.causal(tokens)], dim=1)
    torch.testing.assert_close(fused, reference, rtol=1e-4, atol=1e-4)


def _log_power_by_convolution(tok, x, eps=1e-6):
    return torch.log(tok.filter_outputs(x).var(dim=-1) + eps)


@pytest.mark.parametrize("size,kernel", [("tiny", 40), ("tiny", 41), ("small", 40)])
def test_tokens_and_log_power_from_one_product_equal_each_apart(size, kernel):
    torch.manual_seed(0)
    tok = Tokenizer(LeafConfig.from_size(size, temporal_kernel=kernel))
    with torch.no_grad():
        tok.enc_conv[2].weight.uniform_(-1.5, 1.5)   # negative scales too
        tok.enc_conv[2].running_var.uniform_(0.5, 2)
    tok.eval()
    x = torch.randn(5, 65, 600) * 3
    with torch.inference_mode():
        tokens, power = tok.tokens_and_log_power(x)
        reference = _log_power_by_convolution(tok, x)
        assert torch.equal(tokens, tok(x))
        assert torch.equal(power, tok.log_power(x))
        torch.testing.assert_close(tokens, tok.unfused(x), rtol=1e-4, atol=1e-4)
    assert power.shape == reference.shape == (5, 6, tok.config.n_filters)
    torch.testing.assert_close(power, reference, rtol=1e-4, atol=1e-4)
    # Each trial's outputs are those it gets alone.
    with torch.inference_mode():
        alone = [tok.tokens_and_log_power(x[i:i + 1]) for i in range(len(x))]
    assert torch.equal(tokens, torch.cat([t for t, _ in alone]))
    assert torch.equal(power, torch.cat([p for _, p in alone]))
    # bfloat16 autocast: float32 power within bfloat16's rounding of the float32 one.
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        power_bf16 = tok.log_power(x)
    assert power_bf16.dtype == torch.float32
    torch.testing.assert_close(power_bf16, reference, rtol=0.02, atol=0.02)
    # An input gradient (saliency) flows through the band power.
    x.requires_grad_(True)
    tok.log_power(x).sum().backward()
    assert x.grad.abs().sum() > 0


def test_log_power_is_computed_apart_in_training_and_for_a_vanishing_batchnorm_scale():
    tok = _tokenizer("tiny")
    x = torch.randn(3, 65, 400)
    with torch.no_grad():
        tok.enc_conv[2].weight[1] = 0.0         # filter 1's folded output is a constant
        tokens, power = tok.tokens_and_log_power(x)
        reference = _log_power_by_convolution(tok, x)
    assert torch.isfinite(power).all()
    assert torch.equal(power, reference) and torch.equal(tokens, tok(x))
    tok.train()
    tokens, power = tok.tokens_and_log_power(x)
    assert torch.equal(power, _log_power_by_convolution(tok, x))
    power.sum().backward()
    assert tok.enc_conv[0].weight.grad.abs().sum() > 0


def test_bank_is_kept_until_a_weight_changes():
    tok = _tokenizer("tiny")
    x = torch.randn(2, 65, 400)
    with torch.inference_mode():
        bank, _ = tok.folded_bank()
        assert tok.folded_bank()[0] is bank
        before = tok(x)
    with torch.no_grad():
        tok.enc_conv[1].weight.mul_(2)          # in place, as an optimizer step
    with torch.inference_mode():
        assert tok.folded_bank()[0] is not bank
        after = tok(x)
        torch.testing.assert_close(after, tok.unfused(x), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(before, after)
    state = copy.deepcopy(_tokenizer("tiny", seed=1).state_dict())
    tok.load_state_dict(state)                  # copied in place
    with torch.inference_mode():
        torch.testing.assert_close(tok(x), tok.unfused(x), rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        tok.enc_conv[2].running_var.fill_(4.0)  # a BatchNorm statistic
    with torch.inference_mode():
        torch.testing.assert_close(tok(x), tok.unfused(x), rtol=1e-4, atol=1e-5)


def test_bank_is_not_pickled_and_gradients_flow_in_eval_mode():
    tok = _tokenizer("tiny")
    x = torch.randn(2, 65, 400)
    with torch.inference_mode():
        tok(x)
    assert "_fold_cache" in tok.__dict__
    assert "_fold_cache" not in pickle.loads(pickle.dumps(tok)).__dict__
    assert "_fold_cache" not in tok.state_dict()
    # With gradients the bank is computed from the parameters in the graph.
    tok(x).sum().backward()
    assert tok.enc_conv[0].weight.grad is not None and tok.enc_conv[0].weight.grad.abs().sum() > 0
    # An input gradient (saliency) through a bank cached under inference mode.
    tok.requires_grad_(False)
    with torch.inference_mode():
        tok(x)
    x.requires_grad_(True)
    tok(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_warm_start_refit_uses_the_new_weights(make_estimator, make_trials):
    from leaf_sk import LeafInstructionClassifier

    X, y = make_trials(n_trials=8)
    clf = make_estimator(LeafInstructionClassifier, warm_start=True, lr_tokenizer=0.1,
                         max_epochs=1).fit(X, y)
    tokenizer = clf.module_.model.tower.tokenizer
    first = clf.decision_function(X)
    cached = tokenizer.__dict__["_fold_cache"][2]
    clf.fit(X, y)                                  # trains the same module further, in place
    assert clf.module_.model.tower.tokenizer is tokenizer
    second = clf.decision_function(X)
    assert tokenizer.__dict__["_fold_cache"][2] is not cached
    assert not np.allclose(first, second)
    # The cached bank is the one of the current weights.
    with torch.inference_mode():
        torch.testing.assert_close(tokenizer.folded_bank()[0], tokenizer._fold()[0])
        assert not torch.equal(tokenizer.folded_bank()[0], cached)
