"""The build backend's one extra step: generate the gRPC stubs (generate_stubs.py) before
setuptools looks for the `taskhub` package in build/gen. Everything else is in pyproject.toml."""
import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.egg_info import egg_info
from setuptools.command.sdist import sdist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generate_stubs  # noqa: E402


def with_stubs(command):
    class WithStubs(command):
        def run(self):
            generate_stubs.ensure()
            super().run()
    WithStubs.__name__ = command.__name__
    return WithStubs


# setuptools' own build files go to build/setuptools: an sdist leaves out the build base, and the
# stubs in build/gen must go in.
setup(cmdclass={"egg_info": with_stubs(egg_info), "build_py": with_stubs(build_py), "sdist": with_stubs(sdist)},
      options={"build": {"build_base": "build/setuptools"}})
