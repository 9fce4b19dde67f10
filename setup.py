"""Build steps pyproject.toml cannot express.

1. The plugin launchers. A console-script entry point would start with `#!<python>`
   and run `site` (plus pip's template imports `re`), which costs the plugin 25-70 ms a
   call (shared/reference/baseline.md). The launchers are written instead with the building
   interpreter and `-IS` in the shebang (Linux passes a shebang's arguments as one word);
   pip copies such scripts unchanged.
2. `cnipam/_build_info.py`: the git hash `ecs-ipam --version` reports, as upstream's does.
"""

import os
import subprocess
import sys
from distutils.command.build_scripts import build_scripts

from setuptools import setup
from setuptools.command.build_py import build_py

PLUGIN_NAMES = ("cnipam", "ecs-ipam")  # `ecs-ipam` is the CNI type the ECS agent asks for


class BuildPluginLaunchers(build_scripts):
    def copy_scripts(self):
        self.mkpath(self.build_dir)
        with open(os.path.join("launchers", "cni-plugin"), encoding="utf-8") as source:
            body = source.read().split("\n", 1)[1]
        written = []
        for name in PLUGIN_NAMES:
            target = os.path.join(self.build_dir, name)
            with open(target, "w", encoding="utf-8") as script:
                script.write(f"#!{sys.executable} -IS\n{body}")
            os.chmod(target, 0o755)
            written.append(target)
        return written, written


class BuildWithInfo(build_py):
    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "cnipam", "_build_info.py")
        with open(target, "w", encoding="utf-8") as info:
            info.write(f'"""Written by setup.py."""\n\nGIT_SHORT_HASH = {_git("rev-parse", "--short", "HEAD")!r}\n')


def _git(*args):
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


setup(
    scripts=[os.path.join("launchers", "cni-plugin")],
    cmdclass={"build_scripts": BuildPluginLaunchers, "build_py": BuildWithInfo},
)
