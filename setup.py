"""Packaging is declared in setup.cfg, except what needs code: the gin tree (gin/) ships inside the
package as `harness/gin`, so an installed wheel finds `gin/<experiment>.gin` without a clone
(harness/config.py searches the clone first, then the package)."""
import pathlib

from setuptools import find_packages, setup

GIN_DIR = pathlib.Path(__file__).parent / "gin"
GIN_PACKAGES = ["harness.gin"] + sorted(
    "harness.gin." + ".".join(d.relative_to(GIN_DIR).parts) for d in GIN_DIR.rglob("*") if d.is_dir())

setup(
    packages=find_packages(include=["models*", "agents*", "envs*", "harness*"]) + GIN_PACKAGES,
    package_dir={"harness.gin": "gin"},
    package_data={"harness": ["*.html"], **{package: ["*.gin"] for package in GIN_PACKAGES}},
)
