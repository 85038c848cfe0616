#!/bin/sh
# PID 1 of the headroom test guest: busybox sh inside the initramfs built by
# tests/vm/qemu_guest.py. It loads the modules listed in /modules/order, builds
# the guest's root (the host's / over 9p, read-only, under a tmpfs overlay; the
# checkout read-write over a second 9p share at its host path), mounts cgroup2,
# the ext4 scratch disk and the kernel filesystems, runs $RUN/command.sh chrooted
# there with stdout/stderr on two virtio-serial ports, writes its exit status to
# $RUN/status and powers off (QEMU runs with -no-reboot).
export PATH=/bin
R=/newroot

halt() { sync; echo b > /proc/sysrq-trigger; sleep 60; }
fail() { echo "guest-init: $*" > /dev/console; halt; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

for m in $(cat /modules/order); do
  insmod "/modules/$m" || fail "insmod $m failed"
done

CHECKOUT= RUN= ZRAM_MB=0
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    hr.checkout=*) CHECKOUT="${arg#hr.checkout=}" ;;
    hr.run=*) RUN="${arg#hr.run=}" ;;
    hr.zram_mb=*) ZRAM_MB="${arg#hr.zram_mb=}" ;;
  esac
done
[ -n "$CHECKOUT" ] && [ -n "$RUN" ] || fail "hr.checkout= and hr.run= are required"

P9="trans=virtio,version=9p2000.L,msize=512000"
mkdir -p /host /ovl $R
# cache=loose: nobody changes these files during a run, and it makes Python's
# imports several times faster under TCG.
mount -t 9p -o "$P9,ro,cache=loose" hostroot /host || fail "9p mount of the host root failed"
mount -t tmpfs -o mode=0755 ovl /ovl
mkdir /ovl/upper /ovl/work
mount -t overlay -o lowerdir=/host,upperdir=/ovl/upper,workdir=/ovl/work overlay $R \
  || fail "overlay mount failed"
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
mount -t tmpfs -o mode=1777 tmp $R/tmp
mount -t tmpfs -o mode=0755 run $R/run
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 $R/sys/fs/cgroup \
  || fail "cgroup2 mount failed"
echo +memory > $R/sys/fs/cgroup/cgroup.subtree_control || fail "cannot enable +memory"
mkdir -p "$R$CHECKOUT" $R/mnt/scratch
mount -t 9p -o "$P9,cache=loose" checkout "$R$CHECKOUT" || fail "9p mount of the checkout failed"
# noinit_itable: the image is made with lazy inode tables; do not spend the
# guest's emulated CPU zeroing them in the background.
mount -t ext4 -o noinit_itable /dev/vda $R/mnt/scratch || fail "ext4 mount of /dev/vda failed"

if [ "$ZRAM_MB" -gt 0 ]; then
  echo "${ZRAM_MB}M" > /sys/block/zram0/disksize && mkswap /dev/zram0 > /dev/null \
    && swapon /dev/zram0 || fail "zram swap set-up failed"
fi

# virtio-serial ports show up asynchronously once the host acknowledges them.
OUT= ERR= i=0
while [ $i -lt 500 ]; do
  for p in /sys/class/virtio-ports/*; do
    [ -r "$p/name" ] || continue
    case "$(cat "$p/name")" in
      headroom.stdout) OUT="/dev/${p##*/}" ;;
      headroom.stderr) ERR="/dev/${p##*/}" ;;
    esac
  done
  [ -c "$OUT" ] && [ -c "$ERR" ] && break
  usleep 10000
  i=$((i + 1))
done
[ -c "$OUT" ] && [ -c "$ERR" ] || fail "virtio-serial ports did not appear"

hostname headroom-guest
# The host times the boot by this line on the console.
echo "headroom-guest: command starts" > /dev/console
chroot $R /bin/sh "$RUN/command.sh" < /dev/null > "$OUT" 2> "$ERR"
echo $? > "$R$RUN/status.tmp" && mv "$R$RUN/status.tmp" "$R$RUN/status"
halt
