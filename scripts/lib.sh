# Shared by scripts/install and scripts/test: installing Debian packages, as root or through sudo.
# shellcheck shell=bash

# as_root CMD...: run CMD as root: directly when we are root (a container, a fresh VM: often no sudo
# there), else through sudo when it exists. Without either, explain and fail with 2.
as_root() {
  if [ "$(id -u)" = "0" ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "$(basename "$0"): needs root for: $*; run it as root (or install sudo)" >&2
    return 2
  fi
}

# apt_install PKG...: install Debian/Ubuntu packages without prompting (stdin is never read).
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$(basename "$0"): apt-get not found; install these yourself: $*" >&2
    return 2
  fi
  echo "$(basename "$0"): installing $* through apt" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null || return $?
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" </dev/null >/dev/null
}

# make_venv DIR: a virtual environment at DIR; installs python3-venv through apt when Debian left it out.
make_venv() {
  local dir=$1 py=${RAIBID_PYTHON:-python3}
  [ -x "$dir/bin/python" ] && return 0
  if ! "$py" -m venv "$dir" >/dev/null 2>&1; then
    rm -rf "$dir"
    apt_install python3-venv || return $?
    "$py" -m venv "$dir"
  fi
}
