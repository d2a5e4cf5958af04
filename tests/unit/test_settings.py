"""One parser of quantities, one rounding to GiB, and a clear start-up error for every bad setting."""

from __future__ import annotations

import pytest

from kova.adapters import env
from kova.adapters.runtime import Settings
from kova.adapters.store import StoreConfig
from kova.api.quantity import InvalidQuantity, gib, gib_ceil, parse_size

GiB = 1 << 30
STORE = {"KOVA_S3_ENDPOINT": "127.0.0.1:9000", "KOVA_S3_ACCESS_KEY": "a", "KOVA_S3_SECRET_KEY": "b"}


@pytest.mark.parametrize(("text", "size"), [("1099511627776", 1 << 40), ("10Gi", 10 * GiB), ("1Ti", 1 << 40),
                                            ("5G", 5 * 10**9), ("1.5Gi", 3 * GiB // 2), ("2k", 2000),
                                            (" 7 ", 7), ("0.5", 1)])
def test_parse_size_reads_kubernetes_quantities(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "bad", "10GB", "-1", "1e3", "Gi", "10 Gi"])
def test_a_bad_quantity_is_refused_not_read_as_zero(text: str) -> None:
    with pytest.raises(InvalidQuantity, match="is not a size"):
        parse_size(text)


def test_gib_rounds_up() -> None:
    assert [gib(q) for q in ("2Gi", "1G", "1073741824", "1536Mi")] == [2, 1, 1, 2]
    assert [gib_ceil(n) for n in (0, 1, GiB, GiB + 1)] == [0, 1, 1, 2]


@pytest.mark.parametrize(("name", "value", "said"), [
    ("KOVA_IMAGE_SIZE_CAP", "lots", "is not a size"),
    ("KOVA_MAX_CONCURRENT_IMPORTS", "four", "is not a whole number"),
    ("KOVA_MAX_CONCURRENT_IMPORTS", "0", "below its minimum of 1"),
    ("KOVA_PRESIGN_TTL", "1h", "is not a whole number"),
    ("KOVA_IMPORT_RETRY_DELAY", "soon", "is not a number"),
    ("KOVA_RESIZE_CONFIRM_WINDOW", "-5", "below its minimum"),
    ("KOVA_S3_SECURE", "maybe", "is not true or false"),
    ("KOVA_IMPORT_ALLOWED_PORTS", "http", "KOVA_IMPORT_"),
    ("KOVA_IMPORT_ALLOWED_HOSTS", "10.0.0.0/33", "KOVA_IMPORT_"),
])
def test_every_bad_setting_names_its_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                              said: str) -> None:
    for k, v in {**STORE, name: value}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(env.BadSetting, match=said) as caught:
        Settings.from_env()
    assert name in str(caught.value) or name.startswith("KOVA_IMPORT_")
    assert "\n" not in str(caught.value)


def test_a_missing_store_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KOVA_S3_ENDPOINT", raising=False)
    with pytest.raises(env.BadSetting, match="KOVA_S3_ENDPOINT is not set"):
        StoreConfig.from_env()


@pytest.mark.parametrize(("text", "said"), [("1,x", "is not a comma-separated list"), ("1,-2", "is not")])
def test_error_backoffs_are_checked(text: str, said: str) -> None:
    with pytest.raises(env.BadSetting, match=said):
        env.numbers("KOVA_ERROR_BACKOFFS", {"KOVA_ERROR_BACKOFFS": text})
    assert env.numbers("KOVA_ERROR_BACKOFFS", {"KOVA_ERROR_BACKOFFS": "0.5,1"}) == [0.5, 1.0]


def test_good_settings_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {**STORE, "KOVA_IMAGE_SIZE_CAP": "100Gi", "KOVA_MAX_CONCURRENT_IMPORTS": "2",
                 "KOVA_S3_SECURE": "true"}.items():
        monkeypatch.setenv(k, v)
    settings = Settings.from_env()
    assert (settings.size_cap, settings.max_imports, settings.store.secure) == (100 * GiB, 2, True)
