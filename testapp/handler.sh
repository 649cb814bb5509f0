#!/bin/sh
# One HTTP/1.1 exchange of orchestry-testapp: the request arrives on stdin, the response goes to stdout
# (both are the client's socket). One request per connection: every response says `Connection: close`.
#
#   GET|HEAD|POST /health    200 "ok"; 500 "failing" after POST /health/fail; 503 "starting" during HEALTH_DELAY
#   POST /health/fail        switch /health to failing (state: /tmp/health-failing)
#   POST /health/ok          switch /health back to healthy
#   POST /echo               the request as received: request line, headers, an empty line, then the body
#   GET  /burn?ms=N          burn CPU for about N ms (busy loop), then 200
#   GET  /slow?ms=N          answer after about N ms
#   GET  /env                the environment, one VAR=value per line
#   GET  /events?n=N&ms=M    server-sent events (text/event-stream): N events (default 5), one every M ms
#                            (default 200), each "id: i" + "data: event i from <hostname>", then the end
#   GET  /ws                 a websocket (RFC 6455) echoing each text frame of up to 125 bytes, until the
#                            client closes it or the replica stops
#   anything else            200, key=value lines naming the replica, the method and the path
#
# Every response carries X-Served-By: <hostname>. Request bodies need a Content-Length (no chunked uploads).

set -f
CR=$'\r'
LF=$'\n'
read -r host </proc/sys/kernel/hostname

respond() {  # respond STATUS BODY [CONTENT-TYPE]
    printf 'HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %s\r\nConnection: close\r\nX-Served-By: %s\r\n\r\n' \
        "$1" "${3:-text/plain; charset=utf-8}" "${#2}" "$host"
    [ "$method" = HEAD ] || printf '%s' "$2"
    printf '%s %s %s\n' "$method" "$target" "${1%% *}" >&2  # an access log line, read by `orchestry logs`
    exit 0
}

# milliseconds argument from the query string: ms=N, capped at 10 minutes
query_ms() {
    ms=
    case "&$query&" in *'&ms='*) ms=${query##*ms=}; ms=${ms%%&*} ;; esac
    case $ms in '' | *[!0-9]*) ms=0 ;; esac
    [ ${#ms} -gt 6 ] && ms=600000
    [ "$ms" -gt 600000 ] && ms=600000
}

uptime_cs() {  # centiseconds from /proc/uptime, without a fork
    read -r up _ </proc/uptime
    now=${up%.*}${up#*.}
}

IFS= read -r -t 10 line || exit 0
set -- ${line%"$CR"}
method=$1 target=$2 proto=${3:-HTTP/1.0}
[ -n "$method" ] && [ -n "$target" ] || respond '400 Bad Request' "bad request line$LF"

clen=0
chunked=
headers=
while IFS= read -r -t 10 h; do
    h=${h%"$CR"}
    [ -z "$h" ] && break
    headers=$headers$h$LF
    case $h in
        [Cc][Oo][Nn][Tt][Ee][Nn][Tt]-[Ll][Ee][Nn][Gg][Tt][Hh]:*)
            clen=${h#*:}
            clen=${clen//[ 	]/}
            ;;
        [Tt][Rr][Aa][Nn][Ss][Ff][Ee][Rr]-[Ee][Nn][Cc][Oo][Dd][Ii][Nn][Gg]:*) chunked=1 ;;
        [Ss][Ee][Cc]-[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt]-[Kk][Ee][Yy]:*)
            wskey=${h#*:}
            wskey=${wskey//[ 	]/}
            ;;
    esac
done
case $clen in '' | *[!0-9]*) respond '400 Bad Request' "bad Content-Length$LF" ;; esac
[ -z "$chunked" ] || respond '411 Length Required' "send the body with a Content-Length$LF"

path=${target%%\?*}
query=
case $target in *\?*) query=${target#*\?} ;; esac

if [ "$path" = /echo ]; then
    tmp=/tmp/echo.$$
    printf '%s %s %s\n%s\n' "$method" "$target" "$proto" "$headers" >"$tmp"
    [ "$clen" -gt 0 ] && head -c "$clen" >>"$tmp"
    size=$(wc -c <"$tmp")
    printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %s\r\nConnection: close\r\nX-Served-By: %s\r\n\r\n' \
        "$size" "$host"
    [ "$method" = HEAD ] || cat "$tmp"
    rm -f "$tmp"
    exit 0
fi

# Read and drop any request body, so that closing the socket does not reset the connection.
[ "$clen" -gt 0 ] && head -c "$clen" >/dev/null

# bytes N: the next N bytes of the request as decimal numbers, read one at a time (nothing read ahead)
bytes() {
    dd bs=1 count="$1" 2>/dev/null | od -An -tu1 -v
}

if [ "$path" = /ws ]; then
    [ -n "${wskey-}" ] || respond '400 Bad Request' "a websocket needs Sec-WebSocket-Key$LF"
    sum=$(printf '%s' "${wskey}258EAFA5-E914-47DA-95CA-C5AB0DC85B11" | sha1sum)
    sum=${sum%% *}
    accept=$(printf "$(echo "$sum" | sed 's/../\\x&/g')" | base64)
    printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nX-Served-By: %s\r\n\r\n' \
        "$accept" "$host"
    printf '%s %s %s\n' "$method" "$target" 101 >&2
    while :; do
        set -- $(bytes 2)
        [ $# -eq 2 ] || exit 0
        op=$(($1 & 15)) len=$(($2 & 127)) masked=$(($2 & 128))
        [ "$op" -eq 8 ] && printf '\210\000' && exit 0 # close: answer it, then end
        [ "$len" -lt 126 ] || exit 0                     # longer frames are not for this test app
        need=$len
        [ "$masked" -eq 0 ] || need=$((len + 4))
        set --
        [ "$need" -eq 0 ] || set -- $(bytes "$need")
        m1=0 m2=0 m3=0 m4=0
        [ "$masked" -eq 0 ] || { m1=$1 m2=$2 m3=$3 m4=$4; shift 4; }
        out= i=0
        for b in "$@"; do
            case $((i % 4)) in 0) k=$m1 ;; 1) k=$m2 ;; 2) k=$m3 ;; *) k=$m4 ;; esac
            out=$out\\$(printf %o $((b ^ k)))
            i=$((i + 1))
        done
        [ "$op" -eq 1 ] && printf "\\201\\$(printf %o "$len")$out" # a text frame back, unmasked
    done
fi

if [ "$path" = /events ]; then
    n=5
    case "&$query&" in *'&n='*) n=${query##*n=}; n=${n%%&*} ;; esac
    case $n in '' | *[!0-9]*) n=5 ;; esac
    [ ${#n} -gt 5 ] && n=10000
    query_ms
    case "&$query&" in *'&ms='*) ;; *) ms=200 ;; esac
    printf 'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\nX-Served-By: %s\r\n\r\n' "$host"
    i=1
    while [ "$i" -le "$n" ]; do
        printf 'id: %s\ndata: event %s from %s\n\n' "$i" "$i" "$host"
        [ "$i" -eq "$n" ] || usleep $((ms * 1000))
        i=$((i + 1))
    done
    printf '%s %s %s\n' "$method" "$target" 200 >&2
    exit 0
fi

if [ "$path" = /env ]; then
    body=$(env)$LF
fi
# Byte lengths from here on: ${#var} counts characters when a UTF-8 locale is set.
unset LANG LC_ALL LC_CTYPE

case $path in
    /health)
        if [ ! -e /tmp/health-ready ]; then
            respond '503 Service Unavailable' "starting$LF"
        elif [ -e /tmp/health-failing ]; then
            respond '500 Internal Server Error' "failing$LF"
        fi
        respond '200 OK' "ok$LF"
        ;;
    /health/fail | /health/ok)
        [ "$method" = POST ] || [ "$method" = PUT ] || respond '405 Method Not Allowed' "use POST$LF"
        if [ "$path" = /health/fail ]; then : >/tmp/health-failing; else rm -f /tmp/health-failing; fi
        respond '200 OK' "health ${path#/health/}$LF"
        ;;
    /burn)
        query_ms
        uptime_cs
        end=$((now + (ms + 9) / 10))
        loops=0
        while [ "$now" -lt "$end" ]; do
            i=0
            while [ $i -lt 200 ]; do i=$((i + 1)); done
            loops=$((loops + 1))
            uptime_cs
        done
        respond '200 OK' "burned ${ms}ms ($loops loops)$LF"
        ;;
    /slow)
        query_ms
        usleep $((ms * 1000))
        respond '200 OK' "slept ${ms}ms$LF"
        ;;
    /env)
        respond '200 OK' "$body"
        ;;
esac

respond '200 OK' "hostname=$host
instance_ip=${INSTANCE_IP-}
instance_port=${INSTANCE_PORT-}
app_name=${APP_NAME-}
method=$method
path=$path
"
