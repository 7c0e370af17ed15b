"""`make pretrain-demo`: STR-pretrain a small LEAF Tower for a few minutes on real EEG and print its loss curve.

Uses the PhysioNet motor-imagery subjects 1-3, 5-14 (training side of our split) from
../shared/data, band-passed 0.5-45 Hz and cut into 4-s segments, then reports the losses on
held-out subject 15 next to the loss of predicting zeros. About 3 minutes on 2 CPU cores
(set LEAF_DEMO_EPOCHS to change the 30 epochs).
"""

import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mne_data"


def main():
    if "MNE_DATA" not in os.environ:
        if not DATA.is_dir():
            sys.exit(f"make pretrain-demo needs the recordings of ../shared/data (looked in {DATA.name}/ beside "
                     "the repository); set MNE_DATA to a folder laid out for MOABB.")
        os.environ["MNE_DATA"] = str(DATA)
    os.environ.setdefault("MOABB_DOWNLOAD_PROVIDER", "upstream")
    warnings.filterwarnings("ignore")
    import mne

    mne.set_log_level("ERROR")

    from leaf_sk import LeafPretrainer
    from leaf_sk.datasets import band_pass, load_moabb_raws

    train_subjects = [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    print(f"loading PhysioNet MI subjects {train_subjects} (train) and 15 (held out) ...", flush=True)
    train = band_pass(load_moabb_raws("PhysionetMI", train_subjects), 0.5, 45.0)
    held_out = band_pass(load_moabb_raws("PhysionetMI", [15]), 0.5, 45.0)
    pretrainer = LeafPretrainer("small", max_epochs=int(os.environ.get("LEAF_DEMO_EPOCHS", 30)),
                                batch_size=64, lr=1e-3, lr_tokenizer=3e-3, verbose=0, random_state=0)
    start = time.time()
    pretrainer.fit(train)
    print(f"\npretrained {len(pretrainer.history_)} epochs in {time.time() - start:.0f} s "
          f"({pretrainer.windows_per_second_:.0f} training windows/s)\n")
    print("epoch  train L_S  train L_T   valid L_S  valid L_T   (predicting zeros: L_S, L_T)")
    for row in pretrainer.history_:
        print(f"{row['epoch']:5d}  {row['train_L_S']:9.3f}  {row['train_L_T']:9.3f}   "
              f"{row.get('valid_L_S', float('nan')):9.3f}  {row.get('valid_L_T', float('nan')):9.3f}   "
              f"({row.get('valid_zero_S', float('nan')):.3f}, {row.get('valid_zero_T', float('nan')):.3f})")
    losses = pretrainer.loss(held_out)
    print(f"\nheld-out subject 15: L_S {losses['L_S']:.3f} (zeros {losses['zero_S']:.3f}), "
          f"L_T {losses['L_T']:.3f} (zeros {losses['zero_T']:.3f})")


if __name__ == "__main__":
    main()
