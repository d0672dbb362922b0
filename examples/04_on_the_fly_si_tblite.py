"""On-the-fly learning of silicon with GFN1-xTB (tblite) as the reference.

Needs the ``xtb`` extra: ``pip install 'gapkit[xtb]'``. The same run from the
command line: ``gapkit learn si_otf.json`` with the config printed below.
"""

import json
import sys

try:
    from tblite.ase import TBLite  # noqa: F401
except ImportError:
    sys.exit("This example needs tblite: pip install 'gapkit[xtb]'")

from gapkit.active.runner import run_learning

config = {
    "mode": "otf",
    "model": {
        "descriptor": {"r_cut": 5.0, "n_max": 6, "l_max": 4, "sigma": 0.5},
        "n_sparse": 300,
        "sigma_energy": 0.002,
        "sigma_force": 0.05,
        "sigma_virial": 0.05,
        "random_state": 0,
    },
    "reference": {"name": "tblite", "method": "GFN1-xTB"},
    "structure": {
        "bulk": "Si",
        "crystalstructure": "diamond",
        "a": 5.43,
        "cubic": True,
        "repeat": [2, 2, 2],
    },
    "steps": 200,
    "timestep_fs": 1.0,
    "temperature_K": 1000,
    "thermostat": "langevin",
    "threshold": 0.15,
    "output": "si_otf.xyz",
}
print(json.dumps(config, indent=1))
run_learning(config)
