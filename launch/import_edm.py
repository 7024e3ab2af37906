"""Import an NVlabs EDM network pickle as a run directory this package distils from and opens.

    python launch/import_edm.py --pkl=edm-cifar10-32x32-uncond-vp.pkl --out=teachers/edm_vp
    python -m consistency.main --config=configs/cifar_ecm.py --config.teacher.workdir=teachers/edm_vp

Reads the release files (``edm-*.pkl``) and training snapshots (``network-snapshot-*.pkl``): the network under
'ema', without NVlabs' code and without torch (``consistency/core/edm_pickle.py``: a restricted unpickler that rebuilds
only tensors and EDM's network classes, never executing the source a pickle carries). Writes ``--out``:
``config.json`` (an 'edm' run: ``config.model`` = the pickle's 'ddpmpp' | 'ncsnpp' | 'adm' network), an Orbax
checkpoint (step 0) whose sampling EMA holds the weights, and ``edm_import.json`` (the pickle's sha256, class names
and init kwargs). ``consistency.load(OUT).denoise(x, sigma, labels)`` is the imported D(x; σ).

Any other file (another pickle, a truncated one, an unknown network class, a global outside EDM's): one line on
stderr, exit status 2, nothing written.
"""
from __future__ import annotations

import json
import sys

from absl import app, flags, logging

_PKL = flags.DEFINE_string("pkl", "", "An EDM network pickle: edm-*.pkl or network-snapshot-*.pkl.")
_OUT = flags.DEFINE_string("out", "", "The run directory to create (must not exist or be empty).")
_DATA = flags.DEFINE_string("data", "", "The tfds dataset the network was trained on (default: CIFAR-10 for "
                            "32×32×3, imagenet_resized/64x64 for 64×64×3 with 1000 labels).")


def fail(message: str) -> None:
    """One line ``error: <message>`` on stderr, exit status 2 (as ``python -m consistency.main``)."""
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    sys.stderr.flush()
    sys.exit(2)


def main(argv):
    from consistency.core.errors import ConfigError
    if len(argv) > 1:
        fail(f"import_edm: unexpected arguments {argv[1:]}; use --pkl=FILE --out=DIR")
    if not _PKL.value or not _OUT.value:
        fail("import_edm: --pkl=FILE and --out=DIR are required, e.g. --pkl=edm-cifar10-32x32-uncond-vp.pkl "
             "--out=teachers/edm_vp")
    logging.set_verbosity(logging.WARNING)      # Orbax's INFO lines; the result is the one JSON line below
    try:
        from consistency.tools import edm_import
        out = edm_import.import_edm(_PKL.value, _OUT.value, _DATA.value)
    except ConfigError as e:
        fail(str(e))
    with open(f"{out}/config.json") as f:
        model = json.load(f)["model"]
    print(json.dumps({"out": out, "model": model["name"], "channels": model["channels"],
                      "num_classes": model["num_classes"]}))


def flags_or_exit(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(f"import_edm: {e}")


if __name__ == "__main__":
    app.run(main, flags_parser=flags_or_exit)
