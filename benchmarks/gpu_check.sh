#!/usr/bin/env bash
# One prepared GPU check, < 8 minutes on one modern GPU. Usage, from anywhere:
#     bash benchmarks/gpu_check.sh [RESULTS_JSON]      (default: $OUT/gpu_results.json, else ./gpu_results.json)
# Steps (each under its own time limit; a failing step is recorded and the next one still runs):
#   1. unit tests, including tests/test_cuda.py (parity on CUDA in fp32 and bf16, training loops
#      with bf16 autocast, the fp16 + GradScaler path, torch.compile)      limit 180 s
#   2. benchmarks/gpu_pretrain.py at the gpu config, ours vs transformers   limit  90 s
#   3. python -m bertbook report --json --scale gpu from an empty cache     limit 240 s
# The JSON holds each step's exit status, seconds and output (the parsed JSON where there is one).
set -u
cd "$(dirname "$0")/.."
RESULTS="${1:-${OUT:-.}/gpu_results.json}"
mkdir -p "$(dirname "$RESULTS")"
WORK="$(mktemp -d)"
export BERTBOOK_CACHE="$WORK/cache"   # empty: every model of step 3 is trained here
export PYTHONUNBUFFERED=1
[ -f .venv/bin/activate ] && . .venv/bin/activate

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$WORK/gpu.txt" 2>&1 || true
python - > "$WORK/env.json" 2>&1 <<'PY'
import json, torch
from bertbook.device import autocast_dtype, needs_grad_scaler
cuda = torch.cuda.is_available()
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": cuda,
                  "device": torch.cuda.get_device_name(0) if cuda else None,
                  "capability": list(torch.cuda.get_device_capability(0)) if cuda else None,
                  "autocast": str(autocast_dtype("cuda")) if cuda else None,
                  "grad_scaler": cuda and needs_grad_scaler("cuda")}))
PY

step() {  # step NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    local t0=$(date +%s%N)
    timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.out" 2> "$WORK/$name.err"
    echo $? > "$WORK/$name.rc"
    echo $(( ($(date +%s%N) - t0) / 1000000 )) > "$WORK/$name.ms"
    echo "[gpu_check] $name: exit $(cat "$WORK/$name.rc") in $(cat "$WORK/$name.ms") ms" >&2
}

step unit_tests 180 python -m pytest -q -p no:cacheprovider -rs tests
step gpu_pretrain_benchmark 90 python benchmarks/gpu_pretrain.py --scale gpu --steps 40 --warmup-steps 10 --json
step report_gpu 240 python -m bertbook report --json --scale gpu --quiet

python - "$WORK" "$RESULTS" <<'PY'
import json, os, sys
work, results = sys.argv[1], sys.argv[2]
def read(name):
    p = os.path.join(work, name)
    return open(p).read() if os.path.exists(p) else ""
def last_json(text):
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None
out = {"gpu": read("gpu.txt").strip(), "env": last_json(read("env.json"))}
for name in ("unit_tests", "gpu_pretrain_benchmark", "report_gpu"):
    stdout = read(name + ".out")
    rc = read(name + ".rc").strip()
    out[name] = {"exit": int(rc) if rc else None, "timed_out": rc in ("124", "137"),
                 "seconds": int(read(name + ".ms") or -1000) / 1000,
                 "result": last_json(stdout), "stdout_tail": stdout[-3000:],
                 "stderr_tail": read(name + ".err")[-3000:]}
with open(results, "w") as f:
    json.dump(out, f, indent=2)
print(f"[gpu_check] wrote {results}", file=sys.stderr)
PY
