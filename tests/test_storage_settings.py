"""Settings are read from the environment at call time, with embedded defaults under the home dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import open_store, settings
from storage.local_store import LocalStore


def test_defaults_live_under_pixelwizard_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PIXELWIZARD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PIXELWIZARD_STORE_URL", raising=False)
    monkeypatch.delenv("PIXELWIZARD_DATABASE_URL", raising=False)

    assert settings.home_dir() == tmp_path / "home"
    assert settings.store_url() == str(tmp_path / "home" / "store")
    assert settings.database_url() == f"sqlite:///{tmp_path / 'home' / 'pixelwizard.db'}"
    store = open_store()
    assert isinstance(store, LocalStore) and store.root == tmp_path / "home" / "store"


def test_home_defaults_to_dot_pixelwizard(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PIXELWIZARD_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))

    assert settings.home_dir() == tmp_path / ".pixelwizard"


def test_env_overrides_store_and_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXELWIZARD_STORE_URL", "s3://bucket/prefix")
    monkeypatch.setenv("PIXELWIZARD_DATABASE_URL", "postgresql+psycopg://db.example/pixelwizard")

    assert settings.store_url() == "s3://bucket/prefix"
    assert settings.database_url() == "postgresql+psycopg://db.example/pixelwizard"
