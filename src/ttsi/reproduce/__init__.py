"""`ttsi reproduce`: a plan of cells (benchmark:split x method x settings x seeds) run locally or on Ray, one report."""
