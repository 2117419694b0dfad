"""Issue point 5: on the tiny profile the adapter beats its base on HELD-OUT data, for both architectures.

Runs the real workbook path (notebooks 02, 03 and 04 with the tiny defaults, through the runner) and reads
04_evaluation's metrics from the run manifest. The thresholds are the issue's criteria, never loosened.
"""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_tiny_profile_adapters_beat_their_bases_on_heldout(tmp_path):
    from labkit.report import run

    result = run("tiny", only="02,03,04", reports_dir=tmp_path, progress=False)
    notebooks = result.manifest["notebooks"]
    assert result.status == "ok", {k: v.get("status") for k, v in notebooks.items()}
    metrics = notebooks["04_evaluation"]["metrics"]
    for arch in ("llama", "baichuan"):
        base, adapter = metrics[arch]["base"], metrics[arch]["adapter"]
        assert adapter["response_loss"] < base["response_loss"], (arch, base, adapter)
        assert adapter["perplexity"] < base["perplexity"], (arch, base, adapter)
        assert adapter["exact_match"] > base["exact_match"], (arch, base, adapter)
        assert adapter["refusal_rate"] > 0.5, (arch, adapter)  # refuses most held-out negatives
        assert adapter["false_refusal_rate"] < 0.5, (arch, adapter)  # declines fewer than half of the positives
