#!/bin/sh
# Write deploy/.env for deploy/compose.yaml from deploy/.env.example, with a fresh random
# password for every `change-me`. Leaves an existing deploy/.env alone.
#
#   sh deploy/new-env.sh            (`make up` runs it)
set -eu

dir=$(cd "$(dirname "$0")" && pwd)
example="$dir/.env.example"
target="$dir/.env"

if [ -e "$target" ]; then
    exit 0
fi

umask 077
tmp="$target.tmp.$$"
while IFS= read -r line || [ -n "$line" ]; do
    case $line in
        *=change-me)
            secret=$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')
            printf '%s\n' "${line%=change-me}=$secret"
            ;;
        *)
            printf '%s\n' "$line"
            ;;
    esac
done <"$example" >"$tmp"
mv "$tmp" "$target"
echo "wrote $target with random passwords (from $example)"
