#!/bin/sh
# Extracts Postfix's smtp-source into bench/.postfix/ (apt-get download + dpkg -x, no mail server is installed or
# started). Idempotent: a second run only checks the binary. Exits 0 with a note when it cannot be done, so the
# benchmark just skips the smtp-source baseline.
set -u
here=$(cd "$(dirname "$0")" && pwd)
dest="$here/.postfix"
root="$dest/root"
bin="$root/usr/sbin/smtp-source"

check() {
  # smtp-source wants a config dir; an empty main.cf is enough (every parameter has a built-in default)
  mkdir -p "$dest/etc"
  [ -f "$dest/etc/main.cf" ] || : > "$dest/etc/main.cf"
  MAIL_CONFIG="$dest/etc" LD_LIBRARY_PATH="$root/usr/lib/postfix" "$bin" 2>&1 | grep -q "usage" || {
    echo "setup-postfix: $bin does not run (missing libraries?):" >&2
    LD_LIBRARY_PATH="$root/usr/lib/postfix" ldd "$bin" 2>&1 | grep "not found" >&2
    return 1
  }
  echo "setup-postfix: ok $bin"
}

if [ -x "$bin" ]; then check; exit 0; fi

command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 || {
  echo "setup-postfix: apt-get/dpkg not available; the smtp-source baseline will be skipped" >&2
  exit 0
}

mkdir -p "$dest/debs" "$root"
cd "$dest/debs" || exit 0
if ! ls postfix_*.deb >/dev/null 2>&1; then
  # one `apt-get update` at most per checkout (the stamp), then the download itself
  if [ ! -f "$dest/.apt-updated" ]; then
    apt-get update -qq >/dev/null 2>&1 && : > "$dest/.apt-updated" || true
  fi
  apt-get download postfix >/dev/null 2>&1 || {
    echo "setup-postfix: apt-get download postfix failed; the smtp-source baseline will be skipped" >&2
    exit 0
  }
fi
dpkg -x postfix_*.deb "$root" || { echo "setup-postfix: dpkg -x failed" >&2; exit 0; }
check || exit 0
