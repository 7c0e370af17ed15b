"""The inference paths on real recordings: folded tokenizer and bfloat16 against the references.

Kalunga2016 SSVEP, held-out subject 9 (the packaged checkpoint never saw it).
"""

import numpy as np
import pytest
import torch
from conftest import use_shared_data

from leaf_sk import LeafEncoder, LeafInstructionClassifier
from leaf_sk.nn import members_of

pytest.importorskip("moabb")
pytestmark = [
    pytest.mark.data,
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

TEXTS = {"13": "13 Hz flicker", "17": "17 Hz flicker", "21": "21 Hz flicker", "rest": "Resting"}


@pytest.fixture(scope="module")
def kalunga_subject_9():
    monkeypatch = pytest.MonkeyPatch()
    use_shared_data(monkeypatch, "MNE-ssvepexo-data")
    from moabb.datasets import Kalunga2016
    from moabb.paradigms import SSVEP

    epochs, y, _ = SSVEP(n_classes=4).get_data(Kalunga2016(subjects=[9]), [9], return_epochs=True)
    monkeypatch.undo()
    return epochs, y


def test_folded_path_equals_the_release_layers_on_real_eeg(kalunga_subject_9):
    epochs, _ = kalunga_subject_9
    encoder = LeafEncoder(pooling="mean", device="cpu", precision="float32").fit(epochs)
    fused = encoder.transform(epochs)
    reference = []
    with torch.inference_mode():
        x = torch.from_numpy(encoder._template_data(epochs, fit=False))
        for member in members_of(encoder.model_):  # the default checkpoint is an ensemble
            tokens = member.tower.tokenizer.unfused(x)
            reference.append(torch.cat([member.tower.contextual(tokens),
                                        member.tower.causal(tokens)], dim=1).mean(dim=1))
    np.testing.assert_allclose(fused, torch.cat(reference, dim=1).numpy(), rtol=1e-4, atol=1e-4)


def _cosine(a, b):
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_bf16_matches_float32_on_real_eeg(kalunga_subject_9):
    epochs, y = kalunga_subject_9
    half = len(y) // 2
    train, test = epochs[:half], epochs[half:]
    embeddings, predictions = {}, {}
    for precision in ("float32", "bfloat16"):
        encoder = LeafEncoder(device="cpu", precision=precision).fit(train)
        embeddings[precision] = encoder.transform(test)
        classifier = LeafInstructionClassifier(
            instruction="which flicker frequency was attended", label_texts=TEXTS, max_epochs=10,
            device="cpu", precision=precision, random_state=0).fit(train, y[:half])
        predictions[precision] = classifier.predict(test)
    assert _cosine(embeddings["float32"], embeddings["bfloat16"]).min() > 0.999
    # Ten epochs of fine-tuning in each precision drift apart a little: a trial near the
    # boundary may flip (1 of 32 with the six-member checkpoint), a broken path flips most.
    assert np.mean(predictions["bfloat16"] == predictions["float32"]) >= 0.9
