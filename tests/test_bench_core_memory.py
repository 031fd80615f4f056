"""bench/core_memory.py's extrapolation to 24 layers (no measurement: synthetic peaks)."""

from __future__ import annotations

import pytest

from bench.core_memory import FULL_LAYERS, _fit_line, longest_response


def test_fit_line_recovers_a_line():
    intercept, slope, residual = _fit_line([(1, 5.0), (2, 7.0), (4, 11.0)])
    assert (intercept, slope) == pytest.approx((3.0, 2.0))
    assert residual == pytest.approx(0.0, abs=1e-12)


def test_longest_response_extrapolates_linearly_in_layers_and_length():
    """Peaks a + L·(b + c·layers): the 24-layer slope is b + 24c, and the longest response
    fills the memory left after the model's weights."""

    def peak(path, layers, length):
        base, per_layer = (0.8, 0.1) if path == "full_logits" else (0.05, 0.1)
        return 100.0 + 10 * layers + length * (base + per_layer * layers)

    measurements = [
        {"path": p, "layers": k, "response_tokens": n, "peak_extra_mb": peak(p, k, n)}
        for p in ("full_logits", "fused")
        for k in (1, 2)
        for n in (256, 512, 1024)
    ]
    memory_mb = 24_000.0
    out = longest_response(measurements, memory_mb)
    weights = out["model_weights_mb"]
    assert 1_800 < weights < 1_900  # 494 M float32 parameters, the embedding tied to the head
    for path, base in (("full_logits", 0.8), ("fused", 0.05)):
        slope = base + 0.1 * FULL_LAYERS
        assert out[path]["mb_per_token_24_layers"] == pytest.approx(slope, abs=1e-4)
        assert out[path]["intercept_mb_24_layers"] == pytest.approx(100 + 10 * FULL_LAYERS)
        expected = int((memory_mb - weights - 100 - 10 * FULL_LAYERS) / slope)
        assert abs(out[path]["longest_response_tokens"] - expected) <= 1
    assert out["ratio_fused_over_full_logits"] > 1
