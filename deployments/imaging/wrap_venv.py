"""Run inside an application's image by `jobcloud images wrap` (never imported by JobCloud):
make /opt/jobcloud/venv with the image's own python and install JobCloud into it.

    python -I wrap_venv.py STAGE      (STAGE: the staged folder: jobcloud/, pip/, constraints.txt,
                                       ca-certificates.crt, empty files where absent)

Only the standard library, and nothing newer than Python 3.10: it runs with the image's python.
The application's environment variables (PYTHONPATH, PIP_*, VIRTUAL_ENV, ...) are kept away
from every step, so the venv never sees the application's packages nor the reverse.
"""

import os
import shutil
import subprocess
import sys

VENV = "/opt/jobcloud/venv"
PY = VENV + "/bin/python"
CLEARED_PREFIXES = ("PYTHON", "PIP_", "VIRTUAL_ENV", "CONDA", "UV_")


def say(message):
    print("jobcloud-wrap: " + message, flush=True)


def run(argv, env):
    say("$ " + " ".join(argv))
    return subprocess.run(argv, env=env).returncode


def clean_env(stage):
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED_PREFIXES)}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1", PIP_PROGRESS_BAR="off")
    ca = os.path.join(stage, "ca-certificates.crt")
    if os.path.getsize(ca) > 0:
        env["PIP_CERT"] = ca  # HTTPS through a local CA that only the host's bundle has
    return env


def make_venv(stage, env):
    """The venv with pip: ensurepip where the image has it, else the staged pip bootstraps one."""
    if run([sys.executable, "-I", "-m", "venv", VENV], env) == 0:
        return
    shutil.rmtree(VENV, ignore_errors=True)
    say("venv with pip failed (no ensurepip in this python?): a venv without pip, then pip from PyPI")
    if run([sys.executable, "-I", "-m", "venv", "--without-pip", VENV], env) != 0:
        sys.exit("jobcloud-wrap: error: `python -m venv` does not work with this python")
    boot = dict(env, PYTHONPATH=os.path.join(stage, "pip"))
    if run([PY, "-m", "pip", "install", "pip"], boot) != 0:
        sys.exit("jobcloud-wrap: error: could not install pip into the venv")


def install(stage, env):
    """JobCloud and its dependencies, at the tested versions where they exist for this python."""
    argv = [PY, "-m", "pip", "install", os.path.join(stage, "jobcloud")]
    constraints = os.path.join(stage, "constraints.txt")
    if os.path.getsize(constraints) > 0:
        if run(argv + ["-c", constraints], env) == 0:
            return
        say(
            "the tested versions (constraints.txt) do not all install for this python: "
            "newest versions within pyproject.toml's ranges instead"
        )
    if run(argv, env) != 0:
        sys.exit("jobcloud-wrap: error: pip could not install JobCloud (see above)")


def main():
    stage = sys.argv[1]
    env = clean_env(stage)
    say(f"python {sys.version.split()[0]} at {sys.executable}")
    os.makedirs(os.path.dirname(VENV), exist_ok=True)
    make_venv(stage, env)
    install(stage, env)
    check = "import jobcloud.flows.job, prefect; print('jobcloud-wrap: prefect', prefect.__version__, 'imports')"
    if run([PY, "-c", check], env) != 0:
        sys.exit("jobcloud-wrap: error: the venv cannot import the job flow")


if __name__ == "__main__":
    main()
