#!/usr/bin/env bash
# Prepares .gpu/ for bench/gpu/check.sh on a machine with no .NET and no network: the local SDK's .NET runtime as a
# tar.gz, and framework-dependent linux-x64 builds of the l2l command and the kernel tests. Everything must fit 64 MiB.
#   bash bench/gpu/build.sh            (run from anywhere; writes <repo>/.gpu/)
set -euo pipefail
cd "$(dirname "$0")/../.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

command -v dotnet >/dev/null 2>&1 || { echo "build.sh: the .NET 10 SDK is required (dotnet not found on PATH)." >&2; exit 1; }
out=.gpu
mkdir -p "$out"

# The runtime the SDK carries: the dotnet host, host/ (hostfxr) and shared/Microsoft.NETCore.App/<version>.
root=$(dirname "$(readlink -f "$(command -v dotnet)")")
version=$(dotnet --list-runtimes | awk '$1 == "Microsoft.NETCore.App" { v = $2 } END { print v }')
[ -n "$version" ] && [ -d "$root/shared/Microsoft.NETCore.App/$version" ] || {
  echo "build.sh: no Microsoft.NETCore.App runtime found under $root/shared; install the .NET 10 SDK." >&2; exit 1; }
runtime="$out/dotnet-runtime-$version.tar.gz"
if [ ! -s "$runtime" ]; then
  rm -f "$out"/dotnet-runtime-*.tar.gz
  tar -C "$root" -czf "$runtime.tmp" dotnet host "shared/Microsoft.NETCore.App/$version"
  mv "$runtime.tmp" "$runtime"
fi

# Framework-dependent builds for linux-x64 only (without -r every platform's native libraries come along).
publish() {
  dotnet publish "$1" -c Release -r linux-x64 --self-contained false -p:PublishSingleFile=false \
    -p:DebugType=none -p:GenerateDocumentationFile=false -o "$2" --nologo -v quiet
}
rm -rf "$out/l2l" "$out/kernel-tests"
publish src/L2L.Cli "$out/l2l"
publish tests/L2L.Kernels.Tests "$out/kernel-tests"
# Not needed on the GPU machine, and too large to travel: coverage collectors, and the native plotting libraries
# (only `l2l train --plot` uses them; the checks do not plot).
rm -rf "$out/kernel-tests/Microsoft.CodeCoverage" "$out/kernel-tests/"*.pdb "$out/l2l/"*.pdb \
  "$out/l2l/libSkiaSharp.so" "$out/l2l/libHarfBuzzSharp.so"

bytes=$(du -sb "$out" | awk '{ print $1 }')
limit=$((64 * 1024 * 1024))
echo "build.sh: $out holds $((bytes / 1048576)) MiB (runtime $version, l2l, kernel tests); limit 64 MiB"
if [ "$bytes" -gt "$limit" ]; then
  echo "build.sh: $out is larger than 64 MiB and will not travel; see 'du -sh $out/*'." >&2
  exit 1
fi
