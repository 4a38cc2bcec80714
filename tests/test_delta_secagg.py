"""Pairwise masks (server/delta/secagg.py): one masked upload tells nothing; the sum is exact."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from server.delta import secagg


def masked_uploads(values: list, label: str = "0/agg(x)/sum", precision: int = 8) -> list[secagg.Masked]:
    keys = [secagg.keypair() for _ in values]
    out = []
    for i, value in enumerate(values):
        peers = {j: secagg.shared_secret(keys[i][0], keys[j][1]) for j in range(len(values)) if j != i}
        out.append(secagg.mask(value, i, peers, label, precision))
    return out


def test_masks_cancel_in_the_sum_of_series_arrays_and_scalars():
    series = [pd.Series([1.5, 200.0], index=["a", "b"]), pd.Series([10.0, -3.25], index=["a", "b"]),
              pd.Series([0.125, 7.0], index=["a", "b"])]
    ups = masked_uploads(series)
    total = ups[0] + ups[1] + ups[2]
    pd.testing.assert_series_equal(total.unmask(8), series[0] + series[1] + series[2])
    arrays = [np.array([[0.25, -1.0]], dtype=np.float32), np.array([[0.5, 2.0]], dtype=np.float32)]
    ups = masked_uploads(arrays)
    np.testing.assert_allclose((ups[0] + ups[1]).unmask(8), [[0.75, 1.0]])
    ups = masked_uploads([np.array(0.5), np.array(0.25)])
    assert (ups[0] + ups[1]).unmask(8).item() == 0.75


def test_one_masked_upload_does_not_show_its_value():
    values = [pd.Series([100.0, 200.0]), pd.Series([300.0, 400.0])]
    ups = masked_uploads(values)
    plain = np.round(values[0].to_numpy() * 1e8).astype(np.int64)
    assert not np.array_equal(ups[0].data.view(np.int64), plain)
    assert np.abs(ups[0].unmask(8).to_numpy() - values[0].to_numpy()).min() > 1e3


def test_values_it_cannot_sum_are_refused_with_a_reason():
    with pytest.raises(secagg.SecureAggregationError, match="finite"):
        masked_uploads([pd.Series([np.nan]), pd.Series([1.0])])
    with pytest.raises(secagg.SecureAggregationError, match="str"):
        masked_uploads(["text", "more"])


def test_bad_or_low_order_peer_keys_are_refused():
    private, public = secagg.keypair()
    assert len(bytes.fromhex(public)) == 32
    for bad in ("00" * 32, "01" + "00" * 31, "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
                "abcd", 12345):   # zero, order 1, order 8 (small-subgroup points), too short, not a key
        with pytest.raises(secagg.SecureAggregationError, match="not a valid X25519 key"):
            secagg.shared_secret(private, bad)
    other, other_public = secagg.keypair()
    assert secagg.shared_secret(private, other_public) == secagg.shared_secret(other, public)
