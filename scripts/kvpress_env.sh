#!/usr/bin/env bash
# Side environment for the kvpress parity test (spec F.c, tests/kvcache/test_kvpress_parity.py).
#
# kvpress 0.5.5 pins transformers < 5.3 while the project runs a newer transformers, so kvpress, that
# transformers and kvpress's import-time dependencies go to .kvpress/ in the repository root, used by
# putting it ahead of the main environment: PYTHONPATH=.kvpress .venv/bin/python -m pytest ...
# torch, numpy and the rest come from .venv. Idempotent: .kvpress/.requirements records what was
# installed, and nothing is done while it matches; the install goes to a staging directory that
# replaces .kvpress/ only once kvpress imports from it, so an interrupted run leaves no half install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
TARGET=.kvpress
REQUIREMENTS=(kvpress==0.5.5 transformers==5.2.0 tokenizers==0.22.2 "huggingface-hub>=1.3,<2"
              cachetools fire termcolor datasets dill multiprocess xxhash)
STAMP="$TARGET/.requirements"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "${REQUIREMENTS[*]}" ]]; then
  echo "$TARGET is up to date"
  exit 0
fi

staging=$(mktemp -d "$TARGET.staging.XXXXXX")
trap 'rm -rf "$staging"' EXIT
"$PYTHON" -m pip install -q --no-deps --target "$staging" "${REQUIREMENTS[@]}"
PYTHONPATH="$staging" "$PYTHON" -c \
  "import kvpress, transformers; assert transformers.__version__ == '5.2.0', transformers.__version__"
echo "${REQUIREMENTS[*]}" > "$staging/.requirements"
rm -rf "$TARGET"
mv "$staging" "$TARGET"
trap - EXIT
echo "installed kvpress 0.5.5 and transformers 5.2.0 into $TARGET"
