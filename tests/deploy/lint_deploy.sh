#!/usr/bin/env bash
# Lints deploy/: YAML with yamllint --strict (warnings fail too), JSON by
# parsing it. Usage: lint_deploy.sh YAMLLINT DEPLOY_DIR
set -euo pipefail
yamllint=$1
dir=$2
mapfile -t yamls < <(find "$dir" -name '*.yaml' -o -name '*.yml' | sort)
mapfile -t jsons < <(find "$dir" -name '*.json' | sort)
[[ ${#yamls[@]} -gt 0 ]] || { echo "no YAML files under $dir"; exit 1; }
"$yamllint" --strict "${yamls[@]}"
for j in "${jsons[@]}"; do
  /usr/bin/python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$j"
done
echo "deploy lint: ${#yamls[@]} YAML and ${#jsons[@]} JSON files clean"
