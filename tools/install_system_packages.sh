#!/bin/sh
# Installs the Debian packages that `make train` and `make test` need, where missing:
# python3-venv (for .venv) and dataset-fashion-mnist (the default config's data, which
# `python -m resnet_jax.data.prepare fashion_mnist` builds offline from its files).
# apt-get runs as root or through passwordless sudo; where neither works, one line says what
# to run. Without apt-get (not Debian), Fashion-MNIST is left to TFDS's own download.
#
# Usage: tools/install_system_packages.sh [COMMAND]   (COMMAND: what the error line says to
# run again; default 'make train'). PYTHON: the interpreter that makes .venv.
set -eu
rerun=${1:-make train}
python=${PYTHON:-python3}
# Tests point this at an absent folder to act as on a machine without the package.
fashion_mnist=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}

has_apt=
command -v apt-get >/dev/null 2>&1 && has_apt=1
need=
"$python" -c 'import ensurepip, venv' 2>/dev/null || need=python3-venv
if [ ! -d "$fashion_mnist" ] && [ -n "$has_apt" ]; then
  need="${need:+$need }dataset-fashion-mnist"
fi
[ -n "$need" ] || exit 0

if [ -z "$has_apt" ]; then
  echo "error: $python has no venv module (ensurepip): install one that has, then $rerun again" >&2
  exit 1
fi
if [ "$(id -u)" = 0 ]; then
  sudo=
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo='sudo -n'
else
  case $need in
    python3-venv) what="$python -m venv" ;;
    dataset-fashion-mnist) what=Fashion-MNIST ;;
    *) what=$rerun ;;
  esac
  echo "error: $what needs Debian's $need: run 'sudo apt-get install $need', then $rerun again" >&2
  exit 1
fi

echo "Installing Debian's $need with apt-get" >&2
# apt's own output only where it fails. $need is a list of package names, split on purpose.
# shellcheck disable=SC2086
if ! out=$($sudo apt-get update -qq 2>&1 &&
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need 2>&1); then
  printf '%s\n' "$out" >&2
  echo "error: apt-get could not install $need (its output is above)" >&2
  exit 1
fi
