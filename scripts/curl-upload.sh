#!/bin/sh
# Upload a file to tranche with nothing but curl, dd and sha256sum (or
# openssl), resuming where an earlier run stopped.
#
#   scripts/curl-upload.sh FILE URL [CHUNK_SIZE [STATE_DIR]]
#
#   FILE        the file to upload
#   URL         the server, e.g. http://127.0.0.1:8080 (no /api/v1)
#   CHUNK_SIZE  chunk size wished for, in bytes; the server may adjust it
#               (empty or absent: the server's default)
#   STATE_DIR   where to keep <file name>.tranche, the upload's id between
#               runs (default: next to FILE)
#
# Environment: TRANCHE_TOKEN, a bearer token: an API key, or a create token
# (the presigned-URL flow). When the server's create answer carries an
# upload_token, that token is used for the rest of the upload and kept in the
# state file (readable by you only) for resuming.
#
# Run it again after Ctrl-C, a lost connection or a reboot: it asks the
# server which chunks are missing and sends only those. The state file
# remembers the file's size and modification time: a file rewritten since
# (even with the same size) starts a new upload, and so does an upload the
# server no longer has or that failed or was aborted. At the end it prints the
# file's URL and SHA-256, each on a line of its own, and forgets the state.
#
# Needs curl 7.55 or newer, dd, sha256sum (or openssl), mktemp, and a stat
# that knows GNU's `-c %.9Y` (Linux coreutils) or BSD's `-f %m`.
#
# Exit status: 0 done, 1 the server refused something (its JSON error is on
# stderr) or could not be reached, 2 usage, 130/143 interrupted by INT/TERM
# (the state is kept: run the same command again to resume).
set -eu

usage() {
    echo "usage: $0 FILE URL [CHUNK_SIZE [STATE_DIR]]" >&2
    exit 2
}
[ $# -ge 2 ] && [ $# -le 4 ] && [ -f "$1" ] || usage
file=$1
base=${2%/}
api=$base/api/v1
wish=${3:-}
case $wish in *[!0-9]*) usage ;; esac
state=${4:-$(dirname "$file")}/$(basename "$file").tranche
size=$(wc -c <"$file" | tr -d ' ')
# Taken before the file is read: a change after this shows at the next run.
mtime=$(stat -c %.9Y "$file" 2>/dev/null || stat -f %m "$file")

# Answers, and the Authorization header (kept off curl's command line, where
# any user could read it), live in a private temporary directory.
tmp=$(mktemp -d)
child=""
trap 'rm -rf "$tmp"' EXIT
# curl runs in the background and the script waits for it, so that INT or
# TERM stop the chunk in flight at once instead of after it.
stop() {
    [ -z "$child" ] || kill "$child" 2>/dev/null || true
    echo "interrupted; run the same command again to resume" >&2
    exit "$1"
}
trap 'stop 130' INT
trap 'stop 143' TERM

token=""
use_token() {
    token=$1
    printf 'Authorization: Bearer %s\n' "$token" >"$tmp/auth"
}
use_token "${TRANCHE_TOKEN:-}"

# request [CURL ARGS]: one HTTP request; the answer's body in $body, its
# status in $code (000: no answer, and curl says why on stderr). With $chunk
# set, the body sent is that chunk of the file.
chunk=""
request() {
    : >"$tmp/body"
    : >"$tmp/code"
    if [ -n "$chunk" ]; then
        dd if="$file" bs="$chunk_size" skip="$chunk" count=1 2>/dev/null |
            curl -sS -o "$tmp/body" -w '%{http_code}' ${token:+-H} \
                ${token:+"@$tmp/auth"} -T - "$@" >"$tmp/code" &
    else
        curl -sS -o "$tmp/body" -w '%{http_code}' ${token:+-H} \
            ${token:+"@$tmp/auth"} "$@" >"$tmp/code" &
    fi
    child=$!
    wait "$child" || true
    child=""
    code=$(cat "$tmp/code")
    body=$(cat "$tmp/body")
}

# The server's JSON error (if it sent one) on stderr, and status 1.
fail() {
    [ -z "$body" ] || printf '%s\n' "$body" >&2
    exit 1
}

# call [CURL ARGS]: a request that must succeed, or the script ends.
call() {
    request "$@"
    case $code in 2??) ;; *) fail ;; esac
}

# The first value of a top-level JSON field (string or number) of $body. The
# answers are tranche's own compact JSON, so splitting on commas is enough.
field() {
    printf '%s\n' "$body" | tr ',{' '\n\n' |
        sed -n "s/^\"$1\":\"\{0,1\}\([^\"}]*\).*/\1/p" | head -n 1
}

sha256() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d ' ' -f 1
    else
        openssl dgst -sha256 -r "$1" | cut -d ' ' -f 1
    fi
}

# 1. Resume the upload named in the state file if it is for this very file
#    (size and modification time) and this server, and the server can still
#    finish it; else start a new one.
upload=""
if [ -f "$state" ]; then
    id="" saved_size="" saved_mtime="" saved_base="" saved_token=""
    read -r id saved_size saved_mtime saved_base saved_token <"$state" || true
    if [ "$saved_size $saved_mtime $saved_base" != "$size $mtime $base" ]; then
        echo "upload $id was for another version of the file or another server; starting a new upload" >&2
    else
        [ -z "$saved_token" ] || use_token "$saved_token"
        request "$api/uploads/$id"
        case $code in
        2??)
            case $(field status) in
            failed | aborted)
                echo "upload $id is $(field status); starting a new upload" >&2
                ;;
            *)
                upload=$body
                echo "resuming upload $id" >&2
                ;;
            esac
            ;;
        401 | 403 | 404 | 410)
            echo "upload $id cannot be resumed (HTTP $code $(field error)); starting a new upload" >&2
            ;;
        *) fail ;;
        esac
        [ -n "$upload" ] || use_token "${TRANCHE_TOKEN:-}"
    fi
fi
if [ -z "$upload" ]; then
    name=$(basename "$file" | sed 's/\\/\\\\/g; s/"/\\"/g')
    call -H 'Content-Type: application/json' "$api/uploads" \
        -d "{\"filename\":\"$name\",\"size\":$size,\"sha256\":\"$(sha256 "$file")\"${wish:+,\"chunk_size\":$wish}}"
    upload=$body
    id=$(field id)
    upload_token=$(field upload_token)
    # A create token only starts uploads: the rest goes with upload_token.
    [ -z "$upload_token" ] || use_token "$upload_token"
    (umask 077 && echo "$id $size $mtime $base $upload_token" >"$state")
    echo "started upload $id" >&2
fi

# 2. Send what the server is missing, chunk by chunk.
body=$upload
if [ "$(field status)" = "uploading" ]; then
    chunk_size=$(field chunk_size)
    missing=$(printf '%s\n' "$upload" |
        sed -n 's/.*"missing_chunks":\[\([^]]*\)\].*/\1/p' | tr ',' ' ')
    for i in $missing; do
        chunk=$i
        call "$api/uploads/$id/chunks/$i"
        chunk=""
        echo "chunk $i sent" >&2
    done
fi

# 3. Complete, and wait while a big file is assembled (202).
request -X POST "$api/uploads/$id/complete"
if [ "$code" = 422 ]; then
    # The file differs from the one announced: this upload is failed for good.
    rm -f "$state"
    printf '%s\n' "$body" >&2
    echo "upload $id failed (was the file changed while it was sent?); run again to start afresh" >&2
    exit 1
fi
case $code in 2??) ;; *) fail ;; esac
while [ "$(field status)" = "assembling" ]; do
    sleep 1
    call "$api/uploads/$id"
done
[ "$(field status)" = "completed" ] || fail
rm -f "$state"
body=$(printf '%s\n' "$body" | sed 's/.*"file":{\([^}]*\)}.*/{\1}/')
url=$(field url)
case $url in /*) url=$base$url ;; esac
echo "$url"
field sha256
