# Shared by scripts/test and scripts/demo: idempotent installation of what building and testing
# need beyond cargo. Source it; it defines functions and changes nothing by itself.

step() { printf '\n==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# WebAssembly plugins are built for wasm32-wasip2.
ensure_rust_targets() {
  if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    step "rustup target add wasm32-wasip2"
    rustup target add wasm32-wasip2
  fi
}

# Installs the named Debian packages that are not installed yet.
ensure_debian_packages() {
  local missing=()
  for package in "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

# The web UI's charting library is installed with npm when gauntlet is built.
ensure_npm() {
  command -v npm >/dev/null 2>&1 || ensure_debian_packages nodejs npm
}

# Installs a package.json's locked dependencies when they are missing.
ensure_npm_packages() {
  if [ ! -d "$1/node_modules" ]; then
    step "npm ci in $1"
    (cd "$1" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# Installs the named PyPI packages that are not importable yet.
ensure_pip_packages() {
  local missing=()
  for package in "$@"; do
    python3 -c "import $package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    step "pip install ${missing[*]}"
    python3 -m pip install --quiet --disable-pip-version-check "${missing[@]}"
  fi
}
