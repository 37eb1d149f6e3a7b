"""Derive the SealShift benchmark (ttsi/data/sealshift) from Seal-Tools: `python scripts/derive_sealshift.py`."""

import argparse
import json
from pathlib import Path

from ttsi.benchmarks.base import resolve_data_dir
from ttsi.benchmarks.sealshift import SPLITS_DIR
from ttsi.sealshift.derive import derive, write

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=None, help="benchmark data directory (default: $TTSI_DATA_DIR)")
    parser.add_argument("--out", default=str(SPLITS_DIR))
    args = parser.parse_args()
    data_dir = resolve_data_dir(args.data_dir)
    provenance = write(derive(data_dir), data_dir, Path(args.out))
    print(json.dumps(provenance["counts"], indent=2))
