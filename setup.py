"""Build hook: ship the repository's ``conf/`` inside the wheel as ``snnbench/conf``.

``conf/`` stays at the top of the checkout (the folder users edit); an editable install
reads it there, a wheel carries a copy (``snnbench.config.config_dir`` finds either).
Everything else is declared in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONF = Path(__file__).resolve().parent / "conf"


class BuildPyWithConf(build_py):
    """``build_py`` that also copies ``conf/**/*.yaml`` to ``<build>/snnbench/conf``."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "snnbench" / "conf"
        for src in sorted(CONF.rglob("*.yaml")):
            dst = target / src.relative_to(CONF)
            self.mkpath(str(dst.parent))
            self.copy_file(str(src), str(dst))


setup(cmdclass={"build_py": BuildPyWithConf})
