"""`make demo`: does LEAF beat what you run today? LEAF beside the SSVEP baselines, on real EEG.

Runs ``leaf-sk benchmark Kalunga2016`` on the test subjects 9-11 of leaf-sk's split:
within-session (5-fold cross-validation inside each subject's session) and cross-subject
(trained on subjects 1-8, tested on each of 9-11), with the packaged checkpoint ``leaf-small-bci``
(trained with labels on subjects 1-8 only). Prints the comparison table and the path of the plot;
the scores, tables and plots go to ``results/demo``. A second run reuses the scores there
(delete the folder to start over).

The recordings come from ``../shared/data`` when it is there, else from ``MNE_DATA`` or
MOABB's download (about 70 MB). About 14 minutes on 2 CPU cores (about 16 from a fresh clone,
install included).
"""

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "mne_data"
FOLDER = "MNE-ssvepexo-data"  # where MOABB keeps Kalunga2016, under MNE_DATA


def _data_folder():
    """Where MOABB looks for Kalunga2016 (MNE_DATA, else the MNE default ``~/mne_data``)."""
    return Path(os.environ.get("MNE_DATA", Path.home() / "mne_data")).expanduser()


def main(out=ROOT / "results" / "demo"):
    if "MNE_DATA" not in os.environ and (SHARED / FOLDER).is_dir():
        os.environ["MNE_DATA"] = str(SHARED)
    os.environ.setdefault("MOABB_DOWNLOAD_PROVIDER", "upstream")  # no minute of NEMAR retries
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    had_data = (_data_folder() / FOLDER).is_dir()
    if not had_data:
        print(f"Kalunga2016 is not in {_data_folder()}; MOABB downloads it there (about 70 MB).",
              flush=True)
    from leaf_sk.cli import main as leaf_sk

    start = time.time()
    status = leaf_sk(["benchmark", "Kalunga2016", "--subjects", "9-11", "--train-subjects", "1-8",
                      "--evaluation", "both", "--checkpoint", "leaf-small-bci",
                      "--out", str(out)])
    if status == 2 and not had_data:
        print("\nmake demo needs the Kalunga2016 recordings: put this repository beside shared/ "
              "(../shared/data/mne_data), or set MNE_DATA to a MOABB data folder that holds "
              f"{FOLDER}/, or run it again with internet access so that MOABB can download them.")
        return 0
    if status == 0:
        print(f"\ndemo done in {time.time() - start:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
