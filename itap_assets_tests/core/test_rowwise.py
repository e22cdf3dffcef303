import numpy as np
import pytest

from itap_assets.core.rowwise import row_products


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4_320, 84, 20), (4_320, 20, 84), (300, 84, 84), (50, 3, 1)])
def test_a_rows_product_has_the_same_bits_in_every_batch(dtype, shape):
    n, p, k = shape
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(n, p)).astype(dtype), rng.normal(size=(p, k)).astype(dtype)
    whole = row_products(a, b)
    np.testing.assert_allclose(whole, a @ b, rtol=1e-4, atol=1e-4)
    # a day alone, every third row, one row: the subsets whose BLAS products differed from the whole batch's
    for rows in (np.arange(n // 2, n), np.arange(7, n, 3), np.arange(1, 2)):
        np.testing.assert_array_equal(row_products(np.ascontiguousarray(a[rows]), b), whole[rows])
