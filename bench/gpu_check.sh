#!/usr/bin/env bash
# The engine's scale check on one GPU, in at most about 8 minutes (sized for one H200):
#   1. bench/inner_loop.py on Llama-3.2-1B and Qwen2.5-7B shapes with random weights (no download):
#      plain peft (fp32, batch 1) vs the engine at K = 1, 5, 15 and the memory planner's K (adapt.slots: auto);
#   2. one policy fine-tuning step (bench/policy_sft.py, seal's loop) on the Llama-3.2-1B shape.
# Each part runs under its own time limit, and inner_loop.py writes its JSON after every row, so a part cut
# short still leaves the rows it finished. Prints the tables; the JSON lands in $OUT (or the directory given).
#
#   bash bench/gpu_check.sh [DIR]          # on the GPU machine
#   bash bench/gpu_check.sh --smoke [DIR]  # the same code path on a tiny shape, on CPU, in well under a minute
# Settings (environment): PLANS (15), EPOCHS (2), COMPILE=1 adds the adapt.compile rows; SEAL_SHARED_DATA
# points at the shared data directory (default: ../shared/data beside the repository).
set -euo pipefail

smoke=0
if [[ "${1:-}" == "--smoke" ]]; then
  smoke=1
  shift
fi
out="${1:-${OUT:-bench/results/gpu_check}}"
mkdir -p "$out"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$here/../src${PYTHONPATH:+:$PYTHONPATH}"
python="${PYTHON:-python3}"

plans="${PLANS:-15}"
epochs="${EPOCHS:-2}"
ks="1,5,15,auto"
models=(llama-3.2-1b qwen2.5-7b)
limits=(150 240)  # seconds per model; the policy step gets 60
extra=()
if [[ "${COMPILE:-0}" == "1" ]]; then extra+=(--compile); fi
if [[ $smoke == 1 ]]; then
  plans=2 epochs=1 ks="auto" models=(llama-3.2-1b) limits=(90)
  extra+=(--tiny --answer-tokens 4 --peak-seconds 0.2 --max-auto-slots 4)
  export CUDA_VISIBLE_DEVICES=""
fi

for i in "${!models[@]}"; do
  model="${models[$i]}"
  timeout "${limits[$i]}" "$python" "$here/inner_loop.py" --model "$model" --ks "$ks" --workers 1 \
    --plans "$plans" --sample 2 --epochs "$epochs" --targets q_proj,v_proj "${extra[@]}" \
    --out "$out/inner_loop-$model.json" || echo "inner_loop on $model stopped (exit $?); rows so far in $out"
done

policy=(--model llama-3.2-1b --modes plain --examples 10 --epochs 1)
if [[ $smoke == 1 ]]; then policy+=(--tiny --examples 2); fi
timeout 60 "$python" "$here/policy_sft.py" "${policy[@]}" --out "$out/policy_sft.json" \
  || echo "policy fine-tuning stopped (exit $?)"

"$python" - "$out" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
print(f"\n{'model':<14} {'config':<24} {'K':>3} {'s/edit':>7} {'speed-up':>8} {'GFLOP/s':>8} {'GPU GiB':>7}")
for path in sorted(out.glob("inner_loop-*.json")):
    report = json.loads(path.read_text())
    for row in report["rows"]:
        name = row["mode"] + (" planned" if row.get("planned") else "") + (" compiled" if row.get("compile") else "")
        print(f"{report['model']:<14} {name:<24} {row['k']:>3} {row['seconds_per_self_edit']:>7.2f} "
              f"{row.get('speedup', float('nan')):>7.2f}x {row.get('train_gflops', float('nan')):>8.0f} "
              f"{row.get('peak_gpu_gib') or float('nan'):>7.1f}")
        if row.get("slot_plan"):
            print(f"{'':<14} planner: {json.dumps(row['slot_plan'])}")
policy = out / "policy_sft.json"
if policy.exists():
    for row in json.loads(policy.read_text()):
        print(f"policy step   {row['mode']:<24} {row['steps']:>3} steps {row['seconds']:.1f} s")
print(f"JSON in {out}")
EOF
