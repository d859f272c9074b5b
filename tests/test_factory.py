"""storage_from_env: KOREA_INVESTMENT_TOKEN_STORAGE picks the store; file is the default."""

from __future__ import annotations

import pytest

from korea_investment_stock import ConfigurationError, FileTokenStorage, KoreaInvestment, storage_from_env
from korea_investment_stock.token.factory import STORAGE_CHOICES

from .workers import ACCOUNT


def test_file_is_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("KOREA_INVESTMENT_TOKEN_FILE", str(tmp_path / "t.key"))
    storage = storage_from_env()
    assert isinstance(storage, FileTokenStorage)
    assert storage.file_path == tmp_path / "t.key"


@pytest.mark.parametrize("value", ["file", "FILE", " File ", ""])
def test_file_spellings(monkeypatch, value):
    monkeypatch.setenv("KOREA_INVESTMENT_TOKEN_STORAGE", value)
    assert isinstance(storage_from_env(), FileTokenStorage)


def test_explicit_mapping_wins_over_os_environ(tmp_path, monkeypatch):
    monkeypatch.setenv("KOREA_INVESTMENT_TOKEN_STORAGE", "bogus")
    monkeypatch.setenv("KOREA_INVESTMENT_TOKEN_FILE", str(tmp_path / "env.key"))
    storage = storage_from_env({"KOREA_INVESTMENT_TOKEN_STORAGE": "file"})
    assert isinstance(storage, FileTokenStorage)


@pytest.mark.parametrize("value", ["memcached", "files", "sqlite", "redis-cluster"])
def test_unknown_value_lists_the_choices(monkeypatch, value):
    monkeypatch.setenv("KOREA_INVESTMENT_TOKEN_STORAGE", value)
    with pytest.raises(ValueError) as info:
        storage_from_env()
    assert isinstance(info.value, ConfigurationError)
    text = str(info.value)
    assert value in text
    assert "KOREA_INVESTMENT_TOKEN_STORAGE" in text
    for choice in ("file", "redis"):
        assert choice in text
    assert set(STORAGE_CHOICES) == {"file", "redis"}


def test_client_uses_the_environment_storage(fake_kis, tmp_path, monkeypatch):
    path = tmp_path / "from-env" / "token.key"
    monkeypatch.setenv("KOREA_INVESTMENT_TOKEN_FILE", str(path))
    with KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, base_url=fake_kis.url) as client:
        assert isinstance(client.token_storage, FileTokenStorage)
        assert client.token_storage.file_path == path
    assert path.exists()
    assert fake_kis.stats.tokenp_requests == 1


def test_client_with_unknown_storage_fails_before_any_http(fake_kis, monkeypatch):
    monkeypatch.setenv("KOREA_INVESTMENT_TOKEN_STORAGE", "nope")
    with pytest.raises(ValueError):
        KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, base_url=fake_kis.url)
    assert fake_kis.stats.tokenp_requests == 0
