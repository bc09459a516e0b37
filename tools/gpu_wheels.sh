#!/usr/bin/env bash
# The wheels that itransfer needs beyond a CUDA machine image that already holds torch,
# transformers, peft, accelerate, pandas, pyarrow (>= 21), scipy, matplotlib, typer and rich
# (the H200 image of issue 24): downloaded here into .whl/ for a machine with no network.
#
#   bash tools/gpu_wheels.sh                # here, with network (or a package mirror)
#   # there, from the repository root:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1
#   python3 bench/gpu_suite.py && python3 -m itransfer quickstart --out /tmp/qs
#
# Versions: datasets 5.0 is the newest that still accepts pyarrow 21 and huggingface-hub 1.x
# (5.2 wants pyarrow 24 and the image holds 25 today, but an older image may not); rouge-score
# publishes no wheel, so pip builds its pure-Python one here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
platform=(--python-version 3.12 --implementation cp --only-binary=:all:
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64)
"$PY" -m pip download -q --no-deps "${platform[@]}" -d .whl \
  datasets==5.0.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.4.0 \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  typing-extensions==4.16.0 nltk==3.10.4 defusedxml==0.7.1
"$PY" -m pip wheel -q --no-deps -w .whl rouge-score==0.1.2
du -sh .whl
