import dataclasses

import pytest

from kcmbundle.versions import (
    SUPPORTED_MINORS,
    KubernetesVersion,
    format_minor,
    parse_kubernetes_version,
    supported_range,
)


def test_supported_minors_cover_1_24_to_1_36():
    assert SUPPORTED_MINORS == tuple(range(24, 37))
    assert supported_range() == "1.24 to 1.36"
    assert format_minor(30) == "1.30"


@pytest.mark.parametrize(
    ("text", "expected", "shown"),
    [
        ("1.30", KubernetesVersion(1, 30, None), "1.30"),
        ("1.30.4", KubernetesVersion(1, 30, 4), "1.30.4"),
        ("v1.30.4", KubernetesVersion(1, 30, 4), "1.30.4"),
        ("v1.24", KubernetesVersion(1, 24, None), "1.24"),
        ("1.36.0", KubernetesVersion(1, 36, 0), "1.36.0"),
        ("1.27.10", KubernetesVersion(1, 27, 10), "1.27.10"),
    ],
)
def test_parse_accepts_minor_and_patch(text, expected, shown):
    version = parse_kubernetes_version(text)

    assert version == expected
    assert str(version) == shown
    assert version.minor_version == f"1.{expected.minor}"


@pytest.mark.parametrize("minor", SUPPORTED_MINORS)
def test_parse_accepts_every_supported_minor(minor):
    assert parse_kubernetes_version(f"1.{minor}").minor == minor
    assert parse_kubernetes_version(f"v1.{minor}.3").patch == 3


@pytest.mark.parametrize(
    "text",
    ["1", "1.30.x", " 1.30", "1.30 ", "1.30\n", "", "v", "V1.30", "1.030", "01.30", "1.30.4-rc.1", "1.30.4+k3s1", "1..30", "1.30.4.1"],
)
def test_parse_rejects_malformed_text(text):
    with pytest.raises(ValueError) as caught:
        parse_kubernetes_version(text)

    message = str(caught.value)
    assert message.startswith("invalid Kubernetes version")
    assert repr(text) in message
    assert "1.30.4" in message


@pytest.mark.parametrize(
    ("text", "shown"),
    [("1.23", "1.23"), ("1.23.17", "1.23"), ("1.37", "1.37"), ("v1.37.0", "1.37"), ("2.0", "2.0"), ("0.30", "0.30")],
)
def test_parse_rejects_unsupported_minor(text, shown):
    with pytest.raises(ValueError) as caught:
        parse_kubernetes_version(text)

    assert str(caught.value) == f"unsupported Kubernetes minor {shown}: kcmbundle supports 1.24 to 1.36"


def test_parse_rejects_non_string():
    with pytest.raises(ValueError, match="expected a string"):
        parse_kubernetes_version(1.30)  # type: ignore[arg-type]


def test_version_is_frozen_and_ordered():
    version = KubernetesVersion(1, 30, 4)

    with pytest.raises(dataclasses.FrozenInstanceError):
        version.minor = 31  # type: ignore[misc]
    assert KubernetesVersion(1, 29, 9) < KubernetesVersion(1, 30, 0)
