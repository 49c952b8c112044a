"""A camera's own picture-check settings (``analytics.quality`` of ``POST /cameras``): its
thresholds replace the defaults for that camera only, and bad ones are refused by name."""

from __future__ import annotations

from typing import Any

import cv2
import pytest
from pydantic import ValidationError

from analytics.quality import Kind, QualityMonitor
from api.schemas.cameras import AnalyticsIn
from config.settings import QualitySettings
from runtime.cameras import _quality_config, _tamper_incidents
from tests.unit.test_quality import _raised, _run, _u8

INSTALLATION = QualitySettings(learn_s=10.0)


def _defocused(frame: Any, _s: int) -> Any:
    return _u8(cv2.GaussianBlur(frame, (0, 0), 3.0))


def _blur_raised(camera: dict[str, Any]) -> list[Kind]:
    config = _quality_config(INSTALLATION, camera)
    assert config is not None
    monitor = QualityMonitor(config)
    assert _run(monitor, range(15))[-1].state == "ok"
    return [kind for _i, kind in _raised(_run(monitor, range(20, 40), _defocused, start=20))]


def test_a_camera_that_tolerates_more_blur_is_not_raised_for_it() -> None:
    assert _blur_raised({}) == [Kind.BLUR]
    # A camera looking through fog every morning: blur only from 0.95 on.
    assert _blur_raised({"thresholds": {"blur": {"raise_at": 0.95}}}) == []


def test_what_the_camera_leaves_out_keeps_the_installation_defaults() -> None:
    config = _quality_config(INSTALLATION, {"thresholds": {"noise": {"raise_at": 9.0}}})
    assert config is not None
    assert config.noise.raise_at == 9.0 and config.noise.clear_at == pytest.approx(6.0)
    default = _quality_config(INSTALLATION, {})
    assert default is not None
    assert config.blur == default.blur and config.learn_s == 10.0
    frozen = _quality_config(INSTALLATION, {"thresholds": {"frozen": {"raise_at": 0.99}}})
    assert frozen is not None and frozen.frozen.hold_s == default.frozen.hold_s  # kind's own hold


def test_a_camera_can_switch_its_checks_and_tamper_incidents_off() -> None:
    assert _quality_config(INSTALLATION, {"enabled": False}) is None
    assert _quality_config(QualitySettings(enabled=False), {"enabled": True}) is None
    assert _tamper_incidents(INSTALLATION, {"tamper_incidents": False}) is False
    assert _tamper_incidents(INSTALLATION, {}) is True


@pytest.mark.parametrize(
    ("quality", "field"),
    [
        ({"thresholds": {"blur": {"raise_at": 0.4, "clear_at": 0.6}}}, "blur"),
        ({"thresholds": {"smudge": {"raise_at": 0.4}}}, "smudge"),
        ({"thresholds": {"noise": {"raise_at": -1}}}, "raise_at"),
        ({"thresholds": {"black": {"hold_s": 2}}}, "raise_at"),
    ],
)
def test_bad_thresholds_are_refused_naming_the_field(quality: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        AnalyticsIn.model_validate({"quality": quality})
    assert field in str(err.value)
