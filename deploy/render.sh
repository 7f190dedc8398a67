#!/bin/sh
# Render a credentials template, then (optionally) exec a command.
#
#   sh deploy/render.sh TEMPLATE OUTPUT [OWNER] [-- COMMAND ARGS...]
#
# Every ${NAME} in TEMPLATE (NAME in A-Z, 0-9, _) is replaced by the value of the
# environment variable NAME; OUTPUT is written with mode 0600 (owned by OWNER when given
# and running as root). Used by deploy/compose.yaml to turn deploy/rabbitmq/definitions.json
# and deploy/redis/users.acl into the files the broker and Redis load, with the passwords
# from deploy/.env, so no password is stored in the repository or baked into an image.
#
# A missing or empty variable is an error, and so are the placeholder `change-me` and a
# value with characters outside [A-Za-z0-9._~-]: such values need no escaping in a URL, in
# JSON or in a Redis ACL rule.
# POSIX sh only: it runs in the stock rabbitmq and redis images.
set -eu

usage() {
    echo "usage: render.sh TEMPLATE OUTPUT [OWNER] [-- COMMAND ARGS...]" >&2
    exit 2
}

[ "$#" -ge 2 ] || usage
template=$1
output=$2
shift 2
owner=""
if [ "$#" -gt 0 ] && [ "$1" != "--" ]; then
    owner=$1
    shift
fi
if [ "$#" -gt 0 ]; then
    [ "$1" = "--" ] || usage
    shift
fi

[ -r "$template" ] || { echo "render.sh: cannot read $template" >&2; exit 1; }

script=""
for name in $(grep -o '\${[A-Z0-9_]*}' "$template" | tr -d '${}' | sort -u); do
    eval "value=\${$name-}"
    if [ -z "$value" ]; then
        echo "render.sh: $name is not set (copy deploy/.env.example to deploy/.env)" >&2
        exit 1
    fi
    if [ "$value" = "change-me" ]; then
        echo "render.sh: $name is still change-me (deploy/new-env.sh writes random ones)" >&2
        exit 1
    fi
    case $value in
        *[!A-Za-z0-9._~-]*)
            echo "render.sh: $name may only hold A-Z a-z 0-9 . _ ~ -" >&2
            exit 1
            ;;
    esac
    script="${script}s|\${${name}}|${value}|g;"
done

previous_umask=$(umask)
umask 077
tmp="${output}.tmp.$$"
sed "$script" "$template" >"$tmp"
if [ -n "$owner" ] && [ "$(id -u)" = 0 ]; then
    chown "$owner" "$tmp"
fi
mv "$tmp" "$output"
umask "$previous_umask"

if [ "$#" -gt 0 ]; then
    exec "$@"
fi
