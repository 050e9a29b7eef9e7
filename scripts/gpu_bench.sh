#!/usr/bin/env bash
# vaitrain vs torchvision on one GPU: the REFERENCE.md cases (H200 figures there) plus the data path.
# Writes $OUT/<case>.{json,txt,log} and $OUT/summary.txt. About 5-6 minutes on an H100/H200
# (BUDGET=360 s for the cases, plus start-up and the summary).
#
#   OUT=/some/dir bash scripts/gpu_bench.sh          # on the GPU machine
#   TINY=1 OUT=/tmp/x bash scripts/gpu_bench.sh      # the same commands at toy sizes (CPU check)
#
# Each case runs under its own time limit, so one slow case cannot eat the others' time; the
# compiled ResNet-50 case goes last (torch.compile warm-up is about a minute per network).
set -u
OUT=${OUT:-gpu_bench_out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
START=$(date +%s)

# REFERENCE.md method: median of 3 x 30 steps after 10 warm-up; bf16 autocast, channels_last.
COMMON="optim=sgd bench.warmup=10 bench.steps=30 bench.repeats=3 bench.precision=bf16 bench.channels_last=true"
R50="bench.batch_size=256 bench.image_size=224"
C18="bench.batch_size=512 bench.image_size=32"
UNET="bench.batch_size=16 bench.image_size=256"
DATA="bench.batch_size=512 bench.image_size=32 data.num_train=50000 bench.data_batches=0"
LIMIT_SHORT=100 LIMIT_LONG=180
if [ "${TINY:-0}" = 1 ]; then  # toy sizes, fp32: checks every command end to end on a CPU
  COMMON="optim=sgd bench.warmup=1 bench.steps=1 bench.repeats=1 bench.precision=fp32 bench.channels_last=true"
  R50="bench.batch_size=2 bench.image_size=64"
  C18="bench.batch_size=4 bench.image_size=32"
  UNET="bench.batch_size=2 bench.image_size=32"
  DATA="bench.batch_size=32 bench.image_size=32 data.num_train=256 bench.data_batches=0"
  LIMIT_SHORT=300 LIMIT_LONG=300 BUDGET=${BUDGET:-1500}
fi

BUDGET=${BUDGET:-360}  # seconds for all cases together; a case gets at most what is left

# case NAME LIMIT_S ARGS... : one `vaitrain bench` run; table -> NAME.txt, rows -> NAME.json
case_() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) ))
  if [ $left -lt 30 ]; then echo "== $name skipped: ${left} s of the budget left" | tee -a "$OUT/commands.txt"; return; fi
  [ $limit -gt $left ] && limit=$left
  echo "== $name ($(( $(date +%s) - START )) s in, limit $limit s): vaitrain bench $*" | tee -a "$OUT/commands.txt"
  timeout --signal=INT --kill-after=10 "$limit" \
    $PY -m vaitrain bench "$@" --out "$OUT/$name.json" > "$OUT/$name.txt" 2> "$OUT/$name.log"
  local rc=$?
  [ $rc -ne 0 ] && echo "   exit $rc (see $OUT/$name.log)" | tee -a "$OUT/commands.txt"
  cat "$OUT/$name.txt"
}

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

# 1. ResNet-50 and DenseNet-121, 224 px, batch 256, eager; torchvision's networks interleaved (ABBA)
case_ r50_d121_eager $LIMIT_LONG -m model=resnet50,densenet121 $COMMON $R50 bench.baseline=torchvision bench.split=true bench.data=false
# 2. CIFAR ResNet-18 (3x3 stem, no max-pool), 32 px, batch 512
case_ c18_32px $LIMIT_SHORT model=resnet18 model.small_stem=true $COMMON $C18 bench.baseline=torchvision bench.split=true bench.data=false
# 3. U-Net 64..1024, 256 px, batch 16, segmentation masks; no torchvision U-Net: the bare loop is the baseline
case_ unet_256 $LIMIT_SHORT model=unet task=segmentation $COMMON $UNET bench.baseline=bare bench.data=false
# 4. The data path: shapes on the GPU (uint8, on-device crop/flip/normalize), one epoch of 50,000
#    images, end to end vs model only; ResNet-20 and the CIFAR ResNet-18
case_ data_path $LIMIT_SHORT -m model=resnet20,resnet18 model.small_stem=true $COMMON $DATA bench.mode=train
# 5. ResNet-50 compiled (vaitrain and torchvision both compiled; training only, to bound compile time)
if [ "${TINY:-0}" != 1 ] || [ "${TINY_COMPILE:-0}" = 1 ]; then
  case_ r50_compiled $LIMIT_LONG model=resnet50 $COMMON $R50 bench.compile=true bench.mode=train bench.baseline=torchvision bench.data=false
fi

$PY - "$OUT" <<'PYEOF' | tee "$OUT/summary.txt"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
ref = {("r50_d121_eager", "resnet50"): 4681, ("r50_d121_eager", "densenet121"): 2842,
       ("c18_32px", "resnet18"): 59504, ("unet_256", "unet"): 885, ("r50_compiled", "resnet50"): 6827}
env = None
print(f"{'case':16} {'model':12} {'batch':>5} {'vaitrain':>9} {'baseline':>9} {'ratio':>6} {'H200 ref':>8} "
      f"{'TFLOP/s':>7} {'%peak':>5} {'epoch/model':>11} status / note")
for f in sorted(out.glob("*.json")):
    data = json.loads(f.read_text())
    env = env or data["environment"]
    for r in data["rows"]:
        g = lambda k, fmt="{:.0f}": fmt.format(r[k]) if k in r else "-"
        print(f"{f.stem:16} {r['model']:12} {r['batch']:>5} {g('train_img_s'):>9} {g('baseline_train_img_s'):>9} "
              f"{g('train_ratio', '{:.3f}'):>6} {ref.get((f.stem, r['model']), '-'):>8} {g('train_tflops', '{:.0f}'):>7} "
              f"{g('peak_fraction', '{:.0%}'):>5} {g('epoch_vs_model', '{:.2f}'):>11} {r['status']} {r.get('note', '')}")
print("\nforward / backward / optimizer ms (bench.split, synchronized between parts): vaitrain | baseline")
for f in sorted(out.glob("*.json")):
    for r in json.loads(f.read_text())["rows"]:
        if "forward_ms" in r:
            ours = "/".join(f"{r[k + '_ms']:.2f}" for k in ("forward", "backward", "optimizer"))
            base = "/".join(f"{r.get('baseline_' + k + '_ms', float('nan')):.2f}" for k in ("forward", "backward", "optimizer"))
            print(f"{f.stem:16} {r['model']:12} {ours:>22} | {base}")
if env:
    print({k: env.get(k) for k in ("device_name", "torch", "cuda", "cudnn", "vaitrain")})
PYEOF
echo "total $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"
