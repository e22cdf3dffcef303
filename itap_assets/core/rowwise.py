"""Row-wise products that give every row the same bits whatever batch it is scored in.

The pipeline promises that a day scored alone equals the same day inside a longer run (daily runs equal one
backfill, content hash for content hash). OpenBLAS's gemm kernels do not: they round a row differently by its place
in the batch (on AMD EPYC with the Haswell kernels, a day scored alone differed from the same day of a two-day run
in the last bit; float64 products differ too, less often). numpy's own einsum loop sums every row's products in the
same order. It is 3-8x slower than BLAS per product on these small matrices (tens of columns), which the
`large` bench does not show end to end (205 s against 208 s with BLAS, same machine).
"""

from __future__ import annotations

import numpy as np


def row_products(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for a batch of rows ``a``: each output row depends on its own input row only, bit for bit."""
    return np.einsum("ij,jk->ik", a, b, optimize=False)
