#!/usr/bin/env bash
# Builds the vdsmlike test guest: Debian's cloud kernel plus a busybox initramfs whose /init
# loads the virtio balloon, prints VDSMLIKE-GUEST-READY and a "tick N" line every second on the
# serial console, and powers off when the ACPI power button is pressed (dom.shutdown()).
# Output: vmlinuz and initrd.img in ${VDSMLIKE_GUEST_DIR:-<this dir>/out}; the output dir is
# printed on stdout. Cached: does nothing when both outputs are newer than this script.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${VDSMLIKE_GUEST_DIR:-$here/out}
log() { printf '[guest-image] %s\n' "$*" >&2; }

if [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] \
    && [ "$out/vmlinuz" -nt "$0" ] && [ "$out/initrd.img" -nt "$0" ]; then
    echo "$out"
    exit 0
fi
for tool in apt-get apt-cache dpkg-deb cpio gzip; do
    command -v "$tool" >/dev/null || { log "missing tool: $tool"; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/vdsmlike-guest.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

# The versioned kernel package the meta package points at.
kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
    | sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1 || true)
download() {
    apt-get download "$@" >/dev/null 2>"$work/apt.err"
}
if [ -z "$kpkg" ] || ! download "$kpkg" busybox-static; then
    log "package lists missing or stale; running apt-get update"
    apt-get update -q >&2
    kpkg=$(apt-cache depends linux-image-cloud-amd64 \
        | sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1)
    [ -n "$kpkg" ] || { log "cannot resolve linux-image-cloud-amd64"; exit 1; }
    download "$kpkg" busybox-static || { cat "$work/apt.err" >&2; exit 1; }
fi
log "unpacking $kpkg and busybox-static"
dpkg-deb -x "$kpkg"_*.deb kernel
dpkg-deb -x busybox-static_*.deb busybox
kver=$(ls kernel/lib/modules)
moddir=kernel/lib/modules/$kver/kernel

root=$work/root
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,etc,lib/modules}
cp busybox/bin/busybox "$root/bin/busybox"
# Dependency order; button and evdev deliver the ACPI power button as an input event.
mods="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_balloon button evdev"
for m in $mods; do
    f=$(find "$moddir" -name "$m.ko" -print -quit)
    if [ -n "$f" ]; then cp "$f" "$root/lib/modules/"; else log "$m not a module (built in?)"; fi
done
printf '%s\n' $mods >"$root/lib/modules/order"

cat >"$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do
    [ -f "/lib/modules/$m.ko" ] && insmod "/lib/modules/$m.ko" 2>/dev/null
done
# Power off when the ACPI power button input device reports a key event.
watch_power_button() {
    for d in /sys/class/input/event*; do
        [ "$(cat "$d/device/name" 2>/dev/null)" = "Power Button" ] || continue
        if dd if="/dev/input/${d##*/}" of=/dev/null bs=24 count=1 2>/dev/null; then
            echo "VDSMLIKE-GUEST-POWEROFF"
            poweroff -f
        fi
    done
    echo "VDSMLIKE-GUEST-NO-POWER-BUTTON"
}
watch_power_button &
echo "VDSMLIKE-GUEST-READY"
i=0
while true; do
    echo "tick $i"
    i=$((i + 1))
    sleep 1
done
INIT
chmod 755 "$root/init"

mkdir -p "$out"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$out/initrd.img.tmp"
cp "kernel/boot/vmlinuz-$kver" "$out/vmlinuz.tmp"
mv "$out/initrd.img.tmp" "$out/initrd.img"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
# QEMU may run as libvirt-qemu: let it read the image and walk to it.
chmod 644 "$out/vmlinuz" "$out/initrd.img"
chmod a+x "$out"
log "built $kver guest in $out"
echo "$out"
