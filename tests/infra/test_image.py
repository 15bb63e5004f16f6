"""The container image build file agrees with the package layout and the manifests.

No container engine runs here, so the image is not built in CI; these checks catch the drifts
that would break it silently: a top-level package (or ``infra/``, which holds the migrations and
the probe) not copied, and a user id different from the manifests' ``runAsUser``.
"""

from __future__ import annotations

import re
import tomllib

from infra.k8s import check as k8s

CONTAINERFILE = k8s.REPO / "infra" / "image" / "Containerfile"


def copied_dirs() -> set[str]:
    return set(re.findall(r"^COPY (\w+) \./\1$", CONTAINERFILE.read_text(), re.MULTILINE))


def test_every_package_and_infra_is_copied() -> None:
    pyproject = tomllib.loads((k8s.REPO / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages | {"infra"} <= copied_dirs()
    ignored = (k8s.REPO / ".dockerignore").read_text().split()
    assert not (packages | {"infra"}) & set(ignored)


def test_the_image_user_is_the_manifests_user() -> None:
    (uid,) = re.findall(r"^USER (\d+):\d+$", CONTAINERFILE.read_text(), re.MULTILINE)
    users = set()
    for overlay in k8s.overlays():
        for obj in k8s.render(overlay):
            spec = k8s.pod_spec(obj)
            if spec is None:
                continue
            pod_user = spec.get("securityContext", {}).get("runAsUser")
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                users.add(c.get("securityContext", {}).get("runAsUser", pod_user))
    assert users == {int(uid)}
