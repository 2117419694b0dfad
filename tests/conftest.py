"""Shared pytest setup: offline, deterministic, quiet; the one whole-workbook run the slow tests share."""

import os

# Nothing may reach a model hub, ever.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_workbook_run(tmp_path_factory):
    """One `labkit run` of the whole tiny workbook (the default profile), shared by the slow tests that read it:
    the browser check of every report, the held-out learning criteria, notebook 05's record and the two-runs
    reproducibility check. Read-only for them: a test that writes copies the run folder first."""
    from workbook_util import run_workbook

    return run_workbook(tmp_path_factory.mktemp("tiny_workbook") / "reports")
