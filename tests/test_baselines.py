"""ShallowFBCSPNet and EEGNet: the networks (leaf_sk.nn.baselines) and their classifiers
(leaf_sk.baselines). Synthetic data only; every test takes a few seconds at most."""

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import clone

from leaf_sk.baselines import EEGNetClassifier, ShallowFBCSPNetClassifier
from leaf_sk.nn import EEGNet, ShallowFBCSPNet

CLASSIFIERS = [ShallowFBCSPNetClassifier, EEGNetClassifier]
SFREQ = 128.0
FAST = dict(sfreq=SFREQ, max_epochs=15, min_steps=0, batch_size=16, device="cpu",
            random_state=0)


def sinusoids(n_trials=64, n_chans=4, seconds=1.0, sfreq=SFREQ, n_classes=2, seed=0):
    """Trials in volts: a 10, 20 (or 30) Hz sinusoid of random phase in noise; labels 0, 1..."""
    rng = np.random.default_rng(seed)
    times = np.arange(int(seconds * sfreq)) / sfreq
    y = np.arange(n_trials) % n_classes
    rng.shuffle(y)
    phase = rng.uniform(0, 2 * np.pi, (n_trials, 1, 1))
    signal = np.sin(2 * np.pi * (10.0 * (1 + y))[:, None, None] * times + phase)
    X = 1e-5 * (signal + 0.5 * rng.standard_normal((n_trials, n_chans, len(times))))
    return X, y


# --- the networks ---------------------------------------------------------------------------


@pytest.mark.parametrize("network", [ShallowFBCSPNet, EEGNet])
def test_network_output_shape(network):
    module = network(5, 3, 160, **network.lengths_at(160.0)).eval()
    assert module(torch.randn(7, 5, 160)).shape == (7, 3)


def test_lengths_keep_the_papers_durations():
    assert ShallowFBCSPNet.lengths_at(250.0) == {"filter_time_length": 25,
                                                 "pool_time_length": 75, "pool_time_stride": 15}
    assert ShallowFBCSPNet.lengths_at(160.0) == {"filter_time_length": 16,
                                                 "pool_time_length": 48, "pool_time_stride": 10}
    assert EEGNet.lengths_at(128.0) == {"kernel_length": 64, "pool1": 4}
    assert EEGNet.lengths_at(256.0) == {"kernel_length": 128, "pool1": 8}


def test_too_short_trials_are_refused():
    with pytest.raises(ValueError, match="ShallowFBCSPNet needs trials of at least 99 samples"):
        ShallowFBCSPNet(4, 2, 98)
    with pytest.raises(ValueError, match="EEGNet needs trials of at least pool1 \\* pool2 = 32"):
        EEGNet(4, 2, 31)


def test_shallow_combined_kernel_is_the_two_convolutions():
    torch.manual_seed(0)
    module = ShallowFBCSPNet(3, 2, 120, n_filters_time=4, n_filters_spat=5, filter_time_length=7)
    with torch.no_grad():
        module.temporal_bias.normal_()
    x = torch.randn(2, 3, 120)
    combined = torch.einsum("sfc,fk->sck", module.spatial_weight, module.temporal_weight[:, 0])
    bias = torch.einsum("sfc,f->s", module.spatial_weight, module.temporal_bias)
    # plain order: each channel through the temporal filters, then the spatial filters
    temporal = F.conv1d(x.reshape(6, 1, 120), module.temporal_weight, module.temporal_bias)
    plain = torch.einsum("sfc,bcft->bst", module.spatial_weight, temporal.reshape(2, 3, 4, -1))
    assert torch.allclose(F.conv1d(x, combined, bias), plain, atol=1e-5)


def _plain_eegnet_front(module, x):
    """EEGNet's first layers in the paper's order: temporal conv, batch norm, spatial conv."""
    k = module.temporal.kernel_size[1]
    h = module.temporal(F.pad(x, ((k - 1) // 2, k // 2)).unsqueeze(1))
    return module.spatial(module.batch_norm1(h))[:, :, 0]


@pytest.mark.parametrize("n_times, kernel_length", [(40, 8), (33, 7), (12, 30), (20, 1)])
def test_eegnet_spatial_first_equals_the_papers_order(n_times, kernel_length):
    # Outputs, gradients and running statistics, in training and in evaluation mode.
    torch.manual_seed(0)
    kwargs = dict(kernel_length=kernel_length, pool1=2, pool2=2)
    module = EEGNet(5, 2, n_times, **kwargs).double()
    with torch.no_grad():
        module.batch_norm1.weight.uniform_(0.5, 1.5)
        module.batch_norm1.bias.normal_()
    reference = EEGNet(5, 2, n_times, **kwargs).double()
    reference.load_state_dict(module.state_dict())
    x = 3 * torch.randn(6, 5, n_times, dtype=torch.double) + 1
    ours, plain = module._temporal_norm_spatial(x), _plain_eegnet_front(reference, x)
    torch.testing.assert_close(ours, plain)
    parameters = ["temporal.weight", "spatial.weight", "batch_norm1.weight"]
    grads = [torch.autograd.grad((out * torch.cos(out)).sum(),
                                 [dict(net.named_parameters())[p] for p in parameters])
             for out, net in ((ours, module), (plain, reference))]
    for mine, theirs in zip(*grads):
        torch.testing.assert_close(mine, theirs)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(module.batch_norm1, name),
                                   getattr(reference.batch_norm1, name))
    module.eval(), reference.eval()
    torch.testing.assert_close(module._temporal_norm_spatial(x), _plain_eegnet_front(reference, x))


def test_eegnet_max_norm_constraints():
    module = EEGNet(4, 2, 64, kernel_length=16)
    with torch.no_grad():
        module.spatial.weight.mul_(100)
        module.classifier.weight.mul_(100)
    module(torch.randn(2, 4, 64))
    assert module.spatial.weight.flatten(1).norm(dim=1).max() <= 1.0 + 1e-5
    assert module.classifier.weight.norm(dim=1).max() <= 0.25 + 1e-5


# --- the classifiers ------------------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSIFIERS)
def test_learns_separable_sinusoids(cls):
    X, y = sinusoids(seed=0)
    X_test, y_test = sinusoids(seed=1)
    model = cls(**FAST).fit(X, y)
    assert (model.predict(X_test) == y_test).mean() >= 0.9
    assert model.history_[-1]["train_loss"] < model.history_[0]["train_loss"]
    assert len(model.history_) == FAST["max_epochs"]


def test_min_steps_adds_epochs_to_fits_on_few_trials():
    X, y = sinusoids(n_trials=32)
    model = EEGNetClassifier(**{**FAST, "max_epochs": 2, "min_steps": 12}).fit(X, y)
    assert len(model.history_) == 6  # 32 trials in batches of 16: 2 steps an epoch
    assert EEGNetClassifier().min_steps == 600 and ShallowFBCSPNetClassifier().min_steps == 0


@pytest.mark.parametrize("cls", CLASSIFIERS)
def test_outputs_shapes_and_labels(cls):
    X, y = sinusoids(n_trials=24, n_classes=3)
    labels = np.array(["a", "b", "c"])[y]
    model = cls(**{**FAST, "max_epochs": 1}).fit(X, labels)
    assert list(model.classes_) == ["a", "b", "c"]
    proba = model.predict_proba(X[:5])
    assert proba.shape == (5, 3) and np.allclose(proba.sum(1), 1)
    assert model.decision_function(X[:5]).shape == (5, 3)
    assert set(model.predict(X)) <= {"a", "b", "c"}
    binary = cls(**{**FAST, "max_epochs": 1}).fit(X[y < 2], y[y < 2])
    scores = binary.decision_function(X[:5])
    assert scores.shape == (5,)
    np.testing.assert_array_equal(binary.predict(X[:5]), binary.classes_[(scores > 0).astype(int)])


@pytest.mark.parametrize("cls", CLASSIFIERS)
def test_seeded_fits_are_identical_and_leave_the_global_rng_alone(cls):
    X, y = sinusoids(n_trials=32)
    state = torch.random.get_rng_state()
    first = cls(**{**FAST, "max_epochs": 2}).fit(X, y).predict_proba(X)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = cls(**{**FAST, "max_epochs": 2}).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, again)
    other = cls(**{**FAST, "max_epochs": 2, "random_state": 1}).fit(X, y).predict_proba(X)
    assert not np.allclose(first, other)


@pytest.mark.parametrize("cls", CLASSIFIERS)
def test_sklearn_api_clone_params_pickle(cls):
    model = cls(**{**FAST, "max_epochs": 1})
    params = model.get_params()
    assert params["sfreq"] == SFREQ and params["random_state"] == 0
    copy = clone(model)
    assert copy.get_params() == params
    model.set_params(lr=0.01, standardize="channel")
    assert model.lr == 0.01
    with pytest.raises(ValueError, match="Invalid parameter 'lrr'"):
        model.set_params(lrr=1)
    X, y = sinusoids(n_trials=16)
    model.fit(X, y)
    assert model.channel_scale_.shape == (4,)
    assert not hasattr(clone(model), "module_")
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict_proba(X), model.predict_proba(X))


def test_epochs_give_the_same_model_as_arrays_with_sfreq():
    import mne

    X, y = sinusoids(n_trials=16)
    epochs = mne.EpochsArray(X, mne.create_info(4, SFREQ, "eeg"), verbose=False)
    from_epochs = EEGNetClassifier(**{**FAST, "sfreq": None, "max_epochs": 1}).fit(epochs, y)
    from_arrays = EEGNetClassifier(**{**FAST, "max_epochs": 1}).fit(X, y)
    assert from_epochs.sfreq_ == SFREQ
    np.testing.assert_array_equal(from_epochs.predict_proba(epochs),
                                  from_arrays.predict_proba(X))


@pytest.mark.parametrize("cls", CLASSIFIERS)
def test_bad_input_says_what_to_pass(cls):
    X, y = sinusoids(n_trials=16)
    model = cls(**FAST)
    with pytest.raises(ValueError, match=r"takes X of shape \(n_trials, n_channels, n_times\), "
                                         r"got an array of shape \(16, 512\)"):
        model.fit(X.reshape(16, -1), y)
    with pytest.raises(ValueError, match="y has one class"):
        model.fit(X, np.zeros(16))
    with pytest.raises(ValueError, match="X has 16 trials but y has 15 labels"):
        model.fit(X, y[:15])
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.fit(np.where(X > 1e-5, np.nan, X), y)
    with pytest.raises(ValueError, match="max_epochs"):
        cls(max_epochs=0).fit(X, y)
    model.set_params(max_epochs=1).fit(X, y)
    with pytest.raises(ValueError, match=r"trials of 3 channels x 128 samples, but .* was fitted "
                                         r"on 4 x 128"):
        model.predict(X[:, :3])
