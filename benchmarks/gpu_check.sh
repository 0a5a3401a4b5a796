#!/usr/bin/env bash
# The GPU checks of issues 14 and 22, as one prepared script for a lent GPU machine (≈ 7–9 min on an H100).
#
# Runs from the repository root on a bare machine whose python3 has torch, transformers, accelerate,
# pandas, scipy, scikit-learn, matplotlib, typer, rich and pytest (the workplace's CUDA image), with
# two carried folders (see README "Scale: GPUs, many processes, resumable runs"):
#   .whl/  wheels the image lacks (conllu, platformdirs), installed into /tmp/site without an index;
#   .gpu/  SmolLM2-135M's config and tokenizer (.gpu/smollm2) and a data subset (.gpu/data: the
#          Fedorenko localizer CSVs, the first 20 pairs of each BLiMP phenomenon).
# SmolLM2's weights (94 MB as GGUF) do not fit the 64 MiB that travels, so the model is SmolLM2's exact
# architecture with random weights: speeds do not depend on weight values; bf16 agreement figures come
# from the CPU run on the real weights (benchmarks/precision.py).
#
# Figures go to $OUT/gpu.txt (everything printed), one section per check:
#   1. bf16 / float32 tokens/s, record/bare ratio, BLiMP scoring time (benchmarks/precision.py)
#   2. scoring throughput against a plain batch-1 loop (benchmarks/scoring.py), bf16
#   3. a device_map run across GPU and CPU (half the layers each) against the single-GPU run
#   4. `--dtype auto` on the GPU (hardware rule + agreement probe)
#   5. the test suite's device tests (tests/test_devices.py, tests/test_batching.py, tests/test_precision.py)
#   6. lesion-stage reuse (benchmarks/lesion.py, issue 22) on a Llama-shaped ~1B model with random weights
#      (built here from a config), float32 and bfloat16: plain vs reuse times, ratio, largest difference.
#      Its plan is the demo's at one size (--percents 1 --n-controls 1: intact, target, 1 random, 1
#      magnitude) over the benchmarks whose data .gpu/data holds (add .gpu/data/syntaxgym, 3.9 MB, and
#      .gpu/data/ud/en_ewt-ud-dev.conllu, 1.8 MB, for SyntaxGym and perplexity).
set -u
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu.txt") 2>&1
export PYTHONUNBUFFERED=1 NEUROLOC_CACHE=/tmp/neuroloc-cache HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD/src:$PWD"
MODEL=/tmp/smollm2-random
section() { echo; echo "=== $1 ($(date -u +%H:%M:%S))"; }

section "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'capability', torch.cuda.get_device_capability())"

section "SmolLM2-135M architecture, random weights -> $MODEL"
timeout 120 python3 - <<'EOF' || exit 1
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
config = AutoConfig.from_pretrained(".gpu/smollm2")
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
model.save_pretrained("/tmp/smollm2-random")
AutoTokenizer.from_pretrained(".gpu/smollm2").save_pretrained("/tmp/smollm2-random")
print(sum(p.numel() for p in model.parameters()), "parameters")
EOF

section "1. precision: float32 vs bfloat16 (localizer on 480 strings, BLiMP 67x20 pairs)"
timeout 150 python3 benchmarks/precision.py --model $MODEL --data .gpu/data --device cuda --repeats 3 --batch-size 64

section "2. scoring: neuroloc vs a plain batch-1 transformers loop (bf16, 67x10 pairs)"
timeout 90 python3 benchmarks/scoring.py --model $MODEL --blimp .gpu/data/blimp --device cuda --dtype bfloat16 --limit 10 --batch-size 64

section "3. device_map: layers 0-14 on the CPU, embeddings, layers 15-29 and head on cuda:0, vs all on cuda:0 (float32)"
timeout 120 python3 - <<'EOF'
import time
import numpy as np
from neuroloc import Localizer, evaluate_blimp, load_blimp, load_model
from neuroloc.stimuli.language import load_language_localizer
stim = load_language_localizer(".gpu/data/fedorenko2010")
pairs = load_blimp(".gpu/data/blimp", limit=5)
split = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.norm": 0, "lm_head": 0,  # tied: same device
         **{f"model.layers.{i}": "cpu" if i < 15 else 0 for i in range(30)}}
runs = {}
for name, kwargs in (("cuda:0", {"device": "cuda"}), ("cuda:0+cpu", {"device_map": split})):
    lm = load_model("/tmp/smollm2-random", dtype="float32", **kwargs)
    print(name, "parameter devices:", sorted({str(p.device) for p in lm.model.parameters()}))
    start = time.perf_counter()
    fitted = Localizer(["residual", "mlp"], batch_size=32).fit(lm, stim)
    blimp = evaluate_blimp(lm.model, lm.tokenizer, pairs, batch_size=32, bos="prepend").set_index("subset").value
    runs[name] = (np.asarray(fitted.t_), set(fitted.units_.names()), blimp, time.perf_counter() - start)
    print(f"{name}: localize + BLiMP {runs[name][3]:.1f} s")
(t0, u0, b0, _), (t1, u1, b1, _) = runs.values()
print(f"device_map vs single GPU: t correlation {np.corrcoef(t0, t1)[0, 1]:.6f}, max |dt| {np.abs(t0 - t1).max():.2e}, "
      f"top-1% units identical: {u0 == u1} (Jaccard {len(u0 & u1) / len(u0 | u1):.3f}), "
      f"BLiMP max |acc diff| {float((b0 - b1).abs().max()):.4f}")
EOF

section "4. --dtype auto on the GPU"
timeout 60 python3 -c "
from neuroloc import load_model
lm = load_model('/tmp/smollm2-random', dtype='auto', device='cuda')
print(lm.dtype, lm.identity['precision'])"

section "5. device tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_devices.py tests/test_batching.py tests/test_precision.py
section "6. lesion stage, plain vs reuse: Llama-shaped ~1B, random weights -> /tmp/llama-1b"
timeout 120 python3 - <<'EOF' || exit 1
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
tokenizer = AutoTokenizer.from_pretrained(".gpu/smollm2")
config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=2048,
                     tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
torch.manual_seed(0)
with torch.device("cuda"):
    model = LlamaForCausalLM(config)
model.save_pretrained("/tmp/llama-1b")
tokenizer.save_pretrained("/tmp/llama-1b")
print(sum(p.numel() for p in model.parameters()), "parameters")
EOF
LESION_BENCH="blimp"
[ -d .gpu/data/syntaxgym ] && LESION_BENCH="$LESION_BENCH syntaxgym"
[ -f .gpu/data/ud/en_ewt-ud-dev.conllu ] && LESION_BENCH="$LESION_BENCH perplexity"
for dtype in float32 bfloat16; do
  echo "--- $dtype ($LESION_BENCH)"
  timeout 180 python3 benchmarks/lesion.py --model /tmp/llama-1b --data .gpu/data --device cuda --dtype $dtype \
    --percents 1 --n-controls 1 --benchmarks $LESION_BENCH --batch-size 64 --blimp-rounds 2
done

echo; echo "=== done ($(date -u +%H:%M:%S))"
