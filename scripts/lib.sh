# scripts/lib.sh: shared by the set-up scripts and CI. Installs the Debian packages
# moebench needs when they are missing, and configures + builds into build/.
set -euo pipefail
MOEBENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MOEBENCH_DEBS=(cmake ninja-build g++ libgtest-dev libbenchmark-dev libbenchmark-tools nlohmann-json3-dev
  libcli11-dev libfmt-dev libxxhash-dev libimgui-dev libglfw3-dev libstb-dev xvfb xauth
  libopengl-dev libgl1-mesa-dri zlib1g-dev python3 valgrind)

moebench_install_deps() {
  local missing=()
  for p in "${MOEBENCH_DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# moebench_build [extra cmake args...]: CUDA is used when nvcc is found. A unity build
# (CMakeLists.txt says what that means for the sources; MOEBENCH_UNITY=OFF for one without).
moebench_build() {
  local cuda=OFF
  if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
    cuda=ON
    export PATH="/usr/local/cuda/bin:$PATH"
  fi
  cmake -S "$MOEBENCH_ROOT" -B "$MOEBENCH_ROOT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_UNITY_BUILD="${MOEBENCH_UNITY:-ON}" -DMOEBENCH_CUDA="${MOEBENCH_CUDA:-$cuda}" "$@" >/dev/null
  ninja -C "$MOEBENCH_ROOT/build" -j"${MOEBENCH_JOBS:-$(nproc)}"
}
