#!/usr/bin/env bash
# Real models on a GPU host, from the checkout root: GPT-2 and BERT from config, torchvision's
# ResNet-50, and bucketed runs. Each job's log and result.json land in OUT_DIR.
#   bash benchmarks/real_models.sh OUT_DIR [extra overrides...]
set -u
out=${1:?usage: real_models.sh OUT_DIR [overrides...]}
shift
mkdir -p "$out"
export PYTHONUNBUFFERED=1
conf="hydra.searchpath=[file://$PWD/benchmarks/conf]"
python3 -c "import transformers, torchvision; print('transformers', transformers.__version__, 'torchvision', torchvision.__version__)"
run() {  # name, overrides...
  local name=$1; shift
  python3 -m runner "$conf" hydra.run.dir="$out/$name" "$@" > "$out/$name.log" 2>&1
  echo "=== $name: exit $?"
  grep -E '^(runner|status|check|  runner|  baseline|  ceiling|  speedup|buckets|  bucket|WARNING)' "$out/$name.log"
}
run gpt2 model=gpt2 "$@"
run bert model=bert "$@"
run resnet50 model=resnet50 "$@"
run buckets_mlp experiment=buckets "$@"
run buckets_gpt2 model=gpt2_buckets "$@"
