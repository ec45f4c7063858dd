#!/bin/sh
# Upload a file to tranche with nothing but curl, dd and sha256sum (or
# openssl), resuming where an earlier run stopped.
#
#   scripts/curl-upload.sh FILE URL [STATE_DIR]
#
#   FILE       the file to upload
#   URL        the server, e.g. http://127.0.0.1:8080 (no /api/v1)
#   STATE_DIR  where to keep <file name>.tranche, the upload's id between
#              runs (default: next to FILE)
#
# Environment: TRANCHE_TOKEN (sent as "Authorization: Bearer ..."),
# TRANCHE_CHUNK_SIZE (bytes; a wish the server may adjust).
#
# Run it again after Ctrl-C, a lost connection or a reboot: it asks the
# server which chunks are missing and sends only those. At the end it prints
# the file's URL and SHA-256, each on a line of its own, and forgets the state.
# Exit status: 0 done, 1 the server refused something (its JSON error is on
# stderr), 2 usage.
set -eu

if [ $# -lt 2 ] || [ ! -f "$1" ]; then
    echo "usage: $0 FILE URL [STATE_DIR]" >&2
    exit 2
fi
file=$1
base=${2%/}
api=$base/api/v1
state=${3:-$(dirname "$file")}/$(basename "$file").tranche
size=$(wc -c <"$file" | tr -d ' ')

# curl with the token, if any. On an HTTP error the server's JSON goes to
# stderr and the call fails (which, with set -e, ends the script).
call() {
    if ! out=$(curl -sS --fail-with-body ${TRANCHE_TOKEN:+-H} \
        ${TRANCHE_TOKEN:+"Authorization: Bearer $TRANCHE_TOKEN"} "$@"); then
        echo "$out" >&2
        return 1
    fi
    echo "$out"
}

# The first value of a top-level JSON field (string or number) on stdin. The
# answers are tranche's own compact JSON, so splitting on commas is enough.
field() {
    tr ',{' '\n\n' | sed -n "s/^\"$1\":\"\{0,1\}\([^\"}]*\).*/\1/p" | head -n 1
}

missing_chunks() {
    sed -n 's/.*"missing_chunks":\[\([^]]*\)\].*/\1/p' | tr ',' ' '
}

sha256() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d ' ' -f 1
    else
        openssl dgst -sha256 -r "$1" | cut -d ' ' -f 1
    fi
}

# 1. Resume the upload named in the state file, if it is for this file size
#    and this server and the server still has it; else start a new one.
upload="" id="" saved_size="" saved_base=""
if [ -f "$state" ]; then
    read -r id saved_size saved_base <"$state" || true
    if [ "$saved_size" = "$size" ] && [ "$saved_base" = "$base" ]; then
        upload=$(call "$api/uploads/$id" 2>/dev/null) || upload=""
    fi
    [ -n "$upload" ] && echo "resuming upload $id" >&2
fi
if [ -z "$upload" ]; then
    name=$(basename "$file" | sed 's/\\/\\\\/g; s/"/\\"/g')
    wish=${TRANCHE_CHUNK_SIZE:+,\"chunk_size\":$TRANCHE_CHUNK_SIZE}
    upload=$(call -H 'Content-Type: application/json' "$api/uploads" \
        -d "{\"filename\":\"$name\",\"size\":$size,\"sha256\":\"$(sha256 "$file")\"$wish}")
    id=$(echo "$upload" | field id)
    echo "$id $size $base" >"$state"
    echo "started upload $id" >&2
fi

# 2. Send what the server is missing, chunk by chunk.
status=$(echo "$upload" | field status)
if [ "$status" = "uploading" ]; then
    chunk_size=$(echo "$upload" | field chunk_size)
    for i in $(echo "$upload" | missing_chunks); do
        dd if="$file" bs="$chunk_size" skip="$i" count=1 2>/dev/null |
            call -T - "$api/uploads/$id/chunks/$i" >/dev/null
        echo "chunk $i sent" >&2
    done
fi

# 3. Complete, and wait while a big file is assembled (202).
upload=$(call -X POST "$api/uploads/$id/complete")
while [ "$(echo "$upload" | field status)" = "assembling" ]; do
    sleep 1
    upload=$(call "$api/uploads/$id")
done
if [ "$(echo "$upload" | field status)" != "completed" ]; then
    echo "$upload" >&2
    exit 1
fi
rm -f "$state"
file_json=$(echo "$upload" | sed 's/.*"file":{\([^}]*\)}.*/\1/')
url=$(echo "{$file_json}" | field url)
case $url in /*) url=$base$url ;; esac
echo "$url"
echo "{$file_json}" | field sha256
