"""MNE's motor-imagery CSP example, with LeafEncoder in place of CSP, on ``mne.Epochs``.

MNE's example "Motor imagery decoding from EEG data using the Common Spatial Pattern (CSP)"
decodes imagined hands against feet in PhysioNet subject 1 (runs 6, 10, 14), band-passed
7-30 Hz, from 1 s to 2 s after the cue, with 10 shuffle splits. This script follows its
steps and scores two pipelines on the same folds: MNE's CSP + LDA, and LeafEncoder +
logistic regression, both given the Epochs themselves (scikit-learn splits them).

Subject 1's left- and right-hand runs, with their labels, were in the instruction tuning of the
packaged checkpoint (these hands-against-feet runs were not), so the LEAF score here shows that
the pipeline runs, not how LEAF does on new subjects (benchmarks/RESULTS.md).

Run with the shared recordings: ``MNE_DATA=../shared/data/mne_data python
examples/mne_csp_example_with_leaf.py``.
"""

import mne
import numpy as np
from mne.datasets import eegbci
from mne.decoding import CSP
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import ShuffleSplit, cross_val_score
from sklearn.pipeline import make_pipeline

from leaf_sk import LeafEncoder


def load_epochs(subject=1, runs=(6, 10, 14)):
    """Hands (label 0) against feet (label 1) imagery, 7-30 Hz, 1-2 s after the cue."""
    files = eegbci.load_data(subject, list(runs), update_path=False)
    raw = mne.concatenate_raws([mne.io.read_raw_edf(f, preload=True, verbose="error") for f in files])
    eegbci.standardize(raw)
    raw.set_montage(mne.channels.make_standard_montage("standard_1005"))
    raw.annotations.rename(dict(T1="hands", T2="feet"))
    raw.set_eeg_reference(projection=True, verbose="error")
    raw.filter(7.0, 30.0, fir_design="firwin", skip_by_annotation="edge", verbose="error")
    picks = mne.pick_types(raw.info, meg=False, eeg=True, stim=False, eog=False, exclude="bads")
    epochs = mne.Epochs(raw, event_id=["hands", "feet"], tmin=-1.0, tmax=4.0, proj=True,
                        picks=picks, baseline=None, preload=True, verbose="error")
    return epochs.copy().crop(tmin=1.0, tmax=2.0), epochs.events[:, -1] - 2


def main():
    mne.set_log_level("warning")
    epochs, labels = load_epochs()
    cv = ShuffleSplit(10, test_size=0.2, random_state=42)
    pipelines = {
        "CSP + LDA": make_pipeline(CSP(n_components=4, reg=None, log=True, norm_trace=False),
                                   LinearDiscriminantAnalysis()),
        "LeafEncoder + LR": make_pipeline(LeafEncoder(), LogisticRegression(max_iter=1000)),
    }
    print(f"{len(epochs)} trials, {len(epochs.ch_names)} channels; majority class "
          f"{max(np.mean(labels == 0), np.mean(labels == 1)):.2f}")
    for name, pipeline in pipelines.items():
        # CSP takes arrays; LeafEncoder takes the Epochs, whose channel names and rate it reads.
        X = epochs.get_data(copy=False) if name.startswith("CSP") else epochs
        scores = cross_val_score(pipeline, X, labels, cv=cv)
        print(f"{name}: accuracy {scores.mean():.3f} ± {scores.std():.3f} over {len(scores)} splits")


if __name__ == "__main__":
    main()
