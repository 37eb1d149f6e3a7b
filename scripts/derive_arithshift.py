"""Generate the ArithShift benchmark (ttsi/data/arithshift): `python scripts/derive_arithshift.py`."""

import argparse
import json
from pathlib import Path

from ttsi.arithshift.derive import SEED, derive, write
from ttsi.benchmarks.arithshift import SPLITS_DIR

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(SPLITS_DIR))
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    provenance = write(derive(args.seed), Path(args.out), args.seed)
    print(json.dumps(provenance["counts"], indent=2))
