#!/bin/sh
# The main job on the sample inputs: a Jacobian as per-row blocks, the full
# block-diagonal Jacobian, gradients of cross_entropy and nll_loss, a jvp, and
# a cross-check of every backend in JSON, a Hessian's blocks and eigenvalues, and
# a suite of checks in one process. Run from the project root.
set -eu
cd "$(dirname "$0")/.."
# `make demo` sets GRADCLI to "$(PYTHON) -m gradcli", the interpreter it installed into.
GRADCLI=${GRADCLI:-gradcli}
# Each command is echoed as a user must type it: an argument with characters the
# shell treats specially is single-quoted (so `expr:(x+1)**2` pastes as it runs).
quote() {
  case $1 in
    *[!A-Za-z0-9_./:,=+@%-]*) printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")" ;;
    *) printf '%s' "$1" ;;
  esac
}
run() {
  printf '\n$'
  for arg in "$@"; do printf ' '; quote "$arg"; done
  printf '\n'
  shift
  $GRADCLI "$@"
}

run gradcli jacobian softmax -x sample_inputs/logits.npy
run gradcli jacobian softmax -x '[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]' --layout full
run gradcli vjp softmax -x sample_inputs/logits.npy
run gradcli grad cross_entropy -x sample_inputs/logits.npy -t sample_inputs/targets.json --explain
run gradcli jvp cross_entropy -x sample_inputs/logits.npy -t sample_inputs/targets.json --tangent randn --backend forward
run gradcli grad cross_entropy -x sample_inputs/logits.npy -t sample_inputs/soft_targets.json --wrt target
run gradcli grad nll_loss -x sample_inputs/logits.npy -t sample_inputs/targets.json
run gradcli grad linear,cross_entropy -x sample_inputs/logits.npy --weight sample_inputs/linear_weight.npy \
    --bias sample_inputs/linear_bias.json -t '[2, 0, 1, 1, 2]' --wrt weight --explain
run gradcli jacobian 'expr:(x+1)**2' -x eye:2 --layout full
run gradcli vjp 'expr:(x+1)**2' -x eye:2
run gradcli jacobian cross_entropy -x sample_inputs/segmentation.npz:logits -t sample_inputs/segmentation.npz:labels \
    --reduction none --class-weight '[1.0, 2.0, 0.5]' --backend fd
run gradcli jacobian sample_inputs/convnet.py:net -x sample_inputs/images.npy --layout blocks --verify-blocks --no-summarize
run gradcli grad sample_inputs/convnet.py:loss -x sample_inputs/images.npy -t '[0, 2, 1, 1]' --wrt param:net.fc.bias
run gradcli check cross_entropy -x sample_inputs/logits.npy -t sample_inputs/targets.json --label-smoothing 0.1
run gradcli check sample_inputs/custom_square.py:square -x '[0.5, 2.0, -1.0, 3.0]' \
  || echo "(exit $?: check found the wrong backward, as intended)"
run gradcli hessian cross_entropy -x sample_inputs/logits.npy -t sample_inputs/targets.json --eig 1
run gradcli check --suite sample_inputs/checks.toml \
  || echo "(exit $?: the suite holds the wrong backward too)"
for backend in analytic autograd forward fd; do
  printf '%s: ' "$backend"
  $GRADCLI grad cross_entropy -x sample_inputs/logits.npy -t sample_inputs/targets.json \
      --label-smoothing 0.1 --backend "$backend" --json --no-timing | python3 -c \
      'import json, sys; d = json.load(sys.stdin); print(d["backend"], "row 0 of dL/dz:", [round(v, 6) for v in d["value"][0]])'
done
