#!/usr/bin/env bash
# Checks and measures the engine on a fresh GPU machine (no .NET, no network) within a time budget, writing every
# result as JSON into OUTDIR plus one summary.md. Needs .gpu/ from bench/gpu/build.sh (carried with the tree).
#   bash bench/gpu/check.sh OUTDIR [--budget SECONDS]     on the GPU (default budget 420 s)
#   bash bench/gpu/check.sh --dry-run OUTDIR              builds .gpu/, runs the same steps on the CPU accelerator
#                                                         with tiny shapes (what CI runs)
set -uo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)

dry=0 budget=420 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --budget) shift; budget=${1:-}; [[ "$budget" =~ ^[0-9]+$ ]] || { echo "check.sh: --budget needs a whole number of seconds." >&2; exit 2; } ;;
    --budget=*) budget=${1#--budget=}; [[ "$budget" =~ ^[0-9]+$ ]] || { echo "check.sh: --budget needs a whole number of seconds." >&2; exit 2; } ;;
    -h|--help) sed -n 2,6p "$0"; exit 0 ;;
    -*) echo "check.sh: unknown option $1 (use OUTDIR [--budget SECONDS] or --dry-run OUTDIR)." >&2; exit 2 ;;
    *) [ -z "$out" ] || { echo "check.sh: give one OUTDIR (got '$out' and '$1')." >&2; exit 2; }; out=$1 ;;
  esac
  shift
done
[ -n "$out" ] || { echo "usage: bash bench/gpu/check.sh [--dry-run] OUTDIR [--budget SECONDS]" >&2; exit 2; }
mkdir -p "$out/logs" || exit 2
out=$(cd "$out" && pwd)
SECONDS=0

if [ "$dry" = 1 ]; then
  bash bench/gpu/build.sh > "$out/logs/build.log" 2>&1 || { cat "$out/logs/build.log" >&2; echo "check.sh: build.sh failed." >&2; exit 1; }
fi
runtime=$(ls .gpu/dotnet-runtime-*.tar.gz 2>/dev/null | head -n 1)
if [ -z "$runtime" ] || [ ! -f .gpu/l2l/l2l.dll ] || [ ! -f .gpu/kernel-tests/L2L.Kernels.Tests.dll ]; then
  echo "check.sh: .gpu/ is missing or incomplete; run 'bash bench/gpu/build.sh' on a machine with the .NET SDK and carry .gpu/." >&2
  exit 1
fi

# The carried runtime, unpacked once per version outside the tree.
version=$(basename "$runtime" .tar.gz); version=${version#dotnet-runtime-}
export DOTNET_ROOT="${TMPDIR:-/tmp}/l2l-dotnet-$version"
if [ ! -x "$DOTNET_ROOT/dotnet" ]; then
  mkdir -p "$DOTNET_ROOT.tmp" && tar -C "$DOTNET_ROOT.tmp" -xzf "$runtime" && rm -rf "$DOTNET_ROOT" && mv "$DOTNET_ROOT.tmp" "$DOTNET_ROOT" \
    || { echo "check.sh: could not unpack $runtime." >&2; exit 1; }
fi
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_gcServer=0
dotnet="$DOTNET_ROOT/dotnet"
l2l=("$dotnet" "$repo/.gpu/l2l/l2l.dll")

if [ "$dry" = 1 ]; then device=cpu; mode="dry run (CPU accelerator, tiny shapes)"; else device=cuda; mode="GPU"; fi
steps="$out/steps.tsv"
printf 'step\tstatus\tseconds\tnote\n' > "$steps"

# step NAME NEEDS CAP COMMAND...: runs COMMAND (log in logs/NAME.log) if NEEDS seconds are left, for at most CAP.
step() {
  local name=$1 needs=$2 cap=$3; shift 3
  local left=$((budget - SECONDS))
  if [ "$left" -lt "$needs" ]; then
    printf '%s\tskipped\t0\tneeds about %s s, %s s of the %s s budget left\n' "$name" "$needs" "$left" "$budget" >> "$steps"
    echo "check.sh: skip $name (needs about $needs s, $left s left)"
    return 0
  fi
  local limit=$(( cap < left ? cap : left )) start=$SECONDS rc
  echo "check.sh: $name (at most $limit s)"
  timeout --kill-after=10 "$limit" "$@" > "$out/logs/$name.log" 2>&1
  rc=$?
  local took=$((SECONDS - start)) status=ok note=""
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status=timeout; note="stopped after $limit s"
  elif [ "$rc" != 0 ]; then status=failed; note="exit $rc: $(tail -n 1 "$out/logs/$name.log" | tr '\t' ' ' | cut -c1-200)"; fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$took" "$note" >> "$steps"
  [ "$status" = ok ] || { echo "check.sh: $name $status ($note)"; failures=$((failures + 1)); }
}
failures=0

step devices 5 60 "${l2l[@]}" devices
cp "$out/logs/devices.log" "$out/devices.txt" 2>/dev/null

# Kernel tests: every body runs on every device kind present (CUDA here); xunit's XML gives pass/fail per test.
if [ "$dry" = 1 ]; then filter=(-class L2L.Kernels.Tests.ResidualTests -class L2L.Kernels.Tests.PtxHotLoopTests); else filter=(); fi
step kernel-tests 60 200 "$dotnet" .gpu/kernel-tests/L2L.Kernels.Tests.dll "${filter[@]}" -noColor -xml "$out/kernel-tests.xml"

if [ "$dry" = 1 ]; then
  gemm=(--sizes 48 --model gpt2-tiny --tokens 16 --repeats 1)
  att_gpt2=(--model gpt2-tiny --batch 1 --seq 16 --repeats 1); att_medium=(--model gpt2-tiny --batch 2 --seq 8 --repeats 1)
  bus=(--mib 1 --repeats 1); hostopt=(--params 65536 --repeats 1)
  train_gpt2=(--model gpt2-tiny --seq 16 --micro-batch-size 1,2 --micro-batches 1,2 --steps 1 --warmup 0)
  train_medium=(--model gpt2-tiny --seq 8 --micro-batch-size 2 --micro-batches 1 --steps 1 --warmup 0)
  torch_shapes=("gpt2-tiny 2 16")
else
  gemm=(--model gpt2)
  att_gpt2=(--model gpt2 --batch 8 --seq 1024); att_medium=(--model gpt2-medium --batch 8 --seq 1024)
  bus=(--mib 256); hostopt=(--params 268435456)
  train_gpt2=(--model gpt2 --seq 1024 --micro-batch-size 8,32 --micro-batches 1,4 --steps 2 --warmup 1)
  train_medium=(--model gpt2-medium --seq 1024 --micro-batch-size 4,16 --micro-batches 1,4 --steps 2 --warmup 1)
  torch_shapes=("gpt2 32 1024" "gpt2-medium 16 1024")
fi
step gemm 20 90 "${l2l[@]}" bench gemm --device "$device" "${gemm[@]}" --out "$out/gemm.json"
step attention-gpt2 10 60 "${l2l[@]}" bench attention --device "$device" "${att_gpt2[@]}" --out "$out/attention-gpt2.json"
step attention-gpt2-medium 10 60 "${l2l[@]}" bench attention --device "$device" "${att_medium[@]}" --out "$out/attention-gpt2-medium.json"
step bus 5 60 "${l2l[@]}" bench bus --device "$device" "${bus[@]}" --out "$out/bus.json"

# Training: each model gets what is left, shared with what follows; bench train skips what starts past its budget.
train() {
  local name=$1 share=$2; shift 2
  local left=$((budget - SECONDS)) b
  b=$(( left * share / 100 )); [ "$b" -lt 10 ] && b=10
  step "train-$name" 30 $((b + 60)) "${l2l[@]}" bench train --device "$device" "$@" --budget-s "$b" --out "$out/train-$name.json"
}
train gpt2 40 "${train_gpt2[@]}"
train gpt2-medium 55 "${train_medium[@]}"

# PyTorch on the same shapes, FP32 and BF16, where PyTorch sees a GPU.
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' > /dev/null 2>&1; then
  for shape in "${torch_shapes[@]}"; do
    read -r model batch seq <<< "$shape"
    for dtype in fp32 bf16; do
      step "pytorch-$model-$dtype" 25 120 python3 bench/pytorch/train_gpt2.py --model "$model" --batch "$batch" --seq "$seq" \
        --steps 3 --warmup 2 --dtype "$dtype" --out "$out/pytorch-$model-$dtype.json"
    done
  done
else
  printf 'pytorch\tskipped\t0\tno PyTorch with a CUDA device here\n' >> "$steps"
  echo "check.sh: skip pytorch (no PyTorch with a CUDA device here)"
fi

step host-optimizer 20 120 "${l2l[@]}" bench host-optimizer "${hostopt[@]}" --out "$out/host-optimizer.json"

python3 bench/gpu/summary.py "$out" --mode "$mode" --budget "$budget" --elapsed "$SECONDS" \
  || { echo "check.sh: summary.py failed." >&2; exit 1; }
echo "check.sh: wrote $out/summary.md ($failures step(s) failed, $SECONDS s)"
[ "$failures" = 0 ]
