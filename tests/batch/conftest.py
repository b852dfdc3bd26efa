"""Shared by the batch tests: one environment cache per session, so each spec is built once."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def env_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("envs")
