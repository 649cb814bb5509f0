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
