#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (as root) for vdsmlike, then runs what was asked:
#   contrib/bootstrap.sh demo    install everything and run the demo
#   contrib/bootstrap.sh test    install everything and run the whole test suite
#   contrib/bootstrap.sh install install everything, run nothing
# Idempotent: a second run only checks what is already there.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
what=${1:-install}
shift || true

DEBS=(python3-venv python3-dev gcc pkg-config libvirt-dev libvirt-daemon libvirt-daemon-driver-qemu
      libvirt-clients qemu-system-x86 qemu-utils busybox-static cpio postgresql
      chromium)

log() { printf '[bootstrap] %s\n' "$*" >&2; }

install_debs() {
    local missing=()
    for p in "${DEBS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing Debian packages: ${missing[*]}"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    # The embedded QEMU driver refuses to start without this user (Debian's
    # libvirt-daemon-system would create it; we do not want its system daemon).
    getent group kvm >/dev/null || groupadd -r kvm
    getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
    id libvirt-qemu >/dev/null 2>&1 || useradd -r -g libvirt-qemu -G kvm libvirt-qemu
}

install_venv() {
    if [ ! -x .venv/bin/python ]; then
        log "creating the virtualenv in .venv"
        python3 -m venv .venv
    fi
    if ! .venv/bin/python -c 'import vdsmlike, libvirt, pytest_twisted' 2>/dev/null \
        || [ setup.cfg -nt .venv/.installed ]; then
        log "installing the project and its dependencies"
        .venv/bin/pip install -q --upgrade pip
        .venv/bin/pip install -q -e '.[test]'
        touch .venv/.installed
    fi
}

vendor_console() {
    # xterm.js for the web console's serial view, pinned and verified; skipped when present.
    log "vendoring the web console's xterm.js (cached)"
    .venv/bin/python -m engine.console.vendor >/dev/null
}

build_guest() {
    log "building the test guest image (cached)"
    contrib/guest-image/build.sh >/dev/null
}

install_debs
install_venv
vendor_console
build_guest

case "$what" in
    install) log "installed; activate with: . .venv/bin/activate" ;;
    test) exec .venv/bin/python -m pytest "$@" ;;
    demo) exec .venv/bin/python -m vdsmlike.demo "$@" ;;
    *) echo "usage: $0 {install|test|demo} [args...]" >&2; exit 2 ;;
esac
