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
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

python -m pip install -q -e ".[test]"
