#!/usr/bin/env bash
# Prepares a Debian 12 (bookworm) machine for `--backend webgpu`, GPU or not: installs the
# Mesa EGL/OpenGL ES pieces through which Dawn (the `webgpu` npm package) reaches llvmpipe,
# Mesa's software rasteriser, on a machine without a GPU. Debian packages only, from bookworm
# main; idempotent (nothing is installed or fetched when everything is there); needs root only
# when something is missing. Then checks that an adapter is found, when node_modules has the
# optional packages (`npm ci` installs them).
#
# Why this route (measured, docs/webgpu.md): with Debian 12's Mesa 22.3, Dawn rejects lavapipe
# (Vulkan) but accepts llvmpipe through OpenGL ES in compatibility mode (EGL_PLATFORM=surfaceless,
# which mistral-ref sets itself). Mesa 25 from bookworm-backports gives a Vulkan llvmpipe adapter
# too, but needs the backports source and newer libdrm, and ran the webgpu tests slower here.
# A machine with a GPU needs its vendor's Vulkan driver instead (e.g. mesa-vulkan-drivers for
# AMD/Intel, NVIDIA's driver) plus libvulkan1; this script does not touch those.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(libegl1 libegl-mesa0 libgl1-mesa-dri)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then missing+=("$p"); fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-webgpu: ${PACKAGES[*]} already installed"
else
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-webgpu: missing Debian packages: ${missing[*]}; run this script as root (or: sudo apt-get install ${missing[*]})" >&2
    exit 2
  fi
  echo "setup-webgpu: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The check: the adapter mistral-ref will use (skipped before `npm ci`).
if [ -d node_modules/webgpu ] && [ -d node_modules/@tensorflow/tfjs-backend-webgpu ]; then
  EGL_PLATFORM="${EGL_PLATFORM:-surfaceless}" node --input-type=module -e '
    import { create, globals } from "webgpu";
    Object.assign(globalThis, globals);
    for (const [flags, opts, route] of [[[], {}, "default"], [["backend=opengles"], { featureLevel: "compatibility" }, "opengles"]]) {
      const a = await create(flags).requestAdapter(opts);
      if (a) {
        console.log(`setup-webgpu: adapter ${a.info.device || a.info.description} (${a.info.description}; ${route}), maxStorageBufferBindingSize ${a.limits.maxStorageBufferBindingSize}`);
        process.exit(0);
      }
    }
    console.error("setup-webgpu: no WebGPU adapter found (docs/webgpu.md lists the routes tried)");
    process.exit(1);
  ' 2> >(grep -v -e '^Warning: ' -e '^    at ' -e '^ - While' -e '^$' >&2)
else
  echo "setup-webgpu: node_modules lacks webgpu / @tensorflow/tfjs-backend-webgpu (run npm ci); adapter not checked"
fi
