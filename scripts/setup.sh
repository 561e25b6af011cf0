#!/usr/bin/env bash
# Sets up a fresh machine for the toolkit and its whole test suite (Debian/Ubuntu, Python 3.11):
# system packages the tests use, then the Python package with its pinned dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

# openssh-server: the ssh:// benchmark target is tested against a real sshd on 127.0.0.1.
# kotlin + junit4: the Android demo's plain-Kotlin core module is compiled and unit-tested with a JDK.
need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server openssh-client)
command -v kotlinc >/dev/null 2>&1 || need+=(kotlin)
[ -f /usr/share/java/junit4.jar ] || need+=(junit4)
# qemu-user-static + binfmt-support + debootstrap: the emulated aarch64 board (benchmarks.board, docs/boards.md)
[ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static binfmt-support)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
# compilers and binutils: the kernel-profile test builds a library, the core-to-core probe is C
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v objdump >/dev/null 2>&1 || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Mesa 25 lavapipe (software Vulkan) + the Vulkan loader: LiteRT's GPU accelerator (WebGPU over Vulkan)
# runs on it, so the GPU rows and tests run on any CPU machine (docs/gpu.md). Bookworm's own Mesa 22.3
# is rejected by Dawn; bookworm-backports has 25.x. Skipped when a Mesa >= 25 lavapipe is installed, and
# on non-Debian systems (then the GPU rows say why they are unavailable).
lvp_version=$(dpkg-query -W -f='${db:Status-Status} ${Version}' mesa-vulkan-drivers 2>/dev/null | sed -n 's/^installed //p' || true)
if command -v apt-get >/dev/null 2>&1 && grep -qs bookworm /etc/os-release && \
   ! { [ -n "$lvp_version" ] && dpkg --compare-versions "$lvp_version" ge 25 && \
       [ -n "$(dpkg-query -W -f='${db:Status-Status}' libvulkan1 2>/dev/null | grep -x installed || true)" ]; }; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" | \
      $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
  fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends \
    -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
fi

python -m pip install -q -e ".[test]"

# MediaPipe Tasks in its own virtual environment (tests/test_mediapipe.py, python -m benchmarks.clients): it pins
# its own OpenCV build (opencv-contrib-python), which cannot share site-packages with opencv-python-headless.
# Quick when it is already there with the pinned version (an interrupted install fails the check and is redone).
MEDIAPIPE_VERSION=1.2.3  # keep in step with benchmarks/clients.py MEDIAPIPE_VERSION
MP_VENV=.venv-mediapipe
if ! "$MP_VENV/bin/python" -c "import mediapipe, sys; sys.exit(mediapipe.__version__ != '$MEDIAPIPE_VERSION')" >/dev/null 2>&1; then
  rm -rf "$MP_VENV"
  python -m venv "$MP_VENV"
  "$MP_VENV/bin/python" -m pip install -q --disable-pip-version-check "mediapipe==$MEDIAPIPE_VERSION"
fi
