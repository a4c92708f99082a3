#!/usr/bin/env bash
# Everything this project checks on a GPU host, from the checkout root:
#   bash benchmarks/gpu_suite.sh OUT_DIR [tests] [engine] [recipe] [sweep] [failures] [memory]
# (no step named: all of them). Each step writes its log and key files into OUT_DIR; whole
# sweep folders go to WORK_DIR (default OUT_DIR/work).
set -u
out=${1:?usage: gpu_suite.sh OUT_DIR [steps...]}
shift
steps=${*:-tests engine recipe sweep failures memory}
work=${WORK_DIR:-$out/work}
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.used,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
faulty="model=linear ~model.module.in_features ~model.module.out_features +model.module.features=256 model.inputs.input.shape=[256] model.batch=32"
for step in $steps; do
  echo "=== $step"
  case $step in
    tests)
      python3 -m pytest -q -m cuda -p no:cacheprovider 2>&1 | tee "$out/cuda_tests.log" | tail -25 ;;
    engine)
      # The runner against an independent loop, then efficiency and speedup over stream counts.
      python3 benchmarks/engine.py tax --out "$out/engine_tax.json" 2>&1 | tee "$out/engine_tax.log" | tail -12
      python3 benchmarks/engine.py streams --models mlp_wide tiny_llm encoder --staging direct \
        --out "$out/engine_streams.json" 2>&1 | tee "$out/engine_streams.log" | tail -16 ;;
    recipe)
      # The starting note's recipe (mlp, graphs, 4 streams, pinned) against the eager baseline.
      python3 -m runner experiment=recipe hydra.run.dir="$work/recipe" > "$out/recipe.log" 2>&1
      echo "exit $?"; grep -E '^(runner|status|check|  runner|  baseline|  ceiling|  speedup)' "$out/recipe.log" ;;
    sweep)
      python3 -m runner -m model=mlp streams=1,2,4,8 graph=false,true measure=short \
        hydra.sweep.dir="$work/sweep_mlp" > "$out/sweep_mlp.log" 2>&1
      echo "exit $?"; grep '^\[runner\]' "$out/sweep_mlp.log" | tail -3
      cp "$work/sweep_mlp/sweep.md" "$out/sweep_mlp.md"
      cp "$work/sweep_mlp/"*.png "$out/"
      cat "$out/sweep_mlp.md" ;;
    failures)
      # One ok job, one that raises, one out of memory, one killed while measuring.
      python3 -m runner -m $faulty measure=quick \
        model.module._target_=tests.faulty_models.Healthy,tests.faulty_models.FailAfter,tests.faulty_models.Hog,tests.faulty_models.DieAfter +model.module.calls=600 \
        'hydra.sweep.dir='"$work/failures" > "$out/failures.log" 2>&1
      echo "exit $? (1 expected)"; tail -12 "$out/failures.log"
      cp "$work/failures/sweep.md" "$out/failures.md" ;;
    memory)
      python3 benchmarks/memory_sweep.py --jobs 50 2>&1 | tee "$out/memory.log" | tail -16 ;;
  esac
done
