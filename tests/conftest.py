import os

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MILIMO_RETRY_BACKOFF_S", "0.2")  # retries back off quickly in tests

import pytest  # noqa: E402

from milimo_engine import ModelLedger, ShotRequest, TwoStagePipeline, build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The tiny random LTX-2 bundle, built once per test session through the public builder."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def ledger(tiny_model_dir):
    return ModelLedger.open(tiny_model_dir)


@pytest.fixture(scope="session")
def pipeline(ledger):
    return TwoStagePipeline(ledger, progress=False)


@pytest.fixture
def request_256():
    """Small and quick: 256x256 (stage 1 at 128x128), 25 frames, few steps."""
    return ShotRequest(prompt="a lighthouse on a cliff at dusk", negative_prompt="blurry", seed=7,
                       width=256, height=256, num_frames=25, fps=24.0, steps=4)


@pytest.fixture(scope="session")
def prefect_api():
    """One Prefect server for the whole session (start-up ~10 s); yields its API URL for subprocesses."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield PREFECT_API_URL.value()
