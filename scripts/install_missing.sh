# Sourced by scripts/demo.sh and scripts/test.sh (the README's two commands).
#
# install_missing PKG...: installs the Debian packages among PKG that are not
# installed yet (apt-get update only if something is missing; sudo when not root).
install_missing() {
  if ! command -v dpkg >/dev/null 2>&1; then
    echo "$(basename "$0"): not a Debian system; make sure these are installed: $*" >&2
    return 0
  fi
  local missing=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  echo "==> installing ${missing[*]}"
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
