#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the Debian packages with cpack, checks their contents, installs each with dpkg, runs the
# installed programs, checks the user, state directory, conffile and unit, then removes and purges
# them and checks that everything is gone. Leaves the machine as it found it; exits 77 (skipped)
# when it cannot: not root, no dpkg, or a UBCP package, user or file already present.
# Usage: deb_install_test.sh BUILD_DIR [CPACK]
set -euo pipefail

build=${1:?usage: deb_install_test.sh BUILD_DIR [CPACK]}
cpack=${2:-cpack}
components=(client coordinator)

skip() {
  echo "SKIPPED: $*"
  exit 77
}
fail() {
  echo "FAILED: $*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || skip "needs root to install packages with dpkg"
for tool in dpkg dpkg-deb dpkg-query getent "$cpack"; do
  command -v "$tool" >/dev/null || skip "$tool not found"
done
for c in "${components[@]}"; do
  # Never touch a real installation: all of these belong to the package under test.
  if dpkg-query -W -f='${Status}' "ubcp-$c" 2>/dev/null | grep -qv "not-installed"; then
    skip "package ubcp-$c is installed on this machine"
  fi
  getent passwd "ubcp-$c" >/dev/null && skip "user ubcp-$c exists on this machine"
  getent group "ubcp-$c" >/dev/null && skip "group ubcp-$c exists on this machine"
  for path in "/var/lib/ubcp-$c" "/etc/ubcp/$c.conf" "/lib/systemd/system/ubcp-$c.service"; do
    [ -e "$path" ] && skip "$path exists on this machine"
  done
done
etc_existed=no
[ -e /etc/ubcp ] && etc_existed=yes

work=$(mktemp -d)
cleanup() {
  for c in "${components[@]}"; do
    if dpkg-query -W -f='${Status}' "ubcp-$c" 2>/dev/null | grep -qv "not-installed"; then
      dpkg --purge "ubcp-$c" >/dev/null || echo "cleanup: dpkg --purge ubcp-$c failed" >&2
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

echo "== cpack -G DEB"
"$cpack" -G DEB --config "$build/CPackConfig.cmake" -B "$work/out" >"$work/cpack.log" 2>&1 ||
  { cat "$work/cpack.log"; fail "cpack -G DEB"; }

# deb_of COMPONENT: the one package file of a component.
deb_of() {
  local files=("$work/out/ubcp-$1"_*.deb)
  if [ ${#files[@]} -ne 1 ] || [ ! -f "${files[0]}" ]; then
    fail "expected one ubcp-$1_*.deb, got: ${files[*]}"
  fi
  echo "${files[0]}"
}

# expect_listed DEB PATH...: each path is in the package; forbid_listed: none is.
expect_listed() {
  local deb=$1
  shift
  for p in "$@"; do
    dpkg-deb -c "$deb" | awk '{print $6}' | grep -qx "./${p#/}" || fail "$(basename "$deb") lacks $p"
  done
}
forbid_listed() {
  local deb=$1
  shift
  for p in "$@"; do
    if dpkg-deb -c "$deb" | awk '{print $6}' | grep -qx "./${p#/}"; then
      fail "$(basename "$deb") holds $p"
    fi
  done
}

client_deb=$(deb_of client)
coordinator_deb=$(deb_of coordinator)
echo "== contents"
expect_listed "$client_deb" /usr/bin/ubcp-client /usr/bin/ubcp /etc/ubcp/client.conf \
  /lib/systemd/system/ubcp-client.service
forbid_listed "$client_deb" /usr/bin/ubcp-coordinator /etc/ubcp/coordinator.conf
expect_listed "$coordinator_deb" /usr/bin/ubcp-coordinator /etc/ubcp/coordinator.conf \
  /lib/systemd/system/ubcp-coordinator.service
forbid_listed "$coordinator_deb" /usr/bin/ubcp-client /usr/bin/ubcp /etc/ubcp/client.conf

for c in "${components[@]}"; do
  deb=$(deb_of "$c")
  [ "$(dpkg-deb -f "$deb" Package)" = "ubcp-$c" ] || fail "package name of $deb"
  depends=$(dpkg-deb -f "$deb" Depends)
  echo "ubcp-$c Depends: $depends"
  # dpkg-shlibdeps found the libraries' packages (libtorch, libsodium), and the scripts' tools.
  for dep in libtorch libsodium passwd; do
    grep -q "$dep" <<<"$depends" || fail "ubcp-$c does not depend on $dep"
  done
  dpkg-deb --info "$deb" conffiles | grep -qx "/etc/ubcp/$c.conf" || fail "ubcp-$c conffiles"
done

# config_keys FILE: the option names a config file sets or documents (`# name = value`).
config_keys() {
  sed -nE 's/^#? ?([a-z][a-z-]*) = .*/\1/p' "$1"
}

# check_installed COMPONENT HELP_COMMAND...: the installed package's files, user and state.
check_installed() {
  local c=$1
  shift
  local user="ubcp-$c" state="/var/lib/ubcp-$c" conf="/etc/ubcp/$c.conf"
  local unit="/lib/systemd/system/ubcp-$c.service"
  "$@" >"$work/help-$c.txt" || fail "$* exited $?"
  for key in $(config_keys "$conf"); do
    grep -q -- "--$key" "$work/help-$c.txt" || fail "$conf names '$key', which '$*' does not know"
  done
  IFS=: read -r _ _ _ _ _ home shell < <(getent passwd "$user") || fail "no user $user"
  [ "$home" = "$state" ] || fail "$user's home is $home"
  [ "$shell" = /usr/sbin/nologin ] || fail "$user's shell is $shell"
  [ "$(passwd -S "$user" | awk '{print $2}')" = L ] || fail "$user's password is not locked"
  [ "$(stat -c '%a %U %G' "$state")" = "700 $user $user" ] ||
    fail "$state is $(stat -c '%a %U %G' "$state")"
  dpkg-query -W -f='${Conffiles}\n' "ubcp-$c" | grep -q " $conf " || fail "$conf is no conffile"
  [ -f "$unit" ] || fail "no $unit"
  grep -qx "User=$user" "$unit" || fail "$unit does not run as $user"
  if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
  fi
}

# check_gone COMPONENT: after a purge nothing of the package is left.
check_gone() {
  local c=$1
  dpkg-query -W -f='${Status}' "ubcp-$c" 2>/dev/null | grep -qv "not-installed" &&
    fail "ubcp-$c still known to dpkg: $(dpkg-query -W -f='${Status}' "ubcp-$c")"
  getent passwd "ubcp-$c" >/dev/null && fail "user ubcp-$c left after purge"
  getent group "ubcp-$c" >/dev/null && fail "group ubcp-$c left after purge"
  for path in "/var/lib/ubcp-$c" "/etc/ubcp/$c.conf" "/lib/systemd/system/ubcp-$c.service"; do
    [ -e "$path" ] && fail "$path left after purge"
  done
  return 0
}

echo "== install ubcp-client"
dpkg -i "$client_deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i ubcp-client"; }
/usr/bin/ubcp --help >/dev/null || fail "/usr/bin/ubcp --help exited $?"
check_installed client /usr/bin/ubcp-client --help

echo "== install ubcp-coordinator"
dpkg -i "$coordinator_deb" >"$work/dpkg.log" 2>&1 ||
  { cat "$work/dpkg.log"; fail "dpkg -i ubcp-coordinator"; }
# The top-level options (log-level) and those of `serve` ([serve]).
coordinator_help() { /usr/bin/ubcp-coordinator --help && /usr/bin/ubcp-coordinator serve --help; }
check_installed coordinator coordinator_help
# Two users: a compromised donor process must not read the coordinator's signing key.
[ "$(id -u ubcp-client)" != "$(id -u ubcp-coordinator)" ] || fail "the packages share a uid"

echo "== remove keeps state, purge removes everything"
touch /var/lib/ubcp-client/host.key
dpkg --remove ubcp-client >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg --remove"; }
[ -f /var/lib/ubcp-client/host.key ] || fail "remove deleted the client's state"
getent passwd ubcp-client >/dev/null || fail "remove deleted the user"
[ -f /etc/ubcp/client.conf ] || fail "remove deleted the conffile"
[ -e /usr/bin/ubcp-client ] && fail "remove left /usr/bin/ubcp-client"
for c in "${components[@]}"; do
  dpkg --purge "ubcp-$c" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "purge ubcp-$c"; }
  check_gone "$c"
done
if [ "$etc_existed" = no ] && [ -e /etc/ubcp ]; then
  fail "/etc/ubcp left after purge"
fi
echo "PASSED"
