"""On the tiny profile the adapter beats its base on HELD-OUT data, for both architectures, by the workbook's
targets: exact match >= 0.6, refusals >= 0.9, false refusals <= 0.05, and above the base on every task row.

Reads 04_evaluation's metrics from the manifest of the shared whole-workbook run (conftest's
`tiny_workbook_run`: `labkit run` with the tiny defaults, notebooks 02 and 03 training, 04 evaluating).
The thresholds are the issue's criteria, never loosened.
"""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_tiny_profile_adapters_beat_their_bases_on_heldout(tiny_workbook_run):
    manifest = json.loads((tiny_workbook_run / "manifest.json").read_text())
    notebooks = manifest["notebooks"]
    assert manifest["status"] == "ok", {k: v.get("status") for k, v in notebooks.items()}
    assert manifest["profile"] == "tiny", manifest["profile"]
    metrics = notebooks["04_evaluation"]["metrics"]
    for arch in ("llama", "baichuan"):
        base, adapter = metrics[arch]["base"], metrics[arch]["adapter"]
        assert adapter["response_loss"] < base["response_loss"], (arch, base, adapter)
        assert adapter["perplexity"] < base["perplexity"], (arch, base, adapter)
        assert adapter["exact_match"] >= 0.6 > base["exact_match"], (arch, base, adapter)
        assert adapter["refusal_rate"] >= 0.9, (arch, adapter)  # refuses the held-out negatives
        assert adapter["false_refusal_rate"] <= 0.05, (arch, adapter)  # and almost never a held-out task
        assert metrics[arch]["tasks_not_above_base"] == [], (arch, metrics[arch]["tasks_not_above_base"])
        assert adapter["n_examples"] == 248  # every held-out example of tasks_test and negatives_test
